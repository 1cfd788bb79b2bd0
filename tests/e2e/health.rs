//! Fault injection through a real server: telemetry written over HTTP produces `gpu_fault`
//! and `gpu_health` rows for every fault class, with recovery; an alert rule on the health
//! state notifies a real webhook receiver on loopback (firing, then resolved) even though the
//! receiver is down when the alert first fires; a burst of 1,000 XIDs is fully detected and
//! notified (latencies printed); and `rigwatch rules check` rejects a bad file with line and
//! reason.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use parking_lot::Mutex;

use super::harness::{Http, Server, temp_dir};

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

const HEALTHY: &str =
    "utilization=50,temperature=60,throttle_reasons=0i,ecc_dbe_total=0i,pcie_replay_total=0i";

/// A loopback webhook receiver that answers 503 while `down`.
#[derive(Clone, Default)]
struct Receiver {
    down: Arc<AtomicBool>,
    got: Arc<Mutex<Vec<serde_json::Value>>>,
    refused: Arc<Mutex<u64>>,
}

async fn hook(State(r): State<Receiver>, body: axum::body::Bytes) -> StatusCode {
    if r.down.load(Ordering::SeqCst) {
        *r.refused.lock() += 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let v: serde_json::Value = serde_json::from_slice(&body).expect("webhook body is JSON");
    r.got.lock().push(v);
    StatusCode::OK
}

impl Receiver {
    /// A receiver on a loopback port, down (answering 503) until told otherwise: the
    /// receiver, its URL, and its server task.
    async fn start_down() -> (Self, String, tokio::task::JoinHandle<std::io::Result<()>>) {
        let receiver = Receiver::default();
        receiver.down.store(true, Ordering::SeqCst);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/hook", post(hook))
            .with_state(receiver.clone());
        let task = tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url, task)
    }

    /// Alerts received so far for `gpu` with `status`, in arrival order.
    fn alerts(&self, gpu: &str, status: &str) -> Vec<serde_json::Value> {
        self.got
            .lock()
            .iter()
            .flat_map(|m| m["alerts"].as_array().cloned().unwrap_or_default())
            .filter(|a| a["labels"]["gpu_uuid"] == gpu && a["status"] == status)
            .collect()
    }
}

