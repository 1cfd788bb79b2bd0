//! `stats <agg>, … by <key>, …` and the per-series `rate`.
//!
//! `rate(counter, window)` inside an aggregate is the per-second increase of each series
//! (a GPU of `gpus`, a worker of `heartbeats`) between consecutive samples, computed with
//! window functions before the aggregate:
//!
//! ```text
//! Δv = v - LAG(v)  OVER (PARTITION BY <series> ORDER BY time)
//! Δt = t - LAG(t)  OVER (…)                        in seconds
//! rate = (Δv >= 0 ? Δv : v) / Δt   when 0 < Δt <= window, else null (ignored)
//! ```
//!
//! A negative Δv is a counter reset: the counter restarted from zero, so `v` itself is the
//! increase since. Sample pairs further apart than `window` (a gap in the data) give no rate.

use super::expr::{arithmetic_type, misplaced};
use super::fill::Bucketed;
use super::functions::Kind;
use super::{Col, Lowerer};
use crate::ast::{BinOp, Expr, ExprKind, Named, UnaryOp};
use crate::catalog::{Ty, interval, quote};
use crate::error::Error;

/// A `bucket(…)` key: its length and time zone.
#[derive(Debug, Clone)]
pub(crate) struct BucketKey {
    pub ms: i64,
    pub tz: Option<String>,
}

/// One `rate(field, window)` of a stats step.
struct Rate {
    /// The counter column.
    column: String,
}

impl Lowerer<'_, '_> {
    pub(crate) fn stats(&mut self, aggs: &[Named], by: &[Named]) -> Result<(), Error> {
        let mut out: Vec<(String, Col)> = Vec::new();
        let mut group = Vec::new();
        let mut names: Vec<(String, crate::ast::Span)> = Vec::new();
        let mut bucket: Option<(String, BucketKey)> = None;
        for key in by {
            let (sql, ty, default, b) = self.key(&key.expr)?;
            let name = match (&key.alias, default) {
                (Some(a), _) => a.name.clone(),
                (None, Some(d)) => d,
                (None, None) => return Err(unnamed(self, &key.expr, "key")),
            };
            if let Some(b) = b {
                if bucket.is_some() {
                    return Err(Error::Misplaced {
                        pos: self.loc.pos(key.expr.span),
                        what: "a second `bucket(…)` key:".into(),
                        rule: "a stats step has at most one",
                    });
                }
                bucket = Some((name.clone(), b));
            }
            group.push(sql.clone());
            names.push((name.clone(), key.expr.span));
            out.push((sql, Col { name, ty }));
        }
        let bucket_ms = bucket.as_ref().map(|(_, b)| b.ms);
        let mut rates: Vec<Rate> = Vec::new();
        for agg in aggs {
            let (sql, ty, default) = self.aggregate_item(&agg.expr, &mut rates, bucket_ms)?;
            let name = match (&agg.alias, default) {
                (Some(a), _) => a.name.clone(),
                (None, Some(d)) => d,
                (None, None) => return Err(unnamed(self, &agg.expr, "aggregate")),
            };
            names.push((name.clone(), agg.expr.span));
            out.push((sql, Col { name, ty }));
        }
        for (i, (name, span)) in names.iter().enumerate() {
            if names[..i].iter().any(|(n, _)| n == name) {
                return Err(Error::DuplicateColumn {
                    pos: self.loc.pos(*span),
                    name: name.clone(),
                });
            }
        }
        if !rates.is_empty() {
            self.push_rate_step(&rates, aggs)?;
        }
        let list: Vec<String> = out
            .iter()
            .map(|(sql, c)| format!("{sql} AS {}", quote(&c.name)))
            .collect();
        let prev = self.rel();
        let mut select = format!("SELECT {} FROM {prev}", list.join(", "));
        if !group.is_empty() {
            select.push_str(&format!(" GROUP BY {}", group.join(", ")));
        }
        self.push(select);
        let range = self.range.take();
        let cols: Vec<Col> = out.into_iter().map(|(_, c)| c).collect();
        self.reset_after_stats(cols.clone());
        self.bucket = bucket.map(|(column, key)| Bucketed {
            column,
            key,
            keys: by.len() - 1,
            range,
            cols,
        });
        Ok(())
    }

