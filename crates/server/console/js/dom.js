// DOM helpers. Everything that may come from a device (names, keys, payloads) goes in as a
// text node: `h()` turns strings into text nodes and never sets innerHTML.

/** Creates an element: attributes (`class`, `onclick`-style listeners, `dataset`), children. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (key === 'value') {
      el.value = value;
    } else if (key === 'checked') {
      el.checked = !!value;
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function fmtTime(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** A short notice in the corner. */
export function toast(message, kind = 'info') {
  let box = document.getElementById('toasts');
  if (!box) {
    box = h('div', { id: 'toasts', role: 'status' });
    document.body.append(box);
  }
  const t = h('div', { class: `toast ${kind}` }, message);
  box.append(t);
  setTimeout(() => t.remove(), kind === 'error' ? 8000 : 3000);
}

/** A modal dialog; returns `{el, body, close}`. */
export function dialog(title, { wide = false, onClose } = {}) {
  const body = h('div', { class: 'dialog-body' });
  const close = () => {
    backdrop.remove();
    document.removeEventListener('keydown', onKey);
    onClose?.();
  };
  const onKey = (e) => { if (e.key === 'Escape') close(); };
  const box = h('div', { class: `dialog${wide ? ' wide' : ''}`, role: 'dialog', 'aria-modal': 'true', 'aria-label': title },
    h('div', { class: 'dialog-head' }, h('h2', {}, title), h('button', { class: 'icon', title: 'Close', 'aria-label': 'Close', onclick: close }, '✕')),
    body);
  const backdrop = h('div', { class: 'backdrop', onmousedown: (e) => { if (e.target === backdrop) close(); } }, box);
  document.body.append(backdrop);
  document.addEventListener('keydown', onKey);
  return { el: box, body, close };
}

/** Shows a long text (payload, JSON) in a dialog, as text. */
export function showText(title, text) {
  const d = dialog(title, { wide: true });
  d.body.append(h('pre', { class: 'code' }, prettyJson(text)));
}

/** Pretty-prints JSON text; anything else unchanged. */
export function prettyJson(text) {
  if (typeof text !== 'string') return text === undefined || text === null ? '' : JSON.stringify(text, null, 2);
  const t = text.trim();
  if (t.startsWith('{') || t.startsWith('[')) {
    try { return JSON.stringify(JSON.parse(t), null, 2); } catch { /* not JSON */ }
  }
  return text;
}

/** A labelled form field. */
export function field(label, input, hint) {
  return h('label', { class: 'field' }, h('span', { class: 'label' }, label), input, hint ? h('span', { class: 'hint' }, hint) : null);
}

export function checkbox(label, checked, attrs = {}) {
  const input = h('input', { type: 'checkbox', checked, ...attrs });
  const el = h('label', { class: 'check' }, input, h('span', {}, label));
  return { el, input };
}

/** Tabs: `[{name, render(container) -> cleanup?}]`; returns the element. */
export function tabs(list, initial = 0) {
  const bar = h('div', { class: 'tabs', role: 'tablist' });
  const panel = h('div', { class: 'tab-panel' });
  let cleanup = null;
  const buttons = list.map((tab, i) => h('button', {
    role: 'tab', class: 'tab', onclick: () => select(i),
  }, tab.name));
  function select(i) {
    if (typeof cleanup === 'function') cleanup();
    buttons.forEach((b, j) => b.setAttribute('aria-selected', String(i === j)));
    panel.replaceChildren();
    cleanup = list[i].render(panel);
  }
  bar.append(...buttons);
  const el = h('div', { class: 'tabbed' }, bar, panel);
  el.dispose = () => { if (typeof cleanup === 'function') cleanup(); };
  select(initial);
  return el;
}

/** Copies text; falls back to a selected hidden field when the Clipboard API is not allowed. */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = h('textarea', { class: 'offscreen' });
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand('copy');
    area.remove();
  }
  toast('Copied to clipboard');
}

/** Key–value rows editor (metadata). Returns `{el, value()}`. */
export function keyValueRows(initial = {}, { addLabel = 'Add' } = {}) {
  const rows = h('div', { class: 'kv-rows' });
  const addRow = (k = '', v = '') => {
    const key = h('input', { type: 'text', placeholder: 'Key', value: k, class: 'kv-key' });
    const val = h('input', { type: 'text', placeholder: 'Value', value: v, class: 'kv-value' });
    const row = h('div', { class: 'kv-row' }, key, val,
      h('button', { type: 'button', class: 'icon', title: 'Remove', 'aria-label': 'Remove row', onclick: () => row.remove() }, '✕'));
    rows.append(row);
  };
  for (const [k, v] of Object.entries(initial || {})) addRow(k, v);
  const el = h('div', { class: 'kv' }, rows, h('button', { type: 'button', class: 'secondary small', onclick: () => addRow() }, addLabel));
  return {
    el,
    value() {
      const out = {};
      for (const row of rows.children) {
        const [k, v] = row.querySelectorAll('input');
        if (k.value.trim()) out[k.value.trim()] = v.value;
      }
      return out;
    },
  };
}
