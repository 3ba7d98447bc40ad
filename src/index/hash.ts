/**
 * Block keys: MurmurHash3_x86_128 (Austin Appleby, public domain), the variant
 * built from 32-bit multiplies only, so it runs on V8's int32 fast path
 * (Math.imul, shifts) with no BigInt and no allocation. It passes SMHasher;
 * we keep 64 of its 128 output bits (h1, h2). Hashes built on 64-bit multiplies
 * (xxHash64, wyhash, FNV-64) would need BigInt or four imuls per multiply here,
 * and 32-bit ones collide at fleet scale (~1M keys).
 *
 * A key hashes the word sequence [parentLo, parentHi, loraLo, loraHi, ...tokens]
 * (token ids are 32-bit words as they are): the parent key chains the whole
 * prefix, the LoRA keeps adapters apart, and the length (finalisation step)
 * separates block sizes. Only departure from the reference: the four lanes start
 * from distinct constants instead of one seed.
 */
import { fmix32 } from '../hash/fmix32.js';

const C1 = 0x239b961b;
const C2 = 0xab0e9789;
const C3 = 0x38b34ae5;
const C4 = 0xa1e38b93;

/** 64-bit key as two unsigned 32-bit halves. */
export interface Key64 {
  lo: number;
  hi: number;
}

export const ROOT_LO = 0;
export const ROOT_HI = 0;

/**
 * Writes the key of `n` tokens from `tokens[start]` chained to parent (pLo, pHi)
 * under LoRA (lLo, lHi) into out[0] (lo) and out[1] (hi).
 */
export function chainKey(
  pLo: number,
  pHi: number,
  lLo: number,
  lHi: number,
  tokens: ArrayLike<number>,
  start: number,
  n: number,
  out: Uint32Array,
): void {
  // Distinct initial lanes (the original seeds all four equally).
  let h1 = C1 | 0;
  let h2 = C2 | 0;
  let h3 = C3 | 0;
  let h4 = C4 | 0;
  let k1 = 0;
  let k2 = 0;
  let k3 = 0;
  let k4 = 0;

  // The header is exactly one 16-byte block.
  k1 = Math.imul(pLo, C1); k1 = (k1 << 15) | (k1 >>> 17); h1 ^= Math.imul(k1, C2);
  h1 = (h1 << 19) | (h1 >>> 13); h1 = (h1 + h2) | 0; h1 = (Math.imul(h1, 5) + 0x561ccd1b) | 0;
  k2 = Math.imul(pHi, C2); k2 = (k2 << 16) | (k2 >>> 16); h2 ^= Math.imul(k2, C3);
  h2 = (h2 << 17) | (h2 >>> 15); h2 = (h2 + h3) | 0; h2 = (Math.imul(h2, 5) + 0x0bcaa747) | 0;
  k3 = Math.imul(lLo, C3); k3 = (k3 << 17) | (k3 >>> 15); h3 ^= Math.imul(k3, C4);
  h3 = (h3 << 15) | (h3 >>> 17); h3 = (h3 + h4) | 0; h3 = (Math.imul(h3, 5) + 0x96cd1c35) | 0;
  k4 = Math.imul(lHi, C4); k4 = (k4 << 18) | (k4 >>> 14); h4 ^= Math.imul(k4, C1);
  h4 = (h4 << 13) | (h4 >>> 19); h4 = (h4 + h1) | 0; h4 = (Math.imul(h4, 5) + 0x32ac3b17) | 0;

  const end = start + n;
  let i = start;
  for (; i + 4 <= end; i += 4) {
    k1 = Math.imul(tokens[i], C1); k1 = (k1 << 15) | (k1 >>> 17); h1 ^= Math.imul(k1, C2);
    h1 = (h1 << 19) | (h1 >>> 13); h1 = (h1 + h2) | 0; h1 = (Math.imul(h1, 5) + 0x561ccd1b) | 0;
    k2 = Math.imul(tokens[i + 1], C2); k2 = (k2 << 16) | (k2 >>> 16); h2 ^= Math.imul(k2, C3);
    h2 = (h2 << 17) | (h2 >>> 15); h2 = (h2 + h3) | 0; h2 = (Math.imul(h2, 5) + 0x0bcaa747) | 0;
    k3 = Math.imul(tokens[i + 2], C3); k3 = (k3 << 17) | (k3 >>> 15); h3 ^= Math.imul(k3, C4);
    h3 = (h3 << 15) | (h3 >>> 17); h3 = (h3 + h4) | 0; h3 = (Math.imul(h3, 5) + 0x96cd1c35) | 0;
    k4 = Math.imul(tokens[i + 3], C4); k4 = (k4 << 18) | (k4 >>> 14); h4 ^= Math.imul(k4, C1);
    h4 = (h4 << 13) | (h4 >>> 19); h4 = (h4 + h1) | 0; h4 = (Math.imul(h4, 5) + 0x32ac3b17) | 0;
  }
  const rem = end - i;
  if (rem >= 3) {
    k3 = Math.imul(tokens[i + 2], C3); k3 = (k3 << 17) | (k3 >>> 15); h3 ^= Math.imul(k3, C4);
  }
  if (rem >= 2) {
    k2 = Math.imul(tokens[i + 1], C2); k2 = (k2 << 16) | (k2 >>> 16); h2 ^= Math.imul(k2, C3);
  }
  if (rem >= 1) {
    k1 = Math.imul(tokens[i], C1); k1 = (k1 << 15) | (k1 >>> 17); h1 ^= Math.imul(k1, C2);
  }

  const len = (n + 4) * 4;
  h1 ^= len; h2 ^= len; h3 ^= len; h4 ^= len;
  h1 = (h1 + h2 + h3 + h4) | 0;
  h2 = (h2 + h1) | 0; h3 = (h3 + h1) | 0; h4 = (h4 + h1) | 0;
  h1 = fmix32(h1); h2 = fmix32(h2); h3 = fmix32(h3); h4 = fmix32(h4);
  h1 = (h1 + h2 + h3 + h4) | 0;
  h2 = (h2 + h1) | 0;
  out[0] = h1;
  out[1] = h2;
}

