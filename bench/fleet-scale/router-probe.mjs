/**
 * Loaded into the bench's router process (`node --import <this file>`; plain JS: it runs before tsx
 * registers). What the router's decision histogram cannot say by itself: whether a slow decision
 * was the decision's own work or a GC pause that landed inside it, and how long the event loop
 * stalls (event batches applied, GC) while requests wait before their decision starts.
 *
 * - every kv_router_decision_seconds observation (prom-client's Histogram observe, wrapped) with
 *   its end time, so each can be matched against the GC pauses that overlapped it;
 * - GC pauses (PerformanceObserver 'gc': start, duration, kind);
 * - event-loop delay (monitorEventLoopDelay, 1 ms resolution) and utilisation.
 * The bench asks over the IPC channel: {probe: 'reset'} starts a window, {probe: 'read'} answers
 * {probe: 'stats', ...} for the window since.
 */
import { openSync, readSync } from 'node:fs';
import { monitorEventLoopDelay, performance, PerformanceObserver } from 'node:perf_hooks';
// An ESM import (not require): the router's own import, made later through tsx, finds this module record.
import { Histogram } from 'prom-client';

const DECISION = 'kv_router_decision_seconds';
const MAX = 200_000;
let decEnd = new Float64Array(MAX);
let decMs = new Float64Array(MAX);
let nDec = 0;
/** GC pauses: start, duration (ms), kind. */
let gcs = [];

// prom-client sets each histogram's `observe` to this one in its constructor (no exemplars).
const observe = Histogram.prototype.observeWithoutExemplar;
Histogram.prototype.observeWithoutExemplar = function (labels, value) {
  if (this.name === DECISION && !patching) patch();
  if (this.name === DECISION && nDec < MAX) {
    const v = typeof labels === 'number' ? labels : value;
    decEnd[nDec] = performance.now();
    decMs[nDec++] = v * 1000;
  }
  return observe.apply(this, arguments);
};

/**
 * KV_FLEET_SCHED=1: cache_aware's rank also reads the main thread's scheduler clock before and after
 * (/proc/thread-self/schedstat: ns waiting for a CPU), so a slow decision that was descheduled by
 * the OS shows as such. Costs two preads (~10 µs each) inside every timed decision: off by default.
 * Patched at the first decision (tsx is registered by then, so the router's own module loads).
 */
const SCHED = process.env.KV_FLEET_SCHED === '1';
let patching = false;
let waitUs = new Float64Array(MAX);
let nWait = 0;
let schedFd = -1;
const schedBuf = Buffer.alloc(96);
function waitNs() {
  const n = readSync(schedFd, schedBuf, 0, schedBuf.length, 0);
  return Number(schedBuf.toString('latin1', 0, n).split(' ')[1]);
}
/** Wall times (ms) of the whole synchronous decision (RequestPipeline.decideNow: candidates as they are now, fit, rank) and of registry.candidates(). */
let nowMs = new Float64Array(MAX);
let nNow = 0;
let candMs = new Float64Array(MAX);
let nCand = 0;
const mod = (path) => import(new URL(path, import.meta.url).href);
function patch() {
  patching = true;
  mod('../../router/pipeline.ts').then(({ RequestPipeline }) => {
    const decideNow = RequestPipeline.prototype.decideNow;
    RequestPipeline.prototype.decideNow = function (prep) {
      const a = performance.now();
      const out = decideNow.call(this, prep);
      if (nNow < MAX) nowMs[nNow++] = performance.now() - a;
      return out;
    };
  });
  mod('../../router/registry.ts').then(({ Registry }) => {
    const candidates = Registry.prototype.candidates;
    Registry.prototype.candidates = function () {
      const a = performance.now();
      const out = candidates.call(this);
      if (nCand < MAX) candMs[nCand++] = performance.now() - a;
      return out;
    };
  });
  if (!SCHED) return;
  schedFd = openSync('/proc/thread-self/schedstat', 'r');
  mod('../../router/policies/cache-aware.ts').then(({ CacheAwarePolicy }) => {
    const rank = CacheAwarePolicy.prototype.rank;
    CacheAwarePolicy.prototype.rank = function (req, candidates) {
      const w0 = waitNs();
      const out = rank.call(this, req, candidates);
      if (nWait < MAX) waitUs[nWait++] = (waitNs() - w0) / 1000;
      return out;
    };
  });
}

const KINDS = { 1: 'minor', 2: 'major', 4: 'incremental', 8: 'weakcb' };
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gcs.push({ start: e.startTime, ms: e.duration, kind: KINDS[e.detail?.kind ?? e.kind] ?? String(e.detail?.kind ?? e.kind) });
}).observe({ entryTypes: ['gc'] });

