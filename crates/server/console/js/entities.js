// Entities → Devices, Assets and Customers: lists paged and searched on the server, and the
// details with Latest telemetry (and a time-series chart), Attributes, and a customer's
// devices and assets. Names, keys and values are device data: text only.
/* global uPlot */

import { h, fill, fmtTime, tabs, field } from './dom.js';
import { get, page } from './api.js';
import { pagedTable } from './table.js';

const KINDS = {
  devices: {
    title: 'Devices', one: 'Device', entityType: 'DEVICE', list: '/api/tenant/devices', item: (id) => `/api/device/${id}`,
    columns: [
      { title: 'Created time', cell: (d) => fmtTime(d.createdTime), sort: 'createdTime' },
      { title: 'Name', cell: (d) => d.name, sort: 'name', class: 'name' },
      { title: 'Device profile', cell: (d) => d.deviceProfileName || d.type, sort: 'type' },
      { title: 'Label', cell: (d) => d.label || '' },
    ],
  },
  assets: {
    title: 'Assets', one: 'Asset', entityType: 'ASSET', list: '/api/tenant/assets', item: (id) => `/api/asset/${id}`,
    columns: [
      { title: 'Created time', cell: (a) => fmtTime(a.createdTime), sort: 'createdTime' },
      { title: 'Name', cell: (a) => a.name, sort: 'name', class: 'name' },
      { title: 'Asset profile', cell: (a) => a.type, sort: 'type' },
      { title: 'Label', cell: (a) => a.label || '' },
    ],
  },
  customers: {
    title: 'Customers', one: 'Customer', entityType: 'CUSTOMER', list: '/api/customers', item: (id) => `/api/customer/${id}`,
    columns: [
      { title: 'Created time', cell: (c) => fmtTime(c.createdTime), sort: 'createdTime' },
      { title: 'Title', cell: (c) => c.title, sort: 'title', class: 'name' },
      { title: 'Email', cell: (c) => c.email || '' },
    ],
  },
};

export function entityListPage(container, kind) {
  const k = KINDS[kind];
  const table = pagedTable({
    search: `Search ${k.title.toLowerCase()}`,
    sortProperty: 'createdTime',
    columns: k.columns,
    load: (s) => page(k.list, s),
    onOpen: (e) => { location.hash = `#/${kind}/${e.id.id}`; },
  });
  table.el.id = `${kind}-table`;
  fill(container, h('div', { class: 'page-head' }, h('h1', {}, k.title)), table.el);
}

export function entityPage(container, kind, id) {
  const k = KINDS[kind];
  let dispose = null;
  const head = h('div', { class: 'page-head' }, h('a', { href: `#/${kind}`, class: 'back' }, `‹ ${k.title}`));
  fill(container, head, h('p', { class: 'hint' }, 'Loading…'));
  (async () => {
    let entity;
    try { entity = await get(k.item(id)); } catch (e) { fill(container, head, h('div', { class: 'error' }, e.message)); return; }
    const name = entity.name ?? entity.title;
    const list = [{ name: 'Details', render: (panel) => fill(panel, detailsTable(kind, entity)) }];
    if (kind !== 'customers') {
      list.push({ name: 'Latest telemetry', render: (panel) => telemetryPanel(panel, k.entityType, id) });
      list.push({ name: 'Attributes', render: (panel) => attributesPanel(panel, k.entityType, id) });
    } else {
      list.push({ name: 'Devices', render: (panel) => customerEntities(panel, id, 'devices') });
      list.push({ name: 'Assets', render: (panel) => customerEntities(panel, id, 'assets') });
    }
    const t = tabs(list, kind === 'customers' ? 0 : 1);
    dispose = t.dispose;
    fill(container, head, h('h1', { class: 'entity-name' }, name), h('p', { class: 'hint' }, `${k.one} · ${entity.type || ''}`), t);
  })();
  return () => dispose?.();
}

