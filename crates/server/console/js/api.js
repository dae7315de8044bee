// The REST API client: the same endpoints, tokens and error JSON as every other client.
// Tokens live in sessionStorage (gone when the tab closes); a 401 is retried once after
// refreshing the access token with the refresh token.

const TOKEN = 'coapgate.token';
const REFRESH = 'coapgate.refreshToken';

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let onLoggedOut = () => {};
export function setLoggedOutHandler(f) { onLoggedOut = f; }

export function loggedIn() { return !!sessionStorage.getItem(TOKEN); }

export async function login(username, password) {
  const r = await fetch('/api/auth/login', {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ username, password }),
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new ApiError(r.status, body.message || `Login failed (${r.status})`);
  storeTokens(body);
}

/**
 * Sets an invited user's first password with the token of its activation link; the answer is
 * a token pair, so the user is logged in.
 */
export async function activate(activateToken, password) {
  const r = await fetch('/api/noauth/activate?sendActivationMail=false', {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ activateToken, password }),
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new ApiError(r.status, body.message || `Activation failed (${r.status})`);
  storeTokens(body);
}

// Who is logged in (`/api/auth/user`), set by the shell: pages show a customer user only what
// its authority allows, and list its customer's entities rather than the tenant's.
let me = null;
export function setCurrentUser(user) { me = user; }
export function currentUser() { return me; }
/** The logged-in customer user's customer id; null for a tenant administrator. */
export function myCustomerId() { return me?.authority === 'CUSTOMER_USER' ? me.customerId?.id ?? null : null; }

function storeTokens(body) {
  sessionStorage.setItem(TOKEN, body.token);
  sessionStorage.setItem(REFRESH, body.refreshToken);
}

export function logout() {
  const token = sessionStorage.getItem(TOKEN);
  if (token) {
    fetch('/api/auth/logout', { method: 'POST', headers: { 'X-Authorization': `Bearer ${token}` } }).catch(() => {});
  }
  sessionStorage.removeItem(TOKEN);
  sessionStorage.removeItem(REFRESH);
}

let refreshing = null;
async function refreshToken() {
  const refresh = sessionStorage.getItem(REFRESH);
  if (!refresh) return false;
  refreshing ??= fetch('/api/auth/token', {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ refreshToken: refresh }),
  }).then(async (r) => {
    if (!r.ok) return false;
    storeTokens(await r.json());
    return true;
  }).catch(() => false).finally(() => { refreshing = null; });
  return refreshing;
}

/** Calls the API; returns the parsed JSON (or null for an empty body), throws ApiError. */
export async function api(method, path, body, retried = false) {
  const headers = { 'X-Authorization': `Bearer ${sessionStorage.getItem(TOKEN) || ''}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (r.status === 401 && !retried) {
    if (await refreshToken()) return api(method, path, body, true);
    logout();
    onLoggedOut();
    throw new ApiError(401, 'Session expired, please log in again');
  }
  const text = await r.text();
  let json = null;
  if (text) {
    try { json = JSON.parse(text); } catch { json = text; }
  }
  if (!r.ok) throw new ApiError(r.status, (json && json.message) || `${method} ${path} failed with ${r.status}`);
  return json;
}

export const get = (path) => api('GET', path);
export const post = (path, body) => api('POST', path, body);
export const del = (path) => api('DELETE', path);

/** Builds a query string, skipping empty values. */
export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') u.set(k, v);
  const s = u.toString();
  return s ? `?${s}` : '';
}

/** A ThingsBoard page: `{data, totalPages, totalElements, hasNext}`. */
export function page(path, { page = 0, pageSize = 10, textSearch, sortProperty, sortOrder, ...rest } = {}) {
  return get(path + qs({ page, pageSize, textSearch, sortProperty, sortOrder, ...rest }));
}

/**
 * Live latest values of an entity over ThingsBoard's WebSocket API (`/api/ws`, authenticated by
 * the first message, as the token never goes into a URL that proxies log). `onData` gets
 * ThingsBoard's update data `{key: [[ts, "value"], …]}`: first the stored latest values, then
 * every value once it is stored. `onFail` is called once if the socket cannot be used (refused
 * token, closed by the server, no WebSocket on the way); the caller then polls. Returns the
 * function that ends the subscription.
 */
export function subscribeTimeseries(entityType, entityId, onData, onFail) {
  let ended = false;
  const fail = () => { if (!ended) { ended = true; onFail(); } };
  let ws;
  try {
    ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/api/ws`);
  } catch {
    fail();
    return () => {};
  }
  ws.onopen = () => ws.send(JSON.stringify({
    authCmd: { cmdId: 0, token: sessionStorage.getItem(TOKEN) },
    cmds: [{ type: 'TIMESERIES', cmdId: 1, entityType, entityId }],
  }));
  ws.onmessage = (event) => {
    const update = JSON.parse(event.data);
    if (update.errorCode) { fail(); ws.close(); return; }
    if (update.data) onData(update.data);
  };
  ws.onclose = fail;
  return () => { ended = true; ws.close(); };
}
