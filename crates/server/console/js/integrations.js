// Integrations center → Integrations: the list with status and message counts, the creation
// wizard of the seed tutorial, the details page (enable/disable, endpoint URL, remote key and
// secret) and the Events tab.

import { h, fill, fmtTime, toast, field, checkbox, tabs, keyValueRows, copyText, dialog } from './dom.js';
import { get, post, del, page } from './api.js';
import { pagedTable } from './table.js';
import { converterForm, debugSettingsControl } from './converters.js';
import { eventsPanel } from './events.js';
import { markInvalid, confirmInPage, guardUnsaved } from './forms.js';

/** A random UUID v4 (crypto.randomUUID needs a secure context; getRandomValues does not). */
function uuid4() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const x = [...b].map((v) => v.toString(16).padStart(2, '0')).join('');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

/** 20 lower-case letters and digits, as the server makes them; bytes of 252 and more are
 * drawn again so that every character is equally likely (252 = 7 × 36). */
function randomSecret() {
  const chars = 'abcdefghijklmnopqrstuvwxyz0123456789';
  let out = '';
  while (out.length < 20) {
    for (const v of crypto.getRandomValues(new Uint8Array(32))) {
      if (v < 252 && out.length < 20) out += chars[v % chars.length];
    }
  }
  return out;
}

// Remote integrations (`coapgate remote`): the command that starts one, the status badge of the
// list and the live status panel of the details page. The status is the `remoteStatus` the REST
// API adds to a remote integration; every string in it (service id, address, error) comes from
// the server or the remote and is shown as text. (Here rather than in a module of its own: the
// console's files are listed one by one where the binary embeds them.)
/** `{enabled, port, tls}` of the platform's gRPC endpoint for remotes. */
function remoteSettings() {
  return get('/api/coapgate/remoteSettings');
}

/** A status in one word for styling and one line for people: connected, refused or down. */
function remoteState(status) {
  const s = status || {};
  if (s.connected) return { kind: 'ok', text: `Remote: connected (${s.serviceId || 'unnamed'})` };
  // An error older than the last link is history, not the reason it is down now.
  if (s.lastError && (s.lastErrorTime || 0) >= (s.connectedSince || 0)) {
    const refused = /^connection refused:\s*/;
    return refused.test(s.lastError)
      ? { kind: 'err', text: `Remote: refused — ${s.lastError.replace(refused, '')}` }
      : { kind: 'err', text: `Remote: not connected — ${s.lastError}` };
  }
  return { kind: 'warn', text: 'Remote: not connected' };
}

/** The badge of a remote integration's link. */
function remoteBadge(status) {
  const st = remoteState(status);
  return h('span', { class: `badge ${st.kind} remote-badge`, title: st.text }, st.text);
}

/**
 * The Enabled/Disabled badge. An enabled remote integration without a linked remote serves no
 * device (the platform answers its devices 4.04), so it must not look like a working one.
 */
function enabledBadge(integration, status, attrs = {}) {
  const remoteDown = integration.remote && integration.enabled && !status?.connected;
  const kind = !integration.enabled ? 'off' : remoteDown ? 'warn' : 'ok';
  const text = !integration.enabled ? 'Disabled' : remoteDown ? 'Enabled, no remote' : 'Enabled';
  return h('span', { ...attrs, class: `badge ${kind}` }, text);
}

/** The status of an integration from any of the API's shapes (details, list, list infos). */
function statusOf(integration) {
  if (!integration?.remote) return null;
  const s = integration.remoteStatus || integration.status;
  return s && typeof s === 'object' ? s : {};
}

