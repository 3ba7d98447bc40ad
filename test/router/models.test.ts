// The fleet's models and adapters: parsing vLLM's /v1/models cards, merging them, and which adapter a request names.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { routerWith, waitHealthy, waitUntil } from './helpers.js';
import { adapterOf, mergeModelLists, parseModelList } from '../../router/models.js';
import type { Candidate } from '../../router/policies/policy.js';

const vllmCards = {
  object: 'list',
  data: [
    { id: 'meta-llama/Llama-3.1-8B', object: 'model', root: '/models/llama', parent: null, max_model_len: 8192 },
    { id: 'sql-lora', object: 'model', root: '/adapters/sql', parent: 'meta-llama/Llama-3.1-8B', max_model_len: null },
  ],
};

test('parseModelList reads adapters with their parent; an adapter\'s context is its base model\'s', () => {
  assert.deepEqual(parseModelList(vllmCards), [
    { id: 'meta-llama/Llama-3.1-8B', maxModelLen: 8192, parent: null },
    { id: 'sql-lora', maxModelLen: 8192, parent: 'meta-llama/Llama-3.1-8B' },
  ]);
  assert.equal(parseModelList({ nope: 1 }), null);
  // A card naming itself or an empty parent is a base model.
  assert.deepEqual(parseModelList({ data: [{ id: 'm', parent: 'm' }, { id: 'n', parent: '' }] })!.map((m) => m.parent), [null, null]);
});

test('adapterOf: the adapter name when a candidate lists the model as an adapter, else null', () => {
  const c = (id: string) => ({ workerId: id }) as Candidate;
  const models = new Map([['a', parseModelList(vllmCards)], ['b', parseModelList({ data: [vllmCards.data[0]] })]]);
  const of = (x: Candidate) => models.get(x.workerId);
  assert.equal(adapterOf('sql-lora', [c('a')], of), 'sql-lora');
  assert.equal(adapterOf('meta-llama/Llama-3.1-8B', [c('a'), c('b')], of), null);
  assert.equal(adapterOf(undefined, [c('a')], of), null);
  assert.equal(adapterOf('sql-lora', [c('b')], of), null);
});

test('mergeModelLists: one card per id, first worker wins, base models before adapters', () => {
  const merged = mergeModelLists([
    [{ id: 'x', parent: 'base' }, { id: 'base', parent: null, root: 'first' }],
    [{ id: 'base', parent: null, root: 'second' }, { id: 'other', parent: null }, { id: 'y', parent: 'other' }, { nope: true }],
  ]);
  assert.deepEqual(merged, [{ id: 'base', parent: null, root: 'first' }, { id: 'other', parent: null }, { id: 'x', parent: 'base' }, { id: 'y', parent: 'other' }]);
});

test('an adapter loaded at runtime is learned from /v1/models while the worker stays in rotation', { timeout: 60_000 }, async () => {
  const cards: object[] = [{ id: 'base', object: 'model', parent: null, max_model_len: 4096 }];
  const server = createServer((req, res) => {
    if (req.url === '/health') return res.end('{}');
    if (req.url === '/v1/models') return res.end(JSON.stringify({ object: 'list', data: cards }));
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const router = await routerWith({ workers: [{ id: 'w', url }], health: { interval_ms: 50, timeout_ms: 2000, failure_threshold: 3, models_refresh_ms: 100 } });
  try {
    await waitHealthy(router, 1);
    await waitUntil('models learned', 10_000, () => (router.service.registry.get('w')!.models?.length ?? 0) > 0);
    const route = () => fetch(`${router.url}/route`, { method: 'POST', body: JSON.stringify({ model: 'late-lora', prompt: [1, 2, 3] }) });
    assert.equal((await route()).status, 404);
    cards.push({ id: 'late-lora', object: 'model', parent: 'base', root: '/a/late', max_model_len: null });
    let body: { lora?: string | null } = {};
    await waitUntil('the runtime adapter is routable', 20_000, async () => {
      const r = await route();
      if (r.status !== 200) return false;
      body = (await r.json()) as { lora?: string | null };
      return true;
    });
    assert.equal(body.lora, 'late-lora');
    assert.deepEqual(router.service.registry.get('w')!.models!.find((m) => m.id === 'late-lora'), { id: 'late-lora', maxModelLen: 4096, parent: 'base' });
  } finally {
    await router.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
});
