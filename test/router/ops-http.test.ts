// Logs, request ids, 405s, validation messages and snake_case JSON through a real kv-router process in
// front of a real sim kv-worker.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { freePort, root, routerBin, startWorker, waitUntil, workerAvailable, workerEntry, type WorkerProc } from './helpers.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

interface RouterProc {
  proc: ChildProcess;
  url: string;
  err: () => string;
  stop(): Promise<void>;
}

async function startRouterProc(args: string[], env: NodeJS.ProcessEnv = {}): Promise<RouterProc> {
  const port = await freePort();
  const proc = spawn(process.execPath, [routerBin, '--port', String(port), '--tokenizer-threads', '0', ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let err = '';
  proc.stderr!.on('data', (d) => (err += d));
  proc.stdout!.on('data', (d) => (err += d));
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const url = `http://127.0.0.1:${port}`;
  const r: RouterProc = {
    proc,
    url,
    err: () => err,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    },
  };
  try {
    await waitUntil('the router to serve', 30_000, async () => {
      if (proc.exitCode !== null) throw new Error(`kv-router exited: ${err}`);
      return (await fetch(`${url}/health`).catch(() => null))?.status === 200;
    });
  } catch (e) {
    await r.stop();
    throw new Error(`${(e as Error).message}: ${err}`);
  }
  return r;
}

const workerFlag = (w: WorkerProc) => `url=${w.url},events=${w.events.endpoint},replay=${w.events.replay_endpoint},topic=${w.events.topic},id=${w.id},block_size=16`;
const post = (url: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
const PROMPT = 'The quick brown fox jumps over the lazy dog, again and again. '.repeat(6);

/** Every key in a JSON value that has a lower-to-upper step (camelCase), with its path. */
function camelKeys(v: unknown, at = '', out: string[] = []): string[] {
  if (Array.isArray(v)) v.forEach((x, i) => camelKeys(x, `${at}[${i}]`, out));
  else if (v !== null && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      if (/[a-z][A-Z]/.test(k)) out.push(`${at}.${k}`);
      camelKeys(x, `${at}.${k}`, out);
    }
  }
  return out;
}

describe('router and worker HTTP for operators', { skip: workerAvailable() ? false : 'no kv-worker', timeout: 180_000 }, () => {
  let worker: WorkerProc;
  let router: RouterProc;
  before(async () => {
    worker = await startWorker({ id: 'worker-0' });
    router = await startRouterProc(['--log-format', 'json', '--worker', workerFlag(worker)]);
    await waitUntil('the worker healthy in the router', 30_000, async () => ((await (await fetch(`${router.url}/health`)).json()) as { healthy_workers: number }).healthy_workers === 1);
  });
  after(async () => {
    await router?.stop();
    await worker?.stop();
  });

  it('passes the client request id through to the worker and back, and logs one JSON access line with it', async () => {
    const id = `req-${process.pid}-${Date.now()}`;
    const res = await post(`${router.url}/v1/completions`, { prompt: PROMPT, max_tokens: 2 }, { 'x-request-id': id });
    assert.equal(res.status, 200);
    await res.text();
    assert.equal(res.headers.get('x-request-id'), id);
    assert.equal(res.headers.get('x-kv-router-worker'), 'worker-0');
    await waitUntil('the access line', 10_000, () => router.err().includes(id));
    const line = router.err().split('\n').find((l) => l.includes(id))!;
    const j = JSON.parse(line) as Record<string, unknown>;
    assert.equal(j.level, 'info');
    assert.equal(j.component, 'kv-router access');
    assert.equal(j.method, 'POST');
    assert.equal(j.path, '/v1/completions');
    assert.equal(j.status, 200);
    assert.equal(j.worker, 'worker-0');
    assert.equal(j.request_id, id);
    assert.equal(typeof j.duration_ms, 'number');
    assert.ok(!Number.isNaN(Date.parse(j.ts as string)), `ts ${j.ts}`);
    // The worker got the same id and logged it (text format, with a timestamp).
    await waitUntil('the worker access line', 10_000, () => worker.output().includes(`request_id=${id}`));
    const wline = worker.output().split('\n').find((l) => l.includes(`request_id=${id}`))!;
    assert.match(wline, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z info  \[kv-worker access\] POST \/v1\/completions 200 /);
  });

  it('generates a request id (a UUID) when the client sends none, or one that is not a sane token', async () => {
    const a = await fetch(`${router.url}/v1/models`);
    await a.text();
    assert.match(a.headers.get('x-request-id')!, UUID);
    const b = await post(`${router.url}/route`, { prompt: 'hi' }, { 'x-request-id': 'has spaces in it' });
    await b.text();
    assert.match(b.headers.get('x-request-id')!, UUID);
  });

  it('every line of both processes starts with a timestamp', () => {
    const lines = router.err().split('\n').filter((l) => l.trim());
    assert.ok(lines.length > 0);
    for (const l of lines) assert.ok(!Number.isNaN(Date.parse((JSON.parse(l) as { ts: string }).ts)), l);
    const wl = worker.output().split('\n').filter((l) => l.trim());
    assert.ok(wl.some((l) => /\[kv-worker scheduler\] publishing KV events/.test(l)), 'the scheduler stage logs through the logger');
    for (const l of wl) assert.match(l, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (error|warn |info |debug) \[/, l);
  });

  it('405 with Allow for a wrong method on a known route (router and worker); 404 stays for unknown routes', async () => {
    const cases: [string, string, string][] = [
      [`${router.url}/health`, 'POST', 'GET, HEAD'],
      [`${router.url}/v1/chat/completions`, 'GET', 'POST'],
      [`${router.url}/workers/worker-0`, 'PUT', 'DELETE, GET, HEAD'],
      [`${worker.url}/v1/completions`, 'GET', 'POST'],
      [`${worker.url}/cache`, 'DELETE', 'GET, HEAD'],
    ];
    for (const [url, method, allow] of cases) {
      const r = await fetch(url, { method });
      const j = (await r.json()) as { error: { message: string; code: string } };
      assert.equal(r.status, 405, `${method} ${url}`);
      assert.equal(r.headers.get('allow'), allow, `${method} ${url}`);
      assert.equal(j.error.code, 'method_not_allowed');
      assert.match(j.error.message, new RegExp(`^${method} is not allowed on /`));
    }
    assert.equal((await fetch(`${router.url}/nope`, { method: 'POST' })).status, 404);
    assert.equal((await fetch(`${worker.url}/nope`)).status, 404);
  });

  it('validation errors name the field and what was expected, not zod\'s "Invalid input"', async () => {
    const cases: [string, unknown, RegExp][] = [
      [`${worker.url}/v1/completions`, { prompt: 'hi', temperature: 7 }, /^`temperature`: expected a number at most 2, got 7$/],
      [`${worker.url}/v1/completions`, { prompt: 'hi', max_tokens: 'lots' }, /^`max_tokens`: expected a number, got "lots"$/],
      [`${worker.url}/v1/chat/completions`, { messages: [] }, /^`messages`: expected at least 1 item, got an array$/],
      // Through the router: its own check of the prompt, then the worker's.
      [`${router.url}/v1/completions`, { prompt: 12 }, /^`prompt`: must be a string/],
      [`${router.url}/v1/completions`, { prompt: 'hi', top_p: 0 }, /^`top_p`: expected a number more than 0, got 0$/],
    ];
    for (const [url, body, re] of cases) {
      const r = await post(url, body);
      const j = (await r.json()) as { error: { message: string } };
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.match(j.error.message, re);
      assert.doesNotMatch(j.error.message, /Invalid input/);
    }
  });

  it('/workers and ?dump are snake_case, and the dump names blocks by the hashes the worker\'s GET /cache gives', async () => {
    const r = await post(`${router.url}/v1/completions`, { prompt: PROMPT, max_tokens: 1 });
    assert.equal(r.status, 200);
    await r.text();
    const cache = (await (await fetch(`${worker.url}/cache`)).json()) as { hash: string }[];
    assert.ok(cache.length >= 3, `the worker holds the prompt's blocks (${cache.length})`);
    let dump: { ranks: { events: Record<string, unknown> }[]; trees: Record<string, { block_size: number; roots: { hashes: string[]; children: unknown[] }[] }> } | null = null;
    await waitUntil('the router to hold every block the worker holds', 10_000, async () => {
      dump = (await (await fetch(`${router.url}/workers/worker-0?dump`)).json()) as typeof dump;
      const held = new Set<string>();
      const visit = (n: { hashes: string[]; children: unknown[] }) => {
        for (const h of n.hashes) held.add(h);
        (n.children as (typeof n)[]).forEach(visit);
      };
      dump!.trees['0']!.roots.forEach(visit);
      return cache.every((b) => held.has(b.hash));
    });
    assert.equal(dump!.trees['0']!.block_size, 16);
    for (const k of ['last_seq', 'history_missing', 'lag_ms', 'tree_clears']) assert.ok(k in dump!.ranks[0]!.events, `${k} in ${JSON.stringify(dump!.ranks[0]!.events)}`);
    const list = await (await fetch(`${router.url}/workers`)).json();
    assert.deepEqual(camelKeys(list), []);
    assert.deepEqual(camelKeys(dump), []);
    for (const path of ['/health', '/v1/models']) assert.deepEqual(camelKeys(await (await fetch(`${router.url}${path}`)).json()), [], path);
    assert.deepEqual(camelKeys(await (await post(`${router.url}/route`, { prompt: PROMPT })).json()), [], '/route');
    for (const path of ['/load', '/cache', '/health']) assert.deepEqual(camelKeys(await (await fetch(`${worker.url}${path}`)).json()), [], `worker ${path}`);
  });

  it('--log-level warn drops the access lines, --quiet every line; a bad level is a config error', async () => {
    const warn = await startRouterProc(['--log-level', 'warn', '--worker', workerFlag(worker)]);
    const quiet = await startRouterProc(['--quiet', '--worker', workerFlag(worker)], { KV_ROUTER_LOG_LEVEL: 'debug' });
    const debug = await startRouterProc(['--worker', workerFlag(worker)], { KV_ROUTER_LOG_LEVEL: 'debug' });
    try {
      for (const r of [warn, quiet, debug]) {
        const res = await post(`${r.url}/v1/completions`, { prompt: 'hi', max_tokens: 1 }, { 'x-request-id': `lvl-${r.url}` });
        assert.equal(res.status, 200);
        await res.text();
      }
      await waitUntil('the debug router to log the request', 10_000, () => debug.err().includes(`request_id=lvl-${debug.url}`));
      // Probes log at debug: the health check in startRouterProc is there.
      assert.match(debug.err(), /debug \[kv-router access\] GET \/health 200/);
      assert.doesNotMatch(warn.err(), /\[kv-router access\]/);
      assert.doesNotMatch(warn.err(), /listening on/);
      assert.equal(quiet.err(), '');
    } finally {
      await Promise.all([warn.stop(), quiet.stop(), debug.stop()]);
    }
    const bad = spawn(process.execPath, [routerBin, '--log-level', 'loud'], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    bad.stderr!.on('data', (d) => (err += d));
    const code = await new Promise<number | null>((r) => bad.once('exit', (c) => r(c)));
    assert.equal(code, 2);
    assert.match(err, /^kv-router: --log-level: expected one of error, warn, info, debug, off; got "loud" \(see kv-router --help\)\n$/);
  });
});
