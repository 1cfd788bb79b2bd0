//! The allocator in the real server: GPUs appear from telemetry, jobs are placed, leases and
//! earnings are rows, money reconciles to the unit, and a restart (kill -9) neither doubles
//! a lease nor pays a minute twice.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::harness::{ADMIN_TOKEN, Server, temp_dir};

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// Fresh samples (so the GPUs count as online) for 4 H100s of two suppliers.
fn telemetry() -> String {
    let t = now_ns();
    (0..4)
        .map(|g| {
            format!(
                "gpu,supplier={},worker=w{},gpu_uuid=GPU-{g},gpu_index=0,model=H100 utilization=0.0,temperature=40.0,memory_total_mib=81559i,memory_free_mib=81000i {t}\n",
                if g < 2 { "acme" } else { "bolt" },
                g / 2
            )
        })
        .collect()
}

/// The SQL sum of the earnings rows per supplier.
async fn paid_per_supplier(server: &Server) -> BTreeMap<String, i64> {
    server
        .rows("SELECT supplier, sum(amount_micro) AS paid FROM earnings GROUP BY supplier")
        .await
        .iter()
        .map(|r| {
            (
                r["supplier"].as_str().unwrap().to_string(),
                r["paid"].as_i64().unwrap(),
            )
        })
        .collect()
}

