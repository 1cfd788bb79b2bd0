//! The two shapes notifications leave in: Alertmanager's webhook payload (`version: "4"`),
//! as Alertmanager POSTs it to a `webhook_config` receiver, and the alerts Prometheus POSTs
//! to Alertmanager's `/api/v2/alerts` ([`postable_alerts`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::alerts::Notification;

/// One webhook message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookMessage {
    pub version: String,
    pub group_key: String,
    pub truncated_alerts: u64,
    /// `firing` if any alert in it fires, else `resolved`.
    pub status: String,
    pub receiver: String,
    pub group_labels: BTreeMap<String, String>,
    pub common_labels: BTreeMap<String, String>,
    pub common_annotations: BTreeMap<String, String>,
    #[serde(rename = "externalURL")]
    pub external_url: String,
    pub alerts: Vec<WebhookAlert>,
}

/// One alert of a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAlert {
    pub status: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    /// `0001-01-01T00:00:00Z` while firing, as Alertmanager sends it.
    pub ends_at: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    pub fingerprint: String,
}

const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// RFC 3339 in UTC with milliseconds, as Alertmanager and Prometheus' API write times.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ZERO_TIME.to_string())
}

/// Where an alert comes from: the expression's graph page, as Prometheus links it.
pub fn generator_url(external_url: &str, expr: &str) -> String {
    format!(
        "{external_url}/graph?g0.expr={}&g0.tab=1",
        form_urlencoded::byte_serialize(expr.as_bytes()).collect::<String>()
    )
}

fn labels_map(labels: &rigwatch_promql::value::Labels) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn intersect(maps: &[&BTreeMap<String, String>]) -> BTreeMap<String, String> {
    let Some((first, rest)) = maps.split_first() else {
        return BTreeMap::new();
    };
    first
        .iter()
        .filter(|(k, v)| rest.iter().all(|m| m.get(*k) == Some(*v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Builds the message for notifications of one rule (grouped by `alertname`, as an
/// Alertmanager route with `group_by: [alertname]` would).
pub fn message(
    receiver: &str,
    external_url: &str,
    alertname: &str,
    notes: &[Notification],
) -> WebhookMessage {
    let alerts: Vec<WebhookAlert> = notes
        .iter()
        .map(|n| WebhookAlert {
            status: if n.resolved { "resolved" } else { "firing" }.into(),
            labels: labels_map(&n.labels),
            annotations: n.annotations.clone(),
            starts_at: rfc3339(n.starts_at_ms),
            ends_at: n.ends_at_ms.map_or_else(|| ZERO_TIME.to_string(), rfc3339),
            generator_url: generator_url(external_url, &n.expr),
            fingerprint: format!("{:016x}", n.fingerprint),
        })
        .collect();
    let labels: Vec<_> = alerts.iter().map(|a| &a.labels).collect();
    let annotations: Vec<_> = alerts.iter().map(|a| &a.annotations).collect();
    let firing = alerts.iter().any(|a| a.status == "firing");
    let group_labels = BTreeMap::from([("alertname".to_string(), alertname.to_string())]);
    WebhookMessage {
        version: "4".into(),
        group_key: format!("{{}}:{{alertname={alertname:?}}}"),
        truncated_alerts: 0,
        status: if firing { "firing" } else { "resolved" }.into(),
        receiver: receiver.into(),
        group_labels,
        common_labels: intersect(&labels),
        common_annotations: intersect(&annotations),
        external_url: external_url.into(),
        alerts,
    }
}

/// One alert of Alertmanager's `POST /api/v2/alerts` body (its `postableAlert`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    pub ends_at: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

/// The alerts of one `POST /api/v2/alerts`, as Prometheus sends them: a firing alert ends
/// at `valid_until_ms` (Alertmanager resolves it by itself if it is not sent again by
/// then), a resolved one at its resolution time.
pub fn postable_alerts(
    notes: &[Notification],
    external_url: &str,
    valid_until_ms: i64,
) -> Vec<PostableAlert> {
    notes
        .iter()
        .map(|n| PostableAlert {
            labels: labels_map(&n.labels),
            annotations: n.annotations.clone(),
            starts_at: rfc3339(n.starts_at_ms),
            ends_at: rfc3339(match (n.resolved, n.ends_at_ms) {
                (true, Some(end)) => end,
                _ => valid_until_ms,
            }),
            generator_url: generator_url(external_url, &n.expr),
        })
        .collect()
}
