//! Differential test: the same generated GPU data in rigwatch and in a real Prometheus
//! (Debian's 2.42, backfilled with `promtool tsdb create-blocks-from openmetrics`), the same
//! queries against both, answers equal within float tolerance.
//!
//! Prometheus 2.42's range windows include their start and 3.x's exclude it; rigwatch follows
//! 3.x. Samples sit 3 s off every 10 s boundary and query times are on 10 s boundaries, so no
//! sample ever falls on a window edge and both semantics agree.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::harness::{ADMIN_TOKEN, Server, temp_dir};
use super::prometheus::{Prometheus, free_port};

const T0: i64 = 1_700_000_000;
const STEPS: i64 = 720; // two hours at 10 s
const GPUS: i64 = 12;

/// (metric, value at gpu g and step i). Energy is a counter with one reset.
fn value(metric: &str, g: i64, i: i64) -> f64 {
    let x = (i as f64 / 37.0 + g as f64).sin();
    match metric {
        "gpu_utilization" => ((g * 7 + i * 3) % 101) as f64,
        "gpu_temperature" => 40.0 + 30.0 * x.abs() + g as f64,
        "gpu_power" => 100.0 + 250.0 * (0.5 + 0.5 * x) + (i % 7) as f64 * 0.25,
        "gpu_energy" => {
            let base = if g == 5 && i >= 400 { i - 400 } else { i };
            (base * (150 + g * 10)) as f64
        }
        "gpu_memory_used" => (1 << 30) as f64 * ((g + i / 60) % 40) as f64,
        _ => unreachable!(),
    }
}

const METRICS: &[&str] = &[
    "gpu_utilization",
    "gpu_temperature",
    "gpu_power",
    "gpu_energy",
    "gpu_memory_used",
];

fn labels(g: i64) -> String {
    format!(
        "supplier=\"{}\",worker=\"w{}\",gpu_uuid=\"GPU-{g}\",gpu_index=\"{}\",model=\"{}\"",
        if g % 3 == 0 { "acme" } else { "bolt" },
        g / 4,
        g % 4,
        ["H100", "A100", "L40S"][(g % 3) as usize]
    )
}

/// The data as OpenMetrics (seconds, `# EOF`) for promtool, and as Prometheus text (ms) for
/// rigwatch's import route.
fn render() -> (String, String) {
    let (mut om, mut text) = (String::new(), String::new());
    for m in METRICS {
        let _ = writeln!(om, "# TYPE {m} gauge");
        for g in 0..GPUS {
            let l = labels(g);
            for i in 0..STEPS {
                // Skip a stretch of one GPU: a gap longer than the lookback.
                if g == 7 && (300..340).contains(&i) {
                    continue;
                }
                let t = T0 + i * 10 + 3;
                let v = value(m, g, i);
                let _ = writeln!(om, "{m}{{{l}}} {v} {t}");
                let _ = writeln!(text, "{m}{{{l}}} {v} {}", t * 1000);
            }
        }
    }
    om.push_str("# EOF\n");
    (om, text)
}

