// The kv-router dashboard: renders the snapshots /dashboard/events pushes (one a second).
// Builds the DOM with textContent only: nothing from the router is parsed as HTML.
'use strict';

const DASH = '–';
const COLORS = ['#0969da', '#cf222e', '#1a7f37', '#8250df', '#bf8700', '#1b7c83', '#e16f24', '#6e7781'];

const fmt = {
  int: (v) => (v === null || v === undefined ? DASH : Math.round(v).toLocaleString('en-US')),
  num: (v, d = 1) => (v === null || v === undefined ? DASH : v.toFixed(d)),
  pct: (v) => (v === null || v === undefined ? DASH : `${(v * 100).toFixed(0)}%`),
  ms: (v) => (v === null || v === undefined ? DASH : `${Math.round(v)} ms`),
  time: (ms) => new Date(ms).toLocaleTimeString('en-GB'),
};

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = document.createElement('tr');
  for (const c of cells) tr.append(c instanceof Node ? c : el('td', c));
  return tr;
}

function fill(tbody, rows, emptyText, span) {
  tbody.replaceChildren(...rows);
  if (rows.length === 0) {
    const td = el('td', emptyText, 'text');
    td.colSpan = span;
    tbody.append(row([td]));
  }
}

function tiers(r) {
  const t = Object.entries(r.blocks_by_tier);
  const main = fmt.int(r.blocks);
  if (t.length === 0 || (t.length === 1 && t[0][1] === r.blocks)) return t.length === 1 ? `${main} ${t[0][0]}` : main;
  return `${main} (${t.map(([k, v]) => `${k} ${fmt.int(v)}`).join(', ')})`;
}

function accuracyCell(r) {
  const td = el('td', `${r.prediction_warning ? '⚠ ' : ''}${fmt.pct(r.prediction_accuracy)}`, r.prediction_warning ? 'untrusted' : '');
  if (r.prediction_warning) td.title = r.prediction_warning;
  return td;
}

function renderFleet(s) {
  const rows = s.fleet.map((r) => {
    const stateText = r.draining ? 'draining' : r.state;
    const state = el('td', stateText, `state state-${stateText}`);
    state.title = r.last_error ?? '';
    const stream = el('td', r.trusted === null ? 'none' : r.trusted ? 'trusted' : 'untrusted', `text ${r.trusted ? '' : 'untrusted'}`);
    stream.title = r.trust_reason;
    const tr = row([
      el('td', r.worker, 'text'),
      r.rank,
      state,
      stream,
      tiers(r),
      fmt.pct(r.cache_fill),
      fmt.int(r.in_flight),
      fmt.int(r.queued_prefill_tokens),
      fmt.num(r.requests_per_s),
      `${fmt.pct(r.predicted_hit_rate)} / ${fmt.pct(r.actual_hit_rate)}`,
      accuracyCell(r),
      fmt.ms(r.lag_ms),
      fmt.int(r.gaps),
      fmt.int(r.replays),
      fmt.int(r.resets),
    ]);
    tr.dataset.worker = r.worker;
    tr.dataset.rank = String(r.rank);
    return tr;
  });
  fill(document.querySelector('#fleet tbody'), rows, 'no workers', 15);
}

function renderDecisions(s) {
  const rows = s.decisions.map((d) => {
    const cands = el('td', null, 'wrap');
    for (const c of d.candidates) {
      const terms = Object.entries(c.terms).map(([k, v]) => `${k} ${fmt.num(v, 0)}`).join(', ');
      const picked = d.pick && d.pick.worker === c.worker && d.pick.rank === c.rank;
      cands.append(el('div', `${c.worker}:${c.rank} · ${fmt.int(c.matched_tokens)} · ${fmt.num(c.cost, 0)} (${terms})`, picked ? 'pick' : ''));
    }
    return row([
      el('td', fmt.time(d.at_ms), 'text'),
      fmt.int(d.prompt_tokens),
      cands,
      d.pick ? `${d.pick.worker}:${d.pick.rank}` : DASH,
      `${fmt.int(d.pick?.predicted_cached_tokens)} / ${fmt.int(d.actual_cached_tokens)}`,
      d.outcome ?? 'in flight',
    ]);
  });
  fill(document.querySelector('#decisions tbody'), rows, 'no decision recorded yet', 6);
}

function renderHot(s) {
  const rows = s.hot_prefixes.map((h) => row([el('td', h.hash, 'text'), fmt.int(h.length), fmt.int(h.requests), el('td', h.holders.join(', ') || DASH, 'wrap')]));
  fill(document.querySelector('#hot tbody'), rows, 'no shared prefix in the window', 4);
}

const charts = new Map();

function chart(id, labels, data) {
  const host = document.getElementById(id);
  const key = labels.join('\u0000');
  let c = charts.get(id);
  if (c && c.key !== key) {
    c.plot.destroy();
    c = undefined;
  }
  if (!c) {
    const opts = {
      width: Math.max(300, host.clientWidth - 4),
      height: 170,
      legend: { show: true },
      scales: { x: { time: true } },
      series: [{}, ...labels.map((label, i) => ({ label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: false }))],
    };
    c = { key, plot: new uPlot(opts, data, host) };
    charts.set(id, c);
  } else c.plot.setData(data);
}

function renderCharts(s) {
  const t = s.series;
  chart('chart-rps', ['requests/s'], [t.t, t.requests_per_s]);
  chart('chart-ttfb', ['p50', 'p99'], [t.t, t.ttfb_p50_ms, t.ttfb_p99_ms]);
  chart('chart-hit', ['predicted', 'actual', 'upper bound (since start)'], [t.t, t.hit_rate_predicted, t.hit_rate_actual, t.hit_rate_bound]);
  const workers = Object.keys(t.load).sort();
  chart('chart-load', workers.length ? workers : ['(none)'], [t.t, ...(workers.length ? workers.map((w) => t.load[w]) : [t.t.map(() => null)])]);
}

function render(s) {
  document.getElementById('summary').textContent =
    `policy ${s.policy} · ${s.totals.healthy}/${s.totals.workers} workers healthy · ${fmt.num(s.totals.requests_per_s)} req/s · ${fmt.int(s.totals.in_flight)} in flight` +
    (s.present.ttfb ? '' : ' · (no TTFB metric)');
  renderFleet(s);
  renderCharts(s);
  renderDecisions(s);
  renderHot(s);
}

function connect() {
  const conn = document.getElementById('conn');
  const es = new EventSource('/dashboard/events');
  es.addEventListener('snapshot', (e) => {
    conn.textContent = 'live';
    conn.className = 'conn conn-up';
    render(JSON.parse(e.data));
  });
  es.addEventListener('error', () => {
    conn.textContent = 'reconnecting';
    conn.className = 'conn conn-down';
    // The browser gives up after a refused reconnect (router restarting): try again ourselves.
    if (es.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
  });
}

connect();
