import { REFS, type NodeStore } from './node-store.js';

export type SourceId = string;

const MIN_SLOTS = 64;

/**
 * What one source holds: an open-addressing table from the engine's block hash
 * (its 64-bit handle) to [record, medium bits], its provisional marks, and its
 * counters. The engine hash is only a handle for removals and parent lookups;
 * the shared record is keyed by token ids.
 */
export class SourceState {
  readonly word: number;
  readonly bit: number;
  blockSize: number | null = null;
  /** record -> expiry (ms) of a provisional mark. */
  readonly prov = new Map<number, number>();
  /** Engine hashes held. */
  blocks = 0;
  /** Distinct records held for real (any medium). */
  realNodes = 0;
  unknownParent = 0;
  unknownRemoval = 0;
  invalid = 0;
  /** Slots of 4 words: hashLo, hashHi, record + 1 (0 = empty), medium bits. */
  private et = new Uint32Array(MIN_SLOTS * 4);
  private shift = 32 - Math.log2(MIN_SLOTS);
  /** (record * 32 + medium) -> extra holds, when several engine hashes of this source carry the same tokens. */
  private dup = new Map<number, number>();

  constructor(
    readonly id: SourceId,
    readonly slot: number,
    private readonly nodes: NodeStore,
  ) {
    this.word = slot >>> 5;
    this.bit = 1 << (slot & 31);
  }

  /** Record an engine hash points at, or -1. */
  nodeOf(lo: number, hi: number): number {
    const i = this.find(lo, hi);
    return i < 0 ? -1 : this.et[i + 2] - 1;
  }

  /** Records that engine hash (lo, hi) holds record n in medium m (idempotent). */
  store(lo: number, hi: number, n: number, m: number): void {
    const mb = (1 << m) >>> 0;
    let i = this.find(lo, hi);
    if (i >= 0) {
      if (this.et[i + 2] === n + 1) {
        if ((this.et[i + 3] & mb) === 0) {
          this.et[i + 3] |= mb;
          this.hold(n, m);
        }
        return;
      }
      // Same engine hash, other tokens: the newest store wins.
      this.unholdAll(this.et[i + 2] - 1, this.et[i + 3]);
      this.et[i + 2] = n + 1;
      this.et[i + 3] = mb;
      this.hold(n, m);
      return;
    }
    if ((this.blocks + 1) * 2 > this.et.length >>> 2) this.rehash((this.et.length >>> 2) * 2);
    i = this.home(lo, hi);
    while (this.et[i + 2] !== 0) i = (i + 4) & (this.et.length - 1);
    this.et[i] = lo;
    this.et[i + 1] = hi;
    this.et[i + 2] = n + 1;
    this.et[i + 3] = mb;
    this.blocks++;
    this.hold(n, m);
  }

  /** Removes engine hash (lo, hi) from medium m; false when the source does not hold it there. */
  remove(lo: number, hi: number, m: number): boolean {
    const i = this.find(lo, hi);
    if (i < 0) return false;
    const mb = (1 << m) >>> 0;
    if ((this.et[i + 3] & mb) === 0) return false;
    this.et[i + 3] &= ~mb;
    this.unhold(this.et[i + 2] - 1, m);
    if (this.et[i + 3] === 0) this.deleteSlot(i);
    return true;
  }

  /** Drops every real block (not the provisional marks). */
  clearReal(): void {
    const et = this.et;
    for (let i = 0; i < et.length; i += 4) if (et[i + 2] !== 0) this.unholdAll(et[i + 2] - 1, et[i + 3]);
    this.dup.clear();
    this.blocks = 0;
    this.et = new Uint32Array(MIN_SLOTS * 4);
    this.shift = 32 - Math.log2(MIN_SLOTS);
  }

  /** Marks record n provisional until `expiry`; false when the source holds it for real. */
  markProvisional(n: number, expiry: number): boolean {
    const ns = this.nodes;
    if (ns.heldReal(n, this.word, this.bit)) return false;
    const i = n * ns.stride + ns.provOff(this.word);
    if ((ns.rec[i] & this.bit) === 0) {
      ns.rec[i] |= this.bit;
      ns.rec[n * ns.stride + REFS]++;
    }
    this.prov.set(n, expiry);
    return true;
  }

