// End to end with real processes: two `kv-worker --engine sim` workers publishing real KV events,
// the router in this process subscribed to both. Prefix affinity, spreading, load, the openai client.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { routerWith, startWorker, waitHealthy, waitUntil, workerAvailable, workerEntry, type WorkerProc } from './helpers.js';
import type { RunningRouter } from '../../router/server.js';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const skip = workerAvailable() ? false : 'bin/kv-worker.js not present';
let A: WorkerProc, B: WorkerProc, router: RunningRouter;
const logDir = mkdtempSync(join(tmpdir(), 'kvr-decisions-'));
const decisionLog = join(logDir, 'decisions.jsonl');

before(async () => {
  if (skip) return;
  // Slow enough prefill that queued work shows on GET /load; fast enough for the test budget.
  const extra = ['--prefill-tokens-per-s', '20000', '--decode-step-ms', '5', '--num-blocks', '4096'];
  [A, B] = await Promise.all([startWorker({ id: 'A', extraArgs: extra }), startWorker({ id: 'B', extraArgs: extra })]);
  router = await routerWith({ workers: [workerEntry(A), workerEntry(B)], decision_log: decisionLog });
  await waitHealthy(router, 2);
  await waitUntil('both streams connected', 10_000, () => router.service.registry.list().every((w) => w.streams.get(0)!.health().connected));
}, { timeout: 110_000 });

after(async () => {
  await router?.close();
  await Promise.all([A?.stop(), B?.stop()]);
  rmSync(logDir, { recursive: true, force: true });
});

let uniq = 0;
/** A text prompt of about `words` tokens, distinct per `tag`. */
function text(tag: string, words: number): string {
  return Array.from({ length: words }, (_, i) => `${tag}${i}`).join(' ');
}

interface Completion {
  worker: string;
  expected: number;
  cached: number;
  prompt: number;
}

