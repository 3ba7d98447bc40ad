/**
 * `kv-events tail`, run as the real CLI (bin/kv-events.js) in a child process
 * against our publisher on ipc:// sockets under the temp dir.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { parseKVEventsConfig } from '../../src/events/config.js';
import { KVEventPublisher } from '../../src/events/publisher.js';
import type { KVEvent } from '../../src/events/types.js';
import { Child, KV_EVENTS_BIN, tempDir, until } from '../interop/child.js';
import { freePort } from '../../src/net/free-port.js';

const tmp = tempDir('kvr-tail-');
const children: Child[] = [];
let n = 0;

after(async () => {
  await Promise.all(children.map((c) => c.stop()));
  tmp.remove();
});

function tail(args: string[], env: Record<string, string> = {}): Child {
  const c = new Child(process.execPath, [KV_EVENTS_BIN, ...args], env);
  children.push(c);
  return c;
}

async function publisher(topic = 'kv-events') {
  const id = n++;
  const config = parseKVEventsConfig({ endpoint: `ipc://${tmp.dir}/pub${id}`, replay_endpoint: `ipc://${tmp.dir}/replay${id}`, topic });
  return KVEventPublisher.create({ config, dpRank: 0 });
}

const DIGEST = Uint8Array.from({ length: 32 }, (_, i) => 255 - i);
function events(i: number): KVEvent[] {
  return [
    { type: 'BlockStored', block_hashes: [17270480062156288726n + BigInt(i), -42n, DIGEST], parent_block_hash: i ? BigInt(i) : null,
      token_ids: Array.from({ length: 48 }, (_, k) => k + i), block_size: 16, lora_id: null, medium: 'GPU', lora_name: null, group_idx: 1 },
    { type: 'BlockRemoved', block_hashes: [(1n << 64n) - 1n], medium: 'GPU' },
    ...(i % 2 ? [{ type: 'AllBlocksCleared' } as const] : []),
  ];
}
const TS0 = 1790000000.25;


const noStack = (s: string) => assert.doesNotMatch(s, /\n\s+at |Error:.*\n.*node:internal/, `no stack trace expected:\n${s}`);

test('--json --count: replayed history then live batches, one object per line, exit 0', { timeout: 20_000 }, async () => {
  const pub = await publisher();
  try {
    for (let i = 0; i < 2; i++) pub.publish(events(i), TS0 + i);
    await pub.flush();
    const c = tail(['tail', pub.endpoint, '--replay', pub.replayEndpoint!, '--from-seq', '0', '--json', '--count', '4']);
    await c.waitFor((o) => o.seq === 1, 10_000, 'the replayed batches');
    let i = 2;
    let last = 0;
    // Live batches; a batch sent before the SUB is connected comes back by gap replay, so keep going until tail is done.
    await until(() => c.exit !== null, 10_000, `tail to exit${c.diag()}`, () => {
      if (Date.now() - last > 150 && i < 40) (last = Date.now()), pub.publish(events(i), TS0 + i++);
    });
    assert.equal(c.exit!.code, 0, c.diag());
    const lines = c.lines.filter((l) => l.trim());
    const out = lines.map((l) => JSON.parse(l));
    const batches = out.filter((o) => 'seq' in o);
    assert.deepEqual(batches.map((b) => b.seq), [0, 1, 2, 3]);
    assert.ok(out.every((o) => 'seq' in o || 'notice' in o), 'every line is a batch or a notice');
    const b1 = batches[1]!;
    assert.deepEqual(Object.keys(b1), ['seq', 'ts', 'dp_rank', 'topic', 'events', 'replayed']);
    assert.equal(b1.ts, TS0 + 1);
    assert.equal(b1.dp_rank, 0);
    assert.equal(b1.topic, 'kv-events');
    assert.equal(b1.replayed, true);
    assert.deepEqual(b1.events[0], {
      type: 'BlockStored', block_hashes: ['17270480062156288727', '-42', '0x' + Buffer.from(DIGEST).toString('hex')], parent_block_hash: '1',
      token_ids: Array.from({ length: 48 }, (_, k) => k + 1), block_size: 16, lora_id: null, medium: 'GPU', lora_name: null, group_idx: 1,
    });
    assert.deepEqual(b1.events[1], { type: 'BlockRemoved', block_hashes: ['18446744073709551615'], medium: 'GPU' });
    assert.deepEqual(b1.events[2], { type: 'AllBlocksCleared' });
    assert.equal(batches[0].events[0].parent_block_hash, null);
    const replay = out.find((o) => o.notice === 'replay');
    assert.ok(replay, 'a replay notice');
    assert.equal(replay.from, 0);
  } finally {
    await pub.close();
  }
});

test('--from-seq N replays from N only', { timeout: 20_000 }, async () => {
  const pub = await publisher();
  try {
    for (let i = 0; i < 6; i++) pub.publish(events(i), TS0 + i);
    await pub.flush();
    const c = tail(['tail', pub.endpoint, '--replay', pub.replayEndpoint!, '--from-seq', '3', '--json', '--count', '3']);
    const exit = await c.waitExit(10_000);
    assert.equal(exit.code, 0, c.diag());
    const batches = c.json().filter((o) => 'seq' in o);
    assert.deepEqual(batches.map((b) => [b.seq, b.ts, b.replayed]), [3, 4, 5].map((s) => [s, TS0 + s, true]));
  } finally {
    await pub.close();
  }
});

test('human output: one plain line per batch (no colour off a TTY), notices marked, --stats summary', { timeout: 20_000 }, async () => {
  const pub = await publisher('');
  try {
    for (let i = 0; i < 3; i++) pub.publish(events(i), TS0 + i);
    await pub.flush();
    const c = tail(['tail', pub.endpoint, '--replay', pub.replayEndpoint!, '--from-seq', '1', '--count', '2', '--stats']);
    const exit = await c.waitExit(10_000);
    assert.equal(exit.code, 0, c.diag());
    const text = c.lines.join('\n');
    assert.doesNotMatch(text, /\x1b\[/, 'no ANSI colour when stdout is not a TTY');
    assert.equal(c.lines[0],
      '#1 2026-09-21 14:13:21.250 rank 0 (replayed) | BlockStored 3 blocks [154ab2d7 ffffffd6 e3e2e1e0] parent 00000001 48 tokens GPU' +
        ' | BlockRemoved 1 block [ffffffff] GPU | AllBlocksCleared');
    assert.match(c.lines[1]!, /^#2 2026-09-21 14:13:22\.250 rank 0 \(replayed\) \| BlockStored 3 blocks /);
    assert.match(c.stderr, /^-- 2 batches \(2 replayed\) in [\d.]+ s \(2 BlockStored, 2 BlockRemoved, 1 AllBlocksCleared\)$/m);
    assert.match(c.stderr, /^-- last seq \d+, gaps 0, replays 1, resets 0, history missing 0/m);
  } finally {
    await pub.close();
  }
});

test('--duration exits 0 on its own; notices show in the stream', { timeout: 20_000 }, async () => {
  const pub = await publisher();
  try {
    pub.publish(events(0), TS0);
    await pub.flush();
    // Late join without a replay endpoint: the missing history is announced.
    const c = tail(['tail', pub.endpoint, '--duration', '2']);
    const start = Date.now();
    let last = 0;
    await until(() => c.exit !== null, 15_000, `tail --duration to exit${c.diag()}`, () => {
      if (Date.now() - last > 100 && c.lines.length < 2) (last = Date.now()), pub.publish(events(1), TS0 + 1);
    });
    assert.equal(c.exit!.code, 0, c.diag());
    assert.ok(Date.now() - start >= 2000, 'ran for its duration');
    const i = c.lines.findIndex((l) => /^!! history missing \(no_replay_endpoint\) from #0, resumed at #\d+$/.test(l));
    assert.ok(i >= 0, `a history_missing notice${c.diag()}`);
    assert.match(c.lines[i + 1]!, /^#\d+ .* rank 0 kv-events \| BlockStored/, 'then the batch it resumed at');
  } finally {
    await pub.close();
  }
});

test('SIGTERM and SIGINT: clean exit 0 with the --stats summary', { timeout: 20_000 }, async () => {
  const pub = await publisher();
  try {
    const tails = (['SIGTERM', 'SIGINT'] as const).map((sig) => ({ sig, c: tail(['tail', pub.endpoint, '--json', '--stats']) }));
    let last = 0;
    await until(() => tails.every(({ c }) => c.json().some((o) => 'seq' in o)), 15_000, `a batch in each${tails[0]!.c.diag()}`, () => {
      if (Date.now() - last > 100) (last = Date.now()), pub.publish(events(0));
    });
    for (const { sig, c } of tails) c.proc.kill(sig);
    for (const { c } of tails) {
      const exit = await c.waitExit(5000);
      assert.deepEqual(exit, { code: 0, signal: null }, c.diag());
      const stats = JSON.parse(c.stderr.trim().split('\n').pop()!);
      assert.ok(stats.stats.batches >= 1);
      assert.ok('last_seq' in stats.stats.health && !('lastSeq' in stats.stats.health), 'snake_case health');
      noStack(c.stderr);
    }
  } finally {
    await pub.close();
  }
});

test('bad endpoints: a clear message, exit 2, no stack trace', { timeout: 30_000 }, async () => {
  const cases: { c: Child; args: readonly string[]; msg: RegExp }[] = [];
  for (const [args, msg] of [
    [['tail', 'foo://bar'], /invalid stream endpoint: unsupported transport "foo"/],
    [['tail', 'tcp://127.0.0.1:notaport'], /invalid stream endpoint: tcp endpoint needs host:port/],
    [['tail', 'tcp://127.0.0.1:5557', '--replay', 'tcp://127.0.0.1'], /invalid replay endpoint/],
    [['tail', 'tcp://127.0.0.1:5557', '--from-seq', '3'], /--from-seq needs --replay/],
    [['tail', 'tcp://127.0.0.1:5557', '--bogus'], /Unknown option '--bogus'/],
  ] as const) cases.push({ c: tail([...args]), args, msg });
  for (const { c, args, msg } of cases) {
    const exit = await c.waitExit(25_000);
    assert.equal(exit.code, 2, `${args.join(' ')}: ${c.diag()}`);
    assert.match(c.stderr, msg);
    assert.match(c.stderr, /^kv-events: /);
    noStack(c.stderr);
  }
});

test('an unreachable replay endpoint: a clear message, exit 1, no stack trace', { timeout: 20_000 }, async () => {
  const pub = await publisher();
  try {
    const port = await freePort();
    const c = tail(['tail', pub.endpoint, '--replay', `tcp://127.0.0.1:${port}`, '--from-seq', '0'], { KV_EVENTS_REPLAY_PROBE_MS: '500' });
    const exit = await c.waitExit(10_000);
    assert.equal(exit.code, 1, c.diag());
    assert.match(c.stderr, new RegExp(`^kv-events: replay endpoint tcp://127.0.0.1:${port} did not answer within 500 ms`));
    noStack(c.stderr);
  } finally {
    await pub.close();
  }
});

test('a stream endpoint where nothing listens: a clear message, exit 1 after a bounded wait', { timeout: 20_000 }, async () => {
  const started = Date.now();
  const c = tail(['tail', `ipc://${tmp.dir}/nobody-here`], { KV_EVENTS_CONNECT_MS: '500' });
  const exit = await c.waitExit(10_000);
  assert.equal(exit.code, 1, c.diag());
  assert.match(c.stderr, /^kv-events: nothing is listening at ipc:\/\/.*nobody-here \(no connection within 500 ms\)/);
  assert.ok(Date.now() - started < 8000);
  noStack(c.stderr);
});

test('without --from-seq: only what is new, never the replay buffer (even with --replay)', { timeout: 20_000 }, async () => {
  const pub = await publisher();
  try {
    for (let i = 0; i < 5; i++) pub.publish(events(i), TS0 + i);
    await pub.flush();
    const c = tail(['tail', pub.endpoint, '--replay', pub.replayEndpoint!, '--json', '--count', '3', '--stats'], { KV_EVENTS_CONNECT_MS: '5000' });
    let i = 5;
    let last = 0;
    await until(() => c.exit !== null, 10_000, `tail to exit${c.diag()}`, () => {
      if (Date.now() - last > 100 && i < 60) (last = Date.now()), pub.publish(events(i), TS0 + i++);
    });
    assert.equal(c.exit!.code, 0, c.diag());
    const batches = c.json().filter((o) => 'seq' in o);
    assert.equal(batches.length, 3);
    assert.ok(batches.every((b) => b.seq >= 5), `no batch of the buffer before tail started: ${batches.map((b) => b.seq)}`);
    assert.equal(c.json().filter((o) => o.notice === 'history_missing').length, 0);
  } finally {
    await pub.close();
  }
});

test('replayed batches honour --topic; --stats counts the replayed ones', { timeout: 20_000 }, async () => {
  const pub = await publisher('kv-events');
  try {
    for (let i = 0; i < 4; i++) pub.publish(events(i), TS0 + i);
    await pub.flush();
    const other = tail(['tail', pub.endpoint, '--replay', pub.replayEndpoint!, '--from-seq', '0', '--topic', 'other', '--json', '--duration', '1.5', '--stats']);
    const match = tail(['tail', pub.endpoint, '--replay', pub.replayEndpoint!, '--from-seq', '0', '--topic', 'kv', '--json', '--count', '4', '--stats']);
    const [eo, em] = [await other.waitExit(10_000), await match.waitExit(10_000)];
    assert.equal(em.code, 0, match.diag());
    assert.deepEqual(match.json().filter((o) => 'seq' in o).map((b) => [b.seq, b.replayed]), [[0, true], [1, true], [2, true], [3, true]]);
    const ms = JSON.parse(match.stderr.trim().split('\n').pop()!);
    assert.equal(ms.stats.replayed, 4);
    assert.equal(eo.code, 0, other.diag());
    assert.deepEqual(other.json().filter((o) => 'seq' in o), []);
    const os = JSON.parse(other.stderr.trim().split('\n').pop()!);
    assert.deepEqual([os.stats.batches, os.stats.replayed], [0, 0]);
  } finally {
    await pub.close();
  }
});
