// Integrations center → Data converters: the list, the editor with "Test payload decoder",
// debug settings and the Events tab.

import { h, fill, fmtTime, toast, dialog, field, checkbox, tabs, keyValueRows } from './dom.js';
import { get, post, del, page } from './api.js';
import { pagedTable } from './table.js';
import { codeEditor, DEFAULT_DECODER } from './editor.js';
import { eventsPanel } from './events.js';

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

/** The decoder form (name, language, editor, debug); used here and in the integration wizard. */
export function converterForm(converter, { compact = false } = {}) {
  const c = converter || { name: '', type: 'UPLINK', integrationType: 'COAP', configuration: { scriptLang: 'JS' } };
  const lang = c.configuration?.scriptLang || 'JS';
  const sources = {
    JS: c.configuration?.decoder ?? DEFAULT_DECODER.JS,
    TBEL: c.configuration?.tbelDecoder ?? DEFAULT_DECODER.TBEL,
  };
  const name = h('input', { type: 'text', name: 'converterName', required: true, value: c.name, placeholder: 'CoAP Uplink Converter' });
  const type = h('select', { name: 'converterType', disabled: true }, h('option', { value: 'UPLINK' }, 'Uplink'));
  const integrationType = h('select', { name: 'integrationType' }, h('option', { value: 'COAP' }, 'CoAP'));
  const langSelect = h('select', { name: 'scriptLang', 'aria-label': 'Script language' },
    h('option', { value: 'TBEL', selected: lang === 'TBEL' }, 'TBEL'),
    h('option', { value: 'JS', selected: lang === 'JS' }, 'JavaScript'));
  const editorBox = h('div', { class: 'editor-box', id: 'decoder-editor' });
  const debug = debugSettingsControl(c.debugSettings);
  const description = h('input', { type: 'text', name: 'description', value: c.additionalInfo?.description || '' });
  const testButton = h('button', { type: 'button', class: 'secondary', id: 'test-decoder' }, 'Test payload decoder');
  let editor = null;
  let current = lang;
  const el = h('div', { class: 'converter-form' },
    h('div', { class: 'row' }, field('Name', name), compact ? null : field('Converter type', type), field('Integration type', integrationType)),
    h('div', { class: 'row' }, h('div', { class: 'grow' }, h('span', { class: 'label' }, 'Main decoding configuration')), field('Language', langSelect)),
    editorBox,
    h('div', { class: 'row' }, testButton),
    compact ? null : debug.el,
    compact ? null : field('Description', description));
  // CodeMirror measures its container, so it is created once the form is in the page.
  queueMicrotask(() => { editor = codeEditor(editorBox, { value: sources[lang], lang }); });
  langSelect.addEventListener('change', () => {
    sources[current] = editor.value();
    current = langSelect.value;
    editor.setLang(current);
    editor.setValue(sources[current]);
  });
  testButton.addEventListener('click', () => testDialog({
    lang: langSelect.value, decoder: editor.value(), converterId: c.id?.id, onApply: (src) => editor.setValue(src),
  }));
  return {
    el,
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

/** "Test payload decoder": payload and metadata in, the script's output or error out. */
async function testDialog({ lang, decoder, converterId, onApply }) {
  const d = dialog('Test decoder function', { wide: true });
  const kind = h('select', { name: 'payloadType', 'aria-label': 'Payload content type' },
    h('option', { value: 'TEXT' }, 'Text'), h('option', { value: 'JSON' }, 'JSON'),
    h('option', { value: 'HEX' }, 'Binary (hex)'), h('option', { value: 'BASE64' }, 'Binary (Base64)'));
  const payload = h('textarea', { name: 'payload', rows: 5, class: 'mono', placeholder: 'SN-001,default,temperature,25.7,humidity,69' });
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
        field('Payload', payload),
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
      kind.value = type;
      payload.value = last.inContent || '';
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
  const head = h('div', { class: 'page-head' }, h('a', { href: '#/converters', class: 'back' }, '‹ Data converters'));
  fill(container, head, h('p', { class: 'hint' }, 'Loading…'));
  (async () => {
    let converter = null;
    if (id) {
      try { converter = await get(`/api/converter/${id}`); } catch (e) { fill(container, head, h('div', { class: 'error' }, e.message)); return; }
    }
    const details = (panel) => {
      const form = converterForm(converter);
      const save = h('button', { class: 'primary', id: 'save-converter' }, converter ? 'Save' : 'Add');
      const error = h('div', { class: 'error', role: 'alert' });
      save.addEventListener('click', async () => {
        error.textContent = '';
        const body = form.value();
        if (!body.name) { error.textContent = 'Name is required'; return; }
        save.disabled = true;
        try {
          const saved = await post('/api/converter', body);
          toast(converter ? 'Converter saved' : 'Converter added');
          if (!converter) location.hash = `#/converters/${saved.id.id}`;
          else converter = saved;
        } catch (e) {
          error.textContent = e.message;
        } finally {
          save.disabled = false;
        }
      });
      const remove = converter ? h('button', { class: 'danger', onclick: async () => {
        if (!confirm(`Delete converter ${converter.name}?`)) return;
        try { await del(`/api/converter/${id}`); location.hash = '#/converters'; } catch (e) { error.textContent = e.message; }
      } }, 'Delete') : null;
      fill(panel, form.el, error, h('div', { class: 'actions' }, save, remove));
    };
    const title = h('h1', {}, converter ? converter.name : 'Add data converter');
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
  return () => disposeTabs?.();
}
