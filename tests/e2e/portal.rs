//! The supplier portal against the real binary: sessions, CSRF, body limits and tenancy over
//! HTTP, then a real headless Chromium (driven by `dashboards/web/e2e/portal.mjs` with
//! playwright-core over the DevTools protocol) signing in, watching a live update, opening a
//! GPU's charts, seeing an injected fault, watching the earnings ticker move while a job runs
//! and a settled day's statement turn `paid` once an admin records the payout; then an
//! analyst queries in the console (PromQL, SQL and the pipe DSL with its completion, chart,
//! SQL and error placement).
//!
//! Needs `chromium` (Debian package) and `npm ci` in `dashboards/web` (both done by
//! `.ci/run`). Screenshots go to `$CARGO_TARGET_TMPDIR/portal/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use rigwatch_storage::auth::{AuthStore, Role};

use super::harness::{ADMIN_TOKEN, Server, temp_dir};

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// `gpus` GPUs of `supplier` with `samples` 10 s samples each, ending now.
fn fleet_lp(supplier: &str, prefix: &str, gpus: usize, samples: usize) -> String {
    fleet_lp_until(supplier, prefix, gpus, samples, now_ns())
}

/// As [`fleet_lp`], the last sample at `end` (ns).
fn fleet_lp_until(supplier: &str, prefix: &str, gpus: usize, samples: usize, end: i64) -> String {
    let mut out = String::new();
    for i in 0..gpus {
        for s in 0..samples {
            let t = end - (samples - 1 - s) as i64 * 10_000_000_000;
            let util = ((i * 7 + s * 3) % 100) as f64;
            out.push_str(&format!(
                "gpu,supplier={supplier},worker={prefix}-w{},gpu_uuid={prefix}-{i:04},gpu_index={},model=H100 \
utilization={util},temperature={},power_watts={},memory_used_mib={}i,memory_total_mib=81559i,sm_clock_mhz={}i,memory_clock_mhz=2619i {t}\n",
                i / 8,
                i % 8,
                40.0 + util / 3.0,
                90.0 + util * 6.0,
                (util * 800.0) as i64,
                1200 + (util as i64) * 7,
            ));
        }
    }
    out
}

struct Tenants {
    a: String,
    b: String,
    agent_a: String,
    analyst: String,
}

