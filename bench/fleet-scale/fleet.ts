/**
 * One fleet of the bench: publisher hosts (child processes, each with many workers × ranks of real
 * KVEventPublishers on ipc:// and an HTTP stub for the health probes), one kv-router process with
 * a generated config listing them, a fill to steady state, then measurement windows.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../src/net/free-port.js';
import { familyTokens, type CacheShape } from './cache-sim.js';
import { Host, rssOf, startRouter, stopProcess, type ProbeStats, type RouterProc } from './children.js';
import { bucketsOf, quantileBetween, sumOf } from './prom.js';
import type { HostStats, HostWorker } from './protocol.js';
import { percentile } from './stats.js';

export interface FleetParams {
  workers: number;
  ranks: number;
  hosts: number;
  shape: CacheShape;
  /** Steady state: blocks each rank stores (and evicts) per second. */
  rankBlocksPerS: number;
  /** Engine step: one batch per rank per step. */
  stepMs: number;
  /** Fill: blocks/s over the whole fleet, and blocks per fill batch. */
  fillBlocksPerS: number;
  fillBlocksPerBatch: number;
  warmupMs: number;
  windowMs: number;
  repeats: number;
  /** /route requests per second during a window (open loop, one at a time). */
  routeRps: number;
  /** Measure one more window with the publishers stopped (FleetResult.quiet). */
  quietWindow: boolean;
  /** Node flags of the router process (e.g. --cpu-prof). */
  routerNodeArgs: string[];
  log: (line: string) => void;
}

export interface WindowResult {
  heldBlocks: number;
  heapBytes: number;
  /** ArrayBuffers (the index's node store and per-source tables live there, outside the JS heap). */
  bufferBytes: number;
  rssBytes: number;
  bytesPerBlockHeap: number;
  /** (JS heap + ArrayBuffers) after a full GC, minus the same before any event, per held block: what the index costs. */
  bytesPerBlockHeapAndBuffers: number;
  bytesPerBlockRss: number;
  /** Router's own kv_router_decision_seconds over the window (ms). */
  decisionP50Ms: number;
  decisionP99Ms: number;
  decisionP99UpperBoundMs: number;
  decisionShareUnder1ms: number;
  decisions: number;
  /** POST /route round trip at the client (ms). */
  routeP50Ms: number;
  routeP99Ms: number;
  routeRequests: number;
  routeErrors: number;
  /** Publish ts → applied, per source (each /workers sample: every stream's last batch). */
  lagP50Ms: number;
  lagP99Ms: number;
  lagSamples: number;
  offeredBlockEventsPerS: number;
  appliedBlockEventsPerS: number;
  appliedBatchesPerS: number;
  gaps: number;
  historyMissing: number;
  dropped: number;
  /**
   * The same decisions as timed inside the router (every observation, exact quantiles), the GC
   * pauses that overlapped them, the event loop's delay and utilisation (bench/fleet-scale/router-probe.mjs).
   */
  probe: ProbeStats;
}

