import type { WorkerConfig } from '../config.js';
import { workerIdOf } from '../config.js';

/** What to do so the membership matches the desired set. */
export type Step =
  | { do: 'add'; worker: WorkerConfig }
  /** Out of candidates now, removed once its in-flight requests finish (or after the bound). */
  | { do: 'drain'; id: string }
  /** Draining, but wanted again with the same config: back into candidates. */
  | { do: 'undrain'; id: string };

/** A stable text of a worker config, to tell a changed worker from the same one. */
export function configKey(w: WorkerConfig): string {
  return JSON.stringify(sortKeys(w));
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys((v as Record<string, unknown>)[k])]));
  return v;
}

/** The union of every source's set; an id two sources both give keeps the first (a conflict is reported). */
export function mergeSets(sets: WorkerConfig[][]): { workers: Map<string, WorkerConfig>; conflicts: string[] } {
  const workers = new Map<string, WorkerConfig>();
  const conflicts: string[] = [];
  for (const set of sets) {
    for (const w of set) {
      const id = workerIdOf(w);
      const had = workers.get(id);
      if (!had) workers.set(id, w);
      else if (configKey(had) !== configKey(w)) conflicts.push(id);
    }
  }
  return { workers, conflicts };
}

/**
 * Pure: desired vs current → steps. `current`: members this controller added and not draining;
 * `draining`: members leaving. A changed config (same id) is drained first; once it is gone the
 * next pass adds the new config (an id is never two members at once).
 */
export function reconcile(
  current: ReadonlyMap<string, WorkerConfig>,
  draining: ReadonlyMap<string, WorkerConfig>,
  desired: ReadonlyMap<string, WorkerConfig>,
): Step[] {
  const steps: Step[] = [];
  for (const [id, cfg] of current) {
    const want = desired.get(id);
    if (!want || configKey(want) !== configKey(cfg)) steps.push({ do: 'drain', id });
  }
  for (const [id, want] of desired) {
    if (current.has(id)) continue;
    const leaving = draining.get(id);
    if (!leaving) steps.push({ do: 'add', worker: want });
    else if (configKey(leaving) === configKey(want)) steps.push({ do: 'undrain', id });
  }
  return steps;
}
