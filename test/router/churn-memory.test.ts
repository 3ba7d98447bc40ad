/**
 * Memory is bounded by what is held, not by history: a real router sees workers added and removed
 * a hundred times through its admin API, each with a real publisher whose history is replayed
 * (a late join) and whose live stream has gaps to replay; afterwards nothing of the removed
 * workers is left (index sources, load, health, metric labels) and the heap after GC is where it
 * was after the first cycles. Then one source takes a million block events of churn.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { connectAddressFor, parseKVEventsConfig } from '../../src/events/config.js';
import { KVEventPublisher } from '../../src/events/publisher.js';
import type { KVEvent } from '../../src/events/types.js';
import { PrefixIndex } from '../../src/index/index.js';
import { stored } from '../helpers/events.js';
import { fakeUpstream, routerWith, waitUntil } from './helpers.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
/** JS heap plus ArrayBuffers (the index keeps its records in typed arrays) after a full GC, MB. */
const heapAfterGcMb = () => {
  gc();
  gc();
  const m = process.memoryUsage();
  return (m.heapUsed + m.arrayBuffers) / 1e6;
};

const dir = mkdtempSync(join(tmpdir(), 'kvr-churn-'));
const closers: Array<() => Promise<unknown> | unknown> = [];
after(async () => {
  for (const c of closers.reverse()) await c();
  rmSync(dir, { recursive: true, force: true });
});

const CYCLES = 100;
const BATCHES = 40;

describe('memory under churn', { timeout: 240_000 }, () => {
  test(`${CYCLES} workers added and removed, each replayed: nothing of them is left, heap after GC flat`, async () => {
    const upstream = await fakeUpstream((_req, res) => res.end('{"object":"list","data":[]}'));
    closers.push(() => upstream.close());
    const r = await routerWith({ health: { interval_ms: 50, timeout_ms: 1000, failure_threshold: 3 } });
    closers.push(() => r.close());
    const metrics = async () => (await fetch(`${r.url}/metrics`)).text();

    let heapAfterWarmup = 0;
    for (let cycle = 0; cycle < CYCLES; cycle++) {
      const id = `churn-${cycle}`;
      const pub = await KVEventPublisher.create({
        config: parseKVEventsConfig({ endpoint: `ipc://${dir}/pub-${cycle}.sock`, replay_endpoint: 'tcp://127.0.0.1:0', topic: 'kv' }),
      });
      // Closed below; also at the end if an assertion fails mid-cycle (an open publisher would keep this file's process alive).
      const closePub = () => pub.close(0);
      closers.push(closePub);
      // History before the router subscribes: replayed as a late join.
      for (let i = 0; i < BATCHES / 2; i++) pub.publish([stored(cycle * 1000 + i, 4)]);
      await pub.flush();
      const res = await fetch(`${r.url}/workers`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ id, url: upstream.url, kv_events: { endpoint: pub.endpoint, replay_endpoint: connectAddressFor(pub.replayEndpoint!), topic: 'kv' } }),
      });
      assert.equal(res.status, 201, await res.text());
      const source = `${id}:0`;
      // Live batches until the late join is replayed and every block is in (a PUB drops what it
      // sends before the connection is up; those are replayed as gaps).
      let i = BATCHES / 2;
      await waitUntil(`cycle ${cycle}: every batch applied`, 10_000, async () => {
        if (i < BATCHES) {
          pub.publish([stored(cycle * 1000 + i++, 4)]);
          await pub.flush();
        }
        return r.service.index.stats(source).blocks === BATCHES * 4;
      }, 5);
      // One request through it, so it has per-worker metric labels to drop.
      const done = await fetch(`${r.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: [1, 2, 3], max_tokens: 1 }) });
      assert.equal(done.status, 200, await done.text());
      assert.equal(done.headers.get('x-kv-router-worker'), id);
      assert.equal((await fetch(`${r.url}/workers/${id}`, { method: 'DELETE' })).status, 200);
      await pub.close(0);
      // Not kept for the end: a closed publisher still holds its replay ring, which the heap check would count.
      closers.splice(closers.indexOf(closePub), 1);
      assert.equal(r.service.index.hasSource(source), false, 'the index forgot the source');
      assert.equal(r.service.registry.get(id), undefined);
      if (cycle === 9) heapAfterWarmup = heapAfterGcMb();
    }
    const heapEnd = heapAfterGcMb();
    const m = await metrics();
    assert.ok(!/churn-\d+/.test(m), `no metric label of a removed worker is left: ${(/.*churn-\d+.*/.exec(m) ?? [''])[0]}`);
    // 90 cycles × 160 blocks each were held and dropped; per cycle the router holds ~30 KB while a
    // worker is in (feeds, sockets, trees): 4 MB would be a leak of over a hundred cycles' state.
    const grown = heapEnd - heapAfterWarmup;
    console.log(`churn: heap after GC ${heapAfterWarmup.toFixed(1)} → ${heapEnd.toFixed(1)} MB over ${CYCLES - 10} cycles`);
    assert.ok(grown < 4, `heap after GC grew ${grown.toFixed(1)} MB over ${CYCLES - 10} add/remove cycles`);
  });

  test('a million block events of churn on one source: the index holds what is cached, not what was', () => {
    const index = new PrefixIndex();
    index.addSource('s');
    const base = heapAfterGcMb();
    const HELD = 4096;
    let hash = 1n;
    const live: bigint[] = [];
    for (let n = 0; n < 1_000_000; n += 32) {
      const events: KVEvent[] = [];
      const hashes: bigint[] = [];
      for (let k = 0; k < 32; k++) hashes.push(hash++);
      const tokens = hashes.flatMap((h) => Array.from({ length: 16 }, (_, t) => Number(h % 100_000n) + t));
      events.push({ type: 'BlockStored', block_hashes: hashes, parent_block_hash: null, token_ids: tokens, block_size: 16, lora_id: null, medium: 'GPU', lora_name: null });
      live.push(...hashes);
      if (live.length > HELD) events.push({ type: 'BlockRemoved', block_hashes: live.splice(0, live.length - HELD), medium: 'GPU' });
      index.applyBatch('s', { ts: 0, dp_rank: 0, events });
    }
    assert.equal(index.stats('s').blocks, HELD);
    const held = heapAfterGcMb() - base;
    console.log(`churn: ${HELD} blocks held after 1M stored: ${held.toFixed(2)} MB (${((held * 1e6) / HELD).toFixed(0)} B per held block)`);
    // The index states at most 192 B a node plus 128 B per engine hash: 4096 blocks ≈ 1.3 MB.
    assert.ok(held < 4, `index heap for ${HELD} held blocks after a million stored: ${held.toFixed(2)} MB`);
  });
});
