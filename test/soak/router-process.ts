/** `kv-router` as a child process (its own RSS and sockets), configured by a temp file. */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sleep } from '../helpers/net.js';

const BIN = fileURLToPath(new URL('../../bin/kv-router.js', import.meta.url));

export class RouterProcess {
  output = '';
  url = '';
  private constructor(
    readonly proc: ChildProcess,
    private readonly configFile: string,
  ) {
    proc.stdout!.on('data', (d) => (this.output += d));
    proc.stderr!.on('data', (d) => (this.output += d));
  }

  static async start(config: object, timeoutMs = 60_000): Promise<RouterProcess> {
    const file = join(tmpdir(), `kvr-soak-${process.pid}-${Date.now()}.json`);
    writeFileSync(file, JSON.stringify(config));
    const r = new RouterProcess(spawn(process.execPath, ['--expose-gc', BIN, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] }), file);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = /listening on (http:\/\/[\d.]+:\d+)/.exec(r.output);
      if (m) {
        r.url = m[1]!;
        return r;
      }
      if (r.proc.exitCode !== null || Date.now() > deadline) {
        await r.stop();
        throw new Error(`kv-router did not start:\n${r.output}`);
      }
      await sleep(50);
    }
  }

  get pid(): number {
    return this.proc.pid!;
  }

  /** The router's heap after a full GC, MB (it answers SIGUSR2 when started with --expose-gc). */
  async heapAfterGcMb(timeoutMs = 10_000): Promise<number> {
    const from = this.output.length;
    this.proc.kill('SIGUSR2');
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = /heap-after-gc (\d+)/.exec(this.output.slice(from));
      if (m) return Math.round(Number(m[1]) / 1e5) / 10;
      if (Date.now() > deadline) throw new Error(`no heap report from the router within ${timeoutMs} ms`);
      await sleep(20);
    }
  }

  /** Resident set size, MB (Linux /proc). */
  rssMb(): number {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${this.pid}/status`, 'utf8'));
    return m ? Math.round(Number(m[1]) / 1024) : NaN;
  }

  /** Open sockets (fds that are sockets). */
  sockets(): number {
    let n = 0;
    for (const fd of readdirSync(`/proc/${this.pid}/fd`)) {
      try {
        if (readlinkSync(`/proc/${this.pid}/fd/${fd}`).startsWith('socket:')) n++;
      } catch {
        /* closed meanwhile */
      }
    }
    return n;
  }

  async stop(): Promise<void> {
    rmSync(this.configFile, { force: true });
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const exited = new Promise((r) => this.proc.once('exit', r));
    this.proc.kill('SIGTERM');
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 8000);
    await exited;
    clearTimeout(t);
  }
}
