/** Small SVG plots, written by hand (no plotting dependency): TTFT CDFs and per-worker load over time. */

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#7f7f7f', '#bcbd22', '#393b79', '#637939'];

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const f = (x: number) => (Math.round(x * 10) / 10).toString();

function fmtMs(ms: number): string {
  if (ms >= 1000) return `${+(ms / 1000).toPrecision(3)} s`;
  return `${+ms.toPrecision(3)} ms`;
}

/** TTFT distribution per run, as CDFs on a log time axis. */
export function cdfSvg(title: string, series: { name: string; values: number[] }[]): string {
  const W = 760, H = 440, L = 64, R = 200, T = 40, B = 50;
  const pw = W - L - R, ph = H - T - B;
  const all = series.flatMap((s) => s.values).filter((v) => v > 0 && Number.isFinite(v));
  let lo = all.length ? Math.min(...all) : 1;
  let hi = all.length ? Math.max(...all) : 10;
  lo = Math.pow(10, Math.floor(Math.log10(lo)));
  hi = Math.pow(10, Math.ceil(Math.log10(hi)));
  if (hi <= lo) hi = lo * 10;
  const x = (v: number) => L + ((Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * pw;
  const y = (p: number) => T + (1 - p) * ph;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${W / 2 - R / 2}" y="22" text-anchor="middle" font-size="15">${esc(title)}</text>`);
  // Grid: decades and 2×, 5× marks.
  for (let d = lo; d <= hi * 1.0001; d *= 10) {
    for (const m of [1, 2, 5]) {
      const v = d * m;
      if (v > hi * 1.0001) break;
      const gx = x(v);
      out.push(`<line x1="${f(gx)}" y1="${T}" x2="${f(gx)}" y2="${T + ph}" stroke="${m === 1 ? '#ccc' : '#eee'}"/>`);
      if (m === 1 || (Math.log10(hi / lo) <= 3 && m === 5)) out.push(`<text x="${f(gx)}" y="${T + ph + 16}" text-anchor="middle">${fmtMs(v)}</text>`);
    }
  }
  for (const p of [0, 0.25, 0.5, 0.75, 0.9, 0.99, 1]) {
    out.push(`<line x1="${L}" y1="${f(y(p))}" x2="${L + pw}" y2="${f(y(p))}" stroke="${p === 0.9 || p === 0.99 ? '#f0d0d0' : '#eee'}"/>`);
    out.push(`<text x="${L - 6}" y="${f(y(p) + 4)}" text-anchor="end">${p}</text>`);
  }
  out.push(`<rect x="${L}" y="${T}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
  out.push(`<text x="${L + pw / 2}" y="${H - 12}" text-anchor="middle">time to first token (log scale)</text>`);
  out.push(`<text transform="translate(16 ${T + ph / 2}) rotate(-90)" text-anchor="middle">fraction of requests ≤ x</text>`);
  series.forEach((s, i) => {
    const v = [...s.values].filter(Number.isFinite).sort((a, b) => a - b);
    const c = COLORS[i % COLORS.length]!;
    if (v.length) {
      const pts: string[] = [`${f(x(v[0]!))},${f(y(0))}`];
      const step = Math.max(1, Math.floor(v.length / 400));
      for (let k = 0; k < v.length; k += step) pts.push(`${f(x(v[k]!))},${f(y((k + 1) / v.length))}`);
      pts.push(`${f(x(v.at(-1)!))},${f(y(1))}`);
      out.push(`<polyline fill="none" stroke="${c}" stroke-width="1.8" points="${pts.join(' ')}"/>`);
    }
    const ly = T + 10 + i * 18;
    out.push(`<line x1="${L + pw + 14}" y1="${ly}" x2="${L + pw + 34}" y2="${ly}" stroke="${c}" stroke-width="2.5"/>`);
    out.push(`<text x="${L + pw + 40}" y="${ly + 4}">${esc(s.name)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}

/** One panel per run: each worker's requests in flight (running + waiting) over time. */
export function loadSvg(title: string, panels: { name: string; series: { t: number; v: number }[][] }[]): string {
  const cols = panels.length > 1 ? 2 : 1;
  const rows = Math.ceil(panels.length / cols);
  const PW = 380, PH = 200, gap = 46, T = 40;
  const W = cols * PW + (cols + 1) * gap, H = T + rows * (PH + gap) + 30;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(title)}</text>`);
  const tMax = Math.max(1, ...panels.flatMap((p) => p.series.flatMap((s) => s.map((q) => q.t))));
  const vMax = Math.max(1, ...panels.flatMap((p) => p.series.flatMap((s) => s.map((q) => q.v))));
  panels.forEach((p, i) => {
    const ox = gap + (i % cols) * (PW + gap);
    const oy = T + Math.floor(i / cols) * (PH + gap);
    const x = (t: number) => ox + (t / tMax) * PW;
    const y = (v: number) => oy + PH - (v / vMax) * PH;
    out.push(`<rect x="${ox}" y="${oy}" width="${PW}" height="${PH}" fill="none" stroke="#333"/>`);
    out.push(`<text x="${ox + PW / 2}" y="${oy - 6}" text-anchor="middle" font-size="12">${esc(p.name)}</text>`);
    for (const frac of [0, 0.5, 1]) {
      out.push(`<text x="${ox - 4}" y="${f(y(vMax * frac) + 4)}" text-anchor="end">${Math.round(vMax * frac)}</text>`);
      out.push(`<text x="${f(x(tMax * frac))}" y="${oy + PH + 14}" text-anchor="middle">${Math.round(tMax * frac)} s</text>`);
      if (frac > 0 && frac < 1) out.push(`<line x1="${ox}" y1="${f(y(vMax * frac))}" x2="${ox + PW}" y2="${f(y(vMax * frac))}" stroke="#eee"/>`);
    }
    p.series.forEach((s, w) => {
      if (!s.length) return;
      const pts = s.map((q) => `${f(x(q.t))},${f(y(q.v))}`).join(' ');
      out.push(`<polyline fill="none" stroke="${COLORS[w % COLORS.length]}" stroke-width="1.1" stroke-opacity="0.85" points="${pts}"/>`);
    });
  });
  out.push(`<text x="${W / 2}" y="${H - 8}" text-anchor="middle">requests in flight per worker (running + waiting, from GET /load), one colour per worker; same scales in every panel</text>`);
  out.push('</svg>');
  return out.join('\n');
}
