/**
 * What every routing policy must do (issue 12): rank() is pure (it changes nothing: /route is a
 * dry run), ranks every candidate exactly once with costs in order, gives identical answers for
 * identical state, and forgets a source as if it had never been committed to.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { PrefixIndex } from '../../src/index/index.js';
import { LocalLoad } from '../../router/load.js';
import { RouterConfigSchema, PolicyNameSchema, type PolicyName } from '../../router/config.js';
import { createPolicy } from '../../router/policies/index.js';
import type { Candidate, Policy, RouteRequest, Scored } from '../../router/policies/policy.js';

const BS = 16;
const seq = (n: number, from: number) => Array.from({ length: n }, (_, i) => from + i);
const req = (tokens: number[], salt: string | null = null): RouteRequest => ({ tokensFor: () => tokens, lora: null, salt });

/** A fresh policy over a fresh index, with a fixed tie-break source (answers depend on state only). */
function make(name: PolicyName): { policy: Policy; index: PrefixIndex } {
  const cfg = RouterConfigSchema.parse({ policy: name, approx_tree: { block_size: BS } });
  const index = new PrefixIndex({ provisionalTtlMs: 60_000 });
  return { policy: createPolicy(cfg, index, () => 0.5), index };
}

function fleet(load = new LocalLoad()): Candidate[] {
  return ['a', 'b', 'c'].map((id) => ({ workerId: id, rank: 0, source: `${id}:0`, trusted: true, blockSize: BS, tokenizerKey: 'default', load: load.get(`${id}:0`) }));
}

/** A ranking as plain data (what /route shows). */
const view = (r: Scored[]) => r.map((s) => ({ source: s.candidate.source, cost: s.cost, matched: s.matchedTokens, terms: s.terms }));

/** A history of committed requests: siblings of one prefix, then other prompts. */
function history(p: Policy, picks: string[]): void {
  const cands = fleet();
  picks.forEach((src, i) => p.commit?.(req([...seq(64, 1), ...seq(40, 1000 * (i + 1))]), cands.find((c) => c.source === src)!));
}

const probe = req([...seq(64, 1), ...seq(40, 777_000)]);

for (const name of PolicyNameSchema.options) {
  describe(`policy conformance: ${name}`, () => {
    test('rank is pure: ranking any number of times changes no later answer', () => {
      const { policy } = make(name);
      history(policy, ['b:0', 'b:0', 'c:0']);
      const first = view(policy.rank(probe, fleet()));
      for (let i = 0; i < 5; i++) policy.rank(req(seq(200, 50_000 * i)), fleet());
      assert.deepEqual(view(policy.rank(probe, fleet())), first);
    });

    test('order: every candidate exactly once, costs ascending', () => {
      const { policy } = make(name);
      history(policy, ['a:0', 'c:0']);
      const r = policy.rank(probe, fleet());
      assert.deepEqual(r.map((s) => s.candidate.source).sort(), ['a:0', 'b:0', 'c:0']);
      for (let i = 1; i < r.length; i++) assert.ok(r[i - 1]!.cost <= r[i]!.cost || r[i - 1]!.terms.overloaded !== r[i]!.terms.overloaded, JSON.stringify(view(r)));
      assert.deepEqual(policy.rank(probe, []), []);
    });

    test('identical state, identical answers (two instances, same history)', () => {
      const x = make(name).policy;
      const y = make(name).policy;
      history(x, ['c:0', 'a:0', 'a:0']);
      history(y, ['c:0', 'a:0', 'a:0']);
      assert.deepEqual(view(x.rank(probe, fleet())), view(y.rank(probe, fleet())));
    });

    test('commit is what changes state: the answer after a commit is the answer of a policy with that history', () => {
      const x = make(name).policy;
      const y = make(name).policy;
      history(x, ['b:0']);
      const pick = x.rank(probe, fleet())[0]!.candidate;
      x.commit?.(probe, pick);
      history(y, ['b:0']);
      y.commit?.(probe, fleet().find((c) => c.source === pick.source)!);
      assert.deepEqual(view(x.rank(probe, fleet())), view(y.rank(probe, fleet())));
    });

    test('forgetting a source: it ranks as if never committed to', () => {
      const { policy, index } = make(name);
      const fresh = make(name);
      history(policy, ['a:0', 'a:0', 'a:0']);
      policy.forget?.('a:0');
      index.removeSource('a:0'); // the registry drops the index source with it
      // Re-joining: only 'b' and 'c' history survives, which is none here.
      const got = view(policy.rank(probe, fleet())).find((s) => s.source === 'a:0')!;
      const want = view(fresh.policy.rank(probe, fleet())).find((s) => s.source === 'a:0')!;
      if (name === 'round_robin') return; // its turn is global, not per source: nothing to forget
      assert.deepEqual(got.matched, want.matched);
      assert.deepEqual(got.cost, want.cost);
    });
  });
}

