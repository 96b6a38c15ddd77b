// The admin page: polls /admin/api/stats, turns two cumulative snapshots into rates and quantiles, draws them,
// and shows one event's journey. The token lives in sessionStorage (this tab only) and goes out as a bearer
// header; every value from the server is inserted as text, never as HTML.
import { LineChart, formatValue } from './charts.js';

const TOKEN_KEY = 'tidings.admin.token';
const params = new URLSearchParams(location.search);
const INTERVAL = Math.min(60, Math.max(0.2, Number(params.get('interval')) || 1)); // seconds between polls
const $ = (selector) => document.querySelector(selector);

const CHARTS = {
  throughput: { unit: '/s', series: [
    { key: 'accepted', label: 'events accepted', color: '#4c6ef5' },
    { key: 'stored', label: 'notifications stored', color: '#12b886' },
    { key: 'delivered', label: 'delivered live', color: '#f59f00' }] },
  latency: { unit: 's', series: [
    { key: 'p50', label: 'p50 accepted→delivered', color: '#12b886' },
    { key: 'p99', label: 'p99 accepted→delivered', color: '#f03e3e' },
    { key: 'http99', label: 'p99 HTTP answer', color: '#7950f2' }] },
  connections: { unit: '', series: [
    { key: 'ws', label: 'WebSocket', color: '#4c6ef5' },
    { key: 'sse', label: 'SSE', color: '#f59f00' }] },
  lag: { unit: '', series: [{ key: 'lag', label: 'events not yet fanned out', color: '#e8590c' }] },
  errors: { unit: '/s', series: [
    { key: 'e5xx', label: '5xx answers', color: '#f03e3e' },
    { key: 'rejected', label: 'events rejected', color: '#f59f00' },
    { key: 'slow', label: 'slow-consumer closes', color: '#7950f2' }] },
};
const STAGES = ['accepted', 'fanned_out', 'stored', 'delivered_live', 'seen', 'read'];

const charts = {};
let previous = null;
let timer = null;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

function setStatus(state, text) {
  const status = $('#status');
  status.dataset.state = state;
  status.textContent = text;
}

async function api(path) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const response = await fetch(path, { headers: { Authorization: `Bearer ${token}` }, cache: 'no-store' });
  if (response.status === 401) throw Object.assign(new Error('the admin token was refused'), { stop: true });
  if (response.status === 404 && path.endsWith('/stats')) {
    throw Object.assign(new Error('admin routes are off (TIDINGS_ADMIN_TOKEN is unset)'), { stop: true });
  }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
  return body;
}

/** The q-quantile of the observations between two cumulative histograms, interpolated within a bucket. */
export function quantile(before, after, q) {
  const counts = after.counts.map((c, i) => c - (before ? before.counts[i] || 0 : 0));
  const total = counts[counts.length - 1];
  if (!(total > 0)) return null;
  const rank = q * total;
  const i = counts.findIndex((c) => c >= rank);
  const upper = after.le[i];
  const lower = i > 0 ? after.le[i - 1] : 0;
  if (upper === null) return lower; // the +Inf bucket: all we know is "above the last bound"
  const below = i > 0 ? counts[i - 1] : 0;
  const inBucket = counts[i] - below;
  return lower + (upper - lower) * (inBucket > 0 ? (rank - below) / inBucket : 1);
}

function rate(now, then, pick) {
  if (!then) return null;
  const seconds = now.at - then.at;
  const delta = pick(now) - pick(then);
  return seconds > 0 && delta >= 0 ? delta / seconds : null; // a negative delta: the process restarted
}

function pointOf(now, then) {
  const h = (s, key) => (s ? s.histograms[key] : null);
  return {
    throughput: {
      accepted: rate(now, then, (s) => s.counters.accepted),
      stored: rate(now, then, (s) => s.funnel.stored || 0),
      delivered: rate(now, then, (s) => s.funnel.delivered_live || 0),
    },
    latency: {
      p50: then ? quantile(h(then, 'accepted_to_delivered'), h(now, 'accepted_to_delivered'), 0.5) : null,
      p99: then ? quantile(h(then, 'accepted_to_delivered'), h(now, 'accepted_to_delivered'), 0.99) : null,
      http99: then ? quantile(h(then, 'http'), h(now, 'http'), 0.99) : null,
    },
    connections: { ws: now.connections.ws || 0, sse: now.connections.sse || 0 },
    lag: { lag: now.lag },
    errors: {
      e5xx: rate(now, then, (s) => s.counters.errors_5xx),
      rejected: rate(now, then, (s) => s.counters.rejected),
      slow: rate(now, then, (s) => s.counters.slow_consumer_closes),
    },
  };
}

