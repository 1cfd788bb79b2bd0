//! Alerts to Alertmanager, the way Prometheus sends them (`--alertmanager URL`).
//!
//! After an evaluation that fired or resolved an alert, and otherwise every
//! `--alertmanager-resend-delay` (1 minute, Prometheus' `--rules.alert.resend-delay`) while
//! any alert fires, every Alertmanager gets `POST {URL}/api/v2/alerts` with a JSON array:
//! every firing alert with `endsAt` = now + 4 × max(resend delay, longest group interval)
//! (Prometheus' rule), so that Alertmanager keeps it active between resends and resolves it
//! by itself if rigwatch stops sending, and every alert resolved by this evaluation with
//! `endsAt` = its resolution time. `startsAt` is when the alert fired; `generatorURL` links
//! the rule's expression.
//!
//! Delivery is the webhooks' (`outbox`): one durable FIFO per Alertmanager under
//! `<data-dir>/alerts/outbox/`, retried with backoff, kept across restarts and `kill -9`.
//! After a restart the first evaluation sends every firing alert again, so an Alertmanager
//! that lost its state (or a stale queued message) is brought up to date at once.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::rules::{EvalOutput, RuleSet, payload};
use rigwatch_common::task::{self, Task};

use super::Metrics;
use super::outbox::{self, Queue};

/// How often firing alerts are re-sent by default (Prometheus' default).
pub const DEFAULT_RESEND_DELAY: Duration = Duration::from_secs(60);

/// The API path alerts are posted to.
const ALERTS_PATH: &str = "/api/v2/alerts";

