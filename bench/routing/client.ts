/**
 * The load generator: sends every request at its arrival time (scaled by the speed factor) to the
 * routers in turn (round robin over replicas), streams the response, and records time to first token
 * (the first SSE chunk carrying a choice), end-to-end latency, the worker that served it (the router's
 * x-kv-router-worker header) and the worker's own usage (prompt and cached tokens).
 * Open loop: a slow fleet does not slow the arrivals down.
 */
import http from 'node:http';
import type { BenchRequest } from './workloads.js';

export interface RequestResult {
  id: number;
  router: number;
  /** Planned and actual send time, ms since the run's start. */
  plannedMs: number;
  sentMs: number;
  ttftMs: number | null;
  e2eMs: number | null;
  worker: string | null;
  promptTokens: number;
  cachedTokens: number;
  /** What the router expected the worker to hold (x-kv-router-cached-tokens). */
  predictedCachedTokens: number | null;
  /** The router's predicted TTFT at the worker it picked (x-kv-router-predicted-ttft-ms; ttft cost only). */
  predictedTtftMs?: number | null;
  completionTokens: number;
  ok: boolean;
  error: string | null;
}

export interface ClientOptions {
  routerUrls: string[];
  speed: number;
  /** Per-request bound (ms): the request is aborted and counted failed after this. */
  timeoutMs: number;
  model?: string;
  onProgress?: (sent: number, done: number, failed: number) => void;
}

/** Streams one completion; resolves with its result, never rejects. */
function sendOne(url: string, req: BenchRequest, t0: number, planned: number, routerIndex: number, o: ClientOptions, agent: http.Agent): Promise<RequestResult> {
  const body = JSON.stringify({
    ...(o.model ? { model: o.model } : {}),
    prompt: req.prompt(),
    max_tokens: req.maxTokens,
    ignore_eos: true,
    temperature: 0,
    seed: req.id,
    stream: true,
    stream_options: { include_usage: true },
  });
  const sent = performance.now();
  const res: RequestResult = {
    id: req.id,
    router: routerIndex,
    plannedMs: planned,
    sentMs: sent - t0,
    ttftMs: null,
    e2eMs: null,
    worker: null,
    promptTokens: req.promptLength,
    cachedTokens: 0,
    predictedCachedTokens: null,
    completionTokens: 0,
    ok: false,
    error: null,
  };
  return new Promise((resolve) => {
    let settled = false;
    const finish = (error: string | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      res.e2eMs = performance.now() - sent;
      res.error = error;
      res.ok = error === null;
      resolve(res);
    };
    const u = new URL('/v1/completions', url);
    const hreq = http.request(
      { hostname: u.hostname, port: u.port, path: u.pathname, method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
      (hres) => {
        const w = hres.headers['x-kv-router-worker'];
        res.worker = typeof w === 'string' ? w : null;
        const predicted = Number(hres.headers['x-kv-router-cached-tokens']);
        res.predictedCachedTokens = Number.isFinite(predicted) ? predicted : null;
        const ttftHeader = hres.headers['x-kv-router-predicted-ttft-ms'];
        res.predictedTtftMs = typeof ttftHeader === 'string' && Number.isFinite(Number(ttftHeader)) ? Number(ttftHeader) : null;
        if (hres.statusCode !== 200) {
          let text = '';
          hres.setEncoding('utf8');
          hres.on('data', (d: string) => (text += d.length < 2000 ? d : ''));
          hres.on('end', () => finish(`HTTP ${hres.statusCode}: ${text.slice(0, 300)}`));
          hres.on('error', (e) => finish(`HTTP ${hres.statusCode}: ${e.message}`));
          return;
        }
        let buf = '';
        let gotUsage = false;
        let done = false;
        hres.setEncoding('utf8');
        hres.on('data', (d: string) => {
          buf += d;
          let i: number;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const event = buf.slice(0, i);
            buf = buf.slice(i + 2);
            for (const line of event.split('\n')) {
              if (!line.startsWith('data:')) continue;
              const data = line.slice(5).trim();
              if (data === '[DONE]') {
                done = true;
                continue;
              }
              let j: { choices?: unknown[]; usage?: { prompt_tokens?: number; completion_tokens?: number; prompt_tokens_details?: { cached_tokens?: number } | null } | null; error?: unknown };
              try {
                j = JSON.parse(data);
              } catch {
                continue;
              }
              if (j.error) {
                finish(`stream error: ${JSON.stringify(j.error).slice(0, 300)}`);
                return;
              }
              if (res.ttftMs === null && Array.isArray(j.choices) && j.choices.length > 0) res.ttftMs = performance.now() - sent;
              if (j.usage) {
                gotUsage = true;
                res.promptTokens = j.usage.prompt_tokens ?? res.promptTokens;
                res.completionTokens = j.usage.completion_tokens ?? 0;
                res.cachedTokens = j.usage.prompt_tokens_details?.cached_tokens ?? 0;
              }
            }
          }
        });
        hres.on('end', () => finish(!done ? 'stream ended without [DONE]' : !gotUsage ? 'no usage in the stream' : res.ttftMs === null ? 'no token in the stream' : null));
        hres.on('error', (e) => finish(`stream: ${e.message}`));
        hres.on('aborted', () => finish('stream aborted'));
      },
    );
    const timer = setTimeout(() => {
      finish(`timed out after ${o.timeoutMs} ms`);
      hreq.destroy();
    }, o.timeoutMs);
    hreq.on('error', (e) => finish(`request: ${e.message}`));
    hreq.end(body);
  });
}

