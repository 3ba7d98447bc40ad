/** The worker's HTTP API (hono). */
import { Hono, type Context } from 'hono';
import { modelCards } from '../adapters.js';
import { ApiError } from './errors.js';
import { generate, type GenerateDeps } from './generate.js';
import { EncodeError, type ThreadTokenizer } from './tokenize.js';
import { requestIdAndAccessLog } from '../../src/http/access-log.js';
import { methodNotAllowed } from '../../src/http/method-not-allowed.js';
import { loggerFromEnv, type Logger } from '../../src/log/logger.js';

/**
 * `accessLog`: where the line per request (with the request id the router sent) goes; none without.
 * `encoder`: the prompt tokenizer thread, warmed by the caller before it listens.
 */
export function createApp(d: GenerateDeps, opts: { accessLog?: Logger; encoder: ThreadTokenizer }): Hono {
  const app = new Hono();
  const log = loggerFromEnv('kv-worker api');
  app.use('*', requestIdAndAccessLog(opts.accessLog ?? null));
  // Prompts are encoded on a thread: a huge one must not stop /health and every other request.
  const enc = opts.encoder;

  const post = (path: string, kind: 'completion' | 'chat') =>
    app.post(path, async (c) => generate(kind, await jsonBody(c), d, enc, c.req.raw.signal));
  post('/v1/completions', 'completion');
  post('/v1/chat/completions', 'chat');

  app.get('/v1/models', (c) =>
    c.json({
      object: 'list',
      // vLLM's ModelCard: max_model_len is the longest prompt + completion one request may have.
      data: modelCards(d.model, d.config.numBlocks * d.config.blockSize, d.adapters ?? []),
    }),
  );
  app.get('/health', (c) => (d.stopping() ? c.json({ status: 'stopping' }, 503) : c.json({ status: 'ok' })));
  app.get('/load', async (c) => c.json((await d.client.ctl('load')).load));
  app.get('/cache', async (c) => {
    const { blocks } = await d.client.ctl('cache');
    return c.json(blocks);
  });
  app.post('/flush_cache', async (c) => {
    const r = await d.client.ctl('flush');
    if (!r.ok) throw new ApiError(409, r.message, 'invalid_request_error', null, 'requests_in_flight');
    return c.json({ status: 'ok', message: r.message });
  });
  app.get('/metrics', async (c) => c.text(await d.metrics.registry.metrics(), 200, { 'content-type': d.metrics.registry.contentType }));

  methodNotAllowed(app, (c, allow) => c.json(new ApiError(405, `${c.req.method} is not allowed on ${c.req.path} (allowed: ${allow.join(', ')})`, 'invalid_request_error', null, 'method_not_allowed').body(), 405));
  app.notFound((c) => c.json(new ApiError(404, `no route ${c.req.method} ${c.req.path}`).body(), 404));
  app.onError((err, c) => {
    if (err instanceof ApiError) return c.json(err.body(), err.status);
    if (err instanceof EncodeError) return c.json(new ApiError(400, `cannot tokenize the prompt: ${err.message}`).body(), 400);
    log.error(`internal error: ${(err as Error).stack ?? String(err)}`);
    return c.json(new ApiError(500, (err as Error).message, 'server_error').body(), 500);
  });
  return app;
}

async function jsonBody(c: Context): Promise<unknown> {
  try {
    return await c.req.json();
  } catch {
    throw new ApiError(400, 'the request body is not valid JSON', 'invalid_request_error', null, 'invalid_json');
  }
}
