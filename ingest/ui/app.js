// Argus's web UI: plain JavaScript over the server's own HTTP API, no dependencies.
// Pages: Query (Stack Language or PromQL, drawn on a canvas), Live (MQL or the Stack
// Language over events, streamed), Explore (tags, cardinality, cluster). The whole view is
// in the URL's hash, so a copied link shows the same view.
'use strict';

// ---------- small helpers ----------

const $ = (sel, root = document) => root.querySelector(sel);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// Atlas's default palette (armytage), as the PNG renderer uses it.
const PALETTE = ['#0075dc', '#993f00', '#9dcc00', '#4c005c', '#00998f', '#ffa405', '#5ef1f2',
  '#f0a3ff', '#94ffb5', '#ff0010', '#2bce48', '#740aff', '#191919', '#ff5005', '#005c31',
  '#ffcc99', '#808080', '#8f7c00', '#c20088', '#003380', '#ffa8bb', '#426600', '#990000', '#ffe100'];

// ---------- the API ----------

function token() { return sessionStorage.getItem('argus.token') || ''; }

function headers() {
  const t = token();
  return t ? { Authorization: 'Bearer ' + t } : {};
}

function url(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== '') q.append(k, v);
  }
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// The API's own words for an error: `{"message": ...}` (Atlas style) or `{"error": ...}`
// (Prometheus style), else the body.
async function errorOf(resp) {
  const text = await resp.text();
  let message = text;
  try {
    const j = JSON.parse(text);
    message = j.message || j.error || text;
  } catch (_) { /* not JSON */ }
  if (resp.status === 401) askToken();
  return new ApiError(resp.status, `${resp.status}: ${message}`);
}

async function get(path, params) {
  const resp = await fetch(url(path, params), { headers: headers() });
  if (!resp.ok) throw await errorOf(resp);
  return resp;
}

async function getJson(path, params) { return (await get(path, params)).json(); }

// ---------- the view's state, in the URL ----------

function route() {
  const hash = location.hash.replace(/^#\/?/, '');
  const [page, query] = hash.split('?');
  return { page: page || 'query', params: new URLSearchParams(query || '') };
}

function setRoute(page, params, push) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '') q.set(k, v);
  const hash = `#/${page}?${q.toString()}`;
  rendered = hash;
  if (location.hash === hash) return;
  if (push) history.pushState(null, '', hash); else history.replaceState(null, '', hash);
}

// The hash the page on screen shows; navigation to another one renders anew.
let rendered = null;

// ---------- times ----------

const UNITS = { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3, w: 7 * 86400e3 };

function durationMs(text) {
  const m = /^(\d+(?:\.\d+)?)([smhdw])$/.exec(text.trim());
  return m ? Number(m[1]) * UNITS[m[2]] : NaN;
}

// A time as the forms take it: `now`, `now-3h`, `e-1h` (relative to `end`), epoch seconds
// or ms, or a date; NaN when unreadable.
function timeMs(text, end) {
  const t = (text || '').trim();
  if (t === '' || t === 'now') return Date.now();
  let m = /^(now|e)-(.+)$/.exec(t);
  if (m) return (m[1] === 'e' ? end : Date.now()) - durationMs(m[2]);
  if (/^\d+$/.test(t)) return t.length <= 10 ? Number(t) * 1000 : Number(t);
  return Date.parse(t);
}

// Swedish conventions are ISO's: 2026-12-06 02:25:10.
function zoneFormatter(tz, opts) {
  try { return new Intl.DateTimeFormat('sv-SE', { timeZone: tz || 'UTC', hour12: false, ...opts }); }
  catch (_) { return new Intl.DateTimeFormat('sv-SE', { timeZone: 'UTC', hour12: false, ...opts }); }
}

// ---------- numbers ----------

const PREFIXES = [[1e12, 'T'], [1e9, 'G'], [1e6, 'M'], [1e3, 'k'], [1, ''], [1e-3, 'm'], [1e-6, 'μ'], [1e-9, 'n']];

function short(v) {
  if (!Number.isFinite(v)) return String(v);
  if (v === 0) return '0';
  const a = Math.abs(v);
  for (const [f, p] of PREFIXES) {
    if (a >= f) return +(v / f).toPrecision(3) + p;
  }
  return v.toExponential(2);
}

// Tick spacing as Atlas picks it: 1, 2, 3, 4 or 5 times a power of ten.
function valueTicks(min, max, px) {
  const want = Math.max(2, Math.floor(px / 40));
  const span = max - min;
  if (!(span > 0)) return [min];
  const raw = span / want;
  const pow = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 3, 4, 5, 10].map((m) => m * pow).find((s) => s >= raw) || 10 * pow;
  const out = [];
  for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9 && out.length < 100; v += step) {
    out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  }
  return out;
}

const TIME_STEPS = [1e3, 5e3, 10e3, 30e3, 60e3, 120e3, 300e3, 600e3, 900e3, 1800e3, 3600e3,
  7200e3, 10800e3, 21600e3, 43200e3, 86400e3, 2 * 86400e3, 7 * 86400e3, 14 * 86400e3, 30 * 86400e3];

function timeTicks(t1, t2, px, tz) {
  const want = Math.max(2, Math.floor(px / 90));
  const step = TIME_STEPS.find((s) => (t2 - t1) / s <= want) || TIME_STEPS[TIME_STEPS.length - 1];
  // Ticks on the zone's round times: offset the zone's UTC offset at t1.
  const offset = zoneOffsetMs(t1, tz);
  const first = Math.ceil((t1 + offset) / step) * step - offset;
  const out = [];
  for (let t = first; t <= t2 && out.length < 200; t += step) out.push(t);
  const fmt = step >= 86400e3
    ? zoneFormatter(tz, { month: '2-digit', day: '2-digit' })
    : zoneFormatter(tz, { hour: '2-digit', minute: '2-digit', ...(step < 60e3 ? { second: '2-digit' } : {}) });
  return out.map((t) => [t, fmt.format(new Date(t))]);
}

