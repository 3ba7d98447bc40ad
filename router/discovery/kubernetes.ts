import { readFileSync } from 'node:fs';
import { DiscoveryV1Api, KubeConfig, Watch } from '@kubernetes/client-node';
import type { DiscoveryConfig, WorkerConfig } from '../config.js';
import { ConfigError } from '../config.js';
import type { Discovery } from './discovery.js';
import { workerAt } from './template.js';

type K8sConfig = NonNullable<DiscoveryConfig['kubernetes']>;

/** The parts of a discovery.k8s.io/v1 EndpointSlice read here (JSON as the API server sends it). */
export interface EndpointSliceLike {
  metadata?: { name?: string; resourceVersion?: string };
  addressType?: string;
  endpoints?: { addresses?: string[]; conditions?: { ready?: boolean | null } }[] | null;
  ports?: { name?: string | null; port?: number | null }[] | null;
}

/** Ready endpoints of the slices, at the port named `portName`: (host, port), sorted, no duplicates. Pure. */
export function readyAddresses(slices: Iterable<EndpointSliceLike>, portName: string): { host: string; port: number }[] {
  const out = new Map<string, { host: string; port: number }>();
  for (const s of slices) {
    if (s.addressType === 'FQDN') continue;
    const port = s.ports?.find((p) => (p.name ?? '') === portName)?.port;
    if (typeof port !== 'number') continue;
    for (const e of s.endpoints ?? []) {
      // The API: a nil ready is to be read as ready; terminating endpoints are ready=false.
      if (e.conditions?.ready === false) continue;
      const host = e.addresses?.[0];
      if (host) out.set(`${host}|${port}`, { host, port });
    }
  }
  return [...out.values()].sort((a, b) => (a.host < b.host ? -1 : a.host > b.host ? 1 : a.port - b.port));
}

/** The list + watch state machine: slices by name and the resourceVersion to watch from. Pure. */
export class SliceSet {
  readonly slices = new Map<string, EndpointSliceLike>();
  resourceVersion = '';

  /** A full list: replaces everything. */
  list(items: EndpointSliceLike[], resourceVersion: string): void {
    this.slices.clear();
    for (const s of items) this.slices.set(s.metadata?.name ?? '', s);
    this.resourceVersion = resourceVersion;
  }

  /** One watch event. Returns 'relist' when the history is gone (410), else 'ok'. */
  event(type: string, obj: EndpointSliceLike & { code?: number }): 'ok' | 'relist' {
    if (type === 'ERROR') {
      if (obj.code === 410) {
        this.resourceVersion = '';
        return 'relist';
      }
      return 'ok';
    }
    const name = obj.metadata?.name ?? '';
    if (type === 'ADDED' || type === 'MODIFIED') this.slices.set(name, obj);
    else if (type === 'DELETED') this.slices.delete(name);
    if (obj.metadata?.resourceVersion) this.resourceVersion = obj.metadata.resourceVersion;
    return 'ok';
  }
}

function inClusterNamespace(): string | null {
  try {
    return readFileSync('/var/run/secrets/kubernetes.io/serviceaccount/namespace', 'utf8').trim() || null;
  } catch {
    return null;
  }
}

function kubeConfigOf(c: K8sConfig): KubeConfig {
  const kc = new KubeConfig();
  if (c.api_server) {
    kc.loadFromOptions({
      // Plain http (kubectl proxy): the client refuses it unless TLS checks are off, and there is no TLS to check.
      clusters: [{ name: 'api', server: c.api_server.replace(/\/+$/, ''), skipTLSVerify: c.api_server.startsWith('http:') }],
      users: [{ name: 'none' }],
      contexts: [{ name: 'api', cluster: 'api', user: 'none' }],
      currentContext: 'api',
    });
  } else if (c.kubeconfig) kc.loadFromFile(c.kubeconfig);
  else kc.loadFromDefault(); // in a pod: the service account; else ~/.kube/config
  return kc;
}

/**
 * EndpointSlices selected by label_selector in one namespace: list, then watch from the list's
 * resourceVersion; a watch that ends is resumed from the last version seen, a 410 (history gone)
 * relists; errors back off (1 s doubling to 30 s) and keep the last set. RBAC: get, list and watch
 * on endpointslices (discovery.k8s.io) in that namespace (deploy/kubernetes/rbac.yaml).
 */
