/**
 * The decoder for the exact batch shape publishers send, tried before the general
 * shape-specific decoder (batch-decoder.ts) and the reference (codec.ts).
 *
 * It reads only these, byte by byte, with no generic value in between:
 *  - the batch `[ts: float64, events, dp_rank: int|nil]` or `[ts: float64, events]`;
 *  - map events exactly as msgspec writes them without optional fields: BlockStored with its
 *    8 keys in struct order, BlockRemoved with its 3, AllBlocksCleared with `type`;
 *  - legacy array events: BlockStored of 5 to 9 elements (vLLM's layout, or SGLang's
 *    `cache_salt, session_id` after `medium` under the `sglang` or `auto` rule), BlockRemoved
 *    of 2 or 3, AllBlocksCleared of 1.
 * Hashes go straight to bigint (unsigned or signed 64-bit as on the wire) or a Uint8Array
 * copy, token ids straight into a number array, keys are compared 4 bytes at a time against
 * their expected bytes at their expected place. Anything else (another key order, optional
 * fields, non-ASCII strings, float32 timestamps, 64-bit token ids, trailing elements, any
 * invalid byte) makes it give up: undefined, and the next decoder decides. It never rejects.
 *
 * Its output equals decodeBatchReference's on every input it accepts
 * (test/codec/shape-decode.test.ts: random valid and broken payloads, the msgspec fixtures).
 *
 * Bounds: reads past the payload either throw (DataView: caught, give up) or read undefined /
 * garbage from a Uint8Array, which can only happen after the read position passed the end;
 * positions only grow, and a batch is returned only when the position ends exactly at the
 * end, so such reads never reach a result. Lengths are checked against what is left before
 * anything is allocated for them.
 */
import type { ArrayLayout } from './codec.js';
import type { BlockHash, BlockRemoved, BlockStored, KVEvent, KVEventBatch } from './types.js';

/** Tells whether the bytes at p are the expected ones: 32-bit compares, unrolled. */
type Matcher = (p: number) => boolean;

/**
 * A matcher for a fixed byte sequence of at least 4 bytes: little-endian 32-bit words at
 * 0, 4, 8, … and one last word ending at the sequence's end (overlapping the one before),
 * so no byte-wise tail. One closure per sequence, its words captured as constants, so that
 * each call site sees one target and the compares inline.
 */
function matcher(...parts: Array<number | string>): Matcher & { n: number } {
  const bytes: number[] = [];
  for (const x of parts) {
    if (typeof x === 'number') bytes.push(x);
    else for (const c of x) bytes.push(c.charCodeAt(0));
  }
  const n = bytes.length;
  if (n < 4 || n > 36) throw new RangeError(`matcher: ${n} bytes`);
  const view = new DataView(Uint8Array.from(bytes).buffer);
  const offs: number[] = [];
  for (let o = 0; o + 4 <= n; o += 4) offs.push(o);
  if (offs[offs.length - 1]! + 4 < n) offs.push(n - 4);
  const w = offs.map((o) => view.getInt32(o, true));
  const [o0 = 0, o1 = 0, o2 = 0, o3 = 0, o4 = 0, o5 = 0, o6 = 0, o7 = 0, o8 = 0] = offs;
  const [w0 = 0, w1 = 0, w2 = 0, w3 = 0, w4 = 0, w5 = 0, w6 = 0, w7 = 0, w8 = 0] = w;
  const g = (p: number) => dv.getInt32(p, true);
  let f: Matcher;
  const m = n;
  switch (offs.length) {
    case 1: f = (p) => p + m <= len && g(p + o0) === w0; break;
    case 2: f = (p) => p + m <= len && g(p + o0) === w0 && g(p + o1) === w1; break;
    case 3: f = (p) => p + m <= len && g(p + o0) === w0 && g(p + o1) === w1 && g(p + o2) === w2; break;
    case 4: f = (p) => p + m <= len && g(p + o0) === w0 && g(p + o1) === w1 && g(p + o2) === w2 && g(p + o3) === w3; break;
    case 5: f = (p) => p + m <= len && g(p + o0) === w0 && g(p + o1) === w1 && g(p + o2) === w2 && g(p + o3) === w3 && g(p + o4) === w4; break;
    case 6: f = (p) => p + m <= len && g(p + o0) === w0 && g(p + o1) === w1 && g(p + o2) === w2 && g(p + o3) === w3 && g(p + o4) === w4 && g(p + o5) === w5; break;
    case 7: f = (p) => p + m <= len && g(p + o0) === w0 && g(p + o1) === w1 && g(p + o2) === w2 && g(p + o3) === w3 && g(p + o4) === w4 && g(p + o5) === w5 && g(p + o6) === w6; break;
    case 8: f = (p) => p + m <= len && g(p + o0) === w0 && g(p + o1) === w1 && g(p + o2) === w2 && g(p + o3) === w3 && g(p + o4) === w4 && g(p + o5) === w5 && g(p + o6) === w6 && g(p + o7) === w7; break;
    default: f = (p) => p + m <= len && g(p + o0) === w0 && g(p + o1) === w1 && g(p + o2) === w2 && g(p + o3) === w3 && g(p + o4) === w4 && g(p + o5) === w5 && g(p + o6) === w6 && g(p + o7) === w7 && g(p + o8) === w8;
  }
  return Object.assign(f, { n });
}

