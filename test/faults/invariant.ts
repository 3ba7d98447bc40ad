/**
 * The recovery invariant (issue 6): after a fault has settled, for every (worker, rank)
 * the router's tree holds exactly the blocks the worker's GET /cache reports, or the
 * router has marked that source untrusted (and cleared it).
 *
 * A block is compared as "engine hash / token key": the engine hash as the index's
 * 64-bit handle, the token key chained from the root exactly as the index keys it, so
 * a block stored under the wrong parent or with other tokens counts as divergent too.
 */
import { chainKey, engineKey, loraKey } from '../../src/index/hash.js';
import type { DumpNode, SourceDump } from '../../src/index/index.js';

export interface CachedBlock {
  hash: string;
  parent_hash: string | null;
  token_ids: number[];
  medium?: string;
}

/** What the router believes about one source. */
export interface RouterView {
  trusted: boolean;
  dump: SourceDump | null;
}

export interface SourceCheck {
  source: string;
  trusted: boolean;
  workerBlocks: number;
  routerBlocks: number;
  /** Blocks the worker holds that the router does not. */
  missing: number;
  /** Blocks the router holds that the worker does not. */
  extra: number;
  /** missing + extra. */
  divergent: number;
  /** Equal, or explicitly untrusted. */
  ok: boolean;
}

const hex = (hi: number, lo: number) => hi.toString(16).padStart(8, '0') + lo.toString(16).padStart(8, '0');

/** The worker's blocks as "0x<hash handle>/<token key>" strings. */
export function workerEntries(blocks: CachedBlock[]): Set<string> {
  const byHash = new Map(blocks.map((b) => [b.hash, b]));
  const keys = new Map<string, { lo: number; hi: number }>();
  const out = new Uint32Array(2);
  const keyOf = (b: CachedBlock, depth = 0): { lo: number; hi: number } | null => {
    const known = keys.get(b.hash);
    if (known) return known;
    let parent = { lo: 0, hi: 0 };
    if (b.parent_hash !== null) {
      const p = byHash.get(b.parent_hash);
      // A block whose parent the worker no longer holds: the router cannot hold it either.
      const pk = p && depth < 100_000 ? keyOf(p, depth + 1) : null;
      if (!pk) return null;
      parent = pk;
    }
    const l = loraKey(null);
    chainKey(parent.lo, parent.hi, l.lo, l.hi, b.token_ids, 0, b.token_ids.length, out);
    const k = { lo: out[0]!, hi: out[1]! };
    keys.set(b.hash, k);
    return k;
  };
  const entries = new Set<string>();
  for (const b of blocks) {
    const k = keyOf(b);
    engineKey(BigInt(b.hash), out);
    entries.add(`0x${hex(out[1]!, out[0]!)}/${k ? hex(k.hi, k.lo) : 'orphan'}`);
  }
  return entries;
}

/** The router's real (not provisional) blocks of one source, same form. */
export function dumpEntries(dump: SourceDump | null): Set<string> {
  const entries = new Set<string>();
  const visit = (n: DumpNode) => {
    for (const h of n.hashes) entries.add(`${h}/${n.key}`);
    n.children.forEach(visit);
  };
  dump?.roots.forEach(visit);
  return entries;
}

export function compare(source: string, worker: Set<string>, view: RouterView): SourceCheck {
  const router = dumpEntries(view.dump);
  let missing = 0;
  let extra = 0;
  for (const e of worker) if (!router.has(e)) missing++;
  for (const e of router) if (!worker.has(e)) extra++;
  const divergent = missing + extra;
  return { source, trusted: view.trusted, workerBlocks: worker.size, routerBlocks: router.size, missing, extra, divergent, ok: divergent === 0 || !view.trusted };
}

export async function fetchCache(workerUrl: string): Promise<CachedBlock[]> {
  const r = await fetch(`${workerUrl}/cache`, { signal: AbortSignal.timeout(10_000) });
  if (!r.ok) throw new Error(`GET ${workerUrl}/cache: HTTP ${r.status}`);
  return (await r.json()) as CachedBlock[];
}

/** One source checked against its worker. */
export async function checkSource(source: string, workerUrl: string, view: () => RouterView | Promise<RouterView>): Promise<SourceCheck> {
  const worker = workerEntries(await fetchCache(workerUrl));
  return compare(source, worker, await view());
}

/** The router's view of (worker, rank) through its admin API: GET /workers/:id?dump. */
export function routerApiView(routerUrl: string, workerId: string, rank = 0, adminKey?: string): () => Promise<RouterView> {
  return async () => {
    const r = await fetch(`${routerUrl}/workers/${encodeURIComponent(workerId)}?dump`, {
      headers: adminKey ? { authorization: `Bearer ${adminKey}` } : {},
      signal: AbortSignal.timeout(10_000),
    });
    if (!r.ok) throw new Error(`GET /workers/${workerId}?dump: HTTP ${r.status}`);
    const j = (await r.json()) as { ranks: { rank: number; events: { trusted: boolean } | null }[]; trees?: Record<string, SourceDump | null> };
    if (!j.trees) throw new Error('the router does not dump trees (GET /workers/:id?dump)');
    const trusted = j.ranks.find((x) => x.rank === rank)?.events?.trusted ?? false;
    return { trusted, dump: j.trees[String(rank)] ?? null };
  };
}

/**
 * Polls until the check holds the way `want` says (default: ok, i.e. equal or untrusted) twice
 * in a row; returns the last check and how long it took. Throws with the last check on timeout.
 */
export async function settle(
  check: () => Promise<SourceCheck>,
  opts: { timeoutMs?: number; want?: (c: SourceCheck) => boolean } = {},
): Promise<{ check: SourceCheck; ms: number }> {
  const want = opts.want ?? ((c: SourceCheck) => c.ok);
  const t0 = Date.now();
  const deadline = t0 + (opts.timeoutMs ?? 20_000);
  let last: SourceCheck | null = null;
  let streak = 0;
  for (;;) {
    try {
      last = await check();
      streak = want(last) ? streak + 1 : 0;
      if (streak >= 2) return { check: last, ms: Date.now() - t0 };
    } catch (err) {
      streak = 0;
      if (Date.now() > deadline) throw err;
    }
    if (Date.now() > deadline) throw Object.assign(new Error(`not settled after ${opts.timeoutMs ?? 20_000} ms: ${JSON.stringify(last)}`), { check: last });
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Equal and trusted: the strongest outcome. */
export const exact = (c: SourceCheck): boolean => c.trusted && c.divergent === 0;
/** Explicitly untrusted and holding nothing the worker does not. */
export const markedUntrusted = (c: SourceCheck): boolean => !c.trusted && c.extra === 0;
