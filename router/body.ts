import type { IncomingMessage } from 'node:http';

/** A request body over the limit: answered 413 before the rest of it is read. */
export class BodyTooLarge extends Error {
  override name = 'BodyTooLarge';
  constructor(readonly limit: number) {
    super(`request body over ${limit} bytes`);
  }
}

/**
 * Reads a request body, counting bytes as they stream in: a declared content-length over the
 * limit is refused before reading, and a chunked body stops being read (and is cancelled) the
 * moment it passes the limit, so no oversized body is ever buffered whole.
 */
export async function readBody(req: Request, limit: number): Promise<Uint8Array> {
  const declared = Number(req.headers.get('content-length') ?? 0);
  if (declared > limit) {
    await req.body?.cancel().catch(() => {});
    throw new BodyTooLarge(limit);
  }
  if (!req.body) return new Uint8Array(0);
  const reader = req.body.getReader();
  const parts: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      await reader.cancel().catch(() => {});
      throw new BodyTooLarge(limit);
    }
    parts.push(value);
  }
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(total);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.byteLength;
  }
  return out;
}

/**
 * `readBody` on the node request itself (no web stream in between): the same limit, checked the
 * same way. Past the limit it stops reading; the HTTP server discards the rest after the 413.
 */
export function readNodeBody(req: IncomingMessage, limit: number): Promise<Uint8Array> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) return Promise.reject(new BodyTooLarge(limit));
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let total = 0;
    const done = (err: Error | null) => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
      if (err) reject(err);
      else resolve(parts.length === 1 ? parts[0]! : Buffer.concat(parts, total));
    };
    const onData = (b: Buffer) => {
      total += b.length;
      if (total > limit) {
        req.pause();
        done(new BodyTooLarge(limit));
        return;
      }
      parts.push(b);
    };
    const onEnd = () => done(null);
    const onError = (e: Error) => done(e);
    const onClose = () => {
      if (!req.complete) done(new Error('the client closed the request before its body ended'));
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
    if (req.readableEnded) done(null);
  });
}
