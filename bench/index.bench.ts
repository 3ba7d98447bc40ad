/**
 * Prefix-index benchmark: apply throughput, match latency, bytes per held block.
 * Run: node --expose-gc --import tsx bench/index.bench.ts   (RUNS=n to change repeats)
 * `--quick`: a few seconds on small sizes, to check the bench runs (results not written).
 * Also prints match time at 16, 64, 256, 512 sources (same blocks per source), as a ratio
 * to 16 sources in the same run: the walk should cost what the prompt costs, not sources x prompt.
 * match() builds a result object per source (O(sources) on top); matchView, what the router's
 * policy reads, does not.
 */
import { writeFileSync, mkdirSync } from 'node:fs';
import { loadavg } from 'node:os';
import { PrefixIndex, PromptKeys } from '../src/index/index.js';
import type { KVEventBatch } from '../src/events/types.js';
import { asBatch, BLOCK, mix32, PROMPT_BLOCKS, Workload } from './index-workload.js';

const QUICK = process.argv.includes('--quick');
const SOURCES = 16;
const TARGET_BLOCKS = QUICK ? 2_000 : 100_000;
const RUNS = QUICK ? 1 : Number(process.env.RUNS ?? 5);
const QUERIES = QUICK ? 300 : 4000;
const DISTINCT_PROMPTS = QUICK ? 50 : 400;
const CHURN_BLOCK_EVENTS = QUICK ? 20_000 : 1_000_000;
const SWEEP_SOURCES = [16, 64, 256, 512];
const SWEEP_BLOCKS = QUICK ? 200 : 4_000;
const SWEEP_QUERIES = QUICK ? 200 : 3000;
const gc = (globalThis as { gc?: () => void }).gc;

/**
 * A request's prompt as the router holds it when it ranks: an array the tokenizer (or JSON.parse) has
 * just written, so in cache. Cycling through 400 stored 8 192-token prompts (13 MB) would read each
 * from memory instead, which no request pays; reading it once before the timed match brings it in
 * (a copy would too, but its garbage would put GC pauses into the timings).
 */
let warmSink = 0;
function warm(p: number[]): number[] {
  let s = 0;
  for (let i = 0; i < p.length; i++) s = (s + p[i]) | 0;
  warmSink ^= s;
  return p;
}

/**
 * A request's keys, hashed in the timed region: new PromptKeys, not ix.promptKeys, which would find
 * the keys of the same array from its last round (it shares keys per token array, as one request's
 * rank, commit and hit bound do).
 */
function keysOf(p: number[]): PromptKeys {
  return new PromptKeys(p, BLOCK);
}

function mem(): number {
  gc?.();
  gc?.();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

/** ns per element of a plain Int32Array sum: how fast this machine is right now (~0.3 on an idle modern core). */
function calibrate(): number {
  const a = new Int32Array(1 << 16).fill(3);
  let best = Infinity;
  let sink = 0;
  for (let r = 0; r < 50; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < a.length; i++) sink = (sink + a[i]) | 0;
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / a.length);
  }
  return sink === -1 ? 0 : best;
}

interface Run {
  /** 1-minute load average when the run ended (other processes share the cores). */
  loadAvg1: number;
  calibrationNsPerElem: number;
  fillBlocksPerSec: number;
  fillBlocksPerCpuSec: number;
  churnBlockEventsPerSec: number;
  churnBlockEventsPerCpuSec: number;
  churnEventsPerSec: number;
  matchP50us: number;
  matchP99us: number;
  matchMeanUs: number;
  /** Mean CPU time per match (process CPU time over all queries): immune to being descheduled. */
  matchCpuMeanUs: number;
  matchCpuP50us: number;
  matchCpuP99us: number;
  matchMaxUs: number;
  meanBestMatchedTokens: number;
  heldBlocks: number;
  distinctNodes: number;
  bytesPerBlock: number | null;
  bytesPerNode: number | null;
  /** Sanity: unknown parents + unknown removals + invalid events over the run (expected 0). */
  rejectedEvents: number;
}

