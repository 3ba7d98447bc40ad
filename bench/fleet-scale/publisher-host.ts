/**
 * A child process of the fleet bench hosting many workers' publishers: for each worker, one real
 * KVEventPublisher per data-parallel rank (its own ipc:// PUB and replay ROUTER), fed by a
 * RankCache; and one HTTP stub answering the router's GET <worker url>/health (the router routes
 * only to workers whose probe succeeds; /v1/models answers 404 = "serves any model"). Driven by
 * the bench over the fork channel; exits when the bench goes away (src/proc/parent.ts).
 */
import { createServer, type Server } from 'node:http';
import { parseKVEventsConfig } from '../../src/events/config.js';
import { KVEventPublisher, QueueFullError } from '../../src/events/publisher.js';
import type { KVEvent } from '../../src/events/types.js';
import { watchParent } from '../../src/proc/parent.js';
import { RankCache } from './cache-sim.js';
import type { FromHost, HostStats, ToHost } from './protocol.js';

interface Source {
  pub: KVEventPublisher;
  cache: RankCache;
}

const sources: Source[] = [];
let http: Server | null = null;
let steadyTimer: NodeJS.Timeout | null = null;
let batches = 0;
let blockEvents = 0;
let dropped = 0;
let stopping = false;

const send = (m: FromHost) => process.send?.(m);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function blockEventsOf(events: KVEvent[]): number {
  let n = 0;
  for (const e of events) n += e.type === 'AllBlocksCleared' ? 1 : e.block_hashes.length;
  return n;
}

function publish(s: Source, events: KVEvent[]): void {
  if (events.length === 0) return;
  try {
    s.pub.publish(events);
    batches++;
    blockEvents += blockEventsOf(events);
  } catch (e) {
    if (e instanceof QueueFullError) dropped++;
    else throw e;
  }
}

function stats(): HostStats {
  let held = 0;
  for (const s of sources) held += s.cache.heldBlocks;
  return { batches, blockEvents, dropped, heldBlocks: held };
}

async function start(m: Extract<ToHost, { type: 'start' }>): Promise<void> {
  const healthPaths = new Set(m.workers.map((w) => `/${w.id}/health`));
  http = createServer((req, res) => {
    if (req.method === 'GET' && healthPaths.has(req.url ?? '')) {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}');
    } else res.writeHead(404).end();
  });
  await new Promise<void>((r) => http!.listen(0, '127.0.0.1', r));
  for (const w of m.workers) {
    const config = parseKVEventsConfig({ endpoint: w.endpoint, replay_endpoint: w.replayEndpoint, topic: m.topic });
    for (let r = 0; r < m.ranks; r++) {
      const pub = await KVEventPublisher.create({ config, dpRank: r });
      sources.push({ pub, cache: new RankCache(m.shape, w.index * m.ranks + r) });
    }
  }
  const port = (http.address() as { port: number }).port;
  send({ type: 'ready', httpPort: port, pid: process.pid });
}

/** Round-robin over the ranks, `blocksPerBatch` per batch, paced to `blocksPerS` for the whole host. */
async function fill(m: Extract<ToHost, { type: 'fill' }>, capacity: number): Promise<void> {
  const t0 = performance.now();
  let done = 0;
  for (;;) {
    let any = false;
    for (const s of sources) {
      const need = capacity - s.cache.heldBlocks;
      if (need <= 0) continue;
      any = true;
      const evs = s.cache.step(Math.min(need, m.blocksPerBatch));
      publish(s, evs);
      done += blockEventsOf(evs);
    }
    if (!any || stopping) break;
    const ahead = done / m.blocksPerS - (performance.now() - t0) / 1000;
    await (ahead > 0.002 ? sleep(ahead * 1000) : new Promise((r) => setImmediate(r)));
  }
  await Promise.all(sources.map((s) => s.pub.flush()));
  send({ type: 'filled', stats: stats() });
}

/** Every rank steps each stepMs, the ranks spread evenly over the step (engines are not in lockstep). */
function steady(m: Extract<ToHost, { type: 'steady' }>): void {
  if (steadyTimer) clearInterval(steadyTimer);
  const slots = 10;
  const tickMs = m.stepMs / slots;
  const perStep = (m.blocksPerS * m.stepMs) / 1000;
  let slot = 0;
  steadyTimer = setInterval(() => {
    for (let i = slot; i < sources.length; i += slots) publish(sources[i]!, sources[i]!.cache.step(perStep));
    slot = (slot + 1) % slots;
  }, tickMs);
}

async function stop(code = 0): Promise<never> {
  stopping = true;
  if (steadyTimer) clearInterval(steadyTimer);
  setTimeout(() => process.exit(code), 3000).unref();
  await Promise.allSettled(sources.map((s) => s.pub.close(200)));
  http?.close();
  process.exit(code);
}

let capacity = 0;
process.on('message', (m: ToHost) => {
  const run = async () => {
    if (m.type === 'start') {
      capacity = m.shape.capacity;
      await start(m);
    } else if (m.type === 'fill') await fill(m, capacity);
    else if (m.type === 'steady') steady(m);
    else if (m.type === 'stats') send({ type: 'stats', stats: stats() });
    else if (m.type === 'stop') await stop();
  };
  run().catch((e) => {
    send({ type: 'error', message: (e as Error).stack ?? String(e) });
    void stop(1);
  });
});
watchParent(() => void stop(0));
process.on('SIGTERM', () => void stop(0));
