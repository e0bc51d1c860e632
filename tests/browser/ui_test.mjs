// End-to-end test of the dashboard's web UI in Debian's Chromium, driven by
// Playwright (playwright-core: no browser download). Started by
// tests/tests/ui_browser.rs against a real cluster it built, while it runs a
// load through both proxies.
//
// Environment:
//   DASHBOARD_URL   http://127.0.0.1:PORT
//   ADMIN_TOKEN     the dashboard's admin token
//   PROXY_IDS       the proxies' ids, comma separated
//   GROUPS          how many groups the cluster has (each: master + replica)
//   SCREENSHOTS     folder for the screenshots
//   CHROMIUM        [/usr/bin/chromium]
//
// Prints one line per step; exits 1 with the reason on the first failure.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const URL_BASE = process.env.DASHBOARD_URL;
const TOKEN = process.env.ADMIN_TOKEN;
const PROXY_IDS = (process.env.PROXY_IDS || '').split(',').filter(Boolean);
const GROUPS = Number(process.env.GROUPS || '2');
const SHOTS = process.env.SCREENSHOTS;
assert.ok(URL_BASE && TOKEN && PROXY_IDS.length && SHOTS, 'DASHBOARD_URL, ADMIN_TOKEN, PROXY_IDS, SCREENSHOTS are needed');
mkdirSync(SHOTS, { recursive: true });

const origin = new URL(URL_BASE).origin;
let step = 'start';
const log = (msg) => console.log(`[ui-test] ${msg}`);

/** The API directly (to know what it answers, and to check the result). */
async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${TOKEN}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const resp = await fetch(origin + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await resp.text();
  let json = null;
  try { json = JSON.parse(text); } catch (_) { /* text */ }
  return { status: resp.status, json, text };
}

/** What the API says to a request (the UI must show exactly this). */
async function apiErrorText(method, path, body) {
  const r = await api(method, path, body);
  assert.ok(r.status >= 400, `${method} ${path} ${JSON.stringify(body)} should fail, got ${r.status} ${r.text}`);
  return r.json.error;
}

const number = (text) => Number(String(text).replace(/[^0-9.]/g, ''));

async function shot(page, name) {
  const file = join(SHOTS, name);
  await page.screenshot({ path: file, fullPage: true });
  log(`screenshot ${file}`);
}

