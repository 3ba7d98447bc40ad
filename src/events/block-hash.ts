import type { BlockHash } from './types.js';

/** A value usable as a Map key with value semantics (bigints compare by value). */
export type BlockHashKey = bigint | string;

export function blockHashKey(h: BlockHash): BlockHashKey {
  return typeof h === 'bigint' ? h : bytesToHex(h);
}

/** Decimal for ints (sign kept), "0x…" hex for bytes: the JSON form `kv-events tail --json` prints. */
export function blockHashToString(h: BlockHash): string {
  return typeof h === 'bigint' ? h.toString(10) : bytesToHex(h);
}

/** Inverse of blockHashToString. */
export function blockHashFromString(s: string): BlockHash {
  if (s.startsWith('0x')) return Uint8Array.from(Buffer.from(s.slice(2), 'hex'));
  return BigInt(s);
}

/** A short form for human output: last 8 hex digits of the unsigned 64-bit view, or of the digest. */
export function shortBlockHash(h: BlockHash): string {
  if (typeof h === 'bigint') return BigInt.asUintN(64, h).toString(16).padStart(16, '0').slice(-8);
  return bytesToHex(h).slice(-8);
}

export function blockHashEquals(a: BlockHash | null, b: BlockHash | null): boolean {
  if (a === null || b === null) return a === b;
  return blockHashKey(a) === blockHashKey(b);
}

function bytesToHex(b: Uint8Array): string {
  return '0x' + Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
}