function zoneOffsetMs(t, tz) {
  const parts = zoneFormatter(tz, { year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric' })
    .formatToParts(new Date(t));
  const get = (type) => Number((parts.find((p) => p.type === type) || {}).value || 0);
  const asUtc = Date.UTC(get('year'), get('month') - 1, get('day'), get('hour') % 24, get('minute'), get('second'));
  return asUtc - Math.floor(t / 1000) * 1000;
}

// ---------- the chart ----------

// Lines: [{label, tags, values: [number|NaN], color?, style?, width?, plot?}], on times
// start + i*step; `plots` the y-axes ([{scale, ylabel, lower, upper}], plot 0 on the left,
// the others on the right). A line draws as its expression asks (LINE, AREA, STACK, VSPAN,
// in its color and width, on its plot) unless `opts.style` overrides them all. Draws on a
// canvas with a time axis in `tz`, a legend whose entries hide their line on click, a
// tooltip with every line's value at the step under the cursor, and drag to zoom.
class Chart {
  constructor(parent, data, opts) {
    this.data = data;
    this.opts = opts || {};
    this.hidden = new Set();
    this.wrap = el('div', { class: 'chart-wrap' });
    this.canvas = el('canvas', { class: 'chart', 'data-lines': data.lines.length, 'data-plots': this.plotCount() });
    this.tip = el('div', { class: 'tooltip', hidden: true });
    this.legend = el('div', { class: 'legend' });
    this.wrap.append(this.canvas, this.tip);
    parent.append(this.wrap, this.legend);
    this.drawLegend();
    this.canvas.addEventListener('mousemove', (e) => this.hover(e));
    this.canvas.addEventListener('mouseleave', () => { this.tip.hidden = true; this.draw(); });
    this.canvas.addEventListener('mousedown', (e) => { this.dragFrom = this.offsetX(e); });
    this.canvas.addEventListener('mouseup', (e) => this.endDrag(e));
    this.resize = () => this.draw();
    window.addEventListener('resize', this.resize);
    const t0 = performance.now();
    this.draw();
    // How long the first drawing took, for the browser test's budget.
    this.canvas.dataset.drawMs = String(Math.round(performance.now() - t0));
  }

  destroy() { window.removeEventListener('resize', this.resize); }

  // The line's own color (`AARRGGBB` from v2.json) or the palette's, as the PNG picks it.
  color(li) {
    const c = this.data.lines[li].color;
    if (typeof c === 'string' && /^[0-9a-f]{8}$/i.test(c)) {
      const alpha = parseInt(c.slice(0, 2), 16) / 255;
      return `rgba(${parseInt(c.slice(2, 4), 16)},${parseInt(c.slice(4, 6), 16)},${parseInt(c.slice(6, 8), 16)},${+alpha.toFixed(3)})`;
    }
    return PALETTE[li % PALETTE.length];
  }

  style(line) {
    const o = this.opts.style;
    return o && o !== 'auto' ? o.toUpperCase() : (line.style || 'LINE');
  }

  plotOf(line) { return Math.max(0, Math.min(this.plotCount() - 1, line.plot || 0)); }

  plotCount() { return Math.max(1, (this.data.plots || []).length); }

  time(i) { return this.data.start + i * this.data.step; }

  count() { return this.data.lines.reduce((n, l) => Math.max(n, l.values.length), 0); }

  // Per plot: its value range over visible lines (stacks summed; areas and stacks reach 0,
  // as Atlas's auto-style bounds do; explicit bounds win).
  layout() {
    const r = this.canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(200, Math.round(r.width)), hgt = Math.max(120, Math.round(r.height));
    if (this.canvas.width !== w * dpr || this.canvas.height !== hgt * dpr) {
      this.canvas.width = w * dpr;
      this.canvas.height = hgt * dpr;
    }
    const n = this.count();
    const plots = [];
    for (let p = 0; p < this.plotCount(); p++) {
      plots.push({ min: Infinity, max: -Infinity, up: new Array(n).fill(0), down: new Array(n).fill(0), zero: false, meta: (this.data.plots || [])[p] || {} });
    }
    this.data.lines.forEach((l, li) => {
      if (this.hidden.has(li)) return;
      const P = plots[this.plotOf(l)];
      const style = this.style(l);
      if (style === 'VSPAN') return;
      if (style !== 'LINE') P.zero = true;
      const values = l.values;
      for (let i = 0; i < values.length; i++) {
        const v = values[i];
        if (!Number.isFinite(v)) continue;
        let y = v;
        if (style === 'STACK') y = v >= 0 ? (P.up[i] += v) : (P.down[i] += v);
        if (y < P.min) P.min = y;
        if (y > P.max) P.max = y;
      }
    });
    for (const P of plots) {
      if (!Number.isFinite(P.min)) { P.min = 0; P.max = 1; }
      if (P.zero) { P.min = Math.min(0, P.min); P.max = Math.max(0, P.max); }
      const lower = Number(P.meta.lower), upper = Number(P.meta.upper);
      if (P.meta.lower !== undefined && Number.isFinite(lower)) P.min = lower;
      if (P.meta.upper !== undefined && Number.isFinite(upper)) P.max = upper;
      if (P.min === P.max) { P.min -= 1; P.max += 1; }
    }
    const plot = { x1: 60, x2: w - 12 - 50 * (plots.length - 1), y1: 10, y2: hgt - 24 };
    const t1 = this.time(0), t2 = this.time(Math.max(0, n - 1));
    return { w, h: hgt, dpr, plots, plot, t1, t2: t2 > t1 ? t2 : t1 + this.data.step, n };
  }

  x(L, t) { return L.plot.x1 + ((t - L.t1) / (L.t2 - L.t1)) * (L.plot.x2 - L.plot.x1); }

  y(L, P, v) { return L.plot.y2 - ((v - P.min) / (P.max - P.min)) * (L.plot.y2 - L.plot.y1); }

  draw(cursorIndex) {
    const L = this.layout();
    this.L = L;
    const g = this.canvas.getContext('2d');
    g.setTransform(L.dpr, 0, 0, L.dpr, 0, 0);
    g.clearRect(0, 0, L.w, L.h);
    g.font = '11px system-ui, sans-serif';
    g.fillStyle = '#6a6f75';
    g.strokeStyle = '#e6e8eb';
    g.lineWidth = 1;
    // Value axes: the grid follows plot 0; each other plot has its ticks on the right.
    g.textBaseline = 'middle';
    L.plots.forEach((P, p) => {
      g.textAlign = p === 0 ? 'right' : 'left';
      const x = p === 0 ? L.plot.x1 - 4 : L.plot.x2 + 4 + 50 * (p - 1);
      for (const v of valueTicks(P.min, P.max, L.plot.y2 - L.plot.y1)) {
        const y = Math.round(this.y(L, P, v)) + 0.5;
        if (p === 0) { g.beginPath(); g.moveTo(L.plot.x1, y); g.lineTo(L.plot.x2, y); g.stroke(); }
        g.fillText(short(v), x, y);
      }
    });
    // Time axis.
    g.textAlign = 'center';
    g.textBaseline = 'top';
    for (const [t, label] of timeTicks(L.t1, L.t2, L.plot.x2 - L.plot.x1, this.opts.tz)) {
      const x = Math.round(this.x(L, t)) + 0.5;
      g.beginPath(); g.moveTo(x, L.plot.y1); g.lineTo(x, L.plot.y2); g.stroke();
      // A label that would not fit inside the canvas is left out rather than cut.
      const half = g.measureText(label).width / 2;
      if (x - half >= 0 && x + half <= L.w) g.fillText(label, x, L.plot.y2 + 4);
    }
    g.strokeStyle = '#9aa0a6';
    g.strokeRect(L.plot.x1 + 0.5, L.plot.y1 + 0.5, L.plot.x2 - L.plot.x1, L.plot.y2 - L.plot.y1);
    // Lines in order: stacks build up from their plot's running sums (positive and negative
    // apart, as Atlas stacks them); areas fill to zero; spans shade where the value is not 0.
    const sums = L.plots.map(() => ({ up: new Array(L.n).fill(0), down: new Array(L.n).fill(0) }));
    const half = (L.plot.x2 - L.plot.x1) / Math.max(1, L.n - 1) / 2;
    this.data.lines.forEach((line, li) => {
      if (this.hidden.has(li)) return;
      const p = this.plotOf(line), P = L.plots[p], S = sums[p];
      const color = this.color(li), style = this.style(line);
      if (style === 'VSPAN') {
        g.globalAlpha = 0.35;
        g.fillStyle = color;
        line.values.forEach((v, i) => {
          if (Number.isFinite(v) && v !== 0) {
            const x = this.x(L, this.time(i));
            g.fillRect(Math.max(L.plot.x1, x - half), L.plot.y1, 2 * half, L.plot.y2 - L.plot.y1);
          }
        });
        g.globalAlpha = 1;
        return;
      }
      g.beginPath();
      let open = false;
      const pts = [];
      line.values.forEach((v, i) => {
        if (!Number.isFinite(v)) { open = false; return; }
        let base = 0, top = v;
        if (style === 'STACK') {
          const side = v >= 0 ? S.up : S.down;
          base = side[i];
          top = side[i] += v;
        }
        const x = this.x(L, this.time(i)), y = this.y(L, P, top);
        pts.push([x, y, this.y(L, P, base)]);
        if (open) g.lineTo(x, y); else g.moveTo(x, y);
        open = true;
      });
      g.strokeStyle = color;
      g.lineWidth = Math.max(1, Math.min(8, (line.width || 1) * 1.5));
      g.stroke();
      if ((style === 'AREA' || style === 'STACK') && pts.length) {
        g.globalAlpha = 0.35;
        g.fillStyle = color;
        g.beginPath();
        pts.forEach(([x, y], k) => (k ? g.lineTo(x, y) : g.moveTo(x, y)));
        for (let k = pts.length - 1; k >= 0; k--) g.lineTo(pts[k][0], pts[k][2]);
        g.closePath();
        g.fill();
        g.globalAlpha = 1;
      }
    });
    if (cursorIndex !== undefined) {
      const x = Math.round(this.x(L, this.time(cursorIndex))) + 0.5;
      g.strokeStyle = '#444';
      g.lineWidth = 1;
      g.beginPath(); g.moveTo(x, L.plot.y1); g.lineTo(x, L.plot.y2); g.stroke();
    }
    if (this.dragFrom !== undefined && this.dragTo !== undefined) {
      g.fillStyle = 'rgba(0,117,220,.12)';
      g.fillRect(Math.min(this.dragFrom, this.dragTo), L.plot.y1, Math.abs(this.dragTo - this.dragFrom), L.plot.y2 - L.plot.y1);
    }
  }

  offsetX(e) { return e.clientX - this.canvas.getBoundingClientRect().left; }

  // The step under horizontal position `px`.
  indexAt(px) {
    const L = this.L || this.layout();
    const t = L.t1 + ((px - L.plot.x1) / (L.plot.x2 - L.plot.x1)) * (L.t2 - L.t1);
    return Math.max(0, Math.min(L.n - 1, Math.round((t - this.data.start) / this.data.step)));
  }

  hover(e) {
    const px = this.offsetX(e);
    if (this.dragFrom !== undefined) this.dragTo = px;
    const i = this.indexAt(px);
    this.draw(i);
    const fmt = zoneFormatter(this.opts.tz, { year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit' });
    const rows = [el('div', { class: 'tip-time' }, fmt.format(new Date(this.time(i))))];
    let more = 0;
    this.data.lines.forEach((l, li) => {
      if (this.hidden.has(li)) return;
      if (rows.length > 40) { more++; return; }
      const v = l.values[i];
      rows.push(el('div', { class: 'tip-line' }, el('span', { class: 'sw', style: `background:${this.color(li)}` }),
        `${l.label}: `, el('b', { class: 'tip-value', 'data-value': String(v) }, Number.isFinite(v) ? String(+v.toPrecision(6)) : 'NaN')));
    });
    this.tip.replaceChildren(...rows);
    if (more) this.tip.append(el('div', { class: 'muted' }, `… ${more} more lines`));
    this.tip.hidden = false;
    this.tip.dataset.index = i;
    const left = px + 16 + 260 > this.canvas.clientWidth ? px - 276 : px + 16;
    this.tip.style.left = `${Math.max(0, left)}px`;
    this.tip.style.top = '12px';
  }

  endDrag(e) {
    const from = this.dragFrom, to = this.offsetX(e);
    this.dragFrom = this.dragTo = undefined;
    if (from === undefined || Math.abs(to - from) < 6 || !this.opts.onZoom) return;
    const a = this.time(this.indexAt(Math.min(from, to))), b = this.time(this.indexAt(Math.max(from, to)));
    if (b > a) this.opts.onZoom(a, b);
  }

  drawLegend() {
    const entries = this.data.lines.slice(0, 500).map((l, li) => el('span', {
      class: 'entry', 'data-index': li, 'data-style': this.style(l), 'data-plot': this.plotOf(l), title: JSON.stringify(l.tags || {}),
      onclick: (e) => {
        if (this.hidden.has(li)) this.hidden.delete(li); else this.hidden.add(li);
        e.currentTarget.classList.toggle('off', this.hidden.has(li));
        this.draw();
      },
    }, el('span', { class: 'sw', style: `background:${this.color(li)}` }), l.label));
    this.legend.replaceChildren(...entries);
    if (this.data.lines.length > 500) this.legend.append(el('span', { class: 'muted' }, `… ${this.data.lines.length - 500} more lines`));
  }
}

// ---------- the Query page ----------

const RECENT_KEY = 'argus.recent';

function recent() {
  try { return JSON.parse(localStorage.getItem(RECENT_KEY) || '[]'); } catch (_) { return []; }
}

function remember(lang, q) {
  const list = recent().filter((r) => !(r.lang === lang && r.q === q));
  list.unshift({ lang, q });
  localStorage.setItem(RECENT_KEY, JSON.stringify(list.slice(0, 20)));
}

// Atlas's `v2.json` as lines with their colors, styles and plots (y-axes).
function fromV2(j) {
  const meta = j.find((o) => o.type === 'graph-metadata') || {};
  const plots = j.filter((o) => o.type === 'plot-metadata').sort((a, b) => a.id - b.id);
  const lines = j.filter((o) => o.type === 'timeseries').map((o) => ({
    label: o.label, tags: o.tags || {}, color: o.color, style: o.lineStyle, width: o.lineWidth, plot: o.plot,
    values: ((o.data || {}).values || []).map((v) => (typeof v === 'number' ? v : Number(v))),
  }));
  return { start: meta.startTime, step: meta.step, lines, plots, notices: meta.warnings || [] };
}

// A Prometheus matrix as lines on a common step.
function fromMatrix(result, start, step) {
  const n = Math.floor((result.end - start) / step) + 1;
  const lines = result.data.result.map((s) => {
    const values = new Array(Math.max(0, n)).fill(NaN);
    for (const [t, v] of s.values || []) {
      const i = Math.round((t * 1000 - start) / step);
      if (i >= 0 && i < n) values[i] = Number(v);
    }
    const m = { ...s.metric };
    const name = m.__name__ || '';
    delete m.__name__;
    const inner = Object.entries(m).map(([k, v]) => `${k}="${v}"`).join(', ');
    return { label: `${name}{${inner}}`, tags: s.metric, values };
  });
  return { start, step, lines, notices: (result.warnings || []).concat(result.infos || []) };
}

function queryPage(main, params) {
  const state = {
    lang: params.get('lang') || 'asl',
    q: params.get('q') || '',
    s: params.get('s') || 'e-3h',
    e: params.get('e') || 'now',
    step: params.get('step') || '',
    tz: params.get('tz') || Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC',
    view: params.get('view') || 'graph',
    style: params.get('style') || 'auto',
    // More expressions drawn over the first: `q2` … `q5` in the URL.
    more: [2, 3, 4, 5].map((k) => params.get(`q${k}`)).filter((x) => x),
  };
  const lang = el('select', { id: 'lang' },
    el('option', { value: 'asl' }, 'Stack Language'), el('option', { value: 'promql' }, 'PromQL'));
  lang.value = state.lang;
  const box = el('textarea', { class: 'expr', id: 'expr', spellcheck: 'false',
    placeholder: 'name,http.requests,:eq,:sum,(,nf.app,),:by' });
  box.value = state.q;
  const field = (id, value, size) => el('input', { type: 'text', id, value, size: size || 10 });
  const s = field('s', state.s), e = field('e', state.e), step = field('step', state.step, 6), tz = field('tz', state.tz, 16);
  // `auto` draws each line as its expression asks (`:area`, `:stack`, `:color`, `:axis` …).
  const style = el('select', { id: 'style' }, [['auto', 'as the expression asks'], ['line', 'line'], ['area', 'area'], ['stack', 'stack']]
    .map(([v, text]) => el('option', { value: v }, text)));
  style.value = state.style;
  const run = el('button', { class: 'primary', id: 'run', type: 'button' }, 'Run');
  const png = el('a', { id: 'png', target: '_blank' }, 'PNG');
  const tabs = el('div', { class: 'tabs' });
  const out = el('div', { id: 'out' });
  const err = el('div', { class: 'error', id: 'error' });
  const recentBox = el('div', { class: 'recent' });
  // Further expressions, overlaid on the same chart.
  const moreBoxes = el('div', { id: 'more-exprs' });
  const addExpr = (text) => {
    if (moreBoxes.children.length >= 4) return;
    const extra = el('textarea', { class: 'expr extra', spellcheck: 'false', rows: 1, placeholder: 'another expression, drawn over the first' });
    extra.value = text || '';
    extra.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); go(); }
    });
    moreBoxes.append(el('div', { class: 'row extra-row' }, extra,
      el('button', { type: 'button', class: 'remove', title: 'remove this expression', onclick: (ev) => { ev.currentTarget.parentNode.remove(); } }, '×')));
    autocomplete(extra, () => lang.value);
    return extra;
  };
  const add = el('button', { type: 'button', id: 'add-expr', title: 'overlay another expression', onclick: () => addExpr('').focus() }, '+ expression');
  main.replaceChildren(
    el('div', { class: 'row' }, lang, el('span', { class: 'muted' }, 'Ctrl+Enter runs'), add),
    el('div', { style: 'position:relative' }, box), moreBoxes,
    el('div', { class: 'row' }, el('label', {}, 'from'), s, el('label', {}, 'to'), e,
      el('label', {}, 'step'), step, el('label', {}, 'zone'), tz, el('label', {}, 'style'), style, run, png),
    recentBox, err, tabs, out);
  const views = ['graph', 'table', 'json', 'csv', 'steps'];
  let chart = null;
  let result = null;
  let raw = '';
  const extras = () => [...moreBoxes.querySelectorAll('textarea')].map((t) => t.value.trim()).filter((x) => x);
  const current = () => {
    const c = { lang: lang.value, q: box.value.trim(), s: s.value.trim(), e: e.value.trim(),
      step: step.value.trim(), tz: tz.value.trim(), view: state.view, style: style.value };
    extras().forEach((x, k) => { c[`q${k + 2}`] = x; });
    return c;
  };
  // Every expression: in the Stack Language one program (expressions on the stack are drawn
  // together, as Atlas draws them); in PromQL a query each.
  const expressions = (c) => [c.q, ...extras()].filter((x) => x);
  const combined = (c) => expressions(c).join(',');

  function drawTabs() {
    tabs.replaceChildren(...views.filter((v) => v !== 'steps' || lang.value === 'asl').map((v) => el('button', {
      type: 'button', class: v === state.view ? 'active' : '', 'data-view': v,
      onclick: () => { state.view = v; setRoute('query', current()); drawTabs(); show(); },
    }, v)));
  }

  function drawRecent() {
    recentBox.replaceChildren(el('span', { class: 'muted' }, 'recent: '), ...recent().slice(0, 8).map((r) => el('a', {
      href: '#', onclick: (ev) => { ev.preventDefault(); lang.value = r.lang; box.value = r.q; go(); },
    }, r.q.length > 60 ? r.q.slice(0, 57) + '…' : r.q)));
  }

  function graphParams(format) {
    const c = current();
    const p = { q: combined(c), s: c.s, e: c.e, step: c.step, tz: c.tz, format };
    // The browser draws from the lines; the PNG inside v2.json would be wasted bytes.
    if (format === 'v2.json') p.hints = 'no-image';
    return p;
  }

  async function go() {
    const c = current();
    setRoute('query', c, true);
    err.textContent = '';
    if (chart) { chart.destroy(); chart = null; }
    out.replaceChildren();
    drawTabs();
    if (!c.q) return;
    remember(c.lang, c.q);
    drawRecent();
    png.href = c.lang === 'asl' ? url('api/v1/graph', graphParams('png')) : '';
    png.hidden = c.lang !== 'asl';
    out.append(el('div', { class: 'muted' }, 'running…'));
    const began = performance.now();
    try {
      if (c.lang === 'asl') {
        const resp = await get('api/v1/graph', graphParams('v2.json'));
        raw = await resp.text();
        result = fromV2(JSON.parse(raw));
      } else {
        const end = timeMs(c.e, Date.now());
        const start = timeMs(c.s, end);
        if (!Number.isFinite(start) || !Number.isFinite(end)) throw new Error(`cannot read the times ${c.s} .. ${c.e}`);
        let stepMs = c.step ? durationMs(c.step) : NaN;
        if (!Number.isFinite(stepMs)) stepMs = Math.max(60e3, Math.ceil((end - start) / 1000 / 60e3) * 60e3);
        const first = Math.floor(start / stepMs) * stepMs, last = Math.floor(end / stepMs) * stepMs;
        const texts = [];
        result = null;
        for (const query of expressions(c)) {
          const resp = await get('api/v1/query_range', { query, start: first / 1000, end: last / 1000, step: stepMs / 1000 });
          const text = await resp.text();
          texts.push(text);
          const j = JSON.parse(text);
          j.end = last;
          const one = fromMatrix(j, first, stepMs);
          if (result) { result.lines.push(...one.lines); result.notices.push(...one.notices); } else result = one;
        }
        raw = texts.length === 1 ? texts[0] : `[${texts.join(',')}]`;
      }
      show();
      // From the request to the drawn view, for the browser test's budget.
      out.dataset.totalMs = String(Math.round(performance.now() - began));
    } catch (ex) {
      out.replaceChildren();
      err.textContent = ex.message;
    }
  }

  function show() {
    if (chart) { chart.destroy(); chart = null; }
    out.replaceChildren();
    if (!result) return;
    const c = current();
    if (result.notices.length) out.append(el('div', { class: 'muted' }, result.notices.join('; ')));
    if (state.view === 'graph') {
      out.append(el('div', { class: 'muted', id: 'line-count' }, `${result.lines.length} lines`));
      chart = new Chart(out, result, {
        tz: c.tz, style: c.style,
        onZoom: (a, b) => { s.value = String(a); e.value = String(b); go(); },
      });
    } else if (state.view === 'table') {
      out.append(table(result, c.tz));
    } else if (state.view === 'json') {
      let text = raw;
      try { text = JSON.stringify(JSON.parse(raw), null, 1); } catch (_) { /* as it came */ }
      out.append(el('pre', { class: 'json' }, text));
    } else if (state.view === 'csv') {
      out.append(el('pre', { class: 'json' }, csv(result)));
    } else if (state.view === 'steps') {
      steps(out, combined(c));
    }
  }

  lang.addEventListener('change', () => { drawTabs(); });
  style.addEventListener('change', () => { setRoute('query', current()); show(); });
  run.addEventListener('click', go);
  box.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); go(); }
  });
  autocomplete(box, () => lang.value);
  state.more.forEach((x) => addExpr(x));
  drawTabs();
  drawRecent();
  if (state.q) go();
}

