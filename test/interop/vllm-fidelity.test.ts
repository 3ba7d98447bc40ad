/**
 * Fidelity against an independent vLLM-like server (test/python/vllm_server.py: vLLM's block
 * pool without de-duplication, its last-token cap, cache_salt, its ZmqEventPublisher, its
 * chat rendering through jinja2 with the same tokenizer files). Through the real router in
 * front of real server processes, on every request: the router's predicted cached tokens
 * (x-kv-router-cached-tokens) equal the server's usage.prompt_tokens_details.cached_tokens,
 * and after eviction and restart the router's trees equal the servers' own block lists.
 *
 * Every wait is on a condition: the router's last applied seq reaching the server's seq.
 * The first group checks the server itself (no router), so a failure below is the router's.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as zmq from 'zeromq';
import { parseRouterConfig } from '../../router/config.js';
import { startRouter, type RunningRouter } from '../../router/server.js';
import { requestSnapshot } from '../../src/events/snapshot.js';
import { skipLoudly } from './child.js';
import { compareTrees, exchange, findServerPython, mismatches, settled, VllmServer, type Exchange, type ServerOpts } from './vllm-peer.js';

const py = findServerPython();
const servers: VllmServer[] = [];
const routers: RunningRouter[] = [];
after(async () => {
  await Promise.all(routers.map((r) => r.close()));
  await Promise.all(servers.map((s) => s.stop()));
});

async function server(python: string, opts: ServerOpts) {
  const s = await VllmServer.start(python, opts);
  servers.push(s);
  return s;
}

/** A router in front of `fleet`, returned once every worker is in rotation and every stream connected. */
async function routerFor(fleet: VllmServer[]): Promise<RunningRouter> {
  const r = await startRouter(parseRouterConfig({
    port: 0,
    tokenizer_threads: 0,
    // Predictions from events only: a routed-but-unconfirmed entry would be a guess, not the engine's state.
    cache_aware: { provisional_ttl_ms: 0 },
    health: { interval_ms: 150, timeout_ms: 2000, failure_threshold: 2 },
    retry: { max_attempts: 3, backoff_ms: 5 },
    workers: fleet.map((s) => ({ id: s.opts.id, url: s.url, kv_events: s.kvEvents, dp_ranks: s.opts.dp ?? 1, block_size: 16 })),
  }));
  routers.push(r);
  const deadline = Date.now() + 20_000;
  while (r.service.registry.healthyCount() < fleet.length || !r.service.registry.list().every((w) => [...w.streams.values()].every((f) => f.health().connected))) {
    if (Date.now() > deadline) throw new Error('router: workers not all healthy and connected after 20 s');
    await new Promise((res) => setTimeout(res, 50));
  }
  return r;
}

const words = (tag: string, n: number) => Array.from({ length: n }, (_, i) => `${tag}${i}`).join(' ');
const ids = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);

// ---------------------------------------------------------------- the server alone

