//! The trace-driven simulator behind `rigwatch sim` and `examples/sim.rs`.
//!
//! * **packing** (as in the FGD paper): tasks arrive in file order and never leave; the
//!   list is cycled (inflated) until the GPU demand that arrived reaches 1.3× capacity.
//!   At 50/80/90/100/110/120% arrived demand it records the allocation ratio (leased GPU /
//!   capacity), the fragmented share (FGD's cluster fragmentation against the workload's
//!   task shapes, / capacity), unallocated GPUs, and the placement rate. A task that does
//!   not fit is dropped. CPU-only pods (`num_gpu` 0) are tasks too: they take host CPU and
//!   memory on a node chosen by the same policy (which can block later GPU tasks, as in the
//!   paper) and add nothing to GPU demand.
//! * **time**: see [`timed`].
//! * **latency**: see [`latency`].

pub mod latency;
pub mod packing;
pub mod sweep;
pub mod timed;
pub mod trace;
pub mod variant;

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use crate::Result;
use crate::policy::POLICY_NAMES;

pub use latency::LatencyResult;
pub use packing::PackingResult;
pub use timed::TimedResult;
pub use variant::VariantSpec;

/// Default trace locations, relative to the repository root.
pub const DEFAULT_NODES: &str = "../shared/data/alibaba-openb-2023/openb_node_list_gpu_node.csv";
pub const DEFAULT_PODS: &str = "../shared/data/alibaba-openb-2023/openb_pod_list_default.csv";
pub const DEFAULT_RUNTIMES: &str = "../shared/data/philly/philly_runtime.csv";

/// Which experiment to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Packing,
    Time,
}

/// Everything a simulation run needs.
#[derive(Clone, Debug)]
pub struct SimOptions {
    pub nodes: PathBuf,
    pub pods: PathBuf,
    pub runtimes: PathBuf,
    /// Policy names (`all` expanded by [`expand_policies`]).
    pub policies: Vec<String>,
    pub mode: Mode,
    pub seed: u64,
    /// Nodes are grouped into this many suppliers by hashing their serial number.
    pub suppliers: u32,
    /// Time mode: offered load (GPU-time demanded / capacity × arrival horizon).
    pub load: f64,
    /// Most popular task shapes kept for fragmentation.
    pub top_shapes: usize,
    /// Keep every n-th node only (1 = all): a deterministic, representative subset.
    pub node_stride: usize,
    /// Also measure placement latency on a synthetic fleet of this many GPUs (0 = skip).
    pub latency_gpus: usize,
    pub latency_decisions: usize,
    /// Measure fragmentation against the whole pod list known up front instead of the
    /// workload estimated online from the tasks that arrived so far (FGD's way).
    pub oracle_dist: bool,
    /// Replace the pod list by this variant of it ([`variant`]).
    pub variant: Option<VariantSpec>,
    /// Time mode: EASY backfilling with a reservation for the first blocked job
    /// ([`crate::allocator::reserve`]); off, plain backfilling with the starvation guard.
    pub reserve: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            nodes: DEFAULT_NODES.into(),
            pods: DEFAULT_PODS.into(),
            runtimes: DEFAULT_RUNTIMES.into(),
            policies: vec!["all".into()],
            mode: Mode::Packing,
            seed: 42,
            suppliers: 25,
            load: 0.9,
            top_shapes: crate::frag::DEFAULT_TOP_SHAPES,
            node_stride: 1,
            latency_gpus: 0,
            latency_decisions: 20_000,
            variant: None,
            oracle_dist: false,
            reserve: true,
        }
    }
}

/// `all` → every policy; otherwise the names as given.
pub fn expand_policies(names: &[String]) -> Vec<String> {
    if names.iter().any(|n| n == "all") {
        POLICY_NAMES.iter().map(|s| (*s).to_owned()).collect()
    } else {
        names.to_vec()
    }
}

/// One policy's results.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyResult {
    pub policy: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packing: Option<PackingResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<TimedResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyResult>,
}

/// A whole run.
#[derive(Clone, Debug, Serialize)]
pub struct SimReport {
    pub mode: Mode,
    pub nodes_file: String,
    pub pods_file: String,
    pub nodes: usize,
    pub gpus: u64,
    pub pods: usize,
    pub seed: u64,
    pub results: Vec<PolicyResult>,
}

/// Runs the experiment for every requested policy.
pub fn run(opts: &SimOptions) -> Result<SimReport> {
    let mut nodes = trace::load_nodes(&opts.nodes)?;
    if opts.node_stride > 1 {
        nodes = nodes.into_iter().step_by(opts.node_stride).collect();
    }
    let mut pods = trace::load_pods(&opts.pods)?;
    if let Some(v) = &opts.variant {
        pods = variant::generate(&pods, &nodes, v);
    }
    let runtimes = match opts.mode {
        Mode::Time => Some(trace::load_runtimes(&opts.runtimes)?),
        Mode::Packing => None,
    };
    let policies = expand_policies(&opts.policies);
    let mut results = Vec::new();
    for p in &policies {
        crate::policy::policy_by_name(p, opts.seed)?; // fail fast on a bad name
        let mut r = PolicyResult {
            policy: p.clone(),
            packing: None,
            time: None,
            latency: None,
        };
        match opts.mode {
            Mode::Packing => r.packing = Some(packing::run(&nodes, &pods, p, opts)?),
            Mode::Time => {
                r.time = Some(timed::run(
                    &nodes,
                    &pods,
                    runtimes.as_deref().unwrap_or(&[]),
                    p,
                    opts,
                )?)
            }
        }
        if opts.latency_gpus > 0 {
            r.latency = Some(latency::run(&pods, p, opts)?);
        }
        results.push(r);
    }
    Ok(SimReport {
        mode: opts.mode,
        nodes_file: opts.nodes.display().to_string(),
        pods_file: match &opts.variant {
            Some(v) => format!("{} variant {v}", opts.pods.display()),
            None => opts.pods.display().to_string(),
        },
        nodes: nodes.len(),
        gpus: nodes.iter().map(|n| u64::from(n.gpus)).sum(),
        pods: pods.len(),
        seed: opts.seed,
        results,
    })
}

