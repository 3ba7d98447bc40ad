/**
 * KV-event protocol benchmark.
 *  - publish → subscribe → decode throughput (one process, loopback tcp), batches of 1 and 32
 *    BlockStored events of 16 tokens: batches/s and block events/s;
 *  - time to replay 10 000 buffered batches through the replay client (decode included);
 *  - decode alone, one thread: block events/s of the shape-specific decoder (decodeBatch) and of
 *    the reference decoder (decodeBatchReference) on the same batches of 32 BlockStored × 16 tokens,
 *    runs interleaved, ratio printed.
 * Median and spread over repeats; writes bench/results/events.json.
 * Run: npm run bench:events   (REPEATS=n to change the number of runs)
 *      --quick: a few seconds, small sizes, to check the bench works; prints, writes nothing.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeBatch, decodeBatchReference, encodeBatch } from '../src/events/codec.js';
import { connectAddressFor, parseKVEventsConfig } from '../src/events/config.js';
import { KVEventPublisher } from '../src/events/publisher.js';
import { requestReplay } from '../src/events/replay-client.js';
import { KVEventSubscriber } from '../src/events/subscriber.js';
import type { KVEvent, KVEventBatch } from '../src/events/types.js';
import { batchOf } from '../test/helpers/events.js';

const QUICK = process.argv.includes('--quick');
const REPEATS = QUICK ? 2 : Number(process.env.REPEATS ?? 5);
const REPLAY_BATCHES = QUICK ? 1000 : 10_000;
const DECODE_RUN_MS = QUICK ? 250 : 2000;

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

const results: Record<string, unknown> = {};
{
  const payloads = fixtures(1000, 32).map((events, i) => encodeBatch({ ts: 1790000000 + i / 1000, events, dp_rank: 0 }));
  const fast = (p: Uint8Array) => decodeBatch(p);
  const reference = (p: Uint8Array) => decodeBatchReference(p);
  decodeRun(fast, payloads, DECODE_RUN_MS / 2); // warm-up
  decodeRun(reference, payloads, DECODE_RUN_MS / 2);
  const fastRuns: Array<{ wall: number; cpu: number }> = [];
  const refRuns: Array<{ wall: number; cpu: number }> = [];
  for (let r = 0; r < REPEATS; r++) {
    fastRuns.push(decodeRun(fast, payloads, DECODE_RUN_MS));
    refRuns.push(decodeRun(reference, payloads, DECODE_RUN_MS));
  }
  const f = summarize(fastRuns.map((x) => x.wall));
  const ref = summarize(refRuns.map((x) => x.wall));
  const fCpu = summarize(fastRuns.map((x) => x.cpu));
  const refCpu = summarize(refRuns.map((x) => x.cpu));
  const ratio = f.median / ref.median;
  results.decode = {
    shape: '32 BlockStored/batch, 1 u64 hash and 16 tokens each, map encoding',
    block_events_per_s: f,
    block_events_per_cpu_s: fCpu,
    reference: { block_events_per_s: ref, block_events_per_cpu_s: refCpu },
    ratio_to_reference: ratio,
  };
  console.log(
    `decode, 32 BlockStored(16 tokens)/batch, one thread: ${fmt(f.median)} block events/s [${fmt(f.min)}–${fmt(f.max)}] ` +
      `(${fmt(fCpu.median)}/CPU-s); reference ${fmt(ref.median)} [${fmt(ref.min)}–${fmt(ref.max)}] (${fmt(refCpu.median)}/CPU-s); ` +
      `×${ratio.toFixed(2)}`,
  );
}
for (const perBatch of [1, 32]) {
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
for (const perBatch of [1, 32]) {
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
const out = join(dirname(fileURLToPath(import.meta.url)), 'results', 'events.json');
mkdirSync(dirname(out), { recursive: true });
writeFileSync(
  out,
  JSON.stringify({ date: new Date().toISOString(), node: process.version, cpu: cpus()[0]?.model, cpus: cpus().length, loadavg: loadavg(), repeats: REPEATS, command: 'npm run bench:events', results }, null, 2) + '\n',
);
console.log(`wrote ${out}`);
process.exit(0);

function fmt(x: number): string {
  return Math.round(x).toLocaleString('en-US');
}
