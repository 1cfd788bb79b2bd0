//! Time mode: jobs arrive, run for a while, and leave.
//!
//! * Every pod of the list is one job, arriving once, in `creation_time` order.
//! * Durations are drawn (seeded) from the Philly runtimes, at least one second.
//! * Arrivals are **compressed** to load the cluster: they form a Poisson process whose
//!   horizon `H` is chosen so that the GPU-time demanded, `D = Σ share × duration`, equals
//!   `load × capacity × H` (`--load`, default 0.9). The trace's own timestamps span
//!   months at a few percent utilisation; compressing them is the only way to make
//!   placement matter.
//! * Jobs that do not fit queue ([`crate::allocator`]'s rule: priority from QoS, aging,
//!   backfill, starvation guard); a pass runs after every arrival and departure.
//! * Utilisation = leased GPU-time inside `[0, H]` / (capacity × H); the bound is
//!   `min(1, D / (capacity × H))`, the best any policy could do.
//! * Each lease's earnings are its exact ledger total ([`crate::ledger`]); suppliers are
//!   nodes grouped by hashing their serial number; fairness is Jain's index over suppliers of
//!   earnings per offered GPU.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use serde::Serialize;

use super::trace::{TraceNode, TracePod, build_view};
use super::{SimOptions, jain, percentile};
use crate::allocator::{Allocator, AllocatorConfig};
use crate::frag::TaskDistribution;
use crate::ledger::RateCard;
use crate::model::{EndReason, Job};
use crate::policy::policy_by_name;
use crate::rng::SplitMix64;
use crate::{Error, Result};

/// Result of one time-mode run.
#[derive(Clone, Debug, Serialize)]
pub struct TimedResult {
    pub horizon_s: f64,
    pub utilization: f64,
    pub bound: f64,
    pub queue_delay_mean_s: f64,
    pub queue_delay_p99_s: f64,
    pub jobs_started: u64,
    /// Jobs that can never fit any node (rejected at submit) or still queued at the end.
    pub jobs_never_placed: u64,
    pub jain_fairness: f64,
    pub earnings_total_minor: i64,
    pub earnings_per_gpu_by_supplier: BTreeMap<String, f64>,
}

/// Runs time mode for `policy`.
pub fn run(
    nodes: &[TraceNode],
    pods: &[TracePod],
    runtimes_ms: &[u64],
    policy: &str,
    opts: &SimOptions,
) -> Result<TimedResult> {
    if runtimes_ms.is_empty() {
        return Err(Error::Io {
            path: opts.runtimes.display().to_string(),
            source_msg: "no runtimes to draw durations from".into(),
        });
    }
    let view = build_view(nodes, opts.suppliers)?;
    let mut order: Vec<usize> = (0..pods.len()).collect();
    order.sort_by_key(|&i| pods[i].creation_time);
    let jobs: Vec<Job> = order.iter().map(|&i| pods[i].to_job(i as u64)).collect();
    let dist = TaskDistribution::from_jobs(&view, &jobs, opts.top_shapes);
    let mut alloc = Allocator::new(
        view,
        policy_by_name(policy, opts.seed)?,
        dist,
        AllocatorConfig::default(),
    );
    let capacity = alloc.view.capacity_milli() as f64;
    let mut rng = SplitMix64::new(opts.seed ^ 0x5157_1e00);
    let durations: Vec<i64> = jobs
        .iter()
        .map(|_| runtimes_ms[rng.below(runtimes_ms.len() as u64) as usize] as i64)
        .collect();
    let demand: f64 = jobs
        .iter()
        .zip(&durations)
        .map(|(j, &d)| f64::from(j.demand.total_milli()) * d as f64)
        .sum();
    let horizon = (demand / (capacity * opts.load.max(1e-6))).max(1.0);
    let mean_gap = horizon / jobs.len().max(1) as f64;

    // Events: (time, kind, job index); departures (kind 0) before arrivals at equal times.
    let mut events: BinaryHeap<Reverse<(i64, u8, usize)>> = BinaryHeap::new();
    let mut t = 0.0f64;
    for i in 0..jobs.len() {
        events.push(Reverse((t as i64, 1, i)));
        t += -(1.0 - rng.next_f64()).ln() * mean_gap;
    }
    let card = RateCard::illustrative();
    let h = horizon as i64;
    let mut index_of = std::collections::HashMap::new();
    let mut delays = Vec::new();
    let mut never = 0u64;
    let mut gpu_time_in_horizon = 0.0f64;
    let mut earnings: BTreeMap<String, i64> = BTreeMap::new();
    while let Some(Reverse((now, kind, i))) = events.pop() {
        if kind == 0 {
            for l in alloc.finish(jobs[i].id, EndReason::Completed, now)? {
                let amount = card.lease_total(&l);
                alloc.view.credit_supplier(&l.supplier, amount);
                *earnings.entry(l.supplier.clone()).or_default() += amount;
                let end = l.end_ms.unwrap_or(now).min(h);
                gpu_time_in_horizon += f64::from(l.share_milli) * (end - l.start_ms.min(h)) as f64;
            }
        } else {
            index_of.insert(jobs[i].id, i);
            match alloc.submit(jobs[i].clone(), now) {
                Ok(()) => {}
                Err(Error::Unplaceable { .. }) => never += 1,
                Err(e) => return Err(e),
            }
        }
        for s in alloc.schedule(now) {
            let j = index_of[&s.job];
            delays.push(s.waited_ms as f64 / 1000.0);
            events.push(Reverse((now + durations[j], 0, j)));
        }
    }
    never += alloc.queue_len() as u64;
    let offered: BTreeMap<String, u32> = alloc
        .view
        .suppliers()
        .iter()
        .map(|s| (s.name.clone(), s.offered_gpus))
        .collect();
    let per_gpu: BTreeMap<String, f64> = offered
        .iter()
        .map(|(s, &n)| {
            (
                s.clone(),
                *earnings.get(s).unwrap_or(&0) as f64 / f64::from(n.max(1)),
            )
        })
        .collect();
    let xs: Vec<f64> = per_gpu.values().copied().collect();
    let mean = if delays.is_empty() {
        0.0
    } else {
        delays.iter().sum::<f64>() / delays.len() as f64
    };
    Ok(TimedResult {
        horizon_s: horizon / 1000.0,
        utilization: gpu_time_in_horizon / (capacity * horizon),
        bound: (demand / (capacity * horizon)).min(1.0),
        queue_delay_mean_s: mean,
        queue_delay_p99_s: percentile(&mut delays, 99.0),
        jobs_started: delays.len() as u64,
        jobs_never_placed: never,
        jain_fairness: jain(&xs),
        earnings_total_minor: earnings.values().sum(),
        earnings_per_gpu_by_supplier: per_gpu,
    })
}
