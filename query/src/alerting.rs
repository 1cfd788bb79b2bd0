//! Alerting: rule groups evaluated on their interval, recorded series and `ALERTS` rows written
//! back to the store, notifications delivered to webhooks and Alertmanagers.
//!
//! ```text
//!  rule groups (interval) ─► PromQL over the store ─► recorded series, ALERTS rows,
//!                                                     notifications
//!                                                          │
//!        one bounded queue + sender per webhook and per Alertmanager: POST, retry with backoff
//! ```
//!
//! Webhook delivery: each webhook has its own FIFO on disk (`--alert-queue` messages; see
//! `outbox`). A message is retried with exponential backoff (0.5 s doubling up to 60 s) until
//! the receiver answers 2xx, in order, so a receiver that is down for a while gets every
//! notification when it comes back, even across a server restart or `kill -9`. A 4xx answer
//! (other than 408/429) means the receiver rejects that message for good: it is dropped,
//! logged and counted, so it cannot stall the queue. When the queue is full the oldest
//! message is dropped and counted (`rigwatch_alert_notifications_dropped_total`). Alert state
//! (pending clocks, what was announced) is saved after each evaluation that changes it and
//! restored at start when under an hour old, so a restart neither re-announces a firing
//! alert nor forgets to resolve one that cleared while the server was down.
//!
//! Alertmanager (`--alertmanager`): alerts are posted to its `/api/v2/alerts` as Prometheus
//! posts them, re-sent while firing; see `alertmanager`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use rigwatch_common::task::{self, Task};
use rigwatch_storage::{Db, Singleton, WriteOptions};
use tracing::{info, warn};

use crate::QueryService;
use crate::rules::{self, Notification, RuleSet};

/// Alerting options of `rigwatch serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct AlertArgs {
    /// Alerting rule file (Prometheus format). Without it the embedded defaults run
    /// (GPU offline, unhealthy, hardware XID, over temperature, sustained throttling,
    /// uncorrectable memory errors); `--rules none` runs no rules.
    #[arg(long, env = "RIGWATCH_RULES")]
    pub rules: Option<std::path::PathBuf>,

    /// Webhook URL to POST alert notifications to, in Alertmanager's webhook format
    /// (repeatable or comma-separated).
    #[arg(
        long = "alert-webhook",
        env = "RIGWATCH_ALERT_WEBHOOK",
        value_delimiter = ','
    )]
    pub alert_webhooks: Vec<String>,

    /// Alertmanager to send alerts to, as Prometheus does: `POST URL/api/v2/alerts`, firing
    /// alerts re-sent every --alertmanager-resend-delay, resolved ones with their end time
    /// (repeatable or comma-separated).
    #[arg(
        long = "alertmanager",
        env = "RIGWATCH_ALERTMANAGER",
        value_delimiter = ','
    )]
    pub alertmanagers: Vec<String>,

    /// How often firing alerts are re-sent to Alertmanager (Prometheus'
    /// --rules.alert.resend-delay); Alertmanager resolves an alert by itself once 4 times
    /// this (or the longest group interval, if longer) passes without it.
    #[arg(long, env = "RIGWATCH_ALERTMANAGER_RESEND_DELAY", default_value = "1m", value_parser = humantime::parse_duration)]
    pub alertmanager_resend_delay: Duration,

    /// The URL this server is reached at, for `externalURL` and `generatorURL` in
    /// notifications (default: http://LISTEN).
    #[arg(long, env = "RIGWATCH_EXTERNAL_URL")]
    pub external_url: Option<String>,

    /// Most undelivered notifications kept per webhook or Alertmanager (oldest dropped
    /// beyond it).
    #[arg(long, env = "RIGWATCH_ALERT_QUEUE", default_value_t = 10_000)]
    pub alert_queue: usize,
}

impl Default for AlertArgs {
    fn default() -> Self {
        Self {
            rules: None,
            alert_webhooks: Vec::new(),
            alertmanagers: Vec::new(),
            alertmanager_resend_delay: alertmanager::DEFAULT_RESEND_DELAY,
            external_url: None,
            alert_queue: 10_000,
        }
    }
}

