//! Fault detection: the health engine of `rigwatch-scheduler` fed by the store's write path.
//!
//! ```text
//!  Db::subscribe ─rows─► HealthEngine ─Fault──────► gpu_fault rows (detector=health)
//!                            ▲ tick 0.5s └Transition─► gpu_health rows, FaultHandle::subscribe(),
//!                                                    the on_transition callback (allocator)
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
//! At start every GPU's last stored `gpu_health` row is restored into the engine, so a restart
//! neither forgets a fault nor announces it again.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use rigwatch_common::tables;
use rigwatch_common::task::{self, Task};
use rigwatch_query::QueryService;
use rigwatch_query::rows::Rows;
use rigwatch_scheduler::Health;
use rigwatch_scheduler::health::{
    Event, Fault, GpuRef, HealthConfig, HealthEngine, Telemetry, Transition,
};
use rigwatch_storage::batch::{FieldValue, Row, WriteBatch};
use rigwatch_storage::{Db, Singleton, WriteOptions};
use tokio::sync::broadcast;
use tracing::{info, warn};

/// Fault detection options of `rigwatch serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct FaultArgs {
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

impl Default for FaultArgs {
    fn default() -> Self {
        let c = HealthConfig::default();
        Self {
            health_offline_after: Duration::from_nanos(c.offline_after_ns as u64),
            health_throttle_window: Duration::from_nanos(c.throttle_window_ns as u64),
            health_temperature_window: Duration::from_nanos(c.temperature_window_ns as u64),
            health_clean_interval: Duration::from_nanos(c.clean_interval_ns as u64),
        }
    }
}

impl FaultArgs {
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
}

/// Counters of fault detection.
#[derive(Debug, Clone, Default)]
struct Metrics {
    faults: Counter,
    transitions: Counter,
    lagged_batches: Counter,
}

/// Called for every health change (the server passes the allocator's `health_changed`).
pub type OnTransition = Box<dyn Fn(&Transition) + Send + Sync>;

/// A health change, as the allocator and other subscribers get it.
pub type HealthChange = Arc<Transition>;

/// Handle to the running detector: subscribe to health changes, register its counters. The
/// task stops when the handle is dropped.
pub struct FaultHandle {
    changes: broadcast::Sender<HealthChange>,
    metrics: Metrics,
    _task: Task<()>,
}

impl FaultHandle {
    /// Every health transition from now on: (GPU, from, to, reasons). The server itself
    /// feeds the allocator through `spawn`'s callback; this is for other in-process consumers.
    pub fn subscribe(&self) -> broadcast::Receiver<HealthChange> {
        self.changes.subscribe()
    }

    /// Registers the detector's counters.
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
        ] {
            registry.register(name, help, c.clone());
        }
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Starts fault detection. `on_transition` is called for every health change (e.g. to update
/// the allocator); `lease_oracle` enables the "busy with no lease" rule.
pub async fn spawn(
    db: Arc<Db>,
    args: &FaultArgs,
    on_transition: Option<OnTransition>,
    lease_oracle: Option<rigwatch_scheduler::health::LeaseOracle>,
) -> FaultHandle {
    let metrics = Metrics::default();
    let (changes, _) = broadcast::channel(4_096);
    // Subscribe first so nothing written while restoring is missed.
    let rx = db.subscribe();
    let mut engine = HealthEngine::new(args.config());
    if let Some(o) = lease_oracle {
        engine.set_lease_oracle(o);
    }
    let restored = restore(&db, &mut engine).await;
    if let Some(f) = &on_transition {
        for t in &restored {
            f(t);
        }
    }
    let task = task::spawn(detect(
        db,
        rx,
        engine,
        changes.clone(),
        on_transition,
        metrics.clone(),
    ));
    info!("fault detection started");
    FaultHandle {
        changes,
        metrics,
        _task: task,
    }
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
            tables::GPU => {
                let Some(g) = gpu_ref(&row) else { continue };
                let mut m = Telemetry::default();
                for (k, v) in row.fields() {
                    if let Some(x) = num(v) {
                        m.set(k, x);
                    }
                }
                engine.observe_sample(g, row.time(), &m, out);
            }
            tables::GPU_FAULT => {
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
    let service = QueryService::new(db.clone());
    let rows = match Rows::query(
        &service,
        tables::GPU_HEALTH,
        &format!("SELECT * FROM {} ORDER BY time", tables::GPU_HEALTH),
    )
    .await
    {
        Ok(r) => r,
        Err(error) => {
            warn!(%error, "cannot read gpu_health to restore GPU states; starting from healthy");
            return Vec::new();
        }
    };
    // gpu_uuid -> (row fields), the last row wins (rows are in time order).
    let mut last: std::collections::HashMap<String, [String; 6]> = Default::default();
    let mut times: std::collections::HashMap<String, i64> = Default::default();
    for r in rows.iter() {
        let (Some(uuid), Some(state), Some(time)) =
            (r.str("gpu_uuid"), r.str("state"), r.i64("time"))
        else {
            continue;
        };
        let get = |k: &str| r.str(k).unwrap_or_default().to_string();
        times.insert(uuid.to_string(), time);
        last.insert(
            uuid.to_string(),
            [
                state.to_string(),
                get("supplier"),
                get("worker"),
                get("model"),
                get("reasons"),
                r.bool("hardware")
                    .map_or_else(|| get("hardware"), |b| b.to_string()),
            ],
        );
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
    let mut r = b.row(tables::GPU_FAULT, f.time_ns);
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
    let mut r = b.row(tables::GPU_HEALTH, t.time_ns);
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
        if let Err(error) = db
            .write(b, WriteOptions::singleton(Singleton::Fenced))
            .await
        {
            warn!(%error, "cannot write fault/health rows");
        }
    }
}

#[cfg(test)]
mod tests;
