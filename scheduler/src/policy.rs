//! Placement policies behind one trait, selectable by name at run time.
//!
//! [`choose`] enumerates the feasible candidates (the hard constraints live here, once, for
//! every policy) and asks the policy to score each; the lowest score wins, ties go to the
//! lowest node then GPU index.
//!
//! Hard constraints, never relaxed: the GPU is healthy or degraded and its heartbeat is fresh
//! (never unhealthy or offline), its model is acceptable to the job, it has at least the
//! job's GPU memory (total memory, and observed free memory when the GPU is shared), its
//! price is within the job's cap, the shares on it stay ≤ 1000, multi-GPU jobs take whole
//! free GPUs on one node, and the node's host CPU/memory can take the job.

use crate::frag::{HostModel, NodeFrag, PoolPressure, TaskDistribution};
use crate::model::{GpuDemand, Health, Job, Milli, WHOLE_GPU};
use crate::rng::SplitMix64;
use crate::view::{GpuIdx, LiveView, ModelSet, NodeIdx};
use crate::{Error, Result};

/// Names accepted by [`policy_by_name`].
pub const POLICY_NAMES: &[&str] = &[
    "first-fit",
    "best-fit",
    "spread",
    "random",
    "fgd",
    "rigwatch",
];
const EXPECTED: &str = "first-fit, best-fit, spread, random, fgd, rigwatch, \
     rigwatch:fairness=F+deadband=B+packing=P+degraded=D+thermal=T";

/// Where a job goes: one node, and a share on each of some of its GPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub node: NodeIdx,
    pub gpus: Vec<(GpuIdx, Milli)>,
}

/// What a policy sees when it scores one candidate.
#[derive(Debug)]
pub struct Candidate<'a> {
    pub node: NodeIdx,
    /// GPUs taking part (empty for a CPU-only task).
    pub gpus: &'a [GpuIdx],
    /// Positions of those GPUs in the node's GPU list.
    pub positions: &'a [usize],
    /// Share taken on each GPU.
    pub share: Milli,
}

/// The decision being made.
#[derive(Debug)]
pub struct Decision<'a> {
    pub view: &'a LiveView,
    pub dist: &'a TaskDistribution,
    pub job: &'a Job,
    pub now_ms: i64,
}

