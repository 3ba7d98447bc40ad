import type { Tokenizer, ChatMessage } from '../src/tokenizer/tokenizer.js';

export interface TokenizerFiles {
  tokenizerJson: string;
  tokenizerConfig?: string;
}

/** What to tokenize: a completion prompt, or chat messages rendered with the chat template. */
export type TokenizeInput =
  | { kind: 'text'; text: string }
  | { kind: 'chat'; messages: ChatMessage[]; extra?: Record<string, unknown> };

export interface TokenizeJob {
  id: number;
  files: TokenizerFiles | null;
  input: TokenizeInput;
}

/** `server`: the tokenizer itself failed (a 500), else the input could not be tokenized (a 400). */
export type TokenizeReply = { id: number; tokens: number[] } | { id: number; error: string; server?: boolean };

/** Exactly what the workers do: chat → template with the generation prompt → encode. */
export function tokenizeWith(tok: Tokenizer, input: TokenizeInput): number[] {
  if (input.kind === 'text') return tok.encode(input.text);
  const text = tok.applyChatTemplate(input.messages, { addGenerationPrompt: true, extra: input.extra });
  return tok.encode(text, { addSpecialTokens: false });
}
