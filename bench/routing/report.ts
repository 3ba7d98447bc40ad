/** The results: a terminal table, bench/results/<workload>.md and bench/results/<workload>.json. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RepeatedStats } from './stats.js';
import type { RunExtras } from './main.js';
import { calibrationLines, type Calibration } from './calibration.js';

export interface Report {
  workload: string;
  description: string;
  command: string;
  generated_at: string;
  machine: { cpus: number; node: string; loadavg_at_start: number[] };
  source: Record<string, unknown>;
  speed: number;
  workload_stats: { requests: number; prompt_tokens: number; mean_prompt_tokens: number; duration_s: number; unique_blocks: number };
  fleet: Record<string, unknown>;
  upper_bound_hit_rate: number;
  /** One LRU cache as large as the whole fleet's, seeing every request: the best a perfect partition could do with these cache sizes. */
  fleet_lru_hit_rate: number;
  /** One worker's cache seeing every request (about what a cache-blind policy gets). */
  single_worker_lru_hit_rate: number;
  /** Keyed by policy for single-router runs, `policy@N` for N router replicas sharing load over NATS, `policy@N/local` for N replicas without. */
  policies: Record<string, RepeatedStats & Partial<RunExtras> & { hit_rate_vs_upper_bound: number; code_fingerprint: string }>;
  goals: string[];
  plots: string[];
  /** Predicted vs measured TTFT per run key (calibration.ts). */
  calibration?: Record<string, Calibration | null>;
}

/** `shared` false: the replicas each route on their own view (`/local`); true or absent: shared load. */
export function runKey(policy: string, replicas: number, shared: boolean | null = true): string {
  return replicas === 1 ? policy : `${policy}@${replicas}${shared === false ? '/local' : ''}`;
}

const keyOf = (s: Report['policies'][string]) => runKey(s.policy, s.replicas, s.shared_load ?? null);

const COLS: [string, (s: Report['policies'][string]) => string][] = [
  ['run', keyOf],
  ['routers', (s) => String(s.replicas)],
  ['hit rate', (s) => `${pct(s.hit_rate)}${s.repeats > 1 ? ` (${pct(s.spread.hit_rate[0], false)}–${pct(s.spread.hit_rate[1], false)})` : ''}`],
  ['of bound', (s) => `${(s.hit_rate_vs_upper_bound * 100).toFixed(0)}%`],
  ['TTFT p50', (s) => ms(s.ttft_p50_ms)],
  ['TTFT p90', (s) => ms(s.ttft_p90_ms)],
  ['TTFT p99', (s) => `${ms(s.ttft_p99_ms)}${s.repeats > 1 ? ` (${ms(s.spread.ttft_p99_ms[0])}–${ms(s.spread.ttft_p99_ms[1])})` : ''}`],
  ['e2e p50', (s) => ms(s.e2e_p50_ms)],
  ['e2e p99', (s) => ms(s.e2e_p99_ms)],
  ['req/s', (s) => s.throughput_rps.toFixed(2)],
  ['imbalance', (s) => s.imbalance.toFixed(2)],
  ['failed', (s) => `${s.failed}/${s.requests}`],
];

function ms(v: number): string {
  if (!Number.isFinite(v)) return '–';
  return v >= 10_000 ? `${(v / 1000).toFixed(1)} s` : `${Math.round(v)} ms`;
}

function pct(v: number, unit = true): string {
  return `${(v * 100).toFixed(1)}${unit ? '%' : ''}`;
}

