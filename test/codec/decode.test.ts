/**
 * What the decoder accepts (everything vLLM and SGLang send, old and new) and
 * what it rejects: always a DecodeError whose path names the offending spot.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeBatch, DecodeError } from '../../src/events/codec.js';
import { MsgpackWriter } from '../../src/events/msgpack-writer.js';
import type { BlockRemoved, BlockStored } from '../../src/events/types.js';

/** MessagePack of a plain value (objects → maps, arrays → arrays, bigint → int, Uint8Array → bin). */
function mp(v: unknown): Buffer {
  const w = new MsgpackWriter();
  w.value(v);
  return w.bytes();
}

const TS = 1790000000.5;
const U64 = 17270480062156288726n;
const stored = (over: Record<string, unknown> = {}) => ({
  type: 'BlockStored', block_hashes: [U64, -3n], parent_block_hash: null, token_ids: [1, 2, 3, 4], block_size: 2,
  lora_id: null, medium: 'GPU', lora_name: null, ...over,
});
const storedArray = ['BlockStored', [U64, -3n], null, [1, 2, 3, 4], 2, null, 'GPU', null];

function first<T>(payload: unknown[] | Record<string, unknown>): T {
  return decodeBatch(mp(payload)).events[0] as T;
}

// ---------------------------------------------------------------------------- accepted

test('map events: every field read, hashes exact', () => {
  const ev = first<BlockStored>([TS, [stored({ parent_block_hash: 5n })], 0]);
  assert.deepEqual(ev, { ...stored({ parent_block_hash: 5n }) });
  assert.equal(typeof ev.block_hashes[0], 'bigint');
});

test('array events: every field read, in order', () => {
  const ev = first<BlockStored>([TS, [storedArray], 0]);
  assert.deepEqual(ev, stored());
  assert.deepEqual(first([TS, [['BlockRemoved', [1n, 2n], 'CPU']], 0]), { type: 'BlockRemoved', block_hashes: [1n, 2n], medium: 'CPU' });
  assert.deepEqual(first([TS, [['AllBlocksCleared']], 0]), { type: 'AllBlocksCleared' });
});

test('batches of 2 elements (no rank) and 3 (rank or nil)', () => {
  assert.deepEqual(decodeBatch(mp([TS, []])), { ts: TS, events: [], dp_rank: null });
  assert.deepEqual(decodeBatch(mp([TS, [], null])), { ts: TS, events: [], dp_rank: null });
  assert.deepEqual(decodeBatch(mp([TS, [], 7])), { ts: TS, events: [], dp_rank: 7 });
});

test('extra trailing batch elements are ignored', () => {
  assert.deepEqual(decodeBatch(mp([TS, [], 1, 'future', { x: 1 }])), { ts: TS, events: [], dp_rank: 1 });
});

test('an int timestamp is read as a number', () => {
  assert.equal(decodeBatch(mp([1790000000, []])).ts, 1790000000);
});

test('unknown map keys are ignored', () => {
  const ev = first<BlockStored>([TS, [stored({ some_future_field: [1, 2], another: { a: 1 } })], 0]);
  assert.deepEqual(ev, stored());
  assert.deepEqual(first([TS, [{ type: 'AllBlocksCleared', reason: 'reset' }], 0]), { type: 'AllBlocksCleared' });
});

test('extra trailing event elements are ignored', () => {
  const long = [...storedArray, null, 1, 'full', 128, 'LOCAL', 'tier', 'sess', 'future-1', 'future-2'];
  const ev = first<BlockStored>([TS, [long], 0]);
  assert.equal(ev.group_idx, 1);
  assert.equal(ev.session_id, 'sess');
  assert.ok(!Object.values(ev).includes('future-1'));
  assert.deepEqual(first([TS, [['BlockRemoved', [1n], null, 3, 'REMOTE', 'x', 'future']], 0]), {
    type: 'BlockRemoved', block_hashes: [1n], medium: null, group_idx: 3, locality: 'REMOTE', ownership: 'x',
  });
  assert.deepEqual(first([TS, [['AllBlocksCleared', 'future']], 0]), { type: 'AllBlocksCleared' });
});

test('missing optional fields default to nil (map: omitted; array: very old publishers stop early)', () => {
  // map: msgspec omits defaults; even lora_id/medium/lora_name and parent may be absent from old producers
  const ev = first<BlockStored>([TS, [{ type: 'BlockStored', block_hashes: [1n], token_ids: [1, 2], block_size: 2 }], 0]);
  assert.deepEqual(ev, { type: 'BlockStored', block_hashes: [1n], parent_block_hash: null, token_ids: [1, 2], block_size: 2,
    lora_id: null, medium: null, lora_name: null });
  assert.equal(ev.group_idx, undefined);
  // array: stops after lora_id (very old vLLM), or after block_size
  assert.deepEqual(first([TS, [['BlockStored', [1n], 9n, [1, 2], 2, 4]], 0]), { type: 'BlockStored', block_hashes: [1n],
    parent_block_hash: 9n, token_ids: [1, 2], block_size: 2, lora_id: 4, medium: null, lora_name: null });
  assert.equal(first<BlockStored>([TS, [['BlockStored', [1n], null, [1, 2], 2]], 0]).lora_id, null);
  assert.deepEqual(first([TS, [['BlockRemoved', [1n]]], 0]), { type: 'BlockRemoved', block_hashes: [1n], medium: null });
  assert.deepEqual(first([TS, [{ type: 'BlockRemoved', block_hashes: [] }], 0]), { type: 'BlockRemoved', block_hashes: [], medium: null });
});

