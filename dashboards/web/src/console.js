// The query console (operators only): PromQL, SQL and the pipe DSL (docs/dsl.md). The DSL tab
// completes sources, stages, functions and the caller's own fields, draws a chart when the
// result has a time column, shows the SQL a query runs and places the caret where an error is.
import uPlot from 'uplot';

const PALETTE = ['#58a6ff', '#3fb950', '#d29922', '#f85149', '#bc8cff', '#39c5cf'];
const MAX_SERIES = 30;
const DEFAULTS = {
  promql: 'avg by (model) (gpu_utilization)',
  sql: 'SELECT model, count(DISTINCT gpu_uuid) AS gpus, avg(utilization) AS util FROM gpu GROUP BY model',
  dsl: 'gpus[1h] | stats avg(utilization) by model | sort avg_utilization desc',
};
// Words of the DSL that are neither sources, stages nor functions.
const KEYWORDS = ['by', 'as', 'on', 'and', 'or', 'not', 'in', 'asc', 'desc', 'true', 'false', 'null'];
const WORD = /[A-Za-z0-9_.]/;

// The UTF-16 index of the byte `offset` of `text` encoded as UTF-8 (errors count bytes).
export function charIndex(text, offset) {
  let bytes = 0, i = 0;
  for (const ch of text) {
    if (bytes >= offset) break;
    const cp = ch.codePointAt(0);
    bytes += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    i += ch.length;
  }
  return i;
}

// A timestamp as the JSON encoder writes it (RFC 3339 text, without a zone meaning UTC, with
// up to nine decimals; or a number) in Unix seconds, or null.
export function seconds(v) {
  if (typeof v === 'number') return v > 1e17 ? v / 1e9 : v > 1e14 ? v / 1e6 : v > 1e11 ? v / 1e3 : v;
  if (typeof v !== 'string') return null;
  const m = v.match(/^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d(?::\d\d)?)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?$/);
  if (!m) return null;
  const ms = Date.parse(`${m[1]}T${m[2]}${m[3] ? '.' + m[3].slice(0, 3).padEnd(3, '0') : ''}${m[4] || 'Z'}`);
  return Number.isNaN(ms) ? null : ms / 1000;
}

// What the DSL tab completes at `pos` of `text`: the word being typed and the candidates.
export function completions(text, pos, vocab, columns) {
  let start = pos;
  while (start > 0 && WORD.test(text[start - 1])) start -= 1;
  const prefix = text.slice(start, pos);
  const before = text.slice(0, start).replace(/\s+$/, '');
  const prev = (before.match(/[A-Za-z_]+$/) || [''])[0];
  let items;
  if (before === '' || before === 'explain' || prev === 'join') {
    items = vocab.sources.map((s) => ({ word: s.name, kind: s.table ? `source: ${s.table}` : 'source' }));
  } else if (before.endsWith('|')) {
    items = vocab.stages.map((w) => ({ word: w, kind: 'stage' }));
  } else {
    if (!prefix) return { start, items: [] };
    const fields = new Map();
    for (const t of sourceTables(text, vocab)) for (const c of columns.get(t) || []) if (!fields.has(c)) fields.set(c, `field of ${t}`);
    items = [...fields].map(([word, kind]) => ({ word, kind }))
      .concat(vocab.functions.map((f) => ({ word: f.name, kind: `${f.kind}: ${f.arity}`, call: true })))
      .concat(KEYWORDS.map((w) => ({ word: w, kind: 'keyword' })));
  }
  const p = prefix.toLowerCase();
  const seen = new Set();
  items = items.filter((it) => it.word.toLowerCase().startsWith(p) && !seen.has(it.word) && seen.add(it.word));
  if (items.length === 1 && items[0].word === prefix) items = [];
  return { start, items: items.slice(0, 12) };
}

// The tables of the sources a query names: its own (after an optional `explain`) and each
// joined one.
function sourceTables(text, vocab) {
  const table = new Map(vocab.sources.filter((s) => s.table).map((s) => [s.name, s.table]));
  const names = [];
  const first = text.match(/^\s*(?:explain\s+)?([A-Za-z_]+)/);
  if (first) names.push(first[1]);
  for (const m of text.matchAll(/\bjoin\s+([A-Za-z_]+)/g)) names.push(m[1]);
  return [...new Set(names.map((n) => table.get(n)).filter(Boolean))];
}

