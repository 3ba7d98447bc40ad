import { Worker } from 'node:worker_threads';
import { defaultTokenizerFiles } from '../src/tokenizer/tokenizer.js';
import { loadFastTokenizer, type FastTokenizer } from '../src/tokenizer/fast.js';
import type { ThreadFaultForTest, TokenizeInput, TokenizeJob, TokenizeReply, TokenizerFiles } from './tokenize-job.js';
import { tokenizeFast } from './tokenize-job.js';
import type { TokenizerSpec } from './config.js';

export type { TokenizeInput } from './tokenize-job.js';

export function filesOf(spec: TokenizerSpec | undefined): TokenizerFiles | null {
  if (!spec || spec === 'default') return null;
  return { tokenizerJson: spec.tokenizer_json, ...(spec.tokenizer_config ? { tokenizerConfig: spec.tokenizer_config } : {}) };
}

export function tokenizerKeyOf(spec: TokenizerSpec | undefined): string {
  const f = filesOf(spec);
  return f ? JSON.stringify(f) : 'default';
}

export interface TokenizePoolOptions {
  /** A job not answered this long after it was posted to its thread is rejected and the thread replaced (default 30 s). */
  jobDeadlineMs?: number;
  /** This many threads in a row dying before they are ready → the pool gives up (default 3). */
  maxBootFailures?: number;
  /** Tests only: every thread throws while booting. */
  crashOnStartForTest?: boolean;
}

export interface TokenizeOptions {
  /** Tests only (never set from HTTP). */
  faultForTest?: ThreadFaultForTest;
}

interface Pending {
  job: TokenizeJob;
  resolve(t: number[]): void;
  reject(e: Error): void;
  /** How many threads died while this job was the one running. */
  deaths: number;
  timer: NodeJS.Timeout | null;
}

interface Thread {
  worker: Worker;
  /** Jobs in posting order; a thread works them in that order, so the first one is the one running. */
  pending: Map<number, Pending>;
  ready: boolean;
  dead: boolean;
}

/**
 * Tokenization off the main event loop: a few worker threads, each with its own tokenizers;
 * a job goes to the thread with the fewest jobs outstanding. With 0 threads, tokenizes inline
 * (with the same fast tokenizer: native encode, prefix cache).
 *
 * A thread that dies is replaced and its jobs go to the replacement; the job it was running is
 * charged with the death, and a job charged twice is rejected (`TokenizerCrashedError`). A job past
 * its deadline is rejected (`TokenizeTimeoutError`) and its thread replaced the same way. Threads
 * that keep dying before they are ready (`maxBootFailures` in a row) put the pool out of service
 * (`TokenizerCrashLoopError`) instead of respawning forever.
 */
export class TokenizePool {
  private readonly threads: Thread[] = [];
  private readonly inline = new Map<string, Promise<FastTokenizer>>();
  private readonly vocabSizes = new Map<string, Promise<number>>();
  private readonly boot: string;
  private readonly deadlineMs: number;
  private readonly maxBootFailures: number;
  private readonly crashOnStart: boolean;
  private bootFailures = 0;
  private broken: TokenizerCrashLoopError | null = null;
  private nextId = 1;
  private closed = false;

  constructor(threads: number, opts: TokenizePoolOptions = {}) {
    this.deadlineMs = opts.jobDeadlineMs ?? 30_000;
    this.maxBootFailures = opts.maxBootFailures ?? 3;
    this.crashOnStart = opts.crashOnStartForTest ?? false;
    // The thread registers tsx itself (loader hooks of the main thread do not reach workers in Node 20).
    const api = JSON.stringify(import.meta.resolve('tsx/esm/api'));
    const entry = JSON.stringify(new URL('./tokenize-worker.ts', import.meta.url).href);
    this.boot = `import(${api}).then((m) => { m.register(); return import(${entry}); })`;
    for (let i = 0; i < threads; i++) this.threads.push(this.spawn());
  }

  /** Threads alive now (replacements included). */
  get threadCount(): number {
    return this.threads.length;
  }

