// Coalition dashboard: plain JavaScript, no framework, no build step. Everything it shows
// comes from the node's own API (/api/v1/...); it loads nothing from the internet.
'use strict';

const LANGS = ['en', 'sr-Latn', 'sr-Cyrl', 'mk', 'ru', 'sq', 'ka'];
// Browser language tags (lower case, by prefix) to dashboard languages, most specific first:
// Serbian is Cyrillic unless the browser asks for Latin script.
const BROWSER_LANGS = [['sr-latn', 'sr-Latn'], ['sr-cyrl', 'sr-Cyrl'], ['sr', 'sr-Cyrl'], ['sh', 'sr-Latn'],
  ['bs', 'sr-Latn'], ['mk', 'mk'], ['ru', 'ru'], ['sq', 'sq'], ['ka', 'ka'], ['en', 'en']];
const FILTERS = ['country', 'category', 'actor_type', 'affected_group', 'confidence'];
const DIMS = ['country', 'region', 'municipality', 'category', 'actor_type', 'affected_group',
  'author', 'confidence', 'week', 'month', 'quarter', 'year'];
const DIM_VOCAB = { country: 'country', category: 'category', actor_type: 'actor_type',
  affected_group: 'affected_group', confidence: 'confidence' };
// Map panels: [lon min, lon max, lat min, lat max].
const PANELS = [
  { name: 'balkans', box: [13, 24, 39.3, 46.6], focus: ['RS', 'XK', 'MK', 'ME', 'AL', 'BA'] },
  { name: 'caucasus', box: [39.6, 46.9, 40.8, 43.8], focus: ['GE'] },
];
const PAGE = 50;

const state = { lang: 'en', t: {}, vocab: null, countries: null, present: [], cursor: null, seq: 0,
  chart: null, chartWidth: 0 };

const $ = (id) => document.getElementById(id);
const svgNS = 'http://www.w3.org/2000/svg';

