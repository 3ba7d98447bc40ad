/**
 * The router in front of an SGLang-like server (test/python/sglang_server.py) with two attention
 * DP ranks, configured as configs/router-sglang.json: SGLang's tagged-array events (cache_salt in
 * its own slot), signed 64-bit hashes, one stream per attn_dp_rank, and the chosen rank sent in
 * the X-Data-Parallel-Rank header, which the server records.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseRouterConfig } from '../../router/config.js';
import { startRouter, type RunningRouter } from '../../router/server.js';
import type { DumpNode, SourceDump } from '../../src/index/index.js';
import { freePort, freePortRange } from '../helpers/net.js';
import { Child, findPython, PY_DIR, ROOT, skipLoudly, until } from './child.js';

const py = findPython();
const ids = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);

interface Recorded {
  rank: number;
  header: string | null;
  body_rank: number | null;
  cached_tokens: number;
}

describe('router in front of SGLang (data-parallel attention, 2 ranks)', { skip: 'skip' in py ? py.skip : false, timeout: 90_000 }, () => {
  let server: Child | null = null;
  let router: RunningRouter | null = null;
  let url = '';

  before(async () => {
    if ('skip' in py) return;
    const port = await freePort();
    const pub = await freePortRange(2);
    let rep = await freePortRange(2);
    while (rep < pub + 2 && rep + 2 > pub) rep = await freePortRange(2);
    server = new Child(py.python, [join(PY_DIR, 'sglang_server.py'), '--port', String(port), '--events', `tcp://*:${pub}`, '--replay', `tcp://*:${rep}`, '--topic', 'kv-events', '--dp', '2', '--page-size', '16']);
    await server.waitFor((j) => j.ready === true, 30_000, 'sglang_server ready');
    url = `http://127.0.0.1:${port}`;
    // The shipped config's worker, pointed at this server: what an operator would run.
    const shipped = JSON.parse(readFileSync(join(ROOT, 'configs', 'router-sglang.json'), 'utf8')) as { workers: Record<string, unknown>[] };
    const w = shipped.workers[0]! as { kv_events: Record<string, unknown> } & Record<string, unknown>;
    router = await startRouter(parseRouterConfig({
      port: 0,
      tokenizer_threads: 0,
      cache_aware: { provisional_ttl_ms: 0 },
      health: { interval_ms: 150, timeout_ms: 2000, failure_threshold: 2, poll_load: false },
      workers: [{ ...w, id: 'sg', url, kv_events: { ...w.kv_events, endpoint: `tcp://*:${pub}`, replay_endpoint: `tcp://*:${rep}` } }],
    }));
    const r = router;
    await until(() => r.service.registry.healthyCount() === 1 && r.service.registry.list().every((x) => [...x.streams.values()].every((f) => f.health().connected)), 20_000, 'worker healthy, both rank streams connected');
  });
  after(async () => {
    await router?.close();
    await server?.stop();
  });

  const routerUrl = () => `http://127.0.0.1:${router!.port}`;
  const post = async (base: string, path: string, body: unknown) => {
    const r = await fetch(base + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: AbortSignal.timeout(10_000) });
    assert.equal(r.status, 200, `${path}: ${await r.clone().text()}`);
    return r.json();
  };
  const store = (rank: number, token_ids: number[], cache_salt?: string) => post(url, '/admin/store', { rank, token_ids, cache_salt });
  const trees = async (): Promise<Record<string, SourceDump | null>> => {
    const r = await fetch(`${routerUrl()}/workers/sg?dump`, { signal: AbortSignal.timeout(10_000) });
    return ((await r.json()) as { trees: Record<string, SourceDump | null> }).trees;
  };
  // The router's dump names hashes as unsigned 64-bit decimals; SGLang's are signed.
  const unsigned = (h: string) => BigInt.asUintN(64, BigInt(h)).toString();
  const dumpHashes = (d: SourceDump | null): Set<string> => {
    const out = new Set<string>();
    const walk = (n: DumpNode) => (n.hashes.forEach((h) => out.add(h)), n.children.forEach(walk));
    d?.roots.forEach(walk);
    return out;
  };
  const serverHashes = async (rank: number): Promise<string[]> => {
    const r = await fetch(`${url}/cache?rank=${rank}`);
    return ((await r.json()) as { blocks: { hash: string }[] }).blocks.map((b) => b.hash);
  };
  /** Waits until the router's tree of each rank names exactly the server's blocks of that rank. */
  const inSync = async () => {
    let last = '';
    const deadline = Date.now() + 30_000;
    for (;;) {
      const t = await trees();
      let ok = true;
      for (const rank of [0, 1]) {
        const want = new Set((await serverHashes(rank)).map(unsigned));
        const got = dumpHashes(t[String(rank)] ?? null);
        last = `rank ${rank}: server ${want.size}, router ${got.size}`;
        if (want.size !== got.size || [...want].some((h) => !got.has(h))) ok = false;
        if (!ok) break;
      }
      if (ok) return;
      if (Date.now() > deadline) throw new Error(`router trees not equal to the server's blocks: ${last}`);
      await new Promise((r) => setTimeout(r, 30));
    }
  };
  const complete = async (body: Record<string, unknown>): Promise<Recorded> => {
    await post(routerUrl(), '/v1/completions', { model: 'sglang-model', max_tokens: 1, ...body });
    const all = (await (await fetch(`${url}/requests`)).json()) as Recorded[];
    return all.at(-1)!;
  };

  test('each attn_dp_rank has its own tree; signed hashes; the router sends the rank with the cached prefix in X-Data-Parallel-Rank', { skip: 'skip' in py }, async () => {
    const p0 = ids(1000, 64);
    const p1 = ids(5000, 64);
    await store(0, p0);
    await store(1, p1);
    await inSync();
    const t = await trees();
    assert.equal(t['0']!.blocks, 4);
    assert.equal(t['1']!.blocks, 4);
    const signed = [...(await serverHashes(0)), ...(await serverHashes(1))].map(BigInt);
    assert.ok(signed.some((h) => h < 0n), 'SGLang hashes are signed: some are negative');

    for (const [prompt, rank] of [[p1, 1], [p0, 0], [p1, 1]] as const) {
      const got = await complete({ prompt: [...prompt, 1, 2, 3] });
      assert.equal(got.rank, rank);
      assert.equal(got.header, String(rank), 'the rank came in X-Data-Parallel-Rank');
      assert.equal(got.cached_tokens, 64, 'and it was the rank holding the prefix');
    }
  });

  test('SGLang\'s cache_salt slot (array_layout sglang): a salted chain matches only salted requests', { skip: 'skip' in py }, async () => {
    const p = ids(9000, 48);
    await store(0, p);
    await store(1, p, 'tenant-a');
    await inSync();
    // What the router's index matched per rank (read as vLLM's lora_name, the salt would match nothing).
    const matched = async (body: Record<string, unknown>) => {
      const r = (await post(routerUrl(), '/route', { model: 'sglang-model', max_tokens: 1, prompt: [...p, 7], ...body })) as { candidates: { rank: number; index_matched_tokens: number }[] };
      return Object.fromEntries(r.candidates.map((c) => [c.rank, c.index_matched_tokens]));
    };
    assert.deepEqual(await matched({ cache_salt: 'tenant-a' }), { 0: 0, 1: 48 });
    assert.deepEqual(await matched({}), { 0: 48, 1: 0 });
    assert.equal((await complete({ prompt: [...p, 7], cache_salt: 'tenant-a' })).rank, 1);
    assert.equal((await complete({ prompt: [...p, 7] })).rank, 0);
  });

  test('BlockRemoved with signed hashes leaves the tree of that rank only', { skip: 'skip' in py }, async () => {
    const p = ids(20000, 32);
    await store(0, p);
    await store(1, p);
    await inSync();
    const before = await trees();
    await post(url, '/admin/evict', { rank: 1, token_ids: p });
    await inSync();
    const afterT = await trees();
    assert.equal(afterT['1']!.blocks, before['1']!.blocks - 2);
    assert.equal(afterT['0']!.blocks, before['0']!.blocks);
  });
});

if ('skip' in py) test('SGLang interop (Python)', (t) => skipLoudly(t, py.skip));
