// The router's HTTP surface against fake upstreams (real sockets, no kv-worker needed):
// SSE passthrough, retries before the first byte, error events after it, client disconnect,
// bad bodies, no workers, admin auth.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { fakeUpstream, freePort, routerWith, sleep, waitHealthy, waitUntil, type FakeUpstream } from './helpers.js';
import type { RunningRouter } from '../../router/server.js';

const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
});
const track = <T extends { close(): Promise<void> }>(x: T): T => {
  cleanups.push(() => x.close());
  return x;
};

const sse = (res: import('node:http').ServerResponse) => res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
const chunk = (i: number) => `data: ${JSON.stringify({ choices: [{ index: 0, text: `t${i}` }] })}\n\n`;

function post(r: RunningRouter, path: string, body: unknown, headers: Record<string, string> = {}) {
  return fetch(r.url + path, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });
}

test('SSE passes through as it arrives, not buffered', async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const up = track(await fakeUpstream(async (_req, res) => {
    sse(res);
    res.write(chunk(0));
    await gate;
    res.write(chunk(1));
    res.end('data: [DONE]\n\n');
  }));
  const r = track(await routerWith({ policy: 'round_robin', workers: [{ id: 'up', url: up.url }] }));
  await waitHealthy(r, 1);
  const res = await post(r, '/v1/completions', { prompt: 'hello', stream: true });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-kv-router-worker'), 'up');
  assert.equal(res.headers.get('content-type'), 'text/event-stream');
  const reader = res.body!.getReader();
  const first = new TextDecoder().decode((await reader.read()).value);
  assert.match(first, /t0/); // arrived while the upstream still holds the rest
  assert.doesNotMatch(first, /t1/);
  release();
  let rest = '';
  for (;;) {
    const x = await reader.read();
    if (x.done) break;
    rest += new TextDecoder().decode(x.value);
  }
  assert.match(rest, /t1[\s\S]*\[DONE\]/);
  assert.equal(JSON.parse(up.requests[0]!.body).prompt, 'hello');
});

test('failure before the first byte moves to the next worker (refused, 503, reset)', async () => {
  const dead = await freePort();
  const busy = track(await fakeUpstream((_req, res) => {
    res.writeHead(503, { 'content-type': 'application/json' });
    res.end('{"error":{"message":"full"}}');
  }));
  const reset = track(await fakeUpstream((req) => req.socket.destroy()));
  const good = track(await fakeUpstream((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"ok":true}');
  }));
  const r = track(await routerWith({
    policy: 'round_robin',
    retry: { max_attempts: 4, backoff_ms: 1 },
    health: { interval_ms: 60_000, timeout_ms: 500, failure_threshold: 100 },
    workers: [{ id: 'a-dead', url: `http://127.0.0.1:${dead}` }, { id: 'b-busy', url: busy.url }, { id: 'c-reset', url: reset.url }, { id: 'd-good', url: good.url }],
  }));
  // Force every worker into rotation even though a-dead's probe fails (threshold 100).
  for (const w of r.service.registry.list()) w.state = 'healthy';
  const res = await post(r, '/v1/completions', { prompt: 'x' });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { ok: true });
  assert.equal(res.headers.get('x-kv-router-worker'), 'd-good');
  assert.equal(res.headers.get('x-kv-router-attempts'), '4');
  const m = await (await fetch(r.url + '/metrics')).text();
  assert.match(m, /kv_router_retries_total\{worker="a-dead",reason="connect"\} 1/);
  assert.match(m, /kv_router_retries_total\{worker="b-busy",reason="503"\} 1/);
  assert.match(m, /kv_router_retries_total\{worker="c-reset",reason="connect"\} 1/);
  // Attempts are bounded: with 2 attempts, a-dead then b-busy, whose 503 is passed on as the last answer.
  const r2 = track(await routerWith({
    policy: 'round_robin',
    retry: { max_attempts: 2, backoff_ms: 1 },
    health: { interval_ms: 60_000, timeout_ms: 500, failure_threshold: 100 },
    workers: [{ id: 'a-dead', url: `http://127.0.0.1:${dead}` }, { id: 'b-busy', url: busy.url }, { id: 'd-good', url: good.url }],
  }));
  for (const w of r2.service.registry.list()) w.state = 'healthy';
  const res2 = await post(r2, '/v1/completions', { prompt: 'x' });
  assert.equal(res2.status, 503);
  assert.equal(res2.headers.get('x-kv-router-worker'), 'b-busy');
  assert.equal(res2.headers.get('x-kv-router-attempts'), '2');
});

