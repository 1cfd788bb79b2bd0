// The rigwatch portal: a small single-page app. Every data request goes through the same
// HTTP APIs as tokens do (/api/v1/sql, /api/v1/query_range, /api/v1/earnings/*,
// /api/v1/payouts), authenticated by the session cookie, so the supplier scope is enforced by
// the server, not here.
import uPlot from 'uplot';
import { consolePage } from './console.js';

const state = {
  me: null,
  gpus: new Map(), // gpu_uuid -> latest row from /portal/events
  serverSkewNs: 0,
  faults: new Map(), // gpu_uuid -> {n, last_ns, code, severity}
  tables: new Set(),
  listeners: new Set(),
  charts: [],
  timers: [],
  // The server's currency, from the earnings payloads (they carry it).
  currency: { code: '', minor_digits: 2 },
};

const $ = (sel, root = document) => root.querySelector(sel);
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
const sqlStr = (s) => "'" + String(s).replace(/'/g, "''") + "'";
const fmt = (v, d = 1) => (v === null || v === undefined || Number.isNaN(v) ? '–' : Number(v).toFixed(d));
// Money arrives in integer micro-units (µ, 1,000,000 per currency unit). Formatted with
// integer string arithmetic, truncated to `digits` decimals (never rounded up): a Number
// holds µ exactly up to 2^53, and no floating division can add 0.1 + 0.2 artefacts.
function money(micro, digits = state.currency.minor_digits) {
  if (micro === null || micro === undefined || micro === '') return '–';
  let s;
  try { s = BigInt(typeof micro === 'number' ? Math.trunc(micro) : String(micro)).toString(); } catch (_) { return '–'; }
  const neg = s.startsWith('-');
  const abs = (neg ? s.slice(1) : s).padStart(7, '0');
  const whole = abs.slice(0, -6), frac = abs.slice(-6).slice(0, digits);
  const out = digits > 0 ? `${whole}.${frac}` : whole;
  return neg && /[1-9]/.test(out) ? '-' + out : out;
}
const ago = (ns) => {
  if (!ns) return '–';
  const s = Math.max(0, (Date.now() * 1e6 - ns) / 1e9);
  return s < 90 ? `${s.toFixed(0)} s ago` : s < 5400 ? `${(s / 60).toFixed(0)} min ago` : `${(s / 3600).toFixed(1)} h ago`;
};

// ---- HTTP -------------------------------------------------------------------------------

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (opts.method && opts.method !== 'GET' && state.me && state.me.csrf) headers['X-Rigwatch-CSRF'] = state.me.csrf;
  const r = await fetch(path, Object.assign({ credentials: 'same-origin' }, opts, { headers }));
  if (r.status === 401) {
    location.href = '/portal/login';
    throw new Error('signed out');
  }
  const text = await r.text();
  let body;
  try { body = JSON.parse(text); } catch (_) { body = text; }
  // The error keeps the status and body: the DSL's carries where the error is.
  if (!r.ok) throw Object.assign(new Error((body && body.error) || `${r.status} ${text}`), { status: r.status, body });
  return body;
}

const sql = (q) => api('/api/v1/sql?q=' + encodeURIComponent(q));

async function promRange(expr, start, end, step) {
  const p = new URLSearchParams({ query: expr, start: String(start), end: String(end), step: String(step) });
  const b = await api('/api/v1/query_range?' + p);
  return b.data.result;
}

async function refreshTables() {
  try {
    const rows = await sql('SELECT table_name FROM information_schema.tables WHERE table_schema = \'public\'');
    state.tables = new Set(rows.map((r) => r.table_name));
  } catch (_) { state.tables = new Set(); }
}

// ---- live values ----------------------------------------------------------------------

function connectEvents() {
  const es = new EventSource('/portal/events');
  const dot = $('#live');
  es.addEventListener('gpus', (ev) => {
    const body = JSON.parse(ev.data);
    state.serverSkewNs = body.server_time_ns - Date.now() * 1e6;
    const changed = [];
    for (const g of body.gpus) {
      const old = state.gpus.get(g.gpu_uuid);
      if (!old || old.time_ns <= g.time_ns) {
        // A row may carry some fields only (nulls are left out): keep the others' last values.
        const merged = Object.assign({}, old || {});
        for (const [k, v] of Object.entries(g)) if (v !== null && v !== undefined) merged[k] = v;
        state.gpus.set(g.gpu_uuid, merged);
        changed.push(g.gpu_uuid);
      }
    }
    dot.classList.add('on');
    dot.dataset.updates = String(Number(dot.dataset.updates || 0) + 1);
    for (const f of state.listeners) f(changed);
  });
  // The server ends the stream when the session or its token has ended: sign in again
  // instead of letting the browser reconnect into 401s.
  es.addEventListener('end', () => {
    es.close();
    location.href = '/portal/login';
  });
  es.onerror = () => dot.classList.remove('on');
}

async function refreshFaults() {
  if (state.tables.has('gpu_fault')) {
    try {
      const rows = await sql(`SELECT gpu_uuid, count(*) AS n, CAST(max(time) AS BIGINT) AS last_ns,
        last_value(code ORDER BY time) AS code, last_value(severity ORDER BY time) AS severity
        FROM gpu_fault WHERE time > now() - INTERVAL '24 hours' GROUP BY gpu_uuid`);
      state.faults = new Map(rows.map((r) => [r.gpu_uuid, r]));
    } catch (_) { /* table may lack columns: health falls back to staleness */ }
  }
  // The health detector's verdict (table gpu_health: state, reasons), when it runs.
  if (state.tables.has('gpu_health')) {
    try {
      const rows = await sql(`SELECT gpu_uuid, last_value(state ORDER BY time) AS state,
        last_value(reasons ORDER BY time) AS reasons, CAST(max(time) AS BIGINT) AS since_ns FROM gpu_health GROUP BY gpu_uuid`);
      state.health = new Map(rows.map((r) => [r.gpu_uuid, r]));
    } catch (_) { state.health = new Map(); }
  }
}