impl SimReport {
    /// The policies side by side, one metric per row.
    pub fn render_table(&self) -> String {
        let mut rows: Vec<(String, Vec<String>)> = Vec::new();
        let mut put = |name: String, i: usize, v: String| {
            if let Some(r) = rows.iter_mut().find(|r| r.0 == name) {
                r.1[i] = v;
            } else {
                let mut vals = vec![String::from("-"); self.results.len()];
                vals[i] = v;
                rows.push((name, vals));
            }
        };
        for (i, r) in self.results.iter().enumerate() {
            if let Some(p) = &r.packing {
                for s in &p.snapshots {
                    put(
                        format!("alloc ratio @{:>3}% demand", s.arrived_pct),
                        i,
                        format!("{:.2}%", s.allocation_ratio * 100.0),
                    );
                }
                for s in &p.snapshots {
                    put(
                        format!("fragmented @{:>3}% demand", s.arrived_pct),
                        i,
                        format!("{:.2}%", s.fragmented_share * 100.0),
                    );
                }
                for s in &p.snapshots {
                    put(
                        format!("unallocated GPUs @{:>3}%", s.arrived_pct),
                        i,
                        format!("{:.1}", s.unallocated_gpus),
                    );
                }
                put("tasks arrived".into(), i, p.tasks_arrived.to_string());
                put("tasks failed".into(), i, p.tasks_failed.to_string());
                put(
                    "placement rate (decisions/s)".into(),
                    i,
                    format!("{:.0}", p.decisions_per_sec),
                );
            }
            if let Some(t) = &r.time {
                put(
                    "utilization".into(),
                    i,
                    format!("{:.2}%", t.utilization * 100.0),
                );
                put(
                    "bound (in-window demand)".into(),
                    i,
                    format!("{:.2}%", t.bound * 100.0),
                );
                put(
                    "bound, capped at capacity".into(),
                    i,
                    format!("{:.2}%", t.clipped_bound * 100.0),
                );
                put(
                    "offered load (all demand)".into(),
                    i,
                    format!("{:.2}%", t.offered_load * 100.0),
                );
                put(
                    "horizon (h)".into(),
                    i,
                    format!("{:.1}", t.horizon_s / 3600.0),
                );
                put(
                    "jobs (pod list × repeats)".into(),
                    i,
                    format!("{} × {}", self.pods, t.repeats),
                );
                put(
                    "queue delay mean (s)".into(),
                    i,
                    format!("{:.1}", t.queue_delay_mean_s),
                );
                put(
                    "queue delay p99 (s)".into(),
                    i,
                    format!("{:.1}", t.queue_delay_p99_s),
                );
                put(
                    "jobs started / never placed".into(),
                    i,
                    format!("{} / {}", t.jobs_started, t.jobs_never_placed),
                );
                put(
                    "Jain fairness (earn/GPU)".into(),
                    i,
                    format!("{:.4}", t.jain_fairness),
                );
                put(
                    "supplier earnings total".into(),
                    i,
                    t.earnings_total_minor.to_string(),
                );
            }
            if let Some(l) = &r.latency {
                put(
                    format!("decision p50 µs ({} GPUs)", l.gpus),
                    i,
                    format!("{:.1}", l.p50_us),
                );
                put(
                    format!("decision p99 µs ({} GPUs)", l.gpus),
                    i,
                    format!("{:.1}", l.p99_us),
                );
                put("decision max µs".into(), i, format!("{:.1}", l.max_us));
            }
        }
        let w0 = rows
            .iter()
            .map(|r| r.0.chars().count())
            .max()
            .unwrap_or(6)
            .max(6);
        let widths: Vec<usize> = (0..self.results.len())
            .map(|i| {
                rows.iter()
                    .map(|r| r.1[i].len())
                    .chain([self.results[i].policy.len()])
                    .max()
                    .unwrap_or(4)
            })
            .collect();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "mode {:?}: {} nodes, {} GPUs, {} pods ({}), seed {}",
            self.mode, self.nodes, self.gpus, self.pods, self.pods_file, self.seed
        );
        let _ = write!(out, "{:w0$}", "metric");
        for (i, r) in self.results.iter().enumerate() {
            let _ = write!(out, "  {:>w$}", r.policy, w = widths[i]);
        }
        out.push('\n');
        for (name, vals) in rows {
            let pad = w0 - name.chars().count();
            let _ = write!(out, "{name}{}", " ".repeat(pad));
            for (i, v) in vals.iter().enumerate() {
                let _ = write!(out, "  {:>w$}", v, w = widths[i]);
            }
            out.push('\n');
        }
        out
    }
}

/// p-th percentile (0..=100) of an unsorted slice (sorts it).
pub(crate) fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Jain's fairness index `(Σx)² / (n Σx²)`; 1 for an empty or all-zero input.
pub fn jain(xs: &[f64]) -> f64 {
    let s: f64 = xs.iter().sum();
    let s2: f64 = xs.iter().map(|x| x * x).sum();
    if s2 == 0.0 {
        1.0
    } else {
        s * s / (xs.len() as f64 * s2)
    }
}
