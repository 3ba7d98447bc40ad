import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PrefixIndex, type SourceDump } from '../../src/index/index.js';
import { compare, type CachedBlock } from '../faults/invariant.js';
import { batch, range, stored } from './helpers.js';

const S = 'w0:0';
const BS = 4;
const H = (n: number) => (0xffff_0000_0000_0000n + BigInt(n)).toString(); // above 2^63, as vLLM sends

/** A worker's GET /cache: two chains sharing a root block, one salted chain. */
function workerCache(): CachedBlock[] {
  return [
    { hash: H(1), parent_hash: null, token_ids: range(0, 4) },
    { hash: H(2), parent_hash: H(1), token_ids: range(4, 8) },
    { hash: H(3), parent_hash: H(1), token_ids: range(40, 44) },
    { hash: H(4), parent_hash: null, token_ids: range(0, 4), extra_keys: [['tenant']] },
  ];
}

function indexOf(blocks: CachedBlock[]): PrefixIndex {
  const ix = new PrefixIndex();
  ix.addSource(S);
  for (const b of blocks) {
    ix.applyBatch(S, batch({
      ...stored([BigInt(b.hash)], b.parent_hash === null ? null : BigInt(b.parent_hash), b.token_ids, BS),
      ...(b.extra_keys ? { extra_keys: b.extra_keys } : {}),
    }));
  }
  return ix;
}

test('the oracle finds a router tree built from the same blocks equal', () => {
  const w = workerCache();
  const c = compare(S, w, { trusted: true, dump: indexOf(w).dump(S) });
  assert.deepEqual([c.workerBlocks, c.routerBlocks, c.divergent], [4, 4, 0]);
  assert.equal(c.ok, true);
});

test('the oracle catches a lost block, an extra block and a block under the wrong parent', () => {
  const w = workerCache();
  const lost = compare(S, w, { trusted: true, dump: indexOf(w.filter((b) => b.hash !== H(3))).dump(S) });
  assert.deepEqual([lost.missing, lost.extra, lost.ok], [1, 0, false]);
  const more = [...w, { hash: H(9), parent_hash: H(2), token_ids: range(8, 12) }];
  const extra = compare(S, w, { trusted: true, dump: indexOf(more).dump(S) });
  assert.deepEqual([extra.missing, extra.extra], [0, 1]);
  // the router attached block 3 under block 2: same hash and tokens, wrong prefix
  const moved = w.map((b) => (b.hash === H(3) ? { ...b, parent_hash: H(2) } : b));
  const wrong = compare(S, w, { trusted: true, dump: indexOf(moved).dump(S) });
  assert.deepEqual([wrong.missing, wrong.extra], [1, 1]);
  // untrusted is ok whatever it holds
  assert.equal(compare(S, w, { trusted: false, dump: null }).ok, true);
});

test('the oracle does not trust the router keys: keys that ignore tokens or salt are conflicts', () => {
  const w = workerCache();
  const dump = indexOf(w).dump(S) as SourceDump;
  // an index whose key forgot the salt: the salted root gets the unsalted root's key
  const keys = dump.roots.map((r) => r.key);
  const broken = structuredClone(dump);
  for (const r of broken.roots) r.key = keys[0];
  const c = compare(S, w, { trusted: true, dump: broken });
  assert.equal(c.missing + c.extra, 0, 'the blocks themselves are right');
  assert.equal(c.keyConflicts, 1);
  assert.equal(c.ok, false);
});