export class KubernetesDiscovery implements Discovery {
  readonly name: string;
  readonly namespace: string;
  private readonly kc: KubeConfig;
  private readonly state = new SliceSet();
  private lastKey: string | null = null;
  private request: AbortController | null = null;
  private closed = false;
  private backoff = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  private lastError: string | null = null;
  private onChange: (workers: WorkerConfig[]) => void = () => {};

  constructor(
    private readonly c: K8sConfig,
    private readonly log: (msg: string) => void = () => {},
  ) {
    this.namespace = c.namespace ?? inClusterNamespace() ?? 'default';
    this.name = `kubernetes endpointslices ${this.namespace}/${c.label_selector}`;
    try {
      this.kc = kubeConfigOf(c);
    } catch (e) {
      throw new ConfigError(`discovery.kubernetes: ${(e as Error).message}`);
    }
  }

  /** Resolves after the first list (an unreachable API is a ConfigError at start: nothing to route to is known). */
  async start(onChange: (workers: WorkerConfig[]) => void): Promise<void> {
    this.onChange = onChange;
    try {
      await this.relist();
    } catch (e) {
      throw new ConfigError(`discovery.kubernetes: cannot list ${this.name}: ${errText(e)}`);
    }
    void this.watch();
  }

  private async relist(): Promise<void> {
    const api = this.kc.makeApiClient(DiscoveryV1Api);
    const list = await api.listNamespacedEndpointSlice({ namespace: this.namespace, labelSelector: this.c.label_selector });
    this.state.list(list.items as EndpointSliceLike[], list.metadata?.resourceVersion ?? '');
    this.emit();
  }

  private emit(): void {
    const addrs = readyAddresses(this.state.slices.values(), this.c.port_name);
    const key = JSON.stringify(addrs);
    if (key === this.lastKey) return;
    this.lastKey = key;
    this.log(`discovery ${this.name}: ${addrs.length} ready endpoint(s)`);
    this.onChange(addrs.map((a) => workerAt(this.c.worker, a.host, a.port)));
  }

  private async watch(): Promise<void> {
    if (this.closed) return;
    try {
      if (!this.state.resourceVersion) await this.relist();
    } catch (e) {
      this.retry(e);
      return;
    }
    if (this.closed) return;
    const path = `/apis/discovery.k8s.io/v1/namespaces/${encodeURIComponent(this.namespace)}/endpointslices`;
    let sawEvent = false;
    let ended = false;
    const openedAt = Date.now();
    const done = (err: unknown) => {
      if (ended) return;
      ended = true;
      this.request = null;
      if (this.closed) return;
      if (err && (err as { statusCode?: number }).statusCode === 410) this.state.resourceVersion = '';
      if (err && (err as { name?: string }).name !== 'AbortError') this.retry(err);
      else if (!sawEvent && Date.now() - openedAt < 1000) this.retry(new Error('the watch ended at once'));
      else {
        if (sawEvent) this.backoff = 0;
        void this.watch(); // ended normally (server timeout): resume from the last version
      }
    };
    this.request = await new Watch(this.kc).watch(
      path,
      { labelSelector: this.c.label_selector, resourceVersion: this.state.resourceVersion, allowWatchBookmarks: true, timeoutSeconds: 300 },
      (type: string, obj: EndpointSliceLike & { code?: number }) => {
        sawEvent = true;
        this.lastError = null;
        if (this.state.event(type, obj) === 'relist') return; // the server ends the watch; done() relists
        if (type !== 'BOOKMARK') this.emit();
      },
      done,
    );
    if (this.closed) this.request?.abort();
  }

  private retry(e: unknown): void {
    if (this.closed) return;
    const why = errText(e);
    if (why !== this.lastError) this.log(`discovery ${this.name}: ${why}; keeping the last set, retrying`);
    this.lastError = why;
    this.backoff = Math.min(this.backoff ? this.backoff * 2 : 1000, 30_000);
    this.retryTimer = setTimeout(() => void this.watch(), this.backoff);
    this.retryTimer.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.request?.abort();
  }
}

function errText(e: unknown): string {
  const err = e as { code?: number | string; statusCode?: number; message?: string; cause?: { code?: string } };
  const status = err?.statusCode ?? (typeof err?.code === 'number' ? err.code : undefined);
  const base = err?.cause?.code ?? err?.message ?? String(e);
  return status !== undefined ? `HTTP ${status}: ${base.split('\n')[0]}` : base.split('\n')[0]!;
}
