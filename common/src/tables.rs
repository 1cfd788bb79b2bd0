//! The name of every table rigwatch writes, each in one place, with the rows it holds.
//!
//! Writers name their table through these constants; the SQL and PromQL surfaces read the
//! same names. Tags are listed first, then fields. A table with a `supplier` tag is scoped:
//! a supplier's token sees only its own rows of it, through every query surface.
//!
//! Where nodes share a catalog, every row the allocator writes (`lease`, `earnings`, `job`,
//! `payout`, `rate_card`) also has the field `leader_epoch`: the epoch of the singletons'
//! lease its writer held (`rigwatch_storage::LEADER_EPOCH`).
//!
//! The agent's tables have a fixed schema, declared once in `rigwatch-ingest`
//! (`agent/schema.rs`, `AGENT_TABLES`); the server's own tables are written by one module
//! each, named below.

/// Per-GPU telemetry from the agents, one row per GPU per interval. Tags `supplier`,
/// `worker`, `gpu_uuid`, `gpu_index`, `model`, `region`; fields: utilization, memory,
/// temperature, power, clocks, throttle reasons, ECC, PCIe and the activity fields
/// (`rigwatch-ingest` `agent/fields.rs`). dcgm-exporter's metric names read it.
pub const GPU: &str = "gpu";

/// Faults: the agent's XID and reset events (tags `supplier`, `worker`, `gpu_uuid`,
/// `gpu_index`, `model`, `region`, `kind`; fields `code`, `severity`), and the fault
/// detector's classifications (tags as before plus `class`, `detector=health`; fields `code`,
/// `severity`, `evidence`, `action`), written by `rigwatch-scheduler-service` `faults`.
pub const GPU_FAULT: &str = "gpu_fault";

/// GPU health changes, written by the fault detector. Tags `supplier`, `worker`, `gpu_uuid`,
/// `model`; fields `state`, `previous`, `reasons`, `state_code` (0 healthy, 1 degraded,
/// 2 unhealthy, 3 offline), `hardware`.
pub const GPU_HEALTH: &str = "gpu_health";

/// One row per agent per interval: tags `supplier`, `worker`, `region`; fields `seq`, `gpus`,
/// `gpus_reporting`, `interval_ms`, `uptime_s`, the spool's `spool_batches`, `spool_bytes`,
/// `spool_dropped_batches`, `agent_version`. Tells an offline worker from an idle one.
pub const HEARTBEAT: &str = "heartbeat";

/// The worker's host, one row per worker per `--host-interval`: tags `supplier`, `worker`,
/// `region`; fields: CPU, memory, swap, disk and network readings (`rigwatch-ingest`
/// `agent/host.rs`, `FIELDS`).
pub const HOST: &str = "host";

/// The GPUs a worker registered: tags `supplier`, `worker`, `gpu_uuid`, `gpu_index`; fields
/// `model` (canonical), `product_name`, `memory_total_mib`, `pci_bus_id`, `driver_version`. Written by the
/// agent registration route.
pub const GPU_INVENTORY: &str = "gpu_inventory";

/// Leases, one row per lease (time = its start), rewritten as it changes: tags `lease_id`,
/// `job_id`, `gpu_uuid`, `worker`, `supplier`, `model`; fields `share_milli`, `start_ms`,
/// `end_ms`, `end_reason`, `unpaid`, `unpaid_ms`, `paused`. Written by the allocator
/// (`rigwatch-scheduler-service` `allocator/rows.rs`).
pub const LEASE: &str = "lease";

/// Earnings, one row per lease and accrued interval: tags `lease_id`, `gpu_uuid`, `supplier`,
/// `model`; fields `amount_micro`, `rate_micro_per_gpu_hour`, `share_milli`, `to_ms`,
/// `duration_ms`, `ledger_version`. Written by the allocator.
pub const EARNINGS: &str = "earnings";

/// Jobs, one row per job (time = submission), rewritten in full on every change: tag
/// `job_id`; fields `state`, `submitted_ms`, `priority`, `min_gpu_memory_mib`,
/// `expected_duration_ms`, `models`, `gpus` or `gpu_milli`, `price_cap_micro_per_gpu_hour`,
/// `started_ms`, `ended_ms`, `end_reason`, `restarts`. Written by the allocator; no supplier
/// tag (a job spans suppliers), so operators and analysts only.
pub const JOB: &str = "job";

/// Payouts recorded by an operator: tags `payout_id`, `supplier`; fields `amount_micro`,
/// `reference`, `paid_ms`. Written by the allocator's payouts route.
pub const PAYOUT: &str = "payout";

/// Changes of the rate card: tag `model`; field `rate_micro_per_gpu_hour`; time = from when it
/// applies. Written by the allocator at start. No supplier tag.
pub const RATE_CARD: &str = "rate_card";

/// Agent batches stored, to recognise a retry: tags `supplier`, `worker`; fields `digest`,
/// `batch` (the batch id). Written by the agent write route in the same write as the batch.
pub const AGENT_BATCH: &str = "agent_batch";

/// Refused attempts on another supplier's GPUs, for operators: tags `kind`, `claimant`,
/// `owner`, `gpu_uuid`; fields `worker`, `owner_worker`. Deliberately without a `supplier`
/// tag, so no supplier-scoped token can see it.
pub const SECURITY_EVENT: &str = "security_event";

/// Prometheus' `ALERTS` series, written by the rule evaluator: labels `alertname`,
/// `alertstate` and the alert's own; field `value`.
pub const ALERTS: &str = "ALERTS";

/// Tables whose rows are records (a lease, a pay entry, a job), not samples of something
/// measured: rollups skip them, as they skip append-only event tables.
pub const RECORDS: [&str; 9] = [
    GPU_INVENTORY,
    LEASE,
    EARNINGS,
    JOB,
    PAYOUT,
    RATE_CARD,
    AGENT_BATCH,
    SECURITY_EVENT,
    ALERTS,
];

/// Every table above.
pub const ALL: [&str; 14] = [
    GPU,
    GPU_FAULT,
    GPU_HEALTH,
    HEARTBEAT,
    HOST,
    GPU_INVENTORY,
    LEASE,
    EARNINGS,
    JOB,
    PAYOUT,
    RATE_CARD,
    AGENT_BATCH,
    SECURITY_EVENT,
    ALERTS,
];

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_distinct() {
        let mut names = super::ALL.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), super::ALL.len());
    }
}