test('an upstream failure after the first byte ends the stream with an SSE error event', async () => {
  const up = track(await fakeUpstream(async (_req, res) => {
    sse(res);
    res.write(chunk(0));
    await sleep(50);
    res.socket!.destroy();
  }));
  const r = track(await routerWith({ policy: 'round_robin', workers: [{ id: 'up', url: up.url }] }));
  await waitHealthy(r, 1);
  const res = await post(r, '/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }], stream: true });
  assert.equal(res.status, 200);
  const text = await res.text();
  assert.match(text, /t0/);
  const last = text.trim().split('\n').filter((l) => l.startsWith('data: ')).pop()!;
  const err = JSON.parse(last.slice(6));
  assert.equal(err.error.type, 'upstream_error');
  assert.match(err.error.message, /failed mid-stream/);
});

test('client disconnect mid-stream aborts the upstream request and frees the load', async () => {
  const up = track(await fakeUpstream(async (_req, res) => {
    sse(res);
    for (let i = 0; i < 200 && !res.destroyed; i++) {
      res.write(chunk(i));
      await sleep(20);
    }
    res.end();
  }));
  const r = track(await routerWith({ policy: 'round_robin', workers: [{ id: 'up', url: up.url }] }));
  await waitHealthy(r, 1);
  await new Promise<void>((resolve) => {
    const req = request(r.url + '/v1/completions', { method: 'POST', agent: false, headers: { 'content-type': 'application/json' } }, (res) => {
      res.once('data', () => {
        req.destroy();
        resolve();
      });
    });
    req.on('error', () => {});
    req.on('close', () => resolve());
    req.end(JSON.stringify({ prompt: 'long', stream: true }));
  });
  await waitUntil('upstream sees the disconnect', 3000, () => up.closedEarly === 1);
  await waitUntil('load released', 3000, () => r.service.load.get('up:0').inFlight === 0);
  const m = await (await fetch(r.url + '/metrics')).text();
  assert.match(m, /kv_router_requests_total\{worker="up",outcome="aborted",endpoint="\/v1\/completions"\} 1/);
});

test('bad bodies: 400 with an OpenAI-style error; upstream 4xx is passed through untouched', async () => {
  const up = track(await fakeUpstream((_req, res) => {
    res.writeHead(400, { 'content-type': 'application/json' });
    res.end('{"error":{"message":"max_tokens too big","type":"invalid_request_error","param":"max_tokens","code":null}}');
  }));
  const r = track(await routerWith({ policy: 'round_robin', workers: [{ id: 'up', url: up.url }] }));
  await waitHealthy(r, 1);
  for (const [path, body, re] of [
    ['/v1/completions', '{not json', /not valid JSON/],
    ['/v1/completions', {}, /prompt/],
    ['/v1/completions', { prompt: 12 }, /`prompt`: must be a string/],
    ['/v1/completions', { prompt: [] }, /prompt/],
    ['/v1/completions', { prompt: [1, -2] }, /prompt/],
    ['/v1/chat/completions', { messages: [] }, /messages/],
    ['/v1/chat/completions', { messages: 'hi' }, /messages: must be an array/],
    ['/v1/chat/completions', { messages: [{ content: 'no role' }] }, /messages\.0\.role/],
    ['/route', { nothing: 1 }, /prompt/],
  ] as const) {
    const res = await post(r, path, body);
    assert.equal(res.status, 400, `${path} ${JSON.stringify(body)}`);
    const j = (await res.json()) as { error: { message: string; type: string } };
    assert.equal(j.error.type, 'invalid_request_error');
    assert.match(j.error.message, re);
  }
  assert.equal(up.requests.length, 0);
  const res = await post(r, '/v1/completions', { prompt: 'ok', max_tokens: 1e9 });
  assert.equal(res.status, 400);
  assert.equal(((await res.json()) as { error: { param: string } }).error.param, 'max_tokens');
  assert.equal(up.requests.length, 1);
});

test('no workers, or none healthy: 503 with a clear message', async () => {
  const r = track(await routerWith({ policy: 'cache_aware', workers: [] }));
  let res = await post(r, '/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }] });
  assert.equal(res.status, 503);
  assert.match(((await res.json()) as { error: { message: string } }).error.message, /no workers are configured/);
  assert.equal((await fetch(r.url + '/health')).status, 503);
  const dead = await freePort();
  await r.service.registry.add({ id: 'gone', url: `http://127.0.0.1:${dead}`, dp_ranks: 1, block_size: 16 });
  await waitUntil('probe failures', 3000, () => r.service.registry.get('gone')!.state === 'unhealthy');
  res = await post(r, '/v1/completions', { prompt: 'hi' });
  assert.equal(res.status, 503);
  assert.match(((await res.json()) as { error: { message: string } }).error.message, /no healthy worker \(0 of 1/);
});

test('admin routes: bearer key required when configured; add, list, remove workers', async () => {
  const up = track(await fakeUpstream((_req, res) => res.end('{}')));
  const r = track(await routerWith({ admin_key: 's3cret', workers: [] }));
  const auth = { authorization: 'Bearer s3cret' };
  assert.equal((await fetch(r.url + '/workers')).status, 401);
  assert.equal((await fetch(r.url + '/workers', { headers: { authorization: 'Bearer nope' } })).status, 401);
  assert.equal((await post(r, '/workers', { url: up.url })).status, 401);
  assert.equal((await fetch(r.url + '/workers/x', { method: 'DELETE' })).status, 401);
  let res = await post(r, '/workers', { id: 'w1', url: up.url }, auth);
  assert.equal(res.status, 201);
  assert.equal((await post(r, '/workers', { id: 'w1', url: up.url }, auth)).status, 409);
  res = await post(r, '/workers', { url: 'not a url' }, auth);
  assert.equal(res.status, 400);
  assert.match(((await res.json()) as { error: { message: string } }).error.message, /url: Invalid URL/);
  const list = (await (await fetch(r.url + '/workers', { headers: auth })).json()) as { workers: { id: string }[] };
  assert.deepEqual(list.workers.map((w) => w.id), ['w1']);
  await waitHealthy(r, 1);
  // The admin key is not forwarded to workers; a client's own key is.
  await post(r, '/v1/completions', { prompt: 'a' }, auth);
  await post(r, '/v1/completions', { prompt: 'a' }, { authorization: 'Bearer client-key' });
  assert.equal(up.requests[0]!.headers.authorization, undefined);
  assert.equal(up.requests[1]!.headers.authorization, 'Bearer client-key');
  assert.equal((await fetch(r.url + '/workers/w1', { method: 'DELETE', headers: auth })).status, 200);
  assert.equal((await fetch(r.url + '/workers/w1', { method: 'DELETE', headers: auth })).status, 404);
  assert.equal(r.service.registry.list().length, 0);
});

test('/route explains a decision without proxying', async () => {
  const up = track(await fakeUpstream((_req, res) => res.end('{}')));
  const r = track(await routerWith({ workers: [{ id: 'only', url: up.url }] }));
  await waitHealthy(r, 1);
  const res = await post(r, '/route', { messages: [{ role: 'user', content: 'What is a radix tree?' }] });
  assert.equal(res.status, 200);
  const j = (await res.json()) as { policy: string; endpoint: string; prompt_tokens: number; pick: { worker: string }; candidates: { terms: Record<string, number>; cost: number; matched_tokens: number }[] };
  assert.equal(j.policy, 'cache_aware');
  assert.equal(j.endpoint, '/v1/chat/completions');
  assert.equal(j.pick.worker, 'only');
  assert.ok(j.prompt_tokens > 5);
  assert.deepEqual(Object.keys(j.candidates[0]!.terms).sort(), ['decode', 'prefill', 'queued_prefill']);
  assert.equal(j.candidates[0]!.cost, 6 * j.prompt_tokens, 'nothing cached, nothing queued: prefill_weight (6) × prompt');
  assert.equal(up.requests.length, 0);
  const ids = await post(r, '/route', { prompt: [1, 2, 3, 4] });
  assert.equal(((await ids.json()) as { prompt_tokens: number }).prompt_tokens, 4);
});

export type { FakeUpstream };
