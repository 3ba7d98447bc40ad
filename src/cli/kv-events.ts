/**
 * `kv-events tail <endpoint> [--replay <endpoint>] [--topic T] [--from-seq N]
 *                 [--json] [--count N] [--duration S] [--stats]`
 *
 * Follows one KV-event stream (a vLLM / SGLang / kv-router worker's PUB socket)
 * and prints every batch and stream notice. Exit codes: 0 done (count reached,
 * duration over, SIGINT/SIGTERM), 1 runtime failure, 2 usage error.
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { connectAddressFor, endpointProblem } from '../events/config.js';
import type { StreamItem } from '../events/subscriber.js';
import { batchLineHuman, batchLineJson, COLOUR, noticeLineHuman, noticeLineJson, PLAIN } from './format.js';
import { snakeKeys } from '../http/snake-keys.js';

const USAGE = `usage: kv-events tail <endpoint> [options]

Follow a KV-event stream and print one line per batch.

  <endpoint>            the publisher's PUB endpoint, e.g. tcp://127.0.0.1:5557 or ipc:///tmp/kv
  --replay <endpoint>   its replay (ROUTER) endpoint, e.g. tcp://127.0.0.1:5558
  --topic T             topic prefix to subscribe to (default: all)
  --from-seq N          replay everything from seq N, then follow live (needs --replay)
  --json                one JSON object per line (hashes as decimal strings or "0x" hex)
  --count N             exit 0 after N batches (replayed ones count)
  --duration S          exit 0 after S seconds
  --stats               print a summary to stderr at exit
  -h, --help            this text`;

/** How long the replay endpoint gets to answer the reachability probe. */
const REPLAY_PROBE_MS = Number(process.env.KV_EVENTS_REPLAY_PROBE_MS) || 3000;
/** How long the stream endpoint gets to accept the connection. */
const CONNECT_MS = Number(process.env.KV_EVENTS_CONNECT_MS) || 5000;

class UsageError extends Error {}
class CliError extends Error {}

function checkEndpoint(ep: string, what: string): string {
  let why = endpointProblem(ep);
  if (!why && /^tcp:.*:0$/.test(ep)) why = 'port 0 can only be bound, not connected to';
  if (why) throw new UsageError(`invalid ${what} endpoint: ${why}`);
  return connectAddressFor(ep);
}

function nonNegInt(v: string | undefined, name: string, positive = false): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v) || (positive && Number(v) === 0)) throw new UsageError(`${name} must be a ${positive ? 'positive' : 'non-negative'} integer, got ${JSON.stringify(v)}`);
  return Number(v);
}

/** Asks the replay endpoint for a far-future seq: a live publisher answers with just the end marker. */
async function probeReplay(endpoint: string, timeoutMs: number): Promise<void> {
  const { requestReplay } = await import('../events/replay-client.js');
  const r = await requestReplay(endpoint, 0x7fffffffffffffffn, { timeoutMs });
  if (r.status !== 'done')
    throw new CliError(`replay endpoint ${endpoint} did not answer within ${timeoutMs} ms (is a publisher with a replay endpoint there?)`);
}

interface TailOptions {
  endpoint: string;
  replay: string | null;
  topic: string;
  fromSeq: bigint | null;
  json: boolean;
  count?: number;
  duration?: number;
  stats: boolean;
}

function parseTail(args: string[]): TailOptions {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    strict: true,
    options: {
      replay: { type: 'string' },
      topic: { type: 'string' },
      'from-seq': { type: 'string' },
      json: { type: 'boolean' },
      count: { type: 'string' },
      duration: { type: 'string' },
      stats: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) throw new UsageError('');
  if (positionals.length !== 1) throw new UsageError(positionals.length ? `expected one endpoint, got ${positionals.length}` : 'missing <endpoint>');
  const fromSeq = nonNegInt(values['from-seq'], '--from-seq');
  if (fromSeq !== undefined && values.replay === undefined) throw new UsageError('--from-seq needs --replay <endpoint>');
  let duration: number | undefined;
  if (values.duration !== undefined) {
    duration = Number(values.duration);
    if (!values.duration.trim() || !Number.isFinite(duration) || duration <= 0) throw new UsageError(`--duration must be a positive number of seconds, got ${JSON.stringify(values.duration)}`);
  }
  return {
    endpoint: checkEndpoint(positionals[0]!, 'stream'),
    replay: values.replay === undefined ? null : checkEndpoint(values.replay, 'replay'),
    topic: values.topic ?? '',
    fromSeq: values['from-seq'] === undefined ? null : BigInt(values['from-seq']),
    json: values.json ?? false,
    count: nonNegInt(values.count, '--count', true),
    duration,
    stats: values.stats ?? false,
  };
}

