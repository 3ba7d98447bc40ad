export {
  PrefixIndex,
  PromptKeys,
  PROVISIONAL,
  type SourceId,
  type LoraRef,
  type PrefixIndexOptions,
  type MatchOptions,
  type UnknownSourceCounts,
  type SourceMatch,
  type SourceStats,
  type SourceDump,
  type DumpNode,
} from './prefix-index.js';
