// DNS discovery against a real resolver client (node's dns.promises.Resolver, c-ares) pointed by
// setServers at a tiny UDP DNS server written for this test (test/discovery/dns-server.ts): no
// system resolver or network is touched.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as dns } from 'node:dns';
import { parseRouterConfig, workerIdOf, type WorkerConfig } from '../../router/config.js';
import { DnsDiscovery, resolveAddresses } from '../../router/discovery/dns.js';
import { TinyDns } from './dns-server.js';

let srv: TinyDns;
before(async () => {
  srv = await TinyDns.start();
});
after(() => srv.close());

const dnsConfig = (over: Record<string, unknown>) => parseRouterConfig({ discovery: { dns: { servers: [srv.server], interval_ms: 100, timeout_ms: 300, ...over } } }).discovery.dns!;

function resolver(): dns.Resolver {
  const r = new dns.Resolver({ timeout: 300, tries: 1 });
  r.setServers([srv.server]);
  return r;
}

test('A+AAAA records of a name are the workers, at the configured port', async () => {
  srv.zones.set('workers.ns.svc', { A: ['10.0.0.7', '10.0.0.5'], AAAA: ['fd00::5'] });
  const got = await resolveAddresses(resolver(), { name: 'workers.ns.svc', record: 'A+AAAA', port: 8100 });
  assert.deepEqual(got.map((a) => `${a.host} ${a.port}`).sort(), ['10.0.0.5 8100', '10.0.0.7 8100', 'fd00::5 8100']);
});

test('SRV records: their ports, targets resolved by the same resolver', async () => {
  srv.zones.set('_http._tcp.workers.ns.svc', { SRV: [{ port: 8101, target: 'pod-a.workers.ns.svc' }, { port: 8102, target: 'pod-b.workers.ns.svc' }] });
  srv.zones.set('pod-a.workers.ns.svc', { A: ['10.1.0.1'] });
  srv.zones.set('pod-b.workers.ns.svc', { A: ['10.1.0.2'] });
  const got = await resolveAddresses(resolver(), { name: '_http._tcp.workers.ns.svc', record: 'SRV' });
  assert.deepEqual(got.map((a) => `${a.host} ${a.port}`).sort(), ['10.1.0.1 8101', '10.1.0.2 8102']);
});

test('re-resolved periodically: workers follow the records; NXDOMAIN is an empty set; SERVFAIL keeps the last set and logs once', async () => {
  srv.zones.set('fleet.ns.svc', { A: ['127.0.0.11'] });
  const logs: string[] = [];
  const sets: WorkerConfig[][] = [];
  const d = new DnsDiscovery(
    dnsConfig({ name: 'fleet.ns.svc', record: 'A', port: 8100, worker: { kv_events: { endpoint: 'tcp://*:5557', replay_endpoint: 'tcp://*:5558', topic: 'kv' }, block_size: 32 } }),
    (m) => logs.push(m),
  );
  const ids = () => sets.at(-1)!.map(workerIdOf).sort();
  const waitSets = async (n: number, what: string) => {
    const t0 = Date.now();
    while (sets.length < n) {
      if (Date.now() - t0 > 5000) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  try {
    await d.start((w) => sets.push(w));
    assert.equal(sets.length, 1);
    assert.deepEqual(ids(), ['127.0.0.11:8100']);
    const w0 = sets[0]![0]!;
    assert.equal(w0.url, 'http://127.0.0.11:8100');
    assert.equal(w0.block_size, 32);
    assert.equal(w0.kv_events?.endpoint, 'tcp://*:5557'); // the bind-form host becomes the url's host when subscribing

    srv.zones.set('fleet.ns.svc', { A: ['127.0.0.11', '127.0.0.12'] });
    await waitSets(2, 'the second address');
    assert.deepEqual(ids(), ['127.0.0.11:8100', '127.0.0.12:8100']);

    srv.servfail = true;
    const q = srv.queries;
    const t0 = Date.now();
    while (srv.queries < q + 6 && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 10));
    assert.ok(srv.queries >= q + 6, 'kept asking while the server failed');
    assert.equal(sets.length, 2, 'a failed lookup changes nothing');
    assert.equal(logs.filter((l) => l.includes('lookup failed')).length, 1, logs.join('\n'));

    srv.servfail = false;
    srv.zones.delete('fleet.ns.svc');
    await waitSets(3, 'the empty set');
    assert.deepEqual(sets.at(-1), []);
  } finally {
    await d.close();
  }
});

test('config: A/AAAA need a port; SRV does not; unknown keys are refused', () => {
  assert.throws(() => parseRouterConfig({ discovery: { dns: { name: 'x', record: 'A' } } }), /discovery\.dns\.port: required with record A/);
  assert.equal(parseRouterConfig({ discovery: { dns: { name: '_h._tcp.x', record: 'SRV' } } }).discovery.dns!.record, 'SRV');
  assert.throws(() => parseRouterConfig({ discovery: { dns: { name: 'x', port: 1, intervall_ms: 5 } } }), /intervall_ms/);
});
