/** Helpers for the router tests: fake upstreams, real kv-worker processes, a router in this process. */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../helpers/net.js';
import { parseRouterConfig, type RouterConfigInput } from '../../router/config.js';
import { startRouter, type RunningRouter } from '../../router/server.js';

export { freePort };

export const root = fileURLToPath(new URL('../..', import.meta.url));
export const workerBin = fileURLToPath(new URL('../../bin/kv-worker.js', import.meta.url));
export const routerBin = fileURLToPath(new URL('../../bin/kv-router.js', import.meta.url));
export const workerAvailable = () => existsSync(workerBin);

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function waitUntil(what: string, timeoutMs: number, check: () => boolean | Promise<boolean>, everyMs = 50): Promise<void> {
  const t0 = Date.now();
  for (;;) {
    if (await Promise.resolve().then(check).catch(() => false)) return;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** A fake OpenAI upstream on 127.0.0.1: /health is 200, everything else goes to `handler`. */
export interface FakeUpstream {
  url: string;
  port: number;
  requests: { path: string; body: string; headers: IncomingMessage['headers'] }[];
  closedEarly: number;
  close(): Promise<void>;
}

export async function fakeUpstream(handler: (req: IncomingMessage, res: ServerResponse, body: string) => unknown): Promise<FakeUpstream> {
  const f: FakeUpstream = { url: '', port: 0, requests: [], closedEarly: 0, close: async () => {} };
  const server: Server = createServer((req, res) => {
    if (req.url === '/health') {
      res.end('{}');
      return;
    }
    if (req.method !== 'POST') {
      res.writeHead(404).end();
      return;
    }
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      f.requests.push({ path: req.url ?? '', body, headers: req.headers });
      res.on('close', () => {
        if (!res.writableFinished) f.closedEarly++;
      });
      void handler(req, res, body);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  f.port = (server.address() as AddressInfo).port;
  f.url = `http://127.0.0.1:${f.port}`;
  f.close = () =>
    new Promise((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  return f;
}

export async function routerWith(cfg: RouterConfigInput): Promise<RunningRouter> {
  const config = parseRouterConfig({
    port: 0,
    tokenizer_threads: 1,
    health: { interval_ms: 150, timeout_ms: 2000, failure_threshold: 3 },
    retry: { max_attempts: 3, backoff_ms: 5 },
    ...cfg,
  });
  return startRouter(config);
}

export async function waitHealthy(r: RunningRouter, n: number, timeoutMs = 20_000): Promise<void> {
  await waitUntil(`${n} healthy worker(s)`, timeoutMs, () => r.service.registry.healthyCount() === n);
}

/** A real kv-worker child process. */
export interface WorkerProc {
  id: string;
  url: string;
  port: number;
  events: { endpoint: string; replay_endpoint: string; topic: string };
  proc: ChildProcess;
  output: () => string;
  exited: Promise<void>;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export interface WorkerOpts {
  id: string;
  engine?: 'sim' | 'onnx';
  port?: number;
  pubPort?: number;
  replayPort?: number;
  extraArgs?: string[];
}

export async function startWorker(o: WorkerOpts): Promise<WorkerProc> {
  const port = o.port ?? (await freePort());
  const pub = o.pubPort ?? (await freePort());
  const rep = o.replayPort ?? (await freePort());
  const kv = { publisher: 'zmq', endpoint: `tcp://*:${pub}`, replay_endpoint: `tcp://*:${rep}`, topic: 'kv-events' };
  const args = [workerBin, '--engine', o.engine ?? 'sim', '--host', '127.0.0.1', '--port', String(port), '--block-size', '16', '--kv-events-config', JSON.stringify(kv), ...(o.extraArgs ?? [])];
  const proc = spawn(process.execPath, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const url = `http://127.0.0.1:${port}`;
  const w: WorkerProc = {
    id: o.id,
    url,
    port,
    events: { endpoint: `tcp://127.0.0.1:${pub}`, replay_endpoint: `tcp://127.0.0.1:${rep}`, topic: 'kv-events' },
    proc,
    output: () => out,
    exited,
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill(signal);
      const t = setTimeout(() => proc.kill('SIGKILL'), 8000);
      await exited;
      clearTimeout(t);
    },
  };
  try {
    await waitUntil(`worker ${o.id} healthy`, 90_000, async () => {
      if (proc.exitCode !== null) throw new Error(`worker ${o.id} exited: ${out}`);
      return (await fetch(`${url}/health`)).ok;
    }, 100);
  } catch (e) {
    await w.stop('SIGKILL');
    removeIpcLeftovers(proc.pid);
    throw new Error(`${(e as Error).message}\n--- worker output ---\n${out}`);
  }
  return w;
}

export const workerEntry = (w: WorkerProc) => ({ id: w.id, url: w.url, kv_events: w.events, block_size: 16 });

/** Reads an SSE response to the end: the data payloads, in order. */
export async function readSSE(res: Response): Promise<string[]> {
  const text = await res.text();
  return text
    .split('\n')
    .filter((l) => l.startsWith('data: '))
    .map((l) => l.slice(6));
}

/** A worker killed with SIGKILL cannot remove its ipc:// socket files: the test that killed it does. */
export function removeIpcLeftovers(pid: number | undefined): void {
  if (pid === undefined) return;
  for (const f of readdirSync(tmpdir())) if (f.startsWith(`kvq-${pid}-`)) rmSync(join(tmpdir(), f), { force: true });
}
