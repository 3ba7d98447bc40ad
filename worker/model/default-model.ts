import { encodeModel, DataType } from './onnx-proto.js';
import { GraphBuilder } from './graph-builder.js';
import { SeededNormal } from './random.js';

/**
 * The default model: a small Llama-style decoder (RMSNorm, rotary positions, causal
 * multi-head attention with past keys/values, SwiGLU MLP, tied embeddings behind an
 * output projection) with seeded random weights. Its text is noise; its compute is real.
 *
 * I/O is the HF/Optimum decoder interface; `logits` holds only the last position: [batch, 1, vocab].
 */
export interface DefaultModelSpec {
  name: string;
  version: string;
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  headDim: number;
  ffnSize: number;
  ropeTheta: number;
  seed: number;
}

export const DEFAULT_MODEL: Omit<DefaultModelSpec, 'vocabSize'> = {
  name: 'kvr-tiny',
  version: 'v1',
  hiddenSize: 64,
  numLayers: 2,
  numHeads: 4,
  headDim: 16,
  ffnSize: 192,
  ropeTheta: 10000,
  seed: 20261121,
};

const EPS = 1e-6;

/** Changes a projection's weight in place before it is written ([din, dout], row-major): how a LoRA adapter is merged (lora.ts). */
export type WeightHook = (name: string, weight: Float32Array, din: number, dout: number) => void;

