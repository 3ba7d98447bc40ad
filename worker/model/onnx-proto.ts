import { PbWriter } from './protobuf.js';

/** ONNX TensorProto.DataType values used here. */
export const DataType = { FLOAT: 1, INT32: 6, INT64: 7, BOOL: 9 } as const;

export type AttrValue = number | number[] | string | { float: number } | { tensor: TensorSpec };

export interface TensorSpec {
  name: string;
  dims: number[];
  dataType: number;
  /** Little-endian raw bytes. */
  raw: Uint8Array;
}

export interface NodeSpec {
  opType: string;
  inputs: string[];
  outputs: string[];
  name: string;
  attrs?: Record<string, AttrValue>;
}

export interface ValueInfoSpec {
  name: string;
  elemType: number;
  /** A number for a fixed dim, a string for a named symbolic one. */
  shape: (number | string)[];
}

export interface ModelSpec {
  nodes: NodeSpec[];
  initializers: TensorSpec[];
  inputs: ValueInfoSpec[];
  outputs: ValueInfoSpec[];
  graphName: string;
  opset: number;
  irVersion: number;
  producer: string;
  metadata?: Record<string, string>;
}

// Field numbers from onnx/onnx.proto.
export function encodeTensor(t: TensorSpec): PbWriter {
  const w = new PbWriter();
  for (const d of t.dims) w.int(1, d);
  w.int(2, t.dataType);
  w.string(8, t.name);
  w.bytes(9, t.raw);
  return w;
}

function encodeAttr(name: string, v: AttrValue): PbWriter {
  const w = new PbWriter().string(1, name);
  if (typeof v === 'number') {
    if (!Number.isInteger(v)) throw new Error(`attribute ${name}: use { float } for non-integers`);
    w.int(3, v).int(20, 2);
  } else if (typeof v === 'string') {
    w.string(4, v).int(20, 3);
  } else if (Array.isArray(v)) {
    for (const x of v) w.int(8, x);
    w.int(20, 7);
  } else if ('float' in v) {
    w.float(2, v.float).int(20, 1);
  } else {
    w.message(5, encodeTensor(v.tensor)).int(20, 4);
  }
  return w;
}

function encodeNode(n: NodeSpec): PbWriter {
  const w = new PbWriter();
  for (const i of n.inputs) w.string(1, i);
  for (const o of n.outputs) w.string(2, o);
  w.string(3, n.name).string(4, n.opType);
  for (const [k, v] of Object.entries(n.attrs ?? {})) w.message(5, encodeAttr(k, v));
  return w;
}

function encodeValueInfo(v: ValueInfoSpec): PbWriter {
  const shape = new PbWriter();
  for (const d of v.shape) {
    shape.message(1, typeof d === 'number' ? new PbWriter().int(1, d) : new PbWriter().string(2, d));
  }
  const tensorType = new PbWriter().int(1, v.elemType).message(2, shape);
  return new PbWriter().string(1, v.name).message(2, new PbWriter().message(1, tensorType));
}

/** Serialises a model as protobuf chunks. */
export function encodeModel(m: ModelSpec): Uint8Array[] {
  const g = new PbWriter();
  for (const n of m.nodes) g.message(1, encodeNode(n));
  g.string(2, m.graphName);
  for (const t of m.initializers) g.message(5, encodeTensor(t));
  for (const i of m.inputs) g.message(11, encodeValueInfo(i));
  for (const o of m.outputs) g.message(12, encodeValueInfo(o));
  const w = new PbWriter();
  w.int(1, m.irVersion);
  w.string(2, m.producer);
  w.message(7, g);
  w.message(8, new PbWriter().string(1, '').int(2, m.opset));
  for (const [k, v] of Object.entries(m.metadata ?? {})) {
    w.message(14, new PbWriter().string(1, k).string(2, v));
  }
  return w.finish();
}
