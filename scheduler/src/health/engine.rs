//! The per-GPU fault detector and health state machine. See the module docs of
//! [`crate::health`] for the rules; this file implements them.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use super::xid::{self, XidClass};
use crate::model::Health;

const NS_PER_S: i64 = 1_000_000_000;

/// `nvmlClocksEventReasons` bits (the `throttle_reasons` field).
pub mod throttle {
    pub const SW_POWER_CAP: u64 = 0x4;
    pub const HW_SLOWDOWN: u64 = 0x8;
    pub const SW_THERMAL_SLOWDOWN: u64 = 0x20;
    pub const HW_THERMAL_SLOWDOWN: u64 = 0x40;
    pub const HW_POWER_BRAKE_SLOWDOWN: u64 = 0x80;
    /// The bits that slow a GPU down against its load: thermal and hardware slowdowns and
    /// the power brake (software power capping alone is normal at full load).
    pub const SLOWDOWN: u64 =
        HW_SLOWDOWN | SW_THERMAL_SLOWDOWN | HW_THERMAL_SLOWDOWN | HW_POWER_BRAKE_SLOWDOWN;
}

/// Thresholds and windows. Durations are nanoseconds.
#[derive(Clone, Copy, Debug)]
pub struct HealthConfig {
    /// A GPU with no `gpu` row for this long is offline.
    pub offline_after_ns: i64,
    /// Throttle bits that count as thermal throttling.
    pub thermal_mask: u64,
    /// Throttle bits that count as power throttling. SW power capping alone is normal under
    /// full load, so the default is the hardware power brake only.
    pub power_mask: u64,
    /// Throttling must hold on every sample for this long to be a fault.
    pub throttle_window_ns: i64,
    /// Temperature must stay over the model's limit for this long.
    pub temperature_window_ns: i64,
    /// PCIe replays per minute above which a sample is a spike.
    pub pcie_replays_per_min: f64,
    /// Utilization at or above this, with no lease, for `stuck_window_ns`, is stuck.
    pub stuck_utilization: f64,
    pub stuck_window_ns: i64,
    /// A condition that recovers by time (throttling, temperature, PCIe, stuck, unknown
    /// XID) clears after this long without recurring.
    pub clean_interval_ns: i64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            offline_after_ns: 60 * NS_PER_S,
            thermal_mask: throttle::HW_SLOWDOWN
                | throttle::SW_THERMAL_SLOWDOWN
                | throttle::HW_THERMAL_SLOWDOWN,
            power_mask: throttle::HW_POWER_BRAKE_SLOWDOWN,
            throttle_window_ns: 120 * NS_PER_S,
            temperature_window_ns: 30 * NS_PER_S,
            pcie_replays_per_min: 100.0,
            stuck_utilization: 99.5,
            stuck_window_ns: 600 * NS_PER_S,
            clean_interval_ns: 300 * NS_PER_S,
        }
    }
}

/// Used for models the model table does not know.
pub const DEFAULT_TEMPERATURE_LIMIT: f64 =
    rigwatch_common::gpu_model::FALLBACK_THERMAL_LIMIT_C as f64;
/// HBM's operating limit (°C).
pub const MEMORY_TEMPERATURE_LIMIT: f64 = 95.0;

/// The GPU temperature (°C) at which `model` (a canonical or NVML name) starts slowing
/// down, from the one model table (`rigwatch_common::gpu_model`).
pub fn temperature_limit(model: &str) -> f64 {
    f64::from(rigwatch_common::gpu_model::thermal_limit_c(model))
}

/// Who a GPU is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GpuIdent {
    pub supplier: String,
    pub worker: String,
    pub gpu_uuid: String,
    pub model: String,
}

/// A borrowed GPU identity, as read from a row.
#[derive(Clone, Copy, Debug)]
pub struct GpuRef<'a> {
    pub supplier: &'a str,
    pub worker: &'a str,
    pub gpu_uuid: &'a str,
    pub model: &'a str,
}

/// The metrics of one `gpu` row the detector reads (field names as the agent writes them).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Telemetry {
    pub utilization: Option<f64>,
    pub temperature: Option<f64>,
    pub memory_temperature: Option<f64>,
    pub power_watts: Option<f64>,
    pub power_limit_watts: Option<f64>,
    pub energy_mj: Option<f64>,
    pub ecc_dbe_total: Option<f64>,
    pub remapped_rows_uncorrectable: Option<f64>,
    pub row_remap_failure: Option<f64>,
    pub pcie_replay_total: Option<f64>,
    pub throttle_reasons: Option<u64>,
}

