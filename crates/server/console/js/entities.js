// Entities → Devices, Assets and Customers: lists paged and searched on the server, the details
// with Latest telemetry (and a time-series chart), Attributes, and a customer's devices and
// assets; creating, editing, deleting and assigning them. Names, keys and values are device
// data: text only. Related entities are shown by name (a customer's title, an integration's
// name), linked, never by id.
/* global uPlot */

import { h, fill, fmtTime, tabs, field, dialog, toast } from './dom.js';
import { get, post, del, page, subscribeTimeseries, myCustomerId } from './api.js';
import { pagedTable } from './table.js';
import { markInvalid, requireFilled, confirmInPage } from './forms.js';
import { customerUsersPanel } from './users.js';

/** ThingsBoard's "no customer" id on entities the tenant owns. */
const NULL_CUSTOMER = '13814000-1dd2-11b2-8080-808080808080';

const KINDS = {
  devices: {
    title: 'Devices', one: 'Device', entityType: 'DEVICE', list: '/api/tenant/devices', item: (id) => `/api/device/${id}`,
    save: '/api/device', profiles: '/api/deviceProfiles', profileLabel: 'Device profile', empty: 'No devices yet',
    columns: [
      { title: 'Created time', cell: (d) => fmtTime(d.createdTime), sort: 'createdTime' },
      { title: 'Name', cell: (d) => d.name, sort: 'name', class: 'name' },
      { title: 'Device profile', cell: (d) => d.deviceProfileName || d.type, sort: 'type' },
      { title: 'Label', cell: (d) => d.label || '', sort: 'label' },
      { title: 'Customer', cell: (d) => customerCell(d) },
    ],
  },
  assets: {
    title: 'Assets', one: 'Asset', entityType: 'ASSET', list: '/api/tenant/assets', item: (id) => `/api/asset/${id}`,
    save: '/api/asset', profiles: '/api/assetProfiles', profileLabel: 'Asset profile', empty: 'No assets yet',
    columns: [
      { title: 'Created time', cell: (a) => fmtTime(a.createdTime), sort: 'createdTime' },
      { title: 'Name', cell: (a) => a.name, sort: 'name', class: 'name' },
      { title: 'Asset profile', cell: (a) => a.type, sort: 'type' },
      { title: 'Label', cell: (a) => a.label || '', sort: 'label' },
      { title: 'Customer', cell: (a) => customerCell(a) },
    ],
  },
  customers: {
    title: 'Customers', one: 'Customer', entityType: 'CUSTOMER', list: '/api/customers', item: (id) => `/api/customer/${id}`,
    save: '/api/customer', empty: 'No customers yet',
    columns: [
      { title: 'Created time', cell: (c) => fmtTime(c.createdTime), sort: 'createdTime' },
      { title: 'Title', cell: (c) => c.title, sort: 'title', class: 'name' },
    ],
  },
};

/** The customer an entity is assigned to, or null. */
function customerOf(e) {
  const id = e.customerId?.id;
  return id && id !== NULL_CUSTOMER ? id : null;
}

// Titles and names of related entities, fetched once per page view and shared by every cell.
const names = new Map();
function nameOf(path, pick) {
  if (!names.has(path)) names.set(path, get(path).then(pick, () => null));
  return names.get(path);
}

/** A link to a related entity that shows its name once known (its id until then or if gone). */
function entityLink(href, path, pick, id) {
  const a = h('a', { href, class: 'entity-link' }, '…');
  nameOf(path, pick).then((name) => fill(a, name ?? `${id} (deleted)`));
  return a;
}

function customerCell(e) {
  const id = customerOf(e);
  return id ? entityLink(`#/customers/${id}`, `/api/customer/${id}`, (c) => c.title, id) : '';
}

export function entityListPage(container, kind) {
  const k = KINDS[kind];
  const mine = myCustomerId();
  names.clear();
  const table = pagedTable({
    search: `Search ${k.title.toLowerCase()}`,
    sortProperty: 'createdTime',
    columns: k.columns,
    empty: k.empty,
    // A customer user lists its customer's entities (the tenant's lists are not its to read).
    load: (s) => page(mine ? `/api/customer/${mine}/${kind}` : k.list, s),
    onOpen: (e) => { location.hash = `#/${kind}/${e.id.id}`; },
  });
  table.el.id = `${kind}-table`;
  const add = mine ? null : h('button', { class: 'primary', onclick: () => editDialog(kind, null, (saved) => { location.hash = `#/${kind}/${saved.id.id}`; }) },
    `Add ${k.one.toLowerCase()}`);
  fill(container, h('div', { class: 'page-head' }, h('h1', {}, k.title), h('span', { class: 'spacer' }), add), table.el);
}

