//! Rollups: every bucket's aggregates equal those computed straight from the raw rows (bucket
//! edges, staleness markers, NaN, counter resets, missing fields, integer fields included); a
//! late write takes its stretch's rollup out of use at once and out of the catalog at its
//! persist, and the next pass rebuilds it with the new row; open stretches, append-only and
//! record tables get none; a rollup table cannot be written.

use std::collections::BTreeMap;
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::{Float64Type, Int64Type, TimestampNanosecondType};
use datafusion::prelude::SessionContext;

use super::*;
use crate::batch::{FieldValue, WriteBatch};
use crate::db::now_ms;
use crate::{DbConfig, WriteOptions};

const SEC: i64 = 1_000_000_000;
const MIN: i64 = 60 * SEC;
const PART: i64 = 10 * MIN;
/// Long closed, and a multiple of the partition (2020-09-13T12:20Z).
const T0: i64 = 1_600_000_000 * SEC / PART * PART;

fn config(dir: &std::path::Path) -> DbConfig {
    let mut c = DbConfig::new(dir);
    c.background = false;
    c.partition = Duration::from_secs(600);
    c.rollups = vec![Duration::from_secs(60), Duration::from_secs(600)];
    c.append_only_tables = vec!["event".into()];
    c.rollup_skip = vec!["ledger".into()];
    c
}

/// A sample's value: regular values, a NaN, a staleness marker, a counter reset.
fn value(step: i64, gpu: i64) -> f64 {
    match (step + gpu) % 23 {
        5 => f64::NAN,
        11 => f64::from_bits(STALE_NAN_BITS),
        _ => ((step * 7 + gpu * 3) % 50) as f64 - (step % 17) as f64 * 0.25,
    }
}

/// Three GPUs over 30 minutes: `util` every 10 s (on every minute edge), `mem` (an integer)
/// every 15 s and missing every fifth time, a counter `energy` that resets.
fn rows(table: &str) -> WriteBatch {
    let mut b = WriteBatch::default();
    let mut line = 1;
    for gpu in 0..3i64 {
        for step in 0..180i64 {
            let t = T0 + step * 10 * SEC + gpu * 400_000;
            let mut r = b.row(table, t);
            r.tag("gpu", &format!("g{gpu}"));
            r.field("util", FieldValue::F64(value(step, gpu)));
            r.field(
                "energy",
                FieldValue::F64((((step / 3) % 40) * 1000 + gpu) as f64),
            );
            r.finish(line).unwrap();
            line += 1;
        }
        for step in 0..120i64 {
            if step % 5 == 4 {
                continue;
            }
            let mut r = b.row(table, T0 + step * 15 * SEC);
            r.tag("gpu", &format!("g{gpu}"))
                .field("mem", FieldValue::I64(step * 100 - gpu * 7));
            r.finish(line).unwrap();
            line += 1;
        }
    }
    b
}

async fn sql(db: &Arc<Db>, q: &str) -> Vec<RecordBatch> {
    let ctx = SessionContext::new();
    crate::table::register(db, &ctx).unwrap();
    ctx.sql(q).await.unwrap().collect().await.unwrap()
}

/// Column `c` of `b` as plain strings.
fn strings(b: &RecordBatch, c: usize) -> arrow::array::StringArray {
    arrow::compute::cast(b.column(c), &arrow::datatypes::DataType::Utf8)
        .unwrap()
        .as_string::<i32>()
        .clone()
}

type Key = (String, String, i64);

/// (field, gpu, bucket end) -> samples in time order, straight from the raw table.
async fn raw_buckets(db: &Arc<Db>, table: &str, res: i64) -> BTreeMap<Key, Vec<(i64, f64)>> {
    let mut out: BTreeMap<Key, Vec<(i64, f64)>> = BTreeMap::new();
    for field in ["util", "energy", "mem"] {
        let q = format!(
            "SELECT CAST(gpu AS VARCHAR), CAST(time AS BIGINT), CAST({field} AS DOUBLE) FROM {table} \
             WHERE {field} IS NOT NULL ORDER BY 1, 2"
        );
        for b in sql(db, &q).await {
            let (g, t, v) = (
                strings(&b, 0),
                b.column(1).as_primitive::<Int64Type>(),
                b.column(2).as_primitive::<Float64Type>(),
            );
            for i in 0..b.num_rows() {
                let t = t.value(i);
                // Bucketed by the sample's millisecond, as PromQL sees it.
                let (t_ms, res_ms) = (t.div_euclid(1_000_000), res / 1_000_000);
                let end = (t_ms + res_ms - 1).div_euclid(res_ms) * res_ms * 1_000_000;
                out.entry((field.to_string(), g.value(i).to_string(), end))
                    .or_default()
                    .push((t, v.value(i)));
            }
        }
    }
    out
}

