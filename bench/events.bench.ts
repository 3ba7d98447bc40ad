/**
 * KV-event protocol benchmark.
 *  - publish → subscribe → decode throughput (one process, loopback tcp), batches of 1 and 32
 *    BlockStored events of 16 tokens: batches/s and block events/s;
 *  - time to replay 10 000 buffered batches through the replay client (decode included);
 *  - decode alone, one thread: block events/s of decodeBatch (the exact-shape decoder first), of
 *    the decoder it was put in front of (decodeBatchGeneral: the general shape-specific one, then the
 *    reference) and of the reference (decodeBatchReference), on the same batches of 32 BlockStored
 *    × 16 tokens, runs interleaved, ratios printed;
 *  - the subscriber, fed by a real publisher in a child process over ipc://, applying every batch to
 *    a real index (bench/events/subscriber-bench.ts): block events/s while it drains what queued up
 *    (its own capacity) and while the publisher streams; the same runs with the subscriber and
 *    index of BASELINE_COMMIT (default: the commit before this path was made faster), interleaved.
 * Median and spread over repeats; writes bench/results/events.json.
 * Run: npm run bench:events   (REPEATS=n to change the number of runs; BASELINE_COMMIT=<rev>)
 *      --quick: a few seconds, small sizes, to check the bench works; prints, writes nothing.
 *      --only=decode,subscriber: those sections only (results of the others kept from the file).
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeBatch, decodeBatchGeneral, decodeBatchReference, encodeBatch } from '../src/events/codec.js';
import { connectAddressFor, parseKVEventsConfig } from '../src/events/config.js';
import { KVEventPublisher } from '../src/events/publisher.js';
import { requestReplay } from '../src/events/replay-client.js';
import { KVEventSubscriber } from '../src/events/subscriber.js';
import type { KVEvent, KVEventBatch } from '../src/events/types.js';
import { PrefixIndex } from '../src/index/prefix-index.js';
import { batchOf } from '../test/helpers/events.js';
import { loadBaseline, subscriberRun, type RunResult, type SubscriberImpl } from './events/subscriber-bench.js';

const QUICK = process.argv.includes('--quick');
const REPEATS = QUICK ? 2 : Number(process.env.REPEATS ?? 5);
const REPLAY_BATCHES = QUICK ? 1000 : 10_000;
const DECODE_RUN_MS = QUICK ? 250 : 2000;
const SUB_BATCHES = QUICK ? 2000 : 10_000;
const BASELINE_COMMIT = process.env.BASELINE_COMMIT ?? 'e11fa08';
const ONLY = process.argv.find((a) => a.startsWith('--only='))?.slice('--only='.length).split(',') ?? null;
const want = (section: string) => ONLY === null || ONLY.includes(section);

interface Summary {
  median: number;
  min: number;
  max: number;
  runs: number[];
}

function summarize(xs: number[]): Summary {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const median = s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
  return { median, min: s[0]!, max: s[s.length - 1]!, runs: xs };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Pre-built batches so the bench measures the protocol, not fixture building. */
function fixtures(n: number, perBatch: number): KVEvent[][] {
  return Array.from({ length: Math.min(n, 1000) }, (_, i) => batchOf(i, perBatch));
}

async function throughputRun(perBatch: number, batches: number): Promise<{ seconds: number; gaps: number; missing: number }> {
  const pub = await KVEventPublisher.create({ config: parseKVEventsConfig({ endpoint: 'tcp://*:0', replay_endpoint: 'tcp://*:0', buffer_steps: batches }) });
  let received = 0;
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  const sub = new KVEventSubscriber({
    endpoint: connectAddressFor(pub.endpoint),
    replayEndpoint: connectAddressFor(pub.replayEndpoint!),
    onItem: (item) => {
      if (item.kind === 'batch' && ++received === batches) done();
    },
  });
  await sub.start();
  while (!sub.health().connected) await sleep(5);
  await sleep(100);
  const evs = fixtures(batches, perBatch);
  const t0 = performance.now();
  for (let i = 0; i < batches; i++) {
    pub.publish(evs[i % evs.length]!);
    // Give the subscriber (same event loop) its turn, as a real worker's scheduler would.
    if (i % 200 === 199) await new Promise((r) => setImmediate(r));
  }
  await finished;
  const seconds = (performance.now() - t0) / 1000;
  const h = sub.health();
  await sub.close();
  await pub.close(100);
  return { seconds, gaps: h.gaps, missing: h.historyMissing };
}

