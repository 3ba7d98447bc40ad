import type { BlockRemoved, BlockStored, KVEventBatch } from '../events/types.js';
import { chainKey, engineKey, loraKey, saltRoot, stringKey } from './hash.js';
import { blockExtras } from './extra-keys.js';
import { ExpiryQueue } from './expiry-queue.js';
import { K_HI, K_LO, NodeStore } from './node-store.js';
import { SourceState, type SourceId } from './source-state.js';
import { dumpSource, type SourceDump } from './dump.js';
import { PromptWalker } from './walk.js';
import { PromptKeys, promptKeysOf } from './prompt-keys.js';
import { hybridHit, type GroupView } from './hybrid.js';

export { PromptKeys, promptKeysOf } from './prompt-keys.js';

/** One KV cache group of a hybrid source (vLLM's hybrid KV cache manager tags its events with group_idx). */
interface HybridGroup {
  state: SourceState;
  kind: 'full' | 'sliding';
  window: number;
}

export type { SourceId } from './source-state.js';
export type { SourceDump, DumpNode } from './dump.js';

/** A LoRA adapter as the events name it: `lora_name`, else `lora_id`; null for the base model. */
export type LoraRef = string | number | null;

/** What a prompt is matched under: its LoRA, its cache salt, and how many of its leading tokens may hit. */
export interface MatchOptions {
  lora?: LoraRef;
  /** The request's `cache_salt`: a salted chain never matches an unsalted one or another salt's. */
  salt?: string | null;
  /**
   * Match at most this many leading tokens. vLLM always computes a prompt's last token
   * (kv_cache_manager.get_computed_blocks: max_cache_hit_length = num_tokens - 1), so
   * pass `prompt.length - 1` to predict what the engine will reuse.
   */
  maxTokens?: number;
}

/** Calls about a source the index does not know (never added, or removed): ignored, counted. */
export interface UnknownSourceCounts {
  batches: number;
  provisionalMarks: number;
}

export interface PrefixIndexOptions {
  /** How long a provisional mark counts (default 5000 ms). */
  provisionalTtlMs?: number;
  /** Monotonic clock in ms (default performance.now); tests inject their own. */
  now?: () => number;
}

export interface SourceMatch {
  /** Leading prompt tokens this source holds, in full blocks of its block size. */
  matchedTokens: number;
  /**
   * The same tokens split by the fastest tier holding each block: medium names
   * as the events give them (null is `GPU`), plus `provisional` for blocks held
   * only by a provisional mark. Only non-zero tiers appear; the values sum to matchedTokens.
   */
  byMedium: Record<string, number>;
}

export interface SourceStats {
  /** Engine blocks held (distinct engine hashes, any medium). */
  blocks: number;
  /** Physical blocks held, every copy of a hash counted, per medium name (non-zero only). */
  copies: Record<string, number>;
  /** Distinct token-keyed nodes held for real. */
  nodes: number;
  /** BlockStored events skipped because their parent hash was unknown. */
  unknownParent: number;
  /** Removals of a hash (in that medium) the source did not hold. */
  unknownRemoval: number;
  /** BlockStored events skipped as malformed: token count != hashes x block_size, block size change while holding blocks, > 32 media. */
  invalid: number;
  provisionalBlocks: number;
  blockSize: number | null;
}

export const PROVISIONAL = 'provisional';
const MAX_MEDIA = 32;

/**
 * Per-source prefix trees over one shared store of token-keyed block nodes.
 * A node's key chains its parent's key, so the path from the root is implicit
 * in the key: walking a prompt is computing successive keys and looking them up.
 */
export class PrefixIndex {
  private readonly nodes = new NodeStore();
  private readonly bySource = new Map<SourceId, SourceState>();
  private readonly slots: (SourceState | undefined)[] = [];
  private readonly mediumNames: string[] = ['GPU', 'CPU', 'DISK'];
  private readonly mediumIds = new Map<string, number>(this.mediumNames.map((n, i) => [n, i]));
  private readonly queue = new ExpiryQueue();
  private readonly ttl: number;
  private readonly now: () => number;
  private groups: Map<number, Uint32Array> | null = null;
  private readonly walker = new PromptWalker(this.nodes);
  private readonly key = new Uint32Array(2);
  private readonly ekey = new Uint32Array(2);
  private readonly unknown: UnknownSourceCounts = { batches: 0, provisionalMarks: 0 };
  /** Source -> group_idx -> its group (only sources whose events carry group_idx). */
  private readonly hybrid = new Map<SourceId, Map<number, HybridGroup>>();

