import type { Registry as PromRegistry } from 'prom-client';

/** One sample of a metric as prom-client's get() returns it (histograms: `metricName` is *_bucket, *_sum, *_count). */
export interface MetricSample {
  labels: Record<string, string | number | undefined>;
  value: number;
  metricName?: string;
}

/** Reads a metric's samples by name; null when the router does not export it (yet). */
export type MetricReader = (name: string) => Promise<MetricSample[] | null>;

/** A reader over a prom-client registry: depends on metric names only, not on the code that defines them. */
export function promReader(reg: PromRegistry): MetricReader {
  return async (name) => {
    const m = reg.getSingleMetric(name);
    if (!m) return null;
    const got = await m.get();
    return got.values as MetricSample[];
  };
}

/** Sums the samples by one label's value (e.g. requests per worker). */
export function sumBy(samples: MetricSample[], label: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of samples) {
    const k = s.labels[label];
    if (k === undefined) continue;
    out[String(k)] = (out[String(k)] ?? 0) + s.value;
  }
  return out;
}

/** A histogram's cumulative bucket counts summed over every label set except `le`: upper bound → count. */
export function bucketTotals(samples: MetricSample[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of samples) {
    if (!s.metricName?.endsWith('_bucket')) continue;
    const le = String(s.labels.le);
    out[le] = (out[le] ?? 0) + s.value;
  }
  return out;
}

/**
 * The q-quantile of the observations between two cumulative bucket snapshots (`prev` may be
 * empty), interpolated linearly inside the bucket as Prometheus' histogram_quantile does;
 * null when nothing was observed in between.
 */
export function quantileBetween(prev: Record<string, number>, cur: Record<string, number>, q: number): number | null {
  const bounds = Object.keys(cur)
    .map((le) => ({ le, upper: le === '+Inf' ? Infinity : Number(le) }))
    .sort((a, b) => a.upper - b.upper);
  const delta = bounds.map((b) => ({ upper: b.upper, count: Math.max(0, (cur[b.le] ?? 0) - (prev[b.le] ?? 0)) }));
  const total = delta.at(-1)?.count ?? 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const b of delta) {
    if (b.count >= rank) {
      // Beyond the last finite bound: the best we can say is that bound.
      if (b.upper === Infinity) return lower;
      const inBucket = b.count - below;
      return inBucket <= 0 ? b.upper : lower + ((b.upper - lower) * (rank - below)) / inBucket;
    }
    lower = b.upper;
    below = b.count;
  }
  return lower;
}
