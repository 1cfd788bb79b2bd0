//! The demo's workload: jobs drawn from the Alibaba openb trace (their GPU shapes) with
//! durations from Microsoft's Philly trace, compressed to minutes, submitted to the live
//! allocator so that the simulated GPUs carry real leases and earn real money.
//!
//! Shapes come from `openb_pod_list_default.csv` in file order (CPU-only pods skipped; the
//! trace's GPU-model constraints name Alibaba's fleet, not the demo's, so they are
//! dropped); durations from `philly_runtime.csv`, divided by `compression` and clamped to
//! `[min_duration, max_duration]`. Jobs are submitted while the fleet is below its target
//! allocation and the queue is short, and completed when their duration has passed. When the
//! trace files are not there, a small built-in mix of shapes and durations stands in (and
//! the demo says so).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rigwatch_scheduler::GpuDemand;
use rigwatch_scheduler::sim::trace;
use tracing::{info, warn};

use rigwatch_scheduler_service::allocator::{AllocService, JobRequest};

/// How the workload behaves.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Directory holding `alibaba-openb-2023/` and `philly/` (the project's `../shared/data`).
    pub trace_dir: std::path::PathBuf,
    /// Trace seconds per demo second.
    pub compression: f64,
    pub min_duration: Duration,
    pub max_duration: Duration,
    /// Share of GPU capacity to keep leased (0..1).
    pub target_allocation: f64,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            trace_dir: "../shared/data".into(),
            compression: 60.0,
            min_duration: Duration::from_secs(20),
            max_duration: Duration::from_secs(600),
            target_allocation: 0.75,
        }
    }
}

/// Shapes (`gpus` or `gpu_milli`) and durations to draw from.
struct Mix {
    shapes: Vec<GpuDemand>,
    durations_ms: Vec<u64>,
    from_trace: bool,
}

fn load_mix(dir: &Path) -> Mix {
    let pods = dir.join("alibaba-openb-2023/openb_pod_list_default.csv");
    let runtimes = dir.join("philly/philly_runtime.csv");
    match (trace::load_pods(&pods), trace::load_runtimes(&runtimes)) {
        (Ok(p), Ok(r)) if !p.is_empty() && !r.is_empty() => Mix {
            shapes: p
                .into_iter()
                .map(|p| p.demand)
                .filter(|d| !matches!(d, GpuDemand::None))
                .collect(),
            durations_ms: r,
            from_trace: true,
        },
        (p, r) => {
            warn!(
                pods = %pods.display(),
                runtimes = %runtimes.display(),
                pods_ok = p.is_ok(),
                runtimes_ok = r.is_ok(),
                "trace files not readable; the demo workload uses a built-in mix"
            );
            Mix {
                shapes: vec![
                    GpuDemand::Whole(1),
                    GpuDemand::Fraction(500),
                    GpuDemand::Fraction(250),
                    GpuDemand::Whole(1),
                    GpuDemand::Whole(2),
                    GpuDemand::Fraction(750),
                ],
                durations_ms: vec![600_000, 1_800_000, 3_600_000, 7_200_000, 14_400_000],
                from_trace: false,
            }
        }
    }
}

/// Runs until the task is dropped.
pub async fn run(alloc: AllocService, cfg: WorkloadConfig) {
    let mix = load_mix(&cfg.trace_dir);
    info!(
        shapes = mix.shapes.len(),
        durations = mix.durations_ms.len(),
        from_trace = mix.from_trace,
        "demo workload started"
    );
    let (mut next_shape, mut next_duration) = (0usize, 0usize);
    // job id -> when it completes
    let mut running: BTreeMap<u64, tokio::time::Instant> = BTreeMap::new();
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        let now = tokio::time::Instant::now();
        let done: Vec<u64> = running
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            running.remove(&id);
            if let Err(e) = alloc.complete(id).await {
                warn!(job = id, error = %e, "demo job not completed");
            }
        }
        // Jobs that the allocator started since the last pass get their clocks.
        let (used, capacity) = alloc.allocation();
        if capacity == 0 {
            continue;
        }
        let mut submitted = 0;
        while (used as f64) < cfg.target_allocation * capacity as f64
            && alloc.queue_len() < 4
            && submitted < 8
        {
            let demand = mix.shapes[next_shape % mix.shapes.len()];
            next_shape += 1;
            let trace_ms = mix.durations_ms[next_duration % mix.durations_ms.len()];
            next_duration += 1;
            let ms = ((trace_ms as f64 / cfg.compression) as u64).clamp(
                cfg.min_duration.as_millis() as u64,
                cfg.max_duration.as_millis() as u64,
            );
            let req = match demand {
                GpuDemand::Whole(n) => JobRequest::whole(n, ms / 1000),
                GpuDemand::Fraction(m) => JobRequest::fraction(m, ms / 1000),
                GpuDemand::None => continue,
            };
            match alloc.submit_now(&req).await {
                Ok(id) => {
                    running.insert(id, now + Duration::from_millis(ms));
                }
                Err(e) => warn!(error = %e, "demo job refused"),
            }
            submitted += 1;
            if submitted >= 8 {
                break;
            }
        }
    }
}

/// Makes simulated GPUs follow their leases: a GPU leased at `m` thousandths runs at about
/// `m / 10` % utilization (a little jitter) with memory in proportion; an unleased GPU idles.
/// Runs until the task is dropped.
pub async fn follow_leases(alloc: AllocService, sims: Vec<rigwatch_ingest::agent::sim::Simulator>) {
    let gpus: Vec<(rigwatch_ingest::agent::sim::Simulator, usize, String, u64)> = sims
        .iter()
        .flat_map(|s| {
            s.infos()
                .into_iter()
                .enumerate()
                .map(|(i, info)| (s.clone(), i, info.uuid.clone(), info.memory_total_mib))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut every = tokio::time::interval(Duration::from_secs(1));
    let mut tick: u64 = 0;
    loop {
        every.tick().await;
        tick += 1;
        for (k, (sim, i, uuid, mem_total)) in gpus.iter().enumerate() {
            let milli = alloc.gpu_load(uuid).unwrap_or(0);
            if milli == 0 {
                sim.set_load(*i, 0.0, 0);
                continue;
            }
            // Deterministic jitter of a few percent, different per GPU and second.
            let j = ((tick.wrapping_mul(2654435761) ^ (k as u64 * 40503)) % 9) as f64 - 4.0;
            let util = (f64::from(milli) / 10.0 * 0.95 + j).clamp(1.0, 100.0);
            let mem = (*mem_total as f64 * f64::from(milli) / 1000.0 * 0.8) as u64;
            sim.set_load(*i, util, mem);
        }
    }
}
