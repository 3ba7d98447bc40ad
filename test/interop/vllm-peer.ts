/**
 * The vLLM-like Python server (test/python/vllm_server.py) as a child process, and the
 * comparisons the fidelity tests make against it: the router's predicted cached tokens vs the
 * server's usage, the router's tree vs the server's own block list.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, freePortRange } from '../helpers/net.js';
import { dumpEntries, workerEntries, type CachedBlock } from '../faults/invariant.js';
import type { SourceDump } from '../../src/index/index.js';
import { Child, PY_DIR, ROOT } from './child.js';

/** `.venv/bin/python` when it can import everything the server needs; otherwise why not. */
export function findServerPython(): { python: string } | { skip: string } {
  const python = join(ROOT, '.venv', 'bin', 'python');
  if (!existsSync(python)) return { skip: `${python} not found: run scripts/setup-python.sh` };
  const r = spawnSync(python, ['-c', 'import msgspec, zmq, cbor2, tokenizers, jinja2'], { timeout: 20_000, encoding: 'utf8' });
  if (r.status !== 0) return { skip: `${python} cannot import msgspec/zmq/cbor2/tokenizers/jinja2: ${(r.stderr || r.error?.message || '').trim()}` };
  return { python };
}

export interface ServerOpts {
  id: string;
  numBlocks?: number;
  dp?: number;
  topic?: string;
  /** PUB endpoint form; default tcp://*:<pub> (binds). */
  events?: (pubPort: number) => string;
  replay?: (replayPort: number) => string;
  /** vLLM's --lora-modules name=path. */
  loraModules?: string[];
}

export interface ServerCache {
  seq: number;
  block_size: number;
  free_blocks: number;
  /** BlockRemoved events sent so far. */
  evictions: number;
  blocks: (CachedBlock & { block_id: number; extra_keys: unknown[] | null })[];
}

export class VllmServer {
  child!: Child;
  url = '';
  readonly kvEvents: { endpoint: string; replay_endpoint: string; topic: string };

  private constructor(
    readonly python: string,
    readonly opts: ServerOpts,
    readonly port: number,
    readonly pubPort: number,
    readonly replayPort: number,
  ) {
    this.url = `http://127.0.0.1:${port}`;
    this.kvEvents = { endpoint: `tcp://127.0.0.1:${pubPort}`, replay_endpoint: `tcp://127.0.0.1:${replayPort}`, topic: opts.topic ?? 'kv-events' };
  }

  /** Rank r's ports are rank 0's plus r, so each range is taken apart from the others. */
  static async start(python: string, opts: ServerOpts): Promise<VllmServer> {
    const dp = opts.dp ?? 1;
    const port = await freePort();
    const pub = await freePortRange(dp);
    let rep = await freePortRange(dp);
    while (rep < pub + dp && rep + dp > pub) rep = await freePortRange(dp);
    const s = new VllmServer(python, opts, port, pub, rep);
    await s.spawn();
    return s;
  }

  async spawn(): Promise<void> {
    const o = this.opts;
    this.child = new Child(this.python, [
      join(PY_DIR, 'vllm_server.py'),
      '--port', String(this.port),
      '--events', o.events ? o.events(this.pubPort) : `tcp://*:${this.pubPort}`,
      '--replay', o.replay ? o.replay(this.replayPort) : `tcp://*:${this.replayPort}`,
      '--topic', this.kvEvents.topic,
      '--num-blocks', String(o.numBlocks ?? 64),
      '--block-size', '16',
      '--dp', String(o.dp ?? 1),
      ...(o.loraModules?.length ? ['--lora-modules', ...o.loraModules] : []),
    ]);
    await this.child.waitFor((j) => j.ready === true, 30_000, `vllm_server ${o.id} ready`);
  }

  /** Stops and starts again on the same ports: a fresh pool, hashes from a new random seed, seq from 0. */
  async restart(): Promise<void> {
    await this.child.stop();
    await this.spawn();
  }

  stop(): Promise<void> {
    return this.child.stop();
  }

  async cache(rank = 0): Promise<ServerCache> {
    const r = await fetch(`${this.url}/cache?rank=${rank}`, { signal: AbortSignal.timeout(10_000) });
    if (!r.ok) throw new Error(`GET ${this.url}/cache: HTTP ${r.status}`);
    return (await r.json()) as ServerCache;
  }