/// A placement policy: scores candidates, lower is better.
pub trait Policy: Send + std::fmt::Debug {
    fn name(&self) -> &'static str;
    /// Called once per decision before any candidate.
    fn begin(&mut self, _d: &Decision<'_>) {}
    /// Called before the first candidate of a node.
    fn begin_node(&mut self, _d: &Decision<'_>, _node: NodeIdx) {}
    fn score(&mut self, d: &Decision<'_>, c: &Candidate<'_>) -> f64;
    /// Take the first feasible candidate without scoring the rest.
    fn first_feasible(&self) -> bool {
        false
    }
}

/// Builds a policy from its name (`seed` feeds `random`).
pub fn policy_by_name(name: &str, seed: u64) -> Result<Box<dyn Policy>> {
    Ok(match name {
        "first-fit" | "firstfit" => Box::new(FirstFit),
        "best-fit" | "bestfit" | "most-allocated" => Box::new(BestFit),
        "spread" | "least-allocated" => Box::new(Spread),
        "random" => Box::new(Random(SplitMix64::new(seed))),
        "fgd" => Box::new(Fgd::default()),
        "rigwatch" => Box::new(Rigwatch::default()),
        n if n.starts_with("rigwatch:") => Box::new(Rigwatch {
            weights: parse_weights(n).ok_or_else(|| Error::UnknownPolicy {
                name: name.to_owned(),
                expected: EXPECTED,
            })?,
            ..Rigwatch::default()
        }),
        _ => {
            return Err(Error::UnknownPolicy {
                name: name.to_owned(),
                expected: EXPECTED,
            });
        }
    })
}

/// `rigwatch:degraded=0.5+thermal=0.5+fairness=0.02+packing=0.05` (any subset) → weights.
fn parse_weights(name: &str) -> Option<RigwatchWeights> {
    let mut w = RigwatchWeights::default();
    for kv in name
        .strip_prefix("rigwatch:")?
        .split('+')
        .filter(|s| !s.is_empty())
    {
        let (k, v) = kv.split_once('=')?;
        let v: f64 = v.parse().ok()?;
        match k {
            "degraded" => w.degraded = v,
            "thermal" => w.thermal = v,
            "thermal_knee_c" => w.thermal_knee_c = v,
            "fairness" => w.fairness = v,
            "deadband" => w.fairness_deadband = v,
            "packing" => w.packing = v,
            "stranding" => w.stranding = v != 0.0,
            "shapefeed" => w.shape_feed = v != 0.0,
            "pool" => w.pool = v,
            "cpubound" => w.cpu_bound = v,
            "poolpack" => w.pool_packing = v,
            "kappa0" => w.kappa0 = v,
            "kappa1" => w.kappa1 = v,
            "poolhost" => w.pool_host = v != 0.0,
            _ => return None,
        }
    }
    Some(w)
}

/// Whether GPU `g` may take part in a placement of `job` (all hard per-GPU constraints but
/// the free share).
pub fn gpu_admissible(
    view: &LiveView,
    g: GpuIdx,
    job: &Job,
    models: ModelSet,
    now_ms: i64,
) -> bool {
    let gpu = &view.gpus[g as usize];
    if !view.effective_health(g, now_ms).placeable() || !models.contains(gpu.model) {
        return false;
    }
    if gpu.memory_total_mib < job.min_gpu_memory_mib {
        return false;
    }
    if gpu.used_milli > 0
        && gpu
            .memory_free_mib
            .is_some_and(|f| f < job.min_gpu_memory_mib)
    {
        return false;
    }
    match job.price_cap_micro_per_gpu_hour {
        Some(cap) => view.models[usize::from(gpu.model)].price_micro_per_gpu_hour <= cap,
        None => true,
    }
}

/// Picks a placement for `job` with `policy`, or `None` when nothing is feasible.
/// `only_node` restricts the search to one node (the Kubernetes extender asks per node).
pub fn choose(
    view: &LiveView,
    dist: &TaskDistribution,
    policy: &mut dyn Policy,
    job: &Job,
    now_ms: i64,
    only_node: Option<NodeIdx>,
) -> Option<(Placement, f64)> {
    choose_in(view, dist, policy, job, now_ms, only_node, None)
}

/// [`choose`] on every node but `except` (a node reserved for another job).
pub fn choose_except(
    view: &LiveView,
    dist: &TaskDistribution,
    policy: &mut dyn Policy,
    job: &Job,
    now_ms: i64,
    except: NodeIdx,
) -> Option<(Placement, f64)> {
    choose_in(view, dist, policy, job, now_ms, None, Some(except))
}

fn choose_in(
    view: &LiveView,
    dist: &TaskDistribution,
    policy: &mut dyn Policy,
    job: &Job,
    now_ms: i64,
    only_node: Option<NodeIdx>,
    except: Option<NodeIdx>,
) -> Option<(Placement, f64)> {
    let models = view.model_set(&job.models);
    let d = Decision {
        view,
        dist,
        job,
        now_ms,
    };
    policy.begin(&d);
    let first = policy.first_feasible();
    let need = job.demand.per_gpu_milli();
    let mut best: Option<(Placement, f64)> = None;
    let mut gpus: Vec<GpuIdx> = Vec::with_capacity(8);
    let mut positions: Vec<usize> = Vec::with_capacity(8);
    let nodes = match only_node {
        Some(n) => n..n + 1,
        None => 0..view.nodes.len() as NodeIdx,
    };
    for n in nodes {
        let node = &view.nodes[n as usize];
        if except == Some(n) || !node.host_fits(job.cpu_milli, job.memory_mib) {
            continue;
        }
        let quick_reject = match job.demand {
            GpuDemand::None => false,
            GpuDemand::Fraction(_) => node.max_free_milli < need,
            GpuDemand::Whole(k) => node.idle_gpus < u32::from(k),
        };
        if quick_reject {
            continue;
        }
        let mut started = false;
        let mut consider = |policy: &mut dyn Policy, gpus: &[GpuIdx], positions: &[usize]| {
            if !started {
                policy.begin_node(&d, n);
                started = true;
            }
            let c = Candidate {
                node: n,
                gpus,
                positions,
                share: need,
            };
            let s = policy.score(&d, &c);
            if best.as_ref().is_none_or(|(_, b)| s < *b) {
                best = Some((
                    Placement {
                        node: n,
                        gpus: gpus.iter().map(|&g| (g, need)).collect(),
                    },
                    s,
                ));
            }
        };
        match job.demand {
            GpuDemand::None => consider(policy, &[], &[]),
            GpuDemand::Fraction(_) => {
                for (p, &g) in node.gpus.iter().enumerate() {
                    if view.gpus[g as usize].free_milli() >= need
                        && gpu_admissible(view, g, job, models, now_ms)
                    {
                        consider(policy, &[g], &[p]);
                        if first {
                            break;
                        }
                    }
                }
            }
            GpuDemand::Whole(k) => {
                gpus.clear();
                positions.clear();
                for (p, &g) in node.gpus.iter().enumerate() {
                    if view.gpus[g as usize].used_milli == 0
                        && gpu_admissible(view, g, job, models, now_ms)
                    {
                        gpus.push(g);
                        positions.push(p);
                    }
                }
                if gpus.len() >= usize::from(k) {
                    if gpus.len() > usize::from(k) {
                        // Prefer healthy over degraded, then the most thermal headroom.
                        let mut order: Vec<usize> = (0..gpus.len()).collect();
                        order.sort_by(|&a, &b| {
                            gpu_rank(view, gpus[a], now_ms)
                                .total_cmp(&gpu_rank(view, gpus[b], now_ms))
                                .then(a.cmp(&b))
                        });
                        order.truncate(usize::from(k));
                        order.sort_unstable();
                        let g2: Vec<GpuIdx> = order.iter().map(|&i| gpus[i]).collect();
                        let p2: Vec<usize> = order.iter().map(|&i| positions[i]).collect();
                        consider(policy, &g2, &p2);
                    } else {
                        consider(policy, &gpus, &positions);
                    }
                }
            }
        }
        if first && best.is_some() {
            break;
        }
    }
    best
}

/// Lower is better: degraded GPUs last, then less thermal headroom last.
fn gpu_rank(view: &LiveView, g: GpuIdx, now_ms: i64) -> f64 {
    let degraded = if view.effective_health(g, now_ms) == Health::Degraded {
        1000.0
    } else {
        0.0
    };
    degraded - f64::from(view.thermal_headroom_c(g).unwrap_or(0.0))
}

/// Node allocation ratio after the candidate: mean over the tracked resources (GPU share,
/// host CPU, host memory) of used / total — Kubernetes' MostAllocated/LeastAllocated score.
fn node_allocation_after(d: &Decision<'_>, c: &Candidate<'_>) -> f64 {
    let node = &d.view.nodes[c.node as usize];
    let gpu_total = node.gpus.len() as f64 * f64::from(WHOLE_GPU);
    let gpu_used: f64 = node
        .gpus
        .iter()
        .map(|&g| f64::from(d.view.gpus[g as usize].used_milli))
        .sum::<f64>()
        + c.gpus.len() as f64 * f64::from(c.share);
    let mut sum = 0.0;
    let mut n = 0.0;
    if gpu_total > 0.0 {
        sum += gpu_used / gpu_total;
        n += 1.0;
    }
    if node.cpu_total_milli > 0 {
        sum += f64::from(node.cpu_used_milli + d.job.cpu_milli) / f64::from(node.cpu_total_milli);
        n += 1.0;
    }
    if node.memory_total_mib > 0 {
        sum += (node.memory_used_mib + d.job.memory_mib) as f64 / node.memory_total_mib as f64;
        n += 1.0;
    }
    if n == 0.0 { 0.0 } else { sum / n }
}

/// GPU allocation ratio of the candidate's node after placement.
fn node_gpu_allocation_after(d: &Decision<'_>, c: &Candidate<'_>) -> f64 {
    let node = &d.view.nodes[c.node as usize];
    if node.gpus.is_empty() {
        return 0.0;
    }
    let used: u32 = node
        .gpus
        .iter()
        .map(|&g| d.view.gpus[g as usize].used_milli)
        .sum();
    f64::from(used + c.gpus.len() as u32 * c.share)
        / (node.gpus.len() as f64 * f64::from(WHOLE_GPU))
}

/// Share used on the candidate's GPU after placement (for GPU-level fit inside a node).
fn gpu_used_after(d: &Decision<'_>, c: &Candidate<'_>) -> f64 {
    c.gpus.first().map_or(0.0, |&g| {
        f64::from(d.view.gpus[g as usize].used_milli + c.share)
    }) / f64::from(WHOLE_GPU)
}

/// The first feasible node and GPU in index order.
#[derive(Debug)]
pub struct FirstFit;

impl Policy for FirstFit {
    fn name(&self) -> &'static str {
        "first-fit"
    }
    fn score(&mut self, _: &Decision<'_>, _: &Candidate<'_>) -> f64 {
        0.0
    }
    fn first_feasible(&self) -> bool {
        true
    }
}

/// Kubernetes MostAllocated: the fullest node (then the fullest GPU in it).
#[derive(Debug)]
pub struct BestFit;

impl Policy for BestFit {
    fn name(&self) -> &'static str {
        "best-fit"
    }
    fn score(&mut self, d: &Decision<'_>, c: &Candidate<'_>) -> f64 {
        -node_allocation_after(d, c) - 1e-3 * gpu_used_after(d, c)
    }
}

