//! Plain data types shared by the view, the policies, the allocator and the ledger.
//!
//! The row types ([`Lease`], [`crate::ledger::LedgerEntry`]) are what the store persists;
//! they use names (GPU UUID, supplier) rather than in-memory indices so they survive a
//! restart.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Thousandths of one GPU: 1000 is a whole GPU.
pub type Milli = u32;
/// A whole GPU in thousandths.
pub const WHOLE_GPU: Milli = 1000;
/// Most whole GPUs one job may ask for (one node, like the openb trace assumes).
pub const MAX_WHOLE_GPUS: u8 = 8;

/// Identifier of a job (unique per allocator).
pub type JobId = u64;
/// Identifier of a lease (unique per allocator, persisted).
pub type LeaseId = u64;

/// Health of one GPU as reported by its worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Healthy,
    /// Usable but with warnings (ECC corrections, throttling): placement allowed, penalised
    /// by the `rigwatch` policy.
    Degraded,
    /// Never placed on.
    Unhealthy,
    /// Never placed on; also what a GPU becomes when its heartbeat is stale.
    Offline,
}

impl Health {
    /// Whether any policy may place new work on a GPU in this state.
    pub fn placeable(self) -> bool {
        matches!(self, Health::Healthy | Health::Degraded)
    }
}

/// How much GPU a job asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpuDemand {
    /// CPU-only task (trace replay only: it takes node CPU/memory, no GPU lease).
    None,
    /// A share of one GPU in thousandths, 1..=999.
    Fraction(u16),
    /// 1..=8 whole GPUs on one node.
    Whole(u8),
}

impl GpuDemand {
    /// Total GPU demand in thousandths.
    pub fn total_milli(self) -> Milli {
        match self {
            GpuDemand::None => 0,
            GpuDemand::Fraction(m) => Milli::from(m),
            GpuDemand::Whole(n) => Milli::from(n) * WHOLE_GPU,
        }
    }

    /// Free thousandths a single GPU needs to take part in this placement.
    pub fn per_gpu_milli(self) -> Milli {
        match self {
            GpuDemand::None => 0,
            GpuDemand::Fraction(m) => Milli::from(m),
            GpuDemand::Whole(_) => WHOLE_GPU,
        }
    }

    /// Number of GPUs the placement touches.
    pub fn gpu_count(self) -> usize {
        match self {
            GpuDemand::None => 0,
            GpuDemand::Fraction(_) => 1,
            GpuDemand::Whole(n) => usize::from(n),
        }
    }

    /// Builds a demand from a trace's `num_gpu` and `gpu_milli` columns.
    pub fn from_trace(num_gpu: u32, gpu_milli: u32) -> Option<GpuDemand> {
        match (num_gpu, gpu_milli) {
            (0, _) => Some(GpuDemand::None),
            (1, m) if (1..WHOLE_GPU).contains(&m) => Some(GpuDemand::Fraction(m as u16)),
            (n, WHOLE_GPU) if (1..=u32::from(MAX_WHOLE_GPUS)).contains(&n) => {
                Some(GpuDemand::Whole(n as u8))
            }
            _ => None,
        }
    }

    pub(crate) fn validate(self, job: JobId) -> Result<()> {
        match self {
            GpuDemand::Fraction(0) => Err(Error::InvalidDemand {
                job,
                reason: "fraction 0",
            }),
            GpuDemand::Fraction(m) if Milli::from(m) >= WHOLE_GPU => Err(Error::InvalidDemand {
                job,
                reason: "fraction must be 1..=999 thousandths (use Whole(1) for a whole GPU)",
            }),
            GpuDemand::Whole(n) if n == 0 || n > MAX_WHOLE_GPUS => Err(Error::InvalidDemand {
                job,
                reason: "whole GPUs must be 1..=8",
            }),
            _ => Ok(()),
        }
    }
}