describe('the vLLM-like server itself', { skip: 'skip' in py ? py.skip : false }, () => {
  let S: VllmServer;
  before(async () => {
    if ('skip' in py) return;
    S = await server(py.python, { id: 'self', numBlocks: 40, dp: 2 });
  });
  const complete = (body: Record<string, unknown>, rank = '0') => exchange(S.url, 'direct', '/v1/completions', { max_tokens: 4, ...body }, { 'X-data-parallel-rank': rank });
  const chat = (body: Record<string, unknown>) => exchange(S.url, 'direct', '/v1/chat/completions', { max_tokens: 4, ...body }, { 'X-data-parallel-rank': '0' });

  test('a repeat of a 160-token prompt reuses 144 (the last token is always computed), 161 reuses 160', async () => {
    const p = ids(5000, 160);
    assert.equal((await complete({ prompt: p })).cached, 0);
    assert.equal((await complete({ prompt: p })).cached, 144);
    assert.equal((await complete({ prompt: [...p, 7] })).cached, 160);
    // The repeat recomputed block 10 into a second physical block: two copies of one hash.
    const c = await S.cache(0);
    const tenth = c.blocks.filter((b) => b.token_ids[0] === 5000 + 144);
    assert.equal(tenth.length, 2, 'two copies of the 10th block');
    assert.equal(new Set(tenth.map((b) => b.hash)).size, 1, 'one hash');
    assert.notEqual(tenth[0]!.block_id, tenth[1]!.block_id);
  });

  test('cache_salt enters the first block: no hit across salts or against unsalted blocks', async () => {
    const p = ids(9000, 80);
    assert.equal((await complete({ prompt: p })).cached, 0);
    assert.equal((await complete({ prompt: p, cache_salt: 'tenant-a' })).cached, 0);
    assert.equal((await complete({ prompt: p, cache_salt: 'tenant-b' })).cached, 0);
    assert.equal((await complete({ prompt: p, cache_salt: 'tenant-a' })).cached, 64);
    assert.equal((await complete({ prompt: p })).cached, 64);
    const salted = (await S.cache(0)).blocks.filter((b) => b.extra_keys !== null);
    assert.deepEqual([...new Set(salted.map((b) => JSON.stringify(b.extra_keys)))].sort(), ['["tenant-a"]', '["tenant-b"]']);
    assert.ok(salted.every((b) => b.parent_hash === null), 'only the first block carries the salt');
  });

  test('a snapshot request (our extension) gets vLLM\'s bare end marker: the router reads "unsupported" and keeps clear + untrusted', async () => {
    // vLLM's handler reads the 3-frame request as a replay from a seq beyond every published one.
    const r = await requestSnapshot(S.kvEvents.replay_endpoint, { timeoutMs: 10_000 });
    // What the state machine does with "unsupported": test/events/stream-state-snapshot.test.ts.
    assert.equal(r.status, 'unsupported');
  });

  test('X-data-parallel-rank picks the rank: each rank has its own pool', async () => {
    const p = ids(12000, 48);
    assert.equal((await complete({ prompt: p }, '1')).cached, 0);
    assert.equal((await complete({ prompt: p }, '1')).cached, 32);
    assert.equal((await complete({ prompt: p }, '0')).cached, 0);
    assert.equal((await complete({ prompt: p }, '2')).status, 400);
  });

  test('eviction: LRU of free blocks, with a small pool an old prompt is gone', async () => {
    const old = ids(20000, 64);
    await complete({ prompt: old }, '1');
    for (let i = 0; i < 4; i++) await complete({ prompt: ids(30000 + i * 1000, 160) }, '1');
    assert.equal((await complete({ prompt: old }, '1')).cached, 0);
  });

  test('chat: text parts joined with "\\n"; tool-call arguments parsed to dicts (re-serialized by tojson)', async () => {
    const parts = await chat({ messages: [{ role: 'user', content: [{ type: 'text', text: 'first part' }, { type: 'text', text: 'second part' }] }] });
    const joined = await chat({ messages: [{ role: 'user', content: 'first part\nsecond part' }] });
    assert.equal(parts.promptTokens, joined.promptTokens);
    assert.equal(joined.cached, 0, 'shorter than a block');
    const call = (args: string) => ({
      messages: [
        { role: 'user', content: 'weather?' },
        { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'w', arguments: args } }] },
        { role: 'tool', tool_call_id: 'c1', content: 'sunny' },
      ],
    });
    const compact = await chat(call('{"city":"Paris"}'));
    const spaced = await chat(call('{"city": "Paris"}'));
    assert.equal(compact.promptTokens, spaced.promptTokens, 'both render as {"city": "Paris"}');
    const off = await chat({ messages: [{ role: 'user', content: 'hi' }], chat_template_kwargs: { enable_thinking: false } });
    const on = await chat({ messages: [{ role: 'user', content: 'hi' }] });
    assert.ok(off.promptTokens! > on.promptTokens!, 'enable_thinking=false appends an empty think block');
    assert.equal((await chat({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] })).status, 400);
    assert.equal((await chat({ messages: [{ role: 'user', content: 'x' }], continue_final_message: true })).status, 400);
  });

  test('stream: the final usage chunk carries cached_tokens', async () => {
    const p = ids(40000, 40);
    await complete({ prompt: p });
    const s = await complete({ prompt: p, stream: true, stream_options: { include_usage: true } });
    assert.equal(s.status, 200);
    assert.equal(s.cached, 32);
    const m = await fetch(`${S.url}/v1/models`).then((r) => r.json() as Promise<{ data: { max_model_len: number }[] }>);
    assert.equal(m.data[0]!.max_model_len, 39 * 16);
  });
});