  constructor(opts: PrefixIndexOptions = {}) {
    this.ttl = opts.provisionalTtlMs ?? 5000;
    this.now = opts.now ?? (() => performance.now());
    this.nodes.ensureMedia(2);
  }

  /**
   * Registers a source (idempotent). The index never creates one on its own: the
   * registry owns their lifecycle, so a source removed while a request was in flight
   * stays removed.
   */
  addSource(source: SourceId): void {
    if (this.bySource.has(source)) return;
    this.bySource.set(source, this.newState(source));
    this.groups = null;
  }

  /**
   * Prompt keys for one request: pass them to match and markProvisional so the prompt is hashed once.
   * The same token array gets the same keys (promptKeysOf), whoever asks: the hit bound shares them too.
   */
  promptKeys(tokenIds: ArrayLike<number>, blockSize: number, opts: { lora?: LoraRef; salt?: string | null } = {}): PromptKeys {
    return promptKeysOf(tokenIds, blockSize, opts.lora ?? null, opts.salt ?? null);
  }

  private newState(source: SourceId): SourceState {
    let slot = this.slots.indexOf(undefined);
    if (slot < 0) slot = this.slots.length;
    this.nodes.ensureWords((slot >>> 5) + 1);
    const s = new SourceState(source, slot, this.nodes);
    this.slots[slot] = s;
    return s;
  }

  hasSource(source: SourceId): boolean {
    return this.bySource.has(source);
  }

  /** Applies a batch of the source's events; a batch for an unknown source is ignored and counted. */
  applyBatch(source: SourceId, batch: KVEventBatch): void {
    this.expire();
    const s = this.bySource.get(source);
    if (s === undefined) {
      this.unknown.batches++;
      return;
    }
    for (const ev of batch.events) {
      if (ev.type === 'BlockStored') {
        const t = ev.group_idx == null ? s : this.groupFor(source, ev);
        if (t === null) s.invalid++;
        else this.store(t, ev);
      } else if (ev.type === 'BlockRemoved') {
        const t = ev.group_idx == null ? s : this.hybrid.get(source)?.get(ev.group_idx)?.state;
        if (t === undefined) s.unknownRemoval += ev.block_hashes.length;
        else this.remove(t, ev);
      } else if (ev.type === 'AllBlocksCleared') this.clearAll(s);
    }
    this.compact();
  }

  /** Batches and provisional marks ignored because their source was unknown. */
  unknownSourceCounts(): UnknownSourceCounts {
    return { ...this.unknown };
  }

  /** Forgets everything the source holds (worker restart, history lost); keeps the source and its counters. */
  clearSource(source: SourceId): void {
    const s = this.bySource.get(source);
    if (s === undefined) return;
    this.clearAll(s);
    this.setBlockSize(s, null);
    this.compact();
  }

  removeSource(source: SourceId): void {
    const s = this.bySource.get(source);
    if (s === undefined) return;
    this.clearAll(s);
    for (const g of this.hybrid.get(source)?.values() ?? []) this.slots[g.state.slot] = undefined;
    this.hybrid.delete(source);
    this.bySource.delete(source);
    this.slots[s.slot] = undefined;
    this.groups = null;
    this.compact();
  }

  sources(): SourceId[] {
    return [...this.bySource.keys()];
  }

  /**
   * One walk of the prompt per block size: matched leading tokens for every source.
   * Given PromptKeys, their LoRA and salt apply (opts.lora / opts.salt are ignored) and
   * their cached keys are reused. A hybrid source (events with group_idx) reports its
   * hybrid hit: what every full-attention group and every sliding window allow.
   */
  match(prompt: ArrayLike<number> | PromptKeys, opts: MatchOptions = {}): Map<SourceId, SourceMatch> {
    return this.matchView(prompt, opts).all();
  }

