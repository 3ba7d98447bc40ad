/**
 * Random KV-event batch payloads for the decoder property tests: valid ones in
 * every encoding a publisher could use (map and legacy array events, vLLM and
 * SGLang layouts, every MessagePack width for ints, strings, binaries, arrays
 * and maps, unknown keys, trailing elements), and broken ones derived from them.
 */

/** Deterministic PRNG (mulberry32), so a failure is reproducible from its seed. */
export class Rng {
  constructor(private s: number) {}
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) | 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  u64(): bigint {
    return (BigInt(this.int(2 ** 32)) << 32n) | BigInt(this.int(2 ** 32));
  }
}

/** Bytes written as is (extension types, reserved bytes, non-UTF-8 strings). */
export class Raw {
  constructor(readonly bytes: number[]) {}
}

/** An int the encoder must write as a float (msgpackr reads it as a number). */
export class AsFloat {
  constructor(readonly value: number, readonly width: 32 | 64 = 64) {}
}

/**
 * MessagePack writer that picks, at random, any encoding able to hold each value:
 * fixint or any wider int, str8 for a 3-byte string, array32 for an empty array.
 */
export class RandomWidthWriter {
  private out: number[] = [];
  constructor(private readonly rng: Rng) {}

  bytes(): Buffer {
    return Buffer.from(this.out);
  }

  private be(v: bigint, n: number): void {
    for (let i = n - 1; i >= 0; i--) this.out.push(Number((v >> BigInt(8 * i)) & 0xffn));
  }

  private float(v: number, width: 32 | 64): void {
    const b = Buffer.alloc(width / 8);
    if (width === 32) b.writeFloatBE(v);
    else b.writeDoubleBE(v);
    this.out.push(width === 32 ? 0xca : 0xcb, ...b);
  }

  int(v: bigint): void {
    const opts: Array<() => void> = [];
    if (v >= 0n && v < 128n) opts.push(() => this.out.push(Number(v)));
    if (v >= -32n && v < 0n) opts.push(() => this.out.push(Number(v) & 0xff));
    for (const [n, tag] of [[1, 0xcc], [2, 0xcd], [4, 0xce], [8, 0xcf]] as const)
      if (v >= 0n && v < 1n << BigInt(8 * n)) opts.push(() => { this.out.push(tag); this.be(v, n); });
    for (const [n, tag] of [[1, 0xd0], [2, 0xd1], [4, 0xd2], [8, 0xd3]] as const) {
      const lim = 1n << BigInt(8 * n - 1);
      if (v >= -lim && v < lim) opts.push(() => { this.out.push(tag); this.be(BigInt.asUintN(8 * n, v), n); });
    }
    if (opts.length === 0) throw new RangeError(`int out of range: ${v}`);
    // Mostly the smallest encoding, as msgspec writes; often any other.
    (this.rng.chance(0.5) ? opts[0]! : this.rng.pick(opts))();
  }

  private header(n: number, fix: number | null, fixMax: number, tags: readonly number[], widths: readonly number[]): void {
    const opts: Array<() => void> = [];
    if (fix !== null && n <= fixMax) opts.push(() => this.out.push(fix + n));
    tags.forEach((tag, i) => {
      const w = widths[i]!;
      if (n < 2 ** (8 * w)) opts.push(() => { this.out.push(tag); this.be(BigInt(n), w); });
    });
    (this.rng.chance(0.6) ? opts[0]! : this.rng.pick(opts))();
  }

