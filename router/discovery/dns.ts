import { promises as dns } from 'node:dns';
import type { DiscoveryConfig, WorkerConfig } from '../config.js';
import type { Discovery } from './discovery.js';
import { workerAt } from './template.js';

type DnsConfig = NonNullable<DiscoveryConfig['dns']>;

/** The answers that mean "this name has no workers now" (not a failure to ask). */
const EMPTY_CODES = new Set(['ENOTFOUND', 'ENODATA']);

/** The calls used of dns.promises.Resolver (a test can hand in its own). */
export interface ResolverLike {
  resolve4(name: string): Promise<string[]>;
  resolve6(name: string): Promise<string[]>;
  resolveSrv(name: string): Promise<{ name: string; port: number }[]>;
}

/** Addresses (host, port) of the name's records; [] when the name has none. Throws on a failure to resolve. */
export async function resolveAddresses(r: ResolverLike, c: Pick<DnsConfig, 'name' | 'record' | 'port'>): Promise<{ host: string; port: number }[]> {
  const ips = async (name: string, record: DnsConfig['record']): Promise<string[]> => {
    const ask = (f: (n: string) => Promise<string[]>) => f.call(r, name).catch((e: NodeJS.ErrnoException) => {
      if (EMPTY_CODES.has(e.code ?? '')) return [];
      throw e;
    });
    if (record === 'A') return ask(r.resolve4);
    if (record === 'AAAA') return ask(r.resolve6);
    return [...(await ask(r.resolve4)), ...(await ask(r.resolve6))];
  };
  if (c.record !== 'SRV') return (await ips(c.name, c.record)).map((host) => ({ host, port: c.port! }));
  let srv: { name: string; port: number }[];
  try {
    srv = await r.resolveSrv(c.name);
  } catch (e) {
    if (EMPTY_CODES.has((e as NodeJS.ErrnoException).code ?? '')) return [];
    throw e;
  }
  // Targets resolved by the same resolver: the addresses it names are the ones to use.
  const out: { host: string; port: number }[] = [];
  for (const s of srv) for (const host of await ips(s.name, 'A+AAAA')) out.push({ host, port: s.port });
  return out;
}

/**
 * The A/AAAA (or SRV) records of a name, re-resolved every interval_ms: a Kubernetes headless
 * Service lists its ready pods this way without any API access. A failed lookup (timeout,
 * SERVFAIL, refused) keeps the last set and logs once; "no such name / no records" is an empty set.
 */
export class DnsDiscovery implements Discovery {
  readonly name: string;
  private timer: NodeJS.Timeout | null = null;
  private lastKey: string | null = null;
  private lastError: string | null = null;
  private busy: Promise<void> = Promise.resolve();
  private closed = false;
  private readonly resolver: ResolverLike & { cancel?: () => void };

  constructor(
    private readonly c: DnsConfig,
    private readonly log: (msg: string) => void = () => {},
    resolver?: ResolverLike,
  ) {
    this.name = `dns ${c.record} ${c.name}`;
    if (resolver) this.resolver = resolver;
    else {
      const r = new dns.Resolver({ timeout: c.timeout_ms, tries: 2 });
      if (c.servers) r.setServers(c.servers);
      this.resolver = r;
    }
  }

  async start(onChange: (workers: WorkerConfig[]) => void): Promise<void> {
    await this.once(onChange, true);
    this.timer = setInterval(() => {
      this.busy = this.busy.then(() => this.once(onChange, false));
    }, this.c.interval_ms);
    this.timer.unref();
  }

  private async once(onChange: (workers: WorkerConfig[]) => void, first: boolean): Promise<void> {
    if (this.closed) return;
    let addrs: { host: string; port: number }[];
    try {
      addrs = await resolveAddresses(this.resolver, this.c);
    } catch (e) {
      const why = `${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`;
      if (why !== this.lastError) this.log(`discovery ${this.name}: lookup failed (${why}); keeping the last set${first ? ' (none yet)' : ''}`);
      this.lastError = why;
      if (first) onChange([]);
      return;
    }
    this.lastError = null;
    if (this.closed) return;
    const unique = [...new Map(addrs.map((a) => [`${a.host}|${a.port}`, a])).values()].sort((a, b) => (a.host < b.host ? -1 : a.host > b.host ? 1 : a.port - b.port));
    const key = JSON.stringify(unique);
    if (key === this.lastKey) return;
    this.lastKey = key;
    this.log(`discovery ${this.name}: ${unique.length} address(es)`);
    onChange(unique.map((a) => workerAt(this.c.worker, a.host, a.port)));
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.resolver.cancel?.();
    await this.busy.catch(() => {});
  }
}
