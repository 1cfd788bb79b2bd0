//! Alerting and recording rules: Prometheus rule files evaluated on a schedule against the
//! store.
//!
//! ```text
//!  rule file ──parse_rule_file──▶ RuleGroup ──▶ RuleSet (per group: interval, its rules in file order)
//!                                                   │ eval_due(now): fetch selectors via DataFusion,
//!                                                   ▼ evaluate PromQL
//!      recording rule: rows of table `record` written at once (later rules see them)
//!      alerting rule:  alert states ─▶ Notification (firing / resolved) + ALERTS{alertstate} rows
//! ```
//!
//! A rule whose query fails is logged, counted in `rigwatch_rule_evaluation_failures_total`
//! and recorded in its [`RuleHealth`]; the other rules of the group still run. Alert state
//! lives in memory; [`RuleSet::snapshot`] and [`RuleSet::restore`] carry it over a restart
//! (the server keeps the snapshot in a file). Sending is the caller's job
//! ([`payload::message`] builds Alertmanager's webhook body).

mod alerts;
mod file;
pub mod payload;
pub mod record;
mod template;

use std::sync::Arc;
use std::time::Duration;

pub use alerts::{Alert, AlertState, EvalOutput, Notification, RuleHealth, RuleState, SavedAlert};
pub use file::{
    AlertRule, DEFAULT_INTERVAL, DEFAULT_RULES, RecordingRule, RuleFileError, RuleFileErrors,
    RuleGroup, parse_rule_file,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
pub use record::RecordState;
use rigwatch_promql::eval::{self, EvalOptions};
/// The label set of alerts and recorded series.
pub use rigwatch_promql::value::Labels;
use rigwatch_storage::batch::{FieldValue, WriteBatch};
use rigwatch_storage::{Singleton, WriteOptions};
use serde::{Deserialize, Serialize};
pub use template::Template;
use tracing::warn;

use crate::QueryService;
use crate::prometheus::source;

/// The table alert state is written to (reads back in PromQL as `ALERTS`).
pub const ALERTS_TABLE: &str = rigwatch_common::tables::ALERTS;

/// Counters of the rule evaluator.
#[derive(Debug, Clone, Default)]
pub struct RuleMetrics {
    pub evaluations: Counter,
    pub evaluation_failures: Counter,
    pub notifications: Counter,
    pub recorded_samples: Counter,
}

impl RuleMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "rigwatch_rule_evaluations",
            "Alerting and recording rule evaluations",
            self.evaluations.clone(),
        );
        registry.register(
            "rigwatch_rule_evaluation_failures",
            "Rule evaluations that failed (query, type or write error)",
            self.evaluation_failures.clone(),
        );
        registry.register(
            "rigwatch_rule_notifications",
            "Firing and resolved notifications produced by alerting rules",
            self.notifications.clone(),
        );
        registry.register(
            "rigwatch_rule_recorded_samples",
            "Samples stored by recording rules",
            self.recorded_samples.clone(),
        );
    }
}

/// The alert state of every rule, as saved between evaluations so that a restart carries on
/// where it was: a pending alert keeps its `for` clock, a firing one is not announced twice,
/// and one that cleared while the server was down is resolved. (Prometheus restores the
/// `for` clock from its `ALERTS_FOR_STATE` series; this also keeps what was announced.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertSnapshot {
    pub version: u32,
    /// When it was taken (ms).
    pub saved_ms: i64,
    pub rules: Vec<SavedRule>,
}

/// One rule's alerts in an [`AlertSnapshot`]; the rule is found again by group name, rule
/// name and position in the group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedRule {
    pub group: String,
    pub rule: String,
    pub index: usize,
    pub alerts: Vec<SavedAlert>,
}

/// A group being evaluated.
#[derive(Debug)]
pub struct GroupState {
    pub name: String,
    pub interval: Duration,
    /// Alerting rules, in file order.
    pub rules: Vec<RuleState>,
    /// Recording rules, in file order; each runs before the alerting rule at its
    /// `alerts_before` (after all of them when that is `rules.len()`).
    pub records: Vec<RecordState>,
    /// Next evaluation time (ms); 0 = at once.
    pub next_ms: i64,
}

/// Every group of a rule file with its alert state.
#[derive(Debug)]
pub struct RuleSet {
    pub groups: Vec<GroupState>,
    pub metrics: RuleMetrics,
    /// Lookback and sample limit for rule queries.
    pub opts: EvalOptions,
}