function table(result, tz) {
  const fmt = zoneFormatter(tz, { year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit' });
  const lines = result.lines.slice(0, 100);
  const n = lines.reduce((m, l) => Math.max(m, l.values.length), 0);
  const head = el('tr', {}, el('th', { class: 'text' }, 'time'), lines.map((l) => el('th', { class: 'text' }, l.label)));
  const rows = [];
  for (let i = 0; i < n && rows.length < 2000; i++) {
    rows.push(el('tr', {}, el('td', { class: 'text' }, fmt.format(new Date(result.start + i * result.step))),
      lines.map((l) => el('td', {}, Number.isFinite(l.values[i]) ? String(+l.values[i].toPrecision(6)) : 'NaN'))));
  }
  const note = result.lines.length > 100 ? el('div', { class: 'muted' }, `the first 100 of ${result.lines.length} lines`) : null;
  return el('div', {}, note, el('div', { class: 'scroll' }, el('table', { class: 'data', id: 'data-table' }, head, rows)));
}

function csv(result) {
  const quote = (s) => `"${String(s).replace(/"/g, '""')}"`;
  const out = [['timestamp', ...result.lines.map((l) => l.label)].map(quote).join(',')];
  const n = result.lines.reduce((m, l) => Math.max(m, l.values.length), 0);
  for (let i = 0; i < n; i++) {
    out.push([new Date(result.start + i * result.step).toISOString(), ...result.lines.map((l) => l.values[i])].join(','));
  }
  return out.join('\n');
}

async function steps(out, q) {
  try {
    const j = await getJson('api/v1/expr', { q });
    // Atlas's debug steps: the program left to run, and the stack (top first) before it.
    const list = Array.isArray(j) ? j : [];
    out.append(el('table', { class: 'data' }, el('tr', {}, el('th', { class: 'text' }, 'stack (top first)'), el('th', { class: 'text' }, 'program left')),
      list.map((s) => el('tr', {}, el('td', { class: 'text' }, ((s.context && s.context.stack) || []).join('  |  ')),
        el('td', { class: 'text' }, (s.program || []).join(','))))));
  } catch (ex) {
    out.append(el('div', { class: 'error' }, ex.message));
  }
}

// ---------- autocomplete ----------

const WORDS = ('dup drop swap over rot -rot 2over nip tuck pick roll ndrop nlist list depth clear call each map format set sset get fcall freeze ' +
  'eq re reic contains starts ends in lt le gt ge has and or not true false cq ' +
  'sum count min max avg by all offset cf-avg cf-sum cf-min cf-max ' +
  'add sub mul div pow fadd fsub fmul fdiv abs neg sqrt per-step clamp-min clamp-max const pi random srandom time time-span stddev pct cg as dist-avg dist-max dist-stddev percentiles median ' +
  'delay rolling-count rolling-min rolling-max rolling-mean rolling-sum trend integral derivative cumulative-max des sdes des-simple des-fast des-slower des-slow ' +
  'stat stat-avg stat-max stat-min stat-last stat-count stat-total filter topk bottomk topk-others-min topk-others-max topk-others-sum topk-others-avg bottomk-others-min bottomk-others-max bottomk-others-sum bottomk-others-avg ' +
  'legend decode s axis color alpha palette ls line area stack vspan heatmap percentiles-heatmap lw sort order limit head strip-style table sample').split(' ');

// Suggests, for the token under the cursor: words after `:`; in the Stack Language a tag
// key, or the values of the key before it (`nf.app,w` → the apps starting with w); in
// PromQL metric names. Suggestions come from the tags API, asking only for what starts with
// what was typed, so they stay cheap on big stores.
function autocomplete(box, language) {
  const menu = el('div', { class: 'suggest', hidden: true, id: box.id === 'expr' ? 'suggest' : undefined });
  box.parentElement.append(menu);
  let items = [], sel = 0, span = null, seq = 0;
  const close = () => { menu.hidden = true; items = []; };
  async function update() {
    const pos = box.selectionStart;
    const text = box.value.slice(0, pos);
    const my = ++seq;
    let token, candidates = [];
    if (language() === 'asl') {
      const parts = text.split(',');
      token = parts[parts.length - 1];
      span = [pos - token.length, pos];
      if (token.startsWith(':')) {
        candidates = WORDS.filter((w) => w.startsWith(token.slice(1))).map((w) => ':' + w);
      } else if (parts.length >= 2 && token.length >= 0 && !parts[parts.length - 2].startsWith(':') && parts[parts.length - 2] !== '(') {
        const key = parts[parts.length - 2];
        try { candidates = (await getJson(`api/v1/tags/${encodeURIComponent(key)}`, { limit: 50 })).filter((v) => String(v).startsWith(token)); } catch (_) { candidates = []; }
      } else {
        try { candidates = (await getJson('api/v1/tags', { limit: 200 })).filter((k) => k.startsWith(token)); } catch (_) { candidates = []; }
      }
    } else {
      const m = /[A-Za-z_:][A-Za-z0-9_:.]*$/.exec(text);
      token = m ? m[0] : '';
      span = [pos - token.length, pos];
      if (token.length) {
        try {
          const j = await getJson('api/v1/label/__name__/values', {});
          candidates = (j.data || []).filter((n) => n.startsWith(token)).slice(0, 50);
        } catch (_) { candidates = []; }
      }
    }
    if (my !== seq) return;
    items = candidates.filter((c) => c !== token).slice(0, 50);
    sel = 0;
    if (!items.length || document.activeElement !== box) { close(); return; }
    menu.replaceChildren(...items.map((c, i) => el('div', { class: i === sel ? 'sel' : '', onmousedown: (ev) => { ev.preventDefault(); pick(i); } }, c)));
    menu.style.left = '0px';
    menu.style.top = `${box.offsetHeight}px`;
    menu.hidden = false;
  }
  function pick(i) {
    const c = items[i];
    if (c === undefined || !span) return;
    box.value = box.value.slice(0, span[0]) + c + box.value.slice(span[1]);
    const at = span[0] + c.length;
    box.setSelectionRange(at, at);
    close();
    box.focus();
  }
  box.addEventListener('input', update);
  box.addEventListener('blur', () => setTimeout(close, 150));
  box.addEventListener('keydown', (ev) => {
    if (menu.hidden) return;
    if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
      ev.preventDefault();
      sel = (sel + (ev.key === 'ArrowDown' ? 1 : items.length - 1)) % items.length;
      [...menu.children].forEach((d, i) => d.classList.toggle('sel', i === sel));
    } else if (ev.key === 'Tab' || (ev.key === 'Enter' && !ev.ctrlKey && !ev.metaKey)) {
      ev.preventDefault();
      pick(sel);
    } else if (ev.key === 'Escape') {
      close();
    }
  });
}

// ---------- the Live page ----------

// Reads a Server-Sent Events body (fetch, so the token goes as a header), calling
// `onMessage(kind, data)` per message, until the body ends or `signal` aborts.
async function readSse(resp, onMessage) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '', kind = 'message', data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, nl).replace(/\r$/, '');
      buffer = buffer.slice(nl + 1);
      if (line === '') {
        if (data.length) onMessage(kind, data.join('\n'));
        kind = 'message';
        data = [];
      } else if (line.startsWith('event:')) kind = line.slice(6).trim();
      else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
    }
  }
}

