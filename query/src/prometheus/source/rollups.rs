//! Answering selections from rollups (`rigwatch-storage` `db/rollup.rs`).
//!
//! The evaluator says what it computes from each selection ([`Reads`]). Where that is the
//! last sample before each evaluation time, or `max_over_time`/`min_over_time`, and every
//! evaluation time (and window) is a multiple of a rollup resolution, each bucket contributes
//! one sample: its last sample at its own time, or its largest (smallest) sample at the time
//! of its last. The evaluator's result is then exactly the raw data's (the proof, and a
//! differential test, are in `rigwatch-promql` `eval`). The coarsest aligned resolution is
//! used; stretches without a current rollup (recent data, a late write not yet rolled up) are
//! read raw, and the two are joined per series.
//!
//! A request may also allow a resolution outright (`max_source_resolution`, as in Thanos):
//! then any selection reads rollups up to it, the series thinned to the last sample of each
//! bucket (`max_over_time`/`min_over_time` read each bucket's largest/smallest sample at the
//! time of its last). Its answer is the raw data's only where the rules above hold; elsewhere
//! it is the answer over the thinned series, like VictoriaMetrics' downsampling, which keeps
//! the last sample of each interval.
//!
//! The rollup table is read through the caller's session, like the raw table, so a
//! supplier-scoped query reads only its own rollup rows.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimestampNanosecondType};
use datafusion::logical_expr::Expr;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use rigwatch_common::rollup as names;
use rigwatch_promql::ast::Matcher;
use rigwatch_promql::eval::{Reads, Selection};
use rigwatch_promql::value::Series;
use rigwatch_storage::Db;
use rigwatch_storage::db::Cover;
use rigwatch_storage::schema::TableDef;

use super::series::SeriesAccumulator;
use super::view::LabelPlan;
use super::{FetchError, MetricRef, column, ms_to_ns, scan, tag_lit, ts};

const MS: i64 = 1_000_000;

/// The rollup that answers `sel` on `def`'s table: its resolution (ns) and the stretches where
/// it stands for the raw data, when the selection is aligned to a resolution, or the
/// resolution is at most `max_source_ms` (ms), and some stretch of its span is rolled up. The
/// coarsest such resolution wins.
pub(super) fn choose(
    db: &Db,
    def: &TableDef,
    plan: &LabelPlan,
    sel: &Selection,
    max_source_ms: i64,
) -> Option<(i64, Vec<Cover>)> {
    if !db.rolls_up(def) || !plan.columns.iter().all(|(_, tag)| *tag) {
        return None;
    }
    db.rollup_resolutions()
        .iter()
        .rev()
        .filter(|&&res| sel.reads.aligned(res / MS) || res / MS <= max_source_ms)
        .find_map(|&res| {
            let covers = db.rollup_cover(&def.name, res, ms_to_ns(sel.min_t), ms_to_ns(sel.max_t));
            (!covers.is_empty()).then_some((res, covers))
        })
}

/// The parts of `[min_t, max_t]` (ms, inclusive) no stretch covers; a stretch `(from, to]`
/// (ns) covers the samples whose millisecond is in `(from, to]`.
pub(super) fn gaps(min_t: i64, max_t: i64, covers: &[Cover]) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut cur = min_t;
    for c in covers {
        let (from, to) = (c.from / MS, c.to / MS);
        if from >= cur && cur <= max_t {
            out.push((cur, from.min(max_t)));
        }
        cur = cur.max(to.saturating_add(1));
    }
    if cur <= max_t {
        out.push((cur, max_t));
    }
    out
}

