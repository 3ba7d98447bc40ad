/**
 * Real `kv-worker --engine sim` processes on fixed loopback ports, so a test can
 * kill, restart (same ports: the router's subscriber reconnects) or load them.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { freePort, sleep } from '../helpers/net.js';

const BIN = fileURLToPath(new URL('../../bin/kv-worker.js', import.meta.url));

/** Every worker made here, so a failed setup still stops what it started (stopAllSims). */
const all = new Set<SimWorker>();
/** Ports handed out by this process: two workers prepared at once never share one. */
const used = new Set<number>();

async function port(): Promise<number> {
  for (;;) {
    const p = await freePort();
    if (!used.has(p)) {
      used.add(p);
      return p;
    }
  }
}

/** Stops every worker this process started (for after() hooks: setup may have failed half-way). */
export async function stopAllSims(): Promise<void> {
  await Promise.all([...all].map((w) => w.stop()));
}

export interface SimOptions {
  blockSize?: number;
  numBlocks?: number;
  bufferSteps?: number;
  topic?: string;
  /** Extra kv-events config keys (e.g. curve). */
  extraArgs?: string[];
}

export class SimWorker {
  proc: ChildProcess | null = null;
  output = '';
  readonly url: string;
  /** Where a subscriber connects. */
  readonly endpoint: string;
  readonly replayEndpoint: string;
  starts = 0;

  private constructor(
    readonly id: string,
    readonly port: number,
    readonly pubPort: number,
    readonly replayPort: number,
    readonly opts: Required<Omit<SimOptions, 'extraArgs'>> & { extraArgs: string[] },
  ) {
    this.url = `http://127.0.0.1:${port}`;
    this.endpoint = `tcp://127.0.0.1:${pubPort}`;
    this.replayEndpoint = `tcp://127.0.0.1:${replayPort}`;
  }

  /** Prepares and launches; a launch that fails (a port taken meanwhile) is retried on new ports. */
  static async start(id: string, o: SimOptions = {}): Promise<SimWorker> {
    for (let attempt = 1; ; attempt++) {
      const w = await SimWorker.prepare(id, o);
      try {
        await w.launch();
        return w;
      } catch (err) {
        all.delete(w);
        if (attempt >= 3) throw err;
      }
    }
  }

  /** Ports chosen, not started yet (launch() starts it). */
  static async prepare(id: string, o: SimOptions = {}): Promise<SimWorker> {
    const w = new SimWorker(id, await port(), await port(), await port(), {
      blockSize: o.blockSize ?? 4,
      numBlocks: o.numBlocks ?? 64,
      bufferSteps: o.bufferSteps ?? 10_000,
      topic: o.topic ?? 'kv',
      extraArgs: [...(o.extraArgs ?? [])],
    });
    all.add(w);
    return w;
  }

  get kvEvents(): { endpoint: string; replay_endpoint: string; topic: string } {
    return { endpoint: this.endpoint, replay_endpoint: this.replayEndpoint, topic: this.opts.topic };
  }

  get alive(): boolean {
    return this.proc !== null && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Starts the process (again, on the same ports) and waits until it serves HTTP. */
  async launch(timeoutMs = 90_000): Promise<void> {
    const kv = { publisher: 'zmq', endpoint: `tcp://*:${this.pubPort}`, replay_endpoint: `tcp://*:${this.replayPort}`, topic: this.opts.topic, buffer_steps: this.opts.bufferSteps };
    const args = [
      BIN, '--engine', 'sim', '--host', '127.0.0.1', '--port', String(this.port),
      '--block-size', String(this.opts.blockSize), '--num-blocks', String(this.opts.numBlocks),
      '--decode-step-ms', '1', '--prefill-tokens-per-s', '1000000', '--max-batch', '16',
      '--kv-events-config', JSON.stringify(kv), ...this.opts.extraArgs,
    ];
    this.output = '';
    const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    this.starts++;
    proc.stdout!.on('data', (d) => (this.output += d));
    proc.stderr!.on('data', (d) => (this.output += d));
    const deadline = Date.now() + timeoutMs;
    while (!/listening on http/.test(this.output)) {
      if (proc.exitCode !== null) throw new Error(`worker ${this.id} exited ${proc.exitCode}:\n${this.output}`);
      if (Date.now() > deadline) {
        await this.stop('SIGKILL');
        throw new Error(`worker ${this.id} did not start in ${timeoutMs} ms:\n${this.output}`);
      }
      await sleep(50);
    }
  }

  /** Stops the process (SIGTERM: clean; SIGKILL: crash) and waits for its stages to go. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill(signal);
    const t = setTimeout(() => p.kill('SIGKILL'), 8000);
    await exited;
    clearTimeout(t);
    // The stages exit when the API process goes away; give them a moment to release the ports.
    await sleep(300);
  }

  /** The API process and its stage processes. */
  pids(): number[] {
    const pid = this.proc?.pid;
    if (!pid) return [];
    try {
      const kids = execFileSync('ps', ['-o', 'pid=', '--ppid', String(pid)], { encoding: 'utf8' });
      return [pid, ...kids.split('\n').map((x) => Number(x.trim())).filter((n) => n > 0)];
    } catch {
      return [pid];
    }
  }

  /** SIGSTOP (hang: connections accepted by the kernel, never answered) or SIGCONT every process. */
  signalAll(sig: 'SIGSTOP' | 'SIGCONT'): void {
    for (const pid of this.pids()) {
      try {
        process.kill(pid, sig);
      } catch {
        /* gone */
      }
    }
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.launch();
  }

  /** POST /v1/completions with token ids; resolves with the HTTP status. */
  async complete(prompt: number[], maxTokens = 2): Promise<number> {
    const r = await fetch(`${this.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt, max_tokens: maxTokens, temperature: 0 }),
      signal: AbortSignal.timeout(30_000),
    });
    await r.arrayBuffer();
    return r.status;
  }

  async flushCache(): Promise<number> {
    const r = await fetch(`${this.url}/flush_cache`, { method: 'POST' });
    await r.arrayBuffer();
    return r.status;
  }
}

/**
 * Prompts that share prefixes (a few conversations, each turn extending the last),
 * as token ids, so the worker's cache holds trees, not just chains.
 */
export function promptSet(seed: number, n: number, blockSize = 4): number[][] {
  let x = seed * 2654435761 + 1;
  const rnd = (m: number) => {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    return x % m;
  };
  const roots = Array.from({ length: 4 }, () => Array.from({ length: blockSize * (1 + rnd(3)) }, () => 100 + rnd(50_000)));
  const out: number[][] = [];
  for (let i = 0; i < n; i++) {
    const base = roots[rnd(roots.length)]!;
    const tail = Array.from({ length: blockSize * (1 + rnd(4)) + rnd(blockSize) }, () => 100 + rnd(50_000));
    out.push([...base, ...tail]);
  }
  return out;
}

/** Sends prompts to a worker, `concurrency` at a time; returns statuses. */
export async function drive(w: SimWorker, prompts: number[][], concurrency = 4): Promise<number[]> {
  const statuses: number[] = [];
  let i = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (i < prompts.length) {
        const p = prompts[i++]!;
        statuses.push(await w.complete(p).catch(() => 0));
      }
    }),
  );
  return statuses;
}
