//! Targeted cases: a partial rewrite of a persisted row, and events repeated across a persist.

use std::sync::Arc;

use rigwatch_storage::{Db, FieldValue, WriteBatch};

use super::util::{Cell, EVENTS, open, query_rows, reopen};

const SEC: i64 = 1_000_000_000;

async fn write(db: &Arc<Db>, table: &str, time: i64, fields: &[(&str, FieldValue<'_>)]) {
    let mut b = WriteBatch::default();
    let mut row = b.row(table, time);
    row.tag("host", "k");
    for (name, v) in fields {
        row.field(name, *v);
    }
    row.finish(1).expect("valid row");
    let outcome = db.write(b, Default::default()).await.expect("write");
    assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
}

async fn ab(db: &Arc<Db>) -> Vec<Vec<Cell>> {
    query_rows(db, "SELECT a, b FROM gpu WHERE host = 'k' ORDER BY time").await
}

fn row(a: i64, b: i64) -> Vec<Vec<Cell>> {
    vec![vec![Cell::I64(a), Cell::I64(b)]]
}

#[tokio::test]
async fn partial_rewrite_of_persisted_row_keeps_other_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path()).await;
    let t = 15 * SEC;
    write(
        &db,
        "gpu",
        t,
        &[("a", FieldValue::I64(1)), ("b", FieldValue::I64(1))],
    )
    .await;
    db.persist().await.expect("persist");
    write(&db, "gpu", t, &[("a", FieldValue::I64(2))]).await;
    assert_eq!(ab(&db).await, row(2, 1), "file + buffer");

    let db = reopen(db, dir.path()).await;
    assert_eq!(ab(&db).await, row(2, 1), "file + replayed WAL");

    db.persist().await.expect("persist");
    assert_eq!(db.files().len(), 2);
    assert_eq!(ab(&db).await, row(2, 1), "two files");

    let stats = db.compact_with(2).await.expect("compact");
    assert_eq!((stats.files_in, stats.files_out), (2, 1));
    assert_eq!(db.files().len(), 1);
    assert_eq!(ab(&db).await, row(2, 1), "compacted");

    // Now the other field, on top of the compacted file.
    write(&db, "gpu", t, &[("b", FieldValue::I64(3))]).await;
    assert_eq!(ab(&db).await, row(2, 3), "compacted file + buffer");
    db.persist().await.expect("persist");
    db.compact_with(2).await.expect("compact");
    let db = reopen(db, dir.path()).await;
    assert_eq!(ab(&db).await, row(2, 3), "compacted twice, reopened");
    assert_eq!(
        query_rows(&db, "SELECT count(*) FROM gpu").await,
        vec![vec![Cell::I64(1)]]
    );
    db.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn repeated_events_survive_persist_compaction_and_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path()).await;
    let t = 3 * SEC;
    let xid = [("xid", FieldValue::I64(79))];
    write(&db, EVENTS, t, &xid).await;
    write(&db, EVENTS, t, &xid).await;
    db.persist().await.expect("persist");
    write(&db, EVENTS, t, &xid).await;
    let count = "SELECT count(*), sum(xid) FROM events";
    let three = vec![vec![Cell::I64(3), Cell::I64(3 * 79)]];
    assert_eq!(query_rows(&db, count).await, three, "file + buffer");

    // Replay must not apply the persisted writes a second time.
    let db = reopen(db, dir.path()).await;
    assert_eq!(query_rows(&db, count).await, three, "file + replayed WAL");
    db.persist().await.expect("persist");
    db.compact_with(2).await.expect("compact");
    assert_eq!(db.files().len(), 1);
    assert_eq!(query_rows(&db, count).await, three, "compacted");
    let db = reopen(db, dir.path()).await;
    assert_eq!(query_rows(&db, count).await, three, "compacted, reopened");
    db.shutdown().await.expect("shutdown");
}
