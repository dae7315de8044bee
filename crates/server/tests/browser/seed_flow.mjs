// The seed tutorial followed literally through the console (issues 7 and 16): a person logs in,
// creates the converter and the integration, copies the endpoint URL the wizard offers (the
// server runs CoAP on a non-default port), sends the seed uplink with coap-client-notls, and
// sees SN-001 with temperature 25.7 and humidity 69, the OK uplink event and the converter's In
// and Out, without touching the debug settings. VIEWPORT=phone runs the same at 390×844, where
// no page may scroll sideways. Takes the README's screenshots when asked.

import { env, run, login, shot as desktopShot, coapPost, until, assert, nav, assertNoSidewaysScroll, PHONE } from './lib.mjs';

const phone = process.env.VIEWPORT === 'phone';
const shot = (page, name) => desktopShot(page, phone ? `${name}-phone` : name);
/** Whether a security mode cannot be chosen (Playwright's isDisabled ignores options). */
const optionDisabled = (page, mode) => page.locator(`select[name=securityMode] option[value=${mode}]`).evaluate((o) => o.disabled);
/** Every page of the flow must fit the width of the screen. */
const fits = (page, where) => assertNoSidewaysScroll(page, `${where} at ${phone ? '390' : '1440'} px`);

// The decoder exactly as the tutorial prints it.
const SEED_DECODER = `/** Decoder **/
// decode payload to string
var strArray = decodeToString(payload);
var payloadArray = strArray.replaceAll("\\"", "").split(',');
var telemetryPayload = {};
for (var i = 2; i < payloadArray.length; i = i + 2) {
var telemetryKey = payloadArray[i];
var telemetryValue = parseFloat(payloadArray[i + 1]);
telemetryPayload[telemetryKey] = telemetryValue;
}
// Result object with device attributes/telemetry data
var result = {
deviceName: payloadArray[0],
deviceType: payloadArray[1],
telemetry: telemetryPayload,
attributes: {}
};
/** Helper functions 'decodeToString' and 'decodeToJson' are already built-in **/
return result;`;
const SEED_PAYLOAD = 'SN-001,default,temperature,25.7,humidity,69';

