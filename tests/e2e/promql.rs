//! The Prometheus HTTP API against the real binary: instant and range queries over GPU data
//! written as line protocol, metadata endpoints, errors, limits, and the real `promtool`
//! (Debian package `prometheus`) as a client.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::Value;

use super::harness::{ADMIN_TOKEN, Server, temp_dir};

/// 2023-11-14T22:13:20Z, a round minute.
const T0: i64 = 1_700_000_000;

/// Four GPUs (two suppliers, two models), one sample every 10 s for 10 minutes:
/// utilization = gpu index × 10 + minute, energy counts up 100 J per sample.
fn data() -> String {
    let mut out = String::new();
    for step in 0..60i64 {
        let t = (T0 + step * 10) * 1_000_000_000;
        for g in 0..4i64 {
            let supplier = if g < 2 { "acme" } else { "bolt" };
            let model = if g % 2 == 0 { "H100" } else { "A100" };
            out.push_str(&format!(
                "gpu,supplier={supplier},worker=w{g},gpu_uuid=GPU-{g},gpu_index={g},model={model} utilization={}.0,energy={}i {t}\n",
                g * 10 + step / 6,
                step * 100,
            ));
        }
    }
    out
}

async fn api(server: &Server, path: &str, params: &[(&str, &str)]) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", server.base))
        .bearer_auth(ADMIN_TOKEN)
        .form(params)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, v)
}

