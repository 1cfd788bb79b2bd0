//! Every SQL statement runs within limits enforced inside execution: a deadline, a row cap,
//! a memory pool and a cap on statements at once per supplier; recursive CTEs are off. Each
//! refusal names its flag, and the server keeps answering.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use rigwatch_storage::auth::{AuthStore, Role};

use super::harness::{Server, temp_dir};

async fn sql(base: &str, token: &str, q: &str) -> (StatusCode, String) {
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/sql"))
        .bearer_auth(token)
        .body(q.to_owned())
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_is_bounded_in_time_rows_memory_and_concurrency() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        &[
            "--query-timeout",
            "2s",
            "--query-max-rows",
            "50",
            "--query-max-concurrent",
            "1",
            "--query-max-memory",
            "8MiB",
        ],
        &[],
    )
    .await;
    let auth = AuthStore::open(&data).unwrap();
    auth.add_supplier("acme").unwrap();
    let token = auth
        .issue(Role::Supplier, Some("acme"), None, "t")
        .unwrap()
        .token;
    let base = server.base.clone();

    let (s, body) = sql(&base, &token, "SELECT * FROM generate_series(1, 1000)").await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(body.contains("--query-max-rows"), "{body}");
    let (s, body) = sql(&base, &token, "SELECT * FROM generate_series(1, 50)").await;
    assert_eq!(s, StatusCode::OK, "{body}");

    let (s, body) = sql(
        &base,
        &token,
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");

    // Sorting 20 M rows needs far more than 8 MiB.
    let (s, body) = sql(
        &base,
        &token,
        "SELECT v FROM generate_series(1, 20000000) AS t(v) ORDER BY v DESC LIMIT 60000000 OFFSET 19999990",
    )
    .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body.contains("--query-max-memory") || body.contains("--query-timeout"),
        "{body}"
    );

    // A statement that would run for minutes is stopped at the deadline, and while it runs
    // the same supplier's next statement is refused.
    let slow = {
        let (base, token) = (base.clone(), token.clone());
        tokio::spawn(async move {
            let t0 = Instant::now();
            let r = sql(
                &base,
                &token,
                "SELECT count(*) FROM generate_series(1, 5000000000)",
            )
            .await;
            (r, t0.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, body) = sql(&base, &token, "SELECT 1").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body.contains("--query-max-concurrent"), "{body}");
    let ((s, body), took) = slow.await.unwrap();
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("--query-timeout"), "{body}");
    assert!(
        took < Duration::from_secs(20),
        "stopped only after {took:?}"
    );
    // Its slot is free again, and the server answers.
    let (s, body) = sql(&base, &token, "SELECT 1 AS one").await;
    assert_eq!(s, StatusCode::OK, "{body}");
}

/// The generic write routes bound the distinct time partitions one token writes into per
/// hour: many small requests cannot spread rows over decades where one large one may not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_opens_a_bounded_number_of_partitions_per_hour() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--max-write-partitions-per-hour", "2"], &[]).await;
    let week = 7 * 86_400 * 1_000_000_000i64;
    assert_eq!(
        server
            .write(&format!("m v=1 {}", 1_000 * week))
            .await
            .unwrap(),
        204
    );
    assert_eq!(
        server
            .write(&format!("m v=2 {}", 1_001 * week))
            .await
            .unwrap(),
        204
    );
    let r = reqwest::Client::new()
        .post(format!("{}/api/v2/write", server.base))
        .bearer_auth(super::harness::ADMIN_TOKEN)
        .body(format!("m v=3 {}", 1_002 * week))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    let body = r.text().await.unwrap();
    assert!(body.contains("--max-write-partitions-per-hour"), "{body}");
    // The partitions it opened stay open to it.
    assert_eq!(
        server
            .write(&format!("m v=4 {}", 1_000 * week + 1))
            .await
            .unwrap(),
        204
    );
    assert_eq!(server.count("m").await, 3);
}
