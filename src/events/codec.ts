/**
 * The KV-event batch codec: MessagePack as msgspec writes it.
 *
 * Decoding accepts both event encodings (tagged map, legacy tagged array),
 * 2- or 3-element batches, unknown keys and extra trailing elements, and
 * rejects everything else with a DecodeError that names the offending path.
 */
import { Unpackr } from 'msgpackr';
import { tryDecodeBatchFast } from './batch-decoder.js';
import { decodeBatchShape } from './shape-decoder.js';
import { MsgpackWriter } from './msgpack-writer.js';
import type { AllBlocksCleared, BlockHash, BlockRemoved, BlockStored, KVEvent, KVEventBatch } from './types.js';

export class DecodeError extends Error {
  override readonly name = 'DecodeError';
  constructor(
    message: string,
    /** Where in the batch: e.g. `events[2].token_ids[5]`. Empty for the payload itself. */
    readonly path: string = '',
  ) {
    super(path ? `${path}: ${message}` : message);
  }
}

export type EventEncoding = 'map' | 'array';

/**
 * Array layout of BlockStored after `medium`: vLLM has `lora_name, extra_keys, …`,
 * SGLang `cache_salt, session_id`. `auto` reads SGLang's when element 8 is a string
 * (vLLM's extra_keys is never one).
 */
export type ArrayLayout = 'vllm' | 'sglang' | 'auto';

export interface DecodeOptions {
  arrayLayout?: ArrayLayout;
}

const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: 'bigint', moreTypes: false });

const STORED_OPTIONAL = [
  'extra_keys', 'group_idx', 'kv_cache_spec_kind', 'kv_cache_spec_sliding_window', 'locality', 'ownership', 'session_id',
] as const;
const REMOVED_OPTIONAL = ['group_idx', 'locality', 'ownership'] as const;

// ---------------------------------------------------------------------------- decode

/**
 * Decodes a batch: the exact-shape decoder (shape-decoder.ts) for the batches publishers send,
 * then the shape-specific decoder (batch-decoder.ts) for the other shapes they may send, then the
 * reference decoder for everything else, which also decides every rejection. All three give
 * the same result for what they accept.
 */
export function decodeBatch(payload: Uint8Array, opts: DecodeOptions = {}): KVEventBatch {
  const layout = opts.arrayLayout ?? 'auto';
  return decodeBatchShape(payload, layout) ?? tryDecodeBatchFast(payload, layout) ?? decodeBatchReference(payload, opts);
}

/**
 * decodeBatch without the exact-shape decoder (what decodeBatch was before it): kept as the
 * baseline that benchmarks and property tests compare the exact-shape decoder with.
 */
export function decodeBatchGeneral(payload: Uint8Array, opts: DecodeOptions = {}): KVEventBatch {
  return tryDecodeBatchFast(payload, opts.arrayLayout ?? 'auto') ?? decodeBatchReference(payload, opts);
}

/** The generic decoder (msgpackr, then field checks): the definition of what a batch is. */
export function decodeBatchReference(payload: Uint8Array, opts: DecodeOptions = {}): KVEventBatch {
  let raw: unknown;
  try {
    raw = unpackr.unpack(payload);
  } catch (err) {
    const why = err instanceof RangeError && /call stack/i.test(err.message) ? 'nested too deeply' : (err as Error).message;
    throw new DecodeError(`not valid MessagePack (${payload.byteLength} bytes): ${why}`);
  }
  return readBatch(raw, opts.arrayLayout ?? 'auto');
}

function readBatch(raw: unknown, layout: ArrayLayout): KVEventBatch {
  let ts: unknown, events: unknown, rank: unknown;
  if (Array.isArray(raw)) {
    if (raw.length < 2) throw new DecodeError(`batch must be an array of 2 or 3 elements, got ${raw.length}`);
    [ts, events, rank] = raw;
  } else if (isPlainObject(raw)) {
    ts = raw.ts;
    events = raw.events;
    rank = raw.data_parallel_rank ?? raw.attn_dp_rank;
  } else {
    throw new DecodeError(`batch must be an array, got ${describe(raw)}`);
  }
  if (typeof ts === 'bigint') ts = Number(ts);
  if (typeof ts !== 'number') throw new DecodeError(`expected a number, got ${describe(ts)}`, 'ts');
  if (!Array.isArray(events)) throw new DecodeError(`expected an array, got ${describe(events)}`, 'events');
  return {
    ts,
    events: events.map((e, i) => readEvent(e, `events[${i}]`, layout)),
    dp_rank: optInt(rank, 'dp_rank'),
  };
}

