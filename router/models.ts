/**
 * Models and LoRA adapters across the fleet. A worker's GET /v1/models lists its base model(s)
 * and, as vLLM does for --lora-modules, each adapter as a card with id = adapter name,
 * parent = the base model's id, root = the adapter's path. A request whose `model` is an adapter
 * runs under it: vLLM puts the adapter's name into every block hash (and BlockStored.lora_name),
 * so the router keys the prompt under the same name and an adapter's blocks never match the
 * base model's or another adapter's.
 */
import type { Candidate } from './policies/policy.js';
import type { ServedModel } from './membership.js';

/** GET /v1/models as OpenAI servers answer it ({data: [{id, parent?, max_model_len?}]}); null if it is not that shape. */
export function parseModelList(j: unknown): ServedModel[] | null {
  const data = (j as { data?: unknown })?.data;
  if (!Array.isArray(data)) return null;
  const out: ServedModel[] = [];
  for (const m of data) {
    const id = (m as { id?: unknown })?.id;
    if (typeof id !== 'string' || id === '') continue;
    const len = (m as { max_model_len?: unknown }).max_model_len;
    const parent = (m as { parent?: unknown }).parent;
    out.push({
      id,
      maxModelLen: typeof len === 'number' && Number.isInteger(len) && len > 0 ? len : null,
      parent: typeof parent === 'string' && parent !== '' && parent !== id ? parent : null,
    });
  }
  // vLLM's adapter cards carry no max_model_len: an adapter's context is its base model's.
  for (const m of out) {
    if (m.parent !== null && m.maxModelLen === null) m.maxModelLen = out.find((b) => b.id === m.parent)?.maxModelLen ?? null;
  }
  return out;
}

/**
 * The LoRA adapter a request's `model` names on these candidates (which all serve it), or null
 * for a base model (or no model). `modelsOf` reads a candidate's worker's /v1/models.
 */
export function adapterOf(model: string | undefined, candidates: Candidate[], modelsOf: (c: Candidate) => ServedModel[] | null | undefined): string | null {
  if (model === undefined) return null;
  for (const c of candidates) {
    const m = modelsOf(c)?.find((x) => x.id === model);
    if (m?.parent) return m.id;
  }
  return null;
}

/**
 * The fleet's GET /v1/models: every worker's cards merged by id, in the order the workers are
 * listed (the first card of an id wins), base models before the adapters that name them.
 */
export function mergeModelLists(lists: unknown[][]): unknown[] {
  const seen = new Map<string, unknown>();
  for (const list of lists) {
    for (const m of list) {
      const id = (m as { id?: unknown })?.id;
      if (typeof id === 'string' && id !== '' && !seen.has(id)) seen.set(id, m);
    }
  }
  const cards = [...seen.values()];
  const isAdapter = (m: unknown) => typeof (m as { parent?: unknown }).parent === 'string';
  return [...cards.filter((m) => !isAdapter(m)), ...cards.filter(isAdapter)];
}
