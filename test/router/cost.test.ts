// The ttft cost alone: the model (pure), the rate learner (deterministic observations, an injected
// clock), and cache_aware ranking with it on a real PrefixIndex. No sockets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PrefixIndex } from '../../src/index/index.js';
import type { KVEventBatch } from '../../src/events/types.js';
import { RouterConfigSchema } from '../../router/config.js';
import { RateLearner, type RateSettings, type WorkerRates } from '../../router/cost/rates.js';
import { predictTtft } from '../../router/cost/ttft-model.js';
import { CacheAwarePolicy } from '../../router/policies/cache-aware.js';
import type { Candidate, RouteRequest, Scored } from '../../router/policies/policy.js';
import type { WorkerLoad } from '../../router/load.js';

const BS = 16;
const settings = (over: Partial<RateSettings> = {}): RateSettings => ({ ...RouterConfigSchema.parse({}).cache_aware.ttft, ...over });
const load = (inFlight = 0, pendingPrefillTokens = 0, activeDecodes = 0): WorkerLoad => ({ inFlight, pendingPrefillTokens, activeDecodes });
const seq = (n: number, base: number) => Array.from({ length: n }, (_, i) => base + i);
const req = (tokens: number[]): RouteRequest => ({ tokensFor: () => tokens, lora: null, salt: null });
const cand = (id: string, l: WorkerLoad = load()): Candidate => ({ workerId: id, rank: 0, source: `${id}:0`, trusted: true, blockSize: BS, tokenizerKey: 'default', load: l });

/** A worker that really takes overhead + ms/ktok × tokens + ms/running × decodes (plus a deterministic wobble). */
function feed(r: RateLearner, source: string, msPerKtok: number, n: number, overheadMs = 8, msPerRunning = 2): void {
  for (let i = 0; i < n; i++) {
    const uncached = 500 + ((i * 7919) % 8000);
    const ahead = (i * 104_729) % 12_000;
    const running = i % 9;
    const wobble = 1 + 0.05 * Math.sin(i);
    r.observeTtft(source, { uncachedTokens: uncached, aheadTokens: ahead, runningDecodes: running, ttftMs: (overheadMs + ((uncached + ahead) / 1000) * msPerKtok + running * msPerRunning) * wobble });
  }
}

test('ttft model: wait, own prefill, running decodes and the delays to others and to later requests, at the given rates', () => {
  const rates: WorkerRates = { msPerKtok: 50, msPerKtokAhead: 50, overheadMs: 5, msPerRunning: 2, msPerWaiting: 4, decodeStepMs: 10, decodeMsPerSeq: 0.2, basis: 'prior', ttftSamples: 0, itlSamples: 0 };
  const p = predictTtft({ promptTokens: 3000, matchedTokens: 1000, sharedPending: 1000, load: load(4, 5000, 3), rates, delayWeight: 1, laterRequests: 1.5, laterWeight: 2, waitingWeight: 0.5 });
  assert.equal(p.wait_ms, 200, '4000 tokens ahead (5000 queued minus 1000 computing this prefix) at 50 ms/ktok');
  assert.equal(p.prefill_ms, 100, '2000 uncached tokens');
  assert.equal(p.running_ms, 6);
  assert.equal(p.queued_requests_ms, 4, 'one of the 4 in flight has no first token yet');
  assert.equal(p.predicted_ttft_ms, 5 + 200 + 100 + 6 + 4);
  assert.equal(p.delay_to_others_ms, 300, 'each of the 3 decoding requests waits out the 100 ms prefill');
  assert.equal(p.delay_to_later_ms, 300, '1.5 requests expected behind it, each waits out the 100 ms prefill, at weight 2');
  assert.equal(p.delay_to_waiting_ms, 50, 'the one waiting there waits out the 100 ms prefill too, at weight 0.5');
  assert.equal(p.cost_ms, 315 + 300 + 50 + 300);
  assert.equal(predictTtft({ promptTokens: 3000, matchedTokens: 1000, sharedPending: 0, load: load(4, 5000, 3), rates, delayWeight: 0, laterRequests: 3, laterWeight: 0, waitingWeight: 0 }).cost_ms, 5 + 250 + 100 + 6 + 4);
  const idle = predictTtft({ promptTokens: 100, matchedTokens: 400, sharedPending: 0, load: load(), rates, delayWeight: 1, laterRequests: 2, laterWeight: 1, waitingWeight: 1 });
  assert.equal(idle.prefill_ms, 0, 'more matched than the prompt: nothing to compute');
  assert.equal(idle.predicted_ttft_ms, 5);
  assert.equal(idle.delay_to_later_ms, 0, 'nothing to compute delays no one');
});

