//! `GET /api/v1/rules` and `GET /api/v1/alerts` in the Prometheus HTTP API's format.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::rules::{self, RuleHealth, RuleSet};
use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};

fn rfc3339_ms(ms: i64) -> String {
    rules::payload::rfc3339(ms)
}

fn alert_json(a: &rules::Alert) -> Value {
    json!({
        "labels": a
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(v)))
            .collect::<Map<_, _>>(),
        "annotations": a.annotations,
        "state": a.state.as_str(),
        "activeAt": rfc3339_ms(a.active_at),
        "value": format!("{}", a.value),
    })
}

/// The fields every rule has: its health and last evaluation.
fn health_json(h: &RuleHealth, into: &mut Value) {
    into["health"] = json!(match (&h.last_error, h.last_eval_ms) {
        (Some(_), _) => "err",
        (None, 0) => "unknown",
        (None, _) => "ok",
    });
    into["lastError"] = json!(h.last_error.clone().unwrap_or_default());
    into["evaluationFailures"] = json!(h.failures);
    into["lastEvaluation"] = json!(rfc3339_ms(h.last_eval_ms));
}

fn alerting_json(r: &rules::RuleState) -> Value {
    let state = if r
        .alerts
        .values()
        .any(|a| a.state == rules::AlertState::Firing)
    {
        "firing"
    } else if r.alerts.is_empty() {
        "inactive"
    } else {
        "pending"
    };
    let tpl = |m: &BTreeMap<String, rules::Template>| {
        m.iter()
            .map(|(k, t)| (k.clone(), Value::from(t.source())))
            .collect::<Map<_, _>>()
    };
    let mut v = json!({
        "type": "alerting",
        "name": r.rule.name,
        "query": r.rule.expr_text,
        "duration": r.rule.for_.as_secs_f64(),
        "keepFiringFor": r.rule.keep_firing_for.as_secs_f64(),
        "labels": tpl(&r.rule.labels),
        "annotations": tpl(&r.rule.annotations),
        "alerts": r.alerts.values().map(alert_json).collect::<Vec<_>>(),
        "state": state,
    });
    health_json(&r.health, &mut v);
    v
}

fn recording_json(r: &rules::RecordState) -> Value {
    let mut v = json!({
        "type": "recording",
        "name": r.rule.name,
        "query": r.rule.expr_text,
        "labels": r.rule.labels,
    });
    health_json(&r.health, &mut v);
    v
}

pub(super) async fn rules(State(set): State<Arc<tokio::sync::Mutex<RuleSet>>>) -> Json<Value> {
    let set = set.lock().await;
    let groups: Vec<Value> = set
        .groups
        .iter()
        .map(|g| {
            // File order: each recording rule before the alerting rule it preceded.
            let mut list = Vec::with_capacity(g.rules.len() + g.records.len());
            let mut records = g.records.iter().peekable();
            for (i, r) in g.rules.iter().enumerate() {
                while let Some(rec) = records.next_if(|rec| rec.rule.alerts_before <= i) {
                    list.push(recording_json(rec));
                }
                list.push(alerting_json(r));
            }
            list.extend(records.map(recording_json));
            json!({
                "name": g.name,
                "file": "",
                "interval": g.interval.as_secs_f64(),
                "rules": list,
            })
        })
        .collect();
    Json(json!({"status": "success", "data": {"groups": groups}}))
}

pub(super) async fn alerts(State(set): State<Arc<tokio::sync::Mutex<RuleSet>>>) -> Json<Value> {
    let set = set.lock().await;
    let alerts: Vec<Value> = set
        .groups
        .iter()
        .flat_map(|g| g.rules.iter())
        .flat_map(|r| r.alerts.values())
        .map(alert_json)
        .collect();
    Json(json!({"status": "success", "data": {"alerts": alerts}}))
}