// Rows the page keeps on screen; older ones leave the view and are counted.
const MAX_ROWS = 1000;

function livePage(main, params) {
  const box = el('textarea', { class: 'expr', id: 'live-q', spellcheck: 'false',
    placeholder: "select path, latency from requests where status >= 500   —   or   name,requests,:eq,:count,(,path,),:by" });
  box.value = params.get('q') || '';
  const lang = el('select', { id: 'live-lang' }, el('option', { value: '' }, 'recognise'), el('option', { value: 'mql' }, 'MQL'), el('option', { value: 'asl' }, 'Stack Language'));
  lang.value = params.get('lang') || '';
  const step = el('input', { type: 'text', id: 'live-step', size: 6, value: params.get('step') || '', placeholder: 'step' });
  const sample = el('select', { id: 'live-sample', title: 'MQL: sample at the agents' },
    ['1', '2', '10', '100', '1000'].map((n) => el('option', { value: n }, n === '1' ? 'every event' : `1 in ${n}`)));
  sample.value = params.get('sample') || '1';
  const start = el('button', { class: 'primary', id: 'live-start', type: 'button' }, 'Start');
  const pause = el('button', { id: 'live-pause', type: 'button', disabled: true }, 'Pause');
  const clear = el('button', { id: 'live-clear', type: 'button' }, 'Clear');
  const cancel = el('button', { id: 'live-cancel', type: 'button', disabled: true }, 'Cancel');
  const err = el('div', { class: 'error', id: 'live-error' });
  const counters = {};
  const stat = (name, label) => { counters[name] = el('b', { id: `live-${name}` }, '0'); return el('span', {}, `${label} `, counters[name]); };
  const stats = el('div', { class: 'stats' }, stat('shown', 'rows shown'), stat('received', 'rows received'), stat('rate', 'rows/s'),
    stat('matched', 'matched'), stat('dropped', 'dropped by the server'), stat('evicted', 'left the view'));
  const rows = el('div', { class: 'rows', id: 'live-rows' });
  const info = el('div', { class: 'muted', id: 'live-info' });
  main.replaceChildren(
    el('div', { class: 'row' }, lang, el('label', {}, 'step'), step, el('label', {}, 'sampling'), sample, start, pause, clear, cancel),
    box, err, info, stats, rows,
    el('h3', {}, 'Live graph of a Stack Language expression'), liveGraph(params));
  let abort = null, paused = false, received = 0, shown = 0, evicted = 0, held = [], lastCount = 0;
  const set = (name, v) => { counters[name].textContent = String(v); };
  const timer = setInterval(() => {
    if (!document.body.contains(main)) { clearInterval(timer); return; }
    set('rate', received - lastCount);
    lastCount = received;
  }, 1000);

  function addRow(data) {
    received++;
    set('received', received);
    if (paused) { held.push(data); if (held.length > MAX_ROWS) { held.shift(); evicted++; set('evicted', evicted); } return; }
    put(data);
  }
  function put(data) {
    let text = data;
    try { text = JSON.stringify(JSON.parse(data)); } catch (_) { /* as it came */ }
    rows.append(el('div', { class: 'live-row', onclick: (ev) => {
      const d = ev.currentTarget;
      d.classList.toggle('open');
      try { d.textContent = d.classList.contains('open') ? JSON.stringify(JSON.parse(text), null, 2) : text; } catch (_) { /* keep */ }
    } }, text));
    shown++;
    while (rows.childElementCount > MAX_ROWS) { rows.firstChild.remove(); evicted++; shown--; }
    set('shown', shown);
    set('evicted', evicted);
    rows.scrollTop = rows.scrollHeight;
  }

  function queryText() {
    let q = box.value.trim();
    const n = Number(sample.value);
    const isMql = lang.value === 'mql' || (lang.value === '' && /^select\s/i.test(q));
    if (isMql && n > 1 && !/\bsample\s*\{/i.test(q)) q += ` sample {'strategy': 'RANDOM', 'threshold': 1, 'factor': ${n}}`;
    return q;
  }

  async function begin() {
    stop();
    err.textContent = '';
    const q = queryText();
    if (!q) return;
    setRoute('live', { q: box.value.trim(), lang: lang.value, step: step.value.trim(), sample: sample.value }, true);
    abort = new AbortController();
    start.disabled = true; pause.disabled = false; cancel.disabled = false;
    try {
      const resp = await fetch(url('api/v1/live', { q, lang: lang.value, step: step.value.trim(), client: 'argus-ui' }),
        { headers: { ...headers(), Accept: 'text/event-stream' }, signal: abort.signal });
      if (!resp.ok) throw await errorOf(resp);
      await readSse(resp, (kind, data) => {
        if (kind === 'row') addRow(data);
        else if (kind === 'subscribed') {
          const j = JSON.parse(data);
          info.textContent = `subscribed: id ${j.id}, ${j.language || 'mql'}${j.kind ? ' ' + j.kind : ''}, streams ${(j.streams || []).join(', ')}${j.columns ? ', columns ' + j.columns.join(', ') : ''}`;
          info.dataset.id = j.id;
        } else if (kind === 'stats') {
          const j = JSON.parse(data);
          set('matched', j.matched);
          set('dropped', j.dropped + (j.droppedInWindows || 0));
        } else if (kind === 'diagnostic') {
          err.textContent = JSON.parse(data).message;
        } else if (kind === 'end') {
          info.textContent += ' — ended';
        }
      });
    } catch (ex) {
      if (ex.name !== 'AbortError') err.textContent = ex.message;
    } finally {
      start.disabled = false; pause.disabled = true; cancel.disabled = true;
    }
  }
  // Closing the connection cancels the subscription on the server, and so at the agents.
  function stop() { if (abort) { abort.abort(); abort = null; } }

  start.addEventListener('click', begin);
  cancel.addEventListener('click', () => { stop(); info.textContent += ' — cancelled'; });
  pause.addEventListener('click', () => {
    paused = !paused;
    pause.textContent = paused ? 'Resume' : 'Pause';
    if (!paused) { const h = held; held = []; h.forEach(put); }
  });
  clear.addEventListener('click', () => { rows.replaceChildren(); shown = 0; held = []; set('shown', 0); });
  box.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); begin(); } });
  window.addEventListener('hashchange', stop, { once: true });
}

