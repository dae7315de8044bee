// The Events tab of an integration or a converter: ThingsBoard's event types, a type filter,
// server-side paging, a refresh button and auto-refresh (polling), so new events appear
// without reloading the page. Event bodies are device data: shown as text only.

import { h, fill, fmtTime, showText, checkbox } from './dom.js';
import { post } from './api.js';
import { pagedTable } from './table.js';

/** A cell showing the start of a long text, with a button that shows all of it. */
function textCell(title, text) {
  if (text === undefined || text === null || text === '') return '';
  const s = String(text);
  const short = s.length > 60 ? `${s.slice(0, 60)}…` : s;
  return h('span', { class: 'cell-text' }, h('code', {}, short),
    h('button', { class: 'icon small', title: `Show ${title}`, 'aria-label': `Show ${title}`, onclick: () => showText(title, s) }, '⤢'));
}

function status(ok, okText = 'OK', errText = 'ERROR') {
  return h('span', { class: `badge ${ok ? 'ok' : 'err'}` }, ok ? okText : errText);
}

const COLUMNS = {
  DEBUG_INTEGRATION: [
    { title: 'Event time', cell: (e) => fmtTime(e.createdTime) },
    { title: 'Type', cell: (e) => e.body.type || '' },
    { title: 'Message type', cell: (e) => e.body.messageType || '' },
    { title: 'In', cell: (e) => textCell('In', e.body.message), class: 'wide' },
    { title: 'Out', cell: (e) => textCell('Out', e.body.out), class: 'wide' },
    { title: 'Status', cell: (e) => status(e.body.status === 'OK') },
    { title: 'Error', cell: (e) => textCell('Error', e.body.error) },
  ],
  DEBUG_CONVERTER: [
    { title: 'Event time', cell: (e) => fmtTime(e.createdTime) },
    { title: 'Type', cell: (e) => e.body.type || '' },
    { title: 'In', cell: (e) => textCell('In', e.body.in), class: 'wide' },
    { title: 'Out', cell: (e) => textCell('Out', e.body.out), class: 'wide' },
    { title: 'Metadata', cell: (e) => textCell('Metadata', e.body.metadata) },
    { title: 'Error', cell: (e) => textCell('Error', e.body.error) },
  ],
  LC_EVENT: [
    { title: 'Event time', cell: (e) => fmtTime(e.createdTime) },
    { title: 'Event', cell: (e) => e.body.event || '' },
    { title: 'Status', cell: (e) => status(e.body.success !== false, 'Success', 'Failure') },
    { title: 'Error', cell: (e) => textCell('Error', e.body.error) },
  ],
  STATS: [
    { title: 'Event time', cell: (e) => fmtTime(e.createdTime) },
    { title: 'Messages processed', cell: (e) => String(e.body.messagesProcessed ?? 0) },
    { title: 'Errors occurred', cell: (e) => String(e.body.errorsOccurred ?? 0) },
  ],
  ERROR: [
    { title: 'Event time', cell: (e) => fmtTime(e.createdTime) },
    { title: 'Method', cell: (e) => e.body.method || '' },
    { title: 'Error', cell: (e) => textCell('Error', e.body.error), class: 'wide' },
  ],
};

const LABELS = {
  DEBUG_INTEGRATION: 'Debug (uplink)', DEBUG_CONVERTER: 'Debug', LC_EVENT: 'Lifecycle', STATS: 'Statistics', ERROR: 'Error',
};

/** The events panel; returns a cleanup function that stops polling. */
export function eventsPanel(container, entityType, entityId, types, { pollMs = 2000 } = {}) {
  let type = types[0];
  let errorsOnly = false;
  let table = null;
  const holder = h('div', { class: 'events-table' });
  const typeSelect = h('select', { 'aria-label': 'Event type', name: 'eventType', onchange: () => { type = typeSelect.value; build(); } },
    types.map((t) => h('option', { value: t }, LABELS[t])));
  const errors = checkbox('Errors only', false, { name: 'errorsOnly', onchange: () => { errorsOnly = errors.input.checked; build(); } });
  const auto = checkbox('Auto-refresh', true, { name: 'autoRefresh' });
  const refresh = h('button', { class: 'secondary small', onclick: () => table?.reload() }, 'Refresh');
  const updated = h('span', { class: 'hint', 'aria-live': 'polite' });

  function build() {
    errors.el.hidden = !(type === 'DEBUG_INTEGRATION' || type === 'DEBUG_CONVERTER' || type === 'LC_EVENT');
    table = pagedTable({
      search: false,
      columns: COLUMNS[type],
      pageSize: 10,
      empty: 'No events yet',
      load: async (s) => {
        const filter = { eventType: type };
        if (errorsOnly) filter.isError = true;
        const data = await post(`/api/events/${entityType}/${entityId}?page=${s.page}&pageSize=${s.pageSize}&sortProperty=createdTime&sortOrder=DESC`, filter);
        fill(updated, `Updated ${fmtTime(Date.now())}`);
        return data;
      },
    });
    table.el.classList.add('events');
    table.el.dataset.eventType = type;
    holder.replaceChildren(table.el);
  }
  fill(container,
    h('div', { class: 'toolbar' }, h('label', { class: 'inline' }, 'Event type ', typeSelect), errors.el, h('span', { class: 'spacer' }), updated, auto.el, refresh),
    holder);
  build();
  // Poll only the first page (newest events), and only while the tab is visible.
  const timer = setInterval(() => {
    if (auto.input.checked && table && table.state.page === 0 && !document.hidden) table.reload();
  }, pollMs);
  return () => clearInterval(timer);
}
