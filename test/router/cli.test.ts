// bin/kv-router.js as a process: config file + flags, readable config errors, clean SIGINT/SIGTERM shutdown.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fakeUpstream, freePort, root, routerBin, waitUntil } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'kv-router-cli-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('bad config: readable message naming the file and field, exit 2, no stack trace', () => {
  const f = join(dir, 'bad.json');
  writeFileSync(f, JSON.stringify({ port: 'eighty', workers: [{ url: 'http://x:1', dp_ranks: 0 }] }));
  const r = spawnSync(process.execPath, [routerBin, '--config', f], { cwd: root, encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 2);
  assert.match(r.stderr, new RegExp(`invalid config file ${f.replace(/[/.]/g, '\\$&')}`));
  assert.match(r.stderr, /port: /);
  assert.match(r.stderr, /workers\.0\.dp_ranks/);
  assert.doesNotMatch(r.stderr, /at .*\.ts:\d+/);
  const r2 = spawnSync(process.execPath, [routerBin, '--bogus'], { cwd: root, encoding: 'utf8', timeout: 30_000 });
  assert.equal(r2.status, 2);
  assert.match(r2.stderr, /^kv-router: Unknown option '--bogus' \(see kv-router --help\)\n$/);
});

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  test(`serves from a config file and stops cleanly on ${signal}`, { timeout: 60_000 }, async () => {
    const up = await fakeUpstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"ok":1}');
    });
    const port = await freePort();
    const f = join(dir, `ok-${signal}.json`);
    writeFileSync(f, JSON.stringify({ port: 1, policy: 'least_load', workers: [{ id: 'fake', url: up.url }] }));
    const p = spawn(process.execPath, [routerBin, '--config', f, '--port', String(port), '--tokenizer-threads', '1'], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d) => (err += d));
    const exited = new Promise<number | null>((r) => p.once('exit', (code) => r(code)));
    try {
      await waitUntil('router up with a healthy worker', 40_000, async () => (await fetch(`http://127.0.0.1:${port}/health`)).status === 200, 100);
      const res = await fetch(`http://127.0.0.1:${port}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: 'hi' }) });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('x-kv-router-worker'), 'fake');
      assert.match(err, new RegExp(`listening on http://127.0.0.1:${port} \\(policy least_load`));
      p.kill(signal);
      const t0 = Date.now();
      assert.equal(await exited, 0);
      assert.ok(Date.now() - t0 < 5000);
      assert.match(err, new RegExp(`${signal}: draining \\(up to \\d+ ms\\), then shutting down`));
    } finally {
      p.kill('SIGKILL');
      await up.close();
    }
  });
}
