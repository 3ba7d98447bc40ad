/**
 * Interop: our KVEventPublisher is consumed by a Python subscriber
 * (test/python/subscriber.py) that decodes every payload with msgspec's strict
 * typed decoder into vLLM's structs. It joins late and asks for a replay from
 * 0, so both the replay path (both reply shapes) and the live path carry
 * batches that vLLM's own types must accept, in both event encodings.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { batchFromJson, batchToJson } from '../../src/cli/format.js';
import { parseKVEventsConfig } from '../../src/events/config.js';
import { KVEventPublisher } from '../../src/events/publisher.js';
import type { KVEventBatch } from '../../src/events/types.js';
import { Child, findPython, PY_DIR, ROOT, skipLoudly, tempDir } from './child.js';

const py = findPython();
const children: Child[] = [];
after(async () => {
  await Promise.all(children.map((c) => c.stop()));
});

// The golden fixtures' batches: every hash kind and every optional field.
const FIXTURES = join(ROOT, 'test', 'fixtures', 'codec');
const BATCHES: KVEventBatch[] = readdirSync(FIXTURES)
  .filter((f) => f.endsWith('.json'))
  .sort()
  .map((f) => batchFromJson(JSON.parse(readFileSync(join(FIXTURES, f), 'utf8')).batch));

/** The fields an array-era vLLM struct has; the extra trailing elements we send are ignored by msgspec. */
const LEGACY_FIELDS: Record<string, string[]> = {
  BlockStored: ['type', 'block_hashes', 'parent_block_hash', 'token_ids', 'block_size', 'lora_id', 'medium', 'lora_name'],
  BlockRemoved: ['type', 'block_hashes', 'medium'],
  AllBlocksCleared: ['type'],
};

function expectedJson(b: KVEventBatch, encoding: 'map' | 'array', rank: number) {
  const j = batchToJson({ ...b, dp_rank: rank });
  if (encoding === 'array')
    j.events = j.events.map((e) => Object.fromEntries(Object.entries(e).filter(([k]) => LEGACY_FIELDS[e.type as string]!.includes(k))));
  return j;
}

const COMBOS = [
  ['map', 'current'],
  ['map', 'legacy'],
  ['array', 'current'],
  ['array', 'legacy'],
] as const;

for (const [encoding, shape] of COMBOS) {
  test(`a Python subscriber with vLLM's structs reads our publisher (${encoding} events, ${shape} replay)`, { timeout: 30_000 }, async (t) => {
    if ('skip' in py) return skipLoudly(t, py.skip);
    const tmp = tempDir();
    const config = parseKVEventsConfig({ endpoint: `ipc://${tmp.dir}/pub`, replay_endpoint: `ipc://${tmp.dir}/replay`, topic: 'kv-events' });
    const pub = await KVEventPublisher.create({ config, dpRank: 2, replayShape: shape, encoding });
    try {
      const early = 5;
      for (const b of BATCHES.slice(0, early)) pub.publish(b.events, b.ts);
      await pub.flush();

      const sub = new Child(py.python, [
        `${PY_DIR}/subscriber.py`, '--endpoint', pub.endpoint, '--replay-endpoint', pub.replayEndpoint!,
        '--encoding', encoding, '--from-seq', '0', '--count', String(BATCHES.length), '--max-seconds', '20',
      ]);
      children.push(sub);
      await sub.waitFor((o) => o.replay_done === true, 15_000, 'the Python subscriber to finish its replay');
      for (const b of BATCHES.slice(early)) pub.publish(b.events, b.ts);
      await pub.flush();

      const exit = await sub.waitExit(20_000);
      assert.equal(exit.code, 0, sub.diag());
      const got = sub.json().filter((o) => 'seq' in o);
      assert.deepEqual(got.map((o) => o.seq), [...BATCHES.keys()], 'every seq once, in order');
      got.forEach((o, i) => {
        assert.equal(o.source, i < early ? 'replay' : 'live', `batch #${i} source`);
        assert.deepEqual(o.batch, expectedJson(BATCHES[i]!, encoding, 2), `batch #${i} as msgspec decoded it`);
        if (shape === 'current' || o.source === 'live') assert.equal(o.topic, 'kv-events');
      });
      assert.equal(pub.stats().malformedReplayRequests, 0);
    } finally {
      await pub.close();
      tmp.remove();
    }
  });
}
