// Load accounting and the retry budget: pure units, no sockets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LocalLoad, mergeReported } from '../../router/load.js';
import { mayRetry, RetryBudget } from '../../router/retry.js';

test('phantom load: a request the router saw finish stops counting at once, whatever the worker last reported', () => {
  const load = new LocalLoad(5000);
  const t = load.start('a:0', 800);
  load.report('a:0', { running: 0, waiting: 1, pendingPrefillTokens: 800 }); // the worker's view of that same request
  assert.deepEqual(load.effective('a:0'), { inFlight: 1, pendingPrefillTokens: 800, activeDecodes: 0 });
  t.finish();
  // The report is still fresh (5 s), but its only request was ours and it is done.
  assert.deepEqual(load.effective('a:0'), { inFlight: 0, pendingPrefillTokens: 0, activeDecodes: 0 });
});

test('foreign load: work the worker reports beyond what this router sent is added to the own count', () => {
  const load = new LocalLoad(5000);
  const t = load.start('a:0', 100);
  t.prefillDone();
  load.report('a:0', { running: 3, waiting: 1, pendingPrefillTokens: 500 }); // 1 ours, 3 from elsewhere
  assert.deepEqual(load.effective('a:0'), { inFlight: 4, pendingPrefillTokens: 500, activeDecodes: 3 });
  t.finish();
  assert.deepEqual(load.effective('a:0'), { inFlight: 3, pendingPrefillTokens: 500, activeDecodes: 2 });
  load.start('a:0', 50); // a new request of ours counts on top at once
  assert.equal(load.effective('a:0').inFlight, 4);
});

test('a stale report counts for nothing; forget drops every map of the source', () => {
  const own = { inFlight: 1, pendingPrefillTokens: 0, activeDecodes: 1 };
  const rep = { running: 9, waiting: 0, pendingPrefillTokens: 0, at: 0, own: { inFlight: 0, pendingPrefillTokens: 0, activeDecodes: 0 } };
  assert.equal(mergeReported(own, rep, 4000, 5000).inFlight, 10);
  assert.equal(mergeReported(own, rep, 6000, 5000), own);
  const load = new LocalLoad();
  load.start('a:0', 1);
  load.report('b:0', { running: 1, waiting: 0, pendingPrefillTokens: 0 });
  load.forget('a:0');
  load.forget('b:0');
  assert.deepEqual(load.sources(), []);
});

test('retry budget: a timed-out or out-of-rotation attempt is never retried; a refused one always; the rest within the budget', () => {
  const b = new RetryBudget(0.2, 2, 0);
  const f = (reason: 'refused' | 'connect' | 'timeout' | 'out_of_rotation' | 'status') => ({ reason, error: reason });
  assert.equal(mayRetry(f('timeout'), false, b, 0), false);
  assert.equal(mayRetry(f('out_of_rotation'), false, b, 0), false);
  assert.equal(mayRetry(f('connect'), true, b, 0), false, 'this attempt took the worker out of rotation');
  for (let i = 0; i < 5; i++) assert.equal(mayRetry(f('refused'), true, b, 0), true);
  // Budget: 2 spare at start, then 0.2 per request, plus 2 per second.
  assert.equal(mayRetry(f('status'), false, b, 0), true);
  assert.equal(mayRetry(f('connect'), false, b, 0), true);
  assert.equal(mayRetry(f('status'), false, b, 0), false, 'spent');
  for (let i = 0; i < 5; i++) b.deposit(0);
  assert.equal(mayRetry(f('status'), false, b, 0), true, 'five requests bought one retry');
  assert.equal(mayRetry(f('status'), false, b, 0), false);
  assert.equal(mayRetry(f('status'), false, b, 500), true, 'half a second at 2/s');
});