export function table(r: Report, markdown: boolean): string {
  const rows = Object.values(r.policies).map((s) => COLS.map(([, g]) => g(s)));
  const head = COLS.map(([h]) => h);
  if (markdown) {
    return [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`, ...rows.map((c) => `| ${c.join(' | ')} |`)].join('\n');
  }
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((c) => c[i]!.length)));
  const line = (c: string[]) => c.map((x, i) => (i === 0 ? x.padEnd(widths[i]!) : x.padStart(widths[i]!))).join('  ');
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

export function fleetLines(r: Report): string[] {
  const f = r.fleet as Record<string, number | string>;
  return [
    `workload: ${r.description}`,
    `requests: ${r.workload_stats.requests}, ${r.workload_stats.prompt_tokens} prompt tokens (mean ${r.workload_stats.mean_prompt_tokens}), ${r.workload_stats.duration_s} s of arrivals at speed ${r.speed}; ${r.workload_stats.unique_blocks} distinct ${f.block_size}-token blocks`,
    `fleet: ${f.workers} sim workers × ${f.num_blocks} blocks of ${f.block_size} tokens = ${f.cache_tokens_per_worker} cached tokens each (the whole fleet holds ${f.fleet_cache_fraction_of_working_set}× the workload's distinct blocks, one worker ${(Number(f.fleet_cache_fraction_of_working_set) / Number(f.workers)).toFixed(2)}×${Number(f.fleet_cache_fraction_of_working_set) < 1 ? ': caches must evict' : Number(f.fleet_cache_fraction_of_working_set) / Number(f.workers) < 1 ? ': a worker that sees everything must evict' : ''}); prefill ${f.prefill_tokens_per_s} tokens/s, decode step ${f.decode_step_ms} ms, max batch ${f.max_batch}`,
    `timing model: ${f.timing_note}`,
    ...(Array.isArray(r.fleet.speed_factors) ? [`mixed fleet: worker step times divided by ${(r.fleet.speed_factors as number[]).join(', ')} (w0, w1, …); the routers are not told`] : []),
    `upper bound (one unlimited cache that saw every earlier request): ${(r.upper_bound_hit_rate * 100).toFixed(1)}% hit rate; one LRU cache the size of the whole fleet's (a perfect partition): ${(r.fleet_lru_hit_rate * 100).toFixed(1)}%; one worker's cache alone: ${(r.single_worker_lru_hit_rate * 100).toFixed(1)}%`,
  ];
}

export function writeReport(dir: string, r: Report): { json: string; md: string } {
  mkdirSync(dir, { recursive: true });
  const json = join(dir, `${r.workload}.json`);
  const md = join(dir, `${r.workload}.md`);
  writeFileSync(json, JSON.stringify(r, null, 2) + '\n');
  const perWorker = Object.values(r.policies).map((s) => {
    const ws = Object.entries(s.per_worker);
    return `| ${keyOf(s)} | ${ws.map(([, w]) => `${w.requests}/${Math.round(w.prefill_tokens / 1000)}k`).join(' · ')} |`;
  });
  const text = [
    `# Routing benchmark: ${r.workload}`,
    '',
    `Generated ${r.generated_at} by \`${r.command}\` on ${r.machine.cpus} CPU(s), Node ${r.machine.node} (load average at start ${r.machine.loadavg_at_start.map((x) => x.toFixed(1)).join(', ')}).`,
    '',
    ...fleetLines(r).map((l) => `- ${l}`),
    `- code (digest of router/, worker/, src/ at each fleet start): ${[...new Set(Object.values(r.policies).map((p) => p.code_fingerprint))].join(', ')}${new Set(Object.values(r.policies).map((p) => p.code_fingerprint)).size > 1 ? ' (the code changed between runs: see `code_fingerprint` per run in the JSON)' : ''}`,
    '',
    table(r, true),
    '',
    ...(Object.values(r.policies).some((p) => p.repeats > 1) ? [`Each run repeated ${Math.max(...Object.values(r.policies).map((p) => p.repeats))} times with a fresh fleet, repeats interleaved across policies: figures are medians, (min–max) in brackets; per-repeat figures are in the JSON under \`per_repeat\`.`, ''] : []),
    'hit rate = cached prompt tokens / prompt tokens, from the workers\' own `usage`; "of bound" = hit rate / upper bound; TTFT = first streamed chunk at the client; imbalance = max / mean of per-worker prefill tokens (prompt − cached); `policy@N` = N router replicas behind a round-robin client sharing load and provisional prefixes over NATS, `policy@N/local` = the same replicas each on its own view.',
    ...clusterLines(r),
    '',
    '## Per worker (requests / prefill tokens)',
    '',
    '| run | per worker |',
    '|---|---|',
    ...perWorker,
    '',
    ...(calibrationLines(r.calibration).length ? ['## Calibration (predicted vs measured TTFT)', '', ...calibrationLines(r.calibration).map((l) => `- ${l}`), ''] : []),
    '## Goals (issues 7 and 13)',
    '',
    ...r.goals.map((g) => `- ${g}`),
    '',
    ...(r.plots.length ? ['## Plots', '', ...r.plots.map((p) => `![${p}](${p})`), ''] : []),
  ].join('\n');
  writeFileSync(md, text);
  return { json, md };
}

/** Shared-load runs: NATS traffic per request and the decision → effect delay between replicas. */
function clusterLines(r: Report): string[] {
  const rows = Object.values(r.policies).filter((s) => s.nats || s.propagation);
  if (!rows.length) return [];
  return [
    '',
    '## Shared load (issue 13)',
    '',
    '| run | NATS msgs / req | bytes / req (published) | by kind (bytes / req) | on NATS p50 / p99 | provisional seen p50 / p99 | load seen p50 / p99 |',
    '|---|---:|---:|---|---:|---:|---:|',
    ...rows.map((s) => {
      const n = s.nats;
      const q = s.propagation;
      return `| ${keyOf(s)} | ${n?.messages_per_request ?? '–'} | ${n?.bytes_per_request ?? '–'} | ${n ? Object.entries(n.by_kind_bytes_per_request).map(([k, v]) => `${k} ${v}`).join(', ') : '–'} | ${q?.nats_p50_ms !== undefined ? `${q.nats_p50_ms} / ${q.nats_p99_ms} ms` : '–'} | ${q ? `${q.provisional_p50_ms} / ${q.provisional_p99_ms} ms` : '–'} | ${q ? `${q.load_p50_ms} / ${q.load_p99_ms} ms` : '–'} |`;
    }),
    '',
    'Published bytes count payload + subject once; NATS delivers each message to every replica. "On NATS" = a completion sent to one replica until its provisional message reaches a NATS subscriber of the bench (what any other replica receives at about the same instant); "seen" = until another replica\'s `/route` shows its prefix as provisional (or one more request in flight), polled back to back (resolution: one poll).',
  ];
}
