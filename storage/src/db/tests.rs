//! Unit tests of the database lifecycle that need no HTTP: retention, subscriptions,
//! backpressure, quarantine of a corrupt file at open.

use rigwatch_common::http_error::HttpError;
use std::time::Duration;

use datafusion::prelude::SessionContext;

use super::*;
use crate::batch::FieldValue;
use crate::buffer::partition_of;

fn config(dir: &std::path::Path) -> DbConfig {
    let mut c = DbConfig::new(dir);
    c.background = false;
    c.partition = Duration::from_secs(60);
    c
}

fn rows(times: &[i64]) -> WriteBatch {
    let mut b = WriteBatch::default();
    for (i, t) in times.iter().enumerate() {
        let mut r = b.row("gpu", *t);
        r.tag("gpu", &i.to_string())
            .field("util", FieldValue::F64(*t as f64));
        r.finish(i as u32 + 1).unwrap();
    }
    b
}

async fn count(db: &Arc<Db>) -> i64 {
    use arrow::array::{Array, Int64Array};
    let ctx = SessionContext::new();
    crate::table::register(db, &ctx).unwrap();
    let batches = ctx
        .sql("SELECT count(*) FROM gpu")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let col = batches[0].column(0);
    col.as_any().downcast_ref::<Int64Array>().unwrap().value(0)
}

#[tokio::test]
async fn retention_drops_only_expired_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.retention = Some(Duration::from_secs(3600));
    let db = Db::open(c).await.unwrap();
    let now = now_ms() * 1_000_000;
    let old = now - 2 * 3_600_000_000_000;
    db.write(rows(&[old, old + 1]), WriteOptions::default())
        .await
        .unwrap();
    db.write(rows(&[now]), WriteOptions::default())
        .await
        .unwrap();
    db.persist().await.unwrap();
    assert_eq!(db.files().len(), 2);
    assert_eq!(count(&db).await, 3);
    assert_eq!(db.enforce_retention().await.unwrap(), 1);
    assert_eq!(db.files().len(), 1);
    assert_eq!(count(&db).await, 1);
    db.shutdown().await.unwrap();
}

#[tokio::test]
async fn subscribers_see_accepted_rows_only() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(config(dir.path())).await.unwrap();
    let mut rx = db.subscribe();
    let mut b = rows(&[1, 2]);
    let mut r = b.row("gpu", 3);
    r.tag("gpu", "x").field("util", FieldValue::I64(1)); // type conflict: util is a float
    r.finish(9).unwrap();
    let out = db.write(b, WriteOptions::default()).await.unwrap();
    assert_eq!((out.rows, out.rejected.len()), (2, 1));
    assert_eq!(out.rejected[0].line, 9);
    let seen = rx.recv().await.unwrap();
    assert_eq!(seen.len(), 2);
    db.shutdown().await.unwrap();
}

#[tokio::test]
async fn over_budget_writes_are_refused_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.memory_budget = 1;
    c.backpressure_wait = Duration::from_millis(50);
    let db = Db::open(c).await.unwrap();
    db.write(rows(&[1]), WriteOptions::default()).await.unwrap();
    let t = std::time::Instant::now();
    let err = db
        .write(rows(&[2]), WriteOptions::default())
        .await
        .unwrap_err();
    // It waited for room (no persist runs here) before it was refused.
    assert!(
        t.elapsed() >= Duration::from_millis(50),
        "{:?}",
        t.elapsed()
    );
    assert!(matches!(err, Error::Backpressure { .. }), "{err}");
    assert_eq!(err.status_code().as_u16(), 503);
    db.persist().await.unwrap();
    db.write(rows(&[3]), WriteOptions::default()).await.unwrap();
    assert_eq!(count(&db).await, 2);
    db.shutdown().await.unwrap();
}

