// Issue 17: a device page's latest values arrive over the WebSocket API as they are stored — the
// page subscribes once and stops polling — and without a reload.

import { env, run, login, coapPost, until, assert } from './lib.mjs';

await run('live_telemetry', async ({ page }) => {
  const sockets = [];
  page.on('websocket', (ws) => sockets.push(ws.url()));
  let latestPolls = 0;
  page.on('request', (request) => {
    const url = new URL(request.url());
    if (url.pathname.endsWith('/values/timeseries') && !url.searchParams.has('startTs')) latestPolls += 1;
  });
  await login(page);
  await page.goto(`${env.base}/#/devices/${process.env.DEVICE_ID}`);
  const value = (key) => page.locator(`#latest-telemetry tr[data-key=${key}] td.value`);
  await value('temperature').filter({ hasText: '25.7' }).waitFor();
  await until('the WebSocket subscription', () => sockets.some((url) => new URL(url).pathname === '/api/ws'));
  await page.evaluate(() => { window.stillTheSamePage = true; });
  const polls = latestPolls;

  coapPost(process.env.ENDPOINT, 'SN-001,default,temperature,31.5,pressure,1013');
  await value('temperature').filter({ hasText: '31.5' }).waitFor();
  await value('pressure').filter({ hasText: '1013' }).waitFor();
  // Longer than the old 3 s polling period: nothing polled the latest values meanwhile.
  await page.waitForTimeout(3500);
  assert(latestPolls === polls, `the latest values were polled ${latestPolls - polls} times while the socket was open`);
  assert(await page.evaluate(() => window.stillTheSamePage === true), 'the page was never reloaded');
});
