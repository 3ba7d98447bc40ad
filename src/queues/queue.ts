/**
 * Typed one-way queues over ZeroMQ PUSH/PULL with msgpackr messages.
 * The receiving side binds (it owns its inbox); senders connect, so start order does not matter.
 */
import { Packr } from 'msgpackr';
import { Pull, Push } from 'zeromq';
import { removeIpcFile } from './ipc.js';

// Plain MessagePack (no records/extensions): both ends are ours, but keep payloads inspectable.
const packr = new Packr({ useRecords: false, moreTypes: false, int64AsType: 'bigint' });

export class PushQueue<T> {
  private tail: Promise<void> = Promise.resolve();
  private closed = false;

  private constructor(private readonly sock: Push) {}

  static connect<T>(endpoint: string): PushQueue<T> {
    const sock = new Push({ linger: 0, sendHighWaterMark: 0 });
    sock.connect(endpoint);
    return new PushQueue<T>(sock);
  }

  /**
   * Queues a message; zeromq.js allows one send in flight, so sends are chained in order.
   * After close() messages are dropped silently (shutdown is under way).
   */
  send(msg: T): Promise<void> {
    if (this.closed) return Promise.resolve();
    const buf = packr.pack(msg);
    const p = this.tail.then(() => this.sock.send(buf)).catch((err: unknown) => {
      if (!this.closed) throw err;
    });
    this.tail = p.catch(() => undefined);
    return p;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.sock.close();
  }
}

export class PullQueue<T> {
  private closed = false;

  private constructor(
    private readonly sock: Pull,
    readonly endpoint: string,
  ) {}

  static async bind<T>(endpoint: string): Promise<PullQueue<T>> {
    const sock = new Pull({ linger: 0, receiveHighWaterMark: 0 });
    await sock.bind(endpoint);
    return new PullQueue<T>(sock, endpoint);
  }

  /** Messages until close(); ends quietly when the queue is closed. */
  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    while (!this.closed) {
      let frames: Buffer[];
      try {
        frames = await this.sock.receive();
      } catch (err) {
        if (this.closed || (err as { code?: string }).code === 'EAGAIN') return;
        throw err;
      }
      yield packr.unpack(frames[0]!) as T;
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.sock.close();
    removeIpcFile(this.endpoint);
  }
}
