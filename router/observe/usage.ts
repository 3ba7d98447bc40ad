/**
 * What the worker reports it had cached (`usage.prompt_tokens_details.cached_tokens`), read from
 * the response as it passes through the router.
 *
 * - Non-streamed: the JSON body is copied aside (bounded) and parsed at its end; the bytes sent to
 *   the client are the worker's, untouched and undelayed.
 * - Streamed (SSE): the final usage chunk. A client that asked for it (`stream_options.include_usage`)
 *   gets the stream unchanged. One that did not gets the request forwarded with include_usage set
 *   (`requestUsage`) and the stream filtered back to what it would have been: the usage chunk
 *   dropped and the `"usage":null` that engines then add to every chunk removed.
 */

/** A response body filter: bytes in, bytes to send out (possibly none), and what it learned. */
export interface UsageTap {
  /** The bytes to send to the client for this upstream chunk (may be empty). */
  push(chunk: Buffer): Buffer;
  /** The upstream body ended: what is still held back. */
  flush(): Buffer;
  /** cached_tokens as reported; null when the response carried none (or could not be read). */
  readonly cachedTokens: number | null;
}

/** A non-streamed body bigger than this is not parsed (usage lost, bytes still flow). */
const MAX_JSON_BYTES = 8 * 1024 * 1024;
/** An SSE event longer than this is passed through unparsed. */
const MAX_EVENT_BYTES = 1024 * 1024;

/** Whether the client's body asks for the final usage chunk of a stream. */
export function clientWantsUsage(json: unknown): boolean {
  const so = (json as { stream_options?: { include_usage?: unknown } } | null)?.stream_options;
  return so !== null && typeof so === 'object' && so.include_usage === true;
}

/**
 * The body to forward with `stream_options.include_usage: true`. Without stream_options the member
 * is added to the raw text (every other byte as the client sent it, big integers included); with
 * stream_options (include_usage false or absent) the object is re-serialised with it set.
 */
export function requestUsage(raw: Uint8Array, json: Record<string, unknown>): Uint8Array {
  if (json.stream_options === undefined) {
    const text = new TextDecoder().decode(raw);
    const end = text.lastIndexOf('}');
    if (end > 0) return new TextEncoder().encode(`${text.slice(0, end)},"stream_options":{"include_usage":true}${text.slice(end)}`);
  }
  const so = json.stream_options && typeof json.stream_options === 'object' ? (json.stream_options as Record<string, unknown>) : {};
  return new TextEncoder().encode(JSON.stringify({ ...json, stream_options: { ...so, include_usage: true } }));
}

/** cached_tokens of a parsed response or chunk; null when absent. */
export function cachedTokensOf(obj: unknown): number | null {
  const u = (obj as { usage?: { prompt_tokens_details?: { cached_tokens?: unknown } | null } | null } | null)?.usage;
  const c = u?.prompt_tokens_details?.cached_tokens;
  return typeof c === 'number' && Number.isFinite(c) && c >= 0 ? c : null;
}

/** Non-streamed: copies the body aside (up to MAX_JSON_BYTES) and reads usage at the end. */
export class JsonUsageTap implements UsageTap {
  private parts: Buffer[] = [];
  private size = 0;
  private cached: number | null = null;

  get cachedTokens(): number | null {
    return this.cached;
  }

  push(chunk: Buffer): Buffer {
    if (this.size <= MAX_JSON_BYTES) {
      this.parts.push(chunk);
      this.size += chunk.length;
    }
    return chunk;
  }

  flush(): Buffer {
    if (this.size <= MAX_JSON_BYTES) {
      try {
        this.cached = cachedTokensOf(JSON.parse(Buffer.concat(this.parts).toString('utf8')));
      } catch {
        this.cached = null;
      }
    }
    this.parts = [];
    return Buffer.alloc(0);
  }
}

/** `"usage":null` as a JSON member, with the comma that joins it to its neighbour. */
const USAGE_OBJECT = /"usage"\s*:\s*\{/;
const NULL_USAGE = /,\s*"usage"\s*:\s*null(?=\s*[,}])|"usage"\s*:\s*null\s*,?/;

/**
 * One SSE event (its text without the blank line that ends it) as the client should see it:
 * null to drop it. `strip`: the router asked for usage, the client did not.
 */
export function filterEvent(event: string, strip: boolean, seen: (cached: number) => void): string | null {
  const data = dataOf(event);
  if (data === null || !data.includes('"usage"')) return event;
  // The common chunk once usage is asked for: `"usage":null`, nothing to read; removed as text.
  if (!USAGE_OBJECT.test(data) && NULL_USAGE.test(data)) return strip ? event.replace(NULL_USAGE, '') : event;
  let obj: unknown;
  try {
    obj = JSON.parse(data);
  } catch {
    return event;
  }
  const c = cachedTokensOf(obj);
  if (c !== null) seen(c);
  if (!strip) return event;
  const o = obj as { usage?: unknown; choices?: unknown[] };
  // The final usage chunk: no choices, only usage (the client would not have had it).
  if (o.usage !== null && o.usage !== undefined && Array.isArray(o.choices) && o.choices.length === 0) return null;
  if (o.usage === null) return event.replace(NULL_USAGE, '');
  return event;
}

/** The payload of an event's data lines, or null when it has none. */
function dataOf(event: string): string | null {
  let out: string | null = null;
  for (const line of event.split(/\r?\n/)) {
    if (!line.startsWith('data:')) continue;
    const v = line.slice(line[5] === ' ' ? 6 : 5);
    out = out === null ? v : `${out}\n${v}`;
  }
  return out;
}

/**
 * Streamed: reads usage from complete events. Not stripping, every chunk goes out as it came
 * (events are parsed from a copy); stripping, complete events go out as they complete (a partial
 * one waits for its end, as it must to be recognised).
 */
export class SseUsageTap implements UsageTap {
  private pending = '';
  private cached: number | null = null;
  private readonly decoder = new TextDecoder();

  constructor(private readonly strip: boolean) {}

  get cachedTokens(): number | null {
    return this.cached;
  }

  push(chunk: Buffer): Buffer {
    this.pending += this.decoder.decode(chunk, { stream: true });
    const out = this.drain();
    return this.strip ? Buffer.from(out, 'utf8') : chunk;
  }

  flush(): Buffer {
    this.pending += this.decoder.decode();
    let out = this.drain();
    if (this.pending.length > 0) {
      out += this.filterOne(this.pending, '');
      this.pending = '';
    }
    return this.strip ? Buffer.from(out, 'utf8') : Buffer.alloc(0);
  }

  /** Complete events out of `pending`, filtered. */
  private drain(): string {
    let out = '';
    for (;;) {
      const m = /\r?\n\r?\n/.exec(this.pending);
      if (!m) break;
      const event = this.pending.slice(0, m.index);
      const sep = m[0];
      this.pending = this.pending.slice(m.index + sep.length);
      out += this.filterOne(event, sep);
    }
    if (this.pending.length > MAX_EVENT_BYTES) {
      out += this.pending;
      this.pending = '';
    }
    return out;
  }

  private filterOne(event: string, sep: string): string {
    const kept = filterEvent(event, this.strip, (c) => (this.cached = c));
    return kept === null ? '' : kept + sep;
  }
}

/** The tap for a response: SSE or JSON; null for responses that carry no usage (errors). */
export function usageTap(sse: boolean, status: number, strip: boolean): UsageTap | null {
  if (status < 200 || status >= 300) return null;
  return sse ? new SseUsageTap(strip) : new JsonUsageTap();
}
