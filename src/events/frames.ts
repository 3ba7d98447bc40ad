/** Frame-level pieces of the PUB and replay protocols. */

/** The seq of the replay end marker: -1, sent as ff×8. */
export const END_OF_REPLAY_SEQ = -1n;

export class FrameError extends Error {
  override readonly name = 'FrameError';
}

/** 8 bytes, big-endian. Non-negative seqs as unsigned; -1 (the end marker) as ff×8. */
export function encodeSeq(seq: bigint): Buffer {
  const b = Buffer.allocUnsafe(8);
  if (seq < 0n) b.writeBigInt64BE(seq);
  else b.writeBigUInt64BE(seq);
  return b;
}

/** Reads an 8-byte big-endian seq; ff×8 reads as -1 (the end marker). */
export function decodeSeq(frame: Uint8Array): bigint {
  if (frame.byteLength !== 8) throw new FrameError(`seq frame must be 8 bytes, got ${frame.byteLength}`);
  const b = Buffer.from(frame.buffer, frame.byteOffset, 8);
  const u = b.readBigUInt64BE(0);
  return u === 0xffffffffffffffffn ? END_OF_REPLAY_SEQ : u;
}