/**
 * Keys of blocks [from, to) of `bs` tokens each, chained from `root`, into
 * keys[2b] (lo), keys[2b + 1] (hi); block b's parent is keys[2b - 2..] (the root for b = 0).
 * The same function as chainKey, block after block, written out a second time on
 * purpose: V8 keeps type feedback per function, and chainKey also sees the event
 * path's arrays (holey, typed), which makes its loads polymorphic and it ~2x slower.
 * Here only prompts pass. test/index/hash.test.ts holds the two equal.
 */
export function chainKeys(
  rootLo: number,
  rootHi: number,
  lLo: number,
  lHi: number,
  tokens: ArrayLike<number>,
  bs: number,
  from: number,
  to: number,
  keys: Uint32Array,
): void {
  let pLo = from === 0 ? rootLo : keys[2 * from - 2];
  let pHi = from === 0 ? rootHi : keys[2 * from - 1];
  const len = (bs + 4) * 4;
  for (let b = from; b < to; b++) {
    let h1 = C1 | 0;
    let h2 = C2 | 0;
    let h3 = C3 | 0;
    let h4 = C4 | 0;
    let k1 = 0;
    let k2 = 0;
    let k3 = 0;
    let k4 = 0;
    k1 = Math.imul(pLo, C1); k1 = (k1 << 15) | (k1 >>> 17); h1 ^= Math.imul(k1, C2);
    h1 = (h1 << 19) | (h1 >>> 13); h1 = (h1 + h2) | 0; h1 = (Math.imul(h1, 5) + 0x561ccd1b) | 0;
    k2 = Math.imul(pHi, C2); k2 = (k2 << 16) | (k2 >>> 16); h2 ^= Math.imul(k2, C3);
    h2 = (h2 << 17) | (h2 >>> 15); h2 = (h2 + h3) | 0; h2 = (Math.imul(h2, 5) + 0x0bcaa747) | 0;
    k3 = Math.imul(lLo, C3); k3 = (k3 << 17) | (k3 >>> 15); h3 ^= Math.imul(k3, C4);
    h3 = (h3 << 15) | (h3 >>> 17); h3 = (h3 + h4) | 0; h3 = (Math.imul(h3, 5) + 0x96cd1c35) | 0;
    k4 = Math.imul(lHi, C4); k4 = (k4 << 18) | (k4 >>> 14); h4 ^= Math.imul(k4, C1);
    h4 = (h4 << 13) | (h4 >>> 19); h4 = (h4 + h1) | 0; h4 = (Math.imul(h4, 5) + 0x32ac3b17) | 0;

    const end = (b + 1) * bs;
    let i = b * bs;
    for (; i + 4 <= end; i += 4) {
      k1 = Math.imul(tokens[i], C1); k1 = (k1 << 15) | (k1 >>> 17); h1 ^= Math.imul(k1, C2);
      h1 = (h1 << 19) | (h1 >>> 13); h1 = (h1 + h2) | 0; h1 = (Math.imul(h1, 5) + 0x561ccd1b) | 0;
      k2 = Math.imul(tokens[i + 1], C2); k2 = (k2 << 16) | (k2 >>> 16); h2 ^= Math.imul(k2, C3);
      h2 = (h2 << 17) | (h2 >>> 15); h2 = (h2 + h3) | 0; h2 = (Math.imul(h2, 5) + 0x0bcaa747) | 0;
      k3 = Math.imul(tokens[i + 2], C3); k3 = (k3 << 17) | (k3 >>> 15); h3 ^= Math.imul(k3, C4);
      h3 = (h3 << 15) | (h3 >>> 17); h3 = (h3 + h4) | 0; h3 = (Math.imul(h3, 5) + 0x96cd1c35) | 0;
      k4 = Math.imul(tokens[i + 3], C4); k4 = (k4 << 18) | (k4 >>> 14); h4 ^= Math.imul(k4, C1);
      h4 = (h4 << 13) | (h4 >>> 19); h4 = (h4 + h1) | 0; h4 = (Math.imul(h4, 5) + 0x32ac3b17) | 0;
    }
    const rem = end - i;
    if (rem >= 3) {
      k3 = Math.imul(tokens[i + 2], C3); k3 = (k3 << 17) | (k3 >>> 15); h3 ^= Math.imul(k3, C4);
    }
    if (rem >= 2) {
      k2 = Math.imul(tokens[i + 1], C2); k2 = (k2 << 16) | (k2 >>> 16); h2 ^= Math.imul(k2, C3);
    }
    if (rem >= 1) {
      k1 = Math.imul(tokens[i], C1); k1 = (k1 << 15) | (k1 >>> 17); h1 ^= Math.imul(k1, C2);
    }

    h1 ^= len; h2 ^= len; h3 ^= len; h4 ^= len;
    h1 = (h1 + h2 + h3 + h4) | 0;
    h2 = (h2 + h1) | 0; h3 = (h3 + h1) | 0; h4 = (h4 + h1) | 0;
    h1 = fmix32(h1); h2 = fmix32(h2); h3 = fmix32(h3); h4 = fmix32(h4);
    h1 = (h1 + h2 + h3 + h4) | 0;
    h2 = (h2 + h1) | 0;
    keys[2 * b] = h1;
    keys[2 * b + 1] = h2;
    pLo = h1;
    pHi = h2;
  }
}

