/**
 * The recovery invariant (issue 6): after a fault has settled, for every (worker, rank)
 * the router's tree holds exactly the blocks the worker's GET /cache reports, or the
 * router has marked that source untrusted (and cleared it).
 *
 * The oracle is independent of the index's hashing: a block is named by its engine
 * hash (the decimal string both GET /cache and the router's dump print) and its token prefix, the joined token ids
 * of its whole chain from the root, built from the worker's own parent links (and its
 * salt, from the first block's extra_keys). The router's side rebuilds the same strings
 * from the shape of its dumped tree: a node's prefix is its tree parent's plus the
 * tokens the worker reports for the node's hash. So a block stored under the wrong
 * parent, lost, kept too long, or named by a hash the worker never had counts as
 * divergent. The router's token keys are only checked to be a bijection with the
 * prefixes (one key per prefix, one prefix per key), never recomputed.
 */
import type { DumpNode, SourceDump } from '../../src/index/index.js';

export interface CachedBlock {
  hash: string;
  parent_hash: string | null;
  token_ids: number[];
  medium?: string;
  /** vLLM's per-block extra keys, when the worker reports them: the salt of a chain's first block. */
  extra_keys?: unknown[] | null;
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
  /** Router token keys shared by two prefixes, or prefixes under two keys. */
  keyConflicts: number;
  /** missing + extra + keyConflicts. */
  divergent: number;
  /** Equal, or explicitly untrusted. */
  ok: boolean;
}

function saltOf(b: CachedBlock): string | null {
  const first = b.extra_keys?.[0];
  if (!Array.isArray(first)) return null;
  for (const k of first) {
    if (typeof k === 'string') return k;
    if (typeof k === 'object' && k !== null && (k as { type?: unknown }).type === 'cache_salt') return String((k as { salt: unknown }).salt);
  }
  return null;
}

/** The worker's blocks by hash name, each with its full token prefix ("#salt|1,2,3|4,5,6"). */
export function workerPrefixes(blocks: CachedBlock[]): Map<string, { block: CachedBlock; prefix: string | null }> {
  const byHash = new Map(blocks.map((b) => [b.hash, b]));
  const memo = new Map<string, string | null>();
  const prefixOf = (name: string): string | null => {
    // Up the chain (iteratively: chains can be long) to a known prefix, the root, or a missing parent.
    const chain: CachedBlock[] = [];
    let base: string | null = null;
    let cur = byHash.get(name);
    while (cur) {
      const n = cur.hash;
      if (memo.has(n)) {
        base = memo.get(n)!;
        break;
      }
      chain.push(cur);
      if (chain.length > byHash.size) throw new Error('parent cycle in GET /cache');
      if (cur.parent_hash === null) {
        const salt = saltOf(cur);
        base = salt === null ? '' : `#${salt}`;
        break;
      }
      // A block whose parent the worker no longer holds: the router cannot hold it either.
      cur = byHash.get(cur.parent_hash);
      if (!cur) base = null;
    }
    let acc = base;
    for (let i = chain.length - 1; i >= 0; i--) {
      acc = acc === null ? null : `${acc}|${chain[i].token_ids.join(',')}`;
      memo.set(chain[i].hash, acc);
    }
    return memo.get(name) ?? null;
  };
  const out = new Map<string, { block: CachedBlock; prefix: string | null }>();
  for (const [name, block] of byHash) out.set(name, { block, prefix: prefixOf(name) });
  return out;
}

/** The worker's blocks as "hash/prefix" strings ("orphan" for a block whose chain is broken). */
export function workerEntries(blocks: CachedBlock[]): Set<string> {
  const entries = new Set<string>();
  for (const [name, { prefix }] of workerPrefixes(blocks)) entries.add(`${name}/${prefix ?? 'orphan'}`);
  return entries;
}

/**
 * The router's real (not provisional) blocks of one source, same form: prefixes follow
 * the dump's tree, with the worker's tokens for each hash. Also returns how many token
 * keys break the key <-> prefix bijection.
 */
export function dumpEntries(dump: SourceDump | null, worker: CachedBlock[]): { entries: Set<string>; keyConflicts: number } {
  const tokensOf = new Map(worker.map((b) => [b.hash, b]));
  const entries = new Set<string>();
  const prefixByKey = new Map<string, string>();
  const keyByPrefix = new Map<string, string>();
  let keyConflicts = 0;
  const visit = (n: DumpNode, parent: string | null) => {
    const known = n.hashes.map((h) => tokensOf.get(h)).find((b) => b !== undefined);
    let prefix: string | null = null;
    if (known) {
      const root = parent ?? (known.parent_hash === null && saltOf(known) !== null ? `#${saltOf(known)}` : '');
      prefix = `${root}|${known.token_ids.join(',')}`;
    }
    if (n.media.length > 0) {
      for (const h of n.hashes) entries.add(`${h}/${prefix ?? 'unknown-to-worker'}`);
      if (prefix !== null) {
        const k = prefixByKey.get(n.key);
        const p = keyByPrefix.get(prefix);
        if ((k !== undefined && k !== prefix) || (p !== undefined && p !== n.key)) keyConflicts++;
        prefixByKey.set(n.key, prefix);
        keyByPrefix.set(prefix, n.key);
      }
    }
    for (const c of n.children) visit(c, prefix ?? `?${n.key}`);
  };
  dump?.roots.forEach((r) => visit(r, null));
  return { entries, keyConflicts };
}

export function compare(source: string, worker: CachedBlock[], view: RouterView): SourceCheck {
  const want = workerEntries(worker);
  const { entries: router, keyConflicts } = dumpEntries(view.dump, worker);
  let missing = 0;
  let extra = 0;
  for (const e of want) if (!router.has(e)) missing++;
  for (const e of router) if (!want.has(e)) extra++;
  const divergent = missing + extra + keyConflicts;
  return {
    source, trusted: view.trusted, workerBlocks: want.size, routerBlocks: router.size,
    missing, extra, keyConflicts, divergent, ok: divergent === 0 || !view.trusted,
  };
}

export async function fetchCache(workerUrl: string): Promise<CachedBlock[]> {
  const r = await fetch(`${workerUrl}/cache`, { signal: AbortSignal.timeout(10_000) });
  if (!r.ok) throw new Error(`GET ${workerUrl}/cache: HTTP ${r.status}`);
  return (await r.json()) as CachedBlock[];
}

/** One source checked against its worker. */
export async function checkSource(source: string, workerUrl: string, view: () => RouterView | Promise<RouterView>): Promise<SourceCheck> {
  const worker = await fetchCache(workerUrl);
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
