/**
 * Interop: a Python publisher written with msgspec + pyzmq and vLLM's structs
 * (test/python/publisher.py) is consumed by our KVEventSubscriber and by
 * `kv-events tail --json`, in both event encodings and both replay reply
 * shapes, joining late: the history before the join must come back by replay,
 * in order, with every hash exact.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { batchToJson } from '../../src/cli/format.js';
import { KVEventSubscriber, type StreamItem } from '../../src/events/subscriber.js';
import { Child, findPython, KV_EVENTS_BIN, PY_DIR, skipLoudly, until } from './child.js';

const py = findPython();
const children: Child[] = [];
after(async () => {
  await Promise.all(children.map((c) => c.stop()));
});

type Expected = Map<number, Record<string, unknown>>;

async function startPublisher(python: string, encoding: 'map' | 'array', shape: 'current' | 'legacy') {
  const pub = new Child(python, [`${PY_DIR}/publisher.py`, '--encoding', encoding, '--replay-shape', shape, '--max-seconds', '40']);
  children.push(pub);
  const ready = await pub.waitFor((o) => o.ready === true, 15_000, 'the Python publisher to be ready');
  let published = 0;
  const publish = async (n: number) => {
    const before = published;
    pub.send(`publish ${n}`);
    published += n;
    await pub.waitFor((o) => o.seq === published - 1, 5000, `Python to publish seqs ${before}..${published - 1}`);
  };
  const expected = (): Expected => new Map(pub.json().filter((o) => 'batch' in o).map((o) => [o.seq as number, o.batch]));
  return { pub, endpoint: ready.endpoint as string, replay: ready.replay_endpoint as string, publish, expected };
}

const COMBOS = [
  ['map', 'current'],
  ['map', 'legacy'],
  ['array', 'current'],
  ['array', 'legacy'],
] as const;

for (const [encoding, shape] of COMBOS) {
  test(`our subscriber follows a Python publisher (${encoding} events, ${shape} replay) after a late join`, { timeout: 30_000 }, async (t) => {
    if ('skip' in py) return skipLoudly(t, py.skip);
    const p = await startPublisher(py.python, encoding, shape);
    await p.publish(5); // before anyone listens: only a replay can bring these back

    const items: StreamItem[] = [];
    const sub = new KVEventSubscriber({ endpoint: p.endpoint, replayEndpoint: p.replay, onItem: (i) => items.push(i) });
    await sub.start();
    try {
      const batches = () => items.filter((i) => i.kind === 'batch');
      // Publish one at a time until the subscription is live (slow-joiner), then three more.
      let last = Date.now();
      await until(() => batches().some((b) => !b.replayed), 10_000, 'a live batch', () => {
        if (Date.now() - last > 250) (last = Date.now()), void p.publish(1);
      });
      await p.publish(3);
      const total = p.expected().size;
      await until(() => batches().length === total, 10_000, `all ${total} batches`);

      const expected = p.expected();
      const got = batches();
      assert.deepEqual(got.map((b) => Number(b.seq)), [...Array(total).keys()], 'every seq once, in order');
      for (const b of got) assert.deepEqual(batchToJson(b.batch), expected.get(Number(b.seq)), `batch #${b.seq}`);
      assert.ok(got.slice(0, 5).every((b) => b.replayed), 'the history before the join came by replay');
      for (const b of got.filter((b) => !b.replayed)) assert.equal(b.topic, 'kv-events');
      if (shape === 'current') for (const b of got) assert.equal(b.topic, 'kv-events');
      const notices = items.filter((i) => i.kind === 'notice').map((i) => i.notice);
      assert.ok(notices.some((n) => n.notice === 'replay' && n.from === 0n), 'a replay from 0');
      assert.ok(!notices.some((n) => n.notice === 'history_missing' || n.notice === 'reset'), JSON.stringify(notices, (_k, v) => (typeof v === 'bigint' ? `${v}` : v)));
      const h = sub.health();
      assert.equal(h.malformedFrames, 0);
      assert.equal(h.trusted, true);
    } finally {
      await sub.close();
      p.pub.send('quit');
      await p.pub.stop();
    }
  });
}

for (const [encoding, shape] of [COMBOS[0], COMBOS[3]]) {
  test(`kv-events tail --json follows a Python publisher (${encoding} events, ${shape} replay) after a late join`, { timeout: 30_000 }, async (t) => {
    if ('skip' in py) return skipLoudly(t, py.skip);
    const p = await startPublisher(py.python, encoding, shape);
    await p.publish(5);

    // --from-seq 0: the history is asked for (without it, tail shows only what is new).
    const tail = new Child(process.execPath, [KV_EVENTS_BIN, 'tail', p.endpoint, '--replay', p.replay, '--from-seq', '0', '--json', '--count', '8']);
    children.push(tail);
    try {
      let last = Date.now();
      // Keep publishing (bounded) until tail has its 8 batches and exits.
      await until(() => tail.exit !== null, 20_000, `tail to print 8 batches and exit${tail.diag()}`, () => {
        if (Date.now() - last > 250 && p.expected().size < 60) (last = Date.now()), void p.publish(1);
      });
      assert.equal(tail.exit!.code, 0, tail.diag());
      const out = tail.json();
      const batches = out.filter((o) => 'seq' in o);
      assert.deepEqual(batches.map((b) => b.seq), [0, 1, 2, 3, 4, 5, 6, 7]);
      const expected = p.expected();
      for (const b of batches) {
        assert.deepEqual({ ts: b.ts, dp_rank: b.dp_rank, events: b.events }, expected.get(b.seq), `batch #${b.seq}`);
        assert.deepEqual(Object.keys(b).slice(0, 5), ['seq', 'ts', 'dp_rank', 'topic', 'events']);
      }
      assert.ok(batches.slice(0, 5).every((b) => b.replayed === true));
      assert.ok(!out.some((o) => o.notice === 'history_missing'));
    } finally {
      await tail.stop();
      p.pub.send('quit');
      await p.pub.stop();
    }
  });
}
