// The wizard offers the server's COAP_BASE_URL as the base URL, says where it came from, and
// builds the endpoint URL on it.

import { env, run, login, until, assert } from './lib.mjs';

const expected = process.env.EXPECTED_BASE_URL;

await run('wizard_base_url', async ({ page }) => {
  await login(page);
  await page.goto(`${env.base}/#/integrations/new`);
  await page.locator('input[name=name]').fill('Base URL check');
  await page.locator('#wizard-next').click();
  await page.locator('#wizard-next').click();
  await until('the configured base URL', async () => await page.locator('input[name=baseUrl]').inputValue() === expected);
  const source = await page.locator('#base-url-source').textContent();
  assert(source.includes("server's COAP_BASE_URL"), `the wizard says the base URL is the server's setting: ${source}`);
  const endpoint = await page.locator('#coap-endpoint').inputValue();
  assert(endpoint.startsWith(`${expected}/i/`), `the endpoint URL is built on it: ${endpoint}`);
});
