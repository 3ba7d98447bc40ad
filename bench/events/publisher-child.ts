/**
 * The publisher side of the subscriber benchmark (bench/events.bench.ts), in its own process:
 * a real KVEventPublisher on the endpoints of its config, driven over the IPC channel of fork().
 * It exits when the channel closes (the bench died or exited), so it never outlives the bench.
 *
 *   argv[2]: kv-events config JSON
 *   → { ready: true, endpoint, replayEndpoint }
 *   ← { cmd: 'prepare', batches, perBatch, tokens }  builds the batches (not timed) → { prepared: true }
 *   ← { cmd: 'publish', marker? }  publishes them as fast as the publisher takes them, waits until
 *                                  ZeroMQ has them all, writes the marker file → { published, seconds }
 *   ← { cmd: 'exit' }
 *
 * Batches: `perBatch` BlockStored of one block each (`tokens` token ids, one u64 hash ≥ 2^63, as
 * vLLM sends), chained within the batch (event k's parent is event k-1's hash; event 0 starts a
 * chain), every hash and every chain distinct, so the index stores a new block for every event.
 */
import { writeFileSync } from 'node:fs';
import { parseKVEventsConfig } from '../../src/events/config.js';
import { KVEventPublisher, QueueFullError } from '../../src/events/publisher.js';
import type { BlockStored, KVEvent } from '../../src/events/types.js';
import { watchParent } from '../../src/proc/parent.js';

watchParent(() => process.exit(0));
if (!process.send) throw new Error('publisher-child: start me with fork()');
const send = (m: unknown) => process.send!(m);

const pub = await KVEventPublisher.create({ config: parseKVEventsConfig(process.argv[2] ?? '{}'), dpRank: 0 });
let batches: KVEvent[][] = [];
let runs = 0;

/** Deterministic token ids (an LCG), so every run publishes the same bytes. */
function tokenIds(seed: number, n: number): number[] {
  let x = (seed * 2654435761) >>> 0;
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    out[i] = x % 151_000;
  }
  return out;
}

function prepare(n: number, perBatch: number, tokens: number): void {
  // Later blocks of a chain reuse a pool of token lists: their keys differ through the parent.
  const pool = Array.from({ length: 1024 }, (_, i) => tokenIds(1_000_000 + i, tokens));
  const base = 0x9000000000000000n + BigInt(runs++) * 0x100000000n;
  batches = new Array(n);
  for (let b = 0; b < n; b++) {
    const events: BlockStored[] = new Array(perBatch);
    let parent: bigint | null = null;
    for (let k = 0; k < perBatch; k++) {
      const h = base + BigInt(b * perBatch + k);
      events[k] = {
        type: 'BlockStored', block_hashes: [h], parent_block_hash: parent,
        token_ids: k === 0 ? tokenIds(b, tokens) : pool[(b * 31 + k) & 1023]!,
        block_size: tokens, lora_id: null, medium: 'GPU', lora_name: null,
      };
      parent = h;
    }
    batches[b] = events;
  }
}

async function publishAll(): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < batches.length; i++) {
    try {
      pub.publish(batches[i]!);
    } catch (err) {
      if (!(err instanceof QueueFullError)) throw err;
      throw new Error('publisher-child: queue full (raise max_queue_size)');
    }
    // Let the pump hand batches to ZeroMQ as we go, as an engine's loop would.
    if (i % 256 === 255) await new Promise((r) => setImmediate(r));
  }
  await pub.flush();
  return (performance.now() - t0) / 1000;
}

process.on('message', (m: { cmd: string; batches?: number; perBatch?: number; tokens?: number; marker?: string }) => {
  void (async () => {
    if (m.cmd === 'prepare') {
      prepare(m.batches!, m.perBatch!, m.tokens!);
      send({ prepared: true });
    } else if (m.cmd === 'publish') {
      const seconds = await publishAll();
      if (m.marker) writeFileSync(m.marker, String(pub.nextSeq));
      send({ published: Number(pub.nextSeq), seconds });
    } else if (m.cmd === 'exit') {
      await pub.close(200);
      process.exit(0);
    }
  })().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
});
send({ ready: true, endpoint: pub.endpoint, replayEndpoint: pub.replayEndpoint });
