/**
 * `npm start`: the embedded default. Launches two `onnx` kv-workers with the default model
 * as child processes (free ports for HTTP and events), the router on 127.0.0.1:8000 in this
 * process wired to their event streams, waits until everything is healthy, prints the URL and
 * a curl example, and stops everything on Ctrl-C.
 *
 *   npm start [-- --port 8000 --workers 2 --replicas 1 --engine onnx|sim --policy cache_aware]
 *
 * `--replicas N` (N > 1): N routers on consecutive ports (port, port+1, ...) in front of the same
 * workers, sharing load over a local nats-server (from the PATH or /usr/sbin) on a free loopback
 * port. nats-server cannot watch its parent, so it runs under scripts/nats-guard.js, which holds an
 * IPC channel to this process like the workers do and stops nats-server when it closes.
 *
 * Local means local: HTTP on 127.0.0.1, each worker's KV events on an ipc:// socket under the temp
 * dir (bound by the worker, so only this machine's users can subscribe), replay on 127.0.0.1.
 * Stopping: SIGINT/SIGTERM (to this process or to npm: the `sh -c` between them does not pass it
 * on, so this process also stops when its parent goes, see src/proc/parent.ts) drain the router,
 * then stop the workers. Each worker holds an IPC channel to this process and stops when it
 * closes, so even a SIGKILL of this process leaves no worker behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ConfigError, exitOnConfigError, oneLine } from '../src/config/error.js';
import { assertPortFree } from '../src/net/port-in-use.js';
import { watchParent } from '../src/proc/parent.js';
import { ipcEndpoint } from '../src/queues/index.js';
import { parseRouterConfig, PolicyNameSchema, type RouterConfigInput } from '../router/config.js';
import { startRouter, type RunningRouter } from '../router/server.js';
import { freePort } from '../src/net/free-port.js';
import { createLogger, exportLogSettings, resolveLogSettings, type Logger } from '../src/log/logger.js';

const USAGE = `usage: npm start [-- options]
  --host HOST               router bind address (default 127.0.0.1)
  --port PORT               router port (default 8000)
  --workers N               kv-worker processes, 1-64 (default 2)
  --replicas N              routers on ports PORT..PORT+N-1 sharing load over a local nats-server, 1-16 (default 1)
  --engine onnx|sim         worker engine (default onnx)
  --policy NAME             ${PolicyNameSchema.options.join(' | ')} (default cache_aware)
  --drain-timeout-ms MS     on Ctrl-C/SIGTERM, time in-flight requests get to finish (default 10000)
  --startup-timeout S       seconds to wait for the workers (default 600)
  --log-level LEVEL         error | warn | info | debug, for every process (default info, or env KV_ROUTER_LOG_LEVEL)
  --log-format FORMAT       text | json (JSON lines), for every process (default text, or env KV_ROUTER_LOG_FORMAT)
  -h, --help`;

const root = fileURLToPath(new URL('..', import.meta.url));
const workerBin = fileURLToPath(new URL('../bin/kv-worker.js', import.meta.url));
const natsGuard = fileURLToPath(new URL('./nats-guard.js', import.meta.url));

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

function spawnChild(name: string, script: string, args: string[]): Child {
  // Own process group: Ctrl-C reaches only this launcher, which then stops the children in order.
  // The 'ipc' channel ties the child's life to ours: it closes when we die, however we die.
  const proc = spawn(process.execPath, [script, ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe', 'ipc'], detached: true });
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
      log.info(`still waiting for ${what} (${Math.round((Date.now() - t0) / 1000)} s; the first start builds the default model)`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

interface Options {
  host: string;
  port: number;
  workers: number;
  replicas: number;
  /** nats-server's path when replicas > 1. */
  natsBin: string | null;
  engine: 'onnx' | 'sim';
  policy: string;
  drainTimeoutMs: number;
  startupTimeoutS: number;
}

/** This script's logger; the children inherit its settings through the environment. */
let log: Logger = createLogger({ component: 'start' });

function intOption(name: string, s: string, min: number, max: number): number {
  if (!/^\d+$/.test(s) || Number(s) < min || Number(s) > max) throw new ConfigError(`--${name} must be an integer from ${min} to ${max}, got "${s}"`);
  return Number(s);
}