test('optional fields present in map events are kept', () => {
  const over = { extra_keys: [['lora-a', 1], null], group_idx: 2, kv_cache_spec_kind: 'full', kv_cache_spec_sliding_window: 4096,
    locality: 'LOCAL', ownership: 'tier-2', session_id: 's1' };
  assert.deepEqual(first([TS, [stored(over)], 0]), stored(over));
});

test('SGLang array layout: cache_salt and session_id after medium', () => {
  const sg = ['BlockStored', [-5n], -4n, [1, 2], 2, null, 'GPU', 'salt', 'session-9'];
  const ev = first<BlockStored>([TS, [sg], 0]);
  assert.equal(ev.cache_salt, 'salt');
  assert.equal(ev.session_id, 'session-9');
  assert.equal(ev.lora_name, null);
  assert.equal(ev.extra_keys, undefined);
  // With only a cache_salt, auto-detection reads vLLM's layout (lora_name); the explicit option reads SGLang's.
  const saltOnly = mp([TS, [['BlockStored', [-5n], null, [1, 2], 2, null, 'GPU', 'salt']], 0]);
  assert.equal((decodeBatch(saltOnly).events[0] as BlockStored).lora_name, 'salt');
  const explicit = decodeBatch(saltOnly, { arrayLayout: 'sglang' }).events[0] as BlockStored;
  assert.equal(explicit.cache_salt, 'salt');
  assert.equal(explicit.lora_name, null);
  const vllm = decodeBatch(mp([TS, [sg], 0]), { arrayLayout: 'vllm' }).events[0] as BlockStored;
  assert.equal(vllm.lora_name, 'salt');
});

test('SGLang map batch with attn_dp_rank', () => {
  assert.equal(decodeBatch(mp({ ts: TS, events: [], attn_dp_rank: 3 })).dp_rank, 3);
  assert.equal(decodeBatch(mp({ ts: TS, events: [], data_parallel_rank: 1 })).dp_rank, 1);
});

test('hash kinds: u64 ≥ 2^63, i64 negative, small ints, bytes — never a JS number', () => {
  const digest = new Uint8Array(32).fill(0xab);
  const ev = first<BlockRemoved>([TS, [{ type: 'BlockRemoved', block_hashes: [(1n << 64n) - 1n, -(1n << 63n), 0n, 200n, digest], medium: null }], 0]);
  assert.deepEqual(ev.block_hashes, [(1n << 64n) - 1n, -(1n << 63n), 0n, 200n, digest]);
  for (const h of ev.block_hashes) assert.ok(typeof h === 'bigint' || h instanceof Uint8Array);
});

// ---------------------------------------------------------------------------- rejected

function rejects(payload: Uint8Array, path: string | RegExp, message?: RegExp): void {
  assert.throws(
    () => decodeBatch(payload),
    (err: unknown) => {
      assert.ok(err instanceof DecodeError, `expected a DecodeError, got ${(err as Error)?.constructor?.name}: ${err}`);
      if (typeof path === 'string') assert.equal(err.path, path, `path of: ${err.message}`);
      else assert.match(err.path, path);
      if (message) assert.match(err.message, message);
      return true;
    },
  );
}

test('unknown event tags', () => {
  rejects(mp([TS, [stored(), { type: 'BlockMoved' }], 0]), 'events[1].type', /unknown event type/);
  rejects(mp([TS, [['BlockMoved', [1n]]], 0]), 'events[0][0]', /unknown event type/);
  rejects(mp([TS, [{ block_hashes: [1n] }], 0]), 'events[0].type');
  rejects(mp([TS, [[]], 0]), 'events[0][0]');
});