/// Writes a `gpu` row for every live GPU every 250 ms, with each GPU's current fields.
fn spawn_writer(
    http: Http,
    gpus: Arc<Mutex<BTreeMap<String, String>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let t = now_ns();
            let lp: String = gpus
                .lock()
                .iter()
                .map(|(uuid, fields)| {
                    format!(
                        "gpu,supplier=acme,worker=w1,gpu_uuid={uuid},model=NVIDIA\\ H100\\ 80GB\\ HBM3 {fields} {t}\n"
                    )
                })
                .collect();
            if !lp.is_empty() {
                let _ = http.write(&lp).await;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
}

async fn states(s: &Http, gpu: &str) -> Vec<String> {
    // Before the first health change the table does not exist yet: no history.
    let q = format!("SELECT state FROM gpu_health WHERE gpu_uuid = '{gpu}' ORDER BY time");
    match s.try_sql(&q).await {
        Ok(serde_json::Value::Array(rows)) => rows
            .into_iter()
            .map(|r| r["state"].as_str().unwrap_or_default().to_string())
            .collect(),
        Ok(other) => panic!("{q}: {other}"),
        Err(e) if e.contains("not found") => Vec::new(),
        Err(e) => panic!("{q}: {e}\n{}", s.log_tail(30)),
    }
}

/// Waits until the GPU's health history is `want`; panics with the history after `limit`.
async fn wait_states(s: &Http, gpu: &str, want: &[&str], limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got = states(s, gpu).await;
        if got == want {
            return start.elapsed();
        }
        if start.elapsed() > limit {
            panic!(
                "{gpu}: health history {got:?}, expected {want:?}\n{}",
                s.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn faults(s: &Http, gpu: &str) -> Vec<(String, String, i64)> {
    s.rows(&format!(
        "SELECT kind, class, code FROM gpu_fault WHERE detector = 'health' AND gpu_uuid = '{gpu}' ORDER BY time"
    ))
    .await
    .into_iter()
    .map(|r| {
        (
            r["kind"].as_str().unwrap_or_default().to_string(),
            r["class"].as_str().unwrap_or_default().to_string(),
            r["code"].as_i64().unwrap_or(-1),
        )
    })
    .collect()
}

async fn wait_until<F: Fn() -> bool>(what: &str, s: &Http, limit: Duration, f: F) -> Duration {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > limit {
            panic!("timed out waiting for {what}\n{}", s.log_tail(30));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

const RULES: &str = r#"
groups:
  - name: e2e
    interval: 1s
    rules:
      - alert: GpuUnhealthy
        expr: last_over_time(gpu_health_state_code[1h]) == 2
        labels:
          severity: critical
        annotations:
          summary: "GPU {{ $labels.gpu_uuid }} on {{ $labels.worker }} is unhealthy"
      # Fails at run time (many-to-many matching) once two GPUs report: counted and logged,
      # and GpuUnhealthy keeps running.
      - alert: BrokenAtRunTime
        expr: gpu_utilization + on() gpu_utilization
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn injected_faults_change_health_and_notify_a_webhook_that_was_down() {
    let dir = temp_dir();
    let rules_path = dir.path().join("rules.yml");
    std::fs::write(&rules_path, RULES).unwrap();

    let (receiver, hook_url, hook_task) = Receiver::start_down().await;

    let data = dir.path().join("data");
    let s = Server::start(
        &data,
        &[
            "--rules",
            rules_path.to_str().unwrap(),
            "--alert-webhook",
            &hook_url,
            "--external-url",
            "http://rigwatch.test:9800",
            "--health-offline-after",
            "8s",
            "--health-throttle-window",
            "2s",
            "--health-temperature-window",
            "1s",
            "--health-clean-interval",
            "2s",
        ],
        &[],
    )
    .await;

    let gpus: Arc<Mutex<BTreeMap<String, String>>> = Arc::new(Mutex::new(
        ["GPU-X", "GPU-A", "GPU-E", "GPU-T", "GPU-P", "GPU-O"]
            .into_iter()
            .map(|g| (g.to_string(), HEALTHY.to_string()))
            .collect(),
    ));
    let writer = spawn_writer((*s).clone(), gpus.clone());
    tokio::time::sleep(Duration::from_millis(600)).await;

    // Hardware XID while the receiver is down.
    let t = now_ns();
    s.write_ok(&format!(
        "gpu_fault,supplier=acme,worker=w1,gpu_uuid=GPU-X,kind=xid code=79i,severity=\"hardware\" {t}\n\
         gpu_fault,supplier=acme,worker=w1,gpu_uuid=GPU-A,kind=xid code=13i,severity=\"application\" {t}\n"
    ))
    .await;
    let xid_latency = wait_states(&s, "GPU-X", &["unhealthy"], Duration::from_secs(10)).await;
    eprintln!("XID -> gpu_health row visible over HTTP: {xid_latency:?}");
    assert_eq!(
        faults(&s, "GPU-X").await,
        [("xid".to_string(), "hardware".to_string(), 79)]
    );
    let ev = s
        .rows("SELECT evidence, action, severity FROM gpu_fault WHERE detector='health' AND gpu_uuid='GPU-X'")
        .await;
    assert!(
        ev[0]["evidence"]
            .as_str()
            .unwrap()
            .contains("fallen off the bus"),
        "{ev:?}"
    );
    assert!(
        ev[0]["action"].as_str().unwrap().contains("reboot"),
        "{ev:?}"
    );
    assert_eq!(ev[0]["severity"], "critical");
    // The application XID is recorded against the job, not the GPU.
    assert_eq!(
        faults(&s, "GPU-A").await,
        [("xid".to_string(), "application".to_string(), 13)]
    );

    // The receiver refuses for a while: the firing notification is retried, not lost.
    wait_until(
        "delivery attempts to the down receiver",
        &s,
        Duration::from_secs(15),
        || *receiver.refused.lock() >= 2,
    )
    .await;
    receiver.down.store(false, Ordering::SeqCst);
    wait_until(
        "the firing notification",
        &s,
        Duration::from_secs(30),
        || !receiver.alerts("GPU-X", "firing").is_empty(),
    )
    .await;
    {
        let got = receiver.got.lock();
        let m = got
            .iter()
            .find(|m| m["alerts"][0]["labels"]["gpu_uuid"] == "GPU-X")
            .unwrap();
        assert_eq!(m["version"], "4");
        assert_eq!(m["status"], "firing");
        assert_eq!(m["groupKey"], "{}:{alertname=\"GpuUnhealthy\"}");
        assert_eq!(m["groupLabels"]["alertname"], "GpuUnhealthy");
        assert_eq!(m["externalURL"], "http://rigwatch.test:9800");
        assert_eq!(m["commonLabels"]["severity"], "critical");
        let a = &m["alerts"][0];
        assert_eq!(a["annotations"]["summary"], "GPU GPU-X on w1 is unhealthy");
        assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
        assert!(a["startsAt"].as_str().unwrap().ends_with('Z'));
        assert!(
            a["generatorURL"]
                .as_str()
                .unwrap()
                .starts_with("http://rigwatch.test:9800/graph?g0.expr=")
        );
        assert_eq!(a["fingerprint"].as_str().unwrap().len(), 16);
    }
    // ALERTS is queryable.
    let alerts = s
        .rows("SELECT alertstate FROM \"ALERTS\" WHERE gpu_uuid = 'GPU-X' AND alertname = 'GpuUnhealthy'")
        .await;
    assert!(
        alerts.iter().any(|r| r["alertstate"] == "firing"),
        "{alerts:?}"
    );

    // A reset reported by the agent brings it back; the alert resolves.
    s.write_ok(&format!(
        "gpu_fault,supplier=acme,worker=w1,gpu_uuid=GPU-X,kind=reset code=0i {}\n",
        now_ns()
    ))
    .await;
    wait_states(
        &s,
        "GPU-X",
        &["unhealthy", "healthy"],
        Duration::from_secs(10),
    )
    .await;
    wait_until(
        "the resolved notification",
        &s,
        Duration::from_secs(20),
        || !receiver.alerts("GPU-X", "resolved").is_empty(),
    )
    .await;
    let resolved = receiver.alerts("GPU-X", "resolved");
    assert_ne!(resolved[0]["endsAt"], "0001-01-01T00:00:00Z");

    // The other classes, all at once on their own GPUs.
    {
        let mut g = gpus.lock();
        g.insert(
            "GPU-E".into(),
            HEALTHY.replace("ecc_dbe_total=0i", "ecc_dbe_total=2i"),
        );
        g.insert(
            "GPU-T".into(),
            HEALTHY
                .replace("temperature=60", "temperature=95")
                .replace("throttle_reasons=0i", "throttle_reasons=64i"),
        );
        g.insert(
            "GPU-P".into(),
            HEALTHY.replace("pcie_replay_total=0i", "pcie_replay_total=100000i"),
        );
        g.remove("GPU-O");
    }
    let limit = Duration::from_secs(40);
    wait_states(&s, "GPU-E", &["unhealthy"], limit).await;
    wait_states(&s, "GPU-P", &["degraded"], limit).await;
    wait_states(&s, "GPU-T", &["unhealthy"], limit).await;
    wait_states(&s, "GPU-O", &["offline"], limit).await;
    // Throttling needs its full window; over-temperature came first.
    let deadline = Instant::now() + limit;
    while faults(&s, "GPU-T").await.len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kinds: Vec<String> = faults(&s, "GPU-T").await.into_iter().map(|f| f.0).collect();
    assert_eq!(kinds, ["over_temperature", "thermal_throttle"]);
    assert_eq!(faults(&s, "GPU-E").await[0].0, "ecc_uncorrectable");
    assert_eq!(faults(&s, "GPU-P").await[0].0, "pcie_replay");
    assert_eq!(faults(&s, "GPU-O").await[0].0, "offline");

    // Recovery: counters reset (ECC), clean interval (PCIe, thermal), data again (offline).
    {
        let mut g = gpus.lock();
        for u in ["GPU-E", "GPU-T", "GPU-O"] {
            g.insert(u.into(), HEALTHY.into());
        }
        // The replay counter stays where it got to: no new replays.
        g.insert(
            "GPU-P".into(),
            HEALTHY.replace("pcie_replay_total=0i", "pcie_replay_total=100000i"),
        );
    }
    wait_states(&s, "GPU-E", &["unhealthy", "healthy"], limit).await;
    wait_states(&s, "GPU-P", &["degraded", "healthy"], limit).await;
    wait_states(&s, "GPU-T", &["unhealthy", "healthy"], limit).await;
    wait_states(&s, "GPU-O", &["offline", "healthy"], limit).await;
    // PromQL sees the health series.
    let q = s
        .rows("SELECT count(*) AS n FROM gpu_health WHERE state_code = 2")
        .await;
    assert!(q[0]["n"].as_u64().unwrap() >= 3, "{q:?}");

    // 1,000 hardware XIDs on 1,000 GPUs in one burst.
    let before = receiver.alerts("GPU-B0000", "firing").len();
    assert_eq!(before, 0);
    let t = now_ns();
    let lp: String = (0..1_000)
        .map(|i| {
            format!(
                "gpu,supplier=acme,worker=w2,gpu_uuid=GPU-B{i:04} utilization=1 {t}\n\
                 gpu_fault,supplier=acme,worker=w2,gpu_uuid=GPU-B{i:04},kind=xid code=48i {}\n",
                t + 1
            )
        })
        .collect();
    let sent = Instant::now();
    s.write_ok(&lp).await;
    let acked = sent.elapsed();
    let mut health_all = None;
    let mut notified_all = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while (health_all.is_none() || notified_all.is_none()) && Instant::now() < deadline {
        if health_all.is_none() {
            let n = s
                .rows("SELECT count(*) AS n FROM gpu_health WHERE worker = 'w2' AND state = 'unhealthy'")
                .await[0]["n"]
                .as_u64()
                .unwrap();
            if n == 1_000 {
                health_all = Some(sent.elapsed());
            }
        }
        if notified_all.is_none() {
            let got = receiver.got.lock();
            let n: usize = got
                .iter()
                .flat_map(|m| m["alerts"].as_array().cloned().unwrap_or_default())
                .filter(|a| {
                    a["status"] == "firing"
                        && a["labels"]["gpu_uuid"]
                            .as_str()
                            .is_some_and(|u| u.starts_with("GPU-B"))
                })
                .count();
            if n == 1_000 {
                notified_all = Some(sent.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let faults_w2 = s
        .rows("SELECT count(*) AS n FROM gpu_fault WHERE detector='health' AND worker='w2'")
        .await[0]["n"]
        .as_u64()
        .unwrap();
    eprintln!(
        "1,000 XIDs: write acked in {acked:?}; all 1,000 health changes visible after {health_all:?}; \
         all 1,000 firing alerts at the webhook after {notified_all:?}"
    );
    // The burst's own GPUs may go offline later (they get no more rows); only the XIDs count.
    assert_eq!(faults_w2, 1_000, "one fault row per injected XID");
    assert!(
        health_all.is_some(),
        "not every XID changed health\n{}",
        s.log_tail(30)
    );
    assert!(
        notified_all.is_some(),
        "not every XID was notified\n{}",
        s.log_tail(30)
    );

    // The failing rule is counted and logged.
    let failures = s
        .metric("rigwatch_rule_evaluation_failures_total")
        .await
        .expect("a failure counter in /metrics");
    assert!(failures >= 1.0, "{failures}");
    assert!(s.log().contains("alerting rule evaluation failed"));
    // Rule status in the Prometheus API's format: the failing rule says why.
    let get = |path: &str| {
        reqwest::Client::new()
            .get(format!("{}{path}", s.base))
            .bearer_auth(super::harness::ADMIN_TOKEN)
            .send()
    };
    let rules: serde_json::Value = get("/api/v1/rules").await.unwrap().json().await.unwrap();
    assert_eq!(rules["status"], "success");
    let list = rules["data"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .clone();
    let by_name = |n: &str| list.iter().find(|r| r["name"] == n).unwrap().clone();
    let broken = by_name("BrokenAtRunTime");
    assert_eq!(broken["health"], "err", "{broken}");
    assert!(
        broken["lastError"]
            .as_str()
            .unwrap()
            .contains("many-to-many"),
        "{broken}"
    );
    let ok = by_name("GpuUnhealthy");
    assert_eq!(ok["health"], "ok", "{ok}");
    assert_eq!(ok["labels"]["severity"], "critical");
    assert_eq!(
        ok["annotations"]["summary"],
        "GPU {{ $labels.gpu_uuid }} on {{ $labels.worker }} is unhealthy"
    );
    let alerts: serde_json::Value = get("/api/v1/alerts").await.unwrap().json().await.unwrap();
    assert_eq!(alerts["status"], "success");
    assert!(alerts["data"]["alerts"].is_array(), "{alerts}");
    assert!(s.log().contains("many-to-many"));

    writer.abort();
    hook_task.abort();
}

/// Alerting across `kill -9`: a firing notification queued while the receiver was down is
/// delivered after the restart, the still-firing alert is not announced a second time, and
/// when its condition clears it is resolved with the same identity (startsAt).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alerts_and_queued_notifications_survive_kill_9() {
    const HOT_RULES: &str = "
groups:
  - name: thermal
    interval: 1s
    rules:
      - alert: GpuHot
        expr: gpu_temperature > 80
        annotations:
          summary: \"{{ $labels.gpu_uuid }} at {{ $value }}C\"
";
    let dir = temp_dir();
    let rules_path = dir.path().join("rules.yml");
    std::fs::write(&rules_path, HOT_RULES).unwrap();
    let (receiver, hook_url, hook_task) = Receiver::start_down().await;
    let data = dir.path().join("data");
    let args = [
        "--rules",
        rules_path.to_str().unwrap(),
        "--alert-webhook",
        &hook_url,
    ];
    let line = |temp: u32| {
        format!(
            "gpu,supplier=acme,worker=w1,gpu_uuid=GPU-H,model=H100 temperature={temp} {}\n",
            now_ns()
        )
    };

    let mut s = Server::start(&data, &args, &[]).await;
    s.write_ok(&line(95)).await;
    // The alert fires and its notification is tried (and refused) at least once.
    let limit = Duration::from_secs(20);
    wait_until("a delivery attempt", &s, limit, || {
        *receiver.refused.lock() > 0
    })
    .await;
    // The outbox is written before the state that records the alert as announced, so a
    // crash between the two would announce it again after the restart (at least once, never
    // lost); this test kills the server once both are on disk.
    let state = data.join("alerts").join("state.json");
    wait_until("the alert state on disk", &s, limit, || {
        std::fs::read_to_string(&state).is_ok_and(|t| t.contains("\"firing\":true"))
    })
    .await;
    s.kill9();

    let s = Server::start(&data, &args, &[]).await;
    assert!(
        s.log().contains("alert state restored"),
        "{}",
        s.log_tail(20)
    );
    // Still hot for a few evaluations, and the receiver comes back.
    for _ in 0..3 {
        s.write_ok(&line(96)).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    receiver.down.store(false, Ordering::SeqCst);
    wait_until("the queued firing notification", &s, limit, || {
        !receiver.alerts("GPU-H", "firing").is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let firing = receiver.alerts("GPU-H", "firing");
    assert_eq!(
        firing.len(),
        1,
        "announced once, not again after the restart: {firing:?}"
    );
    assert_eq!(firing[0]["annotations"]["summary"], "GPU-H at 95C");

    // Cool: resolved, with the same startsAt as the firing before the crash.
    s.write_ok(&line(50)).await;
    wait_until("the resolved notification", &s, limit, || {
        !receiver.alerts("GPU-H", "resolved").is_empty()
    })
    .await;
    let resolved = receiver.alerts("GPU-H", "resolved");
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    assert_eq!(resolved[0]["startsAt"], firing[0]["startsAt"]);
    hook_task.abort();
}

/// A GPU drained for a hardware fault stays drained across a restart and still needs a reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_state_survives_a_restart() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let args = ["--rules", "none", "--health-offline-after", "1h"];
    let mut s = Server::start(&data, &args, &[]).await;
    let t = now_ns();
    s.write_ok(&format!(
        "gpu,supplier=acme,worker=w1,gpu_uuid=GPU-R,model=A100 {HEALTHY} {t}\n\
         gpu_fault,supplier=acme,worker=w1,gpu_uuid=GPU-R,kind=xid code=95i {}\n",
        t + 1
    ))
    .await;
    wait_states(&s, "GPU-R", &["unhealthy"], Duration::from_secs(10)).await;
    s.stop_gracefully().await;
    drop(s);

    let s = Server::start(&data, &args, &[]).await;
    assert!(
        s.log().contains("restored GPU health states"),
        "{}",
        s.log_tail(20)
    );
    // Clean telemetry alone does not heal it; a reset does.
    s.write_ok(&format!(
        "gpu,supplier=acme,worker=w1,gpu_uuid=GPU-R,model=A100 {HEALTHY} {}\n",
        now_ns()
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(states(&s, "GPU-R").await, ["unhealthy"]);
    s.write_ok(&format!(
        "gpu_fault,supplier=acme,worker=w1,gpu_uuid=GPU-R,kind=reset code=0i {}\n",
        now_ns()
    ))
    .await;
    wait_states(
        &s,
        "GPU-R",
        &["unhealthy", "healthy"],
        Duration::from_secs(10),
    )
    .await;

    // The reliability recipe (scheduler::health::reliability docs) runs as documented.
    use rigwatch_scheduler::health::reliability;
    let up: Vec<i64> = s
        .rows(
            "SELECT CAST(date_trunc('minute', time) AS BIGINT) AS minute FROM gpu \
             WHERE gpu_uuid = 'GPU-R' AND time > now() - interval '30 days' GROUP BY minute",
        )
        .await
        .iter()
        .map(|r| r["minute"].as_i64().expect("minute as ns"))
        .collect();
    let health: Vec<(i64, bool)> = s
        .rows(
            "SELECT CAST(time AS BIGINT) AS t, hardware FROM gpu_health \
             WHERE gpu_uuid = 'GPU-R' AND time > now() - interval '30 days' ORDER BY time",
        )
        .await
        .iter()
        .map(|r| (r["t"].as_i64().unwrap(), r["hardware"].as_bool().unwrap()))
        .collect();
    assert_eq!(health.len(), 2);
    assert!(health[0].1 && !health[1].1, "{health:?}");
    let now = now_ns();
    let first = *up.iter().min().unwrap();
    let r = reliability::score(&reliability::evidence(
        &up,
        &health,
        first,
        now - 30 * 86_400_000_000_000,
        now,
    ));
    assert!(r.up_minutes >= 1 && r.hardware_down_minutes >= 1, "{r:?}");
    assert!(r.score < 1.0, "hardware downtime costs score: {r:?}");
}

#[test]
fn rules_check_reports_line_and_reason() {
    let (code, stderr, _) = super::harness::rules_check(
        "groups:\n  - name: g\n    rules:\n      - alert: Hot\n        expr: gpu_temperature > \n        for: 5m\n",
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("bad.yml:5:") && stderr.contains("invalid expr"),
        "{stderr}"
    );
    let ok = std::process::Command::new(env!("CARGO_BIN_EXE_rigwatch"))
        .args(["rules", "check", "--defaults"])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}