async function complete(prompt: string | number[], extra: Record<string, unknown> = {}): Promise<Completion> {
  const res = await fetch(`${router.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt, max_tokens: 2, ...extra }),
  });
  const body = (await res.json()) as { usage: { prompt_tokens: number; prompt_tokens_details: { cached_tokens: number } } };
  assert.equal(res.status, 200, JSON.stringify(body));
  return {
    worker: res.headers.get('x-kv-router-worker')!,
    expected: Number(res.headers.get('x-kv-router-cached-tokens')),
    cached: body.usage.prompt_tokens_details.cached_tokens,
    prompt: body.usage.prompt_tokens,
  };
}

const treeBlocks = (id: string) => router.service.index.stats(`${id}:0`).blocks;

test('requests sharing a long prefix land on the worker that holds it', { skip, timeout: 60_000 }, async () => {
  const prefix = text('shared', 400); // ~1.5k tokens
  const first = await complete(`${prefix} first`);
  const holder = first.worker;
  const other = holder === 'A' ? 'B' : 'A';
  await waitUntil('events reach the index', 10_000, () => treeBlocks(holder) >= 64);
  for (let i = 0; i < 6; i++) {
    const r = await complete(`${prefix} follow-up number ${i} ${uniq++}`);
    assert.equal(r.worker, holder, `request ${i} went to ${r.worker}`);
    assert.ok(r.expected >= first.prompt - 32, `router expected ${r.expected} of ${r.prompt}`);
    // The worker confirms: it served the prefix from its cache, as much as the router expected.
    assert.ok(r.cached >= r.expected - 16, `worker cached ${r.cached}, router expected ${r.expected}`);
  }
  // /route explains it: the holder matches the prefix, the other worker nothing.
  const ex = (await (await fetch(`${router.url}/route`, { method: 'POST', body: JSON.stringify({ prompt: `${prefix} explain` }) })).json()) as {
    pick: { worker: string };
    candidates: { worker: string; matched_tokens: number; by_medium: Record<string, number> }[];
  };
  assert.equal(ex.pick.worker, holder);
  assert.ok(ex.candidates.find((c) => c.worker === holder)!.matched_tokens >= 1024);
  assert.ok(ex.candidates.find((c) => c.worker === holder)!.by_medium.GPU! >= 1024);
  assert.equal(ex.candidates.find((c) => c.worker === other)!.matched_tokens, 0);
});

test('a burst sharing a new prefix stays together (provisional entries)', { skip, timeout: 60_000 }, async () => {
  const prefix = text(`burst${uniq++}x`, 300);
  // Four siblings: the hot-prefix guard (hot_prefix_requests 4) cannot apply yet, so only the
  // provisional entries keep them together (without them, 1 chance in 8 of landing on one worker).
  const results = await Promise.all(Array.from({ length: 4 }, (_, i) => complete(`${prefix} sibling ${i}`)));
  const workers = new Set(results.map((r) => r.worker));
  assert.equal(workers.size, 1, `burst scattered: ${results.map((r) => r.worker)}`);
});

test('different prefixes spread across workers', { skip, timeout: 60_000 }, async () => {
  const seen = new Map<string, number>();
  for (let i = 0; i < 12; i++) {
    const r = await complete(text(`distinct${uniq++}q`, 60));
    seen.set(r.worker, (seen.get(r.worker) ?? 0) + 1);
  }
  assert.equal(seen.size, 2, `all went to ${[...seen.keys()]}`);
});

test('a busy worker stops attracting requests even when it holds the prefix', { skip, timeout: 60_000 }, async () => {
  const prefix = text(`busy${uniq++}p`, 300);
  const first = await complete(`${prefix} seed`);
  const holder = first.worker === 'A' ? A : B;
  const other = holder === A ? B : A;
  await waitUntil('prefix indexed', 10_000, () => treeBlocks(holder.id) >= 40);
  // Load the holder with long decodes sent straight to it (not through the router): the router
  // sees them through the worker's GET /load; and with requests through the router it counts its own.
  const ac = new AbortController();
  const direct = Array.from({ length: 40 }, (_, i) =>
    fetch(`${holder.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: text(`load${i}z${uniq}`, 200), max_tokens: 400, ignore_eos: true, stream: true }),
      signal: ac.signal,
    }).then((r) => r.text()).catch(() => {}),
  );
  try {
    await waitUntil('holder reports the load', 10_000, () => {
      const l = router.service.load.effective(`${holder.id}:0`);
      return l.inFlight >= 30;
    });
    const r = await complete(`${prefix} while busy`);
    assert.equal(r.worker, other.id, 'the busy holder still attracted the request');
    const ex = (await (await fetch(`${router.url}/route`, { method: 'POST', body: JSON.stringify({ prompt: `${prefix} why` }) })).json()) as {
      candidates: { worker: string; matched_tokens: number; terms: Record<string, number> }[];
    };
    const h = ex.candidates.find((c) => c.worker === holder.id)!;
    assert.ok(h.terms.decode! >= 30 * 32, JSON.stringify(h));
  } finally {
    ac.abort();
    await Promise.all(direct);
  }
  await waitUntil('holder idle again', 20_000, async () => {
    const l = (await (await fetch(`${holder.url}/load`)).json()) as { running: number; waiting: number };
    return l.running + l.waiting === 0;
  });
  // The router's view of the holder is idle too (its own count, and the worker's next /load report).
  await waitUntil('router sees the holder idle', 10_000, () => router.service.load.effective(`${holder.id}:0`).inFlight === 0);
  // The request served while the holder was busy cached the prefix on the other worker too,
  // so once both are idle either may win; what matters is that the prefix is hit again.
  const back = await complete(`${prefix} after the rush`);
  assert.ok(back.expected > 0 && back.cached >= back.expected - 16, JSON.stringify(back));
});

