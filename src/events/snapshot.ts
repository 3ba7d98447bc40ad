/**
 * Cache snapshots over the replay ROUTER socket: our extension of the replay protocol, with
 * which our worker rebuilds a subscriber's view after its history left the replay buffer.
 *
 * Request (DEALER → ROUTER): `["", "kv-router:snapshot:v1"]`. vLLM's and SGLang's replay
 * handlers read any three-frame request as a replay from `int.from_bytes(frame, "big")`:
 * this 21-byte frame reads as a seq far beyond any published one, so they answer with the
 * bare end marker at once, which the client reads as "unsupported". A publisher that answers
 * nothing (a request it finds malformed) leaves the client to time out: also "unsupported".
 *
 * Reply: `["", TAG, at_seq(8 B BE), payload]` per chunk (a normal batch payload of BlockStored
 * events, parents before children), then `["", TAG, at_seq, ""]`. The snapshot is the cache
 * after every batch with seq < at_seq and before any batch with seq >= at_seq: a subscriber
 * replaces its tree with it and applies live batches from at_seq on.
 */
import { retryEintr } from './eintr.js';
import * as zmq from 'zeromq';
import { decodeBatch, type DecodeOptions } from './codec.js';
import { applyCurveClient, type CurveClientOptions } from './curve.js';
import { decodeSeq, END_OF_REPLAY_SEQ } from './frames.js';
import type { KVEventBatch } from './types.js';

export const SNAPSHOT_REQUEST = Buffer.from('kv-router:snapshot:v1', 'utf8');
/** The second frame of every snapshot reply (the same bytes as the request). */
export const SNAPSHOT_TAG = SNAPSHOT_REQUEST;

export type SnapshotResult =
  | { status: 'done'; atSeq: bigint; batches: KVEventBatch[]; bytes: number }
  /** The publisher answered with a plain end marker (vLLM, SGLang, or ours without a cache to show). */
  | { status: 'unsupported' }
  /** No answer in time (a publisher that ignores the request), unreadable chunks, too big, or cancelled. */
  | { status: 'timeout' | 'failed' | 'cancelled' };

export interface SnapshotRequestOptions {
  timeoutMs: number;
  signal?: AbortSignal;
  /** Payload bytes beyond which the snapshot is abandoned (failed). Default 256 MiB. */
  maxBytes?: number;
  maxMessageSize?: number;
  curve?: CurveClientOptions | null;
  decode?: DecodeOptions;
}

const EMPTY = Buffer.alloc(0);

export function isSnapshotRequest(msg: Buffer[]): boolean {
  return msg.length === 3 && msg[1]!.length === 0 && msg[2]!.equals(SNAPSHOT_REQUEST);
}

export async function requestSnapshot(endpoint: string, opts: SnapshotRequestOptions): Promise<SnapshotResult> {
  if (opts.signal?.aborted) return { status: 'cancelled' };
  const dealer = new zmq.Dealer({ linger: 0, sendTimeout: opts.timeoutMs, receiveTimeout: opts.timeoutMs, maxMessageSize: opts.maxMessageSize ?? -1 });
  if (opts.curve) applyCurveClient(dealer, opts.curve);
  const maxBytes = opts.maxBytes ?? 256 * 1024 * 1024;
  const onAbort = () => dealer.close();
  opts.signal?.addEventListener('abort', onAbort);
  const batches: KVEventBatch[] = [];
  let bytes = 0;
  let atSeq: bigint | null = null;
  try {
    retryEintr(() => dealer.connect(endpoint));
    await dealer.send([EMPTY, SNAPSHOT_REQUEST]);
    for (;;) {
      const msg = await dealer.receive();
      if (msg.length === 4 && msg[0]!.length === 0 && msg[1]!.equals(SNAPSHOT_TAG) && msg[2]!.length === 8) {
        const seq = decodeSeq(msg[2]!);
        if (seq === END_OF_REPLAY_SEQ || (atSeq !== null && seq !== atSeq)) return { status: 'failed' };
        atSeq = seq;
        if (msg[3]!.length === 0) return { status: 'done', atSeq, batches, bytes };
        bytes += msg[3]!.length;
        if (bytes > maxBytes) return { status: 'failed' };
        batches.push(decodeBatch(msg[3]!, opts.decode));
        continue;
      }
      if (atSeq !== null) return { status: 'failed' }; // a snapshot interrupted by something else
      // Not a snapshot: a replay handler's answer. Its end marker (last frame empty, seq -1) ends it.
      const seqFrame = msg[msg.length - 2];
      if (seqFrame?.length === 8 && decodeSeq(seqFrame) === END_OF_REPLAY_SEQ && msg[msg.length - 1]!.length === 0) return { status: 'unsupported' };
    }
  } catch {
    // EAGAIN after the timeout, an unreadable chunk, or the socket closed by an abort.
    return { status: opts.signal?.aborted ? 'cancelled' : atSeq === null ? 'timeout' : 'failed' };
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
    if (!dealer.closed) dealer.close();
  }
}
