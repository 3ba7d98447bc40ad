/**
 * Request streams for the routing benchmark: a Mooncake trace reader and synthetic generators.
 * Every request carries its arrival time (ms from the start, before --speed) and a function that
 * builds its prompt as token ids on demand (prompts are large: nothing is kept in memory).
 * Token ids are pure functions of their identity, so equal identities share prefixes exactly.
 */
import { readFileSync } from 'node:fs';
import { mix32 } from '../index-workload.js';

/** Token ids are drawn from [TOKEN_BASE, TOKEN_BASE + TOKEN_SPAN): ordinary ids of any ~150k vocabulary, clear of special tokens. */
export const TOKEN_BASE = 1000;
export const TOKEN_SPAN = 100_000;

/** Mooncake's hash ids each stand for this many tokens. */
export const MOONCAKE_BLOCK = 512;

export interface BenchRequest {
  /** Index in the workload, 0-based. */
  id: number;
  /** Arrival, ms from the start of the workload (unscaled). */
  at: number;
  promptLength: number;
  maxTokens: number;
  /** The prompt's token ids (built on each call). */
  prompt(): number[];
}

export interface Workload {
  name: string;
  /** One line: what it is and its parameters. */
  description: string;
  requests: BenchRequest[];
  /** Where it came from: the trace file and slice, or the generator's parameters. */
  source: Record<string, unknown>;
}

export { mix32 };

/** The token at position `pos` of the content named `owner` (a 32-bit id). */
export function tokenOf(owner: number, pos: number): number {
  return TOKEN_BASE + (mix32(mix32(owner ^ 0x5bd1e995) ^ Math.imul(pos + 1, 0x9e3779b1)) % TOKEN_SPAN);
}

/** Appends tokens [from, to) of content `owner` to `out`. */
function pushTokens(out: number[], owner: number, from: number, to: number): void {
  for (let i = from; i < to; i++) out.push(tokenOf(owner, i));
}

/** Small seeded PRNG (mulberry32): uniform in [0, 1). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const expo = (r: () => number, mean: number) => -Math.log(1 - r()) * mean;

// ---------------------------------------------------------------- Mooncake

export interface MooncakeRecord {
  timestamp: number;
  input_length: number;
  output_length: number;
  hash_ids: number[];
}

export interface Slice {
  start: number;
  count: number;
}

export function parseSlice(s: string): Slice {
  const m = /^(\d+):(\d+)$/.exec(s.trim());
  if (!m) throw new Error(`--slice must be START:COUNT, got "${s}"`);
  const count = Number(m[2]);
  if (count < 1) throw new Error('--slice COUNT must be at least 1');
  return { start: Number(m[1]), count };
}

/** Reads lines [start, start + count) of a Mooncake JSONL trace; throws on a malformed line. */
export function readMooncake(file: string, slice: Slice): MooncakeRecord[] {
  const lines = readFileSync(file, 'utf8').split('\n');
  const out: MooncakeRecord[] = [];
  let n = 0;
  for (let i = 0; i < lines.length && out.length < slice.count; i++) {
    const line = lines[i]!.trim();
    if (!line) continue;
    if (n++ < slice.start) continue;
    let r: MooncakeRecord;
    try {
      r = JSON.parse(line) as MooncakeRecord;
    } catch (e) {
      throw new Error(`${file}:${i + 1}: not JSON: ${(e as Error).message}`);
    }
    const ok =
      Number.isFinite(r.timestamp) &&
      Number.isInteger(r.input_length) && r.input_length > 0 &&
      Number.isInteger(r.output_length) && r.output_length >= 0 &&
      Array.isArray(r.hash_ids) && r.hash_ids.every((h) => Number.isInteger(h) && h >= 0);
    if (!ok) throw new Error(`${file}:${i + 1}: expected {timestamp, input_length, output_length, hash_ids}`);
    out.push(r);
  }
  if (out.length === 0) throw new Error(`${file}: no records in slice ${slice.start}:${slice.count}`);
  return out;
}

export interface OutputShaping {
  /** output_length is multiplied by this (rounded, at least 1)... */
  outputScale: number;
  /** ...and capped at this. */
  maxOutput: number;
}