const loop = monitorEventLoopDelay({ resolution: 1 });
loop.enable();
let elu0 = performance.eventLoopUtilization();

function quantile(xs, q) {
  if (xs.length === 0) return null;
  const s = Float64Array.from(xs).sort();
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}

function read() {
  const dec = [];
  const own = [];
  let slow = 0;
  let slowWithGc = 0;
  let withGc = 0;
  // Both lists are in time order: one pass.
  let g = 0;
  // Once rank is patched, decision i and wait i are the same call (both recorded from reset on).
  const sched = SCHED && nWait === nDec;
  const calm = [];
  let slowDescheduled = 0;
  for (let i = 0; i < nDec; i++) {
    const end = decEnd[i];
    const start = end - decMs[i];
    while (g < gcs.length && gcs[g].start + gcs[g].ms < start) g++;
    let gcMs = 0;
    for (let k = g; k < gcs.length && gcs[k].start <= end; k++) gcMs += Math.max(0, Math.min(end, gcs[k].start + gcs[k].ms) - Math.max(start, gcs[k].start));
    dec.push(decMs[i]);
    own.push(decMs[i] - gcMs);
    if (gcMs > 0) withGc++;
    const preempted = sched && waitUs[i] > 0;
    if (sched && !preempted && gcMs === 0) calm.push(decMs[i]);
    if (decMs[i] > 1) {
      slow++;
      if (gcMs > 0) slowWithGc++;
      if (preempted) slowDescheduled++;
    }
  }
  const byKind = {};
  for (const x of gcs) {
    const k = (byKind[x.kind] ??= { count: 0, total_ms: 0, max_ms: 0, all: [] });
    k.count++;
    k.total_ms += x.ms;
    k.max_ms = Math.max(k.max_ms, x.ms);
    k.all.push(x.ms);
  }
  for (const k of Object.values(byKind)) {
    k.p99_ms = quantile(k.all, 0.99);
    delete k.all;
  }
  const elu = performance.eventLoopUtilization(elu0);
  return {
    probe: 'stats',
    decisions: nDec,
    decision_p50_ms: quantile(dec, 0.5),
    decision_p99_ms: quantile(dec, 0.99),
    decision_max_ms: nDec ? Math.max(...dec) : NaN,
    /** The decision minus the GC pauses inside it: the decision's own time (preemption by the OS stays in). */
    decision_own_p50_ms: quantile(own, 0.5),
    decision_own_p99_ms: quantile(own, 0.99),
    decisions_over_1ms: slow,
    decisions_over_1ms_with_gc: slowWithGc,
    decisions_with_gc: withGc,
    /** The whole synchronous decision (decideNow: registry.candidates(), fit, rank), of which registry.candidates() alone. */
    decide_now_p50_ms: quantile(nowMs.subarray(0, nNow), 0.5),
    decide_now_p99_ms: quantile(nowMs.subarray(0, nNow), 0.99),
    candidates_p50_ms: quantile(candMs.subarray(0, nCand), 0.5),
    candidates_p99_ms: quantile(candMs.subarray(0, nCand), 0.99),
    /** KV_FLEET_SCHED=1 only (else null): decisions over 1 ms that waited for a CPU; decisions neither descheduled nor with a GC inside. */
    decisions_over_1ms_descheduled: sched ? slowDescheduled : null,
    decisions_undisturbed: sched ? calm.length : null,
    decision_undisturbed_p99_ms: sched ? quantile(calm, 0.99) : null,
    decision_undisturbed_max_ms: sched && calm.length ? Math.max(...calm) : null,
    gc: byKind,
    gc_pause_ms_total: gcs.reduce((a, x) => a + x.ms, 0),
    loop_delay_p50_ms: loop.percentile(50) / 1e6,
    loop_delay_p99_ms: loop.percentile(99) / 1e6,
    loop_delay_max_ms: loop.max / 1e6,
    loop_utilization: elu.utilization,
  };
}

function reset() {
  nDec = 0;
  nWait = 0;
  nNow = 0;
  nCand = 0;
  gcs = [];
  loop.reset();
  elu0 = performance.eventLoopUtilization();
}

process.on('message', (m) => {
  if (m?.probe === 'reset') reset();
  else if (m?.probe === 'read') process.send?.(read());
});
// Listening refs the channel; the router's own life (src/proc/parent.ts) decides when it ends.
process.channel?.unref();
