/**
 * The scheduler's step decision (worker/scheduler/plan.ts) as a pure function, and the
 * Scheduler that applies it over a real pool with the sim engine at zero step time:
 * token budget accounting, chunked prefill that never stalls running decodes, vLLM v1's
 * preemption order, and admission rules.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SimEngine } from '../../worker/engines/sim.js';
import type { GenerateRequest } from '../../worker/messages.js';
import { planStep, type PlanInput, type PlanRunning, type PlanWaiting, type StepPlan } from '../../worker/scheduler/plan.js';
import { Scheduler } from '../../worker/scheduler/scheduler.js';

const BS = 16;

/** A plan input over a pool where every block has refcount 1 unless `refs` says otherwise, and no prefix is cached. */
function input(p: Partial<PlanInput> & Pick<PlanInput, 'running'>, refs: Record<number, number> = {}): PlanInput {
  return {
    tokenBudget: 2048,
    maxRunning: 256,
    blockSize: BS,
    freeBlocks: 1000,
    waiting: [],
    refCount: (b) => refs[b] ?? 1,
    cachedPrefix: () => [],
    ...p,
  };
}

/** A running request with `computed` tokens in exclusively held blocks (ids from `firstBlock`) and `numTokens` in all. */
function running(id: string, numTokens: number, computed: number, firstBlock: number): PlanRunning {
  const n = Math.ceil(computed / BS);
  return { id, numTokens, numComputed: computed, blocks: Array.from({ length: n }, (_, i) => firstBlock + i) };
}

/** A decoding request: its prompt computed, one sampled token not yet computed; a full last block so the next token needs a new one. */
const decoding = (id: string, firstBlock: number, blocks = 2) => running(id, blocks * BS + 1, blocks * BS, firstBlock);

const tokensOf = (plan: StepPlan) => Object.fromEntries([...plan.running, ...plan.admitted].map((s) => [s.id, s.numNewTokens]));

describe('planStep: token budget', () => {
  it('decodes take one token each, a partial prefill continues its chunk, waiting requests get what is left', () => {
    const plan = planStep(input({
      tokenBudget: 100,
      running: [decoding('d1', 0), running('p', 500, 64, 10), decoding('d2', 20)],
      waiting: [{ id: 'w1', numTokens: 40 }, { id: 'w2', numTokens: 40 }],
    }));
    // d1: 1, p: min(436, 99) = 99; the budget is gone before d2 (vLLM: running in order while budget > 0).
    assert.deepEqual(tokensOf(plan), { d1: 1, p: 99 });
    assert.equal(plan.numTokens, 100);
    assert.deepEqual(plan.preempted, []);

    const roomy = planStep(input({
      tokenBudget: 200,
      running: [decoding('d1', 0), running('p', 150, 64, 10), decoding('d2', 20)],
      waiting: [{ id: 'w1', numTokens: 40 }, { id: 'w2', numTokens: 300 }],
    }));
    // 1 + 86 + 1 = 88 for running; w1 takes 40; w2 gets the last 72 as its first chunk.
    assert.deepEqual(tokensOf(roomy), { d1: 1, p: 86, d2: 1, w1: 40, w2: 72 });
    assert.equal(roomy.numTokens, 200);
    assert.deepEqual(roomy.admitted.map((a) => a.id), ['w1', 'w2']);
    // Blocks for the computed tokens only: p reaches 150 tokens (10 blocks, holds 4); w2 gets 72 tokens' worth (5 blocks).
    assert.equal(roomy.running.find((r) => r.id === 'p')!.newBlocks, 6);
    assert.equal(roomy.admitted.find((a) => a.id === 'w2')!.newBlocks, 5);
    assert.equal(roomy.running.find((r) => r.id === 'd1')!.newBlocks, 1, 'the decode token starts a new block');
  });

  it('max_num_seqs caps admission, and the first waiting request that does not fit stops it (FCFS)', () => {
    const capped = planStep(input({ maxRunning: 2, running: [decoding('d1', 0)], waiting: [{ id: 'a', numTokens: 10 }, { id: 'b', numTokens: 10 }] }));
    assert.deepEqual(capped.admitted.map((a) => a.id), ['a']);
    const blocked = planStep(input({ freeBlocks: 3, running: [], waiting: [{ id: 'big', numTokens: 100 }, { id: 'small', numTokens: 10 }] }));
    assert.deepEqual(blocked.admitted, [], 'big needs 7 blocks, 3 are free; small waits behind it');
  });

  it('a cached prefix counts as computed, and its unreferenced blocks are taken from the free count', () => {
    const cached = [100, 101, 102];
    const w: PlanWaiting = { id: 'w', numTokens: 60 };
    const base = { running: [], waiting: [w], cachedPrefix: () => cached };
    const plan = planStep(input({ ...base, freeBlocks: 4 }, { 100: 0, 101: 0, 102: 1 }));
    // 48 cached tokens, 12 to compute (1 fresh block); blocks 100 and 101 are evictable, so 1 + 2 of the 4 free.
    assert.deepEqual(plan.admitted, [{ id: 'w', numNewTokens: 12, newBlocks: 1, cachedBlocks: cached }]);
    assert.equal(planStep(input({ ...base, freeBlocks: 2 }, { 100: 0, 101: 0, 102: 1 })).admitted.length, 0, '1 fresh + 2 revived > 2 free');
  });
});