function oneRun(seed: number): Run {
  const wl = new Workload(seed);
  const srcId = (s: number): string => `w${s}:0`;
  const convs: number[][] = Array.from({ length: SOURCES }, () => []);
  const sysOn: Set<number>[] = Array.from({ length: SOURCES }, () => new Set());
  const held = new Array<number>(SOURCES).fill(0);
  let nextConv = 1;

  /** Events storing conversation c on source s (its system prompt too, the first time). */
  const storeOn = (s: number, c: number): KVEventBatch => {
    const sys = wl.sys(c);
    const from = sysOn[s].has(sys.id) ? sys.blocks : 0;
    sysOn[s].add(sys.id);
    convs[s].push(c);
    held[s] += wl.length(c) - from;
    return asBatch(wl.storeEvents(c, from, wl.length(c)));
  };
  const placements = (c: number): number[] => {
    const p = mix32(c * 13 + seed) % SOURCES;
    return mix32(c * 17 + seed) % 10 < 3 ? [p, (p + 1 + (mix32(c) % (SOURCES - 1))) % SOURCES] : [p];
  };

  const base = mem();
  const ix = new PrefixIndex();
  for (let s = 0; s < SOURCES; s++) ix.addSource(srcId(s));
  let fillSec = 0;
  let fillCpuSec = 0;
  let fillBlocks = 0;
  while (held.some((h) => h < TARGET_BLOCKS)) {
    // generated in slices of ~100 conversations, then applied and timed
    const slice: [string, KVEventBatch][] = [];
    for (let k = 0; k < 100 && held.some((h) => h < TARGET_BLOCKS); k++) {
      const c = nextConv++;
      for (const s of placements(c)) {
        if (held[s] >= TARGET_BLOCKS) continue;
        const b = storeOn(s, c);
        for (const ev of b.events) fillBlocks += ev.type === 'BlockStored' ? ev.block_hashes.length : 0;
        slice.push([srcId(s), b]);
      }
    }
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    for (const [s, b] of slice) ix.applyBatch(s, b);
    const cpu = process.cpuUsage(cpu0);
    fillSec += (performance.now() - t0) / 1000;
    fillCpuSec += (cpu.user + cpu.system) / 1e6;
  }
  const after = mem();
  let heldBlocks = 0;
  for (let s = 0; s < SOURCES; s++) heldBlocks += ix.stats(srcId(s)).blocks;
  const distinctNodes = ix.totalNodes();

  // Match: prompts of stored conversations (90%) and unseen ones sharing only a system prompt (10%).
  const prompts: number[][] = [];
  for (let q = 0; q < DISTINCT_PROMPTS; q++) {
    const r = mix32(q * 101 + seed);
    const c = r % 10 === 0 ? nextConv + q : convs[r % SOURCES][mix32(r) % convs[r % SOURCES].length];
    prompts.push(wl.tokens(c, 0, PROMPT_BLOCKS * BLOCK));
  }
  const lat = new Float64Array(QUERIES);
  let bestSum = 0;
  for (let q = 0; q < 1000; q++) ix.match(keysOf(warm(prompts[q % DISTINCT_PROMPTS]))); // warm-up
  gc?.();
  const matchCpu0 = process.cpuUsage();
  for (let q = 0; q < QUERIES; q++) {
    const p = warm(prompts[q % DISTINCT_PROMPTS]);
    const t0 = performance.now();
    // The router's hot path: keys once per request (hashing included in the time), then match.
    const res = ix.match(keysOf(p));
    lat[q] = (performance.now() - t0) * 1000;
    let best = 0;
    for (const v of res.values()) best = Math.max(best, v.matchedTokens);
    bestSum += best;
  }
  const matchCpu = process.cpuUsage(matchCpu0);
  lat.sort();
  // The same queries timed in CPU time (getrusage, µs): what the code costs when the
  // process is not descheduled. The cost of the two calls themselves is subtracted.
  const cpuLat = new Float64Array(QUERIES);
  const overhead = new Float64Array(200);
  for (let i = 0; i < overhead.length; i++) {
    const c = process.cpuUsage();
    const d = process.cpuUsage(c);
    overhead[i] = d.user + d.system;
  }
  overhead.sort();
  const callCost = overhead[overhead.length >> 1];
  for (let q = 0; q < QUERIES; q++) {
    const p = warm(prompts[q % DISTINCT_PROMPTS]);
    const c = process.cpuUsage();
    ix.match(keysOf(p));
    const d = process.cpuUsage(c);
    cpuLat[q] = Math.max(0, d.user + d.system - callCost);
  }
  cpuLat.sort();

  // Churn: each step evicts a source's oldest conversation (leaf first) and stores a new one there.
  const churn: [string, KVEventBatch][] = [];
  let churnBlocks = 0;
  let churnEvents = 0;
  while (churnBlocks < CHURN_BLOCK_EVENTS) {
    const s = mix32(churnBlocks + seed) % SOURCES;
    const old = convs[s].shift()!;
    const rm = asBatch(wl.removeEvents(old));
    const st = storeOn(s, nextConv++ + DISTINCT_PROMPTS);
    for (const b of [rm, st]) {
      churn.push([srcId(s), b]);
      churnEvents += b.events.length;
      for (const ev of b.events) churnBlocks += ev.type === 'AllBlocksCleared' ? 0 : ev.block_hashes.length;
    }
  }
  gc?.();
  const t0 = process.hrtime.bigint();
  const cpu0 = process.cpuUsage();
  for (const [s, b] of churn) ix.applyBatch(s, b);
  const cpu = process.cpuUsage(cpu0);
  const churnSec = Number(process.hrtime.bigint() - t0) / 1e9;

  let rejectedEvents = 0;
  for (let s = 0; s < SOURCES; s++) {
    const st = ix.stats(srcId(s));
    rejectedEvents += st.unknownParent + st.unknownRemoval + st.invalid;
  }
  return {
    loadAvg1: loadavg()[0],
    calibrationNsPerElem: calibrate(),
    fillBlocksPerSec: fillBlocks / fillSec,
    fillBlocksPerCpuSec: fillBlocks / fillCpuSec,
    churnBlockEventsPerSec: churnBlocks / churnSec,
    churnBlockEventsPerCpuSec: churnBlocks / ((cpu.user + cpu.system) / 1e6),
    churnEventsPerSec: churnEvents / churnSec,
    matchP50us: lat[Math.floor(QUERIES * 0.5)],
    matchP99us: lat[Math.floor(QUERIES * 0.99)],
    matchMeanUs: lat.reduce((a, b) => a + b, 0) / QUERIES,
    matchCpuMeanUs: (matchCpu.user + matchCpu.system) / QUERIES,
    matchCpuP50us: cpuLat[Math.floor(QUERIES * 0.5)],
    matchCpuP99us: cpuLat[Math.floor(QUERIES * 0.99)],
    matchMaxUs: lat[QUERIES - 1],
    meanBestMatchedTokens: bestSum / QUERIES,
    heldBlocks,
    distinctNodes,
    bytesPerBlock: gc ? (after - base) / heldBlocks : null,
    bytesPerNode: gc ? (after - base) / distinctNodes : null,
    rejectedEvents,
  };
}