/** "5 s ago", "3 min ago", "2 h ago", "4 days ago"; "" for 0. */
function ago(ms, now = Date.now()) {
  if (!ms) return '';
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} days ago`;
}

function bytes(n) {
  const v = Number(n) || 0;
  if (v < 1024) return `${v} B`;
  if (v < 1024 * 1024) return `${(v / 1024).toFixed(1)} KiB`;
  if (v < 1024 * 1024 * 1024) return `${(v / 1024 / 1024).toFixed(1)} MiB`;
  return `${(v / 1024 / 1024 / 1024).toFixed(2)} GiB`;
}

/** A time as "12 s ago (2026-12-07 08:00:01)"; "—" when never. */
function when(ms) {
  return ms ? `${ago(ms)} (${fmtTime(ms)})` : '—';
}

/** The rows of the status panel: [label, key, value]. */
function statusRows(s) {
  const st = remoteState(s);
  const backlog = s.outboxMaxBytes
    ? `${s.backlogRecords || 0} records, ${bytes(s.backlogBytes)} of ${bytes(s.outboxMaxBytes)}`
    : `${s.backlogRecords || 0} records, ${bytes(s.backlogBytes)}`;
  return [
    ['Link', 'link', h('span', { class: `badge ${st.kind}` }, s.connected ? 'Connected' : 'Not connected')],
    ['Service id', 'serviceId', s.serviceId || '—'],
    ['Address', 'address', s.address || '—'],
    ['Connected since', 'connectedSince', s.connected ? when(s.connectedSince) : '—'],
    ['Last seen', 'lastSeen', when(s.lastSeen)],
    ['Outbox backlog', 'backlog', backlog],
    ['Rate', 'rate', `${Number(s.uplinksPerSecond || 0).toFixed(1)} uplinks/s`],
    ['Received', 'receivedTotal', String(s.receivedTotal || 0)],
    ['Stored / duplicates / rejected', 'totals', `${s.storedTotal || 0} / ${s.duplicatesTotal || 0} / ${s.rejectedTotal || 0}`],
    ['Last error', 'lastError', s.lastError ? h('span', { class: 'err-text' }, `${s.lastError} — ${when(s.lastErrorTime)}`) : '—'],
    ['Versions', 'versions', s.integrationVersion ? `integration ${s.integrationVersion}, converter ${s.converterVersion}` : '—'],
  ];
}

/** The status panel's element; `update(status)` redraws it. */
function remoteStatusPanel() {
  const summary = h('p', { class: 'remote-summary' });
  const body = h('tbody');
  const el = h('section', { class: 'card remote-status', id: 'remote-status', 'aria-live': 'polite' },
    h('h2', {}, 'Remote integration'), summary, h('table', { class: 'kv-table' }, body));
  function update(status) {
    const s = status || {};
    const st = remoteState(s);
    fill(summary, h('span', { class: `badge ${st.kind} remote-badge` }, st.text), ' ',
      s.serviceId || s.lastError ? '' : h('span', { class: 'hint' }, 'No remote has linked since the server started.'));
    body.replaceChildren(...statusRows(s).map(([label, key, value]) => h('tr', { 'data-key': key }, h('th', {}, label), h('td', {}, value))));
  }
  return { el, update };
}

/**
 * Polls `/api/integration/{id}` every 2 s while `active()` and calls `onStatus(integration)`;
 * `stop()` ends it. One request at a time: the next is scheduled when the last one answered.
 */
function pollRemoteStatus(id, onStatus, { active = () => true, intervalMs = 2000 } = {}) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    if (!active()) {
      timer = setTimeout(tick, intervalMs);
      return;
    }
    try {
      const integration = await get(`/api/integration/${id}`);
      if (!stopped) onStatus(integration);
    } catch { /* shown again at the next tick; a 401 goes to the login page */ }
    if (!stopped) timer = setTimeout(tick, intervalMs);
  };
  timer = setTimeout(tick, intervalMs);
  return { stop() { stopped = true; clearTimeout(timer); } };
}

/** The environment that starts `coapgate remote` for this integration, as words. */
function remoteCommand({ key, secret, host, settings, showSecret }) {
  const words = [
    `INTEGRATION_ROUTING_KEY=${key}`,
    `INTEGRATION_SECRET=${showSecret ? secret : '•'.repeat(20)}`,
    `RPC_HOST=${host}`,
    `RPC_PORT=${settings.port || '<the port of the server\'s "remotes" line>'}`,
  ];
  if (settings.tls) words.push('RPC_SSL_ENABLED=true', 'RPC_SSL_CERT=ca.pem');
  words.push('coapgate remote');
  return words.join(' ');
}

/** `{coap: {enabled, port, baseUrl}, dtls: {...}}`: where the server's CoAP endpoints listen,
 * and their base URLs when COAP_BASE_URL / COAP_DTLS_BASE_URL are set. */
function coapSettings() {
  return get('/api/coapgate/coapSettings');
}

/** The host name the browser used to reach the console, bracketed when it is IPv6. */
function browserHost() {
  return location.hostname.includes(':') ? `[${location.hostname}]` : location.hostname;
}

/** What the server derives: `<baseUrl>[/<path>]/i/<routingKey>`. */
function endpointUrl(base, path, key) {
  let url = base.replace(/\/+$/, '');
  const p = (path || '').replace(/^\/+|\/+$/g, '');
  if (p) url += `/${p}`;
  return `${url}/i/${key}`;
}

/**
 * Keeps a "Messages (24 h)" cell current: the server's live counts (stored STATS events plus
 * the counters not stored yet), shown from the list row at once and read again every second,
 * in one request for all the cells on the page, while they are on it and the tab is visible.
 */
function messageCounts(id, cell, initial) {
  const show = (c) => fill(cell, `${c.processed} processed`, c.errors ? h('span', { class: 'err-text' }, ` · ${c.errors} errors`) : '');
  if (initial) show(initial); else fill(cell, '…');
  const poll = messageCounts.poll ??= { cells: new Map(), timer: null };
  poll.cells.set(cell, { id, show });
  const tick = async () => {
    for (const c of poll.cells.keys()) if (!c.isConnected) poll.cells.delete(c);
    if (!poll.cells.size) { poll.timer = null; return; }
    if (!document.hidden) {
      const cells = [...poll.cells.entries()].slice(0, 100);
      try {
        const counts = await get(`/api/coapgate/integrations/messages24h?ids=${[...new Set(cells.map(([, c]) => c.id))].join(',')}`);
        for (const [, c] of cells) if (counts[c.id]) c.show(counts[c.id]);
      } catch {
        for (const [el] of cells) fill(el, '—');
      }
    }
    poll.timer = setTimeout(tick, 1000);
  };
  poll.timer ??= setTimeout(tick, initial ? 1000 : 0);
}

async function setEnabled(id, enabled) {
  const integration = await get(`/api/integration/${id}`);
  integration.enabled = enabled;
  return post('/api/integration', integration);
}

export function integrationsPage(container) {
  const table = pagedTable({
    search: 'Search integrations',
    sortProperty: 'createdTime',
    columns: [
      { title: 'Created time', cell: (i) => fmtTime(i.createdTime), sort: 'createdTime' },
      { title: 'Name', cell: (i) => i.name, sort: 'name' },
      { title: 'Type', cell: (i) => (i.type === 'COAP' ? 'CoAP' : i.type) },
      { title: 'Status', cell: (i) => {
        const status = statusOf(i);
        return h('span', { class: 'status-cell' }, enabledBadge(i, status), status ? remoteBadge(status) : null);
      } },
      { title: 'Messages (24 h)', cell: (i) => {
        const cell = h('span', { class: 'counts' }, '…');
        messageCounts(i.id.id, cell, i.messages24h);
        return cell;
      } },
      { title: '', cell: (i) => h('button', { class: 'secondary small', onclick: async () => {
        try { await setEnabled(i.id.id, !i.enabled); toast(i.enabled ? 'Integration disabled' : 'Integration enabled'); table.reload(); } catch (e) { toast(e.message, 'error'); }
      } }, i.enabled ? 'Disable' : 'Enable') },
    ],
    load: (s) => page('/api/integrationInfos', s),
    onOpen: (i) => { location.hash = `#/integrations/${i.id.id}`; },
    toolbar: [h('a', { class: 'button primary', href: '#/integrations/new', id: 'add-integration' }, '+ Add integration')],
  });
  fill(container, h('div', { class: 'page-head' }, h('h1', {}, 'Integrations')), table.el);
}