describe('planStep: preemption (vLLM v1, FCFS: the newest running request goes first)', () => {
  it('preempts from the newest until the request fits, and admits nobody in that step', () => {
    // Each decode needs one new block; one block is free. a takes it; b needs one: c (newest) is preempted, freeing its 2 blocks.
    const plan = planStep(input({
      freeBlocks: 1,
      running: [decoding('a', 0), decoding('b', 10), decoding('c', 20)],
      waiting: [{ id: 'w', numTokens: 5 }],
    }));
    assert.deepEqual(plan.preempted, ['c']);
    assert.deepEqual(tokensOf(plan), { a: 1, b: 1 });
    assert.deepEqual(plan.admitted, [], 'no admission in a step that preempted');
  });

  it('a victim whose blocks are shared frees nothing, so the next newest goes too; a request can preempt itself', () => {
    const shared = { 20: 2, 21: 2 };
    const plan = planStep(input({ freeBlocks: 0, running: [decoding('a', 0), decoding('b', 10), decoding('c', 20)] }, shared));
    // a needs a block: c's blocks are shared (ref 2 → 1), nothing freed; b goes next and frees 2.
    assert.deepEqual(plan.preempted, ['c', 'b']);
    assert.deepEqual(tokensOf(plan), { a: 1 });

    const alone = planStep(input({ freeBlocks: 0, running: [decoding('a', 0)], waiting: [{ id: 'w', numTokens: 5 }] }));
    assert.deepEqual(alone.preempted, ['a']);
    assert.deepEqual(alone.running, []);
    assert.deepEqual(alone.admitted, []);
  });

  it('a prefill chunk preempts as many of the newest requests as its blocks need', () => {
    // a is a partial prefill whose chunk needs 9 more blocks; 5 free; c then b free 2 each.
    const plan = planStep(input({
      freeBlocks: 5,
      running: [running('a', 200, 64, 0), decoding('b', 10), decoding('c', 20)],
    }));
    assert.deepEqual(plan.preempted, ['c', 'b']);
    assert.deepEqual(tokensOf(plan), { a: 136 });
    assert.equal(plan.running[0]!.newBlocks, 9, '200 tokens = 13 blocks, 4 held');
  });
});