const INSTANT: &[&str] = &[
    "gpu_utilization",
    "gpu_utilization{gpu_uuid=\"GPU-3\"}",
    "gpu_temperature{model=~\"H1.*|L40S\", supplier!=\"acme\"}",
    "avg(gpu_utilization)",
    "avg by (model) (gpu_utilization)",
    "sum without (gpu_uuid, gpu_index, worker) (gpu_power)",
    "max by (supplier) (gpu_temperature)",
    "count(gpu_utilization > 50)",
    "gpu_utilization > bool 50",
    "topk(3, gpu_temperature)",
    "bottomk(2, gpu_power)",
    "quantile(0.9, gpu_power)",
    "stddev(gpu_power)",
    "stdvar by (model) (gpu_temperature)",
    "count_values(\"bucket\", floor(gpu_utilization / 25))",
    "rate(gpu_energy[5m])",
    "irate(gpu_energy[1m])",
    "increase(gpu_energy[10m])",
    "resets(gpu_energy[2h])",
    "changes(gpu_memory_used[30m])",
    "delta(gpu_temperature[10m])",
    "deriv(gpu_temperature[10m])",
    "predict_linear(gpu_temperature[10m], 600)",
    "max_over_time(gpu_temperature[15m])",
    "min_over_time(gpu_power[7m])",
    "avg_over_time(gpu_power[30m])",
    "sum_over_time(gpu_utilization[2m])",
    "count_over_time(gpu_utilization[20m])",
    "quantile_over_time(0.9, gpu_power[30m])",
    "stddev_over_time(gpu_temperature[30m])",
    "last_over_time(gpu_utilization[20m])",
    "present_over_time(gpu_utilization[1m])",
    "gpu_power / on(gpu_uuid) gpu_utilization",
    "gpu_power * on(gpu_uuid) group_left(model) (gpu_utilization > 10)",
    "gpu_utilization and on(model) (gpu_temperature > 60)",
    "gpu_utilization unless gpu_utilization > 50",
    "gpu_utilization offset 10m",
    "max_over_time(rate(gpu_energy[1m])[10m:1m])",
    "label_replace(gpu_utilization, \"n\", \"$1\", \"gpu_uuid\", \"GPU-(.*)\")",
    "clamp(gpu_temperature, 50, 60)",
    "round(gpu_power, 5)",
    "abs(-gpu_temperature) + 1",
    "absent(gpu_nonexistent)",
    "absent_over_time(gpu_utilization{gpu_uuid=\"GPU-7\"}[1m])",
    "scalar(max(gpu_utilization)) * 2",
    "time() - timestamp(gpu_utilization)",
    "sort_desc(sum by (model) (gpu_power))",
    "vector(1) + on() group_left() count(gpu_utilization)",
];

const RANGE: &[&str] = &[
    "gpu_utilization{gpu_uuid=\"GPU-7\"}",
    "avg by (model) (gpu_temperature)",
    "sum(rate(gpu_energy[5m]))",
    "topk(2, gpu_power)",
    "max_over_time(gpu_temperature[10m])",
];

fn prometheus_available() -> bool {
    let ok = Command::new("prometheus").arg("--version").output().is_ok()
        && Command::new("promtool").arg("--version").output().is_ok();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "prometheus and promtool are required in CI (see .ci/run)"
        );
        eprintln!("skipping: prometheus/promtool not installed");
    }
    ok
}

async fn get(client: &reqwest::Client, url: &str, params: &[(&str, String)]) -> Value {
    let resp = client
        .post(url)
        .bearer_auth(ADMIN_TOKEN)
        .form(params)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let text = resp.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"))
}

fn key(metric: &Value) -> String {
    let m: BTreeMap<String, String> = serde_json::from_value(metric.clone()).unwrap_or_default();
    format!("{m:?}")
}

fn close(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => {
            (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-9_f64.max(1e-6 * x.abs().max(y.abs()))
        }
        _ => false,
    }
}

