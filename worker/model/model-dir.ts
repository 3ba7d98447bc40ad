import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseModelConfig, type ModelConfig } from './model-config.js';

export interface UserModel {
  dir: string;
  modelPath: string;
  /** What config.json says, if there is one; the engine completes it from the session's input metadata. */
  hints: Partial<ModelConfig>;
}

/** Usual file names of a decoder export (Optimum, transformers.js layouts), in order of preference. */
const CANDIDATES = ['model.onnx', 'decoder_model_merged.onnx', 'decoder_with_past_model.onnx', 'onnx/model.onnx', 'onnx/decoder_model_merged.onnx'];

/** `--model DIR`: a user's ONNX decoder export (model.onnx + optional config.json). */
export async function loadModelDir(dir: string): Promise<UserModel> {
  const present = new Set<string>();
  for (const sub of ['', 'onnx']) {
    const names = await readdir(join(dir, sub)).catch(() => [] as string[]);
    for (const n of names) present.add(sub ? `${sub}/${n}` : n);
  }
  let file = CANDIDATES.find((c) => present.has(c));
  if (!file) {
    const onnx = [...present].filter((n) => n.endsWith('.onnx'));
    if (onnx.length !== 1) {
      throw new Error(`--model ${dir}: expected model.onnx (or exactly one .onnx file), found ${onnx.length ? onnx.join(', ') : 'none'}`);
    }
    file = onnx[0];
  }
  let hints: Partial<ModelConfig> = {};
  if (present.has('config.json')) {
    hints = parseModelConfig(JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>);
  }
  return { dir, modelPath: join(dir, file), hints };
}
