/** Starting a real kv-worker (three processes) for a test, and talking to it. */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';

export const BIN = fileURLToPath(new URL('../../bin/kv-worker.js', import.meta.url));

export class WorkerProc {
  output = '';
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  url = '';

  constructor(readonly proc: ChildProcess) {
    proc.stdout!.on('data', (d) => (this.output += d));
    proc.stderr!.on('data', (d) => (this.output += d));
    this.exit = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  }

  get pid(): number {
    return this.proc.pid!;
  }

  /** Pids of the worker's stage processes. */
  childPids(): number[] {
    try {
      return execFileSync('ps', ['-o', 'pid=', '--ppid', String(this.pid)], { encoding: 'utf8' })
        .split('\n')
        .map((s) => Number(s.trim()))
        .filter((n) => n > 0);
    } catch {
      return [];
    }
  }

  /** The ipc socket files of this worker's queues still on disk. */
  ipcFiles(): string[] {
    return readdirSync(tmpdir()).filter((f) => f.startsWith(`kvq-${this.pid}-`));
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM') {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(signal);
    return this.exit;
  }

  async fetch(path: string, init?: RequestInit): Promise<Response> {
    try {
      return await fetch(this.url + path, init);
    } catch (e) {
      // undici's "fetch failed" hides the reason in `cause`.
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      throw new Error(`${init?.method ?? 'GET'} ${path}: ${(e as Error).message}${cause ? ` (${cause.code ?? ''} ${cause.message ?? ''})` : ''}`, { cause: e });
    }
  }

  post(path: string, body: unknown, init: RequestInit = {}): Promise<Response> {
    return this.fetch(path, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: typeof body === 'string' ? body : JSON.stringify(body),
      ...init,
    });
  }

  async json<T = any>(path: string, body?: unknown): Promise<T> {
    const r = body === undefined ? await this.fetch(path) : await this.post(path, body);
    const j = (await r.json()) as T;
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status} ${JSON.stringify(j)}`);
    return j;
  }
}

/** Starts `kv-worker` on a free port and waits (on its output, not by polling) until it listens. */
export async function startWorker(args: string[], timeoutMs = 60_000): Promise<WorkerProc> {
  const w = new WorkerProc(spawn(process.execPath, [BIN, '--port', '0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] }));
  const listening = () => /listening on (http:\/\/[\d.]+:\d+)/.exec(w.output)?.[1];
  let timer: NodeJS.Timeout | undefined;
  let check = () => {};
  try {
    w.url = await new Promise<string>((resolve, reject) => {
      check = () => {
        const url = listening();
        if (url) resolve(url);
      };
      w.proc.stdout!.on('data', check);
      w.proc.stderr!.on('data', check);
      void w.exit.then(({ code, signal }) => reject(new Error(`kv-worker exited with ${code ?? signal}:\n${w.output}`)));
      timer = setTimeout(() => reject(new Error(`kv-worker did not start within ${timeoutMs} ms:\n${w.output}`)), timeoutMs);
      check();
    });
    return w;
  } catch (e) {
    await w.stop('SIGKILL');
    throw e;
  } finally {
    clearTimeout(timer);
    w.proc.stdout!.off('data', check);
    w.proc.stderr!.off('data', check);
  }
}

/** A process's command line, for failure messages. */
export function processArgs(pid: number): string {
  try {
    return execFileSync('ps', ['-o', 'args=', '-p', String(pid)], { encoding: 'utf8' }).trim();
  } catch {
    return '(gone)';
  }
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The `data:` payloads of an SSE body, JSON-parsed except the final `[DONE]`. */
export function parseSSE(body: string): { events: any[]; done: boolean } {
  const datas = body
    .split('\n\n')
    .map((b) => b.trim())
    .filter((b) => b.startsWith('data: '))
    .map((b) => b.slice(6));
  const done = datas.at(-1) === '[DONE]';
  return { events: datas.filter((d) => d !== '[DONE]').map((d) => JSON.parse(d)), done };
}

export async function waitFor<T>(what: string, f: () => Promise<T | null | undefined | false>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
