/**
 * CURVE on the event and replay sockets: an unauthenticated subscriber (no CURVE, or the
 * wrong server key, or a client key not on the allow-list) gets nothing, neither the live
 * stream nor replay; an authenticated one gets both.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import { connectAddressFor, parseKVEventsConfig } from '../../src/events/config.js';
import { CurveConfigSchema, curveKeyPair, curveRejections, type CurveClientOptions, type CurveServerOptions } from '../../src/events/curve.js';
import { encodeSeq } from '../../src/events/frames.js';
import { KVEventPublisher } from '../../src/events/publisher.js';
import { requestReplay } from '../../src/events/replay-client.js';
import { KVEventSubscriber } from '../../src/events/subscriber.js';
import { Collector, range } from '../helpers/collector.js';
import { batchOf } from '../helpers/events.js';
import { sleep } from '../helpers/net.js';
import { rawReplay } from '../helpers/raw.js';
import { drive, promptSet, SimWorker } from './fleet.js';
import { checkSource, exact, settle } from './invariant.js';
import { figure } from './pipeline.js';
import { PrefixIndex } from '../../src/index/index.js';

const cleanups: Array<() => unknown> = [];
const server = curveKeyPair();

async function publisher(curve: CurveServerOptions | null = { ...server }): Promise<KVEventPublisher> {
  const p = await KVEventPublisher.create({ config: parseKVEventsConfig({ endpoint: 'tcp://*:0', replay_endpoint: 'tcp://*:0' }), curve });
  cleanups.push(() => p.close(100));
  return p;
}

async function subscriber(p: KVEventPublisher, curve: CurveClientOptions | null, fromSeq: bigint | null = null): Promise<{ sub: KVEventSubscriber; got: Collector }> {
  const got = new Collector();
  const sub = new KVEventSubscriber({
    endpoint: connectAddressFor(p.endpoint),
    replayEndpoint: connectAddressFor(p.replayEndpoint!),
    replayTimeoutMs: 1000,
    fromSeq,
    curve,
    onItem: got.onItem,
  });
  await sub.start();
  cleanups.push(() => sub.close());
  return { sub, got };
}

/** Publishes n more batches, a little at a time, for `ms`. */
async function publishFor(p: KVEventPublisher, n: number, ms: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    p.publish(batchOf(Number(p.stats().nextSeq)));
    await sleep(ms / n);
  }
}

