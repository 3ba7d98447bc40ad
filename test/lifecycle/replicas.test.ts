// `npm start -- --replicas N`: a local nats-server and N routers on consecutive ports in front of the
// same workers; they see each other over NATS; every process (nats-server included) and socket
// file is gone after SIGTERM, and after a SIGKILL of the launcher too. Sim workers, to be quick.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { accessSync, constants, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { alive, cmdlineOf, descendants, freshTmp, killTree, launch, leftovers, root, waitUntil } from './procs.js';

const startScript = join(root, 'scripts', 'start.ts');

function hasNatsServer(): boolean {
  const onPath = spawnSync('sh', ['-c', 'command -v nats-server'], { encoding: 'utf8' });
  if (onPath.status === 0 && onPath.stdout.trim()) return true;
  try {
    accessSync('/usr/sbin/nats-server', constants.X_OK);
    return true;
  } catch {
    return false;
  }
}
const skip = hasNatsServer() ? false : 'nats-server is not installed (apt-get install nats-server)';
if (skip) process.stderr.write(`\n*** replicas.test.ts: the --replicas runs are SKIPPED: ${skip} ***\n\n`);

/** `count` consecutive free ports on 127.0.0.1 (held open while probing, so they are distinct). */
async function consecutiveFreePorts(count: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 40_000);
    const held: ReturnType<typeof createServer>[] = [];
    let ok = true;
    for (let i = 0; i < count && ok; i++) {
      const s = createServer();
      ok = await new Promise<boolean>((r) => s.once('error', () => r(false)).listen(base + i, '127.0.0.1', () => r(true)));
      if (ok) held.push(s);
    }
    await Promise.all(held.map((s) => new Promise((r) => s.close(r))));
    if (ok) return base;
  }
  throw new Error('no run of free ports found');
}

interface Health {
  status: string;
  cluster: { status: string; peers: string[]; nats_url: string } | null;
}

async function startReplicas(tmp: string, port: number) {
  const l = launch(process.execPath, ['--import', 'tsx', startScript, '--replicas', '2', '--workers', '1', '--engine', 'sim', '--port', String(port), '--drain-timeout-ms', '2000'], { TMPDIR: tmp });
  await waitUntil('the startup banner', 90_000, () => l.output().includes('kv-router is up') || l.proc.exitCode !== null);
  assert.match(l.output(), new RegExp(`kv-router is up: http://127\\.0\\.0\\.1:${port} http://127\\.0\\.0\\.1:${port + 1} `), l.output());
  return l;
}

const natsPids = (pids: number[]) => pids.filter((p) => cmdlineOf(p).includes('nats-server') && !cmdlineOf(p).includes('nats-guard'));

test('--replicas 2: both routers answer /health with cluster ok and 1 peer; SIGTERM leaves no process (nats-server included) and no file', { skip, timeout: 150_000 }, async () => {
  const tmp = freshTmp();
  const port = await consecutiveFreePorts(2);
  const l = await startReplicas(tmp, port);
  const tree = descendants(l.proc.pid!);
  try {
    assert.equal(natsPids(tree).length, 1, `one nats-server in the tree: ${tree.map(cmdlineOf).join(' | ')}`);
    const healths: Health[] = [];
    for (const p of [port, port + 1]) healths.push((await (await fetch(`http://127.0.0.1:${p}/health`)).json()) as Health);
    for (const h of healths) {
      assert.equal(h.status, 'ok');
      assert.equal(h.cluster?.status, 'ok', JSON.stringify(h));
      assert.equal(h.cluster?.peers.length, 1, JSON.stringify(h));
    }
    assert.equal(healths[0]!.cluster!.nats_url, healths[1]!.cluster!.nats_url);
    assert.match(healths[0]!.cluster!.nats_url, /^nats:\/\/127\.0\.0\.1:\d+$/);
    assert.match(l.output(), new RegExp(`2 replicas sharing load over ${healths[0]!.cluster!.nats_url.replace(/\./g, '\\.')}`));
    assert.ok(leftovers(tmp).some((f) => f.endsWith('.sock')), 'the worker keeps its ipc socket in TMPDIR (positive control)');
    l.proc.kill('SIGTERM');
    assert.equal(await l.exited, 0, l.output());
    await waitUntil('every process of the tree to exit', 30_000, () => tree.every((p) => !alive(p)));
    assert.deepEqual(tree.filter(alive).map(cmdlineOf), []);
    assert.deepEqual(leftovers(tmp), [], 'socket files left in TMPDIR');
    for (const p of [port, port + 1]) await assert.rejects(fetch(`http://127.0.0.1:${p}/health`));
  } finally {
    killTree(l, tree);
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('--replicas 2: a SIGKILL of the launcher takes nats-server down too (through its guard)', { skip, timeout: 150_000 }, async () => {
  const tmp = freshTmp();
  const l = await startReplicas(tmp, await consecutiveFreePorts(2));
  const tree = descendants(l.proc.pid!);
  try {
    const nats = natsPids(tree);
    assert.equal(nats.length, 1, tree.map(cmdlineOf).join(' | '));
    l.proc.kill('SIGKILL');
    await waitUntil('nats-server and every worker process to exit', 30_000, () => tree.every((p) => !alive(p)));
    assert.deepEqual(tree.filter(alive).map(cmdlineOf), []);
  } finally {
    killTree(l, tree);
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('--replicas: a bad value, --port 0, or a busy port of a later replica is reported at once (exit 2), nothing started', { timeout: 60_000 }, async () => {
  const tmp = freshTmp();
  const run = (...args: string[]) => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', startScript, '--engine', 'sim', ...args], { cwd: root, encoding: 'utf8', timeout: 30_000, env: { ...process.env, TMPDIR: tmp } });
    return { status: r.status, out: r.stdout + r.stderr, lines: r.stderr.split('\n').filter((x) => x) };
  };
  const expectConfigExit = (r: ReturnType<typeof run>, re: RegExp) => {
    assert.equal(r.status, 2, r.out);
    assert.equal(r.lines.length, 1, r.out);
    assert.match(r.lines[0]!, re);
    assert.doesNotMatch(r.out, /worker-0|nats-server exited|\[nats\]/, 'nothing started');
  };
  const blocker = createServer();
  try {
    expectConfigExit(run('--replicas', '0'), /^npm start: --replicas must be an integer from 1 to 16, got "0"$/);
    expectConfigExit(run('--replicas', 'abc'), /^npm start: --replicas must be an integer from 1 to 16, got "abc"$/);
    expectConfigExit(run('--replicas', '17'), /^npm start: --replicas must be an integer from 1 to 16, got "17"$/);
    expectConfigExit(run('--replicas', '2', '--port', '0'), /^npm start: --replicas 2 needs a fixed --port/);
    expectConfigExit(run('--replicas', '3', '--port', '65534'), /^npm start: --replicas 3 from --port 65534 would go past port 65535/);
    if (!skip) {
      const port = await consecutiveFreePorts(2);
      await new Promise<void>((r) => blocker.listen(port + 1, '127.0.0.1', () => r()));
      expectConfigExit(run('--replicas', '2', '--port', String(port)), new RegExp(`^npm start: port ${port + 1} is in use on 127\\.0\\.0\\.1; use --port$`));
    }
    assert.deepEqual(leftovers(tmp), []);
  } finally {
    blocker.close();
    rmSync(tmp, { recursive: true, force: true });
  }
});
