import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RemoteShares } from '../../router/cluster/shares.js';
import { decodeTokens, encodeTokens, parseLoadMessage, parseProvisionalMessage, type LoadMessage } from '../../router/cluster/messages.js';
import { SharedLoad } from '../../router/cluster/shared-load.js';

const msg = (r: string, q: number, k: LoadMessage['k'], s?: LoadMessage['s'], ttl = 1000): LoadMessage => ({ r, q, ttl, k, ...(s ? { s } : {}) });

test('shares: deltas state totals per source; replicas add up; own messages ignored', () => {
  const sh = new RemoteShares('me');
  assert.equal(sh.apply(msg('a', 1, 'd', { 'w:0': [2, 300, 0] }), 0), 'joined');
  assert.equal(sh.apply(msg('b', 1, 'd', { 'w:0': [1, 50, 1] }), 0), 'joined');
  assert.equal(sh.apply(msg('me', 9, 'd', { 'w:0': [7, 7, 7] }), 0), 'own');
  assert.deepEqual(sh.loadOf('w:0', 10), { inFlight: 3, pendingPrefillTokens: 350, activeDecodes: 1 });
  // a's request reaches its first byte, then finishes: each message restates a's totals.
  sh.apply(msg('a', 2, 'd', { 'w:0': [2, 100, 1] }), 20);
  sh.apply(msg('a', 3, 'd', { 'w:0': [0, 0, 0] }), 30);
  assert.deepEqual(sh.loadOf('w:0', 40), { inFlight: 1, pendingPrefillTokens: 50, activeDecodes: 1 });
  assert.deepEqual(sh.sources(), ['w:0']);
});

test('shares: stale and duplicated messages change nothing; a heartbeat replaces the whole share', () => {
  const sh = new RemoteShares('me');
  sh.apply(msg('a', 5, 'd', { 'w:0': [1, 10, 0], 'w:1': [4, 0, 4] }), 0);
  assert.equal(sh.apply(msg('a', 5, 'd', { 'w:0': [9, 9, 9] }), 0), 'stale');
  assert.equal(sh.apply(msg('a', 3, 'd', { 'w:0': [9, 9, 9] }), 0), 'stale');
  assert.equal(sh.loadOf('w:0', 1).inFlight, 1);
  // Messages 6..8 were lost: the heartbeat says w:1 is idle now (absent) and w:0 has 2.
  assert.equal(sh.apply(msg('a', 9, 'h', { 'w:0': [2, 20, 0] }), 1), 'applied');
  assert.equal(sh.loadOf('w:0', 2).inFlight, 2);
  assert.equal(sh.loadOf('w:1', 2).inFlight, 0);
});

test('shares: a silent replica expires after its TTL; a goodbye drops it at once; a rejoin is a new replica', () => {
  const sh = new RemoteShares('me');
  sh.apply(msg('a', 1, 'd', { 'w:0': [1, 0, 1] }, 500), 1000);
  sh.apply(msg('b', 1, 'd', { 'w:0': [1, 0, 1] }, 500), 1000);
  assert.deepEqual(sh.peers(1499).sort(), ['a', 'b']);
  sh.apply(msg('b', 2, 'h', { 'w:0': [1, 0, 1] }, 500), 1400); // b keeps beating
  assert.equal(sh.loadOf('w:0', 1500).inFlight, 1, 'a no longer counts at its expiry, even before expire() runs');
  assert.deepEqual(sh.expire(1500), ['a']);
  assert.deepEqual(sh.peers(1500), ['b']);
  assert.equal(sh.apply(msg('b', 3, 'b'), 1600), 'left');
  assert.equal(sh.loadOf('w:0', 1600).inFlight, 0);
  assert.equal(sh.apply(msg('b', 1, 'b'), 1600), 'stale', 'a goodbye from an unknown replica is nothing');
  sh.clear();
  assert.deepEqual(sh.peers(0), []);
});

test('messages: malformed load and provisional messages are refused whole', () => {
  assert.equal(parseLoadMessage(null), null);
  assert.equal(parseLoadMessage({ r: 'a', q: 0, ttl: 1, k: 'd', s: {} }), null);
  assert.equal(parseLoadMessage({ r: 'a', q: 1, ttl: 0, k: 'd', s: {} }), null);
  assert.equal(parseLoadMessage({ r: 'a', q: 1, ttl: 1, k: 'x', s: {} }), null);
  assert.equal(parseLoadMessage({ r: 'a', q: 1, ttl: 1, k: 'd', s: { 'w:0': [1, -1, 0] } }), null);
  assert.equal(parseLoadMessage({ r: 'a', q: 1, ttl: 1, k: 'd', s: { 'w:0': [1, 2] } }), null);
  assert.ok(parseLoadMessage({ r: 'a', q: 1, ttl: 1, k: 'b' }));
  const toks = [0, 1, 151_643, 2 ** 32 - 1, 7];
  assert.deepEqual(decodeTokens(encodeTokens(toks, 4)), toks.slice(0, 4));
  assert.equal(parseProvisionalMessage({ r: 'a', s: 'w:0', bs: 0, lora: null, salt: null, t: '' }), null);
  assert.equal(parseProvisionalMessage({ r: 'a', s: 'w:0', bs: 16, lora: 3, salt: null, t: '' }), null);
  assert.equal(parseProvisionalMessage({ r: 'a', s: 'w:0', bs: 16, lora: null, salt: null, t: Buffer.from([1, 2, 3]).toString('base64') }), null);
  assert.deepEqual(parseProvisionalMessage({ r: 'a', s: 'w:0', bs: 2, lora: 'l', salt: 's', t: encodeTokens([5, 6], 2) })?.tokens, [5, 6]);
});

test('SharedLoad: get is local + remote, every local change is told, the report counts both as ours', () => {
  let now = 0;
  const load = new SharedLoad('me', 5000, () => now);
  const told: string[] = [];
  load.onChange = (s) => told.push(s);
  const t = load.start('w:0', 100);
  load.remote.apply(msg('a', 1, 'd', { 'w:0': [2, 40, 0] }, 1000), now);
  assert.deepEqual(load.get('w:0'), { inFlight: 3, pendingPrefillTokens: 140, activeDecodes: 0 });
  assert.deepEqual(load.local.get('w:0'), { inFlight: 1, pendingPrefillTokens: 100, activeDecodes: 0 });
  // The worker sees all 3 plus one foreign request: only that one is added.
  load.report('w:0', { running: 0, waiting: 4, pendingPrefillTokens: 140 });
  assert.equal(load.effective('w:0').inFlight, 4);
  t.prefillDone();
  t.finish();
  t.finish();
  assert.deepEqual(told, ['w:0', 'w:0', 'w:0']);
  now = 1000;
  assert.equal(load.get('w:0').inFlight, 0, 'the remote share expired');
  load.forget('w:0');
  assert.deepEqual(load.sources(), []);
});