async function confirmDialog(page) {
  await page.locator('#confirm').waitFor({ state: 'visible' });
  await page.click('#confirm-ok');
  await page.locator('#confirm').waitFor({ state: 'hidden' });
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync',
    ],
  });
  const context = await browser.newContext({ viewport: { width: 1440, height: 1000 } });
  const page = await context.newPage();

  // The page may talk to the dashboard only, and must not fail.
  const problems = [];
  page.on('request', (req) => {
    const u = new URL(req.url());
    if (u.origin !== origin && u.protocol !== 'data:') problems.push(`request outside the dashboard: ${req.url()}`);
  });
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    // Refused changes are part of the test: the browser logs their 4xx.
    if (msg.type() === 'error' && !/status of 4\d\d/.test(msg.text())) problems.push(`console error: ${msg.text()}`);
  });

  // ---------------------------------------------------------------- overview
  step = 'overview';
  await page.goto(`${origin}/#/overview`);
  assert.equal(await page.title(), 'Shardis');
  await page.waitForFunction(() => {
    const v = Number((document.querySelector('#stat-qps').textContent || '').replace(/[^0-9.]/g, ''));
    return v > 0;
  }, null, { timeout: 30_000 });
  log(`cluster requests/s shown: ${await page.textContent('#stat-qps')}`);
  for (const id of PROXY_IDS) {
    const row = page.locator(`#proxies-table tr[data-proxy="${id}"]`);
    await row.waitFor({ timeout: 15_000 });
    await page.waitForFunction((pid) => {
      const r = document.querySelector(`#proxies-table tr[data-proxy="${pid}"]`);
      return r && r.textContent.includes('healthy') && !r.textContent.includes('unhealthy') &&
        Number(r.querySelector('.qps').textContent.replace(/[^0-9.]/g, '')) > 0;
    }, id, { timeout: 20_000 });
    log(`proxy ${id}: healthy, ${await row.locator('.qps').textContent()} requests/s`);
  }
  assert.equal(await page.locator('#proxies-table tbody tr').count(), PROXY_IDS.length);
  await page.waitForFunction((n) => document.querySelectorAll('#overview-groups .group').length === n, GROUPS);
  for (let g = 1; g <= GROUPS; g++) {
    const card = page.locator(`#overview-groups .group[data-group="${g}"]`);
    await page.waitForFunction((gid) => {
      const c = document.querySelector(`#overview-groups .group[data-group="${gid}"]`);
      if (!c) return false;
      const rows = [...c.querySelectorAll('tbody tr')];
      // Memory and keys come from the servers' INFO.
      return rows.length === 2 && rows.every((r) => /(KiB|MiB|GiB)/.test(r.textContent));
    }, g, { timeout: 20_000 });
    const roles = await card.locator('tbody tr td:nth-child(2)').allTextContents();
    assert.deepEqual(roles.map((r) => r.replace(/Redis says.*/, '').trim()), ['master', 'replica'], `group ${g} roles`);
    log(`group ${g}: ${(await card.locator('.group-head').textContent()).trim()}`);
  }
  // Charts have data once the history holds a few points.
  await page.waitForFunction(() => !document.querySelector('#legend-qps').textContent.includes('waiting'));
  await page.waitForTimeout(2500);
  await shot(page, '01-overview.png');

  // ---------------------------------------------------------------- slot map
  step = 'slot map';
  await page.click('#nav a[data-page="slots"]');
  const cells = page.locator('#slotmap-main .slot');
  assert.equal(await cells.count(), 1024, 'the slot map has 1024 cells');
  await page.waitForFunction(() => [...document.querySelectorAll('#slotmap-main .slot')].every((c) => c.dataset.group !== undefined && c.dataset.group !== ''));
  const owners = await page.$$eval('#slotmap-main .slot', (cs) => cs.map((c) => c.dataset.group));
  const apiSlots = (await api('GET', '/api/v1/slots')).json.slots;
  assert.deepEqual(owners, apiSlots.map((s) => String(s.group)), 'the map shows the owners the API lists');
  await cells.nth(700).hover();
  const tip = page.locator('#slot-tip');
  await tip.waitFor({ state: 'visible' });
  const tipText = await tip.textContent();
  assert.match(tipText, /slot 700/);
  assert.match(tipText, new RegExp(`group ${apiSlots[700].group}`));
  assert.match(tipText, /ops\/s/);
  log(`hover on slot 700: ${tipText.replace(/\n/g, ' | ')}`);
  // Drag-select 0..63.
  await cells.nth(0).hover();
  await page.mouse.down();
  await cells.nth(63).hover();
  await page.mouse.up();
  assert.match(await page.textContent('#slot-selection'), /0-63 \(64 slots\)/);
  await cells.nth(40).hover();
  await shot(page, '02-slot-map.png');

  // ---------------------------------------------------------------- groups
  step = 'groups';
  await page.click('#nav a[data-page="groups"]');
  await page.locator('#groups-list .card[data-group="1"]').waitFor();
  // A group that exists: the first change asks for the token, then the
  // API's refusal is shown as it said it.
  const existsText = await apiErrorText('POST', '/api/v1/groups', { id: 1 });
  await page.fill('#group-id', '1');
  await page.click('#group-create');
  await confirmDialog(page);
  await page.locator('#token-dialog').waitFor({ state: 'visible' });
  assert.match(await page.textContent('#token-text'), /Authorization: Bearer/);
  await page.fill('#token-input', TOKEN);
  await page.click('#token-save');
  await page.locator('#group-error').waitFor({ state: 'visible' });
  assert.equal((await page.textContent('#group-error')).trim(), existsText);
  log(`bad group id: the UI shows "${existsText}"`);
  // A server address without a port.
  const badAddrText = await apiErrorText('POST', '/api/v1/groups/1/servers', { addr: 'not-an-address', force: false });
  const card1 = page.locator('#groups-list .card[data-group="1"]');
  await card1.locator('input.server-addr').fill('not-an-address');
  await card1.locator('form.server-form button[type=submit]').click();
  await confirmDialog(page);
  await page.locator('#group-1-error').waitFor({ state: 'visible' });
  assert.equal((await page.textContent('#group-1-error')).trim(), badAddrText);
  log(`bad server address: the UI shows "${badAddrText}"`);
  await shot(page, '03-groups-errors.png');
  // A change that works (the token is remembered now): create group 9, then delete it.
  await page.fill('#group-id', '9');
  await page.click('#group-create');
  await confirmDialog(page);
  await page.locator('#groups-list .card[data-group="9"]').waitFor({ timeout: 10_000 });
  assert.ok((await page.locator('#group-error').isHidden()), 'no error after a good change');
  await page.locator('#groups-list .card[data-group="9"] button[data-action="delete-group"]').click();
  await confirmDialog(page);
  await page.locator('#groups-list .card[data-group="9"]').waitFor({ state: 'detached', timeout: 10_000 });
  log('group 9 created and deleted from the UI');

  // ---------------------------------------------------------------- migrations
  step = 'migrations';
  const probe = await api('GET', '/api/v1/migrations');
  await page.click('#nav a[data-page="migrations"]');
  if (probe.status !== 200) {
    await page.locator('#migrations-unavailable').waitFor({ state: 'visible' });
    log(`GET /api/v1/migrations answered ${probe.status}: migration steps skipped`);
    await shot(page, '04-migrations-unavailable.png');
  } else {
    await page.locator('#migration-form').waitFor({ state: 'visible' });
    // Bad input: the API's own error.
    const badSlotsText = await apiErrorText('POST', '/api/v1/migrations', { slots: 'abc', to_group: 2 });
    await page.fill('#mig-slots', 'abc');
    await page.selectOption('#mig-group', '2');
    await page.click('#mig-start');
    await confirmDialog(page);
    await page.locator('#migration-error').waitFor({ state: 'visible' });
    assert.equal((await page.textContent('#migration-error')).trim(), badSlotsText);
    log(`bad slot range: the UI shows "${badSlotsText}"`);
    // Slots 0-63 (group 1's) to group 2, chosen by dragging on the map.
    const mig = page.locator('#slotmap-mig .slot');
    assert.equal(await mig.count(), 1024);
    await mig.nth(0).hover();
    await page.mouse.down();
    await mig.nth(63).hover();
    await page.mouse.up();
    assert.equal(await page.inputValue('#mig-slots'), '0-63');
    await page.selectOption('#mig-group', '2');
    // Slowly at first (5 keys/s, waves of 16 slots), so that progress shows.
    await page.fill('#mig-wave', '16');
    await page.fill('#mig-keys', '5');
    const before = (probe.json || []).map((m) => m.id);
    await page.click('#mig-start');
    await confirmDialog(page);
    const card = page.locator('#migrations-list .migration').first();
    await page.waitForFunction((ids) => {
      const c = document.querySelector('#migrations-list .migration');
      return c && !ids.includes(Number(c.dataset.migration));
    }, before, { timeout: 15_000 });
    const id = await card.getAttribute('data-migration');
    log(`migration #${id} started from the UI`);
    // Progress: keys move while it runs.
    await page.waitForFunction((mid) => {
      const c = document.querySelector(`#migrations-list .migration[data-migration="${mid}"]`);
      const keys = c && Number((c.querySelector('[data-bar="keys"]').textContent.split(' keys')[0] || '').replace(/[^0-9]/g, ''));
      return c && c.querySelector('.state').textContent.startsWith('running') && keys > 0;
    }, id, { timeout: 30_000 });
    log(`running: ${await card.locator('[data-bar="keys"]').textContent()}; ${await card.locator('[data-bar="rate"]').textContent()}`);
    await shot(page, '04-migration-running.png');
    // The slot map shows the migrating slots with their target.
    await page.click('#nav a[data-page="slots"]');
    await page.waitForFunction(() => document.querySelectorAll('#slotmap-main .slot.migrating').length > 0, null, { timeout: 15_000 });
    // Slots end one by one, lowest first: hover the highest migrating one,
    // and again if it ended between the query and the hover.
    let tip = '';
    for (let attempt = 0; attempt < 10; attempt++) {
      const migrating = page.locator('#slotmap-main .slot.migrating');
      if ((await migrating.count()) === 0) break;
      await migrating.last().hover();
      tip = await page.textContent('#slot-tip');
      if (/group 1 → group 2 \(migrating\)/.test(tip)) break;
    }
    assert.match(tip, /group 1 → group 2 \(migrating\)/);
    log(`slot map: ${await page.locator('#slotmap-main .slot.migrating').count()} slots migrating`);
    await shot(page, '05-slot-map-migrating.png');
    await page.click('#nav a[data-page="migrations"]');
    // Pause, resume, then lift the rate limit, all from the UI.
    await card.locator('button[data-action="pause"]').click();
    await confirmDialog(page);
    await page.waitForFunction((mid) => document.querySelector(`.migration[data-migration="${mid}"] .state`).textContent.startsWith('paused'), id, { timeout: 15_000 });
    log('paused from the UI');
    await card.locator('button[data-action="resume"]').click();
    await confirmDialog(page);
    await page.waitForFunction((mid) => !document.querySelector(`.migration[data-migration="${mid}"] .state`).textContent.startsWith('paused'), id, { timeout: 15_000 });
    log('resumed from the UI');
    await card.locator('.rate-form input').first().fill('0');
    await card.locator('.rate-form button').click();
    await confirmDialog(page);
    await page.waitForFunction((mid) => {
      const c = document.querySelector(`#migrations-list .migration[data-migration="${mid}"]`);
      return c && c.querySelector('.state').textContent.startsWith('finished');
    }, id, { timeout: 120_000 });
    const slotsBar = await card.locator('[data-bar="slots"]').textContent();
    assert.match(slotsBar, /64 \/ 64 slots/);
    log(`migration #${id} finished: ${slotsBar}; ${await card.locator('[data-bar="keys"]').textContent()}`);
    const after = (await api('GET', '/api/v1/slots')).json.slots;
    assert.ok(after.slice(0, 64).every((s) => s.group === 2 && s.state === 'normal'), 'slots 0-63 belong to group 2');
    // The rebalance preview plans the way back.
    await page.click('#rebalance-preview');
    await page.locator('#rebalance-moves').waitFor({ timeout: 10_000 });
    log(`rebalance preview: ${(await page.textContent('#rebalance-plan')).replace(/\s+/g, ' ').slice(0, 160)}`);
    await shot(page, '06-migration-finished.png');
    await page.click('#nav a[data-page="slots"]');
    await page.waitForFunction(() => document.querySelector('#slotmap-main .slot[data-slot="0"]').dataset.group === '2');
    await shot(page, '07-slot-map-after.png');
  }

  step = 'checks';
  assert.deepEqual(problems, [], 'the page made no outside request and logged no error');
  await browser.close();
  log(`passed; screenshots in ${SHOTS}`);
}

main().catch((err) => {
  console.error(`[ui-test] FAILED at step "${step}": ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});
