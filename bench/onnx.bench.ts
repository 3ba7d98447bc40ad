/**
 * onnx engine, default model: time to first token of a 2048-token prompt cold vs with 90%
 * of it cached, and decode tokens/s at batch 1 and 8. Engine-level (no HTTP, no tokenizer).
 *   npm run bench:onnx   (REPEATS=n to change the repeat count)
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { OnnxEngine } from '../worker/engines/onnx/index.js';
import type { SamplingParams, SequenceStep } from '../worker/engines/engine.js';

const LOAD_AT_START = loadavg().map((x) => Number(x.toFixed(2)));
const REPEATS = Number(process.env.REPEATS ?? 7);
const PROMPT = 2048;
const BS = 16;
const CACHED = Math.floor((PROMPT * 0.9) / BS) * BS; // 1840 tokens, whole blocks as the cache shares them
const DECODE_PROMPT = 128;
const DECODE_STEPS = 64;
const greedy: SamplingParams = { temperature: 0, topP: 1, seed: null };

function tokens(n: number, seed: number): number[] {
  let s = seed >>> 0;
  return Array.from({ length: n }, () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) % 150000);
}

function stats(xs: number[]) {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.round(p * (s.length - 1)))];
  return { median: q(0.5), min: s[0], max: s[s.length - 1], p25: q(0.25), p75: q(0.75), n: s.length };
}
const round = (o: Record<string, number>, d = 2) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, Number(v.toFixed(d))]));

const engine = await OnnxEngine.create({ blockSize: BS, numBlocks: 1024 });
let nextBlock = 0;
const blocks = (n: number) => Array.from({ length: n }, () => nextBlock++);
const step = (s: Omit<SequenceStep, 'sampling' | 'seqId'>) => engine.step([{ ...s, seqId: 'b', sampling: greedy }]);

// TTFT cold (the whole prompt computed, no cached blocks) and with 90% cached (the first
// CACHED positions' K/V come from the pool, only the suffix is computed), interleaved so
// both see the same machine load.
const prompt = tokens(PROMPT, 1);
const table = blocks(PROMPT / BS);
const suffixTable = [...table.slice(0, CACHED / BS), ...blocks((PROMPT - CACHED) / BS)];
const cold: number[] = [];
const warm: number[] = [];
for (let r = -1; r < REPEATS; r++) {
  let t0 = performance.now();
  await step({ newTokens: prompt, startPos: 0, blockTable: table }); // also leaves the prompt's K/V in the pool
  const c = performance.now() - t0;
  t0 = performance.now();
  await step({ newTokens: prompt.slice(CACHED), startPos: CACHED, blockTable: suffixTable });
  const w = performance.now() - t0;
  if (r >= 0) {
    cold.push(c);
    warm.push(w);
  }
}

// Decode: batch of B sequences, DECODE_STEPS steps after their prefills.
async function decodeRate(B: number): Promise<number> {
  const first = nextBlock;
  const seqs = Array.from({ length: B }, (_, i) => ({
    toks: tokens(DECODE_PROMPT, 100 + i),
    table: blocks(Math.ceil((DECODE_PROMPT + DECODE_STEPS) / BS)),
  }));
  for (const [i, s] of seqs.entries()) {
    const [t] = await engine.step([{ seqId: `d${i}`, newTokens: s.toks, startPos: 0, blockTable: s.table, sampling: greedy }]);
    s.toks.push(t);
  }
  const t0 = performance.now();
  for (let k = 0; k < DECODE_STEPS; k++) {
    const next = await engine.step(
      seqs.map((s, i) => ({ seqId: `d${i}`, newTokens: [s.toks.at(-1)!], startPos: s.toks.length - 1, blockTable: s.table, sampling: greedy })),
    );
    seqs.forEach((s, i) => s.toks.push(next[i]));
  }
  const secs = (performance.now() - t0) / 1000;
  nextBlock = first;
  return (B * DECODE_STEPS) / secs;
}
const decode: Record<number, number[]> = { 1: [], 8: [] };
for (const B of [1, 8]) {
  await decodeRate(B); // warm-up
  for (let r = 0; r < REPEATS; r++) decode[B].push(await decodeRate(B));
}
await engine.close();

const coldS = stats(cold);
const warmS = stats(warm);
const ratios = cold.map((c, i) => warm[i] / c);
const result = {
  date: new Date().toISOString(),
  machine: { cpus: availableParallelism(), model: cpus()[0]?.model, node: process.version, loadavgAtStart: LOAD_AT_START, loadavgAtEnd: loadavg().map((x) => Number(x.toFixed(2))) },
  model: engine.modelPath,
  config: { promptTokens: PROMPT, cachedTokens: CACHED, blockSize: BS, repeats: REPEATS, decodePrompt: DECODE_PROMPT, decodeSteps: DECODE_STEPS },
  ttftColdMs: round(coldS),
  ttftCached90Ms: round(warmS),
  ratioCachedOverCold: { median: Number((warmS.median / coldS.median).toFixed(3)), ...round(stats(ratios), 3) },
  decodeTokensPerS: { batch1: round(stats(decode[1]), 1), batch8: round(stats(decode[8]), 1) },
};
const out = join(dirname(fileURLToPath(import.meta.url)), 'results', 'onnx.json');
await mkdir(dirname(out), { recursive: true });
await writeFile(out, JSON.stringify(result, null, 2) + '\n');
const fmt = (s: ReturnType<typeof stats>, u: string) => `median ${s.median.toFixed(1)}${u} (min ${s.min.toFixed(1)}, max ${s.max.toFixed(1)}, n=${s.n})`;
console.log(`TTFT ${PROMPT} tokens cold:        ${fmt(coldS, ' ms')}`);
console.log(`TTFT ${PROMPT} tokens ${CACHED} cached: ${fmt(warmS, ' ms')}`);
console.log(`ratio cached/cold:            ${result.ratioCachedOverCold.median}`);
console.log(`decode batch 1: ${fmt(stats(decode[1]), ' tok/s')}`);
console.log(`decode batch 8: ${fmt(stats(decode[8]), ' tok/s')}`);
console.log(`wrote ${out}`);
