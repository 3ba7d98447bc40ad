/**
 * The encode backend: Hugging Face's native `tokenizers` binding (Rust, off the JS thread) where it
 * loads, else the pure-JS `@huggingface/tokenizers` held by `Tokenizer`. Both give identical ids
 * (test/tokenizer/encoder.test.ts); the choice is logged once per load.
 */
import { createRequire } from 'node:module';
import type { Tokenizer } from './tokenizer.js';
import { loggerFromEnv } from '../log/logger.js';

export type EncoderBackend = 'native' | 'js';

export interface TextEncoder {
  readonly backend: EncoderBackend;
  /** Token ids of `text`; `addSpecialTokens` as in HF (Qwen3's post-processor adds none either way). */
  encode(text: string, addSpecialTokens: boolean): Promise<number[]>;
}

interface NativeTokenizer {
  encode(text: string, pair: null, opts: { addSpecialTokens: boolean }): Promise<{ getIds(): number[] }>;
}
interface NativeModule {
  Tokenizer: { fromFile(path: string): NativeTokenizer };
}

/** The pure-JS backend: the `Tokenizer`'s own encode. */
export function jsEncoder(tok: Tokenizer): TextEncoder {
  return {
    backend: 'js',
    encode: async (text, addSpecialTokens) => tok.encode(text, { addSpecialTokens }),
  };
}

/** The native binding for `tokenizerJson`, or the reason it does not load. */
export function nativeEncoder(tokenizerJson: string): TextEncoder | Error {
  try {
    const require = createRequire(import.meta.url);
    const mod = require('tokenizers') as NativeModule;
    const native = mod.Tokenizer.fromFile(tokenizerJson);
    return {
      backend: 'native',
      encode: async (text, addSpecialTokens) => (await native.encode(text, null, { addSpecialTokens })).getIds(),
    };
  } catch (e) {
    return e as Error;
  }
}

/**
 * Native where it loads (unless `prefer` is 'js'), else JS. `log` receives one line naming the
 * backend in use (and why the native one is not).
 */
export function pickEncoder(
  tok: Tokenizer,
  tokenizerJson: string,
  opts: { prefer?: EncoderBackend; log?: (line: string) => void } = {},
): TextEncoder {
  const log = opts.log ?? ((line: string) => loggerFromEnv('tokenizer').info(line));
  if (opts.prefer !== 'js') {
    const n = nativeEncoder(tokenizerJson);
    if (!(n instanceof Error)) {
      log(`tokenizer: native (tokenizers, Rust) for ${tokenizerJson}`);
      return n;
    }
    log(`tokenizer: pure-JS (@huggingface/tokenizers) for ${tokenizerJson}; the native one did not load: ${n.message}`);
  } else {
    log(`tokenizer: pure-JS (@huggingface/tokenizers) for ${tokenizerJson} (asked for)`);
  }
  return jsEncoder(tok);
}