/// Kubernetes LeastAllocated: the emptiest node (then the emptiest GPU in it).
#[derive(Debug)]
pub struct Spread;

impl Policy for Spread {
    fn name(&self) -> &'static str {
        "spread"
    }
    fn score(&mut self, d: &Decision<'_>, c: &Candidate<'_>) -> f64 {
        node_allocation_after(d, c) + 1e-3 * gpu_used_after(d, c)
    }
}

/// A uniformly random feasible candidate (seeded).
#[derive(Debug)]
pub struct Random(pub SplitMix64);

impl Policy for Random {
    fn name(&self) -> &'static str {
        "random"
    }
    fn score(&mut self, _: &Decision<'_>, _: &Candidate<'_>) -> f64 {
        self.0.next_f64()
    }
}

/// Fragmentation gradient descent: the candidate whose node's expected fragmentation grows
/// least (see [`crate::frag`]).
///
/// Per-node fragmentation state is cached across decisions and reloaded only when the
/// node's version, the distribution or a GPU's placeability changed; within a node,
/// candidates on GPUs with the same free share and model share one computation.
#[derive(Debug, Default)]
pub struct Fgd {
    nodes: Vec<NodeFrag>,
    cur: usize,
    memo: Vec<(Milli, u16, f64)>,
    /// How host CPU/memory enter the measure (the paper's cliff for `fgd`).
    host: HostModel,
}