    /// A stats item: an aggregate, or arithmetic and scalar functions over aggregates and
    /// numbers (`sum(amount) / gpu_hours()`). Its SQL, type and default column name.
    fn aggregate_item(
        &self,
        e: &Expr,
        rates: &mut Vec<Rate>,
        bucket_ms: Option<i64>,
    ) -> Result<(String, Ty, Option<String>), Error> {
        match &e.kind {
            ExprKind::Binary { op, left, right }
                if matches!(op, BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div) =>
            {
                let (l, lt, _) = self.aggregate_item(left, rates, bucket_ms)?;
                let (r, rt, _) = self.aggregate_item(right, rates, bucket_ms)?;
                let ty = arithmetic_type(*op, lt, rt);
                Ok((format!("({l} {} {r})", op.sql()), ty, None))
            }
            ExprKind::Unary {
                op: UnaryOp::Neg,
                expr,
            } => {
                let (s, ty, _) = self.aggregate_item(expr, rates, bucket_ms)?;
                Ok((format!("(- {s})"), ty, None))
            }
            ExprKind::Int(_) | ExprKind::Float(_) | ExprKind::Null => {
                let (s, ty) = self.expr(e)?;
                Ok((s, ty, None))
            }
            ExprKind::Call { name, args }
                if super::functions::lookup(&name.name)
                    .is_some_and(|f| f.kind == Kind::Scalar && f.name != "now")
                    && !args.is_empty() =>
            {
                let f = self.function(name, args.len())?;
                let mut lowered = Vec::new();
                for a in args {
                    let (s, ty, _) = self.aggregate_item(a, rates, bucket_ms)?;
                    lowered.push((s, ty));
                }
                let (sql, ty) = super::functions::scalar_sql(f.name, &lowered);
                Ok((sql, ty, None))
            }
            _ => self.aggregate(e, rates, bucket_ms),
        }
    }

    /// A `by` key: its SQL, type, default column name and, for `bucket(…)`, its length.
    #[allow(clippy::type_complexity)]
    fn key(&self, e: &Expr) -> Result<(String, Ty, Option<String>, Option<BucketKey>), Error> {
        match &e.kind {
            ExprKind::Call { name, args } if name.name == "bucket" => {
                self.function(name, args.len())?;
                let ExprKind::Duration(ms) = args[0].kind else {
                    return Err(Error::Type {
                        pos: self.loc.pos(args[0].span),
                        function: "bucket".into(),
                        expected: "a duration such as 1h",
                        argument: args[0].to_string(),
                        found: "not a duration literal",
                    });
                };
                if ms <= 0 {
                    return Err(Error::Value {
                        pos: self.loc.pos(args[0].span),
                        message: "a bucket must be longer than zero",
                    });
                }
                let time = self.resolve(&crate::ast::FieldRef {
                    qualifier: None,
                    name: "time".into(),
                    span: e.span,
                })?;
                let time = quote(&time.name);
                let (sql, tz) = match args.get(1) {
                    None => (format!("date_bin({}, {time})", interval(ms)), None),
                    Some(zone) => {
                        let (sql, tz) = self.zoned_bucket(zone, ms, args[0].span, &time)?;
                        (sql, Some(tz))
                    }
                };
                Ok((
                    sql,
                    Ty::Time,
                    Some("bucket".into()),
                    Some(BucketKey { ms, tz }),
                ))
            }
            ExprKind::Field(f) => {
                let c = self.resolve(f)?;
                Ok((quote(&c.name), c.ty, Some(f.name.clone()), None))
            }
            ExprKind::Call { name, .. } => {
                let (sql, ty) = self.expr(e)?;
                Ok((sql, ty, Some(name.name.clone()), None))
            }
            _ => {
                let (sql, ty) = self.expr(e)?;
                Ok((sql, ty, None, None))
            }
        }
    }