export function mooncakeWorkload(records: MooncakeRecord[], shape: OutputShaping, source: Record<string, unknown>): Workload {
  const t0 = records[0]!.timestamp;
  const requests = records.map((r, id): BenchRequest => {
    const len = r.input_length;
    const ids = r.hash_ids;
    return {
      id,
      at: r.timestamp - t0,
      promptLength: len,
      maxTokens: Math.max(1, Math.min(shape.maxOutput, Math.round(r.output_length * shape.outputScale))),
      prompt() {
        const out: number[] = [];
        for (let b = 0; out.length < len; b++) {
          // Past the listed ids (should not happen in a well-formed trace) the block is private to this request.
          const owner = b < ids.length ? ids[b]! : 0x7000_0000 + id * 64 + b;
          pushTokens(out, owner, 0, Math.min(MOONCAKE_BLOCK, len - out.length));
        }
        // Block position matters only through the id: block content is the id's fixed 512 tokens.
        return out;
      },
    };
  });
  return {
    name: 'mooncake',
    description: `Mooncake conversation trace, ${records.length} requests, each hash id a fixed 512-token block; output_length × ${shape.outputScale} (max ${shape.maxOutput}) as max_tokens with ignore_eos`,
    requests,
    source: { ...source, output_scale: shape.outputScale, max_output: shape.maxOutput },
  };
}

// ---------------------------------------------------------------- synthetic

export interface SyntheticOptions {
  requests: number;
  /** Mean arrival rate (requests/s, Poisson) before --speed. */
  rate: number;
  maxTokens: number;
  seed: number;
}

/** Content ids of the synthetic generators live in their own ranges. */
const SYS = 0x1000_0000;
const USER = 0x2000_0000;
const CHAT = 0x3000_0000;
const HOT = 0x4000_0000;

/** Groups of users sharing a system prompt (Zipf-ish group popularity), each with its own question. */
export function systemPromptWorkload(o: SyntheticOptions & { groups: number; systemTokens: number; userTokens: number }): Workload {
  const r = rng(o.seed);
  // Popularity ∝ 1/(g+1)^0.8: a few hot groups, a long tail.
  const weights = Array.from({ length: o.groups }, (_, g) => 1 / Math.pow(g + 1, 0.8));
  const total = weights.reduce((a, b) => a + b, 0);
  const pick = () => {
    let x = r() * total;
    for (let g = 0; g < o.groups; g++) if ((x -= weights[g]!) <= 0) return g;
    return o.groups - 1;
  };
  let t = 0;
  const requests: BenchRequest[] = [];
  for (let id = 0; id < o.requests; id++) {
    const g = pick();
    const sysLen = o.systemTokens + ((g * 37) % 5) * 64; // groups differ a little in length
    const userLen = Math.max(1, Math.round(o.userTokens * (0.5 + r())));
    requests.push({
      id,
      at: t,
      promptLength: sysLen + userLen,
      maxTokens: o.maxTokens,
      prompt() {
        const out: number[] = [];
        pushTokens(out, SYS + g, 0, sysLen);
        pushTokens(out, USER + id, 0, userLen);
        return out;
      },
    });
    t += expo(r, 1000 / o.rate);
  }
  return {
    name: 'system-prompt',
    description: `${o.requests} requests in ${o.groups} groups sharing a ${o.systemTokens}–${o.systemTokens + 256}-token system prompt (Zipf 0.8 popularity), ~${o.userTokens}-token own question, Poisson ${o.rate} req/s, max_tokens ${o.maxTokens}`,
    requests,
    source: { generator: 'system-prompt', ...o },
  };
}

/**
 * Multi-turn chats: every turn's prompt is the previous turn's prompt plus an assistant reply and a new
 * user message (the reply tokens are the harness's own, so the cacheable prefix is the previous prompt).
 */
