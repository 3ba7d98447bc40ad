// Tokenization off the main event loop: same ids as the workers' tokenizer, no stall of the loop.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Tokenizer } from '../../src/tokenizer/tokenizer.js';
import { TokenizePool, TokenizeError } from '../../router/tokenize-pool.js';

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
