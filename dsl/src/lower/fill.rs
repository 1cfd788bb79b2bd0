//! `fill [<value>]`: after `stats … by bucket(…)`, a row for every bucket of every
//! combination of the other keys, the missing aggregates set to `value` (0 by default;
//! `null` adds the rows and leaves them empty).
//!
//! ```text
//! gpus[1h] | stats avg(utilization) by model, bucket(5m) | fill
//!
//!   SELECT b."bucket", k."model", coalesce(s."avg_utilization", 0) AS "avg_utilization"
//!   FROM (<every bucket of the range>) AS b
//!   CROSS JOIN (SELECT DISTINCT "model" FROM s1) AS k
//!   LEFT JOIN s1 AS s ON s."bucket" = b."bucket" AND s."model" IS NOT DISTINCT FROM k."model"
//! ```
//!
//! The buckets are those of the source's time range when it has one (so an hour with no
//! rows at all still shows), generated in SQL; otherwise (or with a time zone, where a day
//! is not always 24 hours) the buckets any key has.

use super::stats::BucketKey;
use super::{Col, Lowerer, Range};
use crate::ast::{Expr, ExprKind, Span, UnaryOp};
use crate::catalog::{interval, quote};
use crate::error::Error;

/// The most buckets `fill` generates for a range (a year of hours is 8,760).
pub(crate) const MAX_FILL_BUCKETS: i64 = 100_000;
/// The longest bucket `fill` generates (its steps are nanoseconds in 64 bits).
const MAX_FILL_BUCKET_MS: i64 = 366 * 86_400_000;

/// What a `stats … by bucket(…)` step leaves for a `fill` after it.
#[derive(Debug, Clone)]
pub(crate) struct Bucketed {
    /// The bucket's column.
    pub column: String,
    pub key: BucketKey,
    /// How many other keys there are (the columns before the aggregates).
    pub keys: usize,
    /// The source's time range.
    pub range: Option<Range>,
    /// The stats step's columns: keys in order, then aggregates.
    pub cols: Vec<Col>,
}

impl Lowerer<'_, '_> {
    pub(crate) fn fill(
        &mut self,
        span: Span,
        bucketed: Option<Bucketed>,
        value: Option<&Expr>,
    ) -> Result<(), Error> {
        let Some(b) = bucketed else {
            return Err(Error::Misplaced {
                pos: self.loc.pos(span),
                what: "`fill`".into(),
                rule: "follows a `stats … by bucket(…)` (a `sort` may come between)",
            });
        };
        let value_sql = match value {
            None => "0".to_string(),
            Some(v) if is_number_or_null(v) => self.expr(v)?.0,
            Some(v) => {
                return Err(Error::Value {
                    pos: self.loc.pos(v.span),
                    message: "`fill` takes a number or null",
                });
            }
        };
        let prev = self.rel();
        let buckets = match (&b.range, &b.key.tz) {
            (Some(r), None) => self.generated_buckets(span, r, b.key.ms, &b.column)?,
            _ => format!("SELECT DISTINCT {c} FROM {prev}", c = quote(&b.column)),
        };
        let nkeys = b.keys + 1;
        let others: Vec<&Col> = b.cols[..nkeys]
            .iter()
            .filter(|c| c.name != b.column)
            .collect();
        let mut list = Vec::new();
        for (i, c) in b.cols.iter().enumerate() {
            let q = quote(&c.name);
            if c.name == b.column {
                list.push(format!("b.{q}"));
            } else if i < nkeys {
                list.push(format!("k.{q}"));
            } else if c.ty.numeric() {
                list.push(format!("coalesce(s.{q}, {value_sql}) AS {q}"));
            } else {
                list.push(format!("s.{q}"));
            }
        }
        let bq = quote(&b.column);
        let mut on = vec![format!("s.{bq} = b.{bq}")];
        let mut from = format!("({buckets}) AS b");
        if !others.is_empty() {
            let keys: Vec<String> = others.iter().map(|c| quote(&c.name)).collect();
            from.push_str(&format!(
                " CROSS JOIN (SELECT DISTINCT {} FROM {prev}) AS k",
                keys.join(", ")
            ));
            on.extend(
                keys.iter()
                    .map(|k| format!("s.{k} IS NOT DISTINCT FROM k.{k}")),
            );
        }
        self.push(format!(
            "SELECT {} FROM {from} LEFT JOIN {prev} AS s ON {}",
            list.join(", "),
            on.join(" AND ")
        ));
        self.cols = b.cols;
        Ok(())
    }

    /// Every bucket start of `range`, as a one-column `SELECT`: whole-bucket steps from the
    /// bucket holding the range's start to the last one starting before its end.
    fn generated_buckets(
        &self,
        span: Span,
        range: &Range,
        bucket_ms: i64,
        column: &str,
    ) -> Result<String, Error> {
        let count = range.ms / bucket_ms + 2;
        if bucket_ms > MAX_FILL_BUCKET_MS {
            return Err(Error::Value {
                pos: self.loc.pos(span),
                message: "`fill` takes buckets of at most 366 days",
            });
        }
        if count > MAX_FILL_BUCKETS {
            return Err(Error::Value {
                pos: self.loc.pos(span),
                message: "`fill` would make more than 100,000 buckets: use a shorter range \
                          or a longer bucket",
            });
        }
        let step_ns = i128::from(bucket_ms) * 1_000_000;
        let first = format!(
            "CAST(date_bin({}, {}) AS BIGINT)",
            interval(bucket_ms),
            range.start_sql
        );
        Ok(format!(
            "SELECT {c} FROM (SELECT to_timestamp_nanos({first} + \"k\" * {step_ns}) AS {c} \
             FROM (SELECT unnest(range(0, {count})) AS \"k\")) WHERE {c} < {end}",
            c = quote(column),
            end = range.end_sql
        ))
    }
}

fn is_number_or_null(e: &Expr) -> bool {
    match &e.kind {
        ExprKind::Int(_) | ExprKind::Float(_) | ExprKind::Null => true,
        ExprKind::Unary {
            op: UnaryOp::Neg,
            expr,
        } => matches!(expr.kind, ExprKind::Int(_) | ExprKind::Float(_)),
        _ => false,
    }
}
