// Shardis dashboard web UI: one plain script, no framework, no external
// resources. Pages: overview, slot map, migrations, groups. Every number
// comes from the dashboard's JSON API; every change goes through it with the
// admin token (asked for once, kept in sessionStorage for this tab).
'use strict';

// ===========================================================================
// Small helpers
// ===========================================================================

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

/** Builds an element: h('td', {class: 'num'}, 'text', child, ...). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function fmtNum(n, digits) {
  if (n === undefined || n === null || Number.isNaN(n)) return '–';
  if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(2) + 'M';
  const d = digits !== undefined ? digits : (Math.abs(n) < 10 && n % 1 !== 0 ? 1 : 0);
  return n.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d });
}

function fmtUs(us) {
  if (us === undefined || us === null || !(us > 0)) return '–';
  if (us < 1000) return us.toFixed(0) + ' µs';
  if (us < 1e6) return (us / 1000).toFixed(us < 10000 ? 2 : 1) + ' ms';
  return (us / 1e6).toFixed(2) + ' s';
}

function fmtBytes(b) {
  if (b === undefined || b === null) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
  return (i === 0 ? b.toFixed(0) : b.toFixed(1)) + ' ' + units[i];
}

function fmtDuration(secs) {
  if (secs === undefined || secs === null || !Number.isFinite(secs)) return '–';
  secs = Math.max(0, Math.round(secs));
  const d = Math.floor(secs / 86400), hr = Math.floor(secs / 3600) % 24;
  const m = Math.floor(secs / 60) % 60, s = secs % 60;
  if (d) return `${d}d ${hr}h`;
  if (hr) return `${hr}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

/** A stable colour per group id (golden-angle hues). */
function groupColor(id) {
  if (id === null || id === undefined) return '#d9dde4';
  const hue = (id * 137.508 + 200) % 360;
  return `hsl(${hue.toFixed(0)}, 62%, 52%)`;
}

/** "0-99,200" -> sorted slot numbers; throws with a message on bad text. */
function parseRanges(text) {
  const out = new Set();
  for (const part of text.split(',').map((p) => p.trim()).filter(Boolean)) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) throw new Error(`"${part}" is not a slot or a range`);
    const a = Number(m[1]), b = m[2] === undefined ? a : Number(m[2]);
    if (a > b || b > 1023) throw new Error(`"${part}" is not within 0-1023`);
    for (let s = a; s <= b; s++) out.add(s);
  }
  return Array.from(out).sort((x, y) => x - y);
}