/// The rollup rows of `table` as (key) -> (count, sum, min, max, first, last, first_ns,
/// last_ns, increase), floats by their bits so NaN compares.
async fn rollup_rows(db: &Arc<Db>, table: &str) -> BTreeMap<Key, [Option<u64>; 9]> {
    let q = format!(
        "SELECT CAST(field AS VARCHAR), CAST(gpu AS VARCHAR), CAST(time AS BIGINT), count, sum, min, max, first, last, first_ns, last_ns, increase FROM \"{table}\""
    );
    let mut out = BTreeMap::new();
    for b in sql(db, &q).await {
        let (fields, gpus) = (strings(&b, 0), strings(&b, 1));
        for i in 0..b.num_rows() {
            let s = |c: usize| [&fields, &gpus][c].value(i).to_string();
            let int = |c: usize| {
                let a = b.column(c).as_primitive::<Int64Type>();
                a.is_valid(i).then(|| a.value(i) as u64)
            };
            let float = |c: usize| {
                let a = b.column(c).as_primitive::<Float64Type>();
                a.is_valid(i).then(|| a.value(i).to_bits())
            };
            let t = b.column(2).as_primitive::<Int64Type>().value(i);
            out.insert(
                (s(0), s(1), t),
                [
                    int(3),
                    float(4),
                    float(5),
                    float(6),
                    float(7),
                    float(8),
                    int(9),
                    int(10),
                    float(11),
                ],
            );
        }
    }
    out
}

/// What a bucket's row must hold, computed plainly from its samples.
fn expected(samples: &[(i64, f64)]) -> [Option<u64>; 9] {
    let stale = |v: f64| v.to_bits() == STALE_NAN_BITS;
    let live: Vec<(i64, f64)> = samples.iter().copied().filter(|s| !stale(s.1)).collect();
    let (last_t, last) = *samples.last().unwrap();
    if live.is_empty() {
        return [
            Some(0),
            None,
            None,
            None,
            None,
            Some(last.to_bits()),
            None,
            Some(last_t as u64),
            None,
        ];
    }
    let mut max = live[0].1;
    let mut min = live[0].1;
    for &(_, v) in &live[1..] {
        if max < v || max.is_nan() {
            max = v;
        }
        if min > v || min.is_nan() {
            min = v;
        }
    }
    let sum = live.iter().skip(1).fold(live[0].1, |a, s| a + s.1);
    let increase = live.windows(2).fold(0.0, |a, w| {
        a + if w[1].1 >= w[0].1 {
            w[1].1 - w[0].1
        } else {
            w[1].1
        }
    });
    [
        Some(live.len() as u64),
        Some(sum.to_bits()),
        Some(min.to_bits()),
        Some(max.to_bits()),
        Some(live[0].1.to_bits()),
        Some(last.to_bits()),
        Some(live[0].0 as u64),
        Some(last_t as u64),
        Some(increase.to_bits()),
    ]
}

async fn check_against_raw(db: &Arc<Db>, table: &str) {
    for res in [MIN, PART] {
        let want = raw_buckets(db, table, res).await;
        let name = Db::rollup_table_name(table, res);
        let got = rollup_rows(db, &name).await;
        assert_eq!(
            got.len(),
            want.len(),
            "{name}: one row per field, series and bucket"
        );
        for (key, samples) in &want {
            assert_eq!(got.get(key), Some(&expected(samples)), "{name} {key:?}");
        }
    }
}