impl Telemetry {
    /// Sets the metric named `field` (agent field names); unknown names are ignored.
    pub fn set(&mut self, field: &str, v: f64) {
        match field {
            "utilization" => self.utilization = Some(v),
            "temperature" => self.temperature = Some(v),
            "memory_temperature" => self.memory_temperature = Some(v),
            "power_watts" => self.power_watts = Some(v),
            "power_limit_watts" => self.power_limit_watts = Some(v),
            "energy_mj" => self.energy_mj = Some(v),
            "ecc_dbe_total" => self.ecc_dbe_total = Some(v),
            "remapped_rows_uncorrectable" => self.remapped_rows_uncorrectable = Some(v),
            "row_remap_failure" => self.row_remap_failure = Some(v),
            "pcie_replay_total" => self.pcie_replay_total = Some(v),
            "throttle_reasons" if v >= 0.0 => self.throttle_reasons = Some(v as u64),
            _ => {}
        }
    }
}

/// What kind of fault an event is (the `kind` tag of `gpu_fault`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    Xid,
    EccUncorrectable,
    RowRemapFailure,
    ThermalThrottle,
    PowerThrottle,
    OverTemperature,
    PcieReplay,
    StuckUtilization,
    Offline,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Xid => "xid",
            FaultKind::EccUncorrectable => "ecc_uncorrectable",
            FaultKind::RowRemapFailure => "row_remap_failure",
            FaultKind::ThermalThrottle => "thermal_throttle",
            FaultKind::PowerThrottle => "power_throttle",
            FaultKind::OverTemperature => "over_temperature",
            FaultKind::PcieReplay => "pcie_replay",
            FaultKind::StuckUtilization => "stuck_utilization",
            FaultKind::Offline => "offline",
        }
    }
}

/// How serious a fault is for the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Recorded, no effect on health (application XIDs, informational XIDs).
    Info,
    /// The GPU becomes degraded.
    Warning,
    /// The GPU becomes unhealthy or offline.
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// A detected fault: one `gpu_fault` row.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub gpu: Arc<GpuIdent>,
    pub time_ns: i64,
    pub kind: FaultKind,
    /// The XID code for XIDs; the throttle bits for throttling; 0 otherwise.
    pub code: i64,
    /// For XIDs, the catalogue class; otherwise `hardware` or `environment`.
    pub class: &'static str,
    pub severity: Severity,
    /// The values that triggered it.
    pub evidence: String,
    pub action: &'static str,
}

/// A health change: one `gpu_health` row, and what [`HealthEngine`] subscribers receive.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    pub gpu: Arc<GpuIdent>,
    pub time_ns: i64,
    pub from: Health,
    pub to: Health,
    /// Why the GPU is in `to` (empty when healthy), one entry per active condition.
    pub reasons: Vec<String>,
    /// Whether a hardware fault is among the reasons (counts as hardware-fault downtime in the
    /// reliability score).
    pub hardware: bool,
}

/// What the engine emits.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Fault(Fault),
    Transition(Transition),
}

/// Conditions that hold a GPU out of `Healthy`; index into `GpuState::active`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
enum Cond {
    Offline,
    XidHardware,
    EccUncorrectable,
    RowRemapFailure,
    OverTemperature,
    ThermalThrottle,
    PowerThrottle,
    PcieReplay,
    StuckUtilization,
    XidUnknown,
    /// Restored at start from a stored non-hardware unhealthy / degraded state.
    RestoredUnhealthy,
    RestoredDegraded,
}
const CONDS: usize = 12;

impl Cond {
    fn health(self) -> Health {
        match self {
            Cond::Offline => Health::Offline,
            Cond::XidHardware
            | Cond::EccUncorrectable
            | Cond::RowRemapFailure
            | Cond::OverTemperature
            | Cond::RestoredUnhealthy => Health::Unhealthy,
            _ => Health::Degraded,
        }
    }
    fn hardware(self) -> bool {
        matches!(
            self,
            Cond::XidHardware | Cond::EccUncorrectable | Cond::RowRemapFailure
        )
    }
    /// Recovers after a clean interval (the others need a reset, a repair or data).
    fn timed(self) -> bool {
        matches!(
            self,
            Cond::OverTemperature
                | Cond::ThermalThrottle
                | Cond::PowerThrottle
                | Cond::PcieReplay
                | Cond::StuckUtilization
                | Cond::XidUnknown
                | Cond::RestoredUnhealthy
                | Cond::RestoredDegraded
        )
    }
}