impl RuleSet {
    pub fn new(groups: Vec<RuleGroup>) -> Self {
        Self {
            groups: groups
                .into_iter()
                .map(|g| GroupState {
                    name: g.name,
                    interval: g.interval,
                    rules: g.rules.into_iter().map(RuleState::new).collect(),
                    records: g.records.into_iter().map(RecordState::new).collect(),
                    next_ms: 0,
                })
                .collect(),
            metrics: RuleMetrics::default(),
            opts: EvalOptions::default(),
        }
    }

    /// The alerts of every rule that has any (see [`AlertSnapshot`]).
    pub fn snapshot(&self, now_ms: i64) -> AlertSnapshot {
        let mut rules = Vec::new();
        for g in &self.groups {
            for (index, r) in g.rules.iter().enumerate() {
                if r.alerts.is_empty() {
                    continue;
                }
                let mut alerts: Vec<SavedAlert> = r.alerts.values().map(SavedAlert::of).collect();
                alerts.sort_by(|a, b| a.labels.cmp(&b.labels));
                rules.push(SavedRule {
                    group: g.name.clone(),
                    rule: r.rule.name.clone(),
                    index,
                    alerts,
                });
            }
        }
        AlertSnapshot {
            version: 1,
            saved_ms: now_ms,
            rules,
        }
    }

    /// Puts back the alerts of `snap` into the rules that are still the same (group, name and
    /// position); the count restored. A snapshot older than `tolerance_ms` is refused, as
    /// Prometheus ignores `for` state after an outage longer than its tolerance: the
    /// conditions are then evaluated afresh.
    pub fn restore(
        &mut self,
        snap: AlertSnapshot,
        now_ms: i64,
        tolerance_ms: i64,
    ) -> Result<usize, String> {
        if snap.version != 1 {
            return Err(format!("unknown alert state version {}", snap.version));
        }
        if now_ms - snap.saved_ms > tolerance_ms {
            return Err(format!(
                "alert state is {} s old, more than the {} s tolerated; starting afresh",
                (now_ms - snap.saved_ms) / 1000,
                tolerance_ms / 1000
            ));
        }
        let mut n = 0;
        for saved in snap.rules {
            let Some(rule) = self
                .groups
                .iter_mut()
                .find(|g| g.name == saved.group)
                .and_then(|g| g.rules.get_mut(saved.index))
                .filter(|r| r.rule.name == saved.rule)
            else {
                warn!(group = %saved.group, rule = %saved.rule, "saved alerts of a rule that no longer exists: dropped");
                continue;
            };
            for a in saved.alerts {
                let (fp, alert) = a.restore(now_ms);
                rule.alerts.insert(fp, alert);
                n += 1;
            }
        }
        Ok(n)
    }

    /// When the next group is due (ms).
    pub fn next_due_ms(&self) -> Option<i64> {
        self.groups.iter().map(|g| g.next_ms).min()
    }

    /// The longest group interval (zero without groups).
    pub fn max_interval(&self) -> Duration {
        self.groups
            .iter()
            .map(|g| g.interval)
            .max()
            .unwrap_or_default()
    }

    /// Every firing alert, as a firing notification (what Alertmanager is re-sent).
    pub fn firing(&self) -> Vec<Notification> {
        self.groups
            .iter()
            .flat_map(|g| g.rules.iter())
            .flat_map(RuleState::firing)
            .collect()
    }

