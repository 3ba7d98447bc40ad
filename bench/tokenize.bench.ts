/**
 * Prompt tokenization of 8k-token shared-system-prompt chats: pure-JS vs native tokenizer, each
 * with and without the rendered-chat prefix cache (src/tokenizer/prefix-cache.ts). Every variant
 * encodes the same stream of chats (a few system prompts shared by many conversations, each
 * growing turn by turn); ids are checked equal to the JS baseline. Reports per-chat latency
 * (median, spread) and chats/s, with each variant's rate as a ratio of the JS baseline run here.
 *   npm run bench:tokenize   (--quick: a few seconds; REPEATS=n)
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tokenizer, defaultTokenizerFiles } from '../src/tokenizer/index.js';
import { jsEncoder, nativeEncoder, type TextEncoder } from '../src/tokenizer/encoder.js';
import { PrefixCachedEncoder } from '../src/tokenizer/prefix-cache.js';

const QUICK = process.argv.includes('--quick');
const LOAD_AT_START = loadavg().map((x) => Number(x.toFixed(2)));
const REPEATS = Number(process.env.REPEATS ?? (QUICK ? 1 : 5));
const CONVERSATIONS = QUICK ? 3 : 16;
const TURNS = QUICK ? 3 : 6;
const SYSTEM_TOKENS = 8000;

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}
const WORDS = ['the', 'router', 'cache', 'token', 'prefix', 'worker', 'block', 'hash', 'ids', 'model', '😀', 'café', '日本語', '\n', '  ', '123', ','];
function words(r: () => number, n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += (i ? ' ' : '') + WORDS[Math.floor(r() * WORDS.length)];
  return s;
}

function sameIds(a: number[], b: number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function stats(xs: number[]) {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.round(p * (s.length - 1)))]!;
  return { median: q(0.5), min: s[0]!, max: s[s.length - 1]!, p25: q(0.25), p75: q(0.75), n: s.length };
}

const files = defaultTokenizerFiles();
const tok = await Tokenizer.load(files);

/** The request stream: each item a rendered chat text, turns of a conversation in order, conversations interleaved. */
function chats(): string[] {
  const r = rng(8);
  const systems = [0, 1].map(() => {
    let s = words(r, 200);
    while (tok.encode(s).length < SYSTEM_TOKENS) s += '\n' + words(r, 400);
    return s;
  });
  const convs = Array.from({ length: CONVERSATIONS }, (_, c) => [{ role: 'system', content: systems[c % systems.length]! }]);
  const out: string[] = [];
  for (let t = 0; t < TURNS; t++) {
    for (const m of convs) {
      m.push({ role: 'user', content: words(r, 30 + Math.floor(r() * 60)) });
      out.push(tok.applyChatTemplate(m));
      m.push({ role: 'assistant', content: words(r, 40 + Math.floor(r() * 80)) });
    }
  }
  return out;
}

const native = nativeEncoder(files.tokenizerJson);
if (native instanceof Error) console.error(`native tokenizer did not load (${native.message}); benchmarking JS only`);
const bases: [string, TextEncoder][] = [['js', jsEncoder(tok)], ...(native instanceof Error ? [] : [['native', native] as [string, TextEncoder]])];
const variants: { name: string; make: () => { encode(t: string): Promise<number[]> } }[] = [];
for (const [name, enc] of bases) {
  variants.push({ name, make: () => ({ encode: (t) => enc.encode(t, false) }) });
  variants.push({ name: `${name}+prefix-cache`, make: () => new PrefixCachedEncoder(enc) });
}

const stream = chats();
const want = await Promise.all(stream.map((t) => bases[0]![1].encode(t, false)));
const meanTokens = Math.round(want.reduce((a, w) => a + w.length, 0) / want.length);

const results: Record<string, { latency_ms: ReturnType<typeof stats>; chats_per_s: ReturnType<typeof stats>; vs_js: number }> = {};
for (const v of variants) {
  const latencies: number[] = [];
  const rates: number[] = [];
  for (let rep = 0; rep < REPEATS; rep++) {
    const enc = v.make(); // a fresh cache per repeat: the first turn of each system prompt is cold
    const t0 = performance.now();
    for (let i = 0; i < stream.length; i++) {
      const s = performance.now();
      const ids = await enc.encode(stream[i]!);
      latencies.push(performance.now() - s);
      if (rep === 0 && !sameIds(ids, want[i]!)) throw new Error(`${v.name}: ids differ from the JS baseline on chat ${i}`);
    }
    rates.push(stream.length / ((performance.now() - t0) / 1000));
  }
  results[v.name] = { latency_ms: stats(latencies), chats_per_s: stats(rates), vs_js: 0 };
}
const baseline = results.js!.chats_per_s.median;
for (const r of Object.values(results)) r.vs_js = Number((r.chats_per_s.median / baseline).toFixed(2));

for (const [name, r] of Object.entries(results)) {
  const l = r.latency_ms;
  console.log(`${name.padEnd(22)} p50 ${l.median.toFixed(2)} ms  [${l.min.toFixed(2)}..${l.max.toFixed(2)}]  ${r.chats_per_s.median.toFixed(1)} chats/s  ${r.vs_js}× js`);
}

if (!QUICK) {
  const out = join(dirname(fileURLToPath(import.meta.url)), 'results', 'tokenize.json');
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, JSON.stringify({
    machine: { cpus: availableParallelism(), model: cpus()[0]?.model, loadavg_at_start: LOAD_AT_START },
    workload: { chats: stream.length, conversations: CONVERSATIONS, turns: TURNS, system_tokens: SYSTEM_TOKENS, mean_prompt_tokens: meanTokens, repeats: REPEATS },
    results,
  }, null, 2) + '\n');
  console.log(`wrote ${out}`);
}
