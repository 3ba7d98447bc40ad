/** The worker API's tokenizer thread: encodes prompts so the HTTP event loop never waits on a huge one. */
import { parentPort, workerData } from 'node:worker_threads';
import { loadFastTokenizer, type FastTokenizer, type TokenizerLoadOptions } from '../../src/tokenizer/index.js';
import type { EncodeJob, EncodeReply } from './tokenize.js';

const tokenizer = loadFastTokenizer(workerData as TokenizerLoadOptions);
// A load failure is answered per job below.
tokenizer.catch(() => {});

parentPort!.on('message', async (job: EncodeJob) => {
  let reply: EncodeReply;
  let tok: FastTokenizer;
  try {
    tok = await tokenizer;
  } catch (e) {
    parentPort!.postMessage({ id: job.id, error: `cannot load the tokenizer: ${(e as Error).message}`, server: true } satisfies EncodeReply);
    return;
  }
  try {
    // Chat text holds `<|im_start|>`: its earlier turns come from the prefix cache.
    const ids = await tok.encoder.encode(job.text, true);
    reply = { id: job.id, ids: Uint32Array.from(ids) };
  } catch (e) {
    reply = { id: job.id, error: (e as Error).message };
  }
  parentPort!.postMessage(reply, 'ids' in reply ? [reply.ids.buffer as ArrayBuffer] : []);
});
