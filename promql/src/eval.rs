//! The PromQL evaluator: instant and range queries over a [`Queryable`].
//!
//! ```text
//!  Expr ──selections()──▶ [Selection] ──Queryable::select──▶ prefetched series
//!    │                                                          │
//!    └──────────── Evaluator::eval(expr, t) per step ◀──────────┘
//!                        │ (selectors, subqueries, functions, binary ops,
//!                        ▼  aggregations; delayed __name__ removal)
//!                 QueryResult { value, warnings, infos }
//! ```
//!
//! Evaluation is step by step: a range query evaluates the expression at every step
//! and merges the per-step vectors into series keyed by their final labels. Before
//! evaluating, every selector's exact time span (see [`selections`]) is read once, so
//! the evaluator never reads outside what [`selections`] reported.
//!
//! Semantics follow Prometheus 3: windows are left-open `(t - range, t]`, lookback is
//! `(t - lookback, t]`, staleness markers end a series, subquery steps are aligned to
//! absolute multiples of the step, and the metric name is removed only at the end of
//! evaluation (delayed name removal), so `label_replace` can still read it.

mod aggregate;
mod binary;
mod cursor;
mod error;
mod range_agg;
mod selector;

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

pub use error::{ErrorKind, EvalError};

use crate::ast::{AtModifier, Expr, Matcher, UnaryOp, ValueType, VectorSelector};
use crate::storage::Queryable;
use crate::value::{Labels, QueryResult, Sample, Series, Value, is_stale_nan};

/// Knobs of one evaluation.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// How far back an instant vector selector looks for a sample (Prometheus'
    /// `--query.lookback-delta`, default 5 minutes).
    pub lookback_ms: i64,
    /// Most samples a query may hold, like Prometheus' `--query.max-samples`: the
    /// samples read from storage for all selectors (they are held for the whole
    /// evaluation), and separately those in flight in one step plus the points of a
    /// range query's result so far. Exceeding it fails with
    /// [`EvalError::TooManySamples`].
    pub max_samples: usize,
    /// Fail with [`EvalError::Timeout`] once this instant has passed.
    pub deadline: Option<Instant>,
    /// Set to `true` (from any thread) to stop the evaluation with
    /// [`EvalError::Canceled`], e.g. when the HTTP client went away.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Step of a subquery written without one (`x[1h:]`); Prometheus uses the global
    /// evaluation interval, 1 minute by default.
    pub default_subquery_step_ms: i64,
    /// The coarsest per-bucket data (rollups) a source may answer any selection from, where
    /// the answer then is the series thinned to the last sample of each bucket rather than
    /// the raw data's (Thanos' `max_source_resolution`); 0 allows only the rollups that give
    /// exactly the raw data's answer ([`Reads`]).
    pub max_source_resolution_ms: i64,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            lookback_ms: 300_000,
            max_samples: 50_000_000,
            deadline: None,
            cancel: None,
            default_subquery_step_ms: 60_000,
            max_source_resolution_ms: 0,
        }
    }
}

/// The span one selector of an expression will read: the adapter prefetches these.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub matchers: Vec<Matcher>,
    /// Inclusive bounds in milliseconds.
    pub min_t: i64,
    pub max_t: i64,
    /// What the evaluator computes from the samples.
    pub reads: Reads,
}

/// What evaluating a selector computes from its samples, so that a source may answer with
/// per-bucket aggregates (rollups) wherever the evaluator's result is provably the same.
/// Buckets are `(e - m, e]` for multiples `e` of a width `m` (ms); evaluation times are
/// `first + k * step` (`first` alone when `step` is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Every sample: the answer to any selection.
    Raw,
    /// An instant selector: at each evaluation time `T`, the last sample in
    /// `(T - lookback, T]`. When every `T` is a bucket end, that sample is the last of its
    /// bucket, so the last sample of every bucket (at its own time) gives the same result, for
    /// any lookback and for `timestamp()` too.
    Last {
        first: i64,
        step: i64,
    },
    /// The argument of `max_over_time` (`Max`) or `min_over_time` (`Min`): windows
    /// `(T - range, T]`. When every `T` and `range` are multiples of the bucket width, a
    /// window is whole buckets, so each bucket's largest (smallest) sample, placed at a time
    /// within its bucket, gives the same result (the NaN rule composes: NaN only if all are).
    Max {
        first: i64,
        step: i64,
        range: i64,
    },
    Min {
        first: i64,
        step: i64,
        range: i64,
    },
}