#[tokio::test]
async fn every_bucket_equals_its_raw_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(config(dir.path())).await.unwrap();
    db.write(rows("t"), WriteOptions::default()).await.unwrap();
    db.persist().await.unwrap();
    let stats = db.build_rollups().await.unwrap();
    // The samples span (T0, T0 + 30 min]: stretches T0 - 10 min (the instant T0 itself),
    // T0, T0 + 10 min and T0 + 20 min, all in one closed day, so each resolution's four files
    // are then merged into one file for the day.
    assert_eq!(stats.stretches, 4, "{stats:?}");
    assert_eq!(stats.files, 8);
    assert_eq!(stats.days, 2);
    check_against_raw(&db, "t").await;
    // Everything built: a second pass has nothing to do.
    let again = db.build_rollups().await.unwrap();
    assert_eq!((again.stretches, again.days), (0, 0));
    let cover = db.rollup_cover("t", MIN, T0, T0 + 30 * MIN);
    assert_eq!(
        cover.iter().map(|c| (c.from, c.to)).collect::<Vec<_>>(),
        vec![(T0 - PART, T0 + 3 * PART)]
    );
    let name = Db::rollup_table_name("t", MIN);
    let day_files: Vec<_> = db
        .files()
        .iter()
        .filter(|f| f.table == name)
        .cloned()
        .collect();
    assert_eq!(day_files.len(), 1);
    assert!(day_files[0].is_tier());
    assert_eq!(day_files[0].partition, T0 / (86_400 * SEC) * (86_400 * SEC));
    // Reopened, the rollup tables and their files are still there.
    db.shutdown().await.unwrap();
    drop(db);
    let db = Db::open(config(dir.path())).await.unwrap();
    assert_eq!(db.rollup_cover("t", PART, T0, T0 + 30 * MIN).len(), 1);
    check_against_raw(&db, "t").await;
}

/// Two passes at once (the background one and one asked for) build each stretch once: the
/// second waits for the first, then finds nothing left to build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_passes_build_each_stretch_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(config(dir.path())).await.unwrap();
    db.write(rows("t"), WriteOptions::default()).await.unwrap();
    db.persist().await.unwrap();
    let (a, b) = tokio::join!(db.build_rollups(), db.build_rollups());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.files + b.files, 8, "{a:?} {b:?}");
    assert_eq!(a.stretches + b.stretches, 4, "{a:?} {b:?}");
    check_against_raw(&db, "t").await;
}

#[tokio::test]
async fn a_late_write_takes_its_stretch_out_of_use_until_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(config(dir.path())).await.unwrap();
    db.write(rows("t"), WriteOptions::default()).await.unwrap();
    db.persist().await.unwrap();
    db.build_rollups().await.unwrap();
    // Whatever covers the late sample's time.
    let late = T0 + 5 * MIN + 5 * SEC;
    let stretch = |c: &Cover| c.from < late && late <= c.to;
    let covered = |db: &Arc<Db>| {
        db.rollup_cover("t", MIN, T0, T0 + 30 * MIN)
            .iter()
            .any(stretch)
    };
    assert!(covered(&db));

    // A late sample for g0, larger than any before.
    let mut b = WriteBatch::default();
    let mut r = b.row("t", late);
    r.tag("gpu", "g0").field("util", FieldValue::F64(1e6));
    r.finish(1).unwrap();
    db.write(b, WriteOptions::default()).await.unwrap();
    // Buffered: the day's merged rollup is out of use.
    assert!(!covered(&db));

    // Persisted: the day's rollup file leaves the catalog in the same commit.
    db.persist().await.unwrap();
    let name = Db::rollup_table_name("t", MIN);
    assert!(
        !db.files().iter().any(|f| f.table == name),
        "the stale rollup file is out of the catalog"
    );
    assert!(!covered(&db));

    // The next pass rolls the day's four stretches up again, with the late sample, and
    // merges them.
    let stats = db.build_rollups().await.unwrap();
    assert_eq!((stats.stretches, stats.days), (4, 2));
    assert!(covered(&db));
    check_against_raw(&db, "t").await;
    let max = sql(
        &db,
        &format!("SELECT max(max) FROM \"{name}\" WHERE field = 'util' AND gpu = 'g0'"),
    )
    .await;
    assert_eq!(max[0].column(0).as_primitive::<Float64Type>().value(0), 1e6);
}

