//! A real Alertmanager (Debian package `prometheus-alertmanager`, installed by .ci/run) fed
//! by `rigwatch serve --alertmanager`, routing to a webhook receiver this test runs: a
//! firing alert reaches the receiver through Alertmanager and is re-sent while it fires; an
//! alert under a silence created through Alertmanager's API reaches Alertmanager but not the
//! receiver; the resolution arrives.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use parking_lot::Mutex;
use serde_json::{Value, json};

use super::harness::{Http, Server, temp_dir};
use super::prometheus::free_port;

/// Kills Alertmanager when the test ends, however it ends.
struct Alertmanager {
    child: Child,
    base: String,
    log: std::path::PathBuf,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Alertmanager {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The Alertmanager binary: Debian's name, or upstream's.
fn binary() -> Option<&'static str> {
    ["prometheus-alertmanager", "alertmanager"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok())
}

/// Webhook messages Alertmanager delivered to the test.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Value>>>);

async fn hook(State(r): State<Receiver>, body: axum::body::Bytes) -> StatusCode {
    match serde_json::from_slice(&body) {
        Ok(v) => {
            r.0.lock().push(v);
            StatusCode::OK
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

impl Receiver {
    /// Alerts received for `gpu` with `status`, in arrival order.
    fn alerts(&self, gpu: &str, status: &str) -> Vec<Value> {
        self.0
            .lock()
            .iter()
            .flat_map(|m| m["alerts"].as_array().cloned().unwrap_or_default())
            .filter(|a| a["labels"]["gpu_uuid"] == gpu && a["status"] == status)
            .collect()
    }

    fn any_for(&self, gpu: &str) -> Vec<Value> {
        let mut all = self.alerts(gpu, "firing");
        all.extend(self.alerts(gpu, "resolved"));
        all
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i64
}

fn rfc3339_in(secs: i64) -> String {
    let t = SystemTime::now() + Duration::from_secs(secs as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

const RULES: &str = r#"
groups:
  - name: thermal
    interval: 1s
    rules:
      - alert: GpuHot
        expr: gpu_temperature > 80
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.gpu_uuid }} is hot"
"#;

async fn wait_for(what: &str, s: &Http, am: &Alertmanager, limit: Duration, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}\n{}\n--- alertmanager log ---\n{}",
            s.log_tail(30),
            am.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Alertmanager's view of the alert for `gpu`, if it has one.
async fn am_alert(client: &reqwest::Client, am: &Alertmanager, gpu: &str) -> Option<Value> {
    let v: Value = client
        .get(format!("{}/api/v2/alerts", am.base))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v.as_array()?
        .iter()
        .find(|a| a["labels"]["gpu_uuid"] == gpu)
        .cloned()
}

/// `alertmanager_alerts_received_total{status="firing"}`, summed over API versions.
async fn firing_received(client: &reqwest::Client, am: &Alertmanager) -> f64 {
    let text = client
        .get(format!("{}/metrics", am.base))
        .send()
        .await
        .expect("alertmanager /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| {
            l.starts_with("alertmanager_alerts_received_total{") && l.contains("status=\"firing\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alerts_reach_a_real_alertmanager_with_silences_and_resolution() {
    let Some(bin) = binary() else {
        // CI installs it (.ci/run); a developer machine may not have it.
        assert!(
            std::env::var_os("CI").is_none(),
            "prometheus-alertmanager is not installed, but CI must run this test (see .ci/run)"
        );
        eprintln!(
            "skipping: Alertmanager is not installed (apt-get install prometheus-alertmanager)"
        );
        return;
    };
    let tmp = temp_dir();

    // The receiver Alertmanager notifies.
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(receiver.clone());
    let hook_task = tokio::spawn(async move { axum::serve(listener, app).await });

    // Alertmanager: small group timings so that notifications go out within a second or two.
    let config = tmp.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: test\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: test\n    webhook_configs:\n      - url: {hook_url}\n        send_resolved: true\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let log = tmp.path().join("alertmanager.log");
    let am = Alertmanager {
        child: Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                tmp.path().join("am-data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start alertmanager"),
        base: format!("http://127.0.0.1:{port}"),
        log,
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let start = Instant::now();
    loop {
        let ready = client.get(format!("{}/-/ready", am.base)).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "alertmanager not ready after 30 s:\n{}",
            am.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let rules = tmp.path().join("rules.yml");
    std::fs::write(&rules, RULES).unwrap();
    let s = Server::start(
        &tmp.path().join("data"),
        &[
            "--rules",
            rules.to_str().unwrap(),
            "--alertmanager",
            &am.base,
            "--alertmanager-resend-delay",
            "2s",
            "--external-url",
            "http://rigwatch.test:9800",
        ],
        &[],
    )
    .await;
    let temp = |gpu: &str, t: u32| {
        format!(
            "gpu,supplier=acme,worker=w1,gpu_uuid={gpu},model=H100 temperature={t} {}\n",
            now_ns()
        )
    };
    let limit = Duration::from_secs(20);

    // 1. GPU-A is hot: the alert reaches the receiver through Alertmanager.
    s.write_ok(&temp("GPU-A", 95)).await;
    wait_for("GPU-A firing at the receiver", &s, &am, limit, || {
        !receiver.alerts("GPU-A", "firing").is_empty()
    })
    .await;
    let fired = receiver.alerts("GPU-A", "firing").remove(0);
    assert_eq!(fired["labels"]["alertname"], "GpuHot", "{fired}");
    assert_eq!(fired["labels"]["severity"], "page", "{fired}");
    assert_eq!(fired["labels"]["supplier"], "acme", "{fired}");
    assert_eq!(fired["annotations"]["summary"], "GPU-A is hot", "{fired}");
    assert!(
        fired["generatorURL"]
            .as_str()
            .unwrap_or_default()
            .starts_with("http://rigwatch.test:9800/graph?g0.expr=gpu_temperature"),
        "{fired}"
    );

    // While it fires, rigwatch re-sends it (every 2 s here) so Alertmanager keeps it active.
    let before = firing_received(&client, &am).await;
    assert!(before >= 1.0, "alertmanager counted no firing alert");
    let resent = Instant::now();
    loop {
        let now = firing_received(&client, &am).await;
        if now >= before + 2.0 {
            break;
        }
        assert!(
            resent.elapsed() < Duration::from_secs(15),
            "GPU-A was not re-sent: {before} then {now} firing alerts received\n{}",
            s.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let active = am_alert(&client, &am, "GPU-A")
        .await
        .expect("GPU-A in alertmanager");
    assert_eq!(active["status"]["state"], "active", "{active}");

    // 2. A silence for GPU-B, created through Alertmanager's API; then GPU-B gets hot.
    let silence = client
        .post(format!("{}/api/v2/silences", am.base))
        .json(&json!({
            "matchers": [
                {"name": "alertname", "value": "GpuHot", "isRegex": false, "isEqual": true},
                {"name": "gpu_uuid", "value": "GPU-B", "isRegex": false, "isEqual": true}
            ],
            "startsAt": rfc3339_in(0),
            "endsAt": rfc3339_in(3_600),
            "createdBy": "rigwatch e2e",
            "comment": "maintenance of GPU-B"
        }))
        .send()
        .await
        .expect("create silence");
    let status = silence.status();
    let body: Value = silence.json().await.unwrap_or_default();
    assert!(status.is_success(), "silence refused: {status} {body}");
    assert!(body["silenceID"].is_string(), "{body}");
    s.write_ok(&temp("GPU-B", 97)).await;
    // It reaches Alertmanager, which suppresses it...
    let start = Instant::now();
    loop {
        if let Some(a) = am_alert(&client, &am, "GPU-B").await
            && a["status"]["state"] == "suppressed"
        {
            assert_eq!(a["status"]["silencedBy"][0], body["silenceID"], "{a}");
            break;
        }
        assert!(
            start.elapsed() < limit,
            "GPU-B never reached alertmanager as suppressed\n{}\n{}",
            s.log_tail(30),
            am.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ... and the receiver hears nothing of it over several group intervals.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(receiver.any_for("GPU-B"), Vec::<Value>::new());

    // 3. GPU-A cools: the resolution arrives, for the alert that fired.
    s.write_ok(&temp("GPU-A", 50)).await;
    wait_for("GPU-A resolved at the receiver", &s, &am, limit, || {
        !receiver.alerts("GPU-A", "resolved").is_empty()
    })
    .await;
    let resolved = receiver.alerts("GPU-A", "resolved").remove(0);
    assert_eq!(resolved["startsAt"], fired["startsAt"], "{resolved}");
    assert_ne!(resolved["endsAt"], "0001-01-01T00:00:00Z", "{resolved}");
    assert_eq!(receiver.any_for("GPU-B"), Vec::<Value>::new());
    assert!(
        !s.log().contains("panicked"),
        "rigwatch panicked:\n{}",
        s.log_tail(30)
    );
    hook_task.abort();
}
