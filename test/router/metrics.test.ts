// /metrics through a real router: stream counts are counters (`_total`, never going down), and a
// removed worker's series leave with it.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { KVEventPublisher } from '../../src/events/publisher.js';
import { connectAddressFor, parseKVEventsConfig } from '../../src/events/config.js';
import { counterIncrease } from '../../router/metrics.js';
import { batchOf } from '../helpers/events.js';
import { fakeUpstream, freePort, routerWith, waitUntil } from './helpers.js';

const closers: Array<() => Promise<void>> = [];
after(async () => {
  for (const c of closers.reverse()) await c().catch(() => {});
});

const sample = (m: string, name: string, worker: string): number | null => {
  const line = m.split('\n').find((l) => l.startsWith(`${name}{worker="${worker}"`));
  return line === undefined ? null : Number(line.slice(line.lastIndexOf(' ') + 1));
};

test('counterIncrease: growth since the last look; a count that restarted counts from 0', () => {
  assert.equal(counterIncrease(undefined, 4), 4);
  assert.equal(counterIncrease(4, 9), 5);
  assert.equal(counterIncrease(9, 9), 0);
  assert.equal(counterIncrease(9, 2), 2);
});

test('stream counts are *_total counters that follow the stream; a removed worker\'s labels are gone', { timeout: 60_000 }, async () => {
  const upstream = await fakeUpstream((_req, res) => res.end('{"ok":true}'));
  closers.push(() => upstream.close());
  const pub = await KVEventPublisher.create({ config: parseKVEventsConfig({ endpoint: `tcp://*:${await freePort()}`, replay_endpoint: `tcp://*:${await freePort()}` }) });
  closers.push(() => pub.close(100));
  const r = await routerWith({
    policy: 'round_robin',
    workers: [
      { id: 'a', url: upstream.url, kv_events: { endpoint: connectAddressFor(pub.endpoint), replay_endpoint: connectAddressFor(pub.replayEndpoint!) } },
      { id: 'b', url: upstream.url },
    ],
  });
  closers.push(() => r.close());
  const scrape = async () => (await fetch(`${r.url}/metrics`)).text();

  let n = 0;
  await waitUntil('a\'s stream applies batches', 15_000, () => {
    pub.publish(batchOf(n++));
    const h = r.service.registry.get('a')!.streams.get(0)!.health();
    return h.batches >= 3;
  }, 100);
  for (let i = 0; i < 2; i++) assert.equal((await fetch(`${r.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"prompt":"hi"}' })).status, 200);

  const m1 = await scrape();
  assert.match(m1, /^kv_router_stream_silent\{worker="a",rank="0"\} 0$/m, 'a stream that delivers is not silent');
  for (const name of ['batches', 'gaps', 'replays', 'resets', 'history_missing', 'malformed', 'silent_warnings']) {
    assert.match(m1, new RegExp(`^# TYPE kv_router_stream_${name}_total counter$`, 'm'));
    assert.doesNotMatch(m1, new RegExp(`^kv_router_stream_${name}\\{`, 'm'), `the old gauge kv_router_stream_${name} is gone`);
  }
  // Every published batch applied (late ones through replay), then no more: the scrape matches exactly, twice.
  const batches = () => r.service.registry.get('a')!.streams.get(0)!.health().batches;
  await waitUntil('every published batch applied', 10_000, () => batches() === n);
  assert.equal(sample(await scrape(), 'kv_router_stream_batches_total', 'a'), n);
  assert.equal(sample(await scrape(), 'kv_router_stream_batches_total', 'a'), n, 'a second scrape does not count again');
  for (let i = 0; i < 2; i++) pub.publish(batchOf(n++));
  await waitUntil('two more batches applied', 10_000, () => batches() === n);
  assert.equal(sample(await scrape(), 'kv_router_stream_batches_total', 'a'), n);
  assert.ok(sample(m1, 'kv_router_requests_total', 'a') !== null, 'a has request series before removal');

  assert.equal((await fetch(`${r.url}/workers/a`, { method: 'DELETE' })).status, 200);
  await waitUntil('a\'s series are gone from /metrics', 5_000, async () => !/worker="a"/.test(await scrape()));
  const m3 = await scrape();
  assert.ok(sample(m3, 'kv_router_requests_total', 'b') !== null, 'b keeps its series');
});

test('upstream errors by status code (retried and passed through) and mid-stream; histograms; a removed worker\'s histogram series are gone', { timeout: 60_000 }, async () => {
  const busy = await fakeUpstream((_req, res) => res.writeHead(503, { 'content-type': 'application/json' }).end('{"error":{"message":"busy"}}'));
  const picky = await fakeUpstream((_req, res) => res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":{"message":"bad"}}'));
  const breaks = await fakeUpstream((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write('data: {"choices":[{"index":0,"text":"a"}]}\n\n');
    setImmediate(() => res.destroy());
  });
  closers.push(() => busy.close(), () => picky.close(), () => breaks.close());
  const r = await routerWith({ policy: 'round_robin', workers: [{ id: 'a', url: busy.url }, { id: 'b', url: picky.url }] });
  closers.push(() => r.close());
  await waitUntil('healthy', 10_000, () => r.service.registry.healthyCount() === 2);
  for (let i = 0; i < 4; i++) {
    const res = await fetch(`${r.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: [1, 2, 3], max_tokens: 1 }) });
    assert.equal(res.status, 400, 'b answers every request, after a\'s 503 when a came first');
    await res.text();
  }
  const m = await (await fetch(`${r.url}/metrics`)).text();
  assert.ok((sample(m, 'kv_router_upstream_errors_total', 'a') ?? 0) >= 1, m.split('\n').filter((l) => l.includes('upstream_errors')).join('\n'));
  assert.match(m, /kv_router_upstream_errors_total\{worker="a",status="503"\} [1-9]/);
  assert.match(m, /kv_router_upstream_errors_total\{worker="b",status="400"\} 4/);
  assert.match(m, /kv_router_ttfb_seconds_count\{worker="b"\} 4/);
  assert.match(m, /kv_router_upstream_seconds_count\{worker="b"\} 4/);
  assert.match(m, /kv_router_added_latency_seconds_count 4/);

  await r.service.registry.add({ ...r.service.config.workers[0]!, id: 'c', url: breaks.url });
  await r.service.registry.remove('a');
  await r.service.registry.remove('b');
  await waitUntil('c healthy', 10_000, () => r.service.registry.healthyCount() === 1);
  const res = await fetch(`${r.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: [1, 2, 3], max_tokens: 1, stream: true }) });
  assert.match(await res.text(), /upstream_stream_error/);
  await waitUntil('stream error counted', 5000, async () => /kv_router_upstream_errors_total\{worker="c",status="stream_error"\} 1/.test(await (await fetch(`${r.url}/metrics`)).text()));
  const after = await (await fetch(`${r.url}/metrics`)).text();
  await waitUntil('removed workers forgotten', 5000, async () => !/worker="[ab]"/.test(await (await fetch(`${r.url}/metrics`)).text()));
  assert.ok(after.includes('worker="c"'));
});
