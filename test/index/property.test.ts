import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PrefixIndex } from '../../src/index/index.js';
import type { BlockHash, KVEvent } from '../../src/events/types.js';
import { batch, prng, randInt, removed, stored } from './helpers.js';
import { blockPart, hashId, Model, parsePrefix, saltTag } from './model.js';

const TTL = 100;
const SOURCES = ['w0:0', 'w0:1', 'w1:0', 'w2:0', 'w3:0'];
const BLOCK_SIZE: Record<string, number> = { 'w0:0': 2, 'w0:1': 2, 'w1:0': 3, 'w2:0': 2, 'w3:0': 4 };
const LORAS: (string | number | null)[] = [null, null, null, 'a', 5];
const MEDIA = [null, null, 'GPU', 'CPU', 'DISK'];
const SALTS: (string | null)[] = [null, null, null, 's1', 's2'];

const seen = { salted: 0, copies: 0, unknownSource: 0, matched: 0, mixed: 0, tiers: new Set<string>(), unknownParent: 0, unknownRemoval: 0, invalid: 0, provisional: 0 };

function run(seed: number, batches: number, idleSources = 0): void {
  const rnd = prng(seed);
  let now = 0;
  const ix = new PrefixIndex({ provisionalTtlMs: TTL, now: () => now });
  const model = new Model(TTL, () => now);
  // Idle sources push the busy ones across 32-slot word boundaries of the walk's bit sets.
  for (let i = 0; i < idleSources; i++) {
    ix.addSource(`idle${i}`);
    model.addSource(`idle${i}`);
  }
  // Engines hash the same prefix the same way: one engine hash per (prefix, salt), in all three wire forms.
  const engineHashes = new Map<string, BlockHash>();
  const byId = new Map<string, BlockHash>();
  const engineHash = (prefix: string, salt: number): BlockHash => {
    const k = `${salt}${prefix}`;
    let h = engineHashes.get(k);
    if (h === undefined) {
      const r = BigInt(randInt(rnd, 2 ** 32)) * 2n ** 32n + BigInt(randInt(rnd, 2 ** 32));
      const form = randInt(rnd, 3);
      h = form === 0 ? r : form === 1 ? BigInt.asIntN(64, r) : Uint8Array.from({ length: 32 }, () => randInt(rnd, 256));
      engineHashes.set(k, h);
      byId.set(hashId(h), h);
    }
    return h;
  };
  const pick = <T>(xs: T[]): T => xs[randInt(rnd, xs.length)];
  const tokens = (n: number): number[] => Array.from({ length: n }, () => randInt(rnd, 3));
  const heldEntries = (id: string) => [...(model.sources.get(id)?.hashes ?? new Map()).entries()];

  const randomEvent = (id: string): KVEvent => {
    const r = rnd();
    const bs = rnd() < 0.01 ? 3 : BLOCK_SIZE[id];
    if (r < 0.55) {
      const n = 1 + randInt(rnd, 3);
      const held = heldEntries(id);
      let parent: BlockHash | null = null;
      let prefix = '';
      const p = rnd();
      if (p < 0.6 && held.length > 0) {
        const [hid, e] = pick(held);
        prefix = e.prefix;
        parent = byId.get(hid)!;
      } else if (p < 0.65) {
        parent = engineHash(`unknown${randInt(rnd, 1e9)}`, 0);
        prefix = 'x';
      }
      const salt = parent === null ? pick(SALTS) : null;
      if (parent === null) prefix = saltTag(salt);
      const lora = pick(LORAS);
      const toks = tokens(n * bs);
      const hashes: BlockHash[] = [];
      for (let j = 0; j < n; j++) {
        prefix += blockPart(lora, toks, j * bs, (j + 1) * bs);
        hashes.push(engineHash(prefix, rnd() < 0.05 ? 1 : 0));
      }
      const ev = stored(hashes, parent, rnd() < 0.02 ? toks.slice(1) : toks, bs, { medium: pick(MEDIA) });
      if (lora !== null) {
        if (typeof lora === 'string') ev.lora_name = lora;
        else ev.lora_id = lora;
      }
      const form = randInt(rnd, 3);
      if (salt !== null && form === 2) ev.cache_salt = salt; // SGLang
      else if (salt !== null || (typeof lora === 'string' && form === 0)) {
        // vLLM: one entry per block, LoRA name on every block, the salt on the chain's first only
        const typed = form === 1;
        const loraKey = typeof lora === 'string' ? [typed ? { type: 'lora', name: lora } : lora] : [];
        ev.extra_keys = hashes.map((_, j) => {
          const keys = [...loraKey, ...(j === 0 && salt !== null ? [typed ? { type: 'cache_salt', salt } : salt] : [])];
          return keys.length ? keys : null;
        });
      }
      return ev;
    }
    if (r < 0.95) {
      const held = heldEntries(id);
      const hs: BlockHash[] = [];
      for (let k = 1 + randInt(rnd, 3); k > 0; k--) {
        if (held.length > 0 && rnd() < 0.85) hs.push(byId.get(pick(held)[0])!);
        else hs.push(engineHash(`gone${randInt(rnd, 50)}`, 0));
      }
      return removed(hs, pick(MEDIA));
    }
    return { type: 'AllBlocksCleared' };
  };

  const check = (step: number): void => {
    const ctx = `seed ${seed} step ${step}`;
    assert.deepEqual(ix.sources(), [...model.sources.keys()], ctx);
    assert.deepEqual(ix.unknownSourceCounts(), model.unknown, `${ctx} unknown sources`);
    for (const id of model.sources.keys()) {
      const st = ix.stats(id);
      assert.deepEqual(st, model.stats(id), `${ctx} stats ${id}`);
      if (step === batches - 1) {
        seen.unknownParent += st.unknownParent;
        seen.unknownRemoval += st.unknownRemoval;
        seen.invalid += st.invalid;
      }
      seen.provisional += st.provisionalBlocks;
      seen.copies += Object.values(st.copies).reduce((a, b) => a + b, 0) - st.blocks;
      assert.equal(ix.heldBlocks(id), st.copies.GPU ?? 0, `${ctx} heldBlocks ${id}`);
    }
    assert.equal(ix.totalNodes(), model.totalNodes(), `${ctx} totalNodes`);
    for (let q = 0; q < 6; q++) {
      let prompt: number[];
      let lora: string | number | null = null;
      let salt: string | null = null;
      const held = model.sources.size > 0 ? heldEntries(pick([...model.sources.keys()])) : [];
      if (held.length > 0 && q < 5) {
        ({ tokens: prompt, lora, salt } = parsePrefix(pick(held)[1].prefix));
        prompt = [...prompt, ...tokens(randInt(rnd, 8))];
        if (rnd() < 0.3) prompt = prompt.slice(0, randInt(rnd, prompt.length + 1));
        if (rnd() < 0.2) salt = pick(SALTS);
      } else prompt = tokens(randInt(rnd, 16));
      const maxTokens = rnd() < 0.3 ? Math.max(0, prompt.length - 1) : undefined;
      const got = ix.match(prompt, { lora, salt, maxTokens });
      assert.deepEqual(got, model.match(prompt, lora, salt, maxTokens), `${ctx} match ${JSON.stringify({ prompt, lora, salt, maxTokens })}`);
      if (salt !== null) for (const m of got.values()) if (m.matchedTokens > 0) seen.salted++;
      for (const m of got.values()) {
        if (m.matchedTokens > 0) seen.matched++;
        for (const k of Object.keys(m.byMedium)) seen.tiers.add(k);
        if (Object.keys(m.byMedium).length > 1) seen.mixed++;
      }
    }
  };

  for (let step = 0; step < batches; step++) {
    const id = pick(SOURCES);
    if (!model.sources.has(id)) {
      if (rnd() < 0.5) {
        ix.addSource(id);
        model.addSource(id);
      } else seen.unknownSource++;
    }
    const r = rnd();
    if (r < 0.02) {
      ix.clearSource(id);
      model.clearSource(id);
    } else if (r < 0.03) {
      ix.removeSource(id);
      model.removeSource(id);
    } else if (r < 0.13) {
      const held = heldEntries(pick(SOURCES));
      const { tokens: base, lora, salt } = held.length ? parsePrefix(pick(held)[1].prefix) : { tokens: [], lora: null, salt: null };
      const prompt = [...base, ...tokens(randInt(rnd, 10))];
      ix.markProvisional(id, prompt, BLOCK_SIZE[id], lora, salt);
      model.markProvisional(id, prompt, BLOCK_SIZE[id], lora, salt);
    } else {
      const events: KVEvent[] = [];
      for (let k = 1 + randInt(rnd, 4); k > 0; k--) {
        const ev = randomEvent(id);
        events.push(ev);
        // Later events of a batch may refer to blocks stored by earlier ones.
        if (model.sources.has(id)) model.apply(id, batch(ev));
      }
      if (!model.sources.has(id)) model.apply(id, batch(...events));
      ix.applyBatch(id, batch(...events));
    }
    now += randInt(rnd, 12);
    check(step);
  }
}

for (const seed of [1, 2, 3, 4, 5, 6]) {
  test(`random stores, removals, clears and provisional marks agree with the brute-force model (seed ${seed})`, () => {
    run(seed, 600);
  });
}

for (const [seed, idle] of [[7, 30], [8, 62], [9, 95]]) {
  test(`the same with ${idle} idle sources before the busy ones (seed ${seed})`, () => {
    run(seed, 400, idle);
  });
}

test('the random workload reaches every tier, mixed-tier matches and the counters', () => {
  assert.ok(seen.matched > 1000, `matches: ${seen.matched}`);
  assert.ok(seen.mixed > 50, `mixed-tier matches: ${seen.mixed}`);
  assert.deepEqual([...seen.tiers].sort(), ['CPU', 'DISK', 'GPU', 'provisional']);
  for (const k of ['unknownParent', 'unknownRemoval', 'invalid', 'provisional', 'salted', 'copies', 'unknownSource'] as const) assert.ok(seen[k] > 10, `${k}: ${seen[k]}`);
});
