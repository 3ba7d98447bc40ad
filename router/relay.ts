/**
 * The chosen worker's response on its way to the client, once its first byte arrived. One body
 * reader (`read`: upstream chunks through the usage tap, the end and mid-stream failures reported
 * to the attempt) and two ways out of it:
 *  - `toResponse()`: a WHATWG Response (the pipeline's `handle`, and any caller without a node socket);
 *  - `send(out)`: straight onto the node ServerResponse, head and body with raw node writes (no
 *    Response, Headers or web streams per request): the HTTP route's path. The drain keeps it in
 *    flight (src/http/drain.ts `holdOpen`) and gets back a bodiless marker response that
 *    @hono/node-server does not write again.
 * Both give the client the same bytes; the attempt sees the same progress, end and abort.
 */
import type { ServerResponse } from 'node:http';
import type { AttemptEnd } from './proxy.js';
import type { UpstreamResponse } from './upstream.js';
import type { UsageTap } from './observe/usage.js';

export type RelayHeaders = Record<string, string | string[]>;

export interface RelaySource {
  status: number;
  /** The client's response headers (lower-case names). */
  headers: RelayHeaders;
  sse: boolean;
  /** The first body chunk; null: the body is empty (and the attempt is already finished). */
  first: Buffer | null;
  up: UpstreamResponse;
  tap: UsageTap | null;
  /** The client went away (the upstream request is aborted with it). */
  clientSignal: AbortSignal;
  workerId: string;
  /** How the attempt ends when the body ends normally. */
  outcome: AttemptEnd;
  /** A later chunk arrived. */
  progress(): void;
  /** The attempt is over (idempotent). */
  finish(end: AttemptEnd): void;
}

const EMPTY = Buffer.alloc(0);
const ALREADY_SENT = 'x-hono-already-sent';

export class Relay {
  private held: Buffer | null;
  private done: boolean;

  constructor(private readonly s: RelaySource) {
    this.held = s.first;
    this.done = s.first === null;
  }

  get status(): number {
    return this.s.status;
  }

  get headers(): RelayHeaders {
    return this.s.headers;
  }

  /**
   * The next bytes for the client; null once the body is over (the attempt finished). Loops until
   * there is something to send: the tap may hold a chunk back or drop it. Throws when the body must
   * be cut (a non-SSE response failing mid-body); an SSE one ends with an error event instead.
   */
  async read(): Promise<Buffer | null> {
    const s = this.s;
    for (;;) {
      if (this.done) return null;
      let chunk: Buffer;
      if (this.held !== null) {
        chunk = this.held;
        this.held = null;
      } else {
        let r: IteratorResult<Buffer>;
        try {
          r = await s.up.chunks.next();
          s.progress();
        } catch (e) {
          this.done = true;
          if (s.clientSignal.aborted) {
            s.finish('aborted');
            return null;
          }
          const rest = s.tap?.flush() ?? EMPTY;
          s.finish('stream_error');
          if (!s.sse) throw e;
          const err = { error: { message: `upstream worker ${s.workerId} failed mid-stream: ${errText(e)}`, type: 'upstream_error', param: null, code: 'upstream_stream_error' } };
          const event = Buffer.from(`data: ${JSON.stringify(err)}\n\n`, 'utf8');
          return rest.length > 0 ? Buffer.concat([rest, event]) : event;
        }
        if (r.done) {
          this.done = true;
          const rest = s.tap?.flush();
          s.finish(s.outcome);
          return rest && rest.length > 0 ? rest : null;
        }
        chunk = r.value;
      }
      const out = s.tap ? s.tap.push(chunk) : chunk;
      if (out.length > 0) return out;
    }
  }

  /** The client went away: stop the worker's work too. */
  cancel(): void {
    this.done = true;
    this.s.up.destroy();
    this.s.finish('aborted');
  }

  /** As a WHATWG Response, body pulled as the client reads. */
  toResponse(): Response {
    if (this.s.first === null) return new Response(null, { status: this.s.status, headers: this.s.headers as Record<string, string> });
    const body = new ReadableStream<Uint8Array>(
      {
        pull: async (ctrl) => {
          let b: Buffer | null;
          try {
            b = await this.read();
          } catch (e) {
            ctrl.error(e);
            return;
          }
          if (b === null) ctrl.close();
          else ctrl.enqueue(b);
        },
        cancel: () => this.cancel(),
      },
      { highWaterMark: 0 },
    );
    return new Response(body, { status: this.s.status, headers: toHeaderInit(this.s.headers) });
  }

  /**
   * Writes the response onto `out` (the head only with its first bytes, so head and body leave in
   * one write), and returns at once a bodiless marker response for the HTTP framework: its status
   * and worker header are the real ones (the access log reads them), @hono/node-server sends
   * nothing for it. `hold`: keeps the request in flight for a graceful drain (see drain.ts
   * `holdOpen`): at its deadline an SSE stream ends with `sseError` after its last whole event,
   * another body is cut.
   */
  send(out: ServerResponse, extraHeaders: Record<string, string>, hold: ((endEarly: (sseError: string) => void) => () => void) | null): Response {
    let ended = false;
    const onClose = () => {
      if (!this.done) this.cancel();
    };
    const release = hold?.((sseError) => {
      if (ended) return;
      ended = true;
      out.off('close', onClose);
      this.cancel();
      if (this.s.sse) {
        if (!out.headersSent) out.writeHead(this.s.status, this.headersWith(extraHeaders));
        out.end(sseError);
      } else out.destroy();
    }) ?? null;
    out.once('close', onClose);
    const end = () => {
      if (ended) return;
      ended = true;
      out.off('close', onClose);
      release?.();
    };
    this.pump(out, extraHeaders, () => ended).then(end, (e: unknown) => {
      if (!ended) out.destroy(e as Error);
      end();
    });
    const w = this.s.headers['x-kv-router-worker'];
    return markerFor(this.s.status, typeof w === 'string' ? w : null);
  }

