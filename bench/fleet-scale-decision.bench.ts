/**
 * The routing decision alone at fleet scale, in one process and with no events competing: how
 * cache_aware's rank (the router's kv_router_decision_seconds) grows from 32 to 512 candidates,
 * against the rank as it was before the large-fleet speedup (bench/fleet-scale/rank-reference.ts,
 * the same policy state, the same requests, timed alternately in the same run).
 *
 * Fleet: `workers × 2` ranks, each holding the 32 shared family prompts of bench:fleet (128 blocks
 * of 16 tokens) plus private tails, `--blocks-per-source` blocks in all (the per-candidate work does
 * not depend on it; bench:fleet fills 20 000). Requests: /route's prompts of bench:fleet (a family
 * prompt + 2 048 tokens nobody holds), parsed from JSON as the router gets them (Smi arrays).
 * Candidates as the registry builds them (held blocks from index.stats, a load each: few distinct
 * values, so many costs tie). Also timed, for context: the registry's per-request stats() reads and
 * serialising the ranked candidates as /route does.
 *
 * Which slow ranks were not the rank's own doing: a GC pause inside (PerformanceObserver 'gc') or
 * time waiting for a CPU (the main thread's schedstat wait grew: the OS ran another process).
 * "Undisturbed" ranks are those with neither: their p99 is the decision's own.
 *
 * Run: flock /work/bench.lock node --import tsx bench/fleet-scale-decision.bench.ts
 *      flags: --sources 32,128,512 --blocks-per-source N --requests N --repeats N --cost weighted|ttft|both --quick
 * Writes bench/results/fleet-decision.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { PrefixIndex } from '../src/index/index.js';
import { RankCache, familyTokens } from './fleet-scale/cache-sim.js';
import { rankReference } from './fleet-scale/rank-reference.js';
import { CacheAwarePolicy } from '../router/policies/cache-aware.js';
import { RouterConfigSchema } from '../router/config.js';
import type { Candidate, RouteRequest, Scored } from '../router/policies/policy.js';
import { summarize, type Summary } from './fleet-scale/stats.js';
import { threadClock } from './fleet-scale/thread-clock.js';
import { PerformanceObserver } from 'node:perf_hooks';

/** GC pauses (start, end in performance.now() ms), to tell which timed ranks had one inside. */
const gcs: [number, number][] = [];
new PerformanceObserver((l) => {
  for (const e of l.getEntries()) gcs.push([e.startTime, e.startTime + e.duration]);
}).observe({ entryTypes: ['gc'] });
const gcInside = (a: number, b: number) => gcs.some(([s, e]) => s < b && e > a);

const { values: a } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    sources: { type: 'string' },
    'blocks-per-source': { type: 'string' },
    requests: { type: 'string' },
    repeats: { type: 'string' },
    cost: { type: 'string' },
    out: { type: 'string' },
  },
});
const quick = a.quick!;
const SOURCES = (a.sources ?? (quick ? '8,32' : '32,128,512')).split(',').map(Number);
const CAP = Number(a['blocks-per-source'] ?? (quick ? 300 : 2000));
const REQUESTS = Number(a.requests ?? (quick ? 100 : 1000));
const REPEATS = Number(a.repeats ?? (quick ? 1 : 5));
const COSTS = (a.cost ?? 'both') === 'both' ? (['weighted', 'ttft'] as const) : ([a.cost] as ('weighted' | 'ttft')[]);
const root = fileURLToPath(new URL('..', import.meta.url));
const out = resolve(a.out ?? join(root, 'bench/results/fleet-decision.json'));
const shape = { blockSize: 16, families: 32, familyBlocks: 128, tailBlocks: 64, capacity: CAP };

function fleet(n: number) {
  const index = new PrefixIndex();
  const sources: string[] = [];
  for (let w = 0; w < n / 2; w++) for (let r = 0; r < 2; r++) sources.push(`w${w}:${r}`);
  sources.forEach((s, i) => {
    index.addSource(s);
    const c = new RankCache(shape, i);
    while (c.heldBlocks < CAP) index.applyBatch(s, { ts: 0, events: c.step(64), dp_rank: 0 });
    for (let k = 0; k < 5; k++) index.applyBatch(s, { ts: 0, events: c.step(64), dp_rank: 0 });
  });
  return { index, sources };
}

/** bench:fleet's /route bodies: a family prompt, then 2 048 ids no rank holds. */
function bodies(count: number): string[] {
  const outB: string[] = [];
  let x = 12345;
  for (let i = 0; i < count; i++) {
    const ids = familyTokens(i % shape.families, shape);
    for (let j = 0; j < shape.familyBlocks * shape.blockSize; j++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      ids.push(x % 150_000);
    }
    outB.push(JSON.stringify({ prompt: ids, max_tokens: 1 }));
  }
  return outB;
}

const q = (xs: number[], p: number) => {
  const s = [...xs].sort((u, v) => u - v);
  return s[Math.min(s.length - 1, Math.floor(s.length * p))]!;
};

