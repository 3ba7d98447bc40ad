/**
 * Brute-force model of the prefix index: per source, a plain map from engine
 * hash to (token prefix, copies per medium) and a map of provisional prefixes.
 * Prefixes are strings "#salt|lora:t,t,t|lora:t,t,t…" ("" before the first "|"
 * when unsalted), so "held" is plain string equality. Sources exist only once added.
 */
import type { BlockHash, BlockStored, KVEventBatch } from '../../src/events/types.js';

type Lora = string | number | null;
const TIERS = ['GPU', 'CPU', 'DISK'];

export function loraTag(l: Lora): string {
  return l === null ? '-' : typeof l === 'number' ? `n${l}` : `s${l}`;
}

export function hashId(h: BlockHash): string {
  return typeof h === 'bigint' ? BigInt.asUintN(64, h).toString() : Buffer.from(h).toString('hex');
}

export function blockPart(lora: Lora, tokens: ArrayLike<number>, from: number, to: number): string {
  return `|${loraTag(lora)}:${Array.prototype.slice.call(tokens, from, to).join(',')}`;
}

export function saltTag(salt: string | null): string {
  return salt === null ? '' : `#${salt}`;
}

interface Entry {
  prefix: string;
  /** medium -> copies (vLLM stores and removes every copy of a hash). */
  media: Map<string, number>;
}

export class ModelSource {
  bs: number | null = null;
  hashes = new Map<string, Entry>();
  prov = new Map<string, number>();
  unknownParent = 0;
  unknownRemoval = 0;
  invalid = 0;

  /** prefix -> media holding it for real */
  held(): Map<string, Set<string>> {
    const out = new Map<string, Set<string>>();
    for (const e of this.hashes.values()) {
      let s = out.get(e.prefix);
      if (!s) out.set(e.prefix, (s = new Set()));
      for (const m of e.media.keys()) s.add(m);
    }
    return out;
  }
}

export class Model {
  sources = new Map<string, ModelSource>();
  unknown = { batches: 0, provisionalMarks: 0 };
  constructor(
    private readonly ttl: number,
    private readonly now: () => number,
  ) {}

  addSource(id: string): void {
    if (!this.sources.has(id)) this.sources.set(id, new ModelSource());
  }

  apply(id: string, b: KVEventBatch): void {
    const s = this.sources.get(id);
    if (!s) {
      this.unknown.batches++;
      return;
    }
    for (const ev of b.events) {
      if (ev.type === 'AllBlocksCleared') {
        s.hashes.clear();
        s.prov.clear();
      } else if (ev.type === 'BlockRemoved') {
        const m = ev.medium ?? 'GPU';
        for (const h of ev.block_hashes) {
          const e = s.hashes.get(hashId(h));
          if (!e || !e.media.has(m)) s.unknownRemoval++;
          else {
            const c = e.media.get(m)! - 1;
            if (c === 0) e.media.delete(m);
            else e.media.set(m, c);
            if (e.media.size === 0) s.hashes.delete(hashId(h));
          }
        }
      } else {
        const bs = ev.block_size;
        if (!Number.isInteger(bs) || bs <= 0 || ev.token_ids.length !== ev.block_hashes.length * bs) {
          s.invalid++;
          continue;
        }
        if (s.bs !== bs) {
          if (s.bs !== null && s.hashes.size !== 0) {
            s.invalid++;
            continue;
          }
          s.prov.clear();
          s.bs = bs;
        }
        let prefix = saltTag(storedSalt(ev));
        if (ev.parent_block_hash !== null) {
          const p = s.hashes.get(hashId(ev.parent_block_hash));
          if (!p) {
            s.unknownParent++;
            continue;
          }
          prefix = p.prefix;
        }
        const lora = ev.lora_name ?? ev.lora_id ?? null;
        const m = ev.medium ?? 'GPU';
        ev.block_hashes.forEach((h, j) => {
          prefix += blockPart(lora, ev.token_ids, j * bs, (j + 1) * bs);
          const e = s.hashes.get(hashId(h));
          if (e && e.prefix === prefix) e.media.set(m, (e.media.get(m) ?? 0) + 1);
          else s.hashes.set(hashId(h), { prefix, media: new Map([[m, 1]]) });
          s.prov.delete(prefix);
        });
      }
    }
  }

