/**
 * Shared load over a REAL nats-server (started here on a free loopback port, killed at the end):
 * two routers in this process in front of the same two fake workers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import type { ServerResponse } from 'node:http';
import { fakeUpstream, freePort, waitUntil, type FakeUpstream } from './helpers.js';
import { parseRouterConfig, type RouterConfigInput } from '../../router/config.js';
import { startRouter, type RunningRouter } from '../../router/server.js';

function findNatsServer(): string | null {
  for (const p of ['/usr/sbin/nats-server', '/usr/bin/nats-server', '/usr/local/bin/nats-server']) if (existsSync(p)) return p;
  const w = spawnSync('sh', ['-c', 'command -v nats-server'], { encoding: 'utf8' });
  return w.status === 0 && w.stdout.trim() ? w.stdout.trim() : null;
}
const natsBin = findNatsServer();
if (!natsBin) process.stderr.write('\n*** cluster-nats.test.ts SKIPPED: nats-server is not installed (apt-get install nats-server; .ci/run installs it) ***\n\n');

interface Nats {
  proc: ChildProcess;
  stop(): Promise<void>;
}

async function startNats(port: number): Promise<Nats> {
  const proc = spawn(natsBin!, ['-a', '127.0.0.1', '-p', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  await waitUntil(`nats-server on ${port} (${out})`, 10_000, () => {
    if (proc.exitCode !== null) throw new Error(`nats-server exited: ${out}`);
    return new Promise<boolean>((resolve) => {
      const s = netConnect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
  });
  return {
    proc,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGKILL');
      await exited;
    },
  };
}

/** A worker that holds completions until told to answer (so they stay in flight). */
interface HeldUpstream extends FakeUpstream {
  held: ServerResponse[];
  hold: boolean;
  releaseAll(): void;
}

async function heldUpstream(): Promise<HeldUpstream> {
  const answer = (res: ServerResponse) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ id: 'cmpl-1', object: 'text_completion', model: 'm', choices: [{ index: 0, text: 'ok', finish_reason: 'stop' }] }));
  };
  const held: ServerResponse[] = [];
  let h!: HeldUpstream;
  const f = await fakeUpstream((_req, res) => {
    if (h.hold) held.push(res);
    else answer(res);
  });
  h = Object.assign(f, {
    held,
    hold: true,
    releaseAll() {
      for (const r of held.splice(0)) answer(r);
    },
  });
  return h;
}

/** Long enough that a loaded machine's event-loop stalls do not expire a live share. */
const TTL = 3000;

async function replica(workers: FakeUpstream[], natsPort: number, logs: string[], name: string): Promise<RunningRouter> {
  const cfg: RouterConfigInput = {
    port: 0,
    tokenizer_threads: 0,
    policy: 'cache_aware',
    health: { interval_ms: 150, timeout_ms: 2000, failure_threshold: 3, poll_load: false },
    retry: { max_attempts: 1, backoff_ms: 5 },
    cache_aware: { provisional_ttl_ms: 60_000 },
    workers: workers.map((w, i) => ({ id: `w${i}`, url: w.url, block_size: 16 })),
    cluster: { nats_url: `nats://127.0.0.1:${natsPort}`, replica_id: name, heartbeat_ms: TTL / 10, share_ttl_ms: TTL, reconnect_ms: 100, connect_timeout_ms: 500 },
  };
  return startRouter(parseRouterConfig(cfg), (m) => logs.push(`${name}: ${m}`));
}

const prompt = (seed: number, n = 64) => Array.from({ length: n }, (_, i) => 1000 + seed * 1000 + i);

async function routeOn(r: RunningRouter, ids: number[]) {
  const res = await fetch(`${r.url}/route`, { method: 'POST', body: JSON.stringify({ prompt: ids, max_tokens: 1 }) });
  assert.equal(res.status, 200);
  const j = (await res.json()) as { candidates: { worker: string; matched_tokens: number; by_medium: Record<string, number>; load: { in_flight: number; pending_prefill_tokens: number } }[] };
  return new Map(j.candidates.map((c) => [c.worker, c]));
}