interface Row {
  sources: number;
  cost: string;
  rankP50us: number;
  rankP99us: number;
  /** Ranks with no GC pause inside: wall time. */
  rankNoGcP99us: number;
  /** Ranks neither descheduled (no wait for a CPU in schedstat) nor with a GC pause inside: the decision's own time; and their share. */
  rankUndisturbedP99us: number;
  undisturbed: number;
  /** Share of ranks over 1 ms (wall), and of those: with a GC pause inside, with > 0.2 ms waiting for a CPU. */
  over1ms: number;
  over1msGc: number;
  over1msPreempted: number;
  referenceP50us: number;
  referenceP99us: number;
  candidatesP50us: number;
  routeJsonP50us: number;
  identical: boolean;
}

async function runOne(n: number, cost: 'weighted' | 'ttft', bodyList: string[]): Promise<Row> {
  const { index, sources } = fleet(n);
  const cfg = RouterConfigSchema.parse({ cache_aware: cost === 'ttft' ? { cost: 'ttft' } : {} }).cache_aware;
  const policy = new CacheAwarePolicy(index, cfg);
  const loads = sources.map((_, i) => ({ inFlight: i % 3, pendingPrefillTokens: ((i * 37) % 5) * 100, activeDecodes: i % 2 }));
  const candidates = (): Candidate[] =>
    sources.map((s, i) => ({ workerId: s.slice(0, s.indexOf(':')), rank: i % 2, source: s, trusted: true, blockSize: 16, tokenizerKey: 'k', load: loads[i]!, heldBlocks: index.stats(s).blocks }));
  const rank: number[] = [];
  const rankNoGc: number[] = [];
  const rankCalm: number[] = [];
  /** Each timed rank: start (performance.now() ms), wall ms, µs waiting for a CPU. */
  const timed: [number, number, number][] = [];
  let over = 0;
  let overGc = 0;
  let overWait = 0;
  const ref: number[] = [];
  const cand: number[] = [];
  const json: number[] = [];
  let identical = true;
  const same = (x: Scored[], y: Scored[]) => x.length === y.length && x.every((s, i) => s.candidate.source === y[i]!.candidate.source && s.cost === y[i]!.cost);
  for (let k = 0; k < REQUESTS + 50; k++) {
    const ids = (JSON.parse(bodyList[k % bodyList.length]!) as { prompt: number[] }).prompt;
    const req: RouteRequest = { tokensFor: () => ids, lora: null, salt: null };
    const t0 = performance.now();
    const c = candidates();
    const t1 = performance.now();
    // Alternate which goes first: neither always runs on a cache the other warmed.
    let mine: Scored[];
    let theirs: Scored[];
    let tm: number;
    let tr: number;
    let wait: number;
    let m0: number;
    if (k % 2 === 0) {
      const c0 = threadClock();
      const a0 = performance.now();
      mine = policy.rank(req, c);
      const a1 = performance.now();
      const c1 = threadClock();
      wait = c0 && c1 ? (c1.waitNs - c0.waitNs) / 1000 : NaN;
      m0 = a0;
      theirs = rankReference(policy, index, req, c);
      tm = a1 - a0;
      tr = performance.now() - a1;
    } else {
      const a0 = performance.now();
      theirs = rankReference(policy, index, req, c);
      const c0 = threadClock();
      const a1 = performance.now();
      mine = policy.rank(req, c);
      const a2 = performance.now();
      const c1 = threadClock();
      tm = a2 - a1;
      wait = c0 && c1 ? (c1.waitNs - c0.waitNs) / 1000 : NaN;
      m0 = a1;
      tr = a1 - a0;
    }
    const j0 = performance.now();
    JSON.stringify(mine.map((s) => ({ worker: s.candidate.workerId, rank: s.candidate.rank, source: s.candidate.source, matched_tokens: s.matchedTokens, by_medium: s.byMedium ?? {}, terms: s.terms, cost: s.cost })));
    const j1 = performance.now();
    identical &&= same(mine, theirs);
    if (k < 50) continue; // warm-up
    rank.push(tm * 1000);
    timed.push([m0, tm, wait]);
    ref.push(tr * 1000);
    cand.push((t1 - t0) * 1000);
    json.push((j1 - j0) * 1000);
  }
  // GC entries reach the observer only once the loop turns: matched against the ranks afterwards.
  await new Promise((r) => setTimeout(r, 20));
  for (const [m0, tm, wait] of timed) {
    const gc = gcInside(m0, m0 + tm);
    if (!gc) rankNoGc.push(tm * 1000);
    if (!gc && wait === 0) rankCalm.push(tm * 1000);
    if (tm > 1) {
      over++;
      if (gc) overGc++;
      if (wait > 200) overWait++;
    }
  }
  gcs.length = 0;
  return {
    sources: n,
    cost,
    rankP50us: q(rank, 0.5),
    rankP99us: q(rank, 0.99),
    rankNoGcP99us: q(rankNoGc, 0.99),
    rankUndisturbedP99us: rankCalm.length ? q(rankCalm, 0.99) : NaN,
    undisturbed: rankCalm.length / rank.length,
    over1ms: over / rank.length,
    over1msGc: overGc,
    over1msPreempted: overWait,
    referenceP50us: q(ref, 0.5),
    referenceP99us: q(ref, 0.99),
    candidatesP50us: q(cand, 0.5),
    routeJsonP50us: q(json, 0.5),
    identical,
  };
}