async fn call(
    server: &Server,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let client = reqwest::Client::new();
    let url = format!("{}{path}", server.base);
    let mut req = match method {
        "GET" => client.get(url),
        "DELETE" => client.delete(url),
        _ => client.post(url),
    }
    .bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_placed_leased_paid_exactly_and_survive_a_restart() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    // 3.60 per GPU-hour: 1,000 µ per GPU-second, so a few seconds of leases are real money.
    let args = ["--alloc-tick", "200ms", "--rate", "H100=3.6"];
    let mut server = Server::start(&data, &args, &[]).await;
    server.write_ok(&telemetry()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Bad requests say what is wrong.
    let (s, v) = call(&server, "POST", "/api/v1/jobs", Some(json!({"gpus": 9}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains("1 to 8"), "{v}");

    // A two-GPU job and a half-GPU job.
    let (s, v) = call(
        &server,
        "POST",
        "/api/v1/jobs",
        Some(json!({"gpus": 2, "models": ["H100"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["data"]["state"], "running", "{v}");
    let whole = v["data"]["job"]["id"].as_u64().unwrap();
    let (s, v) = call(
        &server,
        "POST",
        "/api/v1/jobs",
        Some(json!({"gpu_milli": 500})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["data"]["state"], "running", "{v}");
    let half = v["data"]["job"]["id"].as_u64().unwrap();
    // A job for a model nobody has is refused, not queued forever.
    let (s, v) = call(
        &server,
        "POST",
        "/api/v1/jobs",
        Some(json!({"gpus": 1, "models": ["B200"]})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    let leases = server
        .rows("SELECT lease_id, job_id, gpu_uuid, share_milli FROM lease ORDER BY lease_id")
        .await;
    assert_eq!(leases.len(), 3, "{leases:?}");
    let shares: i64 = leases
        .iter()
        .map(|l| l["share_milli"].as_i64().unwrap())
        .sum();
    assert_eq!(shares, 2500);
    // A multi-GPU job sits on one worker.
    let whole_gpus: Vec<&str> = leases
        .iter()
        .filter(|l| l["job_id"].as_str() == Some(whole.to_string().as_str()))
        .map(|l| l["gpu_uuid"].as_str().unwrap())
        .collect();
    assert_eq!(whole_gpus.len(), 2);

    // Let the whole job run a little, then complete it: its earnings are final.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (s, v) = call(
        &server,
        "POST",
        &format!("/api/v1/jobs/{whole}/complete"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["state"], "completed");
    let (s, _) = call(
        &server,
        "POST",
        &format!("/api/v1/jobs/{whole}/complete"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "a job ends once");

    // Money: per lease, the entries sum to floor(rate × share × duration), to the µ.
    let check = |rows: &[Value]| {
        let mut checked = 0;
        for l in rows {
            let (Some(start), Some(end)) = (l["start_ms"].as_i64(), l["end_ms"].as_i64()) else {
                continue;
            };
            let rate = l["rate"].as_i64().unwrap();
            let share = l["share_milli"].as_i64().unwrap();
            let expected = (rate as i128 * share as i128 * (end - start) as i128)
                .div_euclid(1000 * 3_600_000) as i64;
            assert_eq!(l["paid"].as_i64().unwrap(), expected, "{l}");
            checked += 1;
        }
        checked
    };
    let money_sql = "SELECT l.lease_id, l.start_ms, l.end_ms, l.share_milli, \
         max(e.rate_micro_per_gpu_hour) AS rate, sum(e.amount_micro) AS paid, count(*) AS entries \
         FROM lease l JOIN earnings e ON l.lease_id = e.lease_id \
         GROUP BY l.lease_id, l.start_ms, l.end_ms, l.share_milli";
    let before = server.rows(money_sql).await;
    assert_eq!(
        check(&before),
        2,
        "both leases of the completed job: {before:?}"
    );
    assert!(
        before
            .iter()
            .all(|l| l["end_ms"].is_null() || l["paid"].as_i64().unwrap() > 1000),
        "the completed leases earned real money: {before:?}"
    );
    let earnings_rows = server.count("earnings").await;

    // The same money through the query language: the exact cumulative counter per GPU.
    let mut agreed = false;
    for _ in 0..3 {
        let sql = paid_per_supplier(&server).await;
        let (s, v) = call(
            &server,
            "POST",
            &format!(
                "/api/v1/query?query={}",
                "sum%20by%20(supplier)%20(last_over_time(rigwatch_earnings_total%5B1h%5D))"
            ),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let promql: BTreeMap<String, i64> = v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["metric"]["supplier"].as_str().unwrap().to_string(),
                    r["value"][1].as_str().unwrap().parse::<f64>().unwrap() as i64,
                )
            })
            .collect();
        assert!(!sql.is_empty());
        if sql == promql {
            agreed = true;
            break;
        }
        // A minute may have been accrued between the two reads.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        agreed,
        "rigwatch_earnings_total disagrees with the earnings rows"
    );

    // Daily statements reconcile: accrued = settled + unsettled, and equal the rows.
    let mut reconciled = false;
    for _ in 0..3 {
        let (s, v) = call(&server, "GET", "/api/v1/earnings/statements", None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let rows = paid_per_supplier(&server).await;
        let rec = v["data"]["reconciliation"].as_array().unwrap();
        for r in rec {
            assert_eq!(
                r["accrued_micro"].as_i64().unwrap(),
                r["settled_micro"].as_i64().unwrap()
                    + r["carry_micro"].as_i64().unwrap()
                    + r["accruing_micro"].as_i64().unwrap(),
                "{r}"
            );
            assert_eq!(r["balanced"], true, "{r}");
        }
        let ledger: BTreeMap<String, i64> = rec
            .iter()
            .map(|r| {
                (
                    r["supplier"].as_str().unwrap().to_string(),
                    r["accrued_micro"].as_i64().unwrap(),
                )
            })
            .collect();
        let days: i64 = v["data"]["days"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["accrued_micro"].as_i64().unwrap())
            .sum();
        assert_eq!(days, ledger.values().sum::<i64>(), "{v}");
        if ledger == rows && rec.iter().all(|r| r["mismatch_micro"] == 0) {
            reconciled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(reconciled, "statements disagree with the earnings rows");

    // kill -9 and restart: the half job's lease is still open, nothing doubles.
    server.kill9();
    let server = Server::start(&data, &args, &[]).await;
    server.write_ok(&telemetry()).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_, v) = call(&server, "GET", &format!("/api/v1/jobs/{half}"), None).await;
    assert_eq!(v["data"]["state"], "running", "{v}");
    let open = server
        .rows("SELECT count(*) AS n FROM lease WHERE end_ms IS NULL")
        .await;
    assert_eq!(open[0]["n"], 1);
    assert_eq!(server.count("lease").await, 3, "no lease twice");
    let after = server.rows(money_sql).await;
    assert_eq!(check(&after), 2);
    assert!(server.count("earnings").await >= earnings_rows);
    // A new job cannot take the half GPU's remaining capacity twice over: 3.5 GPUs free.
    for _ in 0..3 {
        let (s, v) = call(&server, "POST", "/api/v1/jobs", Some(json!({"gpus": 1}))).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert_eq!(v["data"]["state"], "running", "{v}");
    }
    let (_, v) = call(&server, "POST", "/api/v1/jobs", Some(json!({"gpus": 1}))).await;
    assert_eq!(v["data"]["state"], "queued", "no whole GPU left: {v}");
    let used = server
        .rows("SELECT gpu_uuid, sum(share_milli) AS used FROM lease WHERE end_ms IS NULL GROUP BY gpu_uuid")
        .await;
    for g in &used {
        assert!(
            g["used"].as_i64().unwrap() <= 1000,
            "over-allocated: {used:?}"
        );
    }
    // Cancel the queued job.
    let queued = v["data"]["job"]["id"].as_u64().unwrap();
    let (s, v) = call(&server, "DELETE", &format!("/api/v1/jobs/{queued}"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["state"], "cancelled");

    // A hardware XID on the half job's GPU: fault detection marks it unhealthy and the
    // allocator ends its lease with that reason, paid up to the fault; the job goes back to
    // the queue (every other GPU is full, so it waits there).
    let gpu = server
        .rows(&format!(
            "SELECT gpu_uuid, worker, supplier FROM lease WHERE job_id = '{half}'"
        ))
        .await;
    let (uuid, worker, supplier) = (
        gpu[0]["gpu_uuid"].as_str().unwrap().to_string(),
        gpu[0]["worker"].as_str().unwrap().to_string(),
        gpu[0]["supplier"].as_str().unwrap().to_string(),
    );
    let worker = worker.rsplit('/').next().unwrap().to_string();
    server
        .write_ok(&format!(
            "gpu_fault,supplier={supplier},worker={worker},gpu_uuid={uuid},model=H100,kind=xid code=79i {}\n",
            now_ns()
        ))
        .await;
    let mut ended = Value::Null;
    for _ in 0..50 {
        let rows = server
            .rows(&format!(
                "SELECT end_reason FROM lease WHERE job_id = '{half}' AND gpu_uuid = '{uuid}'"
            ))
            .await;
        if !rows[0]["end_reason"].is_null() {
            ended = rows[0]["end_reason"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ended, "fault_hardware", "the lease on the faulted GPU ends");
    let (_, v) = call(&server, "GET", &format!("/api/v1/jobs/{half}"), None).await;
    assert_eq!(
        v["data"]["state"], "queued",
        "requeued after the fault: {v}"
    );
    assert_eq!(v["data"]["restarts"], 1, "{v}");
    let row = server
        .rows(&format!(
            "SELECT state, restarts FROM job WHERE job_id = '{half}'"
        ))
        .await;
    assert_eq!(
        (row[0]["state"].as_str(), row[0]["restarts"].as_i64()),
        (Some("queued"), Some(1))
    );
    // Room on a healthy GPU: it runs again, on a new lease.
    let (_, jobs) = call(&server, "GET", "/api/v1/jobs", None).await;
    let one = jobs["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["state"] == "running" && j["job"]["demand"] == json!({"whole": 1}))
        .map(|j| j["job"]["id"].as_u64().unwrap())
        .expect("a running 1-GPU job");
    let (s, _) = call(
        &server,
        "POST",
        &format!("/api/v1/jobs/{one}/complete"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let mut state = Value::Null;
    for _ in 0..50 {
        let (_, v) = call(&server, "GET", &format!("/api/v1/jobs/{half}"), None).await;
        state = v["data"]["state"].clone();
        if state == "running" {
            assert_eq!(v["data"]["leases"].as_array().unwrap().len(), 2, "{v}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, "running", "the requeued job is placed again");
    // The lease row is written just after the job shows as running: wait for it.
    let mut open = Vec::new();
    for _ in 0..50 {
        open = server
            .rows_when_ready(&format!(
                "SELECT gpu_uuid FROM lease WHERE job_id = '{half}' AND end_ms IS NULL"
            ))
            .await;
        if !open.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(open.len(), 1, "{open:?}");
    assert_ne!(
        open[0]["gpu_uuid"].as_str(),
        Some(uuid.as_str()),
        "not on the failed GPU"
    );

    // The CLI shows the same jobs.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rigwatch"))
        .args(["job", "list", "--url", &server.base, "--token", ADMIN_TOKEN])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("cancelled") && text.contains("completed") && text.contains("running"),
        "{text}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rigwatch"))
        .args([
            "job",
            "submit",
            "--url",
            &server.base,
            "--token",
            ADMIN_TOKEN,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--gpus N"));
}

/// kube-scheduler, pointed at `/k8s/<extender token>`, places a GPU pod through the live
/// allocator on that supplier's own nodes only; the binding is a job with lease rows, and
/// it ends when the pod is unbound (or its binding lapses without renewal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_scheduler_extender_uses_the_live_allocator() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    // Request logging on, so the check that the path token is redacted can fail.
    let args = [
        "--alloc-tick",
        "200ms",
        "--log",
        "info,tower_http=debug,rigwatch=debug",
    ];
    let server = Server::start(&data, &args, &[]).await;
    server.write_ok(&telemetry()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let auth = rigwatch_storage::auth::AuthStore::open(&data).unwrap();
    auth.add_supplier("acme").unwrap();
    let token = auth
        .issue(
            rigwatch_storage::auth::Role::Extender,
            Some("acme"),
            None,
            "k8s",
        )
        .unwrap()
        .token;
    let read_token = auth
        .issue(
            rigwatch_storage::auth::Role::Supplier,
            Some("acme"),
            None,
            "read",
        )
        .unwrap()
        .token;
    let pod = json!({
        "metadata": {"name": "trainer", "namespace": "ml", "uid": "uid-1"},
        "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "2"}}}]}
    });
    let client = reqwest::Client::new();
    let post = |path: String, body: Value| {
        let client = client.clone();
        async move {
            let r = client.post(path).json(&body).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let base = format!("{}/k8s/{token}", server.base);
    // w0 is acme's (two GPUs), w1 is bolt's: not acme's to offer.
    let (s, v) = post(
        format!("{base}/filter"),
        json!({"Pod": pod, "NodeNames": ["w0", "w1"]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["NodeNames"], json!(["w0"]), "{v}");
    assert!(v["FailedNodes"]["w1"].is_string(), "{v}");
    let (_, v) = post(
        format!("{base}/prioritize"),
        json!({"Pod": pod, "NodeNames": ["w0"]}),
    )
    .await;
    assert_eq!(v[0]["Host"], "w0", "{v}");
    let (_, v) = post(
        format!("{base}/bind"),
        json!({"PodName": "trainer", "PodNamespace": "ml", "PodUID": "uid-1", "Node": "w0"}),
    )
    .await;
    assert_eq!(v["Error"], "", "{v}");
    let mut leases = Vec::new();
    for _ in 0..30 {
        leases = server
            .rows_when_ready("SELECT supplier, worker, share_milli FROM lease ORDER BY gpu_uuid")
            .await;
        if leases.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(leases.len(), 2, "{leases:?}");
    for l in &leases {
        assert_eq!(l["supplier"], "acme");
        assert_eq!(l["worker"], "w0");
        assert_eq!(l["share_milli"], 1000);
    }
    // Those GPUs are now taken for everyone: a 2-GPU job can only go to bolt's worker.
    let (s, v) = call(&server, "POST", "/api/v1/jobs", Some(json!({"gpus": 2}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let rows = server
        .rows(&format!(
            "SELECT DISTINCT worker FROM lease WHERE job_id = '{}'",
            v["data"]["job"]["id"]
        ))
        .await;
    assert_eq!(rows, [json!({"worker": "w1"})]);
    // The binding is a job: listed, and unbinding the pod ends its leases (completed).
    let (_, jobs) = call(&server, "GET", "/api/v1/jobs", None).await;
    let bound = jobs["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["state"] == "running")
        .count();
    assert_eq!(bound, 2, "{jobs}");
    let (_, v) = post(
        format!("{base}/renew"),
        json!({"PodUIDs": ["uid-1", "uid-x"]}),
    )
    .await;
    assert_eq!(v["Renewed"], 1, "{v}");
    assert_eq!(v["Unknown"], json!(["uid-x"]), "{v}");
    let (_, v) = post(format!("{base}/unbind"), json!({"PodUID": "uid-1"})).await;
    assert_eq!(v["Error"], "", "{v}");
    let mut ended = Vec::new();
    for _ in 0..30 {
        ended = server
            .rows_when_ready(
                "SELECT end_reason FROM lease WHERE worker = 'w0' AND end_reason IS NOT NULL",
            )
            .await;
        if ended.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let completed = json!({"end_reason": "completed"});
    assert_eq!(ended, [completed.clone(), completed], "{ended:?}");
    let (_, v) = post(format!("{base}/unbind"), json!({"PodUID": "uid-1"})).await;
    assert!(v["Error"].as_str().unwrap().contains("not bound"), "{v}");
    // The supplier's read token is not an extender credential, and the extender token
    // reads nothing.
    let r = client
        .post(format!("{}/k8s/{read_token}/filter", server.base))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = client
        .get(format!("{}/api/v1/sql?q=SELECT+1", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The token in the path never reaches the log.
    assert!(!server.log().contains(&token), "extender token logged");
    // No token, or an operator's: refused.
    let r = client
        .post(format!(
            "{}/k8s/rw_0000000000_00000000000000000000000000000000/filter",
            server.base
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = client
        .post(format!("{}/k8s/{ADMIN_TOKEN}/filter", server.base))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

/// An accepted job is durable: after kill -9 a queued job is still queued, in its place and
/// with its shape (models, memory, priority, price cap), a running job keeps its shape, and
/// the queued one starts as soon as room appears. Ids are not reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_jobs_survive_kill_9_with_their_shape_and_order() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let args = ["--alloc-tick", "200ms"];
    let mut server = Server::start(&data, &args, &[]).await;
    server.write_ok(&telemetry()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Two workers of two H100s each: two 2-GPU jobs fill the fleet.
    let mut running = Vec::new();
    for _ in 0..2 {
        let (s, v) = call(
            &server,
            "POST",
            "/api/v1/jobs",
            Some(json!({"gpus": 2, "models": ["H100"], "min_gpu_memory_mib": 40000})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert_eq!(v["data"]["state"], "running", "{v}");
        running.push(v["data"]["job"]["id"].as_u64().unwrap());
    }
    // Then two that must wait: a low-priority one first, a high-priority one second.
    let mut queued = Vec::new();
    for (prio, gpus) in [(0, 2), (5, 1)] {
        let (s, v) = call(
            &server,
            "POST",
            "/api/v1/jobs",
            Some(json!({"gpus": gpus, "models": ["H100"], "priority": prio,
                        "price_cap_micro_per_gpu_hour": 2_500_000i64, "expected_duration_s": 600})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert_eq!(v["data"]["state"], "queued", "{v}");
        queued.push(v["data"]["job"]["id"].as_u64().unwrap());
    }
    // The jobs are rows, readable by SQL like the leases.
    let n = server
        .rows("SELECT count(*) AS n FROM job WHERE state = 'queued'")
        .await;
    assert_eq!(n[0]["n"], 2, "{n:?}");

    server.kill9();
    let server = Server::start(&data, &args, &[]).await;
    server.write_ok(&telemetry()).await;
    tokio::time::sleep(Duration::from_millis(600)).await;

    for id in &queued {
        let (s, v) = call(&server, "GET", &format!("/api/v1/jobs/{id}"), None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(
            v["data"]["state"], "queued",
            "still waiting after kill -9: {v}"
        );
        assert_eq!(v["data"]["job"]["models"], json!(["H100"]), "{v}");
        assert_eq!(
            v["data"]["job"]["price_cap_micro_per_gpu_hour"], 2_500_000,
            "{v}"
        );
        assert_eq!(v["data"]["job"]["expected_duration_ms"], 600_000, "{v}");
    }
    let (_, v) = call(&server, "GET", &format!("/api/v1/jobs/{}", queued[1]), None).await;
    assert_eq!(v["data"]["job"]["priority"], 5, "{v}");
    assert_eq!(v["data"]["job"]["demand"], json!({"whole": 1}), "{v}");
    for id in &running {
        let (_, v) = call(&server, "GET", &format!("/api/v1/jobs/{id}"), None).await;
        assert_eq!(v["data"]["state"], "running", "{v}");
        assert_eq!(
            v["data"]["job"]["min_gpu_memory_mib"], 40000,
            "shape kept: {v}"
        );
        assert_eq!(v["data"]["job"]["demand"], json!({"whole": 2}), "{v}");
    }

    // A new job gets a fresh id.
    let (s, v) = call(&server, "POST", "/api/v1/jobs", Some(json!({"gpus": 8}))).await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "8 GPUs never fit a 2-GPU worker: {v}"
    );
    let (s, v) = call(
        &server,
        "POST",
        "/api/v1/jobs",
        Some(json!({"gpu_milli": 100})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let fresh = v["data"]["job"]["id"].as_u64().unwrap();
    assert!(fresh > queued[1], "id {fresh} reused");

    // Room on one worker: the high-priority 1-GPU job starts first, then (room for two) the
    // other; both from the queue rebuilt after the crash.
    let (s, v) = call(
        &server,
        "POST",
        &format!("/api/v1/jobs/{}/complete", running[0]),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let mut states = Vec::new();
    for _ in 0..30 {
        states.clear();
        for id in &queued {
            let (_, v) = call(&server, "GET", &format!("/api/v1/jobs/{id}"), None).await;
            states.push(v["data"]["state"].as_str().unwrap_or("").to_string());
        }
        if states[1] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        states,
        ["queued", "running"],
        "priority order kept across the restart"
    );
    // Its row follows (written just after the in-memory state changes).
    let mut started = Vec::new();
    for _ in 0..50 {
        started = server
            .rows_when_ready(&format!(
                "SELECT state, started_ms FROM job WHERE job_id = '{}'",
                queued[1]
            ))
            .await;
        if started.first().is_some_and(|r| r["state"] == "running") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(started[0]["state"], "running", "{started:?}");
    assert!(started[0]["started_ms"].as_i64().is_some(), "{started:?}");
}
