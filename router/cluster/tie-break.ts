/**
 * Ties broken the same way on every replica: a rendezvous hash of the prompt's first tokens and the
 * worker, instead of a coin. Replicas see the same index (the same events) and, with shared load,
 * about the same load; a new prefix arriving on several replicas at the same instant (before any
 * of their provisional marks reached the others) then starts on one worker, not on one per replica.
 * Different prompts still spread: their heads hash differently.
 */
import { fmix32 } from '../../src/hash/fmix32.js';
const HEAD_TOKENS = 64;

/**
 * The prompt head's part of every candidate's rank (FNV-1a over its first tokens): computed once
 * per request, then tieRankFrom(head, source) per candidate costs only the source's characters.
 */
export function tieHead(tokens: ArrayLike<number>): number {
  let h = 0x811c9dc5;
  const n = Math.min(tokens.length, HEAD_TOKENS);
  for (let i = 0; i < n; i++) h = Math.imul(h ^ (tokens[i]! >>> 0), 0x01000193);
  return h;
}

/** The rank of `source` for a prompt whose head hashed to `head` (tieHead): tieRank without re-hashing the head. */
export function tieRankFrom(head: number, source: string): number {
  let h = head;
  for (let i = 0; i < source.length; i++) h = Math.imul(h ^ source.charCodeAt(i), 0x01000193);
  // Final avalanche (murmur3's fmix32): FNV alone leaves the low bits of the last characters weak.
  return fmix32(h) >>> 0;
}

export function tieRank(tokens: ArrayLike<number>, source: string): number {
  return tieRankFrom(tieHead(tokens), source);
}
