//! The allocator: live fleet view, placement policies, leases, the earnings ledger and the
//! trace-driven simulator.
//!
//! ```text
//!  samples / health / heartbeats            jobs (submit, finish, fault)
//!            │ O(1) per update                     │
//!            ▼                                     ▼
//!     ┌─────────────┐   candidates   ┌──────────────────────┐   leases   ┌────────────┐
//!     │  LiveView   │ ─────────────▶ │ Allocator + Policy   │ ─────────▶ │   Ledger   │
//!     │ (per GPU)   │ ◀───────────── │ (queue, FGD score…)  │            │ (per-minute│
//!     └─────────────┘  shares taken  └──────────────────────┘            │  entries)  │
//!                                                                         └────────────┘
//! ```
//!
//! Everything here is plain data and pure functions: persistence of [`Lease`] and
//! [`LedgerEntry`] rows is the store's job; [`Allocator::rebuild`] restores the allocator from
//! lease rows.

pub mod allocator;
mod error;
#[cfg(feature = "extender")]
pub mod extender;
pub mod frag;
pub mod gpu_models;
pub mod health;
pub mod job_state;
pub mod ledger;
pub mod model;
pub mod payout;
pub mod policy;
pub mod rng;
pub mod sim;
pub mod view;

pub use allocator::{Allocator, AllocatorConfig, HeartbeatChanges, Started};
pub use error::Error;
pub use frag::TaskDistribution;
pub use job_state::{JobState, MAX_FAULT_RESTARTS};
pub use ledger::{LedgerEntry, RateCard};
pub use model::{EndReason, GpuDemand, Health, Job, JobId, Lease, LeaseId, Milli, WHOLE_GPU};
pub use policy::{Placement, Policy, policy_by_name};
pub use view::{GpuSpec, LiveView, NodeSpec, Sample};

pub type Result<T, E = Error> = std::result::Result<T, E>;
