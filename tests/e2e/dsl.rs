//! The pipe DSL against the real server: the seven examples of its issue run verbatim and
//! agree with the SQL they stand for, errors name where and what, and a supplier's DSL sees
//! only its own rows.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use rigwatch_storage::auth::{AuthStore, Role};
use serde_json::{Value, json};

use super::harness::{ADMIN_TOKEN, Server, temp_dir};

/// The examples of the language's issue, verbatim.
const EXAMPLES: [&str; 7] = [
    "gpus[5m] | stats avg(utilization) by model | sort avg_utilization desc",
    "gpus[5m] | stats avg(rate(energy_mj, 1m)) by model, bucket(1m)",
    "earnings[1d] | stats sum(amount) by supplier, bucket(1h) | sort supplier, bucket",
    "leases[1d] | stats count() by supplier | top 5 by count",
    "leases[1d] | join gpus[5m] on gpu_uuid | stats max(gpus.temperature) by leases.supplier",
    "jobs[1d] | where state == \"completed\" | stats count() as done by bucket(1m)",
    "promql(\"avg by (model) (gpu_utilization)\", step=30s)[5m] | stats max(value) by model",
];

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// Three samples 10 s apart of four H100s (two per supplier) and one A100 of `bolt` whose
/// energy counter resets. GPU `g` has utilization `10 g`, temperature `40 + g` and an
/// energy counter rising `500 (g + 1)` mJ a second.
fn telemetry() -> String {
    let now = now_ns();
    let mut out = String::new();
    for k in 0..3i64 {
        let t = now - (2 - k) * 10_000_000_000;
        for g in 0..4i64 {
            out.push_str(&format!(
                "gpu,supplier={},worker=w{},gpu_uuid=GPU-{g},gpu_index=0,model=H100 \
                 utilization={}.0,temperature={}.0,energy_mj={}i,memory_total_mib=81559i,\
                 memory_free_mib=81000i {t}\n",
                if g < 2 { "acme" } else { "bolt" },
                g / 2,
                10 * g,
                40 + g,
                1_000_000 + k * 10 * 500 * (g + 1),
            ));
        }
        // 1000 → 3000 (+200/s) → 500: a reset, so 500 mJ in 10 s (+50/s).
        let energy = [1000, 3000, 500][k as usize];
        out.push_str(&format!(
            "gpu,supplier=bolt,worker=w9,gpu_uuid=GPU-9,gpu_index=0,model=A100 \
             utilization=50.0,temperature=70.0,energy_mj={energy}i,memory_total_mib=81559i,\
             memory_free_mib=81000i {t}\n"
        ));
    }
    out
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, String) {
    let r = http
        .post(url)
        .bearer_auth(token)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.text().await.unwrap())
}

/// A DSL query's JSON rows (fails the test with the body if it is not a 200).
async fn dsl(http: &reqwest::Client, base: &str, token: &str, q: &str) -> Vec<Value> {
    let (status, body) = post(http, &format!("{base}/api/v1/dsl"), token, q.to_string()).await;
    assert_eq!(status, StatusCode::OK, "`{q}`: {body}");
    match serde_json::from_str(&body) {
        Ok(Value::Array(rows)) => rows,
        other => panic!("`{q}` did not answer rows: {other:?} {body}"),
    }
}