    /// Evaluates every group due at `now_ms` against the store.
    pub async fn eval_due(&mut self, service: &QueryService, now_ms: i64) -> EvalOutput {
        let mut out = EvalOutput::default();
        for gi in 0..self.groups.len() {
            if self.groups[gi].next_ms > now_ms {
                continue;
            }
            let interval_ms = self.groups[gi].interval.as_millis() as i64;
            // Evaluate at aligned times, like Prometheus' group offsets (here: no offset).
            let t = now_ms - now_ms.rem_euclid(interval_ms.max(1));
            self.groups[gi].next_ms = t + interval_ms;
            // File order: the recording rules before alerting rule `ri`, then `ri`.
            let mut next_record = 0;
            for ri in 0..=self.groups[gi].rules.len() {
                while self.groups[gi]
                    .records
                    .get(next_record)
                    .is_some_and(|r| r.rule.alerts_before <= ri)
                {
                    let res = self.eval_record(service, gi, next_record, t).await;
                    self.metrics.evaluations.inc();
                    let g = &mut self.groups[gi];
                    let r = &mut g.records[next_record];
                    r.health.last_eval_ms = t;
                    match res {
                        Ok(n) => {
                            r.health.last_error = None;
                            r.last_series = n;
                            self.metrics.recorded_samples.inc_by(n as u64);
                        }
                        Err(error) => {
                            warn!(group = %g.name, rule = %r.rule.name, %error, "recording rule evaluation failed");
                            r.health.last_error = Some(error);
                            r.health.failures += 1;
                            self.metrics.evaluation_failures.inc();
                        }
                    }
                    next_record += 1;
                }
                if ri == self.groups[gi].rules.len() {
                    break;
                }
                let before = out.notifications.len();
                let res = self.eval_rule(service, gi, ri, t, &mut out).await;
                self.metrics.evaluations.inc();
                let n = (out.notifications.len() - before) as u64;
                self.metrics.notifications.inc_by(n);
                if let Err(error) = res {
                    self.metrics.evaluation_failures.inc();
                    let g = &self.groups[gi];
                    warn!(group = %g.name, rule = %g.rules[ri].rule.name, %error, "alerting rule evaluation failed");
                }
            }
        }
        out
    }

    /// Evaluates recording rule `ri` of group `gi` at `t` and stores its samples; the
    /// number stored.
    async fn eval_record(
        &self,
        service: &QueryService,
        gi: usize,
        ri: usize,
        t: i64,
    ) -> Result<usize, String> {
        let opts = EvalOptions {
            deadline: Some(std::time::Instant::now() + Duration::from_secs(30)),
            ..self.opts.clone()
        };
        let state = &self.groups[gi].records[ri];
        let selections = eval::selections(&state.rule.expr, t, t, &opts);
        let ctx = service.session_context().map_err(|e| e.to_string())?;
        let fetched = source::fetch(&ctx, service.db(), selections, opts.max_samples, 0)
            .await
            .map_err(|e| e.to_string())?;
        let samples = state.eval(&fetched, t, &opts)?;
        if samples.is_empty() {
            return Ok(0);
        }
        record::check_target(service.db(), &state.rule.name)?;
        let (batch, mut problems) = record::record_batch(&samples, t);
        let outcome = service
            .db()
            .write(batch, WriteOptions::singleton(Singleton::Fenced))
            .await
            .map_err(|e| format!("cannot store the recorded series: {e}"))?;
        problems.extend(outcome.rejected.iter().map(|r| r.error.to_string()));
        match problems.first() {
            None => Ok(outcome.rows),
            Some(first) => Err(format!(
                "{} of {} series not stored, first: {first}",
                problems.len(),
                samples.len()
            )),
        }
    }

    async fn eval_rule(
        &mut self,
        service: &QueryService,
        gi: usize,
        ri: usize,
        t: i64,
        out: &mut EvalOutput,
    ) -> Result<(), String> {
        let opts = EvalOptions {
            deadline: Some(std::time::Instant::now() + Duration::from_secs(30)),
            ..self.opts.clone()
        };
        let state = &mut self.groups[gi].rules[ri];
        let selections = eval::selections(&state.rule.expr, t, t, &opts);
        let fetched = async {
            let ctx = service.session_context().map_err(|e| e.to_string())?;
            source::fetch(&ctx, service.db(), selections, opts.max_samples, 0)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        match fetched {
            Ok(f) => state.eval(&f, t, &opts, out),
            Err(e) => {
                state.health.last_error = Some(e.clone());
                state.health.failures += 1;
                for a in state.alerts.values() {
                    out.alerts_series
                        .push(a.labels.with("alertstate", a.state.as_str()));
                }
                Err(e)
            }
        }
    }
}

/// `ALERTS` rows for one evaluation: one per pending or firing alert, value 1, at `t_ms`.
pub fn alerts_batch(series: &[Labels], t_ms: i64) -> WriteBatch {
    let mut b = WriteBatch::default();
    for labels in series {
        let mut row = b.row(ALERTS_TABLE, t_ms.saturating_mul(1_000_000));
        for (k, v) in labels.iter() {
            if !v.is_empty() {
                row.tag(k, v);
            }
        }
        row.field("value", FieldValue::F64(1.0));
        // Labels are unique keys, so the row is valid.
        let _ = row.finish(0);
    }
    b
}

/// Shared handle type used by the server.
pub type SharedRuleSet = Arc<tokio::sync::Mutex<RuleSet>>;
