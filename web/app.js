// vigil: the page. Draws the crowd board from server-sent events (/api/v1/board/events) and,
// for analysts, the hit queue (keyboard: ↑/↓ or j/k, c, r, Esc) and the rules. No framework:
// the page is a few hundred lines, and a toolchain would be more than it.
'use strict';

const LEVEL_COLOURS = { A: '#2da44e', B: '#7ac143', C: '#d4c000', D: '#f0a020', E: '#e8590c', F: '#d1242f' };
const HOUR = 3600000;
const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'text') e.textContent = v;
    else if (k === 'style') e.style.cssText = v; // CSSOM: the policy forbids style attributes
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
};
const svg = (tag, attrs = {}) => {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
};

// What tests and the status line read: updates received, and how far behind they arrived.
const vigil = window.vigil = {
  me: null, board: null, history: new Map(), hits: [], hits_total: 0, lang: 'en',
  stats: { updates: 0, snapshots: 0, transport_ms: [], city_lag_ms: [], received_at: 0 },
};

function t(key) {
  const d = window.VIGIL_I18N || {};
  return (d[vigil.lang] && d[vigil.lang][key]) || (d.en && d.en[key]) || key;
}
const fmt = (x, digits = 2) => (x === null || x === undefined || Number.isNaN(x)) ? '–'
  : Number(x).toLocaleString(vigil.lang === 'ar' ? 'ar-MA' : vigil.lang, { maximumFractionDigits: digits, minimumFractionDigits: digits });

// A moment in the viewer's time zone, to the second (a hit is checked against footage).
const when = (ms) => (ms === null || ms === undefined) ? '–'
  : new Date(ms).toLocaleString(vigil.lang === 'ar' ? 'ar-MA' : vigil.lang,
    { year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });

function applyLang(lang) {
  vigil.lang = ['en', 'fr', 'ar'].includes(lang) ? lang : 'en';
  document.documentElement.lang = vigil.lang;
  document.documentElement.dir = vigil.lang === 'ar' ? 'rtl' : 'ltr';
  for (const e of document.querySelectorAll('[data-i18n]')) e.textContent = t(e.dataset.i18n);
  $('lang').value = vigil.lang;
  try { localStorage.setItem('vigil.lang', vigil.lang); } catch (_) { /* private mode */ }
  render();
  renderHits();
  if (vigil.me && vigil.me.rules) loadRules();
}