/** Sorted slot numbers -> "0-99,200". */
function formatRanges(slots) {
  const parts = [];
  let i = 0;
  while (i < slots.length) {
    let j = i;
    while (j + 1 < slots.length && slots[j + 1] === slots[j] + 1) j++;
    parts.push(i === j ? `${slots[i]}` : `${slots[i]}-${slots[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}

function countRanges(text) {
  try { return parseRanges(text).length; } catch (_) { return 0; }
}

// ===========================================================================
// The API, with the admin token
// ===========================================================================

const TOKEN_KEY = 'shardis.adminToken';

class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

/**
 * Calls the API. Errors become ApiError with the API's own text. A change
 * refused for want of the admin token asks for it once and is sent again.
 */
async function api(method, path, body, retried) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && token()) headers.Authorization = 'Bearer ' + token();
  let resp;
  try {
    resp = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, `cannot reach the dashboard: ${e.message}`);
  }
  const text = await resp.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
  if (resp.ok) return json;
  const message = (json && json.error) || text.trim() || `HTTP ${resp.status}`;
  if (resp.status === 401 && method !== 'GET' && !retried) {
    if (await askToken(message)) return api(method, path, body, true);
  }
  let full = message;
  if (json && json.leader) full += ` (leader: ${json.leader.id} at ${json.leader.addr})`;
  if (json && Array.isArray(json.lagging) && json.lagging.length) {
    full += '\nlagging proxies: ' + json.lagging.map((p) => `${p.id} (${p.addr}) at version ${p.applied_version}`).join(', ');
  }
  throw new ApiError(resp.status, full, json);
}

// ---- token dialog ----------------------------------------------------------

let tokenResolve = null;

function askToken(reason) {
  $('#token-text').textContent = (reason ? reason + '\n\n' : '') +
    'Changes need the dashboard\'s admin token. It is kept for this browser tab only.';
  $('#token-input').value = token();
  $('#token-dialog').classList.remove('hidden');
  $('#token-input').focus();
  return new Promise((resolve) => { tokenResolve = resolve; });
}

function closeToken(saved) {
  $('#token-dialog').classList.add('hidden');
  updateTokenButton();
  if (tokenResolve) { const r = tokenResolve; tokenResolve = null; r(saved); }
}

function updateTokenButton() {
  $('#token-button').textContent = token() ? 'Admin token ✓' : 'Admin token';
}

// ---- confirmation dialog -----------------------------------------------------

let confirmResolve = null;

function confirmAction(title, text, okLabel, danger) {
  $('#confirm-title').textContent = title;
  $('#confirm-text').textContent = text;
  const ok = $('#confirm-ok');
  ok.textContent = okLabel || 'Confirm';
  ok.classList.toggle('danger', !!danger);
  $('#confirm').classList.remove('hidden');
  ok.focus();
  return new Promise((resolve) => { confirmResolve = resolve; });
}

function closeConfirm(yes) {
  $('#confirm').classList.add('hidden');
  if (confirmResolve) { const r = confirmResolve; confirmResolve = null; r(yes); }
}

// ---- messages ---------------------------------------------------------------

function toast(text, bad) {
  const t = h('div', { class: 'toast' + (bad ? ' bad' : '') }, text);
  $('#toasts').append(t);
  setTimeout(() => t.remove(), bad ? 8000 : 4000);
}

function showError(el, err) {
  el.textContent = err ? (err.message || String(err)) : '';
  el.classList.toggle('hidden', !err);
}

/** Runs a change after a confirmation; shows the API's error in `errorEl`. */
async function change({ title, text, ok, danger, errorEl, run, done }) {
  if (errorEl) showError(errorEl, null);
  if (!(await confirmAction(title, text, ok, danger))) return;
  try {
    const result = await run();
    if (done) done(result);
    refreshSoon();
  } catch (e) {
    if (errorEl) showError(errorEl, e);
    toast(e.message, true);
  }
}

// ===========================================================================
// State and polling
// ===========================================================================

const S = {
  page: 'overview',
  overview: null,
  stats: null,
  history: null,
  slots: null,
  migrations: null,
  migrationsAvailable: null,
  tick: 0,
};

const inflight = {};

/** Fetches `path` into S[key] unless a fetch of it is still running. */
async function load(key, path) {
  if (inflight[key]) return;
  inflight[key] = true;
  try {
    S[key] = await api('GET', path);
    setBanner(null);
    return true;
  } catch (e) {
    if (e.status === 0) setBanner(e.message);
    throw e;
  } finally {
    inflight[key] = false;
  }
}

function setBanner(text) {
  const b = $('#banner');
  b.textContent = text || '';
  b.classList.toggle('hidden', !text);
}

async function poll(full) {
  S.tick++;
  const t = S.tick;
  const page = S.page;
  const jobs = [load('stats', '/api/v1/stats').then(renderStats).catch(() => {})];
  if (full || page === 'groups' || t % 3 === 1 || !S.overview) {
    jobs.push(load('overview', '/api/v1/overview').then(renderOverview).catch(() => {}));
  }
  if (page === 'overview') {
    jobs.push(load('history', '/api/v1/stats/history').then(renderCharts).catch(() => {}));
  }
  if (page === 'slots' || page === 'migrations') {
    if (full || t % 2 === 1 || !S.slots) {
      jobs.push(load('slots', '/api/v1/slots').then(renderSlotMaps).catch(() => {}));
    }
  }
  if (page === 'migrations') jobs.push(loadMigrations());
  await Promise.all(jobs);
}

let refreshTimer = null;
function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => poll(true), 150);
}

// ===========================================================================
// Pages
// ===========================================================================

function showPage() {
  const [path, query] = (location.hash.replace(/^#\/?/, '') || 'overview').split('?');
  const page = ['overview', 'slots', 'migrations', 'groups'].includes(path) ? path : 'overview';
  S.page = page;
  for (const sec of $$('section.page')) sec.classList.toggle('hidden', sec.dataset.page !== page);
  for (const a of $$('#nav a')) a.classList.toggle('active', a.dataset.page === page);
  const params = new URLSearchParams(query || '');
  if (page === 'migrations' && params.get('slots')) {
    $('#mig-slots').value = params.get('slots');
    migMap.select(parseRangesSafe(params.get('slots')));
  }
  poll(true);
  if (page === 'overview') renderCharts();
}

function parseRangesSafe(text) {
  try { return parseRanges(text); } catch (_) { return []; }
}

// ---- header, tiles, proxies, commands ------------------------------------------

function renderStats() {
  const st = S.stats;
  if (!st) return;
  if (st.time) $('#live').textContent = 'updated ' + new Date(st.time * 1000).toLocaleTimeString();
  $('#stat-qps').textContent = fmtNum(st.ops_per_sec, 0);
  $('#stat-errors').textContent = fmtNum(st.errors_per_sec, 0);
  $('#stat-p50').textContent = fmtUs(st.p50_us);
  $('#stat-p99').textContent = fmtUs(st.p99_us);
  $('#stat-sessions').textContent = fmtNum(st.sessions, 0);
  renderProxies();
  const body = $('#commands-table tbody');
  body.replaceChildren(...(st.commands || []).slice(0, 12).map((c) => h('tr', { dataset: { cmd: c.cmd } },
    h('td', { class: 'mono' }, c.cmd.toUpperCase()),
    h('td', { class: 'num' }, fmtNum(c.ops_per_sec, 0)),
    h('td', { class: 'num' + (c.errors_per_sec > 0 ? ' bad-text' : '') }, fmtNum(c.errors_per_sec, 0)),
    h('td', { class: 'num' }, fmtUs(c.p50_us)),
    h('td', { class: 'num' }, fmtUs(c.p99_us)),
    h('td', { class: 'num' }, fmtNum(c.calls, 0)))));
  if (!body.children.length) body.append(h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'No requests yet.')));
  renderGroupCards();
  renderSlotMaps();
}

function renderOverview() {
  const o = S.overview;
  if (!o) return;
  $('#cluster-name').textContent = o.cluster;
  $('#stat-version').textContent = o.version;
  const role = $('#dash-role');
  const leader = o.dashboard.role === 'leader';
  role.textContent = leader ? 'leader' : 'standby';
  role.className = 'pill ' + (leader ? 'leader' : 'standby');
  role.title = o.dashboard.leader ? `leader: ${o.dashboard.leader.id} at ${o.dashboard.leader.addr}` : 'no leader';
  for (const sel of ['#mig-group', '#assign-group']) fillGroupSelect($(sel), o.groups);
  renderProxies();
  renderGroupCards();
  renderGroupsPage();
}

function fillGroupSelect(select, groups) {
  const want = groups.map((g) => String(g.id)).join(',');
  if (select.dataset.groups === want) return;
  const keep = select.value;
  select.replaceChildren(...groups.map((g) => h('option', { value: g.id }, `group ${g.id}`)));
  if (groups.some((g) => String(g.id) === keep)) select.value = keep;
  select.dataset.groups = want;
}

function renderProxies() {
  const o = S.overview, st = S.stats;
  const rows = new Map();
  for (const p of (o && o.proxies) || []) rows.set(p.id, { reg: p });
  for (const p of (st && st.proxies) || []) rows.set(p.id, Object.assign(rows.get(p.id) || {}, { load: p }));
  const body = $('#proxies-table tbody');
  const trs = [];
  for (const [id, { reg, load }] of [...rows.entries()].sort()) {
    const healthy = reg ? reg.healthy : load && load.up;
    const health = reg ? reg.health : (load && load.up ? 'answering' : (load && load.error) || 'unknown');
    const healthCell = h('td', {},
      h('span', { class: 'pill ' + (healthy ? 'ok' : 'bad') }, healthy ? 'healthy' : 'unhealthy'),
      healthy ? null : h('span', { class: 'sub' }, health),
      load && load.fenced ? h('span', { class: 'sub bad-text' }, 'fenced') : null,
      load && !load.stats_enabled && load.up ? h('span', { class: 'sub warn-text' }, 'stats off') : null,
      reg && reg.lagging ? h('span', { class: 'sub warn-text' }, 'lagging topology') : null);
    trs.push(h('tr', { dataset: { proxy: id } },
      h('td', { class: 'mono' }, id),
      h('td', { class: 'addr' }, (reg || load).addr, h('span', { class: 'sub' }, 'admin ' + (reg || load).admin_addr)),
      healthCell,
      h('td', { class: 'num qps' }, load ? fmtNum(load.ops_per_sec, 0) : '–'),
      h('td', { class: 'num' }, load ? fmtNum(load.errors_per_sec, 0) : '–'),
      h('td', { class: 'num' }, load ? fmtUs(load.p50_us) : '–'),
      h('td', { class: 'num' }, load ? fmtUs(load.p99_us) : '–'),
      h('td', { class: 'num' }, load ? fmtNum(load.sessions, 0) : '–'),
      h('td', { class: 'num' }, reg ? reg.applied_version : (load ? load.topology_version : '–')),
      h('td', { class: 'num' }, fmtDuration(reg ? reg.uptime_secs : load && load.uptime_secs))));
  }
  if (!trs.length) trs.push(h('tr', {}, h('td', { colspan: 10, class: 'muted' }, 'No proxy is registered.')));
  body.replaceChildren(...trs);
}

// ---- groups (overview cards and the groups page) -----------------------------------

function serverLoad(addr) {
  return ((S.stats && S.stats.servers) || []).find((s) => s.addr === addr);
}

function serverRows(g, withActions) {
  return g.servers.map((srv) => {
    const load = serverLoad(srv.addr) || {};
    const rep = srv.replication || {};
    const redisRole = load.redis_role || rep.role;
    const problem = srv.error || load.error;
    const lag = load.lag_bytes !== undefined ? load.lag_bytes : srv.lag_bytes;
    const cells = [
      h('td', { class: 'addr' }, srv.addr),
      h('td', {}, srv.role, redisRole && redisRole !== (srv.role === 'master' ? 'master' : 'slave')
        ? h('span', { class: 'sub bad-text' }, 'Redis says ' + redisRole) : null),
      h('td', {}, problem
        ? h('span', { class: 'bad-text' }, problem)
        : h('span', { class: 'ok-text' }, srv.role === 'replica' ? 'link ' + (load.link_status || rep.master_link_status || '?') : 'up')),
      h('td', { class: 'num' }, fmtBytes(load.used_memory)),
      h('td', { class: 'num' }, fmtNum(load.keys !== undefined ? load.keys : srv.keys, 0)),
      h('td', { class: 'num' }, fmtNum(load.ops_per_sec, 0)),
      h('td', { class: 'num' }, fmtNum(load.connected_clients, 0)),
      h('td', { class: 'num' + (lag > 0 ? ' warn-text' : '') }, srv.role === 'replica' ? fmtBytes(lag) : '–'),
    ];
    if (withActions) {
      cells.push(h('td', {},
        srv.role === 'replica' ? h('button', {
          type: 'button', class: 'small', dataset: { action: 'promote', group: g.id, addr: srv.addr },
          onclick: () => promote(g.id, srv.addr),
        }, 'Promote') : null, ' ',
        h('button', {
          type: 'button', class: 'small ghost', dataset: { action: 'remove', group: g.id, addr: srv.addr },
          onclick: () => removeServer(g.id, srv.addr, srv.role),
        }, 'Remove')));
    }
    return h('tr', { dataset: { server: srv.addr } }, ...cells);
  });
}

function serverTable(g, withActions) {
  const head = ['Server', 'Role', 'State', 'Memory', 'Keys', 'Ops/s', 'Clients', 'Lag'];
  if (withActions) head.push('');
  return h('table', { class: 'grid' },
    h('thead', {}, h('tr', {}, ...head.map((t, i) => h('th', { class: i >= 3 && i < 8 ? 'num' : '' }, t)))),
    h('tbody', {}, ...(g.servers.length ? serverRows(g, withActions)
      : [h('tr', {}, h('td', { colspan: head.length, class: 'muted' }, 'No servers yet.'))])));
}

function groupHead(g, actions) {
  return h('div', { class: 'group-head' },
    h('span', { class: 'swatch', onclick: null, dataset: { color: groupColor(g.id) } }),
    h('h4', {}, `Group ${g.id}`),
    h('span', { class: 'muted' }, g.slot_count ? `${g.slot_count} slots: ${g.slots}` : 'no slots'),
    actions ? h('div', { class: 'actions' }, ...actions) : null);
}

/** Swatches get their colour through the CSSOM (the CSP forbids style attributes). */
function paintSwatches(root) {
  for (const s of $$('.swatch[data-color]', root)) s.style.background = s.dataset.color;
}

function renderGroupCards() {
  const o = S.overview;
  if (!o) return;
  const root = $('#overview-groups');
  root.replaceChildren(...o.groups.map((g) => h('div', { class: 'group', dataset: { group: g.id } },
    groupHead(g), serverTable(g, false))));
  if (!o.groups.length) root.append(h('p', { class: 'muted' }, 'No groups yet: create one on the Groups page.'));
  if (o.unassigned_slots) root.append(h('p', { class: 'warn-text' }, `Unassigned slots: ${o.unassigned_slots}`));
  paintSwatches(root);
}

function renderGroupsPage() {
  const o = S.overview;
  if (!o || S.page !== 'groups') return;
  const root = $('#groups-list');
  // Keep what the operator is typing: rebuild only the tables, not the forms.
  const seen = new Set();
  for (const g of o.groups) {
    seen.add(String(g.id));
    let card = root.querySelector(`.card[data-group="${g.id}"]`);
    if (!card) {
      const addr = h('input', { name: 'addr', placeholder: '127.0.0.1:7005', class: 'server-addr' });
      const force = h('input', { type: 'checkbox', name: 'force', class: 'server-force' });
      const err = h('div', { class: 'error hidden', role: 'alert', id: `group-${g.id}-error` });
      const form = h('form', { class: 'form-row server-form', autocomplete: 'off' },
        h('label', {}, 'Add a server', addr),
        h('label', { class: 'check' }, force, 'force (keep a first server\'s keys)'),
        h('button', { type: 'submit' }, 'Add server'));
      form.addEventListener('submit', (ev) => {
        ev.preventDefault();
        addServer(g.id, addr.value.trim(), force.checked, err);
      });
      card = h('div', { class: 'card', dataset: { group: g.id } },
        h('div', { class: 'head-slot' }), h('div', { class: 'table-slot' }), form, err);
      root.append(card);
    }
    const del = h('button', {
      type: 'button', class: 'small ghost', dataset: { action: 'delete-group', group: g.id },
      onclick: () => deleteGroup(g.id, card.querySelector('.error')),
    }, 'Delete group');
    card.querySelector('.head-slot').replaceChildren(groupHead(g, [del]));
    card.querySelector('.table-slot').replaceChildren(serverTable(g, true));
    paintSwatches(card);
  }
  for (const card of $$('.card[data-group]', root)) {
    if (!seen.has(card.dataset.group)) card.remove();
  }
  if (!o.groups.length && !root.querySelector('.muted')) root.append(h('p', { class: 'muted' }, 'No groups yet.'));
}

// ---- group changes --------------------------------------------------------------

function parseGroupId(text) {
  // Sent as typed: the API checks it and says what is wrong.
  return /^\d+$/.test(text.trim()) ? Number(text.trim()) : text.trim();
}

function createGroup(ev) {
  ev.preventDefault();
  const id = parseGroupId($('#group-id').value);
  change({
    title: `Create group ${id}?`,
    text: 'An empty group is created; add its servers next, then give it slots (assign or migrate).',
    ok: 'Create group', errorEl: $('#group-error'),
    run: () => api('POST', '/api/v1/groups', { id }),
    done: (r) => { toast(r.message); $('#group-id').value = ''; },
  });
}

function deleteGroup(id, errorEl) {
  change({
    title: `Delete group ${id}?`,
    text: 'Only a group that owns no slots can be deleted. Its servers keep running.',
    ok: 'Delete group', danger: true, errorEl,
    run: () => api('DELETE', `/api/v1/groups/${id}`),
    done: (r) => toast(r.message),
  });
}

function addServer(group, addr, force, errorEl) {
  const g = S.overview && S.overview.groups.find((x) => x.id === group);
  const first = !g || !g.servers.length;
  change({
    title: `Add ${addr || '(no address)'} to group ${group}?`,
    text: first
      ? 'It becomes the group\'s master. It must hold no keys, unless "force" is ticked.'
      : `It becomes a replica of ${g.servers[0].addr}: REPLICAOF discards ALL DATA it holds now.`,
    ok: 'Add server', danger: !first, errorEl,
    run: () => api('POST', `/api/v1/groups/${group}/servers`, { addr, force }),
    done: (r) => toast(r.message + (r.warnings && r.warnings.length ? ' — ' + r.warnings.join('; ') : '')),
  });
}

function removeServer(group, addr, role) {
  change({
    title: `Remove ${addr} from group ${group}?`,
    text: role === 'replica'
      ? 'The replica is detached (REPLICAOF NO ONE) and keeps its data.'
      : 'A master can only be removed when it is the last server of a group without slots.',
    ok: 'Remove server', danger: true, errorEl: $(`#group-${group}-error`),
    run: () => api('DELETE', `/api/v1/groups/${group}/servers/${encodeURIComponent(addr)}`),
    done: (r) => toast(r.message),
  });
}

