/**
 * A replay endpoint in front of a real one, for tests: forwards each request to the
 * upstream ROUTER and passes the replies back, except those a rule drops or corrupts.
 */
import * as zmq from 'zeromq';
import { decodeSeq } from '../../src/events/frames.js';

export type ReplayProxyAction = 'pass' | 'drop' | 'corrupt';

export class ReplayProxy {
  /** Decides the fate of each reply by its seq (-1 for the end marker). */
  rule: (seq: bigint) => ReplayProxyAction = () => 'pass';
  requests: bigint[] = [];

  private constructor(
    private readonly front: zmq.Router,
    private readonly upstream: string,
    readonly endpoint: string,
  ) {
    void this.serve();
  }

  static async create(upstream: string): Promise<ReplayProxy> {
    const front = new zmq.Router({ linger: 0 });
    await front.bind('tcp://127.0.0.1:0');
    return new ReplayProxy(front, upstream, front.lastEndpoint!);
  }

  close(): void {
    this.front.close();
  }

  private async serve(): Promise<void> {
    while (!this.front.closed) {
      let req: Buffer[];
      try {
        req = await this.front.receive();
      } catch {
        continue;
      }
      const [id, ...rest] = req;
      if (rest[1]?.length === 8) this.requests.push(decodeSeq(rest[1]));
      await this.forward(id!, rest);
    }
  }

  private async forward(id: Buffer, request: Buffer[]): Promise<void> {
    const d = new zmq.Dealer({ linger: 0, receiveTimeout: 5000 });
    d.connect(this.upstream);
    try {
      await d.send(request);
      for (;;) {
        const msg = await d.receive();
        const seq = decodeSeq(msg[msg.length - 2]!);
        const action = this.rule(seq);
        if (action === 'corrupt') msg[msg.length - 1] = Buffer.from([0xc1, 0xc1, 0xc1]);
        if (action !== 'drop') await this.front.send([id, ...msg]);
        if (seq === -1n) return;
      }
    } catch {
      // upstream silent: so are we
    } finally {
      d.close();
    }
  }
}