  /**
   * match() without building a result per source: the walk's counts, read per source on demand
   * (a router ranking a few candidates of a large fleet pays for those only). The view owns its
   * counts: later matches do not change it.
   */
  matchView(prompt: ArrayLike<number> | PromptKeys, opts: MatchOptions = {}): MatchView {
    const keys = prompt instanceof PromptKeys ? prompt : new PromptKeys(prompt, 1, opts.lora ?? null, opts.salt ?? null);
    const tokenIds = keys.tokens;
    this.expire();
    const M = this.nodes.media;
    const K = M + 1; // media, then provisional
    const counts = new Float64Array(this.slots.length * K);
    const n = opts.maxTokens === undefined ? tokenIds.length : Math.max(0, Math.floor(opts.maxTokens));
    for (const [bs, members] of this.blockSizeGroups()) this.walker.walk(keys, n, bs, members, counts);
    let hybrid: Map<SourceId, SourceMatch> | null = null;
    for (const [id, groups] of this.hybrid) {
      if (groups.size === 0) continue;
      const views = [...groups.values()].map((g) => this.groupView(g, keys, n));
      const hit = hybridHit(views, Math.min(n, tokenIds.length));
      // Tiers of a hybrid hit: the first full-attention group's leading real blocks, the rest provisional.
      const ref = views.find((v) => v.kind === 'full') ?? views[0];
      let real = 0;
      while (real < hit / ref.blockSize && ref.heldReal(real)) real++;
      const byMedium: Record<string, number> = {};
      if (real > 0) byMedium.GPU = real * ref.blockSize;
      if (hit > real * ref.blockSize) byMedium[PROVISIONAL] = hit - real * ref.blockSize;
      (hybrid ??= new Map()).set(id, { matchedTokens: hit, byMedium });
    }
    return new MatchView(counts, K, this.mediumNames, this.bySource, hybrid);
  }

  /** A group's view of the prompt: block i is held when the group holds its key, in any medium or provisionally. */
  private groupView(g: HybridGroup, keys: PromptKeys, nTokens: number): GroupView & { heldReal(i: number): boolean } {
    const bs = g.state.blockSize ?? 1;
    const k = keys.keys(bs, Math.floor(nTokens / bs));
    const ns = this.nodes;
    const st = g.state;
    return {
      kind: g.kind,
      blockSize: bs,
      window: g.window,
      held: (i) => {
        const r = ns.find(k[2 * i], k[2 * i + 1]);
        if (r < 0) return false;
        return ns.heldReal(r, st.word, st.bit) || (ns.rec[r * ns.stride + ns.provOff(st.word)] & st.bit) !== 0;
      },
      heldReal: (i) => {
        const r = ns.find(k[2 * i], k[2 * i + 1]);
        return r >= 0 && ns.heldReal(r, st.word, st.bit);
      },
    };
  }

  /** The group of a hybrid source an event names, created on its first BlockStored; null when malformed. */
  private groupFor(source: SourceId, ev: BlockStored): SourceState | null {
    const idx = ev.group_idx as number;
    if (!Number.isInteger(idx) || idx < 0) return null;
    const win = ev.kv_cache_spec_sliding_window ?? null;
    const sliding = win !== null || /sliding/i.test(ev.kv_cache_spec_kind ?? '');
    if (sliding && (win === null || !Number.isInteger(win) || win < 1)) return null;
    let groups = this.hybrid.get(source);
    if (groups === undefined) this.hybrid.set(source, (groups = new Map()));
    let g = groups.get(idx);
    if (g === undefined) {
      // Kinds other than sliding window (full, MLA, …) need the whole prefix, as full attention does.
      g = { state: this.newState(source), kind: sliding ? 'sliding' : 'full', window: sliding ? (win as number) : 0 };
      groups.set(idx, g);
    }
    return g.state;
  }

