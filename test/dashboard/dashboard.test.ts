// The dashboard in a real browser (Debian's Chromium through playwright-core) against a real router
// with three `kv-worker --engine sim` processes: every worker listed, numbers moving with real
// traffic, a SIGKILLed worker turning red. Set DASHBOARD_SCREENSHOT=docs/dashboard.png to save the page.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Page } from 'playwright-core';
import { removeIpcLeftovers, routerWith, startWorker, waitHealthy, waitUntil, workerAvailable, workerEntry, type WorkerProc } from '../router/helpers.js';
import type { RunningRouter } from '../../router/server.js';
import { chromiumMissing, launchBrowser, type Browser } from './browser.js';

const skip = chromiumMissing || (workerAvailable() ? false : 'bin/kv-worker.js not present');
if (skip) process.stderr.write(`dashboard.test.ts: SKIPPED: ${skip}\n`);

let workers: WorkerProc[] = [];
let router: RunningRouter;
let browser: Browser;
const ids = ['worker-0', 'worker-1', 'worker-2'];

before(async () => {
  if (skip) return;
  const extra = ['--prefill-tokens-per-s', '20000', '--decode-step-ms', '5', '--num-blocks', '2048'];
  workers = await Promise.all(ids.map((id) => startWorker({ id, extraArgs: extra })));
  router = await routerWith({ workers: workers.map(workerEntry) });
  await waitHealthy(router, 3);
  await waitUntil('streams connected', 15_000, () => router.service.registry.list().every((w) => w.streams.get(0)!.health().connected));
  // The tokenizer thread loads in the background; on a loaded machine its first answer can take long.
  await waitUntil('tokenizer ready', 90_000, () => router.service.pool.warm(router.service.config.tokenizer).then(() => true), 200);
  browser = await launchBrowser();
}, { timeout: 240_000 });

after(async () => {
  await browser?.close();
  await router?.close(500);
  await Promise.all(workers.map((w) => w.stop('SIGKILL')));
  for (const w of workers) removeIpcLeftovers(w.proc.pid);
});

/** The fleet table as the page shows it: worker → column name → cell text (and the state cell's class). */
async function fleet(page: Page): Promise<Record<string, Record<string, string>>> {
  return page.evaluate(() => {
    const heads = [...document.querySelectorAll('#fleet thead th')].map((th) => th.textContent ?? '');
    const out: Record<string, Record<string, string>> = {};
    for (const tr of document.querySelectorAll<HTMLTableRowElement>('#fleet tbody tr[data-worker]')) {
      const cells = [...tr.cells];
      const row: Record<string, string> = {};
      heads.forEach((h, i) => (row[h] = cells[i]?.textContent ?? ''));
      row.state_class = cells[heads.indexOf('state')]?.className ?? '';
      out[tr.dataset.worker!] = row;
    }
    return out;
  });
}

async function waitFleet(page: Page, what: string, timeoutMs: number, ok: (f: Record<string, Record<string, string>>) => boolean) {
  let last: unknown;
  await waitUntil(what, timeoutMs, async () => ok((last = await fleet(page)))).catch((e) => {
    throw new Error(`${(e as Error).message}; the table showed ${JSON.stringify(last)}`);
  });
}

const num = (s: string | undefined) => Number((s ?? '').replace(/[^0-9.]/g, '') || NaN);