#[derive(Clone, Debug)]
struct Active {
    reason: String,
    /// Last time the condition was seen holding (for timed recovery).
    last_ns: i64,
}

#[derive(Debug)]
struct GpuState {
    ident: Arc<GpuIdent>,
    health: Health,
    last_seen_ns: i64,
    prev_sample_ns: i64,
    prev: Telemetry,
    /// When each sustained condition started holding (indexed by `Cond`).
    since: [Option<i64>; CONDS],
    /// Seen live: a tick found its last row within `offline_after` of the clock. Rows that
    /// were old when they arrived (imports, backfills) never make a GPU go offline.
    live: bool,
    active: [Option<Active>; CONDS],
}

impl GpuState {
    fn new(ident: Arc<GpuIdent>, t: i64) -> Self {
        Self {
            ident,
            health: Health::Healthy,
            last_seen_ns: t,
            prev_sample_ns: i64::MIN,
            prev: Telemetry::default(),
            since: [None; CONDS],
            live: false,
            active: Default::default(),
        }
    }

    fn worst(&self) -> Health {
        let rank = |h: Health| match h {
            Health::Healthy => 0,
            Health::Degraded => 1,
            Health::Unhealthy => 2,
            Health::Offline => 3,
        };
        let mut h = Health::Healthy;
        for (i, a) in self.active.iter().enumerate() {
            if a.is_some() {
                let c = COND_BY_INDEX[i].health();
                if rank(c) > rank(h) {
                    h = c;
                }
            }
        }
        h
    }
}

const COND_BY_INDEX: [Cond; CONDS] = [
    Cond::Offline,
    Cond::XidHardware,
    Cond::EccUncorrectable,
    Cond::RowRemapFailure,
    Cond::OverTemperature,
    Cond::ThermalThrottle,
    Cond::PowerThrottle,
    Cond::PcieReplay,
    Cond::StuckUtilization,
    Cond::XidUnknown,
    Cond::RestoredUnhealthy,
    Cond::RestoredDegraded,
];

/// Whether a GPU has a lease, from the allocator; `None` means unknown.
pub type LeaseOracle = Box<dyn Fn(&str) -> Option<bool> + Send + Sync>;

/// The detector: feed it rows with [`observe_sample`](Self::observe_sample),
/// [`observe_xid`](Self::observe_xid), [`observe_reset`](Self::observe_reset), and call
/// [`tick`](Self::tick) regularly (offline detection and timed recovery). Events are
/// appended to the caller's vector.
pub struct HealthEngine {
    config: HealthConfig,
    gpus: HashMap<Box<str>, GpuState>,
    lease: Option<LeaseOracle>,
}

impl std::fmt::Debug for HealthEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthEngine")
            .field("config", &self.config)
            .field("gpus", &self.gpus.len())
            .field("lease_oracle", &self.lease.is_some())
            .finish()
    }
}

impl HealthEngine {
    pub fn new(config: HealthConfig) -> Self {
        Self {
            config,
            gpus: HashMap::new(),
            lease: None,
        }
    }

    pub fn config(&self) -> &HealthConfig {
        &self.config
    }

    /// Gives the engine the allocator's lease view; without it the stuck-utilization rule is
    /// skipped (whether a busy GPU is leased is unknown).
    pub fn set_lease_oracle(&mut self, oracle: LeaseOracle) {
        self.lease = Some(oracle);
    }

    /// The current state and reasons of a GPU.
    pub fn health(&self, gpu_uuid: &str) -> Option<(Health, Vec<String>)> {
        self.gpus.get(gpu_uuid).map(|g| {
            (
                g.health,
                g.active
                    .iter()
                    .flatten()
                    .map(|a| a.reason.clone())
                    .collect(),
            )
        })
    }

