// Keyed pending prefills (issue 13's sibling burst) and the hot-spot guard, pure: real PrefixIndex,
// real CacheAwarePolicy, LocalLoad / SharedLoad, and the cluster link's wire functions between
// replicas in place of NATS. No sockets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PrefixIndex, promptKeysOf } from '../../src/index/index.js';
import type { KVEventBatch } from '../../src/events/types.js';
import { RouterConfigSchema } from '../../router/config.js';
import { CacheAwarePolicy, type CacheAwareSettings } from '../../router/policies/cache-aware.js';
import type { Candidate, RouteRequest, Scored } from '../../router/policies/policy.js';
import { LocalLoad, type LoadAccounting } from '../../router/load.js';
import { SharedLoad } from '../../router/cluster/shared-load.js';
import { PendingBlocks, pendingOverlap } from '../../router/cluster/pending-blocks.js';
import { decodeKeys, encodeKeys, encodeTokens, parseLoadMessage, parseProvisionalMessage, type LoadMessage, type ProvisionalMessage } from '../../router/cluster/messages.js';
import { applyProvisional, loadMessage, provisionalMessage } from '../../router/cluster/wire.js';

const BS = 16;
const WORKERS = ['w0', 'w1', 'w2', 'w3', 'w4', 'w5', 'w6', 'w7'];
const seq = (n: number, base: number) => Array.from({ length: n }, (_, i) => base + i);
const req = (tokens: number[]): RouteRequest => ({ tokensFor: () => tokens, lora: null, salt: null });
const defaults = (): CacheAwareSettings => RouterConfigSchema.parse({}).cache_aware;
const ttft = (): CacheAwareSettings => ({ ...defaults(), cost: 'ttft' });

function indexOf(): PrefixIndex {
  const index = new PrefixIndex({ provisionalTtlMs: 60_000 });
  for (const w of WORKERS) index.addSource(`${w}:0`);
  return index;
}

const cands = (load: LoadAccounting): Candidate[] =>
  WORKERS.map((id) => ({ workerId: id, rank: 0, source: `${id}:0`, trusted: true, blockSize: BS, tokenizerKey: 'default', load: load.effective(`${id}:0`) }));

let nextHash = 1n;
function storeBatch(tokens: number[]): KVEventBatch {
  const blocks = Math.floor(tokens.length / BS);
  const hashes = Array.from({ length: blocks }, () => (nextHash++) + (1n << 62n));
  return { ts: 0, dp_rank: 0, events: [{ type: 'BlockStored', block_hashes: hashes, parent_block_hash: null, token_ids: tokens.slice(0, blocks * BS), block_size: BS, lora_id: null, medium: 'GPU', lora_name: null }] };
}

/** One router's commit step as the pipeline does it: load first, then the policy, then the cluster link. */
interface Replica {
  id: string;
  index: PrefixIndex;
  load: LocalLoad | SharedLoad;
  policy: CacheAwarePolicy;
  /** Messages this replica published, not yet delivered. */
  outbox: (ProvisionalMessage | LoadMessage)[];
  seq: number;
}

function route(r: Replica, tokens: number[]): { pick: Scored; ticket: ReturnType<LoadAccounting['start']> } {
  const rq = req(tokens);
  const [best] = r.policy.rank(rq, cands(r.load));
  const c = best!.candidate;
  const ticket = r.load.start(c.source, best!.promptTokens - best!.matchedTokens);
  r.policy.commit(rq, c);
  if (r.load instanceof SharedLoad) {
    const m = provisionalMessage(r.id, r.load, c.source, tokens, c.blockSize, null, null);
    if (m) r.outbox.push(m);
    r.outbox.push(loadMessage(r.id, ++r.seq, 60_000, 'd', r.load, [c.source]));
  }
  return { pick: best!, ticket };
}

/** Every replica's outbox to every other, in order (what NATS does), through the parsers. */
function deliver(rs: Replica[]): void {
  for (const from of rs) {
    for (const m of from.outbox.splice(0)) {
      const wire = JSON.parse(JSON.stringify(m)) as unknown;
      for (const to of rs) {
        if (to === from) continue;
        const shared = to.load as SharedLoad;
        if ('q' in m) shared.remote.apply(parseLoadMessage(wire)!, 0);
        else applyProvisional(parseProvisionalMessage(wire)!, to.index, shared);
      }
    }
  }
}

