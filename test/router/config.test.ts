import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { loadRouterConfigFile, parseRouterConfig, ConfigError, ranksOf, workerIdOf } from '../../router/config.js';
import { parseCli, parseWorkerSpec } from '../../router/cli.js';
import { streamEndpoint } from '../../router/streams.js';

const configsDir = join(import.meta.dirname, '../../configs');
const files = readdirSync(configsDir).filter((f) => /^router.*\.json$/.test(f));

test('there are router configs to check', () => {
  assert.ok(files.length >= 3, files.join(','));
});

for (const f of files) {
  test(`configs/${f} parses with the router schema and its endpoints resolve`, async () => {
    const cfg = await loadRouterConfigFile(join(configsDir, f));
    assert.ok(cfg.workers.length > 0);
    assert.equal(typeof cfg.description, 'string');
    for (const w of cfg.workers) {
      for (const r of ranksOf(w)) {
        if (!w.kv_events) continue;
        const ep = streamEndpoint(w.kv_events.endpoint, w.url, r);
        assert.match(ep, /^tcp:\/\/[^*]+:\d+$/);
        if (w.kv_events.replay_endpoint) {
          const rep = streamEndpoint(w.kv_events.replay_endpoint, w.url, r);
          assert.notEqual(rep, ep);
          // Rank r's PUB port must not collide with any rank's replay port.
          for (const r2 of ranksOf(w)) assert.notEqual(streamEndpoint(w.kv_events.endpoint, w.url, r), streamEndpoint(w.kv_events.replay_endpoint, w.url, r2));
        }
      }
    }
  });
}

test('defaults: loopback, port 8000, cache_aware', () => {
  const c = parseRouterConfig({});
  assert.equal(c.host, '127.0.0.1');
  assert.equal(c.port, 8000);
  assert.equal(c.policy, 'cache_aware');
  assert.equal(c.cache_aware.decode_weight, 256);
  assert.equal(c.cache_aware.prefill_weight, 6);
  assert.equal(c.decision_log, null);
  assert.equal(c.health.failure_threshold, 3);
  assert.equal(c.retry.max_attempts, 3);
});

test('bad configs give readable errors naming each field', () => {
  assert.throws(
    () => parseRouterConfig({ port: 'x', policy: 'fastest', workers: [{ url: 'nope' }], extra: 1 }),
    (e: Error) => {
      assert.ok(e instanceof ConfigError);
      assert.match(e.message, /port:/);
      assert.match(e.message, /policy:.*cache_aware/);
      assert.match(e.message, /workers\.0\.url: Invalid URL/);
      assert.match(e.message, /extra: unknown key/);
      assert.ok(!e.message.includes('\n'), 'one line');
      return true;
    },
  );
  assert.throws(() => parseRouterConfig({ workers: [{ url: 'http://a:1' }, { url: 'http://a:1' }] }), /duplicate worker id "a:1"/);
});

test('worker ids, ranks and stream endpoints', () => {
  assert.equal(workerIdOf({ url: 'http://10.1.2.3:8100' }), '10.1.2.3:8100');
  assert.deepEqual(ranksOf({ dp_ranks: 3 }), [0, 1, 2]);
  assert.deepEqual(ranksOf({ dp_ranks: [2, 5] }), [2, 5]);
  assert.equal(streamEndpoint('tcp://*:5557', 'http://10.0.0.5:8000', 0), 'tcp://10.0.0.5:5557');
  assert.equal(streamEndpoint('tcp://0.0.0.0:5557', 'http://10.0.0.5:8000', 2), 'tcp://10.0.0.5:5559');
  assert.equal(streamEndpoint('tcp://192.168.1.9:5557', 'http://10.0.0.5:8000', 1), 'tcp://192.168.1.9:5558');
  assert.equal(streamEndpoint('ipc:///tmp/ev', 'http://h:1', 1), 'ipc:///tmp/ev_dp1');
});

test('CLI: flags override the file, --worker specs add workers', async () => {
  const cli = await parseCli(['--config', join(configsDir, 'router.json'), '--port', '9001', '--policy', 'round_robin', '--worker', 'http://127.0.0.1:9100', '--worker', 'url=http://127.0.0.1:9200,events=tcp://127.0.0.1:7000,replay=tcp://127.0.0.1:7100,topic=t,id=w9']);
  assert.ok(cli !== 'help');
  assert.equal(cli.config.port, 9001);
  assert.equal(cli.config.policy, 'round_robin');
  assert.equal(cli.config.workers.length, 4);
  assert.deepEqual(cli.config.workers[3]!.kv_events, { endpoint: 'tcp://127.0.0.1:7000', replay_endpoint: 'tcp://127.0.0.1:7100', topic: 't' });
  assert.throws(() => parseWorkerSpec('url=http://x:1,bogus=2'), /unknown key "bogus"/);
  await assert.rejects(parseCli(['--port', 'abc']), /--port must be/);
  await assert.rejects(parseCli(['--nope']), /Unknown option/);
  await assert.rejects(parseCli(['--config', '/nonexistent.json']), /cannot read config file/);
});
