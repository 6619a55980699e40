import { chromium } from 'playwright-core';
const [base, out, lang] = process.argv.slice(2);
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu'] });
const page = await (await browser.newContext({ viewport: { width: 1400, height: 1000 } })).newPage();
await page.goto(base + '/');
await page.waitForFunction(() => document.activeElement && document.activeElement.id === 'user');
await page.keyboard.type('vigil'); await page.keyboard.press('Tab'); await page.keyboard.type('secretpass1'); await page.keyboard.press('Enter');
await page.waitForFunction(() => window.vigil && window.vigil.board, null, { timeout: 30000 });
if (lang) { await page.selectOption('#lang', lang).catch(() => {}); }
await page.waitForTimeout(3000);
console.log(JSON.stringify({ flows: await page.$$eval('#flows tbody tr', (rs) => rs.map((r) => r.innerText)),
  cams: await page.$$eval('#cameras tbody tr', (rs) => rs.map((r) => r.innerText)), nocam: await page.$eval('#no-cameras', (e) => e.hidden) }));
await page.screenshot({ path: out, fullPage: true });
await browser.close();