const HEALTH_CLASS = { healthy: 'health-ok', degraded: 'health-warn', unhealthy: 'health-bad', offline: 'health-off' };

function health(g) {
  const nowNs = Date.now() * 1e6 + state.serverSkewNs;
  const h = state.health && state.health.get(g.gpu_uuid);
  if (h && h.state) return [h.state, HEALTH_CLASS[h.state] || 'health-warn', `${h.reasons || h.state} (since ${ago(h.since_ns - state.serverSkewNs)})`];
  if (g && nowNs - g.time_ns > 120e9) return ['offline', 'health-off', 'no sample for ' + ago(g.time_ns - state.serverSkewNs)];
  const f = state.faults.get(g.gpu_uuid);
  if (!f) return ['healthy', 'health-ok', 'no faults in 24 h'];
  if (f.severity === 'hardware' || f.severity === 'critical') return ['fault', 'health-bad', `XID ${f.code} (${f.severity}) ${ago(f.last_ns)}`];
  return ['warning', 'health-warn', `XID ${f.code} (${f.severity || 'unknown'}) ${ago(f.last_ns)}`];
}

// Share of the last `days` each GPU spent healthy, from its gpu_health transitions.
async function reliability(days) {
  const rows = await sql(`SELECT gpu_uuid, state, reasons, CAST(time AS BIGINT) AS t FROM gpu_health
    WHERE time > now() - INTERVAL '${days} days' ORDER BY gpu_uuid, time`);
  const nowNs = Date.now() * 1e6 + state.serverSkewNs;
  const out = new Map();
  for (const r of rows) {
    const o = out.get(r.gpu_uuid) || { gpu_uuid: r.gpu_uuid, first: r.t, healthyNs: 0, last: null, transitions: 0 };
    if (o.last && o.last.state === 'healthy') o.healthyNs += r.t - o.last.t;
    o.last = r;
    o.transitions += 1;
    out.set(r.gpu_uuid, o);
  }
  return [...out.values()].map((o) => {
    const healthyNs = o.healthyNs + (o.last.state === 'healthy' ? nowNs - o.last.t : 0);
    const span = Math.max(1, nowNs - o.first);
    return { gpu: o.gpu_uuid, state: o.last.state, reasons: o.last.reasons || '', since: new Date(o.last.t / 1e6).toISOString().slice(0, 19).replace('T', ' '),
      'reliability %': (100 * healthyNs / span).toFixed(1), 'observed for': ago(o.first - state.serverSkewNs).replace(' ago', ''), transitions: o.transitions };
  });
}

// ---- pages ------------------------------------------------------------------------------

function clearPage() {
  state.listeners.clear();
  for (const c of state.charts) c.destroy();
  state.charts = [];
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
  return $('#page');
}

// Runs `f` every `ms` until the page is left; a run still in flight is not started again.
function every(ms, f) {
  let busy = false;
  state.timers.push(setInterval(async () => {
    if (busy) return;
    busy = true;
    try { await f(); } catch (_) { /* the next run tries again */ } finally { busy = false; }
  }, ms));
}

const isOperator = () => state.me && (state.me.role === 'admin' || state.me.role === 'analyst');