async function tail(o: TailOptions): Promise<number> {
  const out = process.stdout;
  const style = out.isTTY && !process.env.NO_COLOR ? COLOUR : PLAIN;
  if (o.replay) await probeReplay(o.replay, REPLAY_PROBE_MS);

  const started = Date.now();
  let batches = 0;
  let replayed = 0;
  const byType: Record<string, number> = {};
  let resolveDone!: (code: number) => void;
  const done = new Promise<number>((resolve) => (resolveDone = resolve));

  let finished = false;
  const finish = (code: number): void => {
    finished = true;
    resolveDone(code);
  };
  const onItem = (item: StreamItem): void => {
    if (finished) return;
    if (item.kind === 'notice') {
      out.write((o.json ? noticeLineJson(item.notice) : noticeLineHuman(item.notice, style)) + '\n');
      return;
    }
    if (item.kind === 'snapshot') return; // never asked for (the CLI runs without snapshots)
    // The SUB filters live batches by topic; replayed ones carry the publisher's topic and are filtered here.
    if (!item.topic.startsWith(o.topic)) return;
    batches++;
    if (item.replayed) replayed++;
    for (const ev of item.batch.events) byType[ev.type] = (byType[ev.type] ?? 0) + 1;
    out.write(
      (o.json
        ? batchLineJson(item.seq, item.topic, item.batch, item.replayed)
        : batchLineHuman(item.seq, item.topic, item.batch, item.replayed, style)) + '\n',
    );
    if (o.count !== undefined && batches >= o.count) finish(0);
  };

  // Loaded here, not at the top: usage errors and --help need no ZeroMQ.
  const { KVEventSubscriber } = await import('../events/subscriber.js');
  // Without --from-seq: what is new from now on, not the publisher's whole replay buffer.
  const sub = new KVEventSubscriber({ endpoint: o.endpoint, replayEndpoint: o.replay, topic: o.topic, fromSeq: o.fromSeq, replayHistory: o.fromSeq !== null, onItem });
  const onSignal = () => finish(0);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const timer = o.duration !== undefined ? setTimeout(() => finish(0), o.duration * 1000) : undefined;
  try {
    try {
      await sub.start();
    } catch (err) {
      throw new CliError(`cannot subscribe to ${o.endpoint}: ${(err as Error).message}`);
    }
    const deadline = Date.now() + CONNECT_MS;
    while (!sub.health().connected && !finished) {
      if (Date.now() > deadline)
        throw new CliError(
          `nothing is listening at ${o.endpoint} (no connection within ${CONNECT_MS} ms): is the publisher running, ` +
            `and does it bind this endpoint? (an engine binds only tcp://*:port, [::], ipc:// or inproc://; tcp://0.0.0.0 or a host name makes it connect)`,
        );
      await new Promise((r) => setTimeout(r, 20));
    }
    return await done;
  } finally {
    if (timer) clearTimeout(timer);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    const health = sub.health();
    await sub.close();
    if (o.stats) {
      const secs = (Date.now() - started) / 1000;
      const summary = { batches, replayed, events: byType, seconds: Number(secs.toFixed(3)), health: snakeKeys(health) };
      const text = o.json
        ? JSON.stringify({ stats: summary }, (_k, v) => (typeof v === 'bigint' ? Number(v) : v))
        : [
            `-- ${batches} batches (${replayed} replayed) in ${secs.toFixed(1)} s` +
              (Object.keys(byType).length ? ` (${Object.entries(byType).map(([t, n]) => `${n} ${t}`).join(', ')})` : ''),
            `-- last seq ${health.lastSeq ?? '-'}, gaps ${health.gaps}, replays ${health.replays}, resets ${health.resets}, ` +
              `history missing ${health.historyMissing}, duplicates ${health.duplicates}, malformed frames ${health.malformedFrames}`,
          ].join('\n');
      process.stderr.write(text + '\n');
    }
  }
}

export async function main(argv: string[]): Promise<number> {
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
  });
  const [cmd, ...rest] = argv;
  try {
    if (cmd === '-h' || cmd === '--help' || cmd === 'help') {
      process.stdout.write(USAGE + '\n');
      return 0;
    }
    if (cmd !== 'tail') throw new UsageError(cmd === undefined ? 'missing command' : `unknown command ${JSON.stringify(cmd)}`);
    return await tail(parseTail(rest));
  } catch (err) {
    if (err instanceof UsageError) {
      if (err.message) process.stderr.write(`kv-events: ${err.message}\n\n`);
      process.stderr.write(USAGE + '\n');
      return err.message ? 2 : 0;
    }
    if (err instanceof CliError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`kv-events: ${(err as Error).message}\n`);
      return err instanceof CliError ? 1 : 2;
    }
    process.stderr.write(`kv-events: ${process.env.KV_EVENTS_DEBUG ? (err as Error).stack : (err as Error).message ?? err}\n`);
    return 1;
  }
}

/** Runs main and exits once stdout has drained. */
export async function run(argv: string[]): Promise<void> {
  const code = await main(argv);
  process.stdout.write('', () => process.exit(code));
}

// Direct run: `node --import tsx src/cli/kv-events.ts tail ...`
function isEntry(): boolean {
  try {
    return !!process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}
if (isEntry()) await run(process.argv.slice(2));