  value(v: unknown): void {
    if (v === null || v === undefined) this.out.push(0xc0);
    else if (v === false) this.out.push(0xc2);
    else if (v === true) this.out.push(0xc3);
    else if (typeof v === 'bigint') this.int(v);
    else if (typeof v === 'number') {
      if (Number.isSafeInteger(v) && !Object.is(v, -0)) this.int(BigInt(v));
      else this.float(v, Math.fround(v) === v && this.rng.chance(0.5) ? 32 : 64);
    } else if (v instanceof AsFloat) this.float(v.value, v.width);
    else if (v instanceof Raw) this.out.push(...v.bytes);
    else if (typeof v === 'string') {
      const b = Buffer.from(v, 'utf8');
      this.header(b.length, 0xa0, 31, [0xd9, 0xda, 0xdb], [1, 2, 4]);
      this.out.push(...b);
    } else if (v instanceof Uint8Array) {
      this.header(v.length, null, 0, [0xc4, 0xc5, 0xc6], [1, 2, 4]);
      this.out.push(...v);
    } else if (Array.isArray(v)) {
      this.header(v.length, 0x90, 15, [0xdc, 0xdd], [2, 4]);
      for (const x of v) this.value(x);
    } else if (v instanceof Map) {
      this.header(v.size, 0x80, 15, [0xde, 0xdf], [2, 4]);
      for (const [k, x] of v) { this.value(k); this.value(x); }
    } else if (typeof v === 'object') {
      const entries = Object.entries(v as Record<string, unknown>);
      this.header(entries.length, 0x80, 15, [0xde, 0xdf], [2, 4]);
      for (const [k, x] of entries) { this.value(k); this.value(x); }
    } else throw new TypeError(`cannot encode ${typeof v}`);
  }
}

export function encodeRandomly(rng: Rng, v: unknown): Buffer {
  const w = new RandomWidthWriter(rng);
  w.value(v);
  return w.bytes();
}

// ---------------------------------------------------------------------------- valid batches

function hash(rng: Rng): unknown {
  switch (rng.int(6)) {
    case 0: return rng.u64() | (1n << 63n); // vLLM: unsigned, mostly ≥ 2^63
    case 1: return rng.u64();
    case 2: return BigInt.asIntN(64, rng.u64()); // SGLang / older vLLM: signed
    case 3: return BigInt(rng.int(70000) - 35000); // small: fixint, 8-, 16-, 32-bit
    case 4: return Uint8Array.from({ length: 32 }, () => rng.int(256)); // sha256 digests
    default: return Uint8Array.from({ length: rng.int(4) * 100 }, () => rng.int(256));
  }
}

function ascii(rng: Rng, max = 12): string {
  return Array.from({ length: rng.int(max) }, () => String.fromCharCode(0x20 + rng.int(95))).join('');
}

/** A value for fields kept as is (extra_keys, locality, ownership) and for unknown keys. */
export function anyValue(rng: Rng, depth = 0): unknown {
  switch (rng.int(depth > 2 ? 9 : 12)) {
    case 0: return null;
    case 1: return rng.chance(0.5);
    case 2: return rng.int(1000) - 500;
    case 3: return rng.u64();
    case 4: return rng.next() * 1e6;
    case 5: return ascii(rng, 40);
    case 6: return 'é' + ascii(rng); // non-ASCII: UTF-8
    case 7: return Uint8Array.from({ length: rng.int(5) }, () => rng.int(256));
    case 8: return new Raw([0xd6, 0xff, 0x5f, 0x00, 0x00, 0x00]); // timestamp extension
    case 9: return Array.from({ length: rng.int(4) }, () => anyValue(rng, depth + 1));
    case 10: return Object.fromEntries(Array.from({ length: rng.int(3) }, () => [ascii(rng, 8), anyValue(rng, depth + 1)]));
    default: return [ascii(rng), rng.int(100)]; // an extra_keys tuple
  }
}

function maybe<T>(rng: Rng, v: () => T): T | null {
  return rng.chance(0.5) ? v() : null;
}

function tokens(rng: Rng): unknown[] {
  const n = rng.pick([0, 1, 16, 16, 32, 48, rng.int(200)]);
  return Array.from({ length: n }, () => rng.pick([rng.int(128), rng.int(152064), rng.int(2 ** 31), rng.int(2 ** 40)]));
}

function shuffled<T>(rng: Rng, xs: T[]): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [xs[i], xs[j]] = [xs[j]!, xs[i]!];
  }
  return xs;
}

function storedFields(rng: Rng): Record<string, unknown> {
  const blocks = rng.pick([0, 1, 1, 2, 3, rng.int(40)]);
  return {
    type: 'BlockStored',
    block_hashes: Array.from({ length: blocks }, () => hash(rng)),
    parent_block_hash: maybe(rng, () => hash(rng)),
    token_ids: tokens(rng),
    block_size: rng.pick([16, 16, 1, 32, 128, 1 + rng.int(100000)]),
    lora_id: maybe(rng, () => rng.int(100)),
    medium: rng.pick([null, 'GPU', 'GPU', 'CPU', 'DISK', ascii(rng)]),
    lora_name: maybe(rng, () => ascii(rng)),
  };
}

