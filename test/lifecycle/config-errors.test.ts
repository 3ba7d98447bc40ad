// Config problems through the real entry points: exit code 2, one line on stderr naming the problem
// and the fix, no stack trace, and nothing started (no worker process, no socket file).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { RouterConfigSchema, parseWorker, ConfigError as RouterConfigError } from '../../router/config.js';
import { ConfigError as WorkerConfigError } from '../../worker/config.js';
import { ConfigError as EventsConfigError } from '../../src/events/config.js';
import { ConfigError } from '../../src/config/error.js';
import { SseFramer } from '../../src/http/drain.js';
import { freshTmp, leftovers, root } from './procs.js';

const node = process.execPath;
const bin = (name: string) => join(root, 'bin', `${name}.js`);
const startScript = join(root, 'scripts', 'start.ts');

function run(cmd: string, args: string[], tmp: string) {
  const r = spawnSync(cmd, args, { cwd: root, encoding: 'utf8', timeout: 60_000, env: { ...process.env, TMPDIR: tmp } });
  return { status: r.status, stderr: r.stderr.replace(/^npm warn .*\n/gm, ''), stdout: r.stdout };
}

function assertConfigExit(r: { status: number | null; stderr: string }, re: RegExp, what: string) {
  assert.equal(r.status, 2, `${what}: exit code (stderr: ${r.stderr})`);
  const lines = r.stderr.split('\n').filter((l) => l.length > 0);
  assert.equal(lines.length, 1, `${what}: one line on stderr, got:\n${r.stderr}`);
  assert.doesNotMatch(r.stderr, /\n\s+at |Error:/, `${what}: no stack trace`);
  assert.match(lines[0]!, re, what);
}

test('one ConfigError class everywhere', () => {
  assert.equal(RouterConfigError, ConfigError);
  assert.equal(WorkerConfigError, ConfigError);
  assert.equal(EventsConfigError, ConfigError);
});