export function multiTurnWorkload(o: SyntheticOptions & { chats: number; firstTokens: number; turnTokens: number; thinkMs: number }): Workload {
  const r = rng(o.seed);
  const turns = Math.max(1, Math.ceil(o.requests / o.chats));
  const raw: Omit<BenchRequest, 'id'>[] = [];
  // Chats start over the span the requests would take at `rate`; turns follow after think time.
  const span = (o.requests / o.rate) * 1000 * 0.5;
  for (let c = 0; c < o.chats; c++) {
    let t = r() * span;
    let len = Math.max(16, Math.round(o.firstTokens * (0.5 + r())));
    for (let k = 0; k < turns && raw.length < o.requests * 2; k++) {
      const promptLen = len;
      const chat = c;
      raw.push({
        at: t,
        promptLength: promptLen,
        maxTokens: o.maxTokens,
        prompt() {
          const out: number[] = [];
          pushTokens(out, CHAT + chat, 0, promptLen);
          return out;
        },
      });
      t += expo(r, o.thinkMs) + 200;
      len += Math.max(16, Math.round(o.turnTokens * (0.5 + r())));
    }
  }
  raw.sort((a, b) => a.at - b.at);
  const requests = raw.slice(0, o.requests).map((q, id) => ({ ...q, id }));
  return {
    name: 'multi-turn',
    description: `${o.chats} chats × up to ${turns} turns (${requests.length} requests), first turn ~${o.firstTokens} tokens, each turn +~${o.turnTokens}, think time ~${o.thinkMs} ms, max_tokens ${o.maxTokens}`,
    requests,
    source: { generator: 'multi-turn', ...o },
  };
}

/** One prompt for everybody (the hot spot): the same long prefix, a short distinct tail per request. */
export function sharedPromptWorkload(o: SyntheticOptions & { sharedTokens: number; tailTokens: number }): Workload {
  const r = rng(o.seed);
  let t = 0;
  const requests: BenchRequest[] = [];
  for (let id = 0; id < o.requests; id++) {
    requests.push({
      id,
      at: t,
      promptLength: o.sharedTokens + o.tailTokens,
      maxTokens: o.maxTokens,
      prompt() {
        const out: number[] = [];
        pushTokens(out, HOT, 0, o.sharedTokens);
        pushTokens(out, USER + id, 0, o.tailTokens);
        return out;
      },
    });
    t += expo(r, 1000 / o.rate);
  }
  return {
    name: 'shared-prompt',
    description: `${o.requests} requests sharing one ${o.sharedTokens}-token prompt plus a distinct ${o.tailTokens}-token tail, Poisson ${o.rate} req/s, max_tokens ${o.maxTokens}`,
    requests,
    source: { generator: 'shared-prompt', ...o },
  };
}

const BURST = 0x5000_0000;

/**
 * The sibling burst (issue 13): `requests` requests at the same instant, all sharing one new
 * `sharedTokens` prefix with distinct tails. Spread round robin over the replicas, it shows whether
 * they herd the prefix onto one or two workers (shared provisional prefixes) or compute it on many.
 */
export function burstWorkload(o: SyntheticOptions & { sharedTokens: number; tailTokens: number }): Workload {
  // A prefix owner of its own per seed: new to the fleet, never another workload's.
  const owner = BURST + (o.seed & 0xffff);
  const requests: BenchRequest[] = [];
  for (let id = 0; id < o.requests; id++) {
    requests.push({
      id,
      at: 0,
      promptLength: o.sharedTokens + o.tailTokens,
      maxTokens: o.maxTokens,
      prompt() {
        const out: number[] = [];
        pushTokens(out, owner, 0, o.sharedTokens);
        pushTokens(out, USER + BURST + id, 0, o.tailTokens);
        return out;
      },
    });
  }
  return {
    name: 'burst',
    description: `${o.requests} simultaneous requests sharing one new ${o.sharedTokens}-token prefix plus a distinct ${o.tailTokens}-token tail, max_tokens ${o.maxTokens}`,
    requests,
    source: { generator: 'burst', ...o },
  };
}

/**
 * Workers on which a burst's shared prefix was computed: those that served a request whose usage
 * shows fewer cached tokens than the prefix's full blocks (the prefix is new, so each worker that
 * serves the burst computes it there once; later siblings there find it cached).
 */
export function prefixWorkers(results: { ok: boolean; worker: string | null; cachedTokens: number }[], sharedTokens: number, blockSize: number): string[] {
  const full = Math.floor(sharedTokens / blockSize) * blockSize;
  const ws = new Set<string>();
  for (const r of results) if (r.ok && r.worker !== null && r.cachedTokens < full) ws.add(r.worker);
  return [...ws].sort();
}
