import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tokenizer, defaultTokenizerFiles } from '../../src/tokenizer/index.js';
import { jsEncoder, nativeEncoder, type TextEncoder } from '../../src/tokenizer/encoder.js';
import { readFile } from 'node:fs/promises';
import { PrefixCachedEncoder, safeBoundary, splitAtBoundary } from '../../src/tokenizer/prefix-cache.js';

const files = defaultTokenizerFiles();
const tok = await Tokenizer.load(files);
const native = nativeEncoder(files.tokenizerJson) as TextEncoder;

// A seeded generator: failures reproduce.
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32);
}
const PIECES = ['hello', ' world', '  ', '\n', '\n\n', '\t', '😀', '👩‍👩‍👧', 'café', '日本', ' 123', '45', "'s", '<think>', '</think>',
  '<|im_end|>', '<|endoftext|>', '<|im_start|>', ' ', 'a', 'Ä', '\u0301', '```', '{"k":', ' "v"}', '\r\n', '.', '!!'];
function content(r: () => number): string {
  const n = Math.floor(r() * 40);
  let s = '';
  for (let i = 0; i < n; i++) s += PIECES[Math.floor(r() * PIECES.length)];
  return s;
}

test('splitAtBoundary cuts just before every boundary and loses nothing', () => {
  const b = '<|im_start|>';
  assert.deepEqual(splitAtBoundary('a<|im_start|>b<|im_start|><|im_start|>c', b), ['a', '<|im_start|>b', '<|im_start|>', '<|im_start|>c']);
  assert.deepEqual(splitAtBoundary('<|im_start|>x', b), ['<|im_start|>x']);
  assert.deepEqual(splitAtBoundary('plain', b), ['plain']);
});

for (const [name, enc] of [['native', native], ['js', jsEncoder(tok)]] as const) {
  test(`${name}: cached ids equal whole-text ids on hundreds of random growing conversations`, async () => {
    const r = rng(name === 'native' ? 16 : 61);
    const cached = new PrefixCachedEncoder(enc, { maxBytes: 1 << 20 });
    const systems = Array.from({ length: 3 }, () => content(r) + content(r));
    let checked = 0;
    for (let conv = 0; conv < (name === 'native' ? 150 : 60); conv++) {
      const messages: { role: string; content: string }[] = [{ role: 'system', content: systems[Math.floor(r() * systems.length)]! }];
      const turns = 1 + Math.floor(r() * 4);
      for (let t = 0; t < turns; t++) {
        messages.push({ role: 'user', content: content(r) });
        const text = tok.applyChatTemplate(messages, { addGenerationPrompt: r() < 0.8 });
        assert.deepEqual(await cached.encode(text), await enc.encode(text, false), `conversation ${conv} turn ${t}`);
        checked++;
        messages.push({ role: 'assistant', content: content(r) });
      }
      // Arbitrary raw text with boundaries anywhere, not only where the template puts them.
      const raw = content(r) + '<|im_start|>' + content(r) + '<|im_start|>' + content(r);
      assert.deepEqual(await cached.encode(raw), await enc.encode(raw, false));
    }
    const s = cached.stats();
    assert.ok(checked > 150 || name === 'js');
    assert.ok(s.hits > 0 && s.reusedSegments > 0, 'later turns reuse the earlier ones');
    assert.ok(s.bytes <= 1 << 20);
  });
}

test('the second turn encodes only the new tail', async () => {
  const calls: string[] = [];
  const spy: TextEncoder = { backend: 'native', encode: (t, a) => (calls.push(t), native.encode(t, a)) };
  const cached = new PrefixCachedEncoder(spy);
  const msgs = [{ role: 'system', content: 'S'.repeat(5000) }, { role: 'user', content: 'q1' }];
  await cached.encode(tok.applyChatTemplate(msgs));
  calls.length = 0;
  const t2 = tok.applyChatTemplate([...msgs, { role: 'assistant', content: 'a1' }, { role: 'user', content: 'q2' }]);
  assert.deepEqual(await cached.encode(t2), await native.encode(t2, false));
  assert.ok(calls.every((c) => !c.includes('SSSS')), 'the system prompt is not encoded again');
});

test('the cache stays within its byte bound', async () => {
  const cached = new PrefixCachedEncoder(native, { maxBytes: 4096 });
  for (let i = 0; i < 50; i++) {
    await cached.encode(tok.applyChatTemplate([{ role: 'system', content: `sys ${i} `.repeat(100) }, { role: 'user', content: 'hi' }]));
  }
  assert.ok(cached.stats().bytes <= 4096);
});

test('add_special_tokens: cached for Qwen3 (adds none), bypassed for a post-processor that adds', async () => {
  const text = tok.applyChatTemplate([{ role: 'system', content: 'sys' }, { role: 'user', content: 'hi' }]);
  const qwen = new PrefixCachedEncoder(native);
  assert.deepEqual(await qwen.encode(text, true), await native.encode(text, true));
  assert.equal(qwen.stats().encodedSegments, 3);
  // A BOS-adding stand-in: each segment would get a BOS if the cache were used.
  const bos: TextEncoder = { backend: 'js', encode: async (t, add) => [...(add ? [1] : []), ...(await native.encode(t, false))] };
  const withBos = new PrefixCachedEncoder(bos);
  assert.deepEqual(await withBos.encode(text, true), await bos.encode(text, true));
  assert.equal(withBos.stats().encodedSegments, 0);
});

test('the random harness catches an unsafe cut: a boundary that is not an added token ("\\n") changes ids', async () => {
  const r = rng(7);
  const unsafe = new PrefixCachedEncoder(native, { boundary: '\n' });
  let differing = 0;
  for (let conv = 0; conv < 40; conv++) {
    const text = tok.applyChatTemplate([{ role: 'system', content: content(r) }, { role: 'user', content: content(r) }]);
    const a = await unsafe.encode(text);
    const b = await native.encode(text, false);
    if (JSON.stringify(a) !== JSON.stringify(b)) differing++;
  }
  assert.ok(differing > 0, 'cutting at "\\n" must split "\\n\\n" tokens somewhere');
});

test('safeBoundary: Qwen3 cuts before <|im_start|>; a missing or stripping token turns the cache off', async () => {
  const json = JSON.parse(await readFile(files.tokenizerJson, 'utf8'));
  assert.equal(safeBoundary(json), '<|im_start|>');
  assert.equal(safeBoundary({ added_tokens: [] }), null);
  assert.equal(safeBoundary({ added_tokens: [{ content: '<|im_start|>', lstrip: true }] }), null);
  const off = new PrefixCachedEncoder(native, { boundary: null });
  const text = tok.applyChatTemplate([{ role: 'user', content: 'x' }]);
  assert.deepEqual(await off.encode(text), await native.encode(text, false));
  assert.equal(off.stats().encodedSegments, 0);
});
