// Forms that help: a message next to the field that needs attention, questions asked in the
// page (never the browser's own confirm/alert, which block the page and which the browser
// tests refuse), and a guard that asks before unsaved edits are thrown away.
//
// Used by the converter page; meant for every form of the console (the integration wizard).

import { h, dialog } from './dom.js';

/** Per marked input: its message element, its listener and the aria-describedby it had. */
const marked = new WeakMap();
let nextId = 0;

/**
 * Marks `input` invalid: `aria-invalid="true"`, the `invalid` class, and `message` shown right
 * after it (linked by `aria-describedby`). Focuses the input unless `{focus: false}`. The mark
 * goes away as soon as the user edits the field. Returns the message element.
 */
export function markInvalid(input, message, { focus = true } = {}) {
  clearInvalid(input);
  const id = `field-error-${++nextId}`;
  const text = h('span', { class: 'field-error', id, role: 'alert' }, message);
  const describedBy = input.getAttribute('aria-describedby');
  input.setAttribute('aria-invalid', 'true');
  input.setAttribute('aria-describedby', describedBy ? `${describedBy} ${id}` : id);
  input.classList.add('invalid');
  input.after(text);
  const onEdit = () => clearInvalid(input);
  input.addEventListener('input', onEdit);
  input.addEventListener('change', onEdit);
  marked.set(input, { text, onEdit, describedBy });
  if (focus) input.focus();
  return text;
}

/** Undoes `markInvalid(input)`; does nothing for an input that is not marked. */
export function clearInvalid(input) {
  const m = marked.get(input);
  if (!m) return;
  marked.delete(input);
  m.text.remove();
  input.removeEventListener('input', m.onEdit);
  input.removeEventListener('change', m.onEdit);
  input.removeAttribute('aria-invalid');
  input.classList.remove('invalid');
  if (m.describedBy) input.setAttribute('aria-describedby', m.describedBy);
  else input.removeAttribute('aria-describedby');
}

/**
 * Checks that fields are filled (whitespace alone is empty). `fields` holds inputs, or
 * `[input, message]` pairs; without a message it is "<label> is required", the label being
 * the field's `.label` text. Every empty field is marked, the first one focused. Returns
 * whether all are filled.
 */
export function requireFilled(fields) {
  let first = null;
  for (const entry of fields) {
    const [input, message] = Array.isArray(entry) ? entry : [entry, null];
    if (input.value.trim()) {
      clearInvalid(input);
      continue;
    }
    markInvalid(input, message || `${labelOf(input)} is required`, { focus: false });
    first ??= input;
  }
  first?.focus();
  return first === null;
}

function labelOf(input) {
  const text = input.closest('.field')?.querySelector('.label')?.textContent?.trim();
  return text || input.getAttribute('aria-label') || 'This field';
}

/**
 * Asks a question in the page: a dialog with `text`, an `okLabel` button and Cancel. Resolves
 * true for OK, false for Cancel, Escape, the close button or a click beside the dialog.
 * `{danger: true}` styles OK as a destructive action; `cancelLabel` renames Cancel. Cancel
 * has the focus, so Enter never confirms by accident.
 */
export function confirmInPage(title, text, okLabel = 'OK', { cancelLabel = 'Cancel', danger = false } = {}) {
  return new Promise((resolve) => {
    let answer = false;
    const d = dialog(title, { onClose: () => resolve(answer) });
    const message = h('p', { class: 'confirm-text', id: `confirm-text-${++nextId}` }, text);
    const ok = h('button', { type: 'button', class: danger ? 'danger' : 'primary', id: 'confirm-ok' }, okLabel);
    const cancel = h('button', { type: 'button', class: 'secondary', id: 'confirm-cancel' }, cancelLabel);
    ok.addEventListener('click', () => { answer = true; d.close(); });
    cancel.addEventListener('click', () => d.close());
    d.el.setAttribute('role', 'alertdialog');
    d.el.setAttribute('aria-describedby', message.id);
    d.el.classList.add('confirm');
    d.body.append(message, h('div', { class: 'actions confirm-actions' }, cancel, ok));
    cancel.focus();
  });
}

/** The live guards' `hashchange` handlers; each returns true when it held the navigation. */
const guards = new Set();

// Listening from the moment this module is evaluated matters: main.js imports it (through the
// pages) before its own body adds the router's `hashchange` listener, so this one runs first
// and can stop the event before the router sees it. (Capture at the target does not order
// listeners on `window` in every browser; registration order does.)
window.addEventListener('hashchange', (e) => {
  for (const held of guards) if (held(e)) return;
}, true);

/**
 * Guards unsaved edits while a page is shown: when `isDirty()` is true, closing or reloading
 * the tab asks the browser's own "leave site?" question (`beforeunload`: browsers allow no
 * other), and navigating inside the console (the router follows `location.hash`) is held
 * back and asked about in the page: Stay keeps the page and its edits, Leave goes on.
 * Returns `dispose()`, to call when the page goes away (or the edits are saved for good).
 *
 * A held-back navigation never reaches the router: its `hashchange` is stopped, and the
 * address is put back with `history.replaceState` (which fires no second `hashchange`).
 */
export function guardUnsaved(isDirty, {
  title = 'Leave without saving?',
  text = 'Your changes on this page are not saved. Leave and lose them?',
  leaveLabel = 'Leave',
  stayLabel = 'Stay',
} = {}) {
  let asking = false;
  const onBeforeUnload = (e) => {
    if (!isDirty()) return;
    e.preventDefault();
    e.returnValue = '';
  };
  const hold = (e) => {
    if (!isDirty()) return false;
    e.stopImmediatePropagation();
    const target = new URL(e.newURL).hash;
    history.replaceState(history.state, '', e.oldURL);
    if (!asking) ask(target);
    return true;
  };
  async function ask(target) {
    asking = true;
    const leave = await confirmInPage(title, text, leaveLabel, { cancelLabel: stayLabel, danger: true });
    asking = false;
    if (!leave) return;
    dispose();
    location.hash = target;
  }
  function dispose() {
    window.removeEventListener('beforeunload', onBeforeUnload);
    guards.delete(hold);
  }
  window.addEventListener('beforeunload', onBeforeUnload);
  guards.add(hold);
  return dispose;
}
