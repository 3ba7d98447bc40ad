/**
 * What replicas tell each other over NATS (JSON, one message per NATS message).
 *
 * Subjects: `${prefix}.load.${replica}` carries `LoadMessage`s, `${prefix}.prov.${replica}` carries
 * `ProvisionalMessage`s; every replica subscribes to `${prefix}.load.*` and `${prefix}.prov.*`.
 *
 * A load message never says "+1": it states the sender's current totals for the sources it names,
 * so a lost or duplicated message is healed by the next one (a heartbeat restates every source).
 */
import type { WorkerLoad } from '../load.js';

/** A source's totals as the sender has them: [inFlight, pendingPrefillTokens, activeDecodes]. */
export type Totals = [number, number, number];

export interface LoadMessage {
  /** Sender's replica id (a restarted replica has a fresh one). */
  r: string;
  /** Sender's sequence number, one counter for all its load messages (starts at 1). */
  q: number;
  /** How long this share counts without a newer message from the sender (ms). */
  ttl: number;
  /** 'd': delta (these sources changed), 'h': heartbeat (the full share: sources absent are zero), 'b': goodbye. */
  k: 'd' | 'h' | 'b';
  /** Source id → totals (absent for 'b'). */
  s?: Record<string, Totals>;
  /**
   * Source id → ids of the sender's pending prefills there that its provisional messages keyed
   * (`i`), for the sources `s` names: an id no longer listed has had its first byte or ended.
   * Absent (older senders, or none keyed): no keyed pending there.
   */
  p?: Record<string, number[]>;
}

/**
 * Version 2 (`v: 2`) carries the prompt's block keys (`k`, 8 bytes a block: an eighth of the
 * token ids of a 16-token block); version 1 (no `v`) carried the token ids (`t`), still decoded.
 */
export interface ProvisionalMessage {
  v?: 2;
  r: string;
  /** Source the prompt was routed to. */
  s: string;
  /** Block size the sender marked with. */
  bs: number;
  lora: string | null;
  salt: string | null;
  /** v1: the prompt's token ids, full blocks only, as little-endian uint32, base64. */
  t?: string;
  /** v2: the prompt's block keys (src/index: chained under its LoRA and salt) as little-endian uint32 pairs [lo, hi], base64. */
  k?: string;
  /** The sender's id of the pending prefill this routing started (listed in its load messages' `p` while pending). */
  i?: number;
  /** First block that pending prefill computes (the blocks before it were cached or pending there already). */
  f?: number;
}

export interface ParsedProvisional {
  r: string;
  s: string;
  bs: number;
  lora: string | null;
  salt: string | null;
  /** v1 */
  tokens?: number[];
  /** v2: [lo0, hi0, …], one pair per full block. */
  keys?: Uint32Array;
  pending?: { id: number; from: number };
}

export const toTotals = (l: WorkerLoad): Totals => [l.inFlight, l.pendingPrefillTokens, l.activeDecodes];

function isTotals(v: unknown): v is Totals {
  return Array.isArray(v) && v.length === 3 && v.every((n) => Number.isInteger(n) && n >= 0);
}

/** A decoded load message, or null when it is not one (bad input is dropped, never half-applied). */
export function parseLoadMessage(v: unknown): LoadMessage | null {
  if (typeof v !== 'object' || v === null) return null;
  const m = v as Record<string, unknown>;
  if (typeof m.r !== 'string' || m.r.length === 0) return null;
  if (!Number.isSafeInteger(m.q) || (m.q as number) < 1) return null;
  if (typeof m.ttl !== 'number' || !(m.ttl > 0)) return null;
  if (m.k !== 'd' && m.k !== 'h' && m.k !== 'b') return null;
  if (m.k !== 'b') {
    if (typeof m.s !== 'object' || m.s === null) return null;
    for (const t of Object.values(m.s)) if (!isTotals(t)) return null;
  }
  if (m.p !== undefined) {
    if (typeof m.p !== 'object' || m.p === null) return null;
    for (const ids of Object.values(m.p)) if (!Array.isArray(ids) || !ids.every((n) => Number.isSafeInteger(n) && n >= 0)) return null;
  }
  return m as unknown as LoadMessage;
}

export function encodeTokens(tokens: ArrayLike<number>, n: number): string {
  const a = new Uint32Array(n);
  for (let i = 0; i < n; i++) a[i] = tokens[i]!;
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
}

export function decodeTokens(b64: string): number[] | null {
  const buf = Buffer.from(b64, 'base64');
  if (buf.length % 4 !== 0) return null;
  const out = new Array<number>(buf.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = buf.readUInt32LE(i * 4);
  return out;
}

/** The first n block keys ([lo, hi] pairs) as little-endian uint32, base64. */
export function encodeKeys(keys: Uint32Array, n: number): string {
  const buf = Buffer.allocUnsafe(n * 8);
  for (let i = 0; i < 2 * n; i++) buf.writeUInt32LE(keys[i]!, i * 4);
  return buf.toString('base64');
}

export function decodeKeys(b64: string): Uint32Array | null {
  const buf = Buffer.from(b64, 'base64');
  if (buf.length % 8 !== 0) return null;
  const out = new Uint32Array(buf.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = buf.readUInt32LE(i * 4);
  return out;
}

export function parseProvisionalMessage(v: unknown): ParsedProvisional | null {
  if (typeof v !== 'object' || v === null) return null;
  const m = v as Record<string, unknown>;
  if (typeof m.r !== 'string' || typeof m.s !== 'string') return null;
  if (!Number.isInteger(m.bs) || (m.bs as number) < 1) return null;
  if (m.lora !== null && typeof m.lora !== 'string') return null;
  if (m.salt !== null && typeof m.salt !== 'string') return null;
  const out: ParsedProvisional = { r: m.r, s: m.s, bs: m.bs as number, lora: m.lora as string | null, salt: m.salt as string | null };
  if (m.v === 2) {
    if (typeof m.k !== 'string') return null;
    const keys = decodeKeys(m.k);
    if (keys === null) return null;
    out.keys = keys;
    if (m.i !== undefined) {
      const blocks = keys.length / 2;
      if (!Number.isSafeInteger(m.i) || (m.i as number) < 0 || !Number.isInteger(m.f) || (m.f as number) < 0 || (m.f as number) > blocks) return null;
      out.pending = { id: m.i as number, from: m.f as number };
    }
    return out;
  }
  if (m.v !== undefined || typeof m.t !== 'string') return null;
  const tokens = decodeTokens(m.t);
  if (tokens === null) return null;
  out.tokens = tokens;
  return out;
}