impl AlertArgs {
    /// Loads the rule groups: the file, the defaults, or none.
    pub fn rule_groups(&self) -> anyhow::Result<Vec<rules::RuleGroup>> {
        let text = match &self.rules {
            Some(p) if p.as_os_str() == "none" => return Ok(Vec::new()),
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("cannot read rule file {}: {e}", p.display()))?,
            None => rules::DEFAULT_RULES.to_string(),
        };
        rules::parse_rule_file(&text).map_err(|e| {
            let name = self
                .rules
                .as_ref()
                .map_or("the default rules".to_string(), |p| p.display().to_string());
            anyhow::anyhow!("invalid rule file {name}:\n{e}")
        })
    }
}

/// Counters of the notifier.
#[derive(Debug, Clone, Default)]
struct Metrics {
    sent: Counter,
    send_failures: Counter,
    dropped: Counter,
}

/// Handle to the running evaluator and senders: the rules and alerts routes, the counters.
/// The tasks stop when the handle is dropped.
pub struct AlertHandle {
    rule_metrics: rules::RuleMetrics,
    rule_set: Arc<tokio::sync::Mutex<RuleSet>>,
    metrics: Metrics,
    _tasks: Vec<Task<()>>,
}

impl AlertHandle {
    /// `GET /api/v1/rules` and `GET /api/v1/alerts` in the Prometheus HTTP API's format
    /// (operators only: alerts span suppliers).
    pub fn router(&self) -> axum::Router {
        use axum::routing::get;
        axum::Router::new()
            .route("/api/v1/rules", get(api::rules))
            .route("/api/v1/alerts", get(api::alerts))
            .with_state(self.rule_set.clone())
    }

