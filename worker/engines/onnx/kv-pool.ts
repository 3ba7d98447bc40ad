/**
 * Keys and values of every physical block, per layer: Float32Arrays laid out
 * [block, head, slot, headDim], so a run of slots of one head is contiguous, as it is in
 * the session's [batch, head, time, headDim] tensors.
 */
export class KvPool {
  readonly keys: Float32Array[] = [];
  readonly values: Float32Array[] = [];
  private readonly blockStride: number;
  private readonly headStride: number;

  constructor(
    readonly numLayers: number,
    readonly numHeads: number,
    readonly headDim: number,
    readonly blockSize: number,
    readonly numBlocks: number,
  ) {
    this.headStride = blockSize * headDim;
    this.blockStride = numHeads * this.headStride;
    for (let l = 0; l < numLayers; l++) {
      this.keys.push(new Float32Array(numBlocks * this.blockStride));
      this.values.push(new Float32Array(numBlocks * this.blockStride));
    }
  }

  /**
   * Copies sequence positions [pos, pos + count) between the pool (through the block table)
   * and a [batch, head, time, headDim] tensor (batch row `row`, `time` long, from index `t0`).
   */
  transfer(
    dir: 'read' | 'write',
    pool: Float32Array,
    tensor: Float32Array,
    row: number,
    time: number,
    t0: number,
    blockTable: number[],
    pos: number,
    count: number,
  ): void {
    const { blockSize: bs, headDim: hd, numHeads: H } = this;
    let done = 0;
    while (done < count) {
      const p = pos + done;
      const block = blockTable[Math.floor(p / bs)];
      if (block === undefined || block < 0 || block >= this.numBlocks) {
        throw new Error(`block table has no valid block for position ${p} (table length ${blockTable.length})`);
      }
      const slot = p % bs;
      const run = Math.min(bs - slot, count - done);
      for (let h = 0; h < H; h++) {
        const poolAt = block * this.blockStride + h * this.headStride + slot * hd;
        const tensorAt = ((row * H + h) * time + t0 + done) * hd;
        if (dir === 'read') tensor.set(pool.subarray(poolAt, poolAt + run * hd), tensorAt);
        else pool.set(tensor.subarray(tensorAt, tensorAt + run * hd), poolAt);
      }
      done += run;
    }
  }

  copyBlock(src: number, dst: number): void {
    const from = src * this.blockStride;
    for (const arr of [...this.keys, ...this.values]) arr.copyWithin(dst * this.blockStride, from, from + this.blockStride);
  }
}
