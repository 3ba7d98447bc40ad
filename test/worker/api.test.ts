/** The HTTP API and the three-process pipeline end to end, on the sim engine. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Tokenizer } from '../../src/tokenizer/index.js';
import { parseBody } from '../../router/requests.js';
import { tokenizeWith } from '../../router/tokenize-job.js';
import { parseSSE, pidAlive, processArgs, startWorker, waitFor, type WorkerProc } from './helpers.js';

let w: WorkerProc;
let tok: Tokenizer;

before(async () => {
  [w, tok] = await Promise.all([
    startWorker(['--engine', 'sim', '--num-blocks', '512', '--max-batch', '8', '--max-waiting', '8', '--decode-step-ms', '1']),
    Tokenizer.loadDefault(),
  ]);
});
after(async () => {
  await w?.stop('SIGKILL');
});

const PROMPT = 'The quick brown fox jumps over the lazy dog. Le cœur a ses raisons — 世界, 🙂!';

async function complete(body: object) {
  return w.json('/v1/completions', { prompt: PROMPT, max_tokens: 24, seed: 3, ...body });
}

async function stream(path: string, body: object) {
  const r = await w.post(path, { ...body, stream: true });
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type')!, /text\/event-stream/);
  return parseSSE(await r.text());
}

describe('kv-worker HTTP API (sim engine)', () => {
  it('serves /health, /v1/models and /load', async () => {
    assert.deepEqual(await w.json('/health'), { status: 'ok' });
    const models = await w.json('/v1/models');
    assert.equal(models.object, 'list');
    assert.equal(models.data[0].id, 'kv-router-sim');
    const load = await w.json('/load');
    assert.deepEqual(Object.keys(load).sort(), ['cache_usage', 'cached_blocks', 'free_blocks', 'num_blocks', 'pending_prefill_tokens', 'running', 'waiting']);
    assert.equal(load.num_blocks, 512);
  });

  it('completes a text prompt with usage, and reports cached tokens when it repeats', async () => {
    await w.json('/flush_cache', {});
    const a = await complete({});
    assert.equal(a.object, 'text_completion');
    assert.match(a.id, /^cmpl-/);
    assert.equal(a.choices[0].finish_reason, 'length');
    assert.ok(a.choices[0].text.length > 0);
    const n = tok.encode(PROMPT).length;
    assert.deepEqual(a.usage, { prompt_tokens: n, completion_tokens: 24, total_tokens: n + 24, prompt_tokens_details: { cached_tokens: 0 } });
    const b = await complete({});
    assert.equal(b.choices[0].text, a.choices[0].text, 'same seed, same text, cache or not');
    assert.equal(b.usage.prompt_tokens_details.cached_tokens, Math.floor((n - 1) / 16) * 16);
    assert.ok(b.usage.prompt_tokens_details.cached_tokens > 0);
  });

  it('accepts a prompt as token ids', async () => {
    const ids = tok.encode(PROMPT);
    const a = await w.json('/v1/completions', { prompt: ids, max_tokens: 24, seed: 3 });
    const b = await complete({});
    assert.equal(a.choices[0].text, b.choices[0].text);
    assert.equal(a.usage.prompt_tokens, ids.length);
    const c = await w.json('/v1/completions', { prompt: [ids], max_tokens: 2 });
    assert.equal(c.usage.prompt_tokens, ids.length);
  });

  it('streams SSE ending in [DONE], with a final usage chunk, equal to the whole answer', async () => {
    const whole = await complete({});
    const s = await stream('/v1/completions', { prompt: PROMPT, max_tokens: 24, seed: 3, stream_options: { include_usage: true } });
    assert.ok(s.done);
    const usageChunk = s.events.at(-1);
    assert.deepEqual(usageChunk.choices, []);
    assert.equal(usageChunk.usage.completion_tokens, 24);
    const chunks = s.events.slice(0, -1);
    assert.ok(chunks.length > 2);
    for (const c of chunks) assert.equal(c.usage, null);
    assert.equal(chunks.at(-1).choices[0].finish_reason, 'length');
    assert.equal(chunks.map((c) => c.choices[0].text).join(''), whole.choices[0].text);
    const plain = await stream('/v1/completions', { prompt: PROMPT, max_tokens: 4 });
    assert.ok(plain.done);
    assert.ok(plain.events.every((c) => !('usage' in c)), 'no usage without include_usage');
  });

  it('chat completions, whole and streamed, through the chat template', async () => {
    const messages = [{ role: 'user', content: 'Say hi in 世界 style' }];
    const a = await w.json('/v1/chat/completions', { messages, max_tokens: 12, seed: 9 });
    assert.equal(a.object, 'chat.completion');
    assert.equal(a.choices[0].message.role, 'assistant');
    const templ = tok.encode(tok.applyChatTemplate(messages), { addSpecialTokens: false }).length;
    assert.equal(a.usage.prompt_tokens, templ);
    const s = await stream('/v1/chat/completions', { messages, max_tokens: 12, seed: 9 });
    assert.ok(s.done);
    assert.deepEqual(s.events[0].choices[0].delta, { role: 'assistant', content: '' });
    assert.equal(s.events[0].object, 'chat.completion.chunk');
    assert.equal(s.events.map((e) => e.choices[0].delta.content ?? '').join(''), a.choices[0].message.content);
    assert.equal(s.events.at(-1).choices[0].finish_reason, 'length');
  });

  it('chat renders parts, tools, tool calls and template kwargs exactly as the router predicts', async () => {
    const bodies: Record<string, unknown>[] = [
      { messages: [{ role: 'user', content: [{ type: 'text', text: 'Hello' }, { type: 'text', text: 'world' }] }] },
      { messages: [{ role: 'user', content: 'Think?' }], chat_template_kwargs: { enable_thinking: false } },
      {
        messages: [
          { role: 'user', content: 'Weather in Oslo?' },
          { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Oslo"}' } }] },
          { role: 'tool', tool_call_id: 'c1', content: 'snow' },
        ],
        tools: [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }],
        tool_choice: 'none',
      },
      { messages: [{ role: 'user', content: 'Count to 3' }, { role: 'assistant', content: '1, 2,' }], add_generation_prompt: false, continue_final_message: true },
    ];
    for (const body of bodies) {
      const parsed = parseBody('chat', body);
      assert.ok(parsed.ok && parsed.prompt.kind === 'tokenize', JSON.stringify(parsed));
      const predicted = tokenizeWith(tok, parsed.prompt.input).length;
      const r = await w.json('/v1/chat/completions', { ...body, max_tokens: 2 });
      assert.equal(r.usage.prompt_tokens, predicted, JSON.stringify(body));
    }
    // The kwargs reach the worker's template: thinking off is the empty think block longer.
    const on = await w.json('/v1/chat/completions', { messages: [{ role: 'user', content: 'Think?' }], max_tokens: 1 });
    const off = await w.json('/v1/chat/completions', { messages: [{ role: 'user', content: 'Think?' }], max_tokens: 1, chat_template_kwargs: { enable_thinking: false } });
    assert.equal(off.usage.prompt_tokens - on.usage.prompt_tokens, tok.encode('<think>\n\n</think>\n\n', { addSpecialTokens: false }).length);
  });

  it('answers 400 naming each parameter it does not implement, and accepts their no-op defaults', async () => {
    const chat = { messages: [{ role: 'user', content: 'x' }], max_tokens: 1 };
    const rejected: [string, Record<string, unknown>][] = [
      ['/v1/completions', { prompt: 'x', logprobs: 1 }],
      ['/v1/completions', { prompt: 'x', echo: true }],
      ['/v1/chat/completions', { ...chat, logprobs: true }],
      ['/v1/chat/completions', { ...chat, top_logprobs: 3 }],
      ['/v1/chat/completions', { ...chat, response_format: { type: 'json_object' } }],
      ['/v1/chat/completions', { ...chat, tools: [{ type: 'function', function: { name: 'f' } }] }],
      ['/v1/chat/completions', { ...chat, presence_penalty: 0.5 }],
      ['/v1/completions', { prompt: 'x', top_k: 5 }],
      ['/v1/completions', { prompt: 'x', logit_bias: { '11': 5 } }],
      ['/v1/chat/completions', { ...chat, chat_template: '{{ messages[0].content }}' }],
    ];
    for (const [path, body] of rejected) {
      const r = await w.post(path, body);
      const j: any = await r.json();
      const param = Object.keys(body).find((k) => !['prompt', 'messages', 'max_tokens'].includes(k));
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.equal(j.error.param, param, JSON.stringify(j));
      assert.match(j.error.message, new RegExp(param!));
    }
    const accepted: [string, Record<string, unknown>][] = [
      ['/v1/completions', { prompt: 'x', max_tokens: 1, logprobs: null, echo: false, presence_penalty: 0, top_k: -1 }],
      ['/v1/chat/completions', { ...chat, logprobs: false, top_logprobs: 0, response_format: { type: 'text' }, tool_choice: 'auto' }],
    ];
    for (const [path, body] of accepted) assert.equal((await w.post(path, body)).status, 200, JSON.stringify(body));
  });

  it('validates cache_salt as vLLM does and rejects image parts as text-only', async () => {
    for (const cache_salt of ['', 3]) {
      const r = await w.post('/v1/completions', { prompt: 'x', max_tokens: 1, cache_salt });
      assert.equal(r.status, 400);
      assert.equal(((await r.json()) as any).error.param, 'cache_salt');
    }
    assert.equal((await w.post('/v1/completions', { prompt: 'x', max_tokens: 1, cache_salt: 'tenant-a' })).status, 200);
    const img = await w.post('/v1/chat/completions', { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:,' } }] }] });
    assert.equal(img.status, 400);
    const j: any = await img.json();
    assert.equal(j.error.param, 'messages');
    assert.match(j.error.message, /image_url/);
  });

  it('cache_salt isolates tenants: a salted prompt never reuses unsalted or other-salt blocks, and its first block carries the salt', async () => {
    await w.json('/flush_cache', {});
    const ids = tok.encode(PROMPT);
    const cachedOf = async (cache_salt?: string) =>
      (await w.json('/v1/completions', { prompt: ids, max_tokens: 1, ...(cache_salt ? { cache_salt } : {}) })).usage.prompt_tokens_details.cached_tokens;
    const full = Math.floor((ids.length - 1) / 16) * 16;
    assert.equal(await cachedOf(), 0);
    assert.equal(await cachedOf('tenant-a'), 0, 'salted after unsalted: no hit');
    assert.equal(await cachedOf('tenant-b'), 0, 'another salt: no hit');
    assert.equal(await cachedOf('tenant-a'), full, 'same salt again: full hit');
    assert.equal(await cachedOf(), full, 'unsalted again: its own blocks');
    const cache: { parent_hash: string | null; extra_keys?: unknown }[] = await w.json('/cache');
    const roots = cache.filter((b) => b.parent_hash === null);
    assert.equal(roots.length, 3, 'one first block per namespace');
    assert.deepEqual(roots.map((b) => JSON.stringify(b.extra_keys ?? null)).sort(), ['[["tenant-a"]]', '[["tenant-b"]]', 'null']);
  });

  it('a huge prompt gets vLLM\'s context-length 400 while /health keeps answering', async () => {
    const maxModelLen = (await w.json('/v1/models')).data[0].max_model_len;
    assert.equal(maxModelLen, 512 * 16);
    // Over the size bound: refused before any tokenizing.
    const tenMb = 'The quick brown fox jumps. '.repeat(400_000);
    // Under the size bound but far over the window: tokenized (seconds of work) on the API's thread.
    const bigText = 'hello world, again and again. '.repeat(50_000);
    const healthMs: number[] = [];
    let done = false;
    const probe = (async () => {
      while (!done) {
        const t0 = performance.now();
        const h = await w.fetch('/health');
        assert.equal(h.status, 200);
        await h.text();
        healthMs.push(performance.now() - t0);
      }
    })();
    const [big, bigger] = await Promise.all([
      w.post('/v1/completions', { prompt: bigText, max_tokens: 1 }),
      w.post('/v1/chat/completions', { messages: [{ role: 'user', content: tenMb }] }),
    ]);
    const [a, b]: any[] = [await big.json(), await bigger.json()];
    done = true;
    await probe;
    assert.equal(big.status, 400);
    assert.equal(a.error.code, 'context_length_exceeded');
    const n = tok.encode(bigText).length;
    assert.equal(a.error.message, `This model's maximum context length is ${maxModelLen} tokens. However, your request has ${n} input tokens. Please reduce the length of the input messages.`);
    assert.equal(bigger.status, 400);
    assert.equal(b.error.code, 'context_length_exceeded');
    assert.equal(b.error.param, 'messages');
    assert.ok(healthMs.length >= 3, `health answered ${healthMs.length} times during the work`);
    assert.ok(Math.max(...healthMs) < 1000, `slowest /health ${Math.max(...healthMs).toFixed(0)} ms`);
  });

  it('runs concurrent requests in one batch with the same results as alone', async () => {
    const prompts = Array.from({ length: 12 }, (_, i) => `${PROMPT} request number ${i}`);
    const alone = [];
    for (const p of prompts.slice(0, 3)) alone.push(await w.json('/v1/completions', { prompt: p, max_tokens: 40, seed: 1 }));
    const together = await Promise.all(prompts.map((p, i) => (i % 2 ? stream('/v1/completions', { prompt: p, max_tokens: 40, seed: 1 }) : w.json('/v1/completions', { prompt: p, max_tokens: 40, seed: 1 }))));
    const text = (r: any) => ('events' in r ? r.events.map((e: any) => e.choices[0].text).join('') : r.choices[0].text);
    for (let i = 0; i < 3; i++) assert.equal(text(together[i]), alone[i].choices[0].text);
    const [t0, t1] = [text(together[0]), text(together[1])];
    assert.notEqual(t0, t1);
  });

  it('honours stop strings, whole and streamed', async () => {
    const full = (await complete({ max_tokens: 40 })).choices[0].text as string;
    const at = Math.floor(full.length / 2);
    const stopStr = full.slice(at, at + 3);
    const expected = full.slice(0, full.indexOf(stopStr));
    const a = await complete({ max_tokens: 40, stop: [stopStr, 'never-there'] });
    assert.equal(a.choices[0].text, expected);
    assert.equal(a.choices[0].finish_reason, 'stop');
    assert.ok(a.usage.completion_tokens < 40);
    const s = await stream('/v1/completions', { prompt: PROMPT, max_tokens: 40, seed: 3, stop: stopStr });
    assert.equal(s.events.map((e) => e.choices[0].text).join(''), expected);
    assert.equal(s.events.at(-1).choices[0].finish_reason, 'stop');
    await waitFor('the stopped request to leave the scheduler', async () => (await w.json('/load')).running === 0);
  });

  it('never splits a multi-byte character across stream chunks', async () => {
    // Random sim tokens are full of CJK pieces and partial UTF-8 byte tokens.
    const body = { prompt: '多字节字符测试 🙂', max_tokens: 120, seed: 5 };
    const whole = (await w.json('/v1/completions', body)).choices[0].text as string;
    assert.match(whole, /[^\x00-\x7f]/);
    const s = await stream('/v1/completions', body);
    const chunks = s.events.map((e) => e.choices[0].text as string);
    assert.equal(chunks.join(''), whole);
    for (const c of chunks) {
      assert.ok(!/[\ud800-\udbff]$/.test(c) && !/^[\udc00-\udfff]/.test(c), `chunk splits a surrogate pair: ${JSON.stringify(c)}`);
    }
    // A multi-byte character as the stop string.
    const at = [...whole].findIndex((ch, i) => i > 3 && ch.charCodeAt(0) > 0x2e80 && ch !== '\ufffd');
    assert.ok(at > 0, 'the seeded output has a CJK character');
    const ch = [...whole][at]!;
    const cut = (await w.json('/v1/completions', { ...body, stop: ch })).choices[0].text;
    assert.equal(cut, whole.slice(0, whole.indexOf(ch)));
  });

  it('rejects bad bodies with OpenAI-style 400s', async () => {
    const cases: [unknown, string | null][] = [
      ['{not json', null],
      [{ max_tokens: 3 }, 'prompt'],
      [{ prompt: 'x', temperature: 5 }, 'temperature'],
      [{ prompt: 'x', max_tokens: 0 }, 'max_tokens'],
      [{ prompt: 'x', max_tokens: 1.5 }, 'max_tokens'],
      [{ prompt: [1, -2] }, 'prompt'],
      [{ prompt: [1, 999999999] }, 'prompt'],
      [{ prompt: 'x', max_tokens: 9000 }, 'max_tokens'],
      [[1, 2], null],
      [{ prompt: '' }, 'prompt'],
      [{ prompt: 'x', n: 2 }, 'n'],
    ];
    for (const [body, param] of cases) {
      const r = await w.post('/v1/completions', body);
      const j: any = await r.json();
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.equal(j.error.type, 'invalid_request_error');
      assert.equal(typeof j.error.message, 'string');
      if (param) assert.equal(j.error.param, param, JSON.stringify(j));
    }
    const r = await w.post('/v1/chat/completions', { messages: [] });
    assert.equal(r.status, 400);
    assert.equal(((await r.json()) as any).error.param, 'messages');
    const nf = await w.fetch('/nope');
    assert.equal(nf.status, 404);
  });

  it('a client disconnect aborts the request in the scheduler', async () => {
    const ac = new AbortController();
    const r = await w.post('/v1/completions', { prompt: PROMPT, max_tokens: 5000, stream: true }, { signal: ac.signal });
    const reader = r.body!.getReader();
    await reader.read();
    assert.equal((await w.json('/load')).running, 1);
    ac.abort();
    await waitFor('the aborted request to leave the scheduler', async () => (await w.json('/load')).running === 0);
  });

  it('a full server answers 429 at once instead of hanging', async () => {
    const acs = Array.from({ length: 16 }, () => new AbortController());
    const long = acs.map((ac, i) => w.post('/v1/completions', { prompt: `${PROMPT} ${i}`, max_tokens: 3000, stream: true }, { signal: ac.signal }));
    const started = await Promise.all(long);
    const r = await w.post('/v1/completions', { prompt: 'one more', max_tokens: 2 });
    assert.equal(r.status, 429);
    assert.equal(((await r.json()) as any).error.code, 'server_full');
    // The API admits at once; the scheduler's /load catches up when the requests arrive over ipc.
    await waitFor('all 16 to reach the scheduler', async () => {
      const l = await w.json('/load');
      return l.running + l.waiting === 16;
    });
    assert.equal((await w.post('/flush_cache', {})).status, 409, 'no flush while requests run');
    for (const ac of acs) ac.abort();
    await Promise.allSettled(started.map((s) => s.text()));
    await waitFor('the queue to drain', async () => {
      const l = await w.json('/load');
      return l.running + l.waiting === 0;
    });
    // The API frees its slots when the aborts come back from the scheduler: wait until it admits again.
    await waitFor('the API to admit again', async () => {
      const probe = await w.post('/v1/completions', { prompt: 'x', max_tokens: 1 });
      await probe.text();
      return probe.status === 200;
    });
  });

  it('flushes the cache and exposes Prometheus metrics', async () => {
    await complete({});
    assert.ok((await w.json('/cache')).length > 0);
    const f = await w.json('/flush_cache', {});
    assert.equal(f.status, 'ok');
    assert.deepEqual(await w.json('/cache'), []);
    const m = await (await w.fetch('/metrics')).text();
    assert.match(m, /kv_worker_requests_total\{endpoint="completion",finish_reason="length"\} \d+/);
    assert.match(m, /kv_worker_num_requests_running 0/);
    assert.match(m, /kv_worker_time_to_first_token_seconds_bucket/);
  });

  it('stops cleanly on SIGTERM: exit 0, no stage processes, no ipc files', async () => {
    const kids = w.childPids();
    assert.equal(kids.length, 2, `stage processes: ${kids.map((p) => `${p}: ${processArgs(p)}`).join('; ')}`);
    assert.equal(w.ipcFiles().length, 3);
    const { code } = await w.stop('SIGTERM');
    assert.equal(code, 0, w.output);
    await waitFor('stage processes to exit', async () => kids.every((p) => !pidAlive(p)), 5000);
    assert.deepEqual(w.ipcFiles(), []);
  });
});