// A chart that grows a point per step as `/api/v1/stream` closes it (stored series, or
// live events with source=events).
function liveGraph(params) {
  const box = el('input', { type: 'text', id: 'stream-q', size: 60, value: params.get('g') || '', placeholder: 'name,sys.cpu.utilization,:eq,:max,(,nf.app,),:by' });
  const source = el('select', { id: 'stream-source' }, el('option', { value: 'store' }, 'stored series'), el('option', { value: 'events' }, 'live events'));
  const go = el('button', { type: 'button', id: 'stream-start' }, 'Start');
  const holder = el('div', { id: 'stream-chart' });
  const err = el('div', { class: 'error' });
  let abort = null;
  go.addEventListener('click', async () => {
    if (abort) abort.abort();
    abort = new AbortController();
    err.textContent = '';
    holder.replaceChildren();
    const data = { start: 0, step: 1, lines: [] };
    const byLabel = new Map();
    let chart = null;
    try {
      const resp = await fetch(url('api/v1/stream', { q: box.value.trim(), source: source.value }), { headers: headers(), signal: abort.signal });
      if (!resp.ok) throw await errorOf(resp);
      await readSse(resp, (kind, text) => {
        if (kind === 'diagnostic') { err.textContent = JSON.parse(text).message; return; }
        if (kind !== 'step') return;
        const j = JSON.parse(text);
        if (!data.lines.length && !byLabel.size) { data.start = j.timestamp; data.step = j.step; }
        const i = Math.round((j.timestamp - data.start) / data.step);
        for (const s of j.series) {
          let line = byLabel.get(s.label);
          if (!line) { line = { label: s.label, tags: s.tags, values: [] }; byLabel.set(s.label, line); data.lines.push(line); }
          while (line.values.length < i) line.values.push(NaN);
          line.values[i] = typeof s.value === 'number' ? s.value : NaN;
        }
        for (const line of data.lines) while (line.values.length <= i) line.values.push(NaN);
        if (chart) chart.destroy();
        holder.replaceChildren();
        chart = new Chart(holder, data, { tz: Intl.DateTimeFormat().resolvedOptions().timeZone });
      });
    } catch (ex) {
      if (ex.name !== 'AbortError') err.textContent = ex.message;
    }
  });
  window.addEventListener('hashchange', () => abort && abort.abort(), { once: true });
  return el('div', {}, el('div', { class: 'row' }, box, source, go), err, holder);
}

