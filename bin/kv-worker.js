#!/usr/bin/env node
// Runs the worker (worker/main.ts: the API process, which starts the scheduler and detokenizer stages) through tsx's loader.
import { register } from 'tsx/esm/api';

register();
await import('../worker/main.ts');
