/**
 * Prompt tokenization off the API's event loop: one thread with its own tokenizer, jobs in
 * order (a dead thread fails its jobs and is replaced by the next job).
 */
import { Worker } from 'node:worker_threads';
import type { TokenizerLoadOptions } from '../../src/tokenizer/index.js';

/** Chat requests are rendered on the event loop (string work, fast) and only their text comes here. */
export type EncodeJob = { id: number; text: string };
/** `server`: the thread could not load its tokenizer (a 500), else the input could not be encoded (a 400). */
export type EncodeReply = { id: number; ids: Uint32Array } | { id: number; error: string; server?: boolean };

/** The input could not be encoded (a 400), as opposed to the thread failing. */
export class EncodeError extends Error {}

interface Thread {
  worker: Worker;
  /** This thread's jobs waiting for their ids. */
  pending: Map<number, { resolve(ids: number[]): void; reject(e: Error): void }>;
}

export class ThreadTokenizer {
  private current: Thread | null = null;
  private nextId = 1;

  constructor(private readonly files: TokenizerLoadOptions) {}

  encode(text: string): Promise<number[]> {
    const id = this.nextId++;
    const t = this.thread();
    return new Promise((resolve, reject) => {
      t.pending.set(id, { resolve, reject });
      if (t.pending.size === 1) t.worker.ref();
      t.worker.postMessage({ id, text } satisfies EncodeJob);
    });
  }

  /** Starts the thread now, so the first request does not pay for the tokenizer load. */
  warm(): Promise<number[]> {
    return this.encode('warm');
  }

  close(): Promise<number> | undefined {
    const t = this.current;
    this.current = null;
    return t?.worker.terminate();
  }

  /** The thread, (re)started on demand: a thread that dies fails its own jobs and the next job gets a new one. */
  private thread(): Thread {
    if (this.current) return this.current;
    // The thread registers tsx itself (loader hooks of the main thread do not reach workers in Node 20).
    const api = JSON.stringify(import.meta.resolve('tsx/esm/api'));
    const entry = JSON.stringify(new URL('./tokenize-thread.ts', import.meta.url).href);
    const worker = new Worker(`import(${api}).then((m) => { m.register(); return import(${entry}); })`, { eval: true, execArgv: [], workerData: this.files });
    worker.unref();
    const t: Thread = { worker, pending: new Map() };
    worker.on('message', (r: EncodeReply) => {
      const p = t.pending.get(r.id);
      if (!p) return;
      t.pending.delete(r.id);
      if (t.pending.size === 0) worker.unref();
      if ('error' in r) p.reject(r.server ? new Error(r.error) : new EncodeError(r.error));
      else p.resolve(Array.from(r.ids));
    });
    const fail = (e: Error) => {
      if (this.current === t) this.current = null;
      for (const p of t.pending.values()) p.reject(e);
      t.pending.clear();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`the tokenizer thread exited (${code})`)));
    this.current = t;
    return t;
  }
}
