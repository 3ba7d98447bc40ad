import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, mkdir, copyFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { OnnxEngine } from '../../worker/engines/onnx/index.js';
import { BlockAllocator, generate, randomTokens, GREEDY, type Seq } from './helpers.js';

const BS = 16;
const NUM_BLOCKS = 2048;
let cacheDir: string;
let engine: OnnxEngine;
let alloc: BlockAllocator;

before(async () => {
  cacheDir = await mkdtemp(join(tmpdir(), 'kvr-onnx-'));
  engine = await OnnxEngine.create({ cacheDir, blockSize: BS, numBlocks: NUM_BLOCKS });
  alloc = new BlockAllocator(NUM_BLOCKS);
});

after(async () => {
  await engine?.close();
  await rm(cacheDir, { recursive: true, force: true });
});

const fresh = (id: string, tokens: number[]): Seq => ({ id, tokens: [...tokens], computed: 0, blockTable: [] });

test('the generated graph loads and runs in onnxruntime-node', async () => {
  assert.deepEqual(
    { layers: engine.io.numLayers, heads: engine.io.numKvHeads, headDim: engine.io.headDim },
    { layers: 2, heads: 4, headDim: 16 },
  );
  assert.deepEqual(engine.eosTokenIds, [151645, 151643]);
  const out = await generate(engine, fresh('smoke', randomTokens(10, 7)), 3, alloc);
  assert.equal(out.length, 3);
  for (const t of out) assert.ok(Number.isInteger(t) && t >= 0 && t < 151669);
  // Context matters: two different prompts do not produce the same continuation.
  const other = await generate(engine, fresh('smoke2', randomTokens(10, 8)), 3, alloc);
  assert.notDeepEqual(out, other);
});

test('greedy generation with a cached prefix equals generation from an empty cache', async () => {
  const prompt = randomTokens(70, 42);
  const N = 12;
  const scratch = await generate(engine, fresh('scratch', prompt), N, alloc);
  // Block boundaries (16, 32, 64) and mid-block (1, 7, 23, 50, 69) prefix lengths.
  for (const cached of [1, 7, 16, 23, 32, 50, 64, 69]) {
    // Another request shares the first `cached` tokens, then diverges: its K/V fill the pool.
    const donor = fresh(`donor-${cached}`, [...prompt.slice(0, cached), ...randomTokens(20, cached)]);
    await generate(engine, donor, 1, alloc);
    // The new request takes the donor's full blocks as they are and a copy of its partial block.
    const full = Math.floor(cached / BS);
    const table = donor.blockTable.slice(0, full);
    if (cached % BS) {
      const [copy] = alloc.take(1);
      engine.copyBlock(donor.blockTable[full], copy);
      table.push(copy);
    }
    const seq: Seq = { id: `cached-${cached}`, tokens: [...prompt], computed: cached, blockTable: table };
    const reused = await generate(engine, seq, N, alloc);
    assert.deepEqual(reused, scratch, `prefix of ${cached} cached tokens`);
  }
});

test('a fully cached prompt (only the last token computed) gives the same tokens', async () => {
  const prompt = randomTokens(33, 5);
  const scratch = await generate(engine, fresh('s33', prompt), 5, alloc);
  const donor = fresh('d33', prompt);
  await generate(engine, donor, 1, alloc);
  const seq: Seq = { id: 'c33', tokens: [...prompt], computed: 32, blockTable: donor.blockTable.slice(0, 2) };
  const [copy] = alloc.take(1);
  engine.copyBlock(donor.blockTable[2], copy);
  seq.blockTable.push(copy);
  assert.deepEqual(await generate(engine, seq, 5, alloc), scratch);
});

test('batched decode of sequences with different past lengths equals their single decodes', async () => {
  const lengths = [3, 16, 29, 47, 64, 5, 80, 31];
  const prompts = lengths.map((n, i) => randomTokens(n, 100 + i));
  const N = 10;
  const single: number[][] = [];
  for (let i = 0; i < prompts.length; i++) single.push(await generate(engine, fresh(`single-${i}`, prompts[i]), N, alloc));

  const seqs = prompts.map((p, i) => fresh(`batch-${i}`, p));
  // Prefill one by one (one token each), then decode all in one step per token.
  const outs: number[][] = seqs.map(() => []);
  for (let i = 0; i < seqs.length; i++) outs[i].push(...(await generate(engine, seqs[i], 1, alloc)));
  for (let k = 1; k < N; k++) {
    const steps = seqs.map((s) => {
      const need = Math.ceil(s.tokens.length / BS) - s.blockTable.length;
      if (need > 0) s.blockTable.push(...alloc.take(need));
      return { seqId: s.id, newTokens: s.tokens.slice(s.computed), startPos: s.computed, blockTable: s.blockTable, sampling: GREEDY };
    });
    const next = await engine.step(steps);
    seqs.forEach((s, i) => {
      s.computed = s.tokens.length;
      s.tokens.push(next[i]);
      outs[i].push(next[i]);
    });
  }
  assert.deepEqual(outs, single);
});

