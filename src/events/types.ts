/**
 * The KV-event data model, field for field as vLLM and SGLang define it.
 *
 * A block hash is an opaque engine key. On the wire it is an int (unsigned
 * 64-bit from vLLM, signed 64-bit from SGLang/older vLLM) or a 32-byte digest.
 * It never passes through a JS number: ints are bigint, digests Uint8Array.
 */
export type BlockHash = bigint | Uint8Array;

export interface BlockStored {
  type: 'BlockStored';
  block_hashes: BlockHash[];
  parent_block_hash: BlockHash | null;
  token_ids: number[];
  block_size: number;
  lora_id: number | null;
  medium: string | null;
  lora_name: string | null;
  /** Optional trailing fields (nil default); kept when present, never required. */
  extra_keys?: unknown;
  group_idx?: number | null;
  kv_cache_spec_kind?: string | null;
  kv_cache_spec_sliding_window?: number | null;
  locality?: unknown;
  ownership?: unknown;
  session_id?: string | null;
  /** SGLang only (array position of vLLM's lora_name). */
  cache_salt?: string | null;
}

export interface BlockRemoved {
  type: 'BlockRemoved';
  block_hashes: BlockHash[];
  medium: string | null;
  group_idx?: number | null;
  locality?: unknown;
  ownership?: unknown;
}

export interface AllBlocksCleared {
  type: 'AllBlocksCleared';
}

export type KVEvent = BlockStored | BlockRemoved | AllBlocksCleared;

export interface KVEventBatch {
  /** Seconds since the epoch, float64. */
  ts: number;
  events: KVEvent[];
  /** vLLM `data_parallel_rank`, SGLang `attn_dp_rank`; null when absent. */
  dp_rank: number | null;
}

/** A batch as it arrived on a stream: with its topic and sequence number. */
export interface SequencedBatch {
  topic: string;
  seq: bigint;
  batch: KVEventBatch;
}