test('rates: the prior until min_samples, then a fast and a slow worker are told apart', () => {
  const s = settings({ min_samples: 10 });
  const r = new RateLearner(s);
  const prior = 1e6 / s.prior.prefill_tokens_per_s;
  feed(r, 'fast:0', 20, 9);
  feed(r, 'slow:0', 120, 9);
  for (const src of ['fast:0', 'slow:0', 'never:0']) {
    const x = r.ratesOf(src);
    assert.equal(x.basis, 'prior', src);
    assert.equal(x.msPerKtok, prior, `${src}: the prior before min_samples`);
  }
  feed(r, 'fast:0', 20, 60);
  feed(r, 'slow:0', 120, 60);
  const fast = r.learnedOf('fast:0');
  const slow = r.learnedOf('slow:0');
  assert.equal(fast.basis, 'learned');
  assert.ok(r.ratesOf('fast:0').msPerKtok < r.ratesOf('slow:0').msPerKtok, 'pooled to the fleet median, still apart');
  assert.ok(Math.abs(fast.msPerKtok - 20) / 20 < 0.15, `fast ms/ktok ${fast.msPerKtok}`);
  assert.ok(Math.abs(slow.msPerKtok - 120) / 120 < 0.15, `slow ms/ktok ${slow.msPerKtok}`);
  assert.equal(fast.ttftSamples, 69);
  const newcomer = r.ratesOf('new:0');
  assert.equal(newcomer.basis, 'fleet', 'once others are learned, a new worker starts from the fleet median');
  assert.ok(newcomer.msPerKtok > fast.msPerKtok && newcomer.msPerKtok < slow.msPerKtok, String(newcomer.msPerKtok));
  r.forget('slow:0');
  r.forget('fast:0');
  assert.equal(r.ratesOf('slow:0').basis, 'prior', 'a forgotten worker starts again from the prior');
});

test('rates: an outlier moves the fit little (clamped residual); bad numbers are ignored', () => {
  const r = new RateLearner(settings());
  feed(r, 'a:0', 40, 80);
  const before = r.learnedOf('a:0').msPerKtok;
  r.observeTtft('a:0', { uncachedTokens: 2000, aheadTokens: 0, runningDecodes: 0, ttftMs: 60_000 });
  r.observeTtft('a:0', { uncachedTokens: 2000, aheadTokens: 0, runningDecodes: 0, ttftMs: Number.NaN });
  const after = r.learnedOf('a:0').msPerKtok;
  assert.ok(Math.abs(after - before) / before < 0.2, `${before} → ${after} after a 60 s stall`);
  assert.ok(Number.isFinite(r.fittedTtftMs('a:0', { uncachedTokens: 1000, aheadTokens: 0, runningDecodes: 0 })));
});

test('rates: an override is used as given and never learned over', () => {
  const r = new RateLearner(settings({ workers: { gpu: { prefill_tokens_per_s: 100_000 } } }));
  feed(r, 'gpu:0', 500, 50);
  const x = r.ratesOf('gpu:0');
  assert.equal(x.basis, 'override');
  assert.equal(x.msPerKtok, 10);
  assert.equal(x.overheadMs, settings().prior.overhead_ms, 'fields not overridden come from the prior');
});

test('rates: inter-token gaps against batch size', () => {
  const r = new RateLearner(settings({ min_samples: 5 }));
  for (let i = 0; i < 200; i++) {
    const b = 1 + (i % 16);
    r.observeGap('a:0', b, 12 + 0.5 * b);
  }
  const x = r.ratesOf('a:0');
  assert.ok(Math.abs(x.decodeStepMs - 12) < 1, `step ${x.decodeStepMs}`);
  assert.ok(Math.abs(x.decodeMsPerSeq - 0.5) < 0.1, `per seq ${x.decodeMsPerSeq}`);
});

