// LoRA adapter files (PEFT layout, safetensors) and their merge into the default model's weights.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadLoraAdapter, mergeHook } from '../../worker/model/lora.js';
import { readSafetensors, writeSafetensors } from '../../worker/model/safetensors.js';

const concat = (c: Uint8Array[]) => Buffer.concat(c.map((x) => Buffer.from(x.buffer, x.byteOffset, x.byteLength)));

test('safetensors: round trip, aligned data, malformed files named', () => {
  const bytes = concat(writeSafetensors({ b: { shape: [1, 2], data: Float32Array.of(3, 4) }, a: { shape: [3], data: Float32Array.of(0, 1, 2) } }, { format: 'pt' }));
  assert.equal((8 + Number(bytes.readBigUInt64LE(0))) % 8, 0, 'data starts 8-byte aligned');
  const t = readSafetensors(bytes);
  assert.deepEqual([...t.get('a')!.data], [0, 1, 2]);
  assert.deepEqual(t.get('b')!.shape, [1, 2]);
  assert.throws(() => readSafetensors(bytes.subarray(0, 5)), /shorter than its 8-byte header/);
  assert.throws(() => readSafetensors(bytes.subarray(0, bytes.length - 4)), /tensor b: data_offsets/);
  const f16 = Buffer.from('{"x":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}}');
  const h = Buffer.alloc(8);
  h.writeBigUInt64LE(BigInt(f16.length));
  assert.throws(() => readSafetensors(Buffer.concat([h, f16, Buffer.alloc(2)])), /dtype F16 \(only F32/);
});

function adapterDir(cfg: object, tensors: Record<string, { shape: number[]; data: Float32Array }>): string {
  const dir = mkdtempSync(join(tmpdir(), 'kvr-lora-unit-'));
  writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify(cfg));
  writeFileSync(join(dir, 'adapter_model.safetensors'), concat(writeSafetensors(tensors)));
  return dir;
}

test('merge: W[in, out] += lora_alpha / r · (B·A)ᵀ, as PEFT merges into torch\'s [out, in]', async () => {
  // din 2, dout 3, r 1: A [1, 2], B [3, 1].
  const key = (ab: string) => `base_model.model.model.layers.0.self_attn.q_proj.lora_${ab}.weight`;
  const dir = adapterDir({ peft_type: 'LORA', r: 1, lora_alpha: 2 }, { [key('A')]: { shape: [1, 2], data: Float32Array.of(1, 2) }, [key('B')]: { shape: [3, 1], data: Float32Array.of(1, 10, 100) } });
  try {
    const m = mergeHook(await loadLoraAdapter(dir), dir);
    const w = new Float32Array(6);
    m.hook('layers.0.k_proj', w, 2, 3);
    assert.deepEqual([...w], [0, 0, 0, 0, 0, 0], 'other projections untouched');
    m.hook('layers.0.q_proj', w, 2, 3);
    // delta[i][o] = 2 · B[o] · A[i]
    assert.deepEqual([...w], [2, 20, 200, 4, 40, 400]);
    m.done();
    assert.throws(() => mergeHook({ rank: 1, alpha: 1, pairs: new Map([['layers.9.q_proj', { a: { shape: [1, 2], data: new Float32Array(2) }, b: { shape: [3, 1], data: new Float32Array(3) } }]]) }, 'x').done(), /the model has no layers\.9\.q_proj/);
    assert.throws(() => m.hook('layers.0.q_proj', new Float32Array(8), 2, 4), /is \[2 → 4\] in the model, the adapter's is \[2 → 3\]/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('loadLoraAdapter names what it cannot apply', async () => {
  const bad = async (cfg: object, tensors: Record<string, { shape: number[]; data: Float32Array }>, re: RegExp) => {
    const dir = adapterDir(cfg, tensors);
    try {
      await assert.rejects(loadLoraAdapter(dir), re);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  const A = 'base_model.model.model.layers.0.mlp.up_proj.lora_A.weight';
  await bad({ r: 0 }, {}, /r must be a positive integer/);
  await bad({ r: 1, peft_type: 'IA3' }, {}, /peft_type IA3 is not LORA/);
  await bad({ r: 1 }, { 'model.embed_tokens.lora_A.weight': { shape: [1, 1], data: new Float32Array(1) } }, /is not a projection of this model/);
  await bad({ r: 1 }, { [A]: { shape: [1, 4], data: new Float32Array(4) } }, /has lora_A only/);
  await bad({ r: 2 }, { [A]: { shape: [1, 4], data: new Float32Array(4) }, [A.replace('_A', '_B')]: { shape: [4, 1], data: new Float32Array(4) } }, /not \[r, in\] and \[out, r\] with r = 2/);
  await assert.rejects(loadLoraAdapter('/nonexistent-adapter'), /cannot read \/nonexistent-adapter\/adapter_config\.json/);
});
