/**
 * What shared load costs and how fast it is (issue 13), seen from outside the routers:
 * - `watchCluster`: a NATS subscriber on the routers' cluster subjects counting what they publish
 *   (messages and bytes, payload + subject, by kind) while a run's traffic goes on;
 * - `probePropagation`: a request sent to one replica, then another replica's `/route` polled until
 *   its view shows the request's provisional prefix and its in-flight count (decision → effect delay).
 */
import { connect, type NatsConnection } from 'nats';
import { percentile } from './stats.js';
import { tokenOf } from './workloads.js';

export interface ClusterTraffic {
  messages: number;
  bytes: number;
  by_kind: Record<'delta' | 'heartbeat' | 'provisional' | 'goodbye' | 'other', { messages: number; bytes: number }>;
}

const emptyTraffic = (): ClusterTraffic => ({
  messages: 0,
  bytes: 0,
  by_kind: { delta: { messages: 0, bytes: 0 }, heartbeat: { messages: 0, bytes: 0 }, provisional: { messages: 0, bytes: 0 }, goodbye: { messages: 0, bytes: 0 }, other: { messages: 0, bytes: 0 } },
});

/** Kind of a cluster message from its subject and (for load messages) its `k` field. */
export function messageKind(subject: string, prefix: string, data: Uint8Array): keyof ClusterTraffic['by_kind'] {
  if (subject.startsWith(`${prefix}.prov.`)) return 'provisional';
  if (!subject.startsWith(`${prefix}.load.`)) return 'other';
  // The load message's kind without parsing the whole JSON: `"k":"d"` sits near its start.
  const head = Buffer.from(data.buffer, data.byteOffset, Math.min(data.byteLength, 200)).toString('latin1');
  const m = /"k":"([dhb])"/.exec(head);
  return m?.[1] === 'd' ? 'delta' : m?.[1] === 'h' ? 'heartbeat' : m?.[1] === 'b' ? 'goodbye' : 'other';
}

export interface ClusterWatch {
  /** Counts since the last reset. */
  snapshot(): ClusterTraffic;
  reset(): void;
  /** Resolves with performance.now() when the next provisional message reaches the bench (null after `ms`). */
  nextProvisional(ms: number): Promise<number | null>;
  close(): Promise<void>;
}

export async function watchCluster(natsUrl: string, prefix: string): Promise<ClusterWatch> {
  const nc: NatsConnection = await connect({ servers: natsUrl, name: 'kv-bench watcher', timeout: 5000 });
  const sub = nc.subscribe(`${prefix}.>`);
  let t = emptyTraffic();
  const waiting: ((at: number) => void)[] = [];
  const done = (async () => {
    for await (const m of sub) {
      const at = performance.now();
      const n = m.data.byteLength + m.subject.length;
      const k = messageKind(m.subject, prefix, m.data);
      t.messages++;
      t.bytes += n;
      t.by_kind[k].messages++;
      t.by_kind[k].bytes += n;
      if (k === 'provisional') for (const w of waiting.splice(0)) w(at);
    }
  })();
  // The subscription is registered on the server before any traffic is counted.
  await nc.flush();
  return {
    snapshot: () => structuredClone(t),
    reset: () => {
      t = emptyTraffic();
    },
    nextProvisional: (ms) =>
      new Promise((resolve) => {
        const timer = setTimeout(() => {
          const i = waiting.indexOf(got);
          if (i >= 0) waiting.splice(i, 1);
          resolve(null);
        }, ms);
        const got = (at: number) => {
          clearTimeout(timer);
          resolve(at);
        };
        waiting.push(got);
      }),
    async close() {
      await nc.drain().catch(() => {});
      await done.catch(() => {});
    },
  };
}

/** Per request of a run: what the routers published on NATS (each message is delivered to every replica). */
export function perRequest(t: ClusterTraffic, requests: number, replicas: number) {
  const r = Math.max(1, requests);
  const round = (x: number) => Math.round(x * 10) / 10;
  return {
    messages_per_request: round(t.messages / r),
    bytes_per_request: Math.round(t.bytes / r),
    delivered_bytes_per_request: Math.round((t.bytes * replicas) / r),
    by_kind_bytes_per_request: Object.fromEntries(Object.entries(t.by_kind).filter(([, v]) => v.messages > 0).map(([k, v]) => [k, Math.round(v.bytes / r)])),
    by_kind_messages_per_request: Object.fromEntries(Object.entries(t.by_kind).filter(([, v]) => v.messages > 0).map(([k, v]) => [k, round(v.messages / r)])),
    total: t,
  };
}

