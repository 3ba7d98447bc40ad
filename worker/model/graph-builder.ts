import { DataType, type AttrValue, type NodeSpec, type TensorSpec } from './onnx-proto.js';

/** Collects nodes and initializers; every op gets a fresh output name unless one is given. */
export class GraphBuilder {
  readonly nodes: NodeSpec[] = [];
  readonly initializers: TensorSpec[] = [];
  private n = 0;

  op(opType: string, inputs: string[], attrs?: Record<string, AttrValue>, output?: string): string {
    const name = `${opType}_${this.n++}`;
    const out = output ?? `${name}_out`;
    this.nodes.push({ opType, inputs, outputs: [out], name, attrs });
    return out;
  }

  f32(name: string, dims: number[], data: Float32Array): string {
    this.initializers.push({ name, dims, dataType: DataType.FLOAT, raw: bytesOf(data) });
    return name;
  }

  i64(name: string, dims: number[], values: number[]): string {
    const data = BigInt64Array.from(values.map((v) => BigInt(v)));
    this.initializers.push({ name, dims, dataType: DataType.INT64, raw: bytesOf(data) });
    return name;
  }
}

function bytesOf(a: Float32Array | BigInt64Array): Uint8Array {
  // Typed arrays are little-endian on every platform onnxruntime-node ships for, as ONNX raw_data requires.
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}
