/**
 * kv-worker: this process is the API + tokenizer stage; it starts the scheduler and
 * detokenizer stages as child processes and ties their lives together. Any stage dying
 * takes the worker down with a message and a non-zero exit; SIGINT/SIGTERM stop all three
 * cleanly (children exit, sockets closed, ipc files removed).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { serve, type ServerType } from '@hono/node-server';
import { ipcEndpoint, removeIpcFile } from '../src/queues/index.js';
import { createApp } from './api/app.js';
import { PipelineClient } from './api/client.js';
import { WorkerMetrics } from './api/metrics.js';
import { exitOnConfigError } from '../src/config/error.js';
import { closeServer, HttpDrain } from '../src/http/drain.js';
import { assertPortFree } from '../src/net/port-in-use.js';
import { watchParent } from '../src/proc/parent.js';
import { loraModules } from './adapters.js';
import { modelName, parseWorkerArgs, USAGE, type WorkerConfig } from './config.js';
import { SPEC_ENV, type ChildMsg, type Endpoints, type ParentMsg, type ProcSpec } from './proc.js';
import { loadWorkerTokenizer, tokenizerFilesOf } from './tokenizer.js';
import { ThreadTokenizer } from './api/tokenize.js';
import { createLogger, exportLogSettings, resolveLogSettings, type Logger } from '../src/log/logger.js';

const STAGES = { scheduler: './scheduler/main.ts', detokenizer: './detokenizer/main.ts' } as const;
type Stage = keyof typeof STAGES;
const STOP_TIMEOUT_MS = 8000;

let config: WorkerConfig;
let log: Logger;
try {
  const parsed = parseWorkerArgs(process.argv.slice(2), { allowHelp: true });
  if (parsed === 'help') {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  config = parsed;
  loraModules(config); // a bad --lora is one line and exit 2
  const settings = resolveLogSettings({ level: config.log_level, format: config.log_format });
  // The stages read it from their environment.
  exportLogSettings(settings);
  log = createLogger({ component: 'kv-worker', ...settings });
  // Before any stage starts: a busy port is one line and exit 2, not a crash after the model loads.
  await assertPortFree(config.host, config.port);
} catch (err) {
  exitOnConfigError('kv-worker', err);
}

const endpoints: Endpoints = {
  scheduler: ipcEndpoint('scheduler'),
  detokenizer: ipcEndpoint('detokenizer'),
  api: ipcEndpoint('api'),
};
const children = new Map<Stage, ChildProcess>();
let stopping = false;
let server: ServerType | null = null;
let client: PipelineClient | null = null;
const drain = new HttpDrain('the worker');
/** The publisher's ipc:// socket files: the scheduler removes them, unless it was killed. */
const eventFiles = config.kvEvents ? [config.kvEvents.endpoint, config.kvEvents.replay_endpoint ?? ''].filter((e) => e.startsWith('ipc://')) : [];

// Last resort, also on a crash of this process: children are told to stop, socket files go.
process.on('exit', () => {
  for (const c of children.values()) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
  for (const ep of [...Object.values(endpoints), ...eventFiles]) removeIpcFile(ep);
});

function startStage(stage: Stage): Promise<void> {
  const spec: ProcSpec = { config, endpoints };
  const child = fork(fileURLToPath(new URL(STAGES[stage], import.meta.url)), [], {
    execArgv: ['--import', import.meta.resolve('tsx')],
    // ORT_DISABLE_TELEMETRY: onnxruntime-node otherwise writes mat-debug-<pid>.log into the temp dir
    // and files under ~/.cache/Microsoft (its telemetry SDK); it must be set before the library loads.
    env: { ...process.env, [SPEC_ENV]: JSON.stringify(spec), ORT_DISABLE_TELEMETRY: '1' },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  children.set(stage, child);
  return new Promise((resolve, reject) => {
    child.on('message', (m: ChildMsg) => {
      if (m?.type === 'ready') resolve();
    });
    child.on('exit', (code, signal) => {
      const why = `the ${stage} process exited ${signal ? `on ${signal}` : `with code ${code}`}`;
      reject(new Error(why));
      if (!stopping) void shutdown(1, `${why}; stopping the worker`);
    });
  });
}

async function shutdown(code: number, why?: string, drainMs = 0): Promise<never> {
  if (!stopping) {
    stopping = true;
    if (why) log.warn(why);
    if (server && drainMs > 0) {
      // Bounded: the drain deadline plus the children's stop timeout.
      setTimeout(() => process.exit(code || 1), drainMs + STOP_TIMEOUT_MS + 2000).unref();
      const r = await drain.drain(drainMs);
      if (r.finished + r.ended > 0) log.info(`drained: ${r.finished} request(s) finished, ${r.ended} ended at the ${drainMs} ms drain timeout`);
    }
    if (server) await closeServer(server, drainMs > 0 ? 2000 : 0);
    const exits = [...children.values()].map((c) => stopChild(c));
    await Promise.all(exits);
    client?.close();
    for (const ep of [...Object.values(endpoints), ...eventFiles]) removeIpcFile(ep);
  }
  process.exit(code);
}

function stopChild(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const kill = setTimeout(() => c.kill('SIGKILL'), STOP_TIMEOUT_MS);
    c.once('exit', () => {
      clearTimeout(kill);
      resolve();
    });
    if (c.connected) c.send({ type: 'shutdown' } satisfies ParentMsg);
    else c.kill('SIGTERM');
  });
}

process.on('SIGINT', () => void shutdown(0, undefined, config.drainTimeoutMs));
process.on('SIGTERM', () => void shutdown(0, undefined, config.drainTimeoutMs));
watchParent((why) => void shutdown(0, `${why}; stopping`, config.drainTimeoutMs));

try {
  // The encoder thread loads its own tokenizer (seconds of CPU for a large one) before the worker listens,
  // as vLLM loads its tokenizer before serving: a worker that says it is up is not still loading.
  const encoder = new ThreadTokenizer(tokenizerFilesOf(config));
  const [tokenizer] = await Promise.all([
    loadWorkerTokenizer(config),
    startStage('scheduler'),
    startStage('detokenizer'),
    encoder.warm().catch((e) => log.error(`tokenizer thread failed to start: ${(e as Error).message}`)),
  ]);
  client = await PipelineClient.open(endpoints.scheduler, endpoints.api);
  const c = client;
  const metrics = new WorkerMetrics(async () => (await c.ctl('load')).load);
  const app = createApp({ client, tokenizer, config, model: modelName(config), adapters: loraModules(config), metrics, stopping: () => stopping }, { accessLog: log.child('kv-worker access'), encoder });
  const port = await new Promise<number>((resolve, reject) => {
    server = serve({ fetch: drain.wrap(app.fetch), hostname: config.host, port: config.port }, (info) => resolve(info.port));
    server.once('error', reject);
  });
  log.info(`listening on http://${config.host}:${port} (engine ${config.engine}, ${config.numBlocks} blocks of ${config.blockSize} tokens, pid ${process.pid})`);
} catch (err) {
  if (!stopping) await shutdown(1, `failed to start: ${(err as Error).message}`);
}