/// A DSL query that must fail: its status and JSON body.
async fn dsl_err(http: &reqwest::Client, base: &str, q: &str) -> (StatusCode, Value) {
    let (status, body) = post(
        http,
        &format!("{base}/api/v1/dsl"),
        ADMIN_TOKEN,
        q.to_string(),
    )
    .await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

fn by_key(rows: &[Value], key: &str, value: &str) -> BTreeMap<String, Value> {
    rows.iter()
        .map(|r| (r[key].as_str().unwrap().to_string(), r[value].clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_run_verbatim_and_agree_with_sql() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    // 3.60 per GPU-hour: 1,000 µ per GPU-second, so a few seconds of leases are real money.
    let server = Server::start(&data, &["--alloc-tick", "200ms", "--rate", "H100=3.6"], &[]).await;
    server.write_ok(&telemetry()).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = server.base.clone();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Two one-GPU jobs that complete after a while: leases, completed jobs, final earnings.
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (s, body) = post(
            &http,
            &format!("{base}/api/v1/jobs"),
            ADMIN_TOKEN,
            json!({"gpus": 1, "models": ["H100"]}).to_string(),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        ids.push(v["data"]["job"]["id"].as_u64().unwrap());
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Both complete: their earnings are final, so the DSL and SQL sums read the same rows.
    for id in &ids {
        let (s, body) = post(
            &http,
            &format!("{base}/api/v1/jobs/{id}/complete"),
            ADMIN_TOKEN,
            "",
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{body}");
    }
    let mut last = 0;
    for _ in 0..100 {
        let n = server.count("earnings").await;
        if n > 0 && n == last {
            break;
        }
        last = n;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let mut answers = Vec::new();
    for q in EXAMPLES {
        let rows = dsl(&http, &base, ADMIN_TOKEN, q).await;
        assert!(!rows.is_empty(), "`{q}` answered no rows");
        answers.push(rows);
    }

    // 1: the average per model, largest first.
    let models: Vec<(&str, f64)> = answers[0]
        .iter()
        .map(|r| {
            (
                r["model"].as_str().unwrap(),
                r["avg_utilization"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(models, [("A100", 50.0), ("H100", 15.0)]);

    // 2: each H100's counter rises 500 (g + 1) mJ/s, so their average rate is 1,250 in every
    // minute; the A100's counter reset counts as a restart from zero: (200 + 50) / 2. A
    // minute holding only the first samples has no rate (null, left out of the JSON row).
    let mut rated = Vec::new();
    for r in &answers[1] {
        assert!(r["bucket"].is_string(), "{r}");
        let Some(rate) = r["avg_rate_energy_mj"].as_f64() else {
            continue;
        };
        let model = r["model"].as_str().unwrap();
        match model {
            "H100" => assert!((rate - 1250.0).abs() < 1e-6, "{r}"),
            "A100" => assert!(rate == 200.0 || rate == 50.0 || rate == 125.0, "{r}"),
            other => panic!("model {other}"),
        }
        rated.push(model);
    }
    assert!(
        rated.contains(&"H100") && rated.contains(&"A100"),
        "{:?}",
        answers[1]
    );
    let rows = dsl(
        &http,
        &base,
        ADMIN_TOKEN,
        "gpus[5m] | where model == \"A100\" | stats avg(rate(energy_mj, 1m)) as r",
    )
    .await;
    assert_eq!(rows, [json!({"r": 125.0})]);

    // 3: money per supplier and hour, integer µ, equal to the ledger's own sum.
    let sql = server
        .rows("SELECT supplier, sum(amount_micro) AS paid FROM earnings GROUP BY supplier")
        .await;
    let mut dsl_sums: BTreeMap<String, i64> = BTreeMap::new();
    for r in &answers[2] {
        *dsl_sums
            .entry(r["supplier"].as_str().unwrap().to_string())
            .or_default() += r["sum_amount"].as_i64().expect("an integer sum");
    }
    let sql_sums: BTreeMap<String, i64> = sql
        .iter()
        .map(|r| {
            (
                r["supplier"].as_str().unwrap().to_string(),
                r["paid"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(dsl_sums, sql_sums);
    assert!(dsl_sums.values().all(|v| *v > 0), "{dsl_sums:?}");
    let keys: Vec<(String, String)> = answers[2]
        .iter()
        .map(|r| (r["supplier"].to_string(), r["bucket"].to_string()))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "sorted by supplier, bucket");

    // 4: leases per supplier, most first, adding up to every lease.
    let counts: Vec<i64> = answers[3]
        .iter()
        .map(|r| r["count"].as_i64().unwrap())
        .collect();
    assert!(counts.windows(2).all(|w| w[0] >= w[1]), "{counts:?}");
    assert_eq!(
        counts.iter().sum::<i64>() as u64,
        server.count("lease").await
    );

    // 5: the join agrees with SQL.
    let sql = server
        .rows(
            "SELECT l.supplier, max(g.temperature) AS t FROM lease l JOIN gpu g \
             ON l.gpu_uuid = g.gpu_uuid GROUP BY l.supplier",
        )
        .await;
    assert_eq!(
        by_key(&answers[4], "supplier", "max_temperature"),
        by_key(&sql, "supplier", "t")
    );

    // 6: both jobs completed.
    let done: i64 = answers[5].iter().map(|r| r["done"].as_i64().unwrap()).sum();
    assert_eq!(done, 2, "{:?}", answers[5]);

    // 7: PromQL's average per model at each step; the largest is the constant average.
    assert_eq!(
        by_key(&answers[6], "model", "max_value"),
        BTreeMap::from([("A100".into(), json!(50.0)), ("H100".into(), json!(15.0))])
    );

    // `explain` answers the SQL, which runs to the same rows through /api/v1/sql.
    let rows = dsl(
        &http,
        &base,
        ADMIN_TOKEN,
        &format!("explain {}", EXAMPLES[0]),
    )
    .await;
    let sql = rows[0]["sql"].as_str().unwrap();
    assert!(sql.starts_with("WITH"), "{sql}");
    assert_eq!(server.rows(sql).await, answers[0]);

    // The SQL route's formats and content negotiation.
    for (format, ctype) in [
        ("csv", "text/csv"),
        ("jsonl", "application/jsonl"),
        ("arrow", "application/vnd.apache.arrow.stream"),
    ] {
        let r = http
            .post(format!("{base}/api/v1/dsl?format={format}"))
            .bearer_auth(ADMIN_TOKEN)
            .body(EXAMPLES[0])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let got = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(got.starts_with(ctype), "{format}: {got}");
        let body = r.bytes().await.unwrap();
        if format == "csv" {
            assert_eq!(
                String::from_utf8_lossy(&body),
                "model,avg_utilization\nA100,50.0\nH100,15.0\n"
            );
        }
    }
    let r = http
        .get(format!("{base}/api/v1/dsl"))
        .query(&[("q", EXAMPLES[3])])
        .header("accept", "text/csv")
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().starts_with("supplier,count\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_where_what_and_what_was_meant() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[], &[]).await;
    server.write_ok(&telemetry()).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = server.base.clone();

    let (s, v) = dsl_err(&http, &base, "gpus[5m] | stats avg(utilisation) by model").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        v["error"],
        "line 1, column 22 (byte 21): unknown field `utilisation` (expected a field of gpus); \
         did you mean `utilization`?"
    );
    assert_eq!(
        v["position"],
        json!({"offset": 21, "line": 1, "column": 22})
    );
    assert_eq!(v["suggestion"], "utilization");

    let (s, v) = dsl_err(&http, &base, "gpus[5m]\n  | wher model == \"H100\"").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        v["position"],
        json!({"offset": 13, "line": 2, "column": 5}),
        "{v}"
    );
    assert_eq!(v["suggestion"], "where", "{v}");

    let (s, v) = dsl_err(&http, &base, "gpus[5m] | stats avg(utilization) by").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        v["error"],
        "line 1, column 37 (byte 36): expected an expression, found the end of the query"
    );

    let (_, v) = dsl_err(&http, &base, "gpu[5m] | stats count()").await;
    assert_eq!(v["suggestion"], "gpus", "{v}");
    let (_, v) = dsl_err(&http, &base, "gpus | stats avgg(utilization)").await;
    assert_eq!(v["suggestion"], "avg", "{v}");
    let (_, v) = dsl_err(&http, &base, "gpus | stats count() by modle").await;
    assert_eq!(v["suggestion"], "model", "{v}");
    let (s, v) = dsl_err(&http, &base, "gpus | stats sum(model)").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("`sum` expects a number"),
        "{v}"
    );
    // A PromQL source's own syntax error, placed at the source.
    let (s, v) = dsl_err(
        &http,
        &base,
        "gpus | join promql(\"avg by (\")[5m] on model",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["position"]["offset"], 12, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("promql source"),
        "{v}"
    );
    // Nesting that would exhaust a stack is refused, and the server stays up.
    for q in [
        format!(
            "gpus | where {}x{}",
            "(".repeat(100_000),
            ")".repeat(100_000)
        ),
        format!("gpus | where x{}", " or x".repeat(100_000)),
        format!("gpus{}", " | where x".repeat(1000)),
    ] {
        let (s, v) = dsl_err(&http, &base, &q).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    }
    assert_eq!(
        dsl(&http, &base, ADMIN_TOKEN, "gpus | stats count() as n").await,
        [json!({"n": 15})]
    );
    // Empty text.
    let (s, v) = dsl_err(&http, &base, "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("expected a source"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suppliers_dsl_sees_only_its_rows() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--alloc-tick", "200ms"], &[]).await;
    server.write_ok(&telemetry()).await;
    let auth = AuthStore::open(&data).unwrap();
    auth.add_supplier("acme").unwrap();
    auth.add_supplier("bolt").unwrap();
    let acme = auth
        .issue(Role::Supplier, Some("acme"), None, "t")
        .unwrap()
        .token;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = server.base.clone();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        let (s, body) = post(
            &http,
            &format!("{base}/api/v1/jobs"),
            ADMIN_TOKEN,
            json!({"gpus": 1}).to_string(),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
    }

    // The operator sees both suppliers; acme sees itself, with all of its own rows.
    let all = dsl(
        &http,
        &base,
        ADMIN_TOKEN,
        "gpus | stats count() by supplier | sort supplier",
    )
    .await;
    assert_eq!(
        by_key(&all, "supplier", "count"),
        BTreeMap::from([("acme".into(), json!(6)), ("bolt".into(), json!(9))])
    );
    for (q, key) in [
        ("gpus | stats count() by supplier", "count"),
        ("leases[1d] | stats count() by supplier", "count"),
        (
            "promql(\"count by (supplier) (gpu_utilization)\", step=5s)[2m] | stats max(value) by supplier",
            "max_value",
        ),
        (
            "leases | join gpus on gpu_uuid | stats count() by gpus.supplier",
            "count",
        ),
    ] {
        let rows = dsl(&http, &base, &acme, q).await;
        assert!(!rows.is_empty(), "`{q}`");
        let seen = by_key(&rows, "supplier", key);
        assert_eq!(seen.keys().collect::<Vec<_>>(), ["acme"], "`{q}`: {rows:?}");
    }
    let rows = dsl(&http, &base, &acme, "gpus | stats count() as n").await;
    assert_eq!(rows, [json!({"n": 6})]);
    for (q, n) in [
        ("gpus | where supplier == \"bolt\" | stats count() as n", 0),
        ("gpus | where gpu_uuid == \"GPU-9\" | stats count() as n", 0),
        (
            "gpus | where supplier != \"acme\" or true | stats count() as n",
            6,
        ),
    ] {
        assert_eq!(
            dsl(&http, &base, &acme, q).await,
            [json!({ "n": n })],
            "`{q}`"
        );
    }
    // Jobs span suppliers: a supplier has no such table, as a table that does not exist.
    let (s, body) = post(
        &http,
        &format!("{base}/api/v1/dsl"),
        &acme,
        "jobs | stats count()",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("has no data this caller may read"), "{body}");
    // `explain` shows the supplier the SQL: its own query, nothing of the plan or the data.
    let rows = dsl(&http, &base, &acme, "explain gpus | stats count()").await;
    assert!(rows[0]["sql"].as_str().unwrap().contains("FROM \"gpu\""));
    for body in [
        post(
            &http,
            &format!("{base}/api/v1/dsl?format=csv"),
            &acme,
            "gpus",
        )
        .await
        .1,
        post(
            &http,
            &format!("{base}/api/v1/dsl?format=jsonl"),
            &acme,
            "leases",
        )
        .await
        .1,
    ] {
        assert!(body.contains("acme"), "{body}");
        assert!(!body.contains("bolt") && !body.contains("GPU-9"), "{body}");
    }
}