    /// Every GPU's identity and state.
    pub fn states(&self) -> impl Iterator<Item = (&Arc<GpuIdent>, Health)> {
        self.gpus.values().map(|g| (&g.ident, g.health))
    }

    /// Restores a GPU's last stored state (the latest `gpu_health` row) at start, so that a
    /// restart does not make a drained GPU placeable. No transition is emitted. A hardware
    /// state again needs a reset; other unhealthy/degraded states clear after a clean
    /// interval from `t`; an offline GPU stays offline until it reports.
    pub fn restore(
        &mut self,
        gpu: GpuRef<'_>,
        t: i64,
        health: Health,
        hardware: bool,
        reasons: &str,
    ) {
        let Some(g) = self.state(gpu, t) else {
            return;
        };
        g.last_seen_ns = g.last_seen_ns.max(t);
        // It was part of the live fleet when the row was written.
        g.live = true;
        let cond = match (health, hardware) {
            (Health::Healthy, _) => None,
            (Health::Offline, _) => Some(Cond::Offline),
            (_, true) => Some(Cond::XidHardware),
            (Health::Unhealthy, false) => Some(Cond::RestoredUnhealthy),
            (Health::Degraded, false) => Some(Cond::RestoredDegraded),
        };
        if let Some(c) = cond {
            g.active[c as usize] = Some(Active {
                reason: format!("restored at start: {reasons}"),
                last_ns: t,
            });
        }
        if health == Health::Offline && hardware {
            g.active[Cond::XidHardware as usize] = Some(Active {
                reason: format!("restored at start: {reasons}"),
                last_ns: t,
            });
        }
        g.health = g.worst();
    }

    /// The state of `gpu`, created on first sight. A GPU is its supplier's: a row naming
    /// a UUID first seen under another supplier is not this GPU (`None`), so it can neither
    /// fault nor heal it (agents' rows are checked against GPU claims before they get here;
    /// this holds for every other writer too).
    fn state(&mut self, gpu: GpuRef<'_>, t: i64) -> Option<&mut GpuState> {
        if let Some(g) = self.gpus.get(gpu.gpu_uuid)
            && g.ident.supplier != gpu.supplier
        {
            return None;
        }
        if !self.gpus.contains_key(gpu.gpu_uuid) {
            let ident = Arc::new(GpuIdent {
                supplier: gpu.supplier.to_string(),
                worker: gpu.worker.to_string(),
                gpu_uuid: gpu.gpu_uuid.to_string(),
                model: gpu.model.to_string(),
            });
            self.gpus
                .insert(gpu.gpu_uuid.into(), GpuState::new(ident, t));
        }
        let g = self.gpus.get_mut(gpu.gpu_uuid).expect("inserted above");
        if g.ident.model.is_empty() && !gpu.model.is_empty() {
            let mut ident = (*g.ident).clone();
            ident.model = gpu.model.to_string();
            g.ident = Arc::new(ident);
        }
        Some(g)
    }

