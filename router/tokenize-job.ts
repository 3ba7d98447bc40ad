import type { Tokenizer } from '../src/tokenizer/tokenizer.js';
import type { ChatTemplateInput } from '../src/tokenizer/chat.js';
import type { FastTokenizer } from '../src/tokenizer/fast.js';

export interface TokenizerFiles {
  tokenizerJson: string;
  tokenizerConfig?: string;
}

/**
 * What to tokenize: a completion prompt, or a chat request's template inputs (from
 * `parseChat`, shared with the workers); chat fields left out take vLLM's defaults.
 */
export type TokenizeInput =
  | { kind: 'text'; text: string }
  /** Not a prompt: asks for the vocabulary size (one number), to check token-id prompts. */
  | { kind: 'vocab_size' }
  /** Not a prompt: decodes `ids` (the text comes back as its code points, in the tokens field). */
  | { kind: 'decode'; ids: number[] }
  | ({ kind: 'chat'; messages: ChatTemplateInput['messages'] } & Partial<Omit<ChatTemplateInput, 'messages'>>);

/** Tests only (never set from HTTP): make the thread die ('exit', 'throw') or never answer ('hang'). */
export type ThreadFaultForTest = 'exit' | 'throw' | 'hang';

export interface TokenizeJob {
  id: number;
  files: TokenizerFiles | null;
  input: TokenizeInput;
  faultForTest?: ThreadFaultForTest;
}

/**
 * `server`: the tokenizer itself failed (a 500), else the input could not be tokenized (a 400).
 * `ready`: the thread has booted and listens for jobs (sent once, first). `tokens` travel as a
 * transferred Uint32Array (no per-element structured clone of a long array).
 */
export type TokenizeReply = { ready: true } | { id: number; tokens: Uint32Array } | { id: number; error: string; server?: boolean };

/** A chat job as the template reads it, with the engines' defaults. */
function templateInput(input: Extract<TokenizeInput, { kind: 'chat' }>): ChatTemplateInput {
  return {
    messages: input.messages,
    tools: input.tools ?? null,
    documents: input.documents ?? null,
    addGenerationPrompt: input.addGenerationPrompt ?? true,
    continueFinalMessage: input.continueFinalMessage ?? false,
    kwargs: input.kwargs ?? {},
  };
}

/** Exactly what the workers do: chat → the shared renderer (src/tokenizer/chat.ts) → encode without added special tokens. */
export function tokenizeWith(tok: Tokenizer, input: TokenizeInput): number[] {
  if (input.kind === 'text') return tok.encode(input.text);
  if (input.kind === 'vocab_size') return [tok.vocabSize];
  if (input.kind === 'decode') return codePoints(tok.decode(input.ids));
  return tok.encodeChat(templateInput(input));
}

/** `tokenizeWith` through the fast encoder (native, prefix-cached): the same ids, asynchronously. */
export async function tokenizeFast(fast: FastTokenizer, input: TokenizeInput): Promise<number[]> {
  if (input.kind === 'text') return fast.encoder.encode(input.text, true);
  if (input.kind === 'vocab_size') return [fast.tokenizer.vocabSize];
  if (input.kind === 'decode') return codePoints(fast.tokenizer.decode(input.ids));
  const text = fast.tokenizer.renderChat(templateInput(input));
  return fast.encoder.encode(text, false);
}

function codePoints(text: string): number[] {
  return Array.from(text, (ch) => ch.codePointAt(0)!);
}
