/**
 * A worker restarted behind a real router (trees read through the admin API): seq back to 0,
 * cache empty. The router resets that tree at once, even before any new traffic, and every
 * client request gets an answer.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { RunningRouter } from '../../router/server.js';
import { promptSet, SimWorker, stopAllSims } from './fleet.js';
import { exact, settle, type SourceCheck } from './invariant.js';
import { settleFault } from './pipeline.js';
import { askAll, routerCheck, routerFor } from './router-harness.js';

let a: SimWorker;
let b: SimWorker;
let r: RunningRouter;
let seed = 500;

function settled(fault: string | null, w: SimWorker, t0: number, want: (c: SourceCheck) => boolean = exact): Promise<SourceCheck> {
  return settleFault(fault, routerCheck(r, w), t0, want);
}

describe('worker restart behind the router', { timeout: 118_000 }, () => {
  before(async () => {
    [a, b] = await Promise.all([SimWorker.start('a', { numBlocks: 48 }), SimWorker.start('b', { numBlocks: 48 })]);
    r = await routerFor([a, b], { upstream_header_timeout_ms: 3000 });
  });
  after(async () => {
    await r?.close();
    await stopAllSims();
  });

  test('traffic through the router: both trees equal the workers caches', async () => {
    const out = await askAll(r, promptSet(seed++, 16));
    assert.deepEqual(out.filter((o) => o.status !== 200), []);
    const t0 = Date.now();
    const [ca, cb] = [await settled(null, a, t0), await settled(null, b, t0)];
    assert.ok(ca.workerBlocks + cb.workerBlocks > 0);
  });

  test('worker restarted (seq back to 0, cache empty): its tree is reset at once, even with no traffic', async () => {
    const before = await settle(routerCheck(r, a), { want: exact });
    assert.ok(before.check.routerBlocks > 0, 'a holds blocks before the restart');
    const during = askAll(r, promptSet(seed++, 12), 2);
    await a.restart();
    const t0 = Date.now();
    const c = await settled('worker restarted', a, t0);
    assert.equal(c.workerBlocks, 0);
    assert.equal(c.routerBlocks, 0);
    const out = await during;
    assert.deepEqual(out.filter((o) => o.status !== 200), [], 'requests during the restart were served');
    await askAll(r, promptSet(seed++, 8));
    await settled(null, a, Date.now());
  });
});