impl Reads {
    /// Whether buckets `m` ms wide give the evaluator the same result.
    pub fn aligned(&self, m: i64) -> bool {
        if m <= 0 {
            return false;
        }
        let grid = |first: i64, step: i64| first.rem_euclid(m) == 0 && step.rem_euclid(m) == 0;
        match *self {
            Reads::Raw => false,
            Reads::Last { first, step } => grid(first, step),
            Reads::Max { first, step, range } | Reads::Min { first, step, range } => {
                grid(first, step) && range > 0 && range % m == 0
            }
        }
    }
}

/// One selector occurrence with its span, keyed by its address in the tree.
struct SelNode<'e> {
    sel: &'e VectorSelector,
    /// Range selectors never need staleness markers.
    matrix: bool,
    min_t: i64,
    max_t: i64,
    reads: Reads,
}

impl SelNode<'_> {
    fn selection(&self) -> Selection {
        Selection {
            matchers: self.sel.matchers.clone(),
            min_t: self.min_t,
            max_t: self.max_t,
            reads: self.reads,
        }
    }
}

fn floor_div(a: i64, b: i64) -> i64 {
    a.div_euclid(b)
}

/// Resolves an `@` modifier against the query's start and end.
fn at_time(at: Option<AtModifier>, start: i64, end: i64) -> Option<i64> {
    at.map(|a| match a {
        AtModifier::Timestamp(t) => t,
        AtModifier::Start => start,
        AtModifier::End => end,
    })
}

/// Inner evaluation times of a subquery evaluated at reference times in
/// `[ref_lo, ref_hi]`: multiples of `step` in `(ref_lo - range, ref_hi]`.
///
/// Times saturate at the ends of `i64` (an `@` near them plus an offset or range
/// must not wrap or panic).
fn subquery_steps(ref_lo: i64, ref_hi: i64, range: i64, step: i64) -> (i64, i64) {
    let first = floor_div(ref_lo.saturating_sub(range), step)
        .saturating_add(1)
        .saturating_mul(step);
    let last = floor_div(ref_hi, step).saturating_mul(step);
    (first, last)
}

struct Walk<'o> {
    start: i64,
    end: i64,
    opts: &'o EvalOptions,
}