export interface FleetResult {
  sources: number;
  workers: number;
  ranks: number;
  hosts: number;
  baseHeapBytes: number;
  baseBufferBytes: number;
  baseRssBytes: number;
  fillSeconds: number;
  fillBlocksPerS: number;
  windows: WindowResult[];
  /**
   * One more window with the publishers stopped (no event batches to apply): the same /route load, so
   * the difference to the windows above is what waiting behind event batches on the router's one
   * thread costs (the decision itself is synchronous: the histogram times only rank).
   */
  quiet: WindowResult | null;
  hostPids: number[];
  routerPid: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function getText(url: string, timeoutMs = 30_000): Promise<string> {
  const r = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  const t = await r.text();
  if (!r.ok) throw new Error(`GET ${url}: HTTP ${r.status}: ${t.slice(0, 200)}`);
  return t;
}

interface WorkersView {
  workers: { id: string; state: string; ranks: { source: string; events: { connected: boolean; lag_ms: number | null; last_seq: string | null } | null }[] }[];
}

function sumStats(xs: HostStats[]): HostStats {
  return xs.reduce((a, b) => ({ batches: a.batches + b.batches, blockEvents: a.blockEvents + b.blockEvents, dropped: a.dropped + b.dropped, heldBlocks: a.heldBlocks + b.heldBlocks }), { batches: 0, blockEvents: 0, dropped: 0, heldBlocks: 0 });
}

/** Prompts of `n` ids: a family's prompt (held by every rank) then blocks no rank holds. */
function routeBodies(p: FleetParams, count: number): string[] {
  const out: string[] = [];
  let x = 12345;
  for (let i = 0; i < count; i++) {
    const ids = familyTokens(i % p.shape.families, p.shape);
    const miss = p.shape.familyBlocks * p.shape.blockSize;
    for (let j = 0; j < miss; j++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      ids.push(x % 150_000);
    }
    out.push(JSON.stringify({ prompt: ids, max_tokens: 1 }));
  }
  return out;
}

export async function runFleet(p: FleetParams): Promise<FleetResult> {
  const dir = mkdtempSync(join(tmpdir(), 'kvfleet-'));
  const hosts: Host[] = [];
  let router: RouterProc | null = null;
  const label = `${p.workers}x${p.ranks}`;
  try {
    for (let h = 0; h < p.hosts; h++) hosts.push(Host.start());
    const byHost: HostWorker[][] = hosts.map(() => []);
    for (let i = 0; i < p.workers; i++) byHost[i % p.hosts]!.push({ id: `w${i}`, index: i, endpoint: `ipc://${dir}/w${i}.pub`, replayEndpoint: `ipc://${dir}/w${i}.rep` });
    const ready = await Promise.all(hosts.map((h, k) => h.request({ type: 'start', workers: byHost[k]!, ranks: p.ranks, topic: 'kv', shape: p.shape }, 'ready')));
    const port = await freePort();
    const workers = byHost.flatMap((ws, k) =>
      ws.map((w) => ({ id: w.id, url: `http://127.0.0.1:${ready[k]!.httpPort}/${w.id}`, kv_events: { endpoint: w.endpoint, replay_endpoint: w.replayEndpoint, topic: 'kv' }, dp_ranks: p.ranks, block_size: p.shape.blockSize })),
    );
    const cfgFile = join(dir, 'router.json');
    writeFileSync(
      cfgFile,
      JSON.stringify({ description: `fleet-scale bench: ${p.workers} workers x ${p.ranks} ranks (bench/fleet-scale.bench.ts)`, host: '127.0.0.1', port, policy: 'cache_aware', tokenizer_threads: 1, drain_timeout_ms: 500, workers }, null, 1),
    );
    const base = `http://127.0.0.1:${port}`;
    const r = startRouter(cfgFile, p.routerNodeArgs);
    router = r;
    const routerGone = new Promise<never>((_, rej) => r.proc.once('exit', (c, s) => rej(new Error(`router exited (${s ?? c}):\n  ${r.tail.join('\n  ')}`))));
    routerGone.catch(() => {});
    const race = <T>(x: Promise<T>) => Promise.race([x, routerGone]);

    // Every worker healthy and every stream connected before any event.
    const deadline = Date.now() + 180_000;
    for (;;) {
      if (Date.now() > deadline) throw new Error(`${label}: router not ready after 180 s:\n  ${r.tail.join('\n  ')}`);
      const ok = await race(
        getText(`${base}/workers`, 5000).then(
          (t) => {
            const v = JSON.parse(t) as WorkersView;
            return v.workers.length === p.workers && v.workers.every((w) => w.state === 'healthy' && w.ranks.every((k) => k.events?.connected));
          },
          () => false,
        ),
      );
      if (ok) break;
      await sleep(250);
    }
    const baseMem = await race(r.heapAfterGc());
    const baseHeapBytes = baseMem.heap;
    const baseBufferBytes = baseMem.buffers;
    const baseRssBytes = rssOf(r.proc.pid!);
    p.log(`${label}: router ready (pid ${r.proc.pid}, publisher processes ${hosts.map((h) => h.proc.pid).join(' ')}, heap ${(baseHeapBytes / 2 ** 20).toFixed(0)} MiB); filling ${p.workers * p.ranks} sources to ${p.shape.capacity} blocks each`);

    const t0 = performance.now();
    const filled = await race(Promise.all(hosts.map((h) => h.request({ type: 'fill', blocksPerS: p.fillBlocksPerS / p.hosts, blocksPerBatch: p.fillBlocksPerBatch }, 'filled'))));
    const want = sumStats(filled.map((f) => f.stats)).heldBlocks;
    for (;;) {
      const held = sumOf(await race(getText(`${base}/metrics`)), 'kv_router_tree_blocks');
      if (held >= want) break;
      if (performance.now() - t0 > 600_000) throw new Error(`${label}: router holds ${held} of ${want} blocks after 600 s`);
      await sleep(500);
    }
    const fillSeconds = (performance.now() - t0) / 1000;
    p.log(`${label}: filled ${want} blocks in ${fillSeconds.toFixed(1)} s (${Math.round(want / fillSeconds)} blocks/s applied); steady state at ${p.rankBlocksPerS} blocks/s stored + evicted per rank`);

    for (const h of hosts) h.send({ type: 'steady', blocksPerS: p.rankBlocksPerS, stepMs: p.stepMs });
    const bodies = routeBodies(p, 64);
    // Warm-up: the tokenizer the vocabulary check needs loads on the first /route; JIT settles.
    const warmEnd = performance.now() + p.warmupMs;
    for (let k = 0; k === 0 || performance.now() < warmEnd; k++) {
      const res = await race(fetch(`${base}/route`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: bodies[k % bodies.length]! }));
      const text = await res.text();
      if (!res.ok) throw new Error(`${label}: POST /route: HTTP ${res.status}: ${text.slice(0, 300)}`);
      await sleep(1000 / p.routeRps);
    }
    const windows: WindowResult[] = [];
    for (let i = 0; i < p.repeats; i++) {
      const w = await race(measureWindow(p, base, hosts, r, baseMem, baseRssBytes, bodies));
      windows.push(w);
      p.log(
        `${label} window ${i + 1}/${p.repeats}: held ${w.heldBlocks}, ${w.bytesPerBlockHeapAndBuffers.toFixed(0)} B/block heap+buffers (${w.bytesPerBlockHeap.toFixed(0)} heap, ${w.bytesPerBlockRss.toFixed(0)} RSS); ` +
          `decision p50 ${w.decisionP50Ms.toFixed(3)} p99 ${w.decisionP99Ms.toFixed(3)} ms (≤1 ms: ${(w.decisionShareUnder1ms * 100).toFixed(1)}%), /route p50 ${w.routeP50Ms.toFixed(2)} p99 ${w.routeP99Ms.toFixed(2)} ms; ` +
          `lag p50 ${w.lagP50Ms.toFixed(1)} p99 ${w.lagP99Ms.toFixed(1)} ms; applied ${Math.round(w.appliedBlockEventsPerS)} of ${Math.round(w.offeredBlockEventsPerS)} block events/s`,
      );
      p.log(`  ${probeLine(w.probe)}`);
    }
    let quiet: WindowResult | null = null;
    if (p.quietWindow) {
      for (const h of hosts) h.send({ type: 'steady', blocksPerS: 0, stepMs: p.stepMs });
      await sleep(1000); // batches already sent are applied
      const w = await race(measureWindow(p, base, hosts, r, baseMem, baseRssBytes, bodies));
      quiet = w;
      p.log(
        `${label} quiet window (no events): decision p50 ${w.decisionP50Ms.toFixed(3)} p99 ${w.decisionP99Ms.toFixed(3)} ms (≤1 ms: ${(w.decisionShareUnder1ms * 100).toFixed(1)}%), /route p50 ${w.routeP50Ms.toFixed(2)} p99 ${w.routeP99Ms.toFixed(2)} ms; applied ${Math.round(w.appliedBlockEventsPerS)} block events/s`,
      );
      p.log(`  ${probeLine(w.probe)}`);
    }
    return {
      sources: p.workers * p.ranks,
      workers: p.workers,
      ranks: p.ranks,
      hosts: p.hosts,
      baseHeapBytes,
      baseBufferBytes,
      baseRssBytes,
      fillSeconds,
      fillBlocksPerS: want / fillSeconds,
      windows,
      quiet,
      hostPids: hosts.map((h) => h.proc.pid!),
      routerPid: r.proc.pid!,
    };
  } finally {
    await Promise.allSettled(hosts.map((h) => h.stop()));
    if (router) await stopProcess(router.proc, 10_000);
    rmSync(dir, { recursive: true, force: true });
  }
}

