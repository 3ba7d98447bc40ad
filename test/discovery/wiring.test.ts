// The discovery block wired into a real router (startRouter): DNS and Kubernetes sources bring
// real HTTP upstreams into rotation and take them out. DNS answers come from the tiny UDP server
// of dns-server.ts; the Kubernetes API is the local list/watch server of k8s-api.ts (no cluster).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { parseRouterConfig, type RouterConfigInput } from '../../router/config.js';
import { startRouter } from '../../router/server.js';
import { fakeUpstream, waitUntil } from '../router/helpers.js';
import { TinyDns } from './dns-server.js';
import { FakeK8sApi } from './k8s-api.js';

const completion = (res: ServerResponse) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ id: 'x', object: 'text_completion', choices: [{ index: 0, text: 'ok', finish_reason: 'length' }], usage: { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 } }));

async function routerWithDiscovery(discovery: RouterConfigInput['discovery']) {
  return startRouter(parseRouterConfig({ port: 0, tokenizer_threads: 0, health: { interval_ms: 100 }, discovery }));
}

async function post(url: string): Promise<Response> {
  return fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: [1, 2, 3], max_tokens: 1 }) });
}

test('discovery.dns in a router: the name\'s address joins, and leaves when the record goes', { timeout: 30_000 }, async () => {
  const up = await fakeUpstream((_req, res) => completion(res));
  const dns = await TinyDns.start();
  dns.zones.set('kv-workers.test', { A: ['127.0.0.1'] });
  const router = await routerWithDiscovery({ dns: { name: 'kv-workers.test', record: 'A', port: up.port, servers: [dns.server], interval_ms: 100, timeout_ms: 300 }, drain_timeout_ms: 1000 });
  try {
    const reg = router.service.registry;
    await waitUntil('discovered worker healthy', 10_000, () => reg.get(`127.0.0.1:${up.port}`)?.state === 'healthy');
    const r = await post(router.url);
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('x-kv-router-worker'), `127.0.0.1:${up.port}`);
    dns.zones.set('kv-workers.test', {});
    await waitUntil('worker removed', 10_000, () => reg.list().length === 0);
  } finally {
    await router.close();
    await dns.close();
    await up.close();
  }
});

test('discovery.kubernetes in a router: a ready endpoint joins; turning not-ready drains it', { timeout: 30_000 }, async () => {
  const up = await fakeUpstream((_req, res) => completion(res));
  const api = await FakeK8sApi.start();
  const fx = JSON.parse(readFileSync(new URL('./fixtures/endpointslices.json', import.meta.url), 'utf8')) as { sliceB: any };
  const slice = JSON.parse(JSON.stringify(fx.sliceB));
  slice.endpoints[0].addresses = ['127.0.0.1'];
  slice.ports[0].port = up.port;
  api.items = [slice];
  api.listResourceVersion = '10';
  const router = await routerWithDiscovery({ kubernetes: { namespace: 'inference', label_selector: 'kubernetes.io/service-name=kv-workers', port_name: 'http', api_server: api.url }, drain_timeout_ms: 1000 });
  try {
    const reg = router.service.registry;
    const id = `127.0.0.1:${up.port}`;
    await waitUntil('discovered worker healthy', 10_000, () => reg.get(id)?.state === 'healthy');
    assert.equal((await post(router.url)).status, 200);
    await waitUntil('watching', 5000, () => api.openWatches() === 1);
    slice.metadata.resourceVersion = '11';
    slice.endpoints[0].conditions = { ready: false, serving: true, terminating: true };
    api.send('MODIFIED', slice);
    await waitUntil('worker removed', 10_000, () => reg.get(id) === undefined);
    assert.equal((await post(router.url)).status, 503, 'no worker left');
  } finally {
    await router.close();
    await api.close();
    await up.close();
  }
});