impl Walk<'_> {
    /// Collects every selector under `e` evaluated at times in `[lo, hi]`: `lo + k * step`
    /// (`lo` alone when `step` is 0), or times unknown when `step` is `None` (every selector
    /// then reads [`Reads::Raw`]).
    fn walk<'e>(
        &self,
        e: &'e Expr,
        lo: i64,
        hi: i64,
        step: Option<i64>,
        out: &mut Vec<SelNode<'e>>,
    ) {
        if lo > hi {
            return;
        }
        match e {
            Expr::Number(_) | Expr::String(_) => {}
            Expr::VectorSelector(vs) => {
                let (a, b) = self.refs(vs.at, vs.offset_ms, lo, hi);
                out.push(SelNode {
                    sel: vs,
                    matrix: false,
                    min_t: a.saturating_sub(self.opts.lookback_ms).saturating_add(1),
                    max_t: b,
                    reads: self
                        .grid(vs.at, vs.offset_ms, lo, step)
                        .map_or(Reads::Raw, |(first, step)| Reads::Last { first, step }),
                });
            }
            Expr::MatrixSelector { selector, range_ms } => {
                self.matrix(selector, *range_ms, lo, hi, Reads::Raw, out)
            }
            Expr::Call { func, args }
                if matches!(func.as_str(), "max_over_time" | "min_over_time")
                    && args.len() == 1
                    && matches!(args[0], Expr::MatrixSelector { .. }) =>
            {
                let Expr::MatrixSelector { selector, range_ms } = &args[0] else {
                    unreachable!("matched above")
                };
                let range = *range_ms;
                let reads = match self.grid(selector.at, selector.offset_ms, lo, step) {
                    Some((first, step)) if func == "max_over_time" => {
                        Reads::Max { first, step, range }
                    }
                    Some((first, step)) => Reads::Min { first, step, range },
                    None => Reads::Raw,
                };
                self.matrix(selector, range, lo, hi, reads, out)
            }
            Expr::Subquery(sq) => {
                let (a, b) = self.refs(sq.at, sq.offset_ms, lo, hi);
                let step = sq
                    .step_ms
                    .unwrap_or(self.opts.default_subquery_step_ms)
                    .max(1);
                let (f, l) = subquery_steps(a, b, sq.range_ms, step);
                // Inner steps are absolute multiples of the subquery's step.
                self.walk(&sq.expr, f, l, Some(step), out);
            }
            Expr::Paren(x) | Expr::Unary { expr: x, .. } => self.walk(x, lo, hi, step, out),
            Expr::Binary(b) => {
                self.walk(&b.lhs, lo, hi, step, out);
                self.walk(&b.rhs, lo, hi, step, out);
            }
            Expr::Call { args, .. } => {
                for a in args {
                    self.walk(a, lo, hi, step, out);
                }
            }
            Expr::Aggregate(a) => {
                if let Some(p) = &a.param {
                    self.walk(p, lo, hi, step, out);
                }
                self.walk(&a.expr, lo, hi, step, out);
            }
        }
    }

    fn matrix<'e>(
        &self,
        selector: &'e VectorSelector,
        range_ms: i64,
        lo: i64,
        hi: i64,
        reads: Reads,
        out: &mut Vec<SelNode<'e>>,
    ) {
        let (a, b) = self.refs(selector.at, selector.offset_ms, lo, hi);
        out.push(SelNode {
            sel: selector,
            matrix: true,
            min_t: a.saturating_sub(range_ms).saturating_add(1),
            max_t: b,
            reads,
        });
    }

    /// The times a selector is evaluated at, after `@` and `offset`: `(first, step)`.
    fn grid(
        &self,
        at: Option<AtModifier>,
        offset: i64,
        lo: i64,
        step: Option<i64>,
    ) -> Option<(i64, i64)> {
        match at_time(at, self.start, self.end) {
            Some(t) => Some((t.saturating_sub(offset), 0)),
            None => step.map(|s| (lo.saturating_sub(offset), s)),
        }
    }

    fn refs(&self, at: Option<AtModifier>, offset: i64, lo: i64, hi: i64) -> (i64, i64) {
        match at_time(at, self.start, self.end) {
            Some(t) => (t.saturating_sub(offset), t.saturating_sub(offset)),
            None => (lo.saturating_sub(offset), hi.saturating_sub(offset)),
        }
    }
}

/// For every selector in `expr`, the span of samples evaluating it over
/// `[start, end]` reads (for an instant query `start == end`). Lookback, ranges,
/// offsets, `@` and subquery windows are accounted for; the bounds are inclusive.
///
/// For a range query use [`range_selections`]: without the step, the evaluation times
/// between `start` and `end` are unknown and every selection reads [`Reads::Raw`].
pub fn selections(expr: &Expr, start: i64, end: i64, opts: &EvalOptions) -> Vec<Selection> {
    let step = (start == end).then_some(0);
    walk_selections(expr, start, end, step, opts)
}

/// [`selections`] for a range query evaluated every `step` ms from `start`.
pub fn range_selections(
    expr: &Expr,
    start: i64,
    end: i64,
    step: i64,
    opts: &EvalOptions,
) -> Vec<Selection> {
    walk_selections(expr, start, end, Some(step), opts)
}

fn walk_selections(
    expr: &Expr,
    start: i64,
    end: i64,
    step: Option<i64>,
    opts: &EvalOptions,
) -> Vec<Selection> {
    let mut nodes = Vec::new();
    Walk { start, end, opts }.walk(expr, start, end, step, &mut nodes);
    nodes.iter().map(SelNode::selection).collect()
}

/// Evaluates `expr` at time `t` (ms).
pub fn instant_query(
    q: &dyn Queryable,
    expr: &Expr,
    t: i64,
    opts: &EvalOptions,
) -> Result<QueryResult, EvalError> {
    let ev = Evaluator::new(q, expr, t, t, 0, opts)?;
    ev.check_deadline("query evaluation")?;
    let value = match ev.eval(expr, t)? {
        Val::Scalar(v) => Value::Scalar { t, v },
        Val::Str(s) => Value::String { t, s },
        Val::Vector(v) => {
            let v = cleanup(v)?;
            Value::Vector(
                v.into_iter()
                    .map(|s| (s.labels, Sample { t, v: s.v }))
                    .collect(),
            )
        }
        Val::Matrix(m) => {
            let mut out: Vec<Series> = Vec::with_capacity(m.len());
            let mut seen = std::collections::HashSet::new();
            for rs in m {
                let labels = if rs.drop_name {
                    rs.labels.without_name()
                } else {
                    rs.labels
                };
                if !seen.insert(labels.clone()) {
                    return Err(EvalError::DuplicateLabelset);
                }
                out.push(Series {
                    labels,
                    samples: rs.samples.into_owned(),
                });
            }
            Value::Matrix(out)
        }
    };
    Ok(ev.finish(value))
}

