//! The singletons (the allocator with its ledger, fault detection, the alert rules) run on one
//! shard owner at a time, under a lease of their own (`singletons`), and move when their node
//! dies: no millisecond is paid twice or skipped, and every ledger record carries the epoch
//! of the leader that wrote it (real PostgreSQL and SeaweedFS, real server processes).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::earnings::{admin, samples};
use super::harness::{ADMIN_TOKEN, Server};
use super::multinode::{Shared, eventually};

/// A fast allocator, a price of 1 µ a millisecond for a whole H100, pay paused after 1.5 s
/// without telemetry.
const MONEY: [&str; 8] = [
    "--alloc-tick",
    "100ms",
    "--rate",
    "H100=3.6",
    "--pay-grace",
    "1500ms",
    "--offline-after",
    "60s",
];

/// The singletons' lease as `server`'s `/api/v1/cluster` says: holder and epoch, if live.
async fn singletons(server: &Server) -> Option<(String, i64)> {
    let v = admin_settled(server, "GET", "/api/v1/cluster", Value::Null).await;
    let s = &v["singletons"];
    if s["live"] != true {
        return None;
    }
    Some((s["holder"].as_str()?.to_string(), s["epoch"].as_i64()?))
}

/// Telemetry of GPU-a through `server` for `secs`, each write retried while the node
/// restarts (a node taking the singletons over restarts its services).
async fn keep_reporting(server: &Server, secs: u64) {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        let _ = server.write(&samples(&["GPU-a"])).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Checks the one lease's pay on `server`: entries follow one another without overlap, every
/// millisecond of the lease is paid or counted unpaid, and 3.6/h of a whole GPU is 1 µ a
/// millisecond (also for time one leader worked and the next booked: the price history is
/// stored). Answers each entry's leader epoch, in time order.
async fn paid_once(server: &Server) -> Vec<i64> {
    // `*`: `unpaid_ms` exists only once some lease paused.
    let leases = server.rows("SELECT * FROM lease").await;
    assert_eq!(leases.len(), 1, "one placement, continued: {leases:?}");
    let l = &leases[0];
    let (start, end, unpaid) = (
        l["start_ms"].as_i64().unwrap(),
        l["end_ms"].as_i64().expect("the lease ended"),
        l["unpaid_ms"].as_i64().unwrap_or(0),
    );
    let entries = server
        .rows("SELECT to_ms, amount_micro, duration_ms, leader_epoch FROM earnings ORDER BY time")
        .await;
    assert!(!entries.is_empty(), "{entries:?}");
    let mut last_to = start;
    let (mut paid_ms, mut paid_micro) = (0i64, 0i64);
    let mut epochs = Vec::new();
    for e in &entries {
        let to = e["to_ms"].as_i64().unwrap();
        let from = to - e["duration_ms"].as_i64().unwrap();
        assert!(
            from >= last_to,
            "paid twice: an entry from {from} starts before {last_to}: {entries:?}"
        );
        last_to = to;
        paid_ms += e["duration_ms"].as_i64().unwrap();
        paid_micro += e["amount_micro"].as_i64().unwrap();
        epochs.push(
            e["leader_epoch"]
                .as_i64()
                .unwrap_or_else(|| panic!("an entry without its leader's epoch: {e}")),
        );
    }
    assert_eq!(paid_ms + unpaid, end - start, "{l} {entries:?}");
    assert_eq!(paid_micro, paid_ms, "{entries:?}");
    assert!(
        epochs.windows(2).all(|w| w[0] <= w[1]),
        "a deposed leader's entry after its successor's: {entries:?}"
    );
    epochs
}

/// `method path` as the operator through `server`, retried while it answers 503 (the
/// singletons' node is changing); the answer.
async fn admin_settled(server: &Server, method: &str, path: &str, body: Value) -> Value {
    eventually(30, &format!("{method} {path}"), || async {
        let client = reqwest::Client::new();
        let url = format!("{}{path}", server.base);
        let req = match method {
            "GET" => client.get(url),
            _ => client.post(url).json(&body),
        };
        let r = req
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        match status.as_u16() {
            503 => Err(format!("{status} {v}")),
            _ if status.is_success() => Ok(v),
            _ => panic!("{method} {path}: {status} {v}"),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allocator_moves_with_the_shard_and_no_millisecond_is_paid_twice() {
    let Some(c) = Shared::start().await else {
        return;
    };
    let mut n1 = c.node("n1", &MONEY).await;
    n1.write_ok(&samples(&["GPU-a"])).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let v = admin(&n1, "POST", "/api/v1/jobs", Some(json!({"gpus": 1}))).await;
    assert_eq!(v["data"]["state"], "running", "{v}");
    let job = v["data"]["job"]["id"].as_u64().unwrap();
    keep_reporting(&n1, 2).await;
    let (holder, first) = singletons(&n1).await.expect("a live singletons' lease");
    assert_eq!(holder, "n1");
    // The leader dies mid-accrual.
    n1.kill9();
    let n2 = c.owner("n2", &MONEY).await;
    keep_reporting(&n2, 3).await;
    admin(
        &n2,
        "POST",
        &format!("/api/v1/jobs/{job}/complete"),
        Some(json!({})),
    )
    .await;
    let epochs = paid_once(&n2).await;
    let (holder, second) = singletons(&n2).await.expect("a live singletons' lease");
    assert_eq!(holder, "n2");
    assert!(second > first, "{second} after {first}");
    assert_eq!(epochs.last(), Some(&second), "{epochs:?}");
    assert!(
        epochs.iter().all(|e| [first, second].contains(e)),
        "{epochs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_singletons_move_to_another_shards_owner_when_their_node_dies() {
    let Some(c) = Shared::start().await else {
        return;
    };
    let args: Vec<&str> = MONEY.iter().copied().chain(["--shards", "2"]).collect();
    let mut n0 = c.owner("n0", &args).await;
    let n1 = c.owner("n1", &args).await;
    n1.wait_for_log("another node runs the singletons", 10)
        .await;
    let (holder, first) = singletons(&n1).await.expect("a live singletons' lease");
    assert_eq!(holder, "n0", "the first owner runs the singletons");

    n0.write_ok(&samples(&["GPU-a"])).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Submitted through shard 1's owner, placed by the singletons' node.
    let v = admin(&n1, "POST", "/api/v1/jobs", Some(json!({"gpus": 1}))).await;
    assert_eq!(v["data"]["state"], "running", "{v}");
    let job = v["data"]["job"]["id"].as_u64().unwrap();
    keep_reporting(&n0, 2).await;

    // No standby: when n0 dies, shard 1's owner takes the singletons over (restarting its
    // services on the same port) and keeps its own shard.
    n0.kill9();
    n1.wait_for_log("took the singletons' lease", 30).await;
    let second = eventually(30, "n1 running the singletons", || async {
        match singletons(&n1).await {
            Some((h, e)) if h == "n1" => Ok(e),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(second > first, "{second} after {first}");
    let v = admin_settled(&n1, "GET", "/api/v1/cluster", Value::Null).await;
    assert_eq!(v["this_node_shard"], "1", "{v}");
    keep_reporting(&n1, 3).await;
    admin_settled(
        &n1,
        "POST",
        &format!("/api/v1/jobs/{job}/complete"),
        json!({}),
    )
    .await;
    let epochs = paid_once(&n1).await;
    assert_eq!(epochs.last(), Some(&second), "{epochs:?}");
    assert!(
        epochs.iter().all(|e| [first, second].contains(e)),
        "{epochs:?}"
    );
}
