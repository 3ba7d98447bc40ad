import type { Scored } from './policies/policy.js';
import { openAIError } from './errors.js';
import { postUpstream, type UpstreamResponse } from './upstream.js';
import type { UsageTap } from './observe/usage.js';
import { errText, Relay, type RelayHeaders } from './relay.js';

export { errText };

/** Why an attempt failed before its first byte. */
export type FailureReason =
  /** Nothing listens there (ECONNREFUSED): the request never reached the worker. */
  | 'refused'
  /** The connection failed otherwise (reset, closed) after the request may have reached it. */
  | 'connect'
  /** No response headers within upstream_header_timeout_ms. */
  | 'timeout'
  /** The worker left rotation while the attempt waited for its first byte. */
  | 'out_of_rotation'
  /** 429/502/503/504: the worker could not take it now. */
  | 'status'
  /** The response failed before its first byte. */
  | 'body';

export interface AttemptFailure {
  reason: FailureReason;
  /** Human-readable, for the log and the final error. */
  error: string;
  status?: number;
}

/** How an attempt ended once bytes flowed. */
export type AttemptEnd = 'ok' | 'upstream_status' | 'stream_error' | 'aborted';

/**
 * The pipeline's side of one attempt. forward() only reports what happened; the pipeline records
 * it (load, health, policy, metrics) and decides whether another attempt is allowed.
 */
export interface Attempt {
  /** The attempt failed before any byte reached the client: may the next candidate be tried? */
  failed(f: AttemptFailure): boolean;
  /** The first response byte arrived (prefill done): the request stays here. */
  firstByte(status: number): void;
  /** A later chunk arrived (the engine is alive). */
  progress(): void;
  /** Done, one way or another. Called once, after firstByte. */
  ended(end: AttemptEnd): void;
  /** The client went away before the first byte. */
  aborted(): void;
  /** After firstByte: a filter the response body passes through (reads usage; may strip what the router added). */
  tap?(sse: boolean, status: number): UsageTap | null;
}

export interface ForwardTarget {
  url: string;
  /** More than one: the rank goes in x-data-parallel-rank. */
  ranks: number;
}

export interface ForwardOptions {
  /** Upstream path, e.g. /v1/chat/completions. */
  path: string;
  /** Request body, forwarded as is. */
  body: Uint8Array;
  /** Candidates best first; attempts walk down the list. */
  ranked: Scored[];
  /** Client went away: abort upstream. */
  signal: AbortSignal;
  maxAttempts: number;
  backoffMs: number;
  headerTimeoutMs: number;
  /** Where a worker is now (undefined: it left; that candidate is skipped). */
  target(workerId: string): ForwardTarget | undefined;
  /**
   * Attempt `i` goes to `s` now. Called synchronously before the send (no await between the
   * pipeline's decision and this call for the first attempt): the pipeline records the load and
   * commits the pick here, and hands back `ac` to whoever may abort the attempt (health).
   */
  begin(s: Scored, attempt: number, ac: AbortController): Attempt;
  /** Extra request headers (e.g. authorization to pass through). */
  headers?: Record<string, string>;
}

/** What forward() decided, besides the response: the pipeline's metrics read it. */
export type ForwardResult =
  /** Bytes flow: the relay carries them to the client (as a Response, or onto the node socket). */
  | { kind: 'response'; relay: Relay; attempts: number }
  | { kind: 'aborted'; res: Response; worker: string | null }
  | { kind: 'exhausted'; res: Response; attempts: number; lastError: string };

/** Upstream statuses that mean "this worker cannot take it now": try the next one. */
const RETRY_STATUS = new Set([429, 502, 503, 504]);
// content-encoding stays: the body's bytes pass unchanged (the upstream client does not decode them).
const DROP_HEADERS = new Set(['content-length', 'transfer-encoding', 'connection', 'keep-alive', 'date', 'server']);

/**
 * Sends the request to the best candidate; on failure before the first response byte moves on
 * to the next one while the pipeline allows it, up to maxAttempts with exponential backoff. Once
 * bytes flow they are passed through as they arrive; an upstream failure then ends an SSE stream
 * with an error event. Writes nothing back: every fact goes to the pipeline's Attempt.
 */