  /**
   * Counts the prompt's full blocks (of the source's block size once known,
   * else `blockSize`) as held by the source until the TTL passes or real events
   * arrive. Blocks it already holds for real are left alone. An unknown source is
   * ignored and counted (see addSource).
   */
  markProvisional(source: SourceId, keys: PromptKeys): void;
  markProvisional(source: SourceId, tokenIds: ArrayLike<number>, blockSize: number, lora?: LoraRef, salt?: string | null): void;
  markProvisional(
    source: SourceId,
    prompt: ArrayLike<number> | PromptKeys,
    blockSize?: number,
    lora: LoraRef = null,
    salt: string | null = null,
  ): void {
    const keys = prompt instanceof PromptKeys ? prompt : new PromptKeys(prompt, blockSize as number, lora, salt);
    this.expire();
    const s = this.bySource.get(source);
    if (s === undefined) {
      this.unknown.provisionalMarks++;
      return;
    }
    const groups = this.hybrid.get(source);
    if (groups !== undefined && groups.size !== 0) {
      for (const g of groups.values()) this.markKeys(g.state, keys, g.state.blockSize ?? keys.blockSize);
      return;
    }
    if (s.blockSize === null) this.setBlockSize(s, keys.blockSize);
    this.markKeys(s, keys, s.blockSize as number);
  }

  private markKeys(s: SourceState, prompt: PromptKeys, bs: number): void {
    const expiry = this.now() + this.ttl;
    const nBlocks = prompt.blocks(bs);
    const keys = prompt.keys(bs, nBlocks);
    for (let b = 0; b < nBlocks; b++) {
      const lo = keys[2 * b];
      const hi = keys[2 * b + 1];
      let n = this.nodes.find(lo, hi);
      if (n < 0) n = this.nodes.add(lo, hi, b === 0 ? prompt.root.lo : keys[2 * b - 2], b === 0 ? prompt.root.hi : keys[2 * b - 1]);
      if (s.markProvisional(n, expiry)) this.queue.push(s.slot, n, expiry);
    }
  }

  stats(source: SourceId): SourceStats {
    this.expire();
    const s = this.bySource.get(source);
    if (s === undefined) {
      return { blocks: 0, copies: {}, unknownParent: 0, nodes: 0, unknownRemoval: 0, invalid: 0, provisionalBlocks: 0, blockSize: null };
    }
    const copies: Record<string, number> = {};
    const groups = this.hybrid.get(source);
    if (groups === undefined || groups.size === 0) {
      // The common case, read directly (the registry asks for every candidate of every request).
      for (let m = 0; m < this.mediumNames.length; m++) if (s.copies[m] !== 0) copies[this.mediumNames[m]] = s.copies[m];
      return {
        blocks: s.blocks,
        copies,
        nodes: s.realNodes,
        unknownParent: s.unknownParent,
        unknownRemoval: s.unknownRemoval,
        invalid: s.invalid,
        provisionalBlocks: s.prov.size,
        blockSize: s.blockSize,
      };
    }
    // A hybrid source's groups add up (its blockSize stays the ungrouped one).
    const all = [s, ...[...(this.hybrid.get(source)?.values() ?? [])].map((g) => g.state)];
    const sum = (f: (x: SourceState) => number): number => all.reduce((a, x) => a + f(x), 0);
    for (let m = 0; m < this.mediumNames.length; m++) {
      const c = sum((x) => x.copies[m]);
      if (c !== 0) copies[this.mediumNames[m]] = c;
    }
    return {
      blocks: sum((x) => x.blocks),
      copies,
      nodes: sum((x) => x.realNodes),
      unknownParent: sum((x) => x.unknownParent),
      unknownRemoval: sum((x) => x.unknownRemoval),
      invalid: sum((x) => x.invalid),
      provisionalBlocks: sum((x) => x.prov.size),
      blockSize: s.blockSize,
    };
  }

  /** One source's tree as JSON, for debugging; null for an unknown source. */
  dump(source: SourceId): SourceDump | null {
    this.expire();
    const s = this.bySource.get(source);
    return s === undefined ? null : dumpSource(s, this.nodes, this.mediumNames);
  }

  /**
   * Physical blocks the source holds in `medium` (default GPU), every copy counted;
   * null counts every medium. 0 for an unknown source. Fewer held blocks means more
   * free cache room: the tie-break between equally good sources.
   */
  heldBlocks(source: SourceId, medium: string | null = 'GPU'): number {
    const s = this.bySource.get(source);
    if (s === undefined) return 0;
    if (medium !== null) {
      const m = this.mediumIds.get(medium);
      return m === undefined ? 0 : s.copies[m];
    }
    let n = 0;
    for (let m = 0; m < this.mediumNames.length; m++) n += s.copies[m];
    return n;
  }

