//! Tier compaction: a closed tier's partition files become one file with the same rows, in
//! a few row groups of several partitions each, each partition in (tags, time) order; a short
//! range reads only its partition's pages; a later write into the tier is read
//! back merged with it (last write wins, never twice) and is never merged into the tier file;
//! append-only tables keep every row; an open tier waits.

use object_store::ObjectStoreExt;
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::{Float64Type, Int64Type};
use datafusion::prelude::SessionContext;

use super::*;
use crate::batch::{FieldValue, WriteBatch};
use crate::db::now_ms;
use crate::{DbConfig, WriteOptions};

const MIN: i64 = 60_000_000_000;
/// 2020-09-13T12:26:40Z: long closed.
const T0: i64 = 1_600_000_000_000_000_000 / (10 * MIN) * (10 * MIN);

fn config(dir: &std::path::Path) -> DbConfig {
    let mut c = DbConfig::new(dir);
    c.background = false;
    c.partition = Duration::from_secs(60);
    c.compaction_tier = Some(Duration::from_secs(600));
    c.append_only_tables = vec!["event".into()];
    c
}

/// Two GPUs, one row each every 20 s over `minutes` minutes from `from`.
fn gpu_rows(table: &str, from: i64, minutes: i64, value: f64) -> WriteBatch {
    let mut b = WriteBatch::default();
    let mut seq = 1;
    for step in 0..minutes * 3 {
        for gpu in ["b", "a"] {
            let mut r = b.row(table, from + step * 20_000_000_000);
            r.tag("gpu", gpu).field("util", FieldValue::F64(value));
            r.finish(seq).unwrap();
            seq += 1;
        }
    }
    b
}

async fn sql(db: &Arc<Db>, q: &str) -> Vec<arrow::array::RecordBatch> {
    let ctx = SessionContext::new();
    crate::table::register(db, &ctx).unwrap();
    ctx.sql(q).await.unwrap().collect().await.unwrap()
}

async fn count_and_sum(db: &Arc<Db>, table: &str) -> (i64, f64) {
    let b = sql(db, &format!("SELECT count(*), sum(util) FROM {table}")).await;
    (
        b[0].column(0).as_primitive::<Int64Type>().value(0),
        b[0].column(1).as_primitive::<Float64Type>().value(0),
    )
}

fn files(db: &Arc<Db>, table: &str) -> Vec<FileMeta> {
    db.files()
        .iter()
        .filter(|f| f.table == table)
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_closed_tier_becomes_one_file_of_its_partitions_row_groups() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(config(dir.path())).await.unwrap();
    db.write(gpu_rows("gpu", T0, 10, 1.0), WriteOptions::default())
        .await
        .unwrap();
    db.persist().await.unwrap();
    assert_eq!(files(&db, "gpu").len(), 10, "one file per minute");
    let before = count_and_sum(&db, "gpu").await;
    assert_eq!(before, (60, 60.0));

    let stats = db.compact_tiers().await.unwrap();
    assert_eq!((stats.tiers, stats.files_in), (1, 10));
    let f = files(&db, "gpu");
    assert_eq!(f.len(), 1);
    assert!(
        f[0].is_tier() && f[0].partition == T0 && f[0].span == 10 * MIN,
        "{f:?}"
    );
    assert_eq!(f[0].rows, 60);
    assert_eq!(count_and_sum(&db, "gpu").await, before);
    // The file holds its inputs' rows in `TIER_ROW_GROUPS` row groups of a few minutes each
    // (3, 3, 3 and 1 of the 10), in time order, each minute in (tags, time) order: GPU a's
    // rows first, by time.
    let bytes = db
        .store()
        .get(&object_store::path::Path::from(f[0].path.as_str()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
            .unwrap();
    assert_eq!(reader.metadata().num_row_groups(), TIER_ROW_GROUPS);
    let mut last_end = i64::MIN;
    for (g, minutes) in [3, 3, 3, 1].into_iter().enumerate() {
        let batches: Vec<_> =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
                .unwrap()
                .with_row_groups(vec![g])
                .build()
                .unwrap()
                .map(Result::unwrap)
                .collect();
        let all = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        let utf8 = |c: &str| {
            arrow::compute::cast(
                all.column_by_name(c).unwrap(),
                &arrow::datatypes::DataType::Utf8,
            )
            .unwrap()
        };
        let time = arrow::compute::cast(
            all.column_by_name("time").unwrap(),
            &arrow::datatypes::DataType::Int64,
        )
        .unwrap();
        let gpu = utf8("gpu");
        let keys: Vec<(String, i64)> = (0..all.num_rows())
            .map(|i| {
                (
                    gpu.as_string::<i32>().value(i).to_string(),
                    time.as_primitive::<Int64Type>().value(i),
                )
            })
            .collect();
        assert_eq!(keys.len(), minutes * 6, "row group {g}");
        for minute in keys.chunks(6) {
            let mut sorted = minute.to_vec();
            sorted.sort();
            assert_eq!(minute, sorted, "a minute of row group {g}");
            let first = minute.iter().map(|k| k.1).min().unwrap();
            assert!(
                first >= last_end,
                "row group {g}: a minute before the one ahead of it"
            );
            last_end = minute.iter().map(|k| k.1).max().unwrap();
        }
    }
    // A tier is merged once.
    assert_eq!(db.compact_tiers().await.unwrap().tiers, 0);
}

#[tokio::test]
async fn a_late_write_into_a_merged_tier_wins_and_is_not_counted_twice() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(config(dir.path())).await.unwrap();
    db.write(gpu_rows("gpu", T0, 10, 1.0), WriteOptions::default())
        .await
        .unwrap();
    db.persist().await.unwrap();
    db.compact_tiers().await.unwrap();
    // Minute 3 again with another value: an upsert of 6 rows already in the tier file.
    db.write(
        gpu_rows("gpu", T0 + 3 * MIN, 1, 5.0),
        WriteOptions::default(),
    )
    .await
    .unwrap();
    // Buffered, then persisted beside the tier file: the same answer both ways.
    for step in ["buffered", "persisted", "compacted"] {
        match step {
            "persisted" => {
                db.persist().await.unwrap();
            }
            "compacted" => {
                db.compact_with(2).await.unwrap();
                assert_eq!(db.compact_tiers().await.unwrap().tiers, 0);
            }
            _ => {}
        }
        assert_eq!(
            count_and_sum(&db, "gpu").await,
            (60, 54.0 + 6.0 * 5.0),
            "{step}"
        );
    }
    let f = files(&db, "gpu");
    assert_eq!(
        f.len(),
        2,
        "the late file stays beside the tier file: {f:?}"
    );
    assert_eq!(f.iter().filter(|f| f.is_tier()).count(), 1);
    // A query for one GPU and one minute reads the late value once.
    let b = sql(
        &db,
        &format!(
            "SELECT count(*), sum(util) FROM gpu WHERE gpu = 'a' AND time >= to_timestamp_nanos({}) AND time < to_timestamp_nanos({})",
            T0 + 3 * MIN,
            T0 + 4 * MIN
        ),
    )
    .await;
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 3);
    assert_eq!(b[0].column(1).as_primitive::<Float64Type>().value(0), 15.0);
}

