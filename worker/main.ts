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
import { modelName, parseWorkerArgs, WorkerConfigError, type WorkerConfig } from './config.js';
import { SPEC_ENV, type ChildMsg, type Endpoints, type ParentMsg, type ProcSpec } from './proc.js';
import { loadWorkerTokenizer } from './tokenizer.js';

const STAGES = { scheduler: './scheduler/main.ts', detokenizer: './detokenizer/main.ts' } as const;
type Stage = keyof typeof STAGES;
const STOP_TIMEOUT_MS = 8000;

let config: WorkerConfig;
try {
  config = parseWorkerArgs(process.argv.slice(2));
} catch (err) {
  if (!(err instanceof WorkerConfigError)) throw err;
  console.error(`kv-worker: ${err.message}`);
  process.exit(2);
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

// Last resort, also on a crash of this process: children are told to stop, socket files go.
process.on('exit', () => {
  for (const c of children.values()) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
  for (const ep of Object.values(endpoints)) removeIpcFile(ep);
});

function startStage(stage: Stage): Promise<void> {
  const spec: ProcSpec = { config, endpoints };
  const child = fork(fileURLToPath(new URL(STAGES[stage], import.meta.url)), [], {
    execArgv: ['--import', import.meta.resolve('tsx')],
    env: { ...process.env, [SPEC_ENV]: JSON.stringify(spec) },
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

async function shutdown(code: number, why?: string): Promise<never> {
  if (!stopping) {
    stopping = true;
    if (why) console.error(`kv-worker: ${why}`);
    server?.close();
    (server as { closeAllConnections?: () => void } | null)?.closeAllConnections?.();
    const exits = [...children.values()].map((c) => stopChild(c));
    await Promise.all(exits);
    client?.close();
    for (const ep of Object.values(endpoints)) removeIpcFile(ep);
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

process.on('SIGINT', () => void shutdown(0));
process.on('SIGTERM', () => void shutdown(0));

try {
  const [tokenizer] = await Promise.all([loadWorkerTokenizer(config), startStage('scheduler'), startStage('detokenizer')]);
  client = await PipelineClient.open(endpoints.scheduler, endpoints.api);
  const c = client;
  const metrics = new WorkerMetrics(async () => (await c.ctl('load')).load);
  const app = createApp({ client, tokenizer, config, model: modelName(config), metrics, stopping: () => stopping });
  const port = await new Promise<number>((resolve, reject) => {
    server = serve({ fetch: app.fetch, hostname: config.host, port: config.port }, (info) => resolve(info.port));
    server.once('error', reject);
  });
  console.log(`kv-worker: listening on http://${config.host}:${port} (engine ${config.engine}, ${config.numBlocks} blocks of ${config.blockSize} tokens, pid ${process.pid})`);
} catch (err) {
  if (!stopping) await shutdown(1, `failed to start: ${(err as Error).message}`);
}