async function replayRun(perBatch: number): Promise<number> {
  const pub = await KVEventPublisher.create({ config: parseKVEventsConfig({ endpoint: 'tcp://*:0', replay_endpoint: 'tcp://*:0', buffer_steps: REPLAY_BATCHES }) });
  const evs = fixtures(REPLAY_BATCHES, perBatch);
  for (let i = 0; i < REPLAY_BATCHES; i++) {
    pub.publish(evs[i % evs.length]!);
    if (i % 1000 === 999) await pub.flush();
  }
  await pub.flush();
  const t0 = performance.now();
  // A long replay arrives in chunks bounded in bytes: ask again after the last seq, as the subscriber does.
  let from = 0n;
  let got = 0;
  for (;;) {
    const r = await requestReplay(connectAddressFor(pub.replayEndpoint!), from, { timeoutMs: 10_000 });
    got += r.batches.length;
    if (r.status === 'done') break;
    if (r.status !== 'truncated' || r.batches.length === 0) throw new Error(`replay incomplete: ${r.status}, ${got}`);
    from = r.batches.at(-1)!.seq + 1n;
  }
  const ms = performance.now() - t0;
  await pub.close(100);
  if (got !== REPLAY_BATCHES) throw new Error(`replay incomplete: ${got} of ${REPLAY_BATCHES}`);
  return ms;
}

/**
 * Block events decoded per second by `decode`, cycling over `payloads` for `ms`: per wall second,
 * and per CPU second of this process (less sensitive to other load on a shared machine).
 */
function decodeRun(decode: (p: Uint8Array) => KVEventBatch, payloads: Buffer[], ms: number): { wall: number; cpu: number } {
  let events = 0;
  let i = 0;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  let t = t0;
  while (t - t0 < ms) {
    for (let k = 0; k < 64; k++) events += decode(payloads[i++ % payloads.length]!).events.length;
    t = performance.now();
  }
  const c = process.cpuUsage(c0);
  return { wall: events / ((t - t0) / 1000), cpu: events / ((c.user + c.system) / 1e6) };
}

const OUT = join(dirname(fileURLToPath(import.meta.url)), 'results', 'events.json');
// With --only, the sections not run keep their figures from the last full run.
const results: Record<string, unknown> =
  ONLY !== null && existsSync(OUT) ? ((JSON.parse(readFileSync(OUT, 'utf8')) as { results?: Record<string, unknown> }).results ?? {}) : {};
