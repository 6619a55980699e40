// vigil: drives Debian's chromium (playwright-core) through the page as a crowd manager and two
// analysts; prints one JSON object of what it saw. pipelines/tests/dashboard.rs runs it and judges.
//
// Arguments: base URL, artifacts dir; the rest comes as JSON in VIGIL_BOARD_TEST:
// { zones: [names], zone: name whose density rises, threshold, crowd: [user, pw],
//   analysts: [[user, pw], [user, pw]], forbidden: [paths] }
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';

const [base, artifacts] = process.argv.slice(2);
const cfg = JSON.parse(process.env.VIGIL_BOARD_TEST);
const out = { steps: [] };
const step = (s) => { out.steps.push(s); process.stderr.write(`board test: ${s}\n`); };
mkdirSync(artifacts, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  // The machine's network is closed: no background fetches, no sandbox as root.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});

// Logs in with the keyboard alone: the user, Tab, the password, Enter.
// Typing waits for the form's autofocus, so that no keystroke lands before the field has it.
async function login(page, user, password) {
  await page.goto(base + '/');
  await page.waitForFunction(() => document.activeElement && document.activeElement.id === 'user',
    null, { timeout: 15000 });
  await page.keyboard.type(user);
  await page.keyboard.press('Tab');
  await page.keyboard.type(password);
  await page.keyboard.press('Enter');
  try {
    await page.waitForFunction(() => window.vigil && window.vigil.me, null, { timeout: 30000 });
  } catch (e) {
    // Say where the login stood: the page's address and what it shows.
    const text = (await page.evaluate(() => document.body && document.body.innerText || '')).slice(0, 300);
    throw new Error(`login of ${user} did not reach the board: at ${page.url()}, showing ${JSON.stringify(text)}: ${e.message}`);
  }
}

try {
  // ---- the crowd manager ----
  const crowd = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
  const page = await crowd.newPage();
  const anonymous = await page.goto(base + '/');
  out.anonymous_status = anonymous.status();
  const loginBytes = (await anonymous.body()).length;
  out.login_form = await page.locator('form#login').count();
  await login(page, ...cfg.crowd);
  out.role = await page.evaluate(() => window.vigil.me.role);
  step(`logged in as ${out.role}`);
  await page.waitForFunction((n) => document.querySelectorAll('#zones li[data-zone]').length >= n
      && [...document.querySelectorAll('#zones li')].some((li) => li.dataset.density !== ''),
    cfg.zones.length, { timeout: 30000 });
  // What the browser loaded for the page: the document and its assets (the API's JSON and the
  // event stream are data, not weight), as the browser's own resource timing counts them.
  out.page_bytes = await page.evaluate(() => [...performance.getEntriesByType('navigation'),
    ...performance.getEntriesByType('resource')].filter((e) => !new URL(e.name).pathname.startsWith('/api/'))
    .reduce((n, e) => n + e.decodedBodySize, 0));
  out.login_bytes = loginBytes;
  step(`page and assets: ${out.page_bytes} bytes; login form ${loginBytes} bytes`);
  out.zones_listed = await page.$$eval('#zones li[data-zone]', (l) => l.map((e) => e.dataset.zone));
  out.zones_drawn = await page.$$eval('#plan polygon[data-zone]', (l) => l.map((e) => e.dataset.zone));
  out.hit_queue_visible = await page.locator('#hits-card').isVisible();
  // Every label on the plan lies within the plan's drawing (none cut at its edge).
  out.labels_cut = await page.$$eval('#plan text', (ts) => ts.filter((t) => {
    const v = t.ownerSVGElement.viewBox.baseVal, b = t.getBBox();
    return b.x < v.x || b.x + b.width > v.x + v.width;
  }).map((t) => t.textContent));
  // No label on the plan hides another, or lies across a line.
  out.labels_overlapping = await page.$$eval('#plan', ([plan]) => {
    const boxes = [...plan.querySelectorAll('text')].map((t) => [t.textContent, t.getBBox()]);
    const meet = (a, b) => a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height;
    const lines = [...plan.querySelectorAll('line')].map((l) => l.getBBox());
    const found = [];
    boxes.forEach(([t, b], i) => {
      for (const [u, c] of boxes.slice(i + 1)) if (meet(b, c)) found.push(`${t} / ${u}`);
      if (lines.some((l) => meet(b, { x: l.x, y: l.y, width: Math.max(l.width, 1e-3), height: Math.max(l.height, 1e-3) }))) found.push(`${t} / a line`);
    });
    return found;
  });
  step(`zones listed ${out.zones_listed}, drawn ${out.zones_drawn}`);

  // The density change: when the page first shows the zone at or above the threshold, against
  // when the engine's output first had it (the same JSON API, polled by an analyst every 100 ms).
  await page.evaluate(({ zone, threshold }) => {
    window.__seen = null;
    const look = () => {
      const li = document.querySelector(`#zones li[data-zone="${zone}"]`);
      if (!window.__seen && li && Number(li.dataset.density) >= threshold) window.__seen = Date.now();
    };
    new MutationObserver(look).observe(document.getElementById('zones'), { subtree: true, childList: true, attributes: true });
    look();
  }, { zone: cfg.zone, threshold: cfg.threshold });
  const token = (await (await fetch(base + '/api/v1/login', { method: 'POST',
    body: JSON.stringify({ user: cfg.analysts[0][0], password: cfg.analysts[0][1] }) })).json()).token;
  let engineAt = null, engineDensity = null;
  const until = Date.now() + 120000;
  while (!engineAt && Date.now() < until) {
    const r = await fetch(`${base}/api/v1/streams/zone_density?zone=${encodeURIComponent(cfg.zone)}&limit=5`,
      { headers: { authorization: `Bearer ${token}` } });
    const rows = (await r.json()).rows || [];
    const high = rows.find((x) => x.density >= cfg.threshold);
    if (high) { engineAt = Date.now(); engineDensity = high.density; }
    else await new Promise((res) => setTimeout(res, 100));
  }
  out.before_surge_screenshot = `${artifacts}/board-before.png`;
  await page.waitForFunction(() => window.__seen, null, { timeout: 20000 }).catch(() => {});
  const pageAt = await page.evaluate(() => window.__seen);
  out.density_change = { engine_at: engineAt, page_at: pageAt, engine_density: engineDensity,
    page_after_engine_ms: pageAt && engineAt ? pageAt - engineAt : null };
  step(`density ≥ ${cfg.threshold} in ${cfg.zone}: engine ${engineAt}, page ${pageAt}`);
  // The surge raises the zone's density alert (after its hold time): shown, then acknowledged.
  await page.waitForSelector(`#alerts li[data-zone="${cfg.zone}"] button`, { timeout: 20000 }).catch(() => {});
  out.stats = await page.evaluate(() => window.vigil.stats);
  await page.screenshot({ path: `${artifacts}/board.png`, fullPage: true });
  // Nothing sticks out of its card (the gate flows' table once did), on a wall and on a phone.
  const overflowing = () => page.$$eval('.card', (cs) => cs.filter((c) => !c.hidden && c.scrollWidth > c.clientWidth + 1).map((c) => c.id));
  out.cards_overflowing = await overflowing();
  out.flows_shown = await page.$$eval('#flows tbody tr', (rs) => rs.length);
  const alert = await page.$(`#alerts li[data-zone="${cfg.zone}"]`);
  if (alert) {
    out.alert = { id: await alert.getAttribute('data-alert') };
    await alert.$eval('button', (b) => b.click());
    await page.waitForFunction((z) => (document.querySelector(`#alerts li[data-zone="${z}"]`) || {}).textContent?.includes('acknowledged by'),
      cfg.zone, { timeout: 5000 }).catch(() => {});
    out.alert.text = await page.$eval(`#alerts li[data-zone="${cfg.zone}"]`, (e) => e.textContent).catch(() => null);
    step(`alert ${out.alert.id}: ${out.alert.text}`);
  }
  // Every language has every label (a missing one would show in English, or as its key).
  out.labels_missing = await page.evaluate(() => {
    const d = window.VIGIL_I18N, keys = Object.keys(d.en);
    return Object.entries(d).flatMap(([lang, v]) => keys.filter((k) => !(k in v)).map((k) => `${lang}.${k}`));
  });
  await page.selectOption('#lang', 'ar');
  out.arabic = await page.evaluate(() => ({ dir: document.documentElement.dir, title: document.querySelector('#zones-card h2').textContent }));
  await page.screenshot({ path: `${artifacts}/board-ar.png`, fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: `${artifacts}/board-phone.png`, fullPage: true });
  out.cards_overflowing.push(...(await overflowing()).map((id) => `${id} (phone)`));
  await page.selectOption('#lang', 'en');

  // Nothing personal for a crowd manager, whatever the URL (the browser's own session).
  out.forbidden = {};
  for (const path of cfg.forbidden) {
    const method = path.startsWith('POST ') ? 'POST' : 'GET';
    const url = base + path.replace(/^POST /, '');
    const r = method === 'POST'
      ? await page.request.post(url, { data: { decision: 'confirm', reason: '' } })
      : await page.request.get(url);
    out.forbidden[path] = { status: r.status(), body: (await r.text()).slice(0, 300) };
  }
  await crowd.close();

  // ---- two analysts confirm one hit, with the keyboard alone ----
  out.decisions = [];
  for (const [user, password] of cfg.analysts) {
    const ctx = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
    const p = await ctx.newPage();
    await login(p, user, password);
    await p.waitForSelector('#hits li[data-hit]', { timeout: 60000 });
    let focused = null;
    for (let i = 0; i < 80 && !focused; i++) {
      await p.keyboard.press('Tab');
      focused = await p.evaluate(() => document.activeElement && document.activeElement.dataset.hit || null);
    }
    // What the card shows of where and when, beside what the API says of the same hit.
    const card = await p.evaluate((id) => {
      const h = window.vigil.hits.find((x) => x.hit_id === id);
      return { text: document.querySelector(`#hits li[data-hit="${id}"]`).innerText, camera_id: h.camera_id, read_time: h.read_time };
    }, focused);
    const before = await p.evaluate(() => window.vigil.hits.map((h) => ({ id: h.hit_id, by: h.confirmed_by })));
    await p.keyboard.press('c');
    await p.waitForFunction((id) => !window.vigil.hits.some((h) => h.hit_id === id && !(h.confirmed_by || []).includes(window.vigil.me.user)),
      focused, { timeout: 10000 }).catch(() => {});
    const after = await p.evaluate(() => window.vigil.hits.map((h) => ({ id: h.hit_id, by: h.confirmed_by })));
    // The queue's answer is bounded: the oldest `limit` hits, and how many wait in all.
    const limited = await (await p.request.get(`${base}/api/v1/hits?limit=1`)).json();
    const whole = await (await p.request.get(`${base}/api/v1/hits`)).json();
    const queue = { limited: limited.hits.length, limited_total: limited.total, whole: whole.hits.length, whole_total: whole.total,
      oldest: whole.hits.length > 0 && limited.hits[0].hit_id === whole.hits[0].hit_id };
    out.decisions.push({ user, focused, card, queue, before, after });
    step(`${user} confirmed ${focused} by keyboard`);
    if (user === cfg.analysts[0][0]) await p.screenshot({ path: `${artifacts}/hit-queue.png`, fullPage: true });
    await ctx.close();
  }
} catch (e) {
  out.error = String(e && e.stack || e);
} finally {
  await browser.close();
  console.log(JSON.stringify(out));
}
