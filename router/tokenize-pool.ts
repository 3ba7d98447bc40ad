import { Worker } from 'node:worker_threads';
import { Tokenizer } from '../src/tokenizer/tokenizer.js';
import type { TokenizeInput, TokenizeJob, TokenizeReply, TokenizerFiles } from './tokenize-job.js';
import { tokenizeWith } from './tokenize-job.js';
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

interface Pending {
  resolve(t: number[]): void;
  reject(e: Error): void;
}

interface Thread {
  worker: Worker;
  pending: Map<number, Pending>;
}

/**
 * Tokenization off the main event loop: a few worker threads, each with its own tokenizers;
 * a job goes to the thread with the fewest jobs outstanding. With 0 threads, tokenizes inline.
 */
export class TokenizePool {
  private readonly threads: Thread[] = [];
  private readonly inline = new Map<string, Promise<Tokenizer>>();
  private nextId = 1;
  private closed = false;

  constructor(threads: number) {
    // The thread registers tsx itself (loader hooks of the main thread do not reach workers in Node 20).
    const api = JSON.stringify(import.meta.resolve('tsx/esm/api'));
    const entry = JSON.stringify(new URL('./tokenize-worker.ts', import.meta.url).href);
    const boot = `import(${api}).then((m) => { m.register(); return import(${entry}); })`;
    for (let i = 0; i < threads; i++) {
      const worker = new Worker(boot, { eval: true, execArgv: [] });
      worker.unref();
      const t: Thread = { worker, pending: new Map() };
      worker.on('message', (r: TokenizeReply) => {
        const p = t.pending.get(r.id);
        if (!p) return;
        t.pending.delete(r.id);
        if ('error' in r) p.reject(r.server ? new Error(r.error) : new TokenizeError(r.error));
        else p.resolve(r.tokens);
      });
      worker.on('error', (e) => this.failAll(t, e));
      worker.on('exit', (code) => {
        if (!this.closed) this.failAll(t, new Error(`tokenizer thread exited (${code})`));
      });
      this.threads.push(t);
    }
  }

  /** Loads the tokenizer everywhere now (so the first request does not pay for it). */
  async warm(spec: TokenizerSpec | undefined): Promise<void> {
    const files = filesOf(spec);
    if (this.threads.length === 0) {
      await this.inlineTokenizer(files);
      return;
    }
    await Promise.all(this.threads.map((t) => this.send(t, files, { kind: 'text', text: 'warm' })));
  }

  tokenize(spec: TokenizerSpec | undefined, input: TokenizeInput): Promise<number[]> {
    if (this.closed) return Promise.reject(new Error('tokenize pool closed'));
    const files = filesOf(spec);
    if (this.threads.length === 0) {
      return this.inlineTokenizer(files).then((tok: Tokenizer) => {
        try {
          return tokenizeWith(tok, input);
        } catch (e) {
          throw new TokenizeError((e as Error).message);
        }
      });
    }
    let best = this.threads[0]!;
    for (const t of this.threads) if (t.pending.size < best.pending.size) best = t;
    return this.send(best, files, input);
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.threads.map((t) => t.worker.terminate()));
    for (const t of this.threads) this.failAll(t, new Error('tokenize pool closed'));
  }

  private send(t: Thread, files: TokenizerFiles | null, input: TokenizeInput): Promise<number[]> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      t.pending.set(id, { resolve, reject });
      if (t.pending.size === 1) t.worker.ref();
      const job: TokenizeJob = { id, files, input };
      t.worker.postMessage(job);
    }).finally(() => {
      if (t.pending.size === 0) t.worker.unref();
    }) as Promise<number[]>;
  }

  private failAll(t: Thread, e: Error): void {
    for (const p of t.pending.values()) p.reject(e);
    t.pending.clear();
  }

  private inlineTokenizer(files: TokenizerFiles | null): Promise<Tokenizer> {
    const key = files ? JSON.stringify(files) : 'default';
    let p = this.inline.get(key);
    if (!p) {
      p = files ? Tokenizer.load(files) : Tokenizer.loadDefault();
      this.inline.set(key, p);
    }
    return p;
  }
}

/** The prompt cannot be tokenized (e.g. chat without a template): the client's fault, a 400. */
export class TokenizeError extends Error {
  override name = 'TokenizeError';
}