    /// `bucket(<d>, "<zone>")`: calendar units truncated in that zone (a day starts at the
    /// zone's midnight, daylight saving included). The SQL and the zone's name.
    fn zoned_bucket(
        &self,
        zone: &Expr,
        ms: i64,
        d_span: crate::ast::Span,
        time: &str,
    ) -> Result<(String, String), Error> {
        let ExprKind::Str(tz) = &zone.kind else {
            return Err(Error::Type {
                pos: self.loc.pos(zone.span),
                function: "bucket".into(),
                expected: "a time zone name such as \"Europe/Berlin\"",
                argument: zone.to_string(),
                found: "not a text literal",
            });
        };
        if tz.parse::<chrono_tz::Tz>().is_err() || tz.contains(['\'', '"']) {
            return Err(Error::Value {
                pos: self.loc.pos(zone.span),
                message: "unknown time zone: use an IANA name such as \"Europe/Berlin\", \
                          \"America/New_York\" or \"UTC\"",
            });
        }
        let unit = match ms {
            60_000 => "minute",
            3_600_000 => "hour",
            86_400_000 => "day",
            604_800_000 => "week",
            _ => {
                return Err(Error::Value {
                    pos: self.loc.pos(d_span),
                    message: "with a time zone, a bucket is 1m, 1h, 1d or 1w \
                              (calendar units in that zone)",
                });
            }
        };
        // The stored time is UTC without a zone: mark it UTC, then show it in the zone.
        let zoned = format!(
            "arrow_cast(arrow_cast({time}, 'Timestamp(Nanosecond, Some(\"UTC\"))'), \
             'Timestamp(Nanosecond, Some(\"{tz}\"))')"
        );
        Ok((format!("date_trunc('{unit}', {zoned})"), tz.clone()))
    }

    /// An aggregate item: its SQL, type and default column name.
    fn aggregate(
        &self,
        e: &Expr,
        rates: &mut Vec<Rate>,
        bucket_ms: Option<i64>,
    ) -> Result<(String, Ty, Option<String>), Error> {
        let ExprKind::Call { name, args } = &e.kind else {
            return Err(Error::Misplaced {
                pos: self.loc.pos(e.span),
                what: format!("`{e}`"),
                rule: "is not an aggregate: a stats item is count(), sum(x), avg(x), min(x), \
                       max(x) or count_distinct(x)",
            });
        };
        let f = self.function(name, args.len())?;
        if f.kind != Kind::Aggregate {
            return Err(Error::Misplaced {
                pos: self.loc.pos(e.span),
                what: format!("`{}`", name.name),
                rule: "is not an aggregate: a stats item is count(), sum(x), avg(x), min(x), \
                       max(x) or count_distinct(x)",
            });
        }
        if matches!(f.name, "gpu_hours" | "uptime") {
            let (sql, ty) = self.domain_aggregate(f.name, e, bucket_ms)?;
            return Ok((sql, ty, Some(f.name.to_string())));
        }
        let Some(arg) = args.first() else {
            return Ok(("count(*)".into(), Ty::Int, Some("count".into())));
        };
        let (arg_sql, arg_ty, arg_name) = match &arg.kind {
            ExprKind::Call { name: inner, args } if inner.name == "rate" => {
                self.function(inner, args.len())?;
                let (sql, column) = self.rate(arg, args, rates)?;
                (sql, Ty::Float, Some(format!("rate_{column}")))
            }
            ExprKind::Call { name: inner, .. }
                if super::functions::lookup(&inner.name)
                    .is_some_and(|g| g.kind != Kind::Scalar) =>
            {
                let kind = super::functions::lookup(&inner.name).map_or(Kind::Scalar, |g| g.kind);
                return Err(misplaced(self, arg, kind));
            }
            ExprKind::Field(fr) => {
                let c = self.resolve(fr)?;
                (quote(&c.name), c.ty, Some(fr.name.clone()))
            }
            _ => {
                let (sql, ty) = self.expr(arg)?;
                (sql, ty, None)
            }
        };
        if matches!(f.name, "sum" | "avg") && !arg_ty.numeric() {
            return Err(Error::Type {
                pos: self.loc.pos(arg.span),
                function: f.name.to_string(),
                expected: "a number",
                argument: arg.to_string(),
                found: arg_ty.describe(),
            });
        }
        let (sql, ty) = match f.name {
            "count" => (format!("count({arg_sql})"), Ty::Int),
            "count_distinct" => (format!("count(DISTINCT {arg_sql})"), Ty::Int),
            "avg" => (format!("avg({arg_sql})"), Ty::Float),
            // Sums of integers stay integers (money is integer µ).
            other => (format!("{other}({arg_sql})"), arg_ty),
        };
        Ok((sql, ty, arg_name.map(|n| format!("{}_{n}", f.name))))
    }

