// The shared logger: levels, text and JSON lines with timestamps, flag > env precedence, --quiet.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { ConfigError } from '../../src/config/error.js';
import { createLogger, loggerFromEnv, resolveLogSettings } from '../../src/log/logger.js';
import { formatIssues } from '../../src/config/zod-issues.js';

const capture = () => {
  const lines: string[] = [];
  return { lines, write: (l: string) => void lines.push(l) };
};
const at = () => new Date('2026-01-02T03:04:05.678Z');

test('text lines: timestamp, level, component, message, fields (quoted when needed)', () => {
  const c = capture();
  const log = createLogger({ component: 'kv-router', write: c.write, now: at });
  log.info('listening', { port: 8000, note: 'two words', none: undefined, nil: null });
  log.debug('not shown at info');
  assert.deepEqual(c.lines, ['2026-01-02T03:04:05.678Z info  [kv-router] listening port=8000 note="two words" nil=null\n']);
});

test('JSON lines: one object per line with ts, level, component, msg and the fields', () => {
  const c = capture();
  const log = createLogger({ component: 'kv-worker', format: 'json', level: 'debug', write: c.write, now: at }).child('kv-worker access');
  log.debug('GET /health 200', { status: 200 });
  assert.deepEqual(JSON.parse(c.lines[0]!), { ts: '2026-01-02T03:04:05.678Z', level: 'debug', component: 'kv-worker access', msg: 'GET /health 200', status: 200 });
});

test('levels filter: warn keeps error and warn; off keeps nothing', () => {
  const c = capture();
  const warn = createLogger({ component: 'x', level: 'warn', write: c.write, now: at });
  warn.error('e');
  warn.warn('w');
  warn.info('i');
  warn.debug('d');
  assert.deepEqual(c.lines.map((l) => l.split(' ')[1]), ['error', 'warn']);
  const off = createLogger({ component: 'x', level: 'off', write: c.write });
  off.error('e');
  assert.equal(c.lines.length, 2);
  assert.equal(off.enabled('error'), false);
});

test('settings: flags win over the environment, quiet over both; bad values are config errors naming their source', () => {
  const env = { KV_ROUTER_LOG_LEVEL: 'debug', KV_ROUTER_LOG_FORMAT: 'json' };
  assert.deepEqual(resolveLogSettings({}, env), { level: 'debug', format: 'json' });
  assert.deepEqual(resolveLogSettings({ level: 'warn', format: 'text' }, env), { level: 'warn', format: 'text' });
  assert.deepEqual(resolveLogSettings({ quiet: true }, env), { level: 'off', format: 'json' });
  assert.deepEqual(resolveLogSettings({}, {}), { level: 'info', format: 'text' });
  assert.throws(() => resolveLogSettings({ level: 'loud' }, {}), (e: unknown) => e instanceof ConfigError && /^--log-level: expected one of error, warn, info, debug, off; got "loud"$/.test(e.message));
  assert.throws(() => resolveLogSettings({}, { KV_ROUTER_LOG_FORMAT: 'xml' }), (e: unknown) => e instanceof ConfigError && /^KV_ROUTER_LOG_FORMAT: expected one of text, json/.test(e.message));
  assert.equal(loggerFromEnv('stage', { KV_ROUTER_LOG_LEVEL: 'off' }).level, 'off');
  assert.equal(loggerFromEnv('stage', { KV_ROUTER_LOG_LEVEL: 'nonsense' }).level, 'info', 'a stage falls back rather than dying');
});

test('zod issues name the field, what was expected and what came', () => {
  const S = z.object({
    n: z.number().int().min(1),
    e: z.enum(['a', 'b']),
    u: z.union([z.string(), z.array(z.number())]),
    o: z.object({ s: z.string().min(2) }),
    custom: z.string().min(1, { message: "Parameter 'custom' must be a non-empty string if provided." }),
  });
  const input = { n: 0.5, e: 'c', u: 3, o: { s: 'x' }, custom: '' };
  const r = S.safeParse(input);
  assert.ok(!r.success);
  assert.equal(
    formatIssues(r.error.issues, input, { all: true }),
    [
      '`n`: expected an integer, got 0.5',
      '`e`: expected one of "a", "b", got "c"',
      '`u`: expected a string or an array, got 3',
      '`o.s`: expected a string of at least 2 characters, got "x"',
      "`custom`: Parameter 'custom' must be a non-empty string if provided.",
    ].join('; '),
  );
  const missing = z.object({ prompt: z.string() }).safeParse({});
  assert.ok(!missing.success);
  assert.equal(formatIssues(missing.error.issues, {}), '`prompt`: expected a string, got nothing');
});
