/** The line formats of `kv-events tail`, without sockets. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { batchLineHuman, batchLineJson, COLOUR, noticeLineHuman, noticeLineJson, PLAIN } from '../../src/cli/format.js';
import type { StreamNotice } from '../../src/events/subscriber.js';
import type { KVEventBatch } from '../../src/events/types.js';

const NOTICES: [StreamNotice, string, string][] = [
  [{ notice: 'gap', expected: 5n, got: 9n }, '!! gap: expected #5, got #9', '{"notice":"gap","expected":5,"got":9}'],
  [{ notice: 'replay', from: 5n, to: 8n, batches: 4 }, '!! replayed #5..#8 (4 batches)', '{"notice":"replay","from":5,"to":8,"batches":4}'],
  [{ notice: 'replay', from: 0n, to: 0n, batches: 1 }, '!! replayed #0..#0 (1 batch)', '{"notice":"replay","from":0,"to":0,"batches":1}'],
  [{ notice: 'reset', reason: 'restart', lastSeq: 5000n, seq: 0n }, '!! reset: publisher restarted (seq went from #5000 back to #0); its cache is gone',
    '{"notice":"reset","reason":"restart","last_seq":5000,"seq":0}'],
  [{ notice: 'history_missing', reason: 'buffer_exceeded', from: 3n, resumedAt: 120n }, '!! history missing (buffer_exceeded) from #3, resumed at #120',
    '{"notice":"history_missing","reason":"buffer_exceeded","from":3,"resumed_at":120}'],
  [{ notice: 'history_missing', reason: 'replay_timeout', from: 3n, resumedAt: null }, '!! history missing (replay_timeout) from #3',
    '{"notice":"history_missing","reason":"replay_timeout","from":3,"resumed_at":null}'],
];

test('notices: human lines, highlighted only with colour, and JSON lines', () => {
  for (const [n, human, json] of NOTICES) {
    assert.equal(noticeLineHuman(n, PLAIN), human);
    assert.match(noticeLineHuman(n, COLOUR), /^\x1b\[1;3[13]m!! .*\x1b\[0m$/);
    assert.equal(noticeLineJson(n), json);
  }
});

test('batch lines: seq beyond 2^53 stays exact in JSON; bytes hashes as 0x hex; extra fields kept', () => {
  const batch: KVEventBatch = {
    ts: 1790000000.5,
    dp_rank: null,
    events: [
      { type: 'BlockStored', block_hashes: [Uint8Array.from([0xde, 0xad, 0xbe, 0xef, 1])], parent_block_hash: -1n, token_ids: [1],
        block_size: 1, lora_id: 2, medium: null, lora_name: null, extra_keys: [['x', 10n ** 20n], null], cache_salt: 'salt' },
    ],
  };
  const j = JSON.parse(batchLineJson(2n ** 60n, '', batch, false));
  assert.equal(j.seq, '1152921504606846976');
  assert.equal(j.dp_rank, null);
  assert.ok(!('replayed' in j));
  assert.deepEqual(j.events[0].block_hashes, ['0xdeadbeef01']);
  assert.equal(j.events[0].parent_block_hash, '-1');
  assert.deepEqual(j.events[0].extra_keys, [['x', '100000000000000000000'], null]);
  assert.equal(j.events[0].cache_salt, 'salt');
  assert.equal(
    batchLineHuman(7n, '', batch, false, PLAIN),
    '#7 2026-09-21 14:13:20.500 rank - | BlockStored 1 block [adbeef01] parent ffffffff 1 token lora #2',
  );
  assert.equal(batchLineHuman(8n, 't', { ts: 0, dp_rank: 1, events: [] }, true, PLAIN), '#8 1970-01-01 00:00:00.000 rank 1 t (replayed) | (no events)');
  const many = { ts: 0, dp_rank: 0, events: [{ type: 'BlockRemoved' as const, block_hashes: [1n, 2n, 3n, 4n, 5n, 6n], medium: null }] };
  assert.match(batchLineHuman(1n, '', many, false, PLAIN), /BlockRemoved 6 blocks \[00000001 00000002 00000003 00000004 …\+2\]$/);
});