function readEvent(raw: unknown, path: string, layout: ArrayLayout): KVEvent {
  if (Array.isArray(raw)) return readArrayEvent(raw, path, layout);
  if (isPlainObject(raw)) return readMapEvent(raw, path);
  throw new DecodeError(`event must be a map or an array, got ${describe(raw)}`, path);
}

function readMapEvent(m: Record<string, unknown>, path: string): KVEvent {
  const tag = m.type;
  switch (tag) {
    case 'BlockStored': {
      const ev: BlockStored = {
        type: 'BlockStored',
        block_hashes: hashList(required(m, 'block_hashes', path), `${path}.block_hashes`),
        parent_block_hash: optHash(m.parent_block_hash, `${path}.parent_block_hash`),
        token_ids: intList(required(m, 'token_ids', path), `${path}.token_ids`),
        block_size: positiveInt(required(m, 'block_size', path), `${path}.block_size`),
        lora_id: optInt(m.lora_id, `${path}.lora_id`),
        medium: optStr(m.medium, `${path}.medium`),
        lora_name: optStr(m.lora_name, `${path}.lora_name`),
      };
      for (const k of STORED_OPTIONAL) if (m[k] !== undefined) (ev as unknown as Record<string, unknown>)[k] = m[k];
      if ('cache_salt' in m) ev.cache_salt = optStr(m.cache_salt, `${path}.cache_salt`);
      return checkStoredOptional(ev, path);
    }
    case 'BlockRemoved': {
      const ev: BlockRemoved = {
        type: 'BlockRemoved',
        block_hashes: hashList(required(m, 'block_hashes', path), `${path}.block_hashes`),
        medium: optStr(m.medium, `${path}.medium`),
      };
      for (const k of REMOVED_OPTIONAL) if (m[k] !== undefined) (ev as unknown as Record<string, unknown>)[k] = m[k];
      return checkRemovedOptional(ev, path);
    }
    case 'AllBlocksCleared':
      return { type: 'AllBlocksCleared' };
    default:
      throw new DecodeError(`unknown event type ${describe(tag)}`, `${path}.type`);
  }
}

function readArrayEvent(a: unknown[], path: string, layout: ArrayLayout): KVEvent {
  const tag = a[0];
  const f = (i: number) => `${path}[${i}]`;
  switch (tag) {
    case 'BlockStored': {
      if (a.length < 5) throw new DecodeError(`BlockStored needs at least 4 fields, got ${a.length - 1}`, path);
      const ev: BlockStored = {
        type: 'BlockStored',
        block_hashes: hashList(a[1], f(1)),
        parent_block_hash: optHash(a[2], f(2)),
        token_ids: intList(a[3], f(3)),
        block_size: positiveInt(a[4], f(4)),
        lora_id: optInt(a[5], f(5)),
        medium: optStr(a[6], f(6)),
        lora_name: null,
      };
      const sglang = layout === 'sglang' || (layout === 'auto' && typeof a[8] === 'string');
      if (sglang) {
        if (a[7] != null) ev.cache_salt = optStr(a[7], f(7));
        if (a[8] != null) ev.session_id = optStr(a[8], f(8));
      } else {
        ev.lora_name = optStr(a[7], f(7));
        STORED_OPTIONAL.forEach((k, i) => {
          const v = a[8 + i];
          if (v !== undefined && v !== null) (ev as unknown as Record<string, unknown>)[k] = v;
        });
      }
      return checkStoredOptional(ev, path);
    }
    case 'BlockRemoved': {
      if (a.length < 2) throw new DecodeError('BlockRemoved needs block_hashes', path);
      const ev: BlockRemoved = { type: 'BlockRemoved', block_hashes: hashList(a[1], f(1)), medium: optStr(a[2], f(2)) };
      REMOVED_OPTIONAL.forEach((k, i) => {
        const v = a[3 + i];
        if (v !== undefined && v !== null) (ev as unknown as Record<string, unknown>)[k] = v;
      });
      return checkRemovedOptional(ev, path);
    }
    case 'AllBlocksCleared':
      return { type: 'AllBlocksCleared' };
    default:
      throw new DecodeError(`unknown event type ${describe(tag)}`, `${path}[0]`);
  }
}