  clearSource(id: string): void {
    const s = this.sources.get(id);
    if (!s) return;
    s.hashes.clear();
    s.prov.clear();
    s.bs = null;
  }

  removeSource(id: string): void {
    this.sources.delete(id);
  }

  markProvisional(id: string, tokens: number[], bs: number, lora: Lora, salt: string | null = null): void {
    const s = this.sources.get(id);
    if (!s) {
      this.unknown.provisionalMarks++;
      return;
    }
    s.bs ??= bs;
    const held = s.held();
    let prefix = saltTag(salt);
    for (let b = 0; b + s.bs <= tokens.length; b += s.bs) {
      prefix += blockPart(lora, tokens, b, b + s.bs);
      if (!held.has(prefix)) s.prov.set(prefix, this.now() + this.ttl);
    }
  }

  private liveProv(s: ModelSource): Set<string> {
    const now = this.now();
    return new Set([...s.prov].filter(([, e]) => e > now).map(([p]) => p));
  }

  match(
    tokens: number[],
    lora: Lora,
    salt: string | null = null,
    maxTokens = Infinity,
  ): Map<string, { matchedTokens: number; byMedium: Record<string, number> }> {
    const out = new Map<string, { matchedTokens: number; byMedium: Record<string, number> }>();
    for (const [id, s] of this.sources) {
      const byMedium: Record<string, number> = {};
      let matchedTokens = 0;
      if (s.bs !== null) {
        const held = s.held();
        const prov = this.liveProv(s);
        let prefix = saltTag(salt);
        for (let b = 0; b + s.bs <= Math.min(tokens.length, maxTokens); b += s.bs) {
          prefix += blockPart(lora, tokens, b, b + s.bs);
          const media = held.get(prefix);
          const tier = media ? TIERS.find((t) => media.has(t)) : prov.has(prefix) ? 'provisional' : undefined;
          if (tier === undefined) break;
          byMedium[tier] = (byMedium[tier] ?? 0) + s.bs;
          matchedTokens += s.bs;
        }
      }
      out.set(id, { matchedTokens, byMedium });
    }
    return out;
  }

  stats(id: string) {
    const s = this.sources.get(id) ?? new ModelSource();
    const copies: Record<string, number> = {};
    for (const t of TIERS) {
      let n = 0;
      for (const e of s.hashes.values()) n += e.media.get(t) ?? 0;
      if (n !== 0) copies[t] = n;
    }
    return {
      blocks: s.hashes.size,
      copies,
      nodes: s.held().size,
      unknownParent: s.unknownParent,
      unknownRemoval: s.unknownRemoval,
      invalid: s.invalid,
      provisionalBlocks: this.liveProv(s).size,
      blockSize: s.bs,
    };
  }

  totalNodes(): number {
    const all = new Set<string>();
    for (const s of this.sources.values()) {
      for (const p of s.held().keys()) all.add(p);
      for (const p of this.liveProv(s)) all.add(p);
    }
    return all.size;
  }
}

/** The salt a BlockStored gives its chain: vLLM's extra_keys[0] (raw or typed), else SGLang's cache_salt. */
function storedSalt(ev: BlockStored): string | null {
  if (ev.parent_block_hash !== null) return null;
  const first = Array.isArray(ev.extra_keys) ? (ev.extra_keys[0] as unknown[] | null) : null;
  for (const k of first ?? []) {
    if (typeof k === 'string' && k !== ev.lora_name) return k;
    if (typeof k === 'object' && k !== null && (k as { type?: string }).type === 'cache_salt') return (k as { salt: string }).salt;
  }
  return ev.cache_salt ?? null;
}

/** Tokens, LoRA (of its last block) and salt of a prefix string. */
export function parsePrefix(prefix: string): { tokens: number[]; lora: Lora; salt: string | null } {
  const tokens: number[] = [];
  let lora: Lora = null;
  const parts = prefix.split('|');
  const salt = parts[0].startsWith('#') ? parts[0].slice(1) : null;
  for (const part of parts.slice(1)) {
    const [tag, toks] = part.split(':');
    lora = tag === '-' ? null : tag[0] === 'n' ? Number(tag.slice(1)) : tag.slice(1);
    if (toks) for (const t of toks.split(',')) tokens.push(Number(t));
  }
  return { tokens, lora, salt };
}
