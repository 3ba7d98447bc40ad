import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { z } from 'zod';
import { ConfigError, formatZodError, WorkerSchema, workerIdOf, type WorkerConfig } from '../config.js';
import type { Discovery } from './discovery.js';

const WorkersFileSchema = z.object({ description: z.string().optional(), workers: z.array(WorkerSchema) }).strict();

/** Parses a workers file's text: the workers, or why not (one line). Pure. */
export function parseWorkersFile(text: string): { workers: WorkerConfig[] } | { error: string } {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return { error: `not valid JSON: ${(e as Error).message}` };
  }
  const r = WorkersFileSchema.safeParse(json);
  if (!r.success) return { error: formatZodError(r.error, 'workers file').replace(/^invalid workers file: /, '') };
  const ids = new Set<string>();
  for (const w of r.data.workers) {
    const id = workerIdOf(w);
    if (ids.has(id)) return { error: `workers: duplicate worker id "${id}"` };
    ids.add(id);
  }
  return { workers: r.data.workers };
}

/**
 * A JSON file {"workers": [...]} (the `workers` entries of the router config), re-read on change
 * events of its directory (editors that rename, ConfigMap symlink swaps) and every poll_ms. A bad
 * edit logs one line and keeps the last good set.
 */
export class FileDiscovery implements Discovery {
  readonly name: string;
  private watcher: FSWatcher | null = null;
  private timer: NodeJS.Timeout | null = null;
  private lastText: string | null = null;
  private lastBad: string | null = null;
  private good = 0;
  private reading: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly path: string,
    private readonly pollMs: number,
    private readonly log: (msg: string) => void = () => {},
  ) {
    this.name = `file ${path}`;
  }

  async start(onChange: (workers: WorkerConfig[]) => void): Promise<void> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (e) {
      throw new ConfigError(`discovery.file: cannot read ${this.path}: ${(e as Error).message}`);
    }
    const first = parseWorkersFile(text);
    if ('error' in first) throw new ConfigError(`discovery.file: ${this.path}: ${first.error}`);
    this.lastText = text;
    this.good = first.workers.length;
    onChange(first.workers);
    const reload = () => {
      this.reading = this.reading.then(() => this.reload(onChange));
    };
    try {
      this.watcher = watch(dirname(this.path), (_ev, f) => {
        if (f === null || f === basename(this.path) || f === '..data') reload();
      });
      this.watcher.on('error', () => {});
    } catch {
      /* no change events here: the poll still sees edits */
    }
    this.timer = setInterval(reload, this.pollMs);
    this.timer.unref();
  }

  private async reload(onChange: (workers: WorkerConfig[]) => void): Promise<void> {
    if (this.closed) return;
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (e) {
      this.bad(`cannot read it: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      return;
    }
    if (text === this.lastText || this.closed) return;
    const r = parseWorkersFile(text);
    if ('error' in r) {
      this.bad(r.error);
      return;
    }
    this.lastText = text;
    this.lastBad = null;
    this.good = r.workers.length;
    this.log(`discovery file ${this.path}: ${r.workers.length} worker(s)`);
    onChange(r.workers);
  }

  /** One line per distinct problem (a poll re-reading the same bad file says nothing more). */
  private bad(why: string): void {
    if (why === this.lastBad) return;
    this.lastBad = why;
    this.log(`discovery file ${this.path}: ${why}; keeping the last good set (${this.good} worker(s))`);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.watcher?.close();
    if (this.timer) clearInterval(this.timer);
    await this.reading;
  }
}