impl Fgd {
    /// Increase of the node's fragmentation, thousandths of a GPU.
    fn delta(&mut self, d: &Decision<'_>, c: &Candidate<'_>) -> f64 {
        let nf = &self.nodes[self.cur];
        let (cpu, mem) = (d.job.cpu_milli, d.job.memory_mib);
        if let [p] = c.positions {
            let key = (nf.frees[*p], nf.models[*p]);
            if let Some(&(_, _, v)) = self.memo.iter().find(|m| (m.0, m.1) == key) {
                return v;
            }
            let v = nf.after(d.dist, c.positions, c.share, cpu, mem) - nf.before;
            self.memo.push((key.0, key.1, v));
            return v;
        }
        nf.after(d.dist, c.positions, c.share, cpu, mem) - nf.before
    }

    fn enter_node(&mut self, d: &Decision<'_>, node: NodeIdx) {
        let n = node as usize;
        if self.nodes.len() < d.view.nodes.len() {
            self.nodes
                .resize_with(d.view.nodes.len(), NodeFrag::default);
        }
        self.cur = n;
        self.memo.clear();
        let nf = &mut self.nodes[n];
        if nf.host != self.host || !nf.is_current(d.view, d.dist, node, d.now_ms) {
            nf.host = self.host;
            nf.load(d.view, d.dist, node, d.now_ms);
        }
    }
}