    /// One `gpu` row.
    pub fn observe_sample(&mut self, gpu: GpuRef<'_>, t: i64, m: &Telemetry, out: &mut Vec<Event>) {
        let cfg = self.config;
        let leased = self.lease.as_ref().and_then(|f| f(gpu.gpu_uuid));
        let Some(g) = self.state(gpu, t) else {
            return;
        };
        if t > g.last_seen_ns {
            g.last_seen_ns = t;
        }
        if g.active[Cond::Offline as usize].is_some() {
            clear(g, Cond::Offline);
        }
        if t <= g.prev_sample_ns {
            // Out of order or duplicate: only liveness counts.
            settle(g, t, out);
            return;
        }
        let first = g.prev_sample_ns == i64::MIN;
        let prev = g.prev;
        let dt_ns = t.saturating_sub(g.prev_sample_ns);

        // A GPU reset or driver reload zeroes the volatile counters and the energy counter.
        if !first
            && (decreased(prev.energy_mj, m.energy_mj)
                || decreased(prev.ecc_dbe_total, m.ecc_dbe_total))
        {
            reset(g, t);
        }

        // Uncorrectable ECC: the volatile DBE counter or uncorrectable remapped rows grew.
        if !first {
            if let Some(d) = increase(prev.ecc_dbe_total, m.ecc_dbe_total) {
                let ev = format!(
                    "ecc_dbe_total {} -> {} (+{d})",
                    fmt_opt(prev.ecc_dbe_total),
                    fmt_opt(m.ecc_dbe_total)
                );
                raise(
                    g,
                    Cond::EccUncorrectable,
                    t,
                    FaultKind::EccUncorrectable,
                    0,
                    ev,
                    out,
                );
            } else if let Some(d) = increase(
                prev.remapped_rows_uncorrectable,
                m.remapped_rows_uncorrectable,
            ) {
                let ev = format!(
                    "remapped_rows_uncorrectable {} -> {} (+{d})",
                    fmt_opt(prev.remapped_rows_uncorrectable),
                    fmt_opt(m.remapped_rows_uncorrectable)
                );
                raise(
                    g,
                    Cond::EccUncorrectable,
                    t,
                    FaultKind::EccUncorrectable,
                    0,
                    ev,
                    out,
                );
            }
        }

        // Row remap failure: the bank ran out of spare rows. Clears only when the flag does
        // (after repair).
        match m.row_remap_failure {
            Some(v) if v >= 1.0 && g.active[Cond::RowRemapFailure as usize].is_none() => {
                let ev = format!(
                    "row_remap_failure=1, remapped_rows_uncorrectable={}",
                    fmt_opt(m.remapped_rows_uncorrectable)
                );
                raise(
                    g,
                    Cond::RowRemapFailure,
                    t,
                    FaultKind::RowRemapFailure,
                    0,
                    ev,
                    out,
                );
            }
            Some(v) if v >= 1.0 => {}
            Some(_) => clear(g, Cond::RowRemapFailure),
            None => {}
        }

        // Sustained throttling.
        if let Some(bits) = m.throttle_reasons {
            sustained(
                g,
                t,
                bits & cfg.thermal_mask != 0,
                cfg.throttle_window_ns,
                Cond::ThermalThrottle,
                |since| {
                    format!(
                        "throttle_reasons=0x{bits:x} (thermal bits 0x{:x}) on every sample for {}s, temperature={}",
                        bits & cfg.thermal_mask,
                        (t - since) / NS_PER_S,
                        fmt_opt(m.temperature)
                    )
                },
                (FaultKind::ThermalThrottle, (bits & cfg.thermal_mask) as i64),
                out,
            );
            sustained(
                g,
                t,
                bits & cfg.power_mask != 0,
                cfg.throttle_window_ns,
                Cond::PowerThrottle,
                |since| {
                    format!(
                        "throttle_reasons=0x{bits:x} (power bits 0x{:x}) on every sample for {}s, power={}W of {}W",
                        bits & cfg.power_mask,
                        (t - since) / NS_PER_S,
                        fmt_opt(m.power_watts),
                        fmt_opt(m.power_limit_watts)
                    )
                },
                (FaultKind::PowerThrottle, (bits & cfg.power_mask) as i64),
                out,
            );
        }

        // Temperature over the model's limit (GPU or memory), sustained.
        let limit = temperature_limit(&g.ident.model);
        let gpu_hot = m.temperature.is_some_and(|v| v > limit);
        let mem_hot = m
            .memory_temperature
            .is_some_and(|v| v > MEMORY_TEMPERATURE_LIMIT);
        if m.temperature.is_some() || m.memory_temperature.is_some() {
            let ident = g.ident.clone();
            sustained(
                g,
                t,
                gpu_hot || mem_hot,
                cfg.temperature_window_ns,
                Cond::OverTemperature,
                |since| {
                    format!(
                        "temperature={}C (limit {limit}C for `{}`), memory_temperature={}C (limit {MEMORY_TEMPERATURE_LIMIT}C), over for {}s",
                        fmt_opt(m.temperature),
                        ident.model,
                        fmt_opt(m.memory_temperature),
                        (t - since) / NS_PER_S
                    )
                },
                (FaultKind::OverTemperature, 0),
                out,
            );
        }

        // PCIe replay rate.
        if !first && let Some(d) = increase(prev.pcie_replay_total, m.pcie_replay_total) {
            let per_min = d * 60.0 * NS_PER_S as f64 / dt_ns as f64;
            if per_min > cfg.pcie_replays_per_min {
                let ev = format!(
                    "pcie_replay_total {} -> {} in {:.1}s = {per_min:.0}/min (threshold {}/min)",
                    fmt_opt(prev.pcie_replay_total),
                    fmt_opt(m.pcie_replay_total),
                    dt_ns as f64 / NS_PER_S as f64,
                    cfg.pcie_replays_per_min
                );
                raise(
                    g,
                    Cond::PcieReplay,
                    t,
                    FaultKind::PcieReplay,
                    d as i64,
                    ev,
                    out,
                );
            }
        }

        // Utilization stuck at 100% with no lease (only when the lease view is known).
        if let (Some(u), Some(leased)) = (m.utilization, leased) {
            sustained(
                g,
                t,
                u >= cfg.stuck_utilization && !leased,
                cfg.stuck_window_ns,
                Cond::StuckUtilization,
                |since| {
                    format!(
                        "utilization={u}% with no lease for {}s",
                        (t - since) / NS_PER_S
                    )
                },
                (FaultKind::StuckUtilization, 0),
                out,
            );
        }

        // Merge: keep counters that this row did not carry.
        let mut next = *m;
        macro_rules! keep {
            ($($f:ident),*) => { $( if next.$f.is_none() { next.$f = prev.$f; } )* };
        }
        keep!(
            energy_mj,
            ecc_dbe_total,
            remapped_rows_uncorrectable,
            pcie_replay_total
        );
        g.prev = next;
        g.prev_sample_ns = t;
        settle(g, t, out);
    }

