import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Tokenizer } from '../src/tokenizer/index.js';
import type { WorkerConfig } from './config.js';

/** `--tokenizer FILE`, else the model dir's tokenizer.json, else the default (Qwen3's); tokenizer_config.json next to it when present. */
export async function loadWorkerTokenizer(cfg: Pick<WorkerConfig, 'tokenizer' | 'model'>): Promise<Tokenizer> {
  let file = cfg.tokenizer;
  if (file === null && cfg.model !== null && existsSync(join(cfg.model, 'tokenizer.json'))) file = join(cfg.model, 'tokenizer.json');
  if (file === null) return Tokenizer.loadDefault();
  if (!existsSync(file)) throw new Error(`tokenizer file not found: ${file}`);
  const config = join(dirname(file), 'tokenizer_config.json');
  return Tokenizer.load({ tokenizerJson: file, tokenizerConfig: existsSync(config) ? config : undefined });
}