test('the openai npm client works against the router, streaming included', { skip, timeout: 60_000 }, async () => {
  const client = new OpenAI({ baseURL: `${router.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  const models = await client.models.list();
  assert.ok(models.data.length >= 1);
  const model = models.data[0]!.id;
  const c = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 4 });
  assert.equal(c.object, 'text_completion');
  assert.equal(c.usage?.completion_tokens, 4);
  const chat = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Hello!' }], max_tokens: 3 });
  assert.equal(chat.choices[0]!.message.role, 'assistant');
  const { data: stream, response } = await client.chat.completions
    .create({ model, messages: [{ role: 'user', content: 'Stream please' }], max_tokens: 5, stream: true, stream_options: { include_usage: true } })
    .withResponse();
  assert.ok(['A', 'B'].includes(response.headers.get('x-kv-router-worker')!));
  let chunks = 0;
  let usage: OpenAI.CompletionUsage | null | undefined = null;
  for await (const ch of stream) {
    chunks++;
    if (ch.usage) usage = ch.usage;
  }
  assert.ok(chunks >= 5);
  assert.equal(usage?.completion_tokens, 5);
  const s2 = await client.completions.create({ model, prompt: [1, 2, 3, 4, 5, 6, 7, 8], max_tokens: 3, stream: true });
  let texts = 0;
  for await (const ch of s2) if (ch.choices[0]?.text !== undefined) texts++;
  assert.equal(texts, 3);
});

test('client disconnect mid-stream cancels the request on the worker', { skip, timeout: 60_000 }, async () => {
  const ac = new AbortController();
  const res = await fetch(`${router.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: text(`abort${uniq++}`, 50), max_tokens: 2000, ignore_eos: true, stream: true }),
    signal: ac.signal,
  });
  const w = res.headers.get('x-kv-router-worker') === 'A' ? A : B;
  const reader = res.body!.getReader();
  await reader.read();
  await reader.read();
  const running = async () => ((await (await fetch(`${w.url}/load`)).json()) as { running: number }).running;
  assert.ok((await running()) >= 1);
  ac.abort();
  await waitUntil('worker dropped the request', 10_000, async () => (await running()) === 0, 100);
  await waitUntil('router load released', 5000, () => router.service.load.get(`${w.id}:0`).inFlight === 0);
});

test('/metrics shows requests by worker and outcome, streams and trees', { skip, timeout: 30_000 }, async () => {
  const m = await (await fetch(`${router.url}/metrics`)).text();
  assert.match(m, /kv_router_requests_total\{worker="A",outcome="ok",endpoint="\/v1\/completions"\} \d+/);
  assert.match(m, /kv_router_decision_seconds_count\{policy="cache_aware"\} \d+/);
  assert.match(m, /kv_router_stream_last_seq\{worker="A",rank="0"\} \d+/);
  assert.match(m, /kv_router_stream_trusted\{worker="B",rank="0"\} 1/);
  assert.match(m, /kv_router_tree_blocks\{worker="A",rank="0"\} [1-9]/);
  assert.match(m, /kv_router_predicted_cached_tokens_total\{worker="[AB]"\} [1-9]/);
  assert.match(m, /kv_router_in_flight\{worker="A",rank="0"\} 0/);
});

test('decision_log: one JSON line per routed request, candidates best first with their terms', { skip, timeout: 30_000 }, async () => {
  const before = readFileSync(decisionLog, 'utf8').split('\n').filter(Boolean).length;
  const prefix = text(`logged${uniq++}d`, 200);
  const r = await complete(`${prefix} one`);
  const count = () => readFileSync(decisionLog, 'utf8').split('\n').filter(Boolean).length;
  await waitUntil('the decision is logged', 5000, () => count() >= before + 1, 20); // the log stream flushes asynchronously
  const lines = readFileSync(decisionLog, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
  assert.equal(lines.length, before + 1);
  const d = lines.at(-1)!;
  assert.equal(d.policy, 'cache_aware');
  assert.equal(d.prompt_tokens, r.prompt);
  assert.equal(d.candidates.length, 2);
  assert.equal(d.candidates[0].source, `${r.worker}:0`, 'the pick comes first');
  for (const c of d.candidates) {
    assert.equal(typeof c.matched, 'number');
    assert.equal(typeof c.in_flight, 'number');
    assert.equal(typeof c.terms.prefill, 'number');
    assert.ok(c.cost <= d.candidates.at(-1).cost || c.terms.overloaded === 1);
  }
  // /route explains without routing: no line. The real request after it is the positive control:
  // once its line is there, anything /route wrote would be there too (one ordered stream).
  await fetch(`${router.url}/route`, { method: 'POST', body: JSON.stringify({ prompt: `${prefix} explain only` }) });
  const next = await complete(`${prefix} two`);
  await waitUntil('the next decision is logged', 5000, () => count() >= before + 2, 20);
  const after = readFileSync(decisionLog, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
  assert.equal(after.length, before + 2, 'the /route call wrote a decision line');
  assert.equal(after.at(-1)!.prompt_tokens, next.prompt);
});
