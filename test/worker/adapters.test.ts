// Named LoRA adapters on the worker: --lora parsing, the adapter in every block hash (tagged apart from
// the salt), the pool's BlockStored fields as vLLM's block_pool sends them, and a bad --lora at start.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { loraModules, modelCards, resolveModel } from '../../worker/adapters.js';
import { BlockPool } from '../../worker/cache/block-pool.js';
import { blockExtraKeys, hashBlock, hashFullBlocks } from '../../worker/cache/hash.js';
import { parseWorkerArgs, parseWorkerConfig } from '../../worker/config.js';
import { BIN } from './helpers.js';

test('--lora NAME=PATH is repeatable; ids count from 1 as vLLM\'s lora_int_id; bad values are named', () => {
  const cfg = parseWorkerArgs(['--engine', 'sim', '--served-model-name', 'base', '--lora', 'a=/p/a', '--lora', 'b']);
  const mods = loraModules(cfg);
  assert.deepEqual(mods, [{ name: 'a', path: '/p/a', id: 1 }, { name: 'b', path: null, id: 2 }]);
  assert.deepEqual(resolveModel('b', 'base', mods), { name: 'b', id: 2 });
  assert.equal(resolveModel('base', 'base', mods), null);
  assert.equal(resolveModel(undefined, 'base', mods), null);
  assert.equal(resolveModel('zz', 'base', mods), undefined);
  assert.deepEqual(modelCards('base', 64, mods).map((c) => [c.id, c.parent, c.root, c.max_model_len]), [['base', null, 'base', 64], ['a', 'base', '/p/a', null], ['b', 'base', 'b', null]]);
  const bad = (args: string[], re: RegExp) => assert.throws(() => loraModules(parseWorkerArgs(['--served-model-name', 'base', ...args])), re);
  bad(['--engine', 'onnx', '--lora', 'a'], /the onnx engine needs the adapter's weights/);
  bad(['--engine', 'sim', '--lora', 'a', '--lora', 'a=/x'], /adapter a is given twice/);
  bad(['--engine', 'sim', '--lora', 'base'], /is the base model's/);
  bad(['--engine', 'sim', '--lora', '=/x'], /expected NAME=PATH/);
  // A config file names it `lora` too (a list).
  assert.deepEqual(parseWorkerArgs(['--engine', 'sim']).lora, []);
  assert.deepEqual(loraModules(parseWorkerConfig({ engine: 'sim', lora: ['c=/p/c'] })), [{ name: 'c', path: '/p/c', id: 1 }]);
  assert.throws(() => parseWorkerConfig({ engine: 'sim', lora: 'c=/p/c' }), /--lora \(lora\)/);
});

test('the adapter enters every block hash; an adapter name never hashes like a salt', () => {
  const t = Array.from({ length: 8 }, (_, i) => i + 1);
  const plain = hashFullBlocks(t, 4);
  const x = hashFullBlocks(t, 4, Infinity, null, 'x');
  const y = hashFullBlocks(t, 4, Infinity, null, 'y');
  assert.deepEqual(hashFullBlocks(t, 4, Infinity, null, 'x'), x, 'deterministic');
  for (let k = 0; k < 2; k++) {
    assert.notEqual(x[k], plain[k]);
    assert.notEqual(x[k], y[k]);
  }
  assert.equal(x[1], hashBlock(x[0]!, t.slice(4), null, 'x'), 'every block takes the adapter, not only the first');
  assert.notEqual(hashBlock(null, t.slice(0, 4), null, 's'), hashBlock(null, t.slice(0, 4), 's', null), 'adapter "s" ≠ salt "s"');
  assert.equal(hashFullBlocks(t, 4, Infinity, 's')[0], hashBlock(null, t.slice(0, 4), 's'), 'salted hashes are unchanged');
  // vLLM's extra keys: the LoRA name first on every block, the salt on block 0.
  assert.deepEqual([blockExtraKeys(0, 's', 'x'), blockExtraKeys(1, 's', 'x'), blockExtraKeys(1, null, null)], [['x', 's'], ['x'], null]);
});

test('BlockStored of an adapter\'s blocks carries lora_id and lora_name; chains of different adapters are separate events', () => {
  const pool = new BlockPool(8, 4);
  const t = [1, 2, 3, 4, 5, 6, 7, 8];
  const x = hashFullBlocks(t, 4, Infinity, null, 'x');
  const ids = pool.allocate(4)!;
  pool.commit(ids[0]!, x[0]!, null, t.slice(0, 4), blockExtraKeys(0, null, 'x'), { name: 'x', id: 3 });
  pool.commit(ids[1]!, x[1]!, x[0]!, t.slice(4), blockExtraKeys(1, null, 'x'), { name: 'x', id: 3 });
  const plain = hashFullBlocks(t, 4);
  pool.commit(ids[2]!, plain[0]!, null, t.slice(0, 4));
  const ev = pool.takeEvents();
  assert.equal(ev.length, 2);
  assert.deepEqual(ev[0], { type: 'BlockStored', block_hashes: x, parent_block_hash: null, token_ids: t, block_size: 4, lora_id: 3, medium: 'GPU', lora_name: 'x', extra_keys: [['x'], ['x']] });
  assert.equal(ev[1]!.type === 'BlockStored' && ev[1]!.lora_name, null);
  assert.deepEqual(pool.list().map((b) => b.lora_name ?? null), ['x', 'x', null]);
});

test('kv-worker exits 2 with one line on a bad --lora', () => {
  const r = spawnSync(process.execPath, [BIN, '--engine', 'onnx', '--port', '0', '--lora', 'x'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /invalid --lora "x": the onnx engine needs the adapter's weights/);
});
