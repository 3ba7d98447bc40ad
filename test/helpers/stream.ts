/** Wires publisher → FrameRelay → subscriber on loopback for stream tests; cleans up after. */
import { connectAddressFor, parseKVEventsConfig, type KVEventsConfig } from '../../src/events/config.js';
import { KVEventPublisher, type PublisherOptions } from '../../src/events/publisher.js';
import { KVEventSubscriber, type SubscriberOptions } from '../../src/events/subscriber.js';
import { Collector } from './collector.js';
import { FrameRelay } from './relay.js';

export interface Rig {
  pub: KVEventPublisher;
  relay: FrameRelay;
  sub: KVEventSubscriber;
  got: Collector;
  close(): Promise<void>;
}

export interface RigOptions {
  config?: Partial<KVEventsConfig>;
  publisher?: Omit<PublisherOptions, 'config'>;
  /** Default: the publisher's replay endpoint. */
  subscriber?: Partial<Omit<SubscriberOptions, 'endpoint' | 'onItem'>>;
  /** Wait for the subscriber before returning (default true). */
  waitForSubscriber?: boolean;
}

export async function rig(opts: RigOptions = {}): Promise<Rig> {
  const config = parseKVEventsConfig({ endpoint: 'tcp://*:0', replay_endpoint: 'tcp://*:0', ...opts.config });
  const pub = await KVEventPublisher.create({ config, ...opts.publisher });
  const relay = await FrameRelay.create(connectAddressFor(pub.endpoint));
  const got = new Collector();
  const replayEndpoint = pub.replayEndpoint === null ? null : connectAddressFor(pub.replayEndpoint);
  const sub = new KVEventSubscriber({ endpoint: relay.endpoint, replayEndpoint, replayTimeoutMs: 5000, ...opts.subscriber, onItem: got.onItem });
  await sub.start();
  if (opts.waitForSubscriber !== false) await relay.waitForSubscriber();
  return {
    pub,
    relay,
    sub,
    got,
    async close() {
      await sub.close();
      relay.close();
      await pub.close(100);
    },
  };
}