/// Evaluates `expr` at every `step` from `start` to `end` (ms, inclusive) and returns
/// a matrix sorted by labels. The expression must be a scalar or an instant vector.
pub fn range_query(
    q: &dyn Queryable,
    expr: &Expr,
    start: i64,
    end: i64,
    step: i64,
    opts: &EvalOptions,
) -> Result<QueryResult, EvalError> {
    if step <= 0 {
        return Err(EvalError::Unsupported(
            "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
        ));
    }
    if end < start {
        return Err(EvalError::Unsupported(
            "end timestamp must not be before start time".into(),
        ));
    }
    match expr.value_type() {
        ValueType::Scalar | ValueType::Vector => {}
        other => {
            return Err(EvalError::Unsupported(format!(
                "invalid expression type {:?} for range query, must be Scalar or instant Vector",
                match other {
                    ValueType::Matrix => "range vector",
                    ValueType::String => "string",
                    _ => "unknown",
                }
            )));
        }
    }
    let ev = Evaluator::new(q, expr, start, end, step, opts)?;
    let steps = || -> Vec<i64> {
        std::iter::successors(Some(start), |t| t.checked_add(step))
            .take_while(|&t| t <= end)
            .collect()
    };
    let at_once = if let Some((a, vs)) = range_agg::applies(expr) {
        Some(ev.range_aggregate(a, vs, &steps())?)
    } else if let Some(vs) = range_agg::plain_selector(expr) {
        ev.range_select(vs, &steps())?
    } else {
        None
    };
    if let Some(mut out) = at_once {
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        return Ok(ev.finish(Value::Matrix(out)));
    }
    stepwise(ev, expr, start, end, step, opts)
}

/// [`range_query`] evaluated step by step, every query taking the same path.
#[cfg(test)]
pub(crate) fn range_query_stepwise(
    q: &dyn Queryable,
    expr: &Expr,
    start: i64,
    end: i64,
    step: i64,
    opts: &EvalOptions,
) -> Result<QueryResult, EvalError> {
    let ev = Evaluator::new(q, expr, start, end, step, opts)?;
    stepwise(ev, expr, start, end, step, opts)
}

/// The general range query: `expr` evaluated at each step, its vectors' samples appended
/// to their series.
fn stepwise(
    ev: Evaluator<'_>,
    expr: &Expr,
    start: i64,
    end: i64,
    step: i64,
    opts: &EvalOptions,
) -> Result<QueryResult, EvalError> {
    let mut series: HashMap<Labels, (Vec<Sample>, i64)> = HashMap::new();
    let mut points = 0usize;
    let mut t = start;
    while t <= end {
        ev.check_deadline("query evaluation")?;
        ev.in_flight.set(points);
        match ev.eval(expr, t)? {
            Val::Scalar(v) => {
                let e = series.entry(Labels::empty()).or_default();
                e.0.push(Sample { t, v });
                points += 1;
            }
            Val::Vector(v) => {
                // No `cleanup` here: a label set seen twice in one step is caught by the
                // per-series last step below, which saves hashing every label set twice.
                for mut s in v {
                    if s.drop_name {
                        s.labels = s.labels.without_name();
                    }
                    let e = series
                        .entry(s.labels)
                        .or_insert_with(|| (Vec::new(), i64::MIN));
                    if e.1 == t {
                        return Err(EvalError::DuplicateLabelset);
                    }
                    e.1 = t;
                    e.0.push(Sample { t, v: s.v });
                    points += 1;
                }
            }
            Val::Str(_) | Val::Matrix(_) => {
                return Err(EvalError::Internal(
                    "range query step produced a string or range vector".into(),
                ));
            }
        }
        if points > opts.max_samples {
            return Err(EvalError::TooManySamples {
                limit: opts.max_samples,
            });
        }
        t = match t.checked_add(step) {
            Some(next) => next,
            None => break,
        };
    }
    let mut out: Vec<Series> = series
        .into_iter()
        .map(|(labels, (samples, _))| Series { labels, samples })
        .collect();
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(ev.finish(Value::Matrix(out)))
}

