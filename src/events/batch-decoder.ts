/**
 * A KV-event batch decoder written for the batch shape: it walks the MessagePack
 * bytes once and builds the events directly (hashes straight to bigint or a
 * Uint8Array copy, token ids straight into a number array), with no generic
 * object in between.
 *
 * It handles the shapes publishers send: an array batch of map or legacy array
 * events, ints of every width, ASCII strings, unknown keys and trailing elements.
 * Anything else, and anything invalid, makes it give up (returns undefined) so
 * that the caller decodes with the reference decoder, which accepts or rejects
 * it: this decoder never decides a rejection and never guesses.
 *
 * Its output must equal the reference decoder's (codec.ts decodeBatchReference)
 * on every input; test/codec/fast-decode.test.ts checks that over random payloads.
 */
import type { BlockHash, BlockRemoved, BlockStored, KVEvent, KVEventBatch } from './types.js';

export type FastArrayLayout = 'vllm' | 'sglang' | 'auto';

/** Thrown (never escapes this module) when the input is not a shape this decoder handles. */
const GIVE_UP = { giveUp: true } as const;

const MAX_DEPTH = 64;

let buf: Uint8Array = new Uint8Array(0);
let view: DataView = new DataView(buf.buffer);
let pos = 0;
let end = 0;

/** The batch, or undefined when the reference decoder must decide. */
export function tryDecodeBatchFast(payload: Uint8Array, layout: FastArrayLayout = 'auto'): KVEventBatch | undefined {
  buf = payload;
  view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  pos = 0;
  end = payload.byteLength;
  try {
    const batch = readBatch(layout);
    return pos === end ? batch : undefined;
  } catch (err) {
    if (err === GIVE_UP) return undefined;
    throw err;
  } finally {
    buf = EMPTY;
    view = EMPTY_VIEW;
  }
}

// A Buffer, as payloads from ZeroMQ are: the hot loops then see one kind of array.
const EMPTY = Buffer.alloc(0);
const EMPTY_VIEW = new DataView(EMPTY.buffer);

function giveUp(): never {
  throw GIVE_UP;
}

// ---------------------------------------------------------------------------- bytes

function need(n: number): void {
  if (pos + n > end) giveUp();
}

function token(): number {
  if (pos >= end) giveUp();
  return buf[pos++]!;
}

/** Array header → length, or -1 if the next value is not an array (nothing consumed then). */
function arrayLength(): number {
  if (pos >= end) giveUp();
  const t = buf[pos]!;
  let n: number;
  if (t >= 0x90 && t <= 0x9f) { pos++; n = t & 0x0f; }
  else if (t === 0xdc) { need(3); n = view.getUint16(pos + 1); pos += 3; }
  else if (t === 0xdd) { need(5); n = view.getUint32(pos + 1); pos += 5; }
  else return -1;
  if (n > end - pos) giveUp(); // every element takes at least a byte
  return n;
}

function mapLength(): number {
  if (pos >= end) giveUp();
  const t = buf[pos]!;
  let n: number;
  if (t >= 0x80 && t <= 0x8f) { pos++; n = t & 0x0f; }
  else if (t === 0xde) { need(3); n = view.getUint16(pos + 1); pos += 3; }
  else if (t === 0xdf) { need(5); n = view.getUint32(pos + 1); pos += 5; }
  else return -1;
  if (n > (end - pos) / 2) giveUp();
  return n;
}

/** String header → byte length (pos at the bytes), or -1 if not a string (nothing consumed). */
function strLength(): number {
  if (pos >= end) giveUp();
  const t = buf[pos]!;
  let n: number;
  if (t >= 0xa0 && t <= 0xbf) { pos++; n = t & 0x1f; }
  else if (t === 0xd9) { need(2); n = buf[pos + 1]!; pos += 2; }
  else if (t === 0xda) { need(3); n = view.getUint16(pos + 1); pos += 3; }
  else if (t === 0xdb) { need(5); n = view.getUint32(pos + 1); pos += 5; }
  else return -1;
  need(n);
  return n;
}

