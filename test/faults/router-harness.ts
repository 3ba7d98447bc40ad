/** A router (in this process, real HTTP) in front of sim workers, and the invariant read through its admin API. */
import { parseRouterConfig, type RouterConfigInput } from '../../router/config.js';
import { startRouter, type RunningRouter } from '../../router/server.js';
import type { SimWorker } from './fleet.js';
import { checkSource, routerApiView, type SourceCheck } from './invariant.js';

/** A router in front of `workers`, returned once it has every one of them in rotation (traffic before that gets 503s). */
export async function routerFor(workers: SimWorker[], extra: Partial<RouterConfigInput> = {}): Promise<RunningRouter> {
  const r = await startRouter(
    parseRouterConfig({
      port: 0,
      tokenizer_threads: 0,
      health: { interval_ms: 200, timeout_ms: 1000, failure_threshold: 2 },
      retry: { max_attempts: 3, backoff_ms: 10 },
      ...extra,
      workers: workers.map((w) => ({ id: w.id, url: w.url, kv_events: w.kvEvents, block_size: w.opts.blockSize })),
    }),
  );
  const deadline = Date.now() + 10_000;
  while (r.service.registry.healthyCount() < workers.length) {
    if (Date.now() > deadline) {
      await r.close();
      throw new Error(`router: ${r.service.registry.healthyCount()} of ${workers.length} workers healthy after 10 s`);
    }
    await new Promise((res) => setTimeout(res, 50));
  }
  return r;
}

/** The invariant for worker `w` (rank 0) as the router's admin API shows it. */
export const routerCheck = (r: RunningRouter, w: SimWorker) => (): Promise<SourceCheck> => checkSource(`${w.id}:0`, w.url, routerApiView(r.url, w.id));

export interface Outcome {
  status: number;
  ms: number;
  worker: string | null;
  error?: string;
}

/** One completion through the router with token ids; never throws (status 0 = no answer in time). */
export async function ask(r: RunningRouter, prompt: number[], timeoutMs = 30_000, stream = false): Promise<Outcome> {
  const t0 = Date.now();
  try {
    const res = await fetch(`${r.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt, max_tokens: 2, temperature: 0, ...(stream ? { stream: true } : {}) }),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    const out: Outcome = { status: res.status, ms: Date.now() - t0, worker: res.headers.get('x-kv-router-worker') };
    if (!res.ok) out.error = text.slice(0, 300);
    return out;
  } catch (err) {
    return { status: 0, ms: Date.now() - t0, worker: null, error: (err as Error).message };
  }
}

export async function askAll(r: RunningRouter, prompts: number[][], concurrency = 4, timeoutMs = 30_000, stream = false): Promise<Outcome[]> {
  const out: Outcome[] = [];
  let i = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (i < prompts.length) out.push(await ask(r, prompts[i++]!, timeoutMs, stream));
    }),
  );
  return out;
}