async function send(prompt: string): Promise<number> {
  const res = await fetch(`${router.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt, max_tokens: 2 }) });
  await res.arrayBuffer().catch(() => {});
  return res.status;
}

async function complete(prompt: string): Promise<void> {
  assert.equal(await send(prompt), 200);
}

const shot = process.env.DASHBOARD_SCREENSHOT;

test('the live page lists every worker, follows real traffic, and turns a killed worker red', { skip, timeout: 180_000 }, async () => {
  const page = await browser.context.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
  const res = await page.goto(`${router.url}/dashboard`);
  assert.equal(res?.status(), 200);

  await waitFleet(page, 'three healthy rows', 20_000, (f) => ids.every((id) => f[id]?.state === 'healthy'));
  const before = await fleet(page);
  assert.deepEqual(Object.keys(before).sort(), ids);
  for (const id of ids) assert.equal(num(before[id]!.blocks), 0, `${id} holds nothing yet: ${before[id]!.blocks}`);
  assert.equal(await page.textContent('#conn'), 'live');

  // Real traffic: a few conversations with long prompts, several turns each; then a steady trickle
  // that keeps going while the page is watched (a rate is only > 0 while requests arrive).
  const convo = (c: number) => Array.from({ length: 300 }, (_, i) => `conv${c}w${i}`).join(' ');
  for (let turn = 0; turn < 3; turn++) await Promise.all([0, 1, 2, 3, 4, 5].map((c) => complete(`${convo(c)} turn ${turn}`)));
  let trickling = true;
  const statuses: number[] = [];
  const trickle = (async () => {
    for (let i = 0; trickling; i++) statuses.push(await send(`${convo(i % 6)} more ${i}`).catch(() => -1));
  })();
  try {
    await waitFleet(page, 'blocks held and requests/s shown after traffic', 30_000, (f) => {
      const blocks = ids.reduce((a, id) => a + num(f[id]?.blocks), 0);
      const rps = ids.some((id) => num(f[id]?.['req/s']) > 0);
      const hit = ids.every((id) => /^\d+% \//.test(f[id]?.['hit rate predicted / actual'] ?? ''));
      return blocks > 0 && rps && hit;
    });
    // The charts drew something: the requests/s series has a point above zero.
    await waitUntil('requests/s chart shows traffic', 10_000, () => page.evaluate(() => document.querySelectorAll('#chart-rps canvas').length === 1));

    // Prefixes shared by several turns show as a hash and a length, with where their copies are; the prompt text never.
    await waitUntil('a hot prefix listed', 10_000, () => page.evaluate(() => document.querySelectorAll('#hot tbody tr td:nth-child(4)').length > 0));
    const hot = await page.$$eval('#hot tbody tr', (trs) => trs.map((tr) => [...(tr as HTMLTableRowElement).cells].map((c) => c.textContent ?? '')));
    assert.ok(hot.some(([hash, length, requests, on]) => /^[0-9a-z]{4,10}$/.test(hash!) && Number(length!.replace(/,/g, '')) >= 16 && Number(requests) >= 2 && /worker-\d:0/.test(on!)), JSON.stringify(hot));
    assert.ok(!(await page.content()).includes('conv0w1'), 'no prompt text in the page');

    // The last decisions: each with its candidates, the pick, and what the worker then reported as cached.
    await waitUntil('a finished decision listed', 15_000, () =>
      page.evaluate(() => [...document.querySelectorAll('#decisions tbody tr')].some((tr) => /^\d[\d,]* \/ \d[\d,]*$/.test((tr as HTMLTableRowElement).cells[4]?.textContent ?? '') && (tr as HTMLTableRowElement).cells[5]?.textContent === 'ok')),
    );
    const decided = await page.$$eval('#decisions tbody tr', (trs) => trs.map((tr) => [...(tr as HTMLTableRowElement).cells].map((c) => c.textContent ?? '')));
    assert.ok(decided.some(([, prompt, cands, pick]) => Number(prompt!.replace(/,/g, '')) > 0 && /worker-\d:0/.test(pick!) && ids.every((id) => cands!.includes(id))), JSON.stringify(decided.slice(0, 3)));

    // The hit-rate chart carries the upper bound since start; conversations repeat prefixes, so it is above zero.
    await waitUntil('the upper bound in the snapshot', 15_000, async () => {
      const snap = (await (await fetch(`${router.url}/dashboard/snapshot`)).json()) as { series: { hit_rate_bound: (number | null)[] } };
      return (snap.series.hit_rate_bound.at(-1) ?? 0) > 0;
    });
    assert.ok(await page.evaluate(() => document.querySelector('#chart-hit')?.textContent?.includes('upper bound (since start)')), 'the chart legend names the bound');

    // For the README picture only: let the charts gather a history.
    if (shot) await waitUntil('a chart history for the picture', 60_000, () => statuses.length >= 150);

    const victim = workers[2]!;
    victim.proc.kill('SIGKILL');
    await victim.exited;
    removeIpcLeftovers(victim.proc.pid);
    await waitFleet(page, `${victim.id} red`, 20_000, (f) => f[victim.id]?.state === 'unhealthy' && f[victim.id]!.state_class.includes('state-unhealthy'));
    const bg = await page.$eval(`#fleet tr[data-worker="${victim.id}"] td.state`, (td) => getComputedStyle(td).backgroundColor);
    const [r, g, b] = bg.match(/\d+/g)!.map(Number);
    assert.ok(r! > 150 && g! < 80 && b! < 80, `the state cell of a dead worker is red, got ${bg}`);
    const after = await fleet(page);
    for (const id of ids.slice(0, 2)) assert.equal(after[id]!.state, 'healthy');

    if (shot) await page.screenshot({ path: shot, fullPage: true });
  } finally {
    trickling = false;
    await trickle;
  }
  // A request in flight on the victim when it died may fail; the trickle itself got through.
  assert.ok(statuses.filter((x) => x === 200).length > 0, JSON.stringify(statuses));
  assert.deepEqual(errors, [], 'no error in the page');
  await page.close();
});

