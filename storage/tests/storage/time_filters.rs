//! Time filters at the edges: empty ranges, partition boundaries, and the ends of the
//! timestamp range.

use std::sync::Arc;

use rigwatch_storage::{Db, FieldValue, WriteBatch};

use super::util::{Cell, open, query_rows, reopen};

const SEC: i64 = 1_000_000_000;

async fn write_times(db: &Arc<Db>, times: &[i64]) {
    let mut b = WriteBatch::default();
    for (i, t) in times.iter().enumerate() {
        let mut row = b.row("gpu", *t);
        row.tag("host", "a");
        row.field("i", FieldValue::I64(i as i64));
        row.finish(i as u32 + 1).expect("valid row");
    }
    let outcome = db.write(b, Default::default()).await.expect("write");
    assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
}

async fn times(db: &Arc<Db>, filter: &str) -> Vec<i64> {
    query_rows(
        db,
        &format!("SELECT time FROM gpu WHERE {filter} ORDER BY time"),
    )
    .await
    .into_iter()
    .map(|r| match r[..] {
        [Cell::Time(t)] => t,
        _ => panic!("unexpected row {r:?}"),
    })
    .collect()
}

/// Which of the written times a filter keeps.
type Keep = Box<dyn Fn(i64) -> bool>;

fn ts(ns: i64) -> String {
    format!("to_timestamp_nanos({ns})")
}

#[tokio::test]
async fn empty_time_range_across_partitions_returns_no_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path()).await;
    write_times(&db, &[5 * SEC, 35 * SEC]).await;
    for filter in [
        format!("time >= {} AND time < {}", ts(35 * SEC), ts(15 * SEC)),
        format!("time = {} AND time = {}", ts(5 * SEC), ts(35 * SEC)),
    ] {
        assert_eq!(times(&db, &filter).await, Vec::<i64>::new(), "{filter}");
    }
}

#[tokio::test]
async fn empty_time_range_within_a_partition_returns_no_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path()).await;
    write_times(&db, &[5 * SEC, 7 * SEC]).await;
    let filter = format!("time >= {} AND time < {}", ts(7 * SEC), ts(5 * SEC));
    assert_eq!(times(&db, &filter).await, Vec::<i64>::new());
    db.persist().await.expect("persist");
    assert_eq!(times(&db, &filter).await, Vec::<i64>::new());
}

/// Rows on both sides of partition boundaries (10 s), before and after the epoch, filtered
/// with inclusive and exclusive bounds at exactly those boundaries.
#[tokio::test]
async fn partition_boundaries_are_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path()).await;
    let all: Vec<i64> = [-10 * SEC, 0, 10 * SEC, 20 * SEC]
        .iter()
        .flat_map(|b| [b - 1, *b, b + 1])
        .collect();
    write_times(&db, &all).await;
    let cases: Vec<(String, Keep)> = vec![
        (
            format!("time >= {} AND time < {}", ts(0), ts(10 * SEC)),
            Box::new(|t| (0..10 * SEC).contains(&t)),
        ),
        (
            format!("time > {} AND time <= {}", ts(-10 * SEC), ts(10 * SEC)),
            Box::new(|t| t > -10 * SEC && t <= 10 * SEC),
        ),
        (format!("time < {}", ts(0)), Box::new(|t| t < 0)),
        (
            format!("time BETWEEN {} AND {}", ts(-1), ts(20 * SEC)),
            Box::new(|t| (-1..=20 * SEC).contains(&t)),
        ),
        (
            format!("time = {}", ts(10 * SEC)),
            Box::new(|t| t == 10 * SEC),
        ),
    ];
    for stage in ["buffer", "files"] {
        for (filter, keep) in &cases {
            let want: Vec<i64> = all.iter().copied().filter(|t| keep(*t)).collect();
            assert_eq!(times(&db, filter).await, want, "{stage}: {filter}");
        }
        if stage == "buffer" {
            db.persist().await.expect("persist");
        }
    }
    let db = reopen(db, dir.path()).await;
    for (filter, keep) in &cases {
        let want: Vec<i64> = all.iter().copied().filter(|t| keep(*t)).collect();
        assert_eq!(times(&db, filter).await, want, "after restart: {filter}");
    }
}

/// The first and last representable nanoseconds survive buffer, Parquet and a restart.
#[tokio::test]
async fn extreme_timestamps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path()).await;
    let all = vec![i64::MIN, i64::MIN + 1, -1, 0, i64::MAX - 1, i64::MAX];
    write_times(&db, &all).await;
    let everything = "time IS NOT NULL";
    assert_eq!(times(&db, everything).await, all, "buffer");
    assert_eq!(
        times(&db, &format!("time < {}", ts(0))).await,
        vec![i64::MIN, i64::MIN + 1, -1],
        "buffer"
    );
    db.persist().await.expect("persist");
    assert_eq!(times(&db, everything).await, all, "files");
    assert_eq!(
        times(&db, &format!("time >= {}", ts(i64::MAX - 1))).await,
        vec![i64::MAX - 1, i64::MAX],
        "files"
    );
    let db = reopen(db, dir.path()).await;
    assert_eq!(times(&db, everything).await, all, "reopened");
    db.shutdown().await.expect("shutdown");
}