function optionalStored(rng: Rng): Record<string, unknown> {
  return {
    extra_keys: maybe(rng, () => Array.from({ length: rng.int(3) }, () => (rng.chance(0.7) ? [ascii(rng), rng.int(9)] : null))),
    group_idx: maybe(rng, () => rng.int(4)),
    kv_cache_spec_kind: maybe(rng, () => rng.pick(['full', 'sliding_window', 'mamba'])),
    kv_cache_spec_sliding_window: maybe(rng, () => rng.int(8192)),
    locality: maybe(rng, () => (rng.chance(0.8) ? rng.pick(['LOCAL', 'REMOTE']) : anyValue(rng))),
    ownership: maybe(rng, () => (rng.chance(0.8) ? ascii(rng) : anyValue(rng))),
    session_id: maybe(rng, () => ascii(rng)),
  };
}

/** A map event: a random subset of the optional keys (nil or set), unknown keys, any key order. */
function mapEvent(rng: Rng): Record<string, unknown> {
  const kind = rng.int(10);
  let entries: Array<[string, unknown]>;
  if (kind < 6) {
    const all = { ...storedFields(rng), ...optionalStored(rng), cache_salt: maybe(rng, () => ascii(rng)) };
    const required = new Set(['type', 'block_hashes', 'token_ids', 'block_size']);
    entries = Object.entries(all).filter(([k]) => required.has(k) || rng.chance(0.6));
  } else if (kind < 9) {
    const s = storedFields(rng);
    const o = optionalStored(rng);
    entries = Object.entries({ type: 'BlockRemoved', block_hashes: s.block_hashes, medium: s.medium, group_idx: o.group_idx, locality: o.locality, ownership: o.ownership })
      .filter(([k]) => k === 'type' || k === 'block_hashes' || rng.chance(0.6));
  } else {
    entries = [['type', 'AllBlocksCleared']];
  }
  if (rng.chance(0.2)) for (let i = rng.int(3); i >= 0; i--) entries.push([`future_${ascii(rng, 6)}`, anyValue(rng)]);
  if (rng.chance(0.05)) entries.push(['__proto__', { type: 'BlockRemoved' }]);
  return Object.fromEntries(shuffled(rng, entries));
}

/** A legacy array event in vLLM's or SGLang's layout, stopping anywhere after the required fields. */
function arrayEvent(rng: Rng, layout: Layout): unknown[] {
  const kind = rng.int(10);
  let a: unknown[];
  let full = false;
  if (kind < 6) {
    const s = storedFields(rng);
    const base = [s.type, s.block_hashes, s.parent_block_hash, s.token_ids, s.block_size, s.lora_id, s.medium];
    const sglang = layout === 'sglang' || (layout === 'auto' && rng.chance(0.3));
    if (sglang) a = [...base, maybe(rng, () => ascii(rng)), maybe(rng, () => ascii(rng))]; // SGLang: cache_salt, session_id
    else a = [...base, s.lora_name, ...Object.values(optionalStored(rng))];
    const n = 5 + rng.int(a.length - 3);
    // Under auto, a SGLang tail without a session_id reads as vLLM's: its element 9 is group_idx.
    full = n >= a.length && (!sglang || layout === 'sglang');
    a = a.slice(0, n);
  } else if (kind < 9) {
    const s = storedFields(rng);
    const o = optionalStored(rng);
    a = ['BlockRemoved', s.block_hashes, s.medium, o.group_idx, o.locality, o.ownership];
    const n = 2 + rng.int(a.length);
    full = n >= a.length;
    a = a.slice(0, n);
  } else {
    a = ['AllBlocksCleared'];
    full = true;
  }
  // Unknown trailing elements, after every known one (elsewhere they would be known fields of the wrong type).
  if (full && rng.chance(0.15)) for (let i = rng.int(3); i >= 0; i--) a.push(anyValue(rng));
  return a;
}

export type Layout = 'auto' | 'vllm' | 'sglang';

export interface RandomBatch {
  value: unknown;
  payload: Buffer;
  layout: Layout;
}

