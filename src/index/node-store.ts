/**
 * Every distinct block key held by any source, shared by all sources: one
 * fixed-stride record per key in a single Uint32Array, so that a lookup touches
 * one table slot and one record (two cache misses) however many sources there are.
 *
 * Record: [keyLo, keyHi, parentLo, parentHi, refs, prov words…, medium-0 words…, medium-1 words…, …].
 * A bit per source slot in `words` 32-bit words says who holds the key provisionally
 * or in each medium; `refs` counts the set bits and the record is freed when it
 * reaches zero, so the live count is exactly what sources hold.
 *
 * Keys are found through an open-addressing table of [keyLo, record + 1] pairs
 * (linear probing, backward-shift deletion: no tombstones, so churn never degrades it).
 *
 * Memory: `stride` * 4 bytes of record (32 bytes up to 32 sources and 2 media) plus
 * 16 bytes of table per record of capacity. Capacity doubles when full and `compact()`
 * halves it (or more) once fewer than a quarter of the records are live, so a held
 * node costs at most 4 x 48 = 192 bytes here, 96 on average after a compaction.
 */
export const K_LO = 0;
export const K_HI = 1;
export const P_LO = 2;
export const P_HI = 3;
export const REFS = 4;
export const HEADER = 5;

export class NodeStore {
  /** Records allocated. */
  cap = 0;
  /** 32-bit words per bit set (one bit per source slot). */
  words = 1;
  /** Media with a bit set in the record. */
  media = 0;
  /** Uint32s per record. */
  stride = 8;
  live = 0;
  rec: Uint32Array = new Uint32Array(0);
  private top = 0;
  private free: number[] = [];
  private table: Int32Array = new Int32Array(0);
  private tmask = 0;
  private readonly minCap: number;

  constructor(initialCap = 1024) {
    if (!Number.isInteger(Math.log2(initialCap))) throw new RangeError(`capacity ${initialCap} is not a power of two`);
    this.minCap = initialCap;
    this.resize(initialCap, 1, 1);
  }

  /** Bytes held by the records and the lookup table. */
  get bytes(): number {
    return this.rec.byteLength + this.table.byteLength + this.free.length * 8;
  }

  /**
   * When fewer than a quarter of the records are live, moves the live ones to the
   * front of a smaller store and returns old id -> new id (-1 for freed ids) so
   * holders of record ids can follow; null when nothing moved.
   */
  compact(): Int32Array | null {
    if (this.live * 4 >= this.cap || this.cap <= this.minCap) return null;
    let cap = this.minCap;
    while (cap < this.live * 2) cap *= 2;
    const remap = new Int32Array(this.top).fill(-1);
    const S = this.stride;
    const rec = new Uint32Array(cap * S);
    let next = 0;
    for (let n = 0; n < this.top; n++) {
      if (this.rec[n * S + REFS] === 0) continue;
      rec.set(this.rec.subarray(n * S, (n + 1) * S), next * S);
      remap[n] = next++;
    }
    this.rec = rec;
    this.top = next;
    this.free = [];
    this.cap = cap;
    this.table = new Int32Array(cap * 4);
    this.tmask = cap * 2 - 1;
    for (let n = 0; n < this.top; n++) this.insert(n);
    return remap;
  }

  /** Offset within a record of the provisional word w. */
  provOff(w: number): number {
    return HEADER + w;
  }

  /** Offset within a record of medium m's word w. */
  mediaOff(m: number, w: number): number {
    return HEADER + this.words * (1 + m) + w;
  }

  /** Record holding key (lo, hi), or -1. */
  find(lo: number, hi: number): number {
    const table = this.table;
    const mask = this.tmask;
    const lo32 = lo | 0;
    let i = (lo & mask) << 1;
    for (;;) {
      const v = table[i + 1];
      if (v === 0) return -1;
      if (table[i] === lo32 && this.rec[(v - 1) * this.stride + K_HI] === hi) return v - 1;
      i = (i + 2) & (mask * 2 + 1);
    }
  }

