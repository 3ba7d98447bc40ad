/**
 * A minimal MessagePack writer with the exact encodings msgspec produces:
 * every int in its smallest form (uint formats for non-negative values),
 * floats always as float64, bytes as bin, no extensions.
 *
 * msgpackr would write a whole-number float (a timestamp such as 1790000000.0)
 * as an int, and needs BigInt care for hashes above 2^32; owning these few
 * lines keeps the bytes exactly what Python peers expect.
 */
export class MsgpackWriter {
  private buf: Buffer;
  private pos = 0;

  constructor(initialSize = 256) {
    this.buf = Buffer.allocUnsafe(initialSize);
  }

  bytes(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.pos));
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  nil(): void {
    this.ensure(1);
    this.buf[this.pos++] = 0xc0;
  }

  bool(v: boolean): void {
    this.ensure(1);
    this.buf[this.pos++] = v ? 0xc3 : 0xc2;
  }

  float64(v: number): void {
    this.ensure(9);
    this.buf[this.pos] = 0xcb;
    this.buf.writeDoubleBE(v, this.pos + 1);
    this.pos += 9;
  }

  /** A safe integer (JS number); throws on fractions and values past 2^53. */
  int(v: number): void {
    if (!Number.isSafeInteger(v)) throw new TypeError(`not a safe integer: ${v}`);
    if (v >= 0) {
      if (v < 0x80) { this.ensure(1); this.buf[this.pos++] = v; }
      else if (v < 0x100) { this.ensure(2); this.buf[this.pos++] = 0xcc; this.buf[this.pos++] = v; }
      else if (v < 0x10000) { this.ensure(3); this.buf[this.pos++] = 0xcd; this.buf.writeUInt16BE(v, this.pos); this.pos += 2; }
      else if (v < 0x100000000) { this.ensure(5); this.buf[this.pos++] = 0xce; this.buf.writeUInt32BE(v, this.pos); this.pos += 4; }
      else { this.ensure(9); this.buf[this.pos++] = 0xcf; this.buf.writeBigUInt64BE(BigInt(v), this.pos); this.pos += 8; }
    } else {
      if (v >= -32) { this.ensure(1); this.buf[this.pos++] = v & 0xff; }
      else if (v >= -0x80) { this.ensure(2); this.buf[this.pos++] = 0xd0; this.buf.writeInt8(v, this.pos); this.pos += 1; }
      else if (v >= -0x8000) { this.ensure(3); this.buf[this.pos++] = 0xd1; this.buf.writeInt16BE(v, this.pos); this.pos += 2; }
      else if (v >= -0x80000000) { this.ensure(5); this.buf[this.pos++] = 0xd2; this.buf.writeInt32BE(v, this.pos); this.pos += 4; }
      else { this.ensure(9); this.buf[this.pos++] = 0xd3; this.buf.writeBigInt64BE(BigInt(v), this.pos); this.pos += 8; }
    }
  }

  /** Any int from -2^63 to 2^64-1, in its smallest encoding. */
  bigint(v: bigint): void {
    if (v >= -0x80000000n && v < 0x100000000n) return this.int(Number(v));
    if (v > 0xffffffffffffffffn || v < -0x8000000000000000n) throw new RangeError(`int out of 64-bit range: ${v}`);
    this.ensure(9);
    if (v >= 0n) { this.buf[this.pos++] = 0xcf; this.buf.writeBigUInt64BE(v, this.pos); }
    else { this.buf[this.pos++] = 0xd3; this.buf.writeBigInt64BE(v, this.pos); }
    this.pos += 8;
  }

  str(s: string): void {
    const n = Buffer.byteLength(s, 'utf8');
    if (n < 32) { this.ensure(1 + n); this.buf[this.pos++] = 0xa0 | n; }
    else if (n < 0x100) { this.ensure(2 + n); this.buf[this.pos++] = 0xd9; this.buf[this.pos++] = n; }
    else if (n < 0x10000) { this.ensure(3 + n); this.buf[this.pos++] = 0xda; this.buf.writeUInt16BE(n, this.pos); this.pos += 2; }
    else { this.ensure(5 + n); this.buf[this.pos++] = 0xdb; this.buf.writeUInt32BE(n, this.pos); this.pos += 4; }
    this.pos += this.buf.write(s, this.pos, 'utf8');
  }

  bin(b: Uint8Array): void {
    const n = b.byteLength;
    if (n < 0x100) { this.ensure(2 + n); this.buf[this.pos++] = 0xc4; this.buf[this.pos++] = n; }
    else if (n < 0x10000) { this.ensure(3 + n); this.buf[this.pos++] = 0xc5; this.buf.writeUInt16BE(n, this.pos); this.pos += 2; }
    else { this.ensure(5 + n); this.buf[this.pos++] = 0xc6; this.buf.writeUInt32BE(n, this.pos); this.pos += 4; }
    this.buf.set(b, this.pos);
    this.pos += n;
  }

  arrayHeader(n: number): void {
    if (n < 16) { this.ensure(1); this.buf[this.pos++] = 0x90 | n; }
    else if (n < 0x10000) { this.ensure(3); this.buf[this.pos++] = 0xdc; this.buf.writeUInt16BE(n, this.pos); this.pos += 2; }
    else { this.ensure(5); this.buf[this.pos++] = 0xdd; this.buf.writeUInt32BE(n, this.pos); this.pos += 4; }
  }

  mapHeader(n: number): void {
    if (n < 16) { this.ensure(1); this.buf[this.pos++] = 0x80 | n; }
    else if (n < 0x10000) { this.ensure(3); this.buf[this.pos++] = 0xde; this.buf.writeUInt16BE(n, this.pos); this.pos += 2; }
    else { this.ensure(5); this.buf[this.pos++] = 0xdf; this.buf.writeUInt32BE(n, this.pos); this.pos += 4; }
  }

  /** Writes a plain value: null, boolean, number (int or float64), bigint, string, bytes, array, plain object. */
  value(v: unknown): void {
    if (v === null || v === undefined) return this.nil();
    switch (typeof v) {
      case 'boolean': return this.bool(v);
      case 'number': return Number.isSafeInteger(v) ? this.int(v) : this.float64(v);
      case 'bigint': return this.bigint(v);
      case 'string': return this.str(v);
    }
    if (v instanceof Uint8Array) return this.bin(v);
    if (Array.isArray(v)) {
      this.arrayHeader(v.length);
      for (const x of v) this.value(x);
      return;
    }
    if (typeof v === 'object') {
      const entries = Object.entries(v as Record<string, unknown>);
      this.mapHeader(entries.length);
      for (const [k, x] of entries) { this.str(k); this.value(x); }
      return;
    }
    throw new TypeError(`cannot encode a ${typeof v} as MessagePack`);
  }
}
