// The relay (router/relay.ts): the worker's response written straight onto the client's socket.
// Real sockets against fake upstreams: bytes as the worker sent them, the head the router adds,
// a body cut mid-way stays cut, whole SSE events only, and the same answer through the Response path.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { gunzipSync, gzipSync } from 'node:zlib';
import { fakeUpstream, routerWith, sleep, waitHealthy } from './helpers.js';
import { SseFramer } from '../../router/relay.js';

const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
});
const track = <T extends { close(): Promise<void> }>(x: T): T => {
  cleanups.push(() => x.close());
  return x;
};

/** A raw HTTP exchange: status, headers, body bytes, and whether the body arrived complete. */
function raw(url: string, body: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer; complete: boolean }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', agent: false, headers: { 'content-type': 'application/json', ...headers } }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (b: Buffer) => parts.push(b));
      const done = () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(parts), complete: res.complete });
      res.on('end', done);
      res.on('error', done);
      res.on('aborted', done);
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('SseFramer: only whole events (LF or CRLF blank lines) go out; the rest waits', () => {
  const f = new SseFramer();
  assert.equal(f.push(Buffer.from('data: a\n\ndata: b')).toString(), 'data: a\n\n');
  assert.equal(f.pending.toString(), 'data: b');
  assert.equal(f.push(Buffer.from('\n')).toString(), '');
  assert.equal(f.push(Buffer.from('\ndata: c\r\n\r\n')).toString(), 'data: b\n\ndata: c\r\n\r\n');
  assert.equal(f.pending.length, 0);
  // A multi-byte character split across chunks is carried whole.
  const e = Buffer.from('data: é\n\n');
  assert.equal(f.push(e.subarray(0, 7)).length, 0);
  assert.equal(f.push(e.subarray(7)).toString(), 'data: é\n\n');
});

test('a non-streamed body in several chunks arrives byte for byte, with the router head and the request id', async () => {
  const parts = ['{"id":"cmpl-1","choices":[{"text":"', 'x'.repeat(70_000), '"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":0}}}'];
  const up = track(await fakeUpstream(async (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'x-worker-own': 'kept' });
    for (const p of parts) {
      res.write(p);
      await sleep(5);
    }
    res.end();
  }));
  const small = track(await fakeUpstream((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"ok":true}');
  }));
  const r = track(await routerWith({ policy: 'round_robin', workers: [{ id: 'up', url: up.url }] }));
  await waitHealthy(r, 1);
  const res = await raw(`${r.url}/v1/completions`, JSON.stringify({ prompt: [1, 2, 3] }), { 'x-request-id': 'relay-test-1' });
  assert.equal(res.status, 200);
  assert.ok(res.complete);
  assert.equal(res.body.toString(), parts.join(''));
  assert.equal(res.headers['x-worker-own'], 'kept');
  assert.equal(res.headers['x-kv-router-worker'], 'up');
  assert.equal(res.headers['x-kv-router-attempts'], '1');
  assert.equal(res.headers['x-request-id'], 'relay-test-1');
  assert.equal(up.requests[0]!.headers['x-request-id'], 'relay-test-1');
  // The same request through the pipeline's Response path: same status, head and bytes.
  const viaResponse = await r.service.pipeline.handle('completions', new TextEncoder().encode(JSON.stringify({ prompt: [1, 2, 3] })), new AbortController().signal, {});
  assert.equal(viaResponse.status, 200);
  assert.equal(viaResponse.headers.get('x-kv-router-worker'), 'up');
  assert.equal(await viaResponse.text(), parts.join(''));

  // A body that is one chunk goes out with its length.
  const r2 = track(await routerWith({ policy: 'round_robin', workers: [{ id: 'small', url: small.url }] }));
  await waitHealthy(r2, 1);
  const one = await raw(`${r2.url}/v1/completions`, JSON.stringify({ prompt: [1, 2, 3] }));
  assert.equal(one.body.toString(), '{"ok":true}');
  assert.equal(one.headers['content-length'], String('{"ok":true}'.length));
  const m = await (await fetch(r2.url + '/metrics')).text();
  assert.match(m, /kv_router_requests_total\{worker="small",outcome="ok",endpoint="\/v1\/completions"\} 1/);
});

test('a compressed body passes with its content-encoding, so the client can decode it', async () => {
  const json = '{"id":"cmpl-z","choices":[{"text":"zip"}]}';
  const up = track(await fakeUpstream((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' });
    res.end(gzipSync(json));
  }));
  const r = track(await routerWith({ policy: 'round_robin', workers: [{ id: 'gz', url: up.url }] }));
  await waitHealthy(r, 1);
  const res = await raw(`${r.url}/v1/completions`, JSON.stringify({ prompt: [1, 2, 3] }));
  assert.equal(res.status, 200);
  assert.equal(res.headers['content-encoding'], 'gzip');
  assert.equal(gunzipSync(res.body).toString(), json);
});

test('a non-streamed body cut mid-way by the worker reaches the client cut, never as a complete response', async () => {
  const up = track(await fakeUpstream(async (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100000' });
    res.write('{"partial":"' + 'y'.repeat(30_000));
    await sleep(30);
    res.socket!.destroy();
  }));
  const r = track(await routerWith({ policy: 'round_robin', workers: [{ id: 'up', url: up.url }] }));
  await waitHealthy(r, 1);
  const res = await raw(`${r.url}/v1/completions`, JSON.stringify({ prompt: [1, 2, 3] })).catch((e: Error) => ({ status: 0, headers: {}, body: Buffer.alloc(0), complete: false, error: e }));
  assert.equal(res.complete, false, 'the client never sees a complete body');
  const m = await (await fetch(r.url + '/metrics')).text();
  assert.match(m, /kv_router_requests_total\{worker="up",outcome="stream_error",endpoint="\/v1\/completions"\} 1/);
});

test('SSE split mid-event by the worker reaches the client as the same bytes, ending with [DONE]', async () => {
  const text = 'data: {"choices":[{"text":"a"}]}\n\ndata: {"choices":[{"text":"b"}]}\n\ndata: [DONE]\n\n';
  const up = track(await fakeUpstream(async (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    for (let i = 0; i < text.length; i += 7) {
      res.write(text.slice(i, i + 7));
      await sleep(2);
    }
    res.end();
  }));
  const r = track(await routerWith({ policy: 'round_robin', workers: [{ id: 'up', url: up.url }] }));
  await waitHealthy(r, 1);
  // The client asked for usage itself: the stream is passed through unfiltered.
  const res = await raw(`${r.url}/v1/completions`, JSON.stringify({ prompt: [1, 2, 3], stream: true, stream_options: { include_usage: true } }));
  assert.equal(res.status, 200);
  assert.equal(res.body.toString(), text);
  assert.equal(res.headers['content-type'], 'text/event-stream');
});