#[tokio::test]
async fn open_stretches_events_and_records_get_no_rollups_and_rollup_tables_refuse_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(config(dir.path())).await.unwrap();
    let now = now_ms() * 1_000_000;
    let mut b = WriteBatch::default();
    for (line, (table, t)) in (1..).zip([("recent", now - MIN), ("event", T0), ("ledger", T0)]) {
        let mut r = b.row(table, t);
        r.tag("gpu", "g0").field("v", FieldValue::F64(1.0));
        r.finish(line).unwrap();
    }
    db.write(b, WriteOptions::default()).await.unwrap();
    db.persist().await.unwrap();
    assert_eq!(db.build_rollups().await.unwrap().stretches, 0);
    assert!(!db.files().iter().any(|f| f.table.contains('@')));

    let mut b = WriteBatch::default();
    let mut r = b.row("t@1m", T0);
    r.tag("gpu", "g0").field("v", FieldValue::F64(1.0));
    r.finish(7).unwrap();
    let out = db.write(b, WriteOptions::default()).await.unwrap();
    assert_eq!(out.rows, 0);
    assert_eq!(out.rejected.len(), 1);
    assert_eq!(out.rejected[0].line, 7);
    assert!(
        matches!(&out.rejected[0].error, Error::ReservedTable { table } if table == "t@1m"),
        "{:?}",
        out.rejected[0].error
    );
    assert!(db.table("t@1m").is_none());
}

#[tokio::test]
async fn a_rollup_row_time_is_its_bucket_end() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(config(dir.path())).await.unwrap();
    db.write(rows("t"), WriteOptions::default()).await.unwrap();
    db.persist().await.unwrap();
    db.build_rollups().await.unwrap();
    let name = Db::rollup_table_name("t", MIN);
    let b = sql(&db, &format!("SELECT time, last_ns FROM \"{name}\"")).await;
    let mut rows = 0;
    for b in b {
        let t = b.column(0).as_primitive::<TimestampNanosecondType>();
        let last = b.column(1).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            assert_eq!(t.value(i) % MIN, 0);
            let last_ms = last.value(i).div_euclid(1_000_000) * 1_000_000;
            assert!(last_ms <= t.value(i) && last_ms > t.value(i) - MIN);
            rows += 1;
        }
    }
    assert!(rows > 0);
}

#[tokio::test]
async fn hourly_partitions_merge_a_closed_day() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.partition = Duration::from_secs(3600);
    c.rollups = vec![Duration::from_secs(3600)];
    let db = Db::open(c).await.unwrap();
    let day0 = T0 / (86_400 * SEC) * (86_400 * SEC);
    let mut b = WriteBatch::default();
    let mut line = 1;
    for step in 0..48 * 60i64 {
        for g in ["a", "b"] {
            let mut r = b.row("t", day0 + 30 * SEC + step * MIN);
            r.tag("gpu", g).field("util", FieldValue::F64(step as f64));
            r.finish(line).unwrap();
            line += 1;
        }
    }
    db.write(b, WriteOptions::default()).await.unwrap();
    db.persist().await.unwrap();
    let stats = db.build_rollups().await.unwrap();
    assert_eq!(stats.stretches, 48, "{stats:?}");
    assert_eq!(stats.days, 2, "{stats:?}");
}

/// Rollup files carry a series index however short their runs (one row per series here, where
/// a raw file needs 4) and LZ4-compressed fields; raw data files keep zstd.
#[tokio::test]
async fn rollup_files_have_an_index_and_lz4_fields() {
    use parquet::basic::Compression;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(config(dir.path())).await.unwrap();
    let mut b = WriteBatch::default();
    for (line, gpu) in ["a", "b", "c"].into_iter().enumerate() {
        let mut r = b.row("t", T0 + 5 * MIN);
        r.tag("gpu", gpu).field("util", FieldValue::F64(1.0));
        r.finish(line as u32 + 1).unwrap();
    }
    db.write(b, WriteOptions::default()).await.unwrap();
    db.persist().await.unwrap();
    assert!(db.build_rollups().await.unwrap().stretches > 0);
    let (mut rollups, mut raw) = (0, 0);
    for f in db.files().iter() {
        let rollup = f.table.contains(rigwatch_common::rollup::MARK);
        let footer = db.footer(f).await.unwrap();
        for rg in footer.row_groups() {
            for c in rg.columns() {
                let name = c.column_path().string();
                if ["time", "gpu", "field"].contains(&name.as_str()) {
                    continue;
                }
                let ok = match c.compression() {
                    Compression::LZ4_RAW => rollup,
                    Compression::ZSTD(_) => !rollup,
                    _ => false,
                };
                assert!(ok, "{}: {name} is {:?}", f.path, c.compression());
            }
        }
        assert_eq!(footer.file_metadata().num_rows(), 3, "{}", f.path);
        let index = db.series_index(f).await.unwrap();
        assert_eq!(index.is_some(), rollup, "{}", f.path);
        if rollup {
            rollups += 1;
        } else {
            raw += 1;
        }
    }
    assert_eq!((rollups, raw), (2, 1));
}