  private headersWith(extra: Record<string, string>): RelayHeaders {
    const h: RelayHeaders = { ...this.s.headers };
    for (const k in extra) h[k] = extra[k]!;
    return h;
  }

  private async pump(out: ServerResponse, extra: Record<string, string>, stopped: () => boolean): Promise<void> {
    const headers = this.headersWith(extra);
    if (this.s.first === null) {
      out.writeHead(this.s.status, headers);
      out.end();
      return;
    }
    if (this.s.sse) {
      // Whole events only (as the drain's framer on the Response path): the drain's error event
      // then never lands inside one.
      const framer = new SseFramer();
      out.writeHead(this.s.status, headers);
      for (;;) {
        const b = await this.read();
        if (stopped() || out.destroyed) return;
        if (b === null) {
          const rest = framer.pending;
          if (rest.length > 0) out.end(rest);
          else out.end();
          return;
        }
        const whole = framer.push(b);
        if (whole.length > 0 && !out.write(whole)) await drained(out);
      }
    }
    // One chunk held back: the last one goes out with end() (head, body and end in one write), and
    // a body that is one chunk gets its content-length.
    let prev = await this.read();
    if (stopped() || out.destroyed) return;
    if (prev === null) {
      out.writeHead(this.s.status, headers);
      out.end();
      return;
    }
    let next = await this.read();
    if (stopped() || out.destroyed) return;
    if (next === null) {
      headers['content-length'] = String(prev.length);
      out.writeHead(this.s.status, headers);
      out.end(prev);
      return;
    }
    out.writeHead(this.s.status, headers);
    for (;;) {
      if (!out.write(prev) && !(await drained(out))) return;
      prev = next;
      next = await this.read();
      if (stopped() || out.destroyed) return;
      if (next === null) {
        out.end(prev);
        return;
      }
    }
  }
}

/** Splits SSE bytes at event ends (a blank line); what follows the last one waits for more. */
export class SseFramer {
  private rest: Buffer | null = null;

  push(b: Buffer): Buffer {
    const all = this.rest === null ? b : Buffer.concat([this.rest, b]);
    const end = Math.max(lastEnd(all, '\n\n', 2), lastEnd(all, '\r\n\r\n', 4));
    if (end <= 0) {
      this.rest = all;
      return EMPTY;
    }
    this.rest = end < all.length ? Buffer.from(all.subarray(end)) : null;
    return all.subarray(0, end);
  }

  /** Bytes after the last whole event. */
  get pending(): Buffer {
    return this.rest ?? EMPTY;
  }
}

function lastEnd(b: Buffer, sep: string, len: number): number {
  const i = b.lastIndexOf(sep);
  return i < 0 ? -1 : i + len;
}

/** Resolves true when `out` can take more, false when it closed first. */
function drained(out: ServerResponse): Promise<boolean> {
  return new Promise((resolve) => {
    const ok = () => {
      out.off('close', gone);
      resolve(true);
    };
    const gone = () => {
      out.off('drain', ok);
      resolve(false);
    };
    out.once('drain', ok);
    out.once('close', gone);
  });
}

function toHeaderInit(h: RelayHeaders): [string, string][] | Record<string, string> {
  let multi = false;
  for (const k in h) if (Array.isArray(h[k])) multi = true;
  if (!multi) return h as Record<string, string>;
  const out: [string, string][] = [];
  for (const k in h) {
    const v = h[k]!;
    if (Array.isArray(v)) for (const x of v) out.push([k, x]);
    else out.push([k, v]);
  }
  return out;
}

/**
 * Marker responses, one per (status, worker): never sent, only read (status, worker header) and
 * given the request id by the access log, synchronously, so one object serves every request alike.
 */
const markers = new Map<string, Response>();

function markerFor(status: number, worker: string | null): Response {
  const key = `${status} ${worker ?? ''}`;
  let m = markers.get(key);
  if (!m) {
    if (markers.size >= 1024) markers.clear();
    const headers: Record<string, string> = { [ALREADY_SENT]: 'true' };
    if (worker !== null) headers['x-kv-router-worker'] = worker;
    m = new (nativeResponse())(null, { status, headers });
    markers.set(key, m);
  }
  return m;
}

/**
 * The platform's Response class: @hono/node-server swaps the global for a lightweight subclass
 * (its prototype chain leads to the native one) whose cached body and head it would write itself;
 * the marker must be a native one, which it leaves alone when it says x-hono-already-sent.
 */
function nativeResponse(): typeof Response {
  const R = globalThis.Response;
  const parent = Object.getPrototypeOf(R) as unknown;
  return typeof parent === 'function' && parent !== Function.prototype ? (parent as typeof Response) : R;
}

export function errText(e: unknown): string {
  const err = e as Error & { cause?: { code?: string; message?: string } };
  if (err?.cause?.code) return `${err.cause.code}${err.cause.message ? ` (${err.cause.message})` : ''}`;
  if (err?.cause?.message) return err.cause.message;
  return err?.message ?? String(e);
}
