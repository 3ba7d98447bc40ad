import { mkdir, open, rename, readFile, stat, unlink } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Tokenizer } from '../../src/tokenizer/index.js';
import { buildDefaultModel, DEFAULT_MODEL, type DefaultModelSpec } from './default-model.js';
import type { ModelConfig } from './model-config.js';

export interface ModelFiles {
  dir: string;
  modelPath: string;
  config: ModelConfig;
}

/** `$KV_ROUTER_CACHE_DIR` or `~/.cache/kv-router`. */
export function cacheRoot(): string {
  return process.env.KV_ROUTER_CACHE_DIR || join(homedir(), '.cache', 'kv-router');
}

/**
 * The default model's files, built on first use into `<cacheRoot>/models/<name>-<version>/`.
 * Each file is written to a temporary name and renamed, and config.json goes last, so a
 * reader (or a concurrent builder) never sees a half-written model.
 */
export async function ensureDefaultModel(opts: { cacheDir?: string; tokenizer?: Tokenizer } = {}): Promise<ModelFiles> {
  const dir = join(opts.cacheDir ?? cacheRoot(), 'models', `${DEFAULT_MODEL.name}-${DEFAULT_MODEL.version}`);
  const modelPath = join(dir, 'model.onnx');
  const configPath = join(dir, 'config.json');
  const existing = await readConfig(configPath);
  if (existing && (await exists(modelPath))) return { dir, modelPath, config: existing };

  const tokenizer = opts.tokenizer ?? (await Tokenizer.loadDefault());
  const spec: DefaultModelSpec = { ...DEFAULT_MODEL, vocabSize: tokenizer.vocabSize };
  const config: ModelConfig = {
    name: spec.name,
    version: spec.version,
    numLayers: spec.numLayers,
    numKvHeads: spec.numHeads,
    headDim: spec.headDim,
    vocabSize: spec.vocabSize,
    eosTokenIds: tokenizer.eosTokenIds,
    hiddenSize: spec.hiddenSize,
    logits: 'last',
  };
  await mkdir(dir, { recursive: true });
  await writeAtomic(modelPath, buildDefaultModel(spec));
  await writeAtomic(configPath, [new TextEncoder().encode(JSON.stringify({ ...config, spec }, null, 2) + '\n')]);
  return { dir, modelPath, config };
}

/** Writes to a temporary name, syncs, renames: readers never see a half-written file. */
export async function writeAtomic(path: string, chunks: Uint8Array[]): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const fh = await open(tmp, 'w');
  try {
    for (const c of chunks) await fh.write(c);
    await fh.sync();
  } catch (e) {
    await fh.close();
    await unlink(tmp).catch(() => {});
    throw e;
  }
  await fh.close();
  await rename(tmp, path);
}

async function readConfig(path: string): Promise<ModelConfig | null> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as ModelConfig;
  } catch {
    return null;
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
