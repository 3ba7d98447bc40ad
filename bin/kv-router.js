#!/usr/bin/env node
import { register } from 'tsx/esm/api';

register();
if (process.argv[2] === 'status') {
  const { statusMain } = await import('../router/status-cli.ts');
  process.exitCode = await statusMain(process.argv.slice(3));
} else {
  await import('../router/main.ts');
}
