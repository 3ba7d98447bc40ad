/**
 * The onnx worker serving a generated LoRA adapter next to the base model: real merged weights,
 * the adapter's own cache chain, vLLM's /v1/models cards and 404, BlockStored-shaped /cache.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DEFAULT_MODEL } from '../../worker/model/default-model.js';
import { generateLoraAdapter, loadLoraAdapter } from '../../worker/model/lora.js';
import { startWorker, type WorkerProc } from './helpers.js';

let w: WorkerProc;
const dir = mkdtempSync(join(tmpdir(), 'kvr-lora-'));
const X = join(dir, 'x');
const Y = join(dir, 'y');

before(async () => {
  await generateLoraAdapter(X, { seed: 11, spec: DEFAULT_MODEL });
  await generateLoraAdapter(Y, { seed: 12, rank: 4, targets: ['o_proj', 'down_proj'], spec: DEFAULT_MODEL });
  w = await startWorker(['--engine', 'onnx', '--num-blocks', '128', '--max-batch', '4', '--served-model-name', 'base', '--lora', `x=${X}`, '--lora', `y=${Y}`], 120_000);
});
after(async () => {
  if (w) assert.equal((await w.stop('SIGTERM')).code, 0, w.output);
  rmSync(dir, { recursive: true, force: true });
});

// 40 token ids: two full 16-token blocks and a partial one.
const PROMPT = Array.from({ length: 40 }, (_, i) => 1000 + ((i * 7919) % 5000));
const greedy = (model: string, prompt: number[], max = 8) => w.json('/v1/completions', { model, prompt, max_tokens: max, temperature: 0, ignore_eos: true });

describe('kv-worker --engine onnx --lora', () => {
  it('generates a deterministic adapter in PEFT layout', async () => {
    const again = join(dir, 'x-again');
    await generateLoraAdapter(again, { seed: 11, spec: DEFAULT_MODEL });
    assert.deepEqual(readFileSync(join(again, 'adapter_model.safetensors')), readFileSync(join(X, 'adapter_model.safetensors')));
    const a = await loadLoraAdapter(X);
    assert.equal(a.rank, 8);
    assert.deepEqual([...a.pairs.keys()].sort(), ['layers.0.q_proj', 'layers.0.v_proj', 'layers.1.q_proj', 'layers.1.v_proj']);
  });

  it('lists the base model and the adapters as vLLM does', async () => {
    const m = await w.json('/v1/models');
    assert.deepEqual(
      m.data.map((c: any) => [c.id, c.parent, c.root]),
      [['base', null, 'base'], ['x', 'base', X], ['y', 'base', Y]],
    );
    assert.ok(m.data[0].max_model_len > 0);
    assert.equal(m.data[1].max_model_len, null);
  });

  it('answers an unknown model with vLLM\'s 404', async () => {
    const r = await w.post('/v1/completions', { model: 'z', prompt: PROMPT, max_tokens: 1 });
    assert.equal(r.status, 404);
    const e = (await r.json()) as any;
    assert.equal(e.error.message, 'The model `z` does not exist.');
    assert.equal(e.error.type, 'NotFoundError');
    assert.equal(e.error.param, 'model');
  });

  it('an adapter changes greedy output, deterministically; its cache is its own; a cached prefix gives the cold output', async () => {
    await w.json('/flush_cache', {});
    const base = await greedy('base', PROMPT);
    const x = await greedy('x', PROMPT);
    const y = await greedy('y', PROMPT);
    assert.equal(x.model, 'x', 'the response names the adapter');
    assert.notEqual(x.choices[0].text, base.choices[0].text, 'adapter x changes the output');
    assert.notEqual(y.choices[0].text, base.choices[0].text, 'adapter y changes the output');
    assert.notEqual(x.choices[0].text, y.choices[0].text);
    // Each ran cold: the base model's blocks never serve an adapter, nor one adapter's the other's.
    assert.equal(x.usage.prompt_tokens_details.cached_tokens, 0);
    assert.equal(y.usage.prompt_tokens_details.cached_tokens, 0);
    // Each model's second run hits its own chain and gives the same text.
    for (const [model, cold] of [['base', base], ['x', x], ['y', y]] as const) {
      const warm = await greedy(model, PROMPT);
      assert.equal(warm.usage.prompt_tokens_details.cached_tokens, 32, model);
      assert.equal(warm.choices[0].text, cold.choices[0].text, `${model}: cached prefix = cold output`);
    }
    // A prefix cached under x, then the full prompt under x: the cold output again.
    await w.json('/flush_cache', {});
    await greedy('x', PROMPT.slice(0, 17), 1);
    const warm = await greedy('x', PROMPT);
    assert.equal(warm.usage.prompt_tokens_details.cached_tokens, 16);
    assert.equal(warm.choices[0].text, x.choices[0].text);
  });

  it('batches decodes of different adapters without mixing their weights', async () => {
    await w.json('/flush_cache', {});
    const alone = await Promise.all(['base', 'x', 'y'].map(async (m) => (await greedy(m, PROMPT.map((t) => t + 1))).choices[0].text));
    await w.json('/flush_cache', {});
    const together = await Promise.all(['base', 'x', 'y', 'x'].map(async (m) => (await greedy(m, PROMPT.map((t) => t + 1))).choices[0].text));
    assert.deepEqual(together, [...alone, alone[1]]);
  });

  it('marks the adapter\'s blocks in /cache as vLLM\'s BlockStored does (lora_name, extra_keys)', async () => {
    await w.json('/flush_cache', {});
    await greedy('x', PROMPT, 1);
    const blocks = (await w.json('/cache')) as any[];
    assert.equal(blocks.length, 2);
    for (const b of blocks) {
      assert.equal(b.lora_name, 'x');
      assert.deepEqual(b.extra_keys, [['x']]);
    }
  });
});
