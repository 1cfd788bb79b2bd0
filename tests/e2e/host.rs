//! Host metrics end to end: the agent binary sends table `host` beside its GPUs, the server
//! stamps supplier and worker, PromQL, SQL and the portal's worker dashboard read it, another
//! supplier sees none of it, `--host-interval 0` sends none, and a bad `--host-disk` is a
//! clear error at start.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rigwatch_storage::auth::{AuthStore, Role};
use serde_json::Value;

use super::harness::{ADMIN_TOKEN, Server, temp_dir};

/// `rigwatch agent` simulating 2 GPUs; each worker its own seed, so its own GPU UUIDs.
fn agent(server: &str, token: &str, worker: &str, dir: &Path, extra: &[&str]) -> Command {
    let seed = worker.bytes().map(u64::from).sum::<u64>().to_string();
    let mut c = Command::new(env!("CARGO_BIN_EXE_rigwatch"));
    c.args([
        "agent",
        "--simulate",
        "2",
        "--interval",
        "200ms",
        "--seed",
        &seed,
    ])
    .args(["--worker", worker, "--server", server, "--token", token])
    .arg("--spool-dir")
    .arg(dir.join(format!("spool-{worker}")))
    .args(extra)
    .env("NO_COLOR", "1")
    .stdin(Stdio::null());
    c
}

async fn get(http: &reqwest::Client, url: &str, token: &str, query: &[(&str, &str)]) -> Value {
    let r = http
        .get(url)
        .bearer_auth(token)
        .query(query)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert!(status.is_success(), "{url} {query:?}: {status} {body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reports_its_host_and_only_its_supplier_sees_it() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[], &[]).await;
    let auth = AuthStore::open(&data).unwrap();
    let acme = auth.add_supplier("acme").unwrap().token;
    auth.add_supplier("globex").unwrap();
    let globex_read = auth
        .issue(Role::Supplier, Some("globex"), None, "read")
        .unwrap()
        .token;

    // A disk that does not exist is refused at start, naming the flag.
    let out = agent(&server.base, &acme, "edge-x", dir.path(), &[])
        .args(["--host-disk", "/nonexistent/rigwatch-disk"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--host-disk /nonexistent/rigwatch-disk"),
        "{stderr}"
    );

    let log = |w: &str| std::fs::File::create(dir.path().join(format!("{w}.log"))).unwrap();
    let mut with_host = agent(
        &server.base,
        &acme,
        "edge-h",
        dir.path(),
        &["--host-interval", "400ms"],
    )
    .stdout(Stdio::null())
    .stderr(log("edge-h"))
    .spawn()
    .unwrap();
    let mut without = agent(
        &server.base,
        &acme,
        "edge-n",
        dir.path(),
        &["--host-interval", "0"],
    )
    .stdout(Stdio::null())
    .stderr(log("edge-n"))
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let host = server
            .rows_when_ready("SELECT count(*) AS n FROM host WHERE worker = 'edge-h'")
            .await;
        let gpus = server
            .rows_when_ready("SELECT count(*) AS n FROM gpu WHERE worker = 'edge-n'")
            .await;
        let n = |r: &[Value]| r.first().and_then(|r| r["n"].as_u64()).unwrap_or(0);
        if n(&host) >= 4 && n(&gpus) >= 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no host rows: {host:?} {gpus:?}\n{}",
            std::fs::read_to_string(dir.path().join("edge-h.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for a in [&mut with_host, &mut without] {
        a.kill().unwrap();
        a.wait().unwrap();
    }

    // The server stamped who sent them; the simulated host is sized for its 2 GPUs.
    let rows = server
        .rows("SELECT DISTINCT supplier, worker, cpu_count, memory_total_mib FROM host")
        .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["supplier"], "acme");
    assert_eq!(rows[0]["worker"], "edge-h");
    assert_eq!(rows[0]["cpu_count"], 32);
    assert_eq!(rows[0]["memory_total_mib"], 131072);
    let rows = server
        .rows("SELECT min(cpu_utilization) AS lo, max(cpu_utilization) AS hi FROM host")
        .await;
    let (lo, hi) = (
        rows[0]["lo"].as_f64().unwrap(),
        rows[0]["hi"].as_f64().unwrap(),
    );
    assert!(
        (0.0..=100.0).contains(&lo) && (0.0..=100.0).contains(&hi),
        "{rows:?}"
    );

    // Every panel of the portal's worker dashboard has a series for this worker.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = &server.base;
    let dash = get(
        &http,
        &format!("{base}/portal/api/dashboards/worker"),
        ADMIN_TOKEN,
        &[],
    )
    .await;
    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (start, end) = ((end - 120).to_string(), (end + 1).to_string());
    for p in dash["panels"].as_array().unwrap() {
        let expr = p["expr"].as_str().unwrap().replace("$worker", "edge-h");
        let r = get(
            &http,
            &format!("{base}/api/v1/query_range"),
            ADMIN_TOKEN,
            &[
                ("query", expr.as_str()),
                ("start", start.as_str()),
                ("end", end.as_str()),
                ("step", "1"),
            ],
        )
        .await;
        let series = r["data"]["result"].as_array().unwrap();
        assert_eq!(series.len(), 1, "{expr}: {r}");
    }

    // Another supplier sees no host through SQL, PromQL or the DSL.
    let sql = get(
        &http,
        &format!("{base}/api/v1/sql"),
        &globex_read,
        &[("q", "SELECT count(*) AS n FROM host")],
    )
    .await;
    assert_eq!(sql[0]["n"], 0, "{sql}");
    let q = get(
        &http,
        &format!("{base}/api/v1/query"),
        &globex_read,
        &[("query", "host_cpu_utilization")],
    )
    .await;
    assert_eq!(q["data"]["result"], serde_json::json!([]), "{q}");
    let r = http
        .post(format!("{base}/api/v1/dsl"))
        .bearer_auth(&globex_read)
        .body("hosts | stats count() as n")
        .send()
        .await
        .unwrap();
    let body = r.text().await.unwrap();
    assert!(!body.contains("edge-h") && !body.contains("acme"), "{body}");
}
