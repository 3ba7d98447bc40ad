/**
 * Calibration of cache_aware's ttft cost: the router's predicted time to first token for the
 * worker it picked (x-kv-router-predicted-ttft-ms) against the TTFT the client measured. Error =
 * measured − predicted, in ms (positive: slower than predicted); p50 and p90 of |error|, the
 * signed median (bias), and the same relative to the measured TTFT. Runs whose router predicts
 * nothing (other policies, the weighted cost) have none.
 */
import type { RequestResult } from './client.js';
import { percentile } from './stats.js';

export interface Calibration {
  samples: number;
  abs_error_p50_ms: number;
  abs_error_p90_ms: number;
  /** Median of measured − predicted: positive = the model is optimistic. */
  bias_p50_ms: number;
  /** |error| / measured. */
  rel_error_p50: number;
  rel_error_p90: number;
}

export function calibration(results: RequestResult[]): Calibration | null {
  const abs: number[] = [];
  const signed: number[] = [];
  const rel: number[] = [];
  for (const r of results) {
    const p = r.predictedTtftMs;
    if (!r.ok || r.ttftMs === null || p === null || p === undefined) continue;
    const e = r.ttftMs - p;
    abs.push(Math.abs(e));
    signed.push(e);
    rel.push(Math.abs(e) / Math.max(1, r.ttftMs));
  }
  if (abs.length === 0) return null;
  for (const xs of [abs, signed, rel]) xs.sort((a, b) => a - b);
  const ms = (v: number) => Math.round(v);
  const frac = (v: number) => Math.round(v * 1000) / 1000;
  return {
    samples: abs.length,
    abs_error_p50_ms: ms(percentile(abs, 50)),
    abs_error_p90_ms: ms(percentile(abs, 90)),
    bias_p50_ms: ms(percentile(signed, 50)),
    rel_error_p50: frac(percentile(rel, 50)),
    rel_error_p90: frac(percentile(rel, 90)),
  };
}

/** One line per run that predicted TTFTs (terminal and markdown). */
export function calibrationLines(byRun: Record<string, Calibration | null> | undefined): string[] {
  if (!byRun) return [];
  return Object.entries(byRun)
    .filter((e): e is [string, Calibration] => e[1] !== null)
    .map(([k, c]) => `${k}: predicted vs measured TTFT over ${c.samples} requests: |error| p50 ${c.abs_error_p50_ms} ms, p90 ${c.abs_error_p90_ms} ms (${Math.round(c.rel_error_p50 * 100)}% / ${Math.round(c.rel_error_p90 * 100)}% of measured), bias (median measured − predicted) ${c.bias_p50_ms} ms`);
}
