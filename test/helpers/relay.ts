/**
 * A frame-level relay between a PUB and a SUB, for recovery tests: it can drop,
 * duplicate, or hold back (and later release, i.e. reorder) chosen messages,
 * and inject arbitrary ones.
 */
import * as zmq from 'zeromq';
import { decodeSeq } from '../../src/events/frames.js';
import { sleep } from './net.js';

export type RelayAction = 'pass' | 'drop' | 'dup' | 'hold';

/** Decides the fate of the index-th message (0-based); seq is null when frame 1 is not 8 bytes. */
export type RelayRule = (seq: bigint | null, index: number, frames: Buffer[]) => RelayAction;

export class FrameRelay {
  rule: RelayRule = () => 'pass';
  /** Messages received from upstream. */
  received = 0;
  /** Times the upstream SUB (re)connected to the publisher. */
  upstreamConnects = 0;
  private held: Buffer[][] = [];
  private subscribed = false;
  private chain: Promise<void> = Promise.resolve();

  private constructor(
    private readonly up: zmq.Subscriber,
    private readonly down: zmq.XPublisher,
    /** Where subscribers connect. */
    readonly endpoint: string,
  ) {
    this.upstreamConnects = 1;
    up.events.on('connect', () => this.upstreamConnects++);
    void this.pumpUp();
    void this.pumpSubscriptions();
  }

  /** Connects to the publisher at `upstream` (a connect address) and binds a loopback port. */
  static async create(upstream: string): Promise<FrameRelay> {
    const up = new zmq.Subscriber({ linger: 0, receiveHighWaterMark: 0 });
    const down = new zmq.XPublisher({ linger: 0, sendHighWaterMark: 0 });
    const connected = new Promise<void>((resolve) => up.events.on('connect', () => resolve()));
    up.subscribe();
    up.connect(upstream);
    await down.bind('tcp://127.0.0.1:0');
    await connected;
    await sleep(50); // let our subscription reach the publisher
    return new FrameRelay(up, down, down.lastEndpoint!);
  }

  /** Resolves once a downstream SUB has subscribed. */
  async waitForSubscriber(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.subscribed) {
      if (Date.now() > deadline) throw new Error('no subscriber reached the relay');
      await sleep(5);
    }
  }

  /** Forwards every held message, in the order they arrived. */
  release(): Promise<void> {
    const held = this.held;
    this.held = [];
    for (const m of held) this.forward(m);
    return this.chain;
  }

  /** Sends arbitrary frames downstream, in order with relayed traffic. */
  inject(frames: Array<Buffer | string>): Promise<void> {
    this.forward(frames.map((f) => (typeof f === 'string' ? Buffer.from(f) : f)));
    return this.chain;
  }

  get heldCount(): number {
    return this.held.length;
  }

  close(): void {
    this.up.close();
    this.down.close();
  }

  private forward(frames: Buffer[]): void {
    this.chain = this.chain.then(() => this.down.send(frames)).catch(() => {});
  }

  private async pumpUp(): Promise<void> {
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await this.up.receive();
      } catch {
        return;
      }
      const index = this.received++;
      let seq: bigint | null = null;
      if (frames[1]?.length === 8) seq = decodeSeq(frames[1]);
      const action = this.rule(seq, index, frames);
      if (action === 'pass') this.forward(frames);
      else if (action === 'dup') {
        this.forward(frames);
        this.forward(frames);
      } else if (action === 'hold') this.held.push(frames);
    }
  }

  private async pumpSubscriptions(): Promise<void> {
    for (;;) {
      try {
        const [msg] = await this.down.receive();
        if (msg?.[0] === 1) this.subscribed = true;
      } catch {
        return;
      }
    }
  }
}