// ---------- the Explore page ----------

function explorePage(main, params) {
  const keys = el('div', { class: 'list', id: 'tag-keys' });
  const values = el('div', { class: 'list', id: 'tag-values' });
  const err = el('div', { class: 'error', id: 'explore-error' });
  const card = el('div', { id: 'cardinality' });
  const cluster = el('div', { id: 'cluster' });
  const agents = el('div', { id: 'agents' });
  const filter = el('input', { type: 'text', id: 'tag-q', size: 40, value: params.get('q') || '', placeholder: 'restrict to a query, e.g. name,sps,:eq' });
  main.replaceChildren(
    el('h3', {}, 'Tags'), el('div', { class: 'row' }, filter, el('button', { type: 'button', onclick: () => loadKeys() }, 'Browse')), err,
    el('div', { class: 'cols' }, el('div', {}, el('div', { class: 'muted' }, 'keys'), keys), el('div', {}, el('div', { class: 'muted' }, 'values (series)'), values)),
    el('h3', {}, 'Agents connected to this server'), agents,
    el('h3', {}, 'Cardinality'), card, el('h3', {}, 'Cluster'), cluster);

  async function loadKeys() {
    err.textContent = '';
    setRoute('explore', { q: filter.value.trim(), key: params.get('key') || '' });
    try {
      const list = await getJson('api/v1/tags', { q: filter.value.trim(), limit: 1000 });
      keys.replaceChildren(...list.map((k) => el('a', { href: '#', 'data-key': k, onclick: (ev) => { ev.preventDefault(); loadValues(k); } }, k)));
      if (params.get('key')) loadValues(params.get('key'));
    } catch (ex) { err.textContent = ex.message; }
  }

  async function loadValues(key) {
    params.set('key', key);
    setRoute('explore', { q: filter.value.trim(), key });
    [...keys.children].forEach((a) => a.classList.toggle('sel', a.dataset.key === key));
    try {
      const list = await getJson(`api/v1/tags/${encodeURIComponent(key)}`, { q: filter.value.trim(), verbose: 1, limit: 1000 });
      values.replaceChildren(...list.map((v) => typeof v === 'object'
        ? el('a', { href: `#/query?lang=asl&q=${encodeURIComponent(`${key},${v.value},:eq,:count`)}` }, v.value, el('span', { class: 'count' }, v.count))
        : el('a', {}, v)));
    } catch (ex) { err.textContent = ex.message; }
  }

  (async () => {
    try {
      agents.replaceChildren(await agentTable());
    } catch (ex) { agents.replaceChildren(el('div', { class: 'error' }, ex.message)); }
    try {
      const c = await getJson('api/v1/cardinality', { top: 10 });
      card.replaceChildren(render(c));
    } catch (ex) { card.replaceChildren(el('div', { class: 'error' }, ex.message)); }
    try {
      cluster.replaceChildren(clusterView(await getJson('api/v1/cluster')));
    } catch (ex) { cluster.replaceChildren(el('div', { class: 'error' }, ex.message)); }
  })();
  loadKeys();
}

