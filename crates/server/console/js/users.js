// Security → Users (tenant administrators only): the tenant's administrators and customer users,
// and a customer's Users tab. There is no mail server: a new user is invited with an activation
// link shown here with a Copy button, which the administrator passes on; the link leads to the
// console's "Set your password" page. Users are disabled, enabled and deleted from their row;
// a deletion is asked about in the page.

import { h, fill, fmtTime, field, dialog, toast, copyText } from './dom.js';
import { get, post, del, page, currentUser } from './api.js';
import { pagedTable } from './table.js';
import { requireFilled, markInvalid, confirmInPage } from './forms.js';

const AUTHORITIES = { TENANT_ADMIN: 'Tenant administrator', CUSTOMER_USER: 'Customer user' };

/** The Users page: every user of the tenant. */
export function usersPage(container) {
  const table = usersTable({ load: (s) => page('/api/users', s), showCustomer: true });
  const add = h('button', { class: 'primary', id: 'add-user', onclick: () => addUserDialog({ done: table.reload }) }, 'Add user');
  fill(container, h('div', { class: 'page-head' }, h('h1', {}, 'Users'), h('span', { class: 'spacer' }), add), table.el);
}

/** A customer's Users tab: its users, and Add user for this customer. */
export function customerUsersPanel(panel, customerId) {
  const table = usersTable({ load: (s) => page(`/api/customer/${customerId}/users`, s), showCustomer: false });
  const add = h('button', { class: 'primary small', id: 'add-user', onclick: () => addUserDialog({ customerId, done: table.reload }) }, 'Add user');
  fill(panel, h('div', { class: 'toolbar' }, h('span', { class: 'spacer' }), add), table.el);
}

const customerTitles = new Map();
function customerLink(id) {
  const a = h('a', { href: `#/customers/${id}`, class: 'entity-link' }, '…');
  if (!customerTitles.has(id)) customerTitles.set(id, get(`/api/customer/${id}`).then((c) => c.title, () => null));
  customerTitles.get(id).then((title) => fill(a, title ?? `${id} (deleted)`));
  return a;
}

function activated(u) { return !!u.additionalInfo?.userActivated; }

function statusBadge(u) {
  if (!activated(u)) return h('span', { class: 'badge warn' }, 'Pending activation');
  return u.additionalInfo?.userCredentialsEnabled ? h('span', { class: 'badge ok' }, 'Active') : h('span', { class: 'badge off' }, 'Disabled');
}

function usersTable({ load, showCustomer }) {
  customerTitles.clear();
  let table;
  const columns = [
    { title: 'Created time', cell: (u) => fmtTime(u.createdTime), sort: 'createdTime' },
    { title: 'Email', cell: (u) => u.email, sort: 'email', class: 'name' },
    { title: 'Name', cell: (u) => [u.firstName, u.lastName].filter(Boolean).join(' '), sort: 'firstName' },
    { title: 'Authority', cell: (u) => AUTHORITIES[u.authority] || u.authority },
  ];
  if (showCustomer) columns.push({ title: 'Customer', cell: (u) => (u.authority === 'CUSTOMER_USER' ? customerLink(u.customerId.id) : '') });
  columns.push({ title: 'Status', cell: statusBadge }, { title: 'Actions', cell: (u) => rowActions(u, () => table.reload()) });
  table = pagedTable({ search: 'Search users', sortProperty: 'createdTime', columns, empty: 'No users yet', load });
  table.el.id = 'users-table';
  return table;
}

function rowActions(u, reload) {
  const self = u.id.id === currentUser()?.id?.id;
  const buttons = [];
  if (!activated(u)) buttons.push(h('button', { class: 'secondary small', onclick: () => linkDialog(u) }, 'Activation link'));
  if (!self && activated(u)) {
    const enabled = !!u.additionalInfo?.userCredentialsEnabled;
    buttons.push(h('button', { class: 'secondary small', onclick: async () => {
      try {
        await post(`/api/user/${u.id.id}/userCredentialsEnabled?userCredentialsEnabled=${!enabled}`);
        toast(`${u.email} ${enabled ? 'disabled: their sessions have ended' : 'enabled'}`);
        reload();
      } catch (e) { toast(e.message, 'error'); }
    } }, enabled ? 'Disable' : 'Enable'));
  }
  if (!self) {
    buttons.push(h('button', { class: 'danger small', onclick: async () => {
      const yes = await confirmInPage('Delete user', `Delete user “${u.email}”? They can no longer log in. This cannot be undone.`, 'Delete user', { danger: true });
      if (!yes) return;
      try {
        await del(`/api/user/${u.id.id}`);
        toast(`User “${u.email}” deleted`);
        reload();
      } catch (e) { toast(e.message, 'error'); }
    } }, 'Delete'));
  }
  return h('span', { class: 'row-actions' }, buttons);
}

