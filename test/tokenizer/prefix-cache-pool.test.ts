// The router's tokenization as it runs (TokenizePool: threads, and inline), native encoder and
// rendered-chat prefix cache on by default: random growing conversations behind shared system
// prompts give exactly the ids of encoding the whole rendered text, and the cached prefixes end
// at every offset within a KV block (16 tokens), so reuse is checked across block boundaries.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { Tokenizer } from '../../src/tokenizer/tokenizer.js';
import { parseChat } from '../../src/tokenizer/chat.js';
import { splitAtBoundary } from '../../src/tokenizer/prefix-cache.js';
import { TokenizePool } from '../../router/tokenize-pool.js';

const tok = await Tokenizer.loadDefault();
const pools: TokenizePool[] = [];
after(async () => {
  for (const p of pools) await p.close();
});

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32);
}
const PIECES = ['hello', ' world', '  ', '\n', '\n\n', '😀', 'café', '日本', ' 123', '45', "'s", '<think>', '</think>', ' a', 'Ä', '\u0301', '{"k":', ' "v"}', '\r\n', '.', ' token', 'ization'];
const content = (r: () => number, max = 30) => Array.from({ length: 1 + Math.floor(r() * max) }, () => PIECES[Math.floor(r() * PIECES.length)]).join('');

for (const threads of [2, 0]) {
  test(`${threads ? `${threads} threads` : 'inline'}: cached chat ids equal whole-text ids; cached prefixes end at every offset in a block`, { timeout: 120_000 }, async () => {
    const pool = new TokenizePool(threads);
    pools.push(pool);
    const r = rng(threads + 7);
    const systems = Array.from({ length: 3 }, () => content(r, 200));
    const offsets = new Set<number>();
    let checked = 0;
    for (let conv = 0; conv < 40; conv++) {
      const messages: { role: string; content: string }[] = [{ role: 'system', content: systems[conv % systems.length]! }];
      for (let t = 0; t < 4; t++) {
        messages.push({ role: 'user', content: content(r) });
        const chat = parseChat({ messages });
        assert.equal(chat.kind, 'render');
        if (chat.kind !== 'render') return;
        const text = tok.renderChat(chat.input);
        const whole = tok.encode(text, { addSpecialTokens: false });
        assert.deepEqual(await pool.tokenize('default', { kind: 'chat', ...chat.input }), whole, `conversation ${conv} turn ${t}`);
        // Where the reusable prefix ends: before the last segment (the new tail).
        const segs = splitAtBoundary(text, '<|im_start|>');
        offsets.add(tok.encode(segs.slice(0, -1).join(''), { addSpecialTokens: false }).length % 16);
        checked++;
        messages.push({ role: 'assistant', content: content(r) });
      }
    }
    assert.equal(checked, 160);
    assert.ok(offsets.size >= 12, `prefix ends at ${offsets.size} of 16 offsets in a block`);
  });
}