/// A write over the budget waits for the persist that makes room, and is then taken.
#[tokio::test]
async fn an_over_budget_write_waits_for_the_persist_that_makes_room() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.memory_budget = 1;
    c.backpressure_wait = Duration::from_secs(30);
    let db = Arc::new(Db::open(c).await.unwrap());
    db.write(rows(&[1]), WriteOptions::default()).await.unwrap();
    let writer = {
        let db = db.clone();
        tokio::spawn(async move { db.write(rows(&[2]), WriteOptions::default()).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!writer.is_finished(), "the write did not wait for room");
    db.persist().await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .expect("the write went on once the persist made room")
        .unwrap()
        .unwrap();
    assert_eq!(out.rows, 1);
    assert_eq!(count(&db).await, 2);
    db.shutdown().await.unwrap();
}

#[tokio::test]
async fn corrupt_file_is_excluded_at_open_and_the_rest_stays_queryable() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(config(dir.path())).await.unwrap();
    db.write(rows(&[1, 2]), WriteOptions::default())
        .await
        .unwrap();
    db.persist().await.unwrap();
    db.write(rows(&[120_000_000_000]), WriteOptions::default())
        .await
        .unwrap();
    db.persist().await.unwrap();
    let files = db.files();
    assert_eq!(files.len(), 2);
    db.shutdown().await.unwrap();
    drop(db);
    let victim = dir.path().join("objects").join(&files[0].path);
    std::fs::write(&victim, b"not parquet at all").unwrap();
    let db = Db::open(config(dir.path())).await.unwrap();
    assert_eq!(db.metrics().corrupt_files.get(), 1);
    assert_eq!(count(&db).await, 1);
    db.shutdown().await.unwrap();
}

#[tokio::test]
async fn replay_after_unclean_stop_restores_unpersisted_rows_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(config(dir.path())).await.unwrap();
    db.write(rows(&[1, 2]), WriteOptions::default())
        .await
        .unwrap();
    db.persist().await.unwrap();
    db.write(rows(&[3]), WriteOptions::default()).await.unwrap();
    // No shutdown: the WAL thread exits when the Db is dropped.
    drop(db);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let db = Db::open(config(dir.path())).await.unwrap();
    assert_eq!(db.buffered_rows(), 1);
    assert_eq!(count(&db).await, 3);
    db.shutdown().await.unwrap();
}

#[tokio::test]
async fn compaction_excludes_a_file_corrupted_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(config(dir.path())).await.unwrap();
    for t in [1, 2, 3] {
        db.write(rows(&[t]), WriteOptions::default()).await.unwrap();
        db.persist().await.unwrap();
    }
    let files = db.files();
    assert_eq!(files.len(), 3);
    std::fs::write(dir.path().join("objects").join(&files[1].path), b"garbage").unwrap();
    let stats = db.compact_with(2).await.unwrap();
    assert_eq!(stats.partitions, 0);
    assert_eq!(db.metrics().corrupt_files.get(), 1);
    // The next pass compacts the two readable files.
    let stats = db.compact_with(2).await.unwrap();
    assert_eq!((stats.files_in, stats.files_out), (2, 1));
    assert_eq!(count(&db).await, 2);
    db.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_closed_partition_is_compacted_from_two_files_an_open_one_waits_for_more() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(config(dir.path())).await.unwrap();
    let now = now_ms() * 1_000_000;
    // An hour ago: long closed (1-minute partitions, persist age 5 minutes). Now: open.
    let old = now - 3_600_000_000_000;
    for t in [old, old + 1, now, now + 1] {
        db.write(rows(&[t]), WriteOptions::default()).await.unwrap();
        db.persist().await.unwrap();
    }
    assert_eq!(db.files().len(), 4);
    let stats = db.compact().await.unwrap();
    assert_eq!((stats.partitions, stats.files_in), (1, 2), "{stats:?}");
    let files = db.files();
    assert_eq!(files.len(), 3);
    let closed = partition_of(old, db.partition_ns());
    assert_eq!(files.iter().filter(|f| f.partition == closed).count(), 1);
    assert_eq!(count(&db).await, 4);
    db.shutdown().await.unwrap();
}
