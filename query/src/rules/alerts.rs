//! Alert state per rule (Prometheus semantics) and the notifications it produces.
//!
//! Each evaluation at time `t` of a rule's expression gives a vector; each sample is an alert
//! whose labels are the sample's labels (without `__name__`) plus the rule's labels and
//! `alertname`. A new alert is *pending*; once it has been active for `for` it is *firing*
//! (at once when `for` is 0). An alert missing from the result is dropped if pending; if
//! firing it stays firing for `keep_firing_for` and then *resolves*. Every transition to
//! firing or resolved produces a [`Notification`]; every pending or firing alert produces an
//! `ALERTS{alertname, alertstate, ...} 1` sample.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use rigwatch_promql::eval::{self, EvalOptions};
use rigwatch_promql::storage::Queryable;
use rigwatch_promql::value::{Labels, Value};

use super::file::AlertRule;

/// Where an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    Pending,
    Firing,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// One active alert.
#[derive(Debug, Clone)]
pub struct Alert {
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
    pub state: AlertState,
    pub value: f64,
    /// When it became pending (ms).
    pub active_at: i64,
    pub fired_at: Option<i64>,
    /// Last evaluation that returned it (ms).
    pub last_seen: i64,
    /// First evaluation that did not return it while firing (for `keep_firing_for`).
    pub missing_since: Option<i64>,
}

/// A firing or resolved alert to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub alertname: String,
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
    /// `firing` or `resolved`.
    pub resolved: bool,
    pub starts_at_ms: i64,
    /// Resolution time for resolved alerts.
    pub ends_at_ms: Option<i64>,
    pub expr: String,
    pub fingerprint: u64,
}

/// The evaluation status of one rule.
#[derive(Debug, Clone, Default)]
pub struct RuleHealth {
    pub last_eval_ms: i64,
    pub last_error: Option<String>,
    pub failures: u64,
}

/// A rule with its alerts.
#[derive(Debug)]
pub struct RuleState {
    pub rule: AlertRule,
    pub alerts: HashMap<u64, Alert>,
    pub health: RuleHealth,
}

/// What one evaluation produced.
#[derive(Debug, Default)]
pub struct EvalOutput {
    pub notifications: Vec<Notification>,
    /// `ALERTS` samples: labels (with `alertname`, `alertstate`), at `t`, value 1.
    pub alerts_series: Vec<Labels>,
}

impl RuleState {
    pub fn new(rule: AlertRule) -> Self {
        Self {
            rule,
            alerts: HashMap::new(),
            health: RuleHealth::default(),
        }
    }

    /// Evaluates the rule at `t` (ms) against `q`. On error the alerts keep their state (as in
    /// Prometheus) and the error is recorded in [`RuleHealth`] and returned.
    pub fn eval(
        &mut self,
        q: &dyn Queryable,
        t: i64,
        opts: &EvalOptions,
        out: &mut EvalOutput,
    ) -> Result<(), String> {
        self.health.last_eval_ms = t;
        let result = eval::instant_query(q, &self.rule.expr, t, opts)
            .map_err(|e| e.to_string())
            .and_then(|r| match r.value {
                Value::Vector(v) => Ok(v.into_iter().map(|(l, s)| (l, s.v)).collect()),
                Value::Scalar { v, .. } => Ok(vec![(Labels::empty(), v)]),
                other => Err(format!(
                    "expression returns a {}, alerting rules need an instant vector",
                    other.type_name()
                )),
            });
        match result {
            Ok(samples) => {
                self.health.last_error = None;
                self.apply(samples, t, out);
                Ok(())
            }
            Err(e) => {
                self.health.last_error = Some(e.clone());
                self.health.failures += 1;
                // Keep reporting what is active.
                for a in self.alerts.values() {
                    out.alerts_series
                        .push(a.labels.with("alertstate", a.state.as_str()));
                }
                Err(e)
            }
        }
    }