function promote(group, addr) {
  change({
    title: `Promote ${addr} to master of group ${group}?`,
    text: 'Planned switchover: the group\'s slots are held on every proxy, the replica catches up with ' +
      'the master, becomes master, the proxies switch, and the old master becomes its replica. ' +
      'Requests to the group wait for a moment.',
    ok: 'Promote', errorEl: $(`#group-${group}-error`),
    run: () => api('POST', `/api/v1/groups/${group}/promote`, { addr }),
    done: (r) => toast(`${r.master} is now master of group ${r.group}` + (r.failover ? ' (failover: unreplicated writes may be lost)' : '')),
  });
}

function assignSlots(ev) {
  ev.preventDefault();
  const slots = $('#assign-slots').value.trim();
  const group = parseGroupId($('#assign-group').value);
  change({
    title: `Assign slots ${slots} to group ${group}?`,
    text: 'Only unassigned slots can be assigned; owned slots move with a migration.',
    ok: 'Assign', errorEl: $('#assign-error'),
    run: () => api('POST', '/api/v1/slots/assign', { slots, group }),
    done: (r) => toast(r.message),
  });
}

// ===========================================================================
// Charts, drawn on <canvas>
// ===========================================================================

/**
 * Draws time series: [{name, color, points: [[unixSecs, value]]}] over the
 * last `spanSecs`, y from 0 with "nice" ticks formatted by `fmt`.
 */
