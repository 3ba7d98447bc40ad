/** The worker on the onnx engine with the generated default model: real inference, real prefix reuse. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { BIN, startWorker, type WorkerProc } from './helpers.js';

let w: WorkerProc;

before(async () => {
  w = await startWorker(['--engine', 'onnx', '--num-blocks', '128', '--max-batch', '4'], 120_000);
});
after(async () => {
  if (w) assert.equal((await w.stop('SIGTERM')).code, 0, w.output);
});

// 40 token ids: two full 16-token blocks and a partial one.
const PROMPT = Array.from({ length: 40 }, (_, i) => 1000 + ((i * 7919) % 5000));

const greedy = (prompt: number[], max = 8) => w.json('/v1/completions', { prompt, max_tokens: max, temperature: 0, ignore_eos: true });

describe('kv-worker --engine onnx', () => {
  it('runs a real completion; a repeated prompt reports cached tokens and the same greedy text', async () => {
    const a = await w.json('/v1/completions', { prompt: 'Once upon a time, in a land far away, there lived a small dragon.', max_tokens: 8, temperature: 0 });
    assert.ok(a.usage.completion_tokens >= 1);
    assert.equal(a.usage.prompt_tokens_details.cached_tokens, 0);
    const b = await w.json('/v1/completions', { prompt: 'Once upon a time, in a land far away, there lived a small dragon.', max_tokens: 8, temperature: 0 });
    assert.ok(b.usage.prompt_tokens_details.cached_tokens > 0);
    assert.equal(b.choices[0].text, a.choices[0].text);
  });

  it('greedy output with a cached prefix equals output from an empty cache, at and around block boundaries', async () => {
    await w.json('/flush_cache', {});
    const cold = await greedy(PROMPT);
    assert.equal(cold.usage.prompt_tokens_details.cached_tokens, 0);
    for (const k of [15, 16, 17, 32, 33, 39]) {
      await w.json('/flush_cache', {});
      await greedy(PROMPT.slice(0, k), 1); // caches floor(k / 16) blocks of the prefix
      const warm = await greedy(PROMPT);
      assert.equal(warm.usage.prompt_tokens_details.cached_tokens, Math.min(Math.floor(k / 16), 2) * 16, `prefix ${k}`);
      assert.equal(warm.choices[0].text, cold.choices[0].text, `prefix of ${k} tokens cached`);
    }
  });

  it('batches concurrent requests and streams', async () => {
    const prompts = [0, 1, 2, 3].map((d) => PROMPT.map((t) => t + d));
    const alone = await greedy(prompts[1]!);
    const together = await Promise.all(prompts.map((p) => greedy(p)));
    assert.equal(together[1].choices[0].text, alone.choices[0].text);
    const r = await w.post('/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, stream: true });
    assert.match(await r.text(), /data: \[DONE\]\n\n$/);
  });
});

describe('kv-worker --device cuda on a CPU-only onnxruntime', () => {
  it('fails at start with a message naming what is missing', () => {
    const r = spawnSync(process.execPath, [BIN, '--engine', 'onnx', '--device', 'cuda', '--port', '0'], { encoding: 'utf8', timeout: 60_000 });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /\[kv-worker scheduler\] failed to start: .*CUDA/);
    assert.match(r.stderr, /the scheduler process exited with code 1/);
  });
});