fn values(v: &Value) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = v["data"]["result"]
        .as_array()
        .unwrap_or_else(|| panic!("no result: {v}"))
        .iter()
        .map(|r| {
            (
                r["metric"]["gpu_uuid"].as_str().unwrap_or("").to_string()
                    + r["metric"]["model"].as_str().unwrap_or(""),
                r["value"][1].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_api_answers_like_prometheus() {
    let dir = temp_dir();
    let server = Server::start(&dir.path().join("data"), &[], &[]).await;
    server.write_ok(&data()).await;
    let at = (T0 + 595).to_string();

    // Instant selector: the latest sample within the lookback, per series.
    let (s, v) = api(
        &server,
        "/api/v1/query",
        &[("query", "gpu_utilization{model=\"H100\"}"), ("time", &at)],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["resultType"], "vector");
    assert_eq!(
        values(&v),
        [
            ("GPU-0H100".to_string(), 9.0),
            ("GPU-2H100".to_string(), 29.0)
        ]
    );
    let first = &v["data"]["result"][0]["metric"];
    assert_eq!(first["__name__"], "gpu_utilization");
    assert_eq!(first["supplier"], "acme");

    // Aggregation, regex matcher, arithmetic.
    let (_, v) = api(
        &server,
        "/api/v1/query",
        &[
            (
                "query",
                "sum by (model) (gpu_utilization{gpu_uuid=~\"GPU-[01]\"}) * 2",
            ),
            ("time", &at),
        ],
    )
    .await;
    assert_eq!(
        values(&v),
        [("A100".to_string(), 38.0), ("H100".to_string(), 18.0)]
    );

    // A counter: rate over 5 minutes is 100 J per 10 s = 10 J/s.
    let (_, v) = api(
        &server,
        "/api/v1/query",
        &[
            ("query", "rate(gpu_energy{gpu_uuid=\"GPU-3\"}[5m])"),
            ("time", &at),
        ],
    )
    .await;
    let r = values(&v);
    assert_eq!(r.len(), 1, "{v}");
    assert!((r[0].1 - 10.0).abs() < 1e-9, "{v}");

    // Range query: one point per step, values as strings, times as seconds.
    let (s, v) = api(
        &server,
        "/api/v1/query_range",
        &[
            ("query", "max(gpu_utilization)"),
            ("start", &T0.to_string()),
            ("end", &(T0 + 540).to_string()),
            ("step", "60"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["resultType"], "matrix");
    let points = v["data"]["result"][0]["values"].as_array().unwrap();
    assert_eq!(points.len(), 10);
    assert_eq!(points[0][0], T0);
    assert_eq!(points[3][1], "33");

    // Detected faults (rows the health engine wrote, tagged `detector`) read back as a
    // counter by XID and severity.
    let mut faults = String::new();
    for (i, (g, code, sev)) in [
        (1, 79, "critical"),
        (1, 79, "critical"),
        (1, 79, "critical"),
        (2, 13, "warning"),
    ]
    .iter()
    .enumerate()
    {
        faults.push_str(&format!(
            "gpu_fault,supplier=acme,gpu_uuid=GPU-{g},model=A100,kind=xid,class=x,detector=health code={code}i,severity=\"{sev}\" {}\n",
            (T0 + 100 + i as i64 * 7) * 1_000_000_000
        ));
    }
    server.write_ok(&faults).await;
    let (s, v) = api(
        &server,
        "/api/v1/query",
        &[
            (
                "query",
                "sum by (code, severity) (last_over_time(rigwatch_faults_total[10m]))",
            ),
            ("time", &at),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let mut by_code: Vec<(String, String, String)> = v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["metric"]["code"].as_str().unwrap_or("").to_string(),
                r["metric"]["severity"].as_str().unwrap_or("").to_string(),
                r["value"][1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    by_code.sort();
    assert_eq!(
        by_code,
        [
            ("13".into(), "warning".into(), "1".into()),
            ("79".into(), "critical".into(), "3".into())
        ],
        "{v}"
    );

    // Grafana's data-source health check.
    let (s, v) = api(&server, "/api/v1/query", &[("query", "1+1"), ("time", &at)]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"]["resultType"], "scalar");
    assert_eq!(v["data"]["result"][1], "2");

    // Metadata endpoints.
    let (_, v) = api(&server, "/api/v1/labels", &[]).await;
    let labels: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for l in ["__name__", "gpu_uuid", "model", "supplier"] {
        assert!(labels.contains(&l), "{l} missing from {labels:?}");
    }
    assert_eq!(
        server.api_data("/api/v1/label/__name__/values", &[]).await,
        serde_json::json!([
            // `gpu.utilization` under its dcgm-exporter name too, and the agent's XID
            // rows as dcgm-exporter's XID gauge.
            "DCGM_FI_DEV_GPU_UTIL",
            "DCGM_FI_DEV_XID_ERRORS",
            "gpu_energy",
            "gpu_fault_code",
            "gpu_utilization",
            "rigwatch_faults_total"
        ])
    );
    let (_, v) = api(
        &server,
        "/api/v1/series",
        &[("match[]", "gpu_energy{supplier=\"bolt\"}")],
    )
    .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 2, "{v}");

    // Errors: where and what.
    let (s, v) = api(
        &server,
        "/api/v1/query",
        &[("query", "sum(gpu_utilization")],
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["errorType"], "bad_data");
    assert!(v["error"].as_str().unwrap().contains("byte"), "{v}");
    let (s, v) = api(
        &server,
        "/api/v1/query_range",
        &[
            ("query", "gpu_utilization"),
            ("start", "0"),
            ("end", "100000000"),
            ("step", "1"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("11000"), "{v}");
    let (s, v) = api(&server, "/api/v1/query", &[("time", &at)]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // The server keeps serving.
    let (s, _) = api(&server, "/api/v1/query", &[("query", "up or vector(1)")]).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_queries_rigwatch() {
    if Command::new("promtool").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool (Debian package prometheus) is required in CI"
        );
        eprintln!("skipping: promtool not installed");
        return;
    }
    let dir = temp_dir();
    let server = Server::start(&dir.path().join("data"), &[], &[]).await;
    server.write_ok(&data()).await;
    // promtool has no auth flags; Go's HTTP client sends URL credentials as Basic auth,
    // whose password rigwatch reads as the token.
    let url = server
        .base
        .replace("http://", &format!("http://promtool:{ADMIN_TOKEN}@"));
    let run = |args: &[&str]| {
        let out = Command::new("promtool")
            .arg("query")
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "promtool {args:?} failed: {}{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let at = (T0 + 595).to_string();
    let out = run(&[
        "instant",
        "--time",
        &at,
        &url,
        "max by (supplier) (gpu_utilization)",
    ]);
    assert!(out.contains("{supplier=\"acme\"} => 19"), "{out}");
    assert!(out.contains("{supplier=\"bolt\"} => 39"), "{out}");

    let out = run(&[
        "range",
        "--start",
        &T0.to_string(),
        "--end",
        &(T0 + 120).to_string(),
        "--step",
        "1m",
        &url,
        "gpu_utilization{gpu_uuid=\"GPU-1\"}",
    ]);
    assert!(out.contains("10 @[1700000000]"), "{out}");
    assert!(out.contains("12 @[1700000120]"), "{out}");

    // Without --start/--end promtool asks for the last few minutes only, as with Prometheus.
    let (start, end) = (T0.to_string(), (T0 + 600).to_string());
    let window = ["--start", start.as_str(), "--end", end.as_str()];
    let out = run(&[
        &["series", "--match", "gpu_energy{model=\"A100\"}"],
        &window[..],
        &[&url],
    ]
    .concat());
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("gpu_uuid=\"GPU-3\""), "{out}");

    let out = run(&[&["labels"], &window[..], &[&url, "model"]].concat());
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["A100", "H100"]);
}

/// A label's values without `match[]` come from its column, not from every sample: they
/// equal the values on the series `/api/v1/series` finds, respect the time range, and are
/// answered where reading the samples would pass the sample limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_values_without_a_selector_read_no_samples() {
    let dir = temp_dir();
    let server = Server::start(dir.path(), &["--query-max-samples", "100"], &[]).await;
    server.write_ok(&data()).await;
    // A fifth GPU, an hour later only.
    let late = (T0 + 3600) * 1_000_000_000;
    server
        .write_ok(&format!(
            "gpu,supplier=bolt,worker=w4,gpu_uuid=GPU-4,gpu_index=4,model=L40S utilization=1.0 {late}\n"
        ))
        .await;
    let values = |start: i64, end: i64| {
        let server = &server;
        async move {
            let got = server
                .api_data(
                    "/api/v1/label/gpu_uuid/values",
                    &[("start", start.to_string()), ("end", end.to_string())],
                )
                .await;
            got.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    // 480 samples: reading them would pass the limit of 100.
    assert_eq!(
        values(T0, T0 + 600).await,
        ["GPU-0", "GPU-1", "GPU-2", "GPU-3"]
    );
    assert_eq!(values(T0 + 3000, T0 + 4000).await, ["GPU-4"]);
    let all = values(T0, T0 + 4000).await;
    assert_eq!(all, ["GPU-0", "GPU-1", "GPU-2", "GPU-3", "GPU-4"]);
    // Label names likewise: a tag written only later is named only in a range that holds
    // it.
    server
        .write_ok(&format!("disk_io,worker=w9,disk=sda busy=0.5 {late}\n"))
        .await;
    let names = |start: i64, end: i64| {
        let server = &server;
        async move {
            server
                .api_data(
                    "/api/v1/labels",
                    &[("start", start.to_string()), ("end", end.to_string())],
                )
                .await
        }
    };
    let early = names(T0, T0 + 600).await;
    assert!(
        early.as_array().unwrap().contains(&"gpu_uuid".into()),
        "{early}"
    );
    assert!(
        !early.as_array().unwrap().contains(&"disk".into()),
        "{early}"
    );
    let later = names(T0 + 3000, T0 + 4000).await;
    assert!(
        later.as_array().unwrap().contains(&"disk".into()),
        "{later}"
    );
    assert!(
        later.as_array().unwrap().contains(&"__name__".into()),
        "{later}"
    );
    // The dcgm-exporter view's name for the same column.
    let uuid = server.api_data("/api/v1/label/UUID/values", &[]).await;
    assert_eq!(uuid.as_array().unwrap().len(), 5, "{uuid}");
    // The same answer as the series the (sample-reading) selector path finds, within its
    // limit: one sample per series.
    let series = server
        .api_data(
            "/api/v1/series",
            &[
                ("match[]", "gpu_utilization".to_string()),
                ("start", (T0 + 3590).to_string()),
                ("end", (T0 + 3610).to_string()),
            ],
        )
        .await;
    let from_series: Vec<&str> = series
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["gpu_uuid"].as_str().unwrap())
        .collect();
    assert_eq!(values(T0 + 3590, T0 + 3610).await, from_series);
}
