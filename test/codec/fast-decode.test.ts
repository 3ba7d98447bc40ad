/**
 * The shape-specific decoder (batch-decoder.ts) against the reference decoder:
 * on every input it either gives up (the reference decides) or returns exactly
 * what the reference returns; it never accepts what the reference rejects.
 * Random valid and broken payloads, the msgspec golden fixtures, and a check
 * that it does handle the common shapes itself rather than giving up on them.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { tryDecodeBatchFast } from '../../src/events/batch-decoder.js';
import { decodeBatch, decodeBatchReference, DecodeError, encodeBatch } from '../../src/events/codec.js';
import type { KVEventBatch } from '../../src/events/types.js';
import { batchOf } from '../helpers/events.js';
import { invalidBatch, Rng, validBatch, type Layout } from './random-payloads.js';

type Outcome = { ok: true; batch: KVEventBatch } | { ok: false; err: unknown };

function run(f: () => KVEventBatch): Outcome {
  try {
    return { ok: true, batch: f() };
  } catch (err) {
    return { ok: false, err };
  }
}

/** Checks the property on one payload; returns whether the fast decoder handled it itself. */
function check(payload: Uint8Array, layout: Layout, label: string): { handled: boolean; accepted: boolean } {
  const ref = run(() => decodeBatchReference(payload, { arrayLayout: layout }));
  const fast = tryDecodeBatchFast(payload, layout);
  const viaEntry = run(() => decodeBatch(payload, { arrayLayout: layout }));
  const hex = Buffer.from(payload).toString('hex');
  if (ref.ok) {
    if (fast !== undefined) assert.deepStrictEqual(fast, ref.batch, `${label}: fast ≠ reference for ${hex} (${layout})`);
    assert.ok(viaEntry.ok, `${label}: decodeBatch rejected what the reference accepts: ${hex}`);
    assert.deepStrictEqual(viaEntry.batch, ref.batch);
  } else {
    assert.ok(ref.err instanceof DecodeError, `${label}: reference threw ${String(ref.err)} for ${hex}`);
    assert.equal(fast, undefined, `${label}: fast accepted what the reference rejects (${(ref.err as Error).message}): ${hex} (${layout})`);
    assert.ok(!viaEntry.ok && viaEntry.err instanceof DecodeError, `${label}: decodeBatch did not reject with a DecodeError: ${hex}`);
  }
  return { handled: fast !== undefined, accepted: ref.ok };
}

test('random valid payloads: fast output equals the reference', () => {
  const rng = new Rng(0x5eed1);
  let handled = 0;
  let accepted = 0;
  const N = 1500;
  for (let i = 0; i < N; i++) {
    const b = validBatch(rng);
    const r = check(b.payload, b.layout, `valid #${i}`);
    if (r.handled) handled++;
    if (r.accepted) accepted++;
  }
  // The generator mixes in what only the reference reads (non-ASCII, extensions, floats for ints);
  // most payloads must still go through the fast path, or this test would check nothing.
  assert.ok(accepted > N * 0.9, `the reference accepted only ${accepted}/${N} "valid" payloads`);
  assert.ok(handled > N * 0.4, `the fast decoder handled only ${handled}/${N}`);
});

test('random invalid payloads: both reject, or both accept the same batch', () => {
  const rng = new Rng(0xbad);
  let rejected = 0;
  const N = 2000;
  for (let i = 0; i < N; i++) {
    const b = invalidBatch(rng);
    if (!check(b.payload, b.layout, `invalid #${i}`).accepted) rejected++;
  }
  assert.ok(rejected > N * 0.5, `only ${rejected}/${N} broken payloads were rejected: the generator is too gentle`);
});

test('every prefix of a batch: rejected by both (truncation)', () => {
  const payload = encodeBatch({ ts: 1.5, dp_rank: 2, events: batchOf(3, 4) });
  for (let n = 0; n < payload.length; n++) {
    assert.equal(check(payload.subarray(0, n), 'auto', `prefix ${n}`).accepted, false);
  }
});

test('the common shapes go through the fast path (encodeBatch, both encodings)', () => {
  const digest = Uint8Array.from({ length: 32 }, (_, i) => i * 7);
  const batches: KVEventBatch[] = [
    { ts: 1790000000.25, dp_rank: 0, events: batchOf(1, 32) },
    { ts: 1, dp_rank: null, events: [{ type: 'AllBlocksCleared' }, { type: 'BlockRemoved', block_hashes: [-5n, digest], medium: 'GPU' }] },
    { ts: 2, dp_rank: 1, events: [{ type: 'BlockStored', block_hashes: [digest], parent_block_hash: digest, token_ids: [1, 2], block_size: 2,
      lora_id: 3, medium: null, lora_name: 'l', group_idx: 1, kv_cache_spec_kind: 'full', session_id: 's', extra_keys: [['a', 1]] }] },
  ];
  for (const batch of batches) {
    for (const encoding of ['map', 'array'] as const) {
      const payload = encodeBatch(batch, { encoding });
      assert.ok(check(payload, 'auto', encoding).handled, `fast decoder gave up on ${encoding}: ${payload.toString('hex')}`);
      assert.deepStrictEqual(tryDecodeBatchFast(payload), decodeBatchReference(payload));
    }
  }
});

test('msgspec golden fixtures: fast decoder reads them itself, equal to the reference', () => {
  const dir = join(import.meta.dirname, '..', 'fixtures', 'codec');
  const files = readdirSync(dir).filter((f) => f.endsWith('.json'));
  assert.ok(files.length >= 8);
  for (const f of files) {
    const g = JSON.parse(readFileSync(join(dir, f), 'utf8')) as { map_hex: string; array_hex: string };
    for (const hex of [g.map_hex, g.array_hex]) {
      const payload = Buffer.from(hex, 'hex');
      assert.ok(check(payload, 'auto', f).handled, `${f}: fast decoder gave up`);
    }
  }
});

test('bytes hashes are copies, not views into the payload', () => {
  const digest = new Uint8Array(32).fill(9);
  const payload = encodeBatch({ ts: 1, dp_rank: 0, events: [{ type: 'BlockRemoved', block_hashes: [digest], medium: null }] });
  const ev = tryDecodeBatchFast(payload)!.events[0]!;
  payload.fill(0);
  assert.ok(ev.type === 'BlockRemoved');
  const h = ev.block_hashes[0] as Uint8Array;
  assert.equal(Object.getPrototypeOf(h), Uint8Array.prototype);
  assert.deepStrictEqual(h, digest);
});
