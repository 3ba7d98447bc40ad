/**
 * Optional ZeroMQ CURVE for the event (PUB/SUB) and replay (ROUTER/DEALER) sockets,
 * so a stream can cross an untrusted network: encrypted, and only peers that know the
 * publisher's public key can talk to it. With `allowedClients`, a ZAP handler in this
 * process also rejects every client key not listed. Keys are Z85 strings (40 chars),
 * as zmq.curveKeyPair() makes them.
 */
import * as zmq from 'zeromq';
import { z } from 'zod';

export interface CurveKeyPair {
  publicKey: string;
  secretKey: string;
}

/** The publisher side: its key pair, and optionally the client public keys it accepts. */
export interface CurveServerOptions {
  publicKey: string;
  secretKey: string;
  /** Client public keys allowed to connect; null/absent: any client that knows our public key. */
  allowedClients?: string[] | null;
}

/** The subscriber side: the publisher's public key; our key pair (an ephemeral one when absent). */
export interface CurveClientOptions {
  serverKey: string;
  publicKey?: string;
  secretKey?: string;
}

const z85Key = z.string().length(40, 'a CURVE key is 40 Z85 characters');

/** Config form (snake_case, as in the kv-events config JSON): `{"curve": {...}}`. */
export const CurveConfigSchema = z
  .object({
    server_public_key: z85Key.describe("The publisher's CURVE public key (40 Z85 characters)"),
    server_secret_key: z85Key.optional().describe("The publisher's secret key (publisher side only)."),
    client_public_key: z85Key.optional().describe("The subscriber's public key; absent: an ephemeral key pair."),
    client_secret_key: z85Key.optional().describe("The subscriber's secret key (with client_public_key)."),
    allowed_clients: z.array(z85Key).nullable().optional().describe("Publisher side: the client public keys allowed to connect; absent or null: any client with the server key."),
  })
  .strict();
export type CurveConfig = z.infer<typeof CurveConfigSchema>;

export function curveKeyPair(): CurveKeyPair {
  return zmq.curveKeyPair();
}

/** Publisher options from a config block (needs the server secret key). */
export function curveServerFromConfig(c: CurveConfig): CurveServerOptions {
  if (!c.server_secret_key) throw new Error('curve: the publisher needs server_secret_key');
  return { publicKey: c.server_public_key, secretKey: c.server_secret_key, allowedClients: c.allowed_clients ?? null };
}

/** Subscriber options from a config block. */
export function curveClientFromConfig(c: CurveConfig): CurveClientOptions {
  return { serverKey: c.server_public_key, ...(c.client_public_key && c.client_secret_key ? { publicKey: c.client_public_key, secretKey: c.client_secret_key } : {}) };
}

/** Makes `sock` a CURVE server; call before bind. With an allow-list, waits for the ZAP handler. */
export async function applyCurveServer(sock: zmq.Socket, o: CurveServerOptions): Promise<void> {
  sock.curveServer = true;
  sock.curvePublicKey = o.publicKey;
  sock.curveSecretKey = o.secretKey;
  if (o.allowedClients) sock.zapDomain = await zap.register(o.allowedClients);
}

export function applyCurveClient(sock: zmq.Socket, o: CurveClientOptions): void {
  const own = o.publicKey && o.secretKey ? { publicKey: o.publicKey, secretKey: o.secretKey } : curveKeyPair();
  sock.curveServerKey = o.serverKey;
  sock.curvePublicKey = own.publicKey;
  sock.curveSecretKey = own.secretKey;
}

/** Releases what applyCurveServer registered for `sock` (its ZAP domain). */
export function releaseCurveServer(sock: zmq.Socket): void {
  const d = sock.closed ? null : sock.zapDomain;
  if (d) zap.unregister(d);
}

// ------------------------------------------------------------------ ZAP (RFC 27)

class ZapHandler {
  private router: zmq.Router | null = null;
  private ready: Promise<void> | null = null;
  private readonly domains = new Map<string, Set<string>>();
  private n = 0;
  rejected = 0;

  async register(allowed: string[]): Promise<string> {
    const domain = `kv-events-${process.pid}-${++this.n}`;
    this.domains.set(domain, new Set(allowed));
    if (!this.router) {
      const r = new zmq.Router({ linger: 0 });
      this.router = r;
      this.ready = r.bind('inproc://zeromq.zap.01');
      void this.ready.then(() => this.serve(r));
    }
    await this.ready;
    return domain;
  }

  unregister(domain: string): void {
    this.domains.delete(domain);
    if (this.domains.size === 0 && this.router) {
      this.router.close();
      this.router = null;
      this.ready = null;
    }
  }

  private async serve(r: zmq.Router): Promise<void> {
    while (!r.closed) {
      let m: Buffer[];
      try {
        m = await r.receive();
      } catch {
        continue;
      }
      // [id, "", version, request id, domain, address, identity, mechanism, credentials...]
      const [id, , version, reqId, domain, , , mechanism, key] = m;
      const allowed = this.domains.get(domain?.toString() ?? '');
      const ok = allowed !== undefined && mechanism?.toString() === 'CURVE' && key?.length === 32 && allowed.has(z85(key));
      if (!ok) this.rejected++;
      const reply = [id!, Buffer.alloc(0), version ?? Buffer.from('1.0'), reqId ?? Buffer.alloc(0), ok ? '200' : '400', ok ? 'OK' : 'client key not allowed', '', Buffer.alloc(0)];
      try {
        await r.send(reply);
      } catch {
        /* closed */
      }
    }
  }
}

const zap = new ZapHandler();

/** How many client handshakes the ZAP handler refused (allow-lists only). */
export function curveRejections(): number {
  return zap.rejected;
}

const Z85 = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#';

/** Z85 encoding of a 32-byte key (length a multiple of 4). */
export function z85(bytes: Uint8Array): string {
  let out = '';
  for (let i = 0; i < bytes.length; i += 4) {
    let v = ((bytes[i]! << 24) >>> 0) + (bytes[i + 1]! << 16) + (bytes[i + 2]! << 8) + bytes[i + 3]!;
    const chunk: string[] = [];
    for (let j = 0; j < 5; j++) {
      chunk.unshift(Z85[v % 85]!);
      v = Math.floor(v / 85);
    }
    out += chunk.join('');
  }
  return out;
}
