/** Free ports, temporary ipc:// endpoints, polling with a deadline. */
import { rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

import { freePort } from '../../src/net/free-port.js';
export { freePort };

/** Two consecutive free ports (for data-parallel offsets). */
export async function freePortRange(n: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = await freePort();
    if (base + n > 65535) continue;
    const ok = await Promise.all(Array.from({ length: n - 1 }, (_, i) => portIsFree(base + 1 + i)));
    if (ok.every(Boolean)) return base;
  }
  throw new Error(`no ${n} consecutive free ports found`);
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

const created = new Set<string>();

/** A fresh ipc:// endpoint under the temp dir; removeIpcEndpoints() deletes what is left. */
export function tmpIpc(name = 'kv'): string {
  const path = join(tmpdir(), `kvr-${name}-${process.pid}-${randomBytes(4).toString('hex')}.sock`);
  created.add(path);
  return `ipc://${path}`;
}

export function removeIpcEndpoints(): void {
  for (const p of created) rmSync(p, { force: true });
  created.clear();
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` until true; throws with `what` after timeoutMs. */
export async function waitFor(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(5);
  }
}
