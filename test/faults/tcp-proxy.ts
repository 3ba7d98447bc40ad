/**
 * TCP-level faults on loopback: a proxy whose link can be cut (every connection reset,
 * new ones refused until restored), and a server that accepts and never answers.
 */
import { createServer, Socket, type Server } from 'node:net';

export class TcpProxy {
  private readonly sockets = new Set<Socket>();
  private down = false;
  cuts = 0;

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async create(targetPort: number): Promise<TcpProxy> {
    let self: TcpProxy | null = null;
    const server = createServer((client) => {
      if (!self || self.down) return void client.destroy();
      const upstream = new Socket();
      upstream.connect(targetPort, '127.0.0.1');
      for (const s of [client, upstream]) {
        self.sockets.add(s);
        s.on('close', () => self!.sockets.delete(s));
        s.on('error', () => {});
      }
      client.pipe(upstream).pipe(client);
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    self = new TcpProxy(server, (server.address() as { port: number }).port);
    return self;
  }

  get endpoint(): string {
    return `tcp://127.0.0.1:${this.port}`;
  }

  /** Resets every connection and refuses new ones. */
  cut(): void {
    this.down = true;
    this.cuts++;
    for (const s of this.sockets) s.resetAndDestroy();
    this.sockets.clear();
  }

  restore(): void {
    this.down = false;
  }

  close(): Promise<void> {
    this.cut();
    return new Promise((r) => this.server.close(() => r()));
  }
}

/**
 * An HTTP "worker" that accepts connections and never answers a byte; with `healthy`,
 * it answers GET /health (so it stays in rotation) and nothing else: a hung engine.
 */
export async function hungServer(opts: { healthy?: boolean } = {}): Promise<{ url: string; port: number; accepted: () => number; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  let accepted = 0;
  const server = createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
    s.once('data', (d) => {
      if (opts.healthy && d.toString('latin1').startsWith('GET /health')) {
        s.end('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\nconnection: close\r\n\r\n{"status":"ok"}');
      } else accepted++;
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    accepted: () => accepted,
    close: () =>
      new Promise((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}