describe('the server follows vLLM\'s bind rules', { skip: 'skip' in py ? py.skip : false }, () => {
  test('a PUB endpoint naming a host connects (to a bound consumer); a replay endpoint naming a host still binds', { timeout: 30_000 }, async () => {
    if ('skip' in py) return;
    const sub = new zmq.Subscriber();
    sub.subscribe();
    await sub.bind('tcp://127.0.0.1:0');
    const subPort = Number(new URL(sub.lastEndpoint!.replace('tcp://', 'http://')).port);
    const S = await server(py.python, { id: 'connect', numBlocks: 16, events: () => `tcp://127.0.0.1:${subPort}`, replay: (p) => `tcp://127.0.0.1:${p}` });
    try {
      // Slow joiner: publish until one batch arrives on the bound SUB.
      let got = null as Buffer[] | null;
      const recv = (async () => {
        for await (const frames of sub) {
          got = frames;
          break;
        }
      })();
      for (let i = 0; got === null && i < 100; i++) {
        await exchange(S.url, 'direct', '/v1/completions', { prompt: ids(50000 + i * 100, 32), max_tokens: 2 });
        await Promise.race([recv, new Promise((r) => setTimeout(r, 100))]);
      }
      assert.ok(got, 'a batch reached the bound SUB socket');
      const [topic, seq] = got!;
      assert.equal(topic!.toString(), 'kv-events');
      assert.equal(seq!.length, 8);

      const dealer = new zmq.Dealer();
      dealer.connect(S.kvEvents.replay_endpoint);
      await dealer.send([Buffer.alloc(0), Buffer.alloc(8)]);
      const first = await dealer.receive();
      assert.equal(first.length, 4, '["", topic, seq, payload]');
      assert.equal(first[2]!.readBigUInt64BE(), 0n, 'replay from seq 0');
      dealer.close();
    } finally {
      sub.close();
    }
  });
});

// ---------------------------------------------------------------- through the router

