/** Builds (or finds) the default model in the cache and prints where it is: `npm run model:build`. */
import { stat } from 'node:fs/promises';
import { ensureDefaultModel } from './cache.js';

const m = await ensureDefaultModel();
const size = (await stat(m.modelPath)).size;
console.log(`${m.modelPath} (${(size / 1e6).toFixed(1)} MB)`);
console.log(JSON.stringify(m.config));
