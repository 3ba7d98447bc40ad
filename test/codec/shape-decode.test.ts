/**
 * The exact-shape decoder (shape-decoder.ts, first in decodeBatch) against the decoder it
 * was put in front of (decodeBatchGeneral: batch-decoder.ts, then the reference) and the
 * reference itself: on every input, decodeBatch and decodeBatchGeneral give the same batch
 * (deep equal, hash types included) or the same error (class and message); the exact-shape
 * decoder alone either gives up or returns the reference's batch, never accepts what the
 * reference rejects. Inputs: random batches of the publisher shape (every event kind, nil or
 * set fields, unsigned/signed 64-bit and small and bytes hashes, token ids of every width, map
 * and array encodings, vLLM and SGLang array layouts), their corruptions (truncations, byte
 * flips, insertions, wrong-typed fields), the general random payloads of random-payloads.ts,
 * and the msgspec golden fixtures. Seeded (Rng): a failure names its seed and payload.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { decodeBatch, decodeBatchGeneral, decodeBatchReference, encodeBatch, type ArrayLayout } from '../../src/events/codec.js';
import { decodeBatchShape } from '../../src/events/shape-decoder.js';
import type { BlockHash, KVEvent, KVEventBatch } from '../../src/events/types.js';
import { encodeRandomly, invalidBatch, Raw, Rng, validBatch } from './random-payloads.js';

type Outcome = { ok: true; batch: KVEventBatch } | { ok: false; err: Error };

function run(f: () => KVEventBatch): Outcome {
  try {
    return { ok: true, batch: f() };
  } catch (err) {
    return { ok: false, err: err as Error };
  }
}

const stats = { checked: 0, handled: 0, accepted: 0 };

/** The property on one payload; returns whether the exact-shape decoder read it itself. */
function check(payload: Uint8Array, layout: ArrayLayout, label: string): boolean {
  const hex = () => `${label} (${layout}): ${Buffer.from(payload).toString('hex')}`;
  const now = run(() => decodeBatch(payload, { arrayLayout: layout }));
  const before = run(() => decodeBatchGeneral(payload, { arrayLayout: layout }));
  const ref = run(() => decodeBatchReference(payload, { arrayLayout: layout }));
  const shape = decodeBatchShape(payload, layout);
  stats.checked++;
  if (before.ok) {
    assert.ok(now.ok, `decodeBatch rejected (${now.ok ? '' : now.err.message}) what the general decoder accepts: ${hex()}`);
    assert.deepStrictEqual(now.batch, before.batch, `decodeBatch ≠ general decoder: ${hex()}`);
    stats.accepted++;
  } else {
    assert.ok(!now.ok, `decodeBatch accepted what the general decoder rejects (${before.err.message}): ${hex()}`);
    assert.equal(now.err.constructor, before.err.constructor, hex());
    assert.equal(now.err.message, before.err.message, hex());
    assert.equal((now.err as { path?: string }).path, (before.err as { path?: string }).path, hex());
  }
  // The general decoder is the reference's equal (fast-decode.test.ts); checked again on these inputs.
  assert.equal(ref.ok, before.ok, hex());
  if (ref.ok && before.ok) assert.deepStrictEqual(before.batch, ref.batch, hex());
  if (shape !== undefined) {
    assert.ok(ref.ok, `exact-shape decoder accepted what the reference rejects (${ref.ok ? '' : ref.err.message}): ${hex()}`);
    assert.deepStrictEqual(shape, ref.batch, `exact-shape ≠ reference: ${hex()}`);
    stats.handled++;
    return true;
  }
  return false;
}

// ---------------------------------------------------------------------------- the publisher shape

function hash(rng: Rng): BlockHash {
  switch (rng.int(7)) {
    case 0:
    case 1: return rng.u64() | (1n << 63n); // vLLM: unsigned 64-bit, mostly ≥ 2^63
    case 2: return rng.u64();
    case 3: return BigInt.asIntN(64, rng.u64()); // SGLang, older vLLM: signed
    case 4: return BigInt(rng.pick([0, 1, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, -1, -32, -33, -128, -129, -32768, -32769, -(2 ** 31), -(2 ** 31) - 1]));
    case 5: return BigInt(rng.int(2 ** 32) - 2 ** 31);
    default: return Uint8Array.from({ length: rng.pick([32, 32, 0, 1, 255, 256, 300]) }, () => rng.int(256));
  }
}

function ascii(rng: Rng, max = 12): string {
  return Array.from({ length: rng.int(max) }, () => String.fromCharCode(0x20 + rng.int(95))).join('');
}