    /// `rate(field, window)`: the per-sample rate expression over the window columns that
    /// [`Self::push_rate_step`] adds, and the counter's column name.
    fn rate(
        &self,
        call: &Expr,
        args: &[Expr],
        rates: &mut Vec<Rate>,
    ) -> Result<(String, String), Error> {
        let telemetry = self.noun.and_then(|n| n.series_key().map(|k| (n, k)));
        let Some((_, _)) = telemetry else {
            return Err(Error::Misplaced {
                pos: self.loc.pos(call.span),
                what: "`rate`".into(),
                rule: "needs the raw rows of a telemetry source (gpus or heartbeats), \
                       before any stats or join",
            });
        };
        let ExprKind::Field(fr) = &args[0].kind else {
            return Err(Error::Type {
                pos: self.loc.pos(args[0].span),
                function: "rate".into(),
                expected: "a counter field",
                argument: args[0].to_string(),
                found: "an expression",
            });
        };
        let col = self.resolve(fr)?;
        if !col.ty.numeric() {
            return Err(Error::Type {
                pos: self.loc.pos(args[0].span),
                function: "rate".into(),
                expected: "a number",
                argument: fr.to_string(),
                found: col.ty.describe(),
            });
        }
        let ExprKind::Duration(window_ms) = args[1].kind else {
            return Err(Error::Type {
                pos: self.loc.pos(args[1].span),
                function: "rate".into(),
                expected: "a window such as 1m",
                argument: args[1].to_string(),
                found: "not a duration literal",
            });
        };
        if window_ms <= 0 {
            return Err(Error::Value {
                pos: self.loc.pos(args[1].span),
                message: "the rate window must be longer than zero",
            });
        }
        let k = rates.len();
        rates.push(Rate {
            column: col.name.clone(),
        });
        let dv = quote(&format!("__dv{k}"));
        let v = format!("CAST({} AS DOUBLE)", quote(&col.name));
        let secs = window_ms as f64 / 1000.0;
        let sql = format!(
            "CASE WHEN \"__dt\" > 0 AND \"__dt\" <= {secs:?} THEN \
             (CASE WHEN {dv} >= 0 THEN {dv} ELSE {v} END) / \"__dt\" END"
        );
        Ok((sql, col.name.clone()))
    }

    /// The step before a stats step with rates: every column plus `__dt` (seconds since the
    /// series' previous sample) and `__dv<k>` (the change of the k-th counter).
    fn push_rate_step(&mut self, rates: &[Rate], aggs: &[Named]) -> Result<(), Error> {
        let Some(series) = self.noun.and_then(|n| n.series_key()) else {
            return Ok(());
        };
        let span = aggs.first().map_or_else(Default::default, |a| a.expr.span);
        let mut partition = Vec::new();
        for tag in series.iter().chain(&["time"]) {
            let Some(c) = self.cols.iter().find(|c| c.name == *tag) else {
                return Err(Error::Misplaced {
                    pos: self.loc.pos(span),
                    what: format!("`rate` needs the series column `{tag}`, which"),
                    rule: "an earlier select dropped",
                });
            };
            if *tag != "time" {
                partition.push(quote(&c.name));
            }
        }
        let window = format!(
            "OVER (PARTITION BY {} ORDER BY \"time\")",
            partition.join(", ")
        );
        let t = "date_part('epoch', \"time\")";
        let mut extra = vec![format!("{t} - LAG({t}) {window} AS \"__dt\"")];
        for (k, r) in rates.iter().enumerate() {
            let v = format!("CAST({} AS DOUBLE)", quote(&r.column));
            extra.push(format!("{v} - LAG({v}) {window} AS \"__dv{k}\""));
        }
        let prev = self.rel();
        self.push(format!("SELECT *, {} FROM {prev}", extra.join(", ")));
        Ok(())
    }
}

fn unnamed(l: &Lowerer<'_, '_>, e: &Expr, what: &str) -> Error {
    Error::Misplaced {
        pos: l.loc.pos(e.span),
        what: format!("the {what} `{e}` has no column name:"),
        rule: "name it with `as`",
    }
}
