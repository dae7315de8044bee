// Issue 16, events that add up: the Error view shows the failed uplinks the Debug view shows,
// dropped events are said in the list, the integrations list's counter follows an uplink
// within a second or two, the debug banner and its button, one 24-hour time format in charts
// with a second axis for wildly different ranges, and a phone-sized Events tab.
//
// The Rust test (console_events.rs) prepares: JSON_INTEGRATION_ID (two failed uplinks, debug
// "failures only"), BURST_INTEGRATION_ID (a burst far above the rate cap), ENDPOINT (the JSON
// integration's), CONVERTER_ID (the JSON converter).

import { env, run, login, coapPost, until, assert, start, PHONE, checkProblems, assertNoSidewaysScroll } from './lib.mjs';

const json = process.env.JSON_INTEGRATION_ID;
const burst = process.env.BURST_INTEGRATION_ID;
const endpoint = process.env.ENDPOINT;
const AMPM = /\b(am|pm)\b|\d(am|pm)\b/i;

async function eventType(page, label) {
  await page.getByLabel('Event type').selectOption({ label });
}

await run('events_ux', async ({ page }) => {
  // Record what uPlot draws on its canvases: its axis labels are not in the DOM.
  await page.addInitScript(() => {
    window.drawnTexts = [];
    const fillText = CanvasRenderingContext2D.prototype.fillText;
    CanvasRenderingContext2D.prototype.fillText = function (text, ...rest) {
      window.drawnTexts.push(String(text));
      return fillText.call(this, text, ...rest);
    };
  });
  await login(page);
  const rows = page.locator('.events tbody tr:not(:has(td.empty))');

  // 1. The debug state, where people look for events.
  await page.goto(`${env.base}/#/integrations/${json}/events`);
  const banner = page.locator('.debug-state');
  await banner.filter({ hasText: 'Debug: failures only — successful uplinks are not recorded' }).waitFor();

  // 2. The Error view shows the failed uplinks the Debug view shows as ERROR.
  await until('two debug rows', async () => (await rows.count()) === 2);
  const debugErrors = await page.locator('.events tbody .badge.err').count();
  assert(debugErrors === 2, `the Debug view shows two ERROR rows, got ${debugErrors}`);
  await eventType(page, 'Error');
  await page.locator('.events[data-event-type=ERROR]').waitFor();
  await until('two rows in the Error view', async () => (await rows.count()) === 2);
  const errorText = await page.locator('.events').textContent();
  assert(errorText.includes('not json'), `the failed payload in the Error view: ${errorText}`);
  assert(errorText.includes('SyntaxError'), `the converter's error in the Error view: ${errorText}`);
  assert(errorText.includes("Either 'deviceName' or 'assetName'"), `the output error in the Error view: ${errorText}`);
  // The converter's Error view has its own failure.
  await page.goto(`${env.base}/#/converters/${process.env.CONVERTER_ID}/events`);
  await eventType(page, 'Error');
  await until('the converter failure in its Error view', async () => (await rows.count()) === 1);
  // A converter has the banner and the button too.
  await banner.filter({ hasText: 'failures only' }).waitFor();
  await page.getByRole('button', { name: 'Record all messages for 15 min' }).click();
  await banner.filter({ hasText: /^Debug: all messages until \d\d:\d\d/ }).waitFor();

  // 3. The banner's button records all messages; an OK uplink then appears.
  await page.goto(`${env.base}/#/integrations/${json}/events`);
  await banner.filter({ hasText: 'failures only' }).waitFor();
  await page.getByRole('button', { name: 'Record all messages for 15 min' }).click();
  await banner.filter({ hasText: /^Debug: all messages until \d\d:\d\d/ }).waitFor();
  const bannerText = await banner.textContent();
  assert(!AMPM.test(bannerText), `24-hour time in the banner: ${bannerText}`);
  const saved = await page.evaluate(async (id) => {
    const r = await fetch(`/api/integration/${id}`, { headers: { 'X-Authorization': `Bearer ${sessionStorage.getItem('coapgate.token')}` } });
    return (await r.json()).debugSettings;
  }, json);
  assert(saved.allEnabled === true && saved.failuresEnabled === true, `saved: ${JSON.stringify(saved)}`);
  const left = saved.allEnabledUntil - Date.now();
  assert(left > 13 * 60000 && left <= 15 * 60000 + 5000, `about 15 minutes: ${left} ms`);
  coapPost(endpoint, '{"name":"CH-1","telemetry":{"temperature":21.5,"pressure":101325}}');
  await page.locator('.events tbody tr', { hasText: 'CH-1' }).locator('.badge.ok').first().waitFor();

  // 4. Long cells wrap between words, long tokens still break.
  const style = await page.locator('.events tbody td.wide').first().evaluate((td) => {
    const s = getComputedStyle(td.querySelector('code') || td);
    return { wordBreak: s.wordBreak, overflowWrap: s.overflowWrap };
  });
  assert(style.wordBreak === 'normal' && style.overflowWrap === 'anywhere', `word-boundary wrapping: ${JSON.stringify(style)}`);

  // 5. Dropped events are said in the list.
  await page.goto(`${env.base}/#/integrations/${burst}/events`);
  const notice = page.locator('.dropped-notice');
  await notice.filter({ hasText: /^\d+ events were dropped in this period \(rate cap of 100 per second/ }).waitFor();
  const dropped = Number((await notice.textContent()).split(' ')[0]);
  assert(dropped >= 100, `a burst of 400 drops at least 100: ${dropped}`);
  await page.goto(`${env.base}/#/integrations/${json}/events`);
  await banner.waitFor();
  await page.waitForTimeout(500);
  assert(await notice.isHidden(), 'no notice for an integration that dropped nothing');

  // 6. The list's counter follows an uplink within a second or two.
  await page.goto(`${env.base}/#/integrations`);
  const row = page.locator('table.data tbody tr', { hasText: 'json' });
  const counts = row.locator('.counts');
  await counts.filter({ hasText: /processed/ }).waitFor();
  const before = parseInt(await counts.textContent(), 10);
  await page.waitForTimeout(1200);
  const sent = Date.now();
  coapPost(endpoint, '{"name":"CH-1","telemetry":{"temperature":22.5,"pressure":101400}}');
  await until('the counter to go up', async () => parseInt(await counts.textContent(), 10) === before + 1, 2500);
  const took = Date.now() - sent;
  console.log(`counter followed the uplink in ${took} ms`);
  const reloads = await page.evaluate(() => performance.getEntriesByType('navigation').length);
  assert(reloads === 1, 'the list was not reloaded');

  // 7. The chart: 24-hour times, a second axis for pressure next to temperature.
  coapPost(endpoint, '{"name":"CH-1","telemetry":{"temperature":23.5,"pressure":101200}}');
  const device = await page.evaluate(async () => {
    const r = await fetch('/api/tenant/devices?deviceName=CH-1', { headers: { 'X-Authorization': `Bearer ${sessionStorage.getItem('coapgate.token')}` } });
    return (await r.json()).id.id;
  });
  await page.goto(`${env.base}/#/devices/${device}`);
  await page.locator('.chart-box .uplot canvas').first().waitFor();
  await until('three points per key', async () => /^6 points/.test(await page.locator('.chart-card .hint').last().textContent()));
  await page.locator('.chart-box[data-axes="2"]').waitFor();
  const texts = await page.evaluate(() => window.drawnTexts);
  const times = texts.filter((t) => /^\d\d:\d\d(:\d\d)?$/.test(t));
  assert(times.length >= 2, `24-hour tick labels on the time axis: ${JSON.stringify(texts)}`);
  assert(!texts.some((t) => AMPM.test(t)), `no am/pm on any axis: ${JSON.stringify(texts)}`);
  assert(texts.includes('pressure') && texts.includes('temperature'), `one axis label per scale: ${JSON.stringify(texts)}`);
  // Pressure ticks in the hundred thousands on one axis, temperature's tens on the other.
  assert(texts.some((t) => /^10[01],?\d{3}$/.test(t)) && texts.some((t) => /^2\d(\.\d+)?$/.test(t)),
    `both ranges have their own ticks: ${JSON.stringify(texts)}`);
  // The legend (cursor values) reads times as fmtTime does.
  const box = await page.locator('.chart-box .u-over').boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await page.mouse.move(box.x + box.width - 2, box.y + box.height / 2, { steps: 5 });
  const legendTime = page.locator('.chart-box .u-legend .u-series').first().locator('.u-value');
  await until('a time in the legend', async () => /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/.test(await legendTime.textContent()), 5000);
  assert(!AMPM.test(await legendTime.textContent()), 'legend time as fmtTime');
});

// 8. On a phone the Events tab (banner, notice, Error view) fits the width.
const phone = await start(PHONE);
try {
  await login(phone.page);
  await phone.page.goto(`${env.base}/#/integrations/${burst}/events`);
  await phone.page.locator('.dropped-notice:not([hidden])').waitFor();
  await phone.page.locator('.events tbody tr').first().waitFor();
  await assertNoSidewaysScroll(phone.page, 'the Events tab on a phone');
  await eventType(phone.page, 'Error');
  await phone.page.locator('.events[data-event-type=ERROR] tbody tr').first().waitFor();
  await assertNoSidewaysScroll(phone.page, 'the Error view on a phone');
  checkProblems(phone.problems);
  console.log('events_ux phone: OK');
} catch (e) {
  console.error(`events_ux phone: FAILED\n${e.stack || e}`);
  process.exitCode = 1;
} finally {
  await phone.close();
}
