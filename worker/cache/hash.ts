import { createHash } from 'node:crypto';

/** The parent hash of a sequence's first block (vLLM's NONE_HASH role). */
export const ROOT_HASH = 0n;

/** Length words of a LoRA name carry this bit: an adapter name never hashes like a salt. */
const LORA_TAG = 0x8000_0000;

/**
 * A block's hash: the first 8 bytes of SHA-256(parent hash as u64 BE ‖ token ids as u32 LE
 * [‖ (LoRA name length | 2^31) u32 LE ‖ LoRA name UTF-8] [‖ salt length u32 LE ‖ salt UTF-8]),
 * an unsigned 64-bit bigint. Chained through the parent, so equal hashes mean equal prefixes.
 * The extra keys follow vLLM (kv_cache_utils.generate_block_hash_extra_keys): the LoRA name
 * (lora_request.lora_name) first, on every block of an adapter's request; the request's
 * cache_salt on the block starting at token 0 only (the rest inherit it through the chain).
 * vLLM hashes them as an untyped tuple (an adapter "x" and a salt "x" would collide on block 0);
 * the tag keeps them apart here.
 */
export function hashBlock(parent: bigint | null, tokenIds: ArrayLike<number>, salt: string | null = null, lora: string | null = null): bigint {
  const loraBytes = lora === null ? null : Buffer.from(lora, 'utf8');
  const saltBytes = salt === null ? null : Buffer.from(salt, 'utf8');
  const size = 8 + 4 * tokenIds.length + (loraBytes === null ? 0 : 4 + loraBytes.length) + (saltBytes === null ? 0 : 4 + saltBytes.length);
  const buf = Buffer.allocUnsafe(size);
  buf.writeBigUInt64BE(parent ?? ROOT_HASH, 0);
  for (let i = 0; i < tokenIds.length; i++) buf.writeUInt32LE(tokenIds[i]!, 8 + 4 * i);
  let at = 8 + 4 * tokenIds.length;
  if (loraBytes !== null) {
    buf.writeUInt32LE((loraBytes.length | LORA_TAG) >>> 0, at);
    loraBytes.copy(buf, at + 4);
    at += 4 + loraBytes.length;
  }
  if (saltBytes !== null) {
    buf.writeUInt32LE(saltBytes.length, at);
    saltBytes.copy(buf, at + 4);
  }
  return createHash('sha256').update(buf).digest().readBigUInt64BE(0);
}

/**
 * The extra keys of block `k` of a request, as vLLM publishes them in BlockStored.extra_keys
 * (one entry per block: a tuple, here an array, or null): the LoRA name on every block of an
 * adapter's request, then the salt on block 0 only.
 */
export function blockExtraKeys(k: number, salt: string | null, lora: string | null = null): unknown[] | null {
  const keys: string[] = [];
  if (lora !== null) keys.push(lora);
  if (k === 0 && salt !== null) keys.push(salt);
  return keys.length > 0 ? keys : null;
}

/** Hashes of every full block of `tokens` (at most `maxBlocks`), each chained to the one before; the salt enters block 0, the LoRA every block. */
export function hashFullBlocks(tokens: number[], blockSize: number, maxBlocks = Infinity, salt: string | null = null, lora: string | null = null): bigint[] {
  const n = Math.min(Math.floor(tokens.length / blockSize), maxBlocks);
  const out: bigint[] = [];
  let parent: bigint | null = null;
  for (let i = 0; i < n; i++) {
    parent = hashBlock(parent, tokens.slice(i * blockSize, (i + 1) * blockSize), i === 0 ? salt : null, lora);
    out.push(parent);
  }
  return out;
}
