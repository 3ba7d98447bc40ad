/**
 * The router in connect mode (`events_bind`): it binds one SUB, real publishers connect to it with
 * one topic per worker, and each worker's tree is rebuilt from its own stream (late joins replayed
 * from that worker's own replay endpoint). A second worker with the same topic is refused.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { connectAddressFor, parseKVEventsConfig } from '../../src/events/config.js';
import { KVEventPublisher } from '../../src/events/publisher.js';
import { batchOf } from '../helpers/events.js';
import { fakeUpstream, freePort, routerWith, waitUntil } from './helpers.js';

const closers: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const c of closers.reverse()) await c();
});

async function publisher(routerPort: number, topic: string): Promise<KVEventPublisher> {
  // A named host: the PUB connects to the router; the replay socket binds, as the engines do.
  const p = await KVEventPublisher.create({ config: parseKVEventsConfig({ endpoint: `tcp://127.0.0.1:${routerPort}`, replay_endpoint: 'tcp://127.0.0.1:0', topic }) });
  closers.push(() => p.close(100));
  return p;
}

describe('kv-router with events_bind', { timeout: 30_000 }, () => {
  test('two workers publish into the router\'s bound SUB: each tree holds exactly its own blocks; a duplicate topic is a 400', async () => {
    const port = await freePort();
    const upstream = await fakeUpstream((_req, res) => res.end('{}'));
    closers.push(() => upstream.close());
    const a = await publisher(port, 'w-a');
    const b = await publisher(port, 'w-b');
    // Published before the router exists: only each replay buffer has them (a late join).
    for (let i = 0; i < 3; i++) a.publish(batchOf(i));
    for (let i = 100; i < 105; i++) b.publish(batchOf(i));
    await Promise.all([a.flush(), b.flush()]);
    const bind = `tcp://127.0.0.1:${port}`;
    const worker = (id: string, p: KVEventPublisher, topic: string) => ({
      id,
      url: upstream.url,
      kv_events: { endpoint: bind, replay_endpoint: connectAddressFor(p.replayEndpoint!), topic },
    });
    const r = await routerWith({ events_bind: bind, workers: [worker('a', a, 'w-a'), worker('b', b, 'w-b')] });
    closers.push(() => r.close());
    const blocks = (s: string) => r.service.index.stats(s).blocks;
    // Live batches over the connected PUB sockets (told apart by topic) until each stream has caught
    // up through its own replay endpoint: a PUB drops what it sends before its connection is up.
    let ia = 3;
    let ib = 105;
    await waitUntil('both streams caught up', 15_000, () => {
      a.publish(batchOf(ia++));
      b.publish(batchOf(ib++));
      return blocks('a:0') >= 6 && blocks('b:0') >= 8;
    }, 100);
    await waitUntil('every batch applied', 10_000, () => blocks('a:0') === ia && blocks('b:0') === ib - 100);
    const health = (id: string) => r.service.registry.get(id)!.streams.get(0)!.health();
    assert.equal(health('a').trusted, true);
    assert.equal(health('b').lastSeq, String(ib - 100 - 1));
    assert.ok(health('a').replays + health('a').probeFinds >= 1, 'a\'s late join replayed from its own endpoint');
    const res = await fetch(`${r.url}/workers`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(worker('c', a, 'w-a')),
    });
    assert.equal(res.status, 400);
    assert.match(((await res.json()) as { error: { message: string } }).error.message, /topic "w-a" is already worker "a"'s/);
    assert.equal(r.service.registry.get('c'), undefined);
  });
});
