// Drives the real portal in headless Chromium (playwright-core over the DevTools protocol)
// against a running `rigwatch serve`. Started by tests/e2e/portal.rs, which wrote two
// suppliers' data first and checks what this script reports.
//
// Environment: RW_BASE (http://127.0.0.1:PORT), RW_TOKEN (supplier A's token), RW_ADMIN
// (token used to write samples, submit a job and record a payout during the test),
// RW_SUPPLIER, RW_OUT (screenshot dir), RW_GPUS (comma-separated GPU uuids A must see, exactly), RW_CHROMIUM (browser binary),
// RW_PERF=1 (measure only: no onboarding / fault / earnings steps), RW_SETTLED_DATE (a
// settled day of RW_SUPPLIER's earnings, seeded before the server started, that this
// script pays out as admin).
// Prints one JSON line `RESULT {...}` at the end; any failed expectation exits 1 with why.
import { readFile } from 'node:fs/promises';
import { chromium } from 'playwright-core';

const env = (k, d) => {
  const v = process.env[k] ?? d;
  if (v === undefined) throw new Error(`${k} is not set`);
  return v;
};
const BASE = env('RW_BASE');
const TOKEN = env('RW_TOKEN');
const ADMIN = env('RW_ADMIN');
const SUPPLIER = env('RW_SUPPLIER');
const OUT = env('RW_OUT');
const EXPECT = env('RW_GPUS').split(',').filter(Boolean).sort();
const PERF = process.env.RW_PERF === '1';
const SETTLED = process.env.RW_SETTLED_DATE || '';
const result = { steps: {}, bytes: {}, screenshots: [] };

function fail(msg) {
  console.error('FAIL: ' + msg);
  process.exit(1);
}

