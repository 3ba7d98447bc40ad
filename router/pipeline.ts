import type { RouterConfig, TokenizerSpec } from './config.js';
import type { DecisionLog } from './decision-log.js';
import { openAIError } from './errors.js';
import type { ClusterLink } from './cluster/link.js';
import type { LoadAccounting } from './load.js';
import { adapterOf } from './models.js';
import type { RouterMetrics } from './metrics.js';
import type { HitBound } from './observe/hit-bound.js';
import type { Candidate, Policy, RouteRequest, Scored } from './policies/policy.js';
import { forward, type Attempt, type AttemptEnd, type AttemptFailure } from './proxy.js';
import { Relay } from './relay.js';
import type { Registry, WorkerEntry } from './registry.js';
import type { RateLearner } from './cost/rates.js';
import { parseBody, type Endpoint, type PromptOf } from './requests.js';
import { mayRetry, RetryBudget } from './retry.js';
import { TokenizeError, TokenizerUnavailableError, type TokenizePool } from './tokenize-pool.js';
import { randomUUID } from 'node:crypto';
import type { PredictionAccuracy } from './observe/accuracy.js';
import type { TokenParity } from './observe/parity.js';
import type { RecentDecisions } from './observe/recent-decisions.js';
import { RequestTrace } from './observe/trace.js';
import { clientWantsUsage, requestUsage } from './observe/usage.js';

export const pathOf = (e: Endpoint) => (e === 'chat' ? '/v1/chat/completions' : '/v1/completions');

export interface PipelineDeps {
  config: RouterConfig;
  registry: Registry;
  load: LoadAccounting;
  policy: Policy;
  pool: TokenizePool;
  metrics: RouterMetrics;
  decisionLog: DecisionLog | null;
  /** Shares this replica's provisional prefixes with the others (cluster mode). */
  cluster?: ClusterLink | null;
  /** The last decisions, for the dashboard. */
  recentDecisions?: RecentDecisions | null;
  /** Predicted against reported cached tokens, per worker. */
  accuracy?: PredictionAccuracy | null;
  /** The router's token ids against the chosen worker's BlockStored events. */
  parity?: TokenParity | null;
  /** The hit rate's upper bound since start (one unlimited cache of every routed prompt). */
  hitBound?: HitBound | null;
  /** Learns each worker's speed from its requests' timing (cache_aware's ttft cost). */
  rates?: RateLearner | null;
}

/** A step said no: the client gets this response. */
export class Rejected {
  constructor(
    readonly res: Response,
    /** The requests counter's outcome label. */
    readonly outcome: 'bad_request' | 'no_worker' | 'model_not_found' | 'tokenizer_unavailable',
  ) {}
}

export interface Parsed {
  endpoint: Endpoint;
  raw: Uint8Array;
  prompt: PromptOf;
  model: string | undefined;
  stream: boolean;
  salt: string | null;
  /** What goes to the worker: `raw`, or for a stream whose client did not ask for usage, raw asking for it. */
  upstreamBody: Uint8Array;
  /** The router asked for the usage chunk: it is stripped from what the client gets. */
  stripUsage: boolean;
}

/** A request ranked and ready: the same object for /route (explained) and the real request (sent). */
export interface Decision {
  parsed: Parsed;
  req: RouteRequest;
  ranked: Scored[];
}

/**
 * One request's way through the router, in named steps: parse → tokenize → rank → commit → forward.
 * Each step is a method with its inputs and outputs explicit; /route runs every step up to rank
 * (same validation, no state change), the real request runs them all. State is written in
 * `commit` and in the attempt records, nowhere else.
 */
export class RequestPipeline {
  private readonly budget: RetryBudget;

  constructor(private readonly d: PipelineDeps) {
    this.budget = new RetryBudget(d.config.retry.budget_ratio, d.config.retry.budget_min_per_s);
  }

