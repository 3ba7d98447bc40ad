import type { FleetRow, Snapshot } from './dashboard/snapshot.js';

const DASH = '–';
const pct = (v: number | null) => (v === null ? DASH : `${Math.round(v * 100)}%`);
const int = (v: number | null) => (v === null ? DASH : String(Math.round(v)));

const COLUMNS: [string, (r: FleetRow) => string][] = [
  ['WORKER', (r) => r.worker],
  ['RANK', (r) => String(r.rank)],
  ['STATE', (r) => (r.draining ? 'draining' : r.state)],
  ['STREAM', (r) => (r.trusted === null ? 'none' : r.trusted ? 'trusted' : 'untrusted')],
  ['BLOCKS', (r) => String(r.blocks)],
  ['FILL', (r) => pct(r.cache_fill)],
  ['IN_FLIGHT', (r) => String(r.in_flight)],
  ['QUEUED', (r) => String(r.queued_prefill_tokens)],
  ['REQ/S', (r) => (r.requests_per_s === null ? DASH : r.requests_per_s.toFixed(1))],
  ['HIT_PRED', (r) => pct(r.predicted_hit_rate)],
  ['HIT_ACTUAL', (r) => pct(r.actual_hit_rate)],
  ['LAG_MS', (r) => int(r.lag_ms)],
  ['GAPS', (r) => int(r.gaps)],
  ['REPLAYS', (r) => int(r.replays)],
  ['RESETS', (r) => int(r.resets)],
];

/**
 * The dashboard's fleet table as text (`kv-router status`). Pure. With `color`, a worker out
 * of rotation is red and an untrusted stream yellow; the reasons follow the table.
 */
export function formatStatus(s: Snapshot, color = false): string {
  const paint = (code: string, text: string) => (color ? `\x1b[${code}m${text}\x1b[0m` : text);
  const cells = s.fleet.map((r) => COLUMNS.map(([, f]) => f(r)));
  const widths = COLUMNS.map(([h], i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]) => c.map((v, i) => (i < 4 ? v.padEnd(widths[i]!) : v.padStart(widths[i]!))).join('  ').trimEnd();
  const out = [`policy ${s.policy} · ${s.totals.healthy}/${s.totals.workers} workers healthy · ${s.totals.in_flight} in flight`, '', line(COLUMNS.map(([h]) => h))];
  s.fleet.forEach((r, i) => {
    const text = line(cells[i]!);
    out.push(r.state !== 'healthy' ? paint('31', text) : r.trusted === false ? paint('33', text) : text);
  });
  if (s.fleet.length === 0) out.push('(no workers)');
  const notes: string[] = [];
  for (const r of s.fleet) {
    if (r.state !== 'healthy' || r.trusted !== true) notes.push(`${r.worker}:${r.rank}: ${r.state !== 'healthy' && r.last_error ? `${r.state}: ${r.last_error}` : r.trust_reason}`);
    if (r.prediction_warning) notes.push(`${r.worker}:${r.rank}: prediction: ${r.prediction_warning}`);
  }
  if (notes.length > 0) out.push('', ...notes);
  return out.join('\n') + '\n';
}
