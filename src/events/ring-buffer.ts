/** The last `capacity` published (seq, payload) pairs; seqs are consecutive. */
export interface Buffered {
  seq: bigint;
  payload: Buffer;
}

export class RingBuffer {
  private items: Buffered[] = [];
  private head = 0;

  constructor(readonly capacity: number) {}

  get size(): number {
    return this.items.length - this.head;
  }

  push(seq: bigint, payload: Buffer): void {
    if (this.capacity === 0) return;
    this.items.push({ seq, payload });
    if (this.size > this.capacity) this.head++;
    // Compact now and then instead of shifting on every push.
    if (this.head >= 1024 && this.head >= this.capacity) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
  }

  /** A snapshot of every buffered entry with seq >= start. */
  from(start: bigint): Buffered[] {
    if (this.size === 0) return [];
    const first = this.items[this.head]!.seq;
    const skip = start > first ? Number(start - first) : 0;
    return skip >= this.size ? [] : this.items.slice(this.head + skip);
  }
}
