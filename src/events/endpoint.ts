/** Attaching ZeroMQ sockets to endpoints by the engines' bind/connect rule. */
import { rmSync } from 'node:fs';
import type * as zmq from 'zeromq';
import { assertEndpoint, isBindEndpoint } from './config.js';
import { retryEintr } from './eintr.js';

/**
 * How long a bind waits for an address in use to be freed: a socket closed a moment ago (an engine
 * restarting on its own endpoints) releases its port on ZeroMQ's I/O thread, after close returns.
 */
const BIND_RETRY_MS = 3000;

/** Binds or connects `sock`; returns the actual address (a bound port 0 resolved). */
export async function attach(sock: zmq.Socket, endpoint: string, bind = isBindEndpoint(endpoint)): Promise<string> {
  assertEndpoint(endpoint);
  if (!bind) {
    retryEintr(() => sock.connect(endpoint));
    return endpoint;
  }
  const deadline = Date.now() + BIND_RETRY_MS;
  try {
    for (;;) {
      try {
        await sock.bind(endpoint);
        break;
      } catch (err) {
        if ((err as { code?: string }).code !== 'EADDRINUSE' || Date.now() >= deadline) throw err;
        await new Promise((r) => setTimeout(r, 25));
      }
    }
  } catch (err) {
    throw Object.assign(new Error(`cannot bind ${endpoint}: ${(err as Error).message}`, { cause: err }), { code: (err as { code?: string }).code });
  }
  return sock.lastEndpoint ?? endpoint;
}

/** The filesystem path behind an ipc:// endpoint, or null. */
export function ipcPath(endpoint: string): string | null {
  if (!endpoint.startsWith('ipc://')) return null;
  const p = endpoint.slice('ipc://'.length);
  return p && p !== '*' ? p : null;
}

export function removeIpcFile(endpoint: string): void {
  const p = ipcPath(endpoint);
  if (p) rmSync(p, { force: true });
}

export const yieldToLoop = (): Promise<void> => new Promise((r) => setImmediate(r));