  async post(path: string, body: unknown = {}): Promise<Response> {
    return fetch(`${this.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: AbortSignal.timeout(10_000) });
  }
}

/** One request's outcome: what the router predicted and what the server reports. */
export interface Exchange {
  what: string;
  status: number;
  worker: string | null;
  rank: string | null;
  predicted: number | null;
  cached: number | null;
  promptTokens: number | null;
  body: string;
}

/** A completion or chat request through `base` (router or server); stream bodies are read to the usage chunk. */
export async function exchange(base: string, what: string, path: '/v1/completions' | '/v1/chat/completions', body: Record<string, unknown>, headers: Record<string, string> = {}): Promise<Exchange> {
  const res = await fetch(`${base}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(30_000),
  });
  const text = await res.text();
  let usage: { prompt_tokens?: number; prompt_tokens_details?: { cached_tokens?: number } } | undefined;
  try {
    if (body.stream) {
      const chunks = text.split('\n').filter((l) => l.startsWith('data: ') && l !== 'data: [DONE]').map((l) => JSON.parse(l.slice(6)));
      usage = chunks.find((c) => c.usage)?.usage;
    } else usage = JSON.parse(text).usage;
  } catch {
    usage = undefined;
  }
  const h = res.headers.get('x-kv-router-cached-tokens');
  return {
    what,
    status: res.status,
    worker: res.headers.get('x-kv-router-worker'),
    rank: res.headers.get('x-kv-router-rank'),
    predicted: h === null ? null : Number(h),
    cached: usage?.prompt_tokens_details?.cached_tokens ?? null,
    promptTokens: usage?.prompt_tokens ?? null,
    body: text.slice(0, 300),
  };
}

/** "what: router predicted X, server cached Y (worker, prompt N)" for every request where they differ. */
export function mismatches(xs: Exchange[]): string[] {
  return xs
    .filter((x) => x.status !== 200 || x.predicted === null || x.cached === null || x.predicted !== x.cached)
    .map((x) => (x.status !== 200 ? `${x.what}: HTTP ${x.status} ${x.body}` : `${x.what}: router predicted ${x.predicted}, server cached ${x.cached} (worker ${x.worker}${x.rank ? ` rank ${x.rank}` : ''}, prompt ${x.promptTokens} tokens)`));
}

interface RouterWorker {
  id: string;
  ranks: { rank: number; events: { last_seq: string | null; connected: boolean; trusted: boolean } | null }[];
}

/** Waits until the router has applied, on every (server, rank), the last batch the server published. */
export async function settled(routerUrl: string, servers: VllmServer[], timeoutMs = 15_000): Promise<void> {
  const want = async () => {
    const out = new Map<string, string | null>();
    for (const s of servers) {
      for (let r = 0; r < (s.opts.dp ?? 1); r++) {
        const c = await s.cache(r);
        out.set(`${s.opts.id}:${r}`, c.seq < 0 ? null : String(c.seq));
      }
    }
    return out;
  };
  const end = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    const expected = await want();
    const j = (await (await fetch(`${routerUrl}/workers`, { signal: AbortSignal.timeout(10_000) })).json()) as { workers: RouterWorker[] };
    const got = new Map<string, string | null>();
    for (const w of j.workers) for (const r of w.ranks) got.set(`${w.id}:${r.rank}`, r.events?.last_seq ?? null);
    const behind = [...expected].filter(([k, v]) => got.get(k) !== v);
    if (behind.length === 0) return;
    last = behind.map(([k, v]) => `${k}: server seq ${v}, router ${got.get(k)}`).join('; ');
    if (Date.now() > end) throw new Error(`router not caught up after ${timeoutMs} ms: ${last}`);
    await new Promise((r) => setTimeout(r, 30));
  }
}

/** The router's tree for (id, rank) vs the server's own blocks, as "hash/token key" sets (unsalted blocks only). */
export async function compareTrees(routerUrl: string, s: VllmServer, rank = 0): Promise<{ missing: string[]; extra: string[]; serverBlocks: number; routerBlocks: number }> {
  const c = await s.cache(rank);
  const server = workerEntries(c.blocks);
  const r = await fetch(`${routerUrl}/workers/${encodeURIComponent(s.opts.id)}?dump`, { signal: AbortSignal.timeout(10_000) });
  const j = (await r.json()) as { trees?: Record<string, SourceDump | null> };
  const { entries: router, keyConflicts } = dumpEntries(j.trees?.[String(rank)] ?? null, c.blocks);
  if (keyConflicts > 0) throw new Error(`router keys of ${s.opts.id}:${rank} do not map one-to-one to token prefixes (${keyConflicts} conflicts)`);
  return {
    missing: [...server].filter((e) => !router.has(e)),
    extra: [...router].filter((e) => !server.has(e)),
    serverBlocks: server.size,
    routerBlocks: router.size,
  };
}
