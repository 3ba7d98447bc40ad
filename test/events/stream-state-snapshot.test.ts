/** Snapshot recovery in the stream state machine alone: inputs in, actions out; no sockets, no clocks. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { encodeBatch } from '../../src/events/codec.js';
import { payloadDigest, StreamState, type ReplayOutcome, type StreamAction, type StreamBatch } from '../../src/events/stream-state.js';
import type { KVEvent, KVEventBatch } from '../../src/events/types.js';

const T0 = 1_700_000_000;
function b(seq: number): StreamBatch {
  const events: KVEvent[] = [{ type: 'BlockRemoved', block_hashes: [BigInt(seq)], medium: null }];
  const batch = { ts: T0 + seq, events, dp_rank: null };
  const payload = encodeBatch(batch);
  return { seq: BigInt(seq), topic: 't', batch, digest: payloadDigest(payload), bytes: payload.length };
}
const done = (...bs: StreamBatch[]): ReplayOutcome => ({ status: 'done', batches: bs.map((x) => ({ ...x, topic: null })), malformed: 0 });
const applied = (acts: StreamAction[]) => acts.flatMap((a) => (a.do === 'apply' ? [Number(a.seq)] : []));
const notices = (acts: StreamAction[]) => acts.flatMap((a) => (a.do === 'notice' ? [a.notice.notice] : []));
const dos = (acts: StreamAction[]) => acts.map((a) => a.do);
/** A snapshot's content: one BlockStored, made at `ts`. */
const snapBatch = (ts: number): KVEventBatch => ({
  ts,
  events: [{ type: 'BlockStored', block_hashes: [7n], parent_block_hash: null, token_ids: [1, 2], block_size: 2, lora_id: null, medium: 'GPU', lora_name: null }],
  dp_rank: null,
});

function fed(upTo = 4): StreamState {
  const s = new StreamState({ hasReplay: true, idleProbeMs: 0, snapshots: true });
  for (let i = 0; i <= upTo; i++) s.live(b(i), 0);
  assert.equal(s.trusted, true);
  return s;
}

/** 0..4 applied, then 20 arrives; the replay buffer only holds 15..20: history 5..14 is gone. */
function gapBeyondBuffer(): { s: StreamState; out: StreamAction[] } {
  const s = fed();
  s.live(b(20), 0);
  s.live(b(21), 0); // held during the replay
  const out = s.replayDone(done(b(15), b(16), b(17), b(18), b(19), b(20)), 0);
  return { s, out };
}

