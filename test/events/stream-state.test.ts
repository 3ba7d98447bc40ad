/** The stream state machine alone: inputs in, actions out; no sockets, no clocks, no sleeps. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { encodeBatch } from '../../src/events/codec.js';
import { payloadDigest, StreamState, type ReplayOutcome, type StreamAction, type StreamBatch } from '../../src/events/stream-state.js';
import type { KVEvent } from '../../src/events/types.js';

const T0 = 1_700_000_000;
/** Batch `seq` of a publisher run: `run` changes its content (a restarted publisher). */
function b(seq: number, run = 0, events: KVEvent[] = [{ type: 'BlockRemoved', block_hashes: [BigInt(seq)], medium: null }]): StreamBatch {
  const batch = { ts: T0 + run * 1000 + seq, events, dp_rank: null };
  const payload = encodeBatch(batch);
  return { seq: BigInt(seq), topic: 't', batch, digest: payloadDigest(payload), bytes: payload.length };
}
const done = (...bs: StreamBatch[]): ReplayOutcome => ({ status: 'done', batches: bs.map((x) => ({ ...x, topic: null })), malformed: 0 });
const applied = (acts: StreamAction[]) => acts.flatMap((a) => (a.do === 'apply' ? [Number(a.seq)] : []));
const asks = (acts: StreamAction[]) => acts.flatMap((a) => (a.do === 'replay' ? [a.ask] : []));
const notices = (acts: StreamAction[]) => acts.flatMap((a) => (a.do === 'notice' ? [a.notice] : []));

function fed(opts: Partial<ConstructorParameters<typeof StreamState>[0]> = {}, upTo = 4): StreamState {
  const s = new StreamState({ hasReplay: true, idleProbeMs: 0, ...opts });
  for (let i = 0; i <= upTo; i++) assert.deepEqual(applied(s.live(b(i), 0)), [i]);
  return s;
}

