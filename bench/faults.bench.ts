/**
 * Fault-injection figures: runs the fault suite (test/faults) and the soak (test/soak), each
 * file in its own process, collects what they record (FAULT_FIGURES), and prints: faults
 * injected, divergent blocks after settling, time from fault to a trusted tree again (p50/p99),
 * requests sent/answered under load, router RSS before/after. Writes bench/results/faults.json.
 *
 *   npm run bench:faults            (all files)
 *   npm run bench:faults -- stream  (files whose name contains "stream")
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

type Rec =
  | { kind: 'fault'; fault: string; divergent: number; recoverMs: number | null; outcome: string }
  | { kind: 'load'; sent: number; answered: number; errors: number; rssBeforeMb: number; rssAfterMb: number };

const root = fileURLToPath(new URL('..', import.meta.url));
const filter = process.argv[2] ?? '';
const files = ['test/faults', 'test/soak']
  .flatMap((d) => readdirSync(join(root, d)).filter((f) => f.endsWith('.test.ts')).map((f) => `${d}/${f}`))
  .filter((f) => f.includes(filter))
  .sort();
const figures = join(tmpdir(), `kvr-fault-figures-${process.pid}.jsonl`);
rmSync(figures, { force: true });

const runs: { file: string; ok: boolean; seconds: number }[] = [];
for (const file of files) {
  const t0 = Date.now();
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--test', file], { cwd: root, env: { ...process.env, FAULT_FIGURES: figures }, encoding: 'utf8', timeout: 300_000 });
  const seconds = (Date.now() - t0) / 1000;
  const ok = r.status === 0;
  runs.push({ file, ok, seconds });
  const summary = (r.stdout ?? '').split('\n').filter((l) => /^# (pass|fail|todo)/.test(l)).join(', ');
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${file} (${seconds.toFixed(1)} s) ${summary}`);
}

let recs: Rec[] = [];
try {
  recs = readFileSync(figures, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Rec);
} catch {
  /* no figures */
}
rmSync(figures, { force: true });

const faults = recs.filter((r): r is Extract<Rec, { kind: 'fault' }> => r.kind === 'fault');
const loads = recs.filter((r): r is Extract<Rec, { kind: 'load' }> => r.kind === 'load');
const times = faults.flatMap((f) => (f.recoverMs === null || f.outcome !== 'exact' ? [] : [f.recoverMs])).sort((a, b) => a - b);
const pct = (p: number) => (times.length ? times[Math.min(times.length - 1, Math.ceil((p / 100) * times.length) - 1)]! : NaN);

const result = {
  date: new Date().toISOString(),
  files: runs,
  faultsInjected: faults.length,
  divergentAfterSettling: faults.reduce((s, f) => s + f.divergent, 0),
  untrustedMarks: faults.filter((f) => f.outcome === 'untrusted').length,
  recoverToTrustedMs: { n: times.length, p50: pct(50), p99: pct(99), max: times.at(-1) ?? NaN },
  load: loads,
  faults,
};

console.log('\nfault                                         outcome      divergent  to trusted (ms)');
for (const f of faults) console.log(`${f.fault.padEnd(45)} ${f.outcome.slice(0, 40).padEnd(12)} ${String(f.divergent).padStart(9)}  ${f.recoverMs ?? '-'}`);
console.log(`\nfaults injected: ${result.faultsInjected}; divergent blocks after settling: ${result.divergentAfterSettling}; explicit untrusted marks: ${result.untrustedMarks}`);
console.log(`time from fault to trusted tree again: p50 ${pct(50)} ms, p99 ${pct(99)} ms (n = ${times.length})`);
for (const l of loads) console.log(`under load: ${l.sent} requests sent, ${l.answered} answered (${l.errors} as clear errors), router RSS ${l.rssBeforeMb} → ${l.rssAfterMb} MB`);
mkdirSync(join(root, 'bench/results'), { recursive: true });
writeFileSync(join(root, 'bench/results/faults.json'), JSON.stringify(result, null, 2) + '\n');
console.log('written bench/results/faults.json');
process.exit(runs.every((r) => r.ok) ? 0 : 1);