export interface PropagationResult {
  probes: number;
  /** Send on replica A → B's /route shows the prompt's prefix provisional on some worker. */
  provisional_p50_ms: number;
  provisional_p99_ms: number;
  /** Send on replica A → B's /route shows one more request in flight. */
  load_p50_ms: number;
  load_p99_ms: number;
  /** Probes where B never saw it within the bound (or saw the real KV event first). */
  provisional_missed: number;
  load_missed: number;
  /** Mean time of one /route poll on B (the resolution of the figures). */
  poll_ms: number;
  /** Send on A → A's provisional message reaches the bench's own NATS subscriber (no polling: what NATS adds, plus A's routing). */
  nats_p50_ms?: number;
  nats_p99_ms?: number;
}

interface RouteView {
  candidates: { worker: string; matched_tokens: number; by_medium?: Record<string, number>; load: { in_flight: number } }[];
}

async function routeView(url: string, prompt: number[]): Promise<RouteView> {
  const r = await fetch(`${url}/route`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt, max_tokens: 1 }), signal: AbortSignal.timeout(5000) });
  if (r.status !== 200) throw new Error(`/route on ${url}: HTTP ${r.status}`);
  return (await r.json()) as RouteView;
}

const inFlight = (v: RouteView) => v.candidates.reduce((s, c) => s + c.load.in_flight, 0);

/**
 * `n` probes one after the other, each from replica i to replica i+1: a fresh prompt of
 * `promptTokens` goes to A as a completion holding its worker for `maxTokens` decode steps; B's
 * `/route` for the same prompt is polled back to back until both effects show (or `boundMs`).
 * The delay includes A's own parse and rank (well under a millisecond for token ids) and half a poll.
 */
export async function probePropagation(routerUrls: string[], o: { probes: number; promptTokens: number; maxTokens: number; boundMs?: number; seed?: number; watch?: ClusterWatch }): Promise<PropagationResult> {
  const viaNats: number[] = [];
  const prov: number[] = [];
  const load: number[] = [];
  let provMissed = 0;
  let loadMissed = 0;
  let polls = 0;
  let pollTime = 0;
  const bound = o.boundMs ?? 3000;
  for (let i = 0; i < o.probes; i++) {
    const a = routerUrls[i % routerUrls.length]!;
    const b = routerUrls[(i + 1) % routerUrls.length]!;
    const owner = 0x6000_0000 + ((o.seed ?? 0) & 0xfff) * 0x10000 + i;
    const prompt = Array.from({ length: o.promptTokens }, (_, p) => tokenOf(owner, p));
    const before = inFlight(await routeView(b, prompt));
    const heard = o.watch?.nextProvisional(o.boundMs ?? 3000);
    const t0 = performance.now();
    const sent = fetch(`${a}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt, max_tokens: o.maxTokens, ignore_eos: true }), signal: AbortSignal.timeout(30_000) }).then((r) => r.text());
    let tProv: number | null = null;
    let tLoad: number | null = null;
    let realFirst = false;
    while ((tProv === null && !realFirst) || tLoad === null) {
      const p0 = performance.now();
      if (p0 - t0 > bound) break;
      const v = await routeView(b, prompt);
      const now = performance.now();
      polls++;
      pollTime += now - p0;
      const seen = v.candidates.find((c) => c.matched_tokens > 0);
      if (tProv === null && seen) {
        if ((seen.by_medium?.provisional ?? 0) > 0) tProv = now - t0;
        else realFirst = true;
      }
      if (tLoad === null && inFlight(v) > before) tLoad = now - t0;
    }
    if (tProv === null) provMissed++;
    else prov.push(tProv);
    if (tLoad === null) loadMissed++;
    else load.push(tLoad);
    await sent.catch(() => {});
    const at = await heard;
    if (typeof at === 'number') viaNats.push(at - t0);
  }
  const s = (xs: number[]) => [...xs].sort((x, y) => x - y);
  const r1 = (x: number) => (Number.isFinite(x) ? Math.round(x * 10) / 10 : x);
  return {
    probes: o.probes,
    provisional_p50_ms: r1(percentile(s(prov), 50)),
    provisional_p99_ms: r1(percentile(s(prov), 99)),
    load_p50_ms: r1(percentile(s(load), 50)),
    load_p99_ms: r1(percentile(s(load), 99)),
    provisional_missed: provMissed,
    load_missed: loadMissed,
    poll_ms: r1(polls ? pollTime / polls : NaN),
    ...(o.watch ? { nats_p50_ms: r1(percentile(s(viaNats), 50)), nats_p99_ms: r1(percentile(s(viaNats), 99)) } : {}),
  };
}
