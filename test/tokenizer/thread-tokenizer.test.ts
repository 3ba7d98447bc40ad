/** The worker API's tokenizer thread: same ids as the tokenizer itself, and a dead thread is replaced. */
import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import { defaultTokenizerFiles, Tokenizer } from '../../src/tokenizer/index.js';
import { ThreadTokenizer } from '../../worker/api/tokenize.js';

let tok: Tokenizer;
const enc = new ThreadTokenizer(defaultTokenizerFiles());
before(async () => {
  tok = await Tokenizer.loadDefault();
});
after(() => enc.close());

it('encodes exactly as the tokenizer does, in order', async () => {
  const texts = ['Hello, 世界 🙂', 'The quick brown fox '.repeat(200), 'x'];
  const got = await Promise.all(texts.map((t) => enc.encode(t)));
  assert.deepEqual(got, texts.map((t) => tok.encode(t)));
});

it('a thread that dies fails its jobs and the next job gets a new thread', async () => {
  await enc.warm();
  const pending = enc.encode('lots of words '.repeat(200_000));
  // Kill the thread under the job (what a crash of the thread does).
  await (enc as unknown as { current: { worker: { terminate(): Promise<number> } } }).current.worker.terminate();
  await assert.rejects(pending, /tokenizer thread exited/);
  assert.deepEqual(await enc.encode('still here'), tok.encode('still here'));
});
