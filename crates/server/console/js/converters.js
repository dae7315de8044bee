// Integrations center → Data converters: the list, the editor with "Test payload decoder",
// debug settings and the Events tab.

import { h, fill, fmtTime, toast, dialog, field, checkbox, tabs, keyValueRows } from './dom.js';
import { get, post, del, page } from './api.js';
import { pagedTable } from './table.js';
import { codeEditor, DEFAULT_DECODER } from './editor.js';
import { eventsPanel } from './events.js';
import { markInvalid, requireFilled, confirmInPage, guardUnsaved } from './forms.js';

const FIFTEEN_MINUTES = 15 * 60 * 1000;

export function debugLabel(s) {
  if (!s) return 'Off';
  if (s.allEnabled && s.allEnabledUntil > Date.now()) return `All until ${fmtTime(s.allEnabledUntil).slice(11, 16)}`;
  return s.failuresEnabled ? 'Failures' : 'Off';
}

export function convertersPage(container) {
  const table = pagedTable({
    search: 'Search converters',
    sortProperty: 'createdTime',
    columns: [
      { title: 'Created time', cell: (c) => fmtTime(c.createdTime), sort: 'createdTime' },
      { title: 'Name', cell: (c) => c.name, sort: 'name' },
      { title: 'Type', cell: (c) => c.type },
      { title: 'Integration type', cell: (c) => c.integrationType || '' },
      { title: 'Language', cell: (c) => c.configuration?.scriptLang || '' },
      { title: 'Debug', cell: (c) => debugLabel(c.debugSettings) },
    ],
    load: (s) => page('/api/converters', s),
    onOpen: (c) => { location.hash = `#/converters/${c.id.id}`; },
    toolbar: [h('a', { class: 'button primary', href: '#/converters/new', id: 'add-converter' }, '+ Add data converter')],
  });
  fill(container, h('div', { class: 'page-head' }, h('h1', {}, 'Data converters')), table.el);
}

/** Debug settings controls; returns `{el, value()}` in ThingsBoard's `debugSettings` shape. */
export function debugSettingsControl(settings) {
  // A new converter or integration records all messages for 15 minutes, as the tutorial
  // expects: its first uplinks show up in Events without touching these settings.
  const s = settings || { failuresEnabled: true, allEnabled: true, allEnabledUntil: Date.now() + FIFTEEN_MINUTES };
  const failures = checkbox('Failures', s.failuresEnabled !== false, { name: 'debugFailures' });
  const allActive = s.allEnabled && s.allEnabledUntil > Date.now();
  const all = checkbox('All messages (15 min)', allActive, { name: 'debugAll' });
  const note = h('span', { class: 'hint' }, allActive ? `until ${fmtTime(s.allEnabledUntil)}` : '');
  return {
    el: h('fieldset', { class: 'debug' }, h('legend', {}, 'Debug mode'), failures.el, all.el, note),
    value: () => ({
      failuresEnabled: failures.input.checked,
      allEnabled: all.input.checked,
      // The 15 minutes of a new entity count from its saving, not from opening the form.
      allEnabledUntil: all.input.checked ? (allActive && settings ? s.allEnabledUntil : Date.now() + FIFTEEN_MINUTES) : 0,
    }),
  };
}

/**
 * Asks the server whether a script compiles, through the same compile step as a converter's
 * first uplink (the console cannot compile: its Content-Security-Policy forbids `eval`).
 * Resolves `{ok, error?, line?, column?}`; line and column are the user's, 1-based.
 */
export function checkScript(scriptLang, script) {
  return post('/api/coapgate/converter/checkScript', { scriptLang, script });
}

/**
 * The decoder form (name, language, editor, debug); used here and in the integration wizard.
 * Returns `{el, nameInput, ready, value(), snapshot(), check()}`: `ready` resolves once the
 * editor exists; `snapshot()` is a text that changes whenever an edit does (for an unsaved-
 * changes guard); `check()` checks the script and marks its problem in the editor and under
 * it, resolving `{ok, error?, line?, column?}` (`{ok: true, unchecked: true}` when the server
 * could not be asked).
 */