await run('seed_flow', async ({ page }) => {
  // Login.
  await page.goto(env.base + '/');
  await page.getByLabel('Username (email)').waitFor();
  await shot(page, 'login');
  await fits(page, 'the login page');
  await login(page);
  await fits(page, 'the integrations list');
  if (phone) {
    // The navigation is folded behind the Menu button, and Log out is on screen.
    assert(!(await page.locator('nav.sidebar').isVisible()), 'the sidebar is folded on a phone');
    const box = await page.locator('#logout').boundingBox();
    assert(box && box.x >= 0 && box.x + box.width <= PHONE.width, `Log out is on screen, at ${JSON.stringify(box)}`);
  }

  // Integrations center → Data converters → Add data converter.
  await nav(page, 'Data converters');
  await page.getByRole('heading', { name: 'Data converters' }).waitFor();
  await page.locator('#add-converter').click();
  await page.locator('input[name=converterName]').fill('CoAP Uplink Converter');
  await page.locator('select[name=scriptLang]').selectOption('JS');
  // Paste the decoder into the code editor, replacing the template.
  await page.locator('#decoder-editor .CodeMirror').click();
  await page.keyboard.press('Control+A');
  await page.keyboard.insertText(SEED_DECODER);
  const editorText = await page.locator('#decoder-editor .CodeMirror').evaluate((el) => el.CodeMirror.getValue());
  assert(editorText === SEED_DECODER, `the editor holds the pasted decoder, got:\n${editorText}`);
  assert(await page.locator('#decoder-editor .cm-keyword').count() > 0, 'the decoder is highlighted as JavaScript');
  // A new converter records all messages for 15 minutes, so the tutorial's events show up.
  assert(await page.locator('input[name=debugAll]').isChecked(), 'a new converter has debug "all messages" on');
  await fits(page, 'the converter editor');

  // Test payload decoder.
  await page.locator('#test-decoder').click();
  await page.locator('select[name=payloadType]').selectOption('TEXT');
  await page.locator('textarea[name=payload]').fill(SEED_PAYLOAD);
  await page.locator('#run-test').click();
  const output = await until('the decoder test output', async () => {
    const t = await page.locator('#test-output').textContent();
    return t && t.includes('SN-001') ? t : null;
  });
  const decoded = JSON.parse(output);
  assert(decoded.deviceName === 'SN-001' && decoded.telemetry.temperature === 25.7 && decoded.telemetry.humidity === 69, `test output ${output}`);
  // Hex input of the same payload gives the same output; a broken script shows its error.
  await page.locator('select[name=payloadType]').selectOption('HEX');
  await page.locator('textarea[name=payload]').fill(Buffer.from(SEED_PAYLOAD).toString('hex'));
  await page.locator('#run-test').click();
  await until('hex payload decoded', async () => (await page.locator('#test-output').textContent()).includes('"humidity": 69'));
  await page.locator('select[name=payloadType]').selectOption('TEXT');
  await page.locator('textarea[name=payload]').fill(SEED_PAYLOAD);
  await page.locator('#run-test').click();
  await until('text payload decoded again', async () => (await page.locator('#test-output').textContent()).includes('SN-001'));
  await fits(page, 'the test dialog');
  const dialogBox = await page.locator('.dialog').boundingBox();
  assert(dialogBox.x >= 0 && dialogBox.x + dialogBox.width <= (phone ? PHONE.width : 1440), `the test dialog fits the screen: ${JSON.stringify(dialogBox)}`);
  await shot(page, 'converter-test-dialog');
  await page.keyboard.press('Escape');
  await page.locator('#save-converter').click();
  await page.waitForURL(/#\/converters\/[0-9a-f-]{36}$/);
  const converterUrl = page.url();
  await page.getByRole('tab', { name: 'Details' }).waitFor();

  await nav(page, 'Data converters');
  await page.getByRole('cell', { name: 'CoAP Uplink Converter' }).waitFor();
  await shot(page, 'converters');

  // Integrations → Add integration: the wizard of the tutorial.
  await nav(page, 'Integrations');
  await page.locator('#add-integration').click();
  await page.locator('select[name=integrationType]').selectOption('COAP');
  await page.locator('input[name=name]').fill('CoAP Integration');
  assert(await page.locator('input[name=enabled]').isChecked(), 'Enable integration is on by default');
  assert(await page.locator('input[name=allowCreateDevicesOrAssets]').isChecked(), 'Allow create devices is on by default');
  assert(await page.locator('input[name=debugAll]').isChecked(), 'a new integration has debug "all messages" on');
  await fits(page, 'the wizard');
  await page.locator('#wizard-next').click();
  await page.locator('#converter-existing').click();
  await page.locator('select[name=converter]').selectOption({ label: 'CoAP Uplink Converter' });
  await page.locator('#wizard-next').click();
  // Connection: the base URL is the server's view: no COAP_BASE_URL here, so the host this browser
  // used with the port CoAP listens on (not 5683), and the wizard says so.
  assert(await page.locator('select[name=securityMode]').inputValue() === 'NO_SECURE', 'security mode defaults to NO SECURE');
  const host = new URL(env.base).hostname;
  await until('the base URL from the server', async () => await page.locator('input[name=baseUrl]').inputValue() === `coap://${host}:${env.coapPort}`);
  const source = await page.locator('#base-url-source').textContent();
  assert(source.includes(`port ${env.coapPort}`) && source.includes('COAP_BASE_URL'), `the wizard says where the base URL comes from: ${source}`);
  // The DTLS endpoint is off on this server: DTLS and Mixed are marked unavailable.
  assert(await optionDisabled(page, 'DTLS'), 'DTLS is unavailable');
  assert(await optionDisabled(page, 'MIXED'), 'Mixed is unavailable');
  assert(await page.locator('#dtls-off').isVisible(), 'the wizard says why');
  const preview = await page.locator('#coap-endpoint').inputValue();
  assert(new RegExp(`^coap://${host.replace(/\./g, '\\.')}:${env.coapPort}/i/[0-9a-f-]{36}$`).test(preview), `endpoint preview ${preview}`);
  await fits(page, 'the wizard\'s connection step');
  // Execute remotely: key shown, secret hidden until asked for.
  await page.locator('input[name=remote]').check();
  assert(await page.locator('input[name=secret]').getAttribute('type') === 'password', 'the secret is hidden');
  await page.locator('#show-secret').click();
  assert(await page.locator('input[name=secret]').getAttribute('type') === 'text', 'the secret shows when asked');
  assert((await page.locator('input[name=secret]').inputValue()).length === 20, 'a 20-character secret');
  await page.locator('#show-secret').click();
  // A remote runs its own DTLS endpoint: the choice is open again while Execute remotely is on.
  assert(!(await optionDisabled(page, 'DTLS')), 'DTLS is available for a remote');
  await fits(page, 'the remote settings');
  await shot(page, 'integration-wizard');
  await page.locator('input[name=remote]').uncheck();
  assert(await optionDisabled(page, 'DTLS'), 'DTLS is unavailable again');
  // Advanced settings: description and a metadata row.
  await page.locator('#wizard-advanced').click();
  await page.locator('textarea[name=description]').fill('The seed tutorial');
  await page.locator('section[data-step=advanced]').getByRole('button', { name: 'Add' }).click();
  await page.locator('.kv-key').last().fill('site');
  await page.locator('.kv-value').last().fill('lab');
  await page.locator('#wizard-add').click();
  await page.waitForURL(/#\/integrations\/[0-9a-f-]{36}$/);
  const integrationUrl = page.url();
  await fits(page, 'the integration page');

  // The endpoint URL as the server saved it, copied with the copy button.
  const endpoint = await page.locator('#saved-endpoint').inputValue();
  assert(endpoint === preview, `saved endpoint ${endpoint} is the previewed one ${preview}`);
  await page.getByRole('button', { name: 'Copy CoAP endpoint URL' }).click();
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  assert(copied === endpoint, `clipboard holds the endpoint, got ${copied}`);

  // The device sends the seed uplink.
  coapPost(copied, SEED_PAYLOAD);

  // Entities → Devices: SN-001 with its telemetry.
  await nav(page, 'Devices');
  await page.getByRole('cell', { name: 'SN-001', exact: true }).waitFor();
  await fits(page, 'the device list');
  await shot(page, 'devices');
  await page.getByPlaceholder('Search devices').fill('SN-001');
  await page.getByRole('cell', { name: 'SN-001', exact: true }).click();
  await page.getByRole('heading', { name: 'SN-001' }).waitFor();
  await page.getByRole('tab', { name: 'Latest telemetry' }).click();
  await page.locator('#latest-telemetry tr[data-key=temperature] td.value', { hasText: '25.7' }).waitFor();
  await page.locator('#latest-telemetry tr[data-key=humidity] td.value', { hasText: '69' }).waitFor();
  assert(await page.locator('#latest-telemetry tr[data-key=temperature] td.value').textContent() === '25.7', 'temperature 25.7');
  assert(await page.locator('#latest-telemetry tr[data-key=humidity] td.value').textContent() === '69', 'humidity 69');
  await page.locator('.chart-box .uplot canvas').waitFor();
  // More readings so the chart has lines; the latest values follow without a reload.
  for (const [t, hum] of [[26.4, 66], [25.9, 67], [26.8, 64], [27.1, 63]]) {
    coapPost(copied, `SN-001,default,temperature,${t},humidity,${hum}`);
    await page.waitForTimeout(700);
  }
  await page.locator('#latest-telemetry tr[data-key=temperature] td.value', { hasText: '27.1' }).waitFor();
  await page.locator('select[name=range]').selectOption('300000');
  await until('ten points in the chart', async () => /^10 points/.test(await page.locator('.chart-card .hint').last().textContent()));
  await page.locator('select[name=range]').selectOption('custom');
  await page.locator('.custom-range').waitFor();
  await page.locator('select[name=range]').selectOption('60000');
  await until('the last minute in the chart', async () => /^10 points/.test(await page.locator('.chart-card .hint').last().textContent()));
  await page.locator('.chart-box .uplot canvas').waitFor();
  await fits(page, 'the device telemetry');
  await shot(page, 'device-telemetry');
  await page.getByRole('tab', { name: 'Attributes' }).click();
  await page.locator('#attributes').waitFor();

  // The integration's Events tab: the OK uplink event.
  await page.goto(integrationUrl + '/events');
  const okRow = page.locator('.events tbody tr', { has: page.locator('.badge.ok', { hasText: 'OK' }) }).filter({ hasText: 'SN-001' });
  await okRow.first().waitFor();
  assert(await page.locator('.events tbody tr').filter({ hasText: SEED_PAYLOAD }).count() === 1, 'the seed payload is the In of one event');
  await fits(page, 'the integration events');
  await shot(page, 'integration-events');
  await page.locator('select[name=eventType]').selectOption('LC_EVENT');
  await page.locator('.events tbody tr', { hasText: 'STARTED' }).first().waitFor();
  await page.locator('select[name=eventType]').selectOption('DEBUG_INTEGRATION');

  // The converter's Events tab: In and Out.
  await page.goto(converterUrl + '/events');
  const row = page.locator('.events tbody tr').filter({ hasText: SEED_PAYLOAD });
  await row.first().waitFor();
  await row.first().getByRole('button', { name: 'Show Out' }).click();
  const out = JSON.parse(await page.locator('.dialog pre.code').textContent());
  const first = Array.isArray(out) ? out[0] : out;
  assert(JSON.stringify(first).includes('SN-001') && JSON.stringify(first).includes('25.7'), `converter Out ${JSON.stringify(out)}`);
  await page.keyboard.press('Escape');
  await fits(page, 'the converter events');
  await shot(page, 'converter-events');

  // Logout leaves the token behind.
  await page.locator('#logout').click();
  await page.getByLabel('Username (email)').waitFor();
  assert(await page.evaluate(() => sessionStorage.getItem('coapgate.token')) === null, 'logout forgets the token');
}, { viewport: phone ? PHONE : undefined });