/// Removes to-be-dropped metric names and rejects duplicate label sets.
fn cleanup(v: Vec<VSample>) -> Result<Vec<VSample>, EvalError> {
    let mut seen = std::collections::HashSet::with_capacity(v.len());
    let mut out = Vec::with_capacity(v.len());
    for mut s in v {
        if s.drop_name {
            s.labels = s.labels.without_name();
            s.drop_name = false;
        }
        if !seen.insert(s.labels.clone()) {
            return Err(EvalError::DuplicateLabelset);
        }
        out.push(s);
    }
    Ok(out)
}

/// One element of an instant vector during evaluation.
#[derive(Debug, Clone)]
pub(crate) struct VSample {
    pub labels: Labels,
    pub v: f64,
    /// The metric name is to be removed at the end of evaluation.
    pub drop_name: bool,
}

/// One series of a range vector during evaluation (borrowed from the prefetched data
/// for range selectors, owned for subqueries).
#[derive(Debug, Clone)]
pub(crate) struct RSeries<'a> {
    pub labels: Labels,
    pub samples: Cow<'a, [Sample]>,
    pub drop_name: bool,
}

/// A value during evaluation.
#[derive(Debug, Clone)]
pub(crate) enum Val<'a> {
    Scalar(f64),
    Str(String),
    Vector(Vec<VSample>),
    Matrix(Vec<RSeries<'a>>),
}

impl Val<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Val::Scalar(_) => "scalar",
            Val::Str(_) => "string",
            Val::Vector(_) => "instant vector",
            Val::Matrix(_) => "range vector",
        }
    }
}

/// Evaluation state for one query.
pub(crate) struct Evaluator<'o> {
    pub opts: &'o EvalOptions,
    /// Query start and end (for `@ start()`/`@ end()`, `start()`, `end()`).
    pub start: i64,
    pub end: i64,
    /// Query step (0 for instant queries).
    pub interval: i64,
    /// Prefetched series per selector node (by address), with their cursors.
    data: HashMap<usize, cursor::SelectorData>,
    warnings: RefCell<Vec<String>>,
    infos: RefCell<Vec<String>>,
    /// Samples held by the current step (plus the range result so far).
    in_flight: Cell<usize>,
    /// Inner results of subqueries by node address and inner step time. Successive
    /// outer steps of a range query share most inner steps; entries older than the
    /// current window are evicted.
    subquery_memo: RefCell<HashMap<usize, BTreeMap<i64, Rc<Val<'static>>>>>,
    /// Operand values computed ahead by [`Self::prepare`]: (node address, time, value).
    ready: RefCell<Vec<(usize, i64, Val<'static>)>>,
}

impl<'o> Evaluator<'o> {
    fn new(
        q: &dyn Queryable,
        expr: &Expr,
        start: i64,
        end: i64,
        interval: i64,
        opts: &'o EvalOptions,
    ) -> Result<Self, EvalError> {
        let mut nodes = Vec::new();
        Walk { start, end, opts }.walk(expr, start, end, Some(interval), &mut nodes);
        let mut data = HashMap::with_capacity(nodes.len());
        let mut loaded = 0usize;
        for n in nodes {
            if let Some(d) = opts.deadline
                && Instant::now() >= d
            {
                return Err(EvalError::Timeout {
                    stage: "reading series",
                });
            }
            let key = n.sel as *const VectorSelector as usize;
            let mut series = q.select_for(&n.selection())?;
            if n.matrix {
                for s in &mut series {
                    s.samples.retain(|x| !is_stale_nan(x.v));
                }
            }
            loaded += series.iter().map(|s| s.samples.len()).sum::<usize>();
            if loaded > opts.max_samples {
                return Err(EvalError::TooManySamples {
                    limit: opts.max_samples,
                });
            }
            // A selector evaluated under several spans (never in practice: each node
            // is walked once) keeps the first read.
            data.entry(key)
                .or_insert_with(|| cursor::SelectorData::new(series));
        }
        Ok(Self {
            opts,
            start,
            end,
            interval,
            data,
            warnings: RefCell::new(Vec::new()),
            infos: RefCell::new(Vec::new()),
            in_flight: Cell::new(0),
            subquery_memo: RefCell::new(HashMap::new()),
            ready: RefCell::new(Vec::new()),
        })
    }

