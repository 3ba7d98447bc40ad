/**
 * One bound SUB socket that many publishers connect to (the engines' connect mode: "bind
 * stable, connect volatile", as llm-d's central mode runs it), its streams told apart by topic:
 * one topic per worker. Each topic's messages go to the one subscriber registered for it,
 * which keeps its own seq tracking, replay and restart detection (KVEventSubscriber).
 */
import { retryEintr } from './eintr.js';
import * as zmq from 'zeromq';
import { attach, removeIpcFile, yieldToLoop } from './endpoint.js';

export type SharedHandler = (msg: Buffer[]) => void;

export class SharedSubscriber {
  private readonly handlers = new Map<string, SharedHandler>();
  /** Messages whose topic no subscriber is registered for (a worker not in the config, a typo). */
  unknownTopic = 0;
  /** Publishers connected now. */
  peers = 0;

  private constructor(
    private readonly sub: zmq.Subscriber,
    /** The bound address (a port 0 resolved). */
    readonly endpoint: string,
  ) {
    sub.events.on('accept', () => this.peers++);
    sub.events.on('disconnect', () => (this.peers = Math.max(0, this.peers - 1)));
    void this.loop();
  }

  static async bind(endpoint: string, opts: { hwm?: number; maxMessageSize?: number } = {}): Promise<SharedSubscriber> {
    const sub = new zmq.Subscriber({ linger: 0, receiveHighWaterMark: opts.hwm ?? 100_000, maxMessageSize: opts.maxMessageSize ?? 64 * 1024 * 1024 });
    retryEintr(() => sub.subscribe());
    try {
      const actual = await attach(sub, endpoint, true);
      return new SharedSubscriber(sub, actual);
    } catch (err) {
      sub.close();
      throw err;
    }
  }

  /** Routes messages whose topic frame is exactly `topic` to `handler`; returns the unregister function. */
  register(topic: string, handler: SharedHandler): () => void {
    if (this.handlers.has(topic)) throw new Error(`topic ${JSON.stringify(topic)} already has a subscriber on ${this.endpoint}`);
    this.handlers.set(topic, handler);
    return () => {
      if (this.handlers.get(topic) === handler) this.handlers.delete(topic);
    };
  }

  close(): void {
    if (this.sub.closed) return;
    this.sub.close();
    removeIpcFile(this.endpoint);
  }

  private async loop(): Promise<void> {
    while (!this.sub.closed) {
      let msg: Buffer[];
      try {
        msg = await this.sub.receive();
      } catch {
        if (this.sub.closed) return;
        await yieldToLoop();
        continue;
      }
      const h = msg.length > 0 ? this.handlers.get(msg[0]!.toString('utf8')) : undefined;
      if (h) h(msg);
      else this.unknownTopic++;
    }
  }
}
