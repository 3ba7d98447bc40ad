/**
 * LoRA adapters for the default model, in PEFT's layout: a directory with adapter_config.json
 * ({peft_type: "LORA", r, lora_alpha, target_modules, base_model_name_or_path}) and
 * adapter_model.safetensors holding, per adapted projection,
 *   base_model.model.model.layers.{l}.self_attn.{q,k,v,o}_proj.lora_A.weight   [r, in]
 *   base_model.model.model.layers.{l}.mlp.{gate,up,down}_proj.lora_B.weight    [out, r]
 * Merged into the weight as PEFT does, W' = W + (lora_alpha / r) · B·A (torch's [out, in]; our
 * MatMul weights are [in, out], so the delta goes in transposed).
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeAtomic } from './cache.js';
import type { DefaultModelSpec, WeightHook } from './default-model.js';
import { SeededNormal } from './random.js';
import { readSafetensors, writeSafetensors, type F32Tensor } from './safetensors.js';

const ATTN = ['q_proj', 'k_proj', 'v_proj', 'o_proj'];
const MLP = ['gate_proj', 'up_proj', 'down_proj'];
const KEY = /^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$/;

export interface LoraAdapter {
  rank: number;
  alpha: number;
  /** Our weight name (`layers.{l}.q_proj`) → its low-rank pair. */
  pairs: Map<string, { a: F32Tensor; b: F32Tensor }>;
}

function peftKey(layer: number, proj: string, ab: 'A' | 'B'): string {
  return `base_model.model.model.layers.${layer}.${ATTN.includes(proj) ? 'self_attn' : 'mlp'}.${proj}.lora_${ab}.weight`;
}

