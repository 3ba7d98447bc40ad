import type { LoadTracker } from './load.js';
import type { RouterMetrics } from './metrics.js';
import type { Registry } from './registry.js';
import type { Scored } from './policies/policy.js';
import { openAIError } from './errors.js';
import { postUpstream, type UpstreamResponse } from './upstream.js';

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
  registry: Registry;
  load: LoadTracker;
  metrics: RouterMetrics;
  /** Called when an attempt is sent to a candidate (policies learn: provisional entries, own tree). */
  onAttempt(s: Scored, attempt: number): void;
  /** Extra request headers (e.g. authorization to pass through). */
  headers?: Record<string, string>;
  /** The client asked for a stream: its first byte is due after prefill (stall detection). */
  streaming?: boolean;
}

/** Upstream statuses that mean "this worker cannot take it now": try the next one. */
const RETRY_STATUS = new Set([429, 502, 503, 504]);
const DROP_HEADERS = new Set(['content-length', 'content-encoding', 'transfer-encoding', 'connection', 'keep-alive', 'date', 'server']);

/**
 * Sends the request to the best candidate; on failure before the first response byte
 * (connection error, 429/502/503/504, body error before any byte) moves on to the next one,
 * up to maxAttempts with exponential backoff. Once bytes flow, they are passed through as
 * they arrive; an upstream failure then ends an SSE stream with an error event.
 */
