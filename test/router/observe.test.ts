// The accuracy loop's pure parts: reading usage from responses (and stripping what the router
// asked for), the sliding window and its verdict, the tokenization parity watch.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { JsonUsageTap, SseUsageTap, clientWantsUsage, filterEvent, requestUsage, usageTap } from '../../router/observe/usage.js';
import { AccuracyWindow, PredictionAccuracy, accuracyVerdict, summarize, type Evidence, type Sample } from '../../router/observe/accuracy.js';
import { TokenParity, firstDifference } from '../../router/observe/parity.js';
import type { KVEventBatch } from '../../src/events/types.js';

const chunk = (o: unknown) => `data: ${JSON.stringify(o)}\n\n`;
const delta = (text: string, usage?: null) => ({ id: 'x', object: 'text_completion', created: 1, model: 'm', choices: [{ index: 0, text, logprobs: null, finish_reason: null }], ...(usage === null ? { usage: null } : {}) });
const usageChunk = (cached: number) => ({ id: 'x', object: 'text_completion', created: 1, model: 'm', choices: [], usage: { prompt_tokens: 40, completion_tokens: 2, total_tokens: 42, prompt_tokens_details: { cached_tokens: cached } } });

/** Runs chunks through a tap: what the client receives, and what the tap read. */
function through(tap: ReturnType<typeof usageTap> & object, parts: string[]): string {
  let out = '';
  for (const p of parts) out += tap.push(Buffer.from(p)).toString();
  return out + tap.flush().toString();
}

test('a stream whose client did not ask for usage: the usage chunk and the "usage":null the engine added are gone, split anywhere', () => {
  const withUsage = chunk(delta('Hel', null)) + chunk(delta('lo', null)) + chunk(usageChunk(32)) + 'data: [DONE]\n\n';
  const without = chunk(delta('Hel')) + chunk(delta('lo')) + 'data: [DONE]\n\n';
  for (const cut of [1, 7, 50, 120, withUsage.length - 3]) {
    const tap = new SseUsageTap(true);
    const out = through(tap, [withUsage.slice(0, cut), withUsage.slice(cut)]);
    assert.equal(out, without, `cut at ${cut}`);
    assert.equal(tap.cachedTokens, 32);
  }
});

test('a stream whose client asked for usage passes byte for byte, chunk for chunk, and is still read', () => {
  const body = chunk(delta('Hi', null)) + chunk(usageChunk(16)) + 'data: [DONE]\n\n';
  const tap = new SseUsageTap(false);
  const parts = [body.slice(0, 10), body.slice(10, 90), body.slice(90)];
  const outs = parts.map((p) => tap.push(Buffer.from(p)).toString());
  assert.deepEqual(outs, parts);
  assert.equal(tap.flush().length, 0);
  assert.equal(tap.cachedTokens, 16);
});

test('SSE with CRLF separators and an error event is kept; events without usage untouched', () => {
  const body = `data: ${JSON.stringify(delta('a', null))}\r\n\r\n: comment\r\n\r\ndata: {"error":{"message":"x"}}\r\n\r\n`;
  const tap = new SseUsageTap(true);
  assert.equal(through(tap, [body]), `data: ${JSON.stringify(delta('a'))}\r\n\r\n: comment\r\n\r\ndata: {"error":{"message":"x"}}\r\n\r\n`);
  assert.equal(tap.cachedTokens, null);
  assert.equal(filterEvent('data: not json "usage"', true, () => assert.fail()), 'data: not json "usage"');
});

test('non-streamed JSON: bytes unchanged, usage read at the end; error statuses are not tapped', () => {
  const body = JSON.stringify({ id: 'x', choices: [], usage: usageChunk(48).usage });
  const tap = new JsonUsageTap();
  assert.equal(through(tap, [body.slice(0, 5), body.slice(5)]), body);
  assert.equal(tap.cachedTokens, 48);
  const broken = new JsonUsageTap();
  through(broken, ['{"usage":']);
  assert.equal(broken.cachedTokens, null);
  assert.equal(usageTap(false, 400, false), null);
});