function isNil(): boolean {
  if (pos < end && buf[pos] === 0xc0) { pos++; return true; }
  return false;
}

/** An ASCII string of n bytes at pos (others go to the reference, whose UTF-8 handling is its own). */
function asciiString(n: number): string {
  let s = '';
  for (let i = pos, e = pos + n; i < e; i++) {
    const c = buf[i]!;
    if (c > 0x7f) giveUp();
    s += String.fromCharCode(c);
  }
  pos += n;
  return s;
}

let lastStrBytes = new Uint8Array(0);
let lastStr = '';

/** Short repeated strings (medium: "GPU") come from a one-entry cache. */
function str(n: number): string {
  if (n <= 16 && n === lastStrBytes.length) {
    let same = true;
    for (let i = 0; i < n; i++) if (buf[pos + i] !== lastStrBytes[i]) { same = false; break; }
    if (same) { pos += n; return lastStr; }
  }
  const start = pos;
  const s = asciiString(n);
  if (n <= 16) { lastStrBytes = new Uint8Array(buf.subarray(start, start + n)); lastStr = s; }
  return s;
}

function strOrNil(): string | null {
  if (isNil()) return null;
  const n = strLength();
  if (n < 0) giveUp();
  return str(n);
}

/** An int in the safe range as a number (64-bit encodings included), else give up. */
function safeInt(): number {
  const t = token();
  if (t < 0x80) return t;
  if (t >= 0xe0) return t - 0x100;
  switch (t) {
    case 0xcc: need(1); return buf[pos++]!;
    case 0xcd: need(2); pos += 2; return view.getUint16(pos - 2);
    case 0xce: need(4); pos += 4; return view.getUint32(pos - 4);
    case 0xd0: need(1); pos += 1; return view.getInt8(pos - 1);
    case 0xd1: need(2); pos += 2; return view.getInt16(pos - 2);
    case 0xd2: need(4); pos += 4; return view.getInt32(pos - 4);
    case 0xcf: {
      need(8);
      const hi = view.getUint32(pos);
      if (hi >= 0x200000) giveUp();
      const v = hi * 0x100000000 + view.getUint32(pos + 4);
      pos += 8;
      return v;
    }
    case 0xd3: {
      need(8);
      const hi = view.getInt32(pos);
      if (hi <= -0x200000 || hi >= 0x200000) giveUp();
      const v = hi * 0x100000000 + view.getUint32(pos + 4);
      pos += 8;
      return v;
    }
    default:
      return giveUp();
  }
}

function intOrNil(): number | null {
  return isNil() ? null : safeInt();
}

function hash(): BlockHash {
  const t = token();
  if (t < 0x80) return BigInt(t);
  if (t >= 0xe0) return BigInt(t - 0x100);
  switch (t) {
    case 0xcf: need(8); pos += 8; return view.getBigUint64(pos - 8);
    case 0xd3: need(8); pos += 8; return view.getBigInt64(pos - 8);
    case 0xcc: need(1); return BigInt(buf[pos++]!);
    case 0xcd: need(2); pos += 2; return BigInt(view.getUint16(pos - 2));
    case 0xce: need(4); pos += 4; return BigInt(view.getUint32(pos - 4));
    case 0xd0: need(1); pos += 1; return BigInt(view.getInt8(pos - 1));
    case 0xd1: need(2); pos += 2; return BigInt(view.getInt16(pos - 2));
    case 0xd2: need(4); pos += 4; return BigInt(view.getInt32(pos - 4));
    case 0xc4: { need(1); const n = buf[pos]!; pos += 1; return bytes(n); }
    case 0xc5: { need(2); const n = view.getUint16(pos); pos += 2; return bytes(n); }
    case 0xc6: { need(4); const n = view.getUint32(pos); pos += 4; return bytes(n); }
    default:
      return giveUp();
  }
}