describe('stream state machine', () => {
  test('in order: apply each, trusted from seq 0', () => {
    const s = new StreamState({ hasReplay: true, idleProbeMs: 0 });
    const first = s.live(b(0), 0);
    assert.deepEqual(first.map((a) => a.do), ['trust', 'apply']);
    assert.deepEqual(applied(s.live(b(1), 0)), [1]);
    assert.equal(s.trusted, true);
    assert.equal(s.lastSeq, 1n);
  });

  test('gap: asks replay from the batch before (anchor), holds live ones, then applies in order with exact notices', () => {
    const s = fed();
    const gap = s.live(b(8), 0);
    assert.deepEqual(notices(gap), [{ notice: 'gap', expected: 5n, got: 8n }]);
    assert.deepEqual(asks(gap), [4n]);
    const hold = s.live(b(9), 0);
    assert.deepEqual(hold, [{ do: 'hold', seq: 9n }]);
    const out = s.replayDone(done(b(4), b(5), b(6), b(7), b(8)), 0);
    assert.deepEqual(applied(out), [5, 6, 7, 8, 9]);
    // 5..7 replayed; live 8 (parked when it revealed the gap) follows them, so the replayed 8 is a duplicate.
    assert.deepEqual(notices(out), [{ notice: 'replay', from: 5n, to: 8n, batches: 3 }]);
    assert.equal(s.trusted, true);
    assert.equal(s.counters.duplicates, 1);
  });

  test('a replay that fails (rejected request) ends the replay: held batches flow, history_missing replay_failed, untrusted', () => {
    const s = fed();
    s.live(b(8), 0);
    s.live(b(9), 0);
    assert.equal(s.replaying, true);
    const out = s.replayFailed(0);
    assert.equal(s.replaying, false);
    assert.deepEqual(notices(out), [{ notice: 'history_missing', reason: 'replay_failed', from: 5n, resumedAt: 8n }]);
    assert.deepEqual(applied(out), [8, 9]);
    assert.equal(s.trusted, false);
    assert.equal(s.heldPayloadBytes, 0);
    assert.deepEqual(applied(s.live(b(10), 0)), [10]); // not frozen
  });

  test('duplicate (same bytes) vs restart (new bytes at an old seq)', () => {
    const s = fed();
    assert.deepEqual(s.live(b(3), 0), []);
    assert.equal(s.counters.duplicates, 1);
    const out = s.live(b(0, 1), 0);
    assert.deepEqual(notices(out)[0], { notice: 'reset', reason: 'restart', lastSeq: 4n, seq: 0n });
    assert.deepEqual(applied(out), [0]);
    assert.equal(s.counters.resets, 1);
  });

  test('late join asks from 0; a buffer that starts later is history_missing buffer_exceeded', () => {
    const s = new StreamState({ hasReplay: true, idleProbeMs: 0 });
    const join = s.live(b(10), 0);
    assert.deepEqual(asks(join), [0n]);
    const out = s.replayDone(done(b(7), b(8), b(9), b(10)), 0);
    assert.deepEqual(notices(out)[0], { notice: 'history_missing', reason: 'buffer_exceeded', from: 0n, resumedAt: 7n });
    assert.deepEqual(applied(out), [7, 8, 9, 10]);
    assert.equal(s.trusted, false);
  });

  test('no replay endpoint: gap then history_missing, resumes at once', () => {
    const s = fed({ hasReplay: false });
    const out = s.live(b(7), 0);
    assert.deepEqual(notices(out), [
      { notice: 'gap', expected: 5n, got: 7n },
      { notice: 'history_missing', reason: 'no_replay_endpoint', from: 5n, resumedAt: 7n },
    ]);
    assert.deepEqual(applied(out), [7]);
  });

  test('held batches are bounded in bytes: beyond, history_missing held_overflow, never silent, and nothing kept', () => {
    const one = b(8).bytes;
    const s = fed({ maxHeldBytes: one * 3 });
    s.live(b(8), 0); // parked → gap → replay
    s.live(b(9), 0);
    s.live(b(10), 0);
    assert.ok(s.heldPayloadBytes <= one * 3);
    const over = s.live(b(11), 0);
    assert.deepEqual(notices(over), [{ notice: 'history_missing', reason: 'held_overflow', from: 8n, resumedAt: null }]);
    assert.equal(s.heldPayloadBytes, 0);
    assert.equal(s.trusted, false);
    // The replay still completes, and what follows is applied (the next gap is replayed again).
    const out = s.replayDone(done(b(4), b(5), b(6), b(7), b(8), b(9), b(10), b(11)), 0);
    assert.deepEqual(applied(out), [5, 6, 7, 8, 9, 10, 11]);
  });

  test('a truncated (byte-bounded) replay chunk is applied and the rest asked for, live batches still held', () => {
    const s = fed();
    s.live(b(9), 0);
    s.live(b(10), 0);
    const chunk1 = s.replayDone({ ...done(b(4), b(5), b(6)), status: 'truncated' }, 0);
    assert.deepEqual(applied(chunk1), [5, 6]);
    assert.deepEqual(asks(chunk1), [6n]);
    assert.equal(s.replaying, true);
    const chunk2 = s.replayDone(done(b(6), b(7), b(8), b(9)), 0);
    assert.deepEqual(applied(chunk2), [7, 8, 9, 10]);
    assert.deepEqual(notices(chunk2), [{ notice: 'replay', from: 5n, to: 9n, batches: 4 }]); // 5..8; live 9 was parked
    assert.equal(s.trusted, true);
  });

  test('idle probe: nothing new is quiet; missed batches are applied as replayed and counted; new run resets', () => {
    const s = fed({ idleProbeMs: 100 });
    s.connected(0);
    assert.deepEqual(s.tick(50), []);
    const p = s.tick(100);
    assert.deepEqual(asks(p), [4n]);
    assert.deepEqual(s.replayDone(done(b(4)), 100), []);
    assert.equal(s.counters.probes, 1);
    // Backoff doubles: not due at +100, due at +200.
    assert.deepEqual(s.tick(250), []);
    assert.deepEqual(asks(s.tick(300)), [4n]);
    const found = s.replayDone(done(b(4), b(5), b(6)), 300);
    assert.deepEqual(applied(found), [5, 6]);
    assert.deepEqual(notices(found), []);
    assert.equal(s.counters.probeFinds, 1);
    assert.deepEqual(asks(s.tick(700)), [6n]);
    const restarted = s.replayDone(done(), 700); // nothing at or after our last seq: a new run
    assert.deepEqual(notices(restarted)[0], { notice: 'reset', reason: 'restart', lastSeq: 6n, seq: 0n });
    assert.deepEqual(asks(restarted), [0n]);
  });

  test('reconnect probe without an answer: history_missing replay_timeout', () => {
    const s = fed();
    s.connected(0);
    s.disconnected();
    const p = s.connected(10);
    assert.deepEqual(asks(p), [4n]);
    const out = s.replayDone({ status: 'timeout', batches: [], malformed: 0 }, 20);
    assert.deepEqual(notices(out), [{ notice: 'history_missing', reason: 'replay_timeout', from: 5n, resumedAt: null }]);
  });

  test('fromSeq start: replays from there, ignores older live batches', () => {
    const s = new StreamState({ hasReplay: true, idleProbeMs: 0 });
    assert.deepEqual(asks(s.start(3n)), [3n]);
    assert.deepEqual(s.live(b(7), 0), [{ do: 'hold', seq: 7n }]);
    const out = s.replayDone(done(b(3), b(4), b(5), b(6)), 0);
    assert.deepEqual(applied(out), [3, 4, 5, 6, 7]);
  });

  test('close: later inputs do nothing', () => {
    const s = fed();
    s.live(b(8), 0);
    s.close();
    assert.deepEqual(s.replayDone(done(b(4), b(5)), 0), []);
    assert.deepEqual(s.live(b(9), 0), []);
    assert.equal(s.heldPayloadBytes, 0);
  });
});