function h(tag, attrs, ...children) {
  const e = tag.startsWith('svg:') ? document.createElementNS(svgNS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.setAttribute('class', v);
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

async function getJSON(url) {
  const r = await fetch(url, { headers: { Accept: 'application/json' } });
  let body = null;
  try { body = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) throw new Error((body && (body.detail || body.title)) || r.statusText);
  return body;
}

function t(key) { return state.t[key] || key; }

function label(vocab, code) {
  if (code === null || code === undefined) return t('not_given');
  const v = state.vocab && state.vocab.vocabularies[vocab];
  if (!v || !v.labels) return code;
  return (v.labels[state.lang] && v.labels[state.lang][code]) || (v.labels.en && v.labels.en[code]) || code;
}

function keyLabel(dim, key) {
  if (key === null || key === undefined) return t('not_given');
  if (DIM_VOCAB[dim]) return label(DIM_VOCAB[dim], key);
  if (dim === 'author') return key.slice(0, 12);
  return key;
}

const nf = () => new Intl.NumberFormat(state.lang);
const fmt = (n) => nf().format(n);

function setStatus(text, error) {
  const s = $('status');
  s.textContent = text || '';
  s.className = error ? 'error' : '';
}

// ---- language ----

// The first of the browser's preferred languages the dashboard has, else English.
function pickLanguage(tags) {
  for (const tag of tags) {
    const l = String(tag).toLowerCase();
    const hit = BROWSER_LANGS.find(([p]) => l === p || l.startsWith(p + '-'));
    if (hit) return hit[1];
  }
  return 'en';
}

async function setLanguage(lang) {
  if (!LANGS.includes(lang)) lang = 'en';
  state.t = await getJSON(`/static/i18n/${lang}.json`);
  state.lang = lang;
  document.documentElement.lang = lang;
  document.title = t('title');
  try { localStorage.setItem('coalition.lang', lang); } catch (_) { /* private mode */ }
  for (const e of document.querySelectorAll('[data-i18n]')) e.textContent = t(e.dataset.i18n);
  fillSelects();
}

function fillSelects() {
  for (const sel of document.querySelectorAll('select[data-vocab]')) {
    const name = sel.dataset.vocab;
    const v = state.vocab.vocabularies[name];
    const keep = sel.value;
    let codes = v.codes;
    if (name === 'country' && state.present.length) codes = codes.filter((c) => state.present.includes(c));
    const opts = codes.map((c) => ({ c, l: label(name, c) }))
      .sort((a, b) => a.l.localeCompare(b.l, state.lang));
    sel.replaceChildren(h('option', { value: '' }, t('all')),
      ...opts.map((o) => h('option', { value: o.c }, o.l)));
    sel.value = keep;
  }
  for (const sel of document.querySelectorAll('select[data-dims]')) {
    const keep = sel.value;
    const first = sel.dataset.optional ? [h('option', { value: '' }, t('none'))] : [];
    sel.replaceChildren(...first, ...DIMS.map((d) => h('option', { value: d }, t('dim_' + d))));
    sel.value = keep || (sel.dataset.optional ? '' : 'country');
  }
}

// ---- queries ----

function filterParams() {
  const p = new URLSearchParams();
  for (const f of FILTERS) {
    const v = $('f-' + f).value;
    if (v) p.append(f, v);
  }
  for (const f of ['from', 'to', 'q']) {
    const v = $('f-' + f).value.trim();
    if (v) p.append(f, v);
  }
  return p;
}

async function refresh() {
  const seq = ++state.seq;
  document.body.dataset.ready = 'no';
  setStatus(t('loading'));
  try {
    await Promise.all([loadCounts(seq), loadChart(seq), loadFindings(seq, true)]);
    if (seq === state.seq) {
      setStatus('');
      document.body.dataset.ready = 'yes';
    }
  } catch (e) {
    if (seq === state.seq) setStatus(`${t('error')}: ${e.message}`, true);
  }
}

async function loadCounts(seq) {
  const dims = [$('g1').value, $('g2').value].filter((d, i, a) => d && a.indexOf(d) === i);
  const p = filterParams();
  if (dims.length) p.set('group_by', dims.join(','));
  const agg = await getJSON('/api/v1/aggregate?' + p);
  if (seq !== state.seq) return;
  $('summary').textContent = `${t('total')}: ${fmt(agg.total.findings)} ${t('findings').toLowerCase()}, ${fmt(agg.total.affected)} ${t('affected').toLowerCase()}`;
  const rows = agg.rows.slice().sort((a, b) => b.findings - a.findings ||
    keyLabel(dims[0], a.keys[0]).localeCompare(keyLabel(dims[0], b.keys[0]), state.lang));
  const table = $('counts');
  table.tHead.replaceChildren(h('tr', {},
    dims.map((d) => h('th', { scope: 'col' }, t('dim_' + d))),
    h('th', { class: 'num', scope: 'col' }, t('findings')),
    h('th', { class: 'num', scope: 'col' }, t('affected'))));
  const body = rows.length ? rows.map((r) => h('tr', {},
    dims.map((d, i) => h('td', {}, keyLabel(d, r.keys[i]))),
    h('td', { class: 'num' }, fmt(r.findings)),
    h('td', { class: 'num' }, fmt(r.affected))))
    : [h('tr', {}, h('td', { colspan: dims.length + 2 }, t('no_data')))];
  table.tBodies[0].replaceChildren(...body);
  let foot = table.tFoot;
  if (!foot) foot = table.createTFoot();
  foot.replaceChildren(h('tr', {}, h('td', { colspan: dims.length }, t('total')),
    h('td', { class: 'num' }, fmt(agg.total.findings)),
    h('td', { class: 'num' }, fmt(agg.total.affected))));
}

// Every bucket between the first and last one, so gaps show as zero.
function bucketRange(bucket, first, last) {
  const out = [];
  const pad = (n) => String(n).padStart(2, '0');
  if (bucket === 'year') {
    for (let y = +first; y <= +last; y++) out.push(String(y));
  } else if (bucket === 'quarter') {
    let [y, q] = first.split('-Q').map(Number);
    const [ly, lq] = last.split('-Q').map(Number);
    while (y < ly || (y === ly && q <= lq)) { out.push(`${y}-Q${q}`); q++; if (q > 4) { q = 1; y++; } }
  } else if (bucket === 'month') {
    let [y, m] = first.split('-').map(Number);
    const [ly, lm] = last.split('-').map(Number);
    while (y < ly || (y === ly && m <= lm)) { out.push(`${y}-${pad(m)}`); m++; if (m > 12) { m = 1; y++; } }
  } else {
    const d = new Date(first + 'T00:00:00Z');
    const end = new Date(last + 'T00:00:00Z');
    while (d <= end) { out.push(d.toISOString().slice(0, 10)); d.setUTCDate(d.getUTCDate() + 7); }
  }
  return out.length > 400 ? null : out;
}

async function loadChart(seq) {
  const bucket = $('bucket').value;
  const p = filterParams();
  p.set('group_by', bucket);
  const agg = await getJSON('/api/v1/aggregate?' + p);
  if (seq !== state.seq) return;
  const known = agg.rows.filter((r) => r.keys[0] !== null);
  state.chart = known.length ? {
    bucket,
    counts: new Map(known.map((r) => [r.keys[0], r.findings])),
    keys: bucketRange(bucket, known[0].keys[0], known[known.length - 1].keys[0]) || known.map((r) => r.keys[0]),
  } : null;
  drawChart();
}

// Draws the chart at the width of its box, one SVG unit per CSS pixel, so that its text
// keeps its size on a phone; redrawn when the box changes width.
function drawChart() {
  const box = $('chart');
  if (!state.chart) { box.replaceChildren(h('p', { class: 'note' }, t('no_data'))); return; }
  const { bucket, counts, keys } = state.chart;
  const W = Math.max(240, Math.floor(box.clientWidth) || 640);
  state.chartWidth = W;
  const H = W < 480 ? 220 : 240, L = 36, B = 42, T = 10, R = 8;
  const max = Math.max(1, ...counts.values());
  const bw = (W - L - R) / keys.length;
  const y = (v) => T + (H - T - B) * (1 - v / max);
  const svg = h('svg:svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img', 'aria-label': t('over_time') });
  const ticks = max <= 5 ? max : 4;
  for (let i = 0; i <= ticks; i++) {
    const v = Math.round(max * i / ticks);
    svg.append(h('svg:line', { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: '#e3e6eb' }),
      h('svg:text', { x: L - 4, y: y(v) + 4, 'text-anchor': 'end' }, fmt(v)));
  }
  // A label at most every 64 px (a week's date is the longest, about 60 px).
  const every = Math.max(1, Math.ceil(64 / bw));
  keys.forEach((k, i) => {
    const v = counts.get(k) || 0;
    const x = L + i * bw;
    const bar = h('svg:rect', { class: 'bar', x: x + bw * 0.1, width: Math.max(1, bw * 0.8), y: y(v), height: y(0) - y(v) });
    bar.append(h('svg:title', {}, `${k}: ${fmt(v)}`));
    svg.append(bar);
    if (i % every === 0) {
      svg.append(h('svg:text', { x: x + bw / 2, y: H - B + 16, 'text-anchor': 'middle' }, k));
    }
  });
  svg.append(h('svg:text', { x: L, y: H - 6 }, `${t('findings')} / ${t(bucket)}`));
  box.replaceChildren(svg);
}

function place(f) {
  return [f.municipality, f.region, label('country', f.country)].filter(Boolean).join(', ');
}

async function loadFindings(seq, fresh) {
  const p = filterParams();
  p.set('limit', PAGE);
  if (!fresh && state.cursor) p.set('cursor', state.cursor);
  const page = await getJSON('/api/v1/findings?' + p);
  if (seq !== undefined && seq !== state.seq) return;
  state.cursor = page.next_cursor || null;
  const table = $('list');
  table.tHead.replaceChildren(h('tr', {},
    ['date', 'title_col', 'location', 'dim_category', 'affected'].map((k) =>
      h('th', { scope: 'col', class: k === 'affected' ? 'num' : null }, t(k)))));
  // data-label: the column's name, shown before each value where rows are stacked (phones).
  const rows = page.items.map((f) => h('tr', {
    tabindex: 0, 'data-id': f.id,
    onclick: () => showDetail(f.id),
    onkeydown: (e) => { if (e.key === 'Enter') showDetail(f.id); },
  },
  h('td', {}, f.occurred_start),
  h('td', { lang: f.language }, f.title),
  h('td', { 'data-label': t('location') }, place(f)),
  h('td', { 'data-label': t('dim_category') }, label('category', f.category)),
  h('td', { class: 'num', 'data-label': t('affected') }, f.affected_count === null ? '' : fmt(f.affected_count))));
  if (fresh) table.tBodies[0].replaceChildren(...rows);
  else table.tBodies[0].append(...rows);
  $('more').hidden = !state.cursor;
  if (fresh) await loadMap(seq);
}

// ---- map ----

function project(box, w, hgt) {
  const [x0, x1, y0, y1] = box;
  const k = Math.cos(((y0 + y1) / 2) * Math.PI / 180);
  const sx = w / ((x1 - x0) * k), sy = hgt / (y1 - y0);
  const s = Math.min(sx, sy);
  return ([lon, lat]) => [((lon - x0) * k * s).toFixed(1), ((y1 - lat) * s).toFixed(1)];
}

function panelSize(box, width) {
  const [x0, x1, y0, y1] = box;
  const k = Math.cos(((y0 + y1) / 2) * Math.PI / 180);
  return [width, Math.round(width * (y1 - y0) / ((x1 - x0) * k))];
}

async function loadMap(seq) {
  const p = filterParams();
  p.set('limit', 500);
  p.set('total', 'true');
  const page = await getJSON('/api/v1/findings?' + p);
  if (seq !== undefined && seq !== state.seq) return;
  const pts = page.items.filter((f) => f.lat !== null && f.lon !== null);
  const box = $('map');
  const panels = PANELS.map((panel, idx) => {
    const [w, hgt] = panelSize(panel.box, idx === 0 ? 520 : 380);
    const proj = project(panel.box, w, hgt);
    const svg = h('svg:svg', { viewBox: `0 0 ${w} ${hgt}`, width: w, height: hgt, role: 'img', 'aria-label': t('map') });
    const clip = `clip-${panel.name}`;
    svg.append(h('svg:defs', {}, h('svg:clipPath', { id: clip }, h('svg:rect', { width: w, height: hgt }))));
    svg.append(h('svg:rect', { class: 'frame', width: w, height: hgt }));
    const g = h('svg:g', { 'clip-path': `url(#${clip})` });
    for (const f of state.countries.features) {
      const d = f.geometry.coordinates.map((poly) => poly.map((ring) =>
        'M' + ring.map((c) => proj(c).join(',')).join('L') + 'Z').join('')).join('');
      const path = h('svg:path', { d, class: panel.focus.includes(f.properties.code) ? 'land focus' : 'land' });
      path.append(h('svg:title', {}, label('country', f.properties.code)));
      g.append(path);
    }
    svg.append(g);
    return { panel, svg, proj };
  });
  let shown = 0;
  for (const f of pts) {
    const hit = panels.find(({ panel: { box: b } }) => f.lon >= b[0] && f.lon <= b[1] && f.lat >= b[2] && f.lat <= b[3]);
    if (!hit) continue;
    const [x, y] = hit.proj([f.lon, f.lat]);
    const r = 3 + Math.min(6, Math.sqrt(f.affected_count || 1));
    const c = h('svg:circle', { class: 'point', cx: x, cy: y, r, tabindex: 0, 'data-id': f.id, onclick: () => showDetail(f.id) });
    c.append(h('svg:title', {}, `${f.occurred_start} — ${f.title}`));
    hit.svg.append(c);
    shown++;
  }
  box.replaceChildren(...panels.map((p2) => p2.svg));
  const hidden = page.total.findings - shown;
  $('map-note').textContent = `${fmt(shown)} ${t('on_map')}; ${fmt(Math.max(0, hidden))} ${t('map_note')}`;
}

// ---- detail ----

function audienceLabel(a) {
  if (!a) return '';
  if (a.kind === 'members') return `${t('aud_members')} (${a.members.length})`;
  return t('aud_' + a.kind);
}

async function showDetail(id) {
  const panel = $('detail');
  const body = $('detail-body');
  body.replaceChildren(h('p', {}, t('loading')));
  panel.hidden = false;
  let d;
  try {
    d = await getJSON('/api/v1/findings/' + encodeURIComponent(id));
  } catch (e) {
    body.replaceChildren(h('p', { class: 'error' }, `${t('error')}: ${e.message}`));
    return;
  }
  const f = d.payload || {};
  const loc = f.location || {};
  const when = (ms) => new Date(ms).toISOString().slice(0, 16).replace('T', ' ');
  const rows = [
    ['author', h('span', {}, h('span', { class: 'key' }, d.author), d.own ? ` (${t('own_org')})` : '')],
    ['signature', d.signature],
    ['audience', audienceLabel(d.audience)],
    ['date', [f.occurred && f.occurred.start, f.occurred && f.occurred.end].filter(Boolean).join(' – ')],
    ['location', [loc.place, loc.municipality, loc.region, label('country', loc.country)].filter(Boolean).join(', ')],
    ['dim_category', label('category', f.category)],
    ['actors', (f.actors || []).map((a) => label('actor_type', a.type) + (a.unit ? ` (${a.unit})` : '')).join('; ')],
    ['affected', [f.affected && f.affected.count !== undefined ? fmt(f.affected.count) : null,
      ...((f.affected && f.affected.groups) || []).map((g) => label('affected_group', g))].filter(Boolean).join('; ')],
    ['dim_confidence', label('confidence', f.confidence)],
  ];
  const versions = h('ol', {}, d.versions.map((v) => h('li', { class: v.id === d.id ? 'current' : null },
    `${when(v.created_at_ms)} · #${v.seq} · `,
    v.schema.startsWith('retraction') ? `${t('retracted')}: ${v.reason || ''}` : (v.title || ''),
    ' ', h('span', { class: 'key' }, v.id.slice(0, 12)))));
  body.replaceChildren(
    h('h2', { lang: f.language }, f.title || d.id),
    d.retracted ? h('p', { class: 'error' }, `${t('retracted')}: ${d.retracted}`) : null,
    !d.current && !d.retracted ? h('p', { class: 'note' }, t('not_current')) : null,
    h('p', { lang: f.language }, f.summary || ''),
    h('dl', {}, rows.map(([k, v]) => [h('dt', {}, t(k)), h('dd', {}, v)])),
    h('h3', {}, t('versions')),
    versions,
    h('p', { class: 'note' }, h('span', { class: 'key' }, d.id)));
  $('close').focus();
}

// ---- start ----

async function start() {
  try {
    const [vocab, countries] = await Promise.all([
      getJSON('/api/v1/vocabularies'),
      getJSON('/static/map/countries.geojson'),
    ]);
    state.vocab = vocab;
    state.countries = countries;
    // Countries offered as filters: those the node has findings for (all when none).
    const present = await getJSON('/api/v1/aggregate?group_by=country');
    state.present = present.rows.map((r) => r.keys[0]).filter(Boolean);
    // A language chosen with the switcher earlier wins; otherwise the browser's preference.
    let lang = null;
    try { lang = localStorage.getItem('coalition.lang'); } catch (_) { /* private mode */ }
    if (!LANGS.includes(lang)) {
      lang = pickLanguage(navigator.languages || [navigator.language || 'en']);
    }
    $('lang').value = lang;
    await setLanguage(lang);
  } catch (e) {
    setStatus(`Cannot reach the node API: ${e.message}`, true);
    return;
  }
  $('lang').addEventListener('change', async (e) => { await setLanguage(e.target.value); await refresh(); });
  for (const e of document.querySelectorAll('#filters select, #filters input')) {
    e.addEventListener('change', refresh);
  }
  $('f-q').addEventListener('keydown', (e) => { if (e.key === 'Enter') { e.preventDefault(); refresh(); } });
  $('reset').addEventListener('click', () => {
    for (const e of document.querySelectorAll('#filters select[data-vocab], #filters input')) e.value = '';
    refresh();
  });
  $('more').addEventListener('click', () => loadFindings(undefined, false).catch((e) => setStatus(e.message, true)));
  $('close').addEventListener('click', () => { $('detail').hidden = true; });
  document.addEventListener('keydown', (e) => { if (e.key === 'Escape') $('detail').hidden = true; });
  // A phone turned sideways, a window resized: the chart is drawn for its width.
  new ResizeObserver(() => {
    if (state.chart && Math.floor($('chart').clientWidth) !== state.chartWidth) drawChart();
  }).observe($('chart'));
  await refresh();
}

document.addEventListener('DOMContentLoaded', start);
