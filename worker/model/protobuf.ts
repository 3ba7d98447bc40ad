/**
 * A minimal protobuf writer: enough for ONNX's ModelProto. Nested messages keep their
 * parts as a list of chunks, so large tensors are never copied while the model is assembled.
 */
export class PbWriter {
  readonly parts: Uint8Array[] = [];
  length = 0;
  private scratch: number[] = [];

  private push(bytes: Uint8Array): void {
    this.parts.push(bytes);
    this.length += bytes.length;
  }

  private flushScratch(): void {
    if (this.scratch.length) {
      this.push(Uint8Array.from(this.scratch));
      this.scratch = [];
    }
  }

  private varintRaw(v: bigint): void {
    // Negative int64 values are written as their 64-bit two's complement (10 bytes).
    let x = BigInt.asUintN(64, v);
    while (x >= 0x80n) {
      this.scratch.push(Number(x & 0x7fn) | 0x80);
      x >>= 7n;
    }
    this.scratch.push(Number(x));
  }

  private tag(field: number, wireType: number): void {
    this.varintRaw(BigInt((field << 3) | wireType));
  }

  int(field: number, v: number | bigint): this {
    this.tag(field, 0);
    this.varintRaw(BigInt(v));
    return this;
  }

  float(field: number, v: number): this {
    this.tag(field, 5);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    this.scratch.push(...b);
    return this;
  }

  bytes(field: number, data: Uint8Array): this {
    this.tag(field, 2);
    this.varintRaw(BigInt(data.length));
    this.flushScratch();
    this.push(data);
    return this;
  }

  string(field: number, s: string): this {
    return this.bytes(field, new TextEncoder().encode(s));
  }

  message(field: number, m: PbWriter): this {
    m.flushScratch();
    this.tag(field, 2);
    this.varintRaw(BigInt(m.length));
    this.flushScratch();
    for (const p of m.parts) this.push(p);
    return this;
  }

  /** The encoded message as chunks (write them in order). */
  finish(): Uint8Array[] {
    this.flushScratch();
    return this.parts;
  }
}
