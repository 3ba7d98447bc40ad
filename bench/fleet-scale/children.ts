/**
 * The bench's child processes: publisher hosts (fork) and the router (spawned as a user starts it,
 * `node bin/kv-router.js --config FILE`, plus an IPC channel). Every child has the channel, so it
 * stops itself when the bench dies however it dies (src/proc/parent.ts); an exit hook SIGKILLs
 * whatever is still alive when the bench exits normally or on an error.
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { FromHost, HostStats, ToHost } from './protocol.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const live = new Set<ChildProcess>();
let hooked = false;

function track(p: ChildProcess): void {
  if (!hooked) {
    hooked = true;
    process.on('exit', () => {
      for (const c of live) c.kill('SIGKILL');
    });
  }
  live.add(p);
  p.once('exit', () => live.delete(p));
}

/** Pids of every child started and not yet exited. */
export function livePids(): number[] {
  return [...live].map((p) => p.pid!).filter((p) => p !== undefined);
}

function exited(p: ChildProcess): Promise<void> {
  return p.exitCode !== null || p.signalCode !== null ? Promise.resolve() : new Promise((r) => p.once('exit', () => r()));
}

/** SIGTERM, then SIGKILL after graceMs; resolves when it is gone. */
export async function stopProcess(p: ChildProcess, graceMs: number): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), graceMs);
  await exited(p);
  clearTimeout(t);
}

export class Host {
  private readonly waiting: { type: string; resolve: (m: FromHost) => void; reject: (e: Error) => void }[] = [];
  private error: Error | null = null;

  constructor(readonly proc: ChildProcess) {
    proc.on('message', (m: FromHost) => {
      if (m.type === 'error') this.fail(new Error(`publisher host ${proc.pid}: ${m.message}`));
      const i = this.waiting.findIndex((w) => w.type === m.type);
      if (i >= 0) this.waiting.splice(i, 1)[0]!.resolve(m);
    });
    proc.once('exit', (code, sig) => this.fail(new Error(`publisher host ${proc.pid} exited (${sig ?? code})`)));
  }

  static start(): Host {
    const p = fork(fileURLToPath(new URL('./publisher-host.ts', import.meta.url)), [], { cwd: root, execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    track(p);
    return new Host(p);
  }

  private fail(e: Error): void {
    this.error ??= e;
    for (const w of this.waiting.splice(0)) w.reject(e);
  }

  send(m: ToHost): void {
    this.proc.send(m);
  }

  /** Sends `m` and resolves with the host's next message of type `reply`. */
  request<T extends FromHost['type']>(m: ToHost, reply: T): Promise<Extract<FromHost, { type: T }>> {
    if (this.error) return Promise.reject(this.error);
    const p = new Promise<FromHost>((resolve, reject) => this.waiting.push({ type: reply, resolve, reject }));
    this.send(m);
    return p as Promise<Extract<FromHost, { type: T }>>;
  }

  async stats(): Promise<HostStats> {
    return (await this.request({ type: 'stats' }, 'stats')).stats;
  }

  async stop(): Promise<void> {
    if (this.proc.connected) this.proc.send({ type: 'stop' } satisfies ToHost);
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
    await exited(this.proc);
    clearTimeout(t);
  }
}

export interface RouterProc {
  proc: ChildProcess;
  /** Last stderr lines (error messages). */
  tail: string[];
  /** Full-GC heap (SIGUSR2: the router prints it when started with --expose-gc). */
  /** The router's JS heap and ArrayBuffer bytes after a full GC (buffers 0 from a router that reports only the heap). */
  heapAfterGc(): Promise<{ heap: number; buffers: number }>;
  /** bench/fleet-scale/router-probe.mjs (loaded with --import): start a window, or read the one since. */
  probeReset(): void;
  probeRead(): Promise<ProbeStats>;
}

/** What router-probe.mjs reports for a window (times in ms). */
export interface ProbeStats {
  decisions: number;
  decision_p50_ms: number;
  decision_p99_ms: number;
  decision_max_ms: number;
  decision_own_p50_ms: number;
  decision_own_p99_ms: number;
  decisions_over_1ms: number;
  decisions_over_1ms_with_gc: number;
  decisions_with_gc: number;
  decide_now_p50_ms: number;
  decide_now_p99_ms: number;
  candidates_p50_ms: number;
  candidates_p99_ms: number;
  decisions_over_1ms_descheduled: number | null;
  decisions_undisturbed: number | null;
  decision_undisturbed_p99_ms: number | null;
  decision_undisturbed_max_ms: number | null;
  gc: Record<string, { count: number; total_ms: number; max_ms: number; p99_ms: number }>;
  gc_pause_ms_total: number;
  loop_delay_p50_ms: number;
  loop_delay_p99_ms: number;
  loop_delay_max_ms: number;
  loop_utilization: number;
}

/** Node flags loading the probe into the router. */
export const probeArgs = ['--import', new URL('./router-probe.mjs', import.meta.url).href];

/** `node [--expose-gc] [extra] bin/kv-router.js --config FILE --quiet`, with an IPC channel so it dies with the bench. */
export function startRouter(configFile: string, nodeArgs: string[]): RouterProc {
  const proc = spawn(process.execPath, ['--expose-gc', ...probeArgs, ...nodeArgs, 'bin/kv-router.js', '--config', configFile, '--quiet'], {
    cwd: root,
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
  });
  track(proc);
  const tail: string[] = [];
  const heapWaiters: ((n: { heap: number; buffers: number }) => void)[] = [];
  let buf = '';
  proc.stderr!.on('data', (d: Buffer) => {
    buf += d.toString('utf8');
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      const m = /^heap-after-gc (\d+)(?: (\d+))?/.exec(line);
      if (m) heapWaiters.shift()?.({ heap: Number(m[1]), buffers: Number(m[2] ?? 0) });
      else {
        tail.push(line);
        if (tail.length > 30) tail.shift();
      }
    }
  });
  const probeWaiters: ((s: ProbeStats) => void)[] = [];
  proc.on('message', (m: { probe?: string } & ProbeStats) => {
    if (m?.probe === 'stats') probeWaiters.shift()?.(m);
  });
  return {
    proc,
    tail,
    probeReset: () => proc.send({ probe: 'reset' }),
    probeRead: () =>
      new Promise<ProbeStats>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('router probe did not answer')), 30_000);
        probeWaiters.push((s) => {
          clearTimeout(t);
          resolve(s);
        });
        proc.send({ probe: 'read' });
      }),
    heapAfterGc: () =>
      new Promise<{ heap: number; buffers: number }>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('router did not report its heap')), 30_000);
        heapWaiters.push((n) => {
          clearTimeout(t);
          resolve(n);
        });
        proc.kill('SIGUSR2');
      }),
  };
}

/** Resident set size of a process (bytes), from /proc. */
export function rssOf(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}
