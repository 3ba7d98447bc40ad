/**
 * Test helpers: child processes that speak JSON lines, with bounded waits, and
 * the Python peers' venv lookup.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const ROOT = resolve(import.meta.dirname, '..', '..');
export const KV_EVENTS_BIN = join(ROOT, 'bin', 'kv-events.js');
export const PY_DIR = join(ROOT, 'test', 'python');

/** `.venv/bin/python` when it can import msgspec, zmq and cbor2; otherwise the reason it cannot. */
export function findPython(): { python: string } | { skip: string } {
  const python = join(ROOT, '.venv', 'bin', 'python');
  if (!existsSync(python)) return { skip: `${python} not found: run scripts/setup-python.sh` };
  const r = spawnSync(python, ['-c', 'import msgspec, zmq, cbor2'], { timeout: 20_000, encoding: 'utf8' });
  if (r.status !== 0) return { skip: `${python} cannot import msgspec/zmq/cbor2: ${(r.stderr || r.error?.message || '').trim()}` };
  return { python };
}

/** Loud skip: the reason goes to the test report and to stderr. */
export function skipLoudly(t: { skip(msg: string): void }, reason: string): void {
  console.warn(`\n!!! SKIPPED (Python interop): ${reason}\n`);
  t.skip(reason);
}

export function tempDir(prefix = 'kvr-test-'): { dir: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `cond` every 20 ms until true; throws after timeoutMs, naming what it waited for. */
export async function until(cond: () => boolean, timeoutMs: number, what: string, onTick?: () => void): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    onTick?.();
    await sleep(20);
  }
}

/** A child process whose stdout lines are collected (and parsed as JSON when they are). */
export class Child {
  readonly proc: ChildProcess;
  readonly lines: string[] = [];
  stderr = '';
  exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private partial = '';

  constructor(cmd: string, args: string[], env: Record<string, string> = {}) {
    this.proc = spawn(cmd, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc.stdout!.setEncoding('utf8').on('data', (s: string) => {
      const parts = (this.partial + s).split('\n');
      this.partial = parts.pop()!;
      this.lines.push(...parts);
    });
    this.proc.stderr!.setEncoding('utf8').on('data', (s: string) => (this.stderr += s));
    this.proc.stdin!.on('error', () => {}); // the child may exit before reading
    this.exited = new Promise((resolve) =>
      this.proc.on('close', (code, signal) => {
        if (this.partial) this.lines.push(this.partial), (this.partial = '');
        resolve((this.exit = { code, signal }));
      }),
    );
  }

  /** Stdout lines that are JSON objects. */
  json(): Record<string, any>[] {
    const out: Record<string, any>[] = [];
    for (const l of this.lines) {
      try {
        out.push(JSON.parse(l));
      } catch {
        /* not JSON */
      }
    }
    return out;
  }

  async waitFor(pred: (o: Record<string, any>) => boolean, timeoutMs: number, what: string): Promise<Record<string, any>> {
    let hit: Record<string, any> | undefined;
    await until(() => (hit = this.json().find(pred)) !== undefined || this.exit !== null, timeoutMs, `${what}${this.diag()}`);
    if (!hit) throw new Error(`child exited (${JSON.stringify(this.exit)}) before ${what}${this.diag()}`);
    return hit;
  }

  async waitExit(timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    await until(() => this.exit !== null, timeoutMs, `the child to exit${this.diag()}`);
    return this.exit!;
  }

  send(line: string): void {
    this.proc.stdin!.write(line + '\n');
  }

  /** SIGTERM, then SIGKILL after 2 s. Safe to call twice. */
  async stop(): Promise<void> {
    if (this.exit) return;
    this.proc.kill('SIGTERM');
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 2000);
    await this.exited;
    clearTimeout(t);
  }

  diag(): string {
    const tail = this.lines.slice(-5).map((l) => l.slice(0, 300)).join('\n    ');
    return `\n  stdout (last lines):\n    ${tail}\n  stderr:\n    ${this.stderr.slice(-2000)}`;
  }
}
