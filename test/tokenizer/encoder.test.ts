import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tokenizer, defaultTokenizerFiles } from '../../src/tokenizer/index.js';
import { jsEncoder, nativeEncoder, pickEncoder } from '../../src/tokenizer/encoder.js';

const files = defaultTokenizerFiles();
const tok = await Tokenizer.load(files);

function corpus(): string[] {
  const chat = tok.applyChatTemplate([
    { role: 'system', content: 'You are a helpful assistant. 日本語 😀👩‍👩‍👧 café naïve' },
    { role: 'user', content: 'Explain <think> and </think> and <|endoftext|> inline.' },
    { role: 'assistant', content: '<think>\nhmm\n</think>\n\nSure:\n\n```ts\nconst x = 1;\n```' },
    { role: 'user', content: '   leading   spaces\t\ttabs\r\n\r\nand CRLF   ' },
  ]);
  const long = Array.from({ length: 2000 }, (_, i) => `word${i} ${i % 7 === 0 ? '🙂' : ''}\n`).join('');
  return [
    '', ' ', '\n', '     ', '\n\n\n\t\t  \u00a0 \u3000', 'Hello, world!', "I'm don't we'll they've",
    '😀😃😄😁🤖👨‍👩‍👧‍👦🏳️‍🌈', 'Ｆｕｌｌｗｉｄｔｈ ｔｅｘｔ', 'e\u0301 é (NFD vs NFC)', 'مرحبا بالعالم', 'Привет мир', '中文测试，标点。',
    '<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n', '<|im_start|><|im_end|><|endoftext|>', 'x<|im_end|>y',
    '<tool_call>\n{"name": "f"}\n</tool_call>', '12345678901234567890 3.14159', '\u0000\u0001\u007f\ud7ff\ue000',
    chat, long, long.repeat(10),
  ];
}

test('the native tokenizers binding loads here and is the one picked', () => {
  const lines: string[] = [];
  const e = pickEncoder(tok, files.tokenizerJson, { log: (l) => lines.push(l) });
  assert.equal(e.backend, 'native');
  assert.match(lines.join('\n'), /tokenizer: native/);
  const js = pickEncoder(tok, files.tokenizerJson, { prefer: 'js', log: (l) => lines.push(l) });
  assert.equal(js.backend, 'js');
  assert.match(lines.at(-1)!, /pure-JS/);
});

test('a binding that does not load falls back with a reason', () => {
  const n = nativeEncoder('/nonexistent/tokenizer.json');
  assert.ok(n instanceof Error);
});

test('native and pure-JS give identical ids on a varied corpus, with and without add_special_tokens', async () => {
  const n = nativeEncoder(files.tokenizerJson);
  assert.ok(!(n instanceof Error));
  const js = jsEncoder(tok);
  for (const text of corpus()) {
    for (const add of [true, false]) {
      const a = await n.encode(text, add);
      const b = await js.encode(text, add);
      assert.deepEqual(a, b, `ids differ for ${JSON.stringify(text.slice(0, 60))} add=${add}`);
    }
  }
  // Special tokens in the text are single ids in both.
  assert.deepEqual(await n.encode('<|im_start|>', false), [tok.tokenToId('<|im_start|>')]);
});