/** Reads an adapter directory; anything it cannot apply is an error naming the file and key. */
export async function loadLoraAdapter(dir: string): Promise<LoraAdapter> {
  const cfgPath = join(dir, 'adapter_config.json');
  const wPath = join(dir, 'adapter_model.safetensors');
  let cfg: Record<string, unknown>;
  try {
    cfg = JSON.parse(await readFile(cfgPath, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`LoRA adapter ${dir}: cannot read ${cfgPath}: ${(e as Error).message}`);
  }
  const rank = cfg.r;
  const alpha = cfg.lora_alpha ?? rank;
  if (!Number.isInteger(rank) || (rank as number) <= 0) throw new Error(`LoRA adapter ${dir}: adapter_config.json r must be a positive integer`);
  if (typeof alpha !== 'number' || !Number.isFinite(alpha)) throw new Error(`LoRA adapter ${dir}: adapter_config.json lora_alpha must be a number`);
  if (cfg.peft_type !== undefined && cfg.peft_type !== 'LORA') throw new Error(`LoRA adapter ${dir}: peft_type ${String(cfg.peft_type)} is not LORA`);
  let tensors: Map<string, F32Tensor>;
  try {
    tensors = readSafetensors(await readFile(wPath));
  } catch (e) {
    throw new Error(`LoRA adapter ${dir}: ${wPath}: ${(e as Error).message}`);
  }
  const halves = new Map<string, { a?: F32Tensor; b?: F32Tensor }>();
  for (const [key, t] of tensors) {
    const m = KEY.exec(key);
    if (!m || !(m[2] === 'self_attn' ? ATTN : MLP).includes(m[3]!)) throw new Error(`LoRA adapter ${dir}: tensor ${key} is not a projection of this model (expected ${peftKey(0, 'q_proj', 'A')} and the like)`);
    const name = `layers.${m[1]}.${m[3]}`;
    const h = halves.get(name) ?? {};
    if (m[4] === 'A') h.a = t;
    else h.b = t;
    halves.set(name, h);
  }
  const pairs = new Map<string, { a: F32Tensor; b: F32Tensor }>();
  for (const [name, h] of halves) {
    if (!h.a || !h.b) throw new Error(`LoRA adapter ${dir}: ${name} has lora_${h.a ? 'A' : 'B'} only`);
    if (h.a.shape.length !== 2 || h.a.shape[0] !== rank || h.b.shape.length !== 2 || h.b.shape[1] !== rank) {
      throw new Error(`LoRA adapter ${dir}: ${name}: lora_A ${h.a.shape.join('x')} and lora_B ${h.b.shape.join('x')} are not [r, in] and [out, r] with r = ${String(rank)}`);
    }
    pairs.set(name, { a: h.a, b: h.b });
  }
  if (pairs.size === 0) throw new Error(`LoRA adapter ${dir}: ${wPath} holds no lora_A/lora_B weights`);
  return { rank: rank as number, alpha, pairs };
}

/**
 * The WeightHook that merges `adapter` into the default model as it is built; `done()` then
 * checks that every adapted projection existed with the adapter's shapes.
 */
export function mergeHook(adapter: LoraAdapter, where: string): { hook: WeightHook; done: () => void } {
  const used = new Set<string>();
  const scale = adapter.alpha / adapter.rank;
  const r = adapter.rank;
  const hook: WeightHook = (name, w, din, dout) => {
    const p = adapter.pairs.get(name);
    if (!p) return;
    if (p.a.shape[1] !== din || p.b.shape[0] !== dout) {
      throw new Error(`LoRA adapter ${where}: ${name} is [${din} → ${dout}] in the model, the adapter's is [${p.a.shape[1]} → ${p.b.shape[0]}]`);
    }
    used.add(name);
    const A = p.a.data;
    const B = p.b.data;
    for (let i = 0; i < din; i++) {
      for (let o = 0; o < dout; o++) {
        let s = 0;
        for (let k = 0; k < r; k++) s += B[o * r + k]! * A[k * din + i]!;
        w[i * dout + o] += scale * s;
      }
    }
  };
  const done = () => {
    const missing = [...adapter.pairs.keys()].filter((n) => !used.has(n));
    if (missing.length) throw new Error(`LoRA adapter ${where}: the model has no ${missing.join(', ')}`);
  };
  return { hook, done };
}

export interface GenerateLoraOptions {
  seed: number;
  rank?: number;
  alpha?: number;
  /** Projections to adapt (default q_proj, v_proj, as PEFT's default for Llama). */
  targets?: string[];
  /** The base model's shape (the default model's spec). */
  spec: Pick<DefaultModelSpec, 'numLayers' | 'hiddenSize' | 'ffnSize' | 'name' | 'version'>;
}

/**
 * Writes a deterministic random adapter (a pure function of the options) into `dir`. Unlike a
 * freshly initialised PEFT adapter (B = 0), both halves are random, so the adapter changes the output.
 */
export async function generateLoraAdapter(dir: string, o: GenerateLoraOptions): Promise<void> {
  const rank = o.rank ?? 8;
  const alpha = o.alpha ?? rank;
  const targets = o.targets ?? ['q_proj', 'v_proj'];
  for (const t of targets) if (![...ATTN, ...MLP].includes(t)) throw new Error(`unknown LoRA target ${t} (known: ${[...ATTN, ...MLP].join(', ')})`);
  const { numLayers: L, hiddenSize: D, ffnSize: F } = o.spec;
  const rnd = new SeededNormal(o.seed);
  // Each delta element gets about the base weights' spread (1/sqrt(in)): a visible change, not noise.
  const tensors: Record<string, F32Tensor> = {};
  for (let l = 0; l < L; l++) {
    for (const proj of targets) {
      const din = proj === 'down_proj' ? F : D;
      const dout = proj === 'gate_proj' || proj === 'up_proj' ? F : D;
      const std = Math.sqrt(1 / Math.sqrt(din) / Math.sqrt(rank) / (alpha / rank));
      tensors[peftKey(l, proj, 'A')] = { shape: [rank, din], data: rnd.tensor(rank * din, std) };
      tensors[peftKey(l, proj, 'B')] = { shape: [dout, rank], data: rnd.tensor(dout * rank, std) };
    }
  }
  const config = {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    r: rank,
    lora_alpha: alpha,
    lora_dropout: 0,
    bias: 'none',
    target_modules: targets,
    base_model_name_or_path: `${o.spec.name}-${o.spec.version}`,
    seed: o.seed,
  };
  await mkdir(dir, { recursive: true });
  await writeAtomic(join(dir, 'adapter_model.safetensors'), writeSafetensors(tensors, { format: 'pt' }));
  await writeAtomic(join(dir, 'adapter_config.json'), [new TextEncoder().encode(JSON.stringify(config, null, 2) + '\n')]);
}