// An admin API call: its status and JSON body.
async function admin(method, path, body) {
  const r = await fetch(`${BASE}${path}`, { method, headers: { Authorization: `Bearer ${ADMIN}`, 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  return { status: r.status, body: await r.json().catch(() => null) };
}

async function write(lp) {
  const r = await fetch(`${BASE}/api/v2/write?precision=ns`, { method: 'POST', headers: { Authorization: `Bearer ${ADMIN}` }, body: lp });
  if (r.status !== 204) fail(`write refused: ${r.status} ${await r.text()}`);
}

const nowNs = () => BigInt(Date.now()) * 1000000n;

async function shot(page, name) {
  const path = `${OUT}/${name}.png`;
  await page.screenshot({ path, fullPage: true });
  result.screenshots.push(path);
}

async function timed(name, f) {
  const t0 = performance.now();
  const v = await f();
  result.steps[name] = Math.round(performance.now() - t0);
  return v;
}

const browser = await chromium.launch({
  executablePath: env('RW_CHROMIUM', '/usr/bin/chromium'),
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(60000);
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  // Bytes the browser received, per page step.
  let bytes = 0;
  page.on('requestfinished', async (req) => {
    try { const s = await req.sizes(); bytes += s.responseBodySize + s.responseHeadersSize; } catch (_) { /* gone */ }
  });

  // 1. Unauthenticated: /portal sends the browser to the sign-in page.
  await page.goto(`${BASE}/portal`);
  if (!page.url().endsWith('/portal/login')) fail(`expected the sign-in page, got ${page.url()}`);
  await shot(page, '01-sign-in');

  // 2. Sign in as supplier A: the overview lists exactly A's GPUs.
  bytes = 0;
  const rows = await timed('sign_in_to_usable_overview_ms', async () => {
    await page.fill('#token', TOKEN);
    await page.click('#sign-in');
    await page.waitForURL(`${BASE}/portal`);
    await page.waitForFunction((n) => document.querySelectorAll('#fleet tbody tr').length >= n, EXPECT.length);
    return page.$$eval('#fleet tbody tr', (trs) => trs.map((tr) => tr.dataset.gpu));
  });
  result.bytes.overview = bytes;
  const seen = [...rows].sort();
  result.overview_gpus = seen;
  if (JSON.stringify(seen) !== JSON.stringify(EXPECT)) fail(`overview shows ${seen} but ${SUPPLIER} has ${EXPECT}`);
  const who = await page.textContent('#who');
  if (!who.includes(SUPPLIER)) fail(`header shows ${who}`);
  // The session cookie reaches the query APIs, scoped like a token.
  const suppliers = await page.evaluate(async () => (await (await fetch('/api/v1/sql?q=' + encodeURIComponent('SELECT DISTINCT supplier FROM gpu'))).json()).map((r) => r.supplier));
  result.sql_suppliers = suppliers;
  if (JSON.stringify(suppliers) !== JSON.stringify([SUPPLIER])) fail(`SQL through the session saw suppliers ${suppliers}`);
  const cookies = await context.cookies();
  const c = cookies.find((x) => x.name === 'rw_session');
  if (!c || !c.httpOnly || c.sameSite !== 'Strict') fail(`session cookie is not HttpOnly/SameSite=Strict: ${JSON.stringify(c)}`);
  if (await page.evaluate(() => document.cookie.includes('rw_session'))) fail('the session cookie is readable from JavaScript');
  await shot(page, '02-overview');
  // The first screen only, for the README.
  await page.screenshot({ path: `${OUT}/02-overview-top.png` });

  // 3. Live update without reload: a new sample shows up in the table.
  const target = EXPECT[0];
  const value = (PERF ? 42.25 : 77.5).toFixed(1);
  const marker = await page.evaluate(() => { window.__noReload = Math.random(); return window.__noReload; });
  const t0 = performance.now();
  await write(`gpu,supplier=${SUPPLIER},worker=w-live,gpu_uuid=${target},model=H100 utilization=${value} ${nowNs()}\n`);
  const tWritten = performance.now();
  await page.waitForFunction(([u, v]) => {
    const td = document.querySelector(`#fleet tbody tr[data-gpu="${u}"] td.util`);
    return td && td.textContent.trim() === v;
  }, [target, value]);
  result.steps.live_update_ms = Math.round(performance.now() - t0);
  result.steps.live_update_after_ack_ms = Math.round(performance.now() - tWritten);
  if (await page.evaluate(() => window.__noReload) !== marker) fail('the page reloaded to show the update');

  // 4. A GPU's charts.
  bytes = 0;
  await timed('gpu_chart_ms', async () => {
    await page.click(`#fleet tbody tr[data-gpu="${target}"] a`);
    await page.waitForSelector(`body[data-gpu-ready="${target}"]`);
    await page.waitForSelector('#chart-0 canvas');
  });
  result.bytes.gpu_chart = bytes;
  const charts = await page.$$eval('.chart canvas', (c) => c.length);
  if (charts < 4) fail(`only ${charts} charts drawn`);
  // Hover shows the value under the cursor.
  const box = await page.locator('#chart-0 .u-over').boundingBox();
  await page.mouse.move(box.x + box.width * 0.97, box.y + box.height / 2);
  const hover = await page.locator('#chart-0 .u-legend .u-series:nth-child(2) .u-value').textContent();
  result.hover_value = hover;
  if (!hover || hover.trim() === '--' || hover.trim() === '') fail(`hovering shows no value (${hover})`);
  // Zoom by dragging: the x scale narrows.
  const before = await page.evaluate(() => document.querySelectorAll('.chart').length);
  await page.mouse.move(box.x + box.width * 0.5, box.y + 20);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.9, box.y + 20, { steps: 5 });
  await page.mouse.up();
  result.charts = before;
  await shot(page, '03-gpu-detail');
  // The widest range: 7 days of this GPU at 720 points per chart.
  await timed('gpu_chart_7d_ms', async () => {
    await page.click('[data-range="604800"]');
    await page.waitForSelector('body[data-range="604800"]');
  });
  const drawn7d = await page.$$eval('.chart canvas', (c) => c.length);
  if (drawn7d < 4) fail(`only ${drawn7d} charts drawn for 7 days`);
  // 30 days at an hour a point: the grid's times are whole hours (so the server reads its
  // hourly rollups), and one more point at now keeps the newest reading on the chart.
  const ranges = [];
  const onRequest = (req) => {
    const u = new URL(req.url());
    if (u.pathname === '/api/v1/query_range') ranges.push(['start', 'end', 'step'].map((k) => Number(u.searchParams.get(k))));
  };
  page.on('request', onRequest);
  await timed('gpu_chart_30d_ms', async () => {
    await page.click('[data-range="2592000"]');
    await page.waitForSelector('body[data-range="2592000"]');
  });
  page.off('request', onRequest);
  result.ranges_30d = ranges;
  const drawn30d = await page.$$eval('.chart canvas', (c) => c.length);
  if (drawn30d < 4) fail(`only ${drawn30d} charts drawn for 30 days`);
  const grids = ranges.filter(([s, e]) => s < e);
  const tails = ranges.filter(([s, e]) => s === e);
  if (!tails.length) fail('no point at now on the 30-day charts');
  if (!grids.length || !grids.every(([s, e, step]) => step === 3600 && s % step === 0 && e % step === 0 && e - s === 30 * 86400)) fail(`30-day grids not on whole hours: ${JSON.stringify(grids)}`);
  const nowS = Date.now() / 1000;
  if (!tails.every(([s]) => nowS - s >= 0 && nowS - s < 120)) fail(`30-day tails not at now: ${JSON.stringify(tails)}`);
  const [newestAt, newest] = JSON.parse(await page.getAttribute('#chart-0', 'data-newest'));
  result.newest_30d = [newestAt, newest];
  if (nowS - newestAt > 120 || !newest.includes(Number(value))) fail(`the 30-day chart ends at ${newestAt} with ${newest}, not at now with the newest reading ${value}`);
  // Activity this GPU's rows never carry is "not available", not "no data" (nor a zero line).
  const absent = await page.$$eval('.chart .absent', (p) => p.map((x) => x.textContent));
  if (absent.length !== 3 || !absent.every((t) => t.includes('not available on this model'))) fail(`activity panels: ${JSON.stringify(absent)}`);

  if (!PERF) {
    // 4b. The worker's host: its latest reading and charts, one click from the GPU.
    const now = nowNs();
    await write([0n, 1n, 2n].map((k) => `host,supplier=${SUPPLIER},worker=w-live cpu_utilization=${37n + k},cpu_count=64i,memory_total_mib=262144i,memory_used_mib=131072i,`
      + `disk_total_bytes=4000000000000i,disk_used_bytes=1000000000000i,disk_busy_percent=12,net_rx_errors_total=0i,net_tx_errors_total=0i ${now - (2n - k) * 10000000000n}`).join('\n') + '\n');
    await page.click('#gpu-now a[href^="#/worker/"]');
    await page.waitForSelector('body[data-worker-ready="w-live"]');
    await page.waitForFunction(() => (document.querySelector('#host-cpu') || {}).textContent === '39 %');
    const hostCharts = await page.$$eval('.chart canvas', (c) => c.length);
    if (hostCharts < 4) fail(`only ${hostCharts} host charts drawn`);
    await shot(page, '03b-worker-host');
    await page.goBack();
    await page.waitForSelector(`body[data-gpu-ready="${target}"]`);
  }

  if (!PERF) {
    // 5. An injected fault appears on the GPU page, with its recommended action.
    const tf = performance.now();
    await write(`gpu_fault,supplier=${SUPPLIER},worker=w-live,gpu_uuid=${target},model=H100,kind=xid code=79i,severity="hardware" ${nowNs()}\n`);
    await page.waitForFunction(() => [...document.querySelectorAll('#gpu-faults td')].some((td) => td.textContent.includes('fallen off the bus')));
    result.steps.fault_visible_ms = Math.round(performance.now() - tf);
    await shot(page, '04-gpu-fault');

    // 6. Health page: fault history.
    await page.goto(`${BASE}/portal#/health`);
    await page.waitForSelector('#faults table');
    const faultText = await page.textContent('#faults');
    if (!faultText.includes(target) || !faultText.includes('79')) fail(`health page lacks the fault: ${faultText}`);
    await shot(page, '05-health');

    // 7. Earnings. The server started with a settled day of A's (0.12) and B's (99.99):
    // the ticker shows A's only, the per-day statements say `settled`.
    await page.goto(`${BASE}/portal#/earnings`);
    await page.waitForSelector(`#e-statements tr[data-date="${SETTLED}"]`);
    const dayState = () => page.textContent(`#e-statements tr[data-date="${SETTLED}"] td.state`).then((s) => s.trim());
    if (await dayState() !== 'settled') fail(`the seeded day shows ${await dayState()}, expected settled`);
    await page.waitForFunction(() => document.querySelector('#earned-total').textContent !== '–');
    const ticker = [await page.textContent('#earned-total')];
    if (ticker[0] !== '0.12') fail(`earnings total shows ${ticker[0]}, expected 0.12 (A's 120,000 µ)`);
    const earningsText = await page.textContent('main');
    if (earningsText.includes('bbbb') || earningsText.includes('99.99')) fail('the earnings page shows supplier B');
    if (!earningsText.includes('USD')) fail('the earnings page does not name the currency');
    await shot(page, '06-earnings-settled');

    // A job runs on one of A's GPUs (heard just now): the ticker moves every second, no reload.
    const tick = await page.evaluate(() => { window.__noReload = Math.random(); return window.__noReload; });
    await write(EXPECT.map((u) => `gpu,supplier=${SUPPLIER},worker=w-live,gpu_uuid=${u},model=H100 utilization=50.0 ${nowNs()}\n`).join(''));
    const job = await admin('POST', '/api/v1/jobs', { gpus: 1, models: ['H100'] });
    if (job.status !== 200 && job.status !== 201) fail(`job refused: ${job.status} ${JSON.stringify(job.body)}`);
    await page.waitForSelector('#e-running tr[data-lease]');
    for (let i = 0; i < 2; i++) {
      const last = ticker[ticker.length - 1];
      await page.waitForFunction((v) => { const t = document.querySelector('#earned-total').textContent; return t !== v && Number(t) > Number(v); }, last);
      ticker.push(await page.textContent('#earned-total'));
    }
    result.ticker = ticker;
    if (!/^\d+\.\d{3}$/.test(ticker[2])) fail(`at 1,000 µ/s the ticker should show 3 decimals: ${ticker}`);
    if (await page.evaluate(() => window.__noReload) !== tick) fail('the page reloaded to move the ticker');

    // An admin pays the settled day: its statement turns `paid`, the payout is listed.
    const paid = await admin('POST', '/api/v1/payouts', { supplier: SUPPLIER, amount: '0.12', reference: 'wire-1' });
    if (paid.status !== 201) fail(`payout refused: ${paid.status} ${JSON.stringify(paid.body)}`);
    await page.waitForFunction((d) => {
      const td = document.querySelector(`#e-statements tr[data-date="${d}"] td.state`);
      return td && td.textContent.trim() === 'paid';
    }, SETTLED);
    result.statement_state = await dayState();
    if (!(await page.textContent('#e-payouts')).includes('wire-1')) fail('the payout is not listed');
    if (await page.evaluate(() => window.__noReload) !== tick) fail('the page reloaded to show the payout');
    // The statements as CSV, built in the page (exact µ), downloaded as a user would: the
    // portal's CSP lets no script fetch a blob: URL.
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#csv-statements')]);
    if (download.suggestedFilename() !== 'earnings-statements.csv') fail(`CSV download named ${download.suggestedFilename()}`);
    const csvText = await readFile(await download.path(), 'utf8');
    result.statements_csv = csvText;
    if (!csvText.startsWith('supplier,date,state,currency,accrued_micro,') || !csvText.includes(`${SUPPLIER},${SETTLED},paid,USD,120000,`)) fail(`statements CSV: ${csvText}`);
    await shot(page, '06-earnings');
    await page.emulateMedia({ media: 'print' });
    await shot(page, '06-earnings-print');
    await page.emulateMedia({ media: 'screen' });

    // The fleet's "earned today" includes the running lease's unbooked part on its GPU.
    const leased = (await page.textContent('#e-running tr[data-lease] td:nth-child(3)')).trim();
    await page.click('#nav a[data-page="overview"]');
    await page.waitForFunction((u) => {
      const td = document.querySelector(`#fleet tbody tr[data-gpu="${u}"] td.earned`);
      return td && /^\d+\.\d\d$/.test(td.textContent.trim());
    }, leased);
    result.fleet_earned_today = await page.textContent('#fleet-earned-today');
    // With enough decimals to move every second (2 to 6 for USD).
    if (!/^\d+\.\d{2,6}$/.test(result.fleet_earned_today)) fail(`fleet total earned today: ${result.fleet_earned_today}`);

    // 8. Onboarding: a fresh agent token, then "waiting" turns green on the first sample.
    await page.goto(`${BASE}/portal#/onboard`);
    await page.click('#issue');
    await page.waitForSelector('#command:not([hidden])');
    const command = await page.textContent('#command');
    result.command = command.replace(/rw_\S+/, 'rw_<token>');
    const m = command.match(/^rigwatch agent --server (\S+) --token (rw_\S+)$/);
    if (!m || m[1] !== BASE) fail(`unexpected onboarding command: ${command}`);
    // The issued token really is an agent token of this supplier: it can register/write.
    const inv = await fetch(`${BASE}/api/v1/agent/inventory`, { headers: { Authorization: `Bearer ${m[2]}` } });
    if (inv.status !== 200) fail(`the issued agent token is refused: ${inv.status}`);
    const signin = await fetch(`${BASE}/portal/login`, { method: 'POST', headers: { Authorization: `Bearer ${m[2]}` } });
    if (signin.status !== 403) fail(`an agent token signed in to the portal: ${signin.status}`);
    await shot(page, '07-onboard-waiting');
    await write(`gpu,supplier=${SUPPLIER},worker=new-rig,gpu_uuid=GPU-new-0001,model=L4 utilization=1.0 ${nowNs()}\n`);
    await page.waitForSelector('#waiting.ready');
    await shot(page, '08-onboard-connected');

    // 9. Sign out: the session is gone server-side too.
    await page.click('#sign-out');
    await page.waitForURL(`${BASE}/portal/login`);
    const after = await page.evaluate(async () => (await fetch('/portal/api/me')).status);
    if (after !== 401) fail(`after sign-out /portal/api/me answered ${after}`);
    // The old cookie value no longer opens anything: the server forgot the session.
    const replay = await fetch(`${BASE}/portal/api/me`, { headers: { Cookie: `rw_session=${c.value}` } });
    if (replay.status !== 401) fail(`the signed-out session still works: ${replay.status}`);

    // 10. An analyst sees every supplier, filters by supplier, and queries in the console.
    const ctx2 = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    const p2 = await ctx2.newPage();
    p2.setDefaultTimeout(60000);
    p2.on('pageerror', (e) => errors.push(String(e)));
    await p2.goto(`${BASE}/portal/login`);
    await p2.fill('#token', env('RW_ANALYST'));
    await p2.click('#sign-in');
    await p2.waitForFunction(() => [...document.querySelectorAll('#fleet tbody tr')].some((tr) => tr.dataset.gpu.includes('bbbb')));
    await p2.selectOption('#f-supplier', 'supplier-b');
    const onlyB = await p2.$$eval('#fleet tbody tr', (trs) => trs.map((tr) => tr.dataset.gpu));
    if (!onlyB.length || onlyB.some((u) => !u.includes('bbbb'))) fail(`supplier filter shows ${onlyB}`);
    result.analyst_filtered_b = onlyB.length;
    await p2.goto(`${BASE}/portal#/console`);
    await p2.click('#run');
    await p2.waitForSelector('#out canvas');
    await shot(p2, '09-console-promql');
    await p2.selectOption('#lang', 'sql');
    await p2.click('#run');
    await p2.waitForSelector('#out table');
    const consoleText = await p2.textContent('#out');
    if (!consoleText.includes('H100')) fail(`SQL console result: ${consoleText}`);
    await shot(p2, '10-console-sql');

    // 11. The pipe DSL in the console: completion, a table, a chart, the SQL, an error's place.
    const dsl = {};
    await p2.selectOption('#lang', 'dsl');
    await p2.fill('#q', 'gpus ');
    await p2.focus('#q');
    await p2.press('#q', 'End');
    await p2.locator('#q').pressSequentially('| st');
    await p2.waitForSelector('#dsl-complete:not([hidden]) li[data-word="stats"]');
    dsl.completion = await p2.$$eval('#dsl-complete li', (lis) => lis.map((li) => li.dataset.word));
    await shot(p2, '11-console-dsl-completion');
    await p2.keyboard.press('Tab');
    await p2.keyboard.type('count() by model');
    dsl.typed = await p2.inputValue('#q');
    if (dsl.typed !== 'gpus | stats count() by model') fail(`the completed DSL query reads ${dsl.typed}`);
    // A field of the caller's own tables completes too (from information_schema.columns).
    await p2.fill('#q', 'gpus | stats avg(utiliz');
    await p2.waitForSelector('#dsl-complete:not([hidden]) li[data-word="utilization"]');
    await p2.fill('#q', dsl.typed);
    await p2.click('#run');
    await p2.waitForSelector('#out[data-state="done"] table');
    dsl.columns = await p2.$$eval('#out th', (ths) => ths.map((th) => th.textContent));
    if (!dsl.columns.includes('count') || !dsl.columns.includes('model')) fail(`DSL result columns: ${dsl.columns}`);
    if (!(await p2.textContent('#out')).includes('A100')) fail('the analyst\'s DSL result lacks supplier B\'s A100s');
    await p2.fill('#q', 'gpus | stats avg(utilization) by bucket(1m)');
    await p2.click('#run');
    await p2.waitForSelector('#out[data-state="done"] canvas');
    await shot(p2, '12-console-dsl-chart');
    await p2.click('#show-sql');
    await p2.waitForFunction(() => document.querySelector('#dsl-sql').textContent.includes('SELECT'));
    dsl.sql = await p2.textContent('#dsl-sql');
    if (!dsl.sql.includes('date_bin')) fail(`Show SQL: ${dsl.sql}`);
    await p2.fill('#q', 'gpus | stats avg(utilisation)');
    await p2.click('#run');
    await p2.waitForSelector('#out[data-state="error"] #dsl-error');
    dsl.error = await p2.textContent('#dsl-error');
    if (!dsl.error.includes('did you mean')) fail(`DSL error: ${dsl.error}`);
    dsl.suggestion = await p2.textContent('#dsl-suggestion');
    if (!dsl.suggestion.includes('utilization')) fail(`DSL suggestion: ${dsl.suggestion}`);
    // The misspelt field is selected in the editor.
    dsl.caret = await p2.$eval('#q', (t) => [t.selectionStart, t.selectionEnd, document.activeElement === t]);
    const at = 'gpus | stats avg('.length;
    if (dsl.caret[0] !== at || dsl.caret[1] !== at + 1 || !dsl.caret[2]) fail(`the error's caret is at ${dsl.caret}, expected ${at}`);
    await shot(p2, '13-console-dsl-error');
    // The suggestion replaces the misspelt word, and the query runs.
    await p2.click('#dsl-apply');
    dsl.fixed = await p2.inputValue('#q');
    if (dsl.fixed !== 'gpus | stats avg(utilization)') fail(`the suggestion made ${dsl.fixed}`);
    await p2.click('#run');
    await p2.waitForSelector('#out[data-state="done"] table');
    result.dsl = dsl;
  }
  if (errors.length) fail('page errors: ' + errors.join('; '));
  console.log('RESULT ' + JSON.stringify(result));
} finally {
  await browser.close();
}