/// A job as submitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub demand: GpuDemand,
    /// Acceptable GPU model names; empty means any.
    #[serde(default)]
    pub models: Vec<String>,
    /// Minimum GPU memory per GPU, MiB.
    #[serde(default)]
    pub min_gpu_memory_mib: u32,
    /// Host CPU the job needs on its node, thousandths of a core (0 = not constrained).
    #[serde(default)]
    pub cpu_milli: u32,
    /// Host memory the job needs on its node, MiB (0 = not constrained).
    #[serde(default)]
    pub memory_mib: u64,
    /// Higher runs first.
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub expected_duration_ms: u64,
    /// Highest acceptable price per GPU-hour in micro-units.
    #[serde(default)]
    pub price_cap_micro_per_gpu_hour: Option<i64>,
}

impl Job {
    /// A job asking for `demand` with no other constraint.
    pub fn new(id: JobId, demand: GpuDemand) -> Job {
        Job {
            id,
            demand,
            models: Vec::new(),
            min_gpu_memory_mib: 0,
            cpu_milli: 0,
            memory_mib: 0,
            priority: 0,
            expected_duration_ms: 0,
            price_cap_micro_per_gpu_hour: None,
        }
    }
}

/// Why a lease ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    Completed,
    Cancelled,
    FaultHardware,
    FaultApplication,
    Preempted,
    /// The GPU went offline (no heartbeat for the offline limit) under the lease.
    #[serde(alias = "lost")]
    Offline,
}

impl EndReason {
    /// The reason's name, as the API and the `lease`/`job` rows spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Completed => "completed",
            EndReason::Cancelled => "cancelled",
            EndReason::FaultHardware => "fault_hardware",
            EndReason::FaultApplication => "fault_application",
            EndReason::Preempted => "preempted",
            EndReason::Offline => "offline",
        }
    }

    /// The reason [`EndReason::as_str`] names (and `lost`, the old name of `offline`).
    pub fn parse(s: &str) -> Option<EndReason> {
        Some(match s {
            "completed" => EndReason::Completed,
            "cancelled" => EndReason::Cancelled,
            "fault_hardware" => EndReason::FaultHardware,
            "fault_application" => EndReason::FaultApplication,
            "preempted" => EndReason::Preempted,
            "offline" | "lost" => EndReason::Offline,
            _ => return None,
        })
    }
}

/// One GPU's part of one job's placement: the unit earnings accrue on. A persisted row.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lease {
    pub lease_id: LeaseId,
    pub job_id: JobId,
    pub gpu_uuid: String,
    pub node: String,
    pub supplier: String,
    pub model: String,
    /// Share of the GPU in thousandths (1000 = whole GPU).
    pub share_milli: Milli,
    pub start_ms: i64,
    pub end_ms: Option<i64>,
    pub end_reason: Option<EndReason>,
    /// Times not paid because the GPU sent no heartbeat: `[from, to)` intervals in time
    /// order, disjoint; while the pause lasts the last one ends at `i64::MAX`.
    #[serde(default)]
    pub unpaid: Vec<(i64, i64)>,
}

impl Lease {
    pub fn is_open(&self) -> bool {
        self.end_ms.is_none()
    }

    /// Pay is paused now (an open unpaid interval).
    pub fn is_paused(&self) -> bool {
        self.unpaid.last().is_some_and(|&(_, to)| to == i64::MAX)
    }

    /// Milliseconds not paid up to `t`.
    pub fn unpaid_ms(&self, t: i64) -> i64 {
        self.unpaid
            .iter()
            .map(|&(a, b)| (b.min(t) - a).max(0))
            .sum()
    }

    /// The unpaid interval containing `t`, if any.
    pub fn unpaid_at(&self, t: i64) -> Option<(i64, i64)> {
        self.unpaid.iter().copied().find(|&(a, b)| a <= t && t < b)
    }

    /// The first unpaid interval's start after `t`.
    pub fn next_unpaid_after(&self, t: i64) -> Option<i64> {
        self.unpaid.iter().map(|&(a, _)| a).find(|&a| a > t)
    }
}
