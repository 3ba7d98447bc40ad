/** `kv-router status [URL] [--key KEY] [--json] [--watch]`: the dashboard's fleet table in a terminal. */
import { parseArgs } from 'node:util';
import type { Snapshot } from './dashboard/snapshot.js';
import { formatStatus } from './status-table.js';

export const STATUS_USAGE = `usage: kv-router status [URL] [options]

The fleet as the router sees it (the table of /dashboard), read from URL/dashboard/snapshot.

  URL            the router (default http://127.0.0.1:8000)
  --key KEY      the router's admin key, when it has one (or env KV_ROUTER_ADMIN_KEY)
  --json         print the snapshot JSON instead of the table
  --watch        print again every second (until Ctrl-C); requests/s need two snapshots
  -h, --help`;

export class StatusError extends Error {}

export async function fetchSnapshot(url: string, key: string | null, timeoutMs = 5000): Promise<Snapshot> {
  const target = `${url.replace(/\/+$/, '')}/dashboard/snapshot`;
  let res: Response;
  try {
    res = await fetch(target, { headers: key ? { authorization: `Bearer ${key}` } : {}, signal: AbortSignal.timeout(timeoutMs) });
  } catch (e) {
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    const why = (e as Error).name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : (cause?.code ?? cause?.message ?? (e as Error).message);
    throw new StatusError(`cannot reach the router at ${url}: ${why} (is it running? pass its URL: kv-router status http://HOST:PORT)`);
  }
  if (res.status === 401) {
    await res.arrayBuffer().catch(() => {});
    throw new StatusError(`the router at ${url} ${key ? 'rejected the admin key' : 'needs its admin key'}: pass --key KEY or set KV_ROUTER_ADMIN_KEY`);
  }
  const text = await res.text();
  if (!res.ok) throw new StatusError(`GET ${target}: HTTP ${res.status}: ${text.slice(0, 300)}`);
  try {
    const j = JSON.parse(text) as Snapshot;
    if (!Array.isArray(j.fleet)) throw new Error('no fleet');
    return j;
  } catch {
    throw new StatusError(`GET ${target} did not answer with a dashboard snapshot (is ${url} a kv-router?)`);
  }
}

export async function statusMain(argv: string[]): Promise<number> {
  let v;
  try {
    v = parseArgs({ args: argv, allowPositionals: true, options: { key: { type: 'string' }, json: { type: 'boolean' }, watch: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
  } catch (e) {
    process.stderr.write(`kv-router status: ${(e as Error).message}\n${STATUS_USAGE}\n`);
    return 2;
  }
  if (v.values.help) {
    process.stdout.write(STATUS_USAGE + '\n');
    return 0;
  }
  if (v.positionals.length > 1) {
    process.stderr.write(`kv-router status: one URL at most, got ${v.positionals.join(' ')}\n`);
    return 2;
  }
  const url = v.positionals[0] ?? 'http://127.0.0.1:8000';
  if (!/^https?:\/\/[^/]+/.test(url)) {
    process.stderr.write(`kv-router status: "${url}" is not an http(s) URL\n`);
    return 2;
  }
  const key = v.values.key ?? process.env.KV_ROUTER_ADMIN_KEY ?? null;
  for (;;) {
    try {
      const s = await fetchSnapshot(url, key);
      const text = v.values.json ? JSON.stringify(s, null, 2) + '\n' : formatStatus(s, process.stdout.isTTY === true);
      process.stdout.write(v.values.watch && process.stdout.isTTY ? `\x1b[H\x1b[2J${text}` : text);
    } catch (e) {
      if (!(e instanceof StatusError)) throw e;
      process.stderr.write(`kv-router status: ${e.message}\n`);
      if (!v.values.watch) return 1;
    }
    if (!v.values.watch) return 0;
    await new Promise((r) => setTimeout(r, 1000));
  }
}
