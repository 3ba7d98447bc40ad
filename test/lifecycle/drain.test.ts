// Graceful drain through real processes: a kv-router process in front of a sim kv-worker process.
// SIGTERM during a long stream: new requests get 503, the stream finishes normally within the drain
// timeout; with a tiny drain timeout the stream ends with an SSE error event, never mid-event.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { freePort } from '../../src/net/free-port.js';
import { root, routerBin, startWorker, type WorkerProc } from '../router/helpers.js';
import { waitUntil } from './procs.js';

let worker: WorkerProc | null = null;
after(async () => worker?.stop());

// 40 tokens at 50 ms a step: a stream of about 2 s.
const STREAM = { model: 'kv-router-sim', prompt: 'tell me a long story', max_tokens: 40, stream: true };

async function getWorker(): Promise<WorkerProc> {
  worker ??= await startWorker({ id: 'w0', extraArgs: ['--decode-step-ms', '50'] });
  return worker;
}

async function startRouterProc(workerUrl: string, drainMs: number) {
  const port = await freePort();
  const p = spawn(process.execPath, [routerBin, '--port', String(port), '--worker', workerUrl, '--drain-timeout-ms', String(drainMs), '--tokenizer-threads', '0'], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout!.on('data', (d) => (out += d));
  p.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => p.once('exit', (c) => r(c)));
  const url = `http://127.0.0.1:${port}`;
  await waitUntil('the router to see its worker healthy', 60_000, async () => {
    if (p.exitCode !== null) throw new Error(`router exited: ${out}`);
    return (await fetch(`${url}/health`)).ok;
  });
  return { p, url, exited, output: () => out };
}

/** Starts a stream, waits for its first event, and returns a reader of the rest. */
async function openStream(url: string) {
  const res = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(STREAM) });
  assert.equal(res.status, 200);
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  let text = '';
  while (!text.includes('\n\n')) {
    const r = await reader.read();
    assert.ok(!r.done, 'stream ended before its first event');
    text += dec.decode(r.value, { stream: true });
  }
  const rest: Promise<string> = (async () => {
    for (;;) {
      const r = await reader.read();
      if (r.done) return text;
      text += dec.decode(r.value, { stream: true });
    }
  })();
  return { rest };
}

/** The data payloads of an SSE text; throws if any event is not whole JSON (or [DONE]). */
function events(text: string): unknown[] {
  assert.ok(text.endsWith('\n\n'), `the stream ends at an event boundary: ${JSON.stringify(text.slice(-80))}`);
  return text
    .split('\n\n')
    .filter((e) => e.length > 0)
    .map((e) => {
      assert.match(e, /^data: /);
      const d = e.slice(6);
      return d === '[DONE]' ? '[DONE]' : JSON.parse(d);
    });
}

test('SIGTERM to the router: new requests get 503, the stream in flight completes normally', { timeout: 120_000 }, async () => {
  const w = await getWorker();
  const r = await startRouterProc(w.url, 20_000);
  try {
    const stream = await openStream(r.url);
    r.p.kill('SIGTERM');
    await waitUntil('the router to answer 503 to a new request', 5000, async () => (await fetch(`${r.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...STREAM, stream: false, max_tokens: 1 }) })).status === 503);
    const evs = events(await stream.rest);
    assert.equal(evs.at(-1), '[DONE]');
    const last = evs.at(-2) as { choices: { finish_reason: string | null }[] };
    assert.equal(last.choices[0]!.finish_reason, 'length', JSON.stringify(last));
    assert.ok(!evs.some((e) => typeof e === 'object' && e !== null && 'error' in e), 'no error event');
    assert.equal(await r.exited, 0, r.output());
  } finally {
    r.p.kill('SIGKILL');
  }
});

test('with a tiny drain timeout the stream ends with an SSE error event, whole events only', { timeout: 120_000 }, async () => {
  const w = await getWorker();
  const r = await startRouterProc(w.url, 200);
  try {
    const stream = await openStream(r.url);
    r.p.kill('SIGTERM');
    const evs = events(await stream.rest);
    assert.equal(evs.at(-1), '[DONE]');
    const err = evs.at(-2) as { error?: { code: string } };
    assert.equal(err.error?.code, 'server_shutting_down', `${evs.length} events; router: ${r.output()}`);
    assert.ok(evs.length < STREAM.max_tokens, 'ended early');
    assert.equal(await r.exited, 0, r.output());
    // The worker is still serving: the router's end of the stream did not take it down.
    assert.equal((await fetch(`${w.url}/health`)).status, 200);
  } finally {
    r.p.kill('SIGKILL');
  }
});

test('SIGTERM to a worker: its stream in flight completes, new requests get 503', { timeout: 120_000 }, async () => {
  const w = await startWorker({ id: 'w-drain', extraArgs: ['--decode-step-ms', '50', '--drain-timeout-ms', '20000'] });
  try {
    const stream = await openStream(w.url);
    w.proc.kill('SIGTERM');
    await waitUntil('the worker to answer 503', 5000, async () => (await fetch(`${w.url}/health`)).status === 503);
    const evs = events(await stream.rest);
    assert.equal(evs.at(-1), '[DONE]');
    assert.ok(!evs.some((e) => typeof e === 'object' && e !== null && 'error' in e), 'no error event');
    await w.exited;
    assert.equal(w.proc.exitCode, 0, w.output());
  } finally {
    await w.stop('SIGKILL');
  }
});