describe('chunked prefill of a 120k-token prompt', () => {
  it('never takes more than one step budget, and every running decode gets its token in every step', () => {
    const budget = 2048;
    const decodes = ['d1', 'd2', 'd3'];
    const state = new Map<string, { numTokens: number; numComputed: number; blocks: number[] }>();
    let nextBlock = 0;
    const alloc = (n: number) => Array.from({ length: n }, () => nextBlock++);
    for (const id of decodes) state.set(id, { numTokens: 33, numComputed: 32, blocks: alloc(2) });
    let waiting: PlanWaiting[] = [{ id: 'long', numTokens: 120_000 }];
    const order = [...decodes];
    let steps = 0;
    let firstToken = -1;
    while (firstToken < 0) {
      const plan = planStep({
        tokenBudget: budget, maxRunning: 256, blockSize: BS, freeBlocks: 100_000 - nextBlock,
        running: order.map((id) => ({ id, ...state.get(id)! })), waiting,
        refCount: () => 1, cachedPrefix: () => [],
      });
      steps++;
      assert.ok(plan.numTokens <= budget);
      const got = tokensOf(plan);
      for (const id of decodes) assert.equal(got[id], 1, `step ${steps}: ${id} decodes`);
      assert.equal(got.long, Math.min(budget - decodes.length, 120_000 - (state.get('long')?.numComputed ?? 0)));
      for (const a of plan.admitted) {
        state.set(a.id, { numTokens: 120_000, numComputed: 0, blocks: [] });
        order.push(a.id);
        waiting = waiting.filter((w) => w.id !== a.id);
      }
      for (const s of [...plan.running, ...plan.admitted]) {
        const st = state.get(s.id)!;
        st.blocks.push(...alloc(s.newBlocks));
        st.numComputed += s.numNewTokens;
        assert.equal(st.blocks.length, Math.ceil(st.numComputed / BS), 'blocks cover exactly the computed tokens');
        if (st.numComputed === st.numTokens) {
          st.numTokens++; // the sampled token
          if (s.id === 'long') firstToken = steps;
        }
      }
    }
    assert.equal(firstToken, Math.ceil(120_000 / (budget - decodes.length)), 'the prompt is prefilled in budget-sized chunks');
  });
});

describe('Scheduler applies the plan over a real pool', () => {
  const req = (rid: string, promptIds: number[], maxTokens: number): GenerateRequest => ({
    rid, promptIds, maxTokens, sampling: { temperature: 0, topP: 1, seed: 1 }, ignoreEos: true, stop: [],
  });
  const toks = (start: number, n: number) => Array.from({ length: n }, (_, i) => start + i);

  it('a long prompt joins running decodes without stalling them, and its output does not depend on the chunking', async () => {
    const run = async (budget: number) => {
      const engine = new SimEngine({ blockSize: BS, numBlocks: 2048, eosTokenIds: [0], vocabSize: 1000, prefillTokensPerS: 1e12, decodeStepMs: 0 });
      const plans: StepPlan[] = [];
      const s = new Scheduler({ engine, maxBatch: 8, maxNumBatchedTokens: budget, publish: () => {}, onStep: (p) => plans.push(p) });
      s.add(req('d', toks(1, 20), 400));
      const out = new Map<string, number[]>();
      const collect = async () => {
        for (const o of await s.step()) out.set(o.rid, [...(out.get(o.rid) ?? []), ...o.ids]);
      };
      await collect();
      s.add(req('long', toks(5000, 20_000), 3));
      let stepsToFirst = 0;
      let decodeTokensMeanwhile = 0;
      while (!out.has('long')) {
        const before = out.get('d')!.length;
        await collect();
        stepsToFirst++;
        decodeTokensMeanwhile += out.get('d')!.length - before;
      }
      for (let i = 0; i < 10_000 && !s.idle; i++) await collect();
      assert.ok(s.idle);
      assert.equal(s.pool.available, 2048, 'every block released');
      return { out, plans, stepsToFirst, decodeTokensMeanwhile };
    };
    const chunked = await run(1024);
    assert.equal(chunked.stepsToFirst, Math.ceil(20_000 / 1023));
    assert.equal(chunked.decodeTokensMeanwhile, chunked.stepsToFirst, 'the decode got a token in every step of the prefill');
    for (const p of chunked.plans) assert.ok(p.numTokens <= 1024);
    const whole = await run(100_000);
    assert.equal(whole.stepsToFirst, 1);
    assert.deepEqual(chunked.out, whole.out, 'same tokens however the prompt was chunked');
  });
});