function replica(id: string, shared: boolean, w: CacheAwareSettings): Replica {
  const index = indexOf();
  return { id, index, load: shared ? new SharedLoad(id, 5000, () => 0) : new LocalLoad(), policy: new CacheAwarePolicy(index, w), outbox: [], seq: 0 };
}

/** Every replica knows the others before the burst (their heartbeats). */
function join(rs: Replica[]): void {
  for (const r of rs) r.outbox.push(loadMessage(r.id, ++r.seq, 60_000, 'h', r.load as SharedLoad, []));
  deliver(rs);
}

const PREFIX = seq(4096, 10_000);
const sibling = (i: number) => [...PREFIX, ...seq(64, 1_000_000 + i * 64)];

test('pending blocks: refcounted by key, overlap extends the match by blocks computed there and counts every copy', () => {
  const tokens = sibling(0);
  const keys = promptKeysOf(tokens, BS).keys(BS, 260);
  const pb = new PendingBlocks();
  const a = { source: 'w:0', keys, from: 0, to: 260, blockSize: BS };
  const b = { source: 'w:0', keys, from: 0, to: 256, blockSize: BS };
  pb.add(a);
  pb.add(b);
  const v = pb.view('w:0')!;
  assert.equal(v.keyedTokens, (260 + 256) * BS);
  assert.equal(v.count(keys[0]!, keys[1]!), 2);
  assert.equal(v.count(keys[2 * 259]!, keys[2 * 259 + 1]!), 1);
  // A sibling: same 256 prefix blocks, its own tail. Nothing matched in the index yet.
  const sk = promptKeysOf(sibling(1), BS).keys(BS, 259);
  const o = pendingOverlap(v, sk, BS, 0, 259);
  assert.equal(o.matchedTokens, 4096, 'the prefix being computed there counts as matched');
  assert.equal(o.sharedTokens, 2 * 4096, 'both pending copies of it are this prompt\'s own');
  // Matched in the index already (provisional or real): its pending blocks still count as shared, no further extension.
  assert.deepEqual(pendingOverlap(v, sk, BS, 2048, 259), { matchedTokens: 4096, sharedTokens: 2 * 4096 });
  pb.remove(b);
  assert.equal(pb.view('w:0')!.count(keys[0]!, keys[1]!), 1);
  pb.remove(a);
  assert.equal(pb.view('w:0'), undefined);
  assert.deepEqual(pb.sources(), []);
});

test('provisional messages v2: block keys (an eighth of the token ids), pending id; v1 token messages still decode; malformed refused', () => {
  const tokens = sibling(0);
  const keys = promptKeysOf(tokens, BS).keys(BS, 260);
  const v2: ProvisionalMessage = { v: 2, r: 'a', s: 'w:0', bs: BS, lora: null, salt: null, k: encodeKeys(keys, 260), i: 7, f: 3 };
  const v1: ProvisionalMessage = { r: 'a', s: 'w:0', bs: BS, lora: null, salt: null, t: encodeTokens(tokens, 260 * BS) };
  const size = (m: object) => JSON.stringify(m).length;
  assert.ok(size(v2) * 7 < size(v1), `v2 ${size(v2)} B vs v1 ${size(v1)} B`);
  const p2 = parseProvisionalMessage(JSON.parse(JSON.stringify(v2)))!;
  assert.deepEqual(p2.keys, keys.subarray(0, 520));
  assert.deepEqual(p2.pending, { id: 7, from: 3 });
  assert.deepEqual(decodeKeys(encodeKeys(keys, 2)), keys.subarray(0, 4));
  assert.deepEqual(parseProvisionalMessage(JSON.parse(JSON.stringify(v1)))!.tokens, tokens.slice(0, 260 * BS));
  assert.equal(parseProvisionalMessage({ ...v2, k: Buffer.alloc(12).toString('base64') }), null, 'not whole keys');
  assert.equal(parseProvisionalMessage({ ...v2, f: 261 }), null, 'pending from beyond the keys');
  assert.equal(parseProvisionalMessage({ ...v2, i: -1 }), null);
  assert.equal(parseProvisionalMessage({ ...v2, v: 3 }), null, 'an unknown version');
  assert.equal(parseProvisionalMessage({ ...v2, k: undefined }), null);
  assert.equal(parseLoadMessage({ r: 'a', q: 1, ttl: 1, k: 'd', s: {}, p: { 'w:0': [1, -2] } }), null);
  assert.ok(parseLoadMessage({ r: 'a', q: 1, ttl: 1, k: 'd', s: { 'w:0': [1, 1, 0] }, p: { 'w:0': [1] } }));
});

