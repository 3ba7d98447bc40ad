/** Process-tree helpers for the lifecycle tests (Linux /proc). */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = fileURLToPath(new URL('../..', import.meta.url));

function ppidOf(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return null;
  }
}

export function cmdlineOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return '';
  }
}

/** Every live descendant of `pid`. */
export function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const pp = ppidOf(Number(d));
    if (pp !== null) children.set(pp, [...(children.get(pp) ?? []), Number(d)]);
  }
  const out: number[] = [];
  const stack = [pid];
  while (stack.length) for (const c of children.get(stack.pop()!) ?? []) (out.push(c), stack.push(c));
  return out;
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    // A zombie is dead for our purpose (its parent has not reaped it yet).
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

export async function waitUntil(what: string, timeoutMs: number, check: () => boolean | Promise<boolean>): Promise<void> {
  const t0 = Date.now();
  for (;;) {
    if (await Promise.resolve().then(check).catch(() => false)) return;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A fresh temp dir that the launched processes use as TMPDIR: every ipc socket file lands there. */
export function freshTmp(): string {
  return mkdtempSync(join(tmpdir(), 'kvl-'));
}

export interface Launched {
  proc: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

/** Starts a command in its own process group (so a failed test can kill the whole tree). */
export function launch(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): Launched {
  const proc = spawn(cmd, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: { ...process.env, ...env } });
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => proc.once('exit', (c, s) => r(c ?? (s ? 128 : null))));
  return { proc, output: () => out, exited };
}

/** Kills what is left of a launched tree (test cleanup only). */
export function killTree(l: Launched, pids: number[]): void {
  for (const p of pids) if (alive(p)) process.kill(p, 'SIGKILL');
  try {
    process.kill(-l.proc.pid!, 'SIGKILL');
  } catch {
    /* already gone */
  }
}

/** What is left in a TMPDIR besides tsx's own compile cache (tsx-<uid>), which is expected. */
export function leftovers(tmp: string): string[] {
  return readdirSync(tmp).filter((f) => !/^tsx-\d+$/.test(f));
}
