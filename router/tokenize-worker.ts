/** Worker-thread side of the tokenize pool: loads tokenizers on demand and answers encode requests. */
import { parentPort } from 'node:worker_threads';
import { defaultTokenizerFiles } from '../src/tokenizer/tokenizer.js';
import { loadFastTokenizer, type FastTokenizer } from '../src/tokenizer/fast.js';
import type { TokenizeJob, TokenizeReply, TokenizerFiles } from './tokenize-job.js';
import { tokenizeFast } from './tokenize-job.js';

const loaded = new Map<string, Promise<FastTokenizer>>();

function load(files: TokenizerFiles | null): Promise<FastTokenizer> {
  const key = files ? JSON.stringify(files) : 'default';
  let p = loaded.get(key);
  if (!p) {
    p = loadFastTokenizer(files ?? defaultTokenizerFiles());
    loaded.set(key, p);
  }
  return p;
}

parentPort!.on('message', async (job: TokenizeJob) => {
  let reply: TokenizeReply;
  let tok: FastTokenizer;
  try {
    tok = await load(job.files);
  } catch (e) {
    parentPort!.postMessage({ id: job.id, error: `cannot load the tokenizer: ${(e as Error).message}`, server: true } satisfies TokenizeReply);
    return;
  }
  try {
    reply = { id: job.id, tokens: await tokenizeFast(tok, job.input) };
  } catch (e) {
    reply = { id: job.id, error: (e as Error).message };
  }
  parentPort!.postMessage(reply);
});