impl Policy for Fgd {
    fn name(&self) -> &'static str {
        "fgd"
    }
    fn begin_node(&mut self, d: &Decision<'_>, node: NodeIdx) {
        self.enter_node(d, node);
    }
    fn score(&mut self, d: &Decision<'_>, c: &Candidate<'_>) -> f64 {
        self.delta(d, c)
    }
}

/// Weights of the `rigwatch` policy's score terms (all in "GPUs of fragmentation").
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RigwatchWeights {
    /// Added per degraded GPU in the placement.
    pub degraded: f64,
    /// Thermal headroom (°C) below which a GPU starts to cost.
    pub thermal_knee_c: f64,
    /// Cost of a GPU at zero headroom (linear from the knee).
    pub thermal: f64,
    /// Cost per unit of relative supplier advantage (earnings per GPU over the mean).
    pub fairness: f64,
    /// Relative advantage that costs nothing: fairness only steers away from suppliers
    /// clearly ahead of the mean, so it does not break FGD's ties among near-equals (which
    /// costs packing).
    pub fairness_deadband: f64,
    /// Reward for a node whose GPUs are fuller after placement (a bin-packing tie-break
    /// between candidates of equal fragmentation; larger values, or counting host CPU and
    /// memory too, cost up to 5 points of allocation on the gpushare40 trace).
    pub packing: f64,
    /// Measure fragmentation with host CPU/memory stranding ([`HostModel::Stranding`])
    /// instead of FGD's cliff.
    pub stranding: bool,
    /// With `stranding`, feed multi-GPU shapes at their own host demand per GPU share
    /// ([`HostModel::ShapeStranding`]) rather than the workload's mean.
    pub shape_feed: bool,
    /// Cost per GPU share taken from a model pool, × the pool's pressure (capped at 1):
    /// keeps flexible work off models that type-constrained work will need
    /// ([`PoolPressure`]).
    pub pool: f64,
    /// Spread weight once the arrived workload is CPU-bound (see [`cpu_bound_level`]): the
    /// candidate's node GPU allocation after placement, × this, is added to the score.
    pub cpu_bound: f64,
    /// CPU-bound level `κ` (workload CPU per GPU over the fleet's free CPU per free GPU) at
    /// which the spread term starts, and where it reaches full weight.
    pub kappa0: f64,
    pub kappa1: f64,
    /// Packing tie-break added while some model pool is pressed (× the highest pressure,
    /// capped at 1): with type-constrained work oversubscribing a pool, filling nodes one
    /// after the other keeps the other pools' nodes whole.
    pub pool_packing: f64,
    /// Pool pressure by kind of node (GPU model, GPU count, host CPU and memory) rather
    /// than by GPU model alone: work that only some nodes can hold (an 8-GPU task asking
    /// 120 cores fits only the 128-core nodes) presses those nodes' pool.
    pub pool_host: bool,
}

impl Default for RigwatchWeights {
    fn default() -> Self {
        RigwatchWeights {
            degraded: 0.5,
            thermal_knee_c: 15.0,
            thermal: 0.5,
            fairness: 0.02,
            fairness_deadband: 0.5,
            packing: 0.0,
            stranding: true,
            shape_feed: true,
            pool: 2.0,
            cpu_bound: 1.0,
            kappa0: 1.0,
            kappa1: 1.5,
            pool_packing: 0.05,
            pool_host: true,
        }
    }
}

/// The default policy: FGD's fragmentation increase, plus penalties for degraded or hot
/// GPUs and a nudge away from suppliers clearly ahead of the fleet in earnings per offered
/// GPU (beyond a dead band, so FGD's own choices among near-equals stand); an optional
/// bin-packing tie-break (off by default).
#[derive(Debug, Default)]
pub struct Rigwatch {
    fgd: Fgd,
    pub weights: RigwatchWeights,
    mean_epg: f64,
    pools: PoolPressure,
    /// Spread weight of this decision (0 unless the workload is CPU-bound).
    spread: f64,
    /// Packing weight of this decision from pool pressure.
    pool_packing: f64,
}

