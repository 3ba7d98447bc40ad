/**
 * A small local HTTP server that speaks the part of the Kubernetes API the EndpointSlice
 * discovery uses: GET /apis/discovery.k8s.io/v1/namespaces/NS/endpointslices?labelSelector=…
 * (a list) and the same with watch=true|1 (a stream of JSON lines: ADDED, MODIFIED, DELETED,
 * BOOKMARK, ERROR). No cluster runs in these tests; the payloads are recorded-style objects
 * (fixtures/endpointslices.json).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface SeenRequest {
  watch: boolean;
  namespace: string;
  labelSelector: string | null;
  resourceVersion: string | null;
}

export class FakeK8sApi {
  url = '';
  /** What the next list answers. */
  items: unknown[] = [];
  listResourceVersion = '1';
  /** Status the next lists answer with instead (e.g. 403), while set. */
  listStatus: number | null = null;
  readonly requests: SeenRequest[] = [];
  private watches: ServerResponse[] = [];
  private waiters: (() => void)[] = [];
  private server!: Server;

  static async start(): Promise<FakeK8sApi> {
    const f = new FakeK8sApi();
    f.server = createServer((req, res) => f.handle(req, res));
    await new Promise<void>((r) => f.server.listen(0, '127.0.0.1', () => r()));
    f.url = `http://127.0.0.1:${(f.server.address() as AddressInfo).port}`;
    return f;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const u = new URL(req.url ?? '/', 'http://x');
    const m = /^\/apis\/discovery\.k8s\.io\/v1\/namespaces\/([^/]+)\/endpointslices$/.exec(u.pathname);
    if (req.method !== 'GET' || !m) {
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Failure', code: 404 }));
      return;
    }
    const watch = u.searchParams.get('watch') === 'true' || u.searchParams.get('watch') === '1';
    this.requests.push({ watch, namespace: m[1]!, labelSelector: u.searchParams.get('labelSelector'), resourceVersion: u.searchParams.get('resourceVersion') });
    for (const w of this.waiters.splice(0)) w();
    if (!watch) {
      if (this.listStatus !== null) {
        res.writeHead(this.listStatus, { 'content-type': 'application/json' }).end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'Forbidden', code: this.listStatus, message: 'endpointslices.discovery.k8s.io is forbidden' }));
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ kind: 'EndpointSliceList', apiVersion: 'discovery.k8s.io/v1', metadata: { resourceVersion: this.listResourceVersion }, items: this.items }));
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    this.watches.push(res);
    res.on('close', () => (this.watches = this.watches.filter((w) => w !== res)));
  }

  /** Sends one watch event on every open watch. */
  send(type: string, object: unknown): void {
    for (const w of this.watches) w.write(JSON.stringify({ type, object }) + '\n');
  }

  /** Ends every open watch (as the API server does at its timeout). */
  endWatches(): void {
    for (const w of this.watches.splice(0)) w.end();
  }

  openWatches(): number {
    return this.watches.length;
  }

  /** Resolves once `n` requests have been seen. */
  async requestCount(n: number, timeoutMs = 5000): Promise<void> {
    const t0 = Date.now();
    while (this.requests.length < n) {
      if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for API request ${n} (saw ${JSON.stringify(this.requests)})`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 100);
      });
    }
  }

  close(): Promise<void> {
    for (const w of this.watches.splice(0)) w.destroy();
    return new Promise((r) => {
      this.server.closeAllConnections();
      this.server.close(() => r());
    });
  }
}
