/** What the API process hands its two child processes, and their lifecycle plumbing. */
import { removeIpcFile } from '../src/queues/index.js';
import type { WorkerConfig } from './config.js';
import { loggerFromEnv } from '../src/log/logger.js';

export interface Endpoints {
  scheduler: string;
  detokenizer: string;
  api: string;
}

export interface ProcSpec {
  config: WorkerConfig;
  endpoints: Endpoints;
}

export const SPEC_ENV = 'KV_WORKER_SPEC';

export type ParentMsg = { type: 'shutdown' };
export type ChildMsg = { type: 'ready' };

export function readSpec(): ProcSpec {
  const raw = process.env[SPEC_ENV];
  if (!raw || !process.send) throw new Error(`this is a kv-worker stage: start it through kv-worker (${SPEC_ENV} and an IPC channel are missing)`);
  return JSON.parse(raw) as ProcSpec;
}

export function sendReady(): void {
  process.send!({ type: 'ready' } satisfies ChildMsg);
}

/**
 * A child stops when the API process says so (or on SIGTERM): it runs `cleanup` and exits 0.
 * SIGINT is left to the API process, which then stops the children in order. If the API process
 * goes away (the IPC channel closes), the child cleans up and exits 1: never a half-alive worker.
 */
export function onShutdown(name: string, cleanup: () => Promise<void>, endpoints?: Endpoints): void {
  let stopping = false;
  const log = loggerFromEnv(`kv-worker ${name}`);
  const stop = (code: number, why?: string) => {
    if (stopping) return;
    stopping = true;
    if (why) log.warn(why);
    const force = setTimeout(() => process.exit(code), 5000);
    force.unref();
    cleanup()
      .catch((err) => log.error(`cleanup failed: ${(err as Error).stack ?? String(err)}`))
      .finally(() => process.exit(code));
  };
  process.on('message', (m: ParentMsg) => {
    if (m?.type === 'shutdown') stop(0);
  });
  // A SIGTERM to the whole process group reaches the API process too, which drains its requests
  // and then stops us in order: while it is there, we wait for it (the disconnect below is the
  // backstop); alone, we stop ourselves.
  process.on('SIGTERM', () => {
    if (!process.connected) stop(0);
  });
  process.on('SIGINT', () => {});
  process.on('disconnect', () => {
    // The API process may have been killed before it could remove its socket file.
    if (endpoints) for (const ep of Object.values(endpoints)) removeIpcFile(ep);
    stop(1, 'the API process went away; exiting');
  });
}

/** A stage that cannot start says why in one line (no stack) and exits 1; the API process then stops the worker. */
export async function startOrDie<T>(name: string, what: Promise<T>): Promise<T> {
  try {
    return await what;
  } catch (err) {
    loggerFromEnv(`kv-worker ${name}`).error(`failed to start: ${(err as Error).message}`);
    process.exit(1);
  }
}
