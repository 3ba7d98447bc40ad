/**
 * The subscriber benchmark of bench/events.bench.ts: a real KVEventPublisher in a child process
 * (publisher-child.ts, fork, ipc:// endpoints) and, in this process, a real KVEventSubscriber
 * applying every batch to a real PrefixIndex.
 *
 * One run = one fresh child (seq from 0), subscriber and index, then two phases of `batches`
 * batches each (every block new to the index):
 *  - drain: the child publishes while this process is blocked (as a router whose loop was busy),
 *    so the batches wait in ZeroMQ's queues; then the time to apply them all: what the
 *    subscriber path can do, whatever the publisher's own speed;
 *  - stream: the child publishes while we apply: the end-to-end rate (bounded by the slower side).
 *
 * `impl` supplies the subscriber and index classes, so the same runs measure the code of
 * another commit (the baseline, loaded by loadBaseline()).
 */
import { execFileSync, fork, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { KVEventSubscriber, SubscriberOptions } from '../../src/events/subscriber.js';
import type { KVEventBatch } from '../../src/events/types.js';
import type { PrefixIndex } from '../../src/index/prefix-index.js';

export interface SubscriberImpl {
  name: string;
  Subscriber: new (opts: SubscriberOptions) => Pick<KVEventSubscriber, 'start' | 'close' | 'health'>;
  Index: new () => Pick<PrefixIndex, 'addSource' | 'applyBatch' | 'stats'>;
}

export interface PhaseResult {
  /** Block events applied per wall second, and per CPU second of this process. */
  wall: number;
  cpu: number;
  /** The child's own publish rate (block events/s), for the stream phase's bound. */
  publisher: number;
}

export interface RunResult {
  drain: PhaseResult;
  stream: PhaseResult;
}

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, '..', '..');
const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const blocker = new Int32Array(new SharedArrayBuffer(4));

interface Child {
  proc: ChildProcess;
  next(pred: (m: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
  send(m: unknown): Promise<void>;
}

function startChild(config: object): Child {
  const proc = fork(join(HERE, 'publisher-child.ts'), [JSON.stringify(config)], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    cwd: ROOT,
  });
  children.add(proc);
  proc.once('exit', () => children.delete(proc));
  const inbox: Array<Record<string, unknown>> = [];
  let wake: (() => void) | null = null;
  proc.on('message', (m) => {
    inbox.push(m as Record<string, unknown>);
    wake?.();
  });
  return {
    proc,
    async next(pred) {
      for (;;) {
        const i = inbox.findIndex(pred);
        if (i >= 0) return inbox.splice(i, 1)[0]!;
        if (proc.exitCode !== null) throw new Error(`publisher child exited (${proc.exitCode})`);
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, 1000).unref();
        });
        wake = null;
      }
    },
    send: (m) => new Promise((resolve, reject) => proc.send(m as object, (err) => (err ? reject(err) : resolve()))),
  };
}

