//! Recording rules through a real server: recorded series are queryable by PromQL and SQL,
//! and tenancy holds for them: rules run unscoped, so a supplier sees a recorded series only
//! when it carries that supplier's `supplier` label, never another supplier's or a
//! fleet-wide aggregate. `rigwatch rules check` places a bad recording rule.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use rigwatch_storage::auth::{AuthStore, Role};
use serde_json::Value;

use super::harness::{ADMIN_TOKEN, Server, temp_dir};

const RULES: &str = r#"
groups:
  - name: recorded
    interval: 1s
    rules:
      - record: supplier:gpu_utilization:avg
        expr: avg by (supplier) (gpu_utilization)
      - record: fleet:gpu_utilization:avg
        expr: avg(gpu_utilization)
      # Across suppliers, without their labels: fleet-wide, operator-only.
      - record: fleet:gpu_utilization:max
        expr: max without (supplier, gpu_uuid, worker, model) (gpu_utilization)
"#;

/// What must never reach supplier A: B's name and GPUs.
const HIDDEN: &[&str] = &["supplier-b", "GPU-bbbb"];

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i64
}

async fn get(client: &reqwest::Client, url: String, token: &str) -> (StatusCode, String) {
    let r = client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    (r.status(), r.text().await.expect("body"))
}

async fn post(
    client: &reqwest::Client,
    url: String,
    token: &str,
    body: &str,
) -> (StatusCode, String) {
    let r = client
        .post(url)
        .bearer_auth(token)
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    (r.status(), r.text().await.expect("body"))
}

fn query_url(base: &str, q: &str) -> String {
    format!("{base}/api/v1/query?query={}", form_urlencoded_component(q))
}

