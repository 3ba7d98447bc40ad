import { createHash } from 'node:crypto';

/** The parent hash of a sequence's first block (vLLM's NONE_HASH role). */
export const ROOT_HASH = 0n;

/**
 * A block's hash: the first 8 bytes of SHA-256(parent hash as u64 BE ‖ token ids as u32 LE
 * [‖ salt length u32 LE ‖ salt UTF-8]), an unsigned 64-bit bigint. Chained through the parent,
 * so equal hashes mean equal prefixes. `salt` is the request's cache_salt, given for the first
 * block only: vLLM (kv_cache_utils.generate_block_hash_extra_keys) adds the salt to the extra
 * keys of the block starting at token 0, and the rest inherit it through the chain.
 */
export function hashBlock(parent: bigint | null, tokenIds: ArrayLike<number>, salt: string | null = null): bigint {
  const saltBytes = salt === null ? null : Buffer.from(salt, 'utf8');
  const buf = Buffer.allocUnsafe(8 + 4 * tokenIds.length + (saltBytes === null ? 0 : 4 + saltBytes.length));
  buf.writeBigUInt64BE(parent ?? ROOT_HASH, 0);
  for (let i = 0; i < tokenIds.length; i++) buf.writeUInt32LE(tokenIds[i]!, 8 + 4 * i);
  if (saltBytes !== null) {
    const at = 8 + 4 * tokenIds.length;
    buf.writeUInt32LE(saltBytes.length, at);
    saltBytes.copy(buf, at + 4);
  }
  return createHash('sha256').update(buf).digest().readBigUInt64BE(0);
}

/**
 * The extra keys of block `k` of a request, as vLLM publishes them in BlockStored.extra_keys
 * (one entry per block: a tuple, here an array, or null): the salt on block 0 only.
 */
export function blockExtraKeys(k: number, salt: string | null): unknown[] | null {
  return k === 0 && salt !== null ? [salt] : null;
}

/** Hashes of every full block of `tokens` (at most `maxBlocks`), each chained to the one before; the salt enters block 0. */
export function hashFullBlocks(tokens: number[], blockSize: number, maxBlocks = Infinity, salt: string | null = null): bigint[] {
  const n = Math.min(Math.floor(tokens.length / blockSize), maxBlocks);
  const out: bigint[] = [];
  let parent: bigint | null = null;
  for (let i = 0; i < n; i++) {
    parent = hashBlock(parent, tokens.slice(i * blockSize, (i + 1) * blockSize), i === 0 ? salt : null);
    out.push(parent);
  }
  return out;
}
