import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NodeStore, REFS } from '../../src/index/node-store.js';
import { prng, randInt } from './helpers.js';

test('open-addressing table agrees with a Map under random adds and releases, with clustered keys', () => {
  const rnd = prng(3);
  const ns = new NodeStore(16);
  const model = new Map<string, number>();
  for (let step = 0; step < 30_000; step++) {
    // few distinct low bits force long probe runs and wrap-around
    const lo = (randInt(rnd, 64) * 0x10000 + randInt(rnd, 8)) >>> 0;
    const hi = randInt(rnd, 50);
    const k = `${lo}:${hi}`;
    const n = ns.find(lo, hi);
    assert.equal(n, model.get(k) ?? -1, `step ${step}`);
    if (n < 0) {
      const m = ns.add(lo, hi, 0, 0);
      ns.rec[m * ns.stride + REFS] = 1;
      model.set(k, m);
    } else if (rnd() < 0.6) {
      ns.unref(n);
      model.delete(k);
    }
    assert.equal(ns.live, model.size);
  }
  for (const [k, n] of model) {
    const [lo, hi] = k.split(':').map(Number);
    assert.equal(ns.find(lo, hi), n);
  }
});

test('growing the membership words and media keeps every bit', () => {
  const ns = new NodeStore(4);
  ns.ensureMedia(2);
  const nodes = Array.from({ length: 10 }, (_, i) => ns.add(i, i, 0, 0));
  for (const n of nodes) ns.rec[n * ns.stride + ns.mediaOff(1, 0)] = n + 1;
  for (const n of nodes) ns.rec[n * ns.stride + ns.provOff(0)] = 100 + n;
  ns.ensureWords(3);
  ns.ensureMedia(4);
  for (const n of nodes) {
    assert.equal(ns.rec[n * ns.stride + ns.mediaOff(1, 0)], n + 1);
    assert.equal(ns.rec[n * ns.stride + ns.provOff(0)], 100 + n);
    assert.equal(ns.rec[n * ns.stride + ns.mediaOff(3, 2)], 0);
    assert.equal(ns.find(n, n), n);
  }
});

test('compact shrinks a mostly freed store, keeps every live record and its fields, and says where each moved', () => {
  const ns = new NodeStore(16);
  const ids: number[] = [];
  for (let i = 0; i < 4096; i++) {
    const n = ns.add(i * 7919, i, i + 1, 0);
    ns.rec[n * ns.stride + REFS] = 1;
    ids.push(n);
  }
  const grown = ns.bytes;
  assert.equal(ns.compact(), null, 'a full store does not compact');
  const keep = new Set(ids.filter((_, i) => i % 37 === 0));
  for (const n of ids) if (!keep.has(n)) ns.unref(n);
  const remap = ns.compact();
  assert.ok(remap !== null);
  assert.ok(ns.bytes * 8 < grown, `bytes ${ns.bytes} vs ${grown}`);
  assert.equal(ns.live, keep.size);
  for (let i = 0; i < 4096; i++) {
    const old = ids[i];
    if (!keep.has(old)) {
      assert.equal(remap[old], -1);
      assert.equal(ns.find(i * 7919, i), -1);
      continue;
    }
    const n = ns.find(i * 7919, i);
    assert.equal(n, remap[old]);
    assert.equal(ns.rec[n * ns.stride + 2], i + 1, 'parent key moved with the record');
  }
  // the compacted store keeps working: adds, finds and releases
  const m = ns.add(1, 1_000_000, 0, 0);
  ns.rec[m * ns.stride + REFS] = 1;
  assert.equal(ns.find(1, 1_000_000), m);
  for (let i = 0; i < 4096; i++) {
    const n = ns.find(i * 7919, i);
    if (n >= 0) ns.unref(n);
  }
  ns.unref(m);
  assert.equal(ns.live, 0);
  ns.compact();
  assert.equal(ns.cap, 16, 'back to the initial capacity');
});