function probeLine(x: ProbeStats): string {
  const gc = Object.entries(x.gc)
    .map(([k, g]) => `${k} ${g.count}x p99 ${g.p99_ms.toFixed(2)} max ${g.max_ms.toFixed(2)} ms`)
    .join(', ');
  return (
    `in the router: decision p50 ${x.decision_p50_ms.toFixed(3)} p99 ${x.decision_p99_ms.toFixed(3)} max ${x.decision_max_ms.toFixed(2)} ms, without the GC inside p99 ${x.decision_own_p99_ms.toFixed(3)} ms; ` +
    `whole decideNow p50 ${x.decide_now_p50_ms?.toFixed(3)} p99 ${x.decide_now_p99_ms?.toFixed(3)} ms (registry.candidates() p50 ${x.candidates_p50_ms?.toFixed(3)} p99 ${x.candidates_p99_ms?.toFixed(3)}); ` +
    `>1 ms ${x.decisions_over_1ms} of ${x.decisions} (${x.decisions_over_1ms_with_gc} with a GC pause in` +
    (x.decisions_over_1ms_descheduled === null ? '' : `, ${x.decisions_over_1ms_descheduled} descheduled; undisturbed ${x.decisions_undisturbed}: p99 ${x.decision_undisturbed_p99_ms?.toFixed(3)} max ${x.decision_undisturbed_max_ms?.toFixed(2)} ms`) +
    `); GC ${gc}; loop delay p99 ${x.loop_delay_p99_ms.toFixed(1)} max ${x.loop_delay_max_ms.toFixed(1)} ms, utilisation ${x.loop_utilization.toFixed(2)}`
  );
}

