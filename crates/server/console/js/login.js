import { h } from './dom.js';
import { login } from './api.js';

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
