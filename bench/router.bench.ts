/**
 * Router overhead, side by side in one run against one `sim` worker:
 *  - added latency per request (p50/p99): through the router (cache_aware, real tokenization,
 *    real event stream) versus straight to the worker, interleaved, for 1k- and 8k-token prompts
 *    (as text the router tokenizes, and as token ids), and for chats behind one shared ~8k-token
 *    system prompt with a new user turn each request (`chat`: the prefix cache's case);
 *  - the highest request rate sustained (closed loop, fixed concurrency) through the router vs
 *    direct, and its ratio per round; the CPU ms per request of the proxy and of the worker
 *    (from /proc: robust to a busy machine where the rates are not);
 *  - the same through nginx as a plain round-robin proxy (the reference), when nginx is found
 *    at /usr/sbin/nginx or /usr/bin/nginx (the header line names the binary or says it is skipped).
 * Each figure: median over rounds, with min–max spread. Results: bench/results/router.json.
 *
 *   npm run bench:router [-- --rounds 5 --requests 200 --concurrency 16 --seconds 4 --sizes 1024,8192
 *                           --kinds text,ids,chat --chat-system-tokens 8192 --no-nginx
 *                           "--router-node-args=--cpu-prof --cpu-prof-dir=/tmp/prof"]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Agent, request } from 'node:http';
import { Tokenizer } from '../src/tokenizer/tokenizer.js';
import { freePort } from '../src/net/free-port.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const { values: a } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    requests: { type: 'string', default: '200' },
    concurrency: { type: 'string', default: '16' },
    seconds: { type: 'string', default: '4' },
    'no-nginx': { type: 'boolean', default: false },
    sizes: { type: 'string', default: '1024,8192' },
    /** text, ids: completion prompts of each size; chat: the shared-system-prompt chat case. */
    kinds: { type: 'string', default: 'text,ids,chat' },
    'chat-system-tokens': { type: 'string', default: '8192' },
    'tokenizer-threads': { type: 'string', default: '2' },
    /** Extra node flags for the router process, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof". */
    'router-node-args': { type: 'string', default: '' },
  },
});
const ROUNDS = Number(a.rounds);
const REQUESTS = Number(a.requests);
const CONC = Number(a.concurrency);
const SECONDS = Number(a.seconds);

const children: ChildProcess[] = [];
process.on('exit', () => children.forEach((c) => c.exitCode === null && c.kill('SIGKILL')));


function launch(args: string[], nodeArgs: string[] = []): ChildProcess {
  const c = spawn(process.execPath, [...nodeArgs, ...args], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });
  children.push(c);
  return c;
}