test('with admin_key set the dashboard needs the key: 401 without, a cookie from ?key=, never the key in the page', { skip, timeout: 60_000 }, async () => {
  const key = 'dash-secret-key';
  const guarded = await routerWith({ workers: [workerEntry(workers[0]!)], admin_key: key });
  await waitHealthy(guarded, 1);
  const page = await browser.context.newPage();
  try {
    for (const path of ['/dashboard', '/dashboard/events', '/dashboard/snapshot', '/dashboard/static/app.js', '/dashboard/static/uplot.js']) {
      const r = await fetch(`${guarded.url}${path}`);
      assert.equal(r.status, 401, path);
      assert.match(((await r.json()) as { error: { message: string } }).error.message, /admin key/);
      const wrong = await fetch(`${guarded.url}${path}?key=nope`, { headers: { authorization: 'Bearer nope' } });
      assert.equal(wrong.status, 401, `${path} with a wrong key`);
      await wrong.arrayBuffer();
    }
    const withBearer = await fetch(`${guarded.url}/dashboard/snapshot`, { headers: { authorization: `Bearer ${key}` } });
    assert.equal(withBearer.status, 200);
    assert.equal(((await withBearer.json()) as { fleet: unknown[] }).fleet.length, 1);

    const denied = await page.goto(`${guarded.url}/dashboard`);
    assert.equal(denied?.status(), 401);
    const ok = await page.goto(`${guarded.url}/dashboard?key=${key}`);
    assert.equal(ok?.status(), 200);
    assert.equal(new URL(page.url()).search, '', 'redirected to the page without the key in the address');
    await waitFleet(page, 'the guarded fleet row', 20_000, (f) => f[workers[0]!.id] !== undefined);
    const cookies = await browser.context.cookies(`${guarded.url}/dashboard`);
    assert.equal(cookies.length, 1);
    assert.equal(cookies[0]!.httpOnly, true);
    assert.notEqual(cookies[0]!.value, key, 'the cookie holds a token derived from the key, not the key');
    assert.equal(await page.evaluate(() => document.cookie), '');
    assert.ok(!(await page.content()).includes(key));
    // Stopping the router with the page live: the dashboard stream ends by itself, not at the drain deadline.
    await guarded.close(60_000);
    assert.deepEqual(guarded.drained(), { finished: 1, ended: 0 });
  } finally {
    await page.close();
    await browser.context.clearCookies();
    await guarded.close(500);
  }
});