  /** Bytes of the shared node store (records and lookup table); it shrinks as blocks leave. */
  storeBytes(): number {
    return this.nodes.bytes;
  }

  /** Live nodes across all sources (a node shared by several sources counts once). */
  totalNodes(): number {
    this.expire();
    return this.nodes.live;
  }

  private store(s: SourceState, ev: BlockStored): void {
    const bs = ev.block_size;
    const hashes = ev.block_hashes;
    const tokens = ev.token_ids;
    if (!Number.isInteger(bs) || bs <= 0 || tokens.length !== hashes.length * bs) {
      s.invalid++;
      return;
    }
    if (s.blockSize !== bs) {
      if (s.blockSize !== null && s.blocks !== 0) {
        s.invalid++;
        return;
      }
      s.clearProvisional();
      this.setBlockSize(s, bs);
    }
    const m = this.mediumId(ev.medium);
    if (m < 0) {
      s.invalid++;
      return;
    }
    const ns = this.nodes;
    const ek = this.ekey;
    const loraName = ev.lora_name ?? null;
    const extraKeys = ev.extra_keys;
    if (extraKeys != null && (!Array.isArray(extraKeys) || extraKeys.length !== hashes.length)) {
      s.invalid++;
      return;
    }
    let pLo: number;
    let pHi: number;
    if (ev.parent_block_hash == null) {
      // A chain's first block: its salt (vLLM: in extra_keys[0]; SGLang: cache_salt) picks its root.
      const root = saltRoot(blockExtras(extraKeys, 0, loraName).salt ?? ev.cache_salt ?? null);
      pLo = root.lo;
      pHi = root.hi;
    } else {
      engineKey(ev.parent_block_hash, ek);
      const p = s.nodeOf(ek[0], ek[1]);
      if (p < 0) {
        s.unknownParent++;
        return;
      }
      pLo = ns.rec[p * ns.stride + K_LO];
      pHi = ns.rec[p * ns.stride + K_HI];
    }
    const { lo: lLo, hi: lHi } = loraKey(ev.lora_name ?? ev.lora_id ?? null);
    const key = this.key;
    for (let j = 0; j < hashes.length; j++) {
      const opaque = extraKeys == null ? null : blockExtras(extraKeys, j, loraName).opaque;
      if (opaque === null) chainKey(pLo, pHi, lLo, lHi, tokens, j * bs, bs, key);
      else {
        // Keys a prompt's token ids cannot reproduce (images, prompt embeds): never matched.
        const o = stringKey(5, opaque);
        chainKey(pLo, pHi, lLo ^ o.lo, lHi ^ o.hi, tokens, j * bs, bs, key);
      }
      const lo = key[0];
      const hi = key[1];
      let n = ns.find(lo, hi);
      if (n < 0) n = ns.add(lo, hi, pLo, pHi);
      engineKey(hashes[j], ek);
      s.store(ek[0], ek[1], n, m);
      pLo = lo;
      pHi = hi;
    }
  }

  private remove(s: SourceState, ev: BlockRemoved): void {
    const m = this.mediumIds.get(ev.medium ?? 'GPU');
    const ek = this.ekey;
    for (const h of ev.block_hashes) {
      engineKey(h, ek);
      if (m === undefined || m >= this.nodes.media || !s.remove(ek[0], ek[1], m)) s.unknownRemoval++;
    }
  }

  /** AllBlocksCleared: the source and every group of it. */
  private clearAll(s: SourceState): void {
    this.clearBlocks(s);
    for (const g of this.hybrid.get(s.id)?.values() ?? []) this.clearBlocks(g.state);
  }

  private clearBlocks(s: SourceState): void {
    s.clearReal();
    s.clearProvisional();
  }

  private mediumId(medium: string | null): number {
    const name = medium ?? 'GPU';
    let m = this.mediumIds.get(name);
    if (m === undefined) {
      if (this.mediumNames.length >= MAX_MEDIA) return -1;
      m = this.mediumNames.length;
      this.mediumNames.push(name);
      this.mediumIds.set(name, m);
    }
    this.nodes.ensureMedia(m + 1);
    return m;
  }

