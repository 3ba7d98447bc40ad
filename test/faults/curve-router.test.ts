/**
 * CURVE end to end: a sim worker with CURVE keys in --kv-events-config, a router given the
 * server's public key in the worker's kv_events.curve: the router's tree equals GET /cache.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { RunningRouter } from '../../router/server.js';
import { curveKeyPair } from '../../src/events/curve.js';
import { promptSet, SimWorker } from './fleet.js';
import { exact } from './invariant.js';
import { settleFault } from './pipeline.js';
import { askAll, routerCheck, routerFor } from './router-harness.js';

const server = curveKeyPair();
let w: SimWorker;
let r: RunningRouter;

describe('CURVE between a worker and the router', { timeout: 115_000 }, () => {
  before(async () => {
    w = await SimWorker.prepare('cw', { numBlocks: 32 });
    const kv = { endpoint: `tcp://*:${w.pubPort}`, replay_endpoint: `tcp://*:${w.replayPort}`, topic: 'kv', curve: { server_public_key: server.publicKey, server_secret_key: server.secretKey } };
    w.opts.extraArgs.push('--kv-events-config', JSON.stringify(kv));
    await w.launch();
    r = await routerFor([]);
    const res = await fetch(`${r.url}/workers`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ id: 'cw', url: w.url, block_size: 4, kv_events: { ...w.kvEvents, curve: { server_public_key: server.publicKey } } }),
    });
    assert.equal(res.status, 201, await res.text());
  });
  after(async () => {
    await r?.close();
    await w?.stop();
  });

  test("the router's tree over an encrypted stream equals the worker's cache", async () => {
    for (let i = 0; i < 100 && r.service.registry.healthyCount() < 1; i++) await new Promise((ok) => setTimeout(ok, 100));
    const out = await askAll(r, promptSet(77, 8));
    assert.deepEqual(out.filter((o) => o.status !== 200), []);
    const c = await settleFault('CURVE stream to the router', routerCheck(r, w), Date.now(), exact);
    assert.ok(c.workerBlocks > 0 && c.routerBlocks === c.workerBlocks);
  });

  test('a bad key in kv_events.curve: 400 with a readable message', async () => {
    const res = await fetch(`${r.url}/workers`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ id: 'bad', url: w.url, kv_events: { ...w.kvEvents, curve: { server_public_key: 'short' } } }),
    });
    assert.equal(res.status, 400);
    assert.match(await res.text(), /kv_events\.curve\.server_public_key: a CURVE key is 40 Z85 characters/);
  });
});