export function entityPage(container, kind, id) {
  const k = KINDS[kind];
  let dispose = null;
  let alive = true;
  // A customer user reads and writes its entities' data; editing, assigning and deleting them,
  // and its customer's users, are the tenant administrator's.
  const admin = !myCustomerId();
  const back = admin || kind !== 'customers' ? h('a', { href: `#/${kind}`, class: 'back' }, `‹ ${k.title}`) : null;
  const head = h('div', { class: 'page-head' }, back);
  fill(container, head, h('p', { class: 'hint' }, 'Loading…'));
  names.clear();

  async function render(tabIndex) {
    let entity;
    try { entity = await get(k.item(id)); } catch (e) { fill(container, head, h('div', { class: 'error' }, e.message)); return; }
    if (!alive) return;
    dispose?.();
    const name = entity.name ?? entity.title;
    const list = [{ name: 'Details', render: (panel) => fill(panel, detailsTable(kind, entity)) }];
    list.push({ name: 'Latest telemetry', render: (panel) => telemetryPanel(panel, k.entityType, id) });
    list.push({ name: 'Attributes', render: (panel) => attributesPanel(panel, k.entityType, id, kind === 'devices' ? 'CLIENT_SCOPE' : 'SERVER_SCOPE') });
    if (kind === 'customers') {
      list.push({ name: 'Devices', render: (panel) => customerEntities(panel, id, 'devices') });
      list.push({ name: 'Assets', render: (panel) => customerEntities(panel, id, 'assets') });
      if (admin) list.push({ name: 'Users', render: (panel) => customerUsersPanel(panel, id) });
    }
    const t = tabs(list, tabIndex ?? (kind === 'customers' ? 0 : 1));
    dispose = t.dispose;
    const actions = !admin ? null : h('div', { class: 'entity-actions' },
      h('button', { class: 'secondary small', onclick: () => editDialog(kind, entity, () => render(0)) }, 'Edit'),
      kind !== 'customers' ? assignButton(kind, entity, () => render(0)) : null,
      h('button', { class: 'danger small', onclick: () => confirmDelete(kind, entity) }, 'Delete'));
    fill(container, head,
      h('div', { class: 'title-row entity-title' }, h('h1', { class: 'entity-name' }, name), actions),
      h('p', { class: 'hint' }, `${k.one}${entity.type ? ` · ${entity.type}` : ''}`),
      t);
  }
  render();
  return () => { alive = false; dispose?.(); };
}

/** Assign (a dialog choosing the customer) or, for an assigned entity, unassign at once. */
function assignButton(kind, entity, done) {
  const k = KINDS[kind];
  const one = k.one.toLowerCase();
  if (customerOf(entity)) {
    return h('button', { class: 'secondary small', onclick: async () => {
      try {
        await del(`/api/customer/${one}/${entity.id.id}`);
        toast(`${k.one} unassigned`);
        done();
      } catch (e) { toast(e.message, 'error'); }
    } }, 'Unassign from customer');
  }
  return h('button', { class: 'secondary small', onclick: () => assignDialog(kind, entity, done) }, 'Assign to customer');
}

