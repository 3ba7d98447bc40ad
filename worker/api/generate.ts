/** POST /v1/completions and /v1/chat/completions: validate, tokenize, submit, answer whole or as SSE. */
import { randomUUID } from 'node:crypto';
import { parseChat, type Tokenizer } from '../../src/tokenizer/index.js';
import { resolveModel, type LoraModule } from '../adapters.js';
import type { WorkerConfig } from '../config.js';
import type { GenerateRequest, TextOutput } from '../messages.js';
import type { PipelineClient } from './client.js';
import { ApiError, fromZod } from './errors.js';
import type { WorkerMetrics } from './metrics.js';
import { chunk, fullResponse, usage, usageChunk, type Kind } from './openai.js';
import { ChatBody, CompletionBody } from './schemas.js';
import { rejectUnsupported } from './unsupported.js';

export interface GenerateDeps {
  client: PipelineClient;
  tokenizer: Tokenizer;
  config: WorkerConfig;
  model: string;
  /** The LoRA adapters served by name (--lora); absent: none. */
  adapters?: LoraModule[];
  metrics: WorkerMetrics;
  stopping: () => boolean;
}

interface Prepared {
  req: GenerateRequest;
  stream: boolean;
  includeUsage: boolean;
}

/** What tokenizes prompts off the event loop (a ThreadTokenizer in the server). */
export interface PromptEncoder {
  encode(text: string): Promise<number[]>;
}

/** OpenAI's default for completions. */
const COMPLETIONS_DEFAULT_MAX_TOKENS = 16;

function tooLong(maxModelLen: number, inputTokens: string, param: string): ApiError {
  // vLLM's wording (serving_engine.py _validate_input) for a prompt that leaves no room to generate.
  return new ApiError(
    400,
    `This model's maximum context length is ${maxModelLen} tokens. However, your request has ${inputTokens} input tokens. Please reduce the length of the input messages.`,
    'invalid_request_error',
    param,
    'context_length_exceeded',
  );
}

/** The prompt's token ids; text is refused unencoded when its size alone proves it longer than the window. */
async function encodeBounded(text: string, d: GenerateDeps, enc: PromptEncoder, param: string): Promise<number[]> {
  const maxModelLen = d.config.numBlocks * d.config.blockSize;
  const bytes = Buffer.byteLength(text);
  if (bytes > maxModelLen * d.tokenizer.maxTokenBytes) throw tooLong(maxModelLen, `at least ${Math.ceil(bytes / d.tokenizer.maxTokenBytes)}`, param);
  return enc.encode(text);
}

async function prepare(kind: Kind, raw: unknown, d: GenerateDeps, enc: PromptEncoder): Promise<Prepared> {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ApiError(400, 'the request body must be a JSON object', 'invalid_request_error', null, 'invalid_value');
  rejectUnsupported(raw as Record<string, unknown>);
  const model = (raw as Record<string, unknown>).model;
  const lora = resolveModel(typeof model === 'string' ? model : null, d.model, d.adapters ?? []);
  // vLLM's _check_model (serving_engine.py): the base model or a served adapter, else 404.
  if (lora === undefined) throw new ApiError(404, `The model \`${String(model)}\` does not exist.`, 'NotFoundError', 'model', 404);
  let promptIds: number[];
  let body: CompletionBody | ChatBody;
  let maxTokens: number | null | undefined;
  let promptParam: string;
  if (kind === 'completion') {
    const r = CompletionBody.safeParse(raw);
    if (!r.success) throw fromZod(r.error, raw);
    body = r.data;
    promptParam = 'prompt';
    const p = Array.isArray(r.data.prompt) && r.data.prompt.length === 1 && typeof r.data.prompt[0] !== 'number' ? r.data.prompt[0]! : r.data.prompt;
    promptIds = typeof p === 'string' ? await encodeBounded(p, d, enc, 'prompt') : (p as number[]);
    maxTokens = r.data.max_tokens ?? COMPLETIONS_DEFAULT_MAX_TOKENS;
  } else {
    const r = ChatBody.safeParse(raw);
    if (!r.success) throw fromZod(r.error, raw);
    body = r.data;
    promptParam = 'messages';
    const chat = parseChat(raw as Record<string, unknown>);
    if (chat.kind === 'invalid') throw new ApiError(400, chat.message, 'invalid_request_error', chat.param, 'invalid_value');
    if (chat.kind === 'unroutable') throw new ApiError(400, `this worker serves text-only models: ${chat.reason}`, 'invalid_request_error', 'messages', 'unsupported_content');
    let text: string;
    try {
      text = d.tokenizer.renderChat(chat.input);
    } catch (err) {
      throw new ApiError(400, (err as Error).message, 'invalid_request_error', 'messages');
    }
    promptIds = await encodeBounded(text, d, enc, 'messages');
    maxTokens = r.data.max_completion_tokens ?? r.data.max_tokens;
  }
  if (promptIds.length === 0) throw new ApiError(400, 'the prompt is empty', 'invalid_request_error', promptParam);
  const bad = promptIds.find((t) => t >= d.tokenizer.vocabSize);
  if (bad !== undefined) throw new ApiError(400, `token id ${bad} is out of range (vocabulary size ${d.tokenizer.vocabSize})`, 'invalid_request_error', promptParam);

  // max_model_len is what the KV cache holds: one request never needs more.
  const maxModelLen = d.config.numBlocks * d.config.blockSize;
  const n = promptIds.length;
  if (n >= maxModelLen) throw tooLong(maxModelLen, String(n), promptParam);
  if (maxTokens == null) maxTokens = Math.min(d.config.defaultMaxTokens, maxModelLen - n);
  if (n + maxTokens > maxModelLen) {
    throw new ApiError(
      400,
      `'max_tokens' or 'max_completion_tokens' is too large: ${maxTokens}. This model's maximum context length is ${maxModelLen} tokens and your request has ${n} input tokens (${maxTokens} > ${maxModelLen} - ${n}).`,
      'invalid_request_error',
      'max_tokens',
      'context_length_exceeded',
    );
  }
  const stop = body.stop == null ? [] : typeof body.stop === 'string' ? [body.stop] : body.stop;
  return {
    req: {
      rid: `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomUUID().replaceAll('-', '')}`,
      promptIds,
      maxTokens,
      sampling: { temperature: body.temperature ?? 1, topP: body.top_p ?? 1, seed: body.seed ?? null },
      ignoreEos: body.ignore_eos ?? false,
      stop: stop.filter((s) => s.length > 0),
      cacheSalt: body.cache_salt ?? null,
      lora,
    },
    stream: body.stream ?? false,
    includeUsage: body.stream_options?.include_usage ?? false,
  };
}