async function overview() {
  const page = clearPage();
  page.innerHTML = `
    <section class="card totals" id="totals"></section>
    <section class="card">
      <div class="filters">
        <select id="f-model"><option value="">all models</option></select>
        <select id="f-supplier" ${isOperator() ? '' : 'hidden'}><option value="">all suppliers</option></select>
        <input id="f-text" placeholder="filter: uuid, worker, model…" size="30">
      </div>
      <table id="fleet"><thead><tr>
        <th>GPU</th><th>model</th>${isOperator() ? '<th>supplier</th>' : ''}<th>worker</th><th>health</th>
        <th class="num">util %</th><th class="num">temp °C</th><th class="num">power W</th><th class="num">memory MiB</th>
        <th>current job</th><th class="num">earned today</th><th>last sample</th>
      </tr></thead><tbody></tbody></table>
      <p class="muted" id="fleet-empty"></p>
    </section>`;
  const jobs = new Map();
  // Earned today per GPU (µ): booked entries since 00:00 UTC plus running leases' unbooked
  // part; the total is the server's own `today_micro` when the live figures answer.
  let booked = new Map();
  let unbooked = new Map();
  let todayMicro = null;
  let todayDigits;
  const earnedOf = () => {
    const m = new Map(booked);
    for (const [g, v] of unbooked) m.set(g, (m.get(g) || 0) + v);
    return m;
  };
  // The live part ticks every second (the same figures as the earnings ticker).
  const loadLive = async () => {
    try {
      const live = await liveEarnings();
      const next = new Map();
      for (const l of live.leases) next.set(l.gpu_uuid, (next.get(l.gpu_uuid) || 0) + Number(l.earned_micro - l.booked_micro));
      unbooked = next;
      todayMicro = live.today_micro;
      todayDigits = tickerDigits(live.micro_per_second, live.minor_digits);
    } catch (_) { todayMicro = null; }
  };
  const loadExtras = async () => {
    await refreshFaults();
    if (state.tables.has('lease')) {
      try {
        const rows = await sql('SELECT * FROM lease ORDER BY time DESC LIMIT 5000');
        jobs.clear();
        for (const r of rows) if (!jobs.has(r.gpu_uuid) && !r.end_ms && !r.ended) jobs.set(r.gpu_uuid, r.lease_id || r.job_id || r.job || 'running');
      } catch (_) { /* unknown lease schema */ }
    }
    if (state.tables.has('earnings')) {
      try {
        const rows = await sql(`SELECT gpu_uuid, sum(amount_micro) AS micro FROM earnings
          WHERE time >= date_trunc('day', now()) GROUP BY gpu_uuid`);
        booked = new Map(rows.map((r) => [r.gpu_uuid, Number(r.micro || 0)]));
      } catch (_) { /* unknown earnings schema */ }
    }
    await loadLive();
  };
  const render = (changed = []) => {
    const fm = $('#f-model').value, fs = $('#f-supplier').value, ft = $('#f-text').value.toLowerCase();
    const all = [...state.gpus.values()];
    const models = [...new Set(all.map((g) => g.model).filter(Boolean))].sort();
    const suppliers = [...new Set(all.map((g) => g.supplier).filter(Boolean))].sort();
    for (const [sel, vals] of [[$('#f-model'), models], [$('#f-supplier'), suppliers]]) {
      const have = new Set([...sel.options].map((o) => o.value));
      for (const v of vals) if (!have.has(v)) sel.add(new Option(v, v));
    }
    const shown = all.filter((g) => (!fm || g.model === fm) && (!fs || g.supplier === fs)
      && (!ft || [g.gpu_uuid, g.worker, g.model, g.supplier].some((x) => String(x || '').toLowerCase().includes(ft))));
    const tbody = $('#fleet tbody');
    const earned = earnedOf();
    const changedSet = new Set(changed);
    tbody.innerHTML = shown.map((g) => {
      const [h, cls, why] = health(g);
      const mem = g.memory_used_mib !== undefined ? `${fmt(g.memory_used_mib, 0)}${g.memory_total_mib ? ' / ' + fmt(g.memory_total_mib, 0) : ''}` : '–';
      return `<tr data-gpu="${esc(g.gpu_uuid)}" class="${changedSet.has(g.gpu_uuid) ? 'flash' : ''}">
        <td><a href="#/gpu/${encodeURIComponent(g.gpu_uuid)}">${esc(g.gpu_uuid)}</a></td><td>${esc(g.model)}</td>
        ${isOperator() ? `<td>${esc(g.supplier)}</td>` : ''}<td><a href="#/worker/${encodeURIComponent(g.worker || '')}">${esc(g.worker)}</a></td>
        <td class="${cls}" title="${esc(why)}">${h}</td>
        <td class="num util">${fmt(g.utilization)}</td><td class="num">${fmt(g.temperature)}</td>
        <td class="num">${fmt(g.power_watts)}</td><td class="num">${mem}</td>
        <td>${esc(jobs.get(g.gpu_uuid) || (state.tables.has('lease') ? 'idle' : '–'))}</td>
        <td class="num earned">${earned.has(g.gpu_uuid) ? money(earned.get(g.gpu_uuid)) : '–'}</td>
        <td class="muted">${ago(g.time_ns - state.serverSkewNs)}</td></tr>`;
    }).join('');
    $('#fleet-empty').textContent = all.length ? '' : 'No GPUs have reported in the last 24 hours. Add one under “Add a GPU”.';
    const util = shown.map((g) => g.utilization).filter((v) => v !== undefined && v !== null);
    const power = shown.reduce((a, g) => a + (g.power_watts || 0), 0);
    const bad = shown.filter((g) => health(g)[0] !== 'healthy').length;
    const today = todayMicro ?? [...earned.values()].reduce((a, v) => a + v, 0);
    const haveEarnings = todayMicro !== null || state.tables.has('earnings');
    $('#totals').innerHTML = `
      <div><b id="total-gpus">${shown.length}</b>GPUs${shown.length !== all.length ? ` (of ${all.length})` : ''}</div>
      <div><b>${util.length ? fmt(util.reduce((a, b) => a + b, 0) / util.length) : '–'} %</b>average utilization</div>
      <div><b>${fmt(power / 1000, 2)} kW</b>power</div>
      <div><b>${bad}</b>need attention</div>
      <div><b id="fleet-earned-today">${haveEarnings ? money(today, todayDigits) : '–'}</b>${esc(state.currency.code)} earned today${haveEarnings ? '' : ' (no earnings yet)'}</div>`;
  };
  for (const id of ['#f-model', '#f-supplier', '#f-text']) $(id).addEventListener('input', () => render());
  const gen = state.routeGen;
  state.listeners.add(render);
  render();
  await loadExtras();
  if (gen !== state.routeGen) return;
  render();
  every(3000, async () => { await loadExtras(); if (gen === state.routeGen) render(); });
  every(1000, async () => { await loadLive(); if (gen === state.routeGen) render(); });
}

// Draws fault times as red vertical lines on a chart.
function faultMarkers(getFaults) {
  return {
    hooks: {
      draw: [(u) => {
        const ctx = u.ctx;
        ctx.save();
        ctx.strokeStyle = '#f85149';
        ctx.lineWidth = 2;
        for (const t of getFaults()) {
          const x = u.valToPos(t, 'x', true);
          if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
          ctx.beginPath();
          ctx.moveTo(x, u.bbox.top);
          ctx.lineTo(x, u.bbox.top + u.bbox.height);
          ctx.stroke();
        }
        ctx.restore();
      }],
    },
  };
}

