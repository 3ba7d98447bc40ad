import type { Context, Hono } from 'hono';
import { ServerResponse } from 'node:http';
import type { HttpBindings } from '@hono/node-server';
import { BodyTooLarge, readBody, readNodeBody } from '../body.js';
import { Relay } from '../relay.js';
import { holdOpen } from '../../src/http/drain.js';
import { openAIError } from '../errors.js';
import type { Policy } from '../policies/policy.js';
import { pathOf, Rejected, type RequestPipeline } from '../pipeline.js';
import type { Endpoint } from '../requests.js';
import { REQUEST_ID_HEADER, requestIdOf } from '../../src/http/access-log.js';

export interface OpenAIRoutesDeps {
  pipeline: RequestPipeline;
  policy: Policy;
  maxBodyBytes: number;
  adminKey: string | null;
}

/** POST /v1/completions, /v1/chat/completions, and /route (the same steps up to rank, explained). */
export function openAIRoutes(app: Hono, d: OpenAIRoutesDeps): void {
  const body = async (c: Context): Promise<Uint8Array | Response> => {
    try {
      // Under @hono/node-server: read off the node request itself (no web stream in between).
      const incoming = (c.env as Partial<HttpBindings> | undefined)?.incoming;
      return await (incoming ? readNodeBody(incoming, d.maxBodyBytes) : readBody(c.req.raw, d.maxBodyBytes));
    } catch (e) {
      if (e instanceof BodyTooLarge) return openAIError(413, e.message);
      throw e;
    }
  };

  const completion = (endpoint: Endpoint) => async (c: Context) => {
    const raw = await body(c);
    if (raw instanceof Response) return raw;
    // Under @hono/node-server the response goes straight onto the node socket (the fast path).
    const node = c.env as Partial<HttpBindings> | undefined;
    const outgoing = node?.outgoing instanceof ServerResponse ? node.outgoing : undefined;
    const auth = node?.incoming ? node.incoming.headers.authorization : c.req.header('authorization');
    // The client's own key goes to the engine unless it is the router's admin key.
    const headers: Record<string, string> = auth && !(d.adminKey && auth === `Bearer ${d.adminKey}`) ? { authorization: auth } : {};
    const id = requestIdOf(c);
    headers[REQUEST_ID_HEADER] = id;
    const r = await d.pipeline.dispatch(endpoint, raw, c.req.raw.signal, headers);
    if (!(r instanceof Relay)) return r;
    if (!outgoing) return r.toResponse();
    return r.send(outgoing, { [REQUEST_ID_HEADER]: id }, (endEarly) => holdOpen(c.req.raw, endEarly) ?? (() => {}));
  };
  app.post('/v1/completions', completion('completions'));
  app.post('/v1/chat/completions', completion('chat'));

  app.post('/route', async (c) => {
    const raw = await body(c);
    if (raw instanceof Response) return raw;
    const endpoint: Endpoint = isChatBody(raw) ? 'chat' : 'completions';
    const dec = await d.pipeline.decide(endpoint, raw);
    if (dec instanceof Rejected) return dec.res;
    const pick = dec.ranked[0]!;
    return c.json({
      policy: d.policy.name,
      endpoint: pathOf(endpoint),
      prompt_tokens: pick.promptTokens,
      load_only: dec.req.loadOnly ?? null,
      lora: dec.req.lora,
      pick: { worker: pick.candidate.workerId, rank: pick.candidate.rank, source: pick.candidate.source, expected_cached_tokens: pick.matchedTokens, cost: pick.cost },
      candidates: dec.ranked.map((s) => ({
        worker: s.candidate.workerId,
        rank: s.candidate.rank,
        source: s.candidate.source,
        trusted: s.candidate.trusted,
        prompt_tokens: s.promptTokens,
        matched_tokens: s.matchedTokens,
        index_matched_tokens: s.indexMatchedTokens,
        held_blocks: s.candidate.heldBlocks ?? null,
        by_medium: s.byMedium ?? {},
        terms: s.terms,
        cost: s.cost,
        load: { in_flight: s.candidate.load.inFlight, pending_prefill_tokens: s.candidate.load.pendingPrefillTokens, active_decodes: s.candidate.load.activeDecodes },
      })),
    });
  });
}

/** /route takes either body: chat if it has messages (read after the body limit, so never a whole oversized body). */
function isChatBody(raw: Uint8Array): boolean {
  try {
    const j = JSON.parse(new TextDecoder().decode(raw)) as Record<string, unknown>;
    return Array.isArray(j?.messages);
  } catch {
    return false;
  }
}
