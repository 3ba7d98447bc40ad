// The dashboard's routes over real HTTP: its fixed set of files (uPlot from node_modules), the JSON
// snapshot and the SSE stream of snapshots.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { fakeUpstream, routerWith, waitUntil, type FakeUpstream } from '../router/helpers.js';
import type { RunningRouter } from '../../router/server.js';
import type { Snapshot } from '../../router/dashboard/snapshot.js';

let up: FakeUpstream;
let router: RunningRouter;

before(async () => {
  up = await fakeUpstream((_req, res) => res.writeHead(404).end());
  router = await routerWith({ workers: [{ id: 'w-a', url: up.url }] });
  await waitUntil('worker healthy', 20_000, () => router.service.registry.healthyCount() === 1);
});

after(async () => {
  await router?.close(0);
  await up?.close();
});

test('serves the page and its files, uPlot included, and nothing else', async () => {
  const page = await fetch(`${router.url}/dashboard`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-type')!, /^text\/html/);
  assert.match(page.headers.get('content-security-policy')!, /default-src 'self'/);
  const html = await page.text();
  for (const src of html.matchAll(/(?:src|href)="(\/dashboard\/static\/[^"]+)"/g)) {
    const r = await fetch(`${router.url}${src[1]}`);
    assert.equal(r.status, 200, src[1]);
    assert.ok((await r.text()).length > 100, src[1]);
  }
  assert.match(await (await fetch(`${router.url}/dashboard/static/uplot.js`)).text(), /uPlot/);
  for (const bad of ['/dashboard/static/package.json', '/dashboard/static/..%2f..%2fapp.ts', '/dashboard/static/toString', '/dashboard/nope']) {
    const r = await fetch(`${router.url}${bad}`);
    assert.equal(r.status, 404, bad);
    await r.arrayBuffer();
  }
});

test('GET /dashboard/snapshot and the SSE stream carry the fleet', { timeout: 30_000 }, async () => {
  const snap = (await (await fetch(`${router.url}/dashboard/snapshot`)).json()) as Snapshot;
  assert.deepEqual(snap.fleet.map((r) => [r.worker, r.rank, r.state, r.trusted]), [['w-a', 0, 'healthy', null]]);
  assert.equal(snap.policy, 'cache_aware');

  const ac = new AbortController();
  const res = await fetch(`${router.url}/dashboard/events`, { signal: ac.signal });
  assert.match(res.headers.get('content-type')!, /^text\/event-stream/);
  const reader = res.body!.getReader();
  let text = '';
  const events = () => text.split('\n\n').filter((e) => e.startsWith('event: snapshot\ndata: '));
  while (events().length < 2) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the stream ended after ${JSON.stringify(text)}`);
    text += new TextDecoder().decode(value);
  }
  const [first, second] = events().map((e) => JSON.parse(e.slice('event: snapshot\ndata: '.length)) as Snapshot);
  assert.equal(first!.fleet[0]!.worker, 'w-a');
  assert.ok(second!.at_ms > first!.at_ms);
  assert.ok(second!.series.t.length > first!.series.t.length || second!.series.t.length === 120);
  ac.abort();
});