test('rates: the attempt hook times the first token (completions: first chunk; chat: the chunk after the role) and the gaps', () => {
  let now = 1000;
  const r = new RateLearner(settings({ min_samples: 1 }), () => now);
  const s = { candidate: cand('a', load(1, 3000, 2)), matchedTokens: 0, indexMatchedTokens: 0, promptTokens: 1000, terms: { ahead_tokens: 2000 }, cost: 0 } as Scored;
  assert.equal(r.begin(s, { stream: false, firstChunkIsRole: false }), null, 'a non-streamed first byte is the whole answer: not a TTFT');
  const t = r.begin(s, { stream: true, firstChunkIsRole: false })!;
  now += 150;
  t.firstByte(200);
  now += 20;
  t.progress(3);
  const fit = r.snapshot()['a:0']!;
  assert.equal(fit.ttftSamples, 1);
  assert.equal(fit.itlSamples, 1);
  const chat = new RateLearner(settings({ min_samples: 1 }), () => now);
  const c = chat.begin(s, { stream: true, firstChunkIsRole: true })!;
  now += 5;
  c.firstByte(200);
  assert.equal(chat.snapshot()['a:0'], undefined, 'the role chunk is not a token');
  now += 100;
  c.progress(3);
  assert.equal(chat.snapshot()['a:0']!.ttftSamples, 1);
  const failed = new RateLearner(settings(), () => now);
  const f = failed.begin(s, { stream: true, firstChunkIsRole: false })!;
  f.firstByte(503);
  f.progress(1);
  assert.equal(failed.snapshot()['a:0'], undefined, 'an error status teaches nothing');
});

let nextHash = 1n;
function storeBatch(tokens: number[]): KVEventBatch {
  const blocks = Math.floor(tokens.length / BS);
  const hashes = Array.from({ length: blocks }, () => nextHash++ + (1n << 63n));
  return { ts: Date.now() / 1000, dp_rank: 0, events: [{ type: 'BlockStored', block_hashes: hashes, parent_block_hash: null, token_ids: tokens.slice(0, blocks * BS), block_size: BS, lora_id: null, medium: 'GPU', lora_name: null }] };
}

function ttftPolicy(over: Record<string, unknown> = {}): { p: CacheAwarePolicy; index: PrefixIndex } {
  const index = new PrefixIndex({ provisionalTtlMs: 60_000 });
  for (const w of ['a', 'b', 'c']) index.addSource(`${w}:0`);
  const cfg = RouterConfigSchema.parse({ cache_aware: { cost: 'ttft', ...over } }).cache_aware;
  return { p: new CacheAwarePolicy(index, cfg, () => 0.5), index };
}

test('cache_aware ttft: a cold prompt goes to the worker learned to be faster; terms name the parts', () => {
  const { p } = ttftPolicy();
  const prompt = req(seq(4000, 1));
  const before = p.rank(prompt, [cand('a'), cand('b')]);
  assert.equal(before[0]!.terms.rates_learned, 0);
  assert.equal(before[0]!.cost, before[1]!.cost, 'same prior: a tie');
  feed(p.rates!, 'a:0', 150, 40);
  feed(p.rates!, 'b:0', 30, 40);
  const r = p.rank(prompt, [cand('a'), cand('b')]);
  assert.equal(r[0]!.candidate.source, 'b:0');
  for (const k of ['predicted_ttft_ms', 'wait_ms', 'prefill_ms', 'running_ms', 'overhead_ms', 'delay_to_others_ms', 'delay_to_waiting_ms', 'delay_to_later_ms', 'ms_per_ktok']) assert.ok(k in r[0]!.terms, k);
  assert.equal(r[0]!.terms.rates_learned, 1);
  assert.ok(r[1]!.terms.prefill_ms! > 1.5 * r[0]!.terms.prefill_ms!, JSON.stringify(r.map((s) => s.terms)));
  // Enough queued on the fast one, and the slow idle one is quicker for this request alone
  // (later_weight 0); counting the requests that will queue behind its slower prefill, the fleet
  // is better off waiting at the fast one.
  const alone = ttftPolicy({ ttft: { later_weight: 0, waiting_weight: 0 } }).p;
  feed(alone.rates!, 'a:0', 150, 40);
  feed(alone.rates!, 'b:0', 30, 40);
  const busyLoad = load(6, 40_000, 0);
  const busy = alone.rank(prompt, [cand('a'), cand('b', busyLoad)]);
  assert.equal(busy[0]!.candidate.source, 'a:0', JSON.stringify(busy.map((s) => s.terms)));
  const fleet = p.rank(prompt, [cand('a'), cand('b', busyLoad)]);
  assert.equal(fleet[0]!.candidate.source, 'b:0', JSON.stringify(fleet.map((s) => s.terms)));
  assert.ok(Math.abs(fleet[1]!.terms.delay_to_later_ms! - 2 * 3 * fleet[1]!.terms.prefill_ms!) < 0.05, 'a mean of 3 waiting per worker (6 and 0) behind its prefill, at the default later_weight 2');
});

