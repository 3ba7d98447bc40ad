import { createHash } from 'node:crypto';
import type { Candidate, Policy, RouteRequest, Scored } from './policy.js';
import { plainScore } from './policy.js';

export interface PrefixHashOptions {
  /** Leading prompt tokens hashed (SMG: prefix_token_count, default 256). */
  prefix_tokens: number;
  /** The owner is overloaded above this many times the mean in-flight count (SMG: load_factor, 1.25). */
  load_factor: number;
  /** Points per worker on the ring (SMG's HashRing: 150). */
  virtual_nodes: number;
}

/** A 48-bit ring position (exact in a double). */
function position(data: string | Uint8Array): number {
  return createHash('sha1').update(data).digest().readUIntBE(0, 6);
}

interface Ring {
  /** The workers on it, in source order. */
  sources: string[];
  /** Sorted points, and the source owning each. */
  points: number[];
  owners: string[];
}

/**
 * Consistent hashing of the prompt's first tokens, as SGLang Model Gateway's `prefix_hash`
 * (model_gateway/src/policies/prefix_hash.rs, PrefixHashPolicy::find_worker_with_load_balance, over
 * the HashRing of core/worker_registry.rs): the first `prefix_tokens` tokens (with the LoRA and
 * cache salt, which vLLM's block hashes include) pick a point on a ring of `virtual_nodes` points per
 * worker; the first worker clockwise owns it. Workers not among the candidates (unhealthy, draining)
 * are skipped, so only their prefixes move when one leaves. The owner is overloaded when its
 * in-flight count exceeds (total + 1) / n × load_factor (the +1 is this request); then the least
 * loaded candidate that is not overloaded wins (ring order on ties), or the owner if all are.
 * The rest of the list (retries) follows the ring clockwise.
 */
export class PrefixHashPolicy implements Policy {
  readonly name = 'prefix_hash';
  /** Rebuilt only when the set of candidates changes (a cache: answers depend on the set alone). */
  private ring: { key: string; ring: Ring } | null = null;

  constructor(private readonly o: PrefixHashOptions) {}

  rank(req: RouteRequest, candidates: Candidate[]): Scored[] {
    if (candidates.length === 0) return [];
    const bySource = new Map(candidates.map((c) => [c.source, c]));
    const ring = this.ringFor([...bySource.keys()].sort());
    // One key for every candidate: the tokens of the first source (candidates sharing a tokenizer agree).
    const first = bySource.get(ring.sources[0]!)!;
    const walk = this.walk(ring, this.keyOf(req, first));
    const order = walk.map((s) => bySource.get(s)!);

    const total = order.reduce((t, c) => t + c.load.inFlight, 0);
    const limit = ((total + 1) / order.length) * this.o.load_factor;
    const ok = (c: Candidate) => total === 0 || c.load.inFlight <= limit;
    const owner = order[0]!;
    let pick = owner;
    if (!ok(owner)) {
      for (const c of order) if (ok(c) && (pick === owner || c.load.inFlight < pick.load.inFlight)) pick = c;
    }
    const ranked = [pick, ...order.filter((c) => c !== pick)];
    return ranked.map((c, k) =>
      plainScore(c, req.tokensFor(c).length, k, { position: k, ring_distance: order.indexOf(c), in_flight: c.load.inFlight, ...(c === owner && !ok(c) ? { owner_overloaded: 1 } : {}) }),
    );
  }

  private keyOf(req: RouteRequest, c: Candidate): number {
    const tokens = req.tokensFor(c).slice(0, this.o.prefix_tokens);
    const h = createHash('sha1').update(`${req.lora ?? ''}\u0000${req.salt ?? ''}\u0000`);
    h.update(new Uint8Array(Uint32Array.from(tokens).buffer));
    return h.digest().readUIntBE(0, 6);
  }

  /** Distinct sources clockwise from the key's point. */
  private walk(ring: Ring, key: number): string[] {
    let lo = 0;
    let hi = ring.points.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (ring.points[mid]! < key) lo = mid + 1;
      else hi = mid;
    }
    const seen = new Set<string>();
    const out: string[] = [];
    for (let i = 0; i < ring.points.length && out.length < ring.sources.length; i++) {
      const s = ring.owners[(lo + i) % ring.points.length]!;
      if (!seen.has(s)) {
        seen.add(s);
        out.push(s);
      }
    }
    return out;
  }

  private ringFor(sources: string[]): Ring {
    const key = sources.join('\u0000');
    if (this.ring?.key === key) return this.ring.ring;
    const pts: { p: number; s: string }[] = [];
    for (const s of sources) for (let v = 0; v < this.o.virtual_nodes; v++) pts.push({ p: position(`${s}#${v}`), s });
    pts.sort((a, b) => a.p - b.p || (a.s < b.s ? -1 : a.s > b.s ? 1 : 0));
    const ring = { sources, points: pts.map((x) => x.p), owners: pts.map((x) => x.s) };
    this.ring = { key, ring };
    return ring;
  }
}
