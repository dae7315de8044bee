// A table paged on the server: the browser only ever holds one page, so it stays fast with
// any number of rows.

import { h, fill } from './dom.js';

/**
 * options: columns [{title, cell(row) -> string|Node, sort?}], load({page, pageSize, textSearch,
 * sortProperty, sortOrder}) -> PageData, onOpen(row), search (placeholder or false),
 * pageSize, toolbar [nodes], sortProperty, sortOrder, empty (text).
 */
export function pagedTable(options) {
  const state = {
    page: 0, pageSize: options.pageSize || 10, textSearch: '',
    sortProperty: options.sortProperty, sortOrder: options.sortOrder || 'DESC',
  };
  const tbody = h('tbody');
  const info = h('span', { class: 'page-info' });
  const status = h('div', { class: 'table-status' });
  const prev = h('button', { class: 'secondary small', 'aria-label': 'Previous page', onclick: () => go(state.page - 1) }, '‹ Prev');
  const next = h('button', { class: 'secondary small', 'aria-label': 'Next page', onclick: () => go(state.page + 1) }, 'Next ›');
  const sizeSelect = h('select', { 'aria-label': 'Rows per page', onchange: () => { state.pageSize = +sizeSelect.value; go(0); } },
    [10, 20, 50, 100].map((n) => h('option', { value: n, selected: n === state.pageSize }, String(n))));
  let searchTimer = null;
  const search = options.search === false ? null : h('input', {
    type: 'search', class: 'search', placeholder: options.search || 'Search', 'aria-label': 'Search',
    oninput: () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => { state.textSearch = search.value.trim(); go(0); }, 250);
    },
  });
  const headRow = h('tr', {}, options.columns.map((c) => {
    if (!c.sort) return h('th', {}, c.title);
    const th = h('th', { class: 'sortable', onclick: () => {
      if (state.sortProperty === c.sort) state.sortOrder = state.sortOrder === 'ASC' ? 'DESC' : 'ASC';
      else { state.sortProperty = c.sort; state.sortOrder = 'ASC'; }
      go(0);
    } }, c.title);
    return th;
  }));
  const table = h('table', { class: 'data' }, h('thead', {}, headRow), tbody);
  const el = h('div', { class: 'paged' },
    h('div', { class: 'toolbar' }, search, h('span', { class: 'spacer' }), options.toolbar || []),
    h('div', { class: 'table-wrap' }, table),
    status,
    h('div', { class: 'pager' }, h('span', {}, 'Rows per page '), sizeSelect, info, prev, next));

  let seq = 0;
  let total = 0;
  async function go(page) {
    state.page = Math.max(0, page);
    const mine = ++seq;
    el.classList.add('loading');
    try {
      const data = await options.load({ ...state });
      if (mine !== seq) return;
      total = data.totalElements;
      render(data);
      fill(status);
    } catch (e) {
      if (mine !== seq) return;
      fill(status, h('div', { class: 'error' }, e.message));
    } finally {
      if (mine === seq) el.classList.remove('loading');
    }
  }
  function render(data) {
    const rows = data.data.map((row) => {
      const tr = h('tr', options.onOpen ? { class: 'clickable', tabindex: 0, onclick: (e) => {
        if (e.target.closest('button, a, input, select')) return;
        options.onOpen(row);
      }, onkeydown: (e) => { if (e.key === 'Enter') options.onOpen(row); } } : {},
      options.columns.map((c) => h('td', c.class ? { class: c.class } : {}, c.cell(row))));
      return tr;
    });
    if (!rows.length) rows.push(h('tr', {}, h('td', { colspan: options.columns.length, class: 'empty' }, options.empty || 'Nothing found')));
    tbody.replaceChildren(...rows);
    const first = data.totalElements ? state.page * state.pageSize + 1 : 0;
    const last = state.page * state.pageSize + data.data.length;
    fill(info, `${first}–${last} of ${data.totalElements}`, `  ·  page ${data.totalElements ? state.page + 1 : 0} of ${data.totalPages}`);
    info.dataset.total = data.totalElements;
    prev.disabled = state.page === 0;
    next.disabled = !data.hasNext;
  }
  go(0);
  return { el, reload: () => go(state.page), state, get total() { return total; } };
}
