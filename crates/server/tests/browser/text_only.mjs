// Issue #7, "what it must show" 2: a device named `<img src=x onerror=alert(1)>` and a
// script-like payload and key render as text everywhere the console shows them: no element is
// made from them, no dialog fires, and the literal text is visible.

import { env, run, login, until, assert, nav } from './lib.mjs';

const NAME = '<img src=x onerror=alert(1)>';
const KEY = '<script>alert(2)</script>';
const PAYLOAD = process.env.PAYLOAD;

await run('text_only', async ({ page }) => {
  await login(page);
  await nav(page, 'Devices');
  const cell = page.getByRole('cell', { name: NAME, exact: true });
  await cell.waitFor();
  assert(await page.locator('#devices-table img').count() === 0, 'no <img> element made from the device name');
  await page.getByPlaceholder('Search devices').fill('<img');
  await until('the search to find the device', async () => (await page.locator('#devices-table tbody tr').count()) === 1
    && (await page.locator('#devices-table tbody td.name').first().textContent()) === NAME);
  await cell.click();
  await page.locator('h1.entity-name').filter({ hasText: NAME }).waitFor();
  assert(await page.locator('h1.entity-name').textContent() === NAME, 'the heading shows the literal name');
  await page.locator('#latest-telemetry td.key', { hasText: KEY }).waitFor();
  assert(await page.locator('#latest-telemetry td.key').evaluateAll((tds) => tds.map((t) => t.textContent)).then((keys) => keys.includes(KEY) && keys.includes('<b>bold</b>')),
    'telemetry keys shown literally');
  assert(await page.locator('#content script, #content b, #content img').count() === 0, 'no element made from device data');
  await page.locator('.chart-keys').getByText(KEY, { exact: true }).waitFor();

  // The integration's and the converter's events show the payload as text.
  await page.goto(`${env.base}/#/integrations/${process.env.INTEGRATION_ID}/events`);
  await page.locator('.events tbody tr').first().waitFor();
  await page.locator('.events tbody').getByText('<img src=x onerror=alert(1)>,default,<script>', { exact: false }).first().waitFor();
  await page.locator('.events tbody').getByRole('button', { name: 'Show In' }).first().click();
  assert((await page.locator('.dialog pre.code').textContent()).trim() === PAYLOAD, 'the In dialog shows the literal payload');
  await page.keyboard.press('Escape');
  await page.goto(`${env.base}/#/converters/${process.env.CONVERTER_ID}/events`);
  await page.locator('.events tbody').getByRole('button', { name: 'Show Out' }).first().click();
  const out = await page.locator('.dialog pre.code').textContent();
  assert(out.includes(`"deviceName": "${NAME}"`), `the Out dialog shows the literal name: ${out}`);
  assert(await page.locator('#content script, #content img, .dialog img, .dialog script').count() === 0, 'no element made from event data');
  await page.keyboard.press('Escape');
  // Give any injected handler a moment to fire; `run` fails on any dialog.
  await page.waitForTimeout(500);
  assert(await page.evaluate(() => document.querySelectorAll('img[src=x]').length) === 0, 'no img[src=x] anywhere');
});
