/**
 * LoRA fidelity against the independent vLLM-like server (test/python/vllm_server.py with
 * --lora-modules: the adapter's name in every block's extra keys, BlockStored lora_id/lora_name,
 * vLLM's /v1/models cards and 404). Through the real router: on every request the router's
 * predicted cached tokens equal the server's, for the adapter and for the base model on the same
 * prompt (an adapter's blocks never count for the base model or another adapter).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { parseRouterConfig } from '../../router/config.js';
import { startRouter, type RunningRouter } from '../../router/server.js';
import { exchange, findServerPython, mismatches, settled, VllmServer, type Exchange } from './vllm-peer.js';

const py = findServerPython();
let S: VllmServer | undefined;
let P: VllmServer | undefined;
let router: RunningRouter | undefined;

after(async () => {
  await router?.close();
  await Promise.all([S?.stop(), P?.stop()]);
});

const ids = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);

describe('LoRA through the router in front of vLLM-like servers', { skip: 'skip' in py ? py.skip : false }, () => {
  before(async () => {
    if ('skip' in py) return;
    // S serves the base model and adapters sql and chat; P the base model only.
    [S, P] = await Promise.all([
      VllmServer.start(py.python, { id: 'S', numBlocks: 200, loraModules: ['sql=/adapters/sql', 'chat=/adapters/chat'] }),
      VllmServer.start(py.python, { id: 'P', numBlocks: 200 }),
    ]);
    router = await startRouter(parseRouterConfig({
      port: 0,
      tokenizer_threads: 0,
      cache_aware: { provisional_ttl_ms: 0 },
      health: { interval_ms: 150, timeout_ms: 2000, failure_threshold: 2 },
      workers: [S, P].map((s) => ({ id: s.opts.id, url: s.url, kv_events: s.kvEvents, block_size: 16 })),
    }));
    const deadline = Date.now() + 20_000;
    while (!router.service.registry.list().every((w) => w.state === 'healthy' && (w.models?.length ?? 0) > 0 && w.streams.get(0)!.health().connected)) {
      if (Date.now() > deadline) throw new Error('router: workers not healthy, connected and listed after 20 s');
      await new Promise((r) => setTimeout(r, 50));
    }
  });

  test('the server lists its adapters as vLLM does and the router merges them', async () => {
    const own = (await (await fetch(`${S!.url}/v1/models`)).json()) as { data: { id: string; parent: string | null; root: string }[] };
    assert.deepEqual(own.data.map((c) => [c.id, c.parent, c.root]), [['Qwen/Qwen3-0.6B', null, 'Qwen/Qwen3-0.6B'], ['sql', 'Qwen/Qwen3-0.6B', '/adapters/sql'], ['chat', 'Qwen/Qwen3-0.6B', '/adapters/chat']]);
    const fleet = (await (await fetch(`${router!.url}/v1/models`)).json()) as { data: { id: string }[] };
    assert.deepEqual(fleet.data.map((c) => c.id), ['Qwen/Qwen3-0.6B', 'sql', 'chat']);
  });

  test('predicted cached tokens equal the server\'s, per adapter and for the base model on the same prompt', async () => {
    const xs: Exchange[] = [];
    const go = async (model: string, prompt: number[], what: string) => {
      const x = await exchange(router!.url, what, '/v1/completions', { model, prompt, max_tokens: 4 });
      assert.equal(x.status, 200, x.body);
      xs.push(x);
      await settled(router!.url, [S!, P!]);
      return x;
    };
    const p = ids(40000, 160);
    const a = await go('sql', p, 'sql cold');
    assert.equal(a.worker, 'S');
    const b = await go('sql', p, 'sql warm');
    assert.equal(b.worker, 'S');
    assert.equal(b.cached, 144);
    // The base model and the other adapter on the same prompt: nothing cached anywhere, and the router knows it.
    const c = await go('chat', p, 'chat on sql\'s prompt');
    assert.equal(c.cached, 0);
    const d = await go('Qwen/Qwen3-0.6B', p, 'base on sql\'s prompt');
    assert.equal(d.cached, 0);
    // A longer prompt under sql shares sql's prefix.
    const e = await go('sql', [...p, ...ids(50000, 40)], 'sql longer');
    assert.equal(e.worker, 'S');
    assert.equal(e.cached, 160);
    assert.deepEqual(mismatches(xs), []);
    // What the server holds under sql carries the name in every block's extra keys.
    const held = (await S!.cache(0)).blocks.filter((blk) => Array.isArray(blk.extra_keys) && blk.extra_keys[0] === 'sql');
    assert.ok(held.length >= 12, `${held.length} blocks under sql`);
  });

  test('an unknown model is the router\'s 404 naming the fleet\'s models', async () => {
    const r = await fetch(`${router!.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'nope', prompt: 'x', max_tokens: 1 }) });
    assert.equal(r.status, 404);
    const j = (await r.json()) as { error: { code: string; message: string } };
    assert.equal(j.error.code, 'model_not_found');
    assert.match(j.error.message, /`Qwen\/Qwen3-0\.6B`, `chat`, `sql`/);
    const direct = await S!.post('/v1/completions', { model: 'nope', prompt: 'x', max_tokens: 1 });
    assert.equal(direct.status, 404);
    assert.equal(((await direct.json()) as { message: string }).message, 'The model `nope` does not exist.');
  });
});
