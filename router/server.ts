import { serve, type ServerType } from '@hono/node-server';
import type { AddressInfo } from 'node:net';
import type { RouterConfig } from './config.js';
import { createRouter, type RouterService } from './app.js';
import type { Logger } from '../src/log/logger.js';
import { closeServer, HttpDrain, type DrainResult } from '../src/http/drain.js';

export interface RunningRouter {
  service: RouterService;
  url: string;
  port: number;
  /**
   * Graceful stop: new requests get 503 at once, requests in flight get `drainTimeoutMs` (default:
   * the config's drain_timeout_ms) to finish, streams still open then end with an SSE error event;
   * then the server and the service close.
   */
  close(drainTimeoutMs?: number): Promise<void>;
  /** What the drain of the last close() did, once it is done. */
  drained(): DrainResult | null;
}

/** Starts the router: workers, tokenizer, HTTP server. Used by main.ts, scripts/start.ts and tests. */
export async function startRouter(config: RouterConfig, log: (msg: string) => void = () => {}, opts: { accessLog?: Logger } = {}): Promise<RunningRouter> {
  const service = createRouter(config, log, opts);
  await service.start();
  const drain = new HttpDrain('the router');
  let server!: ServerType;
  await new Promise<void>((resolve, reject) => {
    server = serve({ fetch: drain.wrap(service.app.fetch), hostname: config.host, port: config.port }, () => resolve());
    server.once('error', reject);
  });
  const port = (server.address() as AddressInfo).port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  let closing: Promise<void> | null = null;
  let drained: DrainResult | null = null;
  return {
    service,
    url: `http://${host}:${port}`,
    port,
    drained: () => drained,
    close(drainTimeoutMs = config.drain_timeout_ms) {
      closing ??= (async () => {
        service.dashboard.close();
        const result = await drain.drain(drainTimeoutMs);
        if (result.finished + result.ended > 0) log(`drained: ${result.finished} request(s) finished, ${result.ended} ended at the ${drainTimeoutMs} ms drain timeout`);
        await closeServer(server);
        await service.close();
        drained = result;
      })();
      return closing;
    },
  };
}