/** Makes a new activation link (the previous one stops working) and shows it with Copy. */
async function linkDialog(u) {
  let link;
  try {
    link = await get(`/api/user/${u.id.id}/activationLink`);
  } catch (e) { toast(e.message, 'error'); return; }
  const d = dialog('Activation link');
  d.body.append(
    h('p', {}, `Send this link to ${u.email}. It opens a page where they set their password; it works once, for 24 hours.`),
    h('div', { class: 'with-button link-box' },
      h('pre', { class: 'code command', id: 'activation-link' }, link),
      h('button', { class: 'secondary small', id: 'copy-link', onclick: () => copyText(link) }, 'Copy')),
    h('p', { class: 'hint' }, 'Asking for the link again makes a new one; this one then stops working.'),
    h('div', { class: 'actions' }, h('button', { class: 'primary', onclick: () => d.close() }, 'Done')));
}

/** Add user: a tenant administrator, or a customer user of a chosen (or the given) customer. */
function addUserDialog({ customerId = null, done }) {
  const d = dialog('Add user');
  const email = h('input', { type: 'email', name: 'email', autocomplete: 'off', 'aria-required': 'true' });
  const first = h('input', { type: 'text', name: 'firstName', autocomplete: 'off' });
  const last = h('input', { type: 'text', name: 'lastName', autocomplete: 'off' });
  const error = h('div', { class: 'error', role: 'alert' });
  const fields = [field('Email *', email), h('div', { class: 'row' }, field('First name', first), field('Last name', last))];
  let authority = null;
  let customer = null;
  if (!customerId) {
    authority = h('select', { name: 'authority' },
      Object.entries(AUTHORITIES).map(([v, l]) => h('option', { value: v, selected: v === 'CUSTOMER_USER' }, l)));
    const search = h('input', { type: 'search', name: 'customerSearch', placeholder: 'Search customers', 'aria-label': 'Search customers' });
    customer = h('select', { name: 'customer', size: 5, class: 'customer-choice', 'aria-label': 'Customer' });
    const customerBox = h('div', {}, field('Customer *', search), customer);
    let timer = null;
    const loadCustomers = async () => {
      try {
        const found = await page('/api/customers', { pageSize: 50, sortProperty: 'title', sortOrder: 'ASC', textSearch: search.value.trim() });
        fill(customer, found.data.map((c) => h('option', { value: c.id.id }, c.title)));
        if (!found.data.length) fill(customer, h('option', { disabled: true }, search.value.trim() ? 'No results' : 'No customers yet: create one first'));
      } catch (e) { fill(error, e.message); }
    };
    search.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(loadCustomers, 250); });
    authority.addEventListener('change', () => { customerBox.hidden = authority.value !== 'CUSTOMER_USER'; });
    fields.push(field('Authority', authority), customerBox);
    loadCustomers();
  } else {
    fields.push(h('p', { class: 'hint' }, 'A customer user of this customer: they see only its devices and assets.'));
  }
  const save = h('button', { class: 'primary', type: 'submit' }, 'Add');
  const form = h('form', { novalidate: true, onsubmit: async (e) => {
    e.preventDefault();
    fill(error);
    if (!requireFilled([[email, 'Email is required']])) return;
    const role = customerId ? 'CUSTOMER_USER' : authority.value;
    const owner = customerId || (role === 'CUSTOMER_USER' ? customer.value : null);
    if (role === 'CUSTOMER_USER' && !owner) { fill(error, 'Choose the customer'); return; }
    const body = { email: email.value.trim(), authority: role, firstName: first.value.trim() || null, lastName: last.value.trim() || null };
    if (owner) body.customerId = { entityType: 'CUSTOMER', id: owner };
    save.disabled = true;
    try {
      const saved = await post('/api/user?sendActivationMail=false', body);
      d.close();
      toast(`User ${saved.email} added`);
      done();
      linkDialog(saved);
    } catch (err) {
      save.disabled = false;
      if (err.status === 400 && /email/i.test(err.message)) markInvalid(email, err.message);
      else fill(error, err.message);
    }
  } }, fields, error, h('div', { class: 'actions' }, save, h('button', { class: 'secondary', type: 'button', onclick: () => d.close() }, 'Cancel')));
  d.body.append(form);
  email.focus();
}