    fn finish(self, value: Value) -> QueryResult {
        QueryResult {
            value,
            warnings: self.warnings.into_inner(),
            infos: self.infos.into_inner(),
        }
    }

    /// Records a `PromQL warning: ...` annotation (once).
    pub fn warn(&self, msg: String) {
        let msg = format!("PromQL warning: {msg}");
        let mut w = self.warnings.borrow_mut();
        if !w.contains(&msg) {
            w.push(msg);
        }
    }

    /// Records a `PromQL info: ...` annotation (once).
    pub fn info(&self, msg: String) {
        let msg = format!("PromQL info: {msg}");
        let mut w = self.infos.borrow_mut();
        if !w.contains(&msg) {
            w.push(msg);
        }
    }

    /// Fails when the deadline has passed or the query was cancelled.
    pub fn check_deadline(&self, stage: &'static str) -> Result<(), EvalError> {
        if let Some(c) = &self.opts.cancel
            && c.load(Ordering::Relaxed)
        {
            return Err(EvalError::Canceled { stage });
        }
        if let Some(d) = self.opts.deadline
            && Instant::now() >= d
        {
            return Err(EvalError::Timeout { stage });
        }
        Ok(())
    }

    /// Counts `n` more samples in flight, failing over the limit.
    pub fn add_samples(&self, n: usize) -> Result<(), EvalError> {
        let c = self.in_flight.get() + n;
        self.in_flight.set(c);
        if c > self.opts.max_samples {
            return Err(EvalError::TooManySamples {
                limit: self.opts.max_samples,
            });
        }
        Ok(())
    }

    /// The prefetched series of selector `vs` and their cursors (none if it was not
    /// prefetched, which [`Walk`] rules out).
    pub(super) fn selector_data(&self, vs: &VectorSelector) -> Option<&cursor::SelectorData> {
        self.data.get(&(vs as *const VectorSelector as usize))
    }

    /// The reference time of a selector or subquery evaluated at `t`.
    pub fn ref_time(&self, at: Option<AtModifier>, offset: i64, t: i64) -> i64 {
        at_time(at, self.start, self.end)
            .unwrap_or(t)
            .saturating_sub(offset)
    }

