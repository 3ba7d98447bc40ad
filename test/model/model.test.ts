import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, readdir, readFile, stat, writeFile, mkdir } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { PbWriter } from '../../worker/model/protobuf.js';
import { buildDefaultModel, DEFAULT_MODEL, ensureDefaultModel, loadModelDir, parseModelConfig, cacheRoot } from '../../worker/model/index.js';
import { Tokenizer } from '../../src/tokenizer/index.js';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'kvr-model-'));
  dirs.push(d);
  return d;
}
const concat = (parts: Uint8Array[]) => Buffer.concat(parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength)));

test('protobuf writer: varints, negative int64, floats, nested messages', () => {
  const inner = new PbWriter().int(1, 300);
  const w = new PbWriter().int(1, 1).int(2, -1).float(3, 1.5).string(4, 'hi').message(5, inner);
  assert.equal(
    concat(w.finish()).toString('hex'),
    '0801' + '10ffffffffffffffffff01' + '1d0000c03f' + '22026869' + '2a0308ac02',
  );
});

const SMALL = { ...DEFAULT_MODEL, vocabSize: 500 };

test('the model is a deterministic function of its spec', () => {
  const a = createHash('sha256').update(concat(buildDefaultModel(SMALL))).digest('hex');
  const b = createHash('sha256').update(concat(buildDefaultModel(SMALL))).digest('hex');
  const c = createHash('sha256').update(concat(buildDefaultModel({ ...SMALL, seed: 1 }))).digest('hex');
  assert.equal(a, b);
  assert.notEqual(a, c);
});

function feeds(ids: number[][], mask: number[][], pos: number[][], pastLen = 0, L = 2, H = 4, HD = 16) {
  const B = ids.length;
  const f: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.flat().map(BigInt)), [B, ids[0].length]),
    attention_mask: new ort.Tensor('int64', BigInt64Array.from(mask.flat().map(BigInt)), [B, mask[0].length]),
    position_ids: new ort.Tensor('int64', BigInt64Array.from(pos.flat().map(BigInt)), [B, pos[0].length]),
  };
  for (let l = 0; l < L; l++) {
    for (const k of ['key', 'value']) {
      f[`past_key_values.${l}.${k}`] = new ort.Tensor('float32', new Float32Array(B * H * pastLen * HD), [B, H, pastLen, HD]);
    }
  }
  return f;
}

test('attention is causal and honours attention_mask (left padding)', async () => {
  const session = await ort.InferenceSession.create(concat(buildDefaultModel(SMALL)), { intraOpNumThreads: 1 });
  try {
    const logitsOf = async (f: Record<string, ort.Tensor>) => (await session.run(f)).logits;
    const plain = await logitsOf(feeds([[5, 6, 7]], [[1, 1, 1]], [[0, 1, 2]]));
    assert.deepEqual(plain.dims, [1, 1, 500]);
    // Same sequence left-padded with junk tokens that the mask hides: same logits.
    const padded = await logitsOf(feeds([[99, 98, 5, 6, 7]], [[0, 0, 1, 1, 1]], [[0, 0, 0, 1, 2]]));
    const d = (a: ort.Tensor, b: ort.Tensor) =>
      Math.max(...Array.from(a.data as Float32Array, (x, i) => Math.abs(x - (b.data as Float32Array)[i])));
    assert.ok(d(plain, padded) < 1e-4, `padding changed logits by ${d(plain, padded)}`);
    // Unmasking the junk changes them: the mask is what hides it.
    const unmasked = await logitsOf(feeds([[99, 98, 5, 6, 7]], [[1, 1, 1, 1, 1]], [[0, 0, 0, 1, 2]]));
    assert.ok(d(plain, unmasked) > 1e-3);
    // Rotary positions: only relative positions matter; spacing them differently changes the output.
    const shifted = await logitsOf(feeds([[5, 6, 7]], [[1, 1, 1]], [[40, 41, 42]]));
    assert.ok(d(plain, shifted) < 1e-3, `shift changed logits by ${d(plain, shifted)}`);
    const spread = await logitsOf(feeds([[5, 6, 7]], [[1, 1, 1]], [[0, 2, 4]]));
    assert.ok(d(plain, spread) > 1e-3);
    // present keys for the first token do not depend on later tokens (causal).
    const r1 = await session.run(feeds([[5, 6, 7]], [[1, 1, 1]], [[0, 1, 2]]));
    const r2 = await session.run(feeds([[5, 9, 9]], [[1, 1, 1]], [[0, 1, 2]]));
    assert.deepEqual(r1['present.1.key'].dims, [1, 4, 3, 16]);
    const firstPosition = (r: ort.InferenceSession.OnnxValueMapType) => {
      const t = r['present.1.value'].data as Float32Array; // [1, H, 3, HD]: head 0, time 0
      return Array.from(t.subarray(0, 16));
    };
    assert.deepEqual(firstPosition(r1), firstPosition(r2));
  } finally {
    await session.release();
  }
});

