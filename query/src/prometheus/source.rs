//! Reading PromQL selectors out of the store through DataFusion.
//!
//! Name mapping (DESIGN.md): metric `<table>_<field>` reads field `<field>` of `<table>`; a
//! table written in Prometheus form (field `value`) reads back as `<table>`. Tags become
//! labels. Table `gpu` also reads back under dcgm-exporter's metric and label names
//! ([`view`]), over the same rows. Each selector the evaluator will read ([`rigwatch_promql::eval::selections`]) is
//! planned on DataFusion with its time span and its equality matchers pushed into the scan,
//! so a query over one GPU reads one GPU's data; regex matchers are applied to the label sets
//! afterwards, once per series. The scan runs in the caller's (possibly supplier-scoped)
//! session, so tenancy holds here too.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::common::{Column, ScalarValue};
use datafusion::logical_expr::{Expr, lit};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use rigwatch_promql::ast::{MatchOp, Matcher};
use rigwatch_promql::eval::{EvalError, Reads, Selection};
use rigwatch_promql::storage::Queryable;
use rigwatch_promql::value::{Labels, METRIC_NAME, Sample, Series};
use rigwatch_storage::FieldType;
use rigwatch_storage::schema::{ColumnKind, TableDef};

mod labels;
mod rollups;
mod series;
mod view;

pub use labels::{Lookup, lookup as label_lookup};
use series::SeriesAccumulator;
pub use view::{DCGM_TABLE, View};
use view::{LabelPlan, Pushdown};

/// One metric name and where it lives.
#[derive(Debug, Clone)]
pub struct MetricRef {
    pub name: String,
    pub table: Arc<TableDef>,
    pub field: String,
    /// Which names its series carry.
    pub view: View,
}

/// Whether a field type can be read as a float sample.
fn numeric(t: FieldType) -> bool {
    !matches!(t, FieldType::Str)
}

/// The metric name a field reads back as.
pub fn metric_name(table: &str, field: &str) -> String {
    if field == "value" {
        table.to_string()
    } else {
        format!("{table}_{field}")
    }
}

