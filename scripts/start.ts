/**
 * `npm start`: the embedded default. Launches two `onnx` kv-workers with the default model
 * as child processes (free ports for HTTP and events), the router on 127.0.0.1:8000 in this
 * process wired to their event streams, waits until everything is healthy, prints the URL and
 * a curl example, and stops everything on Ctrl-C.
 *
 *   npm start [-- --port 8000 --workers 2 --engine onnx|sim --policy cache_aware]
 *
 * Local means local: HTTP on 127.0.0.1, each worker's KV events on an ipc:// socket under the temp
 * dir (bound by the worker, so only this machine's users can subscribe), replay on 127.0.0.1.
 * Stopping: SIGINT/SIGTERM (to this process or to npm: the `sh -c` between them does not pass it
 * on, so this process also stops when its parent goes, see src/proc/parent.ts) drain the router,
 * then stop the workers. Each worker holds an IPC channel to this process and stops when it
 * closes, so even a SIGKILL of this process leaves no worker behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ConfigError, exitOnConfigError, oneLine } from '../src/config/error.js';
import { assertPortFree } from '../src/net/port-in-use.js';
import { watchParent } from '../src/proc/parent.js';
import { ipcEndpoint } from '../src/queues/index.js';
import { parseRouterConfig, PolicyNameSchema, type RouterConfigInput } from '../router/config.js';
import { startRouter, type RunningRouter } from '../router/server.js';
import { freePort } from '../src/net/free-port.js';

const USAGE = `usage: npm start [-- options]
  --host HOST               router bind address (default 127.0.0.1)
  --port PORT               router port (default 8000)
  --workers N               kv-worker processes, 1-64 (default 2)
  --engine onnx|sim         worker engine (default onnx)
  --policy NAME             ${PolicyNameSchema.options.join(' | ')} (default cache_aware)
  --drain-timeout-ms MS     on Ctrl-C/SIGTERM, time in-flight requests get to finish (default 10000)
  --startup-timeout S       seconds to wait for the workers (default 600)
  -h, --help`;

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
  // The 'ipc' channel ties the worker's life to ours: it closes when we die, however we die.
  const proc = spawn(process.execPath, [workerBin, ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe', 'ipc'], detached: true });
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

interface Options {
  host: string;
  port: number;
  workers: number;
  engine: 'onnx' | 'sim';
  policy: string;
  drainTimeoutMs: number;
  startupTimeoutS: number;
}

function intOption(name: string, s: string, min: number, max: number): number {
  if (!/^\d+$/.test(s) || Number(s) < min || Number(s) > max) throw new ConfigError(`--${name} must be an integer from ${min} to ${max}, got "${s}"`);
  return Number(s);
}

/** Every option checked before anything starts; a problem is a one-line ConfigError with the fix. */
function parseOptions(argv: string[]): Options | 'help' {
  let v;
  try {
    v = parseArgs({
      args: argv,
      options: {
        host: { type: 'string', default: '127.0.0.1' },
        port: { type: 'string', default: '8000' },
        workers: { type: 'string', default: '2' },
        engine: { type: 'string', default: 'onnx' },
        policy: { type: 'string', default: 'cache_aware' },
        'drain-timeout-ms': { type: 'string', default: '10000' },
        'startup-timeout': { type: 'string', default: '600' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (e) {
    throw new ConfigError(`${(e as Error).message} (see npm start -- --help)`);
  }
  if (v.help) return 'help';
  if (v.engine !== 'onnx' && v.engine !== 'sim') throw new ConfigError(`--engine must be onnx or sim, got "${v.engine}"`);
  if (!PolicyNameSchema.safeParse(v.policy).success) throw new ConfigError(`--policy must be one of ${PolicyNameSchema.options.join(', ')}, got "${v.policy}"`);
  return {
    host: v.host!,
    port: intOption('port', v.port!, 0, 65535),
    workers: intOption('workers', v.workers!, 1, 64),
    engine: v.engine,
    policy: v.policy!,
    drainTimeoutMs: intOption('drain-timeout-ms', v['drain-timeout-ms']!, 0, 3_600_000),
    startupTimeoutS: intOption('startup-timeout', v['startup-timeout']!, 1, 86_400),
  };
}

async function main(): Promise<void> {
  let parsed: Options | 'help';
  try {
    parsed = parseOptions(process.argv.slice(2));
    if (parsed !== 'help') await assertPortFree(parsed.host, parsed.port, 'use --port');
  } catch (e) {
    exitOnConfigError('npm start', e);
  }
  if (parsed === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const v = parsed;
  const n = v.workers;
  const children: Child[] = [];
  let router: RunningRouter | null = null;
  let stopping = false;

  const stopAll = async (code: number) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write('[start] stopping...\n');
    // Bounded: the router's drain, then the workers' (nothing left in flight there), then SIGKILL.
    setTimeout(() => process.exit(code || 1), v.drainTimeoutMs + 20_000).unref();
    await router?.close(v.drainTimeoutMs).catch(() => {});
    await Promise.all(children.map((c) => stopChild(c)));
    process.stderr.write('[start] stopped\n');
    process.exit(code);
  };
  process.on('SIGINT', () => void stopAll(0));
  process.on('SIGTERM', () => void stopAll(0));
  watchParent((why) => {
    process.stderr.write(`[start] ${why}\n`);
    void stopAll(0);
  });
  // Last resort if this process dies some other way: never leave workers behind.
  process.on('exit', () => {
    for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL');
  });

  try {
    const workers: RouterConfigInput['workers'] = [];
    for (let i = 0; i < n; i++) {
      const [http, replay] = [await freePort(), await freePort()];
      // The worker binds both (ipc:// binds by the engines' rule; replay always binds); the router connects.
      const events = { publisher: 'zmq', endpoint: ipcEndpoint(`worker-${i}-events`), replay_endpoint: `tcp://127.0.0.1:${replay}`, topic: 'kv-events' };
      children.push(
        spawnWorker(`worker-${i}`, [
          '--engine', v.engine, '--host', '127.0.0.1', '--port', String(http), '--block-size', '16',
          '--kv-events-config', JSON.stringify(events), '--drain-timeout-ms', String(v.drainTimeoutMs),
        ]),
      );
      workers.push({ id: `worker-${i}`, url: `http://127.0.0.1:${http}`, kv_events: events, block_size: 16 });
    }
    const dead = () => {
      const d = children.find((c) => c.proc.exitCode !== null || c.proc.signalCode !== null);
      return d ? `${d.name} exited (${d.proc.exitCode ?? d.proc.signalCode}) during startup; see its output above` : null;
    };
    const timeout = v.startupTimeoutS * 1000;
    await Promise.all(
      workers.map((w) =>
        waitFor(`${w.id} at ${w.url}`, timeout, async () => (await fetch(`${w.url}/health`, { signal: AbortSignal.timeout(2000) })).ok, dead),
      ),
    );
    const config = parseRouterConfig({ host: v.host, port: v.port, policy: v.policy, workers, health: { interval_ms: 500 }, drain_timeout_ms: v.drainTimeoutMs });
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
    const err = e as NodeJS.ErrnoException;
    const busy = err.code === 'EADDRINUSE';
    process.stderr.write(`[start] ${busy ? `port ${v.port} is in use on ${v.host}; use --port` : oneLine(err.message)}\n`);
    await stopAll(e instanceof ConfigError || busy ? 2 : 1);
  }
}

await main();
