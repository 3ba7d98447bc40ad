/**
 * Prefix cache for rendered chat text. BPE is not compositional at arbitrary cuts, but an added
 * (special) token is split out of the text before normalization and pre-tokenization, so the ids of
 * `a + "<|im_start|>" + b` are ids(a) ++ ids("<|im_start|>" + b). We therefore cut the text only just
 * before each boundary token (Qwen's `<|im_start|>`), cache each segment's ids under a hash chained
 * over all segments before it (a segment's ids are only reused after the very same prefix), and
 * encode only the segments after the longest cached prefix. Proven against whole-text encoding on
 * random conversations in test/tokenizer/prefix-cache.test.ts.
 */
import { createHash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { TextEncoder } from './encoder.js';

export interface PrefixCacheOptions {
  /**
   * Token before which the text may be cut: it must be an added token of the vocabulary without
   * lstrip/rstrip/normalization (see `safeBoundary`); null turns the cache off.
   */
  boundary?: string | null;
  /** Bound of the cache in bytes (ids at 4 bytes each plus the key). */
  maxBytes?: number;
}

export interface PrefixCacheStats {
  hits: number;
  misses: number;
  /** Segments encoded vs reused since creation. */
  encodedSegments: number;
  reusedSegments: number;
  bytes: number;
}

/** Cuts `text` just before every `boundary` occurrence (the first segment may be empty-free prefix text). */
export function splitAtBoundary(text: string, boundary: string): string[] {
  const out: string[] = [];
  let start = 0;
  let at = text.indexOf(boundary, 1);
  while (at !== -1) {
    out.push(text.slice(start, at));
    start = at;
    at = text.indexOf(boundary, at + boundary.length);
  }
  out.push(text.slice(start));
  return out;
}

interface AddedTokenJson {
  content?: unknown;
  lstrip?: unknown;
  rstrip?: unknown;
  normalized?: unknown;
  single_word?: unknown;
}

/**
 * `candidate` if a tokenizer.json's added_tokens make it a safe cut (an added token matched as is:
 * no lstrip/rstrip eating the neighbouring text, not normalized, not single-word), else null.
 */
export function safeBoundary(tokenizerJson: { added_tokens?: AddedTokenJson[] }, candidate = '<|im_start|>'): string | null {
  const t = tokenizerJson.added_tokens?.find((a) => a.content === candidate);
  if (!t || t.lstrip === true || t.rstrip === true || t.normalized === true || t.single_word === true) return null;
  return candidate;
}

export class PrefixCachedEncoder {
  readonly boundary: string | null;
  private readonly cache: LRUCache<string, Uint32Array>;
  private postProcessorAdds: Promise<boolean> | undefined;
  private readonly counters = { hits: 0, misses: 0, encodedSegments: 0, reusedSegments: 0 };

  constructor(
    readonly encoder: TextEncoder,
    opts: PrefixCacheOptions = {},
  ) {
    this.boundary = opts.boundary === undefined ? '<|im_start|>' : opts.boundary;
    this.cache = new LRUCache<string, Uint32Array>({
      maxSize: opts.maxBytes ?? 64 * 1024 * 1024,
      sizeCalculation: (v, k) => Math.max(1, v.byteLength + k.length),
    });
  }

  /**
   * The ids of `text`, exactly as `encoder.encode(text, addSpecialTokens)`. Only texts with the
   * boundary token go through the cache, and `addSpecialTokens` only when the post-processor adds
   * nothing (Qwen3's): one that adds tokens would add them to each segment.
   */
  async encode(text: string, addSpecialTokens = false): Promise<number[]> {
    if (addSpecialTokens) this.postProcessorAdds ??= this.probePostProcessor();
    if (this.boundary === null || !text.includes(this.boundary) || (addSpecialTokens && (await this.postProcessorAdds))) {
      return this.encoder.encode(text, addSpecialTokens);
    }
    const segments = splitAtBoundary(text, this.boundary);
    const keys: string[] = [];
    let h = '';
    for (const s of segments) {
      h = createHash('sha256').update(h).update('\0').update(s).digest('base64');
      keys.push(h);
    }
    const ids: number[] = [];
    let i = 0;
    // The last segment is the new tail (the generation prompt): never worth caching on its own.
    for (; i < segments.length - 1; i++) {
      const hit = this.cache.get(keys[i]!);
      if (hit === undefined) break;
      for (const id of hit) ids.push(id);
    }
    this.counters.reusedSegments += i;
    if (i > 0) this.counters.hits++;
    else this.counters.misses++;
    const rest = await Promise.all(segments.slice(i).map((s) => this.encoder.encode(s, false)));
    for (let j = 0; j < rest.length; j++) {
      const segIds = rest[j]!;
      if (i + j < segments.length - 1) this.cache.set(keys[i + j]!, Uint32Array.from(segIds));
      for (const id of segIds) ids.push(id);
    }
    this.counters.encodedSegments += rest.length;
    return ids;
  }

  private async probePostProcessor(): Promise<boolean> {
    const [withSpecial, without] = await Promise.all([this.encoder.encode('a', true), this.encoder.encode('a', false)]);
    return withSpecial.length !== without.length;
  }

  stats(): PrefixCacheStats {
    return { ...this.counters, bytes: this.cache.calculatedSize };
  }
}
