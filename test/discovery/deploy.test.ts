// deploy/kubernetes/: every manifest parses; the router config in the ConfigMap passes the
// router's own schema (parseRouterConfig), and the pieces agree with each other (the Deployment
// mounts that config, the RBAC grants what the EndpointSlice discovery does, the discovery's
// label selector and port name match the workers' Service).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import yaml from 'js-yaml';
import { parseRouterConfig } from '../../router/config.js';

const dir = fileURLToPath(new URL('../../deploy/kubernetes/', import.meta.url));
type Obj = any;
const docs: { file: string; obj: Obj }[] = readdirSync(dir)
  .filter((f) => f.endsWith('.yaml'))
  .flatMap((file) => yaml.loadAll(readFileSync(join(dir, file), 'utf8')).filter(Boolean).map((obj) => ({ file, obj: obj as Obj })));
const find = (kind: string, name: string): Obj => {
  const d = docs.find((x) => x.obj.kind === kind && x.obj.metadata?.name === name);
  assert.ok(d, `no ${kind} ${name} in deploy/kubernetes`);
  return d.obj;
};

test('every manifest is a Kubernetes object with apiVersion, kind and a name', () => {
  assert.ok(docs.length >= 9, `${docs.length} objects`);
  for (const { file, obj } of docs) {
    assert.equal(typeof obj.apiVersion, 'string', file);
    assert.equal(typeof obj.kind, 'string', file);
    assert.match(obj.metadata?.name ?? '', /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, file);
  }
});

test('the ConfigMap router config passes the router schema and the Deployment runs it', () => {
  const cm = find('ConfigMap', 'kv-router-config');
  const config = parseRouterConfig(JSON.parse(cm.data['router.json']), 'deploy/kubernetes ConfigMap kv-router-config');
  const dep = find('Deployment', 'kv-router');
  assert.ok(dep.spec.replicas >= 2);
  const pod = dep.spec.template.spec;
  const c = pod.containers[0];
  const mount = c.volumeMounts.find((m: Obj) => pod.volumes.find((v: Obj) => v.name === m.name)?.configMap?.name === 'kv-router-config');
  assert.ok(mount, 'the config map is mounted');
  assert.equal(c.command[c.command.indexOf('--config') + 1], `${mount.mountPath}/router.json`);
  assert.equal(c.ports.find((p: Obj) => p.name === 'http').containerPort, config.port);
  assert.notEqual(config.host, '127.0.0.1', 'reachable from the Service');
  assert.ok(pod.terminationGracePeriodSeconds * 1000 > config.drain_timeout_ms, 'the grace period covers the drain');
  // The Service reaches these pods.
  const svc = find('Service', 'kv-router');
  for (const [k, v] of Object.entries(svc.spec.selector)) assert.equal(dep.spec.template.metadata.labels[k], v);
  assert.ok(svc.spec.ports.some((p: Obj) => p.targetPort === 'http'));

  // Discovery: the workers' Service slices, at a port the Service names.
  const k8s = config.discovery.kubernetes;
  assert.ok(k8s, 'discovery.kubernetes is set');
  const workers = find('Service', 'kv-workers');
  assert.equal(k8s.label_selector, `kubernetes.io/service-name=${workers.metadata.name}`);
  assert.ok(workers.spec.ports.some((p: Obj) => p.name === k8s.port_name), `no port named ${k8s.port_name}`);
  assert.equal(workers.spec.clusterIP, 'None', 'headless: its DNS name lists the pods too (discovery.dns)');
  const wdep = find('Deployment', 'kv-worker');
  const wc = wdep.spec.template.spec.containers[0];
  const events = JSON.parse(wc.command[wc.command.indexOf('--kv-events-config') + 1]);
  assert.equal(events.endpoint, k8s.worker.kv_events?.endpoint);
  assert.equal(events.replay_endpoint, k8s.worker.kv_events?.replay_endpoint);
  assert.equal(events.topic, k8s.worker.kv_events?.topic);
});

test('RBAC: the router service account may get, list and watch endpointslices, nothing more', () => {
  const dep = find('Deployment', 'kv-router');
  const sa = find('ServiceAccount', dep.spec.template.spec.serviceAccountName);
  const binding = docs.map((d) => d.obj).find((o) => o.kind === 'RoleBinding' && o.subjects.some((s: Obj) => s.kind === 'ServiceAccount' && s.name === sa.metadata.name));
  assert.ok(binding, 'a RoleBinding for the router service account');
  const role = find('Role', binding.roleRef.name);
  assert.deepEqual(role.rules, [{ apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['get', 'list', 'watch'] }]);
});

test('NATS: a Deployment and a Service on the client port', () => {
  const dep = find('Deployment', 'kv-router-nats');
  const svc = find('Service', 'kv-router-nats');
  for (const [k, v] of Object.entries(svc.spec.selector)) assert.equal(dep.spec.template.metadata.labels[k], v);
  assert.ok(svc.spec.ports.some((p: Obj) => p.port === 4222));
});
