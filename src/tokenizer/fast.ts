/** A tokenizer plus its fast prompt encoder (native where it loads, with the rendered-chat prefix cache). */
import { Tokenizer, type TokenizerLoadOptions } from './tokenizer.js';
import { pickEncoder, type EncoderBackend } from './encoder.js';
import { readFile } from 'node:fs/promises';
import { PrefixCachedEncoder, safeBoundary } from './prefix-cache.js';

export interface FastTokenizer {
  tokenizer: Tokenizer;
  encoder: PrefixCachedEncoder;
}

export interface FastTokenizerOptions {
  prefer?: EncoderBackend;
  cacheBytes?: number;
  log?: (line: string) => void;
}

export async function loadFastTokenizer(files: TokenizerLoadOptions, opts: FastTokenizerOptions = {}): Promise<FastTokenizer> {
  const tokenizer = await Tokenizer.load(files);
  // The cache cuts only before a verified added token; a vocabulary without one encodes whole texts.
  const boundary = safeBoundary(JSON.parse(await readFile(files.tokenizerJson, 'utf8')) as object);
  const encoder = new PrefixCachedEncoder(pickEncoder(tokenizer, files.tokenizerJson, opts), { maxBytes: opts.cacheBytes, boundary });
  return { tokenizer, encoder };
}
