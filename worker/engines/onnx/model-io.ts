import type * as ort from 'onnxruntime-node';
import type { ModelConfig } from '../../model/index.js';

/** The decoder's shape, as read from the session's inputs (config.json only fills symbolic dims). */
export interface ModelIo {
  numLayers: number;
  numKvHeads: number;
  headDim: number;
  hasPositionIds: boolean;
  hasAttentionMask: boolean;
  /** Merged Optimum decoders take a `use_cache_branch` flag. */
  hasUseCacheBranch: boolean;
  /** `logits` is [batch, seq, vocab] (HF exports) rather than the last position only. */
  logitsAllPositions: boolean;
}

export function discoverModelIo(session: ort.InferenceSession, hints: Partial<ModelConfig>): ModelIo {
  const inputs = new Map(session.inputMetadata.map((m) => [m.name, m]));
  let numLayers = 0;
  for (const name of inputs.keys()) {
    const m = /^past_key_values\.(\d+)\.key$/.exec(name);
    if (m) numLayers = Math.max(numLayers, Number(m[1]) + 1);
  }
  if (numLayers === 0 || !inputs.has('input_ids')) {
    throw new Error(
      `model inputs ${[...inputs.keys()].join(', ')} are not a decoder with past key/values ` +
        '(need input_ids and past_key_values.{i}.key/value; export with Optimum, task text-generation-with-past)',
    );
  }
  for (const out of ['logits', 'present.0.key', 'present.0.value']) {
    if (!session.outputNames.includes(out)) throw new Error(`model has no output ${out}`);
  }
  const kv = inputs.get('past_key_values.0.key')!;
  if (!kv.isTensor || kv.type !== 'float32') {
    throw new Error(`past_key_values.0.key is ${kv.isTensor ? kv.type : 'not a tensor'}; only float32 key/values are supported`);
  }
  const dim = (i: number, hint: number | undefined, what: string) => {
    const d = kv.shape[i];
    if (typeof d === 'number' && d > 0) return d;
    if (hint) return hint;
    throw new Error(`cannot tell ${what}: past_key_values.0.key dim ${i} is symbolic (${String(d)}) and config.json does not say`);
  };
  const logits = session.outputMetadata.find((m) => m.name === 'logits');
  if (!logits?.isTensor || logits.type !== 'float32') throw new Error('model output logits must be a float32 tensor');
  const logitsAllPositions = logits.shape.length === 3 && logits.shape[1] !== 1;
  return {
    numLayers,
    numKvHeads: dim(1, hints.numKvHeads, 'the number of key/value heads'),
    headDim: dim(3, hints.headDim, 'the head dimension'),
    hasPositionIds: inputs.has('position_ids'),
    hasAttentionMask: inputs.has('attention_mask'),
    hasUseCacheBranch: inputs.has('use_cache_branch'),
    logitsAllPositions,
  };
}
