import { K_HI, K_LO, P_HI, P_LO, type NodeStore } from './node-store.js';
import type { SourceState } from './source-state.js';

export interface DumpNode {
  /** The block's 64-bit token key, hex. */
  key: string;
  /**
   * Engine hashes naming this block as decimal strings, the form of the worker's GET /cache and
   * `kv-events tail --json`: an engine's integer hash as it published it when it is unsigned
   * 64-bit (vLLM, SGLang, our worker); the index keeps 64 bits, so a negative one shows mod 2^64
   * and a bytes hash as the decimal of its 64-bit digest.
   */
  hashes: string[];
  media: string[];
  provisional?: true;
  children: DumpNode[];
}

export interface SourceDump {
  source: string;
  blockSize: number | null;
  blocks: number;
  nodes: number;
  provisionalBlocks: number;
  /** Blocks whose parent the source holds hang under it; the others are roots. */
  roots: DumpNode[];
}

export function dumpSource(s: SourceState, ns: NodeStore, mediumNames: readonly string[]): SourceDump {
  const byNode = new Map<number, DumpNode>();
  const get = (n: number): DumpNode => {
    let d = byNode.get(n);
    if (d === undefined) {
      const r = n * ns.stride;
      d = { key: hex(ns.rec[r + K_HI], ns.rec[r + K_LO]), hashes: [], media: [], children: [] };
      byNode.set(n, d);
    }
    return d;
  };
  for (const [lo, hi, n, media] of s.entries()) {
    const d = get(n);
    d.hashes.push(((BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0)).toString(10));
    for (let m = 0; m < mediumNames.length; m++) {
      if ((media & (1 << m)) !== 0 && !d.media.includes(mediumNames[m])) d.media.push(mediumNames[m]);
    }
  }
  for (const n of s.prov.keys()) get(n).provisional = true;
  const roots: DumpNode[] = [];
  for (const [n, d] of byNode) {
    const p = ns.find(ns.rec[n * ns.stride + P_LO], ns.rec[n * ns.stride + P_HI]);
    const parent = p >= 0 ? byNode.get(p) : undefined;
    (parent ?? { children: roots }).children.push(d);
  }
  return {
    source: s.id,
    blockSize: s.blockSize,
    blocks: s.blocks,
    nodes: s.realNodes,
    provisionalBlocks: s.prov.size,
    roots,
  };
}

function hex(hi: number, lo: number): string {
  return hi.toString(16).padStart(8, '0') + lo.toString(16).padStart(8, '0');
}