    /// One XID event (a `gpu_fault` row the agent wrote).
    pub fn observe_xid(&mut self, gpu: GpuRef<'_>, t: i64, code: u32, out: &mut Vec<Event>) {
        let Some(g) = self.state(gpu, t) else {
            return;
        };
        let info = xid::lookup(code);
        let class = xid::class(code);
        let name = info.map_or("unknown XID", |i| i.name);
        let action = info.map_or(xid::UNKNOWN_ACTION, |i| i.action);
        let evidence = format!("XID {code} ({name}), class {}", class.as_str());
        match class {
            XidClass::Hardware => raise_with(
                g,
                Cond::XidHardware,
                t,
                FaultKind::Xid,
                code as i64,
                evidence,
                action,
                class.as_str(),
                out,
            ),
            XidClass::Unknown => raise_with(
                g,
                Cond::XidUnknown,
                t,
                FaultKind::Xid,
                code as i64,
                evidence,
                action,
                class.as_str(),
                out,
            ),
            XidClass::Application | XidClass::Informational => out.push(Event::Fault(Fault {
                gpu: g.ident.clone(),
                time_ns: t,
                kind: FaultKind::Xid,
                code: code as i64,
                class: class.as_str(),
                severity: Severity::Info,
                evidence,
                action,
            })),
        }
        settle(g, t, out);
    }

    /// The agent reported a GPU reset (or a node reboot): conditions that need a reset clear.
    pub fn observe_reset(&mut self, gpu: GpuRef<'_>, t: i64, out: &mut Vec<Event>) {
        let Some(g) = self.state(gpu, t) else {
            return;
        };
        reset(g, t);
        settle(g, t, out);
    }

    /// Offline detection and timed recovery at `now`.
    pub fn tick(&mut self, now: i64, out: &mut Vec<Event>) {
        let cfg = &self.config;
        for g in self.gpus.values_mut() {
            let deadline = g.last_seen_ns.saturating_add(cfg.offline_after_ns);
            if now < deadline {
                g.live = true;
            }
            if g.live && now >= deadline && g.active[Cond::Offline as usize].is_none() {
                let ev = format!(
                    "no gpu row for {}s (last at {}, offline after {}s)",
                    (now - g.last_seen_ns) / NS_PER_S,
                    g.last_seen_ns,
                    cfg.offline_after_ns / NS_PER_S
                );
                raise_with(
                    g,
                    Cond::Offline,
                    deadline,
                    FaultKind::Offline,
                    0,
                    ev,
                    "check the worker: agent running, network, power; the GPU may have fallen off the bus",
                    "availability",
                    out,
                );
                // The sustained-condition clocks restart when data comes back.
                g.since = [None; CONDS];
            }
            for c in COND_BY_INDEX {
                if c.timed()
                    && let Some(a) = &g.active[c as usize]
                    && now - a.last_ns >= cfg.clean_interval_ns
                {
                    clear(g, c);
                }
            }
            settle(g, now, out);
        }
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "?".to_string(), |v| format!("{v}"))
}

