// The Events tab of an integration or a converter: ThingsBoard's event types, a type filter,
// server-side paging, a refresh button and auto-refresh (polling), so new events appear
// without reloading the page. Event bodies are device data: shown as text only.
//
// Above the table: the entity's debug state with a button that records all messages for
// 15 minutes, and a notice when the server dropped events of this entity (its per-entity rate
// cap or a full queue) in the period the page shows.
//
// The Error view: ThingsBoard records a failed uplink as a debug event with status ERROR and
// keeps ERROR events for failures of the component itself (its `method`). People who pick
// "Error" look for what failed, so this view shows both, merged newest first: the REST API
// keeps ThingsBoard's meaning of each event type.

import { h, fill, fmtTime, showText, checkbox, toast } from './dom.js';
import { get, post } from './api.js';
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
  // Both kinds of row: ERROR events (method, error) and failed uplinks' debug events.
  ERROR: [
    { title: 'Event time', cell: (e) => fmtTime(e.createdTime) },
    { title: 'Method', cell: (e) => (e.type === 'ERROR' ? e.body.method || '' : (e.body.type || 'Uplink')) },
    // The error first: on a phone the table scrolls sideways inside its frame.
    { title: 'Error', cell: (e) => textCell('Error', e.body.error), class: 'wide' },
    { title: 'In', cell: (e) => textCell('In', e.type === 'DEBUG_CONVERTER' ? e.body.in : e.body.message), class: 'wide' },
  ],
};

/** The debug event type of an entity: the failed uplinks the Error view adds. */
const DEBUG_TYPE = { INTEGRATION: 'DEBUG_INTEGRATION', CONVERTER: 'DEBUG_CONVERTER' };

/** The entity's REST path, for its debug settings. */
const ENTITY_PATH = { INTEGRATION: 'integration', CONVERTER: 'converter' };

const DEBUG_ALL_MS = 15 * 60 * 1000;

/** "14:32": the 24-hour clock of `fmtTime`. */
function hhmm(ms) {
  return fmtTime(ms).slice(11, 16);
}

/** The sentence for an entity's debugSettings. */
export function debugStateText(settings, now = Date.now()) {
  const s = settings || {};
  if (s.allEnabled && s.allEnabledUntil > now) return `Debug: all messages until ${hhmm(s.allEnabledUntil)}`;
  if (s.failuresEnabled) return 'Debug: failures only — successful uplinks are not recorded';
  return 'Debug: off — no uplinks are recorded';
}

/**
 * The Error view's page: ERROR events and failed debug events, newest first. Both are read
 * from their first row to the end of the requested page, then merged and cut, so paging stays
 * on the server's order (deep pages cost more, as they would anywhere).
 */
async function errorPage(entityType, entityId, s) {
  const size = (s.page + 1) * s.pageSize;
  const query = `?page=0&pageSize=${size}&sortProperty=createdTime&sortOrder=DESC`;
  const base = `/api/events/${entityType}/${entityId}${query}`;
  const debugType = DEBUG_TYPE[entityType];
  const [errors, failed] = await Promise.all([
    post(base, { eventType: 'ERROR' }),
    debugType ? post(base, { eventType: debugType, isError: true }) : Promise.resolve({ data: [], totalElements: 0 }),
  ]);
  const rows = [...errors.data, ...failed.data].sort((a, b) => b.createdTime - a.createdTime);
  const totalElements = errors.totalElements + failed.totalElements;
  const data = rows.slice(s.page * s.pageSize, size);
  return { data, totalElements, totalPages: Math.ceil(totalElements / s.pageSize), hasNext: totalElements > size };
}

const LABELS = {
  DEBUG_INTEGRATION: 'Debug (uplink)', DEBUG_CONVERTER: 'Debug', LC_EVENT: 'Lifecycle', STATS: 'Statistics', ERROR: 'Error',
};