test('npm start: --help, bad flag, --workers abc / 0, bad policy, busy port: reported before any worker starts', { timeout: 120_000 }, async () => {
  const tmp = freshTmp();
  const busy = createServer();
  await new Promise<void>((r) => busy.listen(0, '127.0.0.1', () => r()));
  const busyPort = (busy.address() as { port: number }).port;
  try {
    const start = (...args: string[]) => run(node, ['--import', 'tsx', startScript, '--engine', 'sim', ...args], tmp);
    const help = start('--help');
    assert.equal(help.status, 0);
    assert.match(help.stdout, /usage: npm start/);
    assertConfigExit(start('--frobnicate'), /^npm start: Unknown option '--frobnicate'.*--help/, 'bad flag');
    assertConfigExit(start('--workers', 'abc'), /^npm start: --workers must be an integer from 1 to 64, got "abc"$/, '--workers abc');
    assertConfigExit(start('--workers', '0'), /^npm start: --workers must be an integer from 1 to 64, got "0"$/, '--workers 0');
    assertConfigExit(start('--policy', 'fastest'), /^npm start: --policy must be one of cache_aware, .*got "fastest"$/, 'bad policy');
    const t0 = Date.now();
    const r = start('--port', String(busyPort));
    assertConfigExit(r, new RegExp(`^npm start: port ${busyPort} is in use on 127\\.0\\.0\\.1; use --port$`), 'busy port');
    assert.doesNotMatch(r.stdout + r.stderr, /worker-0/, 'no worker started');
    assert.ok(Date.now() - t0 < 30_000);
    assert.deepEqual(leftovers(tmp), []);
    // Through npm itself: the same line (npm adds its own "npm error" lines only on stderr after it).
    const viaNpm = run('npm', ['start', '--silent', '--', '--workers', '0'], tmp);
    assert.equal(viaNpm.status, 2, viaNpm.stderr);
    assert.match(viaNpm.stderr, /^npm start: --workers must be an integer from 1 to 64, got "0"$/m);
  } finally {
    busy.close();
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('kv-worker: --help, bad flag, typo in a config file, busy port', { timeout: 120_000 }, async () => {
  const tmp = freshTmp();
  const busy = createServer();
  await new Promise<void>((r) => busy.listen(0, '127.0.0.1', () => r()));
  const busyPort = (busy.address() as { port: number }).port;
  try {
    const worker = (...args: string[]) => run(node, [bin('kv-worker'), ...args], tmp);
    const help = worker('--help');
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, /usage: kv-worker/);
    assertConfigExit(worker('--engine', 'sim', '--bogus'), /^kv-worker: Unknown option '--bogus'/, 'bad flag');
    const file = join(tmp, 'w.json');
    writeFileSync(file, JSON.stringify({ engine: 'sim', kv_events_config: { endpoint: 'tcp://*:5557', bufer_steps: 10 } }));
    assertConfigExit(worker('--config', file), /kv_events_config\.bufer_steps: unknown key/, 'typo in kv_events_config');
    writeFileSync(file, JSON.stringify({ engine: 'sim', numBlock: 10 }));
    assertConfigExit(worker('--config', file), /numBlock: unknown key/, 'typo at the top level');
    rmSync(file);
    assertConfigExit(worker('--engine', 'sim', '--port', String(busyPort)), new RegExp(`^kv-worker: port ${busyPort} is in use on 127\\.0\\.0\\.1; use --port$`), 'busy port');
    assert.deepEqual(leftovers(tmp), [], 'no stage started, no socket file');
  } finally {
    busy.close();
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('kv-router: bad flag, typo in kv_events, bad endpoint, busy port', { timeout: 120_000 }, async () => {
  const tmp = freshTmp();
  const busy = createServer();
  await new Promise<void>((r) => busy.listen(0, '127.0.0.1', () => r()));
  const busyPort = (busy.address() as { port: number }).port;
  try {
    const router = (...args: string[]) => run(node, [bin('kv-router'), ...args], tmp);
    assertConfigExit(router('--frob'), /^kv-router: Unknown option '--frob'/, 'bad flag');
    const file = join(tmp, 'r.json');
    writeFileSync(file, JSON.stringify({ workers: [{ url: 'http://127.0.0.1:8100', kv_events: { endpoint: 'tcp://127.0.0.1:5557', replay: 'tcp://127.0.0.1:5558' } }] }));
    assertConfigExit(router('--config', file), /workers\.0\.kv_events\.replay: unknown key/, 'typo in kv_events');
    writeFileSync(file, JSON.stringify({ workers: [{ url: 'http://127.0.0.1:8100', kv_events: { endpoint: 'http://nope' } }] }));
    assertConfigExit(router('--config', file), /workers\.0\.kv_events\.endpoint: unsupported transport/, 'bad endpoint');
    assertConfigExit(router('--policy', 'fastest'), /^kv-router: invalid flags\/config: policy: /, 'bad policy');
    assertConfigExit(router('--port', String(busyPort)), new RegExp(`^kv-router: port ${busyPort} is in use on 127\\.0\\.0\\.1; use --port$`), 'busy port');
  } finally {
    busy.close();
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('POST /workers bodies: a bad endpoint or a typo is a ConfigError (the admin API answers 400)', () => {
  for (const [body, re] of [
    [{ url: 'http://127.0.0.1:1', kv_events: { endpoint: 'tcp://nohost' } }, /kv_events\.endpoint: tcp endpoint needs host:port/],
    [{ url: 'http://127.0.0.1:1', kv_events: { endpoint: 'tcp://127.0.0.1:5557', replay_endpoint: 'zmq://x' } }, /kv_events\.replay_endpoint: unsupported transport/],
    [{ url: 'http://127.0.0.1:1', kv_events: { endpoint: 'ipc:///tmp/x.sock', topics: 'a' } }, /kv_events\.topics: unknown key/],
    [{ url: 'http://127.0.0.1:1', blocksize: 16 }, /blocksize: unknown key/],
  ] as const) {
    assert.throws(() => parseWorker(body), (e: unknown) => e instanceof ConfigError && re.test(e.message) && !e.message.includes('\n'), JSON.stringify(body));
  }
  // The engines' own keys are accepted as they are.
  const w = parseWorker({ url: 'http://127.0.0.1:1', kv_events: { enable_kv_cache_events: true, publisher: 'zmq', endpoint: 'inproc://x', buffer_steps: 10, hwm: 1, max_queue_size: 1, topic: 't' } });
  assert.equal(w.kv_events?.endpoint, 'inproc://x');
});

/** Every object schema reachable from `s` (through defaults, optionals, unions, arrays, records). */
function objectsIn(s: z.ZodType, path: string, out: { path: string; strict: boolean }[]): void {
  const def = (s as unknown as { _zod: { def: Record<string, unknown> & { type: string } } })._zod.def;
  switch (def.type) {
    case 'object': {
      const catchall = def.catchall as { _zod: { def: { type: string } } } | undefined;
      out.push({ path: path || '(root)', strict: catchall?._zod.def.type === 'never' });
      for (const [k, v] of Object.entries(def.shape as Record<string, z.ZodType>)) objectsIn(v, path ? `${path}.${k}` : k, out);
      return;
    }
    case 'optional': case 'nullable': case 'default': case 'prefault': case 'readonly': case 'nonoptional': case 'catch':
      return objectsIn(def.innerType as z.ZodType, path, out);
    case 'array':
      return objectsIn(def.element as z.ZodType, `${path}[]`, out);
    case 'union':
      for (const o of def.options as z.ZodType[]) objectsIn(o, path, out);
      return;
    case 'record':
      return objectsIn(def.valueType as z.ZodType, `${path}.*`, out);
    case 'pipe':
      objectsIn(def.in as z.ZodType, path, out);
      return;
    default:
      return;
  }
}

test('every object in the router config schema rejects unknown keys (blocks added later included)', () => {
  const objs: { path: string; strict: boolean }[] = [];
  objectsIn(RouterConfigSchema, '', objs);
  assert.ok(objs.some((o) => o.path === 'workers[].kv_events'), 'the walker reaches nested objects');
  assert.ok(objs.length >= 8, objs.map((o) => o.path).join(', '));
  assert.deepEqual(objs.filter((o) => !o.strict).map((o) => o.path), []);
});

test('SseFramer passes whole events only and keeps the rest', () => {
  const f = new SseFramer();
  assert.equal(f.push('data: {"a"'), '');
  assert.equal(f.push(':1}\n'), '');
  assert.equal(f.push('\ndata: {"b":2}\n\ndata: {"c'), 'data: {"a":1}\n\ndata: {"b":2}\n\n');
  assert.equal(f.pending, 'data: {"c');
  assert.equal(f.push('":3}\r\n\r\n'), 'data: {"c":3}\r\n\r\n');
  assert.equal(f.pending, '');
});

test('POST /workers with a bad endpoint answers 400 naming the field, not 500', { timeout: 60_000 }, async () => {
  const { parseRouterConfig } = await import('../../router/config.js');
  const { startRouter } = await import('../../router/server.js');
  const r = await startRouter(parseRouterConfig({ port: 0, tokenizer_threads: 0 }));
  try {
    for (const kv of [{ endpoint: 'tcp://nohost' }, { endpoint: 'tcp://127.0.0.1:5557', replay: 'tcp://127.0.0.1:5558' }]) {
      const res = await fetch(`${r.url}/workers`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ url: 'http://127.0.0.1:1', kv_events: kv }) });
      const body = (await res.json()) as { error: { message: string } };
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.match(body.error.message, /kv_events\.(endpoint|replay)/);
    }
  } finally {
    await r.close();
  }
});