/** A required field left empty: shown next to `input`, on the wizard step `step`. */
class FieldError extends Error {
  constructor(message, input, step) {
    super(message);
    this.input = input;
    this.step = step;
  }
}

/** Shows an error of saving next to its field when it has one, else in `line`. */
function showSaveError(e, line, showStep) {
  if (e instanceof FieldError) {
    showStep?.(e.step);
    markInvalid(e.input, e.message);
  } else {
    line.textContent = e.message;
  }
}

/** The sections of an integration's settings; the wizard shows them one at a time. */
function integrationSections(integration, { isNew, onRegenerate }) {
  const i = integration;
  const client = i.configuration?.clientConfiguration || {};
  const sections = {};
  // Basic settings.
  const type = h('select', { name: 'integrationType', 'aria-label': 'Integration type' }, h('option', { value: 'COAP' }, 'CoAP'));
  const name = h('input', { type: 'text', name: 'name', required: true, value: i.name || '' });
  const enabled = checkbox('Enable integration', i.enabled !== false, { name: 'enabled' });
  const allowCreate = checkbox('Allow create devices or assets', i.allowCreateDevicesOrAssets !== false, { name: 'allowCreateDevicesOrAssets' });
  const debug = debugSettingsControl(i.debugSettings);
  sections.basic = h('section', { class: 'step', 'data-step': 'basic' },
    h('h2', {}, 'Basic settings'),
    h('div', { class: 'row' }, field('Integration type', type), field('Name', name)),
    h('div', { class: 'row' }, enabled.el, allowCreate.el), debug.el);

  // Uplink data converter: an existing one or a new one defined inline.
  const mode = { value: 'existing' };
  const converterSelect = h('select', { name: 'converter', 'aria-label': 'Uplink data converter' }, h('option', { value: '' }, 'Loading…'));
  const newBox = h('div', { class: 'inline-converter', hidden: true });
  let newConverter = null;
  const chooseExisting = h('button', { type: 'button', class: 'seg active', id: 'converter-existing' }, 'Select existing');
  const chooseNew = h('button', { type: 'button', class: 'seg', id: 'converter-new' }, 'Create new');
  const existingBox = h('div', {}, field('Uplink data converter', converterSelect));
  const switchMode = (m) => {
    mode.value = m;
    chooseExisting.classList.toggle('active', m === 'existing');
    chooseNew.classList.toggle('active', m === 'new');
    existingBox.hidden = m !== 'existing';
    newBox.hidden = m !== 'new';
    if (m === 'new' && !newConverter) {
      newConverter = converterForm(null, { compact: true });
      newBox.append(newConverter.el);
    }
  };
  chooseExisting.addEventListener('click', () => switchMode('existing'));
  chooseNew.addEventListener('click', () => switchMode('new'));
  page('/api/converters', { pageSize: 1000, sortProperty: 'name', sortOrder: 'ASC' }).then((p) => {
    const uplinks = p.data.filter((c) => c.type === 'UPLINK');
    fill(converterSelect, uplinks.length ? null : h('option', { value: '' }, 'No converters yet: create one'),
      uplinks.map((c) => h('option', { value: c.id.id, selected: c.id.id === i.defaultConverterId?.id }, c.name)));
    if (!uplinks.length && isNew) switchMode('new');
  }).catch((e) => fill(converterSelect, h('option', { value: '' }, e.message)));
  sections.converter = h('section', { class: 'step', 'data-step': 'converter' },
    h('h2', {}, 'Uplink data converter'),
    h('div', { class: 'segmented', role: 'group' }, chooseExisting, chooseNew), existingBox, newBox);

  // Connection.
  const routingKey = i.routingKey || uuid4();
  let secret = i.secret || randomSecret();
  const security = h('select', { name: 'securityMode', 'aria-label': 'Security mode' },
    [['NO_SECURE', 'No secure'], ['DTLS', 'DTLS'], ['MIXED', 'Mixed']].map(([v, l]) => h('option', { value: v, selected: (client.securityMode || 'NO_SECURE') === v }, l)));
  // The base URLs start empty and are filled from the server's view (`coapSettings`) unless the
  // person typed one first; a saved integration keeps what was saved.
  const baseUrl = h('input', { type: 'text', name: 'baseUrl', value: client.baseUrl || '', placeholder: 'coap://host[:port]' });
  const path = h('input', { type: 'text', name: 'path', value: client.path || '', placeholder: 'optional' });
  const dtlsBaseUrl = h('input', { type: 'text', name: 'dtlsBaseUrl', value: client.dtlsBaseUrl || '', placeholder: 'coaps://host[:port]' });
  const dtlsPath = h('input', { type: 'text', name: 'dtlsPath', value: client.dtlsPath || '', placeholder: 'optional' });
  const baseSource = h('span', { class: 'hint', id: 'base-url-source' });
  const dtlsBaseSource = h('span', { class: 'hint', id: 'dtls-base-url-source' });
  const endpoint = h('input', { type: 'text', name: 'coapEndpoint', readonly: true, id: 'coap-endpoint', class: 'mono' });
  const dtlsEndpoint = h('input', { type: 'text', name: 'dtlsCoapEndpoint', readonly: true, class: 'mono' });
  const copyButton = (input, label) => h('button', { type: 'button', class: 'secondary small copy', 'aria-label': `Copy ${label}`, onclick: () => copyText(input.value) }, 'Copy');
  const plainBox = h('div', {}, h('div', { class: 'row' }, field('Base URL', baseUrl, baseSource), field('Path', path)),
    field('CoAP endpoint URL', h('div', { class: 'with-button' }, endpoint, copyButton(endpoint, 'endpoint URL'))));
  const dtlsBox = h('div', {}, h('div', { class: 'row' }, field('DTLS Base URL', dtlsBaseUrl, dtlsBaseSource), field('Path', dtlsPath)),
    field('DTLS CoAP endpoint URL', h('div', { class: 'with-button' }, dtlsEndpoint, copyButton(dtlsEndpoint, 'DTLS endpoint URL'))));
  const dtlsOff = h('p', { class: 'notice', id: 'dtls-off', hidden: true },
    'DTLS and Mixed need the server\'s DTLS endpoint, which is off: start the server with COAP_DTLS_ENABLED=true (a remote integration runs its own).');
  const update = () => {
    endpoint.value = isNew || !client.coapEndpoint || baseUrl.value !== client.baseUrl || path.value !== (client.path || '')
      ? endpointUrl(baseUrl.value, path.value, routingKey) : client.coapEndpoint;
    dtlsEndpoint.value = endpointUrl(dtlsBaseUrl.value, dtlsPath.value, routingKey);
    plainBox.hidden = security.value === 'DTLS';
    dtlsBox.hidden = security.value === 'NO_SECURE';
  };
  for (const input of [security, baseUrl, path, dtlsBaseUrl, dtlsPath]) input.addEventListener('input', update);
  update();
  let coap = null;
  const applyCoapSettings = () => {
    if (!coap) return;
    const offerBase = (input, source, side, scheme, defaultPort, setting) => {
      const hostUrl = `${scheme}://${browserHost()}${side.port && side.port !== defaultPort ? `:${side.port}` : ''}`;
      const offered = side.baseUrl || hostUrl;
      if (!input.value) input.value = offered;
      if (input.value !== offered) {
        fill(source, 'As saved with this integration. ', side.baseUrl
          ? `The server's ${setting} is ${side.baseUrl}.` : `This browser's host with the server's port: ${hostUrl}.`);
      } else if (side.baseUrl) {
        fill(source, `From the server's ${setting}.`);
      } else {
        fill(source, `The host this browser used (${browserHost()}) with the server's port ${side.port}; `
          + `devices that know the server by another name need it here (or ${setting} on the server).`);
      }
    };
    offerBase(baseUrl, baseSource, coap.coap, 'coap', 5683, 'COAP_BASE_URL');
    offerBase(dtlsBaseUrl, dtlsBaseSource, coap.dtls, 'coaps', 5684, 'COAP_DTLS_BASE_URL');
    // DTLS and Mixed need this server's DTLS endpoint unless a remote runs the integration.
    const unavailable = !coap.dtls.enabled && !remote.input.checked;
    for (const option of security.options) {
      if (option.value === 'NO_SECURE') continue;
      option.disabled = unavailable;
      option.textContent = `${option.value === 'DTLS' ? 'DTLS' : 'Mixed'}${unavailable ? ' (DTLS is off on this server)' : ''}`;
    }
    dtlsOff.hidden = !unavailable;
    update();
  };
  coapSettings().then((settings) => { coap = settings; applyCoapSettings(); })
    .catch((e) => fill(baseSource, h('span', { class: 'err-text' }, `The server's CoAP settings could not be read: ${e.message}`)));
  // Execute remotely: the integration key and secret, the secret hidden until asked for, and the
  // command that starts `coapgate remote` with them (its settings are environment variables).
  const remote = checkbox('Execute remotely', !!(i.remote || i.isRemote), { name: 'remote' });
  const keyInput = h('input', { type: 'text', readonly: true, value: routingKey, name: 'routingKey', class: 'mono' });
  const secretInput = h('input', { type: 'password', readonly: true, value: secret, name: 'secret', class: 'mono', autocomplete: 'off' });
  const command = h('pre', { class: 'code command', id: 'remote-command' });
  const commandBox = h('div', { class: 'remote-command' }, h('p', { class: 'hint' }, 'Loading the server\'s settings for remotes…'));
  let settings = null;
  const drawCommand = () => {
    if (!settings) return;
    if (!settings.enabled) {
      fill(commandBox, h('p', { class: 'notice', id: 'remote-off' },
        'Remote integrations are off on this server: start it with INTEGRATIONS_RPC_ENABLED=true'));
      return;
    }
    const words = { key: routingKey, secret, host: location.hostname, settings };
    fill(command, remoteCommand({ ...words, showSecret: secretInput.type === 'text' }));
    fill(commandBox,
      h('div', { class: 'label' }, 'Run it near its devices with'),
      h('div', { class: 'with-button' }, command,
        h('button', { type: 'button', class: 'secondary small copy', 'aria-label': 'Copy command', onclick: () => copyText(remoteCommand({ ...words, showSecret: true })) }, 'Copy')),
      h('p', { class: 'hint' },
        settings.tls ? 'ca.pem: the certificate (PEM) of the authority that signed this server\'s RPC certificate. ' : '',
        'RPC_CLIENT_ID names the remote (default: its host name); its devices send to the remote\'s own CoAP port (COAP_BIND_PORT, default 5683).'));
  };
  remoteSettings().then((s) => { settings = s; drawCommand(); })
    .catch((e) => fill(commandBox, h('div', { class: 'error' }, e.message)));
  const showSecret = h('button', { type: 'button', class: 'secondary small', id: 'show-secret', onclick: () => {
    const hidden = secretInput.type === 'password';
    secretInput.type = hidden ? 'text' : 'password';
    showSecret.textContent = hidden ? 'Hide' : 'Show';
    drawCommand();
  } }, 'Show');
  const regenerate = h('button', { type: 'button', class: 'secondary small', id: 'regenerate-secret', onclick: async () => {
    const ok = await confirmInPage('Regenerate secret',
      onRegenerate
        ? 'A new secret is saved now. The remote linked with the old secret is disconnected and stays refused until it is restarted with the new secret.'
        : 'The integration gets a new secret when you add it.',
      'Regenerate secret', { danger: true });
    if (!ok) return;
    const fresh = randomSecret();
    regenerate.disabled = true;
    try {
      if (onRegenerate) await onRegenerate(fresh);
      secret = fresh;
      secretInput.value = fresh;
      drawCommand();
      toast(onRegenerate ? 'New secret saved: restart the remote with it' : 'New secret');
    } catch (e) {
      toast(e.message, 'error');
    } finally {
      regenerate.disabled = false;
    }
  } }, 'Regenerate secret');
  const remoteBox = h('div', { class: 'remote' },
    h('p', { class: 'hint', id: 'remote-explained' },
      'Executed remotely, the integration runs in coapgate remote near its devices: they send to the remote, '
      + 'this server answers them 4.04, and the integration shows "Enabled, no remote" until a remote links.'),
    field('Integration key', h('div', { class: 'with-button' }, keyInput, copyButton(keyInput, 'integration key'))),
    field('Integration secret', h('div', { class: 'with-button' }, secretInput, showSecret,
      h('button', { type: 'button', class: 'secondary small copy', 'aria-label': 'Copy secret', onclick: () => copyText(secret) }, 'Copy'),
      regenerate)),
    commandBox);
  remote.input.addEventListener('change', () => { remoteBox.hidden = !remote.input.checked; applyCoapSettings(); });
  remoteBox.hidden = !remote.input.checked;
  sections.connection = h('section', { class: 'step', 'data-step': 'connection' },
    h('h2', {}, 'Connection'), field('Security mode', security), dtlsOff, plainBox, dtlsBox,
    h('p', { class: 'hint' }, isNew ? 'The routing key in the URL is assigned now and kept when you add the integration.' : ''),
    remote.el, remoteBox);

  // Advanced settings.
  const description = h('textarea', { name: 'description', rows: 2 }, i.additionalInfo?.description || '');
  const metadata = keyValueRows(i.configuration?.metadata || {});
  sections.advanced = h('section', { class: 'step', 'data-step': 'advanced' },
    h('h2', {}, 'Advanced settings'), field('Description', description), h('div', { class: 'label' }, 'Metadata'), metadata.el);

  /** The integration to save; creates the inline converter first when asked to. A missing
   * field throws a `FieldError` naming the field and the wizard step that shows it. */
  async function value() {
    if (!name.value.trim()) throw new FieldError('Name is required', name, 'basic');
    let converterId = converterSelect.value;
    if (mode.value === 'new') {
      const c = newConverter.value();
      if (!c.name) throw new FieldError('Converter name is required', newConverter.nameInput, 'converter');
      const saved = await post('/api/converter', c);
      converterId = saved.id.id;
      mode.value = 'existing';
      converterSelect.append(h('option', { value: converterId, selected: true }, saved.name));
      switchMode('existing');
    }
    if (!converterId) throw new FieldError('Choose an uplink data converter', converterSelect, 'converter');
    const clientConfiguration = { ...client, securityMode: security.value };
    if (security.value !== 'DTLS') Object.assign(clientConfiguration, { baseUrl: baseUrl.value.trim(), path: path.value.trim() });
    if (security.value !== 'NO_SECURE') Object.assign(clientConfiguration, { dtlsBaseUrl: dtlsBaseUrl.value.trim(), dtlsPath: dtlsPath.value.trim() });
    // The server derives the endpoint URLs from the base URL, path and routing key.
    delete clientConfiguration.coapEndpoint;
    delete clientConfiguration.dtlsCoapEndpoint;
    return {
      ...(i.id ? { id: i.id } : {}),
      name: name.value.trim(),
      type: type.value,
      enabled: enabled.input.checked,
      allowCreateDevicesOrAssets: allowCreate.input.checked,
      remote: remote.input.checked,
      isRemote: remote.input.checked,
      debugSettings: debug.value(),
      defaultConverterId: { entityType: 'CONVERTER', id: converterId },
      routingKey,
      secret,
      configuration: { ...(i.configuration || {}), clientConfiguration, metadata: metadata.value() },
      additionalInfo: { ...(i.additionalInfo || {}), description: description.value },
    };
  }
  return { sections, value, name };
}

