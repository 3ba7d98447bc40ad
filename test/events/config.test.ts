import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  ConfigError,
  connectAddressFor,
  isBindEndpoint,
  offsetEndpoint,
  parseKVEventsConfig,
} from '../../src/events/config.js';

describe('kv-events config', () => {
  test('parses the engines JSON exactly', () => {
    const cfg = parseKVEventsConfig(
      '{"publisher":"zmq","endpoint":"tcp://*:5557","replay_endpoint":"tcp://*:5558","topic":"kv-events","buffer_steps":10000,"hwm":100000,"max_queue_size":100000}',
    );
    assert.deepEqual(cfg, {
      publisher: 'zmq',
      endpoint: 'tcp://*:5557',
      replay_endpoint: 'tcp://*:5558',
      topic: 'kv-events',
      buffer_steps: 10000,
      hwm: 100000,
      max_queue_size: 100000,
    });
  });

  test('defaults as vLLM; unknown keys ignored; null publisher accepted', () => {
    const defaults = { publisher: 'zmq', endpoint: 'tcp://*:5557', replay_endpoint: null, topic: '', buffer_steps: 10000, hwm: 100000, max_queue_size: 100000 };
    assert.deepEqual(parseKVEventsConfig('{}'), defaults);
    assert.deepEqual(parseKVEventsConfig({ enable_kv_cache_events: true, publisher: 'null' }), { ...defaults, publisher: 'null' });
    assert.deepEqual(parseKVEventsConfig(undefined), defaults);
  });

  test('bad input: a ConfigError naming every bad field', () => {
    const err = (input: unknown) => {
      try {
        parseKVEventsConfig(input);
      } catch (e) {
        assert.ok(e instanceof ConfigError, `ConfigError, got ${e}`);
        return e.message;
      }
      assert.fail(`accepted ${JSON.stringify(input)}`);
    };
    const m = err({ publisher: 'kafka', buffer_steps: -1, hwm: 1.5, max_queue_size: '10', topic: 3 });
    for (const field of ['publisher', 'buffer_steps', 'hwm', 'max_queue_size', 'topic']) assert.match(m, new RegExp(`- ${field}:`));
    assert.match(err('{not json'), /not valid JSON/);
    assert.match(err('[1]'), /\(config\)/);
    assert.match(err({ endpoint: 'localhost:5557' }), /endpoint: expected transport:\/\/address/);
    assert.match(err({ endpoint: 'tcp://*:99999' }), /port 0-65535/);
    assert.match(err({ replay_endpoint: 'udp://x:1' }), /replay_endpoint: unsupported transport "udp"/);
    assert.match(err({ max_queue_size: 0 }), /max_queue_size/);
  });

  test('bind or connect, by the engines rule (vLLM ZmqEventPublisher._socket_setup): 0.0.0.0 connects', () => {
    for (const ep of ['tcp://*:5557', 'tcp://[::]:5557', 'tcp://[::1]:5557', 'ipc:///tmp/x', 'inproc://cache']) assert.ok(isBindEndpoint(ep), ep);
    for (const ep of ['tcp://0.0.0.0:5557', 'tcp://127.0.0.1:5557', 'tcp://router.local:5557', 'tcp://10.0.0.2:5557']) assert.ok(!isBindEndpoint(ep), ep);
  });

  test('dp rank offsets: tcp port + rank (port 0 never), inproc/ipc _dp{r}', () => {
    assert.equal(offsetEndpoint('tcp://*:5557', 0), 'tcp://*:5557');
    assert.equal(offsetEndpoint('tcp://*:5557', 3), 'tcp://*:5560');
    assert.equal(offsetEndpoint('tcp://[::]:5557', 1), 'tcp://[::]:5558');
    assert.equal(offsetEndpoint('tcp://host:5557', 2), 'tcp://host:5559');
    assert.equal(offsetEndpoint('tcp://*:0', 5), 'tcp://*:0');
    assert.equal(offsetEndpoint('inproc://cache', 1), 'inproc://cache_dp1');
    assert.equal(offsetEndpoint('ipc:///tmp/kv.sock', 2), 'ipc:///tmp/kv.sock_dp2');
    assert.throws(() => offsetEndpoint('tcp://*:65535', 1), ConfigError);
    assert.throws(() => offsetEndpoint('tcp://*:5557', -1), ConfigError);
  });

  test('connect address for a bind endpoint', () => {
    assert.equal(connectAddressFor('tcp://*:5557'), 'tcp://127.0.0.1:5557');
    assert.equal(connectAddressFor('tcp://0.0.0.0:41234'), 'tcp://127.0.0.1:41234');
    assert.equal(connectAddressFor('tcp://[::]:5557'), 'tcp://127.0.0.1:5557');
    assert.equal(connectAddressFor('tcp://10.1.2.3:5557'), 'tcp://10.1.2.3:5557');
    assert.equal(connectAddressFor('ipc:///tmp/x'), 'ipc:///tmp/x');
  });
});
