//! The domain aggregates: `gpu_hours()` and `uptime()`.
//!
//! Both read the raw rows of a source (before any `stats` or `join`), because what a
//! GPU-hour is depends on what the rows are:
//!
//! | source | `gpu_hours()` | `uptime()` |
//! |---|---|---|
//! | `gpus` | offered: GPU-minutes in which the GPU reported, / 60 | reported GPU-minutes / (GPUs × minutes of the range or bucket) |
//! | `heartbeats` | — | reported worker-minutes / (workers × minutes of the range or bucket) |
//! | `leases` | rented: Σ share × (end, or now while open, − start) | — |
//! | `earnings` | paid: Σ share × duration of each entry | — |
//!
//! A minute counts when the series reported at least once in it (agents report every few
//! seconds); minutes are aligned to the epoch, like `bucket(1m)`.

use super::{Col, Lowerer};
use crate::ast::{Expr, Noun};
use crate::catalog::{Ty, quote};
use crate::error::Error;

/// Milliseconds × thousandths of a GPU in a GPU-hour.
const MS_MILLI_PER_GPU_HOUR: f64 = 3_600_000.0 * 1000.0;

impl Lowerer<'_, '_> {
    /// The SQL of `gpu_hours()` or `uptime()` in a stats step (`bucket_ms`: the step's
    /// bucket key, if any).
    pub(crate) fn domain_aggregate(
        &self,
        name: &str,
        call: &Expr,
        bucket_ms: Option<i64>,
    ) -> Result<(String, Ty), Error> {
        let noun = self.noun.ok_or_else(|| Error::Misplaced {
            pos: self.loc.pos(call.span),
            what: format!("`{name}()`"),
            rule: "reads the raw rows of its source: use it in the first stats, before any join",
        })?;
        match (name, noun) {
            ("gpu_hours", Noun::Earnings) => {
                let d = self.column(call, "duration_ms", name)?;
                let share = self.column(call, "share_milli", name)?;
                Ok((
                    format!(
                        "(sum(CAST({d} AS DOUBLE) * CAST({share} AS DOUBLE)) / \
                         {MS_MILLI_PER_GPU_HOUR:?})"
                    ),
                    Ty::Float,
                ))
            }
            ("gpu_hours", Noun::Leases) => {
                let start = self.column(call, "start_ms", name)?;
                let share = self.column(call, "share_milli", name)?;
                let now = "(date_part('epoch', now()) * 1000.0)";
                // `end_ms` exists once some lease has ended.
                let end = match self.cols.iter().find(|c| c.name == "end_ms") {
                    Some(c) => format!("coalesce(CAST({} AS DOUBLE), {now})", quote(&c.name)),
                    None => now.to_string(),
                };
                Ok((
                    format!(
                        "(sum(({end} - CAST({start} AS DOUBLE)) * CAST({share} AS DOUBLE)) / \
                         {MS_MILLI_PER_GPU_HOUR:?})"
                    ),
                    Ty::Float,
                ))
            }
            ("gpu_hours", Noun::Gpus) => {
                let minutes = self.series_minutes(call, noun, name)?;
                Ok((format!("(CAST({minutes} AS DOUBLE) / 60.0)"), Ty::Float))
            }
            ("uptime", Noun::Gpus | Noun::Heartbeats) => {
                let minutes = self.series_minutes(call, noun, name)?;
                let series = self.series(call, noun, name)?;
                let span_ms = bucket_ms
                    .or(self.range.as_ref().map(|r| r.ms))
                    .ok_or_else(|| Error::Misplaced {
                        pos: self.loc.pos(call.span),
                        what: "`uptime()`".into(),
                        rule: "needs a time range on the source (`gpus[1d]`) or a \
                               `bucket(…)` key to count the minutes against",
                    })?;
                let span_minutes = (span_ms + 59_999) / 60_000;
                // A series that reports past the range's end (a fast clock) is up, not more.
                Ok((
                    format!(
                        "least(1.0, CAST({minutes} AS DOUBLE) / \
                         (CAST(count(DISTINCT {series}) AS DOUBLE) * {span_minutes}.0))"
                    ),
                    Ty::Float,
                ))
            }
            _ => Err(Error::Misplaced {
                pos: self.loc.pos(call.span),
                what: format!("`{name}()` on {}", noun.name()),
                rule: if name == "uptime" {
                    "reads gpus or heartbeats: the minutes each series reported"
                } else {
                    "reads gpus (offered GPU-hours), leases (rented) or earnings (paid)"
                },
            }),
        }
    }

    /// A column the function needs, quoted.
    fn column(&self, call: &Expr, name: &str, function: &str) -> Result<String, Error> {
        match self.cols.iter().find(|c| c.name == name) {
            Some(Col { name, .. }) => Ok(quote(name)),
            None => Err(Error::Misplaced {
                pos: self.loc.pos(call.span),
                what: format!("`{function}()` needs the field `{name}`, which"),
                rule: "this source does not have (or an earlier select dropped)",
            }),
        }
    }

    /// One text value per series (a GPU, a worker).
    fn series(&self, call: &Expr, noun: Noun, function: &str) -> Result<String, Error> {
        let key = noun.series_key().unwrap_or(&[]);
        let mut parts = Vec::new();
        for tag in key {
            parts.push(self.column(call, tag, function)?);
        }
        Ok(format!("concat_ws('/', {})", parts.join(", ")))
    }

    /// `count(DISTINCT …)` of (series, minute) pairs: the minutes each series reported in.
    fn series_minutes(&self, call: &Expr, noun: Noun, function: &str) -> Result<String, Error> {
        let series = self.series(call, noun, function)?;
        let time = self.column(call, "time", function)?;
        Ok(format!(
            "count(DISTINCT concat_ws('/', {series}, \
             CAST(date_bin(INTERVAL '1 minute', {time}) AS BIGINT)))"
        ))
    }
}