function admit(d: GenerateDeps): void {
  if (d.stopping()) throw new ApiError(503, 'the worker is shutting down', 'server_error', null, 'shutting_down');
  const limit = d.config.maxBatch + d.config.maxWaiting;
  if (d.client.inFlight >= limit) {
    throw new ApiError(429, `the worker is full: ${d.client.inFlight} requests running or waiting (max-batch ${d.config.maxBatch} + max-waiting ${d.config.maxWaiting}); retry later`, 'rate_limit_error', null, 'server_full');
  }
}

export async function generate(kind: Kind, raw: unknown, d: GenerateDeps, enc: PromptEncoder, signal: AbortSignal): Promise<Response> {
  const p = await prepare(kind, raw, d, enc);
  admit(d);
  // vLLM answers with the adapter's name for an adapter request.
  const meta = { id: p.req.rid, created: Math.floor(Date.now() / 1000), model: p.req.lora?.name ?? d.model };
  const timer = d.metrics.start(kind);
  return p.stream ? streamResponse(kind, p, d, signal, meta, timer) : wholeResponse(kind, p, d, signal, meta, timer);
}

type Timer = ReturnType<WorkerMetrics['start']>;

function wholeResponse(kind: Kind, p: Prepared, d: GenerateDeps, signal: AbortSignal, meta: { id: string; created: number; model: string }, timer: Timer): Promise<Response> {
  return new Promise((resolve) => {
    let text = '';
    const onAbort = () => {
      d.client.abort(p.req.rid);
      timer.done('abort', null);
      resolve(new Response(null, { status: 499 }));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    d.client.submit(p.req, (o) => {
      timer.token(o);
      text += o.text;
      if (o.finish === null) return;
      signal.removeEventListener('abort', onAbort);
      timer.done(o.finish, o);
      const u = usage(o.promptTokens, o.completionTokens, o.cachedTokens);
      resolve(Response.json(fullResponse(kind, meta, text, o.finish, u)));
    });
  });
}

function streamResponse(kind: Kind, p: Prepared, d: GenerateDeps, signal: AbortSignal, meta: { id: string; created: number; model: string }, timer: Timer): Response {
  const enc = new TextEncoder();
  let finished = false;
  const abort = () => {
    if (finished) return;
    finished = true;
    d.client.abort(p.req.rid);
    timer.done('abort', null);
  };
  const body = new ReadableStream<Uint8Array>({
    start(ctl) {
      const send = (obj: unknown) => ctl.enqueue(enc.encode(`data: ${JSON.stringify(obj)}\n\n`));
      if (kind === 'chat') send(chunk(kind, meta, { role: true, text: '' }, null, p.includeUsage));
      signal.addEventListener('abort', abort, { once: true });
      d.client.submit(p.req, (o: TextOutput) => {
        if (finished) return;
        timer.token(o);
        if (o.finish === null) {
          if (o.text) send(chunk(kind, meta, { text: o.text }, null, p.includeUsage));
          return;
        }
        finished = true;
        signal.removeEventListener('abort', abort);
        timer.done(o.finish, o);
        send(chunk(kind, meta, { text: o.text }, o.finish, p.includeUsage));
        if (p.includeUsage) send(usageChunk(kind, meta, usage(o.promptTokens, o.completionTokens, o.cachedTokens)));
        ctl.enqueue(enc.encode('data: [DONE]\n\n'));
        ctl.close();
      });
    },
    cancel: abort,
  });
  return new Response(body, {
    headers: { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive' },
  });
}