/** The endpoint URL as saved by the server, with a copy button. */
function savedEndpoint(integration) {
  const c = integration.configuration?.clientConfiguration || {};
  const rows = [];
  for (const [label, url, id] of [['CoAP endpoint URL', c.coapEndpoint, 'saved-endpoint'], ['DTLS CoAP endpoint URL', c.dtlsCoapEndpoint, 'saved-dtls-endpoint']]) {
    if (!url) continue;
    const input = h('input', { type: 'text', readonly: true, value: url, id, class: 'mono' });
    rows.push(field(label, h('div', { class: 'with-button' }, input,
      h('button', { type: 'button', class: 'secondary small copy', 'aria-label': `Copy ${label}`, onclick: () => copyText(url) }, 'Copy'))));
  }
  // The platform answers a remote integration's devices 4.04 itself: they send to the remote.
  const remote = integration.remote
    ? h('p', { class: 'hint', id: 'remote-endpoint-hint' }, 'Executed remotely: devices send to the remote (coapgate remote) with this path on its own address; this server answers them 4.04.')
    : null;
  return h('div', { class: 'endpoint card' }, rows, remote);
}

export function integrationWizard(container) {
  const form = integrationSections({}, { isNew: true });
  const steps = ['basic', 'converter', 'connection', 'advanced'];
  const titles = ['Basic settings', 'Uplink data converter', 'Connection', 'Advanced settings'];
  let step = 0;
  const error = h('div', { class: 'error', role: 'alert', id: 'wizard-error' });
  form.sections.connection.addEventListener('change', () => { error.textContent = ''; });
  const back = h('button', { class: 'secondary', id: 'wizard-back', onclick: () => show(step - 1) }, 'Back');
  const next = h('button', { class: 'primary', id: 'wizard-next', onclick: () => show(step + 1) }, 'Next');
  const skip = h('button', { class: 'secondary', id: 'wizard-advanced', onclick: () => show(3) }, 'Advanced settings');
  const add = h('button', { class: 'primary', id: 'wizard-add' }, 'Add');
  const stepper = h('ol', { class: 'stepper' }, titles.map((t, n) => h('li', { 'data-n': n }, t)));
  const body = h('div', { class: 'wizard-body' }, Object.values(form.sections));
  function show(n) {
    if (n >= 1 && step === 0 && !form.name.value.trim()) { markInvalid(form.name, 'Name is required'); return; }
    error.textContent = '';
    step = Math.max(0, Math.min(3, n));
    steps.forEach((s, k) => { form.sections[s].hidden = k !== step; });
    [...stepper.children].forEach((li, k) => li.classList.toggle('current', k === step));
    back.hidden = step === 0;
    next.hidden = step >= 2;
    skip.hidden = step !== 2;
    add.hidden = step < 2;
    // CodeMirror editors that were hidden need a refresh to measure themselves.
    body.querySelectorAll('.CodeMirror').forEach((e) => e.CodeMirror?.refresh());
  }
  // Whatever was typed in the wizard is asked about before it is lost.
  let touched = false;
  body.addEventListener('input', () => { touched = true; });
  const disposeGuard = guardUnsaved(() => touched);
  add.addEventListener('click', async () => {
    error.textContent = '';
    add.disabled = true;
    try {
      const saved = await post('/api/integration', await form.value());
      toast('Integration added');
      disposeGuard();
      location.hash = `#/integrations/${saved.id.id}`;
    } catch (e) {
      showSaveError(e, error, (s) => show(steps.indexOf(s)));
    } finally {
      add.disabled = false;
    }
  });
  fill(container,
    h('div', { class: 'page-head' }, h('a', { href: '#/integrations', class: 'back' }, '‹ Integrations')),
    h('h1', {}, 'Add integration'),
    h('div', { class: 'card wizard' }, stepper, body, error, h('div', { class: 'actions' }, back, h('span', { class: 'spacer' }), skip, next, add)));
  show(0);
  return disposeGuard;
}

