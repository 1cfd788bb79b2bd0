//! The scheduler's services: the pure core of `rigwatch-scheduler` (allocator, policies,
//! ledger, health engine) run against the store.
//!
//! - [`allocator`]: the live fleet view fed by the write path, job placement every tick,
//!   leases and per-minute earnings persisted as rows, the jobs / earnings / payouts /
//!   rate-card routes and the Kubernetes scheduler extender.
//! - [`faults`]: fault detection, writing `gpu_fault` and `gpu_health` rows and telling the
//!   allocator which GPUs may take work.
//!
//! The server (`rigwatch-server`) starts both on the node that owns the shard and wires the
//! detector's health changes into the allocator.

pub mod allocator;
pub mod faults;
