/** Worker-thread side of the tokenize pool: loads tokenizers on demand and answers encode requests. */
import { parentPort } from 'node:worker_threads';
import { Tokenizer } from '../src/tokenizer/tokenizer.js';
import type { TokenizeJob, TokenizeReply, TokenizerFiles } from './tokenize-job.js';
import { tokenizeWith } from './tokenize-job.js';

const loaded = new Map<string, Promise<Tokenizer>>();

function load(files: TokenizerFiles | null): Promise<Tokenizer> {
  const key = files ? JSON.stringify(files) : 'default';
  let p = loaded.get(key);
  if (!p) {
    p = files ? Tokenizer.load({ tokenizerJson: files.tokenizerJson, tokenizerConfig: files.tokenizerConfig }) : Tokenizer.loadDefault();
    loaded.set(key, p);
  }
  return p;
}

parentPort!.on('message', async (job: TokenizeJob) => {
  let reply: TokenizeReply;
  let tok: Tokenizer;
  try {
    tok = await load(job.files);
  } catch (e) {
    parentPort!.postMessage({ id: job.id, error: `cannot load the tokenizer: ${(e as Error).message}`, server: true } satisfies TokenizeReply);
    return;
  }
  try {
    reply = { id: job.id, tokens: tokenizeWith(tok, job.input) };
  } catch (e) {
    reply = { id: job.id, error: (e as Error).message };
  }
  parentPort!.postMessage(reply);
});