const complete = (r: RunningRouter, ids: number[]) => fetch(`${r.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: ids, max_tokens: 1 }) });
const health = async (r: RunningRouter) => (await (await fetch(`${r.url}/health`, { signal: AbortSignal.timeout(5000) })).json()) as { status: string; cluster: { status: string; state: string; peers: string[]; replica_id: string } };
const pickedBy = (ws: HeldUpstream[], before: number[]) => ws.findIndex((w, i) => w.requests.length > before[i]!);

test('shared load over NATS: in-flight, completion, provisional prefixes, TTL expiry, NATS down and back', { skip: natsBin ? false : 'nats-server not installed', timeout: 120_000 }, async (t) => {
  const natsPort = await freePort();
  let nats = await startNats(natsPort);
  const workers = [await heldUpstream(), await heldUpstream()];
  const logs: string[] = [];
  const routers: RunningRouter[] = [];
  t.after(async () => {
    for (const w of workers) w.releaseAll();
    for (const r of routers) await r.close();
    for (const w of workers) await w.close();
    await nats.stop();
  });
  let a = await replica(workers, natsPort, logs, 'a');
  routers.push(a);
  const b = await replica(workers, natsPort, logs, 'b');
  routers.push(b);
  const idOf = (r: RunningRouter) => r.service.cluster!.replicaId;
  await waitUntil('both healthy, connected and peers', 20_000, async () => {
    const [ha, hb] = [await health(a), await health(b)];
    return ha.cluster.peers.includes(idOf(b)) && hb.cluster.peers.includes(idOf(a)) && a.service.registry.healthyCount() === 2 && b.service.registry.healthyCount() === 2;
  });
  assert.equal((await health(a)).cluster.status, 'ok');

  // Before anything is routed: B sees no load and no prefix.
  const p1 = prompt(1);
  for (const c of (await routeOn(b, p1)).values()) {
    assert.equal(c.load.in_flight, 0);
    assert.equal(c.matched_tokens, 0);
  }

  // A request in flight on A shows in B's /route load, and B predicts its prefix on the same worker.
  const bytes0 = structuredClone(a.service.cluster!.counters.bytes_by_kind);
  const before = workers.map((w) => w.requests.length);
  const r1 = complete(a, p1);
  await waitUntil('A forwarded the request', 10_000, () => pickedBy(workers, before) >= 0);
  const picked = `w${pickedBy(workers, before)}`;
  const other = picked === 'w0' ? 'w1' : 'w0';
  await waitUntil('B sees A\'s in-flight request', 5_000, async () => (await routeOn(b, p1)).get(picked)!.load.in_flight === 1);
  const seen = await routeOn(b, p1);
  assert.equal(seen.get(picked)!.load.pending_prefill_tokens, 64, 'the uncached prompt is queued prefill');
  assert.equal(seen.get(other)!.load.in_flight, 0);
  assert.equal(seen.get(picked)!.matched_tokens, 48, 'B predicts the hit: 3 full blocks of the 63 matchable tokens');
  assert.equal(seen.get(picked)!.by_medium.provisional, 48);
  assert.equal(seen.get(other)!.matched_tokens, 0);
  assert.equal((await routeOn(b, prompt(2))).get(picked)!.matched_tokens, 0, 'another prompt is not predicted');
  assert.equal(b.service.load.get(`${picked}:0`).inFlight, 1);
  // B knows which blocks that pending prefill computes (A's provisional message keyed it; A's deltas list it).
  assert.equal(b.service.load.get(`${picked}:0`).pending?.keyedTokens, 64);
  assert.equal(b.service.load.get(`${other}:0`).pending, undefined);

  // Completion removes it.
  workers[Number(picked.slice(1))]!.releaseAll();
  assert.equal((await r1).status, 200);
  await waitUntil('B sees the completion', 5_000, async () => (await routeOn(b, p1)).get(picked)!.load.in_flight === 0);
  assert.equal(b.service.load.get(`${picked}:0`).pending, undefined, 'no longer pending: unkeyed');
  const bytes1 = a.service.cluster!.counters.bytes_by_kind;
  const perRequest = { delta: bytes1.delta - bytes0.delta, provisional: bytes1.provisional - bytes0.provisional };
  t.diagnostic(`NATS bytes published for one 64-token request: deltas ${perRequest.delta} B (start, first byte, end), provisional ${perRequest.provisional} B; heartbeat ${bytes1.heartbeat} B so far`);
  assert.ok(perRequest.delta > 0 && perRequest.delta < 600, `deltas ${perRequest.delta} B`);
  // Block keys, not token ids: 4 blocks × 8 bytes (the ids alone were 256 bytes).
  assert.ok(perRequest.provisional > 4 * 8 && perRequest.provisional < 250, `provisional ${perRequest.provisional} B`);

  // A dies without a goodbye while a request is in flight: B keeps its share until the TTL passes.
  const before2 = workers.map((w) => w.requests.length);
  const p3 = prompt(3);
  const r3 = complete(a, p3);
  await waitUntil('A forwarded the second request', 10_000, () => pickedBy(workers, before2) >= 0);
  const picked3 = `w${pickedBy(workers, before2)}`;
  await waitUntil('B sees it', 5_000, () => b.service.load.get(`${picked3}:0`).inFlight === 1);
  const deadId = idOf(a);
  const tDead = Date.now();
  await a.service.cluster!.close(false);
  assert.equal(b.service.load.get(`${picked3}:0`).inFlight, 1, 'no goodbye: the share outlives the connection');
  assert.ok((await health(b)).cluster.peers.includes(deadId));
  await waitUntil('A\'s share expires on B', 3 * TTL, () => b.service.load.get(`${picked3}:0`).inFlight === 0);
  const after = Date.now() - tDead;
  t.diagnostic(`dead replica's share expired ${after} ms after its link closed (TTL ${TTL} ms)`);
  assert.ok(!(await health(b)).cluster.peers.includes(deadId));
  for (const w of workers) w.releaseAll();
  await r3;
  await a.close();
  routers.splice(routers.indexOf(a), 1);

  // A restarted replica rejoins with a fresh id.
  a = await replica(workers, natsPort, logs, 'a');
  routers.push(a);
  assert.notEqual(idOf(a), deadId);
  await waitUntil('the new A and B see each other', 10_000, async () => (await health(b)).cluster.peers.includes(idOf(a)) && (await health(a)).cluster.peers.includes(idOf(b)));

  // NATS goes away: both keep routing on their own view and say so.
  for (const w of workers) w.hold = false;
  await nats.stop();
  await waitUntil('both degraded', 10_000, async () => (await health(a)).cluster.status === 'degraded' && (await health(b)).cluster.status === 'degraded');
  for (const r of [a, b]) {
    const h = await health(r);
    assert.equal(h.status, 'ok', 'routing goes on');
    assert.deepEqual(h.cluster.peers, [], 'no stale remote share is used');
    const res = await complete(r, prompt(4));
    assert.equal(res.status, 200);
    const workersJson = (await (await fetch(`${r.url}/workers`)).json()) as { cluster: { state: string } };
    assert.notEqual(workersJson.cluster.state, 'connected');
    const metrics = await (await fetch(`${r.url}/metrics`)).text();
    assert.match(metrics, /^kv_router_cluster_connected 0$/m);
  }
  assert.ok(logs.some((l) => l.startsWith('a: ') && /NATS unreachable/.test(l)), logs.join('\n'));

  // NATS back on the same port: they rejoin by themselves and share again.
  nats = await startNats(natsPort);
  await waitUntil('both rejoin', 20_000, async () => {
    const [ha, hb] = [await health(a), await health(b)];
    return ha.cluster.status === 'ok' && hb.cluster.status === 'ok' && ha.cluster.peers.includes(idOf(b)) && hb.cluster.peers.includes(idOf(a));
  });
  for (const w of workers) w.hold = true;
  const before5 = workers.map((w) => w.requests.length);
  const r5 = complete(a, prompt(5));
  await waitUntil('A forwarded after the rejoin', 10_000, () => pickedBy(workers, before5) >= 0);
  const picked5 = `w${pickedBy(workers, before5)}`;
  await waitUntil('B sees A\'s load again', 5_000, () => b.service.load.get(`${picked5}:0`).inFlight === 1);
  assert.match(await (await fetch(`${b.url}/metrics`)).text(), /^kv_router_cluster_connected 1$/m);
  for (const w of workers) w.releaseAll();
  assert.equal((await r5).status, 200);
});

