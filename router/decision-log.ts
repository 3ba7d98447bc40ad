import { createWriteStream, type WriteStream } from 'node:fs';
import type { Scored } from './policies/policy.js';

/**
 * `decision_log`: one JSON line per routed request — every candidate with its matched tokens,
 * load and cost terms, best first — to answer "why did it go there?" after the fact.
 */
export class DecisionLog {
  private readonly out: WriteStream;
  private seq = 0;

  constructor(path: string, onError: (msg: string) => void) {
    this.out = createWriteStream(path, { flags: 'a' });
    this.out.on('error', (e) => onError(`decision log ${path}: ${e.message}`));
  }

  write(policy: string, ranked: Scored[]): void {
    const line = {
      n: this.seq++,
      t: Date.now(),
      policy,
      prompt_tokens: ranked[0]?.promptTokens ?? 0,
      candidates: ranked.map((s) => ({
        source: s.candidate.source,
        matched: s.matchedTokens,
        in_flight: s.candidate.load.inFlight,
        pending_prefill: s.candidate.load.pendingPrefillTokens,
        terms: s.terms,
        cost: Math.round(s.cost),
      })),
    };
    this.out.write(JSON.stringify(line) + '\n');
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.out.end(resolve));
  }
}
