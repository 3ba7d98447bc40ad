/** Worker-thread side of the tokenize pool: loads tokenizers on demand and answers encode requests. */
import { parentPort, workerData } from 'node:worker_threads';
import { Tokenizer } from '../src/tokenizer/tokenizer.js';
import type { TokenizeJob, TokenizeReply, TokenizerFiles } from './tokenize-job.js';
import { tokenizeWith } from './tokenize-job.js';

if ((workerData as { crashOnStartForTest?: boolean } | undefined)?.crashOnStartForTest) throw new Error('tokenizer thread crashed on start (test)');

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

function injectFault(fault: NonNullable<TokenizeJob['faultForTest']>): void {
  if (fault === 'exit') process.exit(3);
  if (fault === 'throw') throw new Error('tokenizer thread fault (test)');
  for (;;); // 'hang': busy forever, like a tokenizer stuck on pathological input
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
  if (job.faultForTest) injectFault(job.faultForTest);
  try {
    reply = { id: job.id, tokens: tokenizeWith(tok, job.input) };
  } catch (e) {
    reply = { id: job.id, error: (e as Error).message };
  }
  parentPort!.postMessage(reply);
});
parentPort!.postMessage({ ready: true } satisfies TokenizeReply);