fn decreased(prev: Option<f64>, now: Option<f64>) -> bool {
    matches!((prev, now), (Some(p), Some(n)) if n < p)
}

fn increase(prev: Option<f64>, now: Option<f64>) -> Option<f64> {
    match (prev, now) {
        (Some(p), Some(n)) if n > p => Some(n - p),
        _ => None,
    }
}

fn reset(g: &mut GpuState, _t: i64) {
    for c in [Cond::XidHardware, Cond::EccUncorrectable] {
        clear(g, c);
    }
}

fn clear(g: &mut GpuState, c: Cond) {
    g.active[c as usize] = None;
}

fn action_for(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::EccUncorrectable => {
            "drain and reset the GPU so pending row remaps take effect; RMA if it repeats"
        }
        FaultKind::RowRemapFailure => "drain the GPU and open an RMA: no spare rows are left",
        FaultKind::ThermalThrottle | FaultKind::OverTemperature => {
            "check cooling: fans, airflow, ambient temperature, heatsink contact"
        }
        FaultKind::PowerThrottle => "check the power supply and the power brake signal",
        FaultKind::PcieReplay => "check PCIe seating, risers and link width/speed; reseat the GPU",
        FaultKind::StuckUtilization => {
            "find the process using the GPU without a lease (compute_processes) and stop it"
        }
        FaultKind::Offline | FaultKind::Xid => "",
    }
}

fn class_for(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::EccUncorrectable | FaultKind::RowRemapFailure | FaultKind::PcieReplay => {
            "hardware"
        }
        FaultKind::StuckUtilization => "usage",
        FaultKind::Offline => "availability",
        _ => "environment",
    }
}

fn raise(
    g: &mut GpuState,
    c: Cond,
    t: i64,
    kind: FaultKind,
    code: i64,
    evidence: String,
    out: &mut Vec<Event>,
) {
    raise_with(
        g,
        c,
        t,
        kind,
        code,
        evidence,
        action_for(kind),
        class_for(kind),
        out,
    )
}

#[allow(clippy::too_many_arguments)]
fn raise_with(
    g: &mut GpuState,
    c: Cond,
    t: i64,
    kind: FaultKind,
    code: i64,
    evidence: String,
    action: &'static str,
    class: &'static str,
    out: &mut Vec<Event>,
) {
    let severity = match c.health() {
        Health::Degraded => Severity::Warning,
        _ => Severity::Critical,
    };
    let mut reason = String::with_capacity(evidence.len() + 24);
    let _ = write!(reason, "{}: {evidence}", kind.as_str());
    g.active[c as usize] = Some(Active { reason, last_ns: t });
    out.push(Event::Fault(Fault {
        gpu: g.ident.clone(),
        time_ns: t,
        kind,
        code,
        class,
        severity,
        evidence,
        action,
    }));
}

/// A condition that must hold on every sample for `window` to fire. While it is active and
/// still holding, its recovery clock is pushed forward; one fault event per episode.
#[allow(clippy::too_many_arguments)]
fn sustained(
    g: &mut GpuState,
    t: i64,
    holds: bool,
    window: i64,
    c: Cond,
    evidence: impl FnOnce(i64) -> String,
    (kind, code): (FaultKind, i64),
    out: &mut Vec<Event>,
) {
    if !holds {
        g.since[c as usize] = None;
        return;
    }
    let start = *g.since[c as usize].get_or_insert(t);
    if let Some(a) = &mut g.active[c as usize] {
        a.last_ns = t;
        return;
    }
    if t - start >= window {
        raise(g, c, t, kind, code, evidence(start), out);
    }
}

/// Recomputes the state and emits a transition if it changed.
fn settle(g: &mut GpuState, t: i64, out: &mut Vec<Event>) {
    let h = g.worst();
    if h == g.health {
        return;
    }
    let from = g.health;
    g.health = h;
    let mut reasons = Vec::new();
    let mut hardware = false;
    for (i, a) in g.active.iter().enumerate() {
        if let Some(a) = a {
            reasons.push(a.reason.clone());
            hardware |= COND_BY_INDEX[i].hardware();
        }
    }
    out.push(Event::Transition(Transition {
        gpu: g.ident.clone(),
        time_ns: t,
        from,
        to: h,
        reasons,
        hardware,
    }));
}
