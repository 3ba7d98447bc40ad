// configs/grafana/kv-router.json: every query names a metric a real router exports on /metrics
// (a dashboard that drifts from the metrics shows empty panels, silently).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { KVEventPublisher } from '../../src/events/publisher.js';
import { connectAddressFor, parseKVEventsConfig } from '../../src/events/config.js';
import { fakeUpstream, freePort, routerWith } from './helpers.js';

const closers: Array<() => Promise<void>> = [];
after(async () => {
  for (const c of closers.reverse()) await c().catch(() => {});
});

interface Panel { title: string; targets?: { expr: string }[] }
const dashboard = JSON.parse(readFileSync(join(import.meta.dirname, '../../configs/grafana/kv-router.json'), 'utf8')) as {
  panels: Panel[];
  templating: { list: { query?: unknown }[] };
};

/** The metric names a PromQL expression reads (histogram series by their family name). */
function metricsIn(expr: string): string[] {
  return [...expr.matchAll(/\bkv_router_[a-z0-9_]+/g)].map((m) => m[0]);
}

test('every Grafana query names a metric the router exports', { timeout: 60_000 }, async () => {
  const upstream = await fakeUpstream((_req, res) => res.end('{"ok":true}'));
  closers.push(() => upstream.close());
  const pub = await KVEventPublisher.create({ config: parseKVEventsConfig({ endpoint: `tcp://*:${await freePort()}`, replay_endpoint: `tcp://*:${await freePort()}` }) });
  closers.push(() => pub.close(100));
  // A cluster block (NATS unreachable: the router routes on its own view) so the replica metrics exist too.
  const r = await routerWith({ cluster: { nats_url: `nats://127.0.0.1:${await freePort()}` }, workers: [{ id: 'a', url: upstream.url, kv_events: { endpoint: connectAddressFor(pub.endpoint), replay_endpoint: connectAddressFor(pub.replayEndpoint!) } }] });
  closers.push(() => r.close());
  const text = await (await fetch(`${r.url}/metrics`)).text();
  const families = new Map<string, string>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) families.set(m[1]!, m[2]!);
  const exported = (name: string): boolean => {
    if (families.has(name)) return true;
    const h = /^(.*)_(bucket|sum|count)$/.exec(name);
    return h !== null && families.get(h[1]!) === 'histogram';
  };

  const queries: { where: string; expr: string }[] = [];
  for (const p of dashboard.panels) {
    assert.ok((p.targets ?? []).length > 0, `panel "${p.title}" has no query`);
    for (const t of p.targets!) queries.push({ where: `panel "${p.title}"`, expr: t.expr });
  }
  for (const v of dashboard.templating.list) if (typeof v.query === 'string' && v.query.includes('kv_router_')) queries.push({ where: 'a variable', expr: v.query });
  assert.ok(queries.length >= 10, `${queries.length} queries`);
  const missing: string[] = [];
  for (const q of queries) {
    const names = metricsIn(q.expr);
    assert.ok(names.length > 0, `${q.where}: "${q.expr}" names no kv_router metric`);
    for (const n of names) if (!exported(n)) missing.push(`${q.where}: ${n}`);
  }
  assert.deepEqual(missing, [], `queries naming metrics the router does not export (exported: ${[...families.keys()].join(', ')})`);
});

test('the check itself: a misspelled metric is caught', () => {
  assert.deepEqual(metricsIn('rate(kv_router_requets_total[5m]) / kv_router_ttfb_seconds_bucket'), ['kv_router_requets_total', 'kv_router_ttfb_seconds_bucket']);
});