fn tenants(data: &Path) -> Tenants {
    let auth = AuthStore::open(data).unwrap();
    auth.add_supplier("supplier-a").unwrap();
    auth.add_supplier("supplier-b").unwrap();
    let tok = |role, s: Option<&str>| auth.issue(role, s, None, "e2e").unwrap().token;
    Tenants {
        a: tok(Role::Supplier, Some("supplier-a")),
        b: tok(Role::Supplier, Some("supplier-b")),
        agent_a: tok(Role::Agent, Some("supplier-a")),
        analyst: tok(Role::Analyst, None),
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        // A 413 answered before the body is read closes the connection; never reuse one.
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// Signs in with `token`; the session cookie value and the CSRF token.
async fn sign_in(base: &str, token: &str) -> (String, String) {
    let resp = client()
        .post(format!("{base}/portal/login"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = resp
        .headers()
        .get("set-cookie")
        .expect("a session cookie")
        .to_str()
        .unwrap()
        .to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    let id = cookie
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("rw_session=")
        .unwrap()
        .to_string();
    assert!(id.len() >= 32, "session id too short: {id}");
    let body: serde_json::Value = resp.json().await.unwrap();
    (id, body["csrf"].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_csrf_limits_and_scope() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[], &[]).await;
    let t = tenants(&data);
    server
        .write_ok(&fleet_lp("supplier-a", "GPU-aaaa", 3, 3))
        .await;
    server
        .write_ok(&fleet_lp("supplier-b", "GPU-bbbb", 2, 3))
        .await;
    let base = &server.base;
    let c = client();

    // A browser without a session is sent to the sign-in page; scripts get 401.
    let r = c
        .get(format!("{base}/portal"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/portal/login");
    let r = c.get(format!("{base}/portal")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c.get(format!("{base}/portal/login")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("login.js"));

    // Agents cannot sign in; bad tokens cannot either.
    let r = c
        .post(format!("{base}/portal/login"))
        .bearer_auth(&t.agent_a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = c
        .post(format!("{base}/portal/login"))
        .bearer_auth("rw_0000000000_00000000000000000000000000000000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let (sid, csrf) = sign_in(base, &t.a).await;
    let cookie = format!("rw_session={sid}");
    let me: serde_json::Value = c
        .get(format!("{base}/portal/api/me"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["supplier"], "supplier-a");
    assert_eq!(me["csrf"], csrf.as_str());

    // A forged or stale cookie: 401 that says so.
    let r = c
        .get(format!("{base}/portal/api/me"))
        .header("cookie", format!("rw_session={}", "0".repeat(64)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.unwrap().contains("session is unknown"));

    // CSRF: a cookie-authenticated write needs the header, the right value, our origin.
    let post = |hdrs: Vec<(&'static str, String)>, body: String| {
        let mut req = c
            .post(format!("{base}/portal/api/agent-token"))
            .header("cookie", &cookie)
            .body(body);
        for (k, v) in hdrs {
            req = req.header(k, v);
        }
        req.send()
    };
    for (hdrs, why) in [
        (vec![], "must carry"),
        (vec![("x-rigwatch-csrf", "f".repeat(64))], "does not match"),
        (
            vec![
                ("x-rigwatch-csrf", csrf.clone()),
                ("origin", "http://evil.example".into()),
            ],
            "evil.example",
        ),
    ] {
        let r = post(hdrs, String::new()).await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let body = r.text().await.unwrap();
        assert!(body.contains(why), "{body}");
    }
    let r = post(
        vec![
            ("x-rigwatch-csrf", csrf.clone()),
            ("origin", base.to_string()),
        ],
        String::new(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let issued: serde_json::Value = r.json().await.unwrap();
    assert_eq!(issued["supplier"], "supplier-a");
    let cmd = issued["command"].as_str().unwrap();
    assert!(
        cmd.starts_with(&format!("rigwatch agent --server {base} --token rw_")),
        "{cmd}"
    );
    // A supplier cannot issue agent tokens for another supplier.
    let r = post(
        vec![("x-rigwatch-csrf", csrf.clone())],
        r#"{"supplier":"supplier-b"}"#.into(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Oversized and malformed bodies.
    let r = post(
        vec![("x-rigwatch-csrf", csrf.clone())],
        "x".repeat(64 * 1024),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let r = post(vec![("x-rigwatch-csrf", csrf.clone())], "{nope".into())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("line 1"));
    // An oversized token header is refused before it reaches the token store.
    let r = c
        .post(format!("{base}/portal/login"))
        .bearer_auth("x".repeat(100_000))
        .send()
        .await;
    assert!(
        r.map(|r| r.status().is_client_error()).unwrap_or(true),
        "a 100 kB token was not refused"
    );

    // The session sees A's rows only, in SQL, PromQL and the event stream.
    let get = |path: String| {
        c.get(format!("{base}{path}"))
            .header("cookie", &cookie)
            .send()
    };
    let sql = get("/api/v1/sql?q=SELECT%20DISTINCT%20supplier%20FROM%20gpu".into())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(sql.trim(), r#"[{"supplier":"supplier-a"}]"#);
    let prom = get("/api/v1/query?query=count%20by%20(supplier)%20(gpu_utilization)".into())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        prom.contains("supplier-a") && !prom.contains("supplier-b"),
        "{prom}"
    );
    let events = get("/portal/events?once=1".into())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let data = events
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or_else(|| panic!("no event: {events}"));
    let v: serde_json::Value = serde_json::from_str(data).unwrap();
    let gpus: Vec<&str> = v["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["gpu_uuid"].as_str().unwrap())
        .collect();
    assert_eq!(gpus, ["GPU-aaaa-0000", "GPU-aaaa-0001", "GPU-aaaa-0002"]);
    assert!(!events.contains("bbbb") && !events.contains("supplier-b"));
    // B's own session sees B's GPUs.
    let (sid_b, _) = sign_in(base, &t.b).await;
    let events_b = c
        .get(format!("{base}/portal/events?once=1"))
        .header("cookie", format!("rw_session={sid_b}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(events_b.contains("GPU-bbbb-0001") && !events_b.contains("aaaa"));

    // Dashboards as data, exported for Grafana.
    let g: serde_json::Value = get("/portal/api/dashboards/gpu/grafana".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        g["panels"][0]["targets"][0]["expr"],
        "gpu_utilization{gpu_uuid=\"$gpu\"}"
    );
    let r = get("/portal/api/dashboards/nope".into()).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // The exported expressions run against rigwatch's Prometheus API as they are.
    let fleet: serde_json::Value = get("/portal/api/dashboards/fleet/grafana".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for p in fleet["panels"].as_array().unwrap() {
        let expr = p["targets"][0]["expr"].as_str().unwrap();
        let r = c
            .get(format!("{base}/api/v1/query"))
            .bearer_auth(&t.analyst)
            .query(&[("query", expr)])
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{expr}: {body}");
        assert!(
            body.contains("\"result\":[{"),
            "{expr} returned nothing: {body}"
        );
    }

    // Sign-out: the server forgets the session; CSRF applies to it too.
    let r = c
        .post(format!("{base}/portal/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = c
        .post(format!("{base}/portal/logout"))
        .header("cookie", &cookie)
        .header("x-rigwatch-csrf", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let r = get("/portal/api/me".into()).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/web")
}

/// Runs the browser script; its `RESULT` JSON. `settled_date` (`YYYY-MM-DD`, or empty) is
/// the day of seeded earnings the script pays out and then expects shown as `paid`.
async fn browse(
    server: &Server,
    token: &str,
    analyst: &str,
    gpus: &[String],
    out: &Path,
    perf: bool,
    settled_date: &str,
) -> serde_json::Value {
    let chromium = std::env::var("RW_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "the portal test needs Chromium at {chromium}: `apt-get install -y chromium` (or set RW_CHROMIUM)"
    );
    assert!(
        web_dir().join("node_modules/playwright-core").exists(),
        "the portal test needs playwright-core: run `npm ci` in {}",
        web_dir().display()
    );
    std::fs::create_dir_all(out).unwrap();
    let child = tokio::process::Command::new("node")
        .arg("e2e/portal.mjs")
        .current_dir(web_dir())
        .env("RW_BASE", &server.base)
        .env("RW_TOKEN", token)
        .env("RW_ANALYST", analyst)
        .env("RW_ADMIN", ADMIN_TOKEN)
        .env("RW_SUPPLIER", "supplier-a")
        .env("RW_OUT", out)
        .env("RW_GPUS", gpus.join(","))
        .env("RW_CHROMIUM", &chromium)
        .env("RW_PERF", if perf { "1" } else { "0" })
        .env("RW_SETTLED_DATE", settled_date)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run node (Node 20 is needed for the portal test)");
    let output = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
        .await
        .expect("the browser script did not finish in 300 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser script failed ({}):\n{stdout}\n{stderr}\n{}",
        output.status,
        server.log_tail(30)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line:\n{stdout}\n{stderr}"));
    serde_json::from_str(line).unwrap()
}

fn out_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

/// Earnings rows (ledger version 2, µ) of one minute each, 01:00 UTC three days ago, for
/// supplier A (0.12) and B (99.99): settled days the ledger loads when the server starts.
/// The date, `YYYY-MM-DD`, and the line protocol.
fn settled_earnings_lp() -> (String, String) {
    let day = now_ns().div_euclid(86_400_000_000_000) - 3;
    let from_ms = day * 86_400_000 + 3_600_000;
    let midnight = UNIX_EPOCH + Duration::from_secs(day as u64 * 86_400);
    let date = humantime::format_rfc3339(midnight).to_string()[..10].to_string();
    let mut lp = String::new();
    for (lease, gpu, supplier, model, micro) in [
        (9001, "GPU-aaaa-0000", "supplier-a", "H100", 120_000),
        (9002, "GPU-bbbb-0000", "supplier-b", "A100", 99_990_000),
    ] {
        lp.push_str(&format!(
            "earnings,lease_id={lease},gpu_uuid={gpu},supplier={supplier},model={model} amount_micro={micro}i,\
rate_micro_per_gpu_hour=2500000i,share_milli=1000i,duration_ms=60000i,to_ms={}i,ledger_version=2i {}\n",
            from_ms + 60_000,
            from_ms * 1_000_000
        ));
    }
    (date, lp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supplier_uses_the_portal_in_a_real_browser() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    // 3.6 per GPU-hour is 1,000 µ a second: the ticker's third decimal moves every second.
    let args = ["--rate", "H100=3.6"];
    let mut first = Server::start(&data, &args, &[]).await;
    let t = tenants(&data);
    first
        .write_ok(&fleet_lp("supplier-a", "GPU-aaaa", 4, 60))
        .await;
    // B's GPUs are A100s, so a job asking for an H100 runs on one of A's.
    first
        .write_ok(&fleet_lp("supplier-b", "GPU-bbbb", 3, 60).replace("model=H100", "model=A100"))
        .await;
    let (settled_date, lp) = settled_earnings_lp();
    first.write_ok(&lp).await;
    // The ledger loads the earnings rows when the server starts.
    first.kill9();
    let server = Server::start(&data, &args, &[]).await;
    let gpus: Vec<String> = (0..4).map(|i| format!("GPU-aaaa-{i:04}")).collect();
    let out = out_dir("portal");
    let result = browse(&server, &t.a, &t.analyst, &gpus, &out, false, &settled_date).await;
    eprintln!("portal browser result: {result}");
    // The ticker moved without a reload, from A's settled 0.12 (B's 99.99 not in it) upwards.
    assert_eq!(result["ticker"][0], "0.12", "{result}");
    let ticker: Vec<f64> = result["ticker"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().parse().unwrap())
        .collect();
    assert!(
        ticker.len() >= 3 && ticker.windows(2).all(|w| w[0] < w[1]),
        "{ticker:?}"
    );
    assert_eq!(result["statement_state"], "paid");
    let payouts = server
        .rows("SELECT supplier, amount_micro FROM payout")
        .await;
    assert_eq!(
        payouts,
        [serde_json::json!({"supplier": "supplier-a", "amount_micro": 120_000})]
    );
    assert_eq!(result["overview_gpus"], serde_json::json!(gpus));
    assert_eq!(result["sql_suppliers"], serde_json::json!(["supplier-a"]));
    // The console's DSL tab: `| st` completed to `stats`, the query ran, Show SQL lowered it,
    // and a misspelt field was selected where the server placed the error.
    let dsl = &result["dsl"];
    assert!(
        dsl["completion"]
            .as_array()
            .is_some_and(|c| c.contains(&serde_json::json!("stats"))),
        "{result}"
    );
    assert_eq!(dsl["typed"], "gpus | stats count() by model", "{result}");
    assert!(
        dsl["sql"].as_str().is_some_and(|s| s.contains("SELECT")),
        "{result}"
    );
    assert_eq!(dsl["caret"], serde_json::json!([17, 18, true]), "{result}");
    for s in result["screenshots"].as_array().unwrap() {
        let p = Path::new(s.as_str().unwrap());
        let bytes = std::fs::read(p).unwrap();
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 5_000,
            "{} is not a real screenshot",
            p.display()
        );
    }
    // The injected fault row is stored once (the health detector may add its own
    // classification of it as a second row).
    let faults = server
        .rows("SELECT gpu_uuid, kind, code, severity FROM gpu_fault WHERE code = 79 AND severity = 'hardware'")
        .await;
    assert_eq!(
        faults,
        [
            serde_json::json!({"gpu_uuid": "GPU-aaaa-0000", "kind": "xid", "code": 79, "severity": "hardware"})
        ],
        "{:?}",
        server.rows("SELECT * FROM gpu_fault").await
    );
}

/// 64 GPUs of one supplier with a day of 10 s samples (552,960 rows): time to a usable
/// overview, to a GPU's charts (15 min, 7 and 30 days), payload sizes and live update delay in
/// the real browser. `RW_PERF_DAYS=30` writes 30 days and waits for their hourly rollups
/// before browsing; `RW_SERVER_BIN` runs a release server:
/// `RW_SERVER_BIN=target/release/rigwatch cargo test --test e2e portal_performance -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: run explicitly"]
async fn portal_performance_64_gpus() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    // RW_PERF_DAYS days of 10 s samples (default 1), written a day at a time.
    let days: i64 = std::env::var("RW_PERF_DAYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    // Closed days are merged and rolled up every few seconds rather than every minute.
    let server = Server::start(&data, &["--compaction-interval", "5s"], &[]).await;
    let t = tenants(&data);
    let per_day = 8640;
    let now = now_ns();
    let started = std::time::Instant::now();
    for day in (0..days).rev() {
        let end = now - day * 86_400_000_000_000;
        for chunk in 0..64 / 4 {
            let lp = fleet_lp_until("supplier-a", &format!("GPU-a{chunk:02}"), 4, per_day, end);
            // The write buffer may push back (503) while it persists: wait and retry.
            loop {
                match server.write(&lp).await {
                    Ok(StatusCode::NO_CONTENT) => break,
                    Ok(StatusCode::SERVICE_UNAVAILABLE) => {
                        tokio::time::sleep(Duration::from_secs(1)).await
                    }
                    other => panic!("write failed: {other:?}\n{}", server.log_tail(20)),
                }
            }
        }
    }
    server
        .write_ok(&fleet_lp("supplier-b", "GPU-bbbb", 4, 60))
        .await;
    eprintln!(
        "wrote {} rows ({days} day(s) x 64 GPUs x 8640) in {:?}",
        days as usize * 64 * per_day,
        started.elapsed()
    );
    // Every hour but the last two or three (not closed yet) rolled up: the state a server
    // that has run for `days` is in.
    let hours = days * 24 - 3;
    let waited = std::time::Instant::now();
    loop {
        let rolled = server
            .rows("SELECT count(DISTINCT time) AS h FROM \"gpu@1h\"")
            .await;
        let h = rolled[0]["h"].as_i64().unwrap_or(0);
        if h >= hours {
            eprintln!("{h} hours rolled up after {:?} more", waited.elapsed());
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(1800),
            "only {h} of {hours} hours rolled up\n{}",
            server.log_tail(20)
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let gpus: Vec<String> = (0..16)
        .flat_map(|c| (0..4).map(move |i| format!("GPU-a{c:02}-{i:04}")))
        .collect();
    let mut sorted = gpus.clone();
    sorted.sort();
    let result = browse(
        &server,
        &t.a,
        &t.analyst,
        &sorted,
        &out_dir("portal-perf"),
        true,
        "",
    )
    .await;
    println!("PORTAL_PERF {result}");
    // One chart's query at the server: 30 days of one GPU at 1 h, on the hour grid (hourly
    // rollups), one second off it (raw samples), and off it with the hourly resolution allowed
    // (`max_source_resolution`). Medians of 20, in ms.
    let end = now / 1_000_000_000 / 3600 * 3600;
    let start = end - 30 * 86_400;
    let mut medians = Vec::new();
    for (shift, resolution) in [(0, "raw"), (1, "raw"), (1, "1h")] {
        let params = [
            (
                "query",
                format!("gpu_utilization{{gpu_uuid=\"{}\"}}", sorted[0]),
            ),
            ("start", (start + shift).to_string()),
            ("end", (end + shift).to_string()),
            ("step", "3600".to_string()),
            ("max_source_resolution", resolution.to_string()),
        ];
        let mut times = Vec::new();
        for _ in 0..20 {
            let t = std::time::Instant::now();
            let data = server.api_data("/api/v1/query_range", &params).await;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            assert!(
                data["result"].as_array().is_some_and(|r| !r.is_empty()),
                "{data}"
            );
        }
        times.sort_by(f64::total_cmp);
        medians.push(times[10]);
    }
    println!(
        "PORTAL_PERF_QUERY 30d one GPU at 1h: on the hour grid {:.2} ms, off it {:.2} ms, off it with max_source_resolution=1h {:.2} ms",
        medians[0], medians[1], medians[2]
    );
}