async function api(path, options = {}) {
  const r = await fetch(path, { credentials: 'same-origin', ...options,
    headers: { 'content-type': 'application/json', ...(options.headers || {}) } });
  if (r.status === 401) { location.reload(); throw new Error('logged out'); }
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

// ---- the board --------------------------------------------------------------------------

function follow() {
  const source = new EventSource('/api/v1/board/events');
  source.addEventListener('snapshot', (e) => {
    const b = JSON.parse(e.data);
    vigil.history = new Map(Object.entries(b.history || {}).map(([z, h]) => [Number(z), h]));
    delete b.history;
    received(b);
    vigil.stats.snapshots++;
  });
  source.addEventListener('update', (e) => {
    const b = JSON.parse(e.data);
    for (const [z, time, d] of b.points || []) {
      const h = vigil.history.get(z) || [];
      h.push([time, d]);
      while (h.length && h[0][0] <= time - HOUR) h.shift();
      vigil.history.set(z, h);
    }
    received(b);
    vigil.stats.updates++;
  });
  source.onopen = () => status();
  source.onerror = () => { $('status').textContent = t('offline'); $('status').className = 'bad'; };
}

function received(b) {
  const now = Date.now();
  vigil.board = b;
  vigil.stats.received_at = now;
  const keep = (list, v) => { list.push(v); if (list.length > 600) list.shift(); };
  keep(vigil.stats.transport_ms, now - b.sent_ms);
  if (b.clock_ms && b.now) keep(vigil.stats.city_lag_ms, b.clock_ms - b.now + (now - b.sent_ms));
  render();
  status();
}

function status() {
  const s = $('status');
  if (!vigil.board) { s.textContent = t('connecting'); return; }
  const age = Math.max(0, (Date.now() - vigil.stats.received_at) / 1000);
  s.textContent = `${t('live')} · ${t('updated')} ${fmt(age, 0)}${t('ago')}`;
  s.className = age > 5 ? 'bad' : 'good';
}

function render() {
  const b = vigil.board;
  if (!b) return;
  renderPlan(b);
  renderZones(b);
  renderAlerts(b);
  renderFlows(b);
  renderCameras(b);
}

function renderPlan(b) {
  const plan = $('plan');
  const points = [];
  for (const z of b.site.zones) points.push(...z.polygon);
  for (const l of b.site.lines) points.push(l.from, l.to);
  if (!points.length) return;
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const pad = 2;
  let x0 = Math.min(...xs) - pad, x1 = Math.max(...xs) + pad, y0 = Math.min(...ys) - pad, y1 = Math.max(...ys) + pad;
  const size = Math.max(x1 - x0, y1 - y0);
  const latest = new Map(b.zones.map((z) => [z.zone_id, z]));
  const centre = (poly) => [poly.reduce((a, p) => a + p[0], 0) / poly.length, poly.reduce((a, p) => a + p[1], 0) / poly.length];
  const zoneLabel = (z) => `${z.name} ${latest.has(z.zone_id) ? fmt(latest.get(z.zone_id).density) : ''}`;
  // Where each label goes, in ground metres (the middle of its baseline), so that none hides
  // another or lies across a line: each takes the first of its places that is free. A line's
  // label goes past one of its ends; a zone's at its centre, else under or over the zone. A
  // character is at most about 0.62 of the font size wide. (Greedy, not an optimal placement:
  // a site plan has a few zones and lines.)
  const zoneFont = size / 28, lineFont = size / 35;
  const box = (x, y, width, font) => ({ x: x - width / 2, y: y - font / 3, width, height: 1.05 * font });
  const meet = (a, b) => a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height;
  const taken = b.site.lines.map((l) => ({ x: Math.min(l.from[0], l.to[0]), y: Math.min(l.from[1], l.to[1]),
    width: Math.abs(l.to[0] - l.from[0]) || 1e-3, height: Math.abs(l.to[1] - l.from[1]) || 1e-3 }));
  const labels = [];
  const place = (text, font, zone, spots) => {
    const width = text.length * 0.62 * font;
    const free = spots.find(([x, y]) => !taken.some((t) => meet(t, box(x, y, width, font)))) || spots[0];
    const a = { text, x: free[0], y: free[1], width, font, zone };
    taken.push(box(a.x, a.y, width, font));
    labels.push(a);
  };
  for (const l of b.site.lines) {
    const width = l.name.length * 0.62 * lineFont;
    const [lo, hi] = l.from[1] < l.to[1] ? [l.from, l.to] : [l.to, l.from];
    const [left, right] = l.from[0] < l.to[0] ? [l.from, l.to] : [l.to, l.from];
    const ends = [[lo[0], lo[1] - 1.1 * lineFont], [hi[0], hi[1] + 0.5 * lineFont]];
    const sides = [[left[0] - lineFont / 2 - width / 2, left[1] - lineFont / 3], [right[0] + lineFont / 2 + width / 2, right[1] - lineFont / 3]];
    const upright = Math.abs(l.to[1] - l.from[1]) > Math.abs(l.to[0] - l.from[0]);
    place(l.name, lineFont, false, upright ? [...ends, ...sides] : [...sides, ...ends]);
  }
  for (const z of b.site.zones) {
    const [cx, cy] = centre(z.polygon), text = zoneLabel(z);
    const zy = z.polygon.map((p) => p[1]), zx = z.polygon.map((p) => p[0]);
    const inside = text.length * 0.62 * zoneFont <= 0.9 * (Math.max(...zx) - Math.min(...zx));
    const around = [[cx, Math.min(...zy) - 1.1 * zoneFont], [cx, Math.max(...zy) + 0.5 * zoneFont]];
    place(text, zoneFont, true, inside ? [[cx, cy - zoneFont / 3], ...around] : around);
  }
  // The plan is widened to hold every label whole.
  for (const a of labels) {
    x0 = Math.min(x0, a.x - a.width / 2); x1 = Math.max(x1, a.x + a.width / 2);
    y0 = Math.min(y0, a.y - a.font / 3); y1 = Math.max(y1, a.y + a.font);
  }
  const flip = (p) => `${p[0]},${y1 + y0 - p[1]}`; // north up: the city frame's y grows upwards
  plan.setAttribute('viewBox', `${x0} ${y0} ${x1 - x0} ${y1 - y0}`);
  const keepTitle = plan.querySelector('title');
  plan.replaceChildren(keepTitle);
  for (const z of b.site.zones) {
    const now = latest.get(z.zone_id);
    plan.append(svg('polygon', {
      points: z.polygon.map(flip).join(' '), class: 'zone', 'data-zone': z.name,
      fill: LEVEL_COLOURS[now && now.level] || '#556', 'fill-opacity': 0.35, stroke: '#cdd', 'stroke-width': size / 300,
    }));
  }
  const peak = 2.15; // Fruin's level F on walkways: full colour
  for (const [, x, y, d] of b.grid.cells) {
    plan.append(svg('rect', { x, y: y1 + y0 - y - 1, width: 1, height: 1, class: 'cell',
      fill: '#ff3b30', 'fill-opacity': Math.min(0.9, 0.15 + d / peak) }));
  }
  for (const l of b.site.lines) {
    plan.append(svg('line', { x1: l.from[0], y1: y1 + y0 - l.from[1], x2: l.to[0], y2: y1 + y0 - l.to[1],
      stroke: '#58a6ff', 'stroke-width': size / 120, 'stroke-linecap': 'round' }));
  }
  for (const a of labels) {
    const label = svg('text', { x: a.x, y: y1 + y0 - a.y, 'font-size': a.font, fill: a.zone ? '#fff' : '#58a6ff',
      'text-anchor': 'middle', class: a.zone ? 'zone-label' : 'line-label' });
    label.textContent = a.text;
    plan.append(label);
  }
  $('legend').replaceChildren(...Object.entries(LEVEL_COLOURS).map(([k, c]) =>
    el('span', {}, el('i', { style: `background:${c}` }), `${t('level')} ${k}`)));
}

function sparkline(history, alertDensity) {
  const s = svg('svg', { viewBox: '0 0 120 30', class: 'spark', preserveAspectRatio: 'none', 'aria-hidden': 'true' });
  if (!history || history.length < 2) return s;
  const end = history[history.length - 1][0];
  const top = Math.max(alertDensity * 1.2, ...history.map((p) => p[1]), 0.1);
  const x = (time) => 120 * (1 - (end - time) / HOUR), y = (d) => 30 - 28 * d / top;
  s.append(svg('line', { x1: 0, x2: 120, y1: y(alertDensity), y2: y(alertDensity), class: 'threshold' }));
  s.append(svg('polyline', { points: history.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(' ') }));
  return s;
}

function renderZones(b) {
  const latest = new Map(b.zones.map((z) => [z.zone_id, z]));
  $('zones').replaceChildren(...b.site.zones.map((z) => {
    const now = latest.get(z.zone_id) || {};
    const level = now.level || '–';
    return el('li', { 'data-zone': z.name, 'data-density': now.density ?? '', 'data-level': level },
      el('span', { class: 'level', style: `background:${LEVEL_COLOURS[level] || '#556'}`, text: level }),
      el('span', { class: 'name', text: z.name }),
      el('span', { class: 'density', text: `${fmt(now.density)} ${t('per_m2')}` }),
      el('span', { class: 'persons muted', text: `${fmt(now.persons, 0)} ${t('persons')}` }),
      sparkline(vigil.history.get(z.zone_id), z.alert_density));
  }));
}

function renderAlerts(b) {
  const list = $('alerts');
  if (!b.alerts.length) { list.replaceChildren(el('li', { class: 'muted', text: t('no_alerts') })); return; }
  list.replaceChildren(...b.alerts.map((a) => {
    const li = el('li', { class: `severity-${a.severity}`, 'data-alert': a.id, 'data-zone': a.zone },
      el('strong', { text: a.zone }), ' ', el('span', { text: a.message }));
    if (a.acked_by) {
      li.append(el('div', { class: 'muted', text: `${t('acked_by')} ${a.acked_by}` }));
    } else {
      const button = el('button', { text: t('acknowledge') });
      button.onclick = () => api(`/api/v1/alerts/${encodeURIComponent(a.id)}/ack`, { method: 'POST' }).catch(() => {});
      li.append(' ', button);
    }
    return li;
  }));
}

function renderFlows(b) {
  // A city without counting lines has no flows: say so, and how to add one, not an empty table.
  if (!b.flows.length) {
    $('flows').tBodies[0].replaceChildren(el('tr', {}, el('td', { colspan: 5, class: 'muted', text: t('no_lines') })));
    return;
  }
  $('flows').tBodies[0].replaceChildren(...b.flows.map((f) => el('tr', { 'data-line': f.name },
    el('td', { text: f.name }), el('td', { text: fmt(f.in, 0) }), el('td', { text: fmt(f.out, 0) }),
    el('td', { text: fmt(f.per_min_per_m, 1) }),
    el('td', {}, el('meter', { min: 0, max: 1, low: 0.6, high: 0.8, optimum: 0, value: Math.min(1, f.capacity_ratio) }),
      ` ${fmt(100 * f.capacity_ratio, 0)}%`))));
}

function renderCameras(b) {
  $('no-cameras').hidden = b.cameras.length > 0;
  $('cameras').tBodies[0].replaceChildren(...b.cameras.map((c) => {
    const bad = c.silent || c.state !== 'streaming';
    return el('tr', { class: bad ? 'bad' : '' }, el('td', { text: c.camera }),
      el('td', { text: c.silent ? t('silent') : t(`camera_${c.state}`) }), el('td', { text: fmt(c.fps_out, 1) }),
      el('td', { text: fmt(c.frames_dropped, 0) }));
  }));
}

// ---- the analysts' hit queue --------------------------------------------------------------

let selected = 0;

async function loadHits() {
  try {
    const r = await api('/api/v1/hits');
    const id = vigil.hits[selected] && vigil.hits[selected].hit_id;
    vigil.hits = r.hits;
    vigil.hits_total = r.total;
    const again = vigil.hits.findIndex((h) => h.hit_id === id);
    selected = again >= 0 ? again : Math.min(selected, Math.max(0, vigil.hits.length - 1));
    renderHits();
  } catch (_) { /* shown on the next try */ }
}

function renderHits() {
  if (!vigil.me || !vigil.me.hits) return;
  $('no-hits').hidden = vigil.hits.length > 0;
  const more = vigil.hits_total - vigil.hits.length;
  $('more-hits').hidden = !(more > 0);
  $('more-hits').textContent = more > 0 ? `${fmt(more, 0)} ${t('more_hits')}` : '';
  const focused = document.activeElement && document.activeElement.closest && document.activeElement.closest('#hits');
  $('hits').replaceChildren(...vigil.hits.map((h, i) => {
    const mine = (h.confirmed_by || []).includes(vigil.me.user);
    const li = el('li', { tabindex: i === selected ? 0 : -1, 'data-hit': h.hit_id, 'aria-selected': i === selected,
      class: i === selected ? 'selected' : '' },
      el('div', { class: 'plates' }, el('span', { class: 'plate', text: h.listed_plate }), ` ${t('listed')} · ${t('read')} `,
        el('span', { class: 'plate', text: h.plate_raw })),
      // Where and when the plate was read: what an analyst checks against the camera's footage.
      el('div', { class: 'where', text: `${t('camera')} ${h.camera_id} · ${when(h.read_time)}` }),
      el('div', { class: 'muted', text: `${t('score')} ${fmt(h.score)} · ${t('why')}: ${h.why} · ${t('legal_basis')}: ${h.legal_basis} · ${t('authority')}: ${h.authority}` }),
      el('div', { class: 'two-person', text: `${(h.confirmed_by || []).length} / ${h.needed} ${t('confirmations')}` +
        ((h.confirmed_by || []).length ? ` · ${t('confirmed_by')} ${h.confirmed_by.join(', ')}` : '') + (mine ? ` · ${t('you_confirmed')}` : '') }));
    if (vigil.me.decide) {
      const confirm = el('button', { text: t('confirm'), disabled: mine, tabindex: -1 });
      confirm.onclick = () => decide(i, 'confirm');
      const reject = el('button', { text: t('reject'), tabindex: -1 });
      reject.onclick = () => askReason(i);
      li.append(el('div', { class: 'actions' }, confirm, ' ', reject));
    }
    li.onclick = () => { selected = i; renderHits(); };
    return li;
  }));
  if (focused) focusSelected();
}

function focusSelected() {
  const li = $('hits').children[selected];
  if (li) li.focus();
}

async function decide(i, decision, reason = '') {
  const h = vigil.hits[i];
  if (!h) return;
  if (decision === 'confirm' && (h.confirmed_by || []).includes(vigil.me.user)) {
    $('status').textContent = t('you_confirmed');
    return;
  }
  try {
    await api(`/api/v1/hits/${encodeURIComponent(h.hit_id)}/decision`, { method: 'POST', body: JSON.stringify({ decision, reason }) });
    $('status').textContent = `${decision}: ${h.listed_plate}`;
  } catch (e) { $('status').textContent = e.message; }
  await loadHits();
  focusSelected();
}

function askReason(i) {
  selected = i;
  const form = $('reject-form');
  form.hidden = false;
  $('reject-reason').value = '';
  $('reject-reason').focus();
}

function keys(e) {
  if (!vigil.me || !vigil.me.decide) return;
  if (e.target.closest && e.target.closest('#reject-form')) {
    if (e.key === 'Escape') { $('reject-form').hidden = true; focusSelected(); }
    return;
  }
  if (!(e.target.closest && e.target.closest('#hits'))) return;
  const move = { ArrowDown: 1, j: 1, ArrowUp: -1, k: -1 }[e.key];
  if (move) {
    selected = Math.max(0, Math.min(vigil.hits.length - 1, selected + move));
    renderHits(); focusSelected(); e.preventDefault();
  } else if (e.key === 'c') {
    decide(selected, 'confirm'); e.preventDefault();
  } else if (e.key === 'r') {
    askReason(selected); e.preventDefault();
  }
}

// ---- rules ---------------------------------------------------------------------------------

async function loadRules() {
  try {
    const r = await api('/api/v1/rules');
    if (!r.rules.length) {
      $('rules').tBodies[0].replaceChildren(el('tr', {}, el('td', { colspan: 4, class: 'muted', text: t('no_rules') })));
      return;
    }
    $('rules').tBodies[0].replaceChildren(...r.rules.map((x) => el('tr', { 'data-rule': x.name },
      el('td', { text: x.name }), el('td', { text: t(x.state) }), el('td', { text: fmt(x.rows_emitted, 0) }),
      el('td', { text: x.last_error || '' }))));
  } catch (_) { /* shown on the next try */ }
}

// ---- start ---------------------------------------------------------------------------------

async function start() {
  let lang = 'en';
  try { lang = localStorage.getItem('vigil.lang') || (navigator.language || 'en').slice(0, 2); } catch (_) { /* */ }
  $('lang').onchange = (e) => applyLang(e.target.value);
  $('logout').onclick = async () => { await fetch('/api/v1/logout', { method: 'POST' }); location.reload(); };
  document.addEventListener('keydown', keys);
  $('reject-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const reason = $('reject-reason').value.trim();
    if (!reason) return;
    $('reject-form').hidden = true;
    decide(selected, 'reject', reason);
  });
  vigil.me = await api('/api/v1/me');
  $('who').textContent = `${vigil.me.user} (${vigil.me.role})`;
  applyLang(lang);
  for (const id of ['plan-card', 'zones-card', 'alerts-card', 'flows-card', 'cameras-card']) $(id).hidden = !vigil.me.board;
  $('hits-card').hidden = !vigil.me.hits;
  $('rules-card').hidden = !vigil.me.rules;
  $('nothing-card').hidden = vigil.me.board || vigil.me.hits;
  if (vigil.me.board) follow();
  if (vigil.me.hits) { loadHits(); setInterval(loadHits, 2000); }
  if (vigil.me.rules) { loadRules(); setInterval(loadRules, 5000); }
  setInterval(status, 1000);
}

document.addEventListener('DOMContentLoaded', () => { start().catch((e) => { $('status').textContent = e.message; }); });
