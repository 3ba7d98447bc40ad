/**
 * Provisional marks in the order they were made. With one TTL, expiries come
 * out in the same order, so expiring is popping the head. Entries superseded
 * or renewed since are checked against the source's own map and skipped.
 */
export class ExpiryQueue {
  private slot: number[] = [];
  private node: number[] = [];
  private expiry: number[] = [];
  private head = 0;

  push(slot: number, node: number, expiry: number): void {
    this.slot.push(slot);
    this.node.push(node);
    this.expiry.push(expiry);
  }

  popExpired(now: number, expire: (slot: number, node: number, expiry: number) => void): void {
    const len = this.expiry.length;
    while (this.head < len && this.expiry[this.head] <= now) {
      const i = this.head++;
      expire(this.slot[i], this.node[i], this.expiry[i]);
    }
    if (this.head === len) {
      this.slot.length = this.node.length = this.expiry.length = 0;
      this.head = 0;
    } else if (this.head > 4096 && this.head * 2 > len) {
      this.slot.splice(0, this.head);
      this.node.splice(0, this.head);
      this.expiry.splice(0, this.head);
      this.head = 0;
    }
  }

  /** Follows a store compaction: node ids through `remap` (a freed node becomes -1, whose entry then expires as a no-op). */
  remap(remap: Int32Array): void {
    for (let i = this.head; i < this.node.length; i++) this.node[i] = remap[this.node[i]] ?? -1;
  }

  get size(): number {
    return this.expiry.length - this.head;
  }
}