    /// The firing alerts, as firing notifications.
    pub fn firing(&self) -> impl Iterator<Item = Notification> + '_ {
        self.alerts
            .iter()
            .filter(|(_, a)| a.state == AlertState::Firing)
            .map(|(fp, a)| notification(&self.rule, a, *fp, None))
    }

    /// Applies one evaluation's samples (labels, value) at `t`.
    pub fn apply(&mut self, samples: Vec<(Labels, f64)>, t: i64, out: &mut EvalOutput) {
        let rule = &self.rule;
        let for_ms = rule.for_.as_millis() as i64;
        let keep_ms = rule.keep_firing_for.as_millis() as i64;
        let mut present = Vec::with_capacity(samples.len());
        for (labels, value) in samples {
            let base = labels.without_name();
            let mut pairs: Vec<(String, String)> = base
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            for (k, tpl) in &rule.labels {
                let v = tpl.render(&base, value);
                pairs.retain(|(kk, _)| kk != k);
                if !v.is_empty() {
                    pairs.push((k.clone(), v));
                }
            }
            pairs.retain(|(k, _)| k != "alertname");
            pairs.push(("alertname".into(), rule.name.clone()));
            let labels = Labels::from_pairs(pairs);
            let fp = labels.hash_all();
            let annotations: BTreeMap<String, String> = rule
                .annotations
                .iter()
                .map(|(k, tpl)| (k.clone(), tpl.render(&base, value)))
                .collect();
            present.push(fp);
            let a = self.alerts.entry(fp).or_insert_with(|| Alert {
                labels: labels.clone(),
                annotations: annotations.clone(),
                state: AlertState::Pending,
                value,
                active_at: t,
                fired_at: None,
                last_seen: t,
                missing_since: None,
            });
            a.value = value;
            a.annotations = annotations;
            a.last_seen = t;
            a.missing_since = None;
        }
        let mut gone = Vec::new();
        for (fp, a) in self.alerts.iter_mut() {
            let is_present = present.contains(fp);
            if !is_present {
                match a.state {
                    AlertState::Pending => {
                        gone.push(*fp);
                        continue;
                    }
                    AlertState::Firing => {
                        let since = *a.missing_since.get_or_insert(t);
                        if t - since >= keep_ms {
                            out.notifications.push(notification(rule, a, *fp, Some(t)));
                            gone.push(*fp);
                            continue;
                        }
                    }
                }
            }
            if a.state == AlertState::Pending && t - a.active_at >= for_ms {
                a.state = AlertState::Firing;
                a.fired_at = Some(t);
                out.notifications.push(notification(rule, a, *fp, None));
            }
            out.alerts_series
                .push(a.labels.with("alertstate", a.state.as_str()));
        }
        for fp in gone {
            self.alerts.remove(&fp);
        }
    }
}

fn notification(rule: &AlertRule, a: &Alert, fp: u64, resolved_at: Option<i64>) -> Notification {
    Notification {
        alertname: rule.name.clone(),
        labels: a.labels.clone(),
        annotations: a.annotations.clone(),
        resolved: resolved_at.is_some(),
        starts_at_ms: a.fired_at.unwrap_or(a.active_at),
        ends_at_ms: resolved_at,
        expr: rule.expr_text.clone(),
        fingerprint: fp,
    }
}

/// An alert as saved across a restart: what is needed to carry on where it was (its `for`
/// clock, whether its firing was already announced, and what a resolve must say).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedAlert {
    pub labels: Vec<(String, String)>,
    pub annotations: BTreeMap<String, String>,
    pub firing: bool,
    /// The last value, when finite (JSON has no NaN).
    pub value: Option<f64>,
    pub active_at: i64,
    pub fired_at: Option<i64>,
    pub missing_since: Option<i64>,
}

impl SavedAlert {
    pub fn of(a: &Alert) -> Self {
        SavedAlert {
            labels: a
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: a.annotations.clone(),
            firing: a.state == AlertState::Firing,
            value: a.value.is_finite().then_some(a.value),
            active_at: a.active_at,
            fired_at: a.fired_at,
            missing_since: a.missing_since,
        }
    }

    /// The alert back, last seen at `now_ms`; keyed like [`RuleState::apply`] keys it.
    pub fn restore(self, now_ms: i64) -> (u64, Alert) {
        let labels = Labels::from_pairs(self.labels);
        let alert = Alert {
            labels: labels.clone(),
            annotations: self.annotations,
            state: if self.firing {
                AlertState::Firing
            } else {
                AlertState::Pending
            },
            value: self.value.unwrap_or(f64::NAN),
            active_at: self.active_at,
            fired_at: self.fired_at,
            last_seen: now_ms,
            missing_since: self.missing_since,
        };
        (labels.hash_all(), alert)
    }
}
