/**
 * One scheduler step's decision, as a pure function: which requests compute how many tokens
 * and who is preempted. It follows vLLM's v1 scheduler (vllm/v1/core/sched/scheduler.py,
 * `Scheduler.schedule`, FCFS policy, chunked prefill on):
 *
 * 1. Running requests first, oldest first, while token budget is left: each gets
 *    min(tokens it has not computed, budget left) (a decode: 1; a partial prefill: its next chunk).
 *    When the pool cannot hold the blocks for them, the newest running request is preempted
 *    (its blocks freed, back to the front of the waiting queue) until it fits; if the request
 *    itself was the newest, nothing more is scheduled from the running list.
 * 2. Only when nobody was preempted: waiting requests, in order, while budget is left and fewer
 *    than `maxRunning` requests run: each gets its cached prefix plus a chunk of
 *    min(uncached tokens, budget left); the first that the pool cannot hold stops admission.
 *
 * Blocks are allocated for the tokens computed this step only (vLLM's allocate_slots), so a
 * long prompt holds blocks for the chunks done so far, not for the whole prompt.
 */

export interface PlanRunning {
  id: string;
  /** Tokens the request has (prompt, then generated); the newest is not computed yet. */
  numTokens: number;
  /** Tokens whose keys/values are already in its blocks. */
  numComputed: number;
  /** Physical blocks it holds, in order. */
  blocks: readonly number[];
}

export interface PlanWaiting {
  id: string;
  numTokens: number;
}

export interface PlanInput<W extends PlanWaiting = PlanWaiting> {
  /** vLLM's max_num_batched_tokens: tokens computed in one step, all requests together. */
  tokenBudget: number;
  /** vLLM's max_num_seqs. */
  maxRunning: number;
  blockSize: number;
  /** Blocks an allocation can take now (free plus evictable cached ones). */
  freeBlocks: number;
  /** In admission order (the newest last). */
  running: readonly PlanRunning[];
  /** In queue order (the next to admit first). */
  waiting: readonly W[];
  /** Current reference count of a block (read-only view of the pool). */
  refCount(block: number): number;
  /** Block ids of the cached prefix a waiting request would reuse (read-only view of the pool). */
  cachedPrefix(w: W): readonly number[];
}

export interface ScheduledRunning {
  id: string;
  numNewTokens: number;
  /** Fresh blocks to allocate before the step. */
  newBlocks: number;
}

export interface ScheduledWaiting extends ScheduledRunning {
  /** Cached prefix blocks to take a reference on (their tokens count as computed). */
  cachedBlocks: readonly number[];
}

export interface StepPlan {
  /** Running requests computing this step, in running order. */
  running: ScheduledRunning[];
  /** Waiting requests admitted this step: always the head of the queue, in order. */
  admitted: ScheduledWaiting[];
  /** Preempted running requests, in the order they were preempted (newest first). */
  preempted: string[];
  /** Tokens computed this step (never above tokenBudget). */
  numTokens: number;
}

export function planStep<W extends PlanWaiting>(input: PlanInput<W>): StepPlan {
  const { blockSize: bs, maxRunning } = input;
  let budget = input.tokenBudget;
  let free = input.freeBlocks;
  // Reference count changes made by this plan (preemptions release, admissions acquire).
  const refDelta = new Map<number, number>();
  const ref = (b: number) => input.refCount(b) + (refDelta.get(b) ?? 0);
  const blocksFor = (tokens: number) => Math.ceil(tokens / bs);

  const running = [...input.running];
  const plan: StepPlan = { running: [], admitted: [], preempted: [], numTokens: 0 };

  const release = (r: PlanRunning) => {
    for (const b of r.blocks) {
      refDelta.set(b, (refDelta.get(b) ?? 0) - 1);
      if (ref(b) === 0) free++;
    }
  };

  let i = 0;
  while (i < running.length && budget > 0) {
    const r = running[i]!;
    const n = Math.min(r.numTokens - r.numComputed, budget);
    if (n <= 0) {
      i++;
      continue;
    }
    const need = Math.max(0, blocksFor(r.numComputed + n) - r.blocks.length);
    let fits = need <= free;
    while (!fits) {
      // The newest running request goes; it is never one already scheduled (those are older).
      const victim = running.pop()!;
      release(victim);
      plan.preempted.push(victim.id);
      if (victim === r) break;
      fits = need <= free;
    }
    if (!fits) break;
    free -= need;
    budget -= n;
    plan.running.push({ id: r.id, numNewTokens: n, newBlocks: need });
    i++;
  }

  if (plan.preempted.length === 0) {
    let numRunning = running.length;
    for (const w of input.waiting) {
      if (budget <= 0 || numRunning >= maxRunning) break;
      const cached = input.cachedPrefix(w);
      const computed = cached.length * bs;
      const n = Math.min(w.numTokens - computed, budget);
      if (n <= 0) throw new Error(`request ${w.id}: its cached prefix covers every token (at least one must be computed)`);
      const need = blocksFor(computed + n) - cached.length;
      // Cached blocks nobody references are counted in `free` (evictable): taking them costs one each.
      const revived = cached.filter((b) => ref(b) === 0).length;
      if (need + revived > free) break;
      for (const b of cached) refDelta.set(b, (refDelta.get(b) ?? 0) + 1);
      free -= need + revived;
      budget -= n;
      numRunning++;
      plan.admitted.push({ id: w.id, numNewTokens: n, newBlocks: need, cachedBlocks: cached });
    }
  }

  plan.numTokens = input.tokenBudget - budget;
  return plan;
}