async function measureWindow(p: FleetParams, base: string, hosts: Host[], r: RouterProc, baseMem: { heap: number; buffers: number }, baseRss: number, bodies: string[]): Promise<WindowResult> {
  const m0 = await getText(`${base}/metrics`);
  r.probeReset();
  const s0 = sumStats(await Promise.all(hosts.map((h) => h.stats())));
  const t0 = performance.now();
  const end = t0 + p.windowMs;
  const routeMs: number[] = [];
  let routeErrors = 0;
  const client = (async () => {
    const gap = 1000 / p.routeRps;
    for (let k = 0; performance.now() < end; k++) {
      const due = t0 + k * gap;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      const a = performance.now();
      try {
        const res = await fetch(`${base}/route`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: bodies[k % bodies.length]! });
        await res.arrayBuffer();
        if (res.ok) routeMs.push(performance.now() - a);
        else routeErrors++;
      } catch {
        routeErrors++;
      }
    }
  })();
  const lags: number[] = [];
  const sampler = (async () => {
    const seen = new Map<string, string | null>();
    while (performance.now() < end) {
      await sleep(Math.min(1000, Math.max(0, end - performance.now())));
      const v = JSON.parse(await getText(`${base}/workers`)) as WorkersView;
      for (const w of v.workers)
        for (const k of w.ranks) {
          const e = k.events;
          if (!e || e.lag_ms === null || seen.get(k.source) === e.last_seq) continue;
          seen.set(k.source, e.last_seq);
          lags.push(e.lag_ms);
        }
    }
  })();
  await Promise.all([client, sampler]);
  const m1 = await getText(`${base}/metrics`);
  const probe = await r.probeRead();
  const s1 = sumStats(await Promise.all(hosts.map((h) => h.stats())));
  const secs = (performance.now() - t0) / 1000;
  const mem = await r.heapAfterGc();
  const heapBytes = mem.heap;
  const bufferBytes = mem.buffers;
  const rssBytes = rssOf(r.proc.pid!);
  const heldBlocks = sumOf(m1, 'kv_router_tree_blocks');
  const b0 = bucketsOf(m0, 'kv_router_decision_seconds');
  const b1 = bucketsOf(m1, 'kv_router_decision_seconds');
  const q99 = quantileBetween(b0, b1, 0.99);
  const q50 = quantileBetween(b0, b1, 0.5);
  const batches = sumOf(m1, 'kv_router_stream_batches_total') - sumOf(m0, 'kv_router_stream_batches_total');
  const offeredBatches = s1.batches - s0.batches;
  const offeredEvents = s1.blockEvents - s0.blockEvents;
  const perBatch = offeredBatches > 0 ? offeredEvents / offeredBatches : 0;
  return {
    heldBlocks,
    heapBytes,
    bufferBytes,
    rssBytes,
    bytesPerBlockHeap: (heapBytes - baseMem.heap) / heldBlocks,
    bytesPerBlockHeapAndBuffers: (heapBytes + bufferBytes - baseMem.heap - baseMem.buffers) / heldBlocks,
    bytesPerBlockRss: (rssBytes - baseRss) / heldBlocks,
    decisionP50Ms: q50.estimate * 1000,
    decisionP99Ms: q99.estimate * 1000,
    decisionP99UpperBoundMs: q99.upperBound * 1000,
    decisionShareUnder1ms: q99.shareUnder1ms,
    decisions: q99.count,
    routeP50Ms: percentile(routeMs, 50),
    routeP99Ms: percentile(routeMs, 99),
    routeRequests: routeMs.length,
    routeErrors,
    lagP50Ms: percentile(lags, 50),
    lagP99Ms: percentile(lags, 99),
    lagSamples: lags.length,
    offeredBlockEventsPerS: offeredEvents / secs,
    appliedBlockEventsPerS: (batches * perBatch) / secs,
    appliedBatchesPerS: batches / secs,
    gaps: sumOf(m1, 'kv_router_stream_gaps_total') - sumOf(m0, 'kv_router_stream_gaps_total'),
    historyMissing: sumOf(m1, 'kv_router_stream_history_missing_total') - sumOf(m0, 'kv_router_stream_history_missing_total'),
    dropped: s1.dropped - s0.dropped,
    probe,
  };
}
