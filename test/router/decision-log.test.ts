// The decision log never blocks and never buffers without bound: past the cap, lines are dropped and counted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DecisionLog } from '../../router/decision-log.js';
import type { Scored } from '../../router/policies/policy.js';

const ranked = (i: number): Scored[] => [
  { candidate: { source: `w${i % 3}:0`, load: { inFlight: i, pendingPrefillTokens: 10 * i } }, matchedTokens: i, indexMatchedTokens: i, promptTokens: 100, terms: { prefill: i }, cost: i } as unknown as Scored,
];

/** A sink that takes nothing until released, like a disk that stalls. */
function pausedSink() {
  const got: string[] = [];
  const held: Array<() => void> = [];
  let open = false;
  const w = new Writable({
    write(chunk: Buffer, _enc, cb) {
      got.push(chunk.toString());
      if (open) cb();
      else held.push(cb);
    },
  });
  return { w, got, release: () => { open = true; for (const cb of held.splice(0)) cb(); } };
}

test('a stalled output: buffered bytes stay under the cap, the rest is dropped and counted, nothing blocks', async () => {
  const sink = pausedSink();
  const cap = 4096;
  const log = new DecisionLog(sink.w, (m) => assert.fail(m), { maxBufferedBytes: cap });
  for (let i = 0; i < 500; i++) {
    log.write('cache_aware', ranked(i));
    assert.ok(sink.w.writableLength <= cap, `buffered ${sink.w.writableLength} > cap ${cap}`);
  }
  assert.ok(log.dropped > 400, `most of 500 lines dropped while stalled, got ${log.dropped}`);
  const kept = 500 - log.dropped;
  sink.release();
  await new Promise<void>((r) => setImmediate(r));
  // Drained: lines are taken again, and n kept counting through the drops, so the reader sees the gap.
  log.write('cache_aware', ranked(500));
  assert.equal(log.dropped, 500 - kept);
  await log.close();
  const lines = sink.got.join('').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { n: number });
  assert.deepEqual(lines.map((l) => l.n), [...[...Array(kept).keys()], 500], 'every line not dropped arrives whole, in order');
  // After the stall, lines flow again.
  const later = pausedSink();
  later.release();
  const log2 = new DecisionLog(later.w, (m) => assert.fail(m), { maxBufferedBytes: cap });
  for (let i = 0; i < 500; i++) {
    log2.write('cache_aware', ranked(i));
    await new Promise<void>((r) => setImmediate(r));
  }
  assert.equal(log2.dropped, 0, 'a sink that keeps up loses nothing');
  await log2.close();
});

test('to a file: one JSON line per decision, nothing dropped under the default cap', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dlog-'));
  try {
    const path = join(dir, 'decisions.jsonl');
    const log = new DecisionLog(path, (m) => assert.fail(m));
    for (let i = 0; i < 50; i++) log.write('cache_aware', ranked(i));
    await log.close();
    assert.equal(log.dropped, 0);
    const lines = readFileSync(path, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { n: number; candidates: { source: string; in_flight: number }[] });
    assert.deepEqual(lines.map((l) => l.n), [...Array(50).keys()]);
    assert.equal(lines[7]!.candidates[0]!.in_flight, 7);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