export function validBatch(rng: Rng): RandomBatch {
  const layout = rng.pick<Layout>(['auto', 'auto', 'vllm', 'sglang']);
  const eventsAsMaps = rng.chance(0.5);
  const n = rng.pick([0, 1, 2, 32, rng.int(64)]);
  const events = Array.from({ length: n }, () => (rng.chance(eventsAsMaps ? 0.95 : 0.05) ? mapEvent(rng) : arrayEvent(rng, layout)));
  const ts = rng.pick<unknown>([1790000000 + rng.next(), 1790000000 + rng.int(1000), new AsFloat(1.5, 32), BigInt(1790000000 + rng.int(9))]);
  const rank = rng.pick<unknown>([undefined, null, 0, rng.int(8), rng.int(1 << 20)]);
  let value: unknown;
  if (rng.chance(0.1)) {
    const m: Record<string, unknown> = { ts, events };
    if (rank !== undefined) m[rng.pick(['data_parallel_rank', 'attn_dp_rank'])] = rank;
    value = m;
  } else {
    value = rank === undefined ? [ts, events] : [ts, events, rank];
    if (rank !== undefined && rng.chance(0.1)) (value as unknown[]).push(anyValue(rng));
  }
  return { value, payload: encodeRandomly(rng, value), layout };
}

// ---------------------------------------------------------------------------- invalid batches

/** A value of the wrong kind for any field: a float, a string, an int of 65 bits, nested maps... */
function wrongValue(rng: Rng): unknown {
  return rng.pick<unknown>([
    1.5, -0.25, 'x', '', 0, -1, 1n << 63n, -(1n << 63n), true, null, [], [1.5], ['a'], {}, { a: 1 }, new Uint8Array(3),
    new AsFloat(3), new Raw([0xc1]), new Raw([0xd4, 0x01, 0x00]), new Raw([0xd6, 0xff, 0, 0, 0, 1]),
    new Raw([0xa2, 0xff, 0xfe]), // invalid UTF-8
    new Raw([0xcf, 0x00, 0x20, 0, 0, 0, 0, 0, 0]), // 2^53: past the safe range
  ]);
}

/** Replaces one random leaf or member of a decoded-shape value with a wrong one. */
function corrupt(rng: Rng, v: unknown, depth = 0): unknown {
  if (Array.isArray(v) && v.length > 0 && (depth < 1 || rng.chance(0.7))) {
    const i = rng.int(v.length);
    const copy = [...v];
    if (rng.chance(0.1)) copy.splice(i, 1);
    else copy[i] = corrupt(rng, v[i], depth + 1);
    return copy;
  }
  if (v && typeof v === 'object' && !(v instanceof Uint8Array) && !(v instanceof Raw) && !(v instanceof AsFloat)) {
    const entries = Object.entries(v as Record<string, unknown>);
    if (entries.length > 0 && (depth < 1 || rng.chance(0.7))) {
      const i = rng.int(entries.length);
      if (rng.chance(0.15)) entries.splice(i, 1);
      else entries[i] = [entries[i]![0], corrupt(rng, entries[i]![1], depth + 1)];
      return Object.fromEntries(entries);
    }
  }
  return wrongValue(rng);
}

/** A broken payload: a corrupted field, a truncation, flipped or inserted bytes, trailing bytes or noise. */
export function invalidBatch(rng: Rng): RandomBatch {
  const b = validBatch(rng);
  let payload: Buffer;
  switch (rng.int(6)) {
    case 0:
    case 1:
      payload = encodeRandomly(rng, corrupt(rng, b.value));
      break;
    case 2:
      payload = b.payload.subarray(0, rng.int(b.payload.length));
      break;
    case 3: {
      payload = Buffer.from(b.payload);
      for (let i = 1 + rng.int(3); i > 0; i--) payload[rng.int(payload.length)] = rng.int(256);
      break;
    }
    case 4: {
      const at = rng.int(b.payload.length + 1);
      payload = Buffer.concat([b.payload.subarray(0, at), Buffer.from([rng.int(256)]), b.payload.subarray(at)]);
      break;
    }
    default:
      payload = rng.chance(0.5) ? Buffer.concat([b.payload, Buffer.from([rng.int(256)])]) : Buffer.from(Array.from({ length: rng.int(64) }, () => rng.int(256)));
  }
  return { value: undefined, payload, layout: b.layout };
}