// The connected agents (`/api/v1/agents`) with the last value of their own counters over
// the last five minutes (their `argus.agent.*` series, per second for counters), and their
// samples accounted for end to end (`/api/v1/loss`).
async function agentTable() {
  const list = await getJson('api/v1/agents');
  const loss = {};
  try {
    for (const a of (await getJson('api/v1/loss')).agents) {
      if (a.kind !== 'metrics') continue;
      const s = a.streams.find((x) => x.stream === 'metrics') || {};
      const dropped = Object.entries(s.dropped || {}).map(([k, v]) => `${k} ${v}`).join(', ');
      loss[a.agent] = { sent: s.sent, applied: s.applied, dropped: dropped || 'none', pending: s.pending,
        unexplained: s.unexplained === null || s.unexplained === undefined ? '' : s.unexplained, gaps: a.gaps === null ? '' : a.gaps };
    }
  } catch (_) { /* the loss report is extra too */ }
  if (!list.length) return el('div', { class: 'muted' }, 'no agent is connected');
  const counters = {};
  try {
    // Every series as it is (`:all`): a `:by` would drop those lacking one of the keys.
    const j = await getJson('api/v1/graph', { q: 'name,argus.agent.,:starts,:all', s: 'e-5m', format: 'std.json' });
    j.metrics.forEach((m, i) => {
      let last = NaN;
      for (const row of j.values) if (typeof row[i] === 'number') last = row[i];
      const key = [m.name.replace('argus.agent.', ''), m.id, m.reason].filter(Boolean).join('.');
      (counters[m['nf.node'] || ''] = counters[m['nf.node'] || ''] || {})[key] = last;
    });
  } catch (_) { /* counters are extra: the list stands without them */ }
  const num = (v) => (Number.isFinite(v) ? String(+v.toPrecision(4)) : '');
  const rows = list.map((a) => {
    const c = counters[a.node] || {};
    const dropped = Object.entries(c).filter(([k, v]) => k.startsWith('dropped.') && v > 0).map(([k, v]) => `${k.slice(8)} ${num(v)}/s`);
    return {
      node: a.node, agent: a.agent, version: a.version, step: `${a.stepMs / 1000}s`, streams: a.streams.join(', '),
      'samples sent/s': num(c['sent.samples']), 'events sent/s': num(c['sent.events']),
      dropped: dropped.join(', ') || (Object.keys(c).length ? 'none' : ''),
      'buffer bytes': num(c['buffer.bytes']), reconnects: num(c.reconnects), 'live queries': num(c['live.subscriptions']),
      ...Object.fromEntries(Object.entries(loss[a.agent] || {}).map(([k, v]) => [`samples ${k}`, v])),
    };
  });
  return render(rows);
}

