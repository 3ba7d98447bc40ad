import http from 'node:http';
import https from 'node:https';

/** Keep-alive pools to the workers (node:http is markedly cheaper per request than fetch in Node 20). */
const agents = {
  http: new http.Agent({ keepAlive: true, keepAliveMsecs: 1000, maxSockets: Infinity, scheduling: 'lifo' }),
  https: new https.Agent({ keepAlive: true, keepAliveMsecs: 1000, maxSockets: Infinity, scheduling: 'lifo' }),
};

export interface UpstreamResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** Body chunks as they arrive; throws if the connection fails mid-body. */
  chunks: AsyncIterator<Buffer>;
  /** Drops the connection (client went away). */
  destroy(): void;
}

/**
 * POSTs `body` to `url`; resolves when the response headers arrive. A pooled keep-alive socket
 * that the worker closed just as it was reused (ECONNRESET before any response) is retried once
 * on a fresh socket: that is the pool's race, not a worker failure.
 */
export async function postUpstream(url: string, body: Uint8Array, headers: Record<string, string>, signal: AbortSignal): Promise<UpstreamResponse> {
  try {
    return await post(url, body, headers, signal);
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { reusedSocket?: boolean };
    if (!err.reusedSocket || err.code !== 'ECONNRESET' || signal.aborted) throw e;
    return post(url, body, headers, signal);
  }
}

interface Target {
  https: boolean;
  options: http.RequestOptions;
}
/** Parsed upstream URLs (a handful: workers × endpoints), so a request parses none. */
const targets = new Map<string, Target>();

function targetOf(url: string): Target {
  let t = targets.get(url);
  if (!t) {
    const u = new URL(url);
    const https = u.protocol === 'https:';
    t = {
      https,
      options: {
        protocol: u.protocol,
        hostname: u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname,
        port: u.port || (https ? 443 : 80),
        path: u.pathname + u.search,
        ...(u.username || u.password ? { auth: `${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}` } : {}),
      },
    };
    if (targets.size >= 4096) targets.clear();
    targets.set(url, t);
  }
  return t;
}

function post(url: string, body: Uint8Array, headers: Record<string, string>, signal: AbortSignal): Promise<UpstreamResponse> {
  return new Promise((resolve, reject) => {
    const t = targetOf(url);
    const mod = t.https ? https : http;
    const req = mod.request(
      {
        ...t.options,
        method: 'POST',
        agent: t.https ? agents.https : agents.http,
        headers: { ...headers, 'content-length': String(body.byteLength) },
        signal,
      },
      (res) => {
        resolve({
          status: res.statusCode ?? 502,
          headers: res.headers,
          chunks: res[Symbol.asyncIterator]() as AsyncIterator<Buffer>,
          destroy: () => {
            res.destroy();
            req.destroy();
          },
        });
      },
    );
    let sent = false;
    req.on('finish', () => (sent = true));
    req.on('error', (e: NodeJS.ErrnoException & { reusedSocket?: boolean; sent?: boolean }) => {
      e.reusedSocket = req.reusedSocket;
      e.sent = sent;
      reject(e);
    });
    req.end(body);
  });
}

export function closeUpstreamPools(): void {
  agents.http.destroy();
  agents.https.destroy();
}
