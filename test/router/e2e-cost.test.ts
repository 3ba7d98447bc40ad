// End to end with real processes: a fast and a slow `kv-worker --engine sim`, the router in this
// process with cache_aware's ttft cost and no per-worker setting. It learns each worker's speed
// from its own requests' timing and sends cold prompts to the faster one. Asserts on routing
// decisions and learned rates, never on wall-clock figures.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { routerWith, startWorker, waitHealthy, waitUntil, workerAvailable, workerEntry, type WorkerProc } from './helpers.js';
import type { RunningRouter } from '../../router/server.js';
import { rateLearnerOf } from '../../router/cost/rates.js';

const skip = workerAvailable() ? false : 'bin/kv-worker.js not present';
let F: WorkerProc, S: WorkerProc, router: RunningRouter;

before(async () => {
  if (skip) return;
  [F, S] = await Promise.all([
    startWorker({ id: 'F', extraArgs: ['--prefill-tokens-per-s', '40000', '--decode-step-ms', '2', '--num-blocks', '4096'] }),
    startWorker({ id: 'S', extraArgs: ['--prefill-tokens-per-s', '4000', '--decode-step-ms', '20', '--num-blocks', '4096'] }),
  ]);
  router = await routerWith({ workers: [workerEntry(F), workerEntry(S)], cache_aware: { cost: 'ttft', ttft: { min_samples: 2 } } });
  await waitHealthy(router, 2);
  await waitUntil('both streams connected', 10_000, () => router.service.registry.list().every((w) => w.streams.get(0)!.health().connected));
}, { timeout: 110_000 });

after(async () => {
  await router?.close();
  await Promise.all([F?.stop(), S?.stop()]);
});

let next = 1;
/** A prompt no worker holds: 1200 fresh token ids. */
const cold = () => Array.from({ length: 1200 }, () => 100 + (next++ % 20_000));

async function stream(prompt: number[]): Promise<{ worker: string; predicted: number }> {
  const res = await fetch(`${router.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt, max_tokens: 3, stream: true }),
  });
  const body = await res.text();
  assert.equal(res.status, 200, body);
  assert.ok(body.includes('[DONE]'), body);
  return { worker: res.headers.get('x-kv-router-worker')!, predicted: Number(res.headers.get('x-kv-router-predicted-ttft-ms')) };
}

test('ttft cost: the slower worker is recognised from timing alone and cold prompts go to the faster one', { skip, timeout: 240_000 }, async () => {
  const rates = rateLearnerOf(router.service.policy)!;
  assert.ok(rates, 'cache_aware with cost ttft carries a rate learner');
  // Both start at the same prior: concurrent pairs split (the second sees the first's queued prefill).
  const warm: string[] = [];
  for (let i = 0; i < 3; i++) {
    const pair = await Promise.all([stream(cold()), stream(cold())]);
    warm.push(...pair.map((r) => r.worker));
    assert.ok(pair.every((r) => Number.isFinite(r.predicted) && r.predicted > 0), JSON.stringify(pair));
  }
  assert.ok(warm.includes('F') && warm.includes('S'), `warm-up picks ${warm}`);
  await waitUntil('both workers learned', 30_000, () => ['F:0', 'S:0'].every((s) => rates.ratesOf(s).basis === 'learned'));
  const f = rates.ratesOf('F:0');
  const s = rates.ratesOf('S:0');
  assert.ok(f.msPerKtok < s.msPerKtok, `F ${f.msPerKtok} ms/ktok vs S ${s.msPerKtok}`);

  const picks: string[] = [];
  for (let i = 0; i < 8; i++) picks.push((await stream(cold())).worker);
  assert.deepEqual(picks, Array(8).fill('F'), `cold prompts, one at a time: ${picks}`);

  // /route explains it: each candidate's predicted TTFT and its parts, learned rates.
  const ex = (await (await fetch(`${router.url}/route`, { method: 'POST', body: JSON.stringify({ prompt: cold() }) })).json()) as {
    pick: { worker: string };
    candidates: { worker: string; terms: Record<string, number> }[];
  };
  assert.equal(ex.pick.worker, 'F');
  const byWorker = Object.fromEntries(ex.candidates.map((c) => [c.worker, c.terms]));
  for (const k of ['predicted_ttft_ms', 'wait_ms', 'prefill_ms', 'delay_to_others_ms']) assert.ok(k in byWorker.F! && k in byWorker.S!, k);
  assert.ok(byWorker.S!.prefill_ms! > byWorker.F!.prefill_ms!, JSON.stringify(byWorker));
  assert.equal(byWorker.S!.rates_learned, 1);
});