function assignDialog(kind, entity, done) {
  const k = KINDS[kind];
  const one = k.one.toLowerCase();
  const d = dialog(`Assign ${one} to a customer`);
  const search = h('input', { type: 'search', name: 'customerSearch', placeholder: 'Search customers' });
  const select = h('select', { name: 'customer', size: 6, class: 'customer-choice' });
  const error = h('div', { class: 'error', role: 'alert' });
  const assign = h('button', { class: 'primary', type: 'submit', disabled: true }, 'Assign');
  let timer = null;
  async function load() {
    try {
      const customers = await page('/api/customers', { pageSize: 50, sortProperty: 'title', sortOrder: 'ASC', textSearch: search.value.trim() });
      fill(select, customers.data.map((c) => h('option', { value: c.id.id }, c.title)));
      if (!customers.data.length) fill(select, h('option', { disabled: true }, search.value.trim() ? 'No results' : 'No customers yet: create one first'));
      assign.disabled = !select.value;
      fill(error);
    } catch (e) { fill(error, e.message); }
  }
  search.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(load, 250); });
  select.addEventListener('change', () => { assign.disabled = !select.value; });
  const form = h('form', { novalidate: true, onsubmit: async (e) => {
    e.preventDefault();
    if (!select.value) return;
    try {
      await post(`/api/customer/${select.value}/${one}/${entity.id.id}`);
      d.close();
      toast(`${k.one} assigned`);
      done();
    } catch (err) { fill(error, err.message); }
  } }, field('Customer', search), select, error,
  h('div', { class: 'actions' }, assign, h('button', { class: 'secondary', type: 'button', onclick: () => d.close() }, 'Cancel')));
  d.body.append(form);
  load();
  search.focus();
}

/** Asks in the page (never `window.confirm`), then deletes and goes back to the list. */
async function confirmDelete(kind, entity) {
  const k = KINDS[kind];
  const one = k.one.toLowerCase();
  const name = entity.name ?? entity.title;
  const what = kind === 'customers'
    ? 'Its devices and assets stay and go back to the tenant; its attributes and telemetry are deleted.'
    : 'Its telemetry and attributes are deleted with it.';
  const yes = await confirmInPage(`Delete ${one}`, `Delete ${one} “${name}”? ${what} This cannot be undone.`, `Delete ${one}`, { danger: true });
  if (!yes) return;
  try {
    await del(k.item(entity.id.id));
    toast(`${k.one} “${name}” deleted`);
    location.hash = `#/${kind}`;
  } catch (e) { toast(e.message, 'error'); }
}

/** Create (entity null) or edit dialog; `done(saved)` after a successful save. */
function editDialog(kind, entity, done) {
  const k = KINDS[kind];
  const d = dialog(entity ? `Edit ${k.one.toLowerCase()}` : `Add ${k.one.toLowerCase()}`);
  const error = h('div', { class: 'error', role: 'alert' });
  const nameLabel = kind === 'customers' ? 'Title' : 'Name';
  const nameInput = h('input', { type: 'text', name: 'name', required: true, 'aria-required': 'true',
    value: entity ? (entity.name ?? entity.title) : '', autocomplete: 'off' });
  const fields = [field(`${nameLabel} *`, nameInput)];
  let profile, label, description;
  if (kind !== 'customers') {
    const listId = `${kind}-profiles`;
    profile = h('input', { type: 'text', name: 'profile', list: listId, value: entity ? entity.type : 'default', autocomplete: 'off' });
    const options = h('datalist', { id: listId });
    page(k.profiles, { pageSize: 100, sortProperty: 'name', sortOrder: 'ASC' })
      .then((p) => fill(options, p.data.map((x) => h('option', { value: x.name }))), () => {});
    label = h('input', { type: 'text', name: 'label', value: entity?.label || '' });
    description = h('textarea', { name: 'description', rows: 3 });
    description.value = entity?.additionalInfo?.description || '';
    fields.push(field(k.profileLabel, profile, 'A new name creates the profile'), options, field('Label', label), field('Description', description));
  }
  const save = h('button', { class: 'primary', type: 'submit' }, entity ? 'Save' : 'Add');
  const form = h('form', { novalidate: true, onsubmit: async (e) => {
    e.preventDefault();
    fill(error);
    if (!requireFilled([[nameInput, `${nameLabel} is required`]])) return;
    const name = nameInput.value.trim();
    let body;
    if (kind === 'customers') {
      body = { ...(entity || {}), title: name };
    } else {
      // The whole entity as read, as ThingsBoard's UI sends it; the profile goes by name.
      body = { ...(entity || {}), name, type: profile.value.trim() || 'default', label: label.value.trim() || null,
        additionalInfo: { ...(entity?.additionalInfo || {}), description: description.value.trim() || null } };
      delete body.deviceProfileId;
      delete body.assetProfileId;
    }
    save.disabled = true;
    try {
      const saved = await post(k.save, body);
      d.close();
      toast(`${k.one} “${saved.name ?? saved.title}” saved`);
      done(saved);
    } catch (err) {
      save.disabled = false;
      // A taken name belongs next to the name.
      if (err.status === 400 && /name|title/i.test(err.message)) markInvalid(nameInput, err.message);
      else fill(error, err.message);
    }
  } }, fields, error, h('div', { class: 'actions' }, save, h('button', { class: 'secondary', type: 'button', onclick: () => d.close() }, 'Cancel')));
  d.body.append(form);
  nameInput.focus();
}

