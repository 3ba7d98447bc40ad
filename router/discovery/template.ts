import type { WorkerConfig, WorkerTemplate } from '../config.js';
import { parseWorker } from '../config.js';

/** A discovered address (IPv4, IPv6 or host name) and port → a full worker config from the template. */
export function workerAt(template: WorkerTemplate, host: string, port: number): WorkerConfig {
  const { scheme, ...rest } = template;
  const h = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host.replace(/\.$/, '');
  return parseWorker({ ...rest, url: `${scheme}://${h}:${port}` });
}
