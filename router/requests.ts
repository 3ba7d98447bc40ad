import { z } from 'zod';
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
const Prompt = z.custom<string | string[] | number[] | number[][]>((p) => {
  if (typeof p === 'string') return true;
  if (!Array.isArray(p) || p.length === 0) return false;
  if (typeof p[0] === 'string') return p.every((x) => typeof x === 'string');
  if (typeof p[0] === 'number') return isTokenIds(p);
  return p.every(isTokenIds);
}, { error: PROMPT_SHAPE });

export const CompletionBodySchema = z.object({
  model: z.string().optional(),
  prompt: Prompt,
  stream: z.boolean().optional(),
}).passthrough();

const contentPart = z.object({ type: z.string(), text: z.string().optional() }).passthrough();
const message = z.object({
  role: z.string().min(1),
  content: z.union([z.string(), z.array(contentPart), z.null()]).optional(),
}).passthrough();

export const ChatBodySchema = z.object({
  model: z.string().optional(),
  messages: z.array(message, { error: 'must be an array of {role, content} messages' }).min(1, 'must not be empty'),
  stream: z.boolean().optional(),
  chat_template_kwargs: z.record(z.string(), z.unknown()).optional(),
}).passthrough();

export type Endpoint = 'completions' | 'chat';

/** What routing needs from a request body: token ids as given, or what to tokenize. */
export type PromptOf = { kind: 'ids'; ids: number[] } | { kind: 'tokenize'; input: TokenizeInput };

export type ParsedBody = { ok: true; prompt: PromptOf; model: string | undefined; stream: boolean } | { ok: false; message: string; param: string | null };

export function parseBody(endpoint: Endpoint, body: unknown): ParsedBody {
  if (endpoint === 'completions') {
    const r = CompletionBodySchema.safeParse(body);
    if (!r.success) return bad(r.error);
    const p = r.data.prompt;
    // A batch of prompts routes by its first prompt.
    if (typeof p === 'string') return ok({ kind: 'tokenize', input: { kind: 'text', text: p } }, r.data);
    if (typeof p[0] === 'string') return ok({ kind: 'tokenize', input: { kind: 'text', text: p[0] } }, r.data);
    if (typeof p[0] === 'number') return ok({ kind: 'ids', ids: p as number[] }, r.data);
    return ok({ kind: 'ids', ids: (p as number[][])[0]! }, r.data);
  }
  const r = ChatBodySchema.safeParse(body);
  if (!r.success) return bad(r.error);
  // Exactly what the workers render: role and text content only.
  const messages = r.data.messages.map((m) => ({ role: m.role, content: textOf(m.content) }));
  return ok({ kind: 'tokenize', input: { kind: 'chat', messages, extra: r.data.chat_template_kwargs } }, r.data);
}

/** Message content as the template sees it: text parts joined (what servers do for text-only models). */
function textOf(c: string | { type: string; text?: string }[] | null | undefined): string {
  if (typeof c === 'string') return c;
  if (!c) return '';
  return c.filter((p) => p.type === 'text').map((p) => p.text ?? '').join('');
}

function ok(prompt: PromptOf, body: { model?: string | undefined; stream?: boolean | undefined }): ParsedBody {
  return { ok: true, prompt, model: body.model, stream: body.stream === true };
}

function bad(err: z.ZodError): ParsedBody {
  const i = err.issues[0]!;
  const param = i.path.length ? i.path.map(String).join('.') : null;
  return { ok: false, message: `${param ?? 'body'}: ${i.message}`, param };
}
