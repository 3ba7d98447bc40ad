export {
  PrefixIndex,
  PROVISIONAL,
  type SourceId,
  type LoraRef,
  type PrefixIndexOptions,
  type SourceMatch,
  type SourceStats,
  type SourceDump,
  type DumpNode,
} from './prefix-index.js';