export async function forward(o: ForwardOptions): Promise<Response> {
  const endpoint = o.path;
  let lastError = 'no candidate';
  const attempts = Math.min(o.maxAttempts, o.ranked.length);
  for (let i = 0; i < attempts; i++) {
    if (o.signal.aborted) return aborted(o, endpoint);
    if (i > 0 && o.backoffMs > 0) await sleep(o.backoffMs * 2 ** (i - 1), o.signal);
    const s = o.ranked[i]!;
    const c = s.candidate;
    const w = o.registry.get(c.workerId);
    if (!w) continue;
    const ticket = o.load.start(c.source, s.promptTokens - s.matchedTokens);
    o.onAttempt(s, i);
    const ac = new AbortController();
    const onClientAbort = () => ac.abort(new Error('client disconnected'));
    o.signal.addEventListener('abort', onClientAbort, { once: true });
    const headerTimer = setTimeout(() => ac.abort(new Error('upstream header timeout')), o.headerTimeoutMs);
    const untrack = o.registry.trackPending(c.workerId, ac, o.streaming ?? false);
    const cleanup = () => {
      untrack();
      clearTimeout(headerTimer);
      o.signal.removeEventListener('abort', onClientAbort);
      ticket.finish();
    };
    const headers: Record<string, string> = { 'content-type': 'application/json', ...o.headers };
    if (w.ranks.length > 1) headers['x-data-parallel-rank'] = String(c.rank);

    let res: UpstreamResponse;
    try {
      res = await postUpstream(w.url + o.path, o.body, headers, ac.signal);
    } catch (e) {
      cleanup();
      if (o.signal.aborted) return aborted(o, endpoint, c.workerId);
      lastError = `${c.workerId}: ${errText(e)}`;
      o.registry.reportFailure(c.workerId, errText(e));
      o.metrics.retries.inc({ worker: c.workerId, reason: 'connect' });
      o.metrics.requests.inc({ worker: c.workerId, outcome: 'retry', endpoint });
      continue;
    }
    clearTimeout(headerTimer);

    const last = i === attempts - 1;
    if (RETRY_STATUS.has(res.status) && !last) {
      const text = await drain(res);
      cleanup();
      lastError = `${c.workerId}: HTTP ${res.status} ${text.slice(0, 200)}`;
      o.metrics.retries.inc({ worker: c.workerId, reason: String(res.status) });
      o.metrics.requests.inc({ worker: c.workerId, outcome: 'retry', endpoint });
      continue;
    }

    // First byte: until it arrives the request can still move elsewhere.
    let first: IteratorResult<Buffer>;
    try {
      first = await res.chunks.next();
    } catch (e) {
      cleanup();
      if (o.signal.aborted) return aborted(o, endpoint, c.workerId);
      lastError = `${c.workerId}: response failed before the first byte: ${errText(e)}`;
      o.registry.reportFailure(c.workerId, errText(e));
      o.metrics.retries.inc({ worker: c.workerId, reason: 'body' });
      o.metrics.requests.inc({ worker: c.workerId, outcome: 'retry', endpoint });
      continue;
    }
    untrack();
    o.registry.progress(c.workerId);
    ticket.prefillDone();

    const outHeaders = new Headers();
    for (const [k, v] of Object.entries(res.headers)) {
      if (v === undefined || DROP_HEADERS.has(k)) continue;
      if (Array.isArray(v)) for (const x of v) outHeaders.append(k, x);
      else outHeaders.set(k, v);
    }
    outHeaders.set('x-kv-router-worker', c.workerId);
    if (w.ranks.length > 1) outHeaders.set('x-kv-router-rank', String(c.rank));
    outHeaders.set('x-kv-router-cached-tokens', String(s.matchedTokens));
    outHeaders.set('x-kv-router-attempts', String(i + 1));
    const sse = String(res.headers['content-type'] ?? '').includes('text/event-stream');
    const ok = res.status >= 200 && res.status < 300;
    const outcome = ok ? 'ok' : 'upstream_status';
    if (ok) {
      o.metrics.expectedCachedTokens.inc({ worker: c.workerId }, s.matchedTokens);
      o.metrics.promptTokens.inc({ worker: c.workerId }, s.promptTokens);
    }

    if (first.done) {
      cleanup();
      o.metrics.requests.inc({ worker: c.workerId, outcome, endpoint });
      return new Response(null, { status: res.status, headers: outHeaders });
    }

    let finished = false;
    const finish = (result: string) => {
      if (finished) return;
      finished = true;
      cleanup();
      o.metrics.requests.inc({ worker: c.workerId, outcome: result, endpoint });
    };
    const firstChunk = first.value;
    const up = res;
    let sentFirst = false;
    const body = new ReadableStream<Uint8Array>({
      async pull(ctrl) {
        if (!sentFirst) {
          sentFirst = true;
          ctrl.enqueue(firstChunk);
          return;
        }
        try {
          const r = await up.chunks.next();
          o.registry.progress(c.workerId);
          if (r.done) {
            finish(outcome);
            ctrl.close();
          } else ctrl.enqueue(r.value);
        } catch (e) {
          if (o.signal.aborted) {
            finish('aborted');
            return;
          }
          finish('stream_error');
          if (sse) {
            const err = { error: { message: `upstream worker ${c.workerId} failed mid-stream: ${errText(e)}`, type: 'upstream_error', param: null, code: 'upstream_stream_error' } };
            ctrl.enqueue(new TextEncoder().encode(`data: ${JSON.stringify(err)}\n\n`));
            ctrl.close();
          } else ctrl.error(e);
        }
      },
      cancel(reason) {
        // The client went away: stop the worker's work too.
        up.destroy();
        finish('aborted');
      },
    }, { highWaterMark: 0 });
    return new Response(body, { status: res.status, headers: outHeaders });
  }
  const worker = o.ranked[0]?.candidate.workerId ?? 'none';
  o.metrics.requests.inc({ worker, outcome: 'no_worker', endpoint });
  return openAIError(502, `no worker could serve the request after ${attempts} attempt(s); last error: ${lastError}`, 'upstream_error', 'all_attempts_failed');
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

function aborted(o: ForwardOptions, endpoint: string, worker = 'none'): Response {
  o.metrics.requests.inc({ worker, outcome: 'aborted', endpoint });
  return openAIError(499, 'client closed the request', 'aborted', 'client_closed');
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

export function errText(e: unknown): string {
  const err = e as Error & { cause?: { code?: string; message?: string } };
  if (err?.cause?.code) return `${err.cause.code}${err.cause.message ? ` (${err.cause.message})` : ''}`;
  if (err?.cause?.message) return err.cause.message;
  return err?.message ?? String(e);
}
