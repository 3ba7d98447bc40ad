// The hit-rate upper bound since start (router/observe/hit-bound.ts): one unlimited cache of every
// routed prompt, full blocks of the leading chain, the last token always computed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HitBound } from '../../router/observe/hit-bound.js';

const seq = (n: number, base: number) => Array.from({ length: n }, (_, i) => base + i);

test('a new prompt holds nothing; its repeat holds all but the last token; a shared head holds its full blocks', () => {
  const b = new HitBound();
  const p = seq(64, 100);
  assert.equal(b.observe(p, 16), 0);
  assert.equal(b.observe(p, 16), 63, 'the engine always computes the last token');
  assert.equal(b.observe([...seq(40, 100), ...seq(30, 9000)], 16), 32, 'two full blocks of the shared head');
  assert.equal(b.observe(seq(64, 5000), 16), 0);
  assert.equal(b.promptTokens, 64 + 64 + 70 + 64);
  assert.equal(b.boundTokens, 63 + 32);
});

test('cache_salt and LoRA adapters are caches of their own; block sizes too', () => {
  const b = new HitBound();
  const p = seq(48, 7);
  b.observe(p, 16);
  assert.equal(b.observe(p, 16, null, 'tenant-a'), 0);
  assert.equal(b.observe(p, 16, 'adapter-x'), 0);
  assert.equal(b.observe(p, 8), 0);
  assert.equal(b.observe(p, 16, null, 'tenant-a'), 47);
});

test('bounded: past its capacity the oldest blocks are forgotten', () => {
  const b = new HitBound(4);
  const a = seq(64, 1); // 4 blocks
  b.observe(a, 16);
  b.observe(seq(32, 900), 16); // 2 more: a's first two go
  assert.equal(b.observe(a, 16), 0, "a's first block was forgotten, so nothing of a is a prefix hit");
});