export function converterForm(converter, { compact = false } = {}) {
  const c = converter || { name: '', type: 'UPLINK', integrationType: 'COAP', configuration: { scriptLang: 'JS' } };
  const lang = c.configuration?.scriptLang || 'JS';
  const sources = {
    JS: c.configuration?.decoder ?? DEFAULT_DECODER.JS,
    TBEL: c.configuration?.tbelDecoder ?? DEFAULT_DECODER.TBEL,
  };
  const name = h('input', { type: 'text', name: 'converterName', required: true, 'aria-required': 'true', value: c.name, placeholder: 'e.g. CoAP Uplink Converter' });
  const type = h('select', { name: 'converterType', disabled: true }, h('option', { value: 'UPLINK' }, 'Uplink'));
  const integrationType = h('select', { name: 'integrationType' }, h('option', { value: 'COAP' }, 'CoAP'));
  const langSelect = h('select', { name: 'scriptLang', 'aria-label': 'Script language' },
    h('option', { value: 'TBEL', selected: lang === 'TBEL' }, 'TBEL'),
    h('option', { value: 'JS', selected: lang === 'JS' }, 'JavaScript'));
  const editorBox = h('div', { class: 'editor-box', id: 'decoder-editor' });
  // What the last check found: shown under the editor, next to the line marker in it.
  const problem = h('div', { class: 'script-check', id: 'script-check', 'aria-live': 'polite' });
  const debug = debugSettingsControl(c.debugSettings);
  const description = h('input', { type: 'text', name: 'description', value: c.additionalInfo?.description || '' });
  const testButton = h('button', { type: 'button', class: 'secondary', id: 'test-decoder' }, 'Test payload decoder');
  const checkButton = h('button', { type: 'button', class: 'secondary', id: 'check-script' }, 'Check script');
  let editor = null;
  let current = lang;
  let readyResolve;
  const ready = new Promise((resolve) => { readyResolve = resolve; });
  const el = h('div', { class: 'converter-form' },
    h('div', { class: 'row' }, field('Name', name), compact ? null : field('Converter type', type), field('Integration type', integrationType)),
    h('div', { class: 'row' }, h('div', { class: 'grow' }, h('span', { class: 'label' }, 'Main decoding configuration')), field('Language', langSelect)),
    editorBox,
    problem,
    h('div', { class: 'row' }, testButton, checkButton),
    compact ? null : debug.el,
    compact ? null : field('Description', description));

  // Checks answer in order of asking; an answer to an older text is dropped.
  let asked = 0;
  let shown = false; // a problem is on display
  let recheck = null;
  const showResult = (r, { quiet }) => {
    shown = !r.ok;
    if (r.ok) {
      editor.clearProblem();
      if (quiet) fill(problem);
      else fill(problem, h('span', { class: 'script-ok' }, 'The script compiles.'));
      problem.classList.remove('has-problem');
      return;
    }
    const where = r.line ? `Line ${r.line}${r.column ? `, column ${r.column}` : ''}` : null;
    const message = (r.error || 'The script does not compile').replace(/ at line \d+$/, '');
    editor.markProblem({ line: r.line, column: r.column, message });
    problem.classList.add('has-problem');
    fill(problem,
      where ? h('button', { type: 'button', class: 'problem-at', onclick: () => editor.goTo(r.line, r.column || 1) }, `${where}:`) : null,
      h('span', { class: 'problem-text' }, message));
  };
  async function check({ quiet = false } = {}) {
    await ready;
    const n = ++asked;
    let r;
    try {
      r = await checkScript(current, editor.value());
    } catch (e) {
      // A refused script (too large) is a problem of the script; anything else (the server
      // unreachable) leaves the script unjudged.
      r = e.status === 413 || e.status === 400 ? { ok: false, error: e.message } : { ok: true, unchecked: true };
    }
    if (n === asked && !r.unchecked) showResult(r, { quiet });
    return r;
  }

  // CodeMirror measures its container, so it is created once the form is in the page.
  queueMicrotask(() => {
    editor = codeEditor(editorBox, { value: sources[lang], lang });
    // While a problem is shown, the text is checked again shortly after each edit, so the
    // marker goes as soon as the problem is fixed.
    editor.onChange(() => {
      if (!shown) return;
      clearTimeout(recheck);
      recheck = setTimeout(() => check({ quiet: true }), 700);
    });
    readyResolve();
  });
  langSelect.addEventListener('change', () => {
    sources[current] = editor.value();
    current = langSelect.value;
    editor.setLang(current);
    editor.setValue(sources[current]);
    editor.clearProblem();
    fill(problem);
    problem.classList.remove('has-problem');
    shown = false;
    asked++;
  });
  checkButton.addEventListener('click', () => check());
  testButton.addEventListener('click', () => testDialog({
    lang: langSelect.value, decoder: editor.value(), converterId: c.id?.id, onApply: (src) => editor.setValue(src),
  }));
  return {
    el,
    nameInput: name,
    ready,
    check,
    snapshot() {
      if (!editor) return null;
      return JSON.stringify([name.value, integrationType.value, current, { ...sources, [current]: editor.value() },
        [...debug.el.querySelectorAll('input')].map((i) => i.checked), description.value]);
    },
    value() {
      sources[current] = editor.value();
      return {
        ...(c.id ? { id: c.id } : {}),
        name: name.value.trim(),
        type: 'UPLINK',
        integrationType: integrationType.value,
        debugSettings: compact ? { failuresEnabled: true, allEnabled: true, allEnabledUntil: Date.now() + FIFTEEN_MINUTES } : debug.value(),
        configuration: {
          ...(c.configuration || {}),
          scriptLang: current,
          decoder: sources.JS,
          tbelDecoder: sources.TBEL,
        },
        additionalInfo: { ...(c.additionalInfo || {}), description: compact ? '' : description.value },
      };
    },
  };
}