/** The debug state banner; returns `{el, refresh}`. */
function debugBanner(entityType, entityId, onChange) {
  const path = ENTITY_PATH[entityType];
  const text = h('span', { class: 'debug-state-text' });
  const button = h('button', { class: 'secondary small', type: 'button', onclick: recordAll }, 'Record all messages for 15 min');
  const el = h('div', { class: 'debug-state', role: 'status' }, text, button);
  let settings = null;
  function render() {
    if (!settings) return;
    const all = settings.allEnabled && settings.allEnabledUntil > Date.now();
    el.classList.toggle('all', all);
    el.dataset.state = all ? 'all' : (settings.failuresEnabled ? 'failures' : 'off');
    fill(text, debugStateText(settings));
  }
  async function refresh() {
    if (!path) { el.hidden = true; return; }
    try {
      const entity = await get(`/api/${path}/${entityId}`);
      settings = entity.debugSettings || {};
      render();
    } catch (e) {
      fill(text, `Debug state unknown: ${e.message}`);
    }
  }
  async function recordAll() {
    button.disabled = true;
    try {
      // The saved entity as the server has it now, so nothing else it holds is overwritten.
      const entity = await get(`/api/${path}/${entityId}`);
      entity.debugSettings = { failuresEnabled: true, allEnabled: true, allEnabledUntil: Date.now() + DEBUG_ALL_MS };
      const saved = await post(`/api/${path}`, entity);
      settings = saved.debugSettings || entity.debugSettings;
      render();
      toast(debugStateText(settings));
      onChange?.();
    } catch (e) {
      toast(e.message, 'error');
    } finally {
      button.disabled = false;
    }
  }
  return { el, refresh, render };
}

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
  const dropped = h('div', { class: 'notice dropped-notice', role: 'status', hidden: true });
  const banner = debugBanner(entityType, entityId, () => table?.reload());

  /** Says how many events of this entity the server dropped in the period the page shows. */
  async function showDropped(data, s) {
    const rows = data.data || [];
    const end = s.page === 0 || !rows.length ? Date.now() : rows[0].createdTime;
    const start = rows.length && data.hasNext ? rows[rows.length - 1].createdTime : 0;
    try {
      const r = await get(`/api/coapgate/events/${entityType}/${entityId}/dropped?startTime=${start}&endTime=${end}`);
      dropped.hidden = !r.dropped;
      if (!r.dropped) return;
      const full = r.queueFull ? `; ${r.queueFull} because the event queue was full` : '';
      fill(dropped, `${r.dropped} ${r.dropped === 1 ? 'event was' : 'events were'} dropped in this period (rate cap of ${r.rateCapPerSecond} per second${full})`);
    } catch {
      dropped.hidden = true;
    }
  }

  function build() {
    errors.el.hidden = !(type === 'DEBUG_INTEGRATION' || type === 'DEBUG_CONVERTER' || type === 'LC_EVENT');
    table = pagedTable({
      search: false,
      columns: COLUMNS[type],
      pageSize: 10,
      empty: type === 'ERROR' ? 'No errors' : 'No events yet',
      load: async (s) => {
        let data;
        if (type === 'ERROR') {
          data = await errorPage(entityType, entityId, s);
        } else {
          const filter = { eventType: type };
          if (errorsOnly) filter.isError = true;
          data = await post(`/api/events/${entityType}/${entityId}?page=${s.page}&pageSize=${s.pageSize}&sortProperty=createdTime&sortOrder=DESC`, filter);
        }
        fill(updated, `Updated ${fmtTime(Date.now())}`);
        showDropped(data, s);
        return data;
      },
    });
    table.el.classList.add('events');
    table.el.dataset.eventType = type;
    holder.replaceChildren(table.el);
  }
  fill(container,
    banner.el,
    h('div', { class: 'toolbar' }, h('label', { class: 'inline' }, 'Event type ', typeSelect), errors.el, h('span', { class: 'spacer' }), updated, auto.el, refresh),
    dropped,
    holder);
  banner.refresh();
  build();
  // Poll only the first page (newest events), and only while the tab is visible. The debug
  // state is re-read now and then (someone may change it elsewhere) and its end shown on time.
  let ticks = 0;
  const timer = setInterval(() => {
    if (document.hidden) return;
    ticks += 1;
    if (ticks % Math.max(1, Math.round(15000 / pollMs)) === 0) banner.refresh(); else banner.render();
    if (auto.input.checked && table && table.state.page === 0) table.reload();
  }, pollMs);
  return () => clearInterval(timer);
}
