/** What the engine needs to know about a decoder model (written as config.json beside our default model). */
export interface ModelConfig {
  name: string;
  version?: string;
  numLayers: number;
  /** Heads of the key/value tensors (fewer than attention heads with grouped-query attention). */
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  eosTokenIds: number[];
  hiddenSize?: number;
  /** Whether `logits` holds every position or only the last one. */
  logits?: 'last' | 'all';
}

/** Reads our own config.json or a Hugging Face one; returns what it can tell. */
export function parseModelConfig(raw: Record<string, unknown>): Partial<ModelConfig> {
  const num = (...keys: string[]) => {
    for (const k of keys) if (typeof raw[k] === 'number') return raw[k] as number;
    return undefined;
  };
  const heads = num('num_attention_heads', 'n_head');
  const hidden = num('hiddenSize', 'hidden_size', 'n_embd');
  const eos = raw.eosTokenIds ?? raw.eos_token_id;
  const out: Partial<ModelConfig> = {
    name: typeof raw.name === 'string' ? raw.name : typeof raw.model_type === 'string' ? raw.model_type : undefined,
    version: typeof raw.version === 'string' ? raw.version : undefined,
    numLayers: num('numLayers', 'num_hidden_layers', 'n_layer'),
    numKvHeads: num('numKvHeads', 'num_key_value_heads') ?? heads,
    headDim: num('headDim', 'head_dim') ?? (hidden && heads ? hidden / heads : undefined),
    vocabSize: num('vocabSize', 'vocab_size'),
    eosTokenIds: typeof eos === 'number' ? [eos] : Array.isArray(eos) ? (eos as number[]) : undefined,
    hiddenSize: hidden,
    logits: raw.logits === 'last' || raw.logits === 'all' ? raw.logits : undefined,
  };
  for (const k of Object.keys(out) as (keyof ModelConfig)[]) if (out[k] === undefined) delete out[k];
  return out;
}