/** A copy, as a plain Uint8Array (never a view into the payload, never a Buffer). */
function bytes(n: number): Uint8Array {
  need(n);
  const out = new Uint8Array(n);
  out.set(buf.subarray(pos, pos + n));
  pos += n;
  return out;
}

function hashOrNil(): BlockHash | null {
  return isNil() ? null : hash();
}

function hashes(): BlockHash[] {
  const n = arrayLength();
  if (n < 0) giveUp();
  const out: BlockHash[] = new Array(n);
  for (let i = 0; i < n; i++) out[i] = hash();
  return out;
}

function tokenIds(): number[] {
  const n = arrayLength();
  if (n < 0) giveUp();
  const out: number[] = new Array(n);
  const b = buf;
  const e = end;
  let p = pos;
  for (let i = 0; i < n; i++) {
    if (p >= e) giveUp();
    const t = b[p]!;
    if (t < 0x80) { p++; out[i] = t; }
    else if (t === 0xcd && p + 3 <= e) { out[i] = (b[p + 1]! << 8) | b[p + 2]!; p += 3; }
    else if (t === 0xce && p + 5 <= e) { out[i] = view.getUint32(p + 1); p += 5; }
    else { pos = p; out[i] = safeInt(); p = pos; }
  }
  pos = p;
  return out;
}

/**
 * A value kept as is (extra_keys, locality, ownership): what msgpackr would give
 * for nil, booleans, ints, floats, ASCII strings and arrays of those.
 */
function plainValue(depth = 0): unknown {
  if (depth > MAX_DEPTH) giveUp();
  const t = buf[pos];
  if (t === undefined) giveUp();
  if (t === 0xc0) { pos++; return null; }
  if (t === 0xc2) { pos++; return false; }
  if (t === 0xc3) { pos++; return true; }
  if (t < 0x80 || t >= 0xe0 || (t >= 0xcc && t <= 0xd3)) {
    if (t === 0xcf) { need(9); pos += 9; return view.getBigUint64(pos - 8); }
    if (t === 0xd3) { need(9); pos += 9; return view.getBigInt64(pos - 8); }
    if (t === 0xca || t === 0xcb) return float();
    return safeInt();
  }
  if (t === 0xca || t === 0xcb) return float();
  const s = strLength();
  if (s >= 0) return asciiString(s);
  const n = arrayLength();
  if (n >= 0) {
    const out: unknown[] = [];
    for (let i = 0; i < n; i++) out.push(plainValue(depth + 1));
    return out;
  }
  return giveUp();
}

function float(): number {
  const t = token();
  if (t === 0xcb) { need(8); pos += 8; return view.getFloat64(pos - 8); }
  if (t === 0xca) { need(4); pos += 4; return view.getFloat32(pos - 4); }
  return giveUp();
}

/** Steps over one value that is not kept, checking it is MessagePack the reference would read. */
function skip(depth = 0): void {
  if (depth > MAX_DEPTH) giveUp();
  const t = token();
  if (t < 0x80 || t >= 0xe0 || t === 0xc0 || t === 0xc2 || t === 0xc3) return;
  if (t >= 0xa0 && t <= 0xbf) { pos--; asciiString(strLength()); return; }
  if (t >= 0x90 && t <= 0x9f) { pos--; for (let i = arrayLength(); i > 0; i--) skip(depth + 1); return; }
  if (t >= 0x80 && t <= 0x8f) { pos--; skipMap(depth); return; }
  switch (t) {
    case 0xcc: case 0xd0: need(1); pos += 1; return;
    case 0xcd: case 0xd1: need(2); pos += 2; return;
    case 0xce: case 0xd2: case 0xca: need(4); pos += 4; return;
    case 0xcf: case 0xd3: case 0xcb: need(8); pos += 8; return;
    case 0xc4: { need(1); const n = buf[pos]!; pos += 1; need(n); pos += n; return; }
    case 0xc5: { need(2); const n = view.getUint16(pos); pos += 2; need(n); pos += n; return; }
    case 0xc6: { need(4); const n = view.getUint32(pos); pos += 4; need(n); pos += n; return; }
    case 0xd9: case 0xda: case 0xdb: pos--; asciiString(strLength()); return;
    case 0xdc: case 0xdd: pos--; for (let i = arrayLength(); i > 0; i--) skip(depth + 1); return;
    case 0xde: case 0xdf: pos--; skipMap(depth); return;
    default:
      giveUp(); // extensions, 0xc1
  }
}