function checkStoredOptional(ev: BlockStored, path: string): BlockStored {
  if (ev.group_idx !== undefined) ev.group_idx = optInt(ev.group_idx, `${path}.group_idx`);
  if (ev.kv_cache_spec_kind !== undefined) ev.kv_cache_spec_kind = optStr(ev.kv_cache_spec_kind, `${path}.kv_cache_spec_kind`);
  if (ev.kv_cache_spec_sliding_window !== undefined)
    ev.kv_cache_spec_sliding_window = optInt(ev.kv_cache_spec_sliding_window, `${path}.kv_cache_spec_sliding_window`);
  if (ev.session_id !== undefined) ev.session_id = optStr(ev.session_id, `${path}.session_id`);
  return ev;
}

function checkRemovedOptional(ev: BlockRemoved, path: string): BlockRemoved {
  if (ev.group_idx !== undefined) ev.group_idx = optInt(ev.group_idx, `${path}.group_idx`);
  return ev;
}

function required(m: Record<string, unknown>, key: string, path: string): unknown {
  if (!(key in m)) throw new DecodeError(`missing required field`, `${path}.${key}`);
  return m[key];
}

function toHash(v: unknown, path: string): BlockHash {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number' && Number.isInteger(v)) return BigInt(v);
  if (v instanceof Uint8Array) return Uint8Array.from(v);
  throw new DecodeError(`block hash must be an int or bytes, got ${describe(v)}`, path);
}

function optHash(v: unknown, path: string): BlockHash | null {
  return v === null || v === undefined ? null : toHash(v, path);
}

function hashList(v: unknown, path: string): BlockHash[] {
  if (!Array.isArray(v)) throw new DecodeError(`expected a list of block hashes, got ${describe(v)}`, path);
  return v.map((h, i) => toHash(h, `${path}[${i}]`));
}

function intList(v: unknown, path: string): number[] {
  if (!Array.isArray(v)) throw new DecodeError(`expected a list of ints, got ${describe(v)}`, path);
  for (let i = 0; i < v.length; i++) {
    const x = v[i];
    if (typeof x !== 'number' || !Number.isInteger(x)) {
      if (typeof x === 'bigint' && x >= BigInt(Number.MIN_SAFE_INTEGER) && x <= BigInt(Number.MAX_SAFE_INTEGER)) {
        v[i] = Number(x);
        continue;
      }
      throw new DecodeError(`expected an int, got ${describe(x)}`, `${path}[${i}]`);
    }
  }
  return v as number[];
}

function positiveInt(v: unknown, path: string): number {
  if (typeof v === 'bigint') v = Number(v);
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw new DecodeError(`expected a positive int, got ${describe(v)}`, path);
  return v;
}

