import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HotPrefixes } from '../../router/policies/hot-prefixes.js';

test('top(n): the most shared prefixes in the window, with where their copies were, most first', () => {
  const h = new HotPrefixes(1000);
  for (let i = 0; i < 3; i++) h.add('64:a:b', 100 + i, ['w0:0']);
  h.add('64:a:b', 103, ['w0:0', 'w1:0']);
  h.add('32:c:d', 100, ['w2:0']);
  h.add('16:e:f', 100);
  assert.deepEqual(h.top(2, 200), [
    { key: '64:a:b', requests: 4, holders: ['w0:0', 'w1:0'] },
    { key: '32:c:d', requests: 1, holders: ['w2:0'] },
  ]);
  assert.deepEqual(h.top(5, 200).at(-1), { key: '16:e:f', requests: 1, holders: [] });
  // Out of the window: nothing is hot any more, and a sweep drops the holders with the key.
  assert.deepEqual(h.top(5, 2000), []);
  h.add('8:g:h', 2500);
  h.add('64:a:b', 2600);
  assert.deepEqual(h.top(5, 2600).find((x) => x.key === '64:a:b')?.holders, []);
});
