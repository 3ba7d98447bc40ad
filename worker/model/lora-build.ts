/**
 * Writes a deterministic random LoRA adapter for the default model:
 * `npm run model:lora -- --out DIR [--seed 1] [--rank 8] [--alpha R] [--targets q_proj,v_proj]`,
 * then serve it with `kv-worker --engine onnx --lora NAME=DIR`.
 */
import { parseArgs } from 'node:util';
import { DEFAULT_MODEL } from './default-model.js';
import { generateLoraAdapter } from './lora.js';

const { values } = parseArgs({
  options: { out: { type: 'string' }, seed: { type: 'string' }, rank: { type: 'string' }, alpha: { type: 'string' }, targets: { type: 'string' } },
  strict: true,
});
const num = (v: string | undefined, what: string, fallback?: number) => {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`--${what} must be a number, got ${v}`);
  return n;
};
if (!values.out) {
  console.error('usage: npm run model:lora -- --out DIR [--seed 1] [--rank 8] [--alpha R] [--targets q_proj,v_proj]');
  process.exit(2);
}
await generateLoraAdapter(values.out, {
  seed: num(values.seed, 'seed', 1)!,
  rank: num(values.rank, 'rank'),
  alpha: num(values.alpha, 'alpha'),
  targets: values.targets?.split(',').map((s) => s.trim()).filter(Boolean),
  spec: DEFAULT_MODEL,
});
console.log(`${values.out}: adapter_config.json, adapter_model.safetensors`);
