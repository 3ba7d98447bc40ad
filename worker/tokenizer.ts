import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { defaultTokenizerFiles, Tokenizer, type TokenizerLoadOptions } from '../src/tokenizer/index.js';
import type { WorkerConfig } from './config.js';
import { cacheRoot, writeAtomic } from './model/cache.js';

/** `--tokenizer FILE`, else the model dir's tokenizer.json, else the default (Qwen3's); tokenizer_config.json next to it when present. */
export function tokenizerFilesOf(cfg: Pick<WorkerConfig, 'tokenizer' | 'model'>): TokenizerLoadOptions {
  let file = cfg.tokenizer;
  if (file === null && cfg.model !== null && existsSync(join(cfg.model, 'tokenizer.json'))) file = join(cfg.model, 'tokenizer.json');
  if (file === null) return defaultTokenizerFiles();
  if (!existsSync(file)) throw new Error(`tokenizer file not found: ${file}`);
  const config = join(dirname(file), 'tokenizer_config.json');
  return { tokenizerJson: file, tokenizerConfig: existsSync(config) ? config : undefined };
}

export async function loadWorkerTokenizer(cfg: Pick<WorkerConfig, 'tokenizer' | 'model'>): Promise<Tokenizer> {
  return Tokenizer.load(tokenizerFilesOf(cfg));
}

/** What the engine needs from the tokenizer. */
export interface TokenizerFacts {
  eosTokenIds: number[];
  vocabSize: number;
}

/**
 * The engine's tokenizer facts, cached under `<cacheRoot>/tokenizer-facts/` by the files' path,
 * size and mtime: building a tokenizer costs about a second of CPU, and the scheduler process
 * needs only these two facts.
 */
export async function loadTokenizerFacts(cfg: Pick<WorkerConfig, 'tokenizer' | 'model'>): Promise<TokenizerFacts> {
  const files = tokenizerFilesOf(cfg);
  const h = createHash('sha1');
  for (const f of [files.tokenizerJson, files.tokenizerConfig]) {
    if (f === undefined) continue;
    const s = await stat(f);
    h.update(`${f}\0${s.size}\0${s.mtimeMs}\0`);
  }
  const path = join(cacheRoot(), 'tokenizer-facts', `${h.digest('hex').slice(0, 20)}.json`);
  try {
    const v = JSON.parse(await readFile(path, 'utf8')) as Partial<TokenizerFacts>;
    if (Array.isArray(v.eosTokenIds) && v.eosTokenIds.every(Number.isInteger) && Number.isInteger(v.vocabSize)) {
      return { eosTokenIds: v.eosTokenIds, vocabSize: v.vocabSize! };
    }
  } catch {
    // Not cached yet (or unreadable): build it.
  }
  const t = await Tokenizer.load(files);
  const facts: TokenizerFacts = { eosTokenIds: t.eosTokenIds, vocabSize: t.vocabSize };
  try {
    await mkdir(dirname(path), { recursive: true });
    await writeAtomic(path, [new TextEncoder().encode(JSON.stringify(facts))]);
  } catch {
    // A read-only cache only costs the next start a tokenizer build.
  }
  return facts;
}
