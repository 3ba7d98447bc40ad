// End to end with real processes: worker A serves base + LoRA adapters X and Y, worker B the base
// model only (both `kv-worker --engine sim`, real KV events). Requests for X go only to A; an
// adapter's cache never counts for the base model or another adapter, in the router's /route and
// in the worker's cached_tokens; GET /v1/models merges the fleet; an unknown model is a 404.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { routerWith, startWorker, waitHealthy, waitUntil, workerAvailable, workerEntry, type WorkerProc } from './helpers.js';
import type { RunningRouter } from '../../router/server.js';

const skip = workerAvailable() ? false : 'bin/kv-worker.js not present';
let A: WorkerProc, B: WorkerProc, router: RunningRouter;

before(async () => {
  if (skip) return;
  const extra = ['--served-model-name', 'base', '--decode-step-ms', '2', '--num-blocks', '2048'];
  [A, B] = await Promise.all([
    startWorker({ id: 'A', extraArgs: [...extra, '--lora', 'X', '--lora', 'Y=/adapters/y'] }),
    startWorker({ id: 'B', extraArgs: extra }),
  ]);
  router = await routerWith({ workers: [workerEntry(A), workerEntry(B)] });
  await waitHealthy(router, 2);
  await waitUntil('streams connected and models learned', 20_000, () =>
    router.service.registry.list().every((w) => w.streams.get(0)!.health().connected && (w.models?.length ?? 0) > 0),
  );
}, { timeout: 110_000 });

after(async () => {
  await router?.close();
  await Promise.all([A?.stop(), B?.stop()]);
});

const text = (tag: string, words: number) => Array.from({ length: words }, (_, i) => `${tag}${i}`).join(' ');

async function post(url: string, path: string, body: unknown): Promise<{ status: number; body: any; worker: string | null }> {
  const res = await fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, body: await res.json(), worker: res.headers.get('x-kv-router-worker') };
}

async function complete(model: string, prompt: string, url = router.url) {
  const r = await post(url, '/v1/completions', { model, prompt, max_tokens: 4, temperature: 0, seed: 1 });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return { worker: r.worker, cached: r.body.usage.prompt_tokens_details.cached_tokens as number, prompt: r.body.usage.prompt_tokens as number, text: r.body.choices[0].text as string, model: r.body.model as string };
}

/** /route's matched tokens per worker, and the adapter it routed under. */
async function route(model: string, prompt: string) {
  const r = await post(router.url, '/route', { model, prompt });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return { lora: r.body.lora as string | null, matched: Object.fromEntries(r.body.candidates.map((c: any) => [c.worker, c.matched_tokens])) as Record<string, number> };
}

test('GET /v1/models merges the fleet: the base model once, then A\'s adapters with their parent', { skip, timeout: 30_000 }, async () => {
  const m = (await (await fetch(`${router.url}/v1/models`)).json()) as { data: { id: string; parent: string | null; root: string }[] };
  assert.deepEqual(m.data.map((c) => [c.id, c.parent, c.root]), [['base', null, 'base'], ['X', 'base', 'X'], ['Y', 'base', '/adapters/y']]);
});

test('an unknown model is a 404 listing what the fleet serves', { skip, timeout: 30_000 }, async () => {
  const r = await post(router.url, '/v1/completions', { model: 'Z', prompt: 'hello', max_tokens: 1 });
  assert.equal(r.status, 404);
  assert.equal(r.body.error.code, 'model_not_found');
  assert.match(r.body.error.message, /The model `Z` does not exist\. .*`X`, `Y`, `base`/);
  // The worker itself answers as vLLM does.
  const w = await post(B.url, '/v1/completions', { model: 'X', prompt: 'hello', max_tokens: 1 });
  assert.equal(w.status, 404);
  assert.equal(w.body.error.message, 'The model `X` does not exist.');
});

test('requests for adapter X go only to the worker that serves it', { skip, timeout: 60_000 }, async () => {
  for (let i = 0; i < 6; i++) {
    const r = await complete('X', text(`only-a-${i}-`, 40));
    assert.equal(r.worker, 'A', `request ${i}`);
    assert.equal(r.model, 'X');
  }
  assert.equal((await route('X', 'anything')).lora, 'X');
  assert.equal((await route('base', 'anything')).lora, null);
});

test('an adapter\'s blocks never count for the base model or another adapter, in the router and on the worker', { skip, timeout: 60_000 }, async () => {
  const prompt = text('lora-prefix-', 300); // ~1k tokens, many blocks
  const first = await complete('X', prompt);
  assert.equal(first.worker, 'A');
  assert.equal(first.cached, 0);
  const blocks = Math.floor((first.prompt - 1) / 16) * 16;
  await waitUntil('A\'s X blocks reach the index', 10_000, async () => (await route('X', prompt)).matched.A! >= blocks);
  // The router sees them for X on A only; for the base model and for Y they match nothing anywhere.
  const forBase = await route('base', prompt);
  assert.deepEqual(forBase.matched, { A: 0, B: 0 });
  assert.deepEqual((await route('Y', prompt)).matched, { A: 0 });
  // The worker agrees: X is served from its cache, the base model and Y are not.
  const again = await complete('X', prompt);
  assert.equal(again.worker, 'A');
  assert.ok(again.cached >= blocks, `X cached ${again.cached} of ${again.prompt}`);
  assert.equal(again.text, first.text);
  const base = await complete('base', prompt, A.url);
  assert.equal(base.cached, 0, 'the base model on A does not reuse X\'s blocks');
  assert.notEqual(base.text, first.text, 'the adapter changes the output');
  const y = await complete('Y', prompt, A.url);
  assert.equal(y.cached, 0, 'adapter Y does not reuse X\'s blocks');
  // The worker's blocks carry the adapter's name, as BlockStored.lora_name does.
  const cache = (await (await fetch(`${A.url}/cache`)).json()) as { lora_name?: string; extra_keys?: unknown[] }[];
  const names = new Set(cache.map((b) => b.lora_name ?? null));
  assert.deepEqual([...names].sort(), ['X', 'Y', null].sort());
  for (const b of cache) if (b.lora_name) assert.equal((b.extra_keys as string[][])[0]![0], b.lora_name);
});
