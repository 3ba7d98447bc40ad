/** Worker-thread side of the tokenize pool: loads tokenizers on demand and answers encode requests. */
import { parentPort, workerData } from 'node:worker_threads';
import { defaultTokenizerFiles } from '../src/tokenizer/tokenizer.js';
import { loadFastTokenizer, type FastTokenizer } from '../src/tokenizer/fast.js';
import type { TokenizeJob, TokenizeReply, TokenizerFiles } from './tokenize-job.js';
import { tokenizeFast } from './tokenize-job.js';

if ((workerData as { crashOnStartForTest?: boolean } | undefined)?.crashOnStartForTest) throw new Error('tokenizer thread crashed on start (test)');

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

function injectFault(fault: NonNullable<TokenizeJob['faultForTest']>): void {
  if (fault === 'exit') process.exit(3);
  if (fault === 'throw') throw new Error('tokenizer thread fault (test)');
  for (;;); // 'hang': busy forever, like a tokenizer stuck on pathological input
}

// Jobs run one at a time, in posting order (the native encoder is async): the pool relies on it, a
// thread that dies is blamed on its oldest outstanding job and the others are retried innocent.
let queue: Promise<void> = Promise.resolve();
parentPort!.on('message', (job: TokenizeJob) => {
  queue = queue.then(() => handle(job));
});

async function handle(job: TokenizeJob): Promise<void> {
  let reply: TokenizeReply;
  let tok: FastTokenizer;
  try {
    tok = await load(job.files);
  } catch (e) {
    parentPort!.postMessage({ id: job.id, error: `cannot load the tokenizer: ${(e as Error).message}`, server: true } satisfies TokenizeReply);
    return;
  }
  if (job.faultForTest) injectFault(job.faultForTest);
  try {
    const tokens = Uint32Array.from(await tokenizeFast(tok, job.input));
    parentPort!.postMessage({ id: job.id, tokens } satisfies TokenizeReply, [tokens.buffer]);
    return;
  } catch (e) {
    reply = { id: job.id, error: (e as Error).message };
  }
  parentPort!.postMessage(reply);
}
parentPort!.postMessage({ ready: true } satisfies TokenizeReply);
