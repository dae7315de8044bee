// Issue #7, "what it must show" 4 (first half): with 10,000 devices the device list pages on
// the server: it shows the total, page 2 holds other devices than page 1, and search finds one.

import { run, login, until, assert, nav } from './lib.mjs';

const TOTAL = Number(process.env.DEVICE_COUNT);

const names = (page) => page.locator('#devices-table tbody td.name').evaluateAll((tds) => tds.map((t) => t.textContent));

await run('many_devices', async ({ page }) => {
  await login(page);
  const started = Date.now();
  await nav(page, 'Devices');
  await until('the first page', async () => (await names(page)).length === 10);
  const loadMs = Date.now() - started;
  const info = page.locator('#devices-table .page-info');
  assert(await info.getAttribute('data-total') === String(TOTAL), `total ${await info.textContent()}`);
  assert((await info.textContent()).includes(`of ${TOTAL}`), `pager shows the total: ${await info.textContent()}`);
  const first = await names(page);
  await page.getByRole('button', { name: 'Next page' }).click();
  await until('page 2', async () => (await info.textContent()).startsWith('11–20'));
  const second = await names(page);
  assert(second.length === 10 && second.every((n) => !first.includes(n)), `page 2 differs: ${first} / ${second}`);
  // More rows per page, still one page from the server.
  await page.getByLabel('Rows per page').selectOption('100');
  await until('100 rows', async () => (await names(page)).length === 100);
  assert((await info.textContent()).includes(`page 1 of ${TOTAL / 100}`), await info.textContent());
  // Search runs on the server too.
  await page.getByPlaceholder('Search devices').fill('D-9999');
  await until('the search result', async () => JSON.stringify(await names(page)) === JSON.stringify(['D-9999']));
  // Sorting by name pages through the server's order.
  await page.getByPlaceholder('Search devices').fill('');
  await page.locator('#devices-table th.sortable', { hasText: /^Name$/ }).click();
  await until('sorted by name', async () => (await names(page))[0] === 'D-0');
  console.log(`first page of ${TOTAL} devices in ${loadMs} ms`);
});