/** Strings as publishers write them; `exotic` adds non-ASCII ones (UTF-8: the fallback's). */
function optStr(rng: Rng, exotic = false): string | null {
  if (exotic && rng.chance(0.2)) return 'é' + ascii(rng);
  return rng.pick([null, null, 'GPU', 'GPU', 'CPU', 'DISK', '', ascii(rng, 4), ascii(rng, 40)]);
}

function tokens(rng: Rng, n: number): number[] {
  const widths = [127, 255, 65535, 2 ** 31, 2 ** 32 - 1];
  return Array.from({ length: n }, () => rng.chance(0.05) ? -rng.int(2 ** 31) : rng.int(rng.pick(widths) + 1));
}

/** A BlockStored as vLLM fills it; sometimes with optional fields (another shape: the fallback's). */
function stored(rng: Rng, withOptional: boolean, exotic = withOptional): KVEvent {
  const blocks = rng.pick([1, 1, 1, 2, 4, 0, rng.int(20)]);
  const bs = rng.pick([16, 16, 1, 32, 256, 70000]);
  const ev: KVEvent = {
    type: 'BlockStored',
    block_hashes: Array.from({ length: blocks }, () => hash(rng)),
    parent_block_hash: rng.chance(0.4) ? null : hash(rng),
    token_ids: tokens(rng, rng.chance(0.9) ? Math.min(blocks * bs, 300) : rng.int(40)),
    block_size: bs,
    lora_id: rng.chance(0.7) ? null : rng.pick([0, 1, 127, 300, 70000, 2 ** 31, -1]),
    medium: optStr(rng, exotic),
    lora_name: rng.chance(0.7) ? null : optStr(rng, exotic),
  };
  if (withOptional && rng.chance(0.3)) {
    if (rng.chance(0.5)) ev.group_idx = rng.int(3);
    if (rng.chance(0.5)) ev.kv_cache_spec_kind = rng.pick(['full', 'sliding_window']);
    if (rng.chance(0.3)) ev.session_id = ascii(rng);
    if (rng.chance(0.3)) ev.extra_keys = [[ascii(rng), rng.int(9)]];
  }
  return ev;
}

function event(rng: Rng, exotic: boolean): KVEvent {
  const k = rng.int(10);
  if (k < 7) return stored(rng, exotic);
  if (k < 9) {
    const ev: KVEvent = { type: 'BlockRemoved', block_hashes: Array.from({ length: rng.pick([1, 1, 3, 0, 32]) }, () => hash(rng)), medium: optStr(rng, exotic) };
    if (exotic && rng.chance(0.1)) ev.group_idx = rng.int(3);
    return ev;
  }
  return { type: 'AllBlocksCleared' };
}

interface Shaped {
  payload: Buffer;
  layout: ArrayLayout;
  /** The value before encoding (array form), for corruptions that change one field. */
  value: unknown;
}

/** An SGLang legacy array event: [..., medium, cache_salt, session_id], cut anywhere after block_size. */
function sglangArray(rng: Rng): unknown[] {
  const s = stored(rng, false) as Extract<KVEvent, { type: 'BlockStored' }>;
  const a: unknown[] = ['BlockStored', s.block_hashes, s.parent_block_hash, s.token_ids, s.block_size, s.lora_id, s.medium,
    rng.chance(0.5) ? null : ascii(rng), rng.chance(0.3) ? null : ascii(rng)];
  return a.slice(0, 5 + rng.int(5));
}

/** A batch the way publishers write it: encodeBatch (msgspec's bytes), or SGLang arrays. */
function shapedBatch(rng: Rng): Shaped {
  // Exotic batches (optional fields, non-ASCII strings) are another shape: the fallback's.
  const exotic = rng.chance(0.25);
  const n = rng.pick([1, 2, 32, 32, 0, rng.int(70)]);
  const ts = rng.pick([1790000000 + rng.next(), 1790000000, 0.5, -1, Number.NaN]);
  const dp_rank = rng.pick([0, 0, null, 1, 7, 200, 70000, -3]);
  const layout = rng.pick<ArrayLayout>(['auto', 'auto', 'vllm', 'sglang']);
  if (rng.chance(0.2)) {
    // SGLang: legacy arrays with its own tail, written with msgspec's smallest encodings.
    const events = Array.from({ length: n }, () => (rng.chance(0.8) ? sglangArray(rng) : rng.chance(0.5) ? ['BlockRemoved', [hash(rng)], 'GPU'] : ['AllBlocksCleared']));
    const value = dp_rank === null ? [ts, events] : [ts, events, dp_rank];
    const payload = encodeSmallest(value);
    return { payload, layout, value };
  }
  const batch: KVEventBatch = { ts, dp_rank, events: Array.from({ length: n }, () => event(rng, exotic)) };
  const encoding = rng.chance(0.6) ? 'map' : 'array';
  return { payload: encodeBatch(batch, { encoding }), layout, value: batch };
}

