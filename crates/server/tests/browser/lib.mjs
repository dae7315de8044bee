// Shared helpers of the console's browser tests: Debian's Chromium driven by playwright-core,
// a fresh profile per run, and checks that nothing went wrong in the page (no script error,
// no Content-Security-Policy violation, no alert/confirm dialog).

import { chromium } from 'playwright-core';
import { execSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const env = {
  base: required('BASE_URL'),
  username: required('USERNAME'),
  password: required('PASSWORD'),
  coapPort: process.env.COAP_PORT,
  screenshots: process.env.SCREENSHOT_DIR || '',
};

function required(name) {
  const v = process.env[name];
  if (!v) throw new Error(`environment variable ${name} is required (the Rust test sets it)`);
  return v;
}

export function assert(condition, message) {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}

/** A phone's viewport (the issue's 390×844) for `start(PHONE)`. */
export const PHONE = { width: 390, height: 844 };

/** Starts Chromium with a fresh profile (1440×900 unless a viewport is given); returns
 * {context, page, problems, close}. */
export async function start(viewport = { width: 1440, height: 900 }) {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'coapgate-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run'],
    viewport,
    deviceScaleFactor: 1,
    timezoneId: 'UTC',
    locale: 'en-US',
  });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: env.base });
  context.setDefaultTimeout(15000);
  const page = context.pages()[0] || await context.newPage();
  const problems = { dialogs: [], errors: [], requests: [] };
  page.on('dialog', async (d) => { problems.dialogs.push(`${d.type()}: ${d.message()}`); await d.dismiss(); });
  page.on('pageerror', (e) => problems.errors.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') problems.errors.push(`console error: ${m.text()}`); });
  // The console must never talk to another server.
  page.on('request', (r) => { if (!r.url().startsWith(env.base) && !r.url().startsWith('data:')) problems.requests.push(r.url()); });
  const close = async () => {
    await context.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  };
  return { context, page, problems, close };
}

/** Fails on an unexpected dialog, script error, CSP violation or foreign request. */
export function checkProblems(problems, { allowErrors = [] } = {}) {
  assert(problems.dialogs.length === 0, `no dialog may open, got ${JSON.stringify(problems.dialogs)}`);
  const errors = problems.errors.filter((e) => !allowErrors.some((re) => re.test(e)));
  assert(errors.length === 0, `no script error or CSP violation, got ${JSON.stringify(errors)}`);
  assert(problems.requests.length === 0, `no request to another origin, got ${JSON.stringify(problems.requests)}`);
}

export async function login(page) {
  await page.goto(env.base + '/');
  await page.getByLabel('Username (email)').fill(env.username);
  await page.getByLabel('Password').fill(env.password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('heading', { name: 'Integrations', exact: true }).waitFor();
}

export async function shot(page, name) {
  if (!env.screenshots) return;
  fs.mkdirSync(env.screenshots, { recursive: true });
  await page.waitForTimeout(300);
  await page.screenshot({ path: path.join(env.screenshots, `${name}.png`) });
  console.log(`screenshot ${name}.png`);
}

/** Sends one CoAP POST with libcoap's client, as the tutorial does. */
export function coapPost(url, payload) {
  const out = execSync(`echo -e '${payload}' | coap-client-notls -m post ${url} -t text/plain -f-`, { shell: '/bin/bash', encoding: 'utf8', timeout: 30000 });
  return out;
}

/** Waits until `f()` is truthy (polling), or fails with `what`. */
export async function until(what, f, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await f();
      if (last) return last;
    } catch (e) { last = e; }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Runs a test body with a browser, always closing it; exits non-zero on failure. */
export async function run(name, body, { allowErrors = [], viewport } = {}) {
  const b = await start(viewport);
  try {
    await body(b);
    checkProblems(b.problems, { allowErrors });
    console.log(`${name}: OK`);
  } catch (e) {
    try { await b.page.screenshot({ path: path.join(os.tmpdir(), `coapgate-${name}-failure.png`) }); console.error(`failure screenshot: ${path.join(os.tmpdir(), `coapgate-${name}-failure.png`)}`); } catch { /* browser gone */ }
    console.error(`${name}: FAILED\n${e.stack || e}`);
    console.error(`page problems: ${JSON.stringify(b.problems)}`);
    process.exitCode = 1;
  } finally {
    await b.close();
  }
}

/** Clicks an entry of the sidebar, opening the phone layout's menu first when it is folded. */
export async function nav(page, name) {
  const toggle = page.locator('#nav-toggle');
  if (await toggle.isVisible() && await toggle.getAttribute('aria-expanded') !== 'true') await toggle.click();
  await page.locator('nav.sidebar').getByRole('link', { name, exact: true }).click();
}

/** Fails when the page scrolls sideways: everything must fit the viewport's width. */
export async function assertNoSidewaysScroll(page, where) {
  const { scrollWidth, innerWidth } = await page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
  }));
  assert(scrollWidth <= innerWidth, `${where}: the page scrolls sideways (scrollWidth ${scrollWidth} > innerWidth ${innerWidth})`);
}
