/**
 * Sim-engine worker benchmark: a shared-prefix workload through the real three-process worker.
 * Prints TTFT (median, p90), request latency, token throughput and the prefix-cache hit rate,
 * and writes bench/results/worker-sim.json.
 *
 *   node --import tsx bench/worker.bench.ts [--requests 96] [--concurrency 16]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { startWorker } from '../test/worker/helpers.js';

const { values } = parseArgs({ options: { requests: { type: 'string', default: '96' }, concurrency: { type: 'string', default: '16' } } });
const N = Number(values.requests);
const C = Number(values.concurrency);
const SYSTEM = 512; // shared prefix tokens
const UNIQUE = 64;
const MAX_TOKENS = 32;

const w = await startWorker(['--engine', 'sim', '--num-blocks', '2048', '--max-batch', String(C), '--prefill-tokens-per-s', '20000', '--decode-step-ms', '5']);
const prefixes = Array.from({ length: 4 }, (_, p) => Array.from({ length: SYSTEM }, (_, i) => 1000 + p * 10_000 + i));
const ttft: number[] = [];
const e2e: number[] = [];
let prompt = 0;
let cached = 0;
let completion = 0;

async function one(i: number): Promise<void> {
  const ids = [...prefixes[i % prefixes.length]!, ...Array.from({ length: UNIQUE }, (_, k) => 50_000 + i * UNIQUE + k)];
  const t0 = performance.now();
  const r = await w.post('/v1/completions', { prompt: ids, max_tokens: MAX_TOKENS, stream: true, stream_options: { include_usage: true } });
  const reader = r.body!.getReader();
  const dec = new TextDecoder();
  let buf = '';
  let first = true;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    if (first) {
      ttft.push(performance.now() - t0);
      first = false;
    }
    buf += dec.decode(value, { stream: true });
  }
  e2e.push(performance.now() - t0);
  const usage = buf.split('\n\n').map((l) => l.slice(6)).filter((d) => d.startsWith('{')).map((d) => JSON.parse(d)).at(-1).usage;
  prompt += usage.prompt_tokens;
  cached += usage.prompt_tokens_details.cached_tokens;
  completion += usage.completion_tokens;
}

const q = Array.from({ length: N }, (_, i) => i);
const t0 = performance.now();
await Promise.all(Array.from({ length: C }, async () => {
  for (let i = q.shift(); i !== undefined; i = q.shift()) await one(i);
}));
const wall = (performance.now() - t0) / 1000;
await w.stop('SIGTERM');

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;
const result = {
  requests: N,
  concurrency: C,
  wall_s: +wall.toFixed(2),
  ttft_ms: { median: +pct(ttft, 0.5).toFixed(1), p90: +pct(ttft, 0.9).toFixed(1) },
  e2e_ms: { median: +pct(e2e, 0.5).toFixed(1), p90: +pct(e2e, 0.9).toFixed(1) },
  output_tokens_per_s: +(completion / wall).toFixed(1),
  cache_hit_rate: +(cached / prompt).toFixed(3),
};
console.log(JSON.stringify(result, null, 2));
mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
writeFileSync(new URL('./results/worker-sim.json', import.meta.url), JSON.stringify(result, null, 2) + '\n');
