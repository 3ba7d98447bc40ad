// The request pipeline through real HTTP against small fake workers that list their models:
// unknown model, context length, streamed body limit, /route as a faithful dry run.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { routerWith, waitHealthy, waitUntil } from './helpers.js';
import type { RunningRouter } from '../../router/server.js';

const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

interface Fake {
  url: string;
  posts: number;
  close(): Promise<void>;
}

/** A worker serving `model` with `maxLen` context: /health, /v1/models, and completions that answer at once. */
async function fakeWorker(model: string, maxLen: number): Promise<Fake> {
  const f: Fake = { url: '', posts: 0, close: async () => {} };
  const server: Server = createServer((req, res) => {
    if (req.url === '/health') return void res.end('{}');
    if (req.url === '/v1/models') return void res.end(JSON.stringify({ object: 'list', data: [{ id: model, object: 'model', max_model_len: maxLen }] }));
    if (req.method !== 'POST') return void res.writeHead(404).end();
    req.resume();
    req.on('end', () => {
      f.posts++;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ object: 'text_completion', choices: [{ index: 0, text: 'ok' }] }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  f.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  f.close = () => new Promise((r) => {
    server.closeAllConnections();
    server.close(() => r());
  });
  cleanups.push(() => f.close());
  return f;
}

async function routerOver(workers: { id: string; url: string }[], extra: Record<string, unknown> = {}): Promise<RunningRouter> {
  const r = await routerWith({ policy: 'round_robin', max_body_bytes: 4096, ...extra, workers });
  cleanups.push(() => r.close());
  await waitHealthy(r, workers.length);
  await waitUntil('models learned', 30_000, () => r.service.registry.list().every((w) => (w.models?.length ?? 0) > 0));
  return r;
}

const post = (r: RunningRouter, path: string, body: unknown) =>
  fetch(r.url + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

test('unknown model: 404 model_not_found naming the models the fleet serves, on the request and on /route; nothing is sent', async () => {
  const a = await fakeWorker('qwen-a', 4096);
  const b = await fakeWorker('qwen-b', 4096);
  const r = await routerOver([{ id: 'a', url: a.url }, { id: 'b', url: b.url }]);
  for (const path of ['/v1/completions', '/route']) {
    const res = await post(r, path, { model: 'gpt-nope', prompt: [1, 2, 3] });
    assert.equal(res.status, 404, path);
    const e = ((await res.json()) as { error: { code: string; message: string; param: string } }).error;
    assert.equal(e.code, 'model_not_found');
    assert.match(e.message, /gpt-nope/);
    assert.match(e.message, /qwen-a/);
    assert.match(e.message, /qwen-b/);
  }
  assert.equal(a.posts + b.posts, 0);
  // A served model goes only to the workers that serve it.
  for (let i = 0; i < 4; i++) {
    const res = await post(r, '/v1/completions', { model: 'qwen-b', prompt: [1, 2, 3] });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-kv-router-worker'), 'b');
  }
});

test('prompt longer than max_model_len: 400 context_length_exceeded before routing (vLLM wording), on /route too', async () => {
  const a = await fakeWorker('m', 64);
  const r = await routerOver([{ id: 'a', url: a.url }]);
  const long = Array.from({ length: 64 }, (_, i) => i + 1);
  for (const path of ['/v1/completions', '/route']) {
    const res = await post(r, path, { model: 'm', prompt: long });
    assert.equal(res.status, 400, path);
    const e = ((await res.json()) as { error: { code: string; message: string } }).error;
    assert.equal(e.code, 'context_length_exceeded');
    assert.match(e.message, /maximum context length is 64 tokens\. However, your request has 64 input tokens/);
  }
  assert.equal(a.posts, 0);
  assert.equal((await post(r, '/v1/completions', { model: 'm', prompt: long.slice(0, 63) })).status, 200);
});

test('a token id outside the vocabulary: 400 naming it on the request and on /route (the worker would refuse it); nothing is sent', async () => {
  const a = await fakeWorker('m', 1_000_000);
  const r = await routerOver([{ id: 'a', url: a.url }]);
  // The default tokenizer (Qwen3) has 151,669 ids.
  for (const path of ['/v1/completions', '/route']) {
    const res = await post(r, path, { model: 'm', prompt: [1, 2, 151_669, 3] });
    assert.equal(res.status, 400, path);
    const e = ((await res.json()) as { error: { message: string; param: string } }).error;
    assert.equal(e.param, 'prompt');
    assert.match(e.message, /token id 151669 is out of range \(vocabulary size 151669\)/);
  }
  assert.equal(a.posts, 0);
  assert.equal((await post(r, '/route', { model: 'm', prompt: [1, 2, 151_668] })).status, 200);
  assert.equal((await post(r, '/v1/completions', { model: 'm', prompt: [1, 2, 151_668] })).status, 200);
});

test('body limit while the body streams in: a chunked body that never ends gets 413 as soon as it passes the limit', async () => {
  const a = await fakeWorker('m', 4096);
  const r = await routerOver([{ id: 'a', url: a.url }]);
  for (const path of ['/v1/completions', '/v1/chat/completions', '/route']) {
    // 8 KB in, then the stream stays open: a router that buffers the body whole would wait forever.
    const body = new ReadableStream<Uint8Array>({
      start(ctrl) {
        ctrl.enqueue(new TextEncoder().encode(`{"prompt":"${'x'.repeat(8192)}`));
      },
    });
    const res = await fetch(r.url + path, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
      duplex: 'half',
      signal: AbortSignal.timeout(30_000),
    } as RequestInit);
    assert.equal(res.status, 413, path);
    assert.match(((await res.json()) as { error: { message: string } }).error.message, /over 4096 bytes/);
  }
  assert.equal(a.posts, 0);
});

test('/route is a faithful dry run: round_robin does not advance on it; the real request goes where /route said', async () => {
  const a = await fakeWorker('m', 4096);
  const b = await fakeWorker('m', 4096);
  const r = await routerOver([{ id: 'a', url: a.url }, { id: 'b', url: b.url }]);
  for (let i = 0; i < 3; i++) {
    const picks = new Set<string>();
    for (let k = 0; k < 3; k++) picks.add(((await (await post(r, '/route', { prompt: [1, 2, 3] })).json()) as { pick: { worker: string } }).pick.worker);
    assert.equal(picks.size, 1, 'every /route call gave the same pick');
    const res = await post(r, '/v1/completions', { prompt: [1, 2, 3] });
    assert.equal(res.headers.get('x-kv-router-worker'), [...picks][0]);
    await res.text();
  }
  assert.equal(a.posts + b.posts, 3);
});

test('a burst sees its own in-flight at once: least_load splits 10 simultaneous requests 5/5', async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const held: Fake[] = [];
  for (let i = 0; i < 2; i++) {
    const f: Fake = { url: '', posts: 0, close: async () => {} };
    const server = createServer((req, res) => {
      if (req.url === '/health') return void res.end('{}');
      if (req.method !== 'POST') return void res.writeHead(404).end();
      req.resume();
      req.on('end', async () => {
        f.posts++;
        await gate;
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    f.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    cleanups.push(() => new Promise((r) => {
      server.closeAllConnections();
      server.close(() => r());
    }));
    held.push(f);
  }
  const r = await routerWith({ policy: 'least_load', health: { interval_ms: 150, timeout_ms: 2000, failure_threshold: 3, poll_load: false }, workers: [{ id: 'a', url: held[0]!.url }, { id: 'b', url: held[1]!.url }] });
  cleanups.push(() => r.close());
  await waitHealthy(r, 2);
  const all = Array.from({ length: 10 }, () => post(r, '/v1/completions', { prompt: [1, 2, 3, 4] }));
  await waitUntil('all sent', 30_000, () => held[0]!.posts + held[1]!.posts === 10);
  assert.deepEqual([held[0]!.posts, held[1]!.posts], [5, 5]);
  release();
  for (const res of await Promise.all(all)) assert.equal(res.status, 200);
});

test('a removed worker leaves no map behind: load, health, index sources', async () => {
  const a = await fakeWorker('m', 4096);
  const b = await fakeWorker('m', 4096);
  const r = await routerOver([{ id: 'a', url: a.url }, { id: 'b', url: b.url }]);
  for (let i = 0; i < 4; i++) await (await post(r, '/v1/completions', { prompt: [1, 2, 3] })).text();
  await waitUntil('load released', 3000, () => r.service.load.get('b:0').inFlight === 0);
  assert.ok(r.service.load.sources().includes('b:0'));
  assert.equal((await fetch(`${r.url}/workers/b`, { method: 'DELETE' })).status, 200);
  assert.deepEqual(r.service.load.sources().filter((s) => s.startsWith('b:')), []);
  assert.deepEqual(r.service.registry.health.trackedWorkers().filter((w) => w === 'b'), []);
  assert.equal(r.service.index.sources().includes('b:0'), false);
});
