// A table paged on the server: the browser only ever holds one page, so it stays fast with
// any number of rows.

import { h, fill } from './dom.js';

/** How many numbered page buttons the pager shows around the current page. */
const PAGE_BUTTONS = 5;

/**
 * options: columns [{title, cell(row) -> string|Node, sort?}], load({page, pageSize, textSearch,
 * sortProperty, sortOrder}) -> PageData, onOpen(row), search (placeholder or false),
 * pageSize, toolbar [nodes], sortProperty, sortOrder, empty (text for a list with nothing in it
 * at all; a search that finds nothing says "No results").
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
  const numbers = h('span', { class: 'page-numbers' });
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
  // Sortable headers are buttons for the keyboard; the active one shows ▲ (ascending) or ▼
  // and says so in aria-sort.
  const headers = options.columns.map((c) => {
    if (!c.sort) return { th: h('th', { scope: 'col' }, c.title) };
    const mark = h('span', { class: 'sort-mark', 'aria-hidden': 'true' });
    const th = h('th', {
      scope: 'col', class: 'sortable', tabindex: 0,
      onclick: () => sortBy(c.sort),
      onkeydown: (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sortBy(c.sort); } },
    }, c.title, mark);
    return { th, mark, sort: c.sort };
  });
  function sortBy(property) {
    if (state.sortProperty === property) state.sortOrder = state.sortOrder === 'ASC' ? 'DESC' : 'ASC';
    else { state.sortProperty = property; state.sortOrder = 'ASC'; }
    showSort();
    go(0);
  }
  function showSort() {
    for (const { th, mark, sort } of headers) {
      if (!sort) continue;
      const active = sort === state.sortProperty;
      th.setAttribute('aria-sort', active ? (state.sortOrder === 'ASC' ? 'ascending' : 'descending') : 'none');
      th.classList.toggle('sorted', active);
      fill(mark, active ? (state.sortOrder === 'ASC' ? ' ▲' : ' ▼') : '');
    }
  }
  showSort();
  const table = h('table', { class: 'data' }, h('thead', {}, h('tr', {}, headers.map((x) => x.th))), tbody);
  const el = h('div', { class: 'paged' },
    h('div', { class: 'toolbar' }, search, h('span', { class: 'spacer' }), options.toolbar || []),
    h('div', { class: 'table-wrap' }, table),
    status,
    h('div', { class: 'pager' },
      h('label', { class: 'page-size' }, h('span', {}, 'Rows per page '), sizeSelect),
      info,
      h('span', { class: 'page-buttons' }, prev, numbers, next)));

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
    if (!rows.length) {
      // Past the last page (rows deleted meanwhile): show the last page that has rows.
      if (state.page > 0 && data.totalElements > 0) { go(data.totalPages - 1); return; }
      const text = state.textSearch ? 'No results' : (options.empty || 'No results');
      rows.push(h('tr', {}, h('td', { colspan: options.columns.length, class: 'empty' }, text)));
    }
    tbody.replaceChildren(...rows);
    info.dataset.total = data.totalElements;
    if (data.totalElements) {
      const first = state.page * state.pageSize + 1;
      const last = state.page * state.pageSize + data.data.length;
      fill(info, `${first}–${last} of ${data.totalElements}`, `  ·  page ${state.page + 1} of ${data.totalPages}`);
    } else {
      fill(info);
    }
    fill(numbers, pageButtons(data.totalPages));
    prev.disabled = state.page === 0;
    next.disabled = !data.hasNext;
    prev.hidden = next.hidden = data.totalPages <= 1;
  }
  /** Up to PAGE_BUTTONS numbered buttons centred on the current page, the first and last always. */
  function pageButtons(pages) {
    if (pages <= 1) return [];
    let from = Math.max(0, state.page - Math.floor(PAGE_BUTTONS / 2));
    const to = Math.min(pages, from + PAGE_BUTTONS);
    from = Math.max(0, to - PAGE_BUTTONS);
    const button = (n) => h('button', {
      class: `page-num small ${n === state.page ? 'primary' : 'secondary'}`,
      'aria-label': `Page ${n + 1}`, 'aria-current': n === state.page ? 'page' : false,
      onclick: () => go(n),
    }, String(n + 1));
    const out = [];
    if (from > 0) out.push(button(0), from > 1 ? h('span', { class: 'page-gap' }, '…') : null);
    for (let n = from; n < to; n++) out.push(button(n));
    if (to < pages) out.push(to < pages - 1 ? h('span', { class: 'page-gap' }, '…') : null, button(pages - 1));
    return out;
  }
  go(0);
  return { el, reload: () => go(state.page), state, get total() { return total; } };
}