fn form_urlencoded_component(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_series_are_queryable_and_scoped_by_supplier() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RULES).unwrap();
    let s = Server::start(&data, &["--rules", rules.to_str().unwrap()], &[]).await;
    // A at 20 % and 40 % (avg 30), B at 77 % (avg 77): fleet avg (20+40+77)/3 = 45.67.
    let t = now_ns();
    s.write_ok(&format!(
        "gpu,supplier=supplier-a,worker=worker-a,gpu_uuid=GPU-aaaa-0,model=H100 utilization=20 {t}\n\
         gpu,supplier=supplier-a,worker=worker-a,gpu_uuid=GPU-aaaa-1,model=H100 utilization=40 {t}\n\
         gpu,supplier=supplier-b,worker=worker-b,gpu_uuid=GPU-bbbb-0,model=A100 utilization=77 {t}\n"
    ))
    .await;

    // The operator reads the recorded series by SQL and PromQL.
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let start = Instant::now();
    let rows = loop {
        if let Ok(Value::Array(rows)) = s
            .try_sql(
                "SELECT supplier, value FROM \"supplier:gpu_utilization:avg\" ORDER BY supplier",
            )
            .await
            && rows.len() >= 2
            && s.try_sql("SELECT value FROM \"fleet:gpu_utilization:max\"")
                .await
                .is_ok()
        {
            break rows;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no recorded series after 20 s\n{}",
            s.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(rows[0]["supplier"], "supplier-a", "{rows:?}");
    assert_eq!(rows[0]["value"], 30.0, "{rows:?}");
    let b_row = rows.iter().find(|r| r["supplier"] == "supplier-b");
    assert_eq!(
        b_row.map(|r| r["value"].clone()),
        Some(77.0.into()),
        "{rows:?}"
    );
    let (status, body) = get(
        &client,
        query_url(&s.base, "fleet:gpu_utilization:avg"),
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let fleet: f64 = v["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("{body}"));
    assert!((fleet - 137.0 / 3.0).abs() < 1e-9, "{body}");

    // Supplier A: its own recorded series, and nothing of B's or the fleet's.
    let auth = AuthStore::open(&data).unwrap();
    auth.add_supplier("supplier-a").unwrap();
    auth.add_supplier("supplier-b").unwrap();
    let a = auth
        .issue(Role::Supplier, Some("supplier-a"), None, "t")
        .unwrap()
        .token;
    let (status, body) = post(
        &client,
        format!("{}/api/v1/sql", s.base),
        &a,
        "SELECT supplier, value FROM \"supplier:gpu_utilization:avg\"",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mine: Value = serde_json::from_str(&body).unwrap();
    let mine = mine.as_array().expect("rows");
    assert!(!mine.is_empty(), "A sees its own recorded series: {body}");
    assert!(
        mine.iter()
            .all(|r| r["supplier"] == "supplier-a" && r["value"] == 30.0),
        "{body}"
    );
    let (status, body) = get(
        &client,
        query_url(&s.base, "supplier:gpu_utilization:avg"),
        &a,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("supplier-a"), "{body}");

    // B's rows are not there, whatever the query says.
    for q in [
        "SELECT * FROM \"supplier:gpu_utilization:avg\" WHERE supplier = 'supplier-b'",
        "SELECT * FROM \"supplier:gpu_utilization:avg\" WHERE supplier <> 'supplier-a' OR true",
        "SELECT supplier, count(*) FROM \"supplier:gpu_utilization:avg\" GROUP BY supplier",
    ] {
        let (status, body) = post(&client, format!("{}/api/v1/sql", s.base), &a, q).await;
        assert_eq!(status, StatusCode::OK, "`{q}`: {body}");
        for mark in HIDDEN {
            assert!(!body.contains(mark), "`{q}` leaked `{mark}`: {body}");
        }
    }
    // A fleet-wide recorded series (no supplier label) does not exist for a supplier: the
    // same error as a table that really does not exist.
    let (_, missing) = post(
        &client,
        format!("{}/api/v1/sql", s.base),
        &a,
        "SELECT * FROM \"no:such:table\"",
    )
    .await;
    for table in ["fleet:gpu_utilization:avg", "fleet:gpu_utilization:max"] {
        let q = format!("SELECT * FROM \"{table}\"");
        let (status, body) = post(&client, format!("{}/api/v1/sql", s.base), &a, &q).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "`{q}`: {body}");
        assert_eq!(
            body.replace(table, "X"),
            missing.replace("no:such:table", "X")
        );
    }
    let (_, tables) = post(
        &client,
        format!("{}/api/v1/sql", s.base),
        &a,
        "SELECT table_name FROM information_schema.tables",
    )
    .await;
    assert!(tables.contains("supplier:gpu_utilization:avg"), "{tables}");
    assert!(!tables.contains("fleet:"), "{tables}");

    // PromQL: the fleet series are empty for A; any series A gets is A's.
    for q in [
        "fleet:gpu_utilization:avg",
        "fleet:gpu_utilization:max",
        "supplier:gpu_utilization:avg{supplier=\"supplier-b\"}",
    ] {
        let (status, body) = get(&client, query_url(&s.base, q), &a).await;
        assert_eq!(status, StatusCode::OK, "`{q}`: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["data"]["result"],
            Value::Array(Vec::new()),
            "`{q}`: {body}"
        );
    }
    let (status, body) = get(&client, query_url(&s.base, "{__name__=~\".*:.*\"}"), &a).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let series = v["data"]["result"].as_array().expect("vector");
    assert!(!series.is_empty(), "{body}");
    for r in series {
        assert_eq!(r["metric"]["supplier"], "supplier-a", "{body}");
        assert_eq!(
            r["metric"]["__name__"], "supplier:gpu_utilization:avg",
            "{body}"
        );
    }
    for path in [
        "/api/v1/label/__name__/values",
        "/api/v1/label/supplier/values",
        "/api/v1/series?match[]=%7B__name__%3D~%22.%2B%22%7D",
    ] {
        let (status, body) = get(&client, format!("{}{path}", s.base), &a).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        for mark in HIDDEN.iter().chain(&["fleet:"]) {
            assert!(!body.contains(mark), "{path} leaked `{mark}`: {body}");
        }
    }
}

#[test]
fn rules_check_places_a_bad_recording_rule() {
    let (code, stderr, _) = super::harness::rules_check(
        "groups:\n  - name: g\n    rules:\n      - record: ok:sum\n        expr: sum(gpu_power)\n      - record: gpu-util\n        expr: avg(gpu_utilization)\n      - record: x:y\n        expr: avg(gpu_utilization\n",
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr
            .contains("bad.yml:6:17: group \"g\", rule \"gpu-util\": invalid recording rule name"),
        "{stderr}"
    );
    assert!(
        stderr.contains("bad.yml:9:") && stderr.contains("rule \"x:y\": invalid expr"),
        "{stderr}"
    );
    let (code, stderr, stdout) = super::harness::rules_check(
        "groups:\n  - name: g\n    rules:\n      - record: ok:sum\n        expr: sum(gpu_power)\n        labels:\n          scope: fleet\n      - alert: High\n        expr: ok:sum > 1000\n",
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("1 alerting, 1 recording"), "{stdout}");
}
