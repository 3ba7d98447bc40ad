// The fleet's models and adapters: parsing vLLM's /v1/models cards, merging them, and which adapter a request names.
import { test } from 'node:test';
import assert from 'node:assert/strict';
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