function executable(path: string): boolean {
  try {
    accessSync(path, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** nats-server on the PATH, else Debian's /usr/sbin (not on a normal user's PATH), else null. */
function findNatsServer(): string | null {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) if (dir && executable(join(dir, 'nats-server'))) return join(dir, 'nats-server');
  return executable('/usr/sbin/nats-server') ? '/usr/sbin/nats-server' : null;
}

function tcpAccepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = netConnect(port, '127.0.0.1', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
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
        replicas: { type: 'string', default: '1' },
        engine: { type: 'string', default: 'onnx' },
        policy: { type: 'string', default: 'cache_aware' },
        'drain-timeout-ms': { type: 'string', default: '10000' },
        'startup-timeout': { type: 'string', default: '600' },
        'log-level': { type: 'string' },
        'log-format': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (e) {
    throw new ConfigError(`${(e as Error).message} (see npm start -- --help)`);
  }
  if (v.help) return 'help';
  const logSettings = resolveLogSettings({ level: v['log-level'], format: v['log-format'] });
  exportLogSettings(logSettings);
  log = createLogger({ component: 'start', ...logSettings });
  if (v.engine !== 'onnx' && v.engine !== 'sim') throw new ConfigError(`--engine must be onnx or sim, got "${v.engine}"`);
  if (!PolicyNameSchema.safeParse(v.policy).success) throw new ConfigError(`--policy must be one of ${PolicyNameSchema.options.join(', ')}, got "${v.policy}"`);
  const port = intOption('port', v.port!, 0, 65535);
  const replicas = intOption('replicas', v.replicas!, 1, 16);
  if (replicas > 1 && port === 0) throw new ConfigError(`--replicas ${replicas} needs a fixed --port (the replicas take consecutive ports), got 0`);
  if (port + replicas - 1 > 65535) throw new ConfigError(`--replicas ${replicas} from --port ${port} would go past port 65535; use a lower --port`);
  let natsBin: string | null = null;
  if (replicas > 1) {
    natsBin = findNatsServer();
    if (!natsBin) throw new ConfigError(`--replicas ${replicas} needs nats-server (not on the PATH nor at /usr/sbin/nats-server); install it: apt-get install nats-server`);
  }
  return {
    host: v.host!,
    port,
    workers: intOption('workers', v.workers!, 1, 64),
    replicas,
    natsBin,
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
    if (parsed !== 'help') for (let r = 0; r < parsed.replicas; r++) await assertPortFree(parsed.host, parsed.port + r, 'use --port');
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
  const routers: RunningRouter[] = [];
  let nats: Child | null = null;
  let stopping = false;

  const stopAll = async (code: number) => {
    if (stopping) return;
    stopping = true;
    log.info('stopping...');
    // Bounded: the router's drain, then the workers' (nothing left in flight there), then SIGKILL.
    setTimeout(() => process.exit(code || 1), v.drainTimeoutMs + 20_000).unref();
    await Promise.all(routers.map((r) => r.close(v.drainTimeoutMs).catch(() => {})));
    // nats-server last: the routers said goodbye over it.
    await Promise.all([...children, ...(nats ? [nats] : [])].map((c) => stopChild(c)));
    log.info('stopped');
    process.exit(code);
  };
  process.on('SIGINT', () => void stopAll(0));
  process.on('SIGTERM', () => void stopAll(0));
  watchParent((why) => {
    log.info(why);
    void stopAll(0);
  });
  // Last resort if this process dies some other way: never leave workers behind.
  process.on('exit', () => {
    for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL');
    // SIGTERM, not SIGKILL: the guard must live to stop nats-server (its channel closing does too).
    if (nats && nats.proc.exitCode === null && nats.proc.signalCode === null) nats.proc.kill('SIGTERM');
  });

  try {
    let natsUrl: string | null = null;
    if (v.natsBin) {
      const natsPort = await freePort();
      natsUrl = `nats://127.0.0.1:${natsPort}`;
      const n0 = spawnChild('nats', natsGuard, [v.natsBin, '-a', '127.0.0.1', '-p', String(natsPort)]);
      nats = n0;
      const natsDead = () => (n0.proc.exitCode !== null || n0.proc.signalCode !== null ? `nats-server exited (${n0.proc.exitCode ?? n0.proc.signalCode}) during startup; see its output above` : null);
      await waitFor(`nats-server at ${natsUrl}`, 10_000, () => tcpAccepts(natsPort), natsDead);
    }
    const workers: RouterConfigInput['workers'] = [];
    for (let i = 0; i < n; i++) {
      const [http, replay] = [await freePort(), await freePort()];
      // The worker binds both (ipc:// binds by the engines' rule; replay always binds); the router connects.
      const events = { publisher: 'zmq', endpoint: ipcEndpoint(`worker-${i}-events`), replay_endpoint: `tcp://127.0.0.1:${replay}`, topic: 'kv-events' };
      children.push(
        spawnChild(`worker-${i}`, workerBin, [
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
    const base = { host: v.host, policy: v.policy, workers, health: { interval_ms: 500 }, drain_timeout_ms: v.drainTimeoutMs };
    const configs = Array.from({ length: v.replicas }, (_, r) =>
      parseRouterConfig({ ...base, port: v.port + r, ...(natsUrl ? { cluster: { nats_url: natsUrl, replica_id: `r${r}` } } : {}) }),
    );
    const config = configs[0]!;
    for (const [r, c] of configs.entries()) {
      const tag = v.replicas > 1 ? `router-r${r}` : 'router';
      const rlog = log.child(tag);
      routers.push(await startRouter(c, (m) => rlog.info(m), { accessLog: log.child(`${tag} access`) }));
    }
    await waitFor('the router to see every worker healthy', 30_000, async () => routers.every((r) => r.service.registry.healthyCount() === n), dead);
    if (v.replicas > 1) {
      await waitFor(`the ${v.replicas} router replicas to see each other over NATS`, 30_000, async () => routers.every((r) => {
        const s = r.service.cluster?.status();
        return s?.status === 'ok' && s.peers.length === v.replicas - 1;
      }), dead);
    }
    const url = routers[0]!.url;
    const urls = routers.map((r) => r.url);
    const model = await fetch(`${url}/v1/models`)
      .then((x) => x.json() as Promise<{ data?: { id: string }[] }>)
      .then((j) => j.data?.[0]?.id ?? 'default')
      .catch(() => 'default');
    process.stdout.write(
      [
        '',
        `kv-router is up: ${urls.join(' ')}  (policy ${config.policy}, ${n} ${v.engine} workers: ${workers.map((w) => w.url).join(', ')})`,
        ...(natsUrl ? [`  ${v.replicas} replicas sharing load over ${natsUrl}`] : []),
        '',
        'Try (twice: the second answer reports cached_tokens, the prompt\'s blocks the worker already held):',
        `  curl -s -D - ${url}/v1/chat/completions -H 'content-type: application/json' \\`,
        `    -d '{"model":"${model}","max_tokens":8,"messages":[{"role":"system","content":"You are a terse assistant for a shipping company. Answer in one sentence."},{"role":"user","content":"Where is parcel 42 and when will it arrive at the Lisbon depot?"}]}'`,
        '',
        `  curl -s ${url}/route -H 'content-type: application/json' -d '{"prompt":"Hello"}'   # explain a decision`,
        `  curl -s ${url}/workers        # workers, streams, trees`,
        `  curl -s ${url}/metrics`,
        '',
        'KV events (what the router subscribes to):',
        ...workers.flatMap((w) => {
          const e = w.kv_events!;
          return [
            `  ${w.id}: events ${e.endpoint}  replay ${e.replay_endpoint}  topic ${e.topic}`,
            `    npx kv-events tail ${e.endpoint} --replay ${e.replay_endpoint} --topic ${e.topic}`,
          ];
        }),
        '',
        'The default model has random weights: its text is noise. Ctrl-C stops everything.',
        '',
      ].join('\n'),
    );
    // A worker dying later is logged; the router takes it out of rotation.
    if (nats) void nats.exited.then((code) => !stopping && log.warn(`nats-server exited (${code}); the replicas no longer share load`));
    for (const c of children) void c.exited.then((code) => !stopping && log.warn(`${c.name} exited (${code})`));
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const busy = err.code === 'EADDRINUSE';
    log.error(busy ? `port ${v.port} is in use on ${v.host}; use --port` : oneLine(err.message));
    await stopAll(e instanceof ConfigError || busy ? 2 : 1);
  }
}

await main();