// Rows with every column (the JSON encoder leaves nulls out), and the columns in order.
function normalise(rows) {
  const cols = [];
  const have = new Set();
  for (const r of rows) for (const k of Object.keys(r)) if (!have.has(k)) { have.add(k); cols.push(k); }
  return { cols, rows: rows.map((r) => Object.fromEntries(cols.map((c) => [c, r[c] ?? null]))) };
}

// A chart of the rows when they have a time column (`time` or `bucket`) and numbers: one
// series per numeric column, or per value of the one text column; null when not chartable.
export function chartData(rows, cols) {
  const tcol = cols.find((c) => c === 'time' || c === 'bucket');
  if (!tcol) return null;
  const sample = (c) => { const r = rows.find((x) => x[c] !== null); return r ? r[c] : null; };
  const nums = cols.filter((c) => c !== tcol && typeof sample(c) === 'number');
  const texts = cols.filter((c) => c !== tcol && typeof sample(c) === 'string');
  if (!nums.length) return null;
  const ts = rows.map((r) => seconds(r[tcol]));
  if (ts.some((t) => t === null)) return null;
  const xs = [...new Set(ts)].sort((a, b) => a - b);
  const index = new Map(xs.map((t, j) => [t, j]));
  const series = new Map(); // label -> values
  const key = texts.length === 1 ? texts[0] : null;
  rows.forEach((r, i) => {
    for (const c of nums) {
      const label = key ? (nums.length > 1 ? `${r[key]} ${c}` : String(r[key])) : c;
      if (!series.has(label)) {
        if (series.size >= MAX_SERIES) continue;
        series.set(label, new Array(xs.length).fill(null));
      }
      const v = r[c];
      series.get(label)[index.get(ts[i])] = v === null ? null : Number(v);
    }
  });
  return { xs, series: [...series] };
}

