//! The analyst questions of the pipe DSL, as golden files: each `tests/dsl-golden/*.dsl`
//! holds a question (`#` lines) and its query; the `.csv` beside it is the answer on the
//! fixed dataset of [`fixture`], exactly as `POST /api/v1/dsl?format=csv` sends it.
//!
//! The expected answers were worked out by hand from the dataset (the arithmetic is in
//! each file's comments), not copied from a run. `RIGWATCH_BLESS=1` rewrites the `.csv`
//! files from the current output, for a change whose new answers have been checked.

#[path = "dsl-golden/fixture.rs"]
mod fixture;

use rigwatch_common::http_error::HttpError;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rigwatch_query::QueryService;
use rigwatch_query::format::{Format, encode};
use rigwatch_query::prometheus::PromOptions;
use rigwatch_storage::{Db, DbConfig};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dsl-golden")
}

/// The query of a golden file: every line that is not a `#` comment.
fn query_of(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string()
}

async fn answer(service: &QueryService, text: &str, scope: Option<&str>) -> String {
    let (schema, batches) = rigwatch_query::dsl::run(service, &PromOptions::default(), text, scope)
        .await
        .unwrap_or_else(|e| panic!("{text}\n{e}"));
    let bytes = encode(Format::Csv, &schema, &batches).expect("CSV");
    String::from_utf8(bytes).expect("UTF-8")
}

async fn open_fixture(dir: &Path, persist_half: bool) -> Arc<Db> {
    let mut c = DbConfig::new(dir);
    c.background = false;
    let db = Db::open(c).await.expect("open db");
    fixture::write(&db, persist_half).await;
    db
}

#[tokio::test]
async fn the_analyst_questions_answer_as_their_golden_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_fixture(dir.path(), true).await;
    let service = QueryService::new(db);
    let bless = std::env::var_os("RIGWATCH_BLESS").is_some();
    let mut files: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .expect("tests/dsl-golden")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "dsl"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "ten analyst questions, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for path in &files {
        let text = query_of(&std::fs::read_to_string(path).unwrap());
        let got = answer(&service, &text, None).await;
        let expected_path = path.with_extension("csv");
        if bless {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
        assert!(
            got.lines().count() > 1,
            "{}: no rows\n{got}",
            path.display()
        );
        if got != expected {
            failures.push(format!(
                "== {}\n{text}\n-- expected\n{expected}-- got\n{got}",
                path.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A supplier asking the same questions gets its own part of each answer and nothing of
/// the other supplier's, through every join and sub-pipeline.
#[tokio::test]
async fn a_supplier_gets_only_its_own_part_of_each_answer() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_fixture(dir.path(), false).await;
    let service = QueryService::new(db);
    for path in std::fs::read_dir(golden_dir()).unwrap() {
        let path = path.unwrap().path();
        if path.extension().is_none_or(|x| x != "dsl") {
            continue;
        }
        let text = query_of(&std::fs::read_to_string(&path).unwrap());
        // `jobs` spans suppliers: a supplier's session has no such table.
        let result = rigwatch_query::dsl::run(
            &service,
            &PromOptions::default(),
            &text,
            Some(fixture::BOLT),
        )
        .await;
        let (schema, batches) = match result {
            Ok(r) => r,
            Err(e) => {
                assert!(text.contains("jobs"), "{}: {e}", path.display());
                continue;
            }
        };
        let csv = String::from_utf8(encode(Format::Csv, &schema, &batches).unwrap()).unwrap();
        for secret in fixture::ACME_SECRETS {
            assert!(
                !csv.contains(secret),
                "{}: bolt's answer names acme's `{secret}`:\n{csv}",
                path.display()
            );
        }
    }
}

/// `fill` gives every bucket of the range a row, the missing ones with the value asked for.
#[tokio::test]
async fn fill_adds_the_missing_buckets() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_fixture(dir.path(), false).await;
    let service = QueryService::new(db);
    // B2 (bolt's A100) reported from minute 4 on: its first bucket of 2 minutes is missing
    // minutes 0-3, so buckets 00:00 and 00:02 are filled.
    let q = "gpus[2026-11-02T00:00 .. 2026-11-02T00:10] | where gpu_uuid == \"GPU-B2\" \
             | stats count() by bucket(2m)";
    let plain = answer(&service, q, None).await;
    assert_eq!(plain.lines().count(), 1 + 3, "{plain}");
    let filled = answer(&service, &format!("{q} | fill | sort bucket"), None).await;
    let rows: Vec<&str> = filled.lines().skip(1).collect();
    assert_eq!(rows.len(), 5, "{filled}");
    assert!(
        rows[0].ends_with(",0") && rows[1].ends_with(",0"),
        "{filled}"
    );
    assert!(
        rows[2].ends_with(",2") && rows[4].ends_with(",2"),
        "{filled}"
    );
    let nulls = answer(&service, &format!("{q} | fill null | sort bucket"), None).await;
    assert!(nulls.lines().nth(1).unwrap().ends_with(','), "{nulls}");
    // A range that ends now and has no rows at all: every minute of it, each 0.
    let empty = answer(
        &service,
        "gpus[5m] | stats count() by bucket(1m) | fill",
        None,
    )
    .await;
    let rows: Vec<&str> = empty.lines().skip(1).collect();
    assert!((5..=6).contains(&rows.len()), "{empty}");
    assert!(rows.iter().all(|r| r.ends_with(",0")), "{empty}");
}

/// `bucket(1d, zone)` starts a day at the zone's midnight: the four hours after midnight
/// UTC on 2026-11-02 are the evening of 2026-11-01 in New York, a day that began in
/// summer time (UTC-4; UTC-5 from 02:00), and the small hours of 2026-11-02 in Tokyo.
#[tokio::test]
async fn zoned_buckets_start_at_the_zones_midnight() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_fixture(dir.path(), false).await;
    let service = QueryService::new(db);
    for (zone, day) in [
        ("America/New_York", "2026-11-01T00:00:00-04:00"),
        ("Asia/Tokyo", "2026-11-02T00:00:00+09:00"),
    ] {
        let q = format!(
            "earnings[2026-11-01 .. 2026-11-04] | stats sum(amount) as micro by bucket(1d, \"{zone}\")"
        );
        let csv = answer(&service, &q, None).await;
        assert_eq!(csv, format!("bucket,micro\n{day},23837500\n"), "{zone}");
    }
}

/// The deepest queries the language accepts parse and lower on an async worker's stack
/// (short queries are not moved to a blocking thread); deeper ones are refused, located.
#[tokio::test]
async fn the_deepest_accepted_queries_run_on_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_fixture(dir.path(), false).await;
    let service = QueryService::new(db);
    let nested = format!(
        "gpus[2026-11-02 .. 2026-11-03] | where {}utilization{} > 50 | stats count()",
        "(".repeat(30),
        ")".repeat(30)
    );
    let chain = format!(
        "gpus[2026-11-02 .. 2026-11-03] | where {} | stats count()",
        vec!["utilization > 200"; 60].join(" or ")
    );
    assert!(nested.len() < 4096 && chain.len() < 4096);
    for q in [&nested, &chain] {
        let csv = answer(&service, q, None).await;
        assert!(csv.starts_with("count\n"), "{csv}");
    }
    let too_deep = format!("gpus | where {}x{}", "(".repeat(40), ")".repeat(40));
    let e = rigwatch_query::dsl::run(&service, &PromOptions::default(), &too_deep, None)
        .await
        .unwrap_err();
    assert_eq!(e.status_code().as_u16(), 400, "{e}");
}