/** msgspec's encodings (smallest int, fixstr/str8, float64) for a plain array value. */
function encodeSmallest(v: unknown): Buffer {
  const rng = new Rng(1);
  // RandomWidthWriter picks the smallest encoding half of the time; force it with a fixed stream.
  rng.chance = () => true;
  return encodeRandomly(rng, toWire(v));
}

function toWire(v: unknown): unknown {
  if (typeof v === 'number' && !Number.isInteger(v)) return v; // float64 (encodeRandomly may pick float32 for a float32-exact value: fine)
  if (Array.isArray(v)) return v.map(toWire);
  return v;
}

/** A corruption of a publisher-shaped payload: the edits that hit the exact-shape decoder's checks. */
function corrupted(rng: Rng, s: Shaped): Buffer {
  const p = s.payload;
  switch (rng.int(6)) {
    case 0: return p.subarray(0, rng.int(p.length)); // truncated
    case 1: {
      const c = Buffer.from(p);
      for (let i = 1 + rng.int(2); i > 0; i--) c[rng.int(c.length)] = rng.chance(0.5) ? rng.int(256) : c[rng.int(c.length)]! ^ (1 << rng.int(8));
      return c;
    }
    case 2: {
      const at = rng.int(p.length + 1);
      return Buffer.concat([p.subarray(0, at), Buffer.from([rng.pick([0xc0, 0x00, 0x90, 0xa1, 0xcd, 0xff, rng.int(256)])]), p.subarray(at)]);
    }
    case 3: {
      const at = rng.int(p.length);
      return Buffer.concat([p.subarray(0, at), p.subarray(at + 1 + rng.int(4))]); // bytes dropped
    }
    case 4: return Buffer.concat([p, Buffer.from([rng.int(256)])]); // trailing byte
    default: {
      // One field of one event of the wrong type, everything else as the publisher writes it.
      const batch = s.value as KVEventBatch;
      if (!batch || !Array.isArray((batch as { events?: unknown }).events) || batch.events.length === 0 || Array.isArray(s.value)) {
        return Buffer.concat([p.subarray(0, 1), Buffer.from([0xca]), p.subarray(2, 6)]);
      }
      const events = batch.events.map((e) => ({ ...e })) as Array<Record<string, unknown>>;
      const e = events[rng.int(events.length)]!;
      const keys = Object.keys(e);
      const k = rng.pick(keys);
      e[k] = rng.pick<unknown>([1.5, 'x', null, -1, 0, [], [1.5], [-1n], ['a'], new Uint8Array(2), 2 ** 53, 'BlockStored', 'AllBlocksCleared']);
      try {
        return encodeBatch({ ...batch, events: events as unknown as KVEvent[] }, { encoding: rng.chance(0.5) ? 'map' : 'array' });
      } catch {
        return encodeRandomly(rng, [batch.ts, events.map((x) => new Map(Object.entries(x))), new Raw([0xc0])]);
      }
    }
  }
}

// ---------------------------------------------------------------------------- tests

test('publisher-shaped batches: decodeBatch = the general decoder = the reference, nearly all read by the exact-shape decoder', () => {
  const rng = new Rng(0x5a9e1);
  const N = Number(process.env.SHAPE_N ?? 800);
  let handled = 0;
  let plain = 0;
  let plainHandled = 0;
  for (let i = 0; i < N; i++) {
    const s = shapedBatch(rng);
    const h = check(s.payload, s.layout, `shaped #${i} (seed 0x5a9e1)`);
    if (h) handled++;
    // Without optional fields, non-ASCII strings, 64-bit lora ids, odd timestamps: must be read by the exact-shape path.
    if (isPlain(s)) {
      plain++;
      if (h) plainHandled++;
    }
  }
  assert.ok(handled > N * 0.5, `the exact-shape decoder read only ${handled}/${N}`);
  assert.ok(plain > 100 && plainHandled === plain, `plain publisher batches read by the exact-shape decoder: ${plainHandled}/${plain}`);
});

/** A batch of the exact shape (encodeBatch's: float64 ts): ASCII strings, ints within 32 bits, no optional fields. */
function isPlain(s: Shaped): boolean {
  const v = s.value as KVEventBatch;
  if (Array.isArray(s.value)) return false;
  return v.events.every((e) => {
    if (e.type === 'AllBlocksCleared') return true;
    const strs = e.type === 'BlockStored' ? [e.medium, e.lora_name] : [e.medium];
    if (strs.some((x) => x !== null && (/[^\x00-\x7f]/.test(x) || x.length > 255))) return false;
    if (e.type === 'BlockRemoved') return e.group_idx === undefined;
    return Object.keys(e).length === 8 && (e.lora_id === null || Math.abs(e.lora_id) < 2 ** 31) && e.token_ids.every((t) => Math.abs(t) < 2 ** 32);
  });
}

