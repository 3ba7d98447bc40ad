/**
 * Prompt tokenization off the API's event loop: one thread with its own tokenizer, jobs in
 * order (a dead thread fails its jobs and is replaced by the next job).
 */
import { Worker } from 'node:worker_threads';
import type { ChatTemplateInput, TokenizerLoadOptions } from '../../src/tokenizer/index.js';

export type EncodeJob = { id: number } & ({ kind: 'text'; text: string } | { kind: 'chat'; input: ChatTemplateInput });
export type EncodeReply = { id: number; ids: Uint32Array } | { id: number; error: string };

/** The template could not render the request (a 400), as opposed to the thread failing. */
export class RenderError extends Error {}

export class ThreadTokenizer {
  private worker: Worker | null = null;
  private readonly pending = new Map<number, { resolve(ids: number[]): void; reject(e: Error): void }>();
  private nextId = 1;

  constructor(private readonly files: TokenizerLoadOptions) {}

  encode(text: string): Promise<number[]> {
    return this.run({ kind: 'text', text });
  }

  encodeChat(input: ChatTemplateInput): Promise<number[]> {
    return this.run({ kind: 'chat', input });
  }

  /** Starts the thread now, so the first request does not pay for the tokenizer load. */
  warm(): Promise<number[]> {
    return this.encode('warm');
  }

  close(): Promise<number> | undefined {
    const w = this.worker;
    this.worker = null;
    return w?.terminate();
  }

  private run(job: { kind: 'text'; text: string } | { kind: 'chat'; input: ChatTemplateInput }): Promise<number[]> {
    const id = this.nextId++;
    const w = this.thread();
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      if (this.pending.size === 1) w.ref();
      w.postMessage({ id, ...job } satisfies EncodeJob);
    });
  }

  /** The thread, (re)started on demand: a thread that died fails its jobs and the next job gets a new one. */
  private thread(): Worker {
    if (this.worker) return this.worker;
    // The thread registers tsx itself (loader hooks of the main thread do not reach workers in Node 20).
    const api = JSON.stringify(import.meta.resolve('tsx/esm/api'));
    const entry = JSON.stringify(new URL('./tokenize-thread.ts', import.meta.url).href);
    const w = new Worker(`import(${api}).then((m) => { m.register(); return import(${entry}); })`, { eval: true, execArgv: [], workerData: this.files });
    w.unref();
    w.on('message', (r: EncodeReply) => {
      const p = this.pending.get(r.id);
      if (!p) return;
      this.pending.delete(r.id);
      if (this.pending.size === 0) w.unref();
      if ('error' in r) p.reject(new RenderError(r.error));
      else p.resolve(Array.from(r.ids));
    });
    const fail = (e: Error) => {
      if (this.worker === w) this.worker = null;
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    };
    w.on('error', fail);
    w.on('exit', (code) => fail(new Error(`the tokenizer thread exited (${code})`)));
    this.worker = w;
    return w;
  }
}