test('cluster config: off by default, strict, ttl above heartbeat', () => {
  assert.equal(parseRouterConfig({}).cluster, null);
  const c = parseRouterConfig({ cluster: { nats_url: 'nats://127.0.0.1:4222' } }).cluster!;
  assert.equal(c.subject_prefix, 'kv-router');
  assert.ok(c.share_ttl_ms > c.heartbeat_ms);
  assert.throws(() => parseRouterConfig({ cluster: { nats_url: 'nats://x', bogus: 1 } }), /bogus|Unrecognized/);
  assert.throws(() => parseRouterConfig({ cluster: { nats_url: 'nats://x', replica_id: 'a.b' } }), /replica_id/);
  assert.throws(() => parseRouterConfig({ cluster: { nats_url: 'nats://x', heartbeat_ms: 1000, share_ttl_ms: 500 } }), /share_ttl_ms/);
});

test('cluster: NATS unreachable from the start: the router starts, routes on its own view and says so', { timeout: 30_000 }, async (t) => {
  const deadPort = await freePort(); // nothing listens there
  const w = await heldUpstream();
  w.hold = false;
  const logs: string[] = [];
  const r = await replica([w], deadPort, logs, 'lonely');
  t.after(async () => {
    await r.close();
    await w.close();
  });
  await waitUntil('healthy', 10_000, () => r.service.registry.healthyCount() === 1);
  await waitUntil('a failed connection attempt', 10_000, () => r.service.cluster!.status().state === 'disconnected');
  const h = await health(r);
  assert.equal(h.status, 'ok');
  assert.equal(h.cluster.status, 'degraded');
  const res = await complete(r, prompt(7));
  assert.equal(res.status, 200);
  await res.text();
  assert.equal(r.service.load.get('w0:0').inFlight, 0);
  assert.match(await (await fetch(`${r.url}/metrics`)).text(), /^kv_router_cluster_connected 0$/m);
  assert.ok(logs.some((l) => /NATS unreachable/.test(l)), logs.join('\n'));
  assert.ok(r.service.cluster!.counters.dropped_unconnected > 0, 'its changes were dropped, not queued');
});