/** Payload text of the chosen kind → Base64 of its bytes, or an Error. */
export function payloadToBase64(kind, text) {
  let bytes;
  if (kind === 'HEX') {
    const clean = text.replace(/\s+/g, '').replace(/^0x/i, '');
    if (!/^([0-9a-fA-F]{2})*$/.test(clean)) throw new Error('Payload is not valid hex: pairs of 0-9, a-f expected');
    bytes = new Uint8Array(clean.length / 2);
    for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(clean.substr(i * 2, 2), 16);
  } else if (kind === 'BASE64') {
    const clean = text.replace(/\s+/g, '');
    try { atob(clean); } catch { throw new Error('Payload is not valid Base64'); }
    return clean;
  } else {
    if (kind === 'JSON') {
      try { JSON.parse(text); } catch (e) { throw new Error(`Payload is not valid JSON: ${e.message}`); }
    }
    bytes = new TextEncoder().encode(text);
  }
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

/** Placeholders of the test payload by content type: examples, worded so that they cannot be
 * taken for a value already there. */
const PAYLOAD_EXAMPLES = {
  TEXT: 'e.g. SN-001,default,temperature,25.7,humidity,69',
  JSON: 'e.g. {"deviceName": "SN-001", "temperature": 25.7}',
  HEX: 'e.g. 53 4e 2d 30 30 31',
  BASE64: 'e.g. U04tMDAx',
};

/** "Test payload decoder": payload and metadata in, the script's output or error out. */
async function testDialog({ lang, decoder, converterId, onApply }) {
  const d = dialog('Test decoder function', { wide: true });
  const kind = h('select', { name: 'payloadType', 'aria-label': 'Payload content type' },
    h('option', { value: 'TEXT' }, 'Text'), h('option', { value: 'JSON' }, 'JSON'),
    h('option', { value: 'HEX' }, 'Binary (hex)'), h('option', { value: 'BASE64' }, 'Binary (Base64)'));
  const payload = h('textarea', { name: 'payload', rows: 5, class: 'mono', placeholder: PAYLOAD_EXAMPLES.TEXT });
  const source = h('span', { class: 'hint', id: 'payload-source' });
  kind.addEventListener('change', () => { payload.placeholder = PAYLOAD_EXAMPLES[kind.value]; });
  let metadata = { integrationName: 'Test integration', 'Option:uri': '/i/test', 'Option:content-format': '0' };
  const metaBox = h('div');
  const editorBox = h('div', { class: 'editor-box small' });
  const output = h('pre', { class: 'code output', id: 'test-output', 'aria-live': 'polite' });
  const error = h('pre', { class: 'code error-text', id: 'test-error', 'aria-live': 'polite' });
  const runButton = h('button', { class: 'primary', id: 'run-test' }, 'Test');
  const apply = h('button', { class: 'secondary' }, 'Save script and close');
  let meta = keyValueRows(metadata);
  fill(metaBox, meta.el);
  d.body.append(
    h('div', { class: 'test-grid' },
      h('div', {},
        h('div', { class: 'row' }, field('Payload content type', kind)),
        field('Payload', payload, source),
        h('div', { class: 'label' }, 'Metadata'), metaBox),
      h('div', {}, h('div', { class: 'label' }, 'Decoder'), editorBox)),
    h('div', { class: 'row' }, runButton, apply),
    h('div', { class: 'label' }, 'Output'), output, error);
  const editor = codeEditor(editorBox, { value: decoder, lang, height: 260 });
  // Prefill with the converter's latest debug input, as ThingsBoard does.
  if (converterId) {
    get(`/api/converter/${converterId}/debugIn`).then((last) => {
      if (!last || payload.value) return;
      const type = last.inContentType === 'BINARY' ? 'BASE64' : last.inContentType || 'TEXT';
      kind.value = PAYLOAD_EXAMPLES[type] ? type : 'TEXT';
      payload.placeholder = PAYLOAD_EXAMPLES[kind.value];
      payload.value = last.inContent || '';
      fill(source, 'From the converter\'s last uplink.');
      if (last.inMetadata && Object.keys(last.inMetadata).length) {
        metadata = last.inMetadata;
        meta = keyValueRows(metadata);
        fill(metaBox, meta.el);
      }
    }).catch(() => {});
  }
  runButton.addEventListener('click', async () => {
    fill(output); fill(error);
    let b64;
    try { b64 = payloadToBase64(kind.value, payload.value); } catch (e) { fill(error, e.message); return; }
    runButton.disabled = true;
    try {
      const r = await post(`/api/converter/testUpLink?scriptLang=${lang}`, { payload: b64, metadata: meta.value(), decoder: editor.value() });
      fill(output, r.output || '');
      fill(error, r.error || '');
    } catch (e) {
      fill(error, e.message);
    } finally {
      runButton.disabled = false;
    }
  });
  apply.addEventListener('click', () => { onApply(editor.value()); d.close(); });
  payload.focus();
}

/** A converter's page: details (editor) and events. `id` null means a new converter. */
export function converterPage(container, id, tab) {
  let disposeTabs = null;
  let disposeGuard = null;
  let gone = false;
  const head = h('div', { class: 'page-head' }, h('a', { href: '#/converters', class: 'back' }, '‹ Data converters'));
  fill(container, head, h('p', { class: 'hint' }, 'Loading…'));
  (async () => {
    let converter = null;
    if (id) {
      try { converter = await get(`/api/converter/${id}`); } catch (e) { fill(container, head, h('div', { class: 'error' }, e.message)); return; }
    }
    if (gone) return;
    const title = h('h1', {}, converter ? converter.name : 'Add data converter');
    // The details are built once and kept while the Events tab is shown, so switching tabs
    // never loses an edit; `saved` is the form's snapshot as last saved (or loaded).
    let detailsEl = null;
    let form = null;
    let saved = null;
    const isDirty = () => form !== null && saved !== null && form.snapshot() !== saved;
    disposeGuard = guardUnsaved(isDirty, {
      title: 'Leave without saving?',
      text: 'This converter has changes that are not saved. Leave the page and lose them?',
    });
    const buildDetails = () => {
      form = converterForm(converter);
      const save = h('button', { class: 'primary', id: 'save-converter' }, converter ? 'Save' : 'Add');
      const error = h('div', { class: 'error', role: 'alert' });
      form.ready.then(() => {
        saved = form.snapshot();
        // A saved script that does not compile is flagged as soon as it is shown.
        if (converter) form.check({ quiet: true });
      });
      save.addEventListener('click', async () => {
        error.textContent = '';
        if (!requireFilled([[form.nameInput, 'Name is required']])) return;
        const body = form.value();
        const snapshot = form.snapshot();
        save.disabled = true;
        // Saved whether or not the script compiles, as ThingsBoard saves it; the check only
        // flags the problem.
        const checked = form.check({ quiet: true });
        try {
          const result = await post('/api/converter', body);
          saved = snapshot;
          const compiles = (await checked).ok;
          const what = converter ? 'Converter saved' : 'Converter added';
          toast(compiles ? what : `${what}, but its script does not compile`, compiles ? 'info' : 'error');
          if (!converter) {
            location.hash = `#/converters/${result.id.id}`;
          } else {
            converter = result;
            fill(title, result.name);
          }
        } catch (e) {
          if (e.status === 400 && /\bname\b/i.test(e.message)) markInvalid(form.nameInput, e.message);
          else error.textContent = e.message;
        } finally {
          save.disabled = false;
        }
      });
      const remove = converter ? h('button', { class: 'danger', id: 'delete-converter', onclick: async () => {
        const sure = await confirmInPage('Delete converter?', `Delete the converter "${converter.name}"? This cannot be undone.`, 'Delete', { danger: true });
        if (!sure) return;
        try {
          await del(`/api/converter/${id}`);
          disposeGuard();
          location.hash = '#/converters';
        } catch (e) { error.textContent = e.message; }
      } }, 'Delete') : null;
      return h('div', {}, form.el, error, h('div', { class: 'actions' }, save, remove));
    };
    const details = (panel) => {
      const first = detailsEl === null;
      detailsEl ??= buildDetails();
      panel.append(detailsEl);
      // CodeMirror cannot measure while detached: refresh it when the tab comes back.
      if (!first) detailsEl.querySelectorAll('.CodeMirror').forEach((cm) => cm.CodeMirror.refresh());
    };
    if (!converter) {
      const panel = h('div', { class: 'card' });
      fill(container, head, title, panel);
      details(panel);
      return;
    }
    const t = tabs([
      { name: 'Details', render: details },
      { name: 'Events', render: (panel) => eventsPanel(panel, 'CONVERTER', id, ['DEBUG_CONVERTER', 'ERROR']) },
    ], tab === 'events' ? 1 : 0);
    disposeTabs = t.dispose;
    fill(container, head, title, t);
  })();
  return () => {
    gone = true;
    disposeGuard?.();
    disposeTabs?.();
  };
}