test('round_robin: /route (rank) does not advance the turn, commit does', () => {
  const { policy } = make('round_robin');
  const first = policy.rank(probe, fleet())[0]!.candidate.source;
  assert.equal(policy.rank(probe, fleet())[0]!.candidate.source, first);
  policy.commit!(probe, fleet().find((c) => c.source === first)!);
  assert.notEqual(policy.rank(probe, fleet())[0]!.candidate.source, first);
});

test('approx_tree: a committed prefix is matched under its salt only', () => {
  for (const name of ['approx_tree'] as const) {
    const { policy } = make(name);
    const prompt = seq(160, 5);
    policy.commit!(req(prompt, 'tenant-1'), fleet()[0]!);
    const matched = (salt: string | null) => policy.rank(req([...prompt, 1], salt), fleet()).find((s) => s.candidate.source === 'a:0')!.matchedTokens;
    assert.equal(matched('tenant-1'), 160);
    assert.equal(matched('tenant-2'), 0);
    assert.equal(matched(null), 0);
  }
});

test('cache_aware: the salt reaches the index on match and on the provisional mark; the match reaches at most the prompt minus its last token', () => {
  const seen: { walked: number; salt: unknown; marked: unknown }[] = [];
  const index = {
    match: (ids: number[], opts?: { salt?: string | null; maxTokens?: number }) => {
      seen.push({ walked: Math.min(ids.length, opts?.maxTokens ?? Infinity), salt: opts?.salt, marked: undefined });
      return new Map();
    },
    markProvisional: (_s: string, _ids: number[], _bs: number, _lora?: string | null, salt?: string | null) => {
      seen.push({ walked: -1, salt: undefined, marked: salt });
    },
  };
  const cfg = RouterConfigSchema.parse({ policy: 'cache_aware' });
  const p = createPolicy(cfg, index, () => 0.5);
  const r = req(seq(160, 1), 's1');
  p.rank(r, fleet());
  p.commit!(r, fleet()[0]!);
  assert.deepEqual(seen, [{ walked: 159, salt: 's1', marked: undefined }, { walked: -1, salt: undefined, marked: 's1' }]);
});

test('every policy is selectable: `kv-router --policy NAME` parses to it, --help names it, createPolicy builds it', async () => {
  const { parseCli, USAGE } = await import('../../router/cli.js');
  for (const name of PolicyNameSchema.options) {
    const cli = await parseCli(['--policy', name]);
    assert.notEqual(cli, 'help');
    if (cli !== 'help') assert.equal(cli.config.policy, name);
    assert.match(USAGE, new RegExp(`\\b${name}\\b`));
    assert.equal(make(name).policy.name, name);
  }
  await assert.rejects(parseCli(['--policy', 'prefix_hashing']), /policy/);
});

test('prefix_hash: its config block reaches the policy (prefix_tokens decides what sticks together)', () => {
  const cfg = RouterConfigSchema.parse({ policy: 'prefix_hash', prefix_hash: { prefix_tokens: 4, virtual_nodes: 20 } });
  const p = createPolicy(cfg, new PrefixIndex(), () => 0.5);
  const cands = ['a', 'b', 'c', 'd', 'e', 'f'].map((id) => ({ ...fleet()[0]!, workerId: id, source: `${id}:0` }));
  const owner = (t: number[]) => p.rank(req(t), cands)[0]!.candidate.source;
  const first = owner([1, 2, 3, 4, 99]);
  for (let i = 0; i < 10; i++) assert.equal(owner([1, 2, 3, 4, ...seq(20, 100 * i)]), first);
  assert.throws(() => RouterConfigSchema.parse({ prefix_hash: { load_factor: 0.5 } }), /load_factor/);
});
