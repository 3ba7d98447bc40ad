import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chainKey, chainKeys, engineKey, loraKey, saltRoot } from '../../src/index/hash.js';
import { prng, randInt } from './helpers.js';

const key = (pLo: number, pHi: number, toks: number[], lora: string | number | null = null): string => {
  const out = new Uint32Array(2);
  const l = loraKey(lora);
  chainKey(pLo, pHi, l.lo, l.hi, toks, 0, toks.length, out);
  return `${out[1]}:${out[0]}`;
};

test('block keys depend on parent, tokens, order, length and LoRA', () => {
  const base = key(0, 0, [1, 2, 3, 4]);
  assert.equal(key(0, 0, [1, 2, 3, 4]), base, 'deterministic');
  const variants = [
    key(1, 0, [1, 2, 3, 4]),
    key(0, 1, [1, 2, 3, 4]),
    key(0, 0, [2, 1, 3, 4]),
    key(0, 0, [1, 2, 3, 5]),
    key(0, 0, [1, 2, 3]),
    key(0, 0, [1, 2, 3, 4, 0]),
    key(0, 0, [1, 2, 3, 4], 'a'),
    key(0, 0, [1, 2, 3, 4], 1),
    key(0, 0, [1, 2, 3, 4], '1'),
  ];
  assert.equal(new Set([base, ...variants]).size, variants.length + 1);
  // every tail length (0..3 tokens past a multiple of 4) is keyed
  const tails = new Set<string>();
  for (let n = 0; n <= 9; n++) tails.add(key(0, 0, Array.from({ length: n }, () => 0)));
  assert.equal(tails.size, 10);
});

test('reads tokens from an offset in typed and plain arrays alike', () => {
  const toks = Array.from({ length: 40 }, (_, i) => i * 7);
  const a = new Uint32Array(2);
  const b = new Uint32Array(2);
  chainKey(5, 6, 0, 0, toks, 16, 16, a);
  chainKey(5, 6, 0, 0, Int32Array.from(toks.slice(16, 32)), 0, 16, b);
  assert.deepEqual(a, b);
});

test('64-bit keys are well spread: no collisions among 200k chained keys, balanced bits', () => {
  const rnd = prng(7);
  const seen = new Set<string>();
  const ones = new Array<number>(64).fill(0);
  const out = new Uint32Array(2);
  let pLo = 0;
  let pHi = 0;
  const N = 200_000;
  for (let i = 0; i < N; i++) {
    // low-entropy input: tokens from a tiny vocabulary, chained like a prompt
    const toks = Array.from({ length: 16 }, () => randInt(rnd, 4));
    if (i % 50 === 0) pLo = pHi = 0;
    chainKey(pLo, pHi, 0, 0, toks, 0, 16, out);
    pLo = out[0];
    pHi = out[1];
    seen.add(`${pHi}:${pLo}`);
    for (let b = 0; b < 32; b++) {
      ones[b] += (pLo >>> b) & 1;
      ones[32 + b] += (pHi >>> b) & 1;
    }
  }
  assert.equal(seen.size, N);
  for (const c of ones) assert.ok(Math.abs(c / N - 0.5) < 0.01, `bit bias ${c / N}`);
});

test('engine hash handles: ints mod 2^64, bytes by content', () => {
  const h = (x: bigint | Uint8Array): string => {
    const out = new Uint32Array(2);
    engineKey(x, out);
    return `${out[1].toString(16)}:${out[0].toString(16)}`;
  };
  assert.equal(h(2n ** 64n - 1n), 'ffffffff:ffffffff');
  assert.equal(h(-1n), 'ffffffff:ffffffff');
  assert.equal(h(2n ** 63n), '80000000:0');
  assert.equal(h(-(2n ** 63n)), '80000000:0');
  assert.equal(h(0x1234_5678_9abc_def0n), '12345678:9abcdef0');
  const d1 = new Uint8Array(32).fill(3);
  assert.equal(h(d1), h(Uint8Array.from(d1)));
  assert.notEqual(h(d1), h(new Uint8Array(32).fill(4)));
  assert.notEqual(h(new Uint8Array([1, 2, 3])), h(new Uint8Array([1, 2, 3, 0])), 'length counts');
  const buf = new Uint8Array(40).fill(3);
  assert.equal(h(buf.subarray(8)), h(d1), 'views at an offset');
});

test('a salt is a root of its own: stable, distinct per salt, never the plain root or a LoRA key', () => {
  const a = saltRoot('tenant-a');
  assert.deepEqual(saltRoot('tenant-a'), a);
  assert.deepEqual(saltRoot(null), { lo: 0, hi: 0 });
  const keys = [a, saltRoot('tenant-b'), saltRoot(''), saltRoot(null), loraKey('tenant-a')].map((k) => `${k.lo}:${k.hi}`);
  assert.equal(new Set(keys).size, keys.length);
});

test('chainKeys (the prompt path) equals chainKey chained block by block, from any start block', () => {
  const rnd = prng(11);
  for (let trial = 0; trial < 200; trial++) {
    const bs = 1 + randInt(rnd, 33);
    const nBlocks = 1 + randInt(rnd, 12);
    const toks = Array.from({ length: nBlocks * bs + randInt(rnd, bs) }, () => randInt(rnd, 0x1_0000_0000));
    const root = saltRoot(trial % 3 === 0 ? `s${trial}` : null);
    const l = loraKey(trial % 4 === 0 ? 'lora' : null);
    const want = new Uint32Array(nBlocks * 2);
    const out = new Uint32Array(2);
    for (let b = 0; b < nBlocks; b++) {
      chainKey(b === 0 ? root.lo : want[2 * b - 2], b === 0 ? root.hi : want[2 * b - 1], l.lo, l.hi, toks, b * bs, bs, out);
      want[2 * b] = out[0];
      want[2 * b + 1] = out[1];
    }
    const got = new Uint32Array(nBlocks * 2);
    const split = randInt(rnd, nBlocks + 1);
    chainKeys(root.lo, root.hi, l.lo, l.hi, toks, bs, 0, split, got);
    chainKeys(root.lo, root.hi, l.lo, l.hi, toks, bs, split, nBlocks, got);
    assert.deepEqual(got, want, `bs ${bs}, ${nBlocks} blocks, split at ${split}`);
  }
});
