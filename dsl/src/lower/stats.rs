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

use super::expr::misplaced;
use super::functions::Kind;
use super::{Col, Lowerer};
use crate::ast::{Expr, ExprKind, Named};
use crate::catalog::{Ty, interval, quote};
use crate::error::Error;

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
        for key in by {
            let (sql, ty, default) = self.key(&key.expr)?;
            let name = match (&key.alias, default) {
                (Some(a), _) => a.name.clone(),
                (None, Some(d)) => d,
                (None, None) => return Err(unnamed(self, &key.expr, "key")),
            };
            group.push(sql.clone());
            names.push((name.clone(), key.expr.span));
            out.push((sql, Col { name, ty }));
        }
        let mut rates: Vec<Rate> = Vec::new();
        for agg in aggs {
            let (sql, ty, default) = self.aggregate(&agg.expr, &mut rates)?;
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
        self.reset_after_stats(out.into_iter().map(|(_, c)| c).collect());
        Ok(())
    }

    /// A `by` key: its SQL, type and default column name.
    fn key(&self, e: &Expr) -> Result<(String, Ty, Option<String>), Error> {
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
                let sql = format!("date_bin({}, {})", interval(ms), quote(&time.name));
                Ok((sql, Ty::Time, Some("bucket".into())))
            }
            ExprKind::Field(f) => {
                let c = self.resolve(f)?;
                Ok((quote(&c.name), c.ty, Some(f.name.clone())))
            }
            ExprKind::Call { name, .. } => {
                let (sql, ty) = self.expr(e)?;
                Ok((sql, ty, Some(name.name.clone())))
            }
            _ => {
                let (sql, ty) = self.expr(e)?;
                Ok((sql, ty, None))
            }
        }
    }

    /// An aggregate item: its SQL, type and default column name.
    fn aggregate(
        &self,
        e: &Expr,
        rates: &mut Vec<Rate>,
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
