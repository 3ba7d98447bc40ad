// Workers that come and go under traffic, with real processes: `kv-worker --engine sim` workers
// publishing real KV events, the router in this process, the fleet in a watched file edited while
// requests flow. Every request must succeed. And a joining worker whose event stream is not yet
// trusted is routed by load only (its index blocks count as 0 cached tokens).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseRouterConfig } from '../../router/config.js';
import { startRouter, type RunningRouter } from '../../router/server.js';
import { startWorker, waitUntil, workerAvailable, workerEntry, type WorkerProc } from '../router/helpers.js';

const skip = workerAvailable() ? false : 'bin/kv-worker.js not present';
const dir = mkdtempSync(join(tmpdir(), 'kvr-traffic-'));
const file = join(dir, 'workers.json');
let A: WorkerProc, B: WorkerProc, C: WorkerProc, D: WorkerProc, router: RunningRouter;
const logs: string[] = [];

function writeWorkers(entries: object[]): void {
  writeFileSync(`${file}.tmp`, JSON.stringify({ workers: entries }));
  renameSync(`${file}.tmp`, file);
}

before(async () => {
  if (skip) return;
  const extra = ['--prefill-tokens-per-s', '50000', '--decode-step-ms', '4', '--num-blocks', '2048'];
  [A, B, C, D] = await Promise.all(['A', 'B', 'C', 'D'].map((id) => startWorker({ id, extraArgs: extra })));
  writeWorkers([workerEntry(A)]);
  router = await startRouter(
    parseRouterConfig({ port: 0, tokenizer_threads: 0, health: { interval_ms: 100, timeout_ms: 2000 }, discovery: { file: { path: file, poll_ms: 100 }, drain_timeout_ms: 15_000 } }),
    (m) => logs.push(m),
  );
  await waitUntil('A healthy', 20_000, () => router.service.registry.healthyCount() === 1);
}, { timeout: 120_000 });

after(async () => {
  await router?.close();
  await Promise.all([A, B, C, D].map((w) => w?.stop()));
  rmSync(dir, { recursive: true, force: true });
});

interface Done {
  status: number;
  worker: string | null;
  startedAt: number;
  body: string;
}

test('workers added and removed through the file while requests flow: every request 200, a leaving worker gets none once it is leaving', { skip, timeout: 120_000 }, async () => {
  const reg = router.service.registry;
  const done: Done[] = [];
  let stop = false;
  let n = 0;
  const shared = Array.from({ length: 48 }, (_, i) => 1000 + i);
  const loop = async () => {
    while (!stop) {
      const startedAt = Date.now();
      const prompt = [...shared, ...Array.from({ length: 16 }, (_, i) => 5000 + ((n * 16 + i) % 20000))];
      n++;
      const res = await fetch(`${router.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt, max_tokens: 4 }) });
      const body = await res.text();
      done.push({ status: res.status, worker: res.headers.get('x-kv-router-worker'), startedAt, body });
    }
  };
  const loops = Array.from({ length: 6 }, loop);
  const servedSince = (id: string, t: number) => done.filter((d) => d.worker === id && d.startedAt >= t).length;
  try {
    // Join: B and C come in, and get requests.
    let t = Date.now();
    writeWorkers([workerEntry(A), workerEntry(B), workerEntry(C)]);
    await waitUntil('B and C serve', 30_000, () => servedSince('B', t) > 3 && servedSince('C', t) > 3);

    // Leave: A drains; from the moment it is leaving, no request started goes to it.
    writeWorkers([workerEntry(B), workerEntry(C)]);
    await waitUntil('A leaving', 10_000, () => reg.get('A')?.draining === true || reg.get('A') === undefined);
    const leftAt = Date.now();
    await waitUntil('A removed', 20_000, () => reg.get('A') === undefined);
    await waitUntil('more traffic', 10_000, () => done.filter((d) => d.startedAt >= leftAt).length > 10);
    assert.equal(servedSince('A', leftAt), 0, 'requests started after A was leaving went to A');

    // Back again, and B and C leave together.
    t = Date.now();
    writeWorkers([workerEntry(A), workerEntry(B), workerEntry(C)]);
    await waitUntil('A serves again', 30_000, () => servedSince('A', t) > 3);
    writeWorkers([workerEntry(A)]);
    await waitUntil('B and C removed', 20_000, () => reg.get('B') === undefined && reg.get('C') === undefined);
    const onlyA = Date.now();
    await waitUntil('more traffic', 10_000, () => done.filter((d) => d.startedAt >= onlyA).length > 10);
    assert.equal(servedSince('B', onlyA) + servedSince('C', onlyA), 0);
  } finally {
    stop = true;
    await Promise.all(loops);
  }
  const failed = done.filter((d) => d.status !== 200);
  assert.deepEqual(failed.slice(0, 3), [], `${failed.length} of ${done.length} requests failed`);
  assert.ok(done.length > 60, `only ${done.length} requests`);
  for (const id of ['A', 'B', 'C']) assert.ok(done.some((d) => d.worker === id), `${id} served nothing`);
  assert.ok(logs.some((l) => /worker A leaving: no new requests/.test(l)), logs.join('\n'));
});

test('a joining worker whose stream is not trusted yet is ranked by load only: its index blocks count as 0', { skip, timeout: 60_000 }, async () => {
  const reg = router.service.registry;
  const prompt = Array.from({ length: 160 }, (_, i) => 7000 + i);
  const direct = (p: number[]) => fetch(`${D.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: p, max_tokens: 1 }) }).then((r) => r.text());
  // D already served before joining: the router missed its history (batch 0 went out to nobody).
  await direct(Array.from({ length: 64 }, (_, i) => 9000 + i));
  // Joins without a replay endpoint, so that history cannot be checked: the stream stays untrusted.
  const { replay_endpoint: _r, ...events } = D.events;
  writeWorkers([workerEntry(A), { ...workerEntry(D), kv_events: events }]);
  await waitUntil('D healthy and connected', 20_000, () => reg.get('D')?.state === 'healthy' && reg.get('D')!.streams.get(0)!.health().connected);
  // Its next cache events do reach the index...
  await waitUntil('D tree holds the prompt', 20_000, async () => {
    await direct(prompt);
    return router.service.index.stats('D:0').blocks >= 10;
  }, 200);
  const ex = (await (await fetch(`${router.url}/route`, { method: 'POST', body: JSON.stringify({ prompt }) })).json()) as {
    candidates: { worker: string; trusted: boolean; matched_tokens: number; index_matched_tokens: number }[];
  };
  const d = ex.candidates.find((c) => c.worker === 'D')!;
  // ...but count for nothing while the stream is untrusted: the pick is by load.
  assert.equal(d.trusted, false);
  assert.ok(d.index_matched_tokens >= 144, JSON.stringify(d));
  assert.equal(d.matched_tokens, 0, JSON.stringify(d));
});
