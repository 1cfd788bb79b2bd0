//! Reservations for EASY backfilling (Lifka, "The ANL/IBM SP scheduling system", 1995).
//!
//! When the first job of a pass (in queue order) does not fit, it gets a *reservation*: the
//! node and the time at which, if running jobs end when they said they would
//! (`expected_duration_ms`), that node first has room for it. Jobs behind it may still start
//! anywhere else, and on the reserved node only if they say they end before the reserved
//! time: a backfilled job never delays the reservation, so a large job no longer waits for a
//! lull in arrivals (or for the starvation guard) to find a whole node free.
//!
//! A running job that declared no duration never ends as far as reservations go; a node
//! whose room depends on one is not reserved, and when no node can be, the queue falls back
//! to the starvation guard ([`super::AllocatorConfig::starvation_ms`]).

use crate::model::{GpuDemand, Job, Milli, WHOLE_GPU};
use crate::policy::gpu_admissible;
use crate::view::{GpuIdx, LiveView, NodeIdx};

/// A node held for one queued job from `at_ms` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub node: NodeIdx,
    pub at_ms: i64,
}

/// A running job as a reservation sees it: where it is, when it is expected to end, and
/// what it gives back then.
#[derive(Clone, Debug)]
pub(super) struct Release {
    pub node: NodeIdx,
    pub end_ms: i64,
    pub cpu_milli: u32,
    pub memory_mib: u64,
    pub shares: Vec<(GpuIdx, Milli)>,
}

impl Reservation {
    /// Whether a job expected to run `duration_ms` from `now_ms` may use the reserved node
    /// (it ends by the reserved time; a job without a declared duration never may).
    pub fn allows(&self, now_ms: i64, duration_ms: u64) -> bool {
        duration_ms > 0
            && now_ms.saturating_add(i64::try_from(duration_ms).unwrap_or(i64::MAX)) <= self.at_ms
    }
}

/// The earliest (node, time) at which `job` fits once the `releases` (sorted by node, then
/// end time) up to that time have happened; ties go to the lower node. `None` when no node ever has
/// room under the known end times.
pub(super) fn earliest(
    view: &LiveView,
    job: &Job,
    now_ms: i64,
    releases: &[Release],
) -> Option<Reservation> {
    let models = view.model_set(&job.models);
    let mut best: Option<Reservation> = None;
    let mut frees: Vec<(GpuIdx, Milli, bool)> = Vec::new();
    for (n, node) in view.nodes.iter().enumerate() {
        let n = n as NodeIdx;
        if (node.cpu_total_milli > 0 && job.cpu_milli > node.cpu_total_milli)
            || (node.memory_total_mib > 0 && job.memory_mib > node.memory_total_mib)
        {
            continue;
        }
        frees.clear();
        for &g in &node.gpus {
            let ok = gpu_admissible(view, g, job, models, now_ms);
            frees.push((g, view.gpus[g as usize].free_milli(), ok));
        }
        if !enough_admissible(job, &frees) {
            continue;
        }
        let mut cpu = i64::from(node.cpu_total_milli) - i64::from(node.cpu_used_milli);
        let mut mem = node.memory_total_mib as i64 - node.memory_used_mib as i64;
        let host_ok = |cpu: i64, mem: i64| {
            (node.cpu_total_milli == 0 || cpu >= i64::from(job.cpu_milli))
                && (node.memory_total_mib == 0 || mem >= job.memory_mib as i64)
        };
        let mut at = None;
        if host_ok(cpu, mem) && gpus_fit(job, &frees) {
            at = Some(now_ms);
        } else {
            let from = releases.partition_point(|r| r.node < n);
            let to = releases.partition_point(|r| r.node <= n);
            for r in &releases[from..to] {
                if r.end_ms == i64::MAX || best.is_some_and(|b| r.end_ms >= b.at_ms) {
                    break;
                }
                cpu += i64::from(r.cpu_milli);
                mem += r.memory_mib as i64;
                for &(g, share) in &r.shares {
                    if let Some(f) = frees.iter_mut().find(|f| f.0 == g) {
                        f.1 = (f.1 + share).min(WHOLE_GPU);
                    }
                }
                if host_ok(cpu, mem) && gpus_fit(job, &frees) {
                    at = Some(r.end_ms.max(now_ms));
                    break;
                }
            }
        }
        if let Some(at_ms) = at
            && best.is_none_or(|b| at_ms < b.at_ms)
        {
            best = Some(Reservation { node: n, at_ms });
        }
    }
    best
}

/// Whether the node has enough GPUs the job may use at all (whatever their shares).
fn enough_admissible(job: &Job, frees: &[(GpuIdx, Milli, bool)]) -> bool {
    let ok = frees.iter().filter(|f| f.2).count();
    ok >= job.demand.gpu_count()
}

fn gpus_fit(job: &Job, frees: &[(GpuIdx, Milli, bool)]) -> bool {
    match job.demand {
        GpuDemand::None => true,
        GpuDemand::Fraction(_) => {
            let need = job.demand.per_gpu_milli();
            frees.iter().any(|f| f.2 && f.1 >= need)
        }
        GpuDemand::Whole(k) => {
            frees.iter().filter(|f| f.2 && f.1 == WHOLE_GPU).count() >= usize::from(k)
        }
    }
}