    /// Evaluates `e` at time `t`.
    ///
    /// This and the functions it recurses through keep small frames: each level of
    /// the tree puts them on the stack once, and the parser's `MAX_DEPTH` is chosen so
    /// that the deepest tree fits a 2 MiB thread stack in a debug build. The bulk of
    /// each operation runs after its operands are evaluated, in functions of its own.
    pub fn eval<'s>(&'s self, e: &Expr, t: i64) -> Result<Val<'s>, EvalError> {
        if let Some(v) = self.take_ready(e, t) {
            return Ok(v);
        }
        match e {
            Expr::Number(v) => Ok(Val::Scalar(*v)),
            Expr::String(s) => Ok(Val::Str(s.clone())),
            Expr::Paren(x) => self.eval(x, t),
            Expr::VectorSelector(vs) => self.eval_vector_selector(vs, t, false).map(Val::Vector),
            Expr::MatrixSelector { selector, range_ms } => self
                .eval_matrix_selector(selector, *range_ms, t)
                .map(Val::Matrix),
            Expr::Subquery(sq) => self.eval_subquery(sq, t).map(Val::Matrix),
            Expr::Unary { op, expr } => {
                let v = self.eval(expr, t)?;
                unary(*op, v)
            }
            Expr::Binary(b) => self.eval_binary(b, t),
            Expr::Aggregate(a) => {
                let base = self.ready.borrow().len();
                let r = self
                    .prepare([&a.expr].into_iter().chain(&a.param), t)
                    .and_then(|()| self.eval_aggregate(a, t));
                self.ready.borrow_mut().truncate(base);
                r
            }
            Expr::Call { func, args } => {
                let base = self.ready.borrow().len();
                let r = self
                    .prepare(args.iter(), t)
                    .and_then(|()| crate::functions::call(self, func, args, t));
                self.ready.borrow_mut().truncate(base);
                r
            }
        }
    }

    /// Evaluates the operands of a call or aggregation that are themselves calls,
    /// aggregations or operators, in order, and keeps their values for [`Self::eval`]
    /// to hand out when the function asks for them. So the recursion into deep
    /// operands runs in this small frame instead of the function's large one.
    /// Literals and selectors (leaves, whose range values borrow from `self`) are left
    /// to the function. Values are keyed by node and time, and whatever the function did
    /// not ask for is dropped when it returns (the caller truncates the list back).
    fn prepare<'x>(
        &self,
        operands: impl Iterator<Item = &'x Expr>,
        t: i64,
    ) -> Result<(), EvalError> {
        for e in operands {
            if !matches!(
                e,
                Expr::Number(_)
                    | Expr::String(_)
                    | Expr::VectorSelector(_)
                    | Expr::MatrixSelector { .. }
            ) {
                let v = match self.eval(e, t)? {
                    Val::Scalar(x) => Val::Scalar(x),
                    Val::Str(s) => Val::Str(s),
                    Val::Vector(v) => Val::Vector(v),
                    // A subquery's series are its own (`Cow::Owned`): no copy here.
                    Val::Matrix(m) if m.iter().all(|s| matches!(s.samples, Cow::Owned(_))) => {
                        Val::Matrix(
                            m.into_iter()
                                .map(|s| RSeries {
                                    labels: s.labels,
                                    samples: Cow::Owned(s.samples.into_owned()),
                                    drop_name: s.drop_name,
                                })
                                .collect(),
                        )
                    }
                    Val::Matrix(_) => continue,
                };
                self.ready
                    .borrow_mut()
                    .push((e as *const Expr as usize, t, v));
            }
        }
        Ok(())
    }

    /// The value [`Self::prepare`] computed for `e` at `t`, if any (handed out once).
    fn take_ready(&self, e: &Expr, t: i64) -> Option<Val<'static>> {
        let mut ready = self.ready.borrow_mut();
        if ready.is_empty() {
            return None;
        }
        let key = e as *const Expr as usize;
        let i = ready.iter().position(|(k, rt, _)| *k == key && *rt == t)?;
        Some(ready.swap_remove(i).2)
    }

    /// Evaluates `e` and requires an instant vector.
    pub fn eval_vector(&self, e: &Expr, t: i64) -> Result<Vec<VSample>, EvalError> {
        match self.eval(e, t)? {
            Val::Vector(v) => Ok(v),
            other => Err(EvalError::Unsupported(format!(
                "expected an instant vector, got {} in {e}",
                other.type_name()
            ))),
        }
    }

    /// Evaluates `e` and requires a scalar.
    pub fn eval_scalar(&self, e: &Expr, t: i64) -> Result<f64, EvalError> {
        match self.eval(e, t)? {
            Val::Scalar(v) => Ok(v),
            other => Err(EvalError::Unsupported(format!(
                "expected a scalar, got {} in {e}",
                other.type_name()
            ))),
        }
    }

    /// Evaluates `e` and requires a string.
    pub fn eval_string(&self, e: &Expr, t: i64) -> Result<String, EvalError> {
        match self.eval(e, t)? {
            Val::Str(s) => Ok(s),
            other => Err(EvalError::Unsupported(format!(
                "expected a string, got {} in {e}",
                other.type_name()
            ))),
        }
    }

    /// Evaluates `e` and requires a range vector.
    pub fn eval_matrix<'s>(&'s self, e: &Expr, t: i64) -> Result<Vec<RSeries<'s>>, EvalError> {
        match self.eval(e, t)? {
            Val::Matrix(m) => Ok(m),
            other => Err(EvalError::Unsupported(format!(
                "expected a range vector, got {} in {e}",
                other.type_name()
            ))),
        }
    }
}

/// Unary `+`/`-` on an evaluated operand.
fn unary(op: UnaryOp, v: Val<'_>) -> Result<Val<'_>, EvalError> {
    match (op, v) {
        (UnaryOp::Pos, v) => Ok(v),
        (UnaryOp::Neg, Val::Scalar(x)) => Ok(Val::Scalar(-x)),
        (UnaryOp::Neg, Val::Vector(mut v)) => {
            for s in &mut v {
                s.v = -s.v;
                s.drop_name = true;
            }
            Ok(Val::Vector(v))
        }
        (UnaryOp::Neg, other) => Err(EvalError::Unsupported(format!(
            "unary expression only allowed on expressions of type scalar or instant vector, got {}",
            other.type_name()
        ))),
    }
}

#[cfg(test)]
mod reads_tests;
#[cfg(test)]
mod tests;