/// Every metric visible in `ctx` (its default schema is the store, possibly scoped).
pub fn metrics(ctx: &SessionContext, db: &rigwatch_storage::Db) -> Vec<MetricRef> {
    let Some(schema) = ctx.catalog("datafusion").and_then(|c| c.schema("public")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for name in schema.table_names() {
        // Rollup tables are read through their raw table's metrics (`rollups.rs`).
        if rigwatch_common::rollup::parse_table_name(&name).is_some() {
            continue;
        }
        let Some(def) = db.table(&name) else { continue };
        for d in DERIVED.iter().filter(|d| d.table == name) {
            // A counter derived from the table's rows (no field of its own).
            out.push(MetricRef {
                name: d.metric.to_string(),
                table: def.clone(),
                field: String::new(),
                view: View::Native,
            });
        }
        for c in &def.columns {
            if let ColumnKind::Field(t) = c.kind
                && numeric(t)
            {
                out.push(MetricRef {
                    name: metric_name(&name, &c.name),
                    table: def.clone(),
                    field: c.name.clone(),
                    view: View::Native,
                });
            }
        }
        out.extend(view::dcgm_metrics(&def));
    }
    out
}

fn ts(ns: i64) -> Expr {
    lit(ScalarValue::TimestampNanosecond(Some(ns), None))
}

fn column(name: &str) -> Expr {
    Expr::Column(Column::from_name(name))
}

/// A tag value typed as the store types tag columns (a dictionary of strings), so the
/// predicate compares without casting the column and Parquet statistics can prune on it.
fn tag_lit(v: &str) -> Expr {
    lit(ScalarValue::Dictionary(
        Box::new(DataType::Int32),
        Box::new(ScalarValue::Utf8(Some(v.to_string()))),
    ))
}

/// Scans `cols` of `table` where `filter` holds, straight from the table provider.
///
/// The plan is always the same shape (a scan with its filter pushed down, then the filter),
/// so it is built directly instead of through DataFusion's logical planner, optimizer and
/// physical planner, which cost more than the scan itself for a small selection. The
/// provider comes from `ctx`'s catalog, so a supplier-scoped session still gets the
/// scoped table, whose scan filters on the supplier below everything built here.
///
/// `filter_only` are columns the filter reads besides `cols`: scanned, and dropped from the
/// batches returned, which hold `cols` only.
///
/// The batches stream: a caller takes each into its series as it comes and drops it, so a
/// query holds its samples once (not also every scanned batch), and its sample limit stops
/// the scan as soon as it is passed.
async fn scan(
    ctx: &SessionContext,
    table: &str,
    cols: &[&str],
    filter_only: &[&str],
    filter: Expr,
) -> Result<datafusion::physical_plan::SendableRecordBatchStream, FetchError> {
    use datafusion::arrow::compute::filter_record_batch;
    use datafusion::common::cast::as_boolean_array;
    use futures::StreamExt;

    let provider = ctx
        .table_provider(datafusion::common::TableReference::bare(table))
        .await?;
    let schema = provider.schema();
    let projection: Vec<usize> = cols
        .iter()
        .chain(filter_only)
        .map(|c| schema.index_of(c))
        .collect::<Result<_, _>>()?;
    let state = ctx.state();
    let filters = [filter];
    let plan = provider
        .scan(&state, Some(&projection), &filters, None)
        .await?;
    let [filter] = filters;
    let df_schema = datafusion::common::DFSchema::try_from(plan.schema().as_ref().clone())?;
    let predicate = state.create_physical_expr(filter, &df_schema)?;
    // The filter is applied to each batch as it streams, as a `FilterExec` would (a null
    // verdict drops the row), without planning one: working out its output's properties
    // cost more than filtering a small selection.
    let keep: Vec<usize> = (0..cols.len()).collect();
    let out = Arc::new(plan.schema().project(&keep)?);
    let scanned = datafusion::physical_plan::execute_stream(plan, state.task_ctx())?;
    let filtered = scanned.map(move |batch| {
        let batch = batch?;
        let verdict = predicate.evaluate(&batch)?.into_array(batch.num_rows())?;
        let batch = filter_record_batch(&batch, as_boolean_array(&verdict)?)?;
        Ok(batch.project(&keep)?)
    });
    Ok(Box::pin(
        datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(out, filtered),
    ))
}

fn ms_to_ns(ms: i64) -> i64 {
    ms.saturating_mul(1_000_000)
}

/// Data fetched for one query: the series of each selection.
#[derive(Debug, Default)]
pub struct Fetched {
    sets: Vec<FetchedSet>,
    pub samples: usize,
}

/// The series read for one selection, and how many of the query's selections read them.
#[derive(Debug)]
struct FetchedSet {
    selection: Selection,
    /// Taken (not copied) by the last selection that reads them: the evaluator reads each
    /// selection once, so a query's samples are usually moved, never duplicated.
    series: std::sync::Mutex<Vec<Series>>,
    readers: std::sync::atomic::AtomicUsize,
}

impl FetchedSet {
    /// Whether this set answers `sel`: the same selector over a span at least as wide, read
    /// raw or for the same use.
    fn covers(&self, sel: &Selection) -> bool {
        self.selection.matchers == sel.matchers
            && self.selection.min_t <= sel.min_t
            && self.selection.max_t >= sel.max_t
            && (self.selection.reads == Reads::Raw || self.selection.reads == sel.reads)
    }
}

impl Queryable for Fetched {
    fn select(
        &self,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<Series>, EvalError> {
        self.select_for(&Selection {
            matchers: matchers.to_vec(),
            min_t,
            max_t,
            reads: Reads::Raw,
        })
    }

    fn select_for(&self, sel: &Selection) -> Result<Vec<Series>, EvalError> {
        use std::sync::atomic::Ordering;
        let (matchers, min_t, max_t) = (&sel.matchers, sel.min_t, sel.max_t);
        let Some(set) = self.sets.iter().find(|s| s.covers(sel)) else {
            return Err(EvalError::Internal(format!(
                "selector {matchers:?} over [{min_t}, {max_t}] was not prefetched"
            )));
        };
        let window = |samples: &[Sample]| {
            let lo = samples.partition_point(|x| x.t < min_t);
            let hi = samples.partition_point(|x| x.t <= max_t);
            (lo, hi)
        };
        let mut series = set.series.lock().unwrap_or_else(|e| e.into_inner());
        let Ok(readers) = set
            .readers
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        else {
            return Err(EvalError::Internal(format!(
                "selector {matchers:?} read more often than its selections listed"
            )));
        };
        if readers == 1 {
            let mut out = std::mem::take(&mut *series);
            out.retain_mut(|s| {
                let (lo, hi) = window(&s.samples);
                s.samples.truncate(hi);
                s.samples.drain(..lo.min(hi));
                !s.samples.is_empty()
            });
            return Ok(out);
        }
        Ok(series
            .iter()
            .filter_map(|s| {
                let (lo, hi) = window(&s.samples);
                (lo < hi).then(|| Series {
                    labels: s.labels.clone(),
                    samples: s.samples[lo..hi].to_vec(),
                })
            })
            .collect())
    }
}

impl Fetched {
    /// Every fetched series once (by label set), for the metadata endpoints.
    pub fn into_series(self) -> Vec<Series> {
        let mut all: Vec<Series> = self
            .sets
            .into_iter()
            .flat_map(|s| s.series.into_inner().unwrap_or_else(|e| e.into_inner()))
            .collect();
        all.sort_by(|a, b| a.labels.cmp(&b.labels));
        all.dedup_by(|a, b| a.labels == b.labels);
        all
    }
}

/// Why fetching failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("{0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(
        "query processing would load too many samples into memory in query execution (limit {limit})"
    )]
    TooManySamples { limit: usize },
}

