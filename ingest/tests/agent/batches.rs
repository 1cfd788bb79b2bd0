//! Agent batches: recognised by their id (not their bytes), stored once across a restart,
//! and refused as a whole when their times fall outside the window.

use std::time::Duration;

use reqwest::StatusCode;
use rigwatch_ingest::agent::dedup::{BATCH_HEADER, BatchId};
use rigwatch_ingest::agent::routes::AgentLimits;

use super::support::AgentServer;

const S: i64 = 1_000_000_000;
const HOUR: i64 = 3_600 * S;

fn now_ns() -> i64 {
    rigwatch_ingest::agent::now_ns()
}

fn id(seq: u64) -> BatchId {
    BatchId { epoch: 0x5eed, seq }
}

/// A server with supplier `acme`'s worker `n1` holding GPU `GPU-x`; its agent token.
async fn server_with_worker(server: &AgentServer) -> String {
    let token = server.supplier("acme");
    let resp = server
        .client
        .post(format!("{}/api/v1/agent/register", server.base))
        .bearer_auth(&token)
        .json(&serde_json::json!({"worker": "n1", "gpus": [
            {"index": 0, "uuid": "GPU-x", "model": "Tesla T4", "memory_total_mib": 15360}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    token
}

/// What the server answered a write: status, whether it said duplicate, the body.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    duplicate: bool,
    text: String,
}

async fn write(server: &AgentServer, token: &str, id: Option<BatchId>, body: &str) -> Answer {
    let mut req = server
        .client
        .post(format!("{}/api/v1/agent/write?worker=n1", server.base))
        .bearer_auth(token)
        .body(body.to_string());
    if let Some(id) = id {
        req = req.header(BATCH_HEADER, id.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let duplicate = resp.headers().get("x-rigwatch-duplicate").is_some();
    Answer {
        status,
        duplicate,
        text: resp.text().await.unwrap(),
    }
}

fn xid(t: i64) -> String {
    format!("gpu_fault,gpu_uuid=GPU-x,kind=xid code=79i,severity=\"hardware\" {t}\n")
}

fn stored(a: Answer) {
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text);
    assert!(!a.duplicate, "answered as a duplicate");
}

fn duplicate(a: Answer) {
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text);
    assert!(a.duplicate, "not recognised as a duplicate");
}

#[tokio::test]
async fn different_batches_with_the_same_bytes_are_both_stored() {
    let server = AgentServer::start().await;
    let token = server_with_worker(&server).await;
    // The same XID reported twice at the same time, as two batches: the bytes are equal.
    let body = xid(now_ns());
    stored(write(&server, &token, Some(id(1)), &body).await);
    stored(write(&server, &token, Some(id(2)), &body).await);
    // A heartbeat without a time, sent in two ticks: the bytes are equal too.
    stored(write(&server, &token, Some(id(3)), "heartbeat seq=0i\n").await);
    tokio::time::sleep(Duration::from_millis(2)).await;
    stored(write(&server, &token, Some(id(4)), "heartbeat seq=0i\n").await);
    assert_eq!(server.count("gpu_fault").await, 2);
    assert_eq!(server.count("heartbeat").await, 2);
    // Each batch's id is recorded with it.
    assert_eq!(
        server
            .rows("SELECT batch FROM agent_batch ORDER BY time")
            .await
            .concat(),
        (1..=4).map(|s| id(s).to_string()).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_retried_id_is_stored_once_even_across_a_restart() {
    let server = AgentServer::start().await;
    let token = server_with_worker(&server).await;
    let body = xid(now_ns());
    stored(write(&server, &token, Some(id(7)), &body).await);
    duplicate(write(&server, &token, Some(id(7)), &body).await);
    assert_eq!(server.count("gpu_fault").await, 1);

    let server = server.restart().await;
    duplicate(write(&server, &token, Some(id(7)), &body).await);
    assert_eq!(
        server.count("gpu_fault").await,
        1,
        "recognised after the restart"
    );
    // The same id with other bytes is an agent bug: refused, nothing stored.
    let other = write(&server, &token, Some(id(7)), &xid(now_ns())).await;
    assert_eq!(other.status, StatusCode::CONFLICT, "{}", other.text);
    assert!(other.text.contains(&id(7).to_string()), "{}", other.text);
    assert_eq!(server.count("gpu_fault").await, 1);
    // The next id with the same bytes is a new batch.
    stored(write(&server, &token, Some(id(8)), &body).await);
    assert_eq!(server.count("gpu_fault").await, 2);
}

#[tokio::test]
async fn a_batch_without_an_id_is_recognised_by_its_bytes() {
    let server = AgentServer::start().await;
    let token = server_with_worker(&server).await;
    let body = xid(now_ns());
    stored(write(&server, &token, None, &body).await);
    duplicate(write(&server, &token, None, &body).await);
    let server = server.restart().await;
    duplicate(write(&server, &token, None, &body).await);
    assert_eq!(server.count("gpu_fault").await, 1);
    // With an id, the same bytes are a batch of their own.
    stored(write(&server, &token, Some(id(1)), &body).await);
    assert_eq!(server.count("gpu_fault").await, 2);
}

#[tokio::test]
async fn a_malformed_batch_id_is_refused() {
    let server = AgentServer::start().await;
    let token = server_with_worker(&server).await;
    let resp = server
        .client
        .post(format!("{}/api/v1/agent/write?worker=n1", server.base))
        .bearer_auth(&token)
        .header(BATCH_HEADER, "7")
        .body(xid(now_ns()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().await.unwrap().contains(BATCH_HEADER));
    assert_eq!(server.count("gpu_fault").await, 0);
}

#[tokio::test]
async fn rows_outside_the_time_window_are_refused_naming_the_line() {
    let server = AgentServer::start().await;
    let token = server_with_worker(&server).await;
    let now = now_ns();
    let week = 7 * 24 * HOUR;
    let cases = [
        (
            now - week - HOUR,
            "line 2",
            "before the server's clock, more than 7d",
        ),
        (
            now + 10 * 60 * S,
            "line 2",
            "after the server's clock, more than 5m",
        ),
    ];
    for (seq, (t, line, why)) in cases.into_iter().enumerate() {
        let body = format!("heartbeat seq=1i {now}\n{}", xid(t));
        let a = write(&server, &token, Some(id(seq as u64)), &body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);
        for part in [
            line,
            why,
            &format!("time {t}"),
            "nothing of this request was stored",
        ] {
            assert!(a.text.contains(part), "`{part}` missing: {}", a.text);
        }
    }
    for table in ["heartbeat", "gpu_fault", "agent_batch"] {
        assert_eq!(server.count(table).await, 0, "{table}");
    }
    // Inside the window, at both ends: stored.
    let body = format!("{}{}", xid(now - week + HOUR), xid(now + 60 * S));
    stored(write(&server, &token, Some(id(9)), &body).await);
    assert_eq!(server.count("gpu_fault").await, 2);
}

#[tokio::test]
async fn the_window_follows_the_limits() {
    let limits = AgentLimits {
        max_age: Duration::from_secs(3_600),
        max_future: Duration::from_secs(1),
        ..AgentLimits::DEFAULT
    };
    let server = AgentServer::start_with(tempfile::tempdir().unwrap(), "127.0.0.1:0", limits).await;
    let token = server_with_worker(&server).await;
    let now = now_ns();
    let a = write(&server, &token, Some(id(1)), &xid(now - 2 * HOUR)).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);
    assert!(a.text.contains("more than 1h"), "{}", a.text);
    let a = write(&server, &token, Some(id(2)), &xid(now + 30 * S)).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);
    assert!(a.text.contains("more than 1s"), "{}", a.text);
    assert_eq!(server.count("gpu_fault").await, 0);
}

#[tokio::test]
async fn a_request_may_touch_a_bounded_number_of_partitions() {
    let server = AgentServer::start().await;
    let token = server_with_worker(&server).await;
    let now = now_ns();
    // One row an hour for 49 hours: 49 partitions of the store's hour.
    let rows: Vec<String> = (0..49).map(|h| xid(now - h * HOUR)).collect();
    let a = write(&server, &token, Some(id(1)), &rows.concat()).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);
    assert!(
        a.text.contains("line 49") && a.text.contains("more than 48 time partitions of 1h"),
        "{}",
        a.text
    );
    assert_eq!(server.count("gpu_fault").await, 0);
    assert_eq!(server.count("agent_batch").await, 0);
    // 48 are fine.
    stored(write(&server, &token, Some(id(2)), &rows[..48].concat()).await);
    assert_eq!(server.count("gpu_fault").await, 48);
}

#[tokio::test]
async fn free_tag_values_are_bounded_per_supplier() {
    let server = AgentServer::start().await;
    let token = server_with_worker(&server).await;
    let t = now_ns();
    // `kind` of a fault is one of two words; `region` a short name.
    for (body, needle) in [
        (
            format!("gpu_fault,gpu_uuid=GPU-x,kind=anything code=1i {t}\n"),
            "`xid` or `reset`",
        ),
        (
            format!("heartbeat,region=eu\\ west seq=0i {t}\n"),
            "tag `region`",
        ),
        (
            format!("heartbeat,region={} seq=0i {t}\n", "r".repeat(65)),
            "tag `region`",
        ),
    ] {
        let a = write(&server, &token, None, &body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.text);
        assert!(a.text.contains(needle), "{body}: {}", a.text);
    }
    // Up to the cap, regions are stored; one more is refused and nothing of it stored.
    let cap = rigwatch_ingest::agent::schema::MAX_REGIONS_PER_SUPPLIER;
    let body: String = (0..cap)
        .map(|i| format!("heartbeat,region=r{i} seq={i}i {}\n", t + i as i64))
        .collect();
    stored(write(&server, &token, Some(id(1)), &body).await);
    let again = format!("heartbeat,region=r0 seq=99i {}\n", t + 1_000);
    stored(write(&server, &token, Some(id(2)), &again).await);
    let more = format!(
        "heartbeat,region=r0 seq=100i {}\nheartbeat,region=one-more seq=101i {}\n",
        t + 2_000,
        t + 3_000
    );
    let a = write(&server, &token, Some(id(3)), &more).await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.text);
    assert!(a.text.contains("regions"), "{}", a.text);
    assert_eq!(server.count("heartbeat").await, cap as u64 + 1);
}

#[tokio::test]
async fn a_supplier_opens_a_bounded_number_of_partitions_per_hour() {
    let limits = AgentLimits {
        max_partitions_per_hour: 3,
        ..AgentLimits::DEFAULT
    };
    let server = AgentServer::start_with(tempfile::tempdir().unwrap(), "127.0.0.1:0", limits).await;
    let token = server_with_worker(&server).await;
    // Align to the store's hour so that "this hour" and "an hour ago" are two partitions.
    let now = now_ns();
    let hour = now - now.rem_euclid(HOUR);
    // Three requests, each within the per-request limit, into three partitions: allowed.
    for (i, h) in (0..3).enumerate() {
        stored(
            write(
                &server,
                &token,
                Some(id(i as u64 + 1)),
                &xid(hour - h * HOUR + S),
            )
            .await,
        );
    }
    // A fourth partition in the same hour is refused, naming the flag, with Retry-After.
    let resp = server
        .client
        .post(format!("{}/api/v1/agent/write?worker=n1", server.base))
        .bearer_auth(&token)
        .header(BATCH_HEADER, id(10).to_string())
        .body(xid(hour - 3 * HOUR + S))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3_600).contains(&retry), "Retry-After {retry}");
    let text = resp.text().await.unwrap();
    assert!(text.contains("--agent-max-partitions-per-hour"), "{text}");
    assert_eq!(server.count("gpu_fault").await, 3);
    // Partitions opened earlier this hour stay open.
    stored(write(&server, &token, Some(id(11)), &xid(hour + 2 * S)).await);
    assert_eq!(server.count("gpu_fault").await, 4);
}

/// A client that gives up while its batch is being stored must not leave the batch "in
/// flight" for ever: the retry is answered (stored once) within moments, however early or
/// late the first attempt was abandoned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_abandoned_mid_write_can_be_retried() {
    let server = AgentServer::start().await;
    let token = server_with_worker(&server).await;
    let now = now_ns();
    for n in 0..30u64 {
        let body = xid(now - (n as i64 + 1) * S);
        let impatient = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_micros(200 + 300 * n))
            .build()
            .unwrap();
        let _ = impatient
            .post(format!("{}/api/v1/agent/write?worker=n1", server.base))
            .bearer_auth(&token)
            .header(BATCH_HEADER, id(100 + n).to_string())
            .body(body.clone())
            .send()
            .await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let a = write(&server, &token, Some(id(100 + n)), &body).await;
            if a.status == StatusCode::NO_CONTENT {
                break;
            }
            assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text);
            assert!(
                std::time::Instant::now() < deadline,
                "attempt {n}: the retry is still told to wait: {}",
                a.text
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(server.count("gpu_fault").await, 30);
}
