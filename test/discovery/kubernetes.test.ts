// Kubernetes EndpointSlice discovery through @kubernetes/client-node against a local HTTP server
// that speaks the EndpointSlice list/watch API (test/discovery/k8s-api.ts) with recorded-style
// payloads (fixtures/endpointslices.json). No cluster runs here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { parseRouterConfig, workerIdOf, type WorkerConfig } from '../../router/config.js';
import { KubernetesDiscovery, readyAddresses, SliceSet } from '../../router/discovery/kubernetes.js';
import { FakeK8sApi } from './k8s-api.js';

const fx = JSON.parse(readFileSync(new URL('./fixtures/endpointslices.json', import.meta.url), 'utf8')) as { sliceA: any; sliceB: any };
const clone = <T>(v: T): T => JSON.parse(JSON.stringify(v));

test('readyAddresses: ready (or nil) endpoints only, at the named port', () => {
  assert.deepEqual(readyAddresses([fx.sliceA], 'http'), [{ host: '10.0.0.1', port: 8100 }, { host: '10.0.0.3', port: 8100 }]);
  assert.deepEqual(readyAddresses([fx.sliceA], 'metrics').map((a) => a.port), [9090, 9090]);
  assert.deepEqual(readyAddresses([fx.sliceA], 'grpc'), []);
});

test('SliceSet: events move the resourceVersion; a 410 asks for a relist', () => {
  const s = new SliceSet();
  s.list([fx.sliceA], '100');
  assert.equal(s.event('ADDED', fx.sliceB), 'ok');
  assert.equal(s.resourceVersion, '102');
  assert.equal(s.event('DELETED', fx.sliceA), 'ok');
  assert.deepEqual([...s.slices.keys()], ['kv-workers-p9w4d']);
  assert.equal(s.event('ERROR', { code: 410 } as never), 'relist');
  assert.equal(s.resourceVersion, '');
});

async function until(what: string, cond: () => boolean, timeoutMs = 8000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('list, watch, resume after the watch ends, relist after 410; label selector and namespace sent', { timeout: 30_000 }, async () => {
  const api = await FakeK8sApi.start();
  api.items = [fx.sliceA];
  api.listResourceVersion = '100';
  const cfg = parseRouterConfig({
    discovery: { kubernetes: { namespace: 'inference', label_selector: 'app.kubernetes.io/name=kv-worker', port_name: 'http', api_server: api.url, worker: { kv_events: { endpoint: 'tcp://*:5557', replay_endpoint: 'tcp://*:5558' } } } },
  }).discovery.kubernetes!;
  const sets: WorkerConfig[][] = [];
  const logs: string[] = [];
  const d = new KubernetesDiscovery(cfg, (m) => logs.push(m));
  const ids = () => sets.at(-1)!.map(workerIdOf).sort();
  try {
    await d.start((w) => sets.push(w));
    assert.deepEqual(ids(), ['10.0.0.1:8100', '10.0.0.3:8100']);
    assert.equal(sets[0]![0]!.kv_events?.replay_endpoint, 'tcp://*:5558');
    await api.requestCount(2);
    assert.deepEqual(api.requests[0], { watch: false, namespace: 'inference', labelSelector: 'app.kubernetes.io/name=kv-worker', resourceVersion: null });
    assert.deepEqual(api.requests[1], { watch: true, namespace: 'inference', labelSelector: 'app.kubernetes.io/name=kv-worker', resourceVersion: '100' });

    // The terminating pod becomes ready again; a second slice appears.
    const a2 = clone(fx.sliceA);
    a2.metadata.resourceVersion = '101';
    a2.endpoints[1].conditions = { ready: true, serving: true, terminating: false };
    api.send('MODIFIED', a2);
    await until('3 workers', () => sets.length === 2);
    assert.deepEqual(ids(), ['10.0.0.1:8100', '10.0.0.2:8100', '10.0.0.3:8100']);
    api.send('ADDED', fx.sliceB);
    await until('4 workers', () => sets.length === 3);
    assert.deepEqual(ids(), ['10.0.0.1:8100', '10.0.0.2:8100', '10.0.0.3:8100', '10.0.1.1:8100']);
    api.send('BOOKMARK', { kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1', metadata: { resourceVersion: '150' } });

    // The API server ends the watch: resumed from the last version seen (the bookmark's), no relist.
    await until('bookmark applied', () => (d as unknown as { state: SliceSet }).state.resourceVersion === '150');
    api.endWatches();
    await api.requestCount(3);
    assert.deepEqual(api.requests[2], { watch: true, namespace: 'inference', labelSelector: 'app.kubernetes.io/name=kv-worker', resourceVersion: '150' });
    assert.equal(sets.length, 3, 'resuming changes nothing');

    // History gone (410 Gone as a watch ERROR event, then the stream ends): a relist, then a watch from the new version.
    api.items = [fx.sliceB];
    api.listResourceVersion = '200';
    await until('watch open', () => api.openWatches() === 1);
    api.send('ERROR', { kind: 'Status', apiVersion: 'v1', status: 'Failure', message: 'too old resource version: 150 (180)', reason: 'Expired', code: 410 });
    api.endWatches();
    await api.requestCount(5);
    assert.equal(api.requests[3]!.watch, false, 'relisted');
    assert.deepEqual(api.requests[4], { watch: true, namespace: 'inference', labelSelector: 'app.kubernetes.io/name=kv-worker', resourceVersion: '200' });
    await until('the relisted set', () => sets.length === 4);
    assert.deepEqual(ids(), ['10.0.1.1:8100']);

    // The last slice goes: no workers.
    await until('watch open', () => api.openWatches() === 1);
    const b2 = clone(fx.sliceB);
    b2.metadata.resourceVersion = '201';
    api.send('DELETED', b2);
    await until('empty set', () => sets.length === 5);
    assert.deepEqual(sets.at(-1), []);
  } finally {
    await d.close();
    await api.close();
  }
});

test('a list refused at start (RBAC missing) is one clear config error', async () => {
  const api = await FakeK8sApi.start();
  api.listStatus = 403;
  const cfg = parseRouterConfig({ discovery: { kubernetes: { namespace: 'inference', label_selector: 'app=kv-worker', port_name: 'http', api_server: api.url } } }).discovery.kubernetes!;
  const d = new KubernetesDiscovery(cfg);
  try {
    await assert.rejects(d.start(() => {}), (e: Error) => e.name === 'ConfigError' && /cannot list kubernetes endpointslices inference\/app=kv-worker: HTTP 403/.test(e.message) && !e.message.includes('\n'));
  } finally {
    await d.close();
    await api.close();
  }
});