    /// Registers the notifier's counters and the rule evaluator's.
    pub fn register(&self, registry: &mut Registry) {
        let m = &self.metrics;
        for (name, help, c) in [
            (
                "rigwatch_alert_notifications_sent",
                "Webhook messages delivered",
                &m.sent,
            ),
            (
                "rigwatch_alert_notification_failures",
                "Webhook POST attempts that failed (retried)",
                &m.send_failures,
            ),
            (
                "rigwatch_alert_notifications_dropped",
                "Webhook messages dropped because the queue was full",
                &m.dropped,
            ),
        ] {
            registry.register(name, help, c.clone());
        }
        self.rule_metrics.register(registry);
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Starts rule evaluation and notification delivery. `listen` is the default for the
/// external URL in notifications.
pub async fn spawn(
    db: Arc<Db>,
    args: &AlertArgs,
    listen: std::net::SocketAddr,
) -> anyhow::Result<AlertHandle> {
    let groups = args.rule_groups()?;
    let rule_count: usize = groups.iter().map(rules::RuleGroup::len).sum();
    let metrics = Metrics::default();
    let set = RuleSet::new(groups);
    let rule_metrics = set.metrics.clone();
    let rule_set = Arc::new(tokio::sync::Mutex::new(set));
    let mut tasks = Vec::new();
    let external_url = args
        .external_url
        .clone()
        .unwrap_or_else(|| format!("http://{listen}"))
        .trim_end_matches('/')
        .to_string();
    let data_dir = db.config().data_dir.clone();
    let mut queues = Vec::new();
    for url in &args.alert_webhooks {
        let q = Arc::new(outbox::Queue::open_for(&data_dir, url, args.alert_queue)?);
        tasks.push(task::spawn(outbox::deliver(
            url.clone(),
            q.clone(),
            metrics.clone(),
        )));
        queues.push(q);
    }
    let alertmanagers = alertmanager::Alertmanagers::start(
        &args.alertmanagers,
        args.alertmanager_resend_delay,
        &data_dir,
        args.alert_queue,
        &metrics,
        &mut tasks,
    )?;
    let alertmanager_count = alertmanagers.len();
    let state_path = outbox::state_path(&data_dir);
    if rule_count > 0
        && let Some(snap) = outbox::load_state(&state_path)
    {
        let tolerance = outbox::STATE_TOLERANCE.as_millis() as i64;
        match rule_set
            .lock()
            .await
            .restore(snap, now_ns() / 1_000_000, tolerance)
        {
            Ok(n) => info!(alerts = n, "alert state restored"),
            Err(why) => warn!(%why, "saved alert state not restored"),
        }
    }
    if rule_count > 0 {
        tasks.push(task::spawn(evaluate(
            db,
            rule_set.clone(),
            queues,
            alertmanagers,
            external_url,
            state_path,
            metrics.clone(),
        )));
    }
    info!(
        rules = rule_count,
        webhooks = args.alert_webhooks.len(),
        alertmanagers = alertmanager_count,
        "alerting started"
    );
    Ok(AlertHandle {
        rule_metrics,
        rule_set,
        metrics,
        _tasks: tasks,
    })
}

async fn evaluate(
    db: Arc<Db>,
    set: Arc<tokio::sync::Mutex<RuleSet>>,
    queues: Vec<Arc<outbox::Queue>>,
    mut alertmanagers: alertmanager::Alertmanagers,
    external_url: String,
    state_path: std::path::PathBuf,
    metrics: Metrics,
) {
    let service = QueryService::new(db.clone());
    let mut saved: Option<Vec<u8>> = None;
    loop {
        let now_ms = now_ns() / 1_000_000;
        let (out, next, state, am_body) = {
            let mut s = set.lock().await;
            let out = s.eval_due(&service, now_ms).await;
            let am_body = alertmanagers.body(&s, &out, &external_url, now_ms);
            let mut snap = s.snapshot(0);
            // Compared without its time, so an unchanged state is not rewritten.
            let unchanged = serde_json::to_vec(&snap).ok();
            snap.saved_ms = now_ms;
            (
                out,
                s.next_due_ms().unwrap_or(now_ms + 60_000),
                (unchanged, serde_json::to_vec(&snap)),
                am_body,
            )
        };
        let t = now_ms;
        if !out.alerts_series.is_empty() {
            let b = rules::alerts_batch(&out.alerts_series, t);
            if let Err(error) = db
                .write(b, WriteOptions::singleton(Singleton::Fenced))
                .await
            {
                warn!(%error, "cannot write ALERTS rows");
            }
        }
        if !out.notifications.is_empty() && !queues.is_empty() {
            // One message per alertname, like an Alertmanager route grouped by alertname.
            let mut notes = out.notifications;
            notes.sort_by(|a, b| a.alertname.cmp(&b.alertname));
            let mut bodies = Vec::new();
            for chunk in notes.chunk_by(|a, b| a.alertname == b.alertname) {
                let name = &chunk[0].alertname;
                let msg = rules::payload::message("rigwatch", &external_url, name, chunk);
                match serde_json::to_vec(&msg) {
                    Ok(body) => bodies.push(body),
                    Err(error) => warn!(%error, "cannot encode a notification"),
                }
                log_notes(chunk);
            }
            // On disk before the state that says they were sent (see `outbox`).
            outbox::push_all(&queues, bodies, &metrics).await;
        }
        if let Some(body) = am_body {
            outbox::push_all(alertmanagers.queues(), vec![body], &metrics).await;
        }
        if let (Some(key), Ok(bytes)) = state
            && saved.as_ref() != Some(&key)
        {
            let path = state_path.clone();
            match tokio::task::spawn_blocking(move || outbox::save_state(&path, &bytes)).await {
                Ok(Ok(())) => saved = Some(key),
                Ok(Err(error)) => {
                    warn!(%error, path = %state_path.display(), "cannot save the alert state")
                }
                Err(error) => warn!(%error, "alert state task failed"),
            }
        }
        let wait = (next - now_ns() / 1_000_000).clamp(50, 60_000);
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
}

fn log_notes(notes: &[Notification]) {
    for n in notes {
        info!(alert = %n.alertname, labels = %n.labels, resolved = n.resolved, "alert notification queued");
    }
}

mod alertmanager;
mod api;
mod outbox;

#[cfg(test)]
mod tests;