test('cache_aware ttft: a hot prefix is copied only when waiting at the holder is slower than recomputing elsewhere', () => {
  const { p, index } = ttftPolicy({ hot_prefix_requests: 2 });
  const shared = seq(8000, 1);
  index.applyBatch('a:0', storeBatch(shared));
  let tail = 100_000;
  const prompt = () => req([...shared, ...seq(32, (tail += 1000))]);
  // Decoding requests on b make recomputing there costly for them (delay to others) while the prefix is cold.
  const cold = p.rank(prompt(), [cand('a', load(3, 2000, 3)), cand('b', load(2, 0, 2))]);
  assert.equal(cold[0]!.candidate.source, 'a:0');
  for (let i = 0; i < 2; i++) {
    const sibling = prompt();
    p.rank(sibling, [cand('a'), cand('b')]);
    p.commit(sibling, cand('a'));
  }
  // Hot, holder lightly queued: still the holder.
  const light = p.rank(prompt(), [cand('a', load(3, 2000, 3)), cand('b', load(2, 0, 2))]);
  assert.equal(light[0]!.candidate.source, 'a:0', JSON.stringify(light.map((s) => s.terms)));
  assert.equal(light[1]!.terms.hot_copy, 1);
  assert.equal(light[1]!.cost, light[1]!.terms.predicted_ttft_ms, 'a copy is priced by the requester\'s own time');
  // Hot, holder deeply queued: waiting there is slower than recomputing 8000 tokens on b.
  const deep = p.rank(prompt(), [cand('a', load(20, 30_000, 3)), cand('b', load(2, 0, 2))]);
  assert.equal(deep[0]!.candidate.source, 'b:0', JSON.stringify(deep.map((s) => s.terms)));
  assert.ok(deep[1]!.terms.wait_ms! > deep[0]!.terms.prefill_ms!);
  assert.equal(deep.find((s) => s.candidate.source === 'a:0')!.terms.overloaded, undefined, 'no balance thresholds under the ttft cost');
});

test('cache_aware ttft: rank is pure (the learner changes only through observations), forget drops a worker\'s rates', () => {
  const { p } = ttftPolicy();
  feed(p.rates!, 'a:0', 80, 20);
  const prompt = req(seq(3000, 7));
  const first = p.rank(prompt, [cand('a', load(2, 1000, 1)), cand('b')]).map((s) => ({ src: s.candidate.source, cost: s.cost, terms: s.terms }));
  for (let i = 0; i < 3; i++) p.rank(req(seq(500, 90_000 + i * 1000)), [cand('a'), cand('b')]);
  assert.deepEqual(p.rank(prompt, [cand('a', load(2, 1000, 1)), cand('b')]).map((s) => ({ src: s.candidate.source, cost: s.cost, terms: s.terms })), first);
  p.forget('a:0');
  assert.equal(p.rates!.ratesOf('a:0').basis, 'prior');
});

test('rates: pooling keeps two workers in order even when one fit puts its slowness in the overhead', () => {
  const r = new RateLearner(settings({ min_samples: 4 }));
  for (let i = 0; i < 20; i++) {
    // Always the same prompt size on the slow one: overhead and per-token rate cannot be told apart.
    r.observeTtft('slow:0', { uncachedTokens: 1200, aheadTokens: 0, runningDecodes: 0, ttftMs: 300 });
    r.observeTtft('fast:0', { uncachedTokens: 500 + 100 * i, aheadTokens: 0, runningDecodes: 0, ttftMs: 5 + (500 + 100 * i) * 0.025 });
  }
  const rates = { slow: r.ratesOf('slow:0'), fast: r.ratesOf('fast:0') };
  const at = (x: WorkerRates) => predictTtft({ promptTokens: 1200, matchedTokens: 0, sharedPending: 0, load: load(), rates: x, delayWeight: 1, laterRequests: 0, laterWeight: 1, waitingWeight: 1 }).predicted_ttft_ms;
  assert.ok(at(rates.fast) < at(rates.slow), JSON.stringify(rates));
});