export function integrationPage(container, id, tab) {
  let dispose = null;
  let disposeGuard = null;
  let left = false;
  let poll = null;
  const head = h('div', { class: 'page-head' }, h('a', { href: '#/integrations', class: 'back' }, '‹ Integrations'));
  fill(container, head, h('p', { class: 'hint' }, 'Loading…'));
  (async () => {
    let integration;
    try { integration = await get(`/api/integration/${id}`); } catch (e) { fill(container, head, h('div', { class: 'error' }, e.message)); return; }
    if (left) return;
    // The Enabled badge, and for a remote integration its link, redrawn by every status poll.
    const badges = h('span', { class: 'status-cell' });
    const panel = remoteStatusPanel();
    const drawStatus = () => {
      const status = statusOf(integration);
      fill(badges, enabledBadge(integration, status, { id: 'integration-status' }), status ? remoteBadge(status) : null);
      panel.el.hidden = !status;
      if (status) panel.update(status);
    };
    drawStatus();
    // Only the status is taken from a poll: the rest of the page may hold unsaved edits.
    poll = pollRemoteStatus(id, (fresh) => {
      integration = { ...integration, remote: fresh.remote, enabled: fresh.enabled, remoteStatus: fresh.remoteStatus };
      drawStatus();
    }, { active: () => !!integration.remote });
    const toggle = h('button', { class: 'secondary', id: 'toggle-enabled' }, integration.enabled ? 'Disable' : 'Enable');
    toggle.addEventListener('click', async () => {
      try {
        integration = await setEnabled(id, !integration.enabled);
        drawStatus();
        toggle.textContent = integration.enabled ? 'Disable' : 'Enable';
        toast(integration.enabled ? 'Integration enabled' : 'Integration disabled');
      } catch (e) { toast(e.message, 'error'); }
    });
    /** Saves a new secret with the integration as stored (not this page's unsaved edits). */
    const saveSecret = async (secret) => {
      const stored = await get(`/api/integration/${id}`);
      stored.secret = secret;
      delete stored.remoteStatus;
      integration = await post('/api/integration', stored);
      drawStatus();
    };
    // Edits in the details are asked about before a navigation loses them, and kept while the
    // Events tab is looked at: the details are built once and shown again as they were.
    let edited = false;
    let detailsEl = null;
    disposeGuard = guardUnsaved(() => edited);
    const details = (tabPanel) => {
      if (detailsEl) {
        fill(tabPanel, detailsEl);
        return;
      }
      const form = integrationSections(integration, { isNew: false, onRegenerate: saveSecret });
      const error = h('div', { class: 'error', role: 'alert' });
      const save = h('button', { class: 'primary', id: 'save-integration' }, 'Save');
      save.addEventListener('click', async () => {
        error.textContent = '';
        save.disabled = true;
        try {
          integration = await post('/api/integration', await form.value());
          edited = false;
          toast('Integration saved');
          drawStatus();
          detailsEl = null;
          details(tabPanel);
        } catch (e) {
          showSaveError(e, error);
        } finally {
          save.disabled = false;
        }
      });
      const remove = h('button', { class: 'danger', onclick: async () => {
        const sure = await confirmInPage('Delete integration?', `Delete the integration "${integration.name}"? Its devices keep their data; uplinks to its URL get 4.04.`, 'Delete', { danger: true });
        if (!sure) return;
        try { edited = false; await del(`/api/integration/${id}`); location.hash = '#/integrations'; } catch (e) { error.textContent = e.message; }
      } }, 'Delete');
      const card = h('div', { class: 'card' }, Object.values(form.sections));
      card.addEventListener('input', () => { edited = true; });
      detailsEl = h('div', { class: 'details' }, panel.el, savedEndpoint(integration), card, error, h('div', { class: 'actions' }, save, remove));
      fill(tabPanel, detailsEl);
      edited = false;
    };
    const t = tabs([
      { name: 'Details', render: details },
      { name: 'Events', render: (tabPanel) => eventsPanel(tabPanel, 'INTEGRATION', id, ['DEBUG_INTEGRATION', 'LC_EVENT', 'STATS', 'ERROR']) },
    ], tab === 'events' ? 1 : 0);
    dispose = t.dispose;
    fill(container, head, h('div', { class: 'title-row' }, h('h1', {}, integration.name), badges, h('span', { class: 'spacer' }), toggle), t);
  })();
  return () => {
    left = true;
    poll?.stop();
    disposeGuard?.();
    dispose?.();
  };
}
