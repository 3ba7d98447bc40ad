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
}

export interface ProvisionalMessage {
  r: string;
  /** Source the prompt was routed to. */
  s: string;
  /** Block size the sender marked with. */
  bs: number;
  lora: string | null;
  salt: string | null;
  /** The prompt's token ids, full blocks only, as little-endian uint32, base64. */
  t: string;
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

export function parseProvisionalMessage(v: unknown): { r: string; s: string; bs: number; lora: string | null; salt: string | null; tokens: number[] } | null {
  if (typeof v !== 'object' || v === null) return null;
  const m = v as Record<string, unknown>;
  if (typeof m.r !== 'string' || typeof m.s !== 'string' || typeof m.t !== 'string') return null;
  if (!Number.isInteger(m.bs) || (m.bs as number) < 1) return null;
  if (m.lora !== null && typeof m.lora !== 'string') return null;
  if (m.salt !== null && typeof m.salt !== 'string') return null;
  const tokens = decodeTokens(m.t);
  if (tokens === null) return null;
  return { r: m.r, s: m.s, bs: m.bs as number, lora: m.lora as string | null, salt: m.salt as string | null, tokens };
}
