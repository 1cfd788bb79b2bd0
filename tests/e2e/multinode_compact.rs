//! Maintenance beside other nodes: one compactor at a time under the compaction lease, and
//! catalog commits from the owner and the compactor rebased on each other.

use std::time::Duration;

use rigwatch_storage::pg::Pg;

use super::harness::Server;
use super::multinode::{Shared, catalog_files, eventually};

/// The `code` of every `probe` row on `server`, in time order (`probe` keeps the last write
/// of a series and time, unlike the append-only `events`).
async fn codes(server: &Server) -> Vec<i64> {
    server
        .rows("SELECT code FROM probe ORDER BY time")
        .await
        .iter()
        .map(|r| r["code"].as_i64().unwrap())
        .collect()
}

/// Waits until the catalog lists one `probe` file holding the last round's values.
async fn wait_compacted(c: &Shared, reader: &Server, want: &[i64]) {
    eventually(
        60,
        "one merged `probe` file with the last writes",
        || async {
            let files = catalog_files(&c.pg, "probe").await;
            let got = codes(reader).await;
            if files == 1 && got == want {
                Ok(())
            } else {
                Err(format!(
                    "{files} files, codes {got:?}; log:\n{}",
                    reader.log_tail(30)
                ))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_compactor_at_a_time_and_ingest_nodes_never_compact() {
    let Some(c) = Shared::start().await else {
        return;
    };
    let fast = [
        "--compaction-interval",
        "300ms",
        "--compaction-min-files",
        "2",
    ];
    let with = |mode: &'static str| -> Vec<&'static str> {
        let mut a = vec!["--mode", mode];
        a.extend(fast);
        a
    };
    let n1 = c.owner("n1", &with("ingest")).await;
    let mut k1 = c.node("k1", &with("compact")).await;
    let took = "took the lease `compact`";
    k1.wait_for_log(took, 20).await;
    // The same ten rows (one old, closed partition) rewritten each round with the round's
    // value: each round persists a file, and last write wins only if the merged files keep
    // their order against files persisted while the compactor merged.
    let round = |r: i64| -> String {
        (0..10)
            .map(|i| {
                format!(
                    "probe,gpu=g{i} code={r}i {}\n",
                    1_700_000_000_000_000_000i64 + i * 1_000_000_000
                )
            })
            .collect()
    };
    for r in 0..6 {
        n1.write_ok(&round(r)).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    wait_compacted(&c, &k1, &[5; 10]).await;
    assert_eq!(codes(&n1).await, vec![5; 10]);
    assert!(
        k1.log().contains("compacted partitions"),
        "{}",
        k1.log_tail(30)
    );
    assert!(
        !n1.log().contains("compacted partitions"),
        "an ingest node compacted:\n{}",
        n1.log_tail(30)
    );

    // The compactor dies; another takes its lease over once it expires.
    k1.kill9();
    let k2 = c.node("k2", &with("compact")).await;
    k2.wait_for_log(took, 20).await;
    for r in 6..9 {
        n1.write_ok(&round(r)).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    wait_compacted(&c, &k2, &[8; 10]).await;
    // The owner took in the compactor's catalog: it lists what the catalog lists.
    eventually(20, "n1 listing the catalog's files", || async {
        let listed = n1.metric("rigwatch_storage_files").await;
        let pg = Pg::connect(&c.pg.url).await.unwrap();
        let all: i64 = pg
            .client()
            .await
            .unwrap()
            .query_one("SELECT count(*) FROM rw_files", &[])
            .await
            .unwrap()
            .get(0);
        match listed {
            Some(v) if v == all as f64 => Ok(()),
            other => Err(format!("n1 lists {other:?}, the catalog {all}")),
        }
    })
    .await;
    assert_eq!(codes(&n1).await, vec![8; 10]);
}