/// Fetches every selection (the same selection twice is read once), at most `max_samples`
/// samples. Rollups answer a selection where they give the raw data's answer, and any
/// selection up to `max_source_resolution_ms` (ms, 0 for none) as the last sample of each
/// bucket (`rollups.rs`).
pub async fn fetch(
    ctx: &SessionContext,
    db: &rigwatch_storage::Db,
    selections: Vec<Selection>,
    max_samples: usize,
    max_source_resolution_ms: i64,
) -> Result<Fetched, FetchError> {
    let catalog = metrics(ctx, db);
    let mut out = Fetched::default();
    for sel in selections {
        // The evaluator selects exactly what `selections` listed, in that order, and
        // `select` finds the first set covering it, as here.
        if let Some(set) = out.sets.iter_mut().find(|s| s.covers(&sel)) {
            *set.readers.get_mut() += 1;
            continue;
        }
        let limits = (max_samples, max_source_resolution_ms);
        let series = fetch_one(ctx, db, &catalog, &sel, limits, &mut out.samples).await?;
        out.sets.push(FetchedSet {
            selection: sel,
            series: std::sync::Mutex::new(series),
            readers: std::sync::atomic::AtomicUsize::new(1),
        });
    }
    Ok(out)
}

/// The metrics a selector's `__name__` matchers allow, grouped by table and view.
fn candidates<'a>(
    catalog: &'a [MetricRef],
    matchers: &[Matcher],
) -> Vec<(Arc<TableDef>, View, Vec<&'a MetricRef>)> {
    let mut by_table: Vec<(Arc<TableDef>, View, Vec<&MetricRef>)> = Vec::new();
    for m in catalog.iter().filter(|m| !m.field.is_empty()) {
        let ok = matchers
            .iter()
            .filter(|x| x.name == METRIC_NAME)
            .all(|x| x.matches(&m.name));
        if !ok {
            continue;
        }
        match by_table
            .iter_mut()
            .find(|(t, view, _)| t.name == m.table.name && *view == m.view)
        {
            Some((_, _, v)) => v.push(m),
            None => by_table.push((m.table.clone(), m.view, vec![m])),
        }
    }
    by_table
}