export async function forward(o: ForwardOptions): Promise<ForwardResult> {
  let lastError = 'no candidate';
  const attempts = Math.min(o.maxAttempts, o.ranked.length);
  let made = 0;
  for (let i = 0; i < attempts; i++) {
    if (o.signal.aborted) return aborted(null);
    if (made > 0 && o.backoffMs > 0) await sleep(o.backoffMs * 2 ** (made - 1), o.signal);
    if (o.signal.aborted) return aborted(null);
    const s = o.ranked[i]!;
    const c = s.candidate;
    const w = o.target(c.workerId);
    if (!w) continue;
    const ac = new AbortController();
    const attempt = o.begin(s, made, ac);
    made++;
    const onClientAbort = () => ac.abort(new Error('client disconnected'));
    o.signal.addEventListener('abort', onClientAbort, { once: true });
    const headerTimer = setTimeout(() => ac.abort(new HeaderTimeout('upstream header timeout')), o.headerTimeoutMs);
    const detach = () => {
      clearTimeout(headerTimer);
      o.signal.removeEventListener('abort', onClientAbort);
    };
    const headers: Record<string, string> = { 'content-type': 'application/json', ...o.headers };
    if (w.ranks > 1) headers['x-data-parallel-rank'] = String(c.rank);
    const last = i === attempts - 1;

    let res: UpstreamResponse;
    try {
      res = await postUpstream(w.url + o.path, o.body, headers, ac.signal);
    } catch (e) {
      detach();
      if (o.signal.aborted) {
        attempt.aborted();
        return aborted(c.workerId);
      }
      const f = failureOf(e, ac.signal);
      lastError = `${c.workerId}: ${f.error}`;
      if (!attempt.failed(f)) return exhausted(made, lastError, f);
      continue;
    }
    clearTimeout(headerTimer);

    if (RETRY_STATUS.has(res.status) && !last) {
      const text = await drain(res);
      detach();
      lastError = `${c.workerId}: HTTP ${res.status} ${text.slice(0, 200)}`;
      if (!attempt.failed({ reason: 'status', status: res.status, error: `HTTP ${res.status}` })) return exhausted(made, lastError, null);
      continue;
    }

    // First byte: until it arrives the request can still move elsewhere.
    let first: IteratorResult<Buffer>;
    try {
      first = await res.chunks.next();
    } catch (e) {
      detach();
      if (o.signal.aborted) {
        attempt.aborted();
        return aborted(c.workerId);
      }
      const f = failureOf(e, ac.signal);
      const bodyFailure: AttemptFailure = { ...f, reason: f.reason === 'connect' ? 'body' : f.reason, error: `response failed before the first byte: ${f.error}` };
      lastError = `${c.workerId}: ${bodyFailure.error}`;
      if (!attempt.failed(bodyFailure)) return exhausted(made, lastError, bodyFailure);
      continue;
    }
    attempt.firstByte(res.status);

    const outHeaders: RelayHeaders = {};
    for (const k in res.headers) {
      const v = res.headers[k];
      if (v === undefined || DROP_HEADERS.has(k)) continue;
      outHeaders[k] = v;
    }
    outHeaders['x-kv-router-worker'] = c.workerId;
    if (w.ranks > 1) outHeaders['x-kv-router-rank'] = String(c.rank);
    outHeaders['x-kv-router-cached-tokens'] = String(s.matchedTokens);
    if (s.terms.predicted_ttft_ms !== undefined) outHeaders['x-kv-router-predicted-ttft-ms'] = String(s.terms.predicted_ttft_ms);
    outHeaders['x-kv-router-attempts'] = String(made);
    const ct = res.headers['content-type'];
    const sse = typeof ct === 'string' && ct.includes('text/event-stream');
    const outcome: AttemptEnd = res.status >= 200 && res.status < 300 ? 'ok' : 'upstream_status';

    let finished = false;
    const finish = (end: AttemptEnd) => {
      if (finished) return;
      finished = true;
      detach();
      attempt.ended(end);
    };
    if (first.done) finish(outcome);
    const relay = new Relay({
      status: res.status,
      headers: outHeaders,
      sse,
      first: first.done ? null : first.value,
      up: res,
      tap: first.done ? null : attempt.tap?.(sse, res.status) ?? null,
      clientSignal: o.signal,
      workerId: c.workerId,
      outcome,
      progress: () => attempt.progress(),
      finish,
    });
    return { kind: 'response', relay, attempts: made };
  }
  return exhausted(made, lastError, null);

  function exhausted(n: number, err: string, stoppedBy: AttemptFailure | null): ForwardResult {
    const why = stoppedBy && stoppedBy.reason !== 'refused' && n < attempts
      ? ` (not retried on other workers: the attempt ${stoppedBy.reason === 'timeout' ? 'timed out' : stoppedBy.reason === 'out_of_rotation' ? 'ended with the worker out of rotation' : 'took the worker out of rotation or the retry budget is spent'})`
      : '';
    return {
      kind: 'exhausted',
      attempts: n,
      lastError: err,
      res: openAIError(502, `no worker could serve the request after ${n} attempt(s)${why}; last error: ${err}`, 'upstream_error', 'all_attempts_failed'),
    };
  }
}

class HeaderTimeout extends Error {
  override name = 'HeaderTimeout';
}

/** Classifies a failed send by the abort reason or the socket error. */
function failureOf(e: unknown, signal: AbortSignal): AttemptFailure {
  const reason = signal.aborted ? (signal.reason as Error | undefined) : undefined;
  if (reason instanceof HeaderTimeout) return { reason: 'timeout', error: reason.message };
  // Aborted before its body left for the worker: it never reached it, so it is as safe to move on as a refused connection.
  if (reason?.name === 'OutOfRotation') return { reason: (e as { sent?: boolean })?.sent === false ? 'refused' : 'out_of_rotation', error: reason.message };
  const code = (e as NodeJS.ErrnoException)?.code ?? (e as { cause?: { code?: string } })?.cause?.code;
  return { reason: code === 'ECONNREFUSED' ? 'refused' : 'connect', error: errText(e) };
}

async function drain(res: UpstreamResponse): Promise<string> {
  const parts: Buffer[] = [];
  try {
    for (let r = await res.chunks.next(); !r.done; r = await res.chunks.next()) parts.push(r.value);
  } catch {
    /* the status says enough */
  }
  return Buffer.concat(parts).toString('utf8');
}

function aborted(worker: string | null): ForwardResult {
  return { kind: 'aborted', worker, res: openAIError(499, 'client closed the request', 'aborted', 'client_closed') };
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