function setupCharts() {
  for (const [name, spec] of Object.entries(CHARTS)) {
    const capacity = Math.round(120 / INTERVAL) + 1; // two minutes of history
    charts[name] = new LineChart($(`#chart-${name}`), { ...spec, capacity, interval: INTERVAL });
    const legend = $(`#panel-${name} .legend`);
    for (const s of spec.series) {
      const swatch = el('span', { class: 'swatch' });
      swatch.style.background = s.color; // through the CSSOM: the page's CSP forbids inline style attributes
      legend.append(el('li', { 'data-key': s.key }, swatch, `${s.label} `, el('b', { class: 'value' }, '–')));
    }
  }
}

function tile(id, text) {
  $(`#tile-${id} .value`).textContent = text;
}

function render(now, point) {
  for (const [name, values] of Object.entries(point)) {
    const chart = charts[name];
    chart.push(now.at, values);
    for (const s of CHARTS[name].series) {
      $(`#panel-${name} .legend li[data-key="${s.key}"] .value`).textContent = formatValue(values[s.key], chart.unit);
    }
  }
  tile('accepted', formatValue(point.throughput.accepted, '/s'));
  tile('delivered', formatValue(point.throughput.delivered, '/s'));
  tile('connections', formatValue(point.connections.ws + point.connections.sse));
  tile('lag', formatValue(now.lag));
  tile('p99', formatValue(point.latency.p99, 's'));
  tile('errors', formatValue(point.errors.e5xx, '/s'));
  renderFunnel(now.funnel);
  renderOffline(now.offline);
  $('#version').textContent = `version ${now.version}`;
}

function renderFunnel(funnel) {
  const top = Math.max(1, ...STAGES.map((stage) => funnel[stage] || 0));
  $('#funnel').replaceChildren(...STAGES.map((stage, i) => {
    const value = funnel[stage] || 0;
    const before = i > 1 ? funnel[STAGES[i - 1]] || 0 : null; // stage 0 counts events, the rest notifications
    const share = before ? ` (${Math.round((100 * value) / before)}%)` : '';
    const bar = el('span', { class: 'bar' });
    bar.style.width = `${(100 * value) / top}%`;
    return el('li', { 'data-stage': stage }, el('span', { class: 'stage' }, stage.replace('_', ' ')), bar,
      el('b', { class: 'value' }, `${formatValue(value)}${share}`));
  }));
}

/** The offline senders: the shared ledger's backlog, this process's sends, the disabled webhook endpoints. */
function renderOffline(offline) {
  if (!offline) return;
  tile('dead', formatValue(offline.dead_letters));
  tile('disabled', formatValue(offline.webhooks_disabled));
  tile('queue', formatValue(offline.queue_depth));
  tile('oldest', formatValue(offline.oldest_due_seconds, 's'));
  const byName = ([a], [b]) => a.localeCompare(b);
  const channels = Object.entries(offline.sends_by_channel || {}).sort(byName);
  $('#offline-sends').replaceChildren(...(channels.length ? channels.map(([channel, results]) =>
    el('li', { 'data-channel': channel }, el('b', {}, channel), ' ',
      Object.entries(results).sort(byName).map(([result, n]) => `${result} ${formatValue(n)}`).join(' · ')))
    : [el('li', { class: 'muted' }, 'no offline sends by this process yet')]));
  $('#disabled-hooks').replaceChildren(...(offline.disabled || []).map((hook) =>
    el('li', { 'data-hook': hook.id }, 'disabled: ', el('b', {}, hook.app), ` · ${hook.host}`,
      hook.failing_since ? ` · failing since ${when(hook.failing_since * 1000)}` : '')));
}

async function poll() {
  timer = null;
  try {
    const now = await api('/admin/api/stats');
    render(now, pointOf(now, previous));
    previous = now;
    setStatus('open', `live, every ${INTERVAL} s`);
  } catch (error) {
    setStatus(error.stop ? 'stopped' : 'waiting', error.message);
    if (error.stop) return showTokenForm(true);
  }
  timer = setTimeout(poll, INTERVAL * 1000);
}