impl Policy for Rigwatch {
    fn name(&self) -> &'static str {
        "rigwatch"
    }
    fn begin(&mut self, d: &Decision<'_>) {
        self.fgd.host = if self.weights.stranding && self.weights.shape_feed {
            HostModel::ShapeStranding
        } else if self.weights.stranding {
            HostModel::Stranding
        } else {
            HostModel::Cliff
        };
        if self.weights.pool > 0.0 {
            self.pools
                .update(d.view, d.dist, d.now_ms, self.weights.pool_host);
        }
        let w = self.weights;
        self.pool_packing = if w.pool > 0.0 && w.pool_packing > 0.0 {
            w.pool_packing
                * self
                    .pools
                    .pressure
                    .iter()
                    .fold(0.0f64, |a, &b| a.max(b))
                    .min(1.0)
        } else {
            0.0
        };
        self.spread = if w.cpu_bound > 0.0 {
            let k = cpu_bound_level(d.view, d.dist);
            w.cpu_bound * ((k - w.kappa0) / (w.kappa1 - w.kappa0).max(1e-9)).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let s = d.view.suppliers();
        let offered: u32 = s.iter().map(|s| s.offered_gpus).sum();
        let earned: f64 = s
            .iter()
            .map(|s| (s.earned_micro + s.booked_micro) as f64)
            .sum();
        self.mean_epg = if offered == 0 {
            0.0
        } else {
            earned / f64::from(offered)
        };
    }
    fn begin_node(&mut self, d: &Decision<'_>, node: NodeIdx) {
        self.fgd.enter_node(d, node);
    }
    fn score(&mut self, d: &Decision<'_>, c: &Candidate<'_>) -> f64 {
        let w = self.weights;
        let mut s = self.fgd.delta(d, c) / f64::from(WHOLE_GPU);
        for &g in c.gpus {
            if w.pool > 0.0 {
                let pi = self.pools.of(g).min(1.0);
                s += w.pool * pi * f64::from(c.share) / f64::from(WHOLE_GPU);
            }
            if d.view.effective_health(g, d.now_ms) == Health::Degraded {
                s += w.degraded;
            }
            if let Some(h) = d.view.thermal_headroom_c(g) {
                let h = f64::from(h);
                if h < w.thermal_knee_c {
                    s += w.thermal * ((w.thermal_knee_c - h) / w.thermal_knee_c).min(2.0);
                }
            }
        }
        if self.mean_epg > 0.0 {
            let sup = &d.view.suppliers[d.view.nodes[c.node as usize].supplier as usize];
            let rel = (sup.earnings_per_gpu() / self.mean_epg - 1.0).clamp(-1.0, 1.0);
            let rel = if rel.abs() <= w.fairness_deadband {
                0.0
            } else {
                rel - w.fairness_deadband * rel.signum()
            };
            s += w.fairness * rel;
        }
        let packing = w.packing + self.pool_packing - self.spread;
        if packing != 0.0 {
            s -= packing * node_gpu_allocation_after(d, c);
        }
        s
    }
}

/// How CPU-bound the workload is on this fleet: the host CPU the target workload asks per
/// GPU share, over the free host CPU per free GPU share of the nodes that track CPU. Above
/// 1 the fleet's CPU runs out before its GPUs: then packing GPUs tightly only strands them
/// behind CPU that is gone, and spreading GPU work keeps CPU next to every free GPU (on
/// openb with every task's CPU doubled, spread beats FGD and first-fit by 1-3 points).
pub fn cpu_bound_level(view: &LiveView, dist: &TaskDistribution) -> f64 {
    let want = dist.cpu_per_gpu_milli();
    if want <= 0.0 {
        return 0.0;
    }
    let (mut cpu, mut gpu) = (0.0f64, 0.0f64);
    for n in view.nodes.iter().filter(|n| n.cpu_total_milli > 0) {
        cpu += f64::from(n.cpu_total_milli.saturating_sub(n.cpu_used_milli));
        gpu += n.free_gpu_milli as f64;
    }
    if gpu <= 0.0 {
        return 0.0;
    }
    want / (cpu / gpu)
}