  private setBlockSize(s: SourceState, bs: number | null): void {
    if (s.blockSize === bs) return;
    s.blockSize = bs;
    this.groups = null;
  }

  /** Block size -> membership words of the sources using it. */
  private blockSizeGroups(): Map<number, Uint32Array> {
    if (this.groups !== null) return this.groups;
    const groups = new Map<number, Uint32Array>();
    for (const s of this.bySource.values()) {
      if (s.blockSize === null) continue;
      let g = groups.get(s.blockSize);
      if (g === undefined) groups.set(s.blockSize, (g = new Uint32Array(this.nodes.words)));
      g[s.word] |= s.bit;
    }
    this.groups = groups;
    return groups;
  }

  /** Lets the node store shrink after many blocks left; record ids move, so every holder follows. */
  private compact(): void {
    const remap = this.nodes.compact();
    if (remap === null) return;
    for (const s of this.slots) s?.remapRecords(remap);
    this.queue.remap(remap);
  }

  private expire(): void {
    if (this.queue.size === 0) return;
    this.queue.popExpired(this.now(), (slot, node, expiry) => this.slots[slot]?.expireProvisional(node, expiry));
    this.compact();
  }
}

/** One match's per-source answers (PrefixIndex.matchView): what match() reports, read per source. */
export class MatchView {
  constructor(
    private readonly counts: Float64Array,
    private readonly K: number,
    private readonly names: readonly string[],
    private readonly bySource: ReadonlyMap<SourceId, SourceState>,
    private readonly hybrid: ReadonlyMap<SourceId, SourceMatch> | null,
  ) {}

  /** Leading prompt tokens the source holds (0 for a source the index does not know). */
  matchedTokens(source: SourceId): number {
    const h = this.hybrid?.get(source);
    if (h !== undefined) return h.matchedTokens;
    const s = this.bySource.get(source);
    if (s === undefined) return 0;
    const c = this.counts;
    let t = 0;
    for (let m = 0, i = s.slot * this.K; m < this.K; m++, i++) t += c[i];
    return t;
  }

  /** The source's tokens by tier, as SourceMatch.byMedium (a fresh object); undefined for an unknown source. */
  byMedium(source: SourceId): Record<string, number> | undefined {
    const h = this.hybrid?.get(source);
    if (h !== undefined) return { ...h.byMedium };
    const s = this.bySource.get(source);
    if (s === undefined) return undefined;
    const out: Record<string, number> = {};
    const M = this.K - 1;
    for (let m = 0; m < this.K; m++) {
      const c = this.counts[s.slot * this.K + m];
      if (c !== 0) out[m < M ? this.names[m] : PROVISIONAL] = c;
    }
    return out;
  }

  /** Every source's match, as PrefixIndex.match returns it (one pass over the sources, no lookups). */
  all(): Map<SourceId, SourceMatch> {
    const out = new Map<SourceId, SourceMatch>();
    const K = this.K;
    const M = K - 1;
    const counts = this.counts;
    for (const s of this.bySource.values()) {
      const h = this.hybrid?.get(s.id);
      if (h !== undefined) {
        out.set(s.id, { matchedTokens: h.matchedTokens, byMedium: { ...h.byMedium } });
        continue;
      }
      const byMedium: Record<string, number> = {};
      let matchedTokens = 0;
      for (let m = 0; m < K; m++) {
        const c = counts[s.slot * K + m];
        if (c === 0) continue;
        byMedium[m < M ? this.names[m] : PROVISIONAL] = c;
        matchedTokens += c;
      }
      out.set(s.id, { matchedTokens, byMedium });
    }
    return out;
  }

  /** Tokens matched only through provisional marks. */
  provisionalTokens(source: SourceId): number {
    const h = this.hybrid?.get(source);
    if (h !== undefined) return h.byMedium[PROVISIONAL] ?? 0;
    const s = this.bySource.get(source);
    return s === undefined ? 0 : this.counts[s.slot * this.K + this.K - 1];
  }
}
