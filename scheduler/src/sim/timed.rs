//! Time mode: jobs arrive, run for a while, and leave.
//!
//! * Every pod of the list is one job, in `creation_time` order; the list is replayed
//!   `ceil(3 × load × capacity / Σ GPU demand)` times (about 3 for openb) because, with
//!   arrivals spread over the horizon, only about half of the jobs can be running at once.
//! * Durations are drawn (seeded) from the Philly runtimes, at least one second.
//! * Arrivals are **compressed** to load the cluster: they form a seeded Poisson process
//!   over a horizon `H` chosen so that the GPU-time that falls inside `[0, H]` if every
//!   job started on arrival equals `load × capacity × H` (`--load`, default 0.9). The
//!   trace's own timestamps span months at a few percent utilisation, and Philly runtimes
//!   are heavy-tailed (p99 80 h), so sizing `H` on the total demand instead would leave the
//!   window nearly idle while most work runs after it.
//! * Jobs that do not fit queue ([`crate::allocator`]'s rule: priority from QoS, aging,
//!   backfill, starvation guard); a pass runs after every arrival and departure.
//! * Utilisation = leased GPU-time inside `[0, H]` / (capacity × H); the bound is that
//!   in-window demand / (capacity × H), capped at 1 (= `load` when `load ≤ 1`): the best any
//!   policy could do. The report also gives the offered load `Σ share × duration /
//!   (capacity × H)` (all work, including what runs past `H`).
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
    /// GPU-time inside the horizon if every job started on arrival / (capacity × horizon),
    /// at most 1: no policy can do better.
    pub bound: f64,
    /// The bound with the in-window demand capped at the fleet's capacity at every instant
    /// (jobs that would overlap beyond capacity must wait in any schedule): a bound no
    /// placement or queue policy without preemption can beat.
    pub clipped_bound: f64,
    /// All GPU-time demanded (also after the horizon) / (capacity × horizon).
    pub offered_load: f64,
    /// How many times the pod list was replayed (one replay after the other, each in creation order).
    pub repeats: usize,
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
    let base: Vec<Job> = order.iter().map(|&i| pods[i].to_job(i as u64)).collect();
    let dist = TaskDistribution::from_jobs(&view, &base, opts.top_shapes);
    let capacity = view.capacity_milli() as f64;
    // With arrivals spread evenly over [0, H], at most about half of the jobs' GPU demand
    // can be inside the window at once; repeat the list so `load` is reachable.
    let gpu_demand: f64 = base.iter().map(|j| f64::from(j.demand.total_milli())).sum();
    let repeats = ((3.0 * opts.load * capacity / gpu_demand.max(1.0)).ceil() as usize).max(1);
    let jobs: Vec<Job> = (0..repeats)
        .flat_map(|r| {
            let base = &base;
            base.iter().map(move |j| Job {
                id: (r * base.len()) as u64 + j.id,
                ..j.clone()
            })
        })
        .collect();
    let mut alloc = Allocator::new(
        view,
        policy_by_name(policy, opts.seed)?,
        dist,
        AllocatorConfig {
            reserve: opts.reserve,
            ..AllocatorConfig::default()
        },
    );
    let mut rng = SplitMix64::new(opts.seed ^ 0x5157_1e00);
    let durations: Vec<i64> = jobs
        .iter()
        .map(|_| runtimes_ms[rng.below(runtimes_ms.len() as u64) as usize] as i64)
        .collect();
    // Jobs declare their duration (exactly: the simulator's users estimate perfectly), for
    // reservations and for booking expected earnings.
    let jobs: Vec<Job> = jobs
        .into_iter()
        .zip(&durations)
        .map(|(j, &d)| Job {
            expected_duration_ms: u64::try_from(d).unwrap_or(0),
            ..j
        })
        .collect();
    let demand: f64 = jobs
        .iter()
        .zip(&durations)
        .map(|(j, &d)| f64::from(j.demand.total_milli()) * d as f64)
        .sum();
    // Poisson arrival times as fractions of the horizon, in creation order.
    let mut fractions = Vec::with_capacity(jobs.len());
    let mut t = 0.0f64;
    for _ in 0..jobs.len() {
        fractions.push(t);
        t += -(1.0 - rng.next_f64()).ln();
    }
    let span = t.max(f64::MIN_POSITIVE);
    fractions.iter_mut().for_each(|f| *f /= span);
    // GPU-time that could run inside [0, h] if every job started on arrival.
    let in_window = |h: f64| -> f64 {
        jobs.iter()
            .zip(&durations)
            .zip(&fractions)
            .map(|((j, &d), &u)| f64::from(j.demand.total_milli()) * (d as f64).min(h * (1.0 - u)))
            .sum()
    };
    // The horizon at which that in-window demand is `load` × capacity × horizon (the ratio
    // falls as the horizon grows; bisect on a log scale).
    let load = opts.load.max(1e-3);
    let (mut lo, mut hi) = (1_000.0f64, 1e12f64);
    for _ in 0..100 {
        let mid = (lo * hi).sqrt();
        if in_window(mid) / (capacity * mid) > load {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let horizon = hi;
    let ideal = in_window(horizon);
    // The same demand, but never more than the fleet at any instant: what a perfect
    // packer without preemption could at best run inside the window.
    let clipped = {
        let mut steps: Vec<(f64, f64)> = Vec::with_capacity(2 * jobs.len());
        for ((j, &d), &u) in jobs.iter().zip(&durations).zip(&fractions) {
            let (a, m) = (u * horizon, f64::from(j.demand.total_milli()));
            steps.push((a, m));
            steps.push(((a + d as f64).min(horizon), -m));
        }
        steps.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (mut level, mut last, mut area) = (0.0f64, 0.0f64, 0.0f64);
        for (t, dm) in steps {
            area += level.min(capacity) * (t - last);
            level += dm;
            last = t;
        }
        area
    };

    // Events: (time, kind, job index); departures (kind 0) before arrivals at equal times.
    let mut events: BinaryHeap<Reverse<(i64, u8, usize)>> = BinaryHeap::new();
    for (i, u) in fractions.iter().enumerate() {
        events.push(Reverse(((u * horizon) as i64, 1, i)));
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
        bound: (ideal / (capacity * horizon)).min(1.0),
        clipped_bound: clipped / (capacity * horizon),
        offered_load: demand / (capacity * horizon),
        repeats,
        queue_delay_mean_s: mean,
        queue_delay_p99_s: percentile(&mut delays, 99.0),
        jobs_started: delays.len() as u64,
        jobs_never_placed: never,
        jain_fairness: jain(&xs),
        earnings_total_minor: earnings.values().sum(),
        earnings_per_gpu_by_supplier: per_gpu,
    })
}