function drawChart(canvas, series, fmt, spanSecs) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, hgt = canvas.clientHeight;
  if (!w || !hgt) return;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(hgt * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(hgt * dpr);
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, hgt);
  const L = 64, R = 12, T = 10, B = 24;
  const pw = w - L - R, ph = hgt - T - B;
  const all = series.flatMap((s) => s.points);
  const now = all.length ? Math.max(...all.map((p) => p[0])) : Date.now() / 1000;
  const t0 = now - spanSecs;
  let max = Math.max(0, ...all.filter((p) => p[0] >= t0).map((p) => p[1]));
  const step = niceStep(max > 0 ? max / 4 : 1);
  max = Math.max(step * 4, Math.ceil(max / step) * step);
  ctx.font = '11px system-ui, sans-serif';
  ctx.textBaseline = 'middle';
  // Grid and y labels.
  for (let v = 0; v <= max + step / 2; v += step) {
    const y = T + ph - (v / max) * ph;
    ctx.strokeStyle = v === 0 ? '#b9c0cc' : '#eceff3';
    ctx.lineWidth = 1;
    ctx.beginPath(); ctx.moveTo(L, Math.round(y) + 0.5); ctx.lineTo(L + pw, Math.round(y) + 0.5); ctx.stroke();
    ctx.fillStyle = '#6b7484';
    ctx.textAlign = 'right';
    ctx.fillText(fmt(v), L - 6, y);
  }
  // x labels: one per minute, as "-4m".
  ctx.textAlign = 'center';
  ctx.textBaseline = 'top';
  for (let m = 0; m * 60 <= spanSecs; m++) {
    const x = L + pw - (m * 60 / spanSecs) * pw;
    ctx.fillStyle = '#6b7484';
    ctx.fillText(m === 0 ? 'now' : `-${m}m`, x, T + ph + 6);
    ctx.strokeStyle = '#f2f4f7';
    ctx.beginPath(); ctx.moveTo(Math.round(x) + 0.5, T); ctx.lineTo(Math.round(x) + 0.5, T + ph); ctx.stroke();
  }
  if (!all.length) {
    ctx.fillStyle = '#6b7484';
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    ctx.fillText('waiting for data…', L + pw / 2, T + ph / 2);
    return;
  }
  for (const s of series) {
    const pts = s.points.filter((p) => p[0] >= t0);
    if (!pts.length) continue;
    ctx.strokeStyle = s.color;
    ctx.lineWidth = s.width || 2;
    ctx.lineJoin = 'round';
    ctx.beginPath();
    pts.forEach((p, i) => {
      const x = L + ((p[0] - t0) / spanSecs) * pw;
      const y = T + ph - (p[1] / max) * ph;
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

function niceStep(raw) {
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

function legend(el, series) {
  el.replaceChildren(...series.map((s) => {
    const sw = h('span', { class: 'swatch' });
    sw.style.background = s.color;
    return h('span', {}, sw, s.name);
  }));
}

const PROXY_COLORS = ['#7c5cd6', '#e0882b', '#1aa3a3', '#d64f8a', '#6e9b2f', '#3c7fd1'];

function renderCharts() {
  const hist = S.history;
  if (!hist || S.page !== 'overview') return;
  const pts = hist.points || [];
  const span = Math.max(60, Math.min(300, (hist.interval_secs || 1) * 300));
  const qps = [{ name: 'all proxies', color: '#2f6fde', width: 2.5, points: pts.map((p) => [p.time, p.ops_per_sec]) }];
  const ids = [...new Set(pts.flatMap((p) => Object.keys(p.proxies || {})))].sort();
  if (ids.length > 1) {
    ids.forEach((id, i) => qps.push({
      name: id, color: PROXY_COLORS[i % PROXY_COLORS.length], width: 1.2,
      points: pts.filter((p) => p.proxies && id in p.proxies).map((p) => [p.time, p.proxies[id]]),
    }));
  }
  drawChart($('#chart-qps'), qps, (v) => fmtNum(v, 0), span);
  legend($('#legend-qps'), qps);
  const lat = [
    { name: 'p50', color: '#1e8a4c', points: pts.filter((p) => p.ops_per_sec > 0).map((p) => [p.time, p.p50_us]) },
    { name: 'p99', color: '#c62f2f', points: pts.filter((p) => p.ops_per_sec > 0).map((p) => [p.time, p.p99_us]) },
  ];
  drawChart($('#chart-latency'), lat, (v) => (v > 0 ? fmtUs(v) : '0'), span);
  legend($('#legend-latency'), lat);
}

// ===========================================================================
// The slot map
// ===========================================================================

class SlotMap {
  constructor(root, onSelect) {
    this.root = root;
    this.onSelect = onSelect;
    this.cells = [];
    this.info = [];
    this.selected = new Set();
    this.anchor = null;
    const frag = document.createDocumentFragment();
    for (let i = 0; i < 1024; i++) {
      const c = h('div', { class: 'slot', dataset: { slot: i } });
      this.cells.push(c);
      frag.append(c);
    }
    root.append(frag);
    root.addEventListener('mousedown', (e) => this.down(e));
    root.addEventListener('mouseover', (e) => this.over(e));
    root.addEventListener('mousemove', (e) => this.tip(e));
    root.addEventListener('mouseleave', () => $('#slot-tip').classList.add('hidden'));
    window.addEventListener('mouseup', () => { this.anchor = null; });
  }

  slotOf(e) {
    const s = e.target && e.target.dataset && e.target.dataset.slot;
    return s === undefined ? null : Number(s);
  }

  down(e) {
    const s = this.slotOf(e);
    if (s === null) return;
    e.preventDefault();
    this.anchor = s;
    this.selectRange(s, s);
  }

  over(e) {
    const s = this.slotOf(e);
    if (s === null || this.anchor === null) return;
    this.selectRange(this.anchor, s);
  }

  selectRange(a, b) {
    const lo = Math.min(a, b), hi = Math.max(a, b);
    const slots = [];
    for (let s = lo; s <= hi; s++) slots.push(s);
    this.select(slots);
    if (this.onSelect) this.onSelect(slots);
  }

  select(slots) {
    for (const s of this.selected) this.cells[s].classList.remove('sel');
    this.selected = new Set(slots);
    for (const s of this.selected) if (this.cells[s]) this.cells[s].classList.add('sel');
  }

  tip(e) {
    const s = this.slotOf(e);
    const tip = $('#slot-tip');
    if (s === null) { tip.classList.add('hidden'); return; }
    const i = this.info[s] || {};
    const ops = S.stats && S.stats.slot_ops_per_sec && S.stats.slot_ops_per_sec.length
      ? S.stats.slot_ops_per_sec[s] : null;
    let owner = i.group === null || i.group === undefined ? 'unassigned' : `group ${i.group}`;
    if (i.state === 'migrating') owner += ` → group ${i.target}`;
    tip.textContent = `slot ${s}\n${owner} (${i.state || '?'})\n${ops === null ? '– ' : fmtNum(ops, ops < 10 ? 1 : 0)} ops/s`;
    tip.classList.remove('hidden');
    tip.style.left = (e.clientX + 14) + 'px';
    tip.style.top = (e.clientY + 14) + 'px';
  }

  update(slots, ops) {
    if (!slots) return;
    const mean = ops && ops.length ? ops.reduce((a, b) => a + b, 0) / ops.length : 0;
    for (const i of slots) {
      const c = this.cells[i.slot];
      if (!c) continue;
      this.info[i.slot] = i;
      const color = i.group === null || i.group === undefined ? '#d9dde4' : groupColor(i.group);
      if (c.dataset.color !== color) { c.style.background = color; c.dataset.color = color; }
      c.dataset.group = i.group === null || i.group === undefined ? '' : i.group;
      c.classList.toggle('migrating', i.state === 'migrating');
      c.classList.toggle('held', i.state === 'held');
      if (i.state === 'migrating') c.style.setProperty('--target', groupColor(i.target));
      const hot = ops && ops.length && mean > 0 && ops[i.slot] > 5 * mean && ops[i.slot] >= 1;
      c.classList.toggle('hot', !!hot);
    }
  }
}

let mainMap = null;
let migMap = null;

function renderSlotMaps() {
  const sl = S.slots;
  if (!sl) return;
  const ops = S.stats && S.stats.slot_ops_per_sec;
  mainMap.update(sl.slots, ops);
  migMap.update(sl.slots, ops);
  // Legend: groups with their slot counts, then the states.
  const counts = new Map();
  let migrating = 0;
  for (const s of sl.slots) {
    const k = s.group === null || s.group === undefined ? 'unassigned' : s.group;
    counts.set(k, (counts.get(k) || 0) + 1);
    if (s.state === 'migrating') migrating++;
  }
  const items = [...counts.entries()].sort((a, b) => String(a[0]).localeCompare(String(b[0]), undefined, { numeric: true }))
    .map(([k, n]) => {
      const sw = h('span', { class: 'swatch' });
      sw.style.background = k === 'unassigned' ? '#d9dde4' : groupColor(k);
      return h('span', { dataset: { legendGroup: k } }, sw, k === 'unassigned' ? `unassigned: ${n}` : `group ${k}: ${n} slots`);
    });
  items.push(h('span', {}, `migrating: ${migrating} (pulsing, outlined in the target's colour)`));
  $('#slot-legend').replaceChildren(...items);
}

function onMainSelect(slots) {
  const text = formatRanges(slots);
  $('#slot-selection').textContent = `Selected: ${text} (${slots.length} slots)`;
  $('#slot-migrate').disabled = !slots.length;
  $('#slot-migrate').dataset.slots = text;
}

function onMigSelect(slots) {
  $('#mig-slots').value = formatRanges(slots);
}

// ===========================================================================
// Migrations
// ===========================================================================

async function loadMigrations() {
  if (inflight.migrations) return;
  inflight.migrations = true;
  try {
    S.migrations = await api('GET', '/api/v1/migrations');
    S.migrationsAvailable = true;
  } catch (e) {
    if (e.status === 404 || e.status === 405) {
      S.migrationsAvailable = false;
      S.migrationsUnavailableWhy = e.message;
    } else if (S.migrationsAvailable === null) {
      S.migrationsAvailable = true;
      showError($('#migration-error'), e);
    }
  } finally {
    inflight.migrations = false;
  }
  renderMigrations();
}

const migCards = new Map();

function renderMigrations() {
  const avail = S.migrationsAvailable;
  $('#migrations-unavailable').classList.toggle('hidden', avail !== false);
  $('#migrations-available').classList.toggle('hidden', avail === false);
  if (avail === false) {
    $('#migrations-unavailable').textContent =
      `This dashboard has no migration API (GET /api/v1/migrations: ${S.migrationsUnavailableWhy || 'not found'}).`;
    return;
  }
  const list = S.migrations || [];
  const root = $('#migrations-list');
  const seen = new Set();
  list.forEach((m, i) => {
    seen.add(m.id);
    let card = migCards.get(m.id);
    if (!card) {
      card = migrationCard(m);
      migCards.set(m.id, card);
    }
    if (root.children[i] !== card.el) root.insertBefore(card.el, root.children[i] || null);
    updateMigrationCard(card, m);
  });
  for (const [id, card] of migCards) {
    if (!seen.has(id)) { card.el.remove(); migCards.delete(id); }
  }
  const empty = $('#migrations-empty');
  if (!list.length && !empty) root.append(h('p', { id: 'migrations-empty', class: 'muted' }, 'No migrations yet.'));
  if (list.length && empty) empty.remove();
}

function bar() {
  const inner = h('div');
  return { el: h('div', { class: 'bar' }, inner), inner };
}

function migrationCard(m) {
  const refs = {};
  refs.state = h('span', { class: 'state' });
  refs.title = h('strong');
  refs.created = h('span', { class: 'muted' });
  refs.pause = h('button', { type: 'button', class: 'small ghost', dataset: { action: 'pause' }, onclick: () => migAction(m.id, 'pause') }, 'Pause');
  refs.resume = h('button', { type: 'button', class: 'small', dataset: { action: 'resume' }, onclick: () => migAction(m.id, 'resume') }, 'Resume');
  refs.stop = h('button', { type: 'button', class: 'small danger', dataset: { action: 'stop' }, onclick: () => migAction(m.id, 'stop') }, 'Stop');
  refs.rateKeys = h('input', { type: 'number', min: 0, placeholder: 'keys/s' });
  refs.rateBytes = h('input', { type: 'number', min: 0, placeholder: 'bytes/s' });
  refs.rateForm = h('form', { class: 'rate-form' }, refs.rateKeys, refs.rateBytes,
    h('button', { type: 'submit', class: 'small ghost' }, 'Set rate'));
  refs.rateForm.addEventListener('submit', (ev) => { ev.preventDefault(); setRate(m.id, refs); });
  refs.bars = {};
  const rows = [];
  for (const [key, label] of [['slots', 'Slots'], ['keys', 'Keys'], ['rate', 'Keys/s'], ['eta', 'Time']]) {
    const b = bar();
    const text = h('span', { class: 'muted', dataset: { bar: key } });
    refs.bars[key] = { b, text };
    rows.push(h('span', {}, label), b.el, text);
  }
  refs.runs = h('div', { class: 'runs', title: 'each slot\'s state' });
  refs.notes = h('div', { class: 'muted' });
  refs.error = h('div', { class: 'error hidden', role: 'alert' });
  const el = h('div', { class: 'migration', dataset: { migration: m.id } },
    h('div', { class: 'migration-head' }, refs.title, refs.state, refs.created,
      h('div', { class: 'actions' }, refs.rateForm, refs.pause, refs.resume, refs.stop)),
    h('div', { class: 'bars' }, ...rows), refs.runs, refs.notes, refs.error);
  return { el, refs, maxRate: 0 };
}

function setBar(ref, fraction, text, done) {
  ref.b.inner.style.width = `${Math.max(0, Math.min(1, fraction || 0)) * 100}%`;
  ref.b.el.classList.toggle('done', !!done);
  ref.text.textContent = text;
}

function updateMigrationCard(card, m) {
  const r = card.refs;
  const ended = ['finished', 'stopped', 'failed'].includes(m.state);
  r.title.textContent = `#${m.id}: slots ${m.slots} → group ${m.to_group}`;
  r.state.textContent = m.state + (m.stop_requested && !ended ? ' (stopping)' : '');
  r.state.className = 'state ' + m.state;
  r.created.textContent = 'started ' + new Date(m.created_at * 1000).toLocaleTimeString() +
    ` · waves of ${m.wave_size}` + (m.safe ? ' · safe' : '');
  r.pause.classList.toggle('hidden', ended || m.state === 'paused');
  r.resume.classList.toggle('hidden', m.state !== 'paused');
  r.stop.classList.toggle('hidden', ended);
  r.rateForm.classList.toggle('hidden', ended);
  const fin = m.state === 'finished';
  setBar(r.bars.slots, m.slots_total ? m.slots_done / m.slots_total : 0,
    `${fmtNum(m.slots_done, 0)} / ${fmtNum(m.slots_total, 0)} slots`, fin);
  const estimate = m.slots_done > 0 && !fin ? (m.keys_moved * m.slots_total) / m.slots_done : null;
  setBar(r.bars.keys, fin ? 1 : (estimate ? m.keys_moved / estimate : 0),
    `${fmtNum(m.keys_moved, 0)} keys, ${fmtBytes(m.bytes_moved)}` + (estimate ? ` (≈${fmtNum(estimate, 0)} in all)` : ''), fin);
  card.maxRate = Math.max(card.maxRate, m.keys_per_sec || 0);
  const limit = m.keys_per_sec_limit || 0;
  setBar(r.bars.rate, limit ? m.keys_per_sec / limit : (card.maxRate ? m.keys_per_sec / card.maxRate : 0),
    `${fmtNum(m.keys_per_sec, 0)} keys/s` + (limit ? ` (limit ${fmtNum(limit, 0)})` : ' (no limit)') +
    (m.bytes_per_sec_limit ? `, ≤ ${fmtBytes(m.bytes_per_sec_limit)}/s` : ''), false);
  let eta = null;
  if (!ended && m.slots_done > 0 && m.elapsed_secs > 0) {
    eta = ((m.slots_total - m.slots_done) * m.elapsed_secs) / m.slots_done;
  }
  setBar(r.bars.eta, ended ? 1 : (eta !== null ? m.elapsed_secs / (m.elapsed_secs + eta) : 0),
    `${fmtDuration(m.elapsed_secs)} elapsed` + (ended ? '' : `, ETA ${eta === null ? '–' : fmtDuration(eta)}`), fin);
  // Slot states as a strip, each run as wide as its slots.
  const total = Math.max(1, m.slot_states.reduce((a, run) => a + countRanges(run.slots), 0));
  r.runs.replaceChildren(...m.slot_states.map((run) => {
    const d = h('div', { title: `${run.slots}: ${run.state}, group ${run.group}${run.target ? ' → ' + run.target : ''}` });
    d.style.width = `${(countRanges(run.slots) / total) * 100}%`;
    d.style.background = run.state === 'held' ? '#9aa3b1' : groupColor(run.state === 'migrating' ? run.target : run.group);
    if (run.state === 'migrating') d.style.opacity = '0.55';
    return d;
  }));
  const notes = [];
  if (m.reason && !ended) notes.push('Waiting: ' + m.reason);
  for (const c of m.checks || []) notes.push(c);
  r.notes.textContent = notes.join('\n');
  showError(r.error, m.error ? new Error(m.error) : null);
}

function startMigration(ev) {
  ev.preventDefault();
  const slots = $('#mig-slots').value.trim();
  const toGroup = parseGroupId($('#mig-group').value);
  const body = { slots, to_group: toGroup };
  const num = (sel) => { const v = $(sel).value.trim(); return v === '' ? undefined : Number(v); };
  if (num('#mig-wave') !== undefined) body.wave_size = num('#mig-wave');
  if (num('#mig-keys') !== undefined) body.keys_per_sec = num('#mig-keys');
  if (num('#mig-bytes') !== undefined) body.bytes_per_sec = num('#mig-bytes');
  if ($('#mig-safe').checked) body.safe = true;
  const n = countRanges(slots);
  change({
    title: `Migrate ${n ? n + ' slots' : 'slots ' + (slots || '(none)')} to group ${toGroup}?`,
    text: `Slots ${slots || '(none)'} move to group ${toGroup} in waves; clients keep being served ` +
      '(requests for keys in a migrating slot move those keys first).',
    ok: 'Start migration', errorEl: $('#migration-error'),
    run: () => api('POST', '/api/v1/migrations', body),
    done: (m) => { toast(`migration #${m.id} started`); migMap.select([]); },
  });
}

function migAction(id, action) {
  const words = {
    pause: ['Pause', 'The mover stops between batches; slots already migrating stay so (keys move on access).'],
    resume: ['Resume', 'The migration continues where it stood.'],
    stop: ['Stop', 'The wave in flight completes; the remaining slots stay where they are.'],
  }[action];
  change({
    title: `${words[0]} migration #${id}?`, text: words[1], ok: words[0], danger: action === 'stop',
    errorEl: migCards.get(id) && migCards.get(id).refs.error,
    run: () => api('POST', `/api/v1/migrations/${id}/${action}`),
    done: (m) => toast(`migration #${m.id}: ${m.state}`),
  });
}

function setRate(id, refs) {
  const body = {};
  if (refs.rateKeys.value !== '') body.keys_per_sec = Number(refs.rateKeys.value);
  if (refs.rateBytes.value !== '') body.bytes_per_sec = Number(refs.rateBytes.value);
  change({
    title: `Change the rate of migration #${id}?`,
    text: `keys/s: ${body.keys_per_sec === undefined ? 'unchanged' : body.keys_per_sec || 'unlimited'}, ` +
      `bytes/s: ${body.bytes_per_sec === undefined ? 'unchanged' : body.bytes_per_sec || 'unlimited'}`,
    ok: 'Set rate', errorEl: refs.error,
    run: () => api('POST', `/api/v1/migrations/${id}/rate`, body),
    done: (m) => toast(`migration #${m.id}: ` + (m.keys_per_sec_limit ? `at most ${fmtNum(m.keys_per_sec_limit, 0)} keys/s` : 'no keys/s limit') +
      (m.bytes_per_sec_limit ? `, ${fmtBytes(m.bytes_per_sec_limit)}/s` : '')),
  });
}

function renderPlan(plan) {
  const root = $('#rebalance-plan');
  if (!plan.moves.length) {
    root.replaceChildren(h('p', { class: 'muted' }, 'The slots are already spread evenly: nothing to move.'));
    return;
  }
  const target = plan.target ? Object.entries(plan.target).map(([g, n]) => `group ${g}: ${n}`).join(', ') : '';
  root.replaceChildren(
    h('p', {}, plan.dry_run ? 'Plan (nothing started): ' : 'Started: ',
      plan.migrations && plan.migrations.length ? `migrations ${plan.migrations.map((i) => '#' + i).join(', ')}. ` : '',
      target ? `Slots per group afterwards: ${target}.` : ''),
    h('table', { class: 'grid', id: 'rebalance-moves' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Slots'), h('th', {}, 'From'), h('th', {}, 'To'), h('th', { class: 'num' }, 'Count'))),
      h('tbody', {}, ...plan.moves.map((mv) => h('tr', {},
        h('td', { class: 'mono' }, mv.slots), h('td', {}, `group ${mv.from}`), h('td', {}, `group ${mv.to}`),
        h('td', { class: 'num' }, fmtNum(mv.count, 0)))))));
}

async function previewRebalance() {
  showError($('#rebalance-error'), null);
  try {
    renderPlan(await api('POST', '/api/v1/rebalance?dry_run=true'));
  } catch (e) {
    showError($('#rebalance-error'), e);
  }
}

async function startRebalance() {
  showError($('#rebalance-error'), null);
  let plan;
  try {
    plan = await api('POST', '/api/v1/rebalance?dry_run=true');
  } catch (e) {
    showError($('#rebalance-error'), e);
    return;
  }
  renderPlan(plan);
  if (!plan.moves.length) return;
  const summary = plan.moves.map((mv) => `${mv.slots}: group ${mv.from} → ${mv.to} (${mv.count})`).join('\n');
  change({
    title: 'Start the rebalance?', text: `These moves start as migrations:\n${summary}`, ok: 'Rebalance',
    errorEl: $('#rebalance-error'),
    run: () => api('POST', '/api/v1/rebalance'),
    done: (r) => { renderPlan(r); toast(`rebalance started: ${r.migrations.length} migrations`); },
  });
}

// ===========================================================================
// Start
// ===========================================================================

function start() {
  mainMap = new SlotMap($('#slotmap-main'), onMainSelect);
  migMap = new SlotMap($('#slotmap-mig'), onMigSelect);
  $('#slot-migrate').addEventListener('click', () => {
    location.hash = '#/migrations?slots=' + encodeURIComponent($('#slot-migrate').dataset.slots || '');
  });
  $('#mig-slots').addEventListener('input', () => migMap.select(parseRangesSafe($('#mig-slots').value)));
  $('#migration-form').addEventListener('submit', startMigration);
  $('#rebalance-preview').addEventListener('click', previewRebalance);
  $('#rebalance-start').addEventListener('click', startRebalance);
  $('#group-form').addEventListener('submit', createGroup);
  $('#assign-form').addEventListener('submit', assignSlots);

  $('#confirm-ok').addEventListener('click', () => closeConfirm(true));
  $('#confirm-cancel').addEventListener('click', () => closeConfirm(false));
  $('#token-button').addEventListener('click', () => askToken(''));
  $('#token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const v = $('#token-input').value.trim();
    if (v) sessionStorage.setItem(TOKEN_KEY, v); else sessionStorage.removeItem(TOKEN_KEY);
    closeToken(!!v);
  });
  $('#token-cancel').addEventListener('click', () => closeToken(false));
  $('#token-clear').addEventListener('click', () => { sessionStorage.removeItem(TOKEN_KEY); closeToken(false); });
  document.addEventListener('keydown', (e) => {
    if (e.key !== 'Escape') return;
    if (!$('#confirm').classList.contains('hidden')) closeConfirm(false);
    if (!$('#token-dialog').classList.contains('hidden')) closeToken(false);
  });
  window.addEventListener('hashchange', showPage);
  window.addEventListener('resize', renderCharts);
  updateTokenButton();
  showPage();
  setInterval(() => poll(false), 1000);
}

start();