test('keyed pending across replicas: listed while pending, dropped when its first byte is told, with the share on expiry and goodbye', () => {
  const a = replica('a', true, defaults());
  const b = replica('b', true, defaults());
  const rs = [a, b];
  join(rs);
  const { pick, ticket } = route(a, sibling(0));
  const src = pick.candidate.source;
  const la = a.load as SharedLoad;
  const lb = b.load as SharedLoad;
  assert.deepEqual(la.ownPendingIds(src).length, 1);
  assert.equal(la.get(src).pending!.keyedTokens, 260 * BS, 'its own pending is keyed at once');
  deliver(rs);
  assert.equal(lb.remote.pendingEntries(), 1);
  assert.equal(lb.get(src).pending!.keyedTokens, 260 * BS);
  assert.equal(lb.get(src).pendingPrefillTokens, 4160);
  // Its first byte: the next delta no longer lists it.
  ticket.prefillDone();
  assert.deepEqual(la.ownPendingIds(src), []);
  a.outbox.push(loadMessage('a', ++a.seq, 60_000, 'd', la, [src]));
  deliver(rs);
  assert.equal(lb.remote.pendingEntries(), 0);
  assert.equal(lb.get(src).pending, undefined);
  // Pending again, then a's share expires, or a says goodbye: its keyed entries go with it.
  const t2 = route(a, sibling(1));
  deliver(rs);
  assert.equal(lb.remote.pendingEntries(), 1);
  lb.remote.expire(60_001);
  assert.equal(lb.remote.pendingEntries(), 0);
  assert.equal(lb.get(t2.pick.candidate.source).pending, undefined);
  join(rs);
  route(a, sibling(2));
  deliver(rs);
  assert.equal(lb.remote.pendingEntries(), 1);
  lb.remote.apply({ r: 'a', q: ++a.seq, ttl: 1, k: 'b' }, 0);
  assert.equal(lb.remote.pendingEntries(), 0);
  // A heartbeat restates everything: an entry it does not list is dropped.
  join(rs);
  const t3 = route(a, sibling(3));
  deliver(rs);
  t3.ticket.finish();
  a.outbox.push(loadMessage('a', ++a.seq, 60_000, 'h', la, la.local.sources()));
  deliver(rs);
  assert.equal(lb.remote.pendingEntries(), 0);
  lb.forget(src);
  la.forget(src);
  assert.ok(!la.sources().includes(src));
});

test('the sibling race: 4 replicas each send their first sibling to the same worker; the 4 queued copies of the prefix are not work ahead of the next sibling', () => {
  for (const w of [defaults(), ttft()]) {
    const rs = ['a', 'b', 'c', 'd'].map((id) => replica(id, true, w));
    join(rs);
    // The same instant on every replica: nothing has crossed NATS yet; the tie hash sends all four to one worker.
    const first = rs.map((r, i) => route(r, sibling(i)).pick.candidate.workerId);
    assert.equal(new Set(first).size, 1, first.join(','));
    deliver(rs);
    const holder = first[0]!;
    const l = rs[0]!.load.effective(`${holder}:0`);
    assert.equal(l.pendingPrefillTokens, 4 * 4160);
    const ranked = rs[0]!.policy.rank(req(sibling(9)), cands(rs[0]!.load));
    const at = ranked.find((s) => s.candidate.workerId === holder)!;
    assert.equal(ranked[0]!.candidate.workerId, holder, `${w.cost}: ${JSON.stringify(ranked.slice(0, 2).map((s) => [s.candidate.workerId, s.cost, s.terms]))}`);
    assert.equal(at.matchedTokens, 4096);
    if (w.cost === 'ttft') assert.equal(at.terms.ahead_tokens, 4 * 64, 'only the four tails are ahead');
    else assert.equal(at.terms.queued_prefill, 4 * 64);
  }
});