async fn fetch_one(
    ctx: &SessionContext,
    db: &rigwatch_storage::Db,
    catalog: &[MetricRef],
    sel: &Selection,
    (max_samples, max_source_resolution_ms): (usize, i64),
    total: &mut usize,
) -> Result<Vec<Series>, FetchError> {
    let mut result = Vec::new();
    for d in DERIVED {
        let named = sel
            .matchers
            .iter()
            .filter(|m| m.name == METRIC_NAME)
            .all(|m| m.matches(d.metric));
        if let Some(m) = catalog.iter().find(|m| named && m.table.name == d.table) {
            result.extend(derived_series(ctx, &m.table, d, sel, total).await?);
        }
    }
    for (def, view, metrics) in candidates(catalog, &sel.matchers) {
        let plan = LabelPlan::new(&def, view);
        // Matchers no row of this view can satisfy skip the scan; regex matchers run on
        // the label sets below.
        let Some(pushdowns) = plan.translate(&sel.matchers) else {
            continue;
        };
        let mut tag_filter: Option<Expr> = None;
        let mut pushdowns = pushdowns;
        let mut filter_only: Vec<&str> = Vec::new();
        if view == View::Dcgm && def.name == rigwatch_common::dcgm::XID_TABLE {
            // The XID gauge reads the agent's XID rows, not the health engine's verdicts.
            if def.column_index("kind").is_none() {
                continue;
            }
            pushdowns.push(Pushdown::Eq("kind".into(), "xid".into()));
            filter_only.push("kind");
            if def.column_index("detector").is_some() {
                pushdowns.push(Pushdown::IsNull("detector".into()));
                filter_only.push("detector");
            }
        }
        for p in pushdowns {
            let e = match p {
                Pushdown::IsNull(c) => column(&c).is_null(),
                Pushdown::Eq(c, v) => column(&c).eq(tag_lit(&v)),
                Pushdown::NotEq(c, v) => column(&c).is_null().or(column(&c).not_eq(tag_lit(&v))),
            };
            tag_filter = Some(match tag_filter {
                Some(f) => f.and(e),
                None => e,
            });
        }
        // Where a rollup stands for the raw data and the evaluator gets the same result from
        // it (or the request allows its resolution), read it there and the raw rows
        // elsewhere (`rollups.rs`).
        let mut rolled = Vec::new();
        let mut raw_spans = vec![(sel.min_t, sel.max_t)];
        let mut joined_spans = false;
        if let Some((res, covers)) = rollups::choose(db, &def, &plan, sel, max_source_resolution_ms)
        {
            rolled = rollups::read(
                ctx,
                &def,
                &plan,
                &metrics,
                tag_filter.clone(),
                sel,
                res,
                &covers,
                total,
                max_samples,
            )
            .await?;
            raw_spans = rollups::gaps(sel.min_t, sel.max_t, &covers);
            joined_spans = true;
            // A persist may have replaced a stretch's rollup meanwhile: then read it all raw.
            let now = db.rollup_cover(&def.name, res, ms_to_ns(sel.min_t), ms_to_ns(sel.max_t));
            if now != covers {
                rolled.clear();
                raw_spans = vec![(sel.min_t, sel.max_t)];
                joined_spans = false;
            }
        }
        let mut cols: Vec<&str> = plan.columns.iter().map(|(c, _)| c.as_str()).collect();
        cols.extend(metrics.iter().map(|m| m.field.as_str()));
        cols.push("time");
        let mut acc = SeriesAccumulator::new(plan.columns.len(), metrics.len());
        for (lo, hi) in raw_spans {
            // Around rollups, a span (the lookback before the first stretch, say) often holds
            // nothing: skip planning its scan.
            if joined_spans
                && !db.may_hold(&def.name, ms_to_ns(lo), ms_to_ns(hi.saturating_add(1)) - 1)
            {
                continue;
            }
            // Samples whose millisecond is in [lo, hi].
            let mut filter = column("time")
                .gt_eq(ts(ms_to_ns(lo)))
                .and(column("time").lt(ts(ms_to_ns(hi.saturating_add(1)))));
            if let Some(t) = &tag_filter {
                filter = filter.and(t.clone());
            }
            let mut batches = scan(ctx, &def.name, &cols, &filter_only, filter).await?;
            while let Some(b) = batches.next().await {
                acc.push(&b?)?;
                if *total + acc.samples > max_samples {
                    return Err(FetchError::TooManySamples { limit: max_samples });
                }
            }
        }
        *total += acc.samples;
        let joined = !rolled.is_empty();
        let before = result.len();
        result.append(&mut rolled);
        // An instant selector's steps read one sample each: the others are not kept.
        let grid = match sel.reads {
            Reads::Last { first, step } => Some(series::Grid {
                first,
                step,
                last: sel.max_t,
            }),
            Reads::Raw | Reads::Max { .. } | Reads::Min { .. } => None,
        };
        for (tag_values, per_metric) in acc.finish(grid) {
            for (i, samples) in per_metric.into_iter().enumerate() {
                if samples.is_empty() {
                    continue;
                }
                let labels = plan.labels(&tag_values, &metrics[i].name);
                if !Matcher::all_match(&sel.matchers, &labels) {
                    continue;
                }
                result.push(Series { labels, samples });
            }
        }
        if joined {
            let parts = result.split_off(before);
            result.extend(rollups::join(parts));
        }
    }
    Ok(result)
}