function detailsTable(kind, e) {
  const rows = [
    ['Id', e.id.id], ['Created time', fmtTime(e.createdTime)], [kind === 'customers' ? 'Title' : 'Name', e.name ?? e.title],
  ];
  if (kind !== 'customers') {
    rows.push([KINDS[kind].profileLabel, e.type], ['Label', e.label || ''], ['Description', e.additionalInfo?.description || '']);
    const customer = customerOf(e);
    rows.push(['Customer', customer ? entityLink(`#/customers/${customer}`, `/api/customer/${customer}`, (c) => c.title, customer) : 'Not assigned']);
    const by = e.additionalInfo?.createdByIntegration;
    if (by) rows.push(['Created by integration', entityLink(`#/integrations/${by.id}`, `/api/integration/${by.id}`, (i) => i.name, by.id)]);
  }
  return h('table', { class: 'kv-table entity-details' }, h('tbody', {}, rows.map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', {}, v)))));
}

function customerEntities(panel, customerId, kind) {
  const k = KINDS[kind];
  const table = pagedTable({
    search: false, columns: k.columns.filter((c) => c.title !== 'Customer'), sortProperty: 'createdTime',
    empty: `No ${k.title.toLowerCase()} assigned`,
    load: (s) => page(`/api/customer/${customerId}/${kind}`, s),
    onOpen: (e) => { location.hash = `#/${kind}/${e.id.id}`; },
  });
  fill(panel, table.el);
}

/**
 * Latest values, pushed over the WebSocket API as they are stored (polled every 3 s when the
 * socket cannot be used), and a chart of the history over a chosen range, redrawn as values come.
 */
function telemetryPanel(panel, entityType, id) {
  const tbody = h('tbody');
  const latestTable = h('table', { class: 'data', id: 'latest-telemetry' },
    h('thead', {}, h('tr', {}, h('th', {}, 'Last update time'), h('th', {}, 'Key'), h('th', {}, 'Value'))), tbody);
  const chartBox = h('div', { class: 'chart-box' });
  const range = h('select', { name: 'range', 'aria-label': 'Time range' },
    [['60000', 'Last minute'], ['300000', 'Last 5 minutes'], ['3600000', 'Last hour'], ['86400000', 'Last 24 hours'], ['604800000', 'Last 7 days'], ['2592000000', 'Last 30 days'], ['custom', 'Custom…']]
      .map(([v, l]) => h('option', { value: v, selected: v === '3600000' }, l)));
  const now = Date.now();
  const local = (ms) => new Date(ms - new Date().getTimezoneOffset() * 60000).toISOString().slice(0, 16);
  const from = h('input', { type: 'datetime-local', name: 'from', value: local(now - 3600000) });
  const to = h('input', { type: 'datetime-local', name: 'to', value: local(now + 60000) });
  const customBox = h('span', { class: 'custom-range', hidden: true }, field('From', from), field('To', to));
  const keysBox = h('span', { class: 'chart-keys' });
  const chartStatus = h('span', { class: 'hint' });
  const selected = new Set();
  let keys = [];
  let plot = null;

  /** key → its latest {ts, value}. */
  const latest = new Map();

  async function loadLatest() {
    const values = await get(`/api/plugins/telemetry/${entityType}/${id}/values/timeseries`);
    latest.clear();
    for (const [key, points] of Object.entries(values)) latest.set(key, points[0] || {});
    renderLatest();
  }

  /** A WebSocket update: `{key: [[ts, "value"], …]}`; the newest point of each key wins. */
  function applyLive(data) {
    for (const [key, points] of Object.entries(data)) {
      for (const [ts, value] of points) {
        if (!latest.has(key) || !(latest.get(key).ts > ts)) latest.set(key, { ts, value });
      }
    }
    renderLatest();
    if (range.value !== 'custom' && !chartPending) chartPending = setTimeout(() => { chartPending = null; drawChart(); }, 1000);
  }
  let chartPending = null;

  function renderLatest() {
    const rows = [...latest.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([key, p]) =>
      h('tr', { dataset: { key } }, h('td', {}, fmtTime(p.ts)), h('td', { class: 'key' }, key), h('td', { class: 'value' }, String(p.value ?? ''))));
    if (!rows.length) rows.push(h('tr', {}, h('td', { colspan: 3, class: 'empty' }, 'No telemetry yet')));
    tbody.replaceChildren(...rows);
    const newKeys = [...latest.keys()].sort();
    if (newKeys.join('\n') !== keys.join('\n')) {
      keys = newKeys;
      if (!selected.size) newKeys.slice(0, 4).forEach((key) => selected.add(key));
      fill(keysBox, keys.map((key) => {
        const input = h('input', { type: 'checkbox', checked: selected.has(key), onchange: () => { if (input.checked) selected.add(key); else selected.delete(key); drawChart(); } });
        return h('label', { class: 'check' }, input, h('span', {}, key));
      }));
      drawChart();
    }
  }

  function window_() {
    if (range.value === 'custom') return [new Date(from.value).getTime(), new Date(to.value).getTime()];
    const end = Date.now();
    return [end - Number(range.value), end];
  }

  async function drawChart() {
    const chosen = keys.filter((key) => selected.has(key));
    const [startTs, endTs] = window_();
    if (!chosen.length || !(startTs < endTs)) {
      fill(chartStatus, chosen.length ? 'Choose a valid time range' : 'Choose keys to chart');
      plot?.destroy(); plot = null; chartBox.replaceChildren();
      return;
    }
    const q = new URLSearchParams({ keys: chosen.join(','), startTs, endTs, limit: 10000, orderBy: 'ASC', agg: 'NONE', useStrictDataTypes: 'true' });
    let history;
    try {
      history = await get(`/api/plugins/telemetry/${entityType}/${id}/values/timeseries?${q}`);
    } catch (e) { fill(chartStatus, e.message); return; }
    // uPlot wants one shared x axis (seconds) and a column per series, null where missing.
    const times = [...new Set(chosen.flatMap((key) => (history[key] || []).map((p) => p.ts)))].sort((a, b) => a - b);
    const index = new Map(times.map((t, n) => [t, n]));
    const series = chosen.map((key) => {
      const col = new Array(times.length).fill(null);
      for (const p of history[key] || []) {
        const v = typeof p.value === 'number' ? p.value : Number(p.value);
        col[index.get(p.ts)] = Number.isFinite(v) ? v : null;
      }
      return col;
    });
    const points = series.reduce((n, col) => n + col.filter((v) => v !== null).length, 0);
    fill(chartStatus, `${points} points from ${fmtTime(startTs)} to ${fmtTime(endTs)}`);
    // The drawing (time format, second axis) is chart.js's, shared by every chart.
    const { drawTimeSeries } = await import('./chart.js');
    plot?.destroy();
    plot = drawTimeSeries(chartBox, { keys: chosen, times, columns: series, startTs, endTs });
  }

  range.addEventListener('change', () => { customBox.hidden = range.value !== 'custom'; drawChart(); });
  from.addEventListener('change', drawChart);
  to.addEventListener('change', drawChart);
  const resize = () => plot?.setSize({ width: Math.max(320, chartBox.clientWidth), height: 300 });
  window.addEventListener('resize', resize);
  fill(panel,
    latestTable,
    h('div', { class: 'card chart-card' },
      h('div', { class: 'toolbar' }, h('h2', {}, 'Time series'), h('span', { class: 'spacer' }), field('Time range', range), customBox,
        h('button', { class: 'secondary small', onclick: drawChart }, 'Refresh chart')),
      keysBox, chartStatus, chartBox));
  loadLatest().catch((e) => fill(tbody, h('tr', {}, h('td', { colspan: 3, class: 'error' }, e.message))));
  let timer = null;
  const poll = () => { timer ??= setInterval(() => { if (!document.hidden) loadLatest().catch(() => {}); }, 3000); };
  const unsubscribe = subscribeTimeseries(entityType, id, applyLive, poll);
  return () => { unsubscribe(); clearInterval(timer); clearTimeout(chartPending); window.removeEventListener('resize', resize); plot?.destroy(); };
}

const SCOPES = ['CLIENT_SCOPE', 'SERVER_SCOPE', 'SHARED_SCOPE'];
const scopeName = (s) => s.replace('_SCOPE', '').toLowerCase().replace(/^./, (c) => c.toUpperCase());

function attributesPanel(panel, entityType, id, initialScope) {
  const scope = h('select', { name: 'scope', 'aria-label': 'Attribute scope' },
    SCOPES.map((s) => h('option', { value: s, selected: s === initialScope }, `${scopeName(s)} attributes`)));
  const tbody = h('tbody');
  const table = h('table', { class: 'data', id: 'attributes' },
    h('thead', {}, h('tr', {}, h('th', {}, 'Last update time'), h('th', {}, 'Key'), h('th', {}, 'Value'))), tbody);
  async function load() {
    try {
      const list = await get(`/api/plugins/telemetry/${entityType}/${id}/values/attributes/${scope.value}`);
      const rows = list.sort((a, b) => a.key.localeCompare(b.key)).map((a) => h('tr', { dataset: { key: a.key } },
        h('td', {}, fmtTime(a.lastUpdateTs)), h('td', { class: 'key' }, a.key),
        h('td', { class: 'value' }, typeof a.value === 'object' ? JSON.stringify(a.value) : String(a.value))));
      if (!rows.length) rows.push(h('tr', {}, h('td', { colspan: 3, class: 'empty' }, 'No attributes in this scope')));
      tbody.replaceChildren(...rows);
    } catch (e) {
      fill(tbody, h('tr', {}, h('td', { colspan: 3, class: 'error' }, e.message)));
    }
  }
  scope.addEventListener('change', load);
  const add = h('button', { class: 'primary small', onclick: () => addAttributeDialog(entityType, id,
    scope.value === 'CLIENT_SCOPE' ? 'SERVER_SCOPE' : scope.value, (saved) => { scope.value = saved; load(); }) }, 'Add attribute');
  fill(panel, h('div', { class: 'toolbar' }, field('Scope', scope), h('span', { class: 'spacer' }), add,
    h('button', { class: 'secondary small', onclick: load }, 'Refresh')), h('div', { class: 'table-wrap' }, table));
  load();
}

/** Server or shared attributes are the API's to write (devices report client ones themselves). */
function addAttributeDialog(entityType, id, initialScope, done) {
  const d = dialog('Add attribute');
  const scope = h('select', { name: 'attributeScope' },
    ['SERVER_SCOPE', 'SHARED_SCOPE'].map((s) => h('option', { value: s, selected: s === initialScope }, `${scopeName(s)} attribute`)));
  const key = h('input', { type: 'text', name: 'key', autocomplete: 'off', 'aria-required': 'true' });
  const type = h('select', { name: 'valueType' }, [['string', 'Text'], ['number', 'Number'], ['boolean', 'Boolean'], ['json', 'JSON']]
    .map(([v, l]) => h('option', { value: v }, l)));
  const value = h('input', { type: 'text', name: 'value', autocomplete: 'off' });
  const error = h('div', { class: 'error', role: 'alert' });
  const parse = () => {
    const text = value.value.trim();
    switch (type.value) {
      case 'number': { const n = Number(text); if (text === '' || !Number.isFinite(n)) throw new Error('Enter a number'); return n; }
      case 'boolean': if (text === 'true' || text === 'false') return text === 'true'; throw new Error('Enter true or false');
      case 'json': try { return JSON.parse(text); } catch { throw new Error('Enter valid JSON'); }
      default: return value.value;
    }
  };
  const form = h('form', { novalidate: true, onsubmit: async (e) => {
    e.preventDefault();
    fill(error);
    if (!requireFilled([[key, 'Key is required']])) return;
    const k = key.value.trim();
    let v;
    try { v = parse(); } catch (err) { markInvalid(value, err.message); return; }
    try {
      await post(`/api/plugins/telemetry/${entityType}/${id}/attributes/${scope.value}`, { [k]: v });
      d.close();
      toast(`Attribute “${k}” saved`);
      done(scope.value);
    } catch (err) { fill(error, err.message); }
  } }, field('Scope', scope), field('Key *', key), h('div', { class: 'row' }, field('Type', type), field('Value', value)), error,
  h('div', { class: 'actions' }, h('button', { class: 'primary', type: 'submit' }, 'Add'),
    h('button', { class: 'secondary', type: 'button', onclick: () => d.close() }, 'Cancel')));
  d.body.append(form);
  key.focus();
}
