// The pure parts of discovery: merging sources, desired vs current → steps, the workers file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseWorker, type WorkerConfig } from '../../router/config.js';
import { mergeSets, reconcile } from '../../router/discovery/reconcile.js';
import { parseWorkersFile } from '../../router/discovery/file.js';

const w = (id: string, extra: Record<string, unknown> = {}): WorkerConfig => parseWorker({ id, url: `http://127.0.0.1:${8000 + id.charCodeAt(0)}`, ...extra });
const map = (...ws: WorkerConfig[]) => new Map(ws.map((x) => [x.id!, x]));

test('reconcile: new → add, gone → drain, same → nothing', () => {
  const steps = reconcile(map(w('A'), w('B')), new Map(), map(w('B'), w('C')));
  assert.deepEqual(steps, [{ do: 'drain', id: 'A' }, { do: 'add', worker: w('C') }]);
  assert.deepEqual(reconcile(map(w('A')), new Map(), map(w('A'))), []);
});

test('reconcile: a changed config is drained first and added once gone (never two members under one id)', () => {
  const changed = w('A', { block_size: 32 });
  assert.deepEqual(reconcile(map(w('A')), new Map(), map(changed)), [{ do: 'drain', id: 'A' }]);
  // While the old one drains, the new config waits...
  assert.deepEqual(reconcile(new Map(), map(w('A')), map(changed)), []);
  // ...and is added once it left.
  assert.deepEqual(reconcile(new Map(), new Map(), map(changed)), [{ do: 'add', worker: changed }]);
});

test('reconcile: a draining worker wanted again with the same config comes back', () => {
  assert.deepEqual(reconcile(new Map(), map(w('A')), map(w('A'))), [{ do: 'undrain', id: 'A' }]);
});

test('reconcile: key order does not make a config "changed"', () => {
  const a = parseWorker({ url: 'http://127.0.0.1:9001', id: 'A', block_size: 16 });
  const b = parseWorker({ block_size: 16, id: 'A', url: 'http://127.0.0.1:9001' });
  assert.deepEqual(reconcile(map(a), new Map(), map(b)), []);
});

test('mergeSets: the union; one id from two sources with different configs keeps the first and says so', () => {
  const { workers, conflicts } = mergeSets([[w('A'), w('B')], [w('B'), w('C')], [w('A', { block_size: 64 })]]);
  assert.deepEqual([...workers.keys()], ['A', 'B', 'C']);
  assert.equal(workers.get('A')!.block_size, 16);
  assert.deepEqual(conflicts, ['A']);
});

test('parseWorkersFile: workers, or one line saying what is wrong', () => {
  const ok = parseWorkersFile(JSON.stringify({ workers: [{ url: 'http://127.0.0.1:9' }] }));
  assert.ok('workers' in ok && ok.workers.length === 1);
  const bad = [
    ['{"workers": [', /^not valid JSON/],
    [JSON.stringify({ workers: [{ url: 'nope' }] }), /workers\.0\.url/],
    [JSON.stringify({ workers: [], extra: 1 }), /extra/],
    [JSON.stringify({ workers: [{ url: 'http://h:1' }, { url: 'http://h:1' }] }), /duplicate worker id "h:1"/],
  ] as const;
  for (const [text, re] of bad) {
    const r = parseWorkersFile(text);
    assert.ok('error' in r && re.test(r.error) && !r.error.includes('\n'), JSON.stringify(r));
  }
});
