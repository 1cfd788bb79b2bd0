//! Differential test: the same random workload queried while it sits in the buffer, in a mix
//! of Parquet files and buffer, after compaction and after a restart (WAL replay plus catalog
//! reload) must give identical answers, and those answers must equal a naive model.
//!
//! A failing case prints its seed; rerun just that case with
//! `RIGWATCH_DIFF_SEED=<seed> cargo test -p rigwatch-storage --test storage differential`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rigwatch_storage::Db;
use rigwatch_storage::schema::ColumnKind;

use super::model::{GenRow, Kind, Model, ModelRow, SEC, SPECS, TIME_RANGE, generate, to_batch};
use super::util::{Cell, Rows, open, pushed_time_bounds, query_rows, reopen, sorted};

/// A row filter, as SQL and as a predicate on model rows.
#[derive(Debug, Clone)]
enum Pred {
    /// `time` within `[lo, hi]` (inclusive), whatever the SQL spelling.
    Time(i64, i64),
    TagEq(&'static str, String),
    TagNull(&'static str),
    And(Box<Pred>, Box<Pred>),
}

impl Pred {
    fn keep(&self, table: usize, row: &ModelRow<'_>) -> bool {
        match self {
            Pred::Time(lo, hi) => (*lo..=*hi).contains(&row.1),
            Pred::TagEq(tag, v) => Model::cell(table, row, tag) == Cell::Str(v.clone()),
            Pred::TagNull(tag) => Model::cell(table, row, tag) == Cell::Null,
            Pred::And(a, b) => a.keep(table, row) && b.keep(table, row),
        }
    }

    fn time_bounds(&self) -> Option<(i64, i64)> {
        match self {
            Pred::Time(lo, hi) => Some((*lo, *hi)),
            Pred::And(a, b) => a.time_bounds().or_else(|| b.time_bounds()),
            _ => None,
        }
    }
}

/// A query with its expected rows.
#[derive(Debug)]
struct Query {
    sql: String,
    expected: Rows,
    /// The `[lo, hi]` the scan must prune to.
    bounds: Option<(i64, i64)>,
}

fn ts(ns: i64) -> String {
    format!("to_timestamp_nanos({ns})")
}

/// Time filters in every spelling `time_bounds` understands, over aligned and unaligned
/// ranges (partitions are 10 s wide).
fn time_filters(rng: &mut StdRng, model: &Model) -> Vec<(String, Pred)> {
    let aligned_lo = rng.random_range(-2..5) * 10 * SEC;
    let aligned_hi = aligned_lo + rng.random_range(1..3) * 10 * SEC;
    let lo = rng.random_range(TIME_RANGE);
    let hi = rng.random_range(lo..TIME_RANGE.end + SEC);
    let some_time = model
        .tables
        .iter()
        .flat_map(|t| t.rows().into_iter().map(|r| r.1))
        .collect::<Vec<_>>()
        .choose(rng)
        .copied()
        .unwrap_or(0);
    vec![
        (
            format!("time >= {} AND time < {}", ts(aligned_lo), ts(aligned_hi)),
            Pred::Time(aligned_lo, aligned_hi - 1),
        ),
        (
            format!("time > {} AND time <= {}", ts(lo), ts(hi)),
            Pred::Time(lo + 1, hi),
        ),
        (
            format!("time > {} AND time <= {}", ts(aligned_lo), ts(aligned_hi)),
            Pred::Time(aligned_lo + 1, aligned_hi),
        ),
        (
            format!("time BETWEEN {} AND {}", ts(lo), ts(hi)),
            Pred::Time(lo, hi),
        ),
        (
            format!("{} <= time", ts(aligned_lo)),
            Pred::Time(aligned_lo, i64::MAX),
        ),
        (format!("time < {}", ts(0)), Pred::Time(i64::MIN, -1)),
        (
            format!("time = {}", ts(some_time)),
            Pred::Time(some_time, some_time),
        ),
    ]
}

fn field_kind(table: usize, name: &str) -> Option<Kind> {
    SPECS[table]
        .fields
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, k, _)| *k)
}

