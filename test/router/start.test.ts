// `npm start` (scripts/start.ts): router + workers as child processes, healthy, served, and gone after Ctrl-C.
// Runs with --engine sim to stay quick; `npm start` itself uses onnx.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, root, waitUntil, workerAvailable } from './helpers.js';

const script = fileURLToPath(new URL('../../scripts/start.ts', import.meta.url));
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

test('npm start: launches, prints the URL and a curl example, serves, stops everything on SIGINT', { skip: workerAvailable() ? false : 'no kv-worker', timeout: 110_000 }, async () => {
  const port = await freePort();
  const p = spawn(process.execPath, ['--import', 'tsx', script, '--engine', 'sim', '--port', String(port)], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout.on('data', (d) => (out += d));
  p.stderr.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => p.once('exit', (c) => r(c)));
  try {
    await waitUntil('startup banner', 90_000, () => out.includes('kv-router is up') || p.exitCode !== null, 200);
    assert.match(out, new RegExp(`kv-router is up: http://127.0.0.1:${port}`), out);
    assert.match(out, /curl -s -D - http:\/\/127\.0\.0\.1:\d+\/v1\/chat\/completions/);
    const pids = [...out.matchAll(/engine sim, .*pid (\d+)\)/g)].map((m) => Number(m[1]));
    assert.equal(pids.length, 2, out);
    // Local means local: each worker's PUB is a bound ipc:// socket, replay on loopback; nothing on a wildcard.
    const pubs = [...out.matchAll(/publishing KV events on (\S+), replay on (\S+)/g)];
    assert.equal(pubs.length, 2, out);
    for (const [, pub, replay] of pubs) {
      assert.match(pub!, /^ipc:\/\//);
      assert.match(replay!, /^tcp:\/\/127\.0\.0\.1:\d+$/);
    }
    assert.doesNotMatch(out, /tcp:\/\/(\*|0\.0\.0\.0)/);
    const res = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'Hello!' }], max_tokens: 4 }),
    });
    assert.equal(res.status, 200);
    await res.text();
    assert.match(res.headers.get('x-kv-router-worker')!, /^worker-[01]$/);
    // The banner's example, sent twice: the second answer reports the cached blocks.
    const example = /-d '(\{"model".*\})'/.exec(out)?.[1];
    assert.ok(example, out);
    const usage = async () => {
      const r = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: example });
      assert.equal(r.status, 200);
      return ((await r.json()) as { usage: { prompt_tokens_details: { cached_tokens: number } } }).usage.prompt_tokens_details.cached_tokens;
    };
    assert.equal(await usage(), 0);
    assert.ok((await usage()) >= 16, 'the second answer reports cached tokens');
    // Each worker's event endpoints, and a tail command that works as printed.
    const tails = [...out.matchAll(/npx kv-events tail (.+)$/gm)].map((m) => m[1]!.trim().split(/\s+/));
    assert.equal(tails.length, 2, out);
    for (const [, pub, replay] of pubs) assert.ok(tails.some((t) => t[0] === pub && t[2] === replay), `tail command for ${pub}`);
    const tailOut = await new Promise<string>((resolve, reject) => {
      const t = spawn(process.execPath, [join(root, 'bin/kv-events.js'), 'tail', ...tails[0]!, '--from-seq', '0', '--count', '1', '--json'], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
      let o = '';
      t.stdout.on('data', (d) => (o += d));
      t.stderr.on('data', (d) => (o += d));
      const kill = setTimeout(() => t.kill('SIGKILL'), 30_000);
      t.once('exit', (code) => {
        clearTimeout(kill);
        if (code === 0) resolve(o);
        else reject(new Error(`kv-events tail exited ${code}: ${o}`));
      });
    });
    const first = tailOut.split('\n').find((l) => l.startsWith('{"seq"'));
    assert.ok(first, tailOut);
    const workers = (await (await fetch(`http://127.0.0.1:${port}/workers`)).json()) as { workers: { state: string; ranks: { events: { connected: boolean } }[] }[] };
    assert.deepEqual(workers.workers.map((w) => w.state), ['healthy', 'healthy']);
    p.kill('SIGINT');
    assert.equal(await exited, 0);
    assert.match(out, /\[start\] stopped/);
    for (const pid of pids) assert.equal(alive(pid), false, `worker ${pid} still running`);
    const left = readdirSync(tmpdir()).filter((f) => pids.some((pid) => f.includes(`-${pid}-`)));
    assert.deepEqual(left, [], 'ipc files left behind');
    await assert.rejects(fetch(`http://127.0.0.1:${port}/health`));
  } finally {
    p.kill('SIGKILL');
  }
});