describe('router predictions equal the vLLM-like servers\' cached tokens', { skip: 'skip' in py ? py.skip : false }, () => {
  let A: VllmServer, B: VllmServer, R: RunningRouter;
  const fleet = () => [A, B];
  before(async () => {
    if ('skip' in py) return;
    [A, B] = await Promise.all([server(py.python, { id: 'A', numBlocks: 48 }), server(py.python, { id: 'B', numBlocks: 48, dp: 2 })]);
    R = await routerFor([A, B]);
  });

  /** Sends through the router once the router has applied every batch, records the exchange. */
  async function send(log: Exchange[], what: string, path: '/v1/completions' | '/v1/chat/completions', body: Record<string, unknown>) {
    await settled(R.url, fleet());
    const x = await exchange(R.url, what, path, { max_tokens: 4, temperature: 0, ...body });
    log.push(x);
    return x;
  }
  const assertAllEqual = (log: Exchange[]) => {
    assert.ok(log.some((x) => (x.cached ?? 0) > 0), 'the case exercises the cache: some request hits on the server');
    const bad = mismatches(log);
    assert.deepEqual(bad, [], `${bad.length} of ${log.length} requests mispredicted:\n  ${bad.join('\n  ')}`);
  };

  test('plain string and token-id prompts, streamed and not', async () => {
    const log: Exchange[] = [];
    const s1 = words('alpha', 70);
    const s2 = words('beta', 45);
    await send(log, 's1', '/v1/completions', { prompt: s1 });
    await send(log, 's1 again', '/v1/completions', { prompt: s1 });
    await send(log, 's1 extended', '/v1/completions', { prompt: `${s1} ${words('more', 20)}` });
    await send(log, 's2 stream', '/v1/completions', { prompt: s2, stream: true, stream_options: { include_usage: true } });
    await send(log, 's2 again stream', '/v1/completions', { prompt: s2, stream: true, stream_options: { include_usage: true } });
    await send(log, '160 ids', '/v1/completions', { prompt: ids(60000, 160) });
    await send(log, '160 ids again (cap: 144)', '/v1/completions', { prompt: ids(60000, 160) });
    await send(log, '161 ids', '/v1/completions', { prompt: ids(60000, 161) });
    await send(log, 's1 once more', '/v1/completions', { prompt: s1 });
    assertAllEqual(log);
  });

  test('chat with content parts (joined with "\\n"), multi-turn', async () => {
    const log: Exchange[] = [];
    const system = { role: 'system', content: [{ type: 'text', text: words('rule', 40) }, { type: 'text', text: words('policy', 30) }] };
    const turn1 = [system, { role: 'user', content: [{ type: 'text', text: words('ask', 20) }, { type: 'text', text: 'thanks' }] }];
    await send(log, 'parts t1', '/v1/chat/completions', { messages: turn1 });
    await send(log, 'parts t1 again', '/v1/chat/completions', { messages: turn1 });
    const turn2 = [...turn1, { role: 'assistant', content: 'ok, noted' }, { role: 'user', content: [{ type: 'text', text: words('next', 30) }] }];
    await send(log, 'parts t2', '/v1/chat/completions', { messages: turn2 });
    await send(log, 'parts t2 stream', '/v1/chat/completions', { messages: turn2, stream: true, stream_options: { include_usage: true } });
    assertAllEqual(log);
  });

  test('tools, assistant tool calls, tool results', async () => {
    const log: Exchange[] = [];
    const tools = [
      { type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] }, description: words('weather', 25) } },
      { type: 'function', function: { name: 'search', description: words('search', 25), parameters: { type: 'object', properties: { q: { type: 'string' } } } } },
    ];
    const t1 = [{ role: 'user', content: 'What is the weather in Paris and what is new there?' }];
    await send(log, 'tools t1', '/v1/chat/completions', { messages: t1, tools });
    await send(log, 'tools t1 again', '/v1/chat/completions', { messages: t1, tools });
    const t2 = [
      ...t1,
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
      { role: 'tool', tool_call_id: 'call_1', content: words('sunny', 30) },
    ];
    await send(log, 'tool call t2', '/v1/chat/completions', { messages: t2, tools });
    await send(log, 'tool call t2 again', '/v1/chat/completions', { messages: t2, tools });
    const t3 = [...t2, { role: 'assistant', content: 'It is sunny.' }, { role: 'user', name: 'bob', content: words('then', 25) }];
    await send(log, 'tool call t3', '/v1/chat/completions', { messages: t3, tools });
    assertAllEqual(log);
  });

  test('thinking on and off (chat_template_kwargs.enable_thinking)', async () => {
    const log: Exchange[] = [];
    // enable_thinking only changes the prompt's tail: pick a length where "off" fills one more block
    // than "on", so a router that drops chat_template_kwargs mispredicts the repeat.
    const count = async (body: Record<string, unknown>) => ((await (await A.post('/tokenize', body)).json()) as { count: number }).count;
    let msgs: { role: string; content: string }[] = [];
    let found = false;
    for (let k = 20; k < 60 && !found; k++) {
      msgs = [{ role: 'system', content: words('think', 50) }, { role: 'user', content: words('q', k) }];
      const on = await count({ messages: msgs });
      const off = await count({ messages: msgs, chat_template_kwargs: { enable_thinking: false } });
      found = Math.floor((off - 1) / 16) > Math.floor((on - 1) / 16);
    }
    assert.ok(found, 'a length where thinking off fills one more block');
    await send(log, 'thinking off', '/v1/chat/completions', { messages: msgs, chat_template_kwargs: { enable_thinking: false } });
    await send(log, 'thinking off again', '/v1/chat/completions', { messages: msgs, chat_template_kwargs: { enable_thinking: false } });
    await send(log, 'thinking on', '/v1/chat/completions', { messages: msgs, chat_template_kwargs: { enable_thinking: true } });
    await send(log, 'thinking on again', '/v1/chat/completions', { messages: msgs });
    const cont = [...msgs, { role: 'assistant', content: words('partial', 30) }];
    await send(log, 'continue_final_message', '/v1/chat/completions', { messages: cont, add_generation_prompt: false, continue_final_message: true });
    await send(log, 'continue_final_message again', '/v1/chat/completions', { messages: cont, add_generation_prompt: false, continue_final_message: true });
    assertAllEqual(log);
  });

  test('cache_salt: a salted tenant never sees another\'s hit', async () => {
    const log: Exchange[] = [];
    const p = words('secret', 60);
    await send(log, 'tenant a', '/v1/completions', { prompt: p, cache_salt: 'tenant-a' });
    await send(log, 'tenant a again', '/v1/completions', { prompt: p, cache_salt: 'tenant-a' });
    const b = await send(log, 'tenant b, same prompt', '/v1/completions', { prompt: p, cache_salt: 'tenant-b' });
    const none = await send(log, 'unsalted, same prompt', '/v1/completions', { prompt: p });
    await send(log, 'tenant b again', '/v1/completions', { prompt: p, cache_salt: 'tenant-b' });
    const chatSalted = { messages: [{ role: 'user', content: words('private', 50) }], cache_salt: 'tenant-a' };
    await send(log, 'chat tenant a', '/v1/chat/completions', chatSalted);
    const chatB = await send(log, 'chat tenant b', '/v1/chat/completions', { ...chatSalted, cache_salt: 'tenant-b' });
    const leaks = [
      b.predicted !== 0 && `tenant b was told tenant a's prompt is cached (${b.predicted} tokens)`,
      none.predicted !== 0 && `an unsalted request was told a salted prompt is cached (${none.predicted} tokens)`,
      chatB.predicted !== 0 && `chat: tenant b was told tenant a's prompt is cached (${chatB.predicted} tokens)`,
    ].filter(Boolean);
    const bad = [...leaks, ...mismatches(log)];
    assert.deepEqual(bad, [], `salt leaks and mispredictions:\n  ${bad.join('\n  ')}`);
  });

  test('after AllBlocksCleared, eviction and a restart the trees equal the servers\' own blocks', { timeout: 120_000 }, async () => {
    const log: Exchange[] = [];
    const divergent: string[] = [];
    for (const s of fleet()) assert.equal((await s.post('/reset_prefix_cache')).status, 200);
    await settled(R.url, fleet());
    const treesEqual = async (when: string) => {
      await settled(R.url, fleet());
      for (const s of fleet()) {
        for (let r = 0; r < (s.opts.dp ?? 1); r++) {
          const t = await compareTrees(R.url, s, r);
          if (t.missing.length + t.extra.length > 0) divergent.push(`${when}: ${s.opts.id}:${r} tree: ${t.missing.length} blocks missing, ${t.extra.length} extra (server ${t.serverBlocks} blocks, router ${t.routerBlocks})`);
        }
      }
    };
    await treesEqual('after reset_prefix_cache');
    // 12 conversations of ~10 blocks over pools of 47 blocks (per rank): old prefixes get evicted.
    const convs = Array.from({ length: 12 }, (_, i) => words(`c${i}x`, 55));
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < convs.length; i++) {
        await send(log, `conv ${i} round ${round}`, '/v1/completions', { prompt: convs[i] });
        if (i % 3 === 2) await send(log, `conv ${i - 1} revisit round ${round}`, '/v1/completions', { prompt: convs[i - 1] });
      }
    }
    const pools = await Promise.all([A.cache(0), B.cache(0), B.cache(1)]);
    assert.ok(pools.filter((c) => c.evictions > 0).length >= 2, `blocks were evicted (${pools.map((c) => c.evictions).join(', ')} BlockRemoved)`);
    await treesEqual('after eviction');

    // The conversation A served last is still in A's pool: after the restart it is in no pool at all.
    const onA = [...log].reverse().find((x) => x.worker === 'A' && x.what.startsWith('conv '));
    assert.ok(onA, 'A served some conversation');
    const held = convs[Number(/^conv (\d+)/.exec(onA.what)![1])]!;
    await A.restart();
    await send(log, `after restart: ${onA.what} (was on A)`, '/v1/completions', { prompt: held });
    for (let i = 0; i < 6; i++) await send(log, `after restart conv ${i}`, '/v1/completions', { prompt: convs[i] });
    await treesEqual('after restart');
    const bad = [...divergent, ...mismatches(log)];
    assert.deepEqual(bad, [], `divergent trees and mispredictions:\n  ${bad.join('\n  ')}`);
  });
});

