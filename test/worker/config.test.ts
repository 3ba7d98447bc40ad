import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { parseWorkerArgs, parseWorkerConfig, readConfigFile, ConfigError } from '../../worker/config.js';
import { BIN, pidAlive, startWorker, waitFor } from './helpers.js';

const configPath = (name: string) => fileURLToPath(new URL(`../../configs/${name}`, import.meta.url));

describe('worker config', () => {
  it('the example configs parse with the same schema', () => {
    const sim = parseWorkerConfig(readConfigFile(configPath('worker.sim.json')));
    assert.equal(sim.engine, 'sim');
    assert.equal(sim.kvEvents?.endpoint, 'tcp://*:5557');
    assert.equal(sim.numBlocks, 2048);
    const onnx = parseWorkerConfig(readConfigFile(configPath('worker.onnx.json')));
    assert.equal(onnx.engine, 'onnx');
    assert.equal(onnx.device, 'cpu');
    assert.equal(onnx.kvEvents?.topic, 'kv-events');
  });

  it('flags override the config file and get defaults', () => {
    const c = parseWorkerArgs(['--config', configPath('worker.sim.json'), '--num-blocks', '64', '--port', '0', '--dp-rank', '2']);
    assert.equal(c.numBlocks, 64);
    assert.equal(c.port, 0);
    assert.equal(c.dpRank, 2);
    assert.equal(c.maxBatch, 64, 'from the file');
    const d = parseWorkerArgs(['--engine', 'sim']);
    assert.deepEqual(
      [d.host, d.port, d.blockSize, d.numBlocks, d.device, d.kvEvents, d.maxBatch],
      ['127.0.0.1', 8100, 16, 1024, 'cpu', null, 32],
    );
  });

  it('bad options give readable errors', () => {
    const bad: [string[], RegExp][] = [
      [[], /--engine \(engine\)/],
      [['--engine', 'gpt'], /--engine \(engine\): .*"onnx"/],
      [['--engine', 'sim', '--num-blocks', 'lots'], /--num-blocks \(num_blocks\): expected a number, got "lots"/],
      [['--engine', 'sim', '--block-size', '0'], /--block-size/],
      [['--engine', 'sim', '--device', 'tpu'], /--device/],
      [['--engine', 'sim', '--frobnicate', '1'], /Unknown option '--frobnicate'/],
      [['--engine', 'sim', '--kv-events-config', '{nope'], /--kv-events-config \(kv_events_config\): not valid JSON/],
      [['--engine', 'sim', '--kv-events-config', '{"endpoint":"http://x"}'], /unsupported transport/],
      [['--config', '/nonexistent/worker.json'], /cannot read config file/],
    ];
    for (const [argv, re] of bad) {
      assert.throws(() => parseWorkerArgs(argv), (e: unknown) => e instanceof ConfigError && re.test(e.message), argv.join(' '));
    }
  });

  it('kv-worker exits 2 with one line naming the option on bad options', () => {
    const r = spawnSync(process.execPath, [BIN, '--engine', 'sim', '--port', 'http'], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /^kv-worker: invalid options: --port \(port\): .* \(see kv-worker --help\)\n$/);
  });

  it('unknown keys are rejected, in the config and inside kv_events_config, with their path', () => {
    assert.throws(() => parseWorkerConfig({ engine: 'sim', numBlock: 4 }), (e: unknown) => e instanceof ConfigError && /numBlock: unknown key/.test(e.message));
    assert.throws(
      () => parseWorkerConfig({ engine: 'sim', kv_events_config: { endpoint: 'tcp://*:5557', bufer_steps: 5 } }),
      (e: unknown) => e instanceof ConfigError && /kv_events_config\.bufer_steps: unknown key/.test(e.message) && !e.message.includes('\n'),
    );
    // The camelCase keys of older config files name their snake_case replacement.
    assert.throws(() => parseWorkerConfig({ engine: 'sim', numBlocks: 4 }), (e: unknown) => e instanceof ConfigError && /numBlocks: unknown key \(the key is num_blocks\)/.test(e.message));
    assert.equal(parseWorkerConfig({ engine: 'sim', num_blocks: 4, max_batch: 2 }).numBlocks, 4);
    // vLLM's own keys are fine.
    assert.equal(parseWorkerConfig({ engine: 'sim', kv_events_config: { enable_kv_cache_events: true, endpoint: 'tcp://*:5557', buffer_steps: 5 } }).kvEvents?.buffer_steps, 5);
  });

  it('runs from a config file and stops cleanly on SIGINT', async () => {
    const ep = `ipc://${join(tmpdir(), `kvt-${randomBytes(4).toString('hex')}-pub.sock`)}`;
    const w = await startWorker(['--config', configPath('worker.sim.json'), '--num-blocks', '64', '--kv-events-config', JSON.stringify({ endpoint: ep })]);
    try {
      assert.equal((await w.json('/load')).num_blocks, 64);
      assert.ok(existsSync(ep.slice(6)));
      const kids = w.childPids();
      const { code } = await w.stop('SIGINT');
      assert.equal(code, 0, w.output);
      await waitFor('stage processes to exit', async () => kids.every((p) => !pidAlive(p)), 5000);
      assert.deepEqual(w.ipcFiles(), []);
      assert.ok(!existsSync(ep.slice(6)), 'the publisher removed its ipc socket');
    } finally {
      await w.stop('SIGKILL');
    }
  });

  it('stages left without their API process (SIGKILL) exit and remove the socket files', async () => {
    const w = await startWorker(['--engine', 'sim', '--num-blocks', '16']);
    const kids = w.childPids();
    assert.equal(kids.length, 2);
    await w.stop('SIGKILL');
    await waitFor('orphaned stages to exit', async () => kids.every((p) => !pidAlive(p)), 10_000);
    await waitFor('socket files to go', async () => w.ipcFiles().length === 0, 5000);
  });
});
