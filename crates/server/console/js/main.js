// The console's shell: login gate, navigation and a router on the URL fragment (#/devices),
// so no console path can ever shadow an API path. A customer user sees only its customer's
// pages (Devices, Assets, its customer): the navigation and the routes follow its authority,
// as the API's answers do.

import { h, fill } from './dom.js';
import { get, loggedIn, logout, setLoggedOutHandler, setCurrentUser, myCustomerId } from './api.js';
import { loginPage, activationPage } from './login.js';
import { convertersPage, converterPage } from './converters.js';
import { integrationsPage, integrationWizard, integrationPage } from './integrations.js';
import { entityListPage, entityPage } from './entities.js';
import { usersPage } from './users.js';

const root = document.getElementById('app');

const routes = [
  [/^\/converters$/, () => convertersPage],
  [/^\/converters\/new$/, () => (c) => converterPage(c, null)],
  [/^\/converters\/([\w-]+)(?:\/(events))?$/, (m) => (c) => converterPage(c, m[1], m[2])],
  [/^\/integrations$/, () => integrationsPage],
  [/^\/integrations\/new$/, () => integrationWizard],
  [/^\/integrations\/([\w-]+)(?:\/(events))?$/, (m) => (c) => integrationPage(c, m[1], m[2])],
  [/^\/(devices|assets|customers)$/, (m) => (c) => entityListPage(c, m[1])],
  [/^\/(devices|assets|customers)\/([\w-]+)$/, (m) => (c) => entityPage(c, m[1], m[2])],
  [/^\/users$/, () => usersPage],
];

const adminNav = [
  ['Integrations center', [['Data converters', '/converters'], ['Integrations', '/integrations']]],
  ['Entities', [['Devices', '/devices'], ['Assets', '/assets'], ['Customers', '/customers']]],
  ['Security', [['Users', '/users']]],
];

function nav() {
  const customer = myCustomerId();
  return customer ? [['Entities', [['Devices', '/devices'], ['Assets', '/assets'], ['My customer', `/customers/${customer}`]]]] : adminNav;
}

/** Where a user lands: its customer's devices for a customer user. */
function home() {
  return myCustomerId() ? '/devices' : '/integrations';
}

/** The pages a customer user may open (the API refuses it the others anyway). */
function allowed(p) {
  const customer = myCustomerId();
  return !customer || /^\/(devices|assets)(\/[\w-]+)?$/.test(p) || p === `/customers/${customer}`;
}

let cleanup = null;
let user = null;

function path() {
  return (location.hash.replace(/^#/, '') || '/').split('?')[0];
}

async function route() {
  if (typeof cleanup === 'function') cleanup();
  cleanup = null;
  // An invited user's activation link leads here (through /api/noauth/activate), logged in or not.
  if (path() === '/activate') {
    const token = new URLSearchParams(location.hash.split('?')[1] || '').get('activateToken') || '';
    activationPage(root, token, { onActivated: () => { user = null; location.replace('#/'); } });
    return;
  }
  if (!loggedIn()) {
    loginPage(root, { onLoggedIn: () => { user = null; route(); } });
    return;
  }
  if (!user) {
    try {
      user = await get('/api/auth/user');
    } catch {
      return; // the 401 handler shows the login page
    }
    setCurrentUser(user);
  }
  const p = path();
  if (p === '/login' || p === '/') {
    location.replace(`#${home()}`); // its hashchange routes again
    return;
  }
  const main = h('main', { class: 'content', id: 'content' });
  root.replaceChildren(shell(p, main));
  for (const [re, make] of routes) {
    const m = p.match(re);
    if (m && allowed(p)) {
      cleanup = make(m)(main);
      return;
    }
  }
  fill(main, h('h1', {}, 'Not found'), h('p', {}, 'No such page in the console.'));
}

function shell(p, main) {
  const links = nav().map(([group, items]) => h('div', { class: 'nav-group' },
    h('div', { class: 'nav-title' }, group),
    items.map(([label, href]) => h('a', {
      href: `#${href}`, class: p === href || p.startsWith(`${href}/`) ? 'active' : '',
      'aria-current': p.startsWith(href) ? 'page' : false,
    }, label))));
  const brand = (cls) => h('a', { class: cls, href: `#${home()}` }, h('img', { src: '/assets/favicon.svg', alt: '' }), h('span', {}, 'coapgate'));
  const sidebar = h('nav', { class: 'sidebar', id: 'sidebar', 'aria-label': 'Main' }, brand('brand'), links);
  // On a phone the navigation folds away behind a Menu button in the top bar (CSS decides when);
  // every page change draws the shell again, so the menu is closed on the new page.
  const layout = h('div', { class: 'layout' });
  const toggle = h('button', {
    class: 'secondary small nav-toggle', id: 'nav-toggle', 'aria-controls': 'sidebar', 'aria-expanded': 'false',
    onclick: () => {
      const open = layout.classList.toggle('nav-open');
      toggle.setAttribute('aria-expanded', String(open));
    },
  }, '☰ Menu');
  layout.append(sidebar,
    h('div', { class: 'main' },
      h('header', { class: 'topbar' },
        toggle, brand('brand topbar-brand'),
        h('span', { class: 'spacer' }),
        h('span', { class: 'user', title: user?.authority || '' }, user?.email || ''),
        h('button', { class: 'secondary small', id: 'logout', onclick: () => { logout(); user = null; setCurrentUser(null); location.hash = '#/login'; route(); } }, 'Log out')),
      main));
  return layout;
}

setLoggedOutHandler(() => { user = null; setCurrentUser(null); route(); });
window.addEventListener('hashchange', route);
route();
