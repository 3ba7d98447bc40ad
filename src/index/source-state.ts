import { REFS, type NodeStore } from './node-store.js';

export type SourceId = string;

const MIN_SLOTS = 64;

/**
 * What one source holds: an open-addressing table from the engine's block hash
 * (its 64-bit handle) to [record, medium bits], its provisional marks, and its
 * counters. The engine hash is only a handle for removals and parent lookups;
 * the shared record is keyed by token ids.
 *
 * Memory: 16 bytes per table slot; the table doubles above half full and halves
 * below an eighth, so 32 to 128 bytes per held engine hash. Copies beyond the first
 * of a hash (rare: concurrent identical prefills) cost one small Map entry each.
 */
export class SourceState {
  readonly word: number;
  readonly bit: number;
  blockSize: number | null = null;
  /** record -> expiry (ms) of a provisional mark. */
  readonly prov = new Map<number, number>();
  /** Engine hashes held. */
  blocks = 0;
  /** Physical blocks held per medium: every copy of an engine hash counts (vLLM does not de-duplicate). */
  readonly copies = new Float64Array(32);
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
  /** "lo,hi,medium" -> copies beyond the first of one engine hash in one medium. */
  private extra = new Map<string, number>();

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

  /** Records one more copy of engine hash (lo, hi), holding record n, in medium m. */
  store(lo: number, hi: number, n: number, m: number): void {
    const mb = (1 << m) >>> 0;
    this.copies[m]++;
    let i = this.find(lo, hi);
    if (i >= 0) {
      if (this.et[i + 2] === n + 1) {
        if ((this.et[i + 3] & mb) === 0) {
          this.et[i + 3] |= mb;
          this.hold(n, m);
        } else {
          const k = `${lo},${hi},${m}`;
          this.extra.set(k, (this.extra.get(k) ?? 0) + 1);
        }
        return;
      }
      // Same engine hash, other tokens: the newest store wins, every copy of the old one is gone.
      this.dropCopies(lo, hi, this.et[i + 3]);
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

  /**
   * Removes one copy of engine hash (lo, hi) from medium m; false when the source does not hold it there.
   * The block leaves medium m with its last copy.
   */
  remove(lo: number, hi: number, m: number): boolean {
    const i = this.find(lo, hi);
    if (i < 0) return false;
    const mb = (1 << m) >>> 0;
    if ((this.et[i + 3] & mb) === 0) return false;
    this.copies[m]--;
    if (this.extra.size !== 0) {
      const k = `${lo},${hi},${m}`;
      const e = this.extra.get(k);
      if (e !== undefined) {
        if (e === 1) this.extra.delete(k);
        else this.extra.set(k, e - 1);
        return true;
      }
    }
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
    this.extra.clear();
    this.copies.fill(0);
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

  /** Copies of engine hash (lo, hi) in medium m (0 when not held there). */
  copiesOf(lo: number, hi: number, m: number): number {
    const i = this.find(lo, hi);
    if (i < 0 || (this.et[i + 3] & ((1 << m) >>> 0)) === 0) return 0;
    return 1 + (this.extra.get(`${lo},${hi},${m}`) ?? 0);
  }

  /** Rewrites every record id through `remap` (old id -> new id) after the store compacted. */
  remapRecords(remap: Int32Array): void {
    const et = this.et;
    for (let i = 0; i < et.length; i += 4) if (et[i + 2] !== 0) et[i + 2] = remap[et[i + 2] - 1] + 1;
    if (this.prov.size !== 0) {
      const prov = [...this.prov];
      this.prov.clear();
      for (const [n, e] of prov) this.prov.set(remap[n], e);
    }
    if (this.dup.size !== 0) {
      const dup = [...this.dup];
      this.dup.clear();
      for (const [k, d] of dup) this.dup.set(remap[Math.floor(k / 32)] * 32 + (k % 32), d);
    }
  }

  /** Forgets the extra copies of engine hash (lo, hi) in the given media (their physical count too). */
  private dropCopies(lo: number, hi: number, media: number): void {
    while (media !== 0) {
      const m = 31 - Math.clz32(media & -media);
      media &= media - 1;
      const k = `${lo},${hi},${m}`;
      const e = this.extra.get(k) ?? 0;
      this.extra.delete(k);
      this.copies[m] -= 1 + e;
    }
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