/** Replays `requests` (sorted by arrival) and resolves when every one has finished or failed. */
export async function replay(requests: BenchRequest[], o: ClientOptions): Promise<{ results: RequestResult[]; startedAt: number; wallMs: number; maxLagMs: number }> {
  const order = [...requests].sort((a, b) => a.at - b.at || a.id - b.id);
  // No keep-alive: a reused idle socket can race the server's keep-alive timeout ("socket hang up"),
  // a client-side artefact that must not count as a routing failure. Loopback connects are cheap.
  const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
  const results: RequestResult[] = [];
  const pending: Promise<void>[] = [];
  let sent = 0;
  let done = 0;
  let failed = 0;
  let maxLag = 0;
  const t0 = performance.now();
  const startedAt = Date.now();
  const tick = setInterval(() => o.onProgress?.(sent, done, failed), 250);
  try {
    for (let i = 0; i < order.length; i++) {
      const r = order[i]!;
      const planned = r.at / o.speed;
      const wait = planned - (performance.now() - t0);
      if (wait > 1) await new Promise((res) => setTimeout(res, wait));
      maxLag = Math.max(maxLag, performance.now() - t0 - planned);
      const ri = i % o.routerUrls.length;
      sent++;
      pending.push(
        sendOne(o.routerUrls[ri]!, r, t0, planned, ri, o, agent).then((res) => {
          results.push(res);
          done++;
          if (!res.ok) failed++;
        }),
      );
    }
    await Promise.all(pending);
  } finally {
    clearInterval(tick);
    o.onProgress?.(sent, done, failed);
    agent.destroy();
  }
  results.sort((a, b) => a.id - b.id);
  return { results, startedAt, wallMs: performance.now() - t0, maxLagMs: maxLag };
}

/** Polls every worker's GET /load while a run goes on. */
export interface LoadSample {
  tMs: number;
  worker: number;
  running: number;
  waiting: number;
  pendingPrefillTokens: number;
  cachedBlocks: number;
}

export function pollLoads(workerUrls: string[], everyMs: number): { stop(): LoadSample[] } {
  const samples: LoadSample[] = [];
  const t0 = performance.now();
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    const t = performance.now() - t0;
    void Promise.all(
      workerUrls.map(async (url, worker) => {
        try {
          const r = await fetch(`${url}/load`, { signal: AbortSignal.timeout(2000) });
          const j = (await r.json()) as { running?: number; waiting?: number; pending_prefill_tokens?: number; cached_blocks?: number };
          samples.push({ tMs: t, worker, running: j.running ?? 0, waiting: j.waiting ?? 0, pendingPrefillTokens: j.pending_prefill_tokens ?? 0, cachedBlocks: j.cached_blocks ?? 0 });
        } catch {
          /* a missed sample */
        }
      }),
    ).finally(() => (busy = false));
  }, everyMs);
  return {
    stop() {
      clearInterval(timer);
      return samples.sort((a, b) => a.tMs - b.tMs || a.worker - b.worker);
    },
  };
}
