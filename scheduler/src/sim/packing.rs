//! Packing mode (see the parent module).

use std::time::Instant;

use serde::Serialize;

use super::SimOptions;
use super::trace::{TraceNode, TracePod, build_view};
use crate::allocator::{Allocator, AllocatorConfig};
use crate::frag::{TaskDistribution, cluster_fragmentation};
use crate::model::{GpuDemand, Job};
use crate::policy::policy_by_name;
use crate::{Result, WHOLE_GPU};

/// Arrived-demand levels (percent of capacity) at which a snapshot is taken.
pub const LEVELS: [u32; 6] = [50, 80, 90, 100, 110, 120];
/// Online estimate of the target workload: refreshed every this many arrivals.
const REFRESH: usize = 256;
/// Arrivals stop when demand reaches this share of capacity.
pub const STOP_AT: f64 = 1.3;

/// The cluster when arrived demand crossed a level.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    pub arrived_pct: u32,
    /// Leased GPU / capacity.
    pub allocation_ratio: f64,
    /// FGD fragmentation against the task distribution / capacity.
    pub fragmented_share: f64,
    pub unallocated_gpus: f64,
}

/// Result of one packing run.
#[derive(Clone, Debug, Serialize)]
pub struct PackingResult {
    pub snapshots: Vec<Snapshot>,
    pub tasks_arrived: u64,
    pub tasks_placed: u64,
    pub tasks_failed: u64,
    pub cpu_only_tasks: u64,
    pub decisions_per_sec: f64,
    /// Checked after the run: no GPU above 1000 thousandths, no host over capacity.
    pub invariants_ok: bool,
}

/// Runs packing mode for `policy`.
pub fn run(
    nodes: &[TraceNode],
    pods: &[TracePod],
    policy: &str,
    opts: &SimOptions,
) -> Result<PackingResult> {
    let view = build_view(nodes, opts.suppliers)?;
    let jobs: Vec<Job> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| p.to_job(i as u64))
        .collect();
    // The target workload: the whole list up front (`--oracle-dist`), or, as FGD does,
    // estimated online from the tasks that have arrived so far (refreshed at 1, 2, 4, …,
    // 256 arrivals, then every 256).
    let dist = if opts.oracle_dist {
        TaskDistribution::from_jobs(&view, &jobs, opts.top_shapes)
    } else {
        TaskDistribution::generic()
    };
    let mut alloc = Allocator::new(
        view,
        policy_by_name(policy, opts.seed)?,
        dist,
        AllocatorConfig::default(),
    );
    let capacity = alloc.view.capacity_milli() as f64;
    let mut arrived = 0u64;
    let mut next_level = 0;
    let mut res = PackingResult {
        snapshots: Vec::new(),
        tasks_arrived: 0,
        tasks_placed: 0,
        tasks_failed: 0,
        cpu_only_tasks: 0,
        decisions_per_sec: 0.0,
        invariants_ok: true,
    };
    if jobs.is_empty() || capacity == 0.0 {
        return Ok(res);
    }
    let mut decide_time = 0.0f64;
    let mut seen: Vec<&Job> = Vec::new();
    let mut seq = 0u64;
    'outer: loop {
        for base in &jobs {
            if arrived as f64 >= STOP_AT * capacity {
                break 'outer;
            }
            let mut job = base.clone();
            job.id = seq;
            seq += 1;
            if !opts.oracle_dist {
                seen.push(base);
                let n = seen.len();
                if n.is_power_of_two() && n <= REFRESH || n.is_multiple_of(REFRESH) {
                    let d = TaskDistribution::from_jobs(
                        &alloc.view,
                        seen.iter().copied(),
                        opts.top_shapes,
                    );
                    alloc.set_distribution(d);
                }
            }
            arrived += u64::from(job.demand.total_milli());
            res.tasks_arrived += 1;
            if job.demand == GpuDemand::None {
                res.cpu_only_tasks += 1;
            }
            let t = Instant::now();
            let started = alloc.try_start(job, 0)?;
            decide_time += t.elapsed().as_secs_f64();
            if started.is_some() {
                res.tasks_placed += 1;
            } else {
                res.tasks_failed += 1;
            }
            while next_level < LEVELS.len()
                && arrived as f64 >= f64::from(LEVELS[next_level]) / 100.0 * capacity
            {
                let used = alloc.view.used_milli() as f64;
                res.snapshots.push(Snapshot {
                    arrived_pct: LEVELS[next_level],
                    allocation_ratio: used / capacity,
                    fragmented_share: cluster_fragmentation(&alloc.view, alloc.distribution(), 0)
                        / capacity,
                    unallocated_gpus: (capacity - used) / f64::from(WHOLE_GPU),
                });
                next_level += 1;
            }
        }
    }
    res.decisions_per_sec = res.tasks_arrived as f64 / decide_time.max(1e-9);
    res.invariants_ok =
        alloc.view.gpus().iter().all(|g| {
            g.used_milli <= WHOLE_GPU && g.leases.iter().map(|l| l.1).sum::<u32>() == g.used_milli
        }) && alloc.view.nodes().iter().all(|n| {
            n.cpu_used_milli <= n.cpu_total_milli && n.memory_used_mib <= n.memory_total_mib
        });
    Ok(res)
}
