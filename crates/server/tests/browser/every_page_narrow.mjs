// Every page of the console at 360 px wide (the narrowest phones in use): no page scrolls
// sideways, the menu opens and closes, and dialogs fit the screen. Tables may scroll inside
// their own box; the page around them may not.

import { env, run, login, assert, until, nav, assertNoSidewaysScroll } from './lib.mjs';

const NARROW = { width: 360, height: 740 };
const ids = {
  integration: process.env.INTEGRATION_ID,
  converter: process.env.CONVERTER_ID,
  device: process.env.DEVICE_ID,
  customer: process.env.CUSTOMER_ID,
};

/** Opens a console address and waits until its heading is drawn. */
async function visit(page, hash, heading) {
  await page.goto(`${env.base}/#${hash}`);
  await page.getByRole('heading', { name: heading, exact: true }).first().waitFor();
  await page.waitForTimeout(200);
  await assertNoSidewaysScroll(page, `${hash} at 360 px`);
}

/** Clicks each tab of the page and checks the width with it open. */
async function eachTab(page, hash) {
  for (const tab of await page.getByRole('tab').all()) {
    const name = await tab.textContent();
    await tab.click();
    await page.waitForTimeout(400);
    await assertNoSidewaysScroll(page, `${hash}, tab ${name}, at 360 px`);
  }
}

/** The open dialog lies within the screen. */
async function dialogFits(page, what) {
  const box = await page.locator('.dialog').last().boundingBox();
  assert(box && box.x >= 0 && box.x + box.width <= NARROW.width, `${what} fits 360 px: ${JSON.stringify(box)}`);
  await assertNoSidewaysScroll(page, `${what} at 360 px`);
}

await run('every_page_narrow', async ({ page }) => {
  await page.goto(`${env.base}/`);
  await assertNoSidewaysScroll(page, 'the login page at 360 px');
  await login(page);
  // The menu: folded, opened by its button, closed again by choosing a page.
  assert(!(await page.locator('nav.sidebar').isVisible()), 'the menu is folded');
  await page.locator('#nav-toggle').click();
  assert(await page.locator('#nav-toggle').getAttribute('aria-expanded') === 'true', 'the button says the menu is open');
  await assertNoSidewaysScroll(page, 'the open menu');
  await nav(page, 'Devices');
  await page.getByRole('heading', { name: 'Devices', exact: true }).waitFor();
  assert(!(await page.locator('nav.sidebar').isVisible()), 'choosing a page folds the menu');

  await visit(page, '/integrations', 'Integrations');
  await visit(page, '/integrations/new', 'Add integration');
  await page.locator('input[name=name]').fill('Narrow');
  for (let n = 0; n < 2; n++) {
    await page.locator('#wizard-next').click();
    await assertNoSidewaysScroll(page, `wizard step ${n + 2} at 360 px`);
  }
  await page.locator('#wizard-advanced').click();
  await assertNoSidewaysScroll(page, 'wizard advanced step at 360 px');
  // Leaving the typed wizard asks first (in a dialog that fits), then goes.
  await nav(page, 'Integrations');
  await page.locator('#confirm-ok').waitFor();
  await dialogFits(page, 'the unsaved-changes question');
  await page.locator('#confirm-ok').click();
  await page.getByRole('heading', { name: 'Integrations', exact: true }).waitFor();
  await visit(page, `/integrations/${ids.integration}`, 'CoAP Integration');
  await eachTab(page, `/integrations/${ids.integration}`);

  await visit(page, '/converters', 'Data converters');
  await visit(page, '/converters/new', 'Add data converter');
  await visit(page, `/converters/${ids.converter}`, 'CoAP Uplink Converter');
  await page.locator('#test-decoder').click();
  await page.locator('.dialog').waitFor();
  await dialogFits(page, 'the test dialog');
  await page.keyboard.press('Escape');
  await eachTab(page, `/converters/${ids.converter}`);

  await visit(page, '/devices', 'Devices');
  await visit(page, `/devices/${ids.device}`, 'SN-001');
  await until('the latest values', async () => (await page.locator('#latest-telemetry').textContent()).includes('temperature'));
  await eachTab(page, `/devices/${ids.device}`);
  await visit(page, '/assets', 'Assets');
  await visit(page, '/customers', 'Customers');
  if (ids.customer) {
    await visit(page, `/customers/${ids.customer}`, 'Narrow Customer');
    await eachTab(page, `/customers/${ids.customer}`);
  }
}, { viewport: NARROW });