  /** Loads the tokenizer everywhere now (so the first request does not pay for it). */
  async warm(spec: TokenizerSpec | undefined): Promise<void> {
    const files = filesOf(spec);
    if (this.threads.length === 0 && !this.broken) {
      await this.inlineTokenizer(files);
      return;
    }
    await Promise.all(this.threads.map((t) => this.submit(t, { id: this.nextId++, files, input: { kind: 'text', text: 'warm' } })));
  }

  /** The vocabulary size of a tokenizer (asked once per tokenizer): token-id prompts are checked against it. */
  vocabSize(spec: TokenizerSpec | undefined): Promise<number> {
    const key = JSON.stringify(filesOf(spec));
    let v = this.vocabSizes.get(key);
    if (!v) {
      v = this.tokenize(spec, { kind: 'vocab_size' }).then((r) => r[0]!);
      v.catch(() => this.vocabSizes.delete(key));
      this.vocabSizes.set(key, v);
    }
    return v;
  }

  /** The text of `ids` as that tokenizer decodes it (the parity check shows tokens with it). */
  async decode(spec: TokenizerSpec | undefined, ids: number[]): Promise<string> {
    return String.fromCodePoint(...(await this.tokenize(spec, { kind: 'decode', ids })));
  }

  tokenize(spec: TokenizerSpec | undefined, input: TokenizeInput, opts: TokenizeOptions = {}): Promise<number[]> {
    if (this.closed) return Promise.reject(new Error('tokenize pool closed'));
    if (this.broken) return Promise.reject(this.broken);
    const files = filesOf(spec);
    if (this.threads.length === 0) {
      return this.inlineTokenizer(files).then((tok) =>
        tokenizeFast(tok, input).catch((e: unknown) => {
          throw new TokenizeError((e as Error).message);
        }),
      );
    }
    const job: TokenizeJob = { id: this.nextId++, files, input, ...(opts.faultForTest ? { faultForTest: opts.faultForTest } : {}) };
    return this.submit(this.leastLoaded(), job);
  }

  async close(): Promise<void> {
    this.closed = true;
    const threads = this.threads.splice(0);
    await Promise.all(threads.map((t) => t.worker.terminate()));
    for (const t of threads) this.rejectAll(t, new Error('tokenize pool closed'));
  }

  private leastLoaded(): Thread {
    let best = this.threads[0]!;
    for (const t of this.threads) if (t.pending.size < best.pending.size) best = t;
    return best;
  }

  private spawn(): Thread {
    const worker = new Worker(this.boot, { eval: true, execArgv: [], workerData: { crashOnStartForTest: this.crashOnStart } });
    worker.unref();
    const t: Thread = { worker, pending: new Map(), ready: false, dead: false };
    worker.on('message', (r: TokenizeReply) => {
      if ('ready' in r) {
        t.ready = true;
        this.bootFailures = 0;
        for (const p of t.pending.values()) this.post(t, p);
        return;
      }
      const p = t.pending.get(r.id);
      if (!p) return;
      this.settle(t, p);
      if ('error' in r) p.reject(r.server ? new Error(r.error) : new TokenizeError(r.error));
      else p.resolve(toNumbers(r.tokens));
    });
    worker.on('error', (e) => this.died(t, `tokenizer thread failed: ${e.message}`));
    worker.on('exit', (code) => this.died(t, `tokenizer thread exited (${code})`));
    return t;
  }

  private submit(t: Thread, job: TokenizeJob): Promise<number[]> {
    return new Promise<number[]>((resolve, reject) => {
      this.assign(t, { job, resolve, reject, deaths: 0, timer: null });
    });
  }

  /** Queues the job on the thread (posted at once if the thread is ready, else when it is). */
  private assign(t: Thread, p: Pending): void {
    t.pending.set(p.job.id, p);
    if (t.pending.size === 1) t.worker.ref();
    if (t.ready) this.post(t, p);
  }