function skipMap(depth: number): void {
  for (let i = mapLength(); i > 0; i--) {
    const k = strLength();
    if (k < 0) giveUp(); // msgpackr turns non-string keys into strings its own way
    asciiString(k);
    skip(depth + 1);
  }
}

// ---------------------------------------------------------------------------- batch

function readBatch(layout: FastArrayLayout): KVEventBatch {
  const n = arrayLength();
  if (n < 2) giveUp(); // map batches and short ones: the reference
  const ts = timestamp();
  const count = arrayLength();
  if (count < 0) giveUp();
  const events: KVEvent[] = new Array(count);
  for (let i = 0; i < count; i++) events[i] = readEvent(layout);
  const dp_rank = n > 2 ? intOrNil() : null;
  for (let i = 3; i < n; i++) skip();
  return { ts, events, dp_rank };
}

function timestamp(): number {
  const t = pos < end ? buf[pos]! : giveUp();
  if (t === 0xcb || t === 0xca) return float();
  if (t === 0xcf) { need(9); pos += 9; return Number(view.getBigUint64(pos - 8)); }
  if (t === 0xd3) { need(9); pos += 9; return Number(view.getBigInt64(pos - 8)); }
  return safeInt();
}

function readEvent(layout: FastArrayLayout): KVEvent {
  const n = arrayLength();
  if (n >= 0) return readArrayEvent(n, layout);
  const m = mapLength();
  if (m >= 0) return readMapEvent(m);
  return giveUp();
}

const enum Tag { Stored, Removed, Cleared }

const STORED = word('BlockStored');
const REMOVED = word('BlockRemoved');
const CLEARED = word('AllBlocksCleared');

function ascii(s: string): Uint8Array {
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}

/** A known word, as big-endian 32-bit chunks plus its tail bytes, to compare 4 bytes at a time. */
interface Word {
  bytes: Uint8Array;
  chunks: number[];
}

function word(s: string): Word {
  const bytes = ascii(s);
  const v = new DataView(bytes.buffer);
  const chunks: number[] = [];
  for (let j = 0; j + 4 <= bytes.length; j += 4) chunks.push(v.getUint32(j));
  return { bytes, chunks };
}

function sameBytes(w: Word, n: number): boolean {
  const bytes = w.bytes;
  if (bytes.length !== n) return false;
  const p = pos;
  const chunks = w.chunks;
  let j = 0;
  for (; j < chunks.length; j++) if (view.getUint32(p + 4 * j) !== chunks[j]) return false;
  const b = buf;
  for (let i = 4 * j; i < n; i++) if (b[p + i] !== bytes[i]) return false;
  return true;
}

function tag(): Tag {
  const n = strLength();
  if (n < 0) giveUp();
  const t = n === 11 && sameBytes(STORED, n) ? Tag.Stored : n === 12 && sameBytes(REMOVED, n) ? Tag.Removed
    : n === 16 && sameBytes(CLEARED, n) ? Tag.Cleared : giveUp();
  pos += n;
  return t;
}

