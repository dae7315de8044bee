// Issue 14 (and issue 16 item 3): a remote integration in the console. The list and the details
// page show whether its `coapgate remote` is linked (service id, address, last seen, backlog,
// rate, totals), refreshed every 2 s while the page is open; the editor shows the command that
// really starts a remote (environment variables, with this server's RPC port) and regenerates
// the secret, which ends the linked remote's link. With remotes off on the server
// (REMOTE_OFF=1), the editor says so instead of showing a command.

import { env, run, login, until, assert, nav } from './lib.mjs';

const ID = process.env.INTEGRATION_ID;
const NAME = process.env.INTEGRATION_NAME;
const KEY = process.env.ROUTING_KEY;
const SECRET = process.env.SECRET;
const RPC_PORT = process.env.RPC_PORT;
const OFF = process.env.REMOTE_OFF === '1';

/** The integration as the API holds it, with the console's own token. */
async function stored(page) {
  return page.evaluate(async (id) => {
    const r = await fetch(`/api/integration/${id}`, { headers: { 'X-Authorization': `Bearer ${sessionStorage.getItem('coapgate.token')}` } });
    return r.json();
  }, ID);
}

await run(OFF ? 'remote_off' : 'remote_status', async ({ page }) => {
  const statusGets = [];
  page.on('request', (r) => {
    if (r.method() === 'GET' && new URL(r.url()).pathname === `/api/integration/${ID}`) statusGets.push(Date.now());
  });
  await login(page);
  const row = page.locator('table.data tbody tr').filter({ hasText: NAME });

  if (OFF) {
    // Enabled, but no remote can ever link: it must not look like a working integration.
    await row.locator('.remote-badge', { hasText: 'Remote: not connected' }).waitFor();
    assert(await row.locator('.badge.ok').count() === 0, 'no green badge for an enabled remote integration without its remote');
    await row.getByText('Enabled, no remote').waitFor();
    await page.getByRole('cell', { name: NAME, exact: true }).click();
    const off = page.locator('#remote-off');
    await off.waitFor();
    assert(await off.textContent() === 'Remote integrations are off on this server: start it with INTEGRATIONS_RPC_ENABLED=true',
      `the box says plainly that remotes are off: ${await off.textContent()}`);
    assert(await page.locator('#remote-command').count() === 0, 'no command when nothing could run it');
    await page.locator('#remote-status', { hasText: 'No remote has linked since the server started.' }).waitFor();
    return;
  }

  // The list: linked, with the remote's service id.
  await row.locator('.remote-badge.ok', { hasText: 'Remote: connected (edge-test)' }).waitFor();
  await row.locator('.badge.ok', { hasText: /^Enabled$/ }).waitFor();

  // The details page: the status panel.
  await page.getByRole('cell', { name: NAME, exact: true }).click();
  const panel = page.locator('#remote-status');
  const cell = (key) => panel.locator(`tr[data-key=${key}] td`);
  await cell('link').filter({ hasText: /^Connected$/ }).waitFor();
  assert(await cell('serviceId').textContent() === 'edge-test', `service id: ${await cell('serviceId').textContent()}`);
  assert(/^127\.0\.0\.1:\d+$/.test(await cell('address').textContent()), `address: ${await cell('address').textContent()}`);
  // Relative and absolute, 24-hour time.
  const time = /^\d+ (s|min|h) ago \(\d{4}-\d\d-\d\d ([01]\d|2[0-3]):[0-5]\d:[0-5]\d\)$/;
  for (const key of ['connectedSince', 'lastSeen']) {
    const text = await cell(key).textContent();
    assert(time.test(text), `${key} as "12 s ago (2026-01-01 13:00:00)": ${text}`);
  }
  assert(/^\d+ records, [\d.]+ (B|KiB|MiB|GiB)( of [\d.]+ (B|KiB|MiB|GiB))?$/.test(await cell('backlog').textContent()), `backlog: ${await cell('backlog').textContent()}`);
  assert(/^[\d.]+ uplinks\/s$/.test(await cell('rate').textContent()), `rate: ${await cell('rate').textContent()}`);
  assert(/^\d+ \/ \d+ \/ \d+$/.test(await cell('totals').textContent()), `totals: ${await cell('totals').textContent()}`);
  assert(await cell('lastError').textContent() === '—', `no error yet: ${await cell('lastError').textContent()}`);
  await page.locator('.title-row .remote-badge', { hasText: 'Remote: connected (edge-test)' }).waitFor();
  // The endpoint URL is not where this integration's devices send.
  await page.locator('#remote-endpoint-hint', { hasText: 'this server answers them 4.04' }).waitFor();

  // It refreshes itself while the page is open: a status request about every 2 s.
  const before = statusGets.length;
  await page.waitForTimeout(4500);
  assert(statusGets.length - before >= 2, `the status was polled while the page was open (${statusGets.length - before} requests in 4.5 s)`);

  // The command that really starts a remote: environment variables, this server's RPC port, the
  // secret masked until shown.
  const command = page.locator('#remote-command');
  await command.waitFor();
  const masked = await command.textContent();
  for (const part of [`INTEGRATION_ROUTING_KEY=${KEY}`, 'INTEGRATION_SECRET=', 'RPC_HOST=127.0.0.1', `RPC_PORT=${RPC_PORT}`]) {
    assert(masked.includes(part), `the command has ${part}: ${masked}`);
  }
  assert(masked.endsWith(' coapgate remote'), `the command ends with coapgate remote: ${masked}`);
  assert(!masked.includes(SECRET), 'the secret is masked until shown');
  assert(!masked.includes('--') && !masked.includes('RPC_SSL_ENABLED'), `no made-up flags, no TLS on this server: ${masked}`);
  assert(await command.evaluate((el) => el.scrollWidth <= el.clientWidth + 1), 'the command wraps instead of overflowing');
  await page.locator('#show-secret').click();
  await until('the command with the secret', async () => (await command.textContent()).includes(`INTEGRATION_SECRET=${SECRET} `));

  // Regenerate secret: asked first, then saved; the linked remote is disconnected.
  await page.locator('#regenerate-secret').click();
  const confirm = page.getByRole('alertdialog', { name: 'Regenerate secret' });
  await confirm.getByText('disconnected').waitFor();
  await confirm.getByRole('button', { name: 'Cancel' }).click();
  assert((await stored(page)).secret === SECRET, 'Cancel keeps the secret');
  await page.locator('#regenerate-secret').click();
  await confirm.locator('#confirm-ok').click();
  await page.locator('.toast', { hasText: 'New secret saved' }).waitFor();
  const fresh = await page.locator('input[name=secret]').inputValue();
  assert(/^[a-z0-9]{20}$/.test(fresh) && fresh !== SECRET, `a new secret of 20 lower-case letters and digits: ${fresh}`);
  assert((await stored(page)).secret === fresh, 'the new secret is saved');
  assert((await command.textContent()).includes(`INTEGRATION_SECRET=${fresh} `), 'the command shows the new secret');
  await cell('link').filter({ hasText: /^Not connected$/ }).waitFor({ timeout: 20000 });
  await page.locator('.title-row .remote-badge', { hasText: /^Remote: (not connected|refused — )/ }).waitFor();
  await page.locator('#integration-status', { hasText: 'Enabled, no remote' }).waitFor();
  // The remote retries with the old secret: its refusal is shown with its time.
  await cell('lastError').filter({ hasText: /wrong secret|regenerated/ }).waitFor({ timeout: 20000 });

  // Leaving the page stops the refresh.
  await nav(page, 'Integrations');
  await row.locator('.remote-badge', { hasText: /^Remote: (not connected|refused — )/ }).waitFor();
  const left = statusGets.length;
  await page.waitForTimeout(4500);
  assert(statusGets.length === left, `no status request after leaving the page (${statusGets.length - left})`);
});
