//! Label names and one label's values without reading samples (`/api/v1/labels` and
//! `/api/v1/label/NAME/values` with no `match[]`): per table and view, the label columns
//! among the rows in the time range. Grafana asks these for its label browser and for every
//! template variable; reading every sample of every metric instead ran into the sample
//! limit on a day of 1,000 GPUs.
//!
//! The scans go through `ctx`, so a supplier's session reads only its own rows. A series
//! whose rows in the range carry no numeric field (so no metric) still counts: an answer
//! may be a superset of Prometheus', never another tenant's.

use std::collections::{BTreeSet, HashSet};

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::logical_expr::Expr;
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use super::view::{LabelPlan, Source};
use super::{FetchError, column, metrics, ms_to_ns, scan, ts};

/// What a lookup answers.
#[derive(Debug, Clone, Copy)]
pub enum Lookup<'a> {
    /// The label names (`/api/v1/labels`).
    Names,
    /// One label's values (`/api/v1/label/NAME/values`).
    Values(&'a str),
}

/// Label names, or one label's values, of the series with samples in `[min_ms, max_ms]`.
pub async fn lookup(
    ctx: &SessionContext,
    db: &rigwatch_storage::Db,
    what: Lookup<'_>,
    min_ms: i64,
    max_ms: i64,
) -> Result<BTreeSet<String>, FetchError> {
    let mut out = BTreeSet::new();
    let mut seen = HashSet::new();
    for m in metrics(ctx, db) {
        if !seen.insert((m.table.name.clone(), m.view)) {
            continue;
        }
        let plan = LabelPlan::new(&m.table, m.view);
        let in_range = column("time")
            .gt_eq(ts(ms_to_ns(min_ms)))
            .and(column("time").lt(ts(ms_to_ns(max_ms.saturating_add(1)))));
        let table = m.table.name.as_str();
        match what {
            Lookup::Names => names(ctx, table, &plan, in_range, &mut out).await?,
            Lookup::Values(name) => values(ctx, table, &plan, name, in_range, &mut out).await?,
        }
    }
    Ok(out)
}

/// Adds the values label `name` takes in `table`'s rows that `in_range` keeps.
async fn values(
    ctx: &SessionContext,
    table: &str,
    plan: &LabelPlan,
    name: &str,
    in_range: Expr,
    out: &mut BTreeSet<String>,
) -> Result<(), FetchError> {
    let Some(label) = plan.labels.iter().find(|l| l.name == name) else {
        return Ok(());
    };
    match &label.source {
        Source::Const(v) => {
            // Present wherever the table has a row in the range.
            let mut rows = scan(ctx, table, &["time"], &[], in_range).await?;
            while let Some(b) = rows.next().await {
                if b?.num_rows() > 0 {
                    out.insert(v.to_string());
                    break;
                }
            }
        }
        Source::Column { col, prefix } => {
            let col = plan.columns[*col].0.as_str();
            let filter = in_range.and(column(col).is_not_null());
            let mut rows = scan(ctx, table, &[col], &["time"], filter).await?;
            while let Some(b) = rows.next().await {
                let b = b?;
                let mut add = |v: &str| {
                    let v = format!("{prefix}{v}");
                    if !out.contains(&v) {
                        out.insert(v);
                    }
                };
                let array = b.column(0);
                if let Some(dict) = array.as_any_dictionary_opt() {
                    // A tag: each dictionary value that some row uses, once per batch.
                    let values = cast(dict.values(), &DataType::Utf8)?;
                    let values = values.as_string::<i32>();
                    let mut used = vec![false; values.len()];
                    for (i, k) in dict.normalized_keys().iter().enumerate() {
                        if array.is_valid(i) && *k < used.len() {
                            used[*k] = true;
                        }
                    }
                    for (k, _) in used.iter().enumerate().filter(|(_, u)| **u) {
                        if values.is_valid(k) {
                            add(values.value(k));
                        }
                    }
                } else {
                    let values = cast(array, &DataType::Utf8)?;
                    let values = values.as_string::<i32>();
                    for i in (0..values.len()).filter(|&i| values.is_valid(i)) {
                        add(values.value(i));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Adds the label names of `table`'s rows that `in_range` keeps: the label columns with a
/// value there (read until each has one), and `__name__` if there is a row.
async fn names(
    ctx: &SessionContext,
    table: &str,
    plan: &LabelPlan,
    in_range: Expr,
    out: &mut BTreeSet<String>,
) -> Result<(), FetchError> {
    let mut cols: Vec<&str> = plan.columns.iter().map(|(c, _)| c.as_str()).collect();
    let only_time = cols.is_empty();
    if only_time {
        cols.push("time");
    }
    let filter_only: &[&str] = if only_time { &[] } else { &["time"] };
    let mut found = vec![false; plan.columns.len()];
    let mut any_rows = false;
    let mut rows = scan(ctx, table, &cols, filter_only, in_range).await?;
    while let Some(b) = rows.next().await {
        let b = b?;
        any_rows |= b.num_rows() > 0;
        for (i, f) in found.iter_mut().enumerate() {
            *f |= b.column(i).null_count() < b.num_rows();
        }
        if any_rows && found.iter().all(|f| *f) {
            break;
        }
    }
    if !any_rows {
        return Ok(());
    }
    out.insert("__name__".to_string());
    for l in &plan.labels {
        let present = match &l.source {
            Source::Const(_) => true,
            Source::Column { col, .. } => found[*col],
        };
        if present {
            out.insert(l.name.clone());
        }
    }
    Ok(())
}