async function waitOk(url: string, ms = 120_000): Promise<void> {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    try {
      if ((await fetch(url)).ok) return;
    } catch {
      /* not yet */
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${url}`);
}

async function stop(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return;
  const done = new Promise((r) => c.once('exit', r));
  c.kill('SIGTERM');
  const t = setTimeout(() => c.kill('SIGKILL'), 8000);
  await done;
  clearTimeout(t);
}

const agent = new Agent({ keepAlive: true, maxSockets: 256 });

/** One completion, fully read; returns ms. */
/** One completion; a keep-alive socket the server closed at the same moment is retried once. */
async function once(base: string, body: string, path = '/v1/completions'): Promise<number> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await once1(base + path, body);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ECONNRESET' || attempt >= 5) throw new Error(`${base}: ${(e as Error).message}`);
    }
  }
}

function once1(url: string, body: string): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        if (res.statusCode !== 200) text += d;
      });
      res.on('end', () => (res.statusCode === 200 ? resolve(performance.now() - t0) : reject(new Error(`HTTP ${res.statusCode} ${text.slice(0, 300)}`))));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};
const median = (xs: number[]) => pct(xs, 50);
const fmt = (xs: number[], d = 2) => `${median(xs).toFixed(d)} (${Math.min(...xs).toFixed(d)}–${Math.max(...xs).toFixed(d)})`;

/** A text prompt of n tokens (± a few) for the default tokenizer, and its token ids. */
function promptOf(tok: Tokenizer, n: number, tag: string): { text: string; ids: number[] } {
  const words = (k: number) => Array.from({ length: k }, (_, i) => ` ${tag}${i % 997}`).join('');
  let k = Math.round(n / 3);
  for (let it = 0; it < 6; it++) {
    const len = tok.encode(words(k)).length;
    if (Math.abs(len - n) <= 4) break;
    k = Math.max(1, Math.round((k * n) / len));
  }
  const text = words(k);
  return { text, ids: tok.encode(text) };
}

/** CPU time (user + system, all threads) of a process and its descendants so far, in ms (Linux /proc; NaN elsewhere). */
function cpuMsOf(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const ticks = (p: number) => {
      const f = readFileSync(`/proc/${p}/stat`, 'utf8').replace(/^.*\) /, '').split(' ');
      return Number(f[11]) + Number(f[12]);
    };
    const tree = (p: number): number => {
      let t = ticks(p);
      const kids = readFileSync(`/proc/${p}/task/${p}/children`, 'utf8').trim();
      for (const k of kids ? kids.split(' ') : []) t += tree(Number(k));
      return t;
    };
    return tree(pid) * 10; // USER_HZ = 100
  } catch {
    return NaN;
  }
}

let errors = 0;
/** A benchmark case: the endpoint and the i-th request body (the same i gives the same body). */
interface Case {
  name: string;
  title: string;
  path: string;
  body(i: number): string;
  /** Bodies sent once per target before measuring (so the worker has their prefixes cached). */
  warm: number;
}

/** Requests per second of a closed loop, and the CPU ms per request of the processes given. */
async function closedLoop(base: string, cs: Case, seconds: number, conc: number, pids: (number | undefined)[]): Promise<{ rps: number; cpuMs: number[] }> {
  let done = 0;
  let i = 0;
  const cpu0 = pids.map(cpuMsOf);
  const t0 = performance.now();
  const until = t0 + seconds * 1000;
  await Promise.all(
    Array.from({ length: conc }, async () => {
      while (performance.now() < until) {
        try {
          await once(base, cs.body(i++), cs.path);
          done++;
        } catch {
          errors++;
        }
      }
    }),
  );
  const rps = (done * 1000) / (performance.now() - t0);
  return { rps, cpuMs: pids.map((p, k) => (cpuMsOf(p) - cpu0[k]!) / Math.max(1, done)) };
}

function nginxConf(dir: string, port: number, upstream: string): string | null {
  const bin = ['/usr/sbin/nginx', '/usr/bin/nginx'].find(existsSync);
  if (!bin) return null;
  const conf = join(dir, 'nginx.conf');
  writeFileSync(
    conf,
    `worker_processes 1; daemon off; pid ${dir}/nginx.pid; error_log ${dir}/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fcgi; uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  upstream w { server ${upstream}; keepalive 64; }
  server {
    listen 127.0.0.1:${port};
    client_max_body_size 64m; client_body_buffer_size 64m; proxy_request_buffering off;
    location / { proxy_pass http://w; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }
  }
}
`,
  );
  return bin;
}

/**
 * Chats behind one shared system prompt of about `systemTokens` tokens: 8 conversations, each with
 * two earlier turns of its own, and every request a new user message (never seen before), so the
 * router and the worker tokenize only the tail once the shared part is in their prefix caches.
 */
function chatCase(tok: Tokenizer, systemTokens: number): Case {
  const system = `You are a careful assistant. Follow the policy below.\n${promptOf(tok, systemTokens, 'rule').text}`;
  const convs = Array.from({ length: 8 }, (_, k) => [
    { role: 'user', content: `Conversation ${k}: summarise section ${k * 7} of the policy.` },
    { role: 'assistant', content: `Section ${k * 7} says that requests are routed where their prefix is cached, ${k} times out of ten.` },
    { role: 'user', content: `And what does section ${k * 7 + 1} add to that?` },
    { role: 'assistant', content: `It adds that the load of each worker is weighed too (case ${k}).` },
  ]);
  const systemIds = tok.encode(tok.applyChatTemplate([{ role: 'system', content: system }], { addGenerationPrompt: false })).length;
  return {
    name: `chat-${systemTokens}-system`,
    title: `chat, one shared system prompt of ${systemIds} tokens, 8 conversations of 2 earlier turns, a new user message each request (router and worker tokenize), max_tokens 1`,
    path: '/v1/chat/completions',
    body: (i) => JSON.stringify({
      messages: [{ role: 'system', content: system }, ...convs[i % convs.length]!, { role: 'user', content: `Question ${i}: does rule ${i % 997} apply to request ${i}?` }],
      max_tokens: 1,
    }),
    warm: convs.length,
  };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'kv-router-bench-'));
  const [wPort, pub, rep, rPort, nPort] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
  const worker = launch([
    'bin/kv-worker.js', '--engine', 'sim', '--host', '127.0.0.1', '--port', String(wPort), '--block-size', '16', '--num-blocks', '8192',
    '--prefill-tokens-per-s', '1e9', '--decode-step-ms', '0', '--max-batch', '64', '--max-waiting', '4096', '--log-level', 'warn',
    '--kv-events-config', JSON.stringify({ endpoint: `tcp://*:${pub}`, replay_endpoint: `tcp://*:${rep}`, topic: 'kv-events' }),
  ]);
  const direct = `http://127.0.0.1:${wPort}`;
  await waitOk(`${direct}/health`);
  const cfg = join(dir, 'router.json');
  writeFileSync(cfg, JSON.stringify({
    port: rPort,
    policy: 'cache_aware',
    tokenizer_threads: Number(a['tokenizer-threads']),
    workers: [{ id: 'sim', url: direct, kv_events: { endpoint: `tcp://127.0.0.1:${pub}`, replay_endpoint: `tcp://127.0.0.1:${rep}`, topic: 'kv-events' } }],
  }));
  const router = launch(['bin/kv-router.js', '--config', cfg, '--quiet'], a['router-node-args']!.split(' ').filter(Boolean));
  const routed = `http://127.0.0.1:${rPort}`;
  await waitOk(`${routed}/health`);

  let nginx: ChildProcess | null = null;
  let viaNginx: string | null = null;
  let nginxBin: string | null = null;
  if (!a['no-nginx']) {
    const bin = nginxConf(dir, nPort, `127.0.0.1:${wPort}`);
    nginxBin = bin;
    if (bin) {
      nginx = spawn(bin, ['-c', join(dir, 'nginx.conf'), '-p', dir], { stdio: 'ignore' });
      children.push(nginx);
      viaNginx = `http://127.0.0.1:${nPort}`;
      await waitOk(`${viaNginx}/health`, 10_000).catch(() => {
        viaNginx = null;
      });
    }
  }
  const targets: [string, string][] = [['direct', direct], ['router', routed], ...(viaNginx ? ([['nginx', viaNginx]] as [string, string][]) : [])];
  console.log(`router overhead: one sim worker, ${ROUNDS} rounds × ${REQUESTS} sequential requests per target and size; rate: ${CONC} concurrent clients for ${SECONDS} s`);
  console.log(`targets: ${targets.map(([n, u]) => `${n} ${u}`).join(', ')}${viaNginx ? ` (nginx: ${nginxBin})` : a['no-nginx'] ? ' (nginx: --no-nginx)' : ' (nginx not installed: skipped)'}\n`);

  const results: Record<string, unknown> = { tokenizer_threads: Number(a['tokenizer-threads']), rounds: ROUNDS, requests: REQUESTS, concurrency: CONC, seconds: SECONDS, nginx: viaNginx ? nginxBin : null, sizes: {} };
  const tok = await Tokenizer.loadDefault();
  const kinds = a.kinds!.split(',');
  const cases: Case[] = [];
  for (const n of a.sizes!.split(',').map(Number)) {
    // A few distinct prompts, max_tokens 1; after the first round they are cached on the worker,
    // so the worker's own time is small and what differs is the proxy path. `text` prompts are
    // tokenized by the router (and the worker); `ids` prompts skip tokenization everywhere.
    const prompts = kinds.some((k) => k === 'text' || k === 'ids') ? Array.from({ length: 8 }, (_, k) => promptOf(tok, n, `p${k}x`)) : [];
    for (const kind of kinds) {
      if (kind !== 'text' && kind !== 'ids') continue;
      const bodies = prompts.map((p) => JSON.stringify({ prompt: kind === 'text' ? p.text : p.ids, max_tokens: 1 }));
      cases.push({
        name: `${n}-${kind}`,
        title: `${n}-token prompts as ${kind === 'text' ? 'text (router tokenizes)' : 'token ids (no tokenization)'}: ${bodies.length} distinct, cached on the worker, max_tokens 1`,
        path: '/v1/completions',
        body: (i) => bodies[i % bodies.length]!,
        warm: bodies.length,
      });
    }
  }
  if (kinds.includes('chat')) cases.push(chatCase(tok, Number(a['chat-system-tokens'])));
  for (const cs of cases) {
    for (const [, base] of targets) for (let i = 0; i < cs.warm; i++) await once(base, cs.body(i), cs.path);
    const lat: Record<string, { p50: number[]; p99: number[] }> = {};
    const added: Record<string, { p50: number[]; p99: number[] }> = {};
    const rate: Record<string, number[]> = {};
    const cpu: Record<string, { proxy: number[]; worker: number[] }> = {};
    for (const [n] of targets) {
      lat[n] = { p50: [], p99: [] };
      added[n] = { p50: [], p99: [] };
      rate[n] = [];
      cpu[n] = { proxy: [], worker: [] };
    }
    let seq = cs.warm;
    for (let r = 0; r < ROUNDS; r++) {
      const samples: Record<string, number[]> = Object.fromEntries(targets.map(([n]) => [n, []]));
      for (let i = 0; i < REQUESTS; i++) {
        const b = cs.body(seq++);
        for (const [n, base] of targets) samples[n]!.push(await once(base, b, cs.path)); // interleaved
      }
      for (const [n] of targets) {
        lat[n]!.p50.push(pct(samples[n]!, 50));
        lat[n]!.p99.push(pct(samples[n]!, 99));
      }
      for (const [n] of targets) {
        added[n]!.p50.push(lat[n]!.p50.at(-1)! - lat.direct!.p50.at(-1)!);
        added[n]!.p99.push(lat[n]!.p99.at(-1)! - lat.direct!.p99.at(-1)!);
      }
      for (const [n, base] of targets) {
        const proxyPid = n === 'router' ? router.pid : n === 'nginx' ? nginx?.pid : undefined;
        const loop = await closedLoop(base, { ...cs, body: (i) => cs.body(seq + i) }, SECONDS, CONC, [proxyPid, worker.pid]);
        seq += Math.ceil(loop.rps * SECONDS) + CONC;
        rate[n]!.push(loop.rps);
        if (n !== 'direct') cpu[n]!.proxy.push(loop.cpuMs[0]!);
        cpu[n]!.worker.push(loop.cpuMs[1]!);
      }
      agent.destroy(); // no idle keep-alive sockets left to go stale before the next phase
    }
    const ratio = (n: string) => rate[n]!.map((x, k) => x / rate.direct![k]!);
    console.log(cs.title);
    console.log(`  ${'target'.padEnd(8)} ${'latency p50 ms'.padEnd(22)} ${'latency p99 ms'.padEnd(22)} ${'added p50 ms'.padEnd(22)} ${'added p99 ms'.padEnd(22)} ${'max rate req/s'.padEnd(20)} ${'vs direct'.padEnd(20)} ${'proxy cpu ms/req'.padEnd(20)} worker cpu ms/req`);
    for (const [n] of targets) {
      const d = n === 'direct';
      console.log(`  ${n.padEnd(8)} ${fmt(lat[n]!.p50).padEnd(22)} ${fmt(lat[n]!.p99).padEnd(22)} ${(d ? '-' : fmt(added[n]!.p50)).padEnd(22)} ${(d ? '-' : fmt(added[n]!.p99)).padEnd(22)} ${fmt(rate[n]!, 0).padEnd(20)} ${(d ? '-' : fmt(ratio(n))).padEnd(20)} ${(d ? '-' : fmt(cpu[n]!.proxy, 3)).padEnd(20)} ${fmt(cpu[n]!.worker, 3)}`);
    }
    console.log('');
    (results.sizes as Record<string, unknown>)[cs.name] = {
      latency_ms: lat,
      added_ms: added,
      rate_rps: rate,
      rate_vs_direct: Object.fromEntries(targets.filter(([n]) => n !== 'direct').map(([n]) => [n, ratio(n)])),
      cpu_ms_per_request: cpu,
    };
  }
  const m = await (await fetch(`${routed}/metrics`)).text();
  const sum = (name: string) => Number(/^(\S+) (\S+)$/m.exec(m.split('\n').filter((l) => l.startsWith(name)).join('\n'))?.[2] ?? NaN);
  const dec = sum('kv_router_decision_seconds_sum') / sum('kv_router_decision_seconds_count');
  const tokMean = sum("kv_router_tokenize_seconds_sum") / sum("kv_router_tokenize_seconds_count");
  console.log(`failed requests during rate runs: ${errors}`);
  results.errors = errors;
  console.log(`router internals (means over the run): decision ${(dec * 1e6).toFixed(1)} µs, tokenization ${(tokMean * 1e3).toFixed(2)} ms`);
  results.decision_mean_us = dec * 1e6;
  results.tokenize_mean_ms = tokMean * 1e3;
  mkdirSync(join(root, 'bench/results'), { recursive: true });
  writeFileSync(join(root, 'bench/results/router.json'), JSON.stringify(results, null, 2) + '\n');
  console.log('written bench/results/router.json');
  await Promise.all([stop(router), stop(worker), ...(nginx ? [stop(nginx)] : [])]);
  agent.destroy();
  rmSync(dir, { recursive: true, force: true });
}

await main();