function showTokenForm(visible) {
  $('#token-form').classList.toggle('connected', !visible);
  $('#forget').hidden = visible;
}

function start() {
  if (timer) clearTimeout(timer);
  previous = null;
  showTokenForm(false);
  poll();
}

const pad = (n, width = 2) => String(n).padStart(width, '0');

/** A server time (ISO 8601) in local time, and how long after ``base`` it was, e.g. "21:00:00.123 (+4 ms)". */
function when(at, base) {
  if (!at) return '–';
  const d = new Date(at);
  const today = d.toDateString() === new Date().toDateString();
  const day = today ? '' : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} `;
  const time = `${day}${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  if (!base) return time;
  const after = d - new Date(base);
  return `${time} (+${after < 1000 ? `${after} ms` : `${(after / 1000).toFixed(1)} s`})`;
}

function renderJourney(j) {
  const out = $('#journey');
  const steps = el('ol', { class: 'steps' });
  const step = (name, text) => steps.append(el('li', { 'data-step': name }, el('b', {}, name), ' ', text));
  const a = j.accepted;
  const base = a ? a.at : j.id_time; // every later time is shown as an offset from the acceptance
  step('accepted', a ? `${when(a.at)} · ${a.app} · ${a.type} · ${a.priority}` +
    (a.topic ? ` · topic ${a.topic}` : ` · ${a.recipients} recipients`) : `${when(j.id_time)} (from the id)`);
  if (a && a.trace_id) step('trace', a.trace_id);
  step('fanned out', j.fanout ? `${when(j.fanout.at, base)} · ${j.fanout.inbox_writes} inbox writes` : 'not by this process');
  const s = j.summary;
  step('stored', j.store_searched ? `${s.stored} inbox rows${j.truncated ? ' (first ones only)' : ''}` : 'this store cannot be searched');
  step('delivered live', `${s.delivered_live} of ${s.stored} (by this process)`);
  step('seen', `${s.seen} of ${s.stored}`);
  step('read', `${s.read} of ${s.stored}`);
  const head = el('tr', {}, ...['user', 'seq', 'stored', 'live deliveries', 'seen', 'read'].map((h) => el('th', {}, h)));
  const rows = j.inbox.map((r) => el('tr', { 'data-user': r.user, 'data-seq': r.seq },
    el('td', {}, r.user), el('td', {}, r.seq), el('td', {}, when(r.created_at, base)),
    el('td', {}, r.deliveries.map((d) => `${d.transport} ${when(d.at, base)}${d.live ? '' : ' (resume)'}`).join(', ') || '–'),
    el('td', {}, when(r.seen_at, base)), el('td', {}, when(r.read_at, base))));
  out.replaceChildren(el('p', { class: 'muted' }, `Event ${j.event_id}`), steps,
    el('table', { class: 'rows' }, el('thead', {}, head), el('tbody', {}, ...rows)));
}

async function findJourney(event) {
  event.preventDefault();
  const query = new URLSearchParams();
  for (const [key, id] of [['app', '#journey-app'], ['user', '#journey-user']]) {
    if ($(id).value.trim()) query.set(key, $(id).value.trim());
  }
  const path = `/admin/api/events/${encodeURIComponent($('#event-id').value.trim())}?${query}`;
  try {
    renderJourney(await api(path));
  } catch (error) {
    $('#journey').replaceChildren(el('p', { class: 'error' }, error.message));
  }
}

$('#token-form').addEventListener('submit', (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $('#token').value);
  $('#token').value = '';
  start();
});
$('#forget').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  if (timer) clearTimeout(timer);
  showTokenForm(true);
  setStatus('idle', 'enter the admin token');
});
$('#journey-form').addEventListener('submit', findJourney);
setupCharts();
if (document.documentElement.dataset.admin === 'off') {
  // The server says its admin routes are off (TIDINGS_ADMIN_TOKEN unset): asking for a token would only fail.
  $('#token-form').hidden = true;
  setStatus('stopped', 'admin routes are off');
} else if (sessionStorage.getItem(TOKEN_KEY)) start();