test('without keys (each replica alone) the same race reads as 3 extra prefixes queued at the holder, and the ttft cost copies the prefix', () => {
  const rs = ['a', 'b', 'c', 'd'].map((id) => replica(id, true, ttft()));
  join(rs);
  const first = rs.map((r, i) => route(r, sibling(i)).pick.candidate.workerId);
  // Provisional marks as before, but no pending ids: nobody knows which prefix the holder's queue computes.
  for (const r of rs) {
    for (const m of r.outbox) {
      if ((m as ProvisionalMessage).bs === undefined) continue;
      const p = m as ProvisionalMessage;
      delete p.i;
      delete p.f;
    }
  }
  deliver(rs);
  const ranked = rs[0]!.policy.rank(req(sibling(9)), cands(rs[0]!.load));
  assert.notEqual(ranked[0]!.candidate.workerId, first[0], 'copied elsewhere');
});

/** 64 simultaneous siblings on one router (default config): distinct workers that compute the prefix. */
function burstOnOneRouter(w: CacheAwareSettings, prefillDoneAt: number | null): Set<string> {
  const r = replica('solo', false, w);
  const computed = new Set<string>();
  const firstTicket = new Map<string, { done(): void }>();
  for (let i = 0; i < 64; i++) {
    const tokens = sibling(i);
    const { pick, ticket } = route(r, tokens);
    const wk = pick.candidate.workerId;
    if (pick.matchedTokens < 4096) {
      computed.add(wk);
      firstTicket.set(wk, {
        done: () => {
          ticket.prefillDone();
          r.index.applyBatch(pick.candidate.source, storeBatch(tokens));
        },
      });
    }
    // The first copy's prefill ends (first byte, its blocks evented) after this many requests were routed.
    if (i + 1 === prefillDoneAt) for (const t of firstTicket.values()) t.done();
  }
  return computed;
}

test('one router, default weighted cost: a burst of 64 siblings of a new prefix computes it on one worker, two when the burst outlasts its prefill', () => {
  const once = burstOnOneRouter(defaults(), null);
  assert.equal(once.size, 1, [...once].join(','));
  const outlasting = burstOnOneRouter(defaults(), 40);
  assert.ok(outlasting.size <= 2, [...outlasting].join(','));
  for (const c of [once, outlasting]) assert.ok(c.size >= 1);
});

test('hot-spot guard: a holder still computing the prefix is spared; once computed, an overloaded holder goes last', () => {
  const w = defaults();
  const index = indexOf();
  const load = new LocalLoad();
  const p = new CacheAwarePolicy(index, w);
  const prefix = seq(2048, 50_000);
  const tokens = (i: number) => [...prefix, ...seq(32, 60_000 + i * 32)];
  // 10 siblings: all wait at the first one's worker for the prefix (provisional there, pending);
  // from the 4th the prefix is hot, and the holder is 10× the mean in flight.
  const picks: string[] = [];
  for (let i = 0; i < 10; i++) {
    const rq = req(tokens(i));
    const ranked = p.rank(rq, cands(load));
    const best = ranked[0]!;
    if (i >= 4) assert.equal(best.terms.computing_prefix, 1, JSON.stringify(best.terms));
    picks.push(best.candidate.workerId);
    load.start(best.candidate.source, best.promptTokens - best.matchedTokens);
    p.commit(rq, best.candidate);
  }
  const holder = picks[0]!;
  assert.deepEqual(new Set(picks), new Set([holder]), picks.join(','));
  const r1 = p.rank(req(tokens(10)), cands(load));
  assert.equal(r1[0]!.candidate.workerId, holder);
  assert.ok(r1[0]!.terms.prefix_requests! >= 4, 'the prefix is hot');
  // Computed (evented for real) and decoding: the guard spreads again.
  index.applyBatch(`${holder}:0`, storeBatch(tokens(0)));
  const decoding = new LocalLoad();
  for (let i = 0; i < 10; i++) decoding.start(`${holder}:0`, 0).prefillDone();
  const r2 = p.rank(req(tokens(11)), cands(decoding));
  assert.notEqual(r2[0]!.candidate.workerId, holder);
  assert.equal(r2.at(-1)!.candidate.workerId, holder);
  assert.equal(r2.at(-1)!.terms.overloaded, 1);
});
