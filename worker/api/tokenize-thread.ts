/** The worker API's tokenizer thread: renders and encodes prompts so the HTTP event loop never waits on a huge one. */
import { parentPort, workerData } from 'node:worker_threads';
import { Tokenizer, type TokenizerLoadOptions } from '../../src/tokenizer/index.js';
import type { EncodeJob, EncodeReply } from './tokenize.js';

const tokenizer = Tokenizer.load(workerData as TokenizerLoadOptions);

parentPort!.on('message', async (job: EncodeJob) => {
  let reply: EncodeReply;
  try {
    const tok = await tokenizer;
    const ids = job.kind === 'text' ? tok.encode(job.text) : tok.encodeChat(job.input);
    reply = { id: job.id, ids: Uint32Array.from(ids) };
  } catch (e) {
    reply = { id: job.id, error: (e as Error).message };
  }
  parentPort!.postMessage(reply, 'ids' in reply ? [reply.ids.buffer as ArrayBuffer] : []);
});