describe('copies of one hash (vLLM does not de-duplicate)', { skip: 'skip' in py ? py.skip : false }, () => {
  let S: VllmServer, R: RunningRouter;
  before(async () => {
    if ('skip' in py) return;
    S = await server(py.python, { id: 'C', numBlocks: 40 });
    R = await routerFor([S]);
  });
  const send = async (log: Exchange[], what: string, prompt: number[]) => {
    await settled(R.url, [S]);
    const x = await exchange(R.url, what, '/v1/completions', { prompt, max_tokens: 4 });
    log.push(x);
    return x;
  };

  test('a fully cached prompt on a block boundary stores a second copy; evicting the older copy keeps the hit', async () => {
    // A fresh pool of 39 usable blocks, handed out in id order 1..39 (block 0 is the null block).
    const log: Exchange[] = [];
    const p = ids(70000, 160);
    await send(log, 'P', p); // blocks 1..10 cached, 11 decode (not full); freed tail first: [12..39, 11, 10, ..., 1]
    await send(log, 'P again (cap: 144)', p); // hits 1..9, recomputes block 10 as a copy in block 12 (13 decode)
    // Free queue now [14..39, 11, 10, 13, 12, 9..1]: 28 new blocks evict 14..39, 11 and 10 (the older copy of hash #10).
    const q = await send(log, 'Q (evicts one copy)', ids(80000, 440));
    assert.equal(q.cached, 0);
    const tenth = (await S.cache(0)).blocks.filter((b) => b.token_ids[0] === 70000 + 144);
    assert.equal(tenth.length, 1, 'one copy of block #10 left on the server');
    const longer = await send(log, 'P + 16 (hits all 10 blocks on the server)', ids(70000, 176));
    assert.equal(longer.cached, 160);
    const bad = mismatches(log);
    assert.deepEqual(bad, [], bad.join('\n'));
  });

  test('several BlockStored of one hash, one BlockRemoved: the router still holds it; the last removal drops it', async () => {
    const tokens = ids(90000, 16);
    const hash = 2n ** 63n + 12345n;
    const stored = { type: 'BlockStored', block_hashes: [hash], parent_block_hash: null, token_ids: tokens, block_size: 16, lora_id: null, medium: 'GPU', lora_name: null };
    const publish = async (events: unknown[]) => {
      const r = await S.post('/admin/publish', { rank: 0, events: JSON.parse(JSON.stringify(events, (_k, v) => (typeof v === 'bigint' ? `#${v}` : v)).replace(/"#(\d+)"/g, '$1')) });
      assert.equal(r.status, 200, await r.text());
      await settled(R.url, [S]);
    };
    const routed = async () => {
      const r = await fetch(`${R.url}/route`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: [...tokens, 7], max_tokens: 1 }) });
      const j = (await r.json()) as { candidates: { worker: string; matched_tokens: number }[] };
      return j.candidates.find((c) => c.worker === 'C')!.matched_tokens;
    };
    await publish([stored, stored, stored]);
    assert.equal(await routed(), 16, 'three copies stored');
    await publish([{ type: 'BlockRemoved', block_hashes: [hash], medium: 'GPU' }]);
    assert.equal(await routed(), 16, 'two copies still held after one BlockRemoved');
    await publish([{ type: 'BlockRemoved', block_hashes: [hash], medium: 'GPU' }, { type: 'BlockRemoved', block_hashes: [hash], medium: 'GPU' }]);
    assert.equal(await routed(), 0, 'the last copy removed');
  });
});

if ('skip' in py) test('vLLM fidelity (Python interop)', (t) => skipLoudly(t, py.skip));
