/**
 * The safetensors format (what PEFT writes adapter_model.safetensors in): an 8-byte little-endian
 * header length, a JSON header {name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?},
 * then the tensors' little-endian bytes. Only F32 tensors are read and written here.
 */

export interface F32Tensor {
  shape: number[];
  data: Float32Array;
}

export function writeSafetensors(tensors: Record<string, F32Tensor>, metadata: Record<string, string> = {}): Uint8Array[] {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let at = 0;
  const names = Object.keys(tensors).sort();
  for (const name of names) {
    const t = tensors[name]!;
    if (t.shape.reduce((a, b) => a * b, 1) !== t.data.length) throw new Error(`tensor ${name}: shape ${t.shape.join('x')} does not hold ${t.data.length} values`);
    header[name] = { dtype: 'F32', shape: t.shape, data_offsets: [at, at + t.data.byteLength] };
    at += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  // The data starts 8-byte aligned (the header is padded with spaces, as the reference writer does).
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  return [head, Buffer.from(json, 'utf8'), ...names.map((n) => new Uint8Array(tensors[n]!.data.buffer, tensors[n]!.data.byteOffset, tensors[n]!.data.byteLength))];
}

/** Every tensor of a safetensors file (F32 only); a malformed file throws, naming what is wrong. */
export function readSafetensors(buf: Uint8Array): Map<string, F32Tensor> {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < 8) throw new Error('not a safetensors file: shorter than its 8-byte header length');
  const n = b.readBigUInt64LE(0);
  if (n > BigInt(b.length - 8)) throw new Error(`not a safetensors file: header length ${n} exceeds the file (${b.length} bytes)`);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(b.subarray(8, 8 + Number(n)).toString('utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`not a safetensors file: the header is not JSON (${(e as Error).message})`);
  }
  const base = 8 + Number(n);
  const out = new Map<string, F32Tensor>();
  for (const [name, v] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const t = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (t.dtype !== 'F32') throw new Error(`tensor ${name}: dtype ${String(t.dtype)} (only F32 adapters are supported)`);
    const shape = t.shape;
    const off = t.data_offsets;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) throw new Error(`tensor ${name}: bad shape`);
    if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isInteger(d) && d >= 0)) throw new Error(`tensor ${name}: bad data_offsets`);
    const [s, e] = off as [number, number];
    const count = (shape as number[]).reduce((a, d) => a * d, 1);
    if (e - s !== count * 4 || base + e > b.length) throw new Error(`tensor ${name}: data_offsets [${s}, ${e}] do not fit shape ${shape.join('x')} in the file`);
    // Copied: the file's bytes need not be 4-byte aligned for a Float32Array view.
    const data = new Float32Array(count);
    Buffer.from(data.buffer).set(b.subarray(base + s, base + e));
    out.set(name, { shape: shape as number[], data });
  }
  return out;
}
