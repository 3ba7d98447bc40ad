import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RingBuffer } from '../../src/events/ring-buffer.js';

test('ring buffer: keeps the last capacity entries across compactions; from() snapshots', () => {
  const ring = new RingBuffer(100);
  const b = Buffer.alloc(1);
  for (let i = 0; i < 5000; i++) ring.push(BigInt(i), b);
  assert.equal(ring.size, 100);
  assert.deepEqual(ring.from(0n).map((x) => x.seq), Array.from({ length: 100 }, (_, i) => BigInt(4900 + i)));
  assert.deepEqual(ring.from(4990n).map((x) => x.seq), Array.from({ length: 10 }, (_, i) => BigInt(4990 + i)));
  assert.deepEqual(ring.from(5000n), []);
  assert.deepEqual(ring.from(2n ** 64n - 2n), []);
  const snap = ring.from(4999n);
  ring.push(5000n, b);
  assert.equal(snap.length, 1, 'a snapshot does not grow with later pushes');
  const none = new RingBuffer(0);
  none.push(0n, b);
  assert.equal(none.size, 0);
  assert.deepEqual(none.from(0n), []);
});