test('wrong types name the offending path', () => {
  rejects(mp(['yesterday', [], 0]), 'ts');
  rejects(mp([TS, { a: 1 }, 0]), 'events');
  rejects(mp([TS, [], 'zero']), 'dp_rank');
  rejects(mp([TS, [], 1.5]), 'dp_rank');
  rejects(mp([TS, ['BlockStored'], 0]), 'events[0]', /map or an array/);
  rejects(mp([TS, [stored({ block_hashes: 5n })], 0]), 'events[0].block_hashes');
  rejects(mp([TS, [stored({ block_hashes: [1n, 'abc'] })], 0]), 'events[0].block_hashes[1]');
  rejects(mp([TS, [stored({ block_hashes: [1.5] })], 0]), 'events[0].block_hashes[0]');
  rejects(mp([TS, [stored({ parent_block_hash: 'x' })], 0]), 'events[0].parent_block_hash');
  rejects(mp([TS, [stored({ token_ids: [1, 'two', 3] })], 0]), 'events[0].token_ids[1]');
  rejects(mp([TS, [stored({ token_ids: [1, 2.5] })], 0]), 'events[0].token_ids[1]');
  rejects(mp([TS, [stored({ block_size: 0 })], 0]), 'events[0].block_size');
  rejects(mp([TS, [stored({ block_size: 'sixteen' })], 0]), 'events[0].block_size');
  rejects(mp([TS, [stored({ lora_id: 'a' })], 0]), 'events[0].lora_id');
  rejects(mp([TS, [stored({ medium: 1 })], 0]), 'events[0].medium');
  rejects(mp([TS, [stored({ lora_name: [] })], 0]), 'events[0].lora_name');
  rejects(mp([TS, [stored({ group_idx: 'g' })], 0]), 'events[0].group_idx');
  rejects(mp([TS, [stored({ session_id: 5 })], 0]), 'events[0].session_id');
  rejects(mp([TS, [{ type: 'BlockRemoved', block_hashes: [1n], medium: null, group_idx: 1.5 }], 0]), 'events[0].group_idx');
  rejects(mp([TS, [['BlockStored', [1n], null, [1], 1, null, 7]], 0]), 'events[0][6]');
  rejects(mp([TS, [['BlockRemoved', 'x']], 0]), 'events[0][1]');
});

test('missing required fields', () => {
  rejects(mp([TS, [{ type: 'BlockStored', token_ids: [1], block_size: 1 }], 0]), 'events[0].block_hashes', /missing/);
  rejects(mp([TS, [{ type: 'BlockStored', block_hashes: [1n], block_size: 1 }], 0]), 'events[0].token_ids', /missing/);
  rejects(mp([TS, [{ type: 'BlockStored', block_hashes: [1n], token_ids: [1] }], 0]), 'events[0].block_size', /missing/);
  rejects(mp([TS, [{ type: 'BlockRemoved' }], 0]), 'events[0].block_hashes', /missing/);
  rejects(mp([TS, [['BlockStored', [1n], null, [1]]], 0]), 'events[0]', /at least 4 fields/);
  rejects(mp([TS, [['BlockRemoved']], 0]), 'events[0]');
});

test('not a batch', () => {
  rejects(mp('hello'), '', /must be an array/);
  rejects(mp(42), '');
  rejects(mp([TS]), '', /2 or 3/);
  rejects(mp([]), '');
});

test('truncated MessagePack', () => {
  const whole = mp([TS, [stored(), storedArray], 0]);
  for (const n of [0, 1, 5, 9, 10, 20, whole.length - 1]) rejects(whole.subarray(0, n), '', /not valid MessagePack/);
});

test('garbage bytes', () => {
  rejects(Buffer.from([0xc1]), '', /invalid MessagePack value|must be an array/);
  rejects(Buffer.from([0x92, 0xc1, 0x90]), 'ts');
  rejects(Buffer.from([0x93, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0, 0x91, 0xc1, 0x00]), 'events[0]');
  rejects(Buffer.from('this is not msgpack at all, just text', 'utf8'), /.*/);
  rejects(Buffer.from([0x92, 0xd4, 0x01, 0x00, 0x90]), '', /not valid MessagePack/); // extension type
  rejects(Buffer.from([0x92, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0, 0x90, 0x00]), '', /not valid MessagePack/); // trailing bytes
  let seed = 12345;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) >> 8) & 0xff;
  for (let i = 0; i < 300; i++) {
    const junk = Buffer.from(Array.from({ length: 1 + (i % 40) }, rnd));
    try {
      decodeBatch(junk);
    } catch (err) {
      assert.ok(err instanceof DecodeError, `random bytes ${junk.toString('hex')} threw ${(err as Error).constructor.name}: ${err}`);
    }
  }
});

test('deep nesting is refused, not a stack overflow', () => {
  const depth = 200_000;
  const nested = Buffer.concat([Buffer.from([0x92, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0]), Buffer.alloc(depth, 0x91), Buffer.from([0x90])]);
  rejects(nested, /.*/);
  const maps = Buffer.concat([Buffer.from([0x92, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0, 0x91]), Buffer.alloc(depth, 0x81), Buffer.from([0xc0])]);
  rejects(maps, /.*/);
});

test('huge length headers are refused at once, without allocating', () => {
  const head = [0x92, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0];
  const started = Date.now();
  for (const h of [
    [0xdd, 0xff, 0xff, 0xff, 0xff], // array32 of 4G elements
    [0xdf, 0xff, 0xff, 0xff, 0xff], // map32
    [0xdb, 0xff, 0xff, 0xff, 0xff], // str32
    [0xc6, 0xff, 0xff, 0xff, 0xff], // bin32
    [0xdc, 0xff, 0xff], // array16
  ]) {
    rejects(Buffer.concat([Buffer.from([...head, ...h]), Buffer.alloc(64)]), '', /not valid MessagePack/);
  }
  assert.ok(Date.now() - started < 1000, 'rejected quickly');
});