function readArrayEvent(n: number, layout: FastArrayLayout): KVEvent {
  if (n < 1) giveUp();
  const t = tag();
  let used = 1;
  let ev: KVEvent;
  if (t === Tag.Stored) {
    if (n < 5) giveUp();
    const block_hashes = hashes();
    const parent_block_hash = hashOrNil();
    const token_ids = tokenIds();
    const block_size = safeInt();
    if (block_size <= 0) giveUp();
    const lora_id = n > 5 ? intOrNil() : null;
    const medium = n > 6 ? strOrNil() : null;
    const s: BlockStored = { type: 'BlockStored', block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium, lora_name: null };
    used = Math.min(n, 7);
    const a7 = n > 7 ? strOrNil() : null;
    const a8 = n > 8 ? plainValue() : null;
    used = Math.min(n, 9);
    if (layout === 'sglang' || (layout === 'auto' && typeof a8 === 'string')) {
      if (a7 !== null) s.cache_salt = a7;
      if (a8 !== null) {
        if (typeof a8 !== 'string') giveUp();
        s.session_id = a8;
      }
    } else {
      s.lora_name = a7;
      if (a8 !== null) s.extra_keys = a8;
      if (n > 9) { const v = intOrNil(); if (v !== null) s.group_idx = v; }
      if (n > 10) { const v = strOrNil(); if (v !== null) s.kv_cache_spec_kind = v; }
      if (n > 11) { const v = intOrNil(); if (v !== null) s.kv_cache_spec_sliding_window = v; }
      if (n > 12) { const v = plainValue(); if (v !== null) s.locality = v; }
      if (n > 13) { const v = plainValue(); if (v !== null) s.ownership = v; }
      if (n > 14) { const v = strOrNil(); if (v !== null) s.session_id = v; }
      used = Math.min(n, 15);
    }
    ev = s;
  } else if (t === Tag.Removed) {
    if (n < 2) giveUp();
    const r: BlockRemoved = { type: 'BlockRemoved', block_hashes: hashes(), medium: n > 2 ? strOrNil() : null };
    if (n > 3) { const v = intOrNil(); if (v !== null) r.group_idx = v; }
    if (n > 4) { const v = plainValue(); if (v !== null) r.locality = v; }
    if (n > 5) { const v = plainValue(); if (v !== null) r.ownership = v; }
    used = Math.min(n, 6);
    ev = r;
  } else {
    ev = { type: 'AllBlocksCleared' };
  }
  for (let i = used; i < n; i++) skip();
  return ev;
}

const enum Key {
  type, block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium, lora_name,
  extra_keys, group_idx, kv_cache_spec_kind, kv_cache_spec_sliding_window, locality, ownership, session_id, cache_salt,
}

const KEY_NAMES = [
  'type', 'block_hashes', 'parent_block_hash', 'token_ids', 'block_size', 'lora_id', 'medium', 'lora_name',
  'extra_keys', 'group_idx', 'kv_cache_spec_kind', 'kv_cache_spec_sliding_window', 'locality', 'ownership', 'session_id', 'cache_salt',
];

/**
 * Known keys by a hash of their length, second and last bytes (collision-free over KEY_NAMES,
 * checked at load), so a key is matched with one table read and one byte comparison.
 */
const keySlot = (n: number, second: number, last: number) => (n * 4 + second * 3 + last) & 31;
const KEY_TABLE: Array<Key | -1> = new Array(32).fill(-1);
const KEY_WORDS: Word[] = KEY_NAMES.map(word);
KEY_WORDS.forEach(({ bytes: b }, id) => {
  const slot = keySlot(b.length, b[1]!, b[b.length - 1]!);
  if (KEY_TABLE[slot] !== -1) throw new Error(`batch-decoder: key hash collision on ${KEY_NAMES[id]}`);
  KEY_TABLE[slot] = id as Key;
});

