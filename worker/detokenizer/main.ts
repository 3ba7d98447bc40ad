/**
 * The detokenizer process: token ids from the scheduler become text for the API,
 * incrementally (never half a UTF-8 character) and cut at stop strings.
 */
import { IncrementalDetokenizer } from '../../src/tokenizer/index.js';
import { PullQueue, PushQueue } from '../../src/queues/index.js';
import type { ApiInMsg, DetokInMsg, SeqOutput, TextOutput } from '../messages.js';
import { onShutdown, readSpec, sendReady, startOrDie } from '../proc.js';
import { loadWorkerTokenizer } from '../tokenizer.js';

interface State {
  detok: IncrementalDetokenizer;
  promptTokens: number;
  cachedTokens: number;
  completionTokens: number;
  /** A stop string ended it: later outputs are dropped until the scheduler's final one. */
  done: boolean;
}

const { config, endpoints } = readSpec();
const tokenizer = await startOrDie('detokenizer', loadWorkerTokenizer(config));
const inbox = await PullQueue.bind<DetokInMsg>(endpoints.detokenizer);
const toApi = PushQueue.connect<ApiInMsg>(endpoints.api);
onShutdown('detokenizer', async () => {
  inbox.close();
  toApi.close();
}, endpoints);

const states = new Map<string, State>();

function process1(o: SeqOutput): TextOutput | null {
  let st = states.get(o.rid);
  if (!st) {
    if (!o.start) return null; // the rest of a request whose state is gone
    st = {
      detok: new IncrementalDetokenizer(tokenizer, { stop: o.start.stop, promptIds: o.start.promptTail }),
      promptTokens: o.start.promptTokens,
      cachedTokens: o.start.cachedTokens,
      completionTokens: 0,
      done: false,
    };
    states.set(o.rid, st);
  }
  if (o.finish !== null) states.delete(o.rid);
  if (st.done) return null;
  st.completionTokens += o.ids.length;
  let text = st.detok.push(o.ids);
  if (!st.detok.stopped && o.finish !== null) text += st.detok.finish();
  let finish = o.finish;
  if (st.detok.stopped) {
    st.done = true;
    finish = 'stop';
  }
  return {
    rid: o.rid,
    text,
    finish,
    promptTokens: st.promptTokens,
    cachedTokens: st.cachedTokens,
    completionTokens: st.completionTokens,
    stoppedByString: st.detok.stopped && o.finish === null,
  };
}

sendReady();
for await (const msg of inbox) {
  if (msg.type === 'ctl') {
    void toApi.send(msg);
    continue;
  }
  const outs: TextOutput[] = [];
  for (const o of msg.outs) {
    const t = process1(o);
    if (t) outs.push(t);
  }
  if (outs.length > 0) void toApi.send({ type: 'outs', outs });
}