// The console page into `page`; `ctx` has the app's state and helpers.
export function consolePage(page, ctx) {
  const { state, api, sql, promRange, esc, genericTable } = ctx;
  page.innerHTML = `<section class="card"><h2>Query console</h2>
    <select id="lang"><option value="promql">PromQL</option><option value="sql">SQL</option><option value="dsl">DSL</option></select>
    <select id="crange"><option value="3600">last 1 h</option><option value="21600">last 6 h</option><option value="86400">last 24 h</option></select>
    <div class="editor"><textarea id="q" spellcheck="false" autocomplete="off">${esc(DEFAULTS.promql)}</textarea>
      <ul id="dsl-complete" class="completions" role="listbox" hidden></ul></div>
    <button id="run">Run</button> <button id="show-sql" class="secondary" hidden>Show SQL</button>
    <span class="muted" id="dsl-help" hidden>DSL: a source, then stages after <code>|</code> (docs/dsl.md); Tab completes.</span>
    <pre id="dsl-sql" hidden></pre></section>
    <section class="card" id="out"></section>`;
  const q = $('#q'), out = $('#out'), list = $('#dsl-complete');
  const lang = () => $('#lang').value;
  const gen = state.routeGen;
  let vocab = null, columns = new Map(), loading = null;
  let shown = { start: 0, items: [] }, active = 0;

  const destroyCharts = () => { for (const c of state.charts) c.destroy(); state.charts = []; };
  const setOut = (html, st) => { out.innerHTML = html; out.dataset.state = st; };

  // The vocabulary (sources, stages, functions) and the caller's columns, once.
  const loadWords = () => loading || (loading = (async () => {
    const [v, cols] = await Promise.all([
      api('/api/v1/dsl/vocabulary').then((b) => b.data),
      sql("SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'").catch(() => []),
    ]);
    const m = new Map();
    for (const r of cols) { if (!m.has(r.table_name)) m.set(r.table_name, []); m.get(r.table_name).push(r.column_name); }
    vocab = v;
    columns = m;
    if (gen === state.routeGen && document.activeElement === q) update();
  })().catch(() => { loading = null; }));

  const hide = () => { list.hidden = true; list.innerHTML = ''; shown = { start: 0, items: [] }; };
  const update = () => {
    if (lang() !== 'dsl' || !vocab || q.selectionStart !== q.selectionEnd) { hide(); return; }
    shown = completions(q.value, q.selectionStart, vocab, columns);
    if (!shown.items.length) { hide(); return; }
    active = 0;
    list.innerHTML = shown.items.map((it, i) => `<li role="option" data-i="${i}" data-word="${esc(it.word)}" class="${i === 0 ? 'active' : ''}">${
      esc(it.word)}<small>${esc(it.kind)}</small></li>`).join('');
    list.hidden = false;
  };
  const pick = (i) => {
    const it = shown.items[i];
    if (!it) return;
    const pos = q.selectionStart;
    let end = pos;
    while (end < q.value.length && WORD.test(q.value[end])) end += 1;
    const after = q.value.slice(end);
    const insert = it.word + (it.call && !after.startsWith('(') ? '(' : it.kind === 'stage' && !/^\s/.test(after) ? ' ' : '');
    q.value = q.value.slice(0, shown.start) + insert + after;
    const caret = shown.start + insert.length;
    q.setSelectionRange(caret, caret);
    q.focus();
    hide();
  };
  const highlight = (i) => {
    active = (i + shown.items.length) % shown.items.length;
    list.querySelectorAll('li').forEach((li, j) => li.classList.toggle('active', j === active));
  };

  q.addEventListener('input', update);
  q.addEventListener('click', update);
  q.addEventListener('blur', () => setTimeout(() => { if (document.activeElement !== q) hide(); }, 150));
  q.addEventListener('keydown', (e) => {
    if (lang() === 'dsl' && e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); hide(); run(); return; }
    if (list.hidden) return;
    if (e.key === 'ArrowDown') { e.preventDefault(); highlight(active + 1); }
    else if (e.key === 'ArrowUp') { e.preventDefault(); highlight(active - 1); }
    else if (e.key === 'Tab' || e.key === 'Enter') { e.preventDefault(); pick(active); }
    else if (e.key === 'Escape') { e.preventDefault(); hide(); }
  });
  q.addEventListener('keyup', (e) => { if (['ArrowLeft', 'ArrowRight', 'Home', 'End'].includes(e.key)) update(); });
  // mousedown, not click: the textarea keeps the focus and the caret.
  list.addEventListener('mousedown', (e) => {
    const li = e.target.closest('li');
    if (!li) return;
    e.preventDefault();
    pick(Number(li.dataset.i));
  });

  $('#lang').addEventListener('change', () => {
    const l = lang();
    q.value = DEFAULTS[l];
    $('#crange').hidden = l !== 'promql';
    $('#show-sql').hidden = l !== 'dsl';
    $('#dsl-help').hidden = l !== 'dsl';
    $('#dsl-sql').hidden = true;
    hide();
    if (l === 'dsl') loadWords();
  });

  // A DSL query: its rows, or throws with the server's error body (position, suggestion).
  const dsl = (text) => api('/api/v1/dsl', { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: text });

  const dslError = (e) => {
    const b = e.body && typeof e.body === 'object' ? e.body : {};
    const text = q.value;
    const at = b.position && Number.isInteger(b.position.offset) ? charIndex(text, b.position.offset) : null;
    // A suggestion for the word at the error can replace it.
    let end = at;
    while (end !== null && end < text.length && WORD.test(text[end])) end += 1;
    const replace = b.suggestion && at !== null && end > at;
    setOut(`<p class="error" id="dsl-error">${esc(b.error || e.message)}</p>${b.suggestion ? `<p id="dsl-suggestion">Suggestion: <code>${esc(b.suggestion)}</code>${
      replace ? ' <button type="button" class="secondary" id="dsl-apply">Use it</button>' : ''}</p>` : ''}`, 'error');
    if (replace) {
      $('#dsl-apply').addEventListener('click', () => {
        if (q.value !== text) return;
        q.value = text.slice(0, at) + b.suggestion + text.slice(end);
        q.focus();
        q.setSelectionRange(at + b.suggestion.length, at + b.suggestion.length);
        $('#dsl-suggestion').remove();
      });
    }
    if (at !== null) {
      q.focus();
      q.setSelectionRange(at, Math.min(at + 1, text.length));
      hide();
    }
  };

  const showDsl = (raw) => {
    const { cols, rows } = normalise(raw);
    out.innerHTML = '';
    const chart = rows.length ? chartData(rows, cols) : null;
    if (chart) {
      const div = document.createElement('div');
      div.className = 'chart';
      out.appendChild(div);
      state.charts.push(new uPlot({
        width: Math.max(400, out.clientWidth - 28), height: 320,
        cursor: { drag: { x: true, y: false } },
        scales: { x: { time: true } },
        series: [{}, ...chart.series.map(([label], i) => ({ label, stroke: PALETTE[i % PALETTE.length], width: 1.5, spanGaps: true }))],
        axes: [{ stroke: '#8a96a3' }, { stroke: '#8a96a3' }],
      }, [chart.xs, ...chart.series.map(([, ys]) => ys)], div));
    }
    out.insertAdjacentHTML('beforeend', genericTable(rows) + (rows.length ? `<p class="muted">${rows.length} row${rows.length === 1 ? '' : 's'}</p>` : ''));
    out.dataset.state = 'done';
  };

  const run = async () => {
    destroyCharts();
    hide();
    $('#dsl-sql').hidden = true;
    setOut('<p class="muted">running…</p>', 'running');
    const text = q.value;
    try {
      if (lang() === 'dsl') { showDsl(await dsl(text)); return; }
      if (lang() === 'sql') { setOut(genericTable(await sql(text)), 'done'); return; }
      const secs = Number($('#crange').value), end = Math.floor(Date.now() / 1000), start = end - secs, step = Math.max(10, Math.ceil(secs / 720));
      const result = await promRange(text, start, end, step);
      if (!result.length) { setOut('<p class="muted">empty result</p>', 'done'); return; }
      out.innerHTML = '';
      const xs = [];
      for (let t = start; t <= end; t += step) xs.push(t);
      const index = new Map(xs.map((t, j) => [t, j]));
      const ys = result.slice(0, MAX_SERIES).map((s) => { const a = new Array(xs.length).fill(null); for (const [t, v] of s.values) { const j = index.get(Math.round(t)); if (j !== undefined) a[j] = Number(v); } return a; });
      const label = (m) => Object.entries(m).map(([k, v]) => `${k}=${v}`).join(',') || 'value';
      state.charts.push(new uPlot({ width: out.clientWidth - 28, height: 320, series: [{}, ...result.slice(0, MAX_SERIES).map((s, i) => ({ label: label(s.metric), stroke: PALETTE[i % PALETTE.length] }))], axes: [{ stroke: '#8a96a3' }, { stroke: '#8a96a3' }] }, [xs, ...ys], out));
      out.insertAdjacentHTML('beforeend', genericTable(result.map((s) => Object.assign({}, s.metric, { last: s.values.length ? s.values[s.values.length - 1][1] : null }))));
      out.dataset.state = 'done';
    } catch (e) {
      if (lang() === 'dsl') dslError(e);
      else setOut(`<p class="error">${esc(e.message)}</p>`, 'error');
    }
  };
  $('#run').addEventListener('click', run);

  // The SQL the query runs: the query with `| explain` as its last stage.
  $('#show-sql').addEventListener('click', async () => {
    const pre = $('#dsl-sql');
    pre.hidden = false;
    pre.textContent = 'lowering…';
    const text = q.value.replace(/\s+$/, '');
    const explained = /^\s*explain\b/.test(text) || /\|\s*explain$/.test(text) ? text : `${text} | explain`;
    try {
      const rows = await dsl(explained);
      pre.textContent = rows.length ? rows[0].sql : '';
    } catch (e) {
      pre.hidden = true;
      dslError(e);
    }
  });
}

function $(sel, root = document) { return root.querySelector(sel); }