// Substitutes `$name` variables in a panel's expression (values quoted for PromQL).
const fillVars = (expr, vars) => expr.replace(/\$(\w+)/g, (m, k) => (k in vars ? String(vars[k]).replace(/["\\]/g, '\\$&') : m));

// The times a chart of the last `seconds` is drawn at: about 720 points. From a one-minute step
// up, the step is whole minutes (whole hours from an hour) and the points fall on its
// multiples, so the server answers them from its rollups, with the raw data's answer (README,
// "Rollups"); such a grid ends before `now`, so one more point at `now` (`tail`, a query of
// its own) keeps the newest readings on the chart.
function chartTimes(seconds) {
  const now = Math.floor(Date.now() / 1000);
  const fine = Math.max(10, Math.ceil(seconds / 720));
  if (fine < 60) return { start: now - seconds, end: now, step: fine, tail: null };
  const unit = fine >= 3600 ? 3600 : 60;
  const step = Math.ceil(fine / unit) * unit;
  const end = Math.floor(now / step) * step;
  // To the millisecond: a reading of this very second is on the chart too.
  return { start: end - Math.ceil(seconds / step) * step, end, step, tail: Date.now() / 1000 };
}

// Draws a dashboard's panels for the last `seconds` into `#charts` of `page`. A panel with
// `absent` says so instead of "no data" when its subject reported other readings in the
// range (`presence`, the first panel's expression): a field the model cannot measure.
async function drawPanels(page, dash, vars, seconds, plugins = () => []) {
  for (const b of page.querySelectorAll('[data-range]')) b.classList.toggle('active', Number(b.dataset.range) === seconds);
  for (const c of state.charts) c.destroy();
  state.charts = [];
  const { start, end, step, tail } = chartTimes(seconds);
  const box = $('#charts', page);
  box.innerHTML = '';
  // An expression's series on the grid and at `tail`.
  const fetchParts = (expr) => Promise.all([promRange(expr, start, end, step), tail === null ? [] : promRange(expr, tail, tail, step)]);
  let presence;
  const reported = () => (presence ??= fetchParts(fillVars(dash.panels[0].expr, vars)).then((parts) => parts.some((r) => r.length > 0), () => false));
  await Promise.all(dash.panels.map(async (p, i) => {
    const div = document.createElement('div');
    div.className = 'card chart';
    div.id = 'chart-' + i;
    div.innerHTML = `<h3>${esc(p.title)}</h3>`;
    box.appendChild(div);
    try {
      const [grid, last] = await fetchParts(fillVars(p.expr, vars));
      const xs = [];
      for (let t = start; t <= end; t += step) xs.push(t);
      if (tail !== null) xs.push(tail);
      const index = new Map(xs.map((t, j) => [t, j]));
      // One line per label set, from the grid's points and the point at `now`.
      const lines = new Map();
      for (const s of [...grid, ...last]) {
        const key = JSON.stringify(s.metric);
        if (!lines.has(key)) lines.set(key, new Array(xs.length).fill(null));
        const ys = lines.get(key);
        for (const [t, v] of s.values) { const j = index.get(t) ?? index.get(Math.round(t)); if (j !== undefined) ys[j] = Number(v); }
      }
      const series = [...lines.values()];
      // The newest point drawn (time, each line's value), for scripts that check the chart.
      div.dataset.newest = JSON.stringify([xs[xs.length - 1], series.map((ys) => ys[xs.length - 1])]);
      if (!series.length) {
        const absent = p.absent && i > 0 && await reported();
        div.insertAdjacentHTML('beforeend', absent ? `<p class="muted absent">${esc(p.absent)}</p>` : '<p class="muted">no data in this range</p>');
        return;
      }
      const u = new uPlot({
        width: Math.max(400, div.clientWidth - 28), height: 220,
        cursor: { drag: { x: true, y: false } },
        series: [{}, ...series.map(() => ({ label: p.legend || p.title, stroke: '#58a6ff', width: 1.5 }))],
        axes: [{ stroke: '#8a96a3' }, { stroke: '#8a96a3', label: p.unit }],
        plugins: plugins(),
      }, [xs, ...series], div);
      state.charts.push(u);
    } catch (e) {
      div.insertAdjacentHTML('beforeend', `<p class="error">${esc(e.message)}</p>`);
    }
  }));
  document.body.dataset.range = String(seconds);
}

const RANGES = [['15m', 900], ['1h', 3600], ['6h', 21600], ['24h', 86400], ['7d', 604800], ['30d', 2592000]];
const rangeButtons = () => `<section class="card"><div class="ranges">${RANGES.map(([n, s]) => `<button class="secondary" data-range="${s}">${n}</button>`).join('')}
      <span class="muted">drag on a chart to zoom, double-click to reset</span></div></section>`;

// The latest `host` row of a worker, summarised; '' when there is none.
async function hostSummary(worker) {
  if (!state.tables.has('host')) await refreshTables();
  if (!state.tables.has('host')) return '';
  const rows = await sql(`SELECT * FROM host WHERE worker = ${sqlStr(worker)} ORDER BY time DESC LIMIT 1`);
  if (!rows.length) return '';
  const h = rows[0];
  const pct = (a, b) => (a !== null && a !== undefined && b ? fmt(100 * a / b, 0) + ' %' : '–');
  const swap = (h.swap_in_pages_per_s ?? 0) + (h.swap_out_pages_per_s ?? 0);
  return `<div><b id="host-cpu">${fmt(h.cpu_utilization, 0)} %</b>CPU (${fmt(h.cpu_count, 0)})</div>
    <div><b>${pct(h.memory_used_mib, h.memory_total_mib)}</b>memory used</div>
    <div><b class="${swap > 0 ? 'health-warn' : ''}">${fmt(swap, 0)}</b>pages swapped / s</div>
    <div><b>${pct(h.disk_used_bytes, h.disk_total_bytes)}</b>disk used</div>
    <div><b>${fmt(h.disk_busy_percent, 0)} %</b>disk busy</div>
    <div><b>${fmt((h.net_rx_errors_total ?? 0) + (h.net_tx_errors_total ?? 0), 0)}</b>network errors</div>`;
}

async function workerPage(worker) {
  const page = clearPage();
  page.innerHTML = `
    <section class="card"><h2 id="worker-title">${esc(worker)}</h2><div id="host-now" class="totals"><span class="muted">loading…</span></div></section>
    ${rangeButtons()}
    <section class="charts" id="charts"></section>
    <section class="card"><h3>GPUs</h3><div id="worker-gpus" class="muted"></div></section>`;
  const dash = await api('/portal/api/dashboards/worker');
  const showHost = async () => {
    const html = await hostSummary(worker).catch((e) => `<span class="error">${esc(e.message)}</span>`);
    $('#host-now').innerHTML = html || '<span class="muted">No host readings from this worker yet (the agent sends them every 10 s; `--host-interval 0` turns them off).</span>';
  };
  const showGpus = () => {
    const gpus = [...state.gpus.values()].filter((g) => g.worker === worker);
    $('#worker-gpus').innerHTML = gpus.length ? `<table><thead><tr><th>GPU</th><th>model</th><th class="num">util %</th><th class="num">temp °C</th></tr></thead><tbody>${
      gpus.map((g) => `<tr><td><a href="#/gpu/${encodeURIComponent(g.gpu_uuid)}">${esc(g.gpu_uuid)}</a></td><td>${esc(g.model)}</td><td class="num">${fmt(g.utilization)}</td><td class="num">${fmt(g.temperature)}</td></tr>`).join('')}</tbody></table>` : 'No GPU of this worker reported in the last 24 hours.';
  };
  state.listeners.add(showGpus);
  showGpus();
  const draw = (seconds) => drawPanels(page, dash, { worker }, seconds);
  page.querySelectorAll('[data-range]').forEach((b) => b.addEventListener('click', () => draw(Number(b.dataset.range))));
  await Promise.all([draw(3600), showHost()]);
  every(10000, showHost);
  document.body.dataset.workerReady = worker;
}

async function gpuDetail(uuid) {
  const page = clearPage();
  page.innerHTML = `
    <section class="card"><h2 id="gpu-title">${esc(uuid)}</h2><div id="gpu-now" class="totals"></div></section>
    <section class="card" id="gpu-host" hidden><h3>Host <a id="gpu-host-link"></a></h3><div id="gpu-host-now" class="totals"></div></section>
    ${rangeButtons()}
    <section class="charts" id="charts"></section>
    <section class="card"><h3>Faults</h3><div id="gpu-faults" class="muted">loading…</div></section>
    <section class="card"><h3>Leases</h3><div id="gpu-leases" class="muted"></div></section>`;
  let faultTimes = [];
  const dash = await api('/portal/api/dashboards/gpu');
  const showNow = () => {
    const g = state.gpus.get(uuid);
    if (!g) { $('#gpu-now').innerHTML = '<span class="muted">no sample in the last 24 hours</span>'; return; }
    const [h, cls] = health(g);
    $('#gpu-now').innerHTML = `<div><b class="${cls}">${h}</b>health</div><div><b id="now-util">${fmt(g.utilization)} %</b>utilization</div>
      <div><b>${fmt(g.temperature)} °C</b>temperature</div><div><b>${fmt(g.power_watts)} W</b>power</div>
      <div><b>${esc(g.model)}</b><a href="#/worker/${encodeURIComponent(g.worker || '')}">${esc(g.worker || '')}</a></div>`;
  };
  const showHost = async () => {
    const g = state.gpus.get(uuid);
    if (!g || !g.worker) return;
    const html = await hostSummary(g.worker).catch(() => '');
    $('#gpu-host').hidden = !html;
    $('#gpu-host-link').textContent = g.worker;
    $('#gpu-host-link').href = '#/worker/' + encodeURIComponent(g.worker);
    $('#gpu-host-now').innerHTML = html;
  };
  state.listeners.add(showNow);
  showNow();
  const loadFaults = async () => {
    if (!state.tables.has('gpu_fault')) await refreshTables();
    if (!state.tables.has('gpu_fault')) { $('#gpu-faults').textContent = 'No faults recorded.'; return; }
    const rows = await sql(`SELECT CAST(time AS BIGINT) AS t, * FROM gpu_fault WHERE gpu_uuid = ${sqlStr(uuid)} ORDER BY time DESC LIMIT 200`);
    faultTimes = rows.map((r) => r.t / 1e9);
    await refreshFaults();
    showNow();
    $('#gpu-faults').innerHTML = rows.length ? faultTable(rows) : 'No faults recorded.';
    for (const c of state.charts) c.redraw(false);
  };
  const loadLeases = async () => {
    if (!state.tables.has('lease')) { $('#gpu-leases').textContent = 'No leases yet (the allocator records them in table lease).'; return; }
    const rows = await sql(`SELECT * FROM lease WHERE gpu_uuid = ${sqlStr(uuid)} ORDER BY time DESC LIMIT 100`);
    $('#gpu-leases').innerHTML = rows.length ? genericTable(rows) : 'No leases on this GPU.';
  };
  const draw = async (seconds) => {
    await drawPanels(page, dash, { gpu: uuid }, seconds, () => [faultMarkers(() => faultTimes)]);
  };
  page.querySelectorAll('[data-range]').forEach((b) => b.addEventListener('click', () => draw(Number(b.dataset.range))));
  await Promise.all([draw(3600), loadFaults().catch((e) => { $('#gpu-faults').textContent = e.message; }), loadLeases().catch(() => {}), showHost()]);
  every(3000, loadFaults);
  every(10000, showHost);
  document.body.dataset.gpuReady = uuid;
}

// Recommended actions for the common XID codes (NVIDIA's XID catalogue).
const XID_ACTIONS = {
  13: 'Graphics engine exception: usually the application; check the job, then the driver.',
  31: 'GPU memory page fault: usually the application (illegal address); rerun, then check the driver.',
  43: 'GPU stopped processing: the application was killed; no action unless it repeats.',
  45: 'Preemptive cleanup after a failure: look at the XID before it.',
  48: 'Double-bit ECC error: drain the GPU, reset it; if it repeats, RMA.',
  63: 'ECC page retirement / row remap recorded: reset at the next idle window.',
  64: 'ECC page retirement failed: drain and reset; RMA if it repeats.',
  74: 'NVLink error: check cables/bridges, reset the GPU.',
  79: 'GPU has fallen off the bus: drain, check power and seating, reboot the host.',
  92: 'High single-bit ECC rate: watch it; plan a reset.',
  94: 'Contained ECC error: reset the GPU when the job ends.',
  95: 'Uncontained ECC error: drain and reset the GPU now.',
  119: 'GSP timeout: reset the GPU; update the driver if it repeats.',
  120: 'GSP error: reset the GPU; update the driver if it repeats.',
};
const action = (r) => r.action || xidAction(r.code, r.severity);
const xidAction = (code, severity) => XID_ACTIONS[code] || (severity === 'hardware' ? 'Hardware fault: drain the GPU and reset it.' : 'Check the driver log (dmesg) around this time.');

function faultTable(rows) {
  return `<table class="faults"><thead><tr><th>time</th><th>GPU</th><th>kind</th><th class="num">code</th><th>severity</th><th>evidence</th><th>recommended action</th></tr></thead><tbody>${
    rows.map((r) => `<tr><td>${new Date(r.t / 1e6).toISOString().replace('T', ' ').slice(0, 19)}</td><td>${esc(r.gpu_uuid)}</td>
      <td>${esc(r.kind)}</td><td class="num">${esc(r.code)}</td><td>${esc(r.severity)}</td><td>${esc(r.evidence || r.detector || 'reported by the agent')}</td><td>${esc(action(r))}</td></tr>`).join('')}</tbody></table>`;
}

function genericTable(rows) {
  if (!rows.length) return '<p class="muted">no rows</p>';
  const cols = Object.keys(rows[0]);
  return `<table><thead><tr>${cols.map((c) => `<th>${esc(c)}</th>`).join('')}</tr></thead><tbody>${
    rows.map((r) => `<tr>${cols.map((c) => `<td>${esc(typeof r[c] === 'object' ? JSON.stringify(r[c]) : r[c])}</td>`).join('')}</tr>`).join('')}</tbody></table>`;
}

async function healthPage() {
  const page = clearPage();
  page.innerHTML = '<section class="card"><h2>Health</h2><div id="rel"></div></section><section class="card"><h3>Fault history</h3><div id="faults" class="muted">loading…</div></section>';
  const load = async () => {
    if (!state.tables.has('gpu_fault')) await refreshTables();
    if (!state.tables.has('gpu_fault')) { $('#faults').textContent = 'No faults recorded. The agent writes XID events to table gpu_fault as they happen.'; return; }
    const rows = await sql('SELECT CAST(time AS BIGINT) AS t, * FROM gpu_fault ORDER BY time DESC LIMIT 500');
    $('#faults').innerHTML = rows.length ? faultTable(rows) : 'No faults recorded.';
  };
  if (!state.tables.has('gpu_health')) await refreshTables();
  if (state.tables.has('gpu_health')) {
    try {
      const rows = await reliability(7);
      $('#rel').innerHTML = '<h3>Reliability (share of the last 7 days healthy, from the health detector)</h3>' + genericTable(rows);
    } catch (e) { $('#rel').textContent = e.message; }
  } else {
    $('#rel').innerHTML = '<p class="muted">Reliability scores are not available yet (the health detector writes table gpu_health).</p>';
  }
  await load().catch((e) => { $('#faults').textContent = e.message; });
  every(3000, load);
}

// ---- earnings ---------------------------------------------------------------------------

const setCurrency = (d) => {
  if (d && d.currency) state.currency = { code: d.currency, minor_digits: Number(d.minor_digits ?? 2) };
};

// The caller's earnings now (`/api/v1/earnings/live`): booked entries plus running leases.
async function liveEarnings() {
  const b = await api('/api/v1/earnings/live');
  setCurrency(b.data);
  return b.data;
}

// Decimals that move every second at `perSecond` µ/s: clamp(ceil(6 − log10(µ/s)), minor, 6).
function tickerDigits(perSecond, minor) {
  if (!(perSecond > 0)) return minor;
  return Math.min(6, Math.max(minor, Math.ceil(6 - Math.log10(perSecond))));
}

// An amount exactly: up to six decimals, trailing zeros trimmed down to the minor digits.
function moneyExact(micro) {
  const s = money(micro, 6);
  const keep = s.length - 6 + state.currency.minor_digits;
  return (s.slice(0, keep) + s.slice(keep).replace(/0+$/, '')).replace(/\.$/, '');
}

const utcTime = (ms) => (ms ? new Date(ms).toISOString().slice(0, 16).replace('T', ' ') : '');
const csvField = (v) => { const s = String(v ?? ''); return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s; };
const STATEMENT_CSV = ['supplier', 'date', 'state', 'currency', 'accrued_micro', 'carry_in_micro', 'settled_micro',
  'carry_out_micro', 'paid_micro', 'gpu_seconds', 'entries'];

function table(head, rows) {
  return `<table><thead><tr>${head.map(([h, cls]) => `<th class="${cls || ''}">${esc(h)}</th>`).join('')}</tr></thead><tbody>${rows.join('')}</tbody></table>`;
}

async function earningsPage() {
  const page = clearPage();
  const gen = state.routeGen;
  const alive = () => gen === state.routeGen;
  const cur = () => esc(state.currency.code);
  const csv = (q) => '/api/v1/sql?format=csv&q=' + encodeURIComponent(q);
  // Table `earnings` (the allocator's ledger, one row per lease and minute): tags lease_id,
  // gpu_uuid, supplier, model; fields amount_micro, rate_micro_per_gpu_hour, share_milli,
  // duration_ms, to_ms; time = the entry's start.
  const qGpu = 'SELECT gpu_uuid, model, sum(amount_micro) AS amount_micro, count(*) AS entries FROM earnings GROUP BY gpu_uuid, model ORDER BY 3 DESC';
  const qJob = 'SELECT lease_id, gpu_uuid, sum(amount_micro) AS amount_micro, min(time) AS first_minute, max(time) AS last_minute FROM earnings GROUP BY lease_id, gpu_uuid ORDER BY last_minute DESC LIMIT 500';
  page.innerHTML = `<section class="card no-print"><h2>Earnings</h2><div id="ticker" class="totals">
      <div><b id="earned-today">–</b><span class="cur"></span> today (UTC)</div>
      <div><b id="earned-total">–</b><span class="cur"></span> all time</div>
      <div><b id="running-n">–</b>running leases</div></div>
      <p class="muted" id="no-earnings" hidden>No earnings yet. Earnings appear once the allocator places jobs on your GPUs:
      every running lease earns from its rate card price, booked per minute into table <code>earnings</code> (micro-units).</p></section>
    <section class="card no-print"><h3>Running leases</h3><div id="e-running"></div></section>
    <section class="card statement"><h3>Statements per day
      <a href="#" download="earnings-statements.csv" id="csv-statements" class="no-print">CSV</a>
      <button type="button" class="secondary no-print" id="print-statement">Print statement</button></h3>
      <p class="print-only">Earnings statement for ${esc((state.me && state.me.supplier) || 'all suppliers')}, printed ${utcTime(Date.now())} UTC.</p>
      <p class="muted">A day (UTC) is settled once it is over and every lease in it is booked; settled amounts are whole minor
      units, the remainder carries into the next day. Paid: payouts recorded against settled days.</p>
      <div id="e-statements"></div></section>
    <section class="card statement"><h3>Payouts</h3><div id="e-payouts"></div></section>
    <section class="card statement"><h3>Reconciliation</h3><p class="muted">Every accrued amount is settled, carried or still accruing
      (balanced), and the stored <code>earnings</code> rows sum to exactly what the ledger accrued.</p><div id="e-rec"></div></section>
    <section class="card no-print"><h3>Per GPU <a href="${csv(qGpu)}" download="earnings-per-gpu.csv">CSV</a></h3><div id="e-gpu"></div></section>
    <section class="card no-print"><h3>Per job (lease) <a href="${csv(qJob)}" download="earnings-per-job.csv">CSV</a></h3><div id="e-job"></div></section>`;
  $('#print-statement').addEventListener('click', () => window.print());
  const fail = (id, e) => { if (alive()) $(id).innerHTML = `<p class="error">${esc(e.message)}</p>`; };
  const all = isOperator();
  let hasStatements = false, hasLeases = false;
  const noEarnings = () => { $('#no-earnings').hidden = hasStatements || hasLeases; };

  const live = async () => {
    const d = await liveEarnings();
    if (!alive()) return;
    const digits = tickerDigits(d.micro_per_second, d.minor_digits);
    $('#earned-total').textContent = money(d.total_micro, digits);
    $('#earned-today').textContent = money(d.today_micro, digits);
    $('#running-n').textContent = String(d.leases.length);
    for (const c of page.querySelectorAll('.cur')) c.textContent = ' ' + d.currency;
    hasLeases = d.leases.length > 0;
    noEarnings();
    $('#e-running').innerHTML = d.leases.length ? table(
      [['lease'], ['job'], ['GPU'], ['model'], ...(all ? [['supplier']] : []), ['share %', 'num'], [`rate ${d.currency}/GPU-h`, 'num'],
        [`earned ${d.currency}`, 'num'], ['since (UTC)'], ['state']],
      d.leases.map((l) => `<tr data-lease="${esc(l.lease_id)}"><td>${esc(l.lease_id)}</td><td>${esc(l.job_id)}</td><td>${esc(l.gpu_uuid)}</td>
        <td>${esc(l.model)}</td>${all ? `<td>${esc(l.supplier)}</td>` : ''}<td class="num">${fmt(l.share_milli / 10)}</td>
        <td class="num">${moneyExact(l.rate_micro_per_gpu_hour)}</td><td class="num earned">${money(l.earned_micro, digits)}</td>
        <td>${utcTime(l.start_ms)}</td><td>${l.paused ? `<span class="badge paused" title="the GPU has not reported: pay is paused">paused</span>` : 'running'}${
          l.unpaid_ms > 0 ? ` <span class="muted">(${fmt(l.unpaid_ms / 1000, 0)} s unpaid)</span>` : ''}</td></tr>`),
    ) : '<p class="muted">no running leases</p>';
  };

  let csvUrl = null, csvText = '';
  const statements = async () => {
    const [s, p] = await Promise.all([api('/api/v1/earnings/statements'), api('/api/v1/payouts')]);
    if (!alive()) return;
    const d = s.data;
    setCurrency(d);
    hasStatements = d.days.length > 0;
    noEarnings();
    const days = [...d.days].sort((a, b) => (a.date < b.date ? 1 : a.date > b.date ? -1 : a.supplier.localeCompare(b.supplier)));
    const c = cur();
    $('#e-statements').innerHTML = days.length ? table(
      [...(all ? [['supplier']] : []), ['date'], [`accrued ${c}`, 'num'], [`carry in ${c}`, 'num'], [`settled ${c}`, 'num'], [`paid ${c}`, 'num'], ['state']],
      days.map((r) => `<tr data-date="${esc(r.date)}">${all ? `<td>${esc(r.supplier)}</td>` : ''}<td>${esc(r.date)}</td>
        <td class="num">${money(r.accrued_micro)}</td><td class="num">${money(r.carry_in_micro)}</td>
        <td class="num">${r.settled ? money(r.settled_micro) : '–'}</td><td class="num">${money(r.paid_micro)}</td>
        <td class="state"><span class="badge ${esc(r.state)}">${esc(r.state)}</span></td></tr>`),
    ) : '<p class="muted">no statements yet</p>';
    // The same statements as CSV, exact µ, built here (no second request).
    const text = [STATEMENT_CSV.join(',')].concat(d.days.map((r) => STATEMENT_CSV.map((k) => csvField(k === 'currency' ? d.currency : r[k])).join(',')))
      .join('\r\n') + '\r\n';
    if (text !== csvText) {
      if (csvUrl) URL.revokeObjectURL(csvUrl);
      csvUrl = URL.createObjectURL(new Blob([text], { type: 'text/csv' }));
      csvText = text;
      $('#csv-statements').href = csvUrl;
    }
    $('#e-rec').innerHTML = d.reconciliation.length ? table(
      [['supplier'], [`accrued ${c}`, 'num'], [`settled ${c}`, 'num'], [`carried ${c}`, 'num'], [`accruing ${c}`, 'num'], [`paid ${c}`, 'num'],
        [`payable ${c}`, 'num'], [`stored rows ${c}`, 'num'], ['check']],
      d.reconciliation.map((r) => {
        const ok = r.balanced && r.mismatch_micro === 0;
        const why = !r.balanced ? 'unbalanced: settled + carried + accruing ≠ accrued' : `mismatch: rows differ by ${moneyExact(r.mismatch_micro)}`;
        return `<tr><td>${esc(r.supplier)}</td><td class="num">${moneyExact(r.accrued_micro)}</td><td class="num">${moneyExact(r.settled_micro)}</td>
          <td class="num">${moneyExact(r.carry_micro)}</td><td class="num">${moneyExact(r.accruing_micro)}</td><td class="num">${money(r.paid_micro)}</td>
          <td class="num">${money(r.payable_micro)}</td><td class="num">${moneyExact(r.stored_micro)}</td>
          <td class="${ok ? 'health-ok' : 'health-bad'}">${ok ? 'balanced' : esc(why)}</td></tr>`;
      }),
    ) : '<p class="muted">nothing to reconcile yet</p>';
    $('#e-payouts').innerHTML = p.data.length ? table(
      [['paid (UTC)'], ...(all ? [['supplier']] : []), ['reference'], [`amount ${c}`, 'num'], ['payout']],
      [...p.data].reverse().map((r) => `<tr><td>${utcTime(r.paid_ms)}</td>${all ? `<td>${esc(r.supplier)}</td>` : ''}<td>${esc(r.reference)}</td>
        <td class="num">${money(r.amount_micro)}</td><td>${esc(r.payout_id)}</td></tr>`),
    ) : '<p class="muted">no payouts yet</p>';
  };

  const show = async (id, q) => {
    if (!state.tables.has('earnings')) { $(id).innerHTML = '<p class="muted">no rows</p>'; return; }
    try {
      const rows = await sql(q);
      if (!alive()) return;
      for (const r of rows) { r[`amount ${state.currency.code}`.trim()] = moneyExact(r.amount_micro); delete r.amount_micro; }
      $(id).innerHTML = genericTable(rows);
    } catch (e) { fail(id, e); }
  };
  const perGpuAndLease = () => Promise.all([show('#e-gpu', qGpu), show('#e-job', qJob)]);

  await Promise.all([live().catch((e) => fail('#e-running', e)), statements().catch((e) => fail('#e-statements', e))]);
  await perGpuAndLease();
  every(1000, live);
  every(5000, statements);
  every(10000, perGpuAndLease);
}

async function onboardPage() {
  const page = clearPage();
  page.innerHTML = `<section class="card"><h2>Add a GPU</h2>
    <p>Issue an agent token, then run this on the machine with the GPU (it uses NVML when the driver is there):</p>
    <button id="issue">Issue agent token</button><pre id="command" hidden></pre>
    <div id="waiting" class="waiting" hidden>Waiting for your GPU… the first sample turns this green.</div>
    <p class="error" id="issue-error"></p></section>`;
  $('#issue').addEventListener('click', async () => {
    $('#issue-error').textContent = '';
    try {
      const before = new Set(state.gpus.keys());
      const r = await api('/portal/api/agent-token', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}' });
      $('#command').hidden = false;
      $('#command').textContent = r.command;
      const w = $('#waiting');
      w.hidden = false;
      const check = (changed) => {
        const fresh = changed.filter((u) => !before.has(u));
        if (fresh.length) {
          w.classList.add('ready');
          w.textContent = `Connected: ${fresh.join(', ')} sent its first sample.`;
          state.listeners.delete(check);
        }
      };
      state.listeners.add(check);
    } catch (e) { $('#issue-error').textContent = e.message; }
  });
}

// ---- routing ----------------------------------------------------------------------------

async function route() {
  // Pages load asynchronously: a page whose route was left while it loaded must not
  // touch the page that replaced it (nor report its errors there).
  const gen = state.routeGen = (state.routeGen || 0) + 1;
  const h = location.hash.replace(/^#/, '') || '/';
  const name = h.startsWith('/gpu/') || h.startsWith('/worker/') ? 'overview' : h.slice(1) || 'overview';
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.page === name);
  document.body.dataset.page = h;
  delete document.body.dataset.gpuReady;
  delete document.body.dataset.workerReady;
  try {
    if (h.startsWith('/gpu/')) await gpuDetail(decodeURIComponent(h.slice(5)));
    else if (h.startsWith('/worker/')) await workerPage(decodeURIComponent(h.slice(8)));
    else if (h === '/earnings') await earningsPage();
    else if (h === '/health') await healthPage();
    else if (h === '/onboard') await onboardPage();
    else if (h === '/console' && isOperator()) consolePage(clearPage(), { state, api, sql, promRange, esc, genericTable });
    else await overview();
  } catch (e) {
    if (gen === state.routeGen) $('#page').innerHTML = `<p class="error">${esc(e.message)}</p>`;
  }
}

async function main() {
  state.me = await api('/portal/api/me');
  $('#who').textContent = state.me.supplier ? `${state.me.supplier} (${state.me.role})` : state.me.role;
  $('#nav-console').hidden = !isOperator();
  $('#sign-out').addEventListener('click', async () => {
    await api('/portal/logout', { method: 'POST' }).catch(() => {});
    location.href = '/portal/login';
  });
  await refreshTables();
  setInterval(refreshTables, 10000);
  connectEvents();
  window.addEventListener('hashchange', route);
  await route();
}

main();