/** Builds the ONNX graph; returns the serialised model as chunks. `adapt` sees every projection weight (q/k/v/o, gate/up/down, output). */
export function buildDefaultModel(spec: DefaultModelSpec, adapt?: WeightHook): Uint8Array[] {
  const { vocabSize: V, hiddenSize: D, numLayers: L, numHeads: H, headDim: HD, ffnSize: F } = spec;
  if (H * HD !== D) throw new Error('numHeads * headDim must equal hiddenSize');
  const rnd = new SeededNormal(spec.seed);
  const g = new GraphBuilder();

  const ones = (n: number) => new Float32Array(n).fill(1);
  const c = {
    one: g.i64('c_one', [], [1]),
    zero: g.i64('c_zero', [], [0]),
    last: g.i64('c_last', [], [-1]),
    ax1: g.i64('c_axes_1', [1], [1]),
    ax2: g.i64('c_axes_2', [1], [2]),
    ax12: g.i64('c_axes_12', [2], [1, 2]),
    ax3: g.i64('c_axes_3', [1], [3]),
    half: g.i64('c_half', [1], [HD / 2]),
    full: g.i64('c_full', [1], [HD]),
    start0: g.i64('c_start0', [1], [0]),
    splitHeads: g.i64('c_split_heads', [4], [0, 0, H, HD]),
    mergeHeads: g.i64('c_merge_heads', [3], [0, 0, D]),
    fzero: g.f32('c_fzero', [], Float32Array.of(0)),
    fneg: g.f32('c_fneg', [], Float32Array.of(-1e9)),
    eps: g.f32('c_eps', [], Float32Array.of(EPS)),
    scale: g.f32('c_scale', [], Float32Array.of(1 / Math.sqrt(HD))),
  };
  const invFreq = new Float32Array(HD / 2);
  for (let i = 0; i < HD / 2; i++) invFreq[i] = 1 / Math.pow(spec.ropeTheta, (2 * i) / HD);
  const invFreqName = g.f32('rope_inv_freq', [HD / 2], invFreq);

  const embed = g.f32('embed_tokens', [V, D], rnd.tensor(V * D, 1));
  let x = g.op('Gather', [embed, 'input_ids'], { axis: 0 });

  // Additive mask [batch, 1, seq, past+seq]: key j is visible to query i (absolute index
  // past+i) when j <= past+i and attention_mask[b, j] == 1. -1e9 rather than -inf keeps
  // fully masked rows (padding queries) finite.
  const seqLen = g.op('Gather', [g.op('Shape', ['input_ids']), c.one]);
  const total = g.op('Gather', [g.op('Shape', ['attention_mask']), c.one]);
  const past = g.op('Sub', [total, seqLen]);
  const keyIdx = g.op('Range', [c.zero, total, c.one]);
  const queryIdx = g.op('Unsqueeze', [g.op('Range', [past, total, c.one]), c.ax1]);
  const causal = g.op('LessOrEqual', [keyIdx, queryIdx]);
  const padMask = g.op('Unsqueeze', [g.op('Cast', ['attention_mask'], { to: DataType.BOOL }), c.ax12]);
  const bias = g.op('Where', [g.op('And', [causal, padMask]), c.fzero, c.fneg]);

  // Rotary tables from position_ids: [batch, 1, seq, headDim].
  const pos = g.op('Unsqueeze', [g.op('Cast', ['position_ids'], { to: DataType.FLOAT }), c.ax2]);
  const freqs = g.op('Mul', [pos, invFreqName]);
  const angles = g.op('Concat', [freqs, freqs], { axis: -1 });
  const cos = g.op('Unsqueeze', [g.op('Cos', [angles]), c.ax1]);
  const sin = g.op('Unsqueeze', [g.op('Sin', [angles]), c.ax1]);

  const rmsNorm = (t: string, name: string) => {
    const ms = g.op('ReduceMean', [g.op('Mul', [t, t])], { axes: [-1], keepdims: 1 });
    const normed = g.op('Div', [t, g.op('Sqrt', [g.op('Add', [ms, c.eps])])]);
    return g.op('Mul', [normed, g.f32(name, [D], ones(D))]);
  };
  const linear = (t: string, name: string, din: number, dout: number, std: number) => {
    const w = rnd.tensor(din * dout, std);
    adapt?.(name, w, din, dout);
    return g.op('MatMul', [t, g.f32(name, [din, dout], w)]);
  };
  const heads = (t: string) => g.op('Transpose', [g.op('Reshape', [t, c.splitHeads])], { perm: [0, 2, 1, 3] });
  const rotate = (t: string) => {
    const lo = g.op('Slice', [t, c.start0, c.half, c.ax3]);
    const hi = g.op('Slice', [t, c.half, c.full, c.ax3]);
    const rotated = g.op('Concat', [g.op('Neg', [hi]), lo], { axis: 3 });
    return g.op('Add', [g.op('Mul', [t, cos]), g.op('Mul', [rotated, sin])]);
  };

  const sd = 1 / Math.sqrt(D);
  for (let l = 0; l < L; l++) {
    const p = `layers.${l}`;
    const h = rmsNorm(x, `${p}.input_norm`);
    // Larger q/k weights make attention sharper, so outputs depend visibly on context.
    const q = rotate(heads(linear(h, `${p}.q_proj`, D, D, 2 * sd)));
    const k = rotate(heads(linear(h, `${p}.k_proj`, D, D, 2 * sd)));
    const v = heads(linear(h, `${p}.v_proj`, D, D, sd));
    const keys = g.op('Concat', [`past_key_values.${l}.key`, k], { axis: 2 }, `present.${l}.key`);
    const values = g.op('Concat', [`past_key_values.${l}.value`, v], { axis: 2 }, `present.${l}.value`);
    let scores = g.op('MatMul', [q, g.op('Transpose', [keys], { perm: [0, 1, 3, 2] })]);
    scores = g.op('Add', [g.op('Mul', [scores, c.scale]), bias]);
    const attn = g.op('MatMul', [g.op('Softmax', [scores], { axis: -1 }), values]);
    const merged = g.op('Reshape', [g.op('Transpose', [attn], { perm: [0, 2, 1, 3] }), c.mergeHeads]);
    x = g.op('Add', [x, linear(merged, `${p}.o_proj`, D, D, sd)]);

    const h2 = rmsNorm(x, `${p}.post_attention_norm`);
    const gate = linear(h2, `${p}.gate_proj`, D, F, sd);
    const up = linear(h2, `${p}.up_proj`, D, F, sd);
    const act = g.op('Mul', [g.op('Mul', [gate, g.op('Sigmoid', [gate])]), up]);
    x = g.op('Add', [x, linear(act, `${p}.down_proj`, F, D, 1 / Math.sqrt(F))]);
  }

  const lastHidden = g.op('Gather', [rmsNorm(x, 'final_norm'), c.last], { axis: 1 });
  // Tied embeddings alone would make every token predict itself; a mixing projection avoids that.
  const projected = linear(lastHidden, 'output_proj', D, D, sd);
  const logits2d = g.op('Gemm', [projected, embed], { transB: 1 });
  g.op('Unsqueeze', [logits2d, c.ax1], undefined, 'logits');

  const f = DataType.FLOAT;
  const i64 = DataType.INT64;
  const kv = (prefix: string, len: string) =>
    Array.from({ length: L }, (_, l) =>
      ['key', 'value'].map((kind) => ({ name: `${prefix}.${l}.${kind}`, elemType: f, shape: ['batch_size', H, len, HD] })),
    ).flat();
  return encodeModel({
    nodes: g.nodes,
    initializers: g.initializers,
    inputs: [
      { name: 'input_ids', elemType: i64, shape: ['batch_size', 'sequence_length'] },
      { name: 'attention_mask', elemType: i64, shape: ['batch_size', 'total_sequence_length'] },
      { name: 'position_ids', elemType: i64, shape: ['batch_size', 'sequence_length'] },
      ...kv('past_key_values', 'past_sequence_length'),
    ],
    outputs: [
      { name: 'logits', elemType: f, shape: ['batch_size', 1, V] },
      ...kv('present', 'total_sequence_length'),
    ],
    graphName: `${spec.name}-${spec.version}`,
    opset: 17,
    irVersion: 8,
    producer: 'kv-router',
    metadata: { spec: JSON.stringify(spec) },
  });
}
