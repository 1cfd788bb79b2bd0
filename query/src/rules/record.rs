//! Recording rules: each evaluation at `t` stores the expression's result as series.
//!
//! A sample `{labels} v` of the result becomes `record{labels, rule labels} v` (a rule label
//! with an empty value removes that label), as in Prometheus. It is stored the way
//! remote-written Prometheus samples are (DESIGN.md, "Prometheus-style names"): a row of
//! table `record` with the labels as tags, field `value` and time `t`, so PromQL reads it
//! back as metric `record` and SQL as table `record`.
//!
//! Tenancy: rules run unscoped (they are the operator's), so a recorded series can
//! aggregate across suppliers. The scoped table provider shows a supplier only rows whose
//! `supplier` tag is theirs, and hides a table with no `supplier` tag altogether, so a
//! recorded series reaches a supplier only when it keeps (or is given) that supplier's
//! `supplier` label; a fleet-wide aggregate stays operator-only.
//!
//! Unlike Prometheus, no staleness marker is written when a series stops being recorded:
//! it reads as present for the lookback window (5 minutes) after its last evaluation.

use std::collections::HashSet;

use rigwatch_promql::eval::{self, EvalOptions};
use rigwatch_promql::storage::Queryable;
use rigwatch_promql::value::{Labels, METRIC_NAME, Value};
use rigwatch_storage::Db;
use rigwatch_storage::batch::{FieldValue, WriteBatch};
use rigwatch_storage::schema::ColumnKind;

use super::alerts::RuleHealth;
use super::file::RecordingRule;

/// The field recorded values are stored in (the Prometheus form).
pub const VALUE_FIELD: &str = "value";

/// A recording rule with its evaluation status.
#[derive(Debug)]
pub struct RecordState {
    pub rule: RecordingRule,
    pub health: RuleHealth,
    /// Series written by the last successful evaluation.
    pub last_series: usize,
}

impl RecordState {
    pub fn new(rule: RecordingRule) -> Self {
        Self {
            rule,
            health: RuleHealth::default(),
            last_series: 0,
        }
    }

    /// Evaluates the rule at `t` (ms) against `q`: the samples to record, named and
    /// labelled. A result with two samples of the same labels (after the rule's labels are
    /// applied) is an error, as in Prometheus.
    pub fn eval(
        &self,
        q: &dyn Queryable,
        t: i64,
        opts: &EvalOptions,
    ) -> Result<Vec<(Labels, f64)>, String> {
        let samples: Vec<(Labels, f64)> = match eval::instant_query(q, &self.rule.expr, t, opts)
            .map_err(|e| e.to_string())?
            .value
        {
            Value::Vector(v) => v.into_iter().map(|(l, s)| (l, s.v)).collect(),
            Value::Scalar { v, .. } => vec![(Labels::empty(), v)],
            other => {
                return Err(format!(
                    "expression returns a {}, recording rules need an instant vector or a scalar",
                    other.type_name()
                ));
            }
        };
        let mut seen = HashSet::with_capacity(samples.len());
        let mut out = Vec::with_capacity(samples.len());
        for (labels, v) in samples {
            let mut labels = labels.with(METRIC_NAME, &self.rule.name);
            for (k, val) in &self.rule.labels {
                labels = labels.with(k, val);
            }
            if !seen.insert(labels.clone()) {
                return Err(format!(
                    "the result has two series {labels} after the rule's labels are applied"
                ));
            }
            out.push((labels, v));
        }
        Ok(out)
    }
}

/// Checks that recording into table `name` cannot damage another table: a table that
/// exists must be in the Prometheus form (tags and the one field `value`).
pub fn check_target(db: &Db, name: &str) -> Result<(), String> {
    let Some(def) = db.table(name) else {
        return Ok(());
    };
    let others: Vec<&str> = def
        .columns
        .iter()
        .filter(|c| matches!(c.kind, ColumnKind::Field(_)) && c.name != VALUE_FIELD)
        .map(|c| c.name.as_str())
        .collect();
    if others.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "table {name:?} already holds other fields ({}); a recording rule only writes \
             tables of Prometheus samples (field `value`): rename the rule",
            others.join(", ")
        ))
    }
}

/// The rows for one evaluation's samples at `t_ms`: table = metric name, labels as tags,
/// field `value`. Rows that are not valid (a label the store cannot take as a tag) are
/// left out and described.
pub fn record_batch(samples: &[(Labels, f64)], t_ms: i64) -> (WriteBatch, Vec<String>) {
    let mut b = WriteBatch::default();
    let mut problems = Vec::new();
    let time = t_ms.saturating_mul(1_000_000);
    for (labels, v) in samples {
        let Some(name) = labels.metric_name() else {
            problems.push(format!("series {labels} has no name"));
            continue;
        };
        let mut row = b.row(name, time);
        for (k, val) in labels.iter() {
            if k != METRIC_NAME && !val.is_empty() {
                row.tag(k, val);
            }
        }
        row.field(VALUE_FIELD, FieldValue::F64(*v));
        if let Err(e) = row.finish(0) {
            problems.push(format!("series {labels}: {e}"));
        }
    }
    (b, problems)
}
