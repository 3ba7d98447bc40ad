// The routing benchmark's calibration figures from per-request results (pure).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { calibration, calibrationLines } from '../../bench/routing/calibration.js';
import type { RequestResult } from '../../bench/routing/client.js';

const result = (id: number, ttftMs: number | null, predictedTtftMs: number | null | undefined, ok = true): RequestResult => ({
  id, router: 0, plannedMs: 0, sentMs: 0, ttftMs, e2eMs: ttftMs, worker: 'w', promptTokens: 10, cachedTokens: 0, predictedCachedTokens: 0, completionTokens: 1, ok, error: null, predictedTtftMs,
});

test('calibration: p50 and p90 of |measured − predicted|, bias, relative error; only requests with both', () => {
  // errors +10, −20, +30, ..., alternating sign, 10 requests measured at 100 ms each
  const rs = Array.from({ length: 10 }, (_, i) => result(i, 100, 100 - (i % 2 ? -1 : 1) * 10 * (i + 1)));
  rs.push(result(99, 100, null), result(98, null, 50, false), result(97, 100, undefined));
  const c = calibration(rs)!;
  assert.equal(c.samples, 10);
  assert.equal(c.abs_error_p50_ms, 50);
  assert.equal(c.abs_error_p90_ms, 90);
  assert.equal(c.rel_error_p90, 0.9);
  assert.equal(c.bias_p50_ms, -20, 'signed errors −100 … +90: nearest-rank median');
  assert.equal(calibration([result(1, 100, null)]), null, 'nothing predicted: no calibration');
  const lines = calibrationLines({ cache_aware: c, round_robin: null });
  assert.equal(lines.length, 1);
  assert.match(lines[0]!, /^cache_aware: .*p50 50 ms, p90 90 ms/);
});