/** One run (see above): a fresh child, subscriber and index. */
export async function subscriberRun(impl: SubscriberImpl, batches: number, perBatch: number, tokens: number): Promise<RunResult> {
  const dir = mkdtempSync(join(tmpdir(), 'kv-events-bench-'));
  const child = startChild({
    endpoint: `ipc://${dir}/pub`,
    replay_endpoint: `ipc://${dir}/replay`,
    hwm: 4 * batches,
    max_queue_size: 4 * batches,
  });
  const source = 'w0';
  const index = new impl.Index();
  index.addSource(source);
  let applied = 0;
  let target = 0;
  let reached: (() => void) | null = null;
  const sub = new impl.Subscriber({
    endpoint: `ipc://${dir}/pub`,
    replayEndpoint: `ipc://${dir}/replay`,
    // No idle probes: a drain phase blocks this process on purpose, and the probe on the first
    // tick after it would measure a replay, not the live path.
    idleProbeMs: 0,
    hwm: 4 * batches,
    onItem: (item) => {
      if (item.kind !== 'batch') return;
      index.applyBatch(source, item.batch as KVEventBatch);
      applied += item.batch.events.length;
      if (applied >= target && reached) reached();
    },
  });
  const until = (n: number) => {
    target = n;
    return applied >= n ? Promise.resolve() : new Promise<void>((r) => (reached = r));
  };
  try {
    await child.next((m) => m.ready === true);
    await sub.start();
    // Warm-up: batches through until the subscriber has them all (a slow join replays them), so the
    // connection is up, the stream trusted (from seq 0) and both sides' code warm.
    for (let tries = 0; ; tries++) {
      if (tries > 20) throw new Error('subscriber got nothing from the publisher child');
      await child.send({ cmd: 'prepare', batches: 500, perBatch, tokens });
      await child.next((m) => m.prepared === true);
      await child.send({ cmd: 'publish' });
      const last = BigInt((await child.next((m) => 'published' in m)).published as number) - 1n;
      for (let i = 0; i < 200 && sub.health().lastSeq !== last; i++) await sleep(25);
      if (sub.health().lastSeq === last && sub.health().trusted) break;
    }

    const phase = async (drain: boolean): Promise<PhaseResult> => {
      await child.send({ cmd: 'prepare', batches, perBatch, tokens });
      await child.next((m) => m.prepared === true);
      const goal = applied + batches * perBatch;
      const marker = join(dir, `done-${goal}`);
      await child.send({ cmd: 'publish', marker });
      if (drain) {
        // Blocked: ZeroMQ's I/O threads queue what the child sends; nothing is applied meanwhile.
        const deadline = Date.now() + 120_000;
        while (!existsSync(marker) && Date.now() < deadline) Atomics.wait(blocker, 0, 0, 2);
      }
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      await until(goal);
      const seconds = (performance.now() - t0) / 1000;
      const c = process.cpuUsage(c0);
      const done = await child.next((m) => 'published' in m);
      const events = batches * perBatch;
      return { wall: events / seconds, cpu: events / ((c.user + c.system) / 1e6), publisher: events / (done.seconds as number) };
    };
    const drain = await phase(true);
    const stream = await phase(false);
    const h = sub.health();
    if (h.gaps || h.historyMissing || h.resets) throw new Error(`${impl.name}: stream not clean: ${JSON.stringify(h, (_, v) => (typeof v === 'bigint' ? String(v) : v))}`);
    const held = index.stats(source).blocks;
    if (held !== applied) throw new Error(`${impl.name}: index holds ${held} blocks, ${applied} applied`);
    return { drain, stream };
  } finally {
    await sub.close();
    await child.send({ cmd: 'exit' }).catch(() => {});
    await new Promise<void>((r) => {
      if (child.proc.exitCode !== null) r();
      else {
        const t = setTimeout(() => child.proc.kill('SIGKILL'), 3000);
        child.proc.once('exit', () => (clearTimeout(t), r()));
      }
    });
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The subscriber and index of another commit (the baseline), from `git archive` into a temp
 * dir that resolves packages through this checkout's node_modules; null without git or commit.
 */
export async function loadBaseline(commit: string): Promise<(SubscriberImpl & { cleanup(): void }) | null> {
  const dir = mkdtempSync(join(tmpdir(), 'kv-events-baseline-'));
  const cleanup = () => rmSync(dir, { recursive: true, force: true });
  process.once('exit', cleanup); // also when the bench fails half way
  try {
    const tar = execFileSync('git', ['-C', ROOT, 'archive', commit, 'src'], { maxBuffer: 256 << 20 });
    mkdirSync(join(dir, 'x'));
    execFileSync('tar', ['-x', '-C', join(dir, 'x')], { input: tar });
    symlinkSync(join(ROOT, 'node_modules'), join(dir, 'x', 'node_modules'));
    writeFileSync(join(dir, 'x', 'package.json'), JSON.stringify({ type: 'module' }));
    const s = await import(pathToFileURL(join(dir, 'x', 'src', 'events', 'subscriber.ts')).href);
    const i = await import(pathToFileURL(join(dir, 'x', 'src', 'index', 'prefix-index.ts')).href);
    return { name: `baseline ${commit}`, Subscriber: s.KVEventSubscriber, Index: i.PrefixIndex, cleanup };
  } catch (err) {
    cleanup();
    console.error(`baseline ${commit} not loaded: ${(err as Error).message}`);
    return null;
  }
}
