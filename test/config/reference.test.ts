// docs/CONFIG.md is what the schemas generate (so it cannot drift), and it lists every option.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { configReference } from '../../src/config/reference-doc.js';
import { optionRows, renderReference } from '../../src/config/reference.js';
import { RouterConfigSchema } from '../../router/config.js';
import { WorkerConfigSchema } from '../../worker/config.js';

const root = fileURLToPath(new URL('../..', import.meta.url));

test('the committed docs/CONFIG.md equals the generated reference (npm run docs:config)', () => {
  assert.equal(readFileSync(`${root}docs/CONFIG.md`, 'utf8'), configReference(), 'docs/CONFIG.md is out of date: run npm run docs:config');
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/config-reference.ts', '--check'], { cwd: root, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
});

test('every top-level option of the router and the worker is in the reference, with type and default', () => {
  const doc = configReference();
  for (const k of Object.keys(RouterConfigSchema.shape)) assert.match(doc, new RegExp(`\\| \`${k}\` \\|`), `router ${k}`);
  for (const k of Object.keys(WorkerConfigSchema.shape)) assert.ok(doc.includes(`| \`${k}\` |`), `worker ${k}`);
  assert.ok(doc.includes('| `num_blocks` | integer >= 1 | `1024` | KV-cache blocks on the device. |'), 'a worker row');
  assert.ok(doc.includes('| `retry.max_attempts` | integer 1-10 | `3` |'), 'a nested router row');
});

test('an option without a description fails the generation, naming it', () => {
  const s = z.object({ a: z.number().default(1).describe('A.'), b: z.object({ c: z.string() }).describe('B.') });
  assert.throws(() => renderReference([{ title: 'T', intro: '', schema: s }], '# x'), /T: b\.c/);
  const rows = optionRows(z.object({ e: z.enum(['x', 'y']).nullable().default(null).describe('E.') }));
  assert.deepEqual(rows, [{ path: 'e', type: '"x" \\| "y" \\| null', default: '`null`', meaning: 'E.' }]);
});
