// Users as a tenant administrator invites one without a mail server: Security → Users → Add user
// (a customer user of the customer the Rust test made), the activation link shown with a Copy
// button, the link opened in a new page where the user sets a password; then the user logs in
// and sees only what a customer user may: its customer's device (not the tenant's other one),
// no Integrations, Converters, Customers or Users. Back as the administrator: the user is
// active, is disabled, and is deleted after an in-page confirmation. At 360 px the Users page,
// its dialogs and the customer user's pages do not scroll sideways.

import { run, login, nav, assert, until, assertNoSidewaysScroll, shot, env } from './lib.mjs';

const CUSTOMER = process.env.CUSTOMER_TITLE;
const CUSTOMER_ID = process.env.CUSTOMER_ID;
const MINE = process.env.MINE_DEVICE;
const OTHER = process.env.OTHER_DEVICE;
const EMAIL = 'ann@acme.example';
const PASSWORD = 'ann-password-1';
const NARROW = { width: 360, height: 740 };

const row = (page, email) => page.locator('#users-table tbody tr', { hasText: email });

await run('users', async ({ context, page, problems }) => {
  await login(page);

  // ---- the Users page, and a customer user added with its activation link
  await nav(page, 'Users');
  await page.getByRole('heading', { name: 'Users', exact: true }).waitFor();
  await row(page, env.username).locator('.badge', { hasText: 'Active' }).waitFor();
  await page.locator('#add-user').click();
  const dialog = page.getByRole('dialog');
  await dialog.getByRole('button', { name: 'Add', exact: true }).click();
  await dialog.locator('.field-error', { hasText: 'Email is required' }).waitFor();
  await dialog.getByLabel('Email *').fill(EMAIL);
  await dialog.getByLabel('First name').fill('Ann');
  assert(await dialog.getByLabel('Authority').inputValue() === 'CUSTOMER_USER', 'a customer user by default');
  await dialog.locator('select[name=customer] option', { hasText: CUSTOMER }).waitFor({ state: 'attached' });
  await dialog.locator('select[name=customer]').selectOption({ label: CUSTOMER });
  await dialog.getByRole('button', { name: 'Add', exact: true }).click();
  const linkDialog = page.getByRole('dialog', { name: 'Activation link' });
  const link = (await linkDialog.locator('#activation-link').textContent()).trim();
  assert(link.startsWith(`${env.base}/api/noauth/activate?activateToken=`), `the link: ${link}`);
  await linkDialog.locator('#copy-link').click();
  assert(await page.evaluate(() => navigator.clipboard.readText()) === link, 'Copy put the link on the clipboard');
  await shot(page, 'users-activation-link');
  await linkDialog.getByRole('button', { name: 'Done' }).click();
  await row(page, EMAIL).locator('.badge', { hasText: 'Pending activation' }).waitFor();
  await row(page, EMAIL).locator('a', { hasText: CUSTOMER }).waitFor();

  // The customer's own Users tab lists the user too.
  await page.goto(`${env.base}/#/customers/${CUSTOMER_ID}`);
  await page.getByRole('tab', { name: 'Users' }).click();
  await row(page, EMAIL).waitFor();

  // ---- the invited user, in a page of its own (its own session), sets a password
  const invited = await context.newPage();
  invited.on('pageerror', (e) => problems.errors.push(`invited page error: ${e.message}`));
  invited.on('console', (m) => { if (m.type() === 'error') problems.errors.push(`invited console error: ${m.text()}`); });
  invited.on('dialog', async (d) => { problems.dialogs.push(`${d.type()}: ${d.message()}`); await d.dismiss(); });
  await invited.goto(link);
  await invited.getByRole('heading', { name: 'Set your password' }).waitFor();
  assert(!invited.url().includes('/api/'), `the link leads to the console: ${invited.url()}`);
  await invited.getByLabel('New password').fill(PASSWORD);
  await invited.getByLabel('Repeat the password').fill('something else');
  await invited.getByRole('button', { name: 'Set password' }).click();
  await invited.locator('.error', { hasText: 'The two passwords differ' }).waitFor();
  await invited.getByLabel('Repeat the password').fill(PASSWORD);
  await invited.getByRole('button', { name: 'Set password' }).click();
  await invited.getByRole('heading', { name: 'Devices', exact: true }).waitFor();

  // ---- logged out, then in again with the new password: only the customer's pages
  await invited.locator('#logout').click();
  await invited.getByLabel('Username (email)').fill(EMAIL);
  await invited.getByLabel('Password').fill(PASSWORD);
  await invited.getByRole('button', { name: 'Log in' }).click();
  await invited.getByRole('heading', { name: 'Devices', exact: true }).waitFor();
  await invited.locator('#devices-table td.name', { hasText: MINE }).waitFor();
  const names = await invited.locator('#devices-table tbody td.name').allTextContents();
  assert(names.length === 1 && names[0] === MINE, `only the customer's device is listed: ${JSON.stringify(names)}`);
  assert(!names.includes(OTHER), 'the tenant\'s other device is not listed');
  assert(await invited.locator('#devices-table').getByRole('button', { name: 'Add device' }).count() === 0
    && await invited.getByRole('button', { name: 'Add device' }).count() === 0, 'a customer user adds no devices');
  const links = await invited.locator('nav.sidebar a:not(.brand)').allTextContents();
  assert(JSON.stringify(links) === JSON.stringify(['Devices', 'Assets', 'My customer']), `the customer user's menu: ${JSON.stringify(links)}`);
  await invited.locator('#devices-table td.name', { hasText: MINE }).click();
  await invited.getByRole('heading', { name: MINE }).waitFor();
  assert(await invited.getByRole('button', { name: 'Delete' }).count() === 0, 'a customer user deletes no devices');
  await nav(invited, 'My customer');
  await invited.getByRole('heading', { name: CUSTOMER }).waitFor();
  const tabs = await invited.getByRole('tab').allTextContents();
  assert(!tabs.includes('Users'), `no Users tab for a customer user: ${JSON.stringify(tabs)}`);
  // A page it may not see is not drawn, even by its address.
  await invited.goto(`${env.base}/#/integrations`);
  await invited.getByRole('heading', { name: 'Not found' }).waitFor();

  // The customer user's pages at 360 px.
  await invited.setViewportSize(NARROW);
  for (const hash of ['/devices', '/assets', `/customers/${CUSTOMER_ID}`]) {
    await invited.goto(`${env.base}/#${hash}`);
    await invited.locator('h1').first().waitFor();
    await invited.waitForTimeout(300);
    await assertNoSidewaysScroll(invited, `the customer user's ${hash} at 360 px`);
  }
  await invited.close();

  // ---- back as the administrator: active, disabled, deleted
  await nav(page, 'Users');
  await row(page, EMAIL).locator('.badge', { hasText: 'Active' }).waitFor();
  await row(page, EMAIL).getByRole('button', { name: 'Disable' }).click();
  await row(page, EMAIL).locator('.badge', { hasText: 'Disabled' }).waitFor();
  assert(await row(page, env.username).getByRole('button').count() === 0, 'no Disable or Delete on one\'s own row');
  await row(page, EMAIL).getByRole('button', { name: 'Delete' }).click();
  await page.locator('#confirm-ok').click();
  await until('the deleted user gone from the list', async () => (await row(page, EMAIL).count()) === 0);

  // The Users page and its dialogs at 360 px.
  await page.setViewportSize(NARROW);
  await page.reload();
  await page.getByRole('heading', { name: 'Users', exact: true }).waitFor();
  await assertNoSidewaysScroll(page, 'the Users page at 360 px');
  await page.locator('#add-user').click();
  await page.getByRole('dialog').waitFor();
  const box = await page.locator('.dialog').last().boundingBox();
  assert(box && box.x >= 0 && box.x + box.width <= NARROW.width, `the Add user dialog fits 360 px: ${JSON.stringify(box)}`);
  await assertNoSidewaysScroll(page, 'the Add user dialog at 360 px');
});
