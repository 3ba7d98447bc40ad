import type { RouterConfig } from '../config.js';
import type { Discovery } from './discovery.js';
import { StaticDiscovery } from './discovery.js';
import { DnsDiscovery } from './dns.js';
import { FileDiscovery } from './file.js';
import { KubernetesDiscovery } from './kubernetes.js';

export type { Discovery } from './discovery.js';
export { DiscoveryController } from './controller.js';

/** Every configured source: the static `workers` first, then discovery.file, .dns, .kubernetes. */
export function discoverySources(config: RouterConfig, log: (msg: string) => void): Discovery[] {
  const d = config.discovery;
  const out: Discovery[] = [new StaticDiscovery(config.workers)];
  if (d.file) out.push(new FileDiscovery(d.file.path, d.file.poll_ms, log));
  if (d.dns) out.push(new DnsDiscovery(d.dns, log));
  if (d.kubernetes) out.push(new KubernetesDiscovery(d.kubernetes, log));
  return out;
}
