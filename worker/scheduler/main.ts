/**
 * The scheduler process: scheduler + engine + paged cache + KV-event publisher.
 * Requests and control messages arrive from the API; outputs go to the detokenizer.
 */
import { KVEventPublisher, QueueFullError, type CacheSnapshot } from '../../src/events/publisher.js';
import type { KVEvent } from '../../src/events/types.js';
import { PullQueue, PushQueue } from '../../src/queues/index.js';
import { createEngine } from '../engines/create.js';
import type { DetokInMsg, SchedulerInMsg, SeqOutput } from '../messages.js';
import { onShutdown, readSpec, sendReady, startOrDie } from '../proc.js';
import { loadTokenizerFacts } from '../tokenizer.js';
import { Scheduler } from './scheduler.js';
import { loggerFromEnv } from '../../src/log/logger.js';

const log = loggerFromEnv('kv-worker scheduler');

const { config, endpoints } = readSpec();
const tokenizer = await startOrDie('scheduler', loadTokenizerFacts(config));
const engine = await startOrDie('scheduler', createEngine(config, tokenizer));
const publisher = config.kvEvents
  ? await startOrDie('scheduler', KVEventPublisher.create({ config: config.kvEvents, dpRank: config.dpRank }))
  : null;
if (publisher) log.info(`publishing KV events on ${publisher.endpoint}${publisher.replayEndpoint ? `, replay on ${publisher.replayEndpoint}` : ''}`);

let dropped = 0;
function publish(events: KVEvent[]): void {
  if (!publisher) return;
  try {
    publisher.publish(events);
  } catch (err) {
    if (!(err instanceof QueueFullError)) throw err;
    // Subscribers see the seq gap and recover through replay; say so once per 1000 drops.
    if (dropped++ % 1000 === 0) log.warn(`${err.message} (${dropped} dropped)`);
  }
}

const scheduler = new Scheduler({ engine, maxBatch: config.maxBatch, maxNumBatchedTokens: config.maxNumBatchedTokens, publish });
const inbox = await PullQueue.bind<SchedulerInMsg>(endpoints.scheduler);
const toDetok = PushQueue.connect<DetokInMsg>(endpoints.detokenizer);

onShutdown('scheduler', async () => {
  inbox.close();
  toDetok.close();
  await publisher?.close();
  await engine.close();
}, endpoints);

const pending: SchedulerInMsg[] = [];
let wake: (() => void) | null = null;
// Snapshot requests (src/events/snapshot.ts) are answered between steps, like /cache.
const snapshotWaiters: ((s: CacheSnapshot) => void)[] = [];
publisher?.setSnapshotSource(() => new Promise((resolve) => (snapshotWaiters.push(resolve), wake?.())));

function sendOuts(outs: SeqOutput[]): void {
  if (outs.length > 0) void toDetok.send({ type: 'outs', outs });
}

/** Runs between steps, so flush and /cache see the cache exactly as the published events describe it. */
function handle(msg: SchedulerInMsg): void {
  switch (msg.type) {
    case 'add':
      scheduler.add(msg.req);
      break;
    case 'abort': {
      const out = scheduler.abort(msg.rid);
      if (out) sendOuts([out]);
      break;
    }
    case 'ctl': {
      const result =
        msg.op === 'flush'
          ? { op: 'flush' as const, ...scheduler.flush() }
          : msg.op === 'cache'
            ? { op: 'cache' as const, blocks: scheduler.pool.list() }
            : { op: 'load' as const, load: scheduler.load() };
      void toDetok.send({ type: 'ctl', id: msg.id, result });
      break;
    }
  }
}

async function receive(): Promise<void> {
  for await (const msg of inbox) {
    // Load is read-only: answered at once, even during a long engine step.
    if (msg.type === 'ctl' && msg.op === 'load') {
      void toDetok.send({ type: 'ctl', id: msg.id, result: { op: 'load', load: scheduler.load() } });
      continue;
    }
    pending.push(msg);
    wake?.();
  }
}

async function loop(): Promise<never> {
  for (;;) {
    while (pending.length > 0) handle(pending.shift()!);
    while (snapshotWaiters.length > 0) snapshotWaiters.shift()!({ atSeq: publisher!.nextSeq, events: scheduler.pool.storedEvents() });
    if (scheduler.idle) {
      await new Promise<void>((r) => (wake = r));
      wake = null;
      continue;
    }
    sendOuts(await scheduler.step());
    // Let received messages in between steps even when the engine never yields.
    await new Promise((r) => setImmediate(r));
  }
}

void receive();
sendReady();
await loop();