  /**
   * find(lo, hi), trying record `near` first: a chain's blocks arrive in order and get
   * consecutive records, so a walk asking for the record after the last one found
   * mostly skips the table probe (a cache miss at every block of a large store).
   * A live record holding the key is the key's only record, so the guess needs no other check.
   */
  findNear(near: number, lo: number, hi: number): number {
    const r = near * this.stride;
    const rec = this.rec;
    if (near >= 0 && near < this.top && rec[r + K_LO] === lo && rec[r + K_HI] === hi && rec[r + REFS] !== 0) return near;
    return this.find(lo, hi);
  }

  /** Adds a key known to be absent; it starts with no holders (the caller holds it at once). */
  add(lo: number, hi: number, pLo: number, pHi: number): number {
    let n = this.free.pop();
    if (n === undefined) {
      if (this.top === this.cap) this.resize(this.cap * 2, this.words, this.media);
      n = this.top++;
    }
    const r = n * this.stride;
    this.rec.fill(0, r, r + this.stride);
    this.rec[r + K_LO] = lo;
    this.rec[r + K_HI] = hi;
    this.rec[r + P_LO] = pLo;
    this.rec[r + P_HI] = pHi;
    this.insert(n);
    this.live++;
    return n;
  }

  unref(n: number): void {
    if (--this.rec[n * this.stride + REFS] === 0) this.release(n);
  }

  /** Whether the source (word w, bit) holds record n in any medium. */
  heldReal(n: number, w: number, bit: number): boolean {
    const rec = this.rec;
    const W = this.words;
    let i = n * this.stride + HEADER + W + w;
    for (let m = 0; m < this.media; m++, i += W) if ((rec[i] & bit) !== 0) return true;
    return false;
  }

  ensureMedia(media: number): void {
    if (media > this.media) this.resize(this.cap, this.words, media);
  }

  ensureWords(words: number): void {
    if (words > this.words) this.resize(this.cap, words, this.media);
  }

  private release(n: number): void {
    const mask = this.tmask;
    const lo = this.rec[n * this.stride + K_LO];
    let i = lo & mask;
    while (this.table[2 * i + 1] !== n + 1) i = (i + 1) & mask;
    // Backward-shift deletion: pull later entries of the probe run into the hole.
    let j = i;
    for (;;) {
      j = (j + 1) & mask;
      const v = this.table[2 * j + 1];
      if (v === 0) break;
      const home = this.table[2 * j] & mask;
      const inRun = i <= j ? home > i && home <= j : home > i || home <= j;
      if (!inRun) {
        this.table[2 * i] = this.table[2 * j];
        this.table[2 * i + 1] = v;
        i = j;
      }
    }
    this.table[2 * i] = 0;
    this.table[2 * i + 1] = 0;
    this.free.push(n);
    this.live--;
  }

  private insert(n: number): void {
    const lo = this.rec[n * this.stride + K_LO];
    let i = lo & this.tmask;
    while (this.table[2 * i + 1] !== 0) i = (i + 1) & this.tmask;
    this.table[2 * i] = lo;
    this.table[2 * i + 1] = n + 1;
  }

  private resize(cap: number, words: number, media: number): void {
    // Records never straddle more cache lines than needed: stride is a multiple of 8 words (32 bytes).
    const stride = Math.ceil((HEADER + words * (1 + media)) / 8) * 8;
    const rec = new Uint32Array(cap * stride);
    if (stride === this.stride && words === this.words) rec.set(this.rec.subarray(0, this.top * stride));
    else {
      for (let n = 0; n < this.top; n++) {
        const a = n * this.stride;
        const b = n * stride;
        for (let f = 0; f < HEADER; f++) rec[b + f] = this.rec[a + f];
        for (let s = 0; s < 1 + this.media; s++) {
          for (let w = 0; w < this.words; w++) rec[b + HEADER + s * words + w] = this.rec[a + HEADER + s * this.words + w];
        }
      }
    }
    this.rec = rec;
    this.stride = stride;
    this.words = words;
    this.media = media;
    if (cap !== this.cap) {
      this.cap = cap;
      this.table = new Int32Array(cap * 4);
      this.tmask = cap * 2 - 1;
      // Capacity only grows when the free list is empty, so every record below top is live.
      for (let n = 0; n < this.top; n++) this.insert(n);
    }
  }
}