function detailsTable(kind, e) {
  const rows = [
    ['Id', e.id.id], ['Created time', fmtTime(e.createdTime)], ['Name', e.name ?? e.title],
  ];
  if (kind !== 'customers') {
    rows.push(['Type', e.type], ['Label', e.label || '']);
    if (e.customerId && e.customerId.id !== '13814000-1dd2-11b2-8080-808080808080') {
      rows.push(['Customer', h('a', { href: `#/customers/${e.customerId.id}` }, e.customerId.id)]);
    }
    const by = e.additionalInfo?.createdByIntegration;
    if (by) rows.push(['Created by integration', h('a', { href: `#/integrations/${by.id}` }, by.id)]);
  }
  return h('table', { class: 'kv-table' }, h('tbody', {}, rows.map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', {}, v)))));
}

function customerEntities(panel, customerId, kind) {
  const k = KINDS[kind];
  const table = pagedTable({
    search: false, columns: k.columns, sortProperty: 'createdTime',
    load: (s) => page(`/api/customer/${customerId}/${kind}`, s),
    onOpen: (e) => { location.hash = `#/${kind}/${e.id.id}`; },
  });
  fill(panel, table.el);
}

/** Latest values (refreshed every 3 s) and a chart of the history over a chosen range. */
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

  async function loadLatest() {
    const latest = await get(`/api/plugins/telemetry/${entityType}/${id}/values/timeseries`);
    const rows = Object.entries(latest).sort(([a], [b]) => a.localeCompare(b)).map(([key, points]) => {
      const p = points[0] || {};
      return h('tr', { dataset: { key } }, h('td', {}, fmtTime(p.ts)), h('td', { class: 'key' }, key), h('td', { class: 'value' }, String(p.value ?? '')));
    });
    if (!rows.length) rows.push(h('tr', {}, h('td', { colspan: 3, class: 'empty' }, 'No telemetry yet')));
    tbody.replaceChildren(...rows);
    const newKeys = Object.keys(latest).sort();
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
  const timer = setInterval(() => { if (!document.hidden) loadLatest().catch(() => {}); }, 3000);
  return () => { clearInterval(timer); window.removeEventListener('resize', resize); plot?.destroy(); };
}

function attributesPanel(panel, entityType, id) {
  const scope = h('select', { name: 'scope', 'aria-label': 'Attribute scope' },
    ['CLIENT_SCOPE', 'SERVER_SCOPE', 'SHARED_SCOPE'].map((s) => h('option', { value: s }, s.replace('_SCOPE', '').toLowerCase().replace(/^./, (c) => c.toUpperCase()) + ' attributes')));
  const tbody = h('tbody');
  const table = h('table', { class: 'data', id: 'attributes' },
    h('thead', {}, h('tr', {}, h('th', {}, 'Last update time'), h('th', {}, 'Key'), h('th', {}, 'Value'))), tbody);
  async function load() {
    try {
      const list = await get(`/api/plugins/telemetry/${entityType}/${id}/values/attributes/${scope.value}`);
      const rows = list.sort((a, b) => a.key.localeCompare(b.key)).map((a) => h('tr', {},
        h('td', {}, fmtTime(a.lastUpdateTs)), h('td', { class: 'key' }, a.key),
        h('td', { class: 'value' }, typeof a.value === 'object' ? JSON.stringify(a.value) : String(a.value))));
      if (!rows.length) rows.push(h('tr', {}, h('td', { colspan: 3, class: 'empty' }, 'No attributes in this scope')));
      tbody.replaceChildren(...rows);
    } catch (e) {
      fill(tbody, h('tr', {}, h('td', { colspan: 3, class: 'error' }, e.message)));
    }
  }
  scope.addEventListener('change', load);
  fill(panel, h('div', { class: 'toolbar' }, field('Scope', scope), h('span', { class: 'spacer' }), h('button', { class: 'secondary small', onclick: load }, 'Refresh')), table);
  load();
}
