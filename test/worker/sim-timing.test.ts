/**
 * The sim engine's step-time model (worker/engines/sim-timing.ts): the profile default, the
 * older linear model the timing flags select, and the speed factor. Pure arithmetic, no clocks.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError, parseWorkerArgs } from '../../worker/config.js';
import { LEGACY_DEFAULTS, PROFILE, profileStepMs, stepTimer } from '../../worker/engines/sim-timing.js';

const decode = (ctx: number) => ({ newTokens: 1, startPos: ctx });

describe('sim step time', () => {
  it('default: the Vidur A100 profile of the linear layers plus the attention terms', () => {
    const t = stepTimer();
    assert.equal(t([]), 0);
    // A batch-1 decode with no context: the weight-bandwidth floor (plus its one KV read and one attention pair).
    assert.equal(t([decode(0)]), PROFILE.linearFloorMs + PROFILE.kvReadMsPerContextToken + PROFILE.attnMsPerPair);
    // Small batches of decodes stay on the floor; only their KV reads grow with the batch.
    const d8 = t(Array.from({ length: 8 }, () => decode(1000)));
    assert.equal(d8, PROFILE.linearFloorMs + 8 * 1001 * PROFILE.kvReadMsPerContextToken + 8 * 1001 * PROFILE.attnMsPerPair);
    // A 32768-token prefill chunk: compute bound, 0.066 ms a token (the profile's 2161 ms), plus causal attention.
    const pairs = (32768 * 32769) / 2;
    assert.equal(t([{ newTokens: 32768, startPos: 0 }]), 32768 * PROFILE.linearMsPerToken + 32768 * PROFILE.kvReadMsPerContextToken + pairs * PROFILE.attnMsPerPair);
    // The same chunk late in a long prompt costs more: attention over the earlier context.
    assert.ok(profileStepMs([{ newTokens: 2048, startPos: 100_000 }]) > profileStepMs([{ newTokens: 2048, startPos: 0 }]));
  });

  it('either timing flag selects the older linear model, the other at its old default', () => {
    const both = stepTimer({ prefillTokensPerS: 1000, decodeStepMs: 4 });
    // 500 prefill tokens + a decode: 500 ms + 4 × (1 + 1/16).
    assert.equal(both([{ newTokens: 500, startPos: 0 }, decode(10)]), 500 + 4 * (1 + 1 / 16));
    const onlyDecode = stepTimer({ decodeStepMs: 2 });
    assert.equal(onlyDecode([{ newTokens: 2000, startPos: 0 }]), (2000 / LEGACY_DEFAULTS.prefillTokensPerS) * 1000 + 2);
    const onlyPrefill = stepTimer({ prefillTokensPerS: 1e6 });
    assert.equal(onlyPrefill([decode(0)]), LEGACY_DEFAULTS.decodeStepMs);
  });

  it('the speed factor divides every step; bad values are refused', () => {
    const work = [{ newTokens: 300, startPos: 64 }, decode(500)];
    assert.equal(stepTimer({ speedFactor: 2 })(work), stepTimer()(work) / 2);
    assert.equal(stepTimer({ speedFactor: 0.5, decodeStepMs: 10 })(work), stepTimer({ decodeStepMs: 10 })(work) * 2);
    assert.throws(() => stepTimer({ speedFactor: 0 }), /speed factor/);
    assert.throws(() => stepTimer({ prefillTokensPerS: 0, decodeStepMs: 1 }), /prefill tokens per second/);
  });

  it('the worker options: profile by default, timing flags as overrides, speed factor and step budget validated', () => {
    const d = parseWorkerArgs(['--engine', 'sim']);
    assert.deepEqual([d.prefillTokensPerS, d.decodeStepMs, d.speedFactor, d.maxNumBatchedTokens], [null, null, 1, 2048]);
    const c = parseWorkerArgs(['--engine', 'sim', '--speed-factor', '2', '--max-num-batched-tokens', '512', '--decode-step-ms', '5']);
    assert.deepEqual([c.prefillTokensPerS, c.decodeStepMs, c.speedFactor, c.maxNumBatchedTokens], [null, 5, 2, 512]);
    for (const [argv, re] of [
      [['--speed-factor', '0'], /--speed-factor \(speed_factor\)/],
      [['--speed-factor', 'fast'], /--speed-factor/],
      [['--max-num-batched-tokens', '0'], /--max-num-batched-tokens \(max_num_batched_tokens\)/],
      [['--max-num-batched-tokens', '1.5'], /--max-num-batched-tokens/],
    ] as [string[], RegExp][]) {
      assert.throws(() => parseWorkerArgs(['--engine', 'sim', ...argv]), (e: unknown) => e instanceof ConfigError && re.test(e.message), argv.join(' '));
    }
  });
});
