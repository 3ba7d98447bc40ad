#!/usr/bin/env node
// Runs the TypeScript CLI (src/cli/kv-events.ts) through tsx's loader, in this process.
import { register } from 'tsx/esm/api';

register();
const { run } = await import('../src/cli/kv-events.ts');
await run(process.argv.slice(2));
