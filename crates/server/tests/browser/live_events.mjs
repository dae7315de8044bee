// Issue #7, "what it must show" 4 (second half): new events and new telemetry appear while the
// page stays open, without a reload.

import { env, run, login, coapPost, until, assert } from './lib.mjs';

await run('live_events', async ({ page }) => {
  await login(page);
  const rows = (text) => page.locator('.events tbody tr').filter({ hasText: text });

  await page.goto(`${env.base}/#/integrations/${process.env.INTEGRATION_ID}/events`);
  await page.locator('.events tbody td.empty', { hasText: 'No events yet' }).waitFor();
  await page.evaluate(() => { window.stillTheSamePage = true; });
  coapPost(process.env.ENDPOINT, 'LIVE-1,default,temperature,21.5');
  await rows('LIVE-1').first().waitFor();
  coapPost(process.env.ENDPOINT, 'LIVE-2,default,temperature,22.5');
  await rows('LIVE-2').first().waitFor();
  // Newest first.
  const firstRow = await page.locator('.events tbody tr').first().textContent();
  assert(firstRow.includes('LIVE-2'), `newest event first: ${firstRow}`);
  // Auto-refresh off: nothing new until Refresh is pressed.
  await page.locator('input[name=autoRefresh]').uncheck();
  coapPost(process.env.ENDPOINT, 'LIVE-3,default,temperature,23.5');
  await page.waitForTimeout(3000);
  assert(await rows('LIVE-3').count() === 0, 'no update with auto-refresh off');
  await page.getByRole('button', { name: 'Refresh', exact: true }).click();
  await rows('LIVE-3').first().waitFor();

  // The converter's events, and a device's latest telemetry, update the same way.
  await page.goto(`${env.base}/#/converters/${process.env.CONVERTER_ID}/events`);
  await rows('LIVE-3').first().waitFor();
  coapPost(process.env.ENDPOINT, 'LIVE-4,default,temperature,24.5');
  await rows('LIVE-4').first().waitFor();
  await page.goto(`${env.base}/#/devices`);
  await page.getByRole('cell', { name: 'LIVE-1', exact: true }).click();
  await page.locator('#latest-telemetry tr[data-key=temperature] td.value', { hasText: '21.5' }).waitFor();
  coapPost(process.env.ENDPOINT, 'LIVE-1,default,temperature,30.5');
  await page.locator('#latest-telemetry tr[data-key=temperature] td.value', { hasText: '30.5' }).waitFor();
  assert(await page.evaluate(() => window.stillTheSamePage === true), 'the page was never reloaded');

  // An access token the server refuses is replaced with the refresh token, without a new login.
  await page.evaluate(() => sessionStorage.setItem('coapgate.token', 'expired.or.forged'));
  await page.goto(`${env.base}/#/converters`);
  await page.getByRole('cell', { name: 'CoAP Uplink Converter' }).waitFor();
  const token = await page.evaluate(() => sessionStorage.getItem('coapgate.token'));
  assert(token && token !== 'expired.or.forged', 'a fresh access token from the refresh token');
  // Without a valid refresh token, the console goes back to the login page.
  await page.evaluate(() => { sessionStorage.setItem('coapgate.token', 'x'); sessionStorage.setItem('coapgate.refreshToken', 'y'); });
  await page.goto(`${env.base}/#/devices`);
  await page.getByLabel('Username (email)').waitFor();
}, { allowErrors: [/status of 40[01]/] }); // the refused tokens