/// The samples `sel` gets from `def`'s rollup at `res` within `covers`, one series per tag set
/// and metric; `tag_filter` holds the selection's pushed-down tag terms.
#[allow(clippy::too_many_arguments)]
pub(super) async fn read(
    ctx: &SessionContext,
    def: &TableDef,
    plan: &LabelPlan,
    metrics: &[&MetricRef],
    tag_filter: Option<Expr>,
    sel: &Selection,
    res: i64,
    covers: &[Cover],
    total: &mut usize,
    max_samples: usize,
) -> Result<Vec<Series>, FetchError> {
    // Raw reads get here only at a resolution the request allowed: the thinned series.
    let value = match sel.reads {
        Reads::Last { .. } | Reads::Raw => names::LAST,
        Reads::Max { .. } => names::MAX,
        Reads::Min { .. } => names::MIN,
    };
    let table = Db::rollup_table_name(&def.name, res);
    // Bucket ends that can hold samples of the span, within the covered stretches.
    let lo = ms_to_ns(sel.min_t).max(covers[0].from + 1);
    let hi = ms_to_ns(sel.max_t)
        .saturating_add(res)
        .min(covers[covers.len() - 1].to);
    let mut fields: Option<Expr> = None;
    for m in metrics {
        let e = column(names::FIELD_TAG).eq(tag_lit(&m.field));
        fields = Some(match fields {
            Some(f) => f.or(e),
            None => e,
        });
    }
    let mut filter = column("time")
        .gt_eq(ts(lo))
        .and(column("time").lt_eq(ts(hi)));
    if let Some(f) = fields {
        filter = filter.and(f);
    }
    if let Some(t) = tag_filter {
        filter = filter.and(t);
    }
    let ntags = plan.columns.len();
    let mut cols: Vec<&str> = plan.columns.iter().map(|(c, _)| c.as_str()).collect();
    cols.extend([names::FIELD_TAG, value, names::LAST_NS, "time"]);
    let mut batches = scan(ctx, &table, &cols, &[], filter).await?;
    let mut acc = SeriesAccumulator::new(ntags + 1, 1);
    while let Some(b) = batches.next().await {
        let b = &b?;
        let ends = b
            .column(ntags + 3)
            .as_primitive::<TimestampNanosecondType>();
        let last_ns = b.column(ntags + 2).as_primitive::<Int64Type>();
        let values = b.column(ntags + 1).as_primitive::<Float64Type>();
        let keep: BooleanArray = (0..b.num_rows())
            .map(|i| {
                let (e, t) = (ends.value(i), last_ns.value(i).div_euclid(MS));
                Some(
                    values.is_valid(i)
                        && (sel.min_t..=sel.max_t).contains(&t)
                        && covers.iter().any(|c| c.from < e && e <= c.to),
                )
            })
            .collect();
        let kept = filter_record_batch(b, &keep)?;
        // Tags and `field`, the value, and the sample time: the accumulator's layout.
        let mut columns: Vec<ArrayRef> = kept.columns()[..=ntags].to_vec();
        columns.push(kept.column(ntags + 1).clone());
        columns.push(cast(
            kept.column(ntags + 2),
            &DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, None),
        )?);
        let schema = Arc::new(arrow::datatypes::Schema::new(
            columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    arrow::datatypes::Field::new(format!("c{i}"), c.data_type().clone(), true)
                })
                .collect::<Vec<_>>(),
        ));
        acc.push(&RecordBatch::try_new(schema, columns)?)?;
        if *total + acc.samples > max_samples {
            return Err(FetchError::TooManySamples { limit: max_samples });
        }
    }
    *total += acc.samples;
    let mut out = Vec::new();
    for (mut tag_values, per_metric) in acc.finish(None) {
        let field = tag_values.pop().flatten().unwrap_or_default();
        let Some(metric) = metrics.iter().find(|m| m.field == field) else {
            continue;
        };
        let Some(samples) = per_metric.into_iter().next().filter(|s| !s.is_empty()) else {
            continue;
        };
        let labels = plan.labels(&tag_values, &metric.name);
        if Matcher::all_match(&sel.matchers, &labels) {
            out.push(Series { labels, samples });
        }
    }
    Ok(out)
}

/// Joins series read in parts (raw stretches and rollups) by label set, samples in time order.
pub(super) fn join(mut series: Vec<Series>) -> Vec<Series> {
    series.sort_by(|a, b| a.labels.cmp(&b.labels));
    let mut out: Vec<Series> = Vec::with_capacity(series.len());
    for s in series {
        match out.last_mut() {
            Some(last) if last.labels == s.labels => last.samples.extend(s.samples),
            _ => out.push(s),
        }
    }
    for s in &mut out {
        if !s.samples.is_sorted_by_key(|x| x.t) {
            s.samples.sort_by_key(|x| x.t);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_what_no_stretch_covers() {
        let c = |from_ms: i64, to_ms: i64| Cover {
            from: from_ms * MS,
            to: to_ms * MS,
            file: 0,
        };
        // Covered (100, 200] and (200, 300]: the raw parts are [50, 100] and [301, 400].
        assert_eq!(
            gaps(50, 400, &[c(100, 200), c(200, 300)]),
            vec![(50, 100), (301, 400)]
        );
        // A hole between stretches is read raw.
        assert_eq!(
            gaps(150, 350, &[c(100, 200), c(250, 300)]),
            vec![(201, 250), (301, 350)]
        );
        // Fully covered.
        assert!(gaps(101, 300, &[c(100, 200), c(200, 300)]).is_empty());
    }
}
