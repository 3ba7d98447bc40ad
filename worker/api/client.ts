/**
 * The API process's side of the pipeline: sends requests to the scheduler, routes the
 * detokenizer's outputs back to the request that waits for them, and answers control calls.
 */
import { PullQueue, PushQueue } from '../../src/queues/index.js';
import type { ApiInMsg, CtlOp, CtlResult, GenerateRequest, SchedulerInMsg, TextOutput } from '../messages.js';

export class PipelineClient {
  private readonly handlers = new Map<string, (o: TextOutput) => void>();
  private readonly ctls = new Map<number, (r: CtlResult) => void>();
  private nextCtl = 1;
  private closed = false;

  private constructor(
    private readonly toScheduler: PushQueue<SchedulerInMsg>,
    private readonly inbox: PullQueue<ApiInMsg>,
  ) {}

  static async open(schedulerEndpoint: string, apiEndpoint: string): Promise<PipelineClient> {
    const inbox = await PullQueue.bind<ApiInMsg>(apiEndpoint);
    const c = new PipelineClient(PushQueue.connect<SchedulerInMsg>(schedulerEndpoint), inbox);
    void c.receive();
    return c;
  }

  /** Requests sent and not finished yet (running or waiting in the scheduler). */
  get inFlight(): number {
    return this.handlers.size;
  }

  /** Starts a request; `onOutput` gets every output, the last one with `finish` set. */
  submit(req: GenerateRequest, onOutput: (o: TextOutput) => void): void {
    this.handlers.set(req.rid, onOutput);
    void this.toScheduler.send({ type: 'add', req });
  }

  /** Stops a request (client gone, or a stop string found); no more outputs are delivered for it. */
  abort(rid: string): void {
    this.handlers.delete(rid);
    void this.toScheduler.send({ type: 'abort', rid });
  }

  ctl<T extends CtlOp>(op: T, timeoutMs = 30_000): Promise<Extract<CtlResult, { op: T }>> {
    const id = this.nextCtl++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.ctls.delete(id);
        reject(new Error(`scheduler did not answer ${op} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.ctls.set(id, (r) => {
        clearTimeout(timer);
        resolve(r as Extract<CtlResult, { op: T }>);
      });
      void this.toScheduler.send({ type: 'ctl', id, op });
    });
  }

  close(): void {
    this.closed = true;
    this.toScheduler.close();
    this.inbox.close();
  }

  private async receive(): Promise<void> {
    for await (const msg of this.inbox) {
      if (msg.type === 'ctl') {
        this.ctls.get(msg.id)?.(msg.result);
        this.ctls.delete(msg.id);
        continue;
      }
      for (const o of msg.outs) {
        const h = this.handlers.get(o.rid);
        if (!h) continue;
        if (o.finish !== null) this.handlers.delete(o.rid);
        // The scheduler does not know about stop strings: tell it the request is over.
        if (o.stoppedByString) void this.toScheduler.send({ type: 'abort', rid: o.rid });
        h(o);
      }
    }
    if (!this.closed) throw new Error('the API inbox closed unexpectedly');
  }
}
