/**
 * How `kv-events tail` shows batches and notices: one JSON object per line
 * (`--json`) or one readable line per batch.
 */
import { blockHashFromString, blockHashToString, shortBlockHash } from '../events/block-hash.js';
import type { BlockHash, KVEvent, KVEventBatch } from '../events/types.js';
import type { StreamNotice } from '../events/subscriber.js';
import { snakeKeys } from '../http/snake-keys.js';

// ---------------------------------------------------------------------------- JSON

/** Any decoded value as plain JSON: bigint → number when safe else decimal string, bytes → "0x…". */
function plain(v: unknown): unknown {
  if (typeof v === 'bigint') return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString();
  if (v instanceof Uint8Array) return '0x' + Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('hex');
  if (Array.isArray(v)) return v.map(plain);
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  return v;
}

const hashJson = (h: BlockHash | null): string | null => (h === null ? null : blockHashToString(h));

/** An event as JSON: hashes as decimal strings (sign kept) or "0x" hex; every field present kept. */
export function eventToJson(ev: KVEvent): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(ev)) {
    if (v === undefined) continue;
    if (k === 'block_hashes') out[k] = (v as BlockHash[]).map(hashJson);
    else if (k === 'parent_block_hash') out[k] = hashJson(v as BlockHash | null);
    else out[k] = plain(v);
  }
  return out;
}

export function batchToJson(batch: KVEventBatch): { ts: number; dp_rank: number | null; events: Record<string, unknown>[] } {
  return { ts: batch.ts, dp_rank: batch.dp_rank, events: batch.events.map(eventToJson) };
}

/** Inverse of batchToJson (hash strings back to bigint / bytes); other fields as they are. */
export function batchFromJson(j: { ts: number; dp_rank: number | null; events: Record<string, unknown>[] }): KVEventBatch {
  const events = j.events.map((e) => {
    const ev: Record<string, unknown> = { ...e };
    if (Array.isArray(e.block_hashes)) ev.block_hashes = (e.block_hashes as string[]).map(blockHashFromString);
    if ('parent_block_hash' in e) ev.parent_block_hash = e.parent_block_hash == null ? null : blockHashFromString(e.parent_block_hash as string);
    return ev as unknown as KVEvent;
  });
  return { ts: j.ts, dp_rank: j.dp_rank, events };
}

/** One `--json` line for a batch: `{"seq", "ts", "dp_rank", "topic", "events", "replayed"?}`. */
export function batchLineJson(seq: bigint, topic: string, batch: KVEventBatch, replayed: boolean): string {
  const b = batchToJson(batch);
  const o: Record<string, unknown> = { seq: plain(seq), ts: b.ts, dp_rank: b.dp_rank, topic, events: b.events };
  if (replayed) o.replayed = true;
  return JSON.stringify(o);
}

/** One `--json` line for a notice: `{"notice": "gap" | "replay" | "reset" | "history_missing", ...}`. */
export function noticeLineJson(n: StreamNotice): string {
  return JSON.stringify(snakeKeys(plain(n)));
}

// ---------------------------------------------------------------------------- human

export interface Style {
  notice(s: string): string;
  alarm(s: string): string;
  dim(s: string): string;
}

const ansi = (code: string) => (s: string) => `\x1b[${code}m${s}\x1b[0m`;
export const COLOUR: Style = { notice: ansi('1;33'), alarm: ansi('1;31'), dim: ansi('2') };
export const PLAIN: Style = { notice: (s) => s, alarm: (s) => s, dim: (s) => s };

function hashes(hs: BlockHash[]): string {
  const shown = hs.slice(0, 4).map(shortBlockHash).join(' ');
  return `[${shown}${hs.length > 4 ? ` …+${hs.length - 4}` : ''}]`;
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

function eventHuman(ev: KVEvent): string {
  switch (ev.type) {
    case 'BlockStored': {
      const parts = [`BlockStored ${plural(ev.block_hashes.length, 'block')} ${hashes(ev.block_hashes)}`];
      if (ev.parent_block_hash !== null) parts.push(`parent ${shortBlockHash(ev.parent_block_hash)}`);
      parts.push(plural(ev.token_ids.length, 'token'));
      if (ev.medium) parts.push(ev.medium);
      if (ev.lora_name) parts.push(`lora ${ev.lora_name}`);
      else if (ev.lora_id != null) parts.push(`lora #${ev.lora_id}`);
      return parts.join(' ');
    }
    case 'BlockRemoved':
      return `BlockRemoved ${plural(ev.block_hashes.length, 'block')} ${hashes(ev.block_hashes)}${ev.medium ? ' ' + ev.medium : ''}`;
    case 'AllBlocksCleared':
      return 'AllBlocksCleared';
  }
}

function time(ts: number): string {
  const d = new Date(ts * 1000);
  return Number.isNaN(d.getTime()) ? String(ts) : d.toISOString().replace('T', ' ').replace('Z', '');
}

/** `#12 2026-09-21 13:46:40.250 rank 0 | BlockStored 2 blocks [a1b2c3d4 e5f6a7b8] 32 tokens GPU | …` */
export function batchLineHuman(seq: bigint, topic: string, batch: KVEventBatch, replayed: boolean, style: Style): string {
  const head = `#${seq} ${time(batch.ts)} rank ${batch.dp_rank ?? '-'}${topic ? ` ${style.dim(topic)}` : ''}${replayed ? ' ' + style.dim('(replayed)') : ''}`;
  const events = batch.events.length ? batch.events.map(eventHuman).join(' | ') : '(no events)';
  return `${head} | ${events}`;
}

export function noticeLineHuman(n: StreamNotice, style: Style): string {
  switch (n.notice) {
    case 'gap':
      return style.notice(`!! gap: expected #${n.expected}, got #${n.got}`);
    case 'replay':
      return style.notice(`!! replayed #${n.from}..#${n.to} (${n.batches} batch${n.batches === 1 ? '' : 'es'})`);
    case 'reset':
      return style.alarm(`!! reset: publisher restarted (seq went from #${n.lastSeq} back to #${n.seq}); its cache is gone`);
    case 'history_missing':
      return style.alarm(
        `!! history missing (${n.reason}) from #${n.from}` + (n.resumedAt === null ? '' : `, resumed at #${n.resumedAt}`),
      );
  }
}
