// Stopping through every entry point leaves no process and no socket file behind: SIGTERM to the
// npm process of `npm start` (npm 11 runs scripts through `sh -c`, which does not pass signals on),
// SIGKILL of the launcher, and SIGTERM to `npx kv-worker`. Sim workers, to be quick.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { freePort } from '../../src/net/free-port.js';
import { alive, cmdlineOf, descendants, freshTmp, killTree, launch, leftovers, waitUntil } from './procs.js';

async function npmStart(tmp: string, port: number) {
  const l = launch('npm', ['start', '--', '--engine', 'sim', '--port', String(port), '--workers', '2', '--drain-timeout-ms', '2000'], { TMPDIR: tmp });
  await waitUntil('the startup banner', 90_000, () => l.output().includes('kv-router is up') || l.proc.exitCode !== null);
  assert.match(l.output(), /kv-router is up/, l.output());
  return l;
}

test('SIGTERM to the npm process of `npm start` stops all its processes and leaves no files', { timeout: 150_000 }, async () => {
  const tmp = freshTmp();
  const port = await freePort();
  const l = await npmStart(tmp, port);
  const tree = descendants(l.proc.pid!);
  try {
    // npm, sh, the launcher, and 3 processes per worker.
    assert.ok(tree.length >= 8, `process tree: ${tree.map(cmdlineOf).join(' | ')}`);
    assert.ok(leftovers(tmp).some((f) => f.endsWith('.sock')), 'the workers keep their ipc sockets in TMPDIR (positive control)');
    l.proc.kill('SIGTERM');
    await waitUntil('every process of the tree to exit', 40_000, () => !alive(l.proc.pid!) && tree.every((p) => !alive(p)));
    assert.deepEqual(tree.filter(alive).map(cmdlineOf), []);
    assert.deepEqual(leftovers(tmp), [], 'socket files left in TMPDIR');
    await assert.rejects(fetch(`http://127.0.0.1:${port}/health`));
  } finally {
    killTree(l, tree);
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('SIGKILL of the launcher (scripts/start.ts) takes its workers down with it', { timeout: 150_000 }, async () => {
  const tmp = freshTmp();
  const l = await npmStart(tmp, await freePort());
  const tree = descendants(l.proc.pid!);
  try {
    const launcher = tree.find((p) => cmdlineOf(p).includes('scripts/start.ts'));
    assert.ok(launcher, tree.map(cmdlineOf).join(' | '));
    const below = descendants(launcher);
    assert.ok(below.length >= 6, `workers and stages: ${below.map(cmdlineOf).join(' | ')}`);
    process.kill(launcher, 'SIGKILL');
    await waitUntil('every worker process to exit', 40_000, () => below.every((p) => !alive(p)));
    await waitUntil('npm to exit', 10_000, () => !alive(l.proc.pid!));
    assert.deepEqual(leftovers(tmp), [], 'socket files left in TMPDIR');
  } finally {
    killTree(l, tree);
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('SIGTERM to `npx kv-worker` stops the worker and its stages', { timeout: 120_000 }, async () => {
  const tmp = freshTmp();
  const port = await freePort();
  const l = launch('npx', ['--no-install', 'kv-worker', '--engine', 'sim', '--port', String(port), '--kv-events-config', JSON.stringify({ endpoint: `ipc://${tmp}/pub.sock`, replay_endpoint: 'tcp://127.0.0.1:0' })], { TMPDIR: tmp });
  let tree: number[] = [];
  try {
    await waitUntil('the worker to listen', 60_000, () => /listening on/.test(l.output()) || l.proc.exitCode !== null);
    tree = descendants(l.proc.pid!);
    assert.ok(tree.length >= 4, `sh, kv-worker and its two stages: ${tree.map(cmdlineOf).join(' | ')}`);
    l.proc.kill('SIGTERM');
    await waitUntil('every process to exit', 30_000, () => !alive(l.proc.pid!) && tree.every((p) => !alive(p)));
    assert.deepEqual(leftovers(tmp), [], 'socket files left in TMPDIR');
  } finally {
    killTree(l, tree);
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('SIGKILL of the npm process of `npm start`: the launcher sees npm gone and stops everything', { timeout: 150_000 }, async () => {
  const tmp = freshTmp();
  const l = await npmStart(tmp, await freePort());
  const tree = descendants(l.proc.pid!);
  try {
    assert.ok(tree.length >= 8, tree.map(cmdlineOf).join(' | '));
    l.proc.kill('SIGKILL');
    await waitUntil('every process of the tree to exit', 40_000, () => tree.every((p) => !alive(p)));
    assert.deepEqual(leftovers(tmp), [], 'socket files left in TMPDIR');
  } finally {
    killTree(l, tree);
    rmSync(tmp, { recursive: true, force: true });
  }
});
