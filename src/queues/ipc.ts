import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A unique ipc:// endpoint under the temp dir: `kvq-<pid>-<nonce>-<name>.sock`. */
export function ipcEndpoint(name: string): string {
  const nonce = randomBytes(6).toString('hex');
  return `ipc://${join(tmpdir(), `kvq-${process.pid}-${nonce}-${name}.sock`)}`;
}

/** The file behind an ipc:// endpoint (null for any other transport). */
export function ipcPath(endpoint: string): string | null {
  return endpoint.startsWith('ipc://') ? endpoint.slice('ipc://'.length) : null;
}

/** Removes the socket file of an ipc:// endpoint if it is still there (a crashed binder leaves it). */
export function removeIpcFile(endpoint: string): void {
  const p = ipcPath(endpoint);
  if (p !== null) rmSync(p, { force: true });
}