/** Match latency (µs, median and p10-p90) with `n` sources of SWEEP_BLOCKS blocks each. */
function sweepOne(n: number, seed: number): { p50: number; p10: number; p90: number; p99: number; viewP50: number; viewP99: number } {
  const wl = new Workload(seed);
  const ix = new PrefixIndex();
  const convs: number[][] = Array.from({ length: n }, () => []);
  let c = 1;
  for (let s = 0; s < n; s++) {
    ix.addSource(`w${s}`);
    let held = 0;
    const sysOn = new Set<number>();
    while (held < SWEEP_BLOCKS) {
      // 30% of conversations also land on a second source, as in the main workload
      const conv = mix32(c * 17 + seed) % 10 < 3 && s > 0 ? convs[s - 1][mix32(c) % convs[s - 1].length] ?? c++ : c++;
      const sys = wl.sys(conv);
      const from = sysOn.has(sys.id) ? sys.blocks : 0;
      sysOn.add(sys.id);
      ix.applyBatch(`w${s}`, asBatch(wl.storeEvents(conv, from, wl.length(conv))));
      convs[s].push(conv);
      held += wl.length(conv) - from;
    }
  }
  const prompts: number[][] = [];
  for (let q = 0; q < DISTINCT_PROMPTS; q++) {
    const r = mix32(q * 101 + seed);
    const s = r % n;
    const conv = r % 10 === 0 ? c + q : convs[s][mix32(r) % convs[s].length];
    prompts.push(wl.tokens(conv, 0, PROMPT_BLOCKS * BLOCK));
  }
  for (let q = 0; q < 500; q++) ix.match(keysOf(warm(prompts[q % prompts.length])));
  gc?.();
  const lat = new Float64Array(SWEEP_QUERIES);
  for (let q = 0; q < SWEEP_QUERIES; q++) {
    const p = warm(prompts[q % prompts.length]);
    const t0 = performance.now();
    ix.match(keysOf(p));
    lat[q] = (performance.now() - t0) * 1000;
  }
  // matchView: what the router's policy reads (no result object per source), the same walk.
  const vlat = new Float64Array(SWEEP_QUERIES);
  for (let q = 0; q < SWEEP_QUERIES; q++) {
    const p = warm(prompts[q % prompts.length]);
    const t0 = performance.now();
    ix.matchView(keysOf(p));
    vlat[q] = (performance.now() - t0) * 1000;
  }
  lat.sort();
  vlat.sort();
  const at = (f: number): number => lat[Math.floor(SWEEP_QUERIES * f)];
  const vat = (f: number): number => vlat[Math.floor(SWEEP_QUERIES * f)];
  return { p50: at(0.5), p10: at(0.1), p90: at(0.9), p99: at(0.99), viewP50: vat(0.5), viewP99: vat(0.99) };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

if (!gc) console.warn('run with --expose-gc for the memory figure');
const runs: Run[] = [];
for (let r = 0; r < RUNS; r++) {
  const run = oneRun(r + 1);
  runs.push(run);
  console.log(`run ${r + 1}: ${JSON.stringify(run, (_k, v) => (typeof v === 'number' ? Math.round(v * 100) / 100 : v))}`);
}
const sweep = SWEEP_SOURCES.map((n) => ({ sources: n, ...sweepOne(n, 7) }));
const baseP50 = sweep[0].p50;
console.log(`\nmatch vs sources (${SWEEP_BLOCKS} blocks each, ${PROMPT_BLOCKS * BLOCK}-token prompts, µs)`);
const baseView = sweep[0].viewP50;
for (const r of sweep) {
  console.log(
    `  ${String(r.sources).padStart(4)} sources: match() p50 ${r.p50.toFixed(1)} [p10 ${r.p10.toFixed(1)} - p90 ${r.p90.toFixed(1)}] p99 ${r.p99.toFixed(1)}  x${(r.p50 / baseP50).toFixed(2)} vs 16` +
      ` | matchView p50 ${r.viewP50.toFixed(1)} p99 ${r.viewP99.toFixed(1)}  x${(r.viewP50 / baseView).toFixed(2)} vs 16`,
  );
}
const keys = Object.keys(runs[0]) as (keyof Run)[];
const summary: Record<string, { median: number; min: number; max: number } | null> = {};
for (const k of keys) {
  const xs = runs.map((r) => r[k]).filter((x): x is number => x !== null);
  summary[k] = xs.length ? { median: median(xs), min: Math.min(...xs), max: Math.max(...xs) } : null;
}
const fmt = (x: number): string => (x >= 1000 ? Math.round(x).toLocaleString('en-US') : x.toFixed(2));
console.log(`\nprefix index, ${SOURCES} sources x ${TARGET_BLOCKS} blocks of ${BLOCK} tokens, ${RUNS} runs (median [min-max])`);
for (const k of keys) {
  const v = summary[k];
  console.log(`  ${k.padEnd(24)} ${v ? `${fmt(v.median)} [${fmt(v.min)} - ${fmt(v.max)}]` : 'n/a'}`);
}
const config = {
  sources: SOURCES,
  blocksPerSource: TARGET_BLOCKS,
  blockSize: BLOCK,
  promptTokens: PROMPT_BLOCKS * BLOCK,
  queries: QUERIES,
  churnBlockEvents: CHURN_BLOCK_EVENTS,
  runs: RUNS,
};
if (!QUICK) {
  mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
  writeFileSync(
    new URL('./results/index.json', import.meta.url),
    JSON.stringify(
      { bench: 'index', date: new Date().toISOString(), node: process.version, config, summary, sourcesSweep: sweep, runs },
      null,
      2,
    ) + '\n',
  );
}
