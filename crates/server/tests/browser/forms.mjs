// Issue #16, forms that help: a converter whose script does not compile is saved and flagged
// at its line; a missing name is said next to the field; placeholders read as examples; the
// test dialog starts from the last uplink; unsaved edits are not lost without a question; and
// all of it fits a phone. PART=editor or PART=prefill (the Rust test sets up the data).

import { env, run, login, assert, until, nav, start, PHONE, checkProblems, assertNoSidewaysScroll } from './lib.mjs';

const BROKEN = `var text = decodeToString(payload);
var parts = text.split(',');
var result = {deviceName: parts[0],, telemetry: {}};
return result;`;
const FIXED = BROKEN.replace(',,', ',');

const editorValue = (page, sel = '#decoder-editor') => page.locator(`${sel} .CodeMirror`).evaluate((el) => el.CodeMirror.getValue());
const setEditor = (page, text) => page.locator('#decoder-editor .CodeMirror').evaluate((el, t) => el.CodeMirror.setValue(t), text);

/** The placeholder is an example ("e.g. …"), drawn unlike a value. */
async function assertExamplePlaceholder(page, selector, what) {
  const input = page.locator(selector);
  assert(await input.inputValue() === '', `${what} is empty`);
  const placeholder = await input.getAttribute('placeholder');
  assert(/^e\.g\. /.test(placeholder || ''), `${what}'s placeholder reads as an example, got ${JSON.stringify(placeholder)}`);
  const style = await input.evaluate((el) => {
    const p = getComputedStyle(el, '::placeholder');
    return { font: p.fontStyle, color: p.color, valueColor: getComputedStyle(el).color };
  });
  assert(style.font === 'italic' && style.color !== style.valueColor, `${what}'s placeholder is styled unlike a value: ${JSON.stringify(style)}`);
}