/// The exact cumulative earnings series: one per GPU (labels `supplier`, `gpu_uuid`,
/// `model`), in micro-units of the currency (µ; a float64 holds them exactly up to 2^53 µ,
/// about 9 billion currency units), a sample at the end of every accrued ledger entry,
/// counting from the first entry ever (not from the window start). Derived from the
/// `earnings` ledger rows, never extrapolated: `increase_exact(rigwatch_earnings_total[1d])`
/// is a day's pay to the µ.
pub const EARNINGS_METRIC: &str = "rigwatch_earnings_total";

/// Detected faults as a counter: one series per GPU and fault (labels `supplier`,
/// `gpu_uuid`, `model`, `kind`, `class`, `code`, `severity`), +1 at each fault event the
/// health engine recorded in `gpu_fault`. `sum by (code, severity)
/// (increase_exact(rigwatch_faults_total[1d]))` counts a day's faults by XID and severity.
pub const FAULTS_METRIC: &str = "rigwatch_faults_total";

/// A counter derived from event rows of a table.
struct Derived {
    metric: &'static str,
    table: &'static str,
    /// Label name and the column it comes from (tags or fields, read as strings).
    labels: &'static [(&'static str, &'static str)],
    /// The amount each row adds; `None` counts rows.
    amount: Option<&'static str>,
    /// Milliseconds column for the sample time; `None` uses `time`.
    time_ms: Option<&'static str>,
    /// Only rows whose tag equals this value.
    only: Option<(&'static str, &'static str)>,
}

const DERIVED: &[Derived] = &[
    Derived {
        metric: EARNINGS_METRIC,
        table: "earnings",
        labels: &[
            ("supplier", "supplier"),
            ("gpu_uuid", "gpu_uuid"),
            ("model", "model"),
        ],
        amount: Some("amount_micro"),
        time_ms: Some("to_ms"),
        only: None,
    },
    Derived {
        metric: FAULTS_METRIC,
        table: "gpu_fault",
        labels: &[
            ("supplier", "supplier"),
            ("gpu_uuid", "gpu_uuid"),
            ("model", "model"),
            ("kind", "kind"),
            ("class", "class"),
            ("code", "code"),
            ("severity", "severity"),
        ],
        amount: None,
        time_ms: None,
        only: Some(("detector", "health")),
    },
];