/** The known key at pos (consumed), or -1 for an unknown one (also consumed). */
function key(): Key | -1 {
  const n = strLength();
  if (n < 0) giveUp();
  if (n >= 2) {
    const id = KEY_TABLE[(n * 4 + buf[pos + 1]! * 3 + buf[pos + n - 1]!) & 31]!;
    if (id !== -1 && sameBytes(KEY_WORDS[id]!, n)) { pos += n; return id; }
  }
  asciiString(n);
  return -1;
}

function readMapEvent(n: number): KVEvent {
  let seen = 0;
  let t: Tag | -1 = -1;
  let block_hashes: BlockHash[] | undefined;
  let parent_block_hash: BlockHash | null = null;
  let token_ids: number[] | undefined;
  let block_size = 0;
  let lora_id: number | null = null;
  let medium: string | null = null;
  let lora_name: string | null = null;
  let extra_keys: unknown, locality: unknown, ownership: unknown;
  let group_idx: number | null = null;
  let kind: string | null = null;
  let window: number | null = null;
  let session_id: string | null = null;
  let cache_salt: string | null = null;
  for (let i = 0; i < n; i++) {
    const k = key();
    if (k === -1) { skip(); continue; }
    if (seen & (1 << k)) giveUp(); // duplicate keys: the reference's last-one-wins
    seen |= 1 << k;
    switch (k) {
      case Key.type: t = tag(); break;
      case Key.block_hashes: block_hashes = hashes(); break;
      case Key.parent_block_hash: parent_block_hash = hashOrNil(); break;
      case Key.token_ids: token_ids = tokenIds(); break;
      case Key.block_size: block_size = safeInt(); if (block_size <= 0) giveUp(); break;
      case Key.lora_id: lora_id = intOrNil(); break;
      case Key.medium: medium = strOrNil(); break;
      case Key.lora_name: lora_name = strOrNil(); break;
      case Key.extra_keys: extra_keys = plainValue(); break;
      case Key.group_idx: group_idx = intOrNil(); break;
      case Key.kv_cache_spec_kind: kind = strOrNil(); break;
      case Key.kv_cache_spec_sliding_window: window = intOrNil(); break;
      case Key.locality: locality = plainValue(); break;
      case Key.ownership: ownership = plainValue(); break;
      case Key.session_id: session_id = strOrNil(); break;
      case Key.cache_salt: cache_salt = strOrNil(); break;
    }
  }
  if (t === Tag.Stored) {
    if (block_hashes === undefined || token_ids === undefined || (seen & (1 << Key.block_size)) === 0) giveUp();
    const s: BlockStored = { type: 'BlockStored', block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium, lora_name };
    // Present keys are kept even when nil, as the reference does for map events.
    if ((seen & (1 << Key.extra_keys)) !== 0) s.extra_keys = extra_keys;
    if ((seen & (1 << Key.group_idx)) !== 0) s.group_idx = group_idx;
    if ((seen & (1 << Key.kv_cache_spec_kind)) !== 0) s.kv_cache_spec_kind = kind;
    if ((seen & (1 << Key.kv_cache_spec_sliding_window)) !== 0) s.kv_cache_spec_sliding_window = window;
    if ((seen & (1 << Key.locality)) !== 0) s.locality = locality;
    if ((seen & (1 << Key.ownership)) !== 0) s.ownership = ownership;
    if ((seen & (1 << Key.session_id)) !== 0) s.session_id = session_id;
    if ((seen & (1 << Key.cache_salt)) !== 0) s.cache_salt = cache_salt;
    return s;
  }
  if (t === Tag.Removed) {
    if (block_hashes === undefined) giveUp();
    const r: BlockRemoved = { type: 'BlockRemoved', block_hashes, medium };
    if ((seen & (1 << Key.group_idx)) !== 0) r.group_idx = group_idx;
    if ((seen & (1 << Key.locality)) !== 0) r.locality = locality;
    if ((seen & (1 << Key.ownership)) !== 0) r.ownership = ownership;
    return r;
  }
  if (t === Tag.Cleared) return { type: 'AllBlocksCleared' };
  return giveUp();
}
