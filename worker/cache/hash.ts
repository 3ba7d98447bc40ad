import { createHash } from 'node:crypto';

/** The parent hash of a sequence's first block (vLLM's NONE_HASH role). */
export const ROOT_HASH = 0n;

/**
 * A block's hash: the first 8 bytes of SHA-256(parent hash as u64 BE ‖ token ids as u32 LE),
 * an unsigned 64-bit bigint. Chained through the parent, so equal hashes mean equal prefixes.
 */
export function hashBlock(parent: bigint | null, tokenIds: ArrayLike<number>): bigint {
  const buf = Buffer.allocUnsafe(8 + 4 * tokenIds.length);
  buf.writeBigUInt64BE(parent ?? ROOT_HASH, 0);
  for (let i = 0; i < tokenIds.length; i++) buf.writeUInt32LE(tokenIds[i]!, 8 + 4 * i);
  return createHash('sha256').update(buf).digest().readBigUInt64BE(0);
}

/** Hashes of every full block of `tokens` (at most `maxBlocks`), each chained to the one before. */
export function hashFullBlocks(tokens: number[], blockSize: number, maxBlocks = Infinity): bigint[] {
  const n = Math.min(Math.floor(tokens.length / blockSize), maxBlocks);
  const out: bigint[] = [];
  let parent: bigint | null = null;
  for (let i = 0; i < n; i++) {
    parent = hashBlock(parent, tokens.slice(i * blockSize, (i + 1) * blockSize));
    out.push(parent);
  }
  return out;
}