  /** The deadline runs from posting: a replacement's boot time does not count against the job. */
  private post(t: Thread, p: Pending): void {
    p.timer = setTimeout(() => this.expired(t, p), this.deadlineMs);
    p.timer.unref();
    t.worker.postMessage(p.job);
  }

  /** The job leaves its thread (answered, failed, or moved). */
  private settle(t: Thread, p: Pending): void {
    if (p.timer) clearTimeout(p.timer);
    p.timer = null;
    t.pending.delete(p.job.id);
    if (t.pending.size === 0) t.worker.unref();
  }

  private expired(t: Thread, p: Pending): void {
    if (t.dead || !t.pending.has(p.job.id)) return;
    this.settle(t, p);
    p.reject(new TokenizeTimeoutError(`the tokenizer did not answer within ${this.deadlineMs} ms`));
    this.replace(t);
    void t.worker.terminate();
  }

  /** First 'error' or 'exit' of a thread (the second one of the pair is ignored). */
  private died(t: Thread, why: string): void {
    if (t.dead || this.closed) return;
    if (!t.ready) {
      this.bootFailures++;
      if (this.bootFailures >= this.maxBootFailures) {
        this.broken = new TokenizerCrashLoopError(`${this.bootFailures} tokenizer threads in a row died while starting (last: ${why}); tokenization is out of service`);
        t.dead = true;
        this.threads.splice(this.threads.indexOf(t), 1);
        this.rejectAll(t, this.broken);
        for (const other of this.threads.splice(0)) {
          other.dead = true;
          void other.worker.terminate();
          this.rejectAll(other, this.broken);
        }
        return;
      }
    }
    // The job running when it died (the oldest: a thread works in order) is charged; a thread that never got ready ran none.
    const running = t.ready ? t.pending.values().next().value : undefined;
    if (running) {
      running.deaths++;
      if (running.deaths >= 2) {
        this.settle(t, running);
        running.reject(new TokenizerCrashedError(`the tokenizer thread died twice while tokenizing this prompt (${why})`));
      }
    }
    this.replace(t);
  }

  /** Takes the thread out, spawns its replacement, moves its jobs there. */
  private replace(t: Thread): void {
    t.dead = true;
    const i = this.threads.indexOf(t);
    if (i >= 0) this.threads.splice(i, 1);
    const fresh = this.spawn();
    this.threads.push(fresh);
    for (const p of [...t.pending.values()]) {
      this.settle(t, p);
      this.assign(fresh, p);
    }
  }

  private rejectAll(t: Thread, e: Error): void {
    for (const p of [...t.pending.values()]) {
      this.settle(t, p);
      p.reject(e);
    }
  }

  /** Inline too: the native encoder where it loads (it encodes off the event loop) and the prefix cache, as the threads have. */
  private inlineTokenizer(files: TokenizerFiles | null): Promise<FastTokenizer> {
    const key = files ? JSON.stringify(files) : 'default';
    let p = this.inline.get(key);
    if (!p) {
      p = loadFastTokenizer(files ?? defaultTokenizerFiles());
      this.inline.set(key, p);
    }
    return p;
  }
}

/** The prompt cannot be tokenized (e.g. chat without a template): the client's fault, a 400. */
export class TokenizeError extends Error {
  override name = 'TokenizeError';
}

/** The tokenizer threads cannot answer (crashed, stuck, crash-looping): the router's fault, a 503. */
export class TokenizerUnavailableError extends TokenizeError {
  override name = 'TokenizerUnavailableError';
}
/** This prompt was being tokenized when a thread died, twice. */
export class TokenizerCrashedError extends TokenizerUnavailableError {
  override name = 'TokenizerCrashedError';
}
/** No answer within the job deadline. */
export class TokenizeTimeoutError extends TokenizerUnavailableError {
  override name = 'TokenizeTimeoutError';
}
/** Threads keep dying as they start; the pool stopped respawning them. */
export class TokenizerCrashLoopError extends TokenizerUnavailableError {
  override name = 'TokenizerCrashLoopError';
}

function toNumbers(a: Uint32Array): number[] {
  const out = new Array<number>(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]!;
  return out;
}