async function editorPart({ page }) {
  await login(page);
  await nav(page, 'Data converters');
  await page.locator('#add-converter').click();
  await page.locator('input[name=converterName]').waitFor();
  await assertExamplePlaceholder(page, 'input[name=converterName]', 'the converter name');

  // No name: the message is next to the field, the field is marked and focused, nothing saved.
  await page.locator('#save-converter').click();
  const name = page.locator('input[name=converterName]');
  const message = page.locator('label.field', { has: name }).locator('.field-error');
  await message.waitFor();
  assert(await message.textContent() === 'Name is required', `message next to the name: ${await message.textContent()}`);
  assert(await name.getAttribute('aria-invalid') === 'true', 'the name is aria-invalid');
  const describedBy = await name.getAttribute('aria-describedby');
  assert(describedBy && describedBy.split(' ').includes(await message.getAttribute('id')), 'the message describes the field');
  assert(await name.evaluate((el) => el === document.activeElement), 'the focus is on the name');
  await page.waitForTimeout(300);
  assert(/#\/converters\/new$/.test(page.url()), `still on the new converter page, at ${page.url()}`);
  // Typing a name takes the message away.
  await name.fill('Broken converter');
  assert(await message.count() === 0 && await name.getAttribute('aria-invalid') === null, 'typing clears the mark');

  // A syntax error on line 3: saved all the same, and flagged at line 3.
  await page.locator('select[name=scriptLang]').selectOption('JS');
  await setEditor(page, BROKEN);
  await page.locator('#save-converter').click();
  await page.waitForURL(/#\/converters\/[0-9a-f-]{36}$/);
  await page.locator('.toast', { hasText: 'does not compile' }).first().waitFor();
  const marked = page.locator('#decoder-editor .cm-problem-line');
  await marked.waitFor();
  assert(await marked.count() === 1, 'one marked line');
  assert(await marked.locator('.CodeMirror-linenumber').textContent() === '3', 'the marked line is line 3');
  assert(await marked.locator('.cm-problem-marker').isVisible(), 'a gutter marker on line 3');
  const problem = page.locator('#script-check');
  const problemText = await problem.textContent();
  assert(/^Line 3, column \d+:/.test(problemText) && problemText.includes('SyntaxError'), `the message under the editor: ${problemText}`);
  assert(await problem.isVisible(), 'the message is visible');
  assert(await editorValue(page) === BROKEN, 'the saved script is the broken one');
  // "Line 3" takes the cursor there.
  await problem.locator('button.problem-at').click();
  const cursor = await page.locator('#decoder-editor .CodeMirror').evaluate((el) => el.CodeMirror.getCursor().line);
  assert(cursor === 2, `cursor on line 3 (index 2), got ${cursor}`);
  // Fixing it takes the marker away (checked again after the edit), without saving.
  await setEditor(page, FIXED);
  await until('the marker gone after the fix', async () => await marked.count() === 0 && (await problem.textContent()) === '');
  // The Check button says when all is well.
  await page.locator('#check-script').click();
  await page.locator('#script-check .script-ok').waitFor();

  // Unsaved: leaving asks in the page, Stay keeps the edit.
  const here = page.url();
  await nav(page, 'Data converters');
  const ask = page.getByRole('alertdialog', { name: 'Leave without saving?' });
  await ask.waitFor();
  assert(page.url() === here, `the address stays while asking: ${page.url()}`);
  await ask.getByRole('button', { name: 'Stay' }).click();
  await ask.waitFor({ state: 'detached' });
  await page.waitForTimeout(300);
  assert(page.url() === here, 'Stay keeps the page');
  assert(await editorValue(page) === FIXED, 'Stay keeps the edit');
  // Closing the tab is held by beforeunload while dirty.
  const held = await page.evaluate(() => !window.dispatchEvent(new Event('beforeunload', { cancelable: true })));
  assert(held, 'beforeunload is cancelled while there are unsaved edits');
  // The Events tab and back: the edit is still there (the form is kept).
  await page.getByRole('tab', { name: 'Events' }).click();
  await page.getByRole('tab', { name: 'Details' }).click();
  assert(await editorValue(page) === FIXED, 'switching tabs keeps the edit');
  // Leave goes on.
  await nav(page, 'Data converters');
  await ask.waitFor();
  await ask.getByRole('button', { name: 'Leave' }).click();
  await page.waitForURL(/#\/converters$/);
  await page.getByRole('heading', { name: 'Data converters' }).waitFor();
  const free = await page.evaluate(() => window.dispatchEvent(new Event('beforeunload', { cancelable: true })));
  assert(free, 'no beforeunload hold once the page is left');

  // Back on the converter: what was saved is the broken script, flagged again when shown.
  await page.goto(here);
  await marked.waitFor();
  assert(await editorValue(page) === BROKEN, 'the edit was not saved');
  // Saved and unchanged: navigating asks nothing.
  await nav(page, 'Data converters');
  await page.getByRole('heading', { name: 'Data converters' }).waitFor();
  await page.goto(here);
  await marked.waitFor();
  // Saving the fix: no question after it, and no marker.
  await setEditor(page, FIXED);
  await page.locator('#save-converter').click();
  await page.locator('.toast', { hasText: 'Converter saved' }).first().waitFor();
  await until('no marker after saving the fix', async () => await marked.count() === 0);
  await nav(page, 'Data converters');
  await page.getByRole('heading', { name: 'Data converters' }).waitFor();

  // Delete asks in the page (never the browser's confirm): Cancel keeps, Delete deletes.
  await page.goto(here);
  await page.locator('#delete-converter').click();
  const del = page.getByRole('alertdialog', { name: 'Delete converter?' });
  await del.waitFor();
  assert((await del.textContent()).includes('"Broken converter"'), 'the question names the converter');
  await del.getByRole('button', { name: 'Cancel' }).click();
  await del.waitFor({ state: 'detached' });
  assert(page.url() === here, 'Cancel keeps the converter page');
  await page.locator('#delete-converter').click();
  await del.waitFor();
  await del.getByRole('button', { name: 'Delete' }).click();
  await page.waitForURL(/#\/converters$/);
}

async function prefillPart({ page }) {
  await login(page);
  // A converter that has seen an uplink: the dialog starts from it.
  await page.goto(`${env.base}/#/converters/${process.env.CONVERTER_ID}`);
  await page.locator('#test-decoder').click();
  const payload = page.locator('textarea[name=payload]');
  await until('the payload of the last uplink', async () => await payload.inputValue() === process.env.PAYLOAD);
  assert(await page.locator('select[name=payloadType]').inputValue() === 'TEXT', 'content type TEXT, as the uplink said');
  assert((await page.locator('#payload-source').textContent()).includes('last uplink'), 'the dialog says where the payload came from');
  const meta = await page.locator('.dialog .kv-row').evaluateAll((rows) => Object.fromEntries(rows.map((r) => {
    const [k, v] = r.querySelectorAll('input');
    return [k.value, v.value];
  })));
  assert(meta.integrationName === 'CoAP Integration', `metadata integrationName: ${JSON.stringify(meta)}`);
  assert(meta['Option:uri'] === `/i/${process.env.ROUTING_KEY}`, `metadata Option:uri: ${JSON.stringify(meta)}`);
  assert(meta['Option:content-format'] === '0', `metadata Option:content-format: ${JSON.stringify(meta)}`);
  await page.locator('#run-test').click();
  await until('the decoded test output', async () => (await page.locator('#test-output').textContent()).includes(process.env.DEVICE));
  await page.keyboard.press('Escape');

  // A converter without uplinks: an empty payload with an example placeholder.
  await page.goto(`${env.base}/#/converters/${process.env.QUIET_CONVERTER_ID}`);
  await page.locator('#test-decoder').click();
  await page.locator('textarea[name=payload]').waitFor();
  await page.waitForTimeout(500); // the debugIn answer (null) has come back
  await assertExamplePlaceholder(page, 'textarea[name=payload]', 'the test payload');
  await page.locator('select[name=payloadType]').selectOption('JSON');
  assert((await page.locator('textarea[name=payload]').getAttribute('placeholder')).startsWith('e.g. {'), 'the placeholder follows the content type');
  await page.keyboard.press('Escape');
}

/** At 390×844: the converter page and the test dialog fit, with a problem flagged. */
async function phonePart() {
  const b = await start(PHONE);
  try {
    const { page } = b;
    await login(page);
    await page.goto(`${env.base}/#/converters/${process.env.QUIET_CONVERTER_ID}`);
    await page.locator('#decoder-editor .CodeMirror').waitFor();
    await setEditor(page, BROKEN);
    await page.locator('#check-script').click();
    await page.locator('#decoder-editor .cm-problem-line').waitFor();
    await assertNoSidewaysScroll(page, 'the converter page with a flagged problem');
    await page.locator('#test-decoder').click();
    const dialog = page.locator('.dialog');
    await dialog.waitFor();
    await page.waitForTimeout(300);
    await assertNoSidewaysScroll(page, 'the test dialog');
    const fit = await dialog.evaluate((el) => {
      const r = el.getBoundingClientRect();
      return { left: r.left, right: r.right, top: r.top, bottom: r.bottom, w: innerWidth, h: innerHeight, sw: el.scrollWidth, cw: el.clientWidth };
    });
    assert(fit.left >= 0 && fit.right <= fit.w && fit.top >= 0 && fit.bottom <= fit.h, `the dialog fits the viewport: ${JSON.stringify(fit)}`);
    assert(fit.sw <= fit.cw, `nothing in the dialog scrolls sideways: ${JSON.stringify(fit)}`);
    await page.keyboard.press('Escape');
    // The question about unsaved edits fits too.
    await nav(page, 'Devices');
    const ask = page.getByRole('alertdialog', { name: 'Leave without saving?' });
    await ask.waitFor();
    const box = await ask.boundingBox();
    assert(box.x >= 0 && box.x + box.width <= PHONE.width, `the question fits: ${JSON.stringify(box)}`);
    await assertNoSidewaysScroll(page, 'the question');
    await ask.getByRole('button', { name: 'Leave' }).click();
    await page.waitForURL(/#\/devices$/);
    checkProblems(b.problems);
    console.log('forms_phone: OK');
  } catch (e) {
    console.error(`forms_phone: FAILED\n${e.stack || e}`);
    console.error(`page problems: ${JSON.stringify(b.problems)}`);
    process.exitCode = 1;
  } finally {
    await b.close();
  }
}

if (process.env.PART === 'editor') {
  await run('forms_editor', editorPart);
} else {
  await run('forms_prefill', prefillPart);
  await phonePart();
}
