/**
 * `npm start`: the embedded default. Launches two `onnx` kv-workers with the default model
 * as child processes (free ports for HTTP and events), the router on 127.0.0.1:8000 in this
 * process wired to their event streams, waits until everything is healthy, prints the URL and
 * a curl example, and stops everything on Ctrl-C.
 *
 *   npm start [-- --port 8000 --workers 2 --engine onnx|sim --policy cache_aware]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { parseRouterConfig, type RouterConfigInput } from '../router/config.js';
import { startRouter, type RunningRouter } from '../router/server.js';
import { freePort } from '../src/net/free-port.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const workerBin = fileURLToPath(new URL('../bin/kv-worker.js', import.meta.url));

interface Child {
  name: string;
  proc: ChildProcess;
  exited: Promise<number | null>;
}


function prefixLines(name: string, stream: NodeJS.ReadableStream | null, out: NodeJS.WriteStream): void {
  if (!stream) return;
  let buf = '';
  stream.setEncoding('utf8');
  stream.on('data', (d: string) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      out.write(`[${name}] ${buf.slice(0, i)}\n`);
      buf = buf.slice(i + 1);
    }
  });
  stream.on('end', () => buf && out.write(`[${name}] ${buf}\n`));
}

function spawnWorker(name: string, args: string[]): Child {
  // Own process group: Ctrl-C reaches only this launcher, which then stops the workers in order.
  const proc = spawn(process.execPath, [workerBin, ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  prefixLines(name, proc.stdout, process.stdout);
  prefixLines(name, proc.stderr, process.stderr);
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code, sig) => resolve(code ?? (sig ? 128 : null))));
  return { name, proc, exited };
}

async function stopChild(c: Child, timeoutMs = 10_000): Promise<void> {
  if (c.proc.exitCode !== null || c.proc.signalCode !== null) return;
  c.proc.kill('SIGTERM');
  const t = setTimeout(() => c.proc.kill('SIGKILL'), timeoutMs);
  await c.exited;
  clearTimeout(t);
}

async function waitFor(what: string, timeoutMs: number, check: () => Promise<boolean>, dead: () => string | null): Promise<void> {
  const t0 = Date.now();
  let lastNote = t0;
  for (;;) {
    const d = dead();
    if (d) throw new Error(d);
    if (await check().catch(() => false)) return;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${Math.round(timeoutMs / 1000)} s waiting for ${what}`);
    if (Date.now() - lastNote > 15_000) {
      lastNote = Date.now();
      process.stderr.write(`[start] still waiting for ${what} (${Math.round((Date.now() - t0) / 1000)} s; the first start builds the default model)\n`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function main(): Promise<void> {
  const { values: v } = parseArgs({
    args: process.argv.slice(2),
    options: {
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: '8000' },
      workers: { type: 'string', default: '2' },
      engine: { type: 'string', default: 'onnx' },
      policy: { type: 'string', default: 'cache_aware' },
      'startup-timeout': { type: 'string', default: '600' },
    },
    strict: true,
  });
  const n = Number(v.workers);
  const children: Child[] = [];
  let router: RunningRouter | null = null;
  let stopping = false;

  const stopAll = async (code: number) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write('[start] stopping...\n');
    await router?.close().catch(() => {});
    await Promise.all(children.map((c) => stopChild(c)));
    process.stderr.write('[start] stopped\n');
    process.exit(code);
  };
  process.on('SIGINT', () => void stopAll(0));
  process.on('SIGTERM', () => void stopAll(0));
  // Last resort if this process dies some other way: never leave workers behind.
  process.on('exit', () => {
    for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL');
  });

  try {
    const workers: RouterConfigInput['workers'] = [];
    for (let i = 0; i < n; i++) {
      const [http, pub, replay] = [await freePort(), await freePort(), await freePort()];
      const events = { publisher: 'zmq', endpoint: `tcp://127.0.0.1:${pub}`, replay_endpoint: `tcp://127.0.0.1:${replay}`, topic: 'kv-events' };
      // The worker binds; the router connects to the same host:port.
      const bindEvents = { ...events, endpoint: `tcp://*:${pub}`, replay_endpoint: `tcp://*:${replay}` };
      children.push(
        spawnWorker(`worker-${i}`, ['--engine', v.engine!, '--host', '127.0.0.1', '--port', String(http), '--block-size', '16', '--kv-events-config', JSON.stringify(bindEvents)]),
      );
      workers.push({ id: `worker-${i}`, url: `http://127.0.0.1:${http}`, kv_events: events, block_size: 16 });
    }
    const dead = () => {
      const d = children.find((c) => c.proc.exitCode !== null || c.proc.signalCode !== null);
      return d ? `${d.name} exited (${d.proc.exitCode ?? d.proc.signalCode}) during startup; see its output above` : null;
    };
    const timeout = Number(v['startup-timeout']) * 1000;
    await Promise.all(
      workers.map((w) =>
        waitFor(`${w.id} at ${w.url}`, timeout, async () => (await fetch(`${w.url}/health`, { signal: AbortSignal.timeout(2000) })).ok, dead),
      ),
    );
    const config = parseRouterConfig({ host: v.host, port: Number(v.port), policy: v.policy, workers, health: { interval_ms: 500 } });
    router = await startRouter(config, (m) => process.stderr.write(`[router] ${m}\n`));
    const r = router;
    await waitFor('the router to see every worker healthy', 30_000, async () => r.service.registry.healthyCount() === n, dead);
    const url = router.url;
    const model = await fetch(`${url}/v1/models`)
      .then((x) => x.json() as Promise<{ data?: { id: string }[] }>)
      .then((j) => j.data?.[0]?.id ?? 'default')
      .catch(() => 'default');
    process.stdout.write(
      [
        '',
        `kv-router is up: ${url}  (policy ${config.policy}, ${n} ${v.engine} workers: ${workers.map((w) => w.url).join(', ')})`,
        '',
        'Try:',
        `  curl -s ${url}/v1/chat/completions -H 'content-type: application/json' \\`,
        `    -d '{"model":"${model}","messages":[{"role":"user","content":"Hello!"}],"max_tokens":16}'`,
        '',
        `  curl -s ${url}/route -H 'content-type: application/json' -d '{"prompt":"Hello"}'   # explain a decision`,
        `  curl -s ${url}/workers        # workers, streams, trees`,
        `  curl -s ${url}/metrics`,
        '',
        'The default model has random weights: its text is noise. Ctrl-C stops everything.',
        '',
      ].join('\n'),
    );
    // A worker dying later is logged; the router takes it out of rotation.
    for (const c of children) void c.exited.then((code) => !stopping && process.stderr.write(`[start] ${c.name} exited (${code})\n`));
  } catch (e) {
    process.stderr.write(`[start] ${(e as Error).message}\n`);
    await stopAll(1);
  }
}

await main();