describe('CURVE on the event and replay sockets', { timeout: 115_000 }, () => {
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  test('an authenticated subscriber gets the live stream and the replay', async () => {
    const p = await publisher();
    for (let i = 0; i < 5; i++) p.publish(batchOf(i));
    await p.flush();
    const { sub, got } = await subscriber(p, { serverKey: server.publicKey }, 0n);
    await publishFor(p, 5, 1000);
    await got.waitForSeq(9n, 10_000);
    assert.deepEqual(got.seqs(), range(0, 9));
    assert.deepEqual(got.replayedSeqs().slice(0, 5), range(0, 4), 'seqs 0-4 came through the CURVE replay socket');
    assert.equal(sub.health().trusted, true);
  });

  test('no CURVE, a wrong server key: nothing on the stream, nothing from replay', async () => {
    const p = await publisher();
    for (let i = 0; i < 5; i++) p.publish(batchOf(i));
    await p.flush();
    const plain = await subscriber(p, null, 0n);
    const wrong = await subscriber(p, { serverKey: curveKeyPair().publicKey }, 0n);
    const good = await subscriber(p, { serverKey: server.publicKey });
    await publishFor(p, 20, 1500);
    await good.got.waitForSeq(24n, 10_000);
    await sleep(1500); // replay timeouts
    for (const s of [plain, wrong]) {
      assert.deepEqual(s.got.seqs(), [], 'no batch, live or replayed');
      assert.equal(s.sub.health().batches, 0);
      assert.equal(s.sub.health().trusted, false);
    }
    const raw = await rawReplay(connectAddressFor(p.replayEndpoint!), ['', encodeSeq(0n)], 1000);
    assert.deepEqual(raw.replies, [], 'a plain DEALER gets no replay');
    figure({ kind: 'fault', fault: 'CURVE: unauthenticated subscribers', divergent: 0, recoverMs: null, outcome: 'got nothing' });
  });

  test('allow-list: a client key not listed gets nothing; a listed one gets stream and replay', async () => {
    const allowed = curveKeyPair();
    const stranger = curveKeyPair();
    const rejected0 = curveRejections();
    const p = await publisher({ ...server, allowedClients: [allowed.publicKey] });
    for (let i = 0; i < 3; i++) p.publish(batchOf(i));
    await p.flush();
    const ok = await subscriber(p, { serverKey: server.publicKey, ...allowed }, 0n);
    const no = await subscriber(p, { serverKey: server.publicKey, ...stranger }, 0n);
    await publishFor(p, 10, 1000);
    await ok.got.waitForSeq(12n, 10_000);
    await sleep(1500);
    assert.deepEqual(ok.got.seqs(), range(0, 12));
    assert.deepEqual(no.got.seqs(), []);
    assert.ok(curveRejections() > rejected0, 'the ZAP handler refused the stranger');
    const direct = await requestReplay(connectAddressFor(p.replayEndpoint!), 0n, { timeoutMs: 1000, curve: { serverKey: server.publicKey, ...stranger } });
    assert.equal(direct.batches.length, 0);
  });

  test('keys from config: the kv-events config carries them; bad keys are rejected readably', async () => {
    const cfg = parseKVEventsConfig({ endpoint: 'tcp://*:0', replay_endpoint: 'tcp://*:0', curve: { server_public_key: server.publicKey, server_secret_key: server.secretKey } });
    const p = await KVEventPublisher.create({ config: cfg });
    cleanups.push(() => p.close(100));
    const { got } = await subscriber(p, { serverKey: server.publicKey });
    await publishFor(p, 5, 500);
    await got.waitForSeq(4n, 10_000);
    assert.throws(() => parseKVEventsConfig({ curve: { server_public_key: 'short' } }), /curve\.server_public_key: a CURVE key is 40 Z85 characters/);
    assert.equal(CurveConfigSchema.safeParse({ server_public_key: server.publicKey, bogus: 1 }).success, false);
  });

  test('a sim worker with CURVE keys in --kv-events-config: a keyed subscriber rebuilds its cache exactly, a plain one gets nothing', async () => {
    const w = await SimWorker.prepare('curve', { numBlocks: 32 });
    const curve = { server_public_key: server.publicKey, server_secret_key: server.secretKey };
    w.opts.extraArgs.push('--kv-events-config', JSON.stringify({ endpoint: `tcp://*:${w.pubPort}`, replay_endpoint: `tcp://*:${w.replayPort}`, topic: 'kv', curve }));
    await w.launch();
    cleanups.push(() => w.stop());
    const index = new PrefixIndex();
    index.addSource('curve');
    let trusted = false;
    const keyed = new KVEventSubscriber({
      endpoint: w.endpoint,
      replayEndpoint: w.replayEndpoint,
      topic: 'kv',
      curve: { serverKey: server.publicKey },
      onItem: (item) => {
        if (item.kind === 'batch') index.applyBatch('curve', item.batch);
        else if (item.kind === 'notice' && (item.notice.notice === 'reset' || item.notice.notice === 'history_missing')) index.clearSource('curve');
      },
    });
    await keyed.start();
    cleanups.push(() => keyed.close());
    const plain = await subscriberAt(w.endpoint, w.replayEndpoint);
    await drive(w, promptSet(42, 6));
    const { check } = await settle(() => checkSource('curve', w.url, () => ({ trusted: (trusted = keyed.health().trusted), dump: index.dump('curve') })), { want: exact });
    assert.ok(check.workerBlocks > 0 && trusted);
    await sleep(1500);
    assert.equal(plain.sub.health().batches, 0, 'no CURVE: nothing');
  });
});

async function subscriberAt(endpoint: string, replayEndpoint: string): Promise<{ sub: KVEventSubscriber; got: Collector }> {
  const got = new Collector();
  const sub = new KVEventSubscriber({ endpoint, replayEndpoint, replayTimeoutMs: 1000, onItem: got.onItem });
  await sub.start();
  cleanups.push(() => sub.close());
  return { sub, got };
}