function optInt(v: unknown, path: string): number | null {
  if (v === null || v === undefined) return null;
  if (typeof v === 'bigint' && v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(v);
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new DecodeError(`expected an int or nil, got ${describe(v)}`, path);
  return v;
}

function optStr(v: unknown, path: string): string | null {
  if (v === null || v === undefined) return null;
  if (typeof v !== 'string') throw new DecodeError(`expected a string or nil, got ${describe(v)}`, path);
  return v;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  // A decoded map is a plain object; msgpackr also returns objects for 0xc1 (never used) and timestamps.
  if (typeof v !== 'object' || v === null) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

function describe(v: unknown): string {
  if (v === null) return 'nil';
  if (v === undefined) return 'nothing';
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (v instanceof Uint8Array) return `${v.byteLength} bytes`;
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v)}`;
  if (typeof v === 'object') return v instanceof Date ? 'a timestamp extension' : isPlainObject(v) ? 'a map' : 'an invalid MessagePack value';
  return `${typeof v} ${String(v)}`;
}

// ---------------------------------------------------------------------------- encode

export interface EncodeOptions {
  /** `map` (current vLLM, SGLang since late 2026) or `array` (legacy tagged arrays). */
  encoding?: EventEncoding;
}

export function encodeBatch(batch: KVEventBatch, opts: EncodeOptions = {}): Buffer {
  const w = new MsgpackWriter(64 + batch.events.length * 96);
  const withRank = batch.dp_rank !== null && batch.dp_rank !== undefined;
  w.arrayHeader(withRank ? 3 : 2);
  w.float64(batch.ts);
  w.arrayHeader(batch.events.length);
  const asArray = opts.encoding === 'array';
  for (const ev of batch.events) (asArray ? writeArrayEvent : writeMapEvent)(w, ev);
  if (withRank) w.int(batch.dp_rank as number);
  return w.bytes();
}

function writeHash(w: MsgpackWriter, h: BlockHash | null): void {
  if (h === null) w.nil();
  else if (typeof h === 'bigint') w.bigint(h);
  else w.bin(h);
}

function writeHashes(w: MsgpackWriter, hs: BlockHash[]): void {
  w.arrayHeader(hs.length);
  for (const h of hs) writeHash(w, h);
}

function writeInts(w: MsgpackWriter, xs: number[]): void {
  w.arrayHeader(xs.length);
  for (const x of xs) w.int(x);
}

function present(ev: object, keys: readonly string[]): string[] {
  const r = ev as Record<string, unknown>;
  return keys.filter((k) => r[k] !== undefined && r[k] !== null);
}

function writeMapEvent(w: MsgpackWriter, ev: KVEvent): void {
  switch (ev.type) {
    case 'BlockStored': {
      const extra = present(ev, ['cache_salt', ...STORED_OPTIONAL]);
      w.mapHeader(8 + extra.length);
      w.str('type'); w.str('BlockStored');
      w.str('block_hashes'); writeHashes(w, ev.block_hashes);
      w.str('parent_block_hash'); writeHash(w, ev.parent_block_hash);
      w.str('token_ids'); writeInts(w, ev.token_ids);
      w.str('block_size'); w.int(ev.block_size);
      w.str('lora_id'); w.value(ev.lora_id);
      w.str('medium'); w.value(ev.medium);
      w.str('lora_name'); w.value(ev.lora_name);
      for (const k of extra) { w.str(k); w.value((ev as unknown as Record<string, unknown>)[k]); }
      return;
    }
    case 'BlockRemoved': {
      const extra = present(ev, REMOVED_OPTIONAL);
      w.mapHeader(3 + extra.length);
      w.str('type'); w.str('BlockRemoved');
      w.str('block_hashes'); writeHashes(w, ev.block_hashes);
      w.str('medium'); w.value(ev.medium);
      for (const k of extra) { w.str(k); w.value((ev as unknown as Record<string, unknown>)[k]); }
      return;
    }
    case 'AllBlocksCleared':
      w.mapHeader(1);
      w.str('type'); w.str('AllBlocksCleared');
      return;
  }
}

/**
 * Legacy array form: the required fields in order, then the optional ones up to the last one set.
 * msgspec writes every field of an array_like struct; publishers that used this form only had the
 * required ones, so our bytes equal theirs, and decoders ignore extra trailing elements.
 */
function writeArrayEvent(w: MsgpackWriter, ev: KVEvent): void {
  switch (ev.type) {
    case 'BlockStored': {
      const r = ev as unknown as Record<string, unknown>;
      const opt = STORED_OPTIONAL.map((k) => r[k]);
      let n = opt.length;
      while (n > 0 && (opt[n - 1] === undefined || opt[n - 1] === null)) n--;
      w.arrayHeader(8 + n);
      w.str('BlockStored');
      writeHashes(w, ev.block_hashes);
      writeHash(w, ev.parent_block_hash);
      writeInts(w, ev.token_ids);
      w.int(ev.block_size);
      w.value(ev.lora_id);
      w.value(ev.medium);
      w.value(ev.lora_name);
      for (let i = 0; i < n; i++) w.value(opt[i]);
      return;
    }
    case 'BlockRemoved': {
      const r = ev as unknown as Record<string, unknown>;
      const opt = REMOVED_OPTIONAL.map((k) => r[k]);
      let n = opt.length;
      while (n > 0 && (opt[n - 1] === undefined || opt[n - 1] === null)) n--;
      w.arrayHeader(3 + n);
      w.str('BlockRemoved');
      writeHashes(w, ev.block_hashes);
      w.value(ev.medium);
      for (let i = 0; i < n; i++) w.value(opt[i]);
      return;
    }
    case 'AllBlocksCleared':
      w.arrayHeader(1);
      w.str('AllBlocksCleared');
      return;
  }
}