  /** parse: JSON, the body schema, the model. */
  parse(endpoint: Endpoint, raw: Uint8Array): Parsed | Rejected {
    let json: unknown;
    try {
      json = JSON.parse(new TextDecoder().decode(raw));
    } catch (e) {
      return new Rejected(openAIError(400, `request body is not valid JSON: ${(e as Error).message}`), 'bad_request');
    }
    const p = parseBody(endpoint, json);
    if (!p.ok) return new Rejected(openAIError(400, p.message, 'invalid_request_error', null, p.param), 'bad_request');
    const stripUsage = p.stream && !clientWantsUsage(json);
    const upstreamBody = stripUsage ? requestUsage(raw, json as Record<string, unknown>) : raw;
    return { endpoint, raw, prompt: p.prompt, model: p.model, stream: p.stream, salt: p.cacheSalt, upstreamBody, stripUsage };
  }

  /** The candidates that can serve this model (404 naming the fleet's models when none does). */
  candidatesFor(parsed: Parsed): Candidate[] | Rejected {
    const all = this.d.registry.candidates();
    if (all.length === 0) {
      const known = this.d.registry.list().length;
      return new Rejected(
        openAIError(503, known === 0 ? 'no workers are configured; add one with POST /workers' : `no healthy worker (0 of ${known} in rotation)`, 'service_unavailable', 'no_healthy_worker'),
        'no_worker',
      );
    }
    const model = parsed.model;
    if (model === undefined) return all;
    const served = new Set<string>();
    const out = all.filter((c) => {
      const models = this.worker(c)?.models;
      if (!models || models.length === 0) return true; // it does not say: it takes any model
      for (const m of models) served.add(m.id);
      return models.some((m) => m.id === model);
    });
    if (out.length > 0) return out;
    const names = [...served].sort();
    return new Rejected(
      openAIError(404, `The model \`${model}\` does not exist. This router's workers serve: ${names.map((n) => `\`${n}\``).join(', ')}.`, 'NotFoundError', 'model_not_found', 'model'),
      'model_not_found',
    );
  }

  /**
   * A token id the candidates' tokenizers do not have (the worker would answer 400; /route must too).
   * A tokenizer that cannot answer leaves the check to the worker: routing never waits on it failing.
   */
  private async outOfVocabulary(ids: number[], candidates: Candidate[]): Promise<{ id: number; vocabSize: number } | null> {
    let max = -1;
    for (const t of ids) if (t > max) max = t;
    const specs = new Map<string, ReturnType<RequestPipeline['specOf']>>();
    for (const c of candidates) if (!specs.has(c.tokenizerKey)) specs.set(c.tokenizerKey, this.specOf(c));
    for (const spec of specs.values()) {
      const vocabSize = await this.d.pool.vocabSize(spec).catch(() => Infinity);
      if (max >= vocabSize) return { id: ids.find((t) => t >= vocabSize)!, vocabSize };
    }
    return null;
  }

  /** tokenize: once per distinct tokenizer among the candidates (usually one). */
  async tokenize(parsed: Parsed, candidates: Candidate[]): Promise<RouteRequest | Rejected> {
    const prompt = parsed.prompt;
    const lora = adapterOf(parsed.model, candidates, (c) => this.worker(c)?.models);
    if (prompt.kind === 'ids') {
      const bad = await this.outOfVocabulary(prompt.ids, candidates);
      if (bad) return new Rejected(openAIError(400, `token id ${bad.id} is out of range (vocabulary size ${bad.vocabSize})`, 'invalid_request_error', null, 'prompt'), 'bad_request');
      return { tokensFor: () => prompt.ids, lora, salt: parsed.salt };
    }
    // Not renderable as the engine would (non-text parts): no tokens, so every policy weighs load only.
    if (prompt.kind === 'unroutable') return { tokensFor: () => [], lora, salt: parsed.salt, loadOnly: prompt.reason };
    const byKey = new Map<string, Promise<number[]>>();
    const t0 = performance.now();
    for (const c of candidates) {
      if (!byKey.has(c.tokenizerKey)) byKey.set(c.tokenizerKey, this.d.pool.tokenize(this.specOf(c), prompt.input));
    }
    const tokens = new Map<string, number[]>();
    try {
      for (const [k, p] of byKey) tokens.set(k, await p);
    } catch (e) {
      // Every tokenization settles before the answer (none is left unobserved).
      await Promise.allSettled(byKey.values());
      if (e instanceof TokenizerUnavailableError) return new Rejected(openAIError(503, `the tokenizer is unavailable: ${e.message}`, 'service_unavailable', 'tokenizer_unavailable'), 'tokenizer_unavailable');
      if (e instanceof TokenizeError) return new Rejected(openAIError(400, `cannot tokenize the prompt: ${e.message}`), 'bad_request');
      throw e;
    }
    this.d.metrics.tokenizeSeconds.observe((performance.now() - t0) / 1000);
    return { tokensFor: (c) => tokens.get(c.tokenizerKey) ?? [], lora, salt: parsed.salt };
  }

  /**
   * The prompt fits the worker's context (max_model_len from its /v1/models): candidates it does
   * not fit are dropped; none left → vLLM's 400, before anything is routed.
   */
  fit(req: RouteRequest, candidates: Candidate[], model: string | undefined): Candidate[] | Rejected {
    let worst: { len: number; tokens: number } | null = null;
    const out = candidates.filter((c) => {
      const len = this.maxModelLen(c, model);
      const n = req.tokensFor(c).length;
      if (len === null || n < len) return true;
      if (!worst || len > worst.len) worst = { len, tokens: n };
      return false;
    });
    if (out.length > 0 || worst === null) return out;
    const w: { len: number; tokens: number } = worst;
    return new Rejected(
      openAIError(400, `This model's maximum context length is ${w.len} tokens. However, your request has ${w.tokens} input tokens. Please reduce the length of the input messages.`, 'BadRequestError', 'context_length_exceeded', 'messages'),
      'bad_request',
    );
  }

  /** rank: pure (the policy changes nothing). */
  rank(req: RouteRequest, candidates: Candidate[]): Scored[] {
    const t0 = performance.now();
    const ranked = this.d.policy.rank(req, candidates);
    this.d.metrics.decisionSeconds.observe({ policy: this.d.policy.name }, (performance.now() - t0) / 1000);
    return ranked;
  }

  /** parse and tokenize: the steps that may await. */
  async prepare(endpoint: Endpoint, raw: Uint8Array): Promise<{ parsed: Parsed; req: RouteRequest; tokenizers: Set<string> } | Rejected> {
    const parsed = this.parse(endpoint, raw);
    if (parsed instanceof Rejected) return this.rejected(parsed, endpoint);
    const all = this.candidatesFor(parsed);
    if (all instanceof Rejected) return this.rejected(all, endpoint);
    const req = await this.tokenize(parsed, all);
    if (req instanceof Rejected) return this.rejected(req, endpoint);
    return { parsed, req, tokenizers: new Set(all.map((c) => c.tokenizerKey)) };
  }

  /**
   * Candidates as they are now (who is in rotation, their load), fitted to the prompt, ranked.
   * Synchronous: the real request commits its pick in the same turn, so a concurrent burst sees it.
   */
  decideNow(prep: { parsed: Parsed; req: RouteRequest; tokenizers: Set<string> }): Decision | Rejected {
    const { parsed, req } = prep;
    const now = this.candidatesFor(parsed);
    if (now instanceof Rejected) return this.rejected(now, parsed.endpoint);
    // A worker that joined while tokenizing with a tokenizer not run for this prompt waits for the next request.
    const tokenized = now.filter((c) => prep.tokenizers.has(c.tokenizerKey));
    if (tokenized.length === 0) return this.rejected(new Rejected(openAIError(503, 'no healthy worker for this prompt\'s tokenizer', 'service_unavailable', 'no_healthy_worker'), 'no_worker'), parsed.endpoint);
    const fits = this.fit(req, tokenized, parsed.model);
    if (fits instanceof Rejected) return this.rejected(fits, parsed.endpoint);
    return { parsed, req, ranked: this.rank(req, fits) };
  }

  /** Every step up to rank, as /route and the real request share them. */
  async decide(endpoint: Endpoint, raw: Uint8Array): Promise<Decision | Rejected> {
    const prep = await this.prepare(endpoint, raw);
    return prep instanceof Rejected ? prep : this.decideNow(prep);
  }

  /**
   * commit: the request goes to `s` now. Recorded synchronously (no await since rank): the load,
   * the policy's memory (provisional prefix, own tree, rotation), the decision log.
   */
  commit(dec: Decision, s: Scored, attempt: number, ac: AbortController, trace?: RequestTrace): Attempt {
    const d = this.d;
    const c = s.candidate;
    const ticket = d.load.start(c.source, s.promptTokens - s.matchedTokens);
    const timing = d.rates?.begin(s, { stream: dec.parsed.stream, firstChunkIsRole: dec.parsed.endpoint === 'chat' }) ?? null;
    d.policy.commit?.(dec.req, c);
    if (d.cluster && !dec.req.loadOnly) d.cluster.routed(c.source, dec.req.tokensFor(c), c.blockSize, dec.req.lora, dec.req.salt);
    d.registry.get(c.workerId)?.streams.get(c.rank)?.noteRouted();
    this.watchParity(dec, s);
    if (attempt === 0 && !dec.req.loadOnly) this.observeBound(dec, c);
    trace?.begin(s);
    const untrack = d.registry.trackPending(c.workerId, ac, dec.parsed.stream);
    const endpoint = pathOf(dec.parsed.endpoint);
    let done = false;
    const end = (outcome: string) => {
      if (done) return;
      done = true;
      untrack();
      ticket.finish();
      d.metrics.requests.inc({ worker: c.workerId, outcome, endpoint });
    };
    return {
      failed: (f: AttemptFailure) => {
        trace?.failed(f);
        const tookOut = f.reason === 'status' || f.reason === 'out_of_rotation' ? false : d.registry.reportFailure(c.workerId, f.error);
        d.metrics.retries.inc({ worker: c.workerId, reason: f.status !== undefined ? String(f.status) : f.reason === 'refused' ? 'connect' : f.reason });
        end('retry');
        return mayRetry(f, tookOut, this.budget);
      },
      firstByte: (status: number) => {
        untrack();
        d.registry.progress(c.workerId);
        ticket.prefillDone();
        trace?.firstByte(status);
        timing?.firstByte(status);
        if (status >= 200 && status < 300) {
          d.metrics.predictedCachedTokens.inc({ worker: c.workerId }, s.matchedTokens);
          d.metrics.promptTokens.inc({ worker: c.workerId }, s.promptTokens);
        }
      },
      progress: () => {
        d.registry.progress(c.workerId);
        timing?.progress(d.load.get(c.source).activeDecodes);
      },
      ended: (e: AttemptEnd) => {
        end(e);
        trace?.ended(e);
      },
      aborted: () => {
        end('aborted');
        trace?.finish('aborted');
      },
      tap: (sse, status) => trace?.tap(sse, status) ?? null,
    };
  }

  /** Tokenization parity: a cold prompt alone on the worker gets its BlockStored events compared. */
  private watchParity(dec: Decision, s: Scored): void {
    const parity = this.d.parity;
    if (!parity) return;
    const c = s.candidate;
    const text = dec.parsed.prompt.kind === 'tokenize';
    const cold = text && !dec.req.loadOnly && s.matchedTokens === 0 && c.load.inFlight === 0;
    const spec = this.specOf(c);
    parity.committed(c.source, c.workerId, dec.req.tokensFor(c), c.blockSize, cold, (ids) => this.d.pool.decode(spec, ids));
  }

  /** The whole way: decide, then commit and forward (attempts walk down the ranking). */
  async handle(endpoint: Endpoint, raw: Uint8Array, signal: AbortSignal, headers: Record<string, string>): Promise<Response> {
    const r = await this.dispatch(endpoint, raw, signal, headers);
    return r instanceof Relay ? r.toResponse() : r;
  }

  /** As `handle`, the worker's response left as a Relay (the HTTP route writes it onto the socket). */
  async dispatch(endpoint: Endpoint, raw: Uint8Array, signal: AbortSignal, headers: Record<string, string>): Promise<Response | Relay> {
    const prep = await this.prepare(endpoint, raw);
    if (prep instanceof Rejected) return prep.res;
    // From here to the first attempt's commit nothing awaits: rank, commit and send in one turn.
    const dec = this.decideNow(prep);
    if (dec instanceof Rejected) return dec.res;
    this.budget.deposit();
    const trace = new RequestTrace(
      { metrics: this.d.metrics, decisionLog: this.d.decisionLog, recentDecisions: this.d.recentDecisions ?? null, accuracy: this.d.accuracy ?? null, policy: this.d.policy.name },
      headers['x-request-id'] || randomUUID(),
      dec.ranked,
      dec.parsed.stripUsage,
      dec.parsed.salt !== null,
    );
    const r = await forward({
      path: pathOf(endpoint),
      body: dec.parsed.upstreamBody,
      ranked: dec.ranked,
      signal,
      maxAttempts: this.d.config.retry.max_attempts,
      backoffMs: this.d.config.retry.backoff_ms,
      headerTimeoutMs: this.d.config.upstream_header_timeout_ms,
      target: (id) => {
        const w = this.d.registry.get(id);
        return w ? { url: w.url, ranks: w.ranks.length } : undefined;
      },
      begin: (s, attempt, ac) => this.commit(dec, s, attempt, ac, trace),
      headers,
    });
    if (r.kind === 'aborted' && r.worker === null) this.d.metrics.requests.inc({ worker: 'none', outcome: 'aborted', endpoint: pathOf(endpoint) });
    if (r.kind === 'exhausted') this.d.metrics.requests.inc({ worker: dec.ranked[0]?.candidate.workerId ?? 'none', outcome: 'no_worker', endpoint: pathOf(endpoint) });
    if (r.kind !== 'response') trace.finish(r.kind === 'exhausted' ? 'no_worker' : 'aborted');
    return r.kind === 'response' ? r.relay : r.res;
  }

  private observeBound(dec: Decision, c: Candidate): void {
    const b = this.d.hitBound;
    if (!b) return;
    const tokens = dec.req.tokensFor(c);
    const hit = b.observe(tokens, c.blockSize, dec.req.lora, dec.req.salt);
    this.d.metrics.routedPromptTokens.inc(tokens.length);
    if (hit > 0) this.d.metrics.boundCachedTokens.inc(hit);
  }

  private rejected(r: Rejected, endpoint: Endpoint): Rejected {
    this.d.metrics.requests.inc({ worker: 'none', outcome: r.outcome, endpoint: pathOf(endpoint) });
    return r;
  }

  private worker(c: Candidate): WorkerEntry | undefined {
    return this.d.registry.get(c.workerId);
  }

  private specOf(c: Candidate): TokenizerSpec {
    return this.worker(c)?.config.tokenizer ?? this.d.config.tokenizer;
  }

  /** The context length of `model` on that worker (of its first model when none is named); null: unknown. */
  private maxModelLen(c: Candidate, model: string | undefined): number | null {
    const models = this.worker(c)?.models;
    if (!models || models.length === 0) return null;
    const m = model === undefined ? models[0] : models.find((x) => x.id === model);
    return m?.maxModelLen ?? null;
  }
}
