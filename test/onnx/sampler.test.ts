import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sampleToken, argmax, seededUniform } from '../../worker/engines/sampler.js';

const logits = Float32Array.from([1, 3, 2, 3.5, -1, 0.5]);

test('temperature 0 is greedy', () => {
  assert.equal(sampleToken(logits, { temperature: 0, topP: 1, seed: null }, 0), 3);
  assert.equal(argmax([2, 5, 5]), 1);
});

test('equal seeds give equal samples; the draw depends on the position', () => {
  const p = { temperature: 1, topP: 1, seed: 7 };
  const a = Array.from({ length: 50 }, (_, i) => sampleToken(logits, p, i));
  const b = Array.from({ length: 50 }, (_, i) => sampleToken(logits, p, i));
  assert.deepEqual(a, b);
  assert.ok(new Set(a).size > 2);
  assert.notEqual(seededUniform(7, 0), seededUniform(7, 1));
  assert.notEqual(seededUniform(7, 0), seededUniform(8, 0));
});

test('top_p keeps only the nucleus', () => {
  // softmax of [1,3,2,3.5,-1,0.5]: 3.5 and 3 hold ~0.73 of the mass.
  const seen = new Set<number>();
  for (let i = 0; i < 500; i++) seen.add(sampleToken(logits, { temperature: 1, topP: 0.7, seed: 1 }, i));
  assert.deepEqual([...seen].sort(), [1, 3]);
  for (let i = 0; i < 50; i++) assert.equal(sampleToken(logits, { temperature: 1, topP: 0.01, seed: 3 }, i), 3);
});

test('sampling frequencies follow softmax(logits / T) over a large vocabulary', () => {
  const V = 150000;
  const big = new Float32Array(V).fill(-30); // the tail's mass is negligible
  big[10] = 2;
  big[20] = 2 + Math.log(3); // three times as likely as token 10
  const counts = new Map<number, number>();
  for (let i = 0; i < 2000; i++) {
    const t = sampleToken(big, { temperature: 1, topP: i % 2 ? 1 : 0.999, seed: 11 }, i);
    counts.set(t, (counts.get(t) ?? 0) + 1);
  }
  const r = (counts.get(20) ?? 0) / (counts.get(10) ?? 1);
  assert.ok(r > 2.4 && r < 3.8, `ratio ${r}`);
});
