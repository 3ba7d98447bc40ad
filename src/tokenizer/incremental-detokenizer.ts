import type { Tokenizer } from './tokenizer.js';
import { StopStringMatcher } from './stop-strings.js';

export interface IncrementalDetokenizerOptions {
  skipSpecialTokens?: boolean;
  /** Stop strings: output ends before the first one found; it is not emitted. */
  stop?: string[];
  /** The prompt's ids; its last few tokens give the decoder context (leading-space rules of some tokenizers). */
  promptIds?: number[];
}

/** How many earlier tokens are re-decoded for context, as vLLM and TGI do. */
const CONTEXT_TOKENS = 5;

/**
 * Streams text from generated token ids. Text is emitted only once complete: a token that
 * ends in the middle of a UTF-8 character (the decode ends in U+FFFD) waits for the next
 * one; text that may be the start of a stop string is held until it cannot be.
 */
export class IncrementalDetokenizer {
  private readonly ids: number[];
  private prefixOffset: number;
  private readOffset: number;
  private readonly matcher: StopStringMatcher;
  private readonly skipSpecial: boolean;
  /** The stop string that ended the output, if any. */
  stoppedBy: string | null = null;

  constructor(
    private readonly tokenizer: Pick<Tokenizer, 'decode'>,
    opts: IncrementalDetokenizerOptions = {},
  ) {
    const ctx = (opts.promptIds ?? []).slice(-CONTEXT_TOKENS);
    this.ids = [...ctx];
    this.prefixOffset = 0;
    this.readOffset = ctx.length;
    this.matcher = new StopStringMatcher(opts.stop ?? []);
    this.skipSpecial = opts.skipSpecialTokens ?? true;
  }

  get stopped(): boolean {
    return this.stoppedBy !== null;
  }

  /** Adds generated ids; returns the newly final text (possibly empty). */
  push(ids: number | number[]): string {
    if (this.stopped) return '';
    for (const id of typeof ids === 'number' ? [ids] : ids) this.ids.push(id);
    const prefixText = this.decode(this.prefixOffset, this.readOffset);
    const fullText = this.decode(this.prefixOffset, this.ids.length);
    if (fullText.length <= prefixText.length || fullText.endsWith('\uFFFD')) return '';
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    return this.emit(fullText.slice(prefixText.length));
  }

  /** At the end of generation: everything not yet emitted (an unfinished character decodes as U+FFFD here, as a full decode would). */
  finish(): string {
    if (this.stopped) return '';
    const prefixText = this.decode(this.prefixOffset, this.readOffset);
    const fullText = this.decode(this.prefixOffset, this.ids.length);
    this.prefixOffset = this.readOffset = this.ids.length;
    const text = this.emit(fullText.slice(prefixText.length));
    return this.stopped ? text : text + this.matcher.flush();
  }

  private emit(text: string): string {
    const r = this.matcher.push(text);
    if (r.stop !== null) this.stoppedBy = r.stop;
    return r.text;
  }

  private decode(from: number, to: number): string {
    if (to <= from) return '';
    return this.tokenizer.decode(this.ids.slice(from, to), { skipSpecialTokens: this.skipSpecial });
  }
}
