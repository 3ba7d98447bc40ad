/**
 * Starts and stops the fleet of a run: N `kv-worker --engine sim` processes publishing KV events
 * over ipc:// (loopback by nature, no port races) and R `kv-router` processes subscribed to all of
 * them. Every child gets its own process group so it can be stopped with whatever it forked; a
 * process 'exit' hook kills whatever is left if the harness dies.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../../src/net/free-port.js';
export { freePort };

const root = fileURLToPath(new URL('../..', import.meta.url));
const workerBin = join(root, 'bin/kv-worker.js');
const routerBin = join(root, 'bin/kv-router.js');

export interface WorkerParams {
  blockSize: number;
  numBlocks: number;
  prefillTokensPerS: number;
  decodeStepMs: number;
  maxBatch: number;
  maxNumBatchedTokens: number;
  maxWaiting: number;
  /** Per worker, what divides its sim step time (a mixed fleet); absent: all 1. */
  speedFactors?: number[];
}

/** cache_aware's costs, selectable per run as `cache_aware:ttft` / `cache_aware:weighted`. */
export const COSTS = ['ttft', 'weighted'];

/** `cache_aware:ttft` → cache_aware with that cost; a plain name has no variant. */
export function splitPolicy(name: string): { policy: string; cost: string | null } {
  const i = name.indexOf(':');
  return i < 0 ? { policy: name, cost: null } : { policy: name.slice(0, i), cost: name.slice(i + 1) };
}

export interface FleetOptions {
  workers: number;
  routers: number;
  policy: string;
  worker: WorkerParams;
  /** Extra router config (merged at the top level). */
  routerConfig?: Record<string, unknown>;
  /** Routers share load and provisional prefixes over a nats-server the fleet starts (the `cluster` block). */
  sharedLoad?: boolean;
  /** Router r writes its decision log to `${decisionLogPrefix}router-${r}.decisions.jsonl`. */
  decisionLogPrefix?: string;
  startTimeoutMs?: number;
  log?: (line: string) => void;
  /** Node options before the router's script, e.g. ['--cpu-prof', '--cpu-prof-dir=/tmp/p'] (NODE_OPTIONS refuses --cpu-prof). */
  routerNodeArgs?: string[];
}

export interface Child {
  name: string;
  proc: ChildProcess;
  /** Last lines of its stdout/stderr, for error messages. */
  tail: string[];
  exited: Promise<void>;
  exitInfo: string | null;
}

export interface Fleet {
  workerUrls: string[];
  workerIds: string[];
  routerUrls: string[];
  /** nats://127.0.0.1:PORT when the routers share load, else null. */
  natsUrl: string | null;
  /** The routers' cluster subject prefix. */
  subjectPrefix: string;
  children: Child[];
  dir: string;
  stop(): Promise<void>;
}

/** nats-server on the PATH or in the usual places (Debian: /usr/sbin), or null. */
export function findNatsServer(): string | null {
  for (const p of ['/usr/sbin/nats-server', '/usr/bin/nats-server', '/usr/local/bin/nats-server']) if (existsSync(p)) return p;
  const w = spawnSync('sh', ['-c', 'command -v nats-server'], { encoding: 'utf8' });
  return w.status === 0 && w.stdout.trim() ? w.stdout.trim() : null;
}

export const SUBJECT_PREFIX = 'kv-bench';

const live = new Set<Child>();
let hooked = false;

function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', () => {
    for (const c of live) killGroup(c, 'SIGKILL');
  });
}

function killGroup(c: Child, sig: NodeJS.Signals): void {
  const pid = c.proc.pid;
  if (pid === undefined || c.exitInfo !== null) return;
  try {
    process.kill(-pid, sig);
  } catch {
    try {
      c.proc.kill(sig);
    } catch {
      /* gone */
    }
  }
}

/** Children still running (for tests: must be empty after stop). */
export function liveChildren(): number {
  return live.size;
}


