//! The server's fault-detection and alerting task.
//!
//! ```text
//!  Db::subscribe ─rows─► HealthEngine ─Fault──────► gpu_fault rows (detector=health)
//!                            ▲ tick 1s  └Transition─► gpu_health rows, HealthHandle::subscribe(),
//!                                                    the on_transition callback (allocator)
//!  rule groups (interval) ─► PromQL over the store ─► recorded series, ALERTS rows,
//!                                                     notifications
//!                                                          │
//!        one bounded queue + sender per webhook and per Alertmanager: POST, retry with backoff
//! ```
//!
//! Rows written (both tables append-only):
//! - `gpu_fault`: tags `supplier, worker, gpu_uuid, model, kind, class, detector=health`,
//!   fields `code` (integer), `severity`, `evidence`, `action` (strings). The agent's own
//!   XID rows have no `detector` tag; count `detector="health"` rows to avoid counting an
//!   XID twice.
//! - `gpu_health`: tags `supplier, worker, gpu_uuid, model`, fields `state`, `previous`,
//!   `reasons` (strings, reasons joined by `; `), `state_code` (0 healthy, 1 degraded,
//!   2 unhealthy, 3 offline) and `hardware` (bool): PromQL reads `gpu_health_state_code`.
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
use rigwatch_query::QueryService;
use rigwatch_query::rules::{self, Notification, RuleSet};
use rigwatch_scheduler::Health;
use rigwatch_scheduler::health::{
    Event, Fault, GpuRef, HealthConfig, HealthEngine, Telemetry, Transition,
};
use rigwatch_storage::batch::{FieldValue, Row, WriteBatch};
use rigwatch_storage::{Db, WriteOptions};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Fault detection and alerting options of `rigwatch serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthArgs {
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

    /// A GPU with no telemetry for this long is offline.
    #[arg(long, env = "RIGWATCH_HEALTH_OFFLINE_AFTER", default_value = "60s", value_parser = humantime::parse_duration)]
    pub health_offline_after: Duration,

    /// Throttling must last this long (on every sample) to be a fault.
    #[arg(long, env = "RIGWATCH_HEALTH_THROTTLE_WINDOW", default_value = "2m", value_parser = humantime::parse_duration)]
    pub health_throttle_window: Duration,

    /// Temperature must stay over the model's limit this long to be a fault.
    #[arg(long, env = "RIGWATCH_HEALTH_TEMPERATURE_WINDOW", default_value = "30s", value_parser = humantime::parse_duration)]
    pub health_temperature_window: Duration,

    /// Conditions that recover by time clear after this long without recurring.
    #[arg(long, env = "RIGWATCH_HEALTH_CLEAN_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub health_clean_interval: Duration,
}

impl Default for HealthArgs {
    fn default() -> Self {
        let c = HealthConfig::default();
        Self {
            rules: None,
            alert_webhooks: Vec::new(),
            alertmanagers: Vec::new(),
            alertmanager_resend_delay: alertmanager::DEFAULT_RESEND_DELAY,
            external_url: None,
            alert_queue: 10_000,
            health_offline_after: Duration::from_nanos(c.offline_after_ns as u64),
            health_throttle_window: Duration::from_nanos(c.throttle_window_ns as u64),
            health_temperature_window: Duration::from_nanos(c.temperature_window_ns as u64),
            health_clean_interval: Duration::from_nanos(c.clean_interval_ns as u64),
        }
    }
}

impl HealthArgs {
    fn config(&self) -> HealthConfig {
        let ns = |d: Duration| d.as_nanos().min(i64::MAX as u128) as i64;
        HealthConfig {
            offline_after_ns: ns(self.health_offline_after),
            throttle_window_ns: ns(self.health_throttle_window),
            temperature_window_ns: ns(self.health_temperature_window),
            clean_interval_ns: ns(self.health_clean_interval),
            ..HealthConfig::default()
        }
    }

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

/// Counters of the health task and the notifier.
#[derive(Debug, Clone, Default)]
struct Metrics {
    faults: Counter,
    transitions: Counter,
    lagged_batches: Counter,
    sent: Counter,
    send_failures: Counter,
    dropped: Counter,
}

/// Called for every health change (the server passes the allocator's `set_health`).
pub type OnTransition = Box<dyn Fn(&Transition) + Send + Sync>;

/// A health change, as the allocator and other subscribers get it.
pub type HealthChange = Arc<Transition>;

/// Handle to the running task: subscribe to health changes, stop it.
pub struct HealthHandle {
    changes: broadcast::Sender<HealthChange>,
    rule_metrics: rules::RuleMetrics,
    rule_set: Arc<tokio::sync::Mutex<RuleSet>>,
    metrics: Metrics,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for HealthHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl HealthHandle {
    /// Every health transition from now on: (GPU, from, to, reasons). The server itself
    /// feeds the allocator through `spawn`'s callback; this is for other in-process consumers.
    #[allow(dead_code)]
    pub fn subscribe(&self) -> broadcast::Receiver<HealthChange> {
        self.changes.subscribe()
    }

    /// `GET /api/v1/rules` and `GET /api/v1/alerts` in the Prometheus HTTP API's format
    /// (operators only: alerts span suppliers).
    pub fn router(&self) -> axum::Router {
        use axum::routing::get;
        axum::Router::new()
            .route("/api/v1/rules", get(api::rules))
            .route("/api/v1/alerts", get(api::alerts))
            .with_state(self.rule_set.clone())
    }

    /// Registers the task's counters (and the rule evaluator's).
    pub fn register(&self, registry: &mut Registry) {
        let m = &self.metrics;
        for (name, help, c) in [
            (
                "rigwatch_health_faults",
                "Faults detected (gpu_fault rows written)",
                &m.faults,
            ),
            (
                "rigwatch_health_transitions",
                "GPU health state changes",
                &m.transitions,
            ),
            (
                "rigwatch_health_lagged_batches",
                "Write batches the health task missed because it fell behind",
                &m.lagged_batches,
            ),
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

/// Starts fault detection, rule evaluation and webhook delivery.
/// `on_transition` is called for every health change (e.g. to update the allocator).
pub async fn spawn(
    db: Arc<Db>,
    args: &HealthArgs,
    listen: std::net::SocketAddr,
    on_transition: Option<OnTransition>,
    lease_oracle: Option<rigwatch_scheduler::health::LeaseOracle>,
) -> anyhow::Result<HealthHandle> {
    let groups = args.rule_groups()?;
    let rule_count: usize = groups.iter().map(rules::RuleGroup::len).sum();
    let metrics = Metrics::default();
    let (changes, _) = broadcast::channel(4_096);
    let set = RuleSet::new(groups);
    let rule_metrics = set.metrics.clone();
    let rule_set = Arc::new(tokio::sync::Mutex::new(set));
    let mut tasks = Vec::new();

    // Subscribe first so nothing written while restoring is missed.
    let rx = db.subscribe();
    let mut engine = HealthEngine::new(args.config());
    if let Some(o) = lease_oracle {
        // Enables the "utilization stuck at 100 % with no lease" rule.
        engine.set_lease_oracle(o);
    }
    let restored = restore(&db, &mut engine).await;
    if let Some(f) = &on_transition {
        for t in &restored {
            f(t);
        }
    }
    tasks.push(tokio::spawn(detect(
        db.clone(),
        rx,
        engine,
        changes.clone(),
        on_transition,
        metrics.clone(),
    )));

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
        tasks.push(tokio::spawn(outbox::deliver(
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
        tasks.push(tokio::spawn(evaluate(
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
        "fault detection and alerting started"
    );
    Ok(HealthHandle {
        changes,
        rule_metrics,
        rule_set,
        metrics,
        tasks,
    })
}

fn num(v: FieldValue<'_>) -> Option<f64> {
    match v {
        FieldValue::F64(x) => Some(x),
        FieldValue::I64(x) => Some(x as f64),
        FieldValue::U64(x) => Some(x as f64),
        FieldValue::Bool(b) => Some(b as u8 as f64),
        FieldValue::Str(_) => None,
    }
}

fn gpu_ref<'a>(row: &Row<'a>) -> Option<GpuRef<'a>> {
    let mut g = GpuRef {
        supplier: "",
        worker: "",
        gpu_uuid: "",
        model: "",
    };
    for (k, v) in row.tags() {
        match k {
            "supplier" => g.supplier = v,
            "worker" => g.worker = v,
            "gpu_uuid" => g.gpu_uuid = v,
            "model" => g.model = v,
            _ => {}
        }
    }
    (!g.gpu_uuid.is_empty()).then_some(g)
}

/// Feeds one accepted batch to the engine.
fn observe(engine: &mut HealthEngine, batch: &WriteBatch, out: &mut Vec<Event>) {
    for row in batch.rows() {
        match row.table() {
            "gpu" => {
                let Some(g) = gpu_ref(&row) else { continue };
                let mut m = Telemetry::default();
                for (k, v) in row.fields() {
                    if let Some(x) = num(v) {
                        m.set(k, x);
                    }
                }
                engine.observe_sample(g, row.time(), &m, out);
            }
            "gpu_fault" => {
                let Some(g) = gpu_ref(&row) else { continue };
                let mut kind = "";
                let mut code = None;
                let mut ours = false;
                for (k, v) in row.tags() {
                    match k {
                        "kind" => kind = v,
                        "detector" => ours = true,
                        "code" | "xid" => code = v.parse::<u32>().ok(),
                        _ => {}
                    }
                }
                if ours {
                    continue;
                }
                for (k, v) in row.fields() {
                    if k == "code" || k == "xid" {
                        code = num(v).map(|x| x as u32).or(code);
                    }
                }
                match (kind, code) {
                    ("reset", _) => engine.observe_reset(g, row.time(), out),
                    ("xid" | "", Some(c)) => engine.observe_xid(g, row.time(), c, out),
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

fn parse_health(s: &str) -> Option<Health> {
    Some(match s {
        "healthy" => Health::Healthy,
        "degraded" => Health::Degraded,
        "unhealthy" => Health::Unhealthy,
        "offline" => Health::Offline,
        _ => return None,
    })
}

/// Restores every GPU's last stored health (latest `gpu_health` row) into the engine and
/// returns the non-healthy ones as transitions from healthy (for the allocator).
async fn restore(db: &Arc<Db>, engine: &mut HealthEngine) -> Vec<Transition> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Int64Type};
    let service = QueryService::new(db.clone());
    let batches = match service.sql("SELECT * FROM gpu_health ORDER BY time").await {
        Ok((_, b)) => b,
        Err(error) => {
            let msg = error.to_string();
            if !msg.contains("not found") {
                warn!(%error, "cannot read gpu_health to restore GPU states; starting from healthy");
            }
            return Vec::new();
        }
    };
    // gpu_uuid -> (row fields), the last row wins (rows are in time order).
    let mut last: std::collections::HashMap<String, [String; 6]> = Default::default();
    let mut times: std::collections::HashMap<String, i64> = Default::default();
    for b in &batches {
        let col = |name: &str| -> Option<arrow::array::ArrayRef> {
            let c = b.column_by_name(name)?;
            arrow::compute::cast(c, &DataType::Utf8).ok()
        };
        let (Some(uuid), Some(state), Some(time)) = (
            col("gpu_uuid"),
            col("state"),
            b.column_by_name("time")
                .and_then(|c| arrow::compute::cast(c, &DataType::Int64).ok()),
        ) else {
            continue;
        };
        let others = ["supplier", "worker", "model", "reasons", "hardware"].map(col);
        let time = time.as_primitive::<Int64Type>();
        let uuid = uuid.as_string::<i32>();
        let state = state.as_string::<i32>();
        for i in 0..b.num_rows() {
            if uuid.is_null(i) {
                continue;
            }
            let get = |a: &Option<arrow::array::ArrayRef>| {
                a.as_ref()
                    .filter(|a| !a.is_null(i))
                    .map(|a| a.as_string::<i32>().value(i).to_string())
                    .unwrap_or_default()
            };
            let u = uuid.value(i).to_string();
            times.insert(u.clone(), time.value(i));
            last.insert(
                u,
                [
                    state.value(i).to_string(),
                    get(&others[0]),
                    get(&others[1]),
                    get(&others[2]),
                    get(&others[3]),
                    get(&others[4]),
                ],
            );
        }
    }
    let mut out = Vec::new();
    for (uuid, [state, supplier, worker, model, reasons, hardware]) in &last {
        let Some(h) = parse_health(state) else {
            continue;
        };
        let g = GpuRef {
            supplier,
            worker,
            gpu_uuid: uuid,
            model,
        };
        let t = times[uuid];
        let hw = hardware == "true";
        engine.restore(g, t, h, hw, reasons);
        if h != Health::Healthy {
            out.push(Transition {
                gpu: Arc::new(rigwatch_scheduler::health::GpuIdent {
                    supplier: supplier.clone(),
                    worker: worker.clone(),
                    gpu_uuid: uuid.clone(),
                    model: model.clone(),
                }),
                time_ns: t,
                from: Health::Healthy,
                to: h,
                reasons: vec![reasons.clone()],
                hardware: hw,
            });
        }
    }
    if !last.is_empty() {
        info!(
            gpus = last.len(),
            not_healthy = out.len(),
            "restored GPU health states"
        );
    }
    out
}

fn health_code(h: Health) -> i64 {
    match h {
        Health::Healthy => 0,
        Health::Degraded => 1,
        Health::Unhealthy => 2,
        Health::Offline => 3,
    }
}

fn health_str(h: Health) -> &'static str {
    match h {
        Health::Healthy => "healthy",
        Health::Degraded => "degraded",
        Health::Unhealthy => "unhealthy",
        Health::Offline => "offline",
    }
}

fn fault_row(b: &mut WriteBatch, f: &Fault) {
    let mut r = b.row("gpu_fault", f.time_ns);
    for (k, v) in [
        ("supplier", f.gpu.supplier.as_str()),
        ("worker", f.gpu.worker.as_str()),
        ("gpu_uuid", f.gpu.gpu_uuid.as_str()),
        ("model", f.gpu.model.as_str()),
        ("kind", f.kind.as_str()),
        ("class", f.class),
        ("detector", "health"),
    ] {
        if !v.is_empty() {
            r.tag(k, v);
        }
    }
    r.field("code", FieldValue::I64(f.code))
        .field("severity", FieldValue::Str(f.severity.as_str()))
        .field("evidence", FieldValue::Str(&f.evidence))
        .field("action", FieldValue::Str(f.action));
    let _ = r.finish(0);
}

fn health_row(b: &mut WriteBatch, t: &Transition) {
    let mut r = b.row("gpu_health", t.time_ns);
    for (k, v) in [
        ("supplier", t.gpu.supplier.as_str()),
        ("worker", t.gpu.worker.as_str()),
        ("gpu_uuid", t.gpu.gpu_uuid.as_str()),
        ("model", t.gpu.model.as_str()),
    ] {
        if !v.is_empty() {
            r.tag(k, v);
        }
    }
    let reasons = t.reasons.join("; ");
    r.field("state", FieldValue::Str(health_str(t.to)))
        .field("previous", FieldValue::Str(health_str(t.from)))
        .field("state_code", FieldValue::I64(health_code(t.to)))
        .field("reasons", FieldValue::Str(&reasons))
        .field("hardware", FieldValue::Bool(t.hardware));
    let _ = r.finish(0);
}

async fn detect(
    db: Arc<Db>,
    mut rx: broadcast::Receiver<Arc<WriteBatch>>,
    mut engine: HealthEngine,
    changes: broadcast::Sender<HealthChange>,
    on_transition: Option<OnTransition>,
    metrics: Metrics,
) {
    let mut events = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = rx.recv() => match r {
                Ok(batch) => observe(&mut engine, &batch, &mut events),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    metrics.lagged_batches.inc_by(n);
                    warn!(missed = n, "health task fell behind the write path; batches skipped");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick() => engine.tick(now_ns(), &mut events),
        }
        if events.is_empty() {
            continue;
        }
        let mut b = WriteBatch::default();
        for e in events.drain(..) {
            match e {
                Event::Fault(f) => {
                    metrics.faults.inc();
                    fault_row(&mut b, &f);
                }
                Event::Transition(t) => {
                    metrics.transitions.inc();
                    health_row(&mut b, &t);
                    info!(gpu = %t.gpu.gpu_uuid, from = health_str(t.from), to = health_str(t.to), reasons = %t.reasons.join("; "), "GPU health changed");
                    if let Some(f) = &on_transition {
                        f(&t);
                    }
                    let _ = changes.send(Arc::new(t));
                }
            }
        }
        if let Err(error) = db.write(b, WriteOptions::default()).await {
            warn!(%error, "cannot write fault/health rows");
        }
    }
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
            if let Err(error) = db.write(b, WriteOptions::default()).await {
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
