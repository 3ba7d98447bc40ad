export { Tokenizer, defaultTokenizerFiles } from './tokenizer.js';
export type { ChatMessage, TokenizerLoadOptions } from './tokenizer.js';
export { IncrementalDetokenizer } from './incremental-detokenizer.js';
export type { IncrementalDetokenizerOptions } from './incremental-detokenizer.js';
export { StopStringMatcher } from './stop-strings.js';
export { parseChat, cutAfterFinalMessage } from './chat.js';
export type { ChatParse, ChatTemplateInput } from './chat.js';
