// One request's prompt is hashed once: rank (the match walk), commit (provisional marks) and the hit
// bound share one PromptKeys (src/index/prompt-keys.ts promptKeysOf), found by the token array itself.
// Counted by reading the prompt through a Proxy: every token of its full blocks is read once in all.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PrefixIndex, promptKeysOf } from '../../src/index/index.js';
import { CacheAwarePolicy } from '../../router/policies/cache-aware.js';
import { HitBound } from '../../router/observe/hit-bound.js';
import { RouterConfigSchema } from '../../router/config.js';
import type { Candidate, RouteRequest } from '../../router/policies/policy.js';

const BS = 16;

/** The prompt as an array that counts reads of each index. */
function counted(n: number): { tokens: number[]; reads: Int32Array } {
  const reads = new Int32Array(n);
  const raw = Array.from({ length: n }, (_, i) => (i * 7919) % 150_000);
  const tokens = new Proxy(raw, {
    get(t, k, r) {
      if (typeof k === 'string' && /^\d+$/.test(k)) reads[Number(k)]!++;
      return Reflect.get(t, k, r);
    },
  });
  return { tokens, reads };
}

const cand = (source: string): Candidate => ({ workerId: source.split(':')[0]!, rank: 0, source, trusted: true, blockSize: BS, tokenizerKey: 'k', load: { inFlight: 0, pendingPrefillTokens: 0, activeDecodes: 0 } });

test('rank, commit, a retry and the hit bound hash the prompt once', () => {
  const index = new PrefixIndex();
  for (const s of ['a:0', 'b:0', 'c:0']) index.addSource(s);
  const policy = new CacheAwarePolicy(index, RouterConfigSchema.parse({}).cache_aware);
  const bound = new HitBound();
  const n = 40 * BS + 5;
  const { tokens, reads } = counted(n);
  const req: RouteRequest = { tokensFor: () => tokens, lora: null, salt: 'tenant' };
  const cands = ['a:0', 'b:0', 'c:0'].map(cand);
  const ranked = policy.rank(req, cands);
  policy.commit(req, ranked[0]!.candidate);
  const afterCommit = Int32Array.from(reads);
  bound.observe(tokens, BS, null, 'tenant');
  assert.deepEqual(reads, afterCommit, 'the hit bound reads no token: the keys were there');
  for (let i = 64; i < 40 * BS; i++) assert.equal(reads[i], 1, `token ${i} read ${reads[i]} times`);
  for (let i = 40 * BS; i < n; i++) assert.equal(reads[i], 0, 'the partial last block is never hashed');
  // A retry ranks and commits again: nothing is hashed again. Only the tie-break's head and the hot
  // prefix's sampled key (every 8th token and the last matched one: a now hits the whole prompt) are read.
  policy.rank(req, cands);
  policy.commit(req, ranked[1]!.candidate);
  for (let i = 64; i < n; i++) if (i % 8 !== 0 && i !== 40 * BS - 1) assert.equal(reads[i], afterCommit[i], `token ${i} read again`);
  assert.equal(index.match(tokens, { salt: 'tenant' }).get(ranked[0]!.candidate.source)?.matchedTokens, 40 * BS, 'the marks are the salted prompt');
});

test('promptKeysOf shares keys per token array, LoRA and salt; a grown array or another LoRA or salt gets its own', () => {
  const t = Array.from({ length: 64 }, (_, i) => i);
  const k = promptKeysOf(t, 16);
  assert.equal(promptKeysOf(t, 16), k);
  const k8 = promptKeysOf(t, 8);
  assert.equal(k8.blockSize, 8);
  assert.equal(k8.keys(16, 4), k.keys(16, 4), 'another default block size shares the computed keys');
  assert.notEqual(promptKeysOf(t, 16, 'lora-x'), k);
  assert.notEqual(promptKeysOf(t, 16, null, 'salt'), promptKeysOf(t, 16));
  const s = promptKeysOf(t, 16, null, 'salt');
  assert.equal(promptKeysOf(t, 16, null, 'salt'), s);
  assert.notEqual(promptKeysOf(t.slice(), 16, null, 'salt'), s, 'keyed by the array, not its contents');
  t.push(1, 2, 3);
  assert.equal(promptKeysOf(t, 16, null, 'salt').tokens.length, 67);
  assert.notEqual(promptKeysOf(t, 16, null, 'salt'), s, 'a grown array is hashed anew');
});
