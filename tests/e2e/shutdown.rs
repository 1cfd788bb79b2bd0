//! Graceful shutdown: SIGTERM while a writer is busy exits with status 0, and a restart shows
//! every acknowledged row exactly once (persisted, buffered and in-flight-then-acknowledged).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use super::harness::{Server, describe, parquet_files, temp_dir};

const BASE: i64 = 1_700_000_000_000_000_000;

/// Line protocol for `rig` rows `seqs`, each at its own time.
pub fn gpu_rows(seqs: Range<u64>) -> String {
    seqs.map(|s| {
        format!(
            "rig,gpu_uuid=GPU-{} utilization={}.5,seq={s}i {}\n",
            s % 4,
            s % 100,
            BASE + s as i64 * 1_000_000
        )
    })
    .collect()
}

/// `seq` of every `rig` row with how often it is stored.
pub async fn stored_seqs(server: &Server) -> BTreeMap<u64, usize> {
    let mut out = BTreeMap::new();
    for row in server.rows("SELECT seq FROM rig").await {
        let seq = row["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("row without seq: {row}"));
        *out.entry(seq).or_default() += 1;
    }
    out
}

/// Polls `cond` every 50ms for up to `timeout`.
pub async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_cleanly_and_keeps_every_acknowledged_write() {
    let tmp = temp_dir();
    let dir = tmp.path().join("data");
    let args = ["--persist-age", "1s", "--partition", "1m", "--log", "info"];
    let mut server = Server::start(&dir, &args, &[]).await;

    // Some rows persisted to Parquet...
    for b in 0..10 {
        server.write_ok(&gpu_rows(b * 10..b * 10 + 10)).await;
    }
    wait_for("a persist", Duration::from_secs(30), || {
        !parquet_files(&dir).is_empty()
    })
    .await;

    // ...and a writer still busy when SIGTERM arrives.
    let acked = Arc::new(Mutex::new(Vec::<Range<u64>>::new()));
    let sent_up_to = Arc::new(Mutex::new(100u64));
    let writer = {
        let (http, acked, sent_up_to) = ((*server).clone(), acked.clone(), sent_up_to.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut next = 100;
            while Instant::now() < deadline {
                let batch = next..next + 10;
                next += 10;
                *sent_up_to.lock().unwrap() = next;
                match http.write(&gpu_rows(batch.clone())).await {
                    Ok(StatusCode::NO_CONTENT) => acked.lock().unwrap().push(batch),
                    Ok(status) => panic!("unexpected {status} while shutting down"),
                    Err(_) => return,
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.terminate();
    let status = server
        .wait_exit(Duration::from_secs(60))
        .await
        .unwrap_or_else(|| panic!("no exit within 60s of SIGTERM\n{}", server.log_tail(40)));
    assert!(
        status.success(),
        "SIGTERM: exited with {}\n{}",
        describe(status),
        server.log_tail(40)
    );
    tokio::time::timeout(Duration::from_secs(90), writer)
        .await
        .expect("writer did not stop")
        .expect("writer panicked");
    let log = server.log();
    assert!(
        log.contains("storage shut down; WAL synced"),
        "no final WAL sync logged\n{}",
        server.log_tail(40)
    );
    assert!(!log.contains("panicked"), "{}", server.log_tail(40));

    let acked: Vec<u64> = (0..100)
        .chain(acked.lock().unwrap().iter().flat_map(|r| r.clone()))
        .collect();
    assert!(
        acked.len() > 100,
        "no write was acknowledged before SIGTERM"
    );
    let sent_up_to = *sent_up_to.lock().unwrap();

    let mut server = Server::start(&dir, &args, &[]).await;
    let stored = stored_seqs(&server).await;
    for seq in &acked {
        match stored.get(seq) {
            Some(1) => {}
            Some(n) => panic!("acknowledged seq={seq} stored {n} times after SIGTERM + restart"),
            None => panic!("acknowledged seq={seq} missing after SIGTERM + restart"),
        }
    }
    for (seq, n) in &stored {
        assert!(*seq < sent_up_to, "seq={seq} stored but never written");
        assert_eq!(*n, 1, "seq={seq} stored {n} times");
    }
    assert_eq!(server.count("rig").await, stored.len() as u64);
    server.stop_gracefully().await;
}
