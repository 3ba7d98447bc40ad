import { z } from 'zod';
import { parseChat } from '../src/tokenizer/chat.js';
import { formatIssues } from '../src/config/zod-issues.js';
import type { TokenizeInput } from './tokenize-job.js';

const PROMPT_SHAPE = 'must be a string, a non-empty array of strings, of token ids, or of token-id arrays';

/** Token ids checked in one plain loop (zod per element costs milliseconds on 8k-token prompts). */
function isTokenIds(v: unknown): v is number[] {
  if (!Array.isArray(v) || v.length === 0) return false;
  for (let i = 0; i < v.length; i++) {
    const t = v[i];
    if (typeof t !== 'number' || !Number.isInteger(t) || t < 0) return false;
  }
  return true;
}

/** The prompt's accepted shapes: string | string[] | number[] | number[][]. */
function isPrompt(p: unknown): p is string | string[] | number[] | number[][] {
  if (typeof p === 'string') return true;
  if (!Array.isArray(p) || p.length === 0) return false;
  if (typeof p[0] === 'string') return p.every((x) => typeof x === 'string');
  if (typeof p[0] === 'number') return isTokenIds(p);
  return p.every(isTokenIds);
}
const Prompt = z.custom<string | string[] | number[] | number[][]>(isPrompt, { error: PROMPT_SHAPE });

export const CompletionBodySchema = z.object({
  model: z.string().optional(),
  prompt: Prompt,
  stream: z.boolean().optional(),
}).passthrough();

export type Endpoint = 'completions' | 'chat';

/**
 * What routing needs from a request body: token ids as given, what to tokenize, or `unroutable`:
 * the engine can serve it but the router cannot predict its tokens (e.g. an image part), so it
 * is routed by load only and `reason` says why.
 */
export type PromptOf =
  | { kind: 'ids'; ids: number[] }
  | { kind: 'tokenize'; input: TokenizeInput }
  | { kind: 'unroutable'; reason: string };

/** `cacheSalt`: the request's vLLM `cache_salt` (null when absent); blocks of different salts never match. */
export type ParsedBody =
  | { ok: true; prompt: PromptOf; model: string | undefined; stream: boolean; cacheSalt: string | null }
  | { ok: false; message: string; param: string | null };

const CACHE_SALT_ERROR = "Parameter 'cache_salt' must be a non-empty string if provided.";

export function parseBody(endpoint: Endpoint, body: unknown): ParsedBody {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return { ok: false, message: 'body: must be a JSON object', param: null };
  const b = body as Record<string, unknown>;
  // vLLM's check_cache_salt_support (protocol.py): null/absent, or a non-empty string.
  const salt = b.cache_salt;
  if (salt != null && (typeof salt !== 'string' || salt === '')) return { ok: false, message: CACHE_SALT_ERROR, param: 'cache_salt' };
  const cacheSalt = (salt as string | null | undefined) ?? null;
  if (typeof b.model !== 'undefined' && typeof b.model !== 'string') return { ok: false, message: 'model: must be a string', param: 'model' };
  if (typeof b.stream !== 'undefined' && b.stream !== null && typeof b.stream !== 'boolean') return { ok: false, message: 'stream: must be a boolean', param: 'stream' };
  const ok = (prompt: PromptOf): ParsedBody => ({ ok: true, prompt, model: b.model as string | undefined, stream: b.stream === true, cacheSalt });
  if (endpoint === 'completions') {
    // The schema's own checks, done by hand on the hot path (model and stream are checked above);
    // a body they reject goes through the schema for its exact error.
    let p: string | string[] | number[] | number[][];
    if (isPrompt(b.prompt) && (b.stream === undefined || typeof b.stream === 'boolean')) p = b.prompt;
    else {
      const r = CompletionBodySchema.safeParse(body);
      if (!r.success) return bad(r.error, body);
      p = r.data.prompt;
    }
    // A batch of prompts routes by its first prompt.
    if (typeof p === 'string') return ok({ kind: 'tokenize', input: { kind: 'text', text: p } });
    if (typeof p[0] === 'string') return ok({ kind: 'tokenize', input: { kind: 'text', text: p[0] } });
    if (typeof p[0] === 'number') return ok({ kind: 'ids', ids: p as number[] });
    return ok({ kind: 'ids', ids: (p as number[][])[0]! });
  }
  // Exactly what the engines render (the renderer shared with our workers).
  const chat = parseChat(b);
  if (chat.kind === 'invalid') return { ok: false, message: chat.message, param: chat.param };
  if (chat.kind === 'unroutable') return ok({ kind: 'unroutable', reason: chat.reason });
  return ok({ kind: 'tokenize', input: { kind: 'chat', ...chat.input } });
}

function bad(err: z.ZodError, input: unknown): ParsedBody {
  const i = err.issues[0]!;
  const param = i.path.length ? i.path.map(String).join('.') : null;
  return { ok: false, message: formatIssues([i], input), param };
}
