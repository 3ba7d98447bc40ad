// Tokenization off the main event loop: same ids as the workers' tokenizer, no stall of the loop.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Tokenizer } from '../../src/tokenizer/tokenizer.js';
import { fakeUpstream, routerWith, waitHealthy } from './helpers.js';
import { TokenizePool, TokenizeError, TokenizerCrashedError, TokenizeTimeoutError, TokenizerCrashLoopError, TokenizerUnavailableError } from '../../router/tokenize-pool.js';

const pool = new TokenizePool(2);
after(() => pool.close());

test('same token ids as the workers compute (text and chat template)', { timeout: 60_000 }, async () => {
  const tok = await Tokenizer.loadDefault();
  const text = 'Cache-aware routing sends each request where its prefix already lives. ünïcödé 日本語 🙂';
  assert.deepEqual(await pool.tokenize('default', { kind: 'text', text }), tok.encode(text));
  const messages = [
    { role: 'system', content: 'You are terse.' },
    { role: 'user', content: 'Hello!' },
  ];
  const expected = tok.encode(tok.applyChatTemplate(messages, { addGenerationPrompt: true }), { addSpecialTokens: false });
  assert.deepEqual(await pool.tokenize('default', { kind: 'chat', messages }), expected);
});

test('a long prompt does not stall the main event loop', { timeout: 60_000 }, async () => {
  await pool.warm('default');
  const long = Array.from({ length: 40_000 }, (_, i) => `word${i % 1000}`).join(' ');
  const h = monitorEventLoopDelay({ resolution: 5 });
  h.enable();
  const t0 = performance.now();
  const ids = await pool.tokenize('default', { kind: 'text', text: long });
  const took = performance.now() - t0;
  h.disable();
  assert.ok(ids.length > 40_000);
  const maxLagMs = h.max / 1e6;
  // Tokenizing took a while; the loop kept turning all along.
  assert.ok(maxLagMs < Math.max(50, took / 4), `event loop stalled ${maxLagMs.toFixed(1)} ms during a ${took.toFixed(0)} ms tokenization`);
});

test('a tokenizer that cannot load is a server error (500), not a client error', { timeout: 60_000 }, async () => {
  await assert.rejects(pool.tokenize({ tokenizer_json: '/nonexistent/tokenizer.json' }, { kind: 'text', text: 'x' }), (e: Error) => !(e instanceof TokenizeError) && /cannot load the tokenizer/.test(e.message));
});

const texts = Array.from({ length: 100 }, (_, i) => `prompt ${i}: ${'tok '.repeat(i % 17)}end ${i * 7919}`);

for (const fault of ['exit', 'throw'] as const) {
  test(`a thread that dies (${fault}) with ~100 jobs in flight: it is replaced, every other job resolves with the right ids`, { timeout: 90_000 }, async () => {
    const tok = await Tokenizer.loadDefault();
    const p = new TokenizePool(2);
    try {
      await p.warm('default');
      const jobs = texts.map((text) => p.tokenize('default', { kind: 'text', text }));
      // Queued among them: a job that kills whichever thread runs it (and its retry's thread too).
      const poison = p.tokenize('default', { kind: 'text', text: 'x' }, { faultForTest: fault }).then(() => null, (e: Error) => e);
      const more = texts.map((text) => p.tokenize('default', { kind: 'text', text }));
      const got = await Promise.all([...jobs, ...more]);
      assert.deepEqual(got, [...texts, ...texts].map((t) => tok.encode(t)));
      const err = await poison;
      assert.ok(err instanceof TokenizerCrashedError && err instanceof TokenizerUnavailableError && /died twice/.test(err.message), String(err));
      // The pool still has its two threads and keeps working.
      assert.equal(p.threadCount, 2);
      assert.deepEqual(await p.tokenize('default', { kind: 'text', text: 'after' }), tok.encode('after'));
    } finally {
      await p.close();
    }
  });
}

test('a job past its deadline rejects; its thread is replaced, its other jobs are retried, the pool keeps working', { timeout: 90_000 }, async () => {
  const tok = await Tokenizer.loadDefault();
  const p = new TokenizePool(1, { jobDeadlineMs: 3000 });
  try {
    await p.warm('default');
    const stuck = p.tokenize('default', { kind: 'text', text: 'x' }, { faultForTest: 'hang' }).then(() => null, (e: Error) => e);
    // Same (only) thread, queued behind the stuck job.
    const behind = texts.slice(0, 10).map((text) => p.tokenize('default', { kind: 'text', text }));
    const err = await stuck;
    assert.ok(err instanceof TokenizeTimeoutError && err instanceof TokenizerUnavailableError && /within 3000 ms/.test(err.message), String(err));
    assert.deepEqual(await Promise.all(behind), texts.slice(0, 10).map((t) => tok.encode(t)));
    assert.equal(p.threadCount, 1);
    assert.deepEqual(await p.tokenize('default', { kind: 'text', text: 'after' }), tok.encode('after'));
  } finally {
    await p.close();
  }
});

test('threads that die as they start: after 3 in a row the pool stops respawning and rejects jobs clearly', { timeout: 60_000 }, async () => {
  const p = new TokenizePool(1, { crashOnStartForTest: true });
  try {
    const first = p.tokenize('default', { kind: 'text', text: 'x' });
    await assert.rejects(first, (e: Error) => e instanceof TokenizerCrashLoopError && e instanceof TokenizerUnavailableError && /3 tokenizer threads in a row died while starting/.test(e.message));
    assert.equal(p.threadCount, 0);
    await assert.rejects(p.tokenize('default', { kind: 'text', text: 'y' }), TokenizerCrashLoopError);
  } finally {
    await p.close();
  }
});

test('through a real router: a prompt whose tokenization kills the threads gets 503 tokenizer_unavailable; the next request is served', { timeout: 90_000 }, async () => {
  const up = await fakeUpstream((_req, res) => res.end('{"ok":true}'));
  const r = await routerWith({ workers: [{ id: 'w', url: up.url }] });
  try {
    await waitHealthy(r, 1);
    const pool = r.service.pool;
    const real = pool.tokenize.bind(pool);
    pool.tokenize = (spec, input) => real(spec, input, { faultForTest: 'exit' });
    const post = () => fetch(`${r.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"prompt":"hello"}' });
    const res = await post();
    assert.equal(res.status, 503);
    const body = (await res.json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, 'tokenizer_unavailable');
    assert.match(body.error.message, /died twice/);
    assert.equal(up.requests.length, 0, 'nothing was sent upstream');
    pool.tokenize = real;
    assert.equal((await post()).status, 200);
  } finally {
    await r.close();
    await up.close();
  }
});
