//! A file's series index narrows a scan to the series a tag filter keeps: the Parquet scan
//! hands on only their rows, for a plain filter and for a supplier's tenancy scope alike.

use std::sync::Arc;

use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::SessionContext;
use rigwatch_storage::table::register_scoped;
use rigwatch_storage::{Db, FieldValue, WriteBatch};

use super::util::open;

const SERIES: usize = 64;
const ROWS: usize = 50;

/// 64 series (host h00..h63, supplier s{host % 4}: each supplier's series lie scattered
/// through the sorted file), 50 rows each, persisted into one file.
async fn persisted(db: &Arc<Db>) {
    let mut b = WriteBatch::default();
    let mut line = 0;
    for h in 0..SERIES {
        for i in 0..ROWS {
            let mut row = b.row("gpu", 1_000_000_000 + i as i64 * 100_000_000);
            row.tag("host", &format!("h{h:02}"));
            row.tag("supplier", &format!("s{}", h % 4));
            row.field("util", FieldValue::F64(i as f64));
            line += 1;
            row.finish(line).expect("valid row");
        }
    }
    let outcome = db.write(b, Default::default()).await.expect("write");
    assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
    db.persist().await.expect("persist");
}

/// Rows the query returns, and rows its Parquet scans handed on.
async fn run(ctx: &SessionContext, query: &str) -> (usize, usize) {
    let df = ctx.sql(query).await;
    let plan = match df {
        Ok(df) => df.create_physical_plan().await,
        Err(e) => Err(e),
    }
    .unwrap_or_else(|e| panic!("planning `{query}`: {e}"));
    let out = collect(plan.clone(), ctx.task_ctx())
        .await
        .unwrap_or_else(|e| panic!("running `{query}`: {e}"));
    fn scanned(p: &Arc<dyn ExecutionPlan>) -> usize {
        // Parquet scans: DataFusion's, and the one that labels rows from the series index.
        let own = if matches!(p.name(), "DataSourceExec" | "SeriesScanExec") {
            p.metrics().and_then(|m| m.output_rows()).unwrap_or(0)
        } else {
            0
        };
        own + p.children().into_iter().map(scanned).sum::<usize>()
    }
    (out.iter().map(|b| b.num_rows()).sum(), scanned(&plan))
}

/// A session over the persisted file, as an operator or as one supplier (keep the directory).
async fn session(scope: Option<&str>) -> (tempfile::TempDir, SessionContext) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path()).await;
    persisted(&db).await;
    let ctx = SessionContext::new();
    register_scoped(&db, &ctx, scope).expect("register");
    (dir, ctx)
}

#[tokio::test]
async fn a_tag_filter_reads_only_its_series_rows() {
    let (_dir, ctx) = session(None).await;
    // One series: exactly its rows leave the scan (page statistics alone kept far more).
    assert_eq!(
        run(&ctx, "SELECT * FROM gpu WHERE host = 'h17'").await,
        (ROWS, ROWS)
    );
    // Series scattered through the file, by IN and by a term over two tags.
    let (rows, scanned) = run(
        &ctx,
        "SELECT * FROM gpu WHERE host IN ('h01', 'h40') OR supplier = 's9'",
    )
    .await;
    assert_eq!((rows, scanned), (2 * ROWS, 2 * ROWS));
    // No series matches: nothing is read.
    assert_eq!(
        run(&ctx, "SELECT * FROM gpu WHERE host = 'nope'").await,
        (0, 0)
    );
    // A filter on a field does not use the index: every row is read.
    let (rows, scanned) = run(&ctx, "SELECT * FROM gpu WHERE util < 1").await;
    assert_eq!((rows, scanned), (SERIES, SERIES * ROWS));
}

#[tokio::test]
async fn a_suppliers_scope_reads_only_its_series_rows() {
    let (_dir, ctx) = session(Some("s1")).await;
    let mine = SERIES / 4 * ROWS;
    assert_eq!(run(&ctx, "SELECT * FROM gpu").await, (mine, mine));
    // Another supplier's series are neither returned nor read.
    assert_eq!(
        run(&ctx, "SELECT * FROM gpu WHERE host = 'h02'").await,
        (0, 0)
    );
    assert_eq!(
        run(&ctx, "SELECT * FROM gpu WHERE host = 'h05'").await,
        (ROWS, ROWS)
    );
}