  /** Ends the provisional mark on n if it is still the one that expires at `expiry`. */
  expireProvisional(n: number, expiry: number): void {
    if (this.prov.get(n) === expiry) this.unmarkProvisional(n);
  }

  clearProvisional(): void {
    for (const n of [...this.prov.keys()]) this.unmarkProvisional(n);
  }

  /** [hashLo, hashHi, record, medium bits] of every held engine hash. */
  *entries(): IterableIterator<[number, number, number, number]> {
    const et = this.et;
    for (let i = 0; i < et.length; i += 4) if (et[i + 2] !== 0) yield [et[i], et[i + 1], et[i + 2] - 1, et[i + 3]];
  }

  private home(lo: number, hi: number): number {
    return (Math.imul(lo ^ Math.imul(hi, 0x85ebca6b), 0x9e3779b1) >>> this.shift) << 2;
  }

  private find(lo: number, hi: number): number {
    const et = this.et;
    const mask = et.length - 1;
    let i = this.home(lo, hi);
    for (;;) {
      if (et[i + 2] === 0) return -1;
      if (et[i] === lo && et[i + 1] === hi) return i;
      i = (i + 4) & mask;
    }
  }

  private deleteSlot(i: number): void {
    const et = this.et;
    const mask = et.length - 1;
    let j = i;
    for (;;) {
      j = (j + 4) & mask;
      if (et[j + 2] === 0) break;
      const h = this.home(et[j], et[j + 1]);
      const inRun = i <= j ? h > i && h <= j : h > i || h <= j;
      if (!inRun) {
        et.copyWithin(i, j, j + 4);
        i = j;
      }
    }
    et.fill(0, i, i + 4);
    this.blocks--;
    if (this.blocks * 8 < et.length >>> 2 && et.length >>> 2 > MIN_SLOTS) this.rehash((et.length >>> 2) / 2);
  }

  private rehash(slots: number): void {
    const old = this.et;
    const et = (this.et = new Uint32Array(slots * 4));
    this.shift = 32 - Math.log2(slots);
    const mask = et.length - 1;
    for (let j = 0; j < old.length; j += 4) {
      if (old[j + 2] === 0) continue;
      let i = this.home(old[j], old[j + 1]);
      while (et[i + 2] !== 0) i = (i + 4) & mask;
      et[i] = old[j];
      et[i + 1] = old[j + 1];
      et[i + 2] = old[j + 2];
      et[i + 3] = old[j + 3];
    }
  }

  private unmarkProvisional(n: number): void {
    const ns = this.nodes;
    ns.rec[n * ns.stride + ns.provOff(this.word)] &= ~this.bit;
    this.prov.delete(n);
    ns.unref(n);
  }

  private hold(n: number, m: number): void {
    const ns = this.nodes;
    const i = n * ns.stride + ns.mediaOff(m, this.word);
    if ((ns.rec[i] & this.bit) !== 0) {
      const k = n * 32 + m;
      this.dup.set(k, (this.dup.get(k) ?? 0) + 1);
      return;
    }
    const had = ns.heldReal(n, this.word, this.bit);
    ns.rec[i] |= this.bit;
    ns.rec[n * ns.stride + REFS]++;
    if (!had) {
      this.realNodes++;
      // A real event supersedes the provisional mark.
      if ((ns.rec[n * ns.stride + ns.provOff(this.word)] & this.bit) !== 0) this.unmarkProvisional(n);
    }
  }

  private unhold(n: number, m: number): void {
    if (this.dup.size !== 0) {
      const k = n * 32 + m;
      const d = this.dup.get(k);
      if (d !== undefined) {
        if (d === 1) this.dup.delete(k);
        else this.dup.set(k, d - 1);
        return;
      }
    }
    const ns = this.nodes;
    ns.rec[n * ns.stride + ns.mediaOff(m, this.word)] &= ~this.bit;
    if (!ns.heldReal(n, this.word, this.bit)) this.realNodes--;
    ns.unref(n);
  }

  private unholdAll(n: number, media: number): void {
    while (media !== 0) {
      const m = 31 - Math.clz32(media & -media);
      this.unhold(n, m);
      media &= media - 1;
    }
  }
}