if (want('decode')) {
  const payloads = fixtures(1000, 32).map((events, i) => encodeBatch({ ts: 1790000000 + i / 1000, events, dp_rank: 0 }));
  const decoders = {
    fast: (p: Uint8Array) => decodeBatch(p),
    general: (p: Uint8Array) => decodeBatchGeneral(p),
    reference: (p: Uint8Array) => decodeBatchReference(p),
  };
  for (const d of Object.values(decoders)) decodeRun(d, payloads, DECODE_RUN_MS / 2); // warm-up
  const runs = { fast: [] as Array<{ wall: number; cpu: number }>, general: [] as Array<{ wall: number; cpu: number }>, reference: [] as Array<{ wall: number; cpu: number }> };
  for (let r = 0; r < REPEATS; r++) for (const k of ['fast', 'general', 'reference'] as const) runs[k].push(decodeRun(decoders[k], payloads, DECODE_RUN_MS));
  const wall = (k: keyof typeof runs) => summarize(runs[k].map((x) => x.wall));
  const cpu = (k: keyof typeof runs) => summarize(runs[k].map((x) => x.cpu));
  const [f, g, ref] = [wall('fast'), wall('general'), wall('reference')];
  const [fCpu, gCpu, refCpu] = [cpu('fast'), cpu('general'), cpu('reference')];
  results.decode = {
    shape: '32 BlockStored/batch, 1 u64 hash and 16 tokens each, map encoding',
    decoder: 'decodeBatch: exact-shape decoder (shape-decoder.ts), then batch-decoder.ts, then the reference',
    block_events_per_s: f,
    block_events_per_cpu_s: fCpu,
    general: { about: 'decodeBatchGeneral: batch-decoder.ts then the reference (decodeBatch before the exact-shape decoder)', block_events_per_s: g, block_events_per_cpu_s: gCpu },
    reference: { block_events_per_s: ref, block_events_per_cpu_s: refCpu },
    ratio_to_general: f.median / g.median,
    ratio_to_general_cpu: fCpu.median / gCpu.median,
    ratio_to_reference: f.median / ref.median,
  };
  console.log(
    `decode, 32 BlockStored(16 tokens)/batch, one thread: ${fmt(f.median)} block events/s [${fmt(f.min)}–${fmt(f.max)}] (${fmt(fCpu.median)}/CPU-s); ` +
      `general ${fmt(g.median)} [${fmt(g.min)}–${fmt(g.max)}] (${fmt(gCpu.median)}/CPU-s) ×${(f.median / g.median).toFixed(2)} (CPU ×${(fCpu.median / gCpu.median).toFixed(2)}); ` +
      `reference ${fmt(ref.median)} [${fmt(ref.min)}–${fmt(ref.max)}] ×${(f.median / ref.median).toFixed(2)}`,
  );
}
if (want('subscriber')) {
  const current: SubscriberImpl = { name: 'current', Subscriber: KVEventSubscriber, Index: PrefixIndex };
  const baseline = await loadBaseline(BASELINE_COMMIT);
  const impls = baseline ? [current, baseline] : [current];
  await subscriberRun(current, Math.min(SUB_BATCHES, 2000), 32, 16); // warm-up (this process's JIT)
  if (baseline) await subscriberRun(baseline, Math.min(SUB_BATCHES, 2000), 32, 16);
  const runs = new Map<SubscriberImpl, RunResult[]>(impls.map((i) => [i, []]));
  for (let r = 0; r < REPEATS; r++) for (const impl of impls) runs.get(impl)!.push(await subscriberRun(impl, SUB_BATCHES, 32, 16));
  const sum = (impl: SubscriberImpl) => {
    const rs = runs.get(impl)!;
    return {
      block_events_per_s: summarize(rs.map((x) => x.drain.wall)),
      block_events_per_cpu_s: summarize(rs.map((x) => x.drain.cpu)),
      streaming: {
        block_events_per_s: summarize(rs.map((x) => x.stream.wall)),
        publisher_block_events_per_s: summarize(rs.map((x) => x.stream.publisher)),
      },
    };
  };
  const cur = sum(current);
  const base = baseline ? sum(baseline) : null;
  results.subscriber = {
    shape: `batches of 32 BlockStored (1 u64 hash, 16 tokens, chained), ${SUB_BATCHES} per phase, all new to the index; publisher (KVEventPublisher) in a child process, ipc://`,
    about:
      'block_events_per_s: applied to the index while draining batches queued in ZeroMQ while this process was blocked (the subscriber path\'s capacity); ' +
      'streaming: while the child publishes (bounded by the slower side; publisher_block_events_per_s is the child\'s own publish rate)',
    ...cur,
    baseline: base ? { commit: BASELINE_COMMIT, ...base } : null,
    ratio_to_baseline: base ? cur.block_events_per_s.median / base.block_events_per_s.median : null,
    ratio_to_baseline_streaming: base ? cur.streaming.block_events_per_s.median / base.streaming.block_events_per_s.median : null,
  };
  const line = (name: string, x: ReturnType<typeof sum>) =>
    `${name}: drain ${fmt(x.block_events_per_s.median)} block events/s [${fmt(x.block_events_per_s.min)}–${fmt(x.block_events_per_s.max)}] ` +
    `(${fmt(x.block_events_per_cpu_s.median)}/CPU-s), streaming ${fmt(x.streaming.block_events_per_s.median)} ` +
    `[${fmt(x.streaming.block_events_per_s.min)}–${fmt(x.streaming.block_events_per_s.max)}] (publisher ${fmt(x.streaming.publisher_block_events_per_s.median)})`;
  console.log(`subscriber → index, 32 BlockStored(16 tokens)/batch, publisher in a child process: ${line('current', cur)}`);
  if (base) {
    console.log(`  ${line(`baseline ${BASELINE_COMMIT}`, base)}`);
    console.log(`  ×${(cur.block_events_per_s.median / base.block_events_per_s.median).toFixed(2)} drain, ×${(cur.streaming.block_events_per_s.median / base.streaming.block_events_per_s.median).toFixed(2)} streaming`);
  }
  baseline?.cleanup();
}
for (const perBatch of want('throughput') ? [1, 32] : []) {
  const batches = QUICK ? 1000 : perBatch === 1 ? 50_000 : 10_000;
  await throughputRun(perBatch, Math.min(batches, 5000)); // warm-up
  const runs: number[] = [];
  let gaps = 0;
  let missing = 0;
  for (let r = 0; r < REPEATS; r++) {
    const x = await throughputRun(perBatch, batches);
    runs.push(batches / x.seconds);
    gaps += x.gaps;
    missing += x.missing;
  }
  const bps = summarize(runs);
  const eps = summarize(runs.map((x) => x * perBatch));
  results[`throughput_${perBatch}_events_per_batch`] = { batches_per_run: batches, batches_per_s: bps, block_events_per_s: eps, gaps, history_missing: missing };
  console.log(
    `pub→sub→decode, ${perBatch} BlockStored(16 tokens)/batch: ${fmt(bps.median)} batches/s [${fmt(bps.min)}–${fmt(bps.max)}], ` +
      `${fmt(eps.median)} block events/s [${fmt(eps.min)}–${fmt(eps.max)}]` + (gaps ? `, ${gaps} gaps (recovered by replay)` : ''),
  );
}
for (const perBatch of want('replay') ? [1, 32] : []) {
  await replayRun(perBatch); // warm-up
  const runs: number[] = [];
  for (let r = 0; r < REPEATS; r++) runs.push(await replayRun(perBatch));
  const s = summarize(runs);
  results[`replay_${REPLAY_BATCHES}_batches_${perBatch}_events_ms`] = s;
  console.log(`replay ${REPLAY_BATCHES} buffered batches of ${perBatch} event(s): ${s.median.toFixed(1)} ms median [${s.min.toFixed(1)}–${s.max.toFixed(1)}]`);
}

if (QUICK) {
  console.log('--quick: indicative figures only, results not written');
  process.exit(0);
}
const out = OUT;
mkdirSync(dirname(out), { recursive: true });
writeFileSync(
  out,
  JSON.stringify({ date: new Date().toISOString(), node: process.version, cpu: cpus()[0]?.model, cpus: cpus().length, loadavg: loadavg(), repeats: REPEATS, command: `npm run bench:events${ONLY ? ` -- --only=${ONLY.join(',')}` : ''}`, results }, null, 2) + '\n',
);
console.log(`wrote ${out}`);
process.exit(0);

function fmt(x: number): string {
  return Math.round(x).toLocaleString('en-US');
}
