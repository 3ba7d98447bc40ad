/**
 * The fleet-scale benchmark (bench/fleet-scale.bench.ts) cannot rot: a --quick run (4 workers × 2
 * ranks against 2 × 2, publishers in child processes, a real router process) writes every result
 * key, and no child process outlives it, whether it ends normally or is killed. Plus the pure
 * parts it stands on: the simulated cache holds its capacity and evicts only what it stored, and
 * quantiles from histogram deltas.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import { familyTokens, RankCache } from '../../bench/fleet-scale/cache-sim.js';
import { bucketsOf, quantileBetween, sumOf } from '../../bench/fleet-scale/prom.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'kvfleet-test-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Running (a zombie left for init to reap counts as gone). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

async function gone(pids: number[], withinMs: number): Promise<number[]> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    const left = pids.filter(alive);
    if (left.length === 0 || Date.now() > deadline) return left;
    await new Promise((r) => setTimeout(r, 100));
  }
}

function bench(out: string) {
  return spawn(process.execPath, ['--import', 'tsx', 'bench/fleet-scale.bench.ts', '--quick', '--out', out], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
}

test('the simulated rank cache fills to capacity, then evicts what it stored, leaf first', () => {
  const shape = { blockSize: 4, families: 2, familyBlocks: 3, tailBlocks: 5, capacity: 30 };
  const c = new RankCache(shape, 7);
  const held = new Set<bigint>();
  const parentOf = new Map<bigint, bigint | null>();
  for (let i = 0; i < 200; i++) {
    for (const e of c.step(2.5)) {
      if (e.type === 'BlockStored') {
        assert.equal(e.token_ids.length, e.block_hashes.length * shape.blockSize);
        if (e.parent_block_hash !== null) assert.ok(held.has(e.parent_block_hash as bigint), 'parent is held');
        e.block_hashes.forEach((h, i) => {
          held.add(h as bigint);
          parentOf.set(h as bigint, (i === 0 ? e.parent_block_hash : e.block_hashes[i - 1]!) as bigint | null);
        });
      } else if (e.type === 'BlockRemoved') {
        for (const h of e.block_hashes) {
          assert.ok(held.delete(h as bigint), 'removed a held block');
          for (const k of held) assert.notEqual(parentOf.get(k), h, 'a block is removed only after its children');
        }
      }
    }
    assert.equal(c.heldBlocks, held.size);
    assert.ok(c.heldBlocks <= shape.capacity);
  }
  assert.equal(c.heldBlocks, shape.capacity);
  // Family prompts are the same tokens on every rank (what /route prompts hit).
  assert.deepEqual(familyTokens(1, shape), familyTokens(1, shape));
  assert.notDeepEqual(familyTokens(0, shape), familyTokens(1, shape));
});

test('quantiles from the difference of two histogram scrapes', () => {
  const scrape = (a: number, b: number, c: number) =>
    [`x_bucket{le="0.001",policy="p"} ${a}`, `x_bucket{le="0.002",policy="p"} ${a + b}`, `x_bucket{le="+Inf",policy="p"} ${a + b + c}`, `x_count{policy="p"} ${a + b + c}`, 'y{w="1"} 2', 'y{w="2"} 3', 'yz 100'].join('\n');
  const before = bucketsOf(scrape(10, 0, 0), 'x');
  const after = bucketsOf(scrape(10 + 50, 50, 0), 'x');
  const q = quantileBetween(before, after, 0.99);
  assert.equal(q.count, 100);
  assert.equal(q.upperBound, 0.002);
  assert.ok(q.estimate > 0.001 && q.estimate <= 0.002);
  assert.equal(q.shareUnder1ms, 0.5);
  assert.equal(quantileBetween(before, after, 0.5).upperBound, 0.001);
  assert.equal(sumOf(scrape(0, 0, 0), 'y'), 5);
});

test('fleet-scale --quick writes every result key and leaves no child process behind', { timeout: 180_000 }, async () => {
  const out = join(dir, 'fleet.json');
  const p = bench(out);
  let stderr = '';
  p.stderr!.on('data', (d) => (stderr += d));
  p.stdout!.resume();
  const code = await new Promise<number | null>((r) => p.once('exit', (c) => r(c)));
  assert.equal(code, 0, stderr);
  assert.ok(existsSync(out));
  const j = JSON.parse(readFileSync(out, 'utf8'));
  for (const k of ['8-sources', '4-sources']) {
    const r = j.results[k];
    assert.ok(r, `results.${k}`);
    for (const m of ['bytes_per_block_heap', 'bytes_per_block_heap_and_buffers', 'bytes_per_block_rss', 'decision_p50_ms', 'decision_p99_ms', 'route_client_p99_ms', 'lag_p50_ms', 'lag_p99_ms', 'applied_block_events_per_s', 'held_blocks']) {
      assert.equal(r[m].runs.length, 3, `${k}.${m}`);
      for (const f of ['median', 'min', 'max']) assert.equal(typeof r[m][f], 'number', `${k}.${m}.${f}`);
    }
    assert.equal(r.held_blocks.median, r.sources * j.config.blocks_per_source);
    assert.ok(r.applied_block_events_per_s.median > 0);
    assert.ok(r.bytes_per_block_heap_and_buffers.median > r.bytes_per_block_heap.median, 'the node store lives in ArrayBuffers');
    assert.equal(typeof r.quiet.routeP99Ms, 'number', `${k}.quiet`);
  }
  for (const k of ['decision_p99', 'route_client_p99', 'bytes_per_block_heap', 'lag_p99', 'applied_block_events_per_s']) assert.equal(typeof j.summary.ratio_vs_baseline[k], 'number', k);
  assert.equal(typeof j.summary.decision_p99_under_1ms, 'boolean');
  assert.equal(j.child_pids.length, 2 * 3);
  assert.deepEqual(await gone(j.child_pids, 0), []);
});

test('killing the bench stops its publisher processes and its router', { timeout: 120_000 }, async () => {
  const p = bench(join(dir, 'killed.json'));
  p.stderr!.resume();
  const lines = createInterface({ input: p.stdout! });
  const pids = await new Promise<number[]>((resolve, reject) => {
    lines.on('line', (l) => {
      const m = /router ready \(pid (\d+), publisher processes ([\d ]+),/.exec(l);
      if (m) resolve([Number(m[1]), ...m[2]!.trim().split(' ').map(Number)]);
    });
    p.once('exit', (c) => reject(new Error(`bench exited (${c}) before its fleet was up`)));
  });
  assert.equal(pids.length, 3);
  assert.ok(pids.every(alive));
  p.kill('SIGKILL');
  assert.deepEqual(await gone(pids, 30_000), [], 'children outlived the bench');
});
