/**
 * Golden bytes: our encoder must write, byte for byte, what msgspec writes with
 * the vLLM structs (test/fixtures/codec/*.json, made by test/python/golden.py),
 * in both event encodings; and our decoder must read those bytes back exactly.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { batchFromJson, batchToJson } from '../../src/cli/format.js';
import { decodeBatch, encodeBatch } from '../../src/events/codec.js';

const DIR = join(import.meta.dirname, '..', 'fixtures', 'codec');

interface Golden {
  about: string;
  batch: Parameters<typeof batchFromJson>[0];
  map_hex: string;
  array_hex: string;
}

const files = readdirSync(DIR).filter((f) => f.endsWith('.json')).sort();

test('golden fixtures are present', () => {
  assert.ok(files.length >= 8, `expected the golden fixtures in ${DIR}, found ${files.length}`);
});

for (const file of files) {
  const g = JSON.parse(readFileSync(join(DIR, file), 'utf8')) as Golden;
  const name = file.replace(/\.json$/, '');

  test(`${name}: map encoding is byte-exact (${g.about})`, () => {
    assert.equal(encodeBatch(batchFromJson(g.batch)).toString('hex'), g.map_hex);
    assert.equal(encodeBatch(batchFromJson(g.batch), { encoding: 'map' }).toString('hex'), g.map_hex);
  });

  test(`${name}: array encoding is byte-exact`, () => {
    assert.equal(encodeBatch(batchFromJson(g.batch), { encoding: 'array' }).toString('hex'), g.array_hex);
  });

  test(`${name}: both encodings decode back to the batch`, () => {
    for (const hex of [g.map_hex, g.array_hex]) {
      const decoded = decodeBatch(Buffer.from(hex, 'hex'));
      assert.deepEqual(batchToJson(decoded), g.batch);
    }
  });
}

test('hashes keep their exact value and kind through a round trip', () => {
  const big = (1n << 64n) - 1n;
  const neg = -(1n << 63n);
  const digest = Uint8Array.from({ length: 32 }, (_, i) => i);
  const batch = {
    ts: 1.5,
    dp_rank: 0,
    events: [
      { type: 'BlockStored' as const, block_hashes: [big, neg, digest, 5n], parent_block_hash: 1n << 63n, token_ids: [1, 2],
        block_size: 2, lora_id: null, medium: 'GPU', lora_name: null },
    ],
  };
  for (const encoding of ['map', 'array'] as const) {
    const ev = decodeBatch(encodeBatch(batch, { encoding })).events[0]!;
    assert.equal(ev.type, 'BlockStored');
    if (ev.type !== 'BlockStored') return;
    assert.deepEqual(ev.block_hashes, [big, neg, digest, 5n]);
    assert.equal(typeof ev.block_hashes[3], 'bigint', 'small int hashes decode as bigint, never number');
    assert.equal(ev.parent_block_hash, 1n << 63n);
  }
});

test('the encoder refuses what msgspec would reject or what would lose precision', () => {
  const stored = (over: Record<string, unknown>) => ({
    ts: 1, dp_rank: 0,
    events: [{ type: 'BlockStored', block_hashes: [1n], parent_block_hash: null, token_ids: [1], block_size: 1,
      lora_id: null, medium: null, lora_name: null, ...over }],
  }) as never;
  assert.throws(() => encodeBatch(stored({ token_ids: [1.5] })), TypeError);
  assert.throws(() => encodeBatch(stored({ block_size: 2 ** 60 })), TypeError);
  assert.throws(() => encodeBatch(stored({ block_hashes: [1n << 64n] })), RangeError);
  assert.throws(() => encodeBatch(stored({ block_hashes: [-(1n << 63n) - 1n] })), RangeError);
});
