/**
 * Through a real sim worker over HTTP (default timing model): a long prompt that arrives while
 * another request is streaming is prefilled in chunks of the step budget minus the running
 * decode's one token, so the decode keeps its token in every step instead of waiting for the
 * whole prefill. Observed from the step structure that GET /load exposes (the prefill tokens
 * still pending), not from durations.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startWorker, waitFor, type WorkerProc } from './helpers.js';

const BUDGET = 256;
const LONG = 8192;
let w: WorkerProc;

before(async () => {
  w = await startWorker(['--engine', 'sim', '--block-size', '16', '--num-blocks', '2048', '--max-num-batched-tokens', String(BUDGET)]);
});

after(async () => {
  await w?.stop('SIGKILL');
});

describe('chunked prefill through the worker', () => {
  it('a long prompt does not stall a streaming decode: every prefill step leaves the decode its token', async () => {
    // A: a short prompt decoding for long enough.
    const ac = new AbortController();
    const a = await w.post('/v1/completions', { prompt: [11, 12, 13, 14, 15, 16, 17, 18], max_tokens: 2000, ignore_eos: true, stream: true }, { signal: ac.signal });
    assert.equal(a.status, 200);
    const reader = a.body!.getReader();
    await reader.read(); // its first chunk: A is running and decoding
    const aDone = (async () => {
      try {
        for (;;) if ((await reader.read()).done) return;
      } catch {
        /* aborted below */
      }
    })();

    // B: a long prompt of ids A does not share.
    const longIds = Array.from({ length: LONG }, (_, i) => 20_000 + i);
    const b = w.post('/v1/completions', { prompt: longIds, max_tokens: 1 }).then((r) => r.json() as Promise<any>);
    let bDone = false;
    void b.then(() => (bDone = true));

    const samples: { running: number; waiting: number; pending: number }[] = [];
    await waitFor('B to finish while /load is sampled', async () => {
      const l = await w.json('/load');
      samples.push({ running: l.running, waiting: l.waiting, pending: l.pending_prefill_tokens });
      return bDone;
    }, 60_000);
    const bBody = await b;
    assert.equal(bBody.usage.prompt_tokens, LONG);
    assert.equal(bBody.usage.prompt_tokens_details?.cached_tokens ?? 0, 0);

    // While B runs next to A mid-prefill, B has computed a whole number of (budget − 1)-token chunks.
    const mid = samples.filter((s) => s.running === 2 && s.waiting === 0 && s.pending > 0 && s.pending < LONG);
    const chunks = new Set(mid.map((s) => (LONG - s.pending) / (BUDGET - 1)));
    assert.ok(chunks.size >= 2, `B seen mid-prefill at several steps (samples: ${JSON.stringify(samples.slice(0, 20))})`);
    for (const k of chunks) assert.ok(Number.isInteger(k), `pending ${LONG - k * (BUDGET - 1)}: not a whole number of ${BUDGET - 1}-token chunks, so A lost its decode token in some step`);

    ac.abort();
    await aDone;
    await waitFor('A to leave the scheduler after its client went away', async () => (await w.json('/load')).running === 0);
  });
});
