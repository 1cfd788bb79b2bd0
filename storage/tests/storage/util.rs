//! Shared helpers: opening a database, running SQL, and comparing results cell by cell.

use std::cmp::Ordering;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Float64Type, Int64Type, TimeUnit, TimestampNanosecondType, UInt64Type,
};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use rigwatch_storage::table::{register, time_bounds};
use rigwatch_storage::{Db, DbConfig};

/// The append-only (event) table of these tests.
pub const EVENTS: &str = "events";

/// Maintenance driven by hand, 10 s partitions in 40 s tiers, `events` append-only.
pub fn config(dir: &Path) -> DbConfig {
    let mut c = DbConfig::new(dir);
    c.background = false;
    c.partition = Duration::from_secs(10);
    c.compaction_tier = Some(Duration::from_secs(40));
    c.append_only_tables = vec![EVENTS.to_string()];
    c
}

pub async fn open(dir: &Path) -> Arc<Db> {
    Db::open(config(dir)).await.expect("open database")
}

/// Shuts `db` down (it must be the last handle) and opens the same directory again.
pub async fn reopen(db: Arc<Db>, dir: &Path) -> Arc<Db> {
    db.shutdown().await.expect("shutdown");
    drop(db);
    open(dir).await
}

fn context(db: &Arc<Db>) -> SessionContext {
    let ctx = SessionContext::new();
    register(db, &ctx).expect("register tables");
    ctx
}

/// Runs `query` in a fresh session (so the table schemas are current).
pub async fn sql(db: &Arc<Db>, query: &str) -> Vec<RecordBatch> {
    let df = context(db)
        .sql(query)
        .await
        .unwrap_or_else(|e| panic!("planning `{query}`: {e}"));
    df.collect()
        .await
        .unwrap_or_else(|e| panic!("running `{query}`: {e}"))
}

/// The time bounds the table scan of `query` prunes with (from its pushed-down filters).
pub async fn pushed_time_bounds(db: &Arc<Db>, query: &str) -> (i64, i64) {
    let plan = context(db)
        .sql(query)
        .await
        .and_then(|df| df.into_optimized_plan())
        .unwrap_or_else(|e| panic!("planning `{query}`: {e}"));
    let mut filters = Vec::new();
    plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            filters.extend(scan.filters.iter().cloned());
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .expect("walk plan");
    time_bounds(&filters)
}

/// One result value, typed, so that a model can produce the same thing.
#[derive(Debug, Clone)]
pub enum Cell {
    Null,
    F64(f64),
    I64(i64),
    U64(u64),
    Bool(bool),
    Str(String),
    Time(i64),
}

impl Cell {
    fn rank(&self) -> u8 {
        match self {
            Cell::Null => 0,
            Cell::F64(_) => 1,
            Cell::I64(_) => 2,
            Cell::U64(_) => 3,
            Cell::Bool(_) => 4,
            Cell::Str(_) => 5,
            Cell::Time(_) => 6,
        }
    }
}

impl PartialEq for Cell {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Cell {}

impl PartialOrd for Cell {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Cell {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Cell::F64(a), Cell::F64(b)) => a.total_cmp(b),
            (Cell::I64(a), Cell::I64(b)) | (Cell::Time(a), Cell::Time(b)) => a.cmp(b),
            (Cell::U64(a), Cell::U64(b)) => a.cmp(b),
            (Cell::Bool(a), Cell::Bool(b)) => a.cmp(b),
            (Cell::Str(a), Cell::Str(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

pub type Rows = Vec<Vec<Cell>>;

fn column_cells(array: &ArrayRef) -> Vec<Cell> {
    let array = match array.data_type() {
        DataType::Dictionary(_, _) | DataType::Utf8View | DataType::LargeUtf8 => {
            cast(array, &DataType::Utf8).expect("cast to Utf8")
        }
        _ => array.clone(),
    };
    (0..array.len())
        .map(|i| {
            if array.is_null(i) {
                return Cell::Null;
            }
            match array.data_type() {
                DataType::Float64 => Cell::F64(array.as_primitive::<Float64Type>().value(i)),
                DataType::Int64 => Cell::I64(array.as_primitive::<Int64Type>().value(i)),
                DataType::UInt64 => Cell::U64(array.as_primitive::<UInt64Type>().value(i)),
                DataType::Boolean => Cell::Bool(array.as_boolean().value(i)),
                DataType::Utf8 => Cell::Str(array.as_string::<i32>().value(i).to_string()),
                DataType::Timestamp(TimeUnit::Nanosecond, _) => {
                    Cell::Time(array.as_primitive::<TimestampNanosecondType>().value(i))
                }
                other => panic!("unexpected result type {other}"),
            }
        })
        .collect()
}

/// The rows of `batches`, in result order.
pub fn rows(batches: &[RecordBatch]) -> Rows {
    let mut out = Vec::new();
    for b in batches {
        let cols: Vec<Vec<Cell>> = b.columns().iter().map(column_cells).collect();
        for r in 0..b.num_rows() {
            out.push(cols.iter().map(|c| c[r].clone()).collect());
        }
    }
    out
}

/// Runs `query` and returns its rows.
pub async fn query_rows(db: &Arc<Db>, query: &str) -> Rows {
    rows(&sql(db, query).await)
}

pub fn sorted(mut rows: Rows) -> Rows {
    rows.sort();
    rows
}
