/**
 * One replay request over a fresh DEALER: send ["", start_seq], collect replies
 * until the end marker. A fresh socket per request keeps a late answer to an
 * abandoned request from being read as the answer to the next one.
 */
import { retryEintr } from './eintr.js';
import * as zmq from 'zeromq';
import { decodeBatch, type DecodeOptions } from './codec.js';
import { applyCurveClient, type CurveClientOptions } from './curve.js';
import { decodeSeq, encodeSeq, END_OF_REPLAY_SEQ } from './frames.js';
import type { KVEventBatch } from './types.js';

export interface ReplayedBatch {
  seq: bigint;
  /** The topic frame of a current-shape reply; null for the legacy shape. */
  topic: string | null;
  batch: KVEventBatch;
  payload: Buffer;
}

export interface ReplayResult {
  /**
   * `done`: end marker received. `timeout`: no answer (or the next frame) within the timeout,
   * or more than `maxReplies` replies (a runaway endpoint): either way, not a complete answer.
   * `truncated`: stopped once the payloads held reached `maxBytes`; `batches` is a readable prefix,
   * ask again from after its last seq for the rest.
   */
  status: 'done' | 'truncated' | 'timeout' | 'cancelled';
  batches: ReplayedBatch[];
  /** Reply frames that could not be read (wrong shape, bad seq, undecodable payload). */
  malformed: number;
}

export interface ReplayRequestOptions {
  /** Longest wait for the connection, the first reply, and between replies. */
  timeoutMs: number;
  signal?: AbortSignal;
  /** Gives up (status `timeout`) after this many reply messages. Default 1 000 000. */
  maxReplies?: number;
  /** Gives up (status `timeout`) when the whole replay takes longer (a trickling endpoint). Default 60 000. */
  maxTotalMs?: number;
  /** Stops (status `truncated`) once the payloads gathered reach this many bytes. Default 32 MiB. */
  maxBytes?: number;
  /** Larger replies make ZeroMQ drop the connection. Default: no limit. */
  maxMessageSize?: number;
  curve?: CurveClientOptions | null;
  decode?: DecodeOptions;
}

const EMPTY = Buffer.alloc(0);

type Reply = { end: true } | { end: false; item: ReplayedBatch } | null;

/** Parses ["", topic, seq, payload] / ["", seq, payload]; the end marker has seq -1 and an empty last frame. */
export function parseReplayReply(msg: Buffer[], decode?: DecodeOptions): Reply {
  if ((msg.length !== 3 && msg.length !== 4) || msg[0]!.length !== 0) return null;
  const seqFrame = msg[msg.length - 2]!;
  const payload = msg[msg.length - 1]!;
  if (seqFrame.length !== 8) return null;
  const seq = decodeSeq(seqFrame);
  if (seq === END_OF_REPLAY_SEQ) return payload.length === 0 ? { end: true } : null;
  try {
    const batch = decodeBatch(payload, decode);
    const topic = msg.length === 4 ? msg[1]!.toString('utf8') : null;
    return { end: false, item: { seq, topic, batch, payload } };
  } catch {
    return null;
  }
}

export async function requestReplay(endpoint: string, from: bigint, opts: ReplayRequestOptions): Promise<ReplayResult> {
  const result: ReplayResult = { status: 'timeout', batches: [], malformed: 0 };
  if (opts.signal?.aborted) return { ...result, status: 'cancelled' };
  const dealer = new zmq.Dealer({ linger: 0, sendTimeout: opts.timeoutMs, receiveTimeout: opts.timeoutMs, maxMessageSize: opts.maxMessageSize ?? -1 });
  if (opts.curve) applyCurveClient(dealer, opts.curve);
  const maxReplies = opts.maxReplies ?? 1_000_000;
  const deadline = Date.now() + (opts.maxTotalMs ?? 60_000);
  const maxBytes = opts.maxBytes ?? 32 * 1024 * 1024;
  let bytes = 0;
  const onAbort = () => dealer.close();
  opts.signal?.addEventListener('abort', onAbort);
  try {
    retryEintr(() => dealer.connect(endpoint));
    await dealer.send([EMPTY, encodeSeq(from)]);
    for (let n = 0; n < maxReplies; n++) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      if (left < opts.timeoutMs) dealer.receiveTimeout = left;
      const reply = parseReplayReply(await dealer.receive(), opts.decode);
      if (reply === null) result.malformed++;
      else if (reply.end) return { ...result, status: 'done' };
      else {
        result.batches.push(reply.item);
        bytes += reply.item.payload.length;
        if (bytes >= maxBytes) return { ...result, status: 'truncated' };
      }
    }
    return result; // too many replies, or too long: incomplete
  } catch {
    // EAGAIN after the timeout, or the socket closed by an abort.
    if (opts.signal?.aborted) result.status = 'cancelled';
    return result;
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
    if (!dealer.closed) dealer.close();
  }
}