const log = (s: string) => process.stdout.write(`${s}\n`);
const load0 = loadavg();
log(`fleet decision: sources ${SOURCES.join(', ')}, ${CAP} blocks/source, ${REQUESTS} requests x ${REPEATS} repeats, cost ${COSTS.join(' + ')}; load ${load0.map((v) => v.toFixed(2)).join(' ')}`);
const bodyList = bodies(64);
const runs: Row[] = [];
for (let r = 0; r < REPEATS; r++) {
  for (const cost of COSTS) {
    for (const n of SOURCES) {
      const row = await runOne(n, cost, bodyList);
      runs.push(row);
      log(
        `repeat ${r + 1} ${cost.padEnd(8)} ${String(n).padStart(4)} sources: rank p50 ${row.rankP50us.toFixed(0)} p99 ${row.rankP99us.toFixed(0)} us (no GC inside p99 ${row.rankNoGcP99us.toFixed(0)}; undisturbed (${(row.undisturbed * 100).toFixed(0)}%) p99 ${row.rankUndisturbedP99us.toFixed(0)}; >1 ms ${(row.over1ms * 100).toFixed(1)}%: ${row.over1msGc} with GC, ${row.over1msPreempted} descheduled) | before p50 ${row.referenceP50us.toFixed(0)} p99 ${row.referenceP99us.toFixed(0)} us | ` +
          `registry stats() for all ${row.candidatesP50us.toFixed(0)} us, /route JSON ${row.routeJsonP50us.toFixed(0)} us | identical ${row.identical}`,
      );
    }
  }
}
const results: Record<string, Record<string, Summary | boolean>> = {};
log('\nmedian [min-max] over repeats (us)');
for (const cost of COSTS) {
  for (const n of SOURCES) {
    const rs = runs.filter((x) => x.cost === cost && x.sources === n);
    const s = (k: keyof Row) => summarize(rs.map((x) => x[k] as number));
    const row = {
      rank_p50_us: s('rankP50us'),
      rank_p99_us: s('rankP99us'),
      rank_no_gc_p99_us: s('rankNoGcP99us'),
      rank_share_over_1ms: s('over1ms'),
      rank_undisturbed_p99_us: s('rankUndisturbedP99us'),
      rank_undisturbed_share: s('undisturbed'),
      before_p50_us: s('referenceP50us'),
      before_p99_us: s('referenceP99us'),
      speedup_p50: summarize(rs.map((x) => x.referenceP50us / x.rankP50us)),
      speedup_p99: summarize(rs.map((x) => x.referenceP99us / x.rankP99us)),
      registry_stats_p50_us: s('candidatesP50us'),
      route_json_p50_us: s('routeJsonP50us'),
      identical: rs.every((x) => x.identical),
    };
    results[`${cost}-${n}`] = row;
    const f = (v: Summary) => `${v.median.toFixed(0)} [${v.min.toFixed(0)}-${v.max.toFixed(0)}]`;
    log(
      `  ${cost.padEnd(8)} ${String(n).padStart(4)}: rank p50 ${f(row.rank_p50_us)} p99 ${f(row.rank_p99_us)} (undisturbed p99 ${f(row.rank_undisturbed_p99_us)}, >1 ms ${(row.rank_share_over_1ms.median * 100).toFixed(1)}%) | before p50 ${f(row.before_p50_us)} p99 ${f(row.before_p99_us)} | x${row.speedup_p50.median.toFixed(2)} p50, x${row.speedup_p99.median.toFixed(2)} p99 | identical ${row.identical}`,
    );
  }
  const lo = results[`${cost}-${SOURCES[0]}`]!.rank_p50_us as Summary;
  const hi = results[`${cost}-${SOURCES[SOURCES.length - 1]}`]!.rank_p50_us as Summary;
  log(`  ${cost}: rank p50 x${(hi.median / lo.median).toFixed(2)} from ${SOURCES[0]} to ${SOURCES[SOURCES.length - 1]} sources (${(SOURCES[SOURCES.length - 1]! / SOURCES[0]!).toFixed(0)}x the candidates)`);
}
if (!quick || a.out) {
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(
    out,
    JSON.stringify(
      { bench: 'fleet-decision', date: new Date().toISOString(), node: process.version, cpus: cpus().length, loadavg: { start: load0, end: loadavg() }, config: { sources: SOURCES, blocks_per_source: CAP, requests: REQUESTS, repeats: REPEATS, costs: COSTS }, results, runs },
      null,
      2,
    ) + '\n',
  );
  log(`wrote ${out}`);
}
