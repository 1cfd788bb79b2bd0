//! Fault detection and GPU health, as pure functions over telemetry rows.
//!
//! ```text
//!  gpu rows ─────┐                         ┌──▶ Fault (gpu_fault row: kind, code, severity,
//!  gpu_fault XID ┼──▶ HealthEngine (per GPU)│        class, evidence, action)
//!  resets ───────┘        ▲ tick(now)      └──▶ Transition (gpu_health row; to the allocator)
//! ```
//!
//! Plain data in and out: the fault detector (`rigwatch-scheduler-service`'s `faults`) reads rows from the store's
//! write subscription, calls the engine, and writes what it emits back as rows.
//!
//! # Rules
//!
//! | condition | fault `kind` | health while active | recovery |
//! |---|---|---|---|
//! | XID, hardware class ([`xid`]) | `xid` | unhealthy | a GPU reset (agent `gpu_fault` row `kind=reset`, or the energy / volatile ECC counters going down) |
//! | XID, application class | `xid` (severity info, class application) | unchanged: held against the job, not the supplier | — |
//! | XID, informational | `xid` (severity info) | unchanged (watched) | — |
//! | XID, not in the catalogue | `xid` | degraded | clean interval |
//! | `ecc_dbe_total` or `remapped_rows_uncorrectable` grew | `ecc_uncorrectable` | unhealthy | a GPU reset |
//! | `row_remap_failure` = 1 | `row_remap_failure` | unhealthy | the flag reads 0 (repaired / replaced) |
//! | thermal throttle bits on every sample for `throttle_window` | `thermal_throttle` | degraded | clean interval |
//! | power-brake throttle bit on every sample for `throttle_window` | `power_throttle` | degraded | clean interval |
//! | `temperature` over the model's limit (or `memory_temperature` over 95 °C) for `temperature_window` | `over_temperature` | unhealthy | clean interval |
//! | `pcie_replay_total` rising faster than `pcie_replays_per_min` | `pcie_replay` | degraded | clean interval |
//! | `utilization` ≥ 99.5 % with no lease for `stuck_window` | `stuck_utilization` | degraded | clean interval |
//! | no `gpu` row for `offline_after` (after it was seen live) | `offline` | offline | the next `gpu` row |
//!
//! The state is the worst active condition (offline > unhealthy > degraded > healthy). "Clean
//! interval" (default 5 min) means the condition has not held for that long. The
//! stuck-utilization rule needs the allocator's lease view
//! ([`HealthEngine::set_lease_oracle`]); until it is given the rule is skipped, because a busy
//! GPU may simply be running a lease. Offline detection only applies to GPUs seen live (a
//! tick found their last row younger than `offline_after`): importing or backfilling old rows
//! never marks a GPU offline. Defaults are in [`HealthConfig`]; every number in
//! evidence strings is the value that triggered the rule.
//!
//! Reliability scores: [`reliability`].

mod engine;
pub mod reliability;
pub mod xid;

pub use engine::{
    DEFAULT_TEMPERATURE_LIMIT, Event, Fault, FaultKind, GpuIdent, GpuRef, HealthConfig,
    HealthEngine, LeaseOracle, MEMORY_TEMPERATURE_LIMIT, Severity, Telemetry, Transition,
    temperature_limit, throttle,
};
pub use xid::{XidClass, XidInfo};

#[cfg(test)]
mod tests;
