/**
 * Fleet scale: 256 workers × 2 data-parallel ranks = 512 event sources, published from separate
 * processes into one kv-router process, against a baseline fleet (16 × 2) in the same run.
 *
 * Publishers: `--hosts` child processes (bench/fleet-scale/publisher-host.ts), each hosting its
 * share of the workers: per rank one real KVEventPublisher (ipc:// PUB + replay ROUTER), fed by a
 * simulated prefix cache (bench/fleet-scale/cache-sim.ts), and one HTTP stub answering the
 * router's health probes (GET <url>/health; the router routes only to workers whose probe passes,
 * and polls no /load for multi-rank workers). The router: `node bin/kv-router.js --config FILE`
 * with a generated config listing every worker (dp_ranks 2), as a user starts it (plus
 * --expose-gc, so SIGUSR2 reports its heap after a full GC).
 *
 * Rates (assumptions, all flags):
 *  - cache size: 20 000 blocks of 16 tokens per rank (320k tokens: an 80 GB A100 serving an 8B
 *    model keeps ~28k such blocks after weights; `--blocks-per-source`);
 *  - steady state: each rank stores 100 blocks/s (1 600 uncached tokens/s: an A100 prefilling an 8B
 *    model at ~8k tokens/s, a ~60% prefix hit rate and ~40% busy) and, full, evicts as many; one
 *    batch per 50 ms engine step (vLLM publishes one batch per scheduler step). The Mooncake
 *    conversation trace (/work/shared/traces) needs 26.5k uncached prompt tokens/s fleet-wide
 *    (1 650 new blocks/s over 3 537 s): ~17 such ranks; 512 ranks are a fleet 30× that trace;
 *  - requests: a family prompt (one of 32 shared system prompts, 2 048 tokens, every rank holds
 *    them all) then 1 024 private tokens per request; /route prompts: a family prompt + 2 048
 *    tokens no rank holds (4 096 token ids), 50 requests/s, one at a time.
 * Repeats: measurement windows on the same filled fleet (filling 10M blocks once takes minutes).
 *
 * Figures per fleet and window: memory per held block (router heap after full GC, and RSS, minus
 * the same before any event, over the blocks the router reports holding); decision p50/p99 from
 * the router's own kv_router_decision_seconds histogram (interpolated in its bucket; the bucket's
 * bound is kept too) and /route latency at the client (which includes serialising every
 * candidate); event lag (publish ts → applied, each stream's `lag_ms` sampled from /workers
 * every second); block events/s applied against offered. Median and min-max over windows; ratio
 * 512 vs 32 sources. Writes bench/results/fleet.json.
 *
 * What "decision" is: kv_router_decision_seconds times policy.rank alone (the pipeline's rank step:
 * index walk, costs, sort), wall clock. It is synchronous, so it holds no waiting behind event
 * batches (that shows in /route at the client and in the loop delay); it does hold a GC pause or
 * the OS running another process in the middle of it. The probe in the router
 * (bench/fleet-scale/router-probe.mjs) reports, per window: every decision exactly (not from
 * buckets), how many of the slow ones had a GC pause inside, the whole synchronous decision
 * (decideNow: registry.candidates() + fit + rank) and candidates() alone, GC pauses, event-loop
 * delay and utilisation; with --sched also which decisions waited for a CPU (the main thread's
 * schedstat wait grew) and the p99 of the undisturbed ones (no GC, no wait): the decision's own time.
 * --sched adds two preads (~10 µs each) inside every timed decision.
 *
 * Run: flock /work/bench.lock npm run bench:fleet
 *      flags: --workers N --baseline-workers N --ranks N --hosts N --repeats N --window-s S
 *             --blocks-per-source N --rate BLOCKS_PER_S_PER_RANK --fill-rate BLOCKS_PER_S
 *             --route-rps N --cpu-prof DIR (router profile) --out FILE --quick (tiny, seconds)
 *             --sched (the router's probe also reads the main thread's CPU wait around each decision)
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { livePids, type ProbeStats } from './fleet-scale/children.js';
import { runFleet, type FleetParams, type FleetResult, type WindowResult } from './fleet-scale/fleet.js';
import { fmt, summarize, type Summary } from './fleet-scale/stats.js';

const { values: a } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    workers: { type: 'string' },
    'baseline-workers': { type: 'string' },
    ranks: { type: 'string' },
    hosts: { type: 'string' },
    repeats: { type: 'string' },
    'window-s': { type: 'string' },
    'blocks-per-source': { type: 'string' },
    rate: { type: 'string' },
    'fill-rate': { type: 'string' },
    'route-rps': { type: 'string' },
    'cpu-prof': { type: 'string' },
    'no-quiet': { type: 'boolean', default: false },
    sched: { type: 'boolean', default: false },
    out: { type: 'string' },
  },
});
const quick = a.quick!;
// router-probe.mjs: time each decision's wait for a CPU too (two preads inside every timed decision).
if (a.sched) process.env.KV_FLEET_SCHED = '1';
const num = (v: string | undefined, full: number, q: number) => (v === undefined ? (quick ? q : full) : Number(v));
const root = fileURLToPath(new URL('..', import.meta.url));
const out = resolve(a.out ?? join(root, 'bench/results/fleet.json'));
const log = (line: string) => process.stdout.write(`${line}\n`);

const capacity = num(a['blocks-per-source'], 20_000, 400);
const common: Omit<FleetParams, 'workers'> = {
  ranks: num(a.ranks, 2, 2),
  hosts: num(a.hosts, 4, 2),
  shape: quick ? { blockSize: 16, families: 4, familyBlocks: 16, tailBlocks: 16, capacity } : { blockSize: 16, families: 32, familyBlocks: 128, tailBlocks: 64, capacity },
  rankBlocksPerS: num(a.rate, 100, 100),
  stepMs: 50,
  fillBlocksPerS: num(a['fill-rate'], 150_000, 50_000),
  fillBlocksPerBatch: 64,
  warmupMs: quick ? 1000 : 5000,
  windowMs: num(a['window-s'], 15, 1) * 1000,
  repeats: num(a.repeats, 3, 3),
  routeRps: num(a['route-rps'], 50, 50),
  quietWindow: !a['no-quiet'],
  routerNodeArgs: a['cpu-prof'] ? ['--cpu-prof', `--cpu-prof-dir=${resolve(a['cpu-prof'])}`] : [],
  log,
};
const fullWorkers = num(a.workers, 256, 4);
const baseWorkers = num(a['baseline-workers'], 16, 2);

function summary(f: FleetResult) {
  const s = (k: Exclude<keyof WindowResult, 'probe'>) => summarize(f.windows.map((w) => w[k]));
  const sp = (k: Exclude<keyof ProbeStats, 'gc' | 'decisions_over_1ms_descheduled' | 'decisions_undisturbed' | 'decision_undisturbed_p99_ms' | 'decision_undisturbed_max_ms'>) => summarize(f.windows.map((w) => w.probe[k]));
  return {
    sources: f.sources,
    workers: f.workers,
    ranks: f.ranks,
    publisher_processes: f.hosts,
    held_blocks: s('heldBlocks'),
    fill_seconds: f.fillSeconds,
    fill_blocks_per_s: f.fillBlocksPerS,
    base_heap_bytes: f.baseHeapBytes,
    base_buffer_bytes: f.baseBufferBytes,
    base_rss_bytes: f.baseRssBytes,
    bytes_per_block_heap: s('bytesPerBlockHeap'),
    bytes_per_block_heap_and_buffers: s('bytesPerBlockHeapAndBuffers'),
    bytes_per_block_rss: s('bytesPerBlockRss'),
    decision_p50_ms: s('decisionP50Ms'),
    decision_p99_ms: s('decisionP99Ms'),
    decision_p99_bucket_bound_ms: s('decisionP99UpperBoundMs'),
    decision_share_under_1ms: s('decisionShareUnder1ms'),
    // Every observation of the histogram, exact (router-probe.mjs); "own": minus the GC pauses inside it.
    decision_exact_p50_ms: sp('decision_p50_ms'),
    decision_exact_p99_ms: sp('decision_p99_ms'),
    decision_exact_max_ms: sp('decision_max_ms'),
    decision_own_p99_ms: sp('decision_own_p99_ms'),
    decide_now_p50_ms: sp('decide_now_p50_ms'),
    decide_now_p99_ms: sp('decide_now_p99_ms'),
    candidates_p50_ms: sp('candidates_p50_ms'),
    candidates_p99_ms: sp('candidates_p99_ms'),
    decisions_over_1ms: sp('decisions_over_1ms'),
    decisions_over_1ms_with_gc: sp('decisions_over_1ms_with_gc'),
    decisions_over_1ms_descheduled: summarize(f.windows.map((w) => w.probe.decisions_over_1ms_descheduled ?? NaN)),
    decision_undisturbed_p99_ms: summarize(f.windows.map((w) => w.probe.decision_undisturbed_p99_ms ?? NaN)),
    gc_pause_ms_per_s: summarize(f.windows.map((w) => w.probe.gc_pause_ms_total / (common.windowMs / 1000))),
    loop_delay_p99_ms: sp('loop_delay_p99_ms'),
    loop_delay_max_ms: sp('loop_delay_max_ms'),
    loop_utilization: sp('loop_utilization'),
    route_client_p50_ms: s('routeP50Ms'),
    route_client_p99_ms: s('routeP99Ms'),
    lag_p50_ms: s('lagP50Ms'),
    lag_p99_ms: s('lagP99Ms'),
    applied_block_events_per_s: s('appliedBlockEventsPerS'),
    offered_block_events_per_s: s('offeredBlockEventsPerS'),
    applied_batches_per_s: s('appliedBatchesPerS'),
    gaps: s('gaps'),
    history_missing: s('historyMissing'),
    dropped_batches: s('dropped'),
    windows: f.windows,
    quiet: f.quiet,
  };
}

const ratio = (x: Summary, y: Summary) => x.median / y.median;

async function main(): Promise<void> {
  const startedAt = new Date().toISOString();
  const load0 = loadavg();
  log(`fleet-scale: ${fullWorkers}x${common.ranks} vs baseline ${baseWorkers}x${common.ranks}, ${common.hosts} publisher processes, ${capacity} blocks/source, ${common.rankBlocksPerS} blocks/s/rank, ${common.repeats} windows of ${common.windowMs / 1000} s; load ${load0.map((x) => x.toFixed(2)).join(' ')}`);
  const baseline = await runFleet({ ...common, workers: baseWorkers });
  const full = await runFleet({ ...common, workers: fullWorkers });
  const load1 = loadavg();
  const b = summary(baseline);
  const f = summary(full);
  const ratios = {
    decision_p99: ratio(f.decision_p99_ms, b.decision_p99_ms),
    route_client_p99: ratio(f.route_client_p99_ms, b.route_client_p99_ms),
    bytes_per_block_heap: ratio(f.bytes_per_block_heap, b.bytes_per_block_heap),
    lag_p99: ratio(f.lag_p99_ms, b.lag_p99_ms),
    applied_block_events_per_s: ratio(f.applied_block_events_per_s, b.applied_block_events_per_s),
  };
  const key = (r: { sources: number }) => `${r.sources}-sources`;
  const result = {
    bench: 'fleet-scale',
    date: startedAt,
    node: process.version,
    cpus: cpus().length,
    quick,
    command: `npm run bench:fleet -- ${process.argv.slice(2).join(' ')}`.trim(),
    loadavg: { start: load0, end: load1 },
    config: {
      ranks: common.ranks,
      publisher_processes: common.hosts,
      blocks_per_source: capacity,
      block_size: common.shape.blockSize,
      families: common.shape.families,
      family_blocks: common.shape.familyBlocks,
      tail_blocks: common.shape.tailBlocks,
      rank_blocks_per_s: common.rankBlocksPerS,
      step_ms: common.stepMs,
      fill_blocks_per_s: common.fillBlocksPerS,
      window_s: common.windowMs / 1000,
      repeats: common.repeats,
      route_rps: common.routeRps,
      route_prompt_tokens: 2 * common.shape.familyBlocks * common.shape.blockSize,
    },
    results: { [key(f)]: f, [key(b)]: b },
    summary: {
      sources: f.sources,
      baseline_sources: b.sources,
      bytes_per_block_heap: f.bytes_per_block_heap,
      bytes_per_block_heap_and_buffers: f.bytes_per_block_heap_and_buffers,
      bytes_per_block_rss: f.bytes_per_block_rss,
      decision_p50_ms: f.decision_p50_ms,
      decision_p99_ms: f.decision_p99_ms,
      route_client_p99_ms: f.route_client_p99_ms,
      lag_p50_ms: f.lag_p50_ms,
      lag_p99_ms: f.lag_p99_ms,
      applied_block_events_per_s: f.applied_block_events_per_s,
      decision_p99_under_1ms: f.decision_p99_ms.median < 1,
      decision_share_under_1ms: f.decision_share_under_1ms,
      // The same /route load with no events: what of the latency is waiting behind event batches.
      quiet: f.quiet && { decision_p50_ms: f.quiet.decisionP50Ms, decision_p99_ms: f.quiet.decisionP99Ms, decision_share_under_1ms: f.quiet.decisionShareUnder1ms, route_client_p50_ms: f.quiet.routeP50Ms, route_client_p99_ms: f.quiet.routeP99Ms },
      ratio_vs_baseline: ratios,
    },
    child_pids: [...baseline.hostPids, baseline.routerPid, ...full.hostPids, full.routerPid],
  };
  log('');
  log(`                         ${key(f).padStart(22)} ${key(b).padStart(22)}  ratio`);
  const row = (name: string, x: Summary, y: Summary, d = 2) => log(`${name.padEnd(24)} ${fmt(x, d).padStart(22)} ${fmt(y, d).padStart(22)}  ${(x.median / y.median).toFixed(2)}`);
  row('held blocks', f.held_blocks, b.held_blocks, 0);
  row('bytes/block (heap+buf)', f.bytes_per_block_heap_and_buffers, b.bytes_per_block_heap_and_buffers, 0);
  row('bytes/block (JS heap)', f.bytes_per_block_heap, b.bytes_per_block_heap, 0);
  row('bytes/block (RSS)', f.bytes_per_block_rss, b.bytes_per_block_rss, 0);
  row('decision p50 ms', f.decision_p50_ms, b.decision_p50_ms, 3);
  row('decision p99 ms', f.decision_p99_ms, b.decision_p99_ms, 3);
  row('decision ≤1 ms share', f.decision_share_under_1ms, b.decision_share_under_1ms, 3);
  row('decision p99 ms (exact)', f.decision_exact_p99_ms, b.decision_exact_p99_ms, 3);
  row('decision max ms (exact)', f.decision_exact_max_ms, b.decision_exact_max_ms, 3);
  row('decision p99 ms w/o GC', f.decision_own_p99_ms, b.decision_own_p99_ms, 3);
  row('decideNow p50 ms', f.decide_now_p50_ms, b.decide_now_p50_ms, 3);
  row('decideNow p99 ms', f.decide_now_p99_ms, b.decide_now_p99_ms, 3);
  row('candidates() p50 ms', f.candidates_p50_ms, b.candidates_p50_ms, 3);
  row('decisions >1 ms', f.decisions_over_1ms, b.decisions_over_1ms, 0);
  row('  of them with a GC in', f.decisions_over_1ms_with_gc, b.decisions_over_1ms_with_gc, 0);
  row('  descheduled (--sched)', f.decisions_over_1ms_descheduled, b.decisions_over_1ms_descheduled, 0);
  row('undisturbed p99 (--sched)', f.decision_undisturbed_p99_ms, b.decision_undisturbed_p99_ms, 3);
  row('GC pause ms/s', f.gc_pause_ms_per_s, b.gc_pause_ms_per_s, 1);
  row('loop delay p99 ms', f.loop_delay_p99_ms, b.loop_delay_p99_ms, 1);
  row('loop delay max ms', f.loop_delay_max_ms, b.loop_delay_max_ms, 1);
  row('loop utilization', f.loop_utilization, b.loop_utilization, 2);
  row('/route p50 ms (client)', f.route_client_p50_ms, b.route_client_p50_ms);
  row('/route p99 ms (client)', f.route_client_p99_ms, b.route_client_p99_ms);
  row('lag p50 ms', f.lag_p50_ms, b.lag_p50_ms, 1);
  row('lag p99 ms', f.lag_p99_ms, b.lag_p99_ms, 1);
  row('applied block ev/s', f.applied_block_events_per_s, b.applied_block_events_per_s, 0);
  row('offered block ev/s', f.offered_block_events_per_s, b.offered_block_events_per_s, 0);
  const qrow = (name: string, x: number | undefined, y: number | undefined, d = 2) => log(`${name.padEnd(24)} ${(x ?? NaN).toFixed(d).padStart(22)} ${(y ?? NaN).toFixed(d).padStart(22)}  ${((x ?? NaN) / (y ?? NaN)).toFixed(2)}`);
  qrow('quiet: decision p50 ms', f.quiet?.decisionP50Ms, b.quiet?.decisionP50Ms, 3);
  qrow('quiet: decision p99 ms', f.quiet?.decisionP99Ms, b.quiet?.decisionP99Ms, 3);
  qrow('quiet: /route p50 ms', f.quiet?.routeP50Ms, b.quiet?.routeP50Ms);
  qrow('quiet: /route p99 ms', f.quiet?.routeP99Ms, b.quiet?.routeP99Ms);
  log(`goal decision p99 < 1 ms at ${f.sources} sources: ${result.summary.decision_p99_under_1ms ? 'met' : 'missed'}; load ${load1.map((x) => x.toFixed(2)).join(' ')}`);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify(result, null, 2) + '\n');
  log(`wrote ${out}`);
  const left = livePids();
  if (left.length > 0) throw new Error(`child processes still running: ${left.join(' ')}`);
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`fleet-scale: ${(e as Error).stack ?? e}\n`);
    process.exit(1);
  },
);