/** The string key `s` (fixstr): its header byte, then its bytes. */
const key = (s: string) => matcher(0xa0 | s.length, s);

const MAP_STORED = matcher(0x88, 0xa4, 'type', 0xab, 'BlockStored', 0xac, 'block_hashes');
const K_PARENT = key('parent_block_hash');
const K_TOKENS = key('token_ids');
const K_BLOCK_SIZE = key('block_size');
const K_LORA_ID = key('lora_id');
const K_MEDIUM = key('medium');
const K_LORA_NAME = key('lora_name');
const MAP_REMOVED = matcher(0x83, 0xa4, 'type', 0xac, 'BlockRemoved', 0xac, 'block_hashes');
const MAP_CLEARED = matcher(0x81, 0xa4, 'type', 0xb0, 'AllBlocksCleared');
const S_STORED = matcher(0xab, 'BlockStored');
const S_REMOVED = matcher(0xac, 'BlockRemoved');
const S_CLEARED = matcher(0xb0, 'AllBlocksCleared');

let b: Uint8Array = new Uint8Array(0);
let dv: DataView = new DataView(b.buffer);
/** The payload's length. No read goes past it (a RangeError's stack trace costs more than a batch). */
let len = 0;
/** Where the last read* helper stopped. */
let at = 0;

/** Thrown inside this module only: the input is not the shape. */
class NotTheShape {}
const GIVE_UP = new NotTheShape();

/** The batch, or undefined when another decoder must decide. */
export function decodeBatchShape(payload: Uint8Array, layout: ArrayLayout = 'auto'): KVEventBatch | undefined {
  const n = payload.byteLength;
  if (n < 11) return undefined;
  b = payload;
  dv = new DataView(payload.buffer, payload.byteOffset, n);
  len = n;
  try {
    return readBatch(n, layout);
  } catch (err) {
    if (err === GIVE_UP) return undefined;
    throw err;
  }
}

function readBatch(end: number, layout: ArrayLayout): KVEventBatch | undefined {
  const head = b[0];
  if ((head !== 0x93 && head !== 0x92) || b[1] !== 0xcb) return undefined;
  const ts = dv.getFloat64(2);
  let p = 10;
  let count: number;
  const t = b[p]!;
  if (t >= 0x90 && t <= 0x9f) { count = t & 0x0f; p += 1; }
  else if (t === 0xdc && p + 3 <= end) { count = dv.getUint16(p + 1); p += 3; }
  else if (t === 0xdd && p + 5 <= end) { count = dv.getUint32(p + 1); p += 5; }
  else return undefined;
  if (count > end - p) return undefined;
  const events: KVEvent[] = new Array(count);
  for (let i = 0; i < count; i++) {
    const e = b[p];
    if (e === 0x88) events[i] = mapStored(p);
    else if (e === 0x83) events[i] = mapRemoved(p);
    else if (e === 0x81) {
      if (!MAP_CLEARED(p)) return undefined;
      events[i] = { type: 'AllBlocksCleared' };
      at = p + MAP_CLEARED.n;
    } else if (e !== undefined && e >= 0x91 && e <= 0x99) events[i] = arrayEvent(p, e & 0x0f, layout);
    else return undefined;
    p = at;
  }
  let dp_rank: number | null = null;
  if (head === 0x93) {
    if (b[p] === 0xc0) p++;
    else {
      dp_rank = readInt(p);
      p = at;
    }
  }
  return p === end ? { ts, events, dp_rank } : undefined;
}

