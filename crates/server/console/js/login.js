import { h } from './dom.js';
import { login, activate } from './api.js';

/** The login page: the same users and passwords as the REST API. */
export function loginPage(root, { onLoggedIn }) {
  const username = h('input', { type: 'email', name: 'username', autocomplete: 'username', required: true, placeholder: 'tenant@thingsboard.org' });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const error = h('div', { class: 'error', role: 'alert' });
  const button = h('button', { type: 'submit', class: 'primary' }, 'Log in');
  const form = h('form', {
    class: 'login-card',
    onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = '';
      button.disabled = true;
      try {
        await login(username.value.trim(), password.value);
        onLoggedIn();
      } catch (err) {
        error.textContent = err.message;
      } finally {
        button.disabled = false;
      }
    },
  },
  h('div', { class: 'brand big' }, h('img', { src: '/assets/favicon.svg', alt: '' }), h('span', {}, 'coapgate')),
  h('h1', {}, 'Log in to see your devices'),
  h('label', { class: 'field' }, h('span', { class: 'label' }, 'Username (email)'), username),
  h('label', { class: 'field' }, h('span', { class: 'label' }, 'Password'), password),
  error, button);
  root.replaceChildren(h('div', { class: 'login-page' }, form));
  username.focus();
}

/**
 * "Set your password": where an invited user's activation link leads. The token comes from the
 * link; the password must meet the server's policy (its message is shown as is). Once set, the
 * user is logged in.
 */
export function activationPage(root, token, { onActivated }) {
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'new-password', required: true, minlength: 6 });
  const repeat = h('input', { type: 'password', name: 'repeat', autocomplete: 'new-password', required: true });
  const error = h('div', { class: 'error', role: 'alert' });
  const button = h('button', { type: 'submit', class: 'primary' }, 'Set password');
  const form = h('form', {
    class: 'login-card',
    novalidate: true,
    onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = '';
      if (!password.value) { error.textContent = 'Enter a password'; password.focus(); return; }
      if (password.value !== repeat.value) { error.textContent = 'The two passwords differ'; repeat.focus(); return; }
      button.disabled = true;
      try {
        await activate(token, password.value);
        onActivated();
      } catch (err) {
        error.textContent = err.message;
      } finally {
        button.disabled = false;
      }
    },
  },
  h('div', { class: 'brand big' }, h('img', { src: '/assets/favicon.svg', alt: '' }), h('span', {}, 'coapgate')),
  h('h1', {}, 'Set your password'),
  token ? null : h('p', { class: 'error' }, 'This link has no activation token: ask your administrator for a new link.'),
  h('label', { class: 'field' }, h('span', { class: 'label' }, 'New password'), password),
  h('label', { class: 'field' }, h('span', { class: 'label' }, 'Repeat the password'), repeat),
  h('p', { class: 'hint' }, 'At least 6 characters.'),
  error, button);
  root.replaceChildren(h('div', { class: 'login-page' }, form));
  password.focus();
}