test('requestUsage sets include_usage, keeping the rest of the body (big integers too)', () => {
  const raw = '{"prompt":"hi","stream":true,"seed":12345678901234567890}';
  const out = new TextDecoder().decode(requestUsage(new TextEncoder().encode(raw), JSON.parse(raw)));
  assert.equal(out, '{"prompt":"hi","stream":true,"seed":12345678901234567890,"stream_options":{"include_usage":true}}');
  const raw2 = '{"stream":true,"stream_options":{"include_usage":false,"continuous_usage_stats":false}}';
  assert.deepEqual(JSON.parse(new TextDecoder().decode(requestUsage(new TextEncoder().encode(raw2), JSON.parse(raw2)))).stream_options, { include_usage: true, continuous_usage_stats: false });
  assert.equal(clientWantsUsage(JSON.parse(raw2)), false);
  assert.equal(clientWantsUsage({ stream_options: { include_usage: true } }), true);
  assert.equal(clientWantsUsage({ stream_options: null }), false);
});

const healthy: Evidence = { streams: [{ source: 'w:0', trusted: true, silent: null }], configuredBlockSize: 16, eventBlockSizes: [16], parityMismatch: null };
const samples = (n: number, predicted: number, actual: number, salted = false): Sample[] => Array.from({ length: n }, (_, i) => ({ at: i, predicted, actual, salted }));

test('accuracy = Σ min(actual, predicted) / Σ predicted; extra hits do not make up for misses', () => {
  const s = summarize([...samples(1, 100, 0), ...samples(1, 100, 300), ...samples(1, 0, 50)]);
  assert.equal(s.accuracy, 0.5);
  assert.equal(s.predicted, 200);
  assert.equal(s.actual, 350);
  assert.equal(s.predictedRequests, 2);
  assert.equal(summarize(samples(3, 0, 10)).accuracy, null);
});

test('the window keeps the last N requests and none older than its age', () => {
  const w = new AccuracyWindow(3, 1000);
  for (let i = 0; i < 5; i++) w.add({ at: i * 100, predicted: 10, actual: i < 2 ? 0 : 10, salted: false });
  assert.equal(w.summary(500).accuracy, 1);
  assert.equal(w.summary(500).requests, 3);
  assert.equal(w.summary(1350).requests, 1);
  assert.equal(w.summary(5000).requests, 0);
});