function mapStored(p: number): BlockStored {
  if (!MAP_STORED(p)) throw GIVE_UP;
  const block_hashes = readHashes(p + MAP_STORED.n);
  p = at;
  if (!K_PARENT(p)) throw GIVE_UP;
  p += K_PARENT.n;
  let parent_block_hash: BlockHash | null = null;
  if (b[p] === 0xc0) p++;
  else {
    parent_block_hash = readHash(p);
    p = at;
  }
  if (!K_TOKENS(p)) throw GIVE_UP;
  const token_ids = readTokens(p + K_TOKENS.n);
  p = at;
  if (!K_BLOCK_SIZE(p)) throw GIVE_UP;
  const block_size = readInt(p + K_BLOCK_SIZE.n);
  if (block_size <= 0) throw GIVE_UP;
  p = at;
  if (!K_LORA_ID(p)) throw GIVE_UP;
  p += K_LORA_ID.n;
  let lora_id: number | null = null;
  if (b[p] === 0xc0) p++;
  else {
    lora_id = readInt(p);
    p = at;
  }
  if (!K_MEDIUM(p)) throw GIVE_UP;
  const medium = readStrOrNil(p + K_MEDIUM.n);
  p = at;
  if (!K_LORA_NAME(p)) throw GIVE_UP;
  const lora_name = readStrOrNil(p + K_LORA_NAME.n);
  return { type: 'BlockStored', block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium, lora_name };
}

function mapRemoved(p: number): BlockRemoved {
  if (!MAP_REMOVED(p)) throw GIVE_UP;
  const block_hashes = readHashes(p + MAP_REMOVED.n);
  p = at;
  if (!K_MEDIUM(p)) throw GIVE_UP;
  const medium = readStrOrNil(p + K_MEDIUM.n);
  return { type: 'BlockRemoved', block_hashes, medium };
}

/** A legacy array event of n elements at p (its header byte). */
function arrayEvent(p: number, n: number, layout: ArrayLayout): KVEvent {
  p++;
  if (b[p] === 0xab) {
    if (n < 5 || !S_STORED(p)) throw GIVE_UP;
    const block_hashes = readHashes(p + S_STORED.n);
    p = at;
    let parent_block_hash: BlockHash | null = null;
    if (b[p] === 0xc0) p++;
    else {
      parent_block_hash = readHash(p);
      p = at;
    }
    const token_ids = readTokens(p);
    const block_size = readInt(at);
    if (block_size <= 0) throw GIVE_UP;
    p = at;
    let lora_id: number | null = null;
    if (n > 5) {
      if (b[p] === 0xc0) p++;
      else {
        lora_id = readInt(p);
        p = at;
      }
    }
    let medium: string | null = null;
    if (n > 6) {
      medium = readStrOrNil(p);
      p = at;
    }
    let a7: string | null = null;
    if (n > 7) {
      a7 = readStrOrNil(p);
      p = at;
    }
    let a8: string | null = null;
    if (n > 8) {
      a8 = readStrOrNil(p); // vLLM's extra_keys when nil; a string only in SGLang's layout
      p = at;
    }
    at = p;
    const ev: BlockStored = { type: 'BlockStored', block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium, lora_name: null };
    if (layout === 'sglang' || (layout === 'auto' && a8 !== null)) {
      if (a7 !== null) ev.cache_salt = a7;
      if (a8 !== null) ev.session_id = a8;
    } else {
      ev.lora_name = a7;
      if (a8 !== null) ev.extra_keys = a8;
    }
    return ev;
  }
  if (b[p] === 0xac) {
    if (n < 2 || n > 3 || !S_REMOVED(p)) throw GIVE_UP;
    const block_hashes = readHashes(p + S_REMOVED.n);
    const medium = n > 2 ? readStrOrNil(at) : null;
    return { type: 'BlockRemoved', block_hashes, medium };
  }
  if (n !== 1 || !S_CLEARED(p)) throw GIVE_UP;
  at = p + S_CLEARED.n;
  return { type: 'AllBlocksCleared' };
}

// ---------------------------------------------------------------------------- values

/** Bytes taken by the value types 0xc4..0xd2 (header included): bin 8/16/32, ext (unused), float, uint, int. */
const WIDTH = [2, 3, 5, 1, 1, 1, 5, 9, 2, 3, 5, 9, 2, 3, 5];

function need(p: number, k: number): void {
  if (p + k > len) throw GIVE_UP;
}

function arrayLength(p: number): number {
  const t = b[p]!;
  let n: number;
  if (t >= 0x90 && t <= 0x9f) { n = t & 0x0f; at = p + 1; }
  else if (t === 0xdc) { need(p, 3); n = dv.getUint16(p + 1); at = p + 3; }
  else if (t === 0xdd) { need(p, 5); n = dv.getUint32(p + 1); at = p + 5; }
  else throw GIVE_UP;
  if (n > len - at) throw GIVE_UP; // every element takes at least a byte
  return n;
}

function readHashes(p: number): BlockHash[] {
  const n = arrayLength(p);
  p = at;
  const out: BlockHash[] = new Array(n);
  for (let i = 0; i < n; i++) {
    if (b[p] === 0xcf && p + 9 <= len) {
      out[i] = dv.getBigUint64(p + 1);
      p += 9;
    } else {
      out[i] = readHash(p);
      p = at;
    }
  }
  at = p;
  return out;
}

