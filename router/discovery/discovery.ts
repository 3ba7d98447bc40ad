import type { WorkerConfig } from '../config.js';

/**
 * One source of workers. start() delivers the full desired set of this source (never a delta)
 * through onChange, now and whenever it changes, and resolves once the first set is delivered;
 * a source that cannot produce a first set rejects with a ConfigError. Later failures keep the
 * last good set (the source logs why).
 */
export interface Discovery {
  readonly name: string;
  start(onChange: (workers: WorkerConfig[]) => void): Promise<void>;
  close(): Promise<void>;
}

/** Today's `workers` list: one set, delivered once. */
export class StaticDiscovery implements Discovery {
  readonly name = 'workers';
  constructor(private readonly workers: WorkerConfig[]) {}
  async start(onChange: (workers: WorkerConfig[]) => void): Promise<void> {
    onChange(this.workers);
  }
  async close(): Promise<void> {}
}
