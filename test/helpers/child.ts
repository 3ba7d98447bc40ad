/** Runs test/helpers/publisher-process.ts in a child process. */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export class PublisherProcess {
  private lines: string[] = [];
  private waiters: Array<() => void> = [];
  private constructor(private readonly child: ChildProcess) {
    createInterface({ input: child.stdout! }).on('line', (l) => {
      this.lines.push(l);
      for (const w of this.waiters.splice(0)) w();
    });
  }

  static async start(config: object): Promise<{ proc: PublisherProcess; endpoint: string; replayEndpoint: string | null }> {
    const script = fileURLToPath(new URL('./publisher-process.ts', import.meta.url));
    const child = spawn(process.execPath, ['--import', 'tsx', script, JSON.stringify(config)], { stdio: ['pipe', 'pipe', 'inherit'] });
    const proc = new PublisherProcess(child);
    const [, endpoint, replay] = (await proc.expect('ready')).split(' ');
    return { proc, endpoint: endpoint!, replayEndpoint: replay === '-' ? null : replay! };
  }

  /** Resolves with the next stdout line starting with `prefix`. */
  async expect(prefix: string, timeoutMs = 20_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.lines.findIndex((l) => l.startsWith(prefix));
      if (i >= 0) return this.lines.splice(i, 1)[0]!;
      if (Date.now() > deadline || this.child.exitCode !== null) throw new Error(`publisher process: no "${prefix}" line`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 100);
      });
    }
  }

  /** Publishes n batches in the child; resolves with its total. `marker` is written when they are out. */
  async publish(n: number, eventsPerBatch = 1, marker?: string): Promise<number> {
    this.child.stdin!.write(`publish ${n} ${eventsPerBatch}${marker ? ` ${marker}` : ''}\n`);
    return Number((await this.expect('published')).split(' ')[1]);
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.stdin!.write('exit\n');
    const t = setTimeout(() => this.child.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(t);
  }
}