/** A hash: bigint for every int width (64-bit ones exactly as on the wire), bytes copied. */
function readHash(p: number): BlockHash {
  const t = b[p]!;
  if (t === 0xcf) { need(p, 9); at = p + 9; return dv.getBigUint64(p + 1); }
  if (t === 0xd3) { need(p, 9); at = p + 9; return dv.getBigInt64(p + 1); }
  if (t >= 0xc4 && t <= 0xd2) need(p, WIDTH[t - 0xc4]!);
  if (t < 0x80) { at = p + 1; return BigInt(t); }
  if (t >= 0xe0) { at = p + 1; return BigInt(t - 0x100); }
  let n: number;
  switch (t) {
    case 0xcc: at = p + 2; return BigInt(dv.getUint8(p + 1));
    case 0xcd: at = p + 3; return BigInt(dv.getUint16(p + 1));
    case 0xce: at = p + 5; return BigInt(dv.getUint32(p + 1));
    case 0xd0: at = p + 2; return BigInt(dv.getInt8(p + 1));
    case 0xd1: at = p + 3; return BigInt(dv.getInt16(p + 1));
    case 0xd2: at = p + 5; return BigInt(dv.getInt32(p + 1));
    case 0xc4: n = dv.getUint8(p + 1); p += 2; break;
    case 0xc5: n = dv.getUint16(p + 1); p += 3; break;
    case 0xc6: n = dv.getUint32(p + 1); p += 5; break;
    default: throw GIVE_UP;
  }
  if (n > len - p) throw GIVE_UP;
  const out = new Uint8Array(n); // a plain copy, as the reference's Uint8Array.from
  out.set(b.subarray(p, p + n));
  at = p + n;
  return out;
}

function readTokens(p: number): number[] {
  const n = arrayLength(p);
  p = at;
  const out: number[] = [];
  const u = b;
  for (let i = 0; i < n; i++) {
    const t = u[p]!;
    if (t === 0xcd) { out.push((u[p + 1]! << 8) | u[p + 2]!); p += 3; }
    else if (t < 0x80) { out.push(t); p += 1; }
    else if (t === 0xce) { out.push(((u[p + 1]! << 24) | (u[p + 2]! << 16) | (u[p + 3]! << 8) | u[p + 4]!) >>> 0); p += 5; }
    else if (t === 0xcc) { out.push(u[p + 1]! | 0); p += 2; }
    else { out.push(readInt(p)); p = at; }
  }
  at = p;
  return out;
}

/** An int of at most 32 bits, as a number. */
function readInt(p: number): number {
  const t = b[p]!;
  if (t < 0x80) { at = p + 1; return t; }
  if (t >= 0xe0) { at = p + 1; return t - 0x100; }
  if (t >= 0xc4 && t <= 0xd2) need(p, WIDTH[t - 0xc4]!);
  switch (t) {
    case 0xcc: at = p + 2; return dv.getUint8(p + 1);
    case 0xcd: at = p + 3; return dv.getUint16(p + 1);
    case 0xce: at = p + 5; return dv.getUint32(p + 1);
    case 0xd0: at = p + 2; return dv.getInt8(p + 1);
    case 0xd1: at = p + 3; return dv.getInt16(p + 1);
    case 0xd2: at = p + 5; return dv.getInt32(p + 1);
    default: throw GIVE_UP;
  }
}

let lastStr = '';
let lastHead = -1;
let lastWord = 0;

/** nil, or an ASCII string; the last short one read is cached ("GPU" in every event). */
function readStrOrNil(p: number): string | null {
  const t = b[p]!;
  if (t === 0xc0) { at = p + 1; return null; }
  let n: number;
  if (t >= 0xa0 && t <= 0xbf) { n = t & 0x1f; p += 1; }
  else if (t === 0xd9) { need(p, 2); n = dv.getUint8(p + 1); p += 2; }
  else throw GIVE_UP;
  if (n > len - p) throw GIVE_UP;
  at = p + n;
  if (n <= 4 && n > 0) {
    // Up to 4 bytes: compared with the cached one as a word (bytes past n masked off).
    const w = (b[p]! | (b[p + 1]! << 8) | (b[p + 2]! << 16) | (b[p + 3]! << 24)) & (n === 4 ? -1 : (1 << (8 * n)) - 1);
    if (n === lastHead && w === lastWord) return lastStr;
    const s = ascii(p, n);
    lastHead = n;
    lastWord = w;
    lastStr = s;
    return s;
  }
  return ascii(p, n);
}

function ascii(p: number, n: number): string {
  let s = '';
  for (let i = p, e = p + n; i < e; i++) {
    const c = b[i]!;
    if (c > 0x7f) throw GIVE_UP; // UTF-8: the reference's own handling
    s += String.fromCharCode(c);
  }
  return s;
}