const EMPTY: number[] = [];
const scratch = new Uint32Array(2);
const loraCache = new Map<string | number, Key64>();
const NONE: Key64 = { lo: 0, hi: 0 };

/** 64-bit key of a LoRA reference (name, else id); none is (0, 0). Names and ids never collide by tag. */
export function loraKey(lora: string | number | null | undefined): Key64 {
  if (lora === null || lora === undefined) return NONE;
  let k = loraCache.get(lora);
  if (k !== undefined) return k;
  if (typeof lora === 'number') {
    chainKey(1, 0, lora >>> 0, Math.floor(lora / 0x1_0000_0000) >>> 0, EMPTY, 0, 0, scratch);
  } else {
    const codes = new Array<number>(lora.length);
    for (let i = 0; i < lora.length; i++) codes[i] = lora.charCodeAt(i);
    chainKey(2, 0, 0, 0, codes, 0, codes.length, scratch);
  }
  k = { lo: scratch[0], hi: scratch[1] };
  if (loraCache.size >= 4096) loraCache.clear();
  loraCache.set(lora, k);
  return k;
}

const saltCache = new Map<string, Key64>();
const ROOT: Key64 = { lo: ROOT_LO, hi: ROOT_HI };

/**
 * The key a salted chain's first block chains to, in place of the root: vLLM puts
 * `cache_salt` into the first block's hash only (the rest inherit it through the
 * parent), so a salt is a root of its own. No salt is the root (0, 0).
 */
export function saltRoot(salt: string | null | undefined): Key64 {
  if (salt === null || salt === undefined) return ROOT;
  let k = saltCache.get(salt);
  if (k !== undefined) return k;
  k = stringKey(4, salt);
  if (saltCache.size >= 4096) saltCache.clear();
  saltCache.set(salt, k);
  return k;
}

/** 64-bit key of a string under a tag (distinct tags never collide by construction). */
export function stringKey(tag: number, str: string): Key64 {
  const codes = new Array<number>(str.length);
  for (let i = 0; i < str.length; i++) codes[i] = str.charCodeAt(i);
  chainKey(tag, 0, 0, 0, codes, 0, codes.length, scratch);
  return { lo: scratch[0], hi: scratch[1] };
}

const b64 = new BigUint64Array(1);
const b32 = new Uint32Array(b64.buffer);
let byteWords = new Array<number>(16);

/**
 * 64-bit handle of an engine block hash, written to out[0] (lo), out[1] (hi).
 * Ints: their own 64 bits, taken mod 2^64 without allocating (a signed and an
 * unsigned spelling of the same bits are one hash). Bytes digests: hashed to 64
 * bits, since a source holds far too few blocks for a 64-bit collision to matter.
 */
export function engineKey(h: bigint | Uint8Array, out: Uint32Array): void {
  if (typeof h === 'bigint') {
    b64[0] = h;
    out[0] = b32[0];
    out[1] = b32[1];
    return;
  }
  const n = (h.length + 3) >>> 2;
  if (byteWords.length < n) byteWords = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const j = i * 4;
    byteWords[i] = (h[j] ?? 0) | ((h[j + 1] ?? 0) << 8) | ((h[j + 2] ?? 0) << 16) | ((h[j + 3] ?? 0) << 24);
  }
  chainKey(3, h.length, 0, 0, byteWords, 0, n, out);
}