describe('stream state machine: snapshots', () => {
  test('history gone: asks a snapshot instead of history_missing, holds everything, stays trusted', () => {
    const { s, out } = gapBeyondBuffer();
    assert.deepEqual(dos(out), ['ask_snapshot']);
    assert.equal(s.trusted, true);
    assert.equal(s.replaying, true);
    assert.deepEqual(s.live(b(22), 0), [{ do: 'hold', seq: 22n }]);
    assert.deepEqual(s.tick(1e9), [], 'no probe while a snapshot is asked for');
  });

  test('the snapshot replaces the tree; batches from atSeq on apply on top, older ones are dropped; trust never lost', () => {
    const { s } = gapBeyondBuffer();
    // Made after the snapshot (valid before seq 22), arriving while it is on its way.
    s.live(b(22), 0);
    s.live(b(23), 0);
    const out = s.snapshotDone({ status: 'done', atSeq: 22n, batches: [snapBatch(T0 + 21.5)] }, 0);
    assert.equal(out[0]!.do, 'snapshot');
    const snap = out[0] as Extract<StreamAction, { do: 'snapshot' }>;
    assert.equal(snap.atSeq, 22n);
    assert.equal(snap.batches.length, 1);
    assert.deepEqual(applied(out), [22, 23]);
    assert.deepEqual(notices(out), []);
    assert.equal(s.trusted, true);
    assert.equal(s.counters.trustLosses, 0);
    assert.equal(s.counters.snapshots, 1);
    assert.equal(s.counters.historyMissing, 0);
    assert.equal(s.lastSeq, 23n);
    assert.equal(s.heldPayloadBytes, 0);
    // A batch made before the snapshot, still on its way, is a duplicate, not a restart.
    assert.deepEqual(s.live(b(19), 0), []);
    assert.equal(s.counters.resets, 0);
    assert.deepEqual(applied(s.live(b(24), 0)), [24]);
  });

  test('a frame received before asking that claims a seq at or past the snapshot (forged, stale) is dropped, not a new gap', () => {
    const { s } = gapBeyondBuffer(); // 20 and 21 received before asking
    const out = s.snapshotDone({ status: 'done', atSeq: 21n, batches: [snapBatch(T0 + 21)] }, 0);
    assert.deepEqual(applied(out), [], '21 came before the request: it cannot be a batch made after a snapshot valid before 21');
    assert.equal(s.counters.malformedFrames, 1);
    assert.deepEqual(dos(out).filter((d) => d === 'ask_snapshot' || d === 'replay'), []);
    assert.deepEqual(applied(s.live(b(21), 0)), [21]);
  });

  test('a snapshot valid past everything held applies none of it; the next live batch follows', () => {
    const { s } = gapBeyondBuffer();
    const out = s.snapshotDone({ status: 'done', atSeq: 30n, batches: [snapBatch(T0 + 30)] }, 0);
    assert.deepEqual(applied(out), []);
    assert.equal(s.lastSeq, 29n);
    assert.deepEqual(applied(s.live(b(30), 0)), [30]);
  });

  test('a gap after the snapshot is replayed as usual', () => {
    const { s } = gapBeyondBuffer();
    s.snapshotDone({ status: 'done', atSeq: 22n, batches: [snapBatch(T0 + 22)] }, 0);
    const gap = s.live(b(25), 0);
    assert.deepEqual(notices(gap), ['gap']);
    assert.ok(gap.some((a) => a.do === 'replay'));
  });

  test('unsupported (vLLM, SGLang): today\'s history_missing, untrusted, resumes at the first batch held; not asked again', () => {
    const { s } = gapBeyondBuffer();
    const out = s.snapshotDone({ status: 'unsupported' }, 0);
    const missing = out.find((a) => a.do === 'notice' && a.notice.notice === 'history_missing');
    assert.deepEqual(missing && missing.do === 'notice' && missing.notice, { notice: 'history_missing', reason: 'buffer_exceeded', from: 5n, resumedAt: 15n });
    assert.deepEqual(applied(out), [15, 16, 17, 18, 19, 20, 21]);
    assert.equal(s.trusted, false);
    assert.equal(s.counters.snapshotFallbacks, 1);
    assert.equal(s.counters.trustLosses, 1);
    // The next history loss goes straight to history_missing.
    s.live(b(40), 0);
    const again = s.replayDone(done(b(35), b(36), b(37), b(38), b(39), b(40)), 0);
    assert.ok(!again.some((a) => a.do === 'ask_snapshot'));
    assert.deepEqual(notices(again).filter((n) => n === 'history_missing'), ['history_missing']);
  });

  test('no answer (timeout) falls back the same way', () => {
    const { s } = gapBeyondBuffer();
    const out = s.snapshotDone({ status: 'timeout' }, 0);
    assert.ok(notices(out).includes('history_missing'));
    assert.equal(s.trusted, false);
  });

  test('late join beyond the buffer: a snapshot makes the stream trusted at once', () => {
    const s = new StreamState({ hasReplay: true, idleProbeMs: 0, snapshots: true });
    const first = s.live(b(50), 0);
    assert.ok(first.some((a) => a.do === 'replay' && a.ask === 0n));
    const out = s.replayDone(done(b(45), b(46), b(47), b(48), b(49), b(50)), 0);
    assert.deepEqual(dos(out), ['ask_snapshot']);
    assert.equal(s.trusted, false);
    const snap = s.snapshotDone({ status: 'done', atSeq: 51n, batches: [snapBatch(T0 + 51)] }, 0);
    assert.deepEqual(dos(snap), ['snapshot', 'trust']);
    assert.equal(s.trusted, true);
    assert.equal(s.counters.trustLosses, 0);
  });

  test('without the option (the default) history gone is history_missing as before', () => {
    const s = new StreamState({ hasReplay: true, idleProbeMs: 0 });
    for (let i = 0; i <= 4; i++) s.live(b(i), 0);
    s.live(b(20), 0);
    const out = s.replayDone(done(b(15), b(16), b(17), b(18), b(19), b(20)), 0);
    assert.ok(!out.some((a) => a.do === 'ask_snapshot'));
    assert.ok(notices(out).includes('history_missing'));
  });

  test('a publisher restart lets a new run be asked again', () => {
    const { s } = gapBeyondBuffer();
    s.snapshotDone({ status: 'unsupported' }, 0);
    // seq 0 again with new content, made later: a restart.
    const r = b(0);
    const restarted = { ...r, batch: { ...r.batch, ts: T0 + 1e6 }, digest: r.digest ^ 1n };
    assert.ok(notices(s.live(restarted, 0)).includes('reset'));
    s.live(b(1), 0);
    s.live(b(30), 0);
    const out = s.replayDone(done(b(25), b(26), b(27), b(28), b(29), b(30)), 0);
    assert.deepEqual(dos(out), ['ask_snapshot']);
  });
});
