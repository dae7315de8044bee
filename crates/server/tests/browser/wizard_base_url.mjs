// The wizard offers the server's COAP_BASE_URL as the base URL, says where it came from, and
// builds the endpoint URL on it; required fields are flagged next to themselves, and typed
// settings are not lost to a stray click in the menu.

import { env, run, login, until, assert } from './lib.mjs';

const expected = process.env.EXPECTED_BASE_URL;

await run('wizard_base_url', async ({ page }) => {
  await login(page);
  await page.goto(`${env.base}/#/integrations/new`);
  // Next without a name: the message is next to the field, and the wizard stays on step 1.
  await page.locator('#wizard-next').click();
  const name = page.locator('input[name=name]');
  assert(await name.getAttribute('aria-invalid') === 'true', 'the empty name is marked invalid');
  const nameMessage = await page.locator(`#${await name.getAttribute('aria-describedby')}`).textContent();
  assert(nameMessage === 'Name is required', `the message next to the name: ${nameMessage}`);
  assert(await page.locator('section[data-step=basic]').isVisible(), 'still on the first step');
  await name.fill('Base URL check');
  assert(await name.getAttribute('aria-invalid') !== 'true', 'typing clears the mark');
  await page.locator('#wizard-next').click();
  // No converter exists, so the wizard creates one; Add without its name flags that field.
  await page.locator('#wizard-next').click();
  await page.locator('#wizard-add').click();
  await page.locator('section[data-step=converter]').waitFor();
  const converterName = page.locator('input[name=converterName]');
  await until('the converter name flagged', async () => await converterName.getAttribute('aria-invalid') === 'true');
  assert(await converterName.evaluate((el) => el === document.activeElement), 'the flagged field has the focus');
  await page.locator('#wizard-next').click();
  await until('the configured base URL', async () => await page.locator('input[name=baseUrl]').inputValue() === expected);
  const source = await page.locator('#base-url-source').textContent();
  assert(source.includes("server's COAP_BASE_URL"), `the wizard says the base URL is the server's setting: ${source}`);
  const endpoint = await page.locator('#coap-endpoint').inputValue();
  assert(endpoint.startsWith(`${expected}/i/`), `the endpoint URL is built on it: ${endpoint}`);
  // A click in the menu asks before the typed settings are lost; Stay keeps them.
  await page.locator('nav.sidebar').getByRole('link', { name: 'Devices', exact: true }).click();
  const ask = page.getByRole('alertdialog', { name: 'Leave without saving?' });
  await ask.waitFor();
  await ask.locator('#confirm-cancel').click();
  assert(await page.locator('input[name=name]').inputValue() === 'Base URL check', 'Stay keeps the wizard as it was');
  assert(page.url().endsWith('#/integrations/new'), `still in the wizard: ${page.url()}`);
});
