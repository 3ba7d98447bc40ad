// `kv-router status` as a process against a real router: the fleet table, the admin key, a clear error when unreachable.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fakeUpstream, freePort, root, routerBin, routerWith, waitUntil, type FakeUpstream } from '../router/helpers.js';
import type { RunningRouter } from '../../router/server.js';
import { formatStatus } from '../../router/status-table.js';
import type { Snapshot } from '../../router/dashboard/snapshot.js';

let up: FakeUpstream;
let router: RunningRouter;
let guarded: RunningRouter;
const KEY = 'status-key';

before(async () => {
  up = await fakeUpstream((_req, res) => res.writeHead(404).end());
  const dead = `http://127.0.0.1:${await freePort()}`;
  const workers = [{ id: 'live-0', url: up.url }, { id: 'dead-1', url: dead }];
  router = await routerWith({ workers });
  guarded = await routerWith({ workers: workers.slice(0, 1), admin_key: KEY });
  await waitUntil('states known', 20_000, () => {
    const [a, b] = router.service.registry.list();
    return a?.state === 'healthy' && b?.state === 'unhealthy' && guarded.service.registry.healthyCount() === 1;
  });
});

after(async () => {
  await router?.close(0);
  await guarded?.close(0);
  await up?.close();
});

function status(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [routerBin, 'status', ...args], { cwd: root, env: { ...process.env, KV_ROUTER_ADMIN_KEY: '', ...env } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

test('prints one row per (worker, rank) with its state, and why a worker is out', { timeout: 60_000 }, async () => {
  const r = await status([router.url]);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.split('\n');
  assert.match(lines[0]!, /1\/2 workers healthy/);
  assert.match(lines.find((l) => l.startsWith('WORKER'))!, /STATE\s+STREAM\s+BLOCKS/);
  assert.match(lines.find((l) => l.startsWith('live-0'))!, /^live-0\s+0\s+healthy\s+none\s+0/);
  assert.match(lines.find((l) => l.startsWith('dead-1 '))!, /unhealthy/);
  assert.match(r.stdout, /dead-1:0: unhealthy: .*(ECONNREFUSED|fetch failed|connect)/i);
  assert.doesNotMatch(r.stdout, /\x1b\[/, 'no colour when stdout is not a terminal');

  const j = await status([router.url, '--json']);
  const snap = JSON.parse(j.stdout) as Snapshot;
  assert.deepEqual(snap.fleet.map((f) => f.worker), ['live-0', 'dead-1']);
  assert.equal(formatStatus(snap, true).split('\n').find((l) => l.includes('dead-1 '))!.startsWith('\x1b[31m'), true, 'red on a terminal');
});

test('a router with an admin key: refused without it, served with --key or KV_ROUTER_ADMIN_KEY', { timeout: 60_000 }, async () => {
  const no = await status([guarded.url]);
  assert.equal(no.code, 1);
  assert.match(no.stderr, /needs its admin key: pass --key KEY or set KV_ROUTER_ADMIN_KEY/);
  const wrong = await status([guarded.url, '--key', 'nope']);
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, /rejected the admin key/);
  const flag = await status([guarded.url, '--key', KEY]);
  assert.equal(flag.code, 0, flag.stderr);
  assert.match(flag.stdout, /^live-0 /m);
  const env = await status([guarded.url], { KV_ROUTER_ADMIN_KEY: KEY });
  assert.equal(env.code, 0, env.stderr);
});

test('an unreachable router or a bad URL: a clear message, no stack trace', { timeout: 60_000 }, async () => {
  const url = `http://127.0.0.1:${await freePort()}`;
  const r = await status([url]);
  assert.equal(r.code, 1);
  assert.equal(r.stderr, `kv-router status: cannot reach the router at ${url}: ECONNREFUSED (is it running? pass its URL: kv-router status http://HOST:PORT)\n`);
  const bad = await status(['localhost:8000']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /is not an http\(s\) URL/);
  const notRouter = await status([up.url]);
  assert.equal(notRouter.code, 1);
  assert.match(notRouter.stderr, /HTTP 404|not answer with a dashboard snapshot/);
});
