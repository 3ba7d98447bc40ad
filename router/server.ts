import { serve, type ServerType } from '@hono/node-server';
import type { AddressInfo } from 'node:net';
import type { RouterConfig } from './config.js';
import { createRouter, type RouterService } from './app.js';

export interface RunningRouter {
  service: RouterService;
  url: string;
  port: number;
  close(): Promise<void>;
}

/** Starts the router: workers, tokenizer, HTTP server. Used by main.ts, scripts/start.ts and tests. */
export async function startRouter(config: RouterConfig, log: (msg: string) => void = () => {}): Promise<RunningRouter> {
  const service = createRouter(config, log);
  await service.start();
  let server!: ServerType;
  await new Promise<void>((resolve, reject) => {
    server = serve({ fetch: service.app.fetch, hostname: config.host, port: config.port }, () => resolve());
    server.once('error', reject);
  });
  const port = (server.address() as AddressInfo).port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  let closing: Promise<void> | null = null;
  return {
    service,
    url: `http://${host}:${port}`,
    port,
    close() {
      closing ??= (async () => {
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          // Streams in flight end with the connections.
          (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
        });
        await service.close();
      })();
      return closing;
    },
  };
}