function spawnChild(name: string, args: string[], bin = process.execPath): Child {
  hookExit();
  const proc = spawn(bin, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const c: Child = { name, proc, tail: [], exited: Promise.resolve(), exitInfo: null };
  const keep = (d: Buffer) => {
    for (const line of d.toString('utf8').split('\n')) {
      if (!line.trim()) continue;
      c.tail.push(line);
      if (c.tail.length > 40) c.tail.shift();
    }
  };
  proc.stdout!.on('data', keep);
  proc.stderr!.on('data', keep);
  c.exited = new Promise((resolve) => {
    proc.once('exit', (code, sig) => {
      c.exitInfo = sig ? `killed by ${sig}` : `exited with code ${code}`;
      live.delete(c);
      resolve();
    });
    proc.once('error', (e) => {
      c.exitInfo = `failed to start: ${e.message}`;
      live.delete(c);
      resolve();
    });
  });
  live.add(c);
  return c;
}

async function stopChild(c: Child, graceMs: number): Promise<void> {
  if (c.exitInfo !== null) return;
  killGroup(c, 'SIGTERM');
  const t = setTimeout(() => killGroup(c, 'SIGKILL'), graceMs);
  await c.exited;
  clearTimeout(t);
  // Stages the worker forked share its group: make sure none outlives it.
  try {
    if (c.proc.pid !== undefined) process.kill(-c.proc.pid, 'SIGKILL');
  } catch {
    /* group empty */
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function getJson(url: string, timeoutMs = 2000): Promise<{ status: number; body: unknown }> {
  const r = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  const text = await r.text();
  let body: unknown = null;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: r.status, body };
}

/** A router connected to NATS and seeing `peers` other replicas. */
async function clusterReady(url: string, peers: number): Promise<boolean> {
  return getJson(`${url}/health`).then(
    (r) => {
      const c = (r.body as { cluster?: { state?: string; peers?: string[] } }).cluster;
      return c?.state === 'connected' && (c.peers?.length ?? 0) >= peers;
    },
    () => false,
  );
}

async function waitForPort(c: Child, port: number, deadline: number): Promise<void> {
  for (;;) {
    if (c.exitInfo !== null) throw deadError(c);
    if (Date.now() > deadline) throw new Error(`${c.name} not listening on ${port} after 10 s:\n  ${c.tail.join('\n  ')}`);
    const up = await new Promise<boolean>((resolve) => {
      const s = netConnect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (up) return;
    await sleep(50);
  }
}

function deadError(c: Child): Error {
  return new Error(`${c.name} ${c.exitInfo}:\n  ${c.tail.slice(-15).join('\n  ')}`);
}

/**
 * Starts a fleet; when a port picked free was taken before a child could bind it (another process
 * on the machine, or the previous fleet still winding down), starts it again on fresh ports.
 */
export async function startFleet(o: FleetOptions, attempts = 3): Promise<Fleet> {
  for (let i = 1; ; i++) {
    try {
      return await startFleetOnce(o);
    } catch (e) {
      if (i >= attempts || !/EADDRINUSE/.test((e as Error).message)) throw e;
      (o.log ?? (() => {}))(`fleet start: a port was taken (${i}/${attempts}), starting again on fresh ports`);
    }
  }
}

async function startFleetOnce(o: FleetOptions): Promise<Fleet> {
  const log = o.log ?? (() => {});
  const dir = mkdtempSync(join(tmpdir(), 'kvbench-'));
  const children: Child[] = [];
  const workerUrls: string[] = [];
  const workerIds: string[] = [];
  const routerUrls: string[] = [];
  let natsUrl: string | null = null;
  const stop = async () => {
    // Routers first (they stop sending), then the workers; all at once, bounded.
    await Promise.all(children.filter((c) => c.name.startsWith('router')).map((c) => stopChild(c, 5000)));
    await Promise.all(children.filter((c) => !c.name.startsWith('router')).map((c) => stopChild(c, 10_000)));
    await Promise.all(children.filter((c) => c.name === 'nats-server').map((c) => stopChild(c, 5000)));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    if (o.sharedLoad) {
      const bin = findNatsServer();
      if (!bin) throw new Error('shared-load runs need nats-server (Debian: apt-get install nats-server)');
      const port = await freePort();
      const nats = spawnChild('nats-server', ['-a', '127.0.0.1', '-p', String(port)], bin);
      children.push(nats);
      natsUrl = `nats://127.0.0.1:${port}`;
      await waitForPort(nats, port, Date.now() + 10_000);
    }
    const w = o.worker;
    const workerSpecs: Record<string, unknown>[] = [];
    for (let i = 0; i < o.workers; i++) {
      const port = await freePort();
      const ev = { publisher: 'zmq', endpoint: `ipc://${dir}/w${i}.pub`, replay_endpoint: `ipc://${dir}/w${i}.rep`, topic: 'kv-events', buffer_steps: 10000, hwm: 100000, max_queue_size: 100000 };
      const args = [
        workerBin, '--engine', 'sim', '--host', '127.0.0.1', '--port', String(port),
        '--kv-events-config', JSON.stringify(ev),
        '--block-size', String(w.blockSize), '--num-blocks', String(w.numBlocks),
        '--prefill-tokens-per-s', String(w.prefillTokensPerS), '--decode-step-ms', String(w.decodeStepMs),
        '--max-batch', String(w.maxBatch), '--max-num-batched-tokens', String(w.maxNumBatchedTokens), '--max-waiting', String(w.maxWaiting),
        ...(w.speedFactors ? ['--speed-factor', String(w.speedFactors[i])] : []),
      ];
      children.push(spawnChild(`worker-${i}`, args));
      const url = `http://127.0.0.1:${port}`;
      workerUrls.push(url);
      workerIds.push(`w${i}`);
      workerSpecs.push({ id: `w${i}`, url, kv_events: { endpoint: ev.endpoint, replay_endpoint: ev.replay_endpoint, topic: ev.topic }, block_size: w.blockSize });
    }
    // Routers start alongside the workers: they subscribe (ipc connects before the bind) and probe until healthy.
    const variant = splitPolicy(o.policy);
    for (let r = 0; r < o.routers; r++) {
      const port = await freePort();
      const cfg = {
        description: 'kv-router routing benchmark (bench/routing)',
        host: '127.0.0.1',
        port,
        policy: variant.policy,
        tokenizer_threads: 0,
        approx_tree: { block_size: w.blockSize },
        health: { interval_ms: 500, timeout_ms: 2000, failure_threshold: 5, poll_load: true },
        ...o.routerConfig,
        ...(variant.cost ? { [variant.policy]: { ...(o.routerConfig?.[variant.policy] as object | undefined), cost: variant.cost } } : {}),
        ...(natsUrl ? { cluster: { nats_url: natsUrl, replica_id: `bench-${r}`, subject_prefix: SUBJECT_PREFIX } } : {}),
        ...(o.decisionLogPrefix ? { decision_log: `${o.decisionLogPrefix}router-${r}.decisions.jsonl` } : {}),
        workers: workerSpecs,
      };
      const file = join(dir, `router-${r}.json`);
      writeFileSync(file, JSON.stringify(cfg, null, 2));
      children.push(spawnChild(`router-${r}`, [...(o.routerNodeArgs ?? []), routerBin, '--config', file]));
      routerUrls.push(`http://127.0.0.1:${port}`);
    }
    log(`started ${o.workers} worker(s) and ${o.routers} router(s) (policy ${o.policy}); waiting until ready`);

    const deadline = Date.now() + (o.startTimeoutMs ?? 120_000);
    const check = () => {
      for (const c of children) if (c.exitInfo !== null) throw deadError(c);
      if (Date.now() > deadline) throw new Error(`fleet not ready after ${Math.round((o.startTimeoutMs ?? 120_000) / 1000)} s`);
    };
    for (const url of workerUrls) {
      for (;;) {
        check();
        const ok = await getJson(`${url}/health`).then((r) => r.status === 200, () => false);
        if (ok) break;
        await sleep(200);
      }
    }
    // Every router: all workers healthy and every event stream connected.
    for (const url of routerUrls) {
      for (;;) {
        check();
        if (natsUrl && !(await clusterReady(url, o.routers - 1))) {
          await sleep(200);
          continue;
        }
        const ready = await getJson(`${url}/workers`).then(
          (r) => {
            const ws = (r.body as { workers?: { state: string; ranks: { events: { connected?: boolean } | null }[] }[] }).workers ?? [];
            return r.status === 200 && ws.length === o.workers && ws.every((x) => x.state === 'healthy' && x.ranks.every((k) => k.events?.connected !== false));
          },
          () => false,
        );
        if (ready) break;
        await sleep(200);
      }
    }
    // Let the subscriptions settle (ZeroMQ's slow joiner) before traffic.
    await sleep(500);
    return { workerUrls, workerIds, routerUrls, natsUrl, subjectPrefix: SUBJECT_PREFIX, children, dir, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
