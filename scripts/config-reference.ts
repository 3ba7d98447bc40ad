/**
 * `npm run docs:config`: writes docs/CONFIG.md from the zod schemas of the router, the worker and
 * the kv-events config. `--check`: exit 1 if the committed file differs (what the test does).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { configReference } from '../src/config/reference-doc.js';

const file = fileURLToPath(new URL('../docs/CONFIG.md', import.meta.url));
const text = configReference();
if (process.argv.includes('--check')) {
  let now = '';
  try {
    now = readFileSync(file, 'utf8');
  } catch {
    /* missing: differs */
  }
  if (now !== text) {
    process.stderr.write('docs/CONFIG.md is out of date: run npm run docs:config\n');
    process.exit(1);
  }
} else {
  writeFileSync(file, text);
  process.stdout.write(`wrote ${file}\n`);
}
