import { createServer } from 'node:net';
import { ConfigError } from '../config/error.js';

/**
 * Throws a one-line ConfigError naming the fix when host:port cannot be listened on, so a busy
 * port is reported before anything else starts. Port 0 (any free port) is always fine.
 */
export function assertPortFree(host: string, port: number, fix = 'use --port'): Promise<void> {
  if (port === 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE') reject(new ConfigError(`port ${port} is in use on ${host}; ${fix}`));
      else if (err.code === 'EACCES') reject(new ConfigError(`no permission to listen on port ${port} of ${host}; ${fix}`));
      else if (err.code === 'EADDRNOTAVAIL' || err.code === 'ENOTFOUND') reject(new ConfigError(`cannot listen on ${host}: not an address of this machine; use --host`));
      else reject(new ConfigError(`cannot listen on ${host}:${port}: ${err.message}`));
    });
    srv.listen(port, host, () => srv.close(() => resolve()));
  });
}