/// The differences between two API answers, in words.
fn diff(ours: &Value, theirs: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if ours["status"] != theirs["status"] {
        return vec![format!("status: rigwatch {ours} vs prometheus {theirs}")];
    }
    let (od, td) = (&ours["data"], &theirs["data"]);
    if od["resultType"] != td["resultType"] {
        return vec![format!("type {} vs {}", od["resultType"], td["resultType"])];
    }
    match od["resultType"].as_str() {
        Some("scalar") | Some("string") => {
            if !close(
                od["result"][1].as_str().unwrap_or(""),
                td["result"][1].as_str().unwrap_or(""),
            ) {
                out.push(format!("{} vs {}", od["result"], td["result"]));
            }
        }
        Some(kind) => {
            let points = if kind == "vector" { "value" } else { "values" };
            let index = |d: &Value| -> BTreeMap<String, Value> {
                d["result"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| (key(&r["metric"]), r[points].clone()))
                    .collect()
            };
            let (o, t) = (index(od), index(td));
            for (k, tv) in &t {
                match o.get(k) {
                    None => out.push(format!("missing series {k}: prometheus has {tv}")),
                    Some(ov) => {
                        let (ov, tv) = if kind == "vector" {
                            (vec![ov.clone()], vec![tv.clone()])
                        } else {
                            (
                                ov.as_array().cloned().unwrap_or_default(),
                                tv.as_array().cloned().unwrap_or_default(),
                            )
                        };
                        if ov.len() != tv.len() {
                            out.push(format!("{k}: {} points vs {}", ov.len(), tv.len()));
                            continue;
                        }
                        for (a, b) in ov.iter().zip(&tv) {
                            if a[0] != b[0]
                                || !close(a[1].as_str().unwrap_or(""), b[1].as_str().unwrap_or(""))
                            {
                                out.push(format!("{k}: {a} vs {b}"));
                                break;
                            }
                        }
                    }
                }
            }
            for k in o.keys().filter(|k| !t.contains_key(*k)) {
                out.push(format!("extra series {k}"));
            }
        }
        None => out.push(format!("no resultType: {ours}")),
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_answers_as_real_prometheus() {
    if !prometheus_available() {
        return;
    }
    let tmp = temp_dir();
    let (om, text) = render();
    let om_path = tmp.path().join("data.om");
    std::fs::write(&om_path, om).unwrap();
    let tsdb = tmp.path().join("tsdb");
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics", "-q"])
        .arg(&om_path)
        .arg(&tsdb)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "backfill failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let server = Server::start(&tmp.path().join("data"), &[], &[]).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = client
        .post(format!("{}/api/v1/import/prometheus", server.base))
        .bearer_auth(ADMIN_TOKEN)
        .body(text)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());

    let port = free_port();
    let config = tmp.path().join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1h\n").unwrap();
    let log = std::fs::File::create(tmp.path().join("prometheus.log")).unwrap();
    let _prom = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", tsdb.display()))
            .arg("--storage.tsdb.retention.time=100y")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus"),
    );
    let prom = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let probe = client
            .post(format!("{prom}/api/v1/query"))
            .form(&[
                ("query", "count(gpu_power)"),
                ("time", &(T0 + 600).to_string()),
            ])
            .send()
            .await;
        if let Ok(r) = probe
            && let Ok(v) = r.json::<Value>().await
            && v["data"]["result"][0]["value"][1].as_str() == Some(GPUS.to_string().as_str())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not load the backfilled blocks within 60 s:\n{}",
            std::fs::read_to_string(tmp.path().join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let mut failures = Vec::new();
    let mut compared = 0;
    // Instant queries at several times: early (partial windows), in the gap, late.
    for at in [T0 + 120, T0 + 3_200, T0 + 3_500, T0 + 7_190] {
        for q in INSTANT {
            let params = [("query", q.to_string()), ("time", at.to_string())];
            let ours = get(&client, &format!("{}/api/v1/query", server.base), &params).await;
            let theirs = get(&client, &format!("{prom}/api/v1/query"), &params).await;
            for d in diff(&ours, &theirs) {
                failures.push(format!("{q} @ {at}: {d}"));
            }
            compared += 1;
        }
    }
    for q in RANGE {
        let params = [
            ("query", q.to_string()),
            ("start", (T0 + 60).to_string()),
            ("end", (T0 + 7_200).to_string()),
            ("step", "60".to_string()),
        ];
        let ours = get(
            &client,
            &format!("{}/api/v1/query_range", server.base),
            &params,
        )
        .await;
        let theirs = get(&client, &format!("{prom}/api/v1/query_range"), &params).await;
        for d in diff(&ours, &theirs) {
            failures.push(format!("range {q}: {d}"));
        }
        compared += 1;
    }
    eprintln!(
        "compared {compared} queries with Prometheus: {} differ",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} differences from Prometheus:\n{}",
        failures.len(),
        failures
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
