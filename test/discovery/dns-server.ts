/**
 * A tiny authoritative DNS server over UDP on 127.0.0.1, for the DNS discovery tests: answers
 * A, AAAA and SRV questions from a table the test edits (no records for a known name: NOERROR
 * with no answers; unknown name: NXDOMAIN; `servfail`: SERVFAIL to everything).
 */
import { createSocket, type Socket } from 'node:dgram';
import type { AddressInfo } from 'node:net';

export interface Zone {
  A?: string[];
  AAAA?: string[];
  SRV?: { port: number; target: string }[];
}

const TYPES: Record<number, keyof Zone> = { 1: 'A', 28: 'AAAA', 33: 'SRV' };

function encodeName(name: string): Buffer {
  const parts = name.replace(/\.$/, '').split('.').filter(Boolean);
  return Buffer.concat([...parts.map((p) => Buffer.concat([Buffer.from([p.length]), Buffer.from(p, 'ascii')])), Buffer.from([0])]);
}

function ipv6Bytes(ip: string): Buffer {
  const [head, tail] = ip.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  const b = Buffer.alloc(16);
  groups.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), i * 2));
  return b;
}

export class TinyDns {
  readonly zones = new Map<string, Zone>();
  servfail = false;
  queries = 0;
  private constructor(private readonly sock: Socket, readonly port: number) {}

  static async start(): Promise<TinyDns> {
    const sock = createSocket('udp4');
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
    const d = new TinyDns(sock, (sock.address() as AddressInfo).port);
    sock.on('message', (msg, rinfo) => {
      const res = d.answer(msg);
      if (res) sock.send(res, rinfo.port, rinfo.address);
    });
    return d;
  }

  get server(): string {
    return `127.0.0.1:${this.port}`;
  }

  private answer(q: Buffer): Buffer | null {
    if (q.length < 12) return null;
    this.queries++;
    let off = 12;
    const labels: string[] = [];
    while (off < q.length && q[off] !== 0) {
      const n = q[off]!;
      labels.push(q.subarray(off + 1, off + 1 + n).toString('ascii'));
      off += n + 1;
    }
    off += 1;
    const qtype = q.readUInt16BE(off);
    const question = q.subarray(12, off + 4);
    const name = labels.join('.').toLowerCase();
    const zone = this.zones.get(name);
    const rcode = this.servfail ? 2 : zone ? 0 : 3;
    const kind = TYPES[qtype];
    const answers: Buffer[] = [];
    if (rcode === 0 && zone && kind) {
      for (const rec of (zone[kind] ?? []) as (string | { port: number; target: string })[]) {
        let rdata: Buffer;
        if (kind === 'A') rdata = Buffer.from((rec as string).split('.').map(Number));
        else if (kind === 'AAAA') rdata = ipv6Bytes(rec as string);
        else {
          const s = rec as { port: number; target: string };
          const fixed = Buffer.alloc(6);
          fixed.writeUInt16BE(0, 0);
          fixed.writeUInt16BE(10, 2);
          fixed.writeUInt16BE(s.port, 4);
          rdata = Buffer.concat([fixed, encodeName(s.target)]);
        }
        const head = Buffer.alloc(12);
        head.writeUInt16BE(0xc00c, 0); // the question's name
        head.writeUInt16BE(qtype, 2);
        head.writeUInt16BE(1, 4);
        head.writeUInt32BE(1, 6); // ttl 1 s
        head.writeUInt16BE(rdata.length, 10);
        answers.push(head, rdata);
      }
    }
    const header = Buffer.alloc(12);
    header.writeUInt16BE(q.readUInt16BE(0), 0);
    header.writeUInt16BE(0x8400 | (q.readUInt16BE(2) & 0x0100) | rcode, 2); // QR, AA, RD echoed
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(answers.length / 2, 6);
    return Buffer.concat([header, question, ...answers]);
  }

  close(): Promise<void> {
    return new Promise((r) => this.sock.close(() => r()));
  }
}