test('corrupted publisher-shaped batches: the same batch or the same error', () => {
  const rng = new Rng(0xc0ffe);
  const N = 2000;
  let rejected = 0;
  for (let i = 0; i < N; i++) {
    const s = shapedBatch(rng);
    const payload = corrupted(rng, s);
    check(payload, s.layout, `corrupted #${i} (seed 0xc0ffe)`);
    if (!run(() => decodeBatchGeneral(payload, { arrayLayout: s.layout })).ok) rejected++;
  }
  assert.ok(rejected > N * 0.4, `only ${rejected}/${N} corruptions were rejected: the generator is too gentle`);
});

test('every prefix and every single-byte change of a batch: the same outcome', () => {
  const rng = new Rng(0xb17e);
  const batch: KVEventBatch = {
    ts: 1790000000.5,
    dp_rank: 1,
    events: [stored(rng, false), { type: 'BlockRemoved', block_hashes: [5n, -7n], medium: 'GPU' }, { type: 'AllBlocksCleared' }, stored(rng, false)],
  };
  for (const encoding of ['map', 'array'] as const) {
    const payload = encodeBatch(batch, { encoding });
    assert.ok(check(payload, 'auto', encoding));
    for (let n = 0; n < payload.length; n++) assert.equal(check(payload.subarray(0, n), 'auto', `prefix ${n}`), false);
    for (let i = 0; i < payload.length; i++) {
      for (const v of [rng.pick([0x00, 0xc0, 0xff]), payload[i]! ^ (1 << rng.int(8))]) {
        const c = Buffer.from(payload);
        c[i] = v;
        check(c, rng.pick(['auto', 'vllm', 'sglang']), `byte ${i} = ${v}`);
      }
    }
  }
});

test('the general random payloads (random-payloads.ts): the same outcome', () => {
  const rng = new Rng(0x9e4e7a1);
  for (let i = 0; i < 600; i++) {
    const v = validBatch(rng);
    check(v.payload, v.layout, `valid #${i} (seed 0x9e4e7a1)`);
    const b = invalidBatch(rng);
    check(b.payload, b.layout, `invalid #${i} (seed 0x9e4e7a1)`);
  }
});

test('msgspec golden fixtures: the same batch; the exact-shape decoder reads those of its shape', () => {
  const dir = join(import.meta.dirname, '..', 'fixtures', 'codec');
  const files = readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
  assert.ok(files.length >= 8);
  let handled = 0;
  for (const f of files) {
    const g = JSON.parse(readFileSync(join(dir, f), 'utf8')) as { map_hex: string; array_hex: string };
    for (const [enc, hex] of [['map', g.map_hex], ['array', g.array_hex]] as const) {
      for (const layout of ['auto', 'vllm', 'sglang'] as const) {
        const h = check(Buffer.from(hex, 'hex'), layout, `${f} ${enc}`);
        if (layout === 'auto' && h) handled++;
        // Only optional-fields.json carries fields beyond the exact shape.
        if (layout === 'auto' && f !== 'optional-fields.json') assert.ok(h, `${f} (${enc}): the exact-shape decoder gave up`);
      }
    }
  }
  assert.ok(handled >= 14);
});

test('hashes: exact types (bigint as on the wire, bytes a plain Uint8Array copy)', () => {
  const digest = Uint8Array.from({ length: 32 }, (_, i) => i);
  const hashes: BlockHash[] = [(1n << 64n) - 1n, 1n << 63n, -(1n << 63n), -1n, 0n, 127n, 4294967296n, digest];
  const payload = encodeBatch({ ts: 1.5, dp_rank: 0, events: [{ type: 'BlockRemoved', block_hashes: hashes, medium: null }] });
  const ev = decodeBatchShape(payload)!.events[0]!;
  assert.ok(ev.type === 'BlockRemoved');
  assert.deepStrictEqual(ev.block_hashes, hashes);
  const h = ev.block_hashes.at(-1) as Uint8Array;
  assert.equal(Object.getPrototypeOf(h), Uint8Array.prototype);
  payload.fill(0);
  assert.deepStrictEqual(h, digest);
});

test('coverage of this file', () => {
  // Guards the generators: most inputs must reach the exact-shape decoder, or the checks above check little.
  assert.ok(stats.handled > 1500, `exact-shape decoder read ${stats.handled} of ${stats.checked}`);
});