/// `host, count(*), count/min/max(f) and sum(f) of numeric f ... GROUP BY host`.
fn aggregate(model: &Model, table: usize, pred: Option<(String, Pred)>) -> Query {
    let spec = &SPECS[table];
    let t = &model.tables[table];
    let fields: Vec<(&str, Kind)> = spec
        .fields
        .iter()
        .filter(|(n, _, _)| t.has(n))
        .map(|(n, k, _)| (*n, *k))
        .collect();
    let mut select = vec!["host".to_string(), "count(*)".to_string()];
    for (f, k) in &fields {
        select.extend([
            format!("count({f})"),
            format!("min({f})"),
            format!("max({f})"),
        ]);
        if matches!(k, Kind::F64 | Kind::I64) {
            select.push(format!("sum({f})"));
        }
    }
    let (where_sql, pred) = match pred {
        Some((sql, p)) => (format!(" WHERE {sql}"), Some(p)),
        None => (String::new(), None),
    };
    let sql = format!(
        "SELECT {} FROM {}{where_sql} GROUP BY host ORDER BY host",
        select.join(", "),
        spec.name
    );
    let mut groups: BTreeMap<Cell, Vec<ModelRow<'_>>> = BTreeMap::new();
    for r in t.rows() {
        if pred.as_ref().is_none_or(|p| p.keep(table, &r)) {
            groups
                .entry(Model::cell(table, &r, "host"))
                .or_default()
                .push(r);
        }
    }
    let expected = groups
        .into_iter()
        .map(|(host, rows)| {
            let mut out = vec![host, Cell::I64(rows.len() as i64)];
            for (f, k) in &fields {
                let vals: Vec<Cell> = rows
                    .iter()
                    .map(|r| Model::cell(table, r, f))
                    .filter(|c| *c != Cell::Null)
                    .collect();
                out.push(Cell::I64(vals.len() as i64));
                out.push(vals.iter().min().cloned().unwrap_or(Cell::Null));
                out.push(vals.iter().max().cloned().unwrap_or(Cell::Null));
                let sum = match k {
                    Kind::F64 => Some(Cell::F64(
                        vals.iter()
                            .map(|c| match c {
                                Cell::F64(x) => *x,
                                _ => unreachable!(),
                            })
                            .sum(),
                    )),
                    Kind::I64 => Some(Cell::I64(
                        vals.iter()
                            .map(|c| match c {
                                Cell::I64(x) => *x,
                                _ => unreachable!(),
                            })
                            .sum(),
                    )),
                    _ => None,
                };
                if let Some(sum) = sum {
                    out.push(if vals.is_empty() { Cell::Null } else { sum });
                }
            }
            out
        })
        .collect();
    Query {
        sql,
        expected,
        bounds: pred.as_ref().and_then(Pred::time_bounds),
    }
}

/// Every query of the test for the current model; `db` gives the column order of `SELECT *`.
fn queries(model: &Model, db: &Arc<Db>, seed: u64) -> Vec<Query> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_0ff1_1e75);
    let filters = time_filters(&mut rng, model);
    let mut out = Vec::new();
    for (table, spec) in SPECS.iter().enumerate() {
        let def = db.table(spec.name).expect("every table is written");
        let columns: Vec<String> = def
            .arrow_schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let tags: Vec<&str> = def
            .columns
            .iter()
            .filter(|c| c.kind == ColumnKind::Tag)
            .map(|c| c.name.as_str())
            .collect();
        let order = if spec.append_only {
            // Events may repeat (series, time): order by every column.
            columns.join(", ")
        } else {
            tags.iter()
                .copied()
                .chain(["time"])
                .collect::<Vec<_>>()
                .join(", ")
        };
        let select = |where_sql: &str, pred: Option<Pred>| Query {
            sql: format!("SELECT * FROM {}{where_sql} ORDER BY {order}", spec.name),
            expected: model.select(table, &columns, |r| {
                pred.as_ref().is_none_or(|p| p.keep(table, r))
            }),
            bounds: pred.as_ref().and_then(Pred::time_bounds),
        };

        out.push(select("", None));
        out.push(Query {
            sql: format!("SELECT count(*) FROM {}", spec.name),
            expected: vec![vec![Cell::I64(model.tables[table].rows().len() as i64)]],
            bounds: None,
        });
        out.push(aggregate(model, table, None));
        out.push(aggregate(model, table, Some(filters[0].clone())));
        for (sql, pred) in &filters {
            out.push(select(&format!(" WHERE {sql}"), Some(pred.clone())));
        }
        let host = format!("h{}", rng.random_range(0..3));
        out.push(select(
            &format!(" WHERE host = '{host}'"),
            Some(Pred::TagEq("host", host.clone())),
        ));
        let (range_sql, range) = filters[1].clone();
        out.push(select(
            &format!(" WHERE host = '{host}' AND {range_sql}"),
            Some(Pred::And(
                Box::new(Pred::TagEq("host", host.clone())),
                Box::new(range),
            )),
        ));
        for (tag, _) in spec.tags.iter().skip(1) {
            if !model.tables[table].has(tag) {
                continue;
            }
            let value = match *tag {
                "gpu" => "2",
                "rack" => "r1",
                _ => "xid",
            };
            out.push(select(
                &format!(" WHERE {tag} = '{value}'"),
                Some(Pred::TagEq(tag, value.to_string())),
            ));
            out.push(select(
                &format!(" WHERE {tag} IS NULL"),
                Some(Pred::TagNull(tag)),
            ));
        }
    }
    out
}

