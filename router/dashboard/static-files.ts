import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = (f: string) => fileURLToPath(new URL(`./static/${f}`, import.meta.url));
const uplot = (f: string) => createRequire(import.meta.url).resolve(`uplot/dist/${f}`);

/** The only files the dashboard serves (a fixed list: no path from the URL reaches the file system). */
const FILES: Record<string, { path: () => string; type: string }> = {
  'index.html': { path: () => here('index.html'), type: 'text/html; charset=utf-8' },
  'app.js': { path: () => here('app.js'), type: 'text/javascript; charset=utf-8' },
  'style.css': { path: () => here('style.css'), type: 'text/css; charset=utf-8' },
  'uplot.js': { path: () => uplot('uPlot.iife.min.js'), type: 'text/javascript; charset=utf-8' },
  'uplot.css': { path: () => uplot('uPlot.min.css'), type: 'text/css; charset=utf-8' },
};

const cache = new Map<string, Buffer>();

export function staticFile(name: string): { body: Buffer; type: string } | null {
  const f = Object.hasOwn(FILES, name) ? FILES[name] : undefined;
  if (!f) return null;
  let body = cache.get(name);
  if (!body) cache.set(name, (body = readFileSync(f.path())));
  return { body, type: f.type };
}
