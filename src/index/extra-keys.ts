/**
 * What a BlockStored's `extra_keys` mean for the index.
 *
 * vLLM (vllm/v1/core/kv_cache_utils.py, generate_block_hash_extra_keys) hashes each
 * block with a tuple of extra keys, in this order: the LoRA name (every block of a
 * LoRA request), multimodal `(identifier, offset)` pairs (blocks covering an image),
 * the `cache_salt` (only the block starting at token 0), prompt-embeds digests (bytes).
 * vllm/distributed/kv_events.py BlockStored publishes them as `extra_keys`, one entry
 * per block (a tuple, or None when the block has none). Newer vLLM publishes typed
 * keys instead: tagged structs `{type: "lora", name}`, `{type: "cache_salt", salt}`,
 * `{type: "mm", ...}`, `{type: "prompt_embeds", hash}`, `{type: "legacy", value}`.
 * SGLang sends the salt in its own `cache_salt` field.
 *
 * The index keys a block by its tokens, its LoRA and, for a chain's first block, the
 * salt. Any other extra key (an image, prompt embeds, a kind we do not know) is
 * something a router cannot compute from the prompt's token ids, so it is folded into
 * that block's key: the block and everything chained to it are kept, but never
 * matched by a plain token prompt (never a wrong hit).
 */

export interface BlockExtras {
  /** The cache salt, when this block carries one. */
  salt: string | null;
  /** A canonical string of the keys the router cannot reproduce, or null. */
  opaque: string | null;
}

const NONE: BlockExtras = { salt: null, opaque: null };

/** Reads entry `j` of `extra_keys` (vLLM raw tuples or typed keys); bad shapes count as opaque. */
export function blockExtras(extraKeys: unknown, j: number, loraName: string | null): BlockExtras {
  if (extraKeys === undefined || extraKeys === null) return NONE;
  if (!Array.isArray(extraKeys)) return { salt: null, opaque: canonical(extraKeys) };
  const entry: unknown = extraKeys[j];
  if (entry === undefined || entry === null) return NONE;
  if (!Array.isArray(entry)) return { salt: null, opaque: canonical(entry) };
  let salt: string | null = null;
  let loraSeen = false;
  const rest: unknown[] = [];
  for (const k of entry) {
    if (typeof k === 'string') {
      // Raw form: the LoRA name comes first, the salt after the multimodal keys.
      if (!loraSeen && loraName !== null && k === loraName) loraSeen = true;
      else if (salt === null) salt = k;
      else rest.push(k);
    } else if (isTagged(k, 'lora') && typeof k.name === 'string') {
      loraSeen = true;
    } else if (isTagged(k, 'cache_salt') && typeof k.salt === 'string' && salt === null) {
      salt = k.salt;
    } else {
      rest.push(k);
    }
  }
  return { salt, opaque: rest.length === 0 ? null : canonical(rest) };
}

function isTagged(v: unknown, tag: string): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array) && (v as Record<string, unknown>).type === tag;
}

/** A stable string of a decoded msgpack value (object keys sorted, bytes as hex, bigints tagged). */
export function canonical(v: unknown): string {
  if (v === null || v === undefined) return 'nil';
  if (typeof v === 'bigint') return `i${v.toString()}`;
  if (typeof v === 'number') return `n${v}`;
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'boolean') return v ? 'T' : 'F';
  if (v instanceof Uint8Array) return `b${Buffer.from(v).toString('hex')}`;
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
      .join(',')}}`;
  }
  return `?${String(v)}`;
}
