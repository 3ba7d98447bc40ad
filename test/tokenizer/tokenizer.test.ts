import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile, rm, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Tokenizer, IncrementalDetokenizer, StopStringMatcher, defaultTokenizerFiles } from '../../src/tokenizer/index.js';

let tok: Tokenizer;
before(async () => {
  tok = await Tokenizer.loadDefault();
});

const MULTIBYTE = '🦜🫠🧑‍🚀 👨‍👩‍👧 龘靐齉 𠀋𡈽 鬱 ℵ ∮ ⌘ ☃ héllo wörld';

test('default tokenizer: vocab size, eos ids', () => {
  assert.equal(tok.vocabSize, 151669);
  assert.deepEqual(tok.eosTokenIds, [151645, 151643]); // <|im_end|>, <|endoftext|>
});

test('encode/decode round trips, no special tokens added', () => {
  for (const s of ['Hello world', 'The quick brown fox.\n\n  indented', MULTIBYTE, '']) {
    const ids = tok.encode(s);
    assert.equal(tok.decode(ids), s);
  }
  assert.deepEqual(tok.encode('Hello world'), [9707, 1879]);
});

test('special tokens: encoded as one id, skipped on request', () => {
  const ids = tok.encode('hi<|im_end|>');
  assert.equal(ids.at(-1), 151645);
  assert.equal(tok.decode(ids), 'hi<|im_end|>');
  assert.equal(tok.decode(ids, { skipSpecialTokens: true }), 'hi');
});

test('chat template for a 2-message chat', () => {
  const text = tok.applyChatTemplate(
    [
      { role: 'system', content: 'You are helpful.' },
      { role: 'user', content: 'Hi there' },
    ],
    { addGenerationPrompt: true },
  );
  assert.equal(
    text,
    '<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n',
  );
  const ids = tok.encode(text);
  assert.equal(ids[0], 151644); // <|im_start|>
});

test('fromFile picks up the tokenizer_config.json beside tokenizer.json', async () => {
  const t = await Tokenizer.fromFile(defaultTokenizerFiles().tokenizerJson);
  assert.deepEqual(t.eosTokenIds, tok.eosTokenIds);
  assert.ok(t.chatTemplate);
});

test('a tokenizer without chat template fails clearly', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kvr-tok-'));
  try {
    const files = defaultTokenizerFiles();
    const cfg = JSON.parse(await readFile(files.tokenizerConfig, 'utf8'));
    delete cfg.chat_template;
    await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify(cfg));
    const t = await Tokenizer.load({ tokenizerJson: files.tokenizerJson, tokenizerConfig: join(dir, 'tokenizer_config.json') });
    assert.throws(() => t.applyChatTemplate([{ role: 'user', content: 'x' }]), /no chat template/);
    assert.equal(t.decode(t.encode('round trip')), 'round trip');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('incremental decoding of multi-byte text never emits U+FFFD and equals the full decode', () => {
  const ids = tok.encode(MULTIBYTE);
  // Several of these tokens end mid-character: the detokenizer must wait for the rest.
  assert.ok(ids.some((id) => tok.decode([id]).includes('\uFFFD')));
  for (const chunk of [1, 2, 3]) {
    const d = new IncrementalDetokenizer(tok);
    let out = '';
    for (let i = 0; i < ids.length; i += chunk) {
      const piece = d.push(ids.slice(i, i + chunk));
      assert.ok(!piece.includes('\uFFFD'), `piece ${JSON.stringify(piece)} has U+FFFD`);
      out += piece;
    }
    out += d.finish();
    assert.equal(out, MULTIBYTE);
  }
});

test('incremental decoding with prompt context and special tokens skipped', () => {
  const prompt = tok.encode('<|im_start|>user\nSay it<|im_end|>\n<|im_start|>assistant\n');
  const gen = [...tok.encode(' Héllo, 世界 🦜!'), 151645];
  const d = new IncrementalDetokenizer(tok, { promptIds: prompt });
  let out = '';
  for (const id of gen) out += d.push(id);
  out += d.finish();
  assert.equal(out, ' Héllo, 世界 🦜!');
});

test('an unfinished character at the end is flushed by finish()', () => {
  const ids = tok.encode('ab🦜');
  const d = new IncrementalDetokenizer(tok);
  let out = d.push(ids.slice(0, -1));
  assert.ok(!out.includes('\uFFFD'));
  out += d.finish();
  assert.equal(out, tok.decode(ids.slice(0, -1)));
});

test('stop strings: text ends before the stop string, prefixes are held back', () => {
  const text = 'Once upon a time, THE END. More text';
  const ids = tok.encode(text);
  const d = new IncrementalDetokenizer(tok, { stop: ['THE END', 'never'] });
  const pieces: string[] = [];
  for (const id of ids) pieces.push(d.push(id));
  pieces.push(d.finish());
  assert.equal(pieces.join(''), 'Once upon a time, ');
  assert.equal(d.stoppedBy, 'THE END');
  assert.equal(d.push(tok.encode(' more')), '');
  // A stop-string prefix that turns out not to be one is released later, intact.
  const d2 = new IncrementalDetokenizer(tok, { stop: ['THE END'] });
  let out = '';
  for (const id of tok.encode('THE ENigma THE')) out += d2.push(id);
  assert.equal(out, 'THE ENigma ');
  out += d2.finish();
  assert.equal(out, 'THE ENigma THE');
  assert.equal(d2.stoppedBy, null);
});

test('StopStringMatcher: stop split across pushes, earliest stop wins', () => {
  const m = new StopStringMatcher(['</s>', 'STOP']);
  assert.deepEqual(m.push('abc<'), { text: 'abc', stop: null });
  assert.deepEqual(m.push('/'), { text: '', stop: null });
  assert.deepEqual(m.push('x'), { text: '</x', stop: null });
  assert.deepEqual(m.push('yy STO'), { text: 'yy ', stop: null });
  assert.deepEqual(m.push('P</s>'), { text: '', stop: 'STOP' });
  const m2 = new StopStringMatcher(['b', 'abc']);
  assert.deepEqual(m2.push('xabc'), { text: 'x', stop: 'abc' });
});