test('verdict: silent, untrusted, block size, tokenizer, cache_salt, unknown; none when accurate or too few requests', () => {
  const bad = summarize(samples(20, 100, 10));
  assert.equal(accuracyVerdict(summarize(samples(19, 100, 0)), healthy), null, 'too few');
  assert.equal(accuracyVerdict(summarize(samples(30, 100, 85)), healthy), null, 'accurate enough');
  assert.match(accuracyVerdict(bad, { ...healthy, streams: [{ source: 'w:0', trusted: false, silent: 'never connected' }] })!, /^prediction accuracy 10% over 20 requests.*KV events are not flowing: w:0: never connected/);
  assert.match(accuracyVerdict(bad, { ...healthy, streams: [{ source: 'w:0', trusted: false, silent: null }] })!, /not flowing: the stream of w:0 is not trusted/);
  assert.match(accuracyVerdict(bad, { ...healthy, eventBlockSizes: [32] })!, /block size mismatch: .*block_size 16, the worker's events have 32/);
  assert.match(accuracyVerdict(bad, { ...healthy, parityMismatch: 'position 3' })!, /different tokenizer or chat template: position 3/);
  assert.match(accuracyVerdict(summarize(samples(20, 100, 10, true)), healthy)!, /cache_salt: 100% of the missed tokens/);
  assert.match(accuracyVerdict(bad, healthy)!, /cause unknown/);
});

test('PredictionAccuracy warns once per episode, shows the warning while it holds, clears on recovery', () => {
  const logs: string[] = [];
  let t = 0;
  const acc = new PredictionAccuracy(() => healthy, (m) => logs.push(m), () => t);
  for (let i = 0; i < 25; i++) acc.record('w', { predicted: 100, actual: 0, salted: false });
  assert.equal(logs.length, 1);
  assert.match(logs[0]!, /^worker w: prediction accuracy 0%/);
  const v = acc.view('w');
  assert.equal(v.requests, 25);
  assert.equal(v.predicted_cached_tokens, 2500);
  assert.equal(v.actual_cached_tokens, 0);
  assert.equal(v.accuracy, 0);
  assert.match(v.warning!, /cause unknown/);
  t = 10 * 60_000; // the window ages out; good requests follow
  for (let i = 0; i < 25; i++) acc.record('w', { predicted: 100, actual: 100, salted: false });
  assert.equal(acc.view('w').warning, null);
  assert.equal(acc.accuracy('w'), 1);
  acc.forget('w');
  assert.equal(acc.view('w').requests, 0);
});

const stored = (tokens: number[], parent: bigint | null = null): KVEventBatch => ({
  ts: 0,
  dp_rank: null,
  events: [{ type: 'BlockStored', block_hashes: [1n], parent_block_hash: parent, token_ids: tokens, block_size: 4, lora_id: null, medium: null, lora_name: null }],
});

test('firstDifference compares over the common length', () => {
  assert.equal(firstDifference([1, 2, 3], [1, 2, 3, 4]), -1);
  assert.equal(firstDifference([1, 2, 3], [1, 9, 3]), 1);
  assert.equal(firstDifference([], [1]), -1);
});

test('parity: a cold prompt is compared with the next chain-starting BlockStored; mismatch names position and both tokens', async () => {
  const logs: string[] = [];
  const p = new TokenParity((m) => logs.push(m));
  const decode = async (ids: number[]) => `t${ids[0]}`;
  p.committed('w:0', 'w', [1, 2, 3, 4, 5, 6, 7, 8], 4, true, decode);
  p.onBatch('w:0', stored([9, 9, 9, 9], 5n)); // not a chain start: not this prompt's first block
  assert.equal(p.statusOf('w'), null);
  p.onBatch('w:0', stored([1, 2, 3, 4, 5, 6, 7, 8]));
  assert.deepEqual(p.statusOf('w'), { checked: 1, mismatches: 0, mismatch: null });

  p.committed('w:0', 'w', [1, 2, 3, 4, 5, 6, 7, 8], 4, true, decode);
  p.onBatch('w:0', stored([1, 2, 30, 4]));
  await new Promise((r) => setImmediate(r));
  const st = p.statusOf('w')!;
  assert.equal(st.mismatches, 1);
  assert.match(st.mismatch!, /position 2: router 3 "t3", worker 30 "t30"/);
  assert.equal(logs.length, 1);
});

test('parity: a second request before the events voids the watch; warm or short prompts set none; watches expire', () => {
  let t = 0;
  const p = new TokenParity(() => {}, () => t);
  const decode = async () => '';
  p.committed('w:0', 'w', [1, 2, 3, 4], 4, true, decode);
  p.committed('w:0', 'w', [5, 6, 7, 8], 4, true, decode);
  p.onBatch('w:0', stored([5, 6, 7, 8]));
  assert.equal(p.statusOf('w'), null, 'ambiguous: not checked');
  p.committed('w:0', 'w', [1, 2, 3, 4], 4, false, decode);
  p.onBatch('w:0', stored([1, 2, 3, 4]));
  p.committed('w:0', 'w', [1, 2, 3], 4, true, decode);
  p.onBatch('w:0', stored([1, 2, 3, 4]));
  assert.equal(p.statusOf('w'), null);
  p.committed('w:0', 'w', [1, 2, 3, 4], 4, true, decode);
  t = 60_000;
  p.onBatch('w:0', stored([1, 2, 3, 4]));
  assert.equal(p.statusOf('w'), null, 'expired');
});