/// The table definitions agree with the model: the columns written, with their kinds.
fn check_schemas(db: &Arc<Db>, model: &Model, label: &str) {
    for (table, spec) in SPECS.iter().enumerate() {
        let def = db.table(spec.name).expect("table exists");
        assert_eq!(def.append_only, spec.append_only, "{label}: {}", spec.name);
        let got: BTreeSet<&str> = def.columns.iter().map(|c| c.name.as_str()).collect();
        let want: BTreeSet<&str> = model.tables[table].columns.iter().copied().collect();
        assert_eq!(got, want, "{label}: columns of {}", spec.name);
        for c in &def.columns {
            let expected = match field_kind(table, &c.name) {
                None => ColumnKind::Tag,
                Some(Kind::F64) => ColumnKind::Field(rigwatch_storage::FieldType::F64),
                Some(Kind::I64) => ColumnKind::Field(rigwatch_storage::FieldType::I64),
                Some(Kind::U64) => ColumnKind::Field(rigwatch_storage::FieldType::U64),
                Some(Kind::Bool) => ColumnKind::Field(rigwatch_storage::FieldType::Bool),
                Some(Kind::Str) => ColumnKind::Field(rigwatch_storage::FieldType::Str),
            };
            assert_eq!(c.kind, expected, "{label}: {}.{}", spec.name, c.name);
        }
    }
}

fn first_difference(got: &Rows, want: &Rows) -> String {
    let i = got
        .iter()
        .zip(want)
        .position(|(g, w)| g != w)
        .unwrap_or(got.len().min(want.len()));
    format!(
        "{} rows vs {} expected; first difference at row {i}:\n  got:  {:?}\n  want: {:?}",
        got.len(),
        want.len(),
        got.get(i),
        want.get(i)
    )
}

/// Runs every query, checks it against the model (as sorted row sets) and, when `bounds` is
/// set, that the scan prunes by time; returns the raw results for cross-stage comparison.
async fn run(db: &Arc<Db>, model: &Model, qs: &[Query], label: &str, bounds: bool) -> Vec<Rows> {
    check_schemas(db, model, label);
    let mut out = Vec::with_capacity(qs.len());
    for q in qs {
        if bounds && let Some(want) = q.bounds {
            let got = pushed_time_bounds(db, &q.sql).await;
            assert_eq!(got, want, "{label}: pruning bounds of `{}`", q.sql);
        }
        let got = query_rows(db, &q.sql).await;
        let (g, w) = (sorted(got.clone()), sorted(q.expected.clone()));
        assert!(
            g == w,
            "{label}: `{}` disagrees with the model: {}",
            q.sql,
            first_difference(&g, &w)
        );
        out.push(got);
    }
    out
}

/// The same queries give the same rows in the same order as at the baseline stage.
fn assert_same(base: &[Rows], got: &[Rows], qs: &[Query], label: &str) {
    for ((b, g), q) in base.iter().zip(got).zip(qs) {
        assert!(
            b == g,
            "{label}: `{}` differs from the baseline: {}",
            q.sql,
            first_difference(g, b)
        );
    }
}

async fn write(db: &Arc<Db>, rows: &[GenRow]) {
    let outcome = db
        .write(to_batch(rows), Default::default())
        .await
        .expect("write");
    assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
    assert_eq!(outcome.rows, rows.len());
}

/// One partition, one file: what compaction with a threshold of 2 leaves behind (a tier
/// file, which holds several partitions, beside them).
fn assert_compacted(db: &Db, label: &str) {
    let mut seen = BTreeSet::new();
    for f in db.files().iter() {
        assert!(
            seen.insert((f.table.clone(), f.partition, f.is_tier())),
            "{label}: partition {} of {} still has several files",
            f.partition,
            f.table
        );
    }
}