/// Where alerts for the Alertmanager at `base` are posted: `{base}/api/v2/alerts` (a URL
/// that already ends in that path is taken as is). An error names the flag.
pub fn alerts_url(base: &str) -> anyhow::Result<String> {
    let trimmed = base.trim().trim_end_matches('/');
    let url = reqwest::Url::parse(trimmed)
        .map_err(|e| anyhow::anyhow!("--alertmanager {base:?}: not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        anyhow::bail!("--alertmanager {base:?}: give an http:// or https:// URL with a host");
    }
    Ok(if trimmed.ends_with(ALERTS_PATH) {
        trimmed.to_string()
    } else {
        format!("{trimmed}{ALERTS_PATH}")
    })
}

/// The Alertmanagers alerts go to, and when they were last sent the firing ones.
pub struct Alertmanagers {
    queues: Vec<Arc<Queue>>,
    resend: Duration,
    /// When the firing alerts were last sent (ms); `None` until the first send.
    last_sent_ms: Option<i64>,
}

impl Alertmanagers {
    /// Opens an outbox per Alertmanager under `data_dir` and starts its sender in `tasks`.
    pub fn start(
        bases: &[String],
        resend: Duration,
        data_dir: &Path,
        capacity: usize,
        metrics: &Metrics,
        tasks: &mut Vec<Task<()>>,
    ) -> anyhow::Result<Self> {
        if !bases.is_empty() && resend.is_zero() {
            anyhow::bail!("--alertmanager-resend-delay must be more than 0");
        }
        let mut queues = Vec::new();
        for base in bases {
            let url = alerts_url(base)?;
            let q = Arc::new(Queue::open_for(data_dir, &url, capacity)?);
            tasks.push(task::spawn(outbox::deliver(
                url,
                q.clone(),
                metrics.clone(),
            )));
            queues.push(q);
        }
        Ok(Self {
            queues,
            resend,
            last_sent_ms: None,
        })
    }

    pub fn len(&self) -> usize {
        self.queues.len()
    }

    /// The queues to push [`Self::body`]'s message to.
    pub fn queues(&self) -> &[Arc<Queue>] {
        &self.queues
    }

    /// The message to send after the evaluation that gave `out` at `now_ms`, if one is due:
    /// when alerts fired or resolved, or the resend delay has passed with alerts firing.
    pub fn body(
        &mut self,
        set: &RuleSet,
        out: &EvalOutput,
        external_url: &str,
        now_ms: i64,
    ) -> Option<Vec<u8>> {
        if self.queues.is_empty() {
            return None;
        }
        let resend_ms = self.resend.as_millis() as i64;
        let due = !out.notifications.is_empty()
            || self.last_sent_ms.is_none_or(|t| now_ms - t >= resend_ms);
        if !due {
            return None;
        }
        let mut notes = set.firing();
        notes.extend(out.notifications.iter().filter(|n| n.resolved).cloned());
        if notes.is_empty() {
            return None;
        }
        notes.sort_by(|a, b| a.labels.cmp(&b.labels));
        let valid_ms = 4 * self.resend.max(set.max_interval()).as_millis() as i64;
        let alerts = payload::postable_alerts(&notes, external_url, now_ms + valid_ms);
        match serde_json::to_vec(&alerts) {
            Ok(body) => {
                self.last_sent_ms = Some(now_ms);
                Some(body)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot encode alerts for Alertmanager");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Labels, parse_rule_file};

    #[test]
    fn urls_get_the_api_path_and_bad_ones_name_the_flag() {
        assert_eq!(
            alerts_url("http://am:9093/").unwrap(),
            "http://am:9093/api/v2/alerts"
        );
        assert_eq!(
            alerts_url("https://x/prefix/api/v2/alerts").unwrap(),
            "https://x/prefix/api/v2/alerts"
        );
        for bad in ["am:9093", "ftp://am", "not a url"] {
            let e = alerts_url(bad).unwrap_err().to_string();
            assert!(e.starts_with("--alertmanager"), "{e}");
        }
    }

    #[test]
    fn the_default_resend_delay_is_the_flags() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            health: crate::alerting::AlertArgs,
        }
        let cli = <Cli as clap::Parser>::parse_from(["x"]);
        assert_eq!(cli.health.alertmanager_resend_delay, DEFAULT_RESEND_DELAY);
        assert_eq!(
            crate::alerting::AlertArgs::default().alertmanager_resend_delay,
            DEFAULT_RESEND_DELAY
        );
    }

    /// Sent on firing, quiet until the resend delay, re-sent with a later `endsAt`, and
    /// the resolution sent with its own time.
    #[test]
    fn firing_alerts_are_resent_and_resolutions_sent_once() {
        let rules = "groups:\n  - name: g\n    interval: 10s\n    rules:\n      - alert: Hot\n        expr: t > 1\n";
        let mut set = RuleSet::new(parse_rule_file(rules).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let mut am = Alertmanagers {
            queues: vec![Arc::new(Queue::open(dir.path(), 10).unwrap())],
            resend: Duration::from_secs(60),
            last_sent_ms: None,
        };
        let hot = || vec![(Labels::from_pairs([("gpu", "0")]), 2.0)];
        let mut step = |t: i64, samples| {
            let mut out = EvalOutput::default();
            set.groups[0].rules[0].apply(samples, t, &mut out);
            am.body(&set, &out, "http://rw", t)
                .map(|b| serde_json::from_slice::<serde_json::Value>(&b).unwrap())
        };
        let first = step(1_000_000, hot()).expect("sent when it fires");
        assert_eq!(first.as_array().unwrap().len(), 1);
        let a = &first[0];
        assert_eq!(a["labels"]["alertname"], "Hot");
        assert_eq!(a["labels"]["gpu"], "0");
        assert_eq!(a["startsAt"], payload::rfc3339(1_000_000));
        // 4 x max(60 s resend, 10 s interval).
        assert_eq!(a["endsAt"], payload::rfc3339(1_240_000));
        assert!(
            a["generatorURL"]
                .as_str()
                .unwrap()
                .starts_with("http://rw/graph?g0.expr=t+%3E+1")
        );
        assert_eq!(step(1_030_000, hot()), None, "not yet due");
        let again = step(1_060_000, hot()).expect("re-sent after 60 s");
        assert_eq!(again[0]["startsAt"], a["startsAt"]);
        assert_eq!(again[0]["endsAt"], payload::rfc3339(1_300_000));
        let resolved = step(1_070_000, Vec::new()).expect("resolution sent at once");
        assert_eq!(resolved[0]["endsAt"], payload::rfc3339(1_070_000));
        assert_eq!(resolved[0]["startsAt"], a["startsAt"]);
        assert_eq!(step(1_200_000, Vec::new()), None, "nothing fires");
    }
}