#[tokio::test]
async fn append_only_rows_all_stay_and_an_open_tier_waits() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(config(dir.path())).await.unwrap();
    // The same key twice in an event table: two rows, before and after the merge.
    db.write(gpu_rows("event", T0, 5, 1.0), WriteOptions::default())
        .await
        .unwrap();
    db.write(gpu_rows("event", T0, 5, 1.0), WriteOptions::default())
        .await
        .unwrap();
    let now = now_ms() * 1_000_000;
    db.write(
        gpu_rows("gpu", now - now % MIN, 1, 1.0),
        WriteOptions::default(),
    )
    .await
    .unwrap();
    db.persist().await.unwrap();
    db.compact_with(2).await.unwrap();
    assert_eq!(count_and_sum(&db, "event").await, (60, 60.0));
    let stats = db.compact_tiers().await.unwrap();
    assert_eq!(stats.tiers, 1, "the closed tier of `event` only");
    assert_eq!(count_and_sum(&db, "event").await, (60, 60.0));
    assert!(files(&db, "gpu").iter().all(|f| !f.is_tier()));
}

/// A tier row group holds several partitions one after another: a range within one of them
/// reads that partition's pages (by the page index of `time`), not the whole row group.
#[tokio::test]
async fn a_short_range_reads_only_its_pages_of_a_tier_row_group() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(config(dir.path())).await.unwrap();
    // 400 GPUs, a row every 5 s: 4,800 rows a minute, a little over a page.
    let mut b = WriteBatch::default();
    for step in 0..120 {
        for g in 0..400 {
            let mut r = b.row("gpu", T0 + step * 5_000_000_000);
            r.tag("gpu", &format!("g{g:04}"))
                .field("util", FieldValue::F64(1.0));
            r.finish(0).unwrap();
        }
    }
    db.write(b, WriteOptions::default()).await.unwrap();
    db.persist().await.unwrap();
    assert_eq!(db.compact_tiers().await.unwrap().tiers, 1);
    // Minute 1: the middle of the first row group (minutes 0 to 2, 14,400 rows).
    let (lo, hi) = (T0 + MIN, T0 + 2 * MIN);
    let window = format!("time >= to_timestamp_nanos({lo}) AND time < to_timestamp_nanos({hi})");
    let b = sql(&db, &format!("SELECT count(*) FROM gpu WHERE {window}")).await;
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 4800);
    let plan = sql(
        &db,
        &format!("EXPLAIN SELECT gpu, util FROM gpu WHERE {window}"),
    )
    .await;
    let text = arrow::util::pretty::pretty_format_batches(&plan)
        .unwrap()
        .to_string();
    let rows: u64 = text
        .split("SeriesScanExec: ")
        .nth(1)
        .and_then(|t| t.split("rows=").nth(1))
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no SeriesScanExec in {text}"));
    // The minute's rows and the pages it shares with its neighbours: at most three pages.
    assert!(
        (4800..=3 * 4096).contains(&rows),
        "read {rows} rows of the row group's 14,400 for one minute: {text}"
    );
}