test('ensureDefaultModel builds once into the cache dir, atomically, even with concurrent callers', async () => {
  const cacheDir = await tempDir();
  const tokenizer = await Tokenizer.loadDefault();
  const [a, b] = await Promise.all([ensureDefaultModel({ cacheDir, tokenizer }), ensureDefaultModel({ cacheDir, tokenizer })]);
  assert.equal(a.modelPath, join(cacheDir, 'models', 'kvr-tiny-v1', 'model.onnx'));
  assert.equal(a.modelPath, b.modelPath);
  assert.deepEqual(await readdir(a.dir).then((f) => f.sort()), ['config.json', 'model.onnx']); // no temp files left
  const cfg = JSON.parse(await readFile(join(a.dir, 'config.json'), 'utf8'));
  assert.equal(cfg.vocabSize, 151669);
  assert.deepEqual(cfg.eosTokenIds, [151645, 151643]);
  assert.equal(cfg.numLayers, 2);
  const size = (await stat(a.modelPath)).size;
  assert.ok(size > 30e6 && size < 50e6, `model is ${size} bytes`);
  const before = (await stat(a.modelPath)).mtimeMs;
  await ensureDefaultModel({ cacheDir, tokenizer }); // reused, not rebuilt
  assert.equal((await stat(a.modelPath)).mtimeMs, before);
});

test('cache root follows KV_ROUTER_CACHE_DIR', () => {
  const old = process.env.KV_ROUTER_CACHE_DIR;
  process.env.KV_ROUTER_CACHE_DIR = '/x/y';
  try {
    assert.equal(cacheRoot(), '/x/y');
  } finally {
    if (old === undefined) delete process.env.KV_ROUTER_CACHE_DIR;
    else process.env.KV_ROUTER_CACHE_DIR = old;
  }
});

test('loadModelDir finds the export and reads a Hugging Face config.json', async () => {
  const dir = await tempDir();
  await mkdir(join(dir, 'onnx'));
  await writeFile(join(dir, 'onnx', 'model.onnx'), '');
  await writeFile(
    join(dir, 'config.json'),
    JSON.stringify({ model_type: 'qwen3', num_hidden_layers: 28, num_attention_heads: 16, num_key_value_heads: 8, hidden_size: 1024, head_dim: 128, vocab_size: 151936, eos_token_id: 151645 }),
  );
  const m = await loadModelDir(dir);
  assert.equal(m.modelPath, join(dir, 'onnx', 'model.onnx'));
  assert.deepEqual(m.hints, { name: 'qwen3', numLayers: 28, numKvHeads: 8, headDim: 128, vocabSize: 151936, eosTokenIds: [151645], hiddenSize: 1024 });
  assert.deepEqual(parseModelConfig({ n_layer: 12, n_head: 12, n_embd: 768 }), { numLayers: 12, numKvHeads: 12, headDim: 64, hiddenSize: 768 });
});
