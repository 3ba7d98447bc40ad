// Draining removal through a real router (in this process) and real HTTP upstreams, the workers
// coming from a watched file: a leaving worker gets no new request at once, stays a member while
// its in-flight requests finish (or until the drain bound), and its requests still succeed.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ServerResponse } from 'node:http';
import { parseRouterConfig } from '../../router/config.js';
import { startRouter, type RunningRouter } from '../../router/server.js';
import { fakeUpstream, waitUntil, type FakeUpstream } from '../router/helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'kvr-drain-'));
const file = join(dir, 'workers.json');
after(() => rmSync(dir, { recursive: true, force: true }));

/** Written as editors and ConfigMaps do: a new file renamed over the old one. */
/** Replaces the file at once (write + rename, as editors and ConfigMap updates do): the watcher never reads it half-written by us. */
function replaceFile(text: string): void {
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

function writeWorkers(ws: FakeUpstream[], ids: string[]): void {
  replaceFile(JSON.stringify({ workers: ws.map((u, i) => ({ id: ids[i], url: u.url })) }));
}

const completion = (res: ServerResponse) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ id: 'x', object: 'text_completion', choices: [{ index: 0, text: 'ok', finish_reason: 'length' }], usage: { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 } }));

async function setup(drainMs: number) {
  const held: ServerResponse[] = [];
  const A = await fakeUpstream((_req, res) => held.push(res));
  const B = await fakeUpstream((_req, res) => completion(res));
  writeWorkers([A], ['A']);
  const logs: string[] = [];
  const router = await startRouter(
    parseRouterConfig({ port: 0, tokenizer_threads: 0, policy: 'round_robin', health: { interval_ms: 100 }, discovery: { file: { path: file, poll_ms: 100 }, drain_timeout_ms: drainMs } }),
    (m) => logs.push(m),
  );
  const post = () => fetch(`${router.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: [1, 2, 3], max_tokens: 1 }) });
  const reg = router.service.registry;
  await waitUntil('A healthy', 5000, () => reg.healthyCount() === 1);
  return { A, B, held, router, post, reg, logs, async close() { held.forEach(completion); await router.close(); await Promise.all([A.close(), B.close()]); } };
}

test('a removed worker drains: out of candidates at once, removed when its request finishes, which succeeds', { timeout: 30_000 }, async () => {
  const s = await setup(20_000);
  try {
    const inflight = s.post();
    await waitUntil('request held at A', 5000, () => s.held.length === 1);
    writeWorkers([s.B], ['B']);
    await waitUntil('A draining', 5000, () => s.reg.get('A')?.draining === true);
    await waitUntil('B healthy', 5000, () => s.reg.get('B')?.state === 'healthy');
    for (let i = 0; i < 4; i++) {
      const r = await s.post();
      assert.equal(r.status, 200);
      assert.equal(r.headers.get('x-kv-router-worker'), 'B', 'no new request for a draining worker');
      await r.arrayBuffer();
    }
    assert.equal(s.A.requests.length, 1);
    assert.ok(s.reg.get('A'), 'still a member while its request is in flight');
    const listed = (await (await fetch(`${s.router.url}/workers`)).json()) as { workers: { id: string; draining: boolean; in_rotation: boolean }[] };
    assert.deepEqual(listed.workers.find((w) => w.id === 'A'), { ...listed.workers.find((w) => w.id === 'A')!, draining: true, in_rotation: false });
    completion(s.held.shift()!);
    const r = await inflight;
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('x-kv-router-worker'), 'A');
    await waitUntil('A removed', 5000, () => s.reg.get('A') === undefined);
    assert.ok(s.logs.some((l) => /worker A left after \d+ ms$/.test(l)), s.logs.join('\n'));
  } finally {
    await s.close();
  }
});

test('the drain bound: a request that does not finish does not keep the worker; it still completes', { timeout: 30_000 }, async () => {
  const s = await setup(300);
  try {
    const inflight = s.post();
    await waitUntil('request held at A', 5000, () => s.held.length === 1);
    writeWorkers([], []);
    await waitUntil('A removed at the bound', 5000, () => s.reg.get('A') === undefined);
    assert.ok(s.logs.some((l) => /worker A left after \d+ ms with 1 request\(s\) still in flight \(drain bound 300 ms\)/.test(l)), s.logs.join('\n'));
    completion(s.held.shift()!);
    assert.equal((await inflight).status, 200);
  } finally {
    await s.close();
  }
});

test('wanted again while draining: back in rotation (same entry, event feed kept); a bad edit keeps the set and logs one line', { timeout: 30_000 }, async () => {
  const s = await setup(20_000);
  try {
    const inflight = s.post();
    await waitUntil('request held at A', 5000, () => s.held.length === 1);
    const entry = s.reg.get('A')!;
    writeWorkers([], []);
    await waitUntil('A draining', 5000, () => entry.draining);
    writeWorkers([s.A], ['A']);
    await waitUntil('A back', 5000, () => !entry.draining);
    assert.equal(s.reg.get('A'), entry);
    replaceFile('{"workers": [ {"url": "http://127.0.0.1:1"}, '); // saved broken
    await waitUntil('the bad edit is logged', 5000, () => s.logs.some((l) => l.includes('not valid JSON')));
    replaceFile(JSON.stringify({ workers: [{ id: 'A', url: s.A.url, dp_rank: 2 }] })); // a typo
    await waitUntil('the typo is logged', 5000, () => s.logs.some((l) => l.includes('dp_rank')));
    const bad = s.logs.filter((l) => l.includes('keeping the last good set (1 worker(s))'));
    assert.equal(bad.length, 2, bad.join('\n'));
    assert.ok(bad.every((l) => !l.includes('\n')));
    assert.equal(s.reg.get('A'), entry);
    assert.equal(entry.draining, false);
    completion(s.held.shift()!);
    assert.equal((await inflight).status, 200);
  } finally {
    await s.close();
  }
});