async fn case(seed: u64) {
    const BATCHES: usize = 8;
    let batches = generate(seed, BATCHES);
    let (head, last) = batches.split_at(BATCHES - 1);
    let mut prefix = Model::default();
    head.iter().for_each(|b| prefix.apply(b));
    let mut full = prefix.clone();
    full.apply(&last[0]);
    let mut rng = StdRng::seed_from_u64(seed);
    let l = |stage: &str| format!("seed {seed}, {stage}");

    // Path A: everything in the buffer, then everything in files, then a reload.
    let dir_a = tempfile::tempdir().expect("tempdir");
    let db = open(dir_a.path()).await;
    for b in &batches {
        write(&db, b).await;
    }
    assert!(db.files().is_empty());
    let qs = queries(&full, &db, seed);
    let base = run(&db, &full, &qs, &l("A: buffer only"), true).await;
    let stats = db.persist().await.expect("persist");
    assert!(stats.files > 0);
    assert_eq!(db.buffered_rows(), 0);
    let got = run(&db, &full, &qs, &l("A: files only"), false).await;
    assert_same(&base, &got, &qs, &l("A: files only"));
    let db = reopen(db, dir_a.path()).await;
    let got = run(&db, &full, &qs, &l("A: reopened (catalog only)"), false).await;
    assert_same(&base, &got, &qs, &l("A: reopened (catalog only)"));
    db.shutdown().await.expect("shutdown");
    drop(db);

    // Path B: persists at random points (always once before the late columns appear, never
    // after the last batch), so partitions have several files plus buffered rows that
    // rewrite persisted keys.
    let dir_b = tempfile::tempdir().expect("tempdir");
    let db = open(dir_b.path()).await;
    let mut mid = Model::default();
    for (i, b) in head.iter().enumerate() {
        write(&db, b).await;
        mid.apply(b);
        let last_of_head = i + 1 == head.len();
        if !last_of_head && (i + 1 == BATCHES / 2 || rng.random_bool(0.5)) {
            db.persist().await.expect("persist");
        }
        if i == BATCHES / 2 {
            let qs = queries(&mid, &db, seed);
            run(&db, &mid, &qs, &l("B: mid-stream"), true).await;
        }
    }
    assert!(!db.files().is_empty() && db.buffered_rows() > 0);
    let qs_prefix = queries(&prefix, &db, seed);
    let base_prefix = run(&db, &prefix, &qs_prefix, &l("B: files + buffer"), true).await;
    db.compact_with(2).await.expect("compact");
    assert_compacted(&db, &l("B: compacted"));
    let got = run(&db, &prefix, &qs_prefix, &l("B: compacted + buffer"), false).await;
    assert_same(&base_prefix, &got, &qs_prefix, &l("B: compacted + buffer"));
    // Closed tiers (every one: the rows are from 1970) become one file each, and the
    // buffered rows that rewrite their keys still win.
    let tiers = db.compact_tiers().await.expect("tiers");
    assert!(tiers.tiers > 0, "{}: no tier merged", l("B: tiered"));
    let got = run(&db, &prefix, &qs_prefix, &l("B: tiered + buffer"), false).await;
    assert_same(&base_prefix, &got, &qs_prefix, &l("B: tiered + buffer"));
    let db = reopen(db, dir_b.path()).await;
    assert!(
        db.buffered_rows() > 0,
        "the unpersisted batch comes back from the WAL"
    );
    let got = run(
        &db,
        &prefix,
        &qs_prefix,
        &l("B: reopened (WAL replay)"),
        false,
    )
    .await;
    assert_same(
        &base_prefix,
        &got,
        &qs_prefix,
        &l("B: reopened (WAL replay)"),
    );

    // The last batch lands after the restart; from here on B must match A exactly.
    write(&db, &last[0]).await;
    let got = run(&db, &full, &qs, &l("B: all written"), true).await;
    assert_same(&base, &got, &qs, &l("B: all written"));
    db.persist().await.expect("persist");
    let got = run(&db, &full, &qs, &l("B: all persisted"), false).await;
    assert_same(&base, &got, &qs, &l("B: all persisted"));
    db.compact_with(2).await.expect("compact");
    assert_compacted(&db, &l("B: all compacted"));
    let got = run(&db, &full, &qs, &l("B: all compacted"), false).await;
    assert_same(&base, &got, &qs, &l("B: all compacted"));
    // Late files beside tier files, and tiers merged only now.
    db.compact_tiers().await.expect("tiers");
    let got = run(&db, &full, &qs, &l("B: all tiered"), false).await;
    assert_same(&base, &got, &qs, &l("B: all tiered"));
    let db = reopen(db, dir_b.path()).await;
    let got = run(&db, &full, &qs, &l("B: reopened again"), false).await;
    assert_same(&base, &got, &qs, &l("B: reopened again"));
    db.shutdown().await.expect("shutdown");
}

fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("RIGWATCH_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![seed];
    }
    let cases = std::env::var("RIGWATCH_DIFF_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6u64);
    (0..cases).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_files_compaction_and_restart_agree_with_model() {
    for seed in seeds() {
        case(seed).await;
    }
}