async fn derived_series(
    ctx: &SessionContext,
    def: &TableDef,
    d: &Derived,
    sel: &Selection,
    total: &mut usize,
) -> Result<Vec<Series>, FetchError> {
    use datafusion::functions_aggregate::expr_fn::sum;
    // Labels whose column the table lacks read as "".
    let present: Vec<(&str, &str)> = d
        .labels
        .iter()
        .copied()
        .filter(|(_, c)| def.column_index(c).is_some())
        .collect();
    for m in sel.matchers.iter().filter(|m| m.name != METRIC_NAME) {
        if !present.iter().any(|(l, _)| *l == m.name) && !m.matches("") {
            return Ok(Vec::new());
        }
    }
    if let Some((tag, _)) = d.only
        && def.column_index(tag).is_none()
    {
        return Ok(Vec::new());
    }
    let t_ms = match d.time_ms {
        Some(c) => cast_expr(column(c), DataType::Int64),
        None => cast_expr(column("time"), DataType::Int64) / lit(1_000_000i64),
    };
    let amount = match d.amount {
        Some(c) => cast_expr(column(c), DataType::Int64),
        None => lit(1i64),
    };
    let mut pre = None::<Expr>;
    for m in sel
        .matchers
        .iter()
        .filter(|m| m.op == MatchOp::Equal && !m.value.is_empty())
    {
        if let Some((_, c)) = present.iter().find(|(l, _)| *l == m.name) {
            let e = cast_expr(column(c), DataType::Utf8).eq(lit(m.value.as_str()));
            pre = Some(pre.map_or(e.clone(), |p| p.and(e)));
        }
    }
    if let Some((tag, v)) = d.only {
        let e = column(tag).eq(lit(v));
        pre = Some(pre.map_or(e.clone(), |p| p.and(e)));
    }
    let mut cols: Vec<Expr> = present
        .iter()
        .enumerate()
        .map(|(i, (_, c))| cast_expr(column(c), DataType::Utf8).alias(format!("l{i}")))
        .collect();
    cols.push(t_ms.alias("t_ms"));
    cols.push(amount.alias("amt"));
    let base_df = || async {
        let df = ctx
            .table(datafusion::common::TableReference::bare(d.table))
            .await?;
        let df = match &pre {
            Some(p) => df.filter(p.clone())?,
            None => df,
        };
        df.select(cols.clone())
    };
    let n = present.len();
    let keys = |b: &RecordBatch, r: usize, out: &mut Vec<String>| {
        out.clear();
        for i in 0..n {
            let a = b.column(i).as_string::<i32>();
            out.push(if a.is_valid(r) {
                a.value(r).to_string()
            } else {
                String::new()
            });
        }
    };
    // What was counted before the window: the counter's starting value.
    let before = base_df()
        .await?
        .filter(column("t_ms").lt(lit(sel.min_t)))?
        .aggregate(
            (0..n).map(|i| column(&format!("l{i}"))).collect(),
            vec![sum(column("amt")).alias("base")],
        )?
        .collect()
        .await?;
    let mut running: HashMap<Vec<String>, i64> = HashMap::new();
    let mut key = Vec::new();
    for b in &before {
        let base = cast(b.column(n), &DataType::Int64)?;
        let base = base.as_primitive::<arrow::datatypes::Int64Type>();
        for r in 0..b.num_rows() {
            keys(b, r, &mut key);
            running.insert(key.clone(), base.value(r));
        }
    }
    let within = base_df()
        .await?
        .filter(
            column("t_ms")
                .gt_eq(lit(sel.min_t))
                .and(column("t_ms").lt_eq(lit(sel.max_t))),
        )?
        .sort(vec![column("t_ms").sort(true, false)])?
        .collect()
        .await?;
    let mut series: HashMap<Vec<String>, Vec<Sample>> = HashMap::new();
    for b in &within {
        let t = b.column(n).as_primitive::<arrow::datatypes::Int64Type>();
        let amt = b
            .column(n + 1)
            .as_primitive::<arrow::datatypes::Int64Type>();
        for r in 0..b.num_rows() {
            keys(b, r, &mut key);
            let acc = running.entry(key.clone()).or_insert(0);
            *acc += amt.value(r);
            let samples = series.entry(key.clone()).or_default();
            let ts = t.value(r);
            // Several rows can land on one millisecond: one sample with the total.
            match samples.last_mut() {
                Some(last) if last.t == ts => last.v = *acc as f64,
                _ => samples.push(Sample {
                    t: ts,
                    v: *acc as f64,
                }),
            }
        }
    }
    let mut out = Vec::new();
    for (key, samples) in series {
        *total += samples.len();
        let labels = Labels::from_pairs(
            present
                .iter()
                .zip(key)
                .map(|((l, _), v)| (l.to_string(), v))
                .chain(std::iter::once((
                    METRIC_NAME.to_string(),
                    d.metric.to_string(),
                ))),
        );
        if Matcher::all_match(&sel.matchers, &labels) {
            out.push(Series { labels, samples });
        }
    }
    Ok(out)
}

fn cast_expr(e: Expr, t: DataType) -> Expr {
    Expr::Cast(datafusion::logical_expr::Cast::new(Box::new(e), t))
}