test('a mixed step (prefills and decodes together) returns tokens in input order', async () => {
  const a = fresh('mix-a', randomTokens(20, 1));
  const aFirst = await generate(engine, a, 1, alloc);
  const b = fresh('mix-b', randomTokens(9, 2));
  const c = fresh('mix-c', randomTokens(25, 3));
  const refB = await generate(engine, fresh('ref-b', b.tokens), 1, alloc);
  const refA = await generate(engine, fresh('ref-a', a.tokens.slice(0, 20)), 2, alloc);
  const refC = await generate(engine, fresh('ref-c', c.tokens), 1, alloc);
  for (const s of [a, b, c]) s.blockTable.push(...alloc.take(Math.ceil((s.tokens.length + 1) / BS) - s.blockTable.length));
  const next = await engine.step([
    { seqId: b.id, newTokens: b.tokens, startPos: 0, blockTable: b.blockTable, sampling: GREEDY },
    { seqId: a.id, newTokens: aFirst, startPos: 20, blockTable: a.blockTable, sampling: GREEDY },
    { seqId: c.id, newTokens: c.tokens, startPos: 0, blockTable: c.blockTable, sampling: GREEDY },
  ]);
  assert.deepEqual(next, [refB[0], refA[1], refC[0]]);
});

test('a prefill run in chunks gives the same tokens as one run', async () => {
  const chunked = await OnnxEngine.create({ cacheDir, numBlocks: 64, prefillChunk: 7 });
  try {
    const prompt = randomTokens(45, 31);
    const a = await generate(engine, fresh('one-run', prompt), 5, alloc);
    const b = await generate(chunked, fresh('chunked', prompt), 5, new BlockAllocator(64));
    assert.deepEqual(b, a);
  } finally {
    await chunked.close();
  }
});

test('seeded sampling is reproducible', async () => {
  const sampling = { temperature: 0.8, topP: 0.9, seed: 1234 };
  const p = randomTokens(12, 9);
  const x = await generate(engine, fresh('sx', p), 8, alloc, sampling);
  const y = await generate(engine, fresh('sy', p), 8, alloc, sampling);
  assert.deepEqual(x, y);
});

test('a block table too short for the step is rejected', async () => {
  await assert.rejects(
    engine.step([{ seqId: 'short', newTokens: randomTokens(20, 1), startPos: 0, blockTable: [0], sampling: GREEDY }]),
    /block table covers 16 positions, needs 20/,
  );
});

test('--device cuda fails at start with a clear message on a CPU-only onnxruntime-node', async () => {
  const hasCuda = ort.listSupportedBackends().some((b) => b.name === 'cuda' && b.bundled);
  if (hasCuda) return; // a GPU build: nothing to assert here
  await assert.rejects(OnnxEngine.create({ device: 'cuda', cacheDir }), (e: Error) => {
    assert.match(e.message, /--device cuda/);
    assert.match(e.message, /CUDA execution provider/);
    assert.match(e.message, /libonnxruntime_providers_cuda\.so|no CUDA execution provider/);
    return true;
  });
});

test('--model DIR: a decoder export is discovered from its inputs, with or without config.json', async () => {
  const userDir = join(cacheDir, 'user-model');
  await mkdir(userDir);
  await copyFile(engine.modelPath, join(userDir, 'model.onnx'));
  const noConfig = await OnnxEngine.create({ modelDir: userDir, numBlocks: 64, eosTokenIds: [151645] });
  try {
    assert.deepEqual([noConfig.io.numLayers, noConfig.io.numKvHeads, noConfig.io.headDim], [2, 4, 16]);
    const prompt = randomTokens(20, 77);
    const a = await generate(engine, fresh('dir-ref', prompt), 4, alloc);
    const b = await generate(noConfig, fresh('dir-user', prompt), 4, new BlockAllocator(64));
    assert.deepEqual(b, a);
  } finally {
    await noConfig.close();
  }
  await assert.rejects(OnnxEngine.create({ modelDir: join(cacheDir, 'nowhere') }), /expected model\.onnx/);
});