// `/api/v1/cluster` as a person reads it: this node, the nodes, the NATS JetStream streams
// with their leaders, and each partition's owners and, where this node applies it, its lag.
function clusterView(c) {
  if (c.mode !== 'cluster') return el('div', { class: 'muted', id: 'cluster-mode' }, 'a single node: no cluster');
  const log = c.log || {};
  const list = (x) => (Array.isArray(x) ? x.join(', ') : x);
  const nodes = (c.nodes || []).map((n) => ({
    node: n.id, roles: list(n.roles), http: n.http, grpc: n.grpc,
    started: n.started_at_ms ? new Date(n.started_at_ms).toISOString() : '', 'heartbeat age': `${n.heartbeat_age_ms} ms`,
  }));
  const partitions = (log.partitions || []).map((p) => ({
    partition: p.partition, owners: list(p.owners), 'applied here': p.applying, 'applied sequence': p.applied_sequence,
    lag: p.lag, 'caught up': p.caught_up, 'applied samples': p.applied_samples,
  }));
  return el('div', {},
    render({ node: c.node, roles: list(c.roles), ready: c.ready, status: c.status || '', nats: list(c.nats),
      partitions: c.partitions, replicas: c.replicas, 'map version': log.map_version,
      'published messages': log.published_messages, 'live events forwarded': (c.live || {}).forwarded_events }),
    el('h4', {}, 'Nodes'), el('div', { id: 'cluster-nodes' }, render(nodes)),
    el('h4', {}, 'Streams (NATS JetStream)'), el('div', { id: 'cluster-streams' }, render((log.streams || []).map((t) => ({
      stream: t.stream, leader: t.leader, 'last sequence': t.last_sequence, messages: t.messages, bytes: t.bytes,
    })))),
    el('h4', {}, 'Partitions'), el('div', { id: 'cluster-partitions' }, render(partitions)));
}

// Any JSON as nested tables: lists of objects as tables, objects as key/value rows.
function render(v) {
  if (Array.isArray(v)) {
    if (v.length && v.every((x) => x && typeof x === 'object' && !Array.isArray(x))) {
      const cols = [...new Set(v.flatMap((x) => Object.keys(x)))];
      return el('table', { class: 'data' }, el('tr', {}, cols.map((c) => el('th', { class: 'text' }, c))),
        v.map((x) => el('tr', {}, cols.map((c) => el('td', { class: 'text' }, cell(x[c]))))));
    }
    return el('span', {}, v.map((x) => (typeof x === 'object' ? JSON.stringify(x) : String(x))).join(', '));
  }
  if (v && typeof v === 'object') {
    return el('table', { class: 'data' }, Object.entries(v).map(([k, x]) => el('tr', {}, el('th', { class: 'text' }, k), el('td', { class: 'text' }, cell(x)))));
  }
  return el('span', {}, String(v));
}

function cell(x) { return x && typeof x === 'object' ? render(x) : x === undefined ? '' : String(x); }

// ---------- the token ----------

function askToken() {
  const d = $('#token-dialog');
  if (!d.open) { $('#token-input').value = token(); d.showModal(); }
}

$('#token-button').addEventListener('click', askToken);
$('#token-dialog').addEventListener('close', () => {
  if ($('#token-dialog').returnValue === 'save') {
    sessionStorage.setItem('argus.token', $('#token-input').value.trim());
    renderPage();
  }
});

// ---------- routing ----------

function renderPage() {
  rendered = location.hash;
  const { page, params } = route();
  for (const a of document.querySelectorAll('header nav a')) a.classList.toggle('active', a.dataset.page === page);
  const main = el('main', { id: 'main', 'data-page': page });
  $('#main').replaceWith(main);
  if (page === 'live') livePage(main, params);
  else if (page === 'explore') explorePage(main, params);
  else queryPage(main, params);
}

// Back, forward and links: both events may fire for one navigation; render once.
const navigated = () => { if (location.hash !== rendered) renderPage(); };
window.addEventListener('popstate', navigated);
window.addEventListener('hashchange', navigated);
renderPage();
