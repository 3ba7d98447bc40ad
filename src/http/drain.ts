/**
 * Graceful drain for an HTTP service (router and worker): wrap the app's fetch; on `drain()`, new
 * requests get 503 at once, requests in flight get up to a deadline to finish, and server-sent-event
 * streams still open then end with an SSE error event followed by `data: [DONE]`, always at an event
 * boundary (a client never sees half an event). Other bodies still open are cut.
 */

type Fetch = (req: Request, ...rest: never[]) => Response | Promise<Response>;

/** Splits an SSE byte stream's text into whole events: pure, so framing is tested without sockets. */
export class SseFramer {
  private rest = '';
  /** Appends text; returns the complete events it closes (with their blank-line terminators). */
  push(text: string): string {
    this.rest += text;
    const end = Math.max(lastEnd(this.rest, '\n\n'), lastEnd(this.rest, '\r\n\r\n'));
    if (end <= 0) return '';
    const out = this.rest.slice(0, end);
    this.rest = this.rest.slice(end);
    return out;
  }
  /** Text of an event not yet terminated (dropped if the stream is ended early). */
  get pending(): string {
    return this.rest;
  }
}

function lastEnd(s: string, sep: string): number {
  const i = s.lastIndexOf(sep);
  return i < 0 ? -1 : i + sep.length;
}

export function sseErrorEvent(message: string): string {
  const err = { error: { message, type: 'service_unavailable', param: null, code: 'server_shutting_down' } };
  return `data: ${JSON.stringify(err)}\n\ndata: [DONE]\n\n`;
}

interface InFlight {
  /** Ends the response now: SSE with the error event, other bodies cut. */
  endEarly(): void;
}

export interface DrainResult {
  /** Requests that finished within the deadline. */
  finished: number;
  /** Requests ended early at the deadline. */
  ended: number;
}

/** Requests whose handler may write the response itself (see `holdOpen`), by their Request. */
const holds = new WeakMap<Request, (endEarly: (sseError: string) => void) => () => void>();

/**
 * For a handler that writes its response straight onto the node socket instead of returning it as
 * the Response body: keeps `req` in flight for the drain until the returned `finish` is called;
 * at the drain deadline `endEarly` gets the SSE error event to end a stream with (after its last
 * whole event; another body is cut). Null when the request did not come through a drain.
 */
export function holdOpen(req: Request, endEarly: (sseError: string) => void): (() => void) | null {
  return holds.get(req)?.(endEarly) ?? null;
}

export class HttpDrain {
  private draining = false;
  private readonly inFlight = new Set<InFlight>();
  private onIdle: (() => void) | null = null;

  constructor(private readonly what: string) {}

  get isDraining(): boolean {
    return this.draining;
  }

  get size(): number {
    return this.inFlight.size;
  }

  wrap<F extends Fetch>(fetch: F): F {
    return (async (req: Request, ...rest: never[]) => {
      if (this.draining) {
        const body = { error: { message: `${this.what} is shutting down`, type: 'service_unavailable', param: null, code: 'server_shutting_down' } };
        return new Response(JSON.stringify(body), { status: 503, headers: { 'content-type': 'application/json', connection: 'close', 'retry-after': '1' } });
      }
      let done = false;
      const entry: InFlight = { endEarly: () => {} };
      const finish = () => {
        if (done) return;
        done = true;
        this.inFlight.delete(entry);
        if (this.inFlight.size === 0) this.onIdle?.();
      };
      this.inFlight.add(entry);
      let held = false;
      holds.set(req, (endEarly) => {
        held = true;
        entry.endEarly = () => {
          endEarly(sseErrorEvent(`${this.what} is shutting down: the stream was ended before it finished`));
          finish();
        };
        return finish;
      });
      let res: Response;
      try {
        res = await fetch(req, ...rest);
      } catch (err) {
        finish();
        throw err;
      }
      // Written by the handler itself: in flight until it says it is done.
      if (held) return res;
      if (!res.body) {
        finish();
        return res;
      }
      const sse = (res.headers.get('content-type') ?? '').startsWith('text/event-stream');
      return new Response(this.track(res.body, sse, entry, finish), { status: res.status, statusText: res.statusText, headers: res.headers });
    }) as F;
  }

  private track(body: ReadableStream<Uint8Array>, sse: boolean, entry: InFlight, finish: () => void): ReadableStream<Uint8Array> {
    const reader = body.getReader();
    const framer = sse ? new SseFramer() : null;
    const dec = new TextDecoder();
    const enc = new TextEncoder();
    let closed = false;
    let ctl!: ReadableStreamDefaultController<Uint8Array>;
    entry.endEarly = () => {
      if (closed) return;
      closed = true;
      if (framer) {
        ctl.enqueue(enc.encode(sseErrorEvent(`${this.what} is shutting down: the stream was ended before it finished`)));
        ctl.close();
      } else ctl.error(new Error(`${this.what} is shutting down`));
      void reader.cancel('shutting down').catch(() => {});
      finish();
    };
    return new ReadableStream<Uint8Array>(
      {
        start: (c) => {
          ctl = c;
        },
        pull: async () => {
          try {
            const r = await reader.read();
            if (closed) return;
            if (r.done) {
              closed = true;
              if (framer && framer.pending) ctl.enqueue(enc.encode(framer.pending + dec.decode()));
              ctl.close();
              finish();
              return;
            }
            if (!framer) ctl.enqueue(r.value);
            else {
              const whole = framer.push(dec.decode(r.value, { stream: true }));
              if (whole) ctl.enqueue(enc.encode(whole));
            }
          } catch (err) {
            if (closed) return;
            closed = true;
            ctl.error(err);
            finish();
          }
        },
        cancel: (reason) => {
          closed = true;
          finish();
          return reader.cancel(reason);
        },
      },
      { highWaterMark: 0 },
    );
  }

  /** Stops accepting; waits for requests in flight up to `timeoutMs`, then ends the rest. */
  async drain(timeoutMs: number): Promise<DrainResult> {
    this.draining = true;
    const before = this.inFlight.size;
    if (before > 0) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, timeoutMs);
        this.onIdle = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.onIdle = null;
    }
    const ended = this.inFlight.size;
    for (const f of [...this.inFlight]) f.endEarly();
    return { finished: before - ended, ended };
  }
}

interface ClosableServer {
  close(cb?: (err?: Error) => void): unknown;
  closeIdleConnections?: () => void;
  closeAllConnections?: () => void;
}

/**
 * Stops listening and lets the responses still being written (the drain's final events) reach
 * their clients: connections close as they go idle; whatever is left after `graceMs` is cut.
 */
export function closeServer(server: ClosableServer, graceMs = 2000): Promise<void> {
  return new Promise((resolve) => {
    const force = setTimeout(() => server.closeAllConnections?.(), graceMs);
    server.close(() => {
      clearTimeout(force);
      resolve();
    });
    server.closeIdleConnections?.();
  });
}
