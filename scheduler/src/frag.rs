//! GPU fragmentation as defined by FGD (Weng et al., "Beware of Fragmentation: Scheduling
//! GPU-Sharing Workloads with Fragmentation Gradient Descent", USENIX ATC'23).
//!
//! For a node `n` and a task shape `m`, the fragmented GPU capacity `F_n(m)` is the free GPU
//! capacity on `n` that a task of shape `m` cannot use:
//!
//! * if `n` cannot host `m` at all (host CPU/memory too small, no GPU with enough free share,
//!   too few fully free GPUs, no GPU of an acceptable model) every free share on `n` is
//!   fragmented;
//! * otherwise a GPU's free share is fragmented when it is smaller than the share `m` needs on
//!   one GPU (`d` for a fractional task, a whole GPU for a multi-GPU task) or its model is
//!   not acceptable to `m`.
//!
//! The node's fragmentation against the workload is `F_n = Σ_m p_m F_n(m)`, with `p_m` the
//! popularity of shape `m` ([`TaskDistribution`]). FGD places a task where `F_n` grows least.
//! Only placeable GPUs (healthy or degraded, heartbeat fresh) count: capacity that is down
//! is neither free nor fragmented.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::model::{GpuDemand, Job, Milli};
use crate::view::{GpuIdx, LiveView, ModelId, ModelSet, NodeIdx};

/// One task shape and its popularity.
#[derive(Clone, Debug, PartialEq)]
pub struct Shape {
    pub demand: GpuDemand,
    pub cpu_milli: u32,
    pub memory_mib: u64,
    pub models: ModelSet,
    /// Popularity; the weights of a distribution sum to 1.
    pub weight: f64,
}

/// The workload's task-shape distribution that fragmentation is measured against.
#[derive(Clone, Debug)]
pub struct TaskDistribution {
    shapes: Vec<Shape>,
    /// Mean host CPU (thousandths of a core) per thousandth of GPU over the GPU shapes.
    cpu_per_milli: f64,
    /// Mean host memory (MiB) per thousandth of GPU over the GPU shapes.
    memory_per_milli: f64,
    /// Every distinct GPU demand (GPUs on one node, host CPU and memory, models) with its
    /// share of the GPU demand, over every job the distribution was made from, kept shape
    /// or not: what [`PoolPressure`] reads.
    demands: Vec<DemandShare>,
    /// Unique per distribution value, so caches keyed on it never mix two distributions.
    generation: u64,
}

impl PartialEq for TaskDistribution {
    fn eq(&self, other: &Self) -> bool {
        self.shapes == other.shapes
    }
}

fn next_generation() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Default number of most popular shapes kept by [`TaskDistribution::from_jobs`].
pub const DEFAULT_TOP_SHAPES: usize = 32;

impl TaskDistribution {
    /// Changes whenever the distribution does (for caches keyed on it).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// A distribution over `shapes` (weights as given).
    pub fn new(shapes: Vec<Shape>) -> TaskDistribution {
        let (mut cpu, mut mem, mut gpu) = (0.0, 0.0, 0.0);
        for s in shapes.iter().filter(|s| s.demand != GpuDemand::None) {
            cpu += s.weight * f64::from(s.cpu_milli);
            mem += s.weight * s.memory_mib as f64;
            gpu += s.weight * f64::from(s.demand.total_milli());
        }
        let per = |x: f64| if gpu > 0.0 { x / gpu } else { 0.0 };
        let demands = demand_shares(shapes.iter().map(|s| {
            let d = s.weight * f64::from(s.demand.total_milli());
            (s.demand, s.cpu_milli, s.memory_mib, s.models, d)
        }));
        TaskDistribution {
            cpu_per_milli: per(cpu),
            memory_per_milli: per(mem),
            demands,
            shapes,
            generation: next_generation(),
        }
    }

    /// Shapes from a list of jobs, at most `top_k` of them (bounding `k` bounds the cost of
    /// one placement decision, `O(k)` per candidate GPU), keyed by (demand, host CPU, host
    /// memory, models):
    ///
    /// 1. every (demand, models) group, most popular first, gets its most frequent host
    ///    shape, while groups fill at most half of the `k` slots;
    /// 2. the remaining slots go to the most frequent other shapes of those groups;
    /// 3. a job whose exact shape was not kept counts for the kept shape of its group with
    ///    the nearest host CPU (then memory), so a group's popularity is never lost to the
    ///    cut (a plain top-k of exact shapes covers only 67% of `gpuspec33`'s tasks and drops
    ///    whole GPU-model pools from the measure).
    ///
    /// Ties go to first appearance, so the result is deterministic.
    pub fn from_jobs<'a>(
        view: &LiveView,
        jobs: impl IntoIterator<Item = &'a Job>,
        top_k: usize,
    ) -> TaskDistribution {
        type Key = (GpuDemand, u32, u64, u64);
        let mut counts: HashMap<Key, u64> = HashMap::new();
        let mut order: Vec<Key> = Vec::new();
        for j in jobs {
            let key = (
                j.demand,
                j.cpu_milli,
                j.memory_mib,
                view.model_set(&j.models).0,
            );
            let c = counts.entry(key).or_insert(0);
            if *c == 0 {
                order.push(key);
            }
            *c += 1;
        }
        let total: u64 = counts.values().sum();
        if total == 0 {
            return TaskDistribution::generic();
        }
        let k = top_k.max(1);
        let group = |key: &Key| (key.0, key.3);
        // Exact shapes, most frequent first.
        let mut ranked: Vec<(usize, Key)> = order.iter().copied().enumerate().collect();
        ranked.sort_by_key(|&(i, key)| (std::cmp::Reverse(counts[&key]), i));
        // Groups by popularity (first appearance of their top shape breaks ties).
        let mut groups: Vec<((GpuDemand, u64), u64, Key)> = Vec::new();
        for &(_, key) in &ranked {
            match groups.iter_mut().find(|g| g.0 == group(&key)) {
                Some(g) => g.1 += counts[&key],
                None => groups.push((group(&key), counts[&key], key)),
            }
        }
        groups.sort_by_key(|g| std::cmp::Reverse(g.1));
        let mut kept: Vec<Key> = groups.iter().take(k.div_ceil(2)).map(|g| g.2).collect();
        for &(_, key) in &ranked {
            if kept.len() >= k {
                break;
            }
            if !kept.contains(&key) && kept.iter().any(|c| group(c) == group(&key)) {
                kept.push(key);
            }
        }
        let mut weights = vec![0u64; kept.len()];
        for (key, &c) in &counts {
            let best = kept
                .iter()
                .enumerate()
                .filter(|(_, s)| group(s) == group(key))
                .min_by_key(|(i, s)| (s.1.abs_diff(key.1), s.2.abs_diff(key.2), *i));
            if let Some((i, _)) = best {
                weights[i] += c;
            }
        }
        let covered: u64 = weights.iter().sum();
        let shapes = kept
            .into_iter()
            .zip(weights)
            .map(|(key, w)| Shape {
                demand: key.0,
                cpu_milli: key.1,
                memory_mib: key.2,
                models: ModelSet(key.3),
                weight: w as f64 / covered.max(1) as f64,
            })
            .collect();
        // The pools' dedicated demand from every job, not the kept shapes: rare (demand,
        // model set) groups fall out of the top-k, and with them whole small pools (on
        // `spec=0.33` seed 4 at 25% demand no shape restricted to V100M16, G3 or P100 was
        // kept, so [`PoolPressure`] saw those pools as free for anyone).
        let demands = demand_shares(order.iter().map(|key| {
            let d = counts[key] as f64 * f64::from(key.0.total_milli());
            (key.0, key.1, key.2, ModelSet(key.3), d)
        }));
        TaskDistribution {
            demands,
            ..TaskDistribution::new(shapes)
        }
    }

    /// A neutral distribution for a fleet that has seen no jobs yet: ¼, ½, 1, 2, 4 and 8
    /// GPUs, equally likely, any model, no host constraint.
    pub fn generic() -> TaskDistribution {
        let demands = [
            GpuDemand::Fraction(250),
            GpuDemand::Fraction(500),
            GpuDemand::Whole(1),
            GpuDemand::Whole(2),
            GpuDemand::Whole(4),
            GpuDemand::Whole(8),
        ];
        let w = 1.0 / demands.len() as f64;
        TaskDistribution::new(
            demands
                .into_iter()
                .map(|demand| Shape {
                    demand,
                    cpu_milli: 0,
                    memory_mib: 0,
                    models: ModelSet::ANY,
                    weight: w,
                })
                .collect(),
        )
    }

    pub fn shapes(&self) -> &[Shape] {
        &self.shapes
    }

    /// Every distinct GPU demand with its share of the GPU demand.
    pub fn demands(&self) -> &[DemandShare] {
        &self.demands
    }

    /// Host CPU the GPU tasks ask per thousandth of GPU (thousandths of a core): compared
    /// with the fleet's free CPU per free GPU share, it says which of the two runs out first
    /// under GPU work. CPU-only tasks are left out: they are small and fit anywhere, and
    /// counting them calls CPU-bound a fleet whose GPU work is not (−2.5 points on
    /// `spec=0.33+cpu=2`).
    pub fn cpu_per_gpu_milli(&self) -> f64 {
        self.cpu_per_milli
    }
}

/// One distinct GPU demand of the workload and its share of the GPU demand.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DemandShare {
    /// GPUs it needs on one node (1 for a fraction).
    pub gpus: u8,
    pub cpu_milli: u32,
    pub memory_mib: u64,
    pub models: ModelSet,
    pub share: f64,
}

/// `(demand, CPU, memory, models, GPU demand)` → shares of the GPU demand, merged by
/// (GPUs, CPU, memory, models), in first-appearance order; CPU-only demands left out.
fn demand_shares(
    demands: impl Iterator<Item = (GpuDemand, u32, u64, ModelSet, f64)>,
) -> Vec<DemandShare> {
    let mut out: Vec<DemandShare> = Vec::new();
    let mut index: HashMap<(u8, u32, u64, u64), usize> = HashMap::new();
    let mut total = 0.0;
    for (demand, cpu_milli, memory_mib, models, d) in demands {
        total += d;
        let gpus = match demand {
            GpuDemand::None => continue,
            GpuDemand::Fraction(_) => 1,
            GpuDemand::Whole(k) => k,
        };
        if d == 0.0 {
            continue;
        }
        let i = *index
            .entry((gpus, cpu_milli, memory_mib, models.0))
            .or_insert_with(|| {
                out.push(DemandShare {
                    gpus,
                    cpu_milli,
                    memory_mib,
                    models,
                    share: 0.0,
                });
                out.len() - 1
            });
        out[i].share += d;
    }
    if total > 0.0 {
        out.iter_mut().for_each(|c| c.share /= total);
    }
    out
}

/// Per-shape summary of one node: how many GPUs could take the shape's per-GPU share,
/// how much free share could not, and whether the host has room.
#[derive(Clone, Copy, Debug, Default)]
struct ShapeStat {
    usable: u32,
    unusable_free: Milli,
}

/// How a node's fragmentation treats host CPU and memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HostModel {
    /// FGD as published: a shape the host cannot take once makes every free share on the
    /// node a fragment; otherwise host resources do not matter.
    #[default]
    Cliff,
    /// Host-aware: the host's free CPU and memory can feed `cpu_free / ρ_cpu` (and
    /// `memory_free / ρ_mem`) of GPU share, `ρ` being the workload's mean host demand per
    /// GPU share; a shape's usable free share beyond that is stranded and counts as a
    /// fragment (growing smoothly as CPU is taken, where FGD's cliff sees nothing until a
    /// shape no longer fits at all). CPU-only shapes keep FGD's definition.
    Stranding,
    /// [`HostModel::Stranding`], except that a multi-GPU shape is fed at its own host
    /// demand: the host feeds `cpu_free / c_m × g_m` of its GPU share (`c_m` its CPU, `g_m`
    /// its GPU share; memory alike). Multi-GPU tasks ask far less CPU per GPU than shared
    /// ones, so the workload's mean calls an 8-GPU node stranded that an 8-GPU task fits,
    /// and the measure then breaks such nodes up (−0.1…−0.4 points against FGD on
    /// `multi=0.5`). Fractional and single-GPU shapes keep the mean: fed at their own
    /// demand they cost 5 points on `gpushare40`.
    ShapeStranding,
}

/// A node's GPUs as fragmentation sees them, with a per-shape summary so that the effect
/// of a candidate placement costs `O(shapes × GPUs in the placement)`.
#[derive(Debug, Default)]
pub struct NodeFrag {
    pub(crate) frees: Vec<Milli>,
    pub(crate) models: Vec<ModelId>,
    pub(crate) placeable: Vec<bool>,
    cpu_free: u32,
    memory_free: u64,
    total_free: Milli,
    stats: Vec<ShapeStat>,
    version: u64,
    generation: u64,
    loaded: bool,
    /// The measure this cache was computed with.
    pub host: HostModel,
    /// `F_n` of the node as it is.
    pub before: f64,
}

impl NodeFrag {
    /// Whether the cached state still describes node `n` (same version, distribution and
    /// placeability of every GPU at `now_ms`).
    pub fn is_current(
        &self,
        view: &LiveView,
        dist: &TaskDistribution,
        n: NodeIdx,
        now_ms: i64,
    ) -> bool {
        let node = &view.nodes[n as usize];
        self.loaded
            && self.version == node.version
            && self.generation == dist.generation
            && self.placeable.len() == node.gpus.len()
            && node
                .gpus
                .iter()
                .zip(&self.placeable)
                .all(|(&g, &p)| view.effective_health(g, now_ms).placeable() == p)
    }

    /// Loads node `n` from the view (reusing the buffers) and computes its `F_n`.
    pub fn load(&mut self, view: &LiveView, dist: &TaskDistribution, n: NodeIdx, now_ms: i64) {
        let node = &view.nodes[n as usize];
        self.frees.clear();
        self.models.clear();
        self.placeable.clear();
        self.total_free = 0;
        for &g in &node.gpus {
            let gpu = &view.gpus[g as usize];
            let p = view.effective_health(g, now_ms).placeable();
            self.frees.push(gpu.free_milli());
            self.models.push(gpu.model);
            self.placeable.push(p);
            if p {
                self.total_free += gpu.free_milli();
            }
        }
        self.cpu_free = if node.cpu_total_milli == 0 {
            u32::MAX
        } else {
            node.cpu_total_milli.saturating_sub(node.cpu_used_milli)
        };
        self.memory_free = if node.memory_total_mib == 0 {
            u64::MAX
        } else {
            node.memory_total_mib.saturating_sub(node.memory_used_mib)
        };
        self.stats.clear();
        for s in &dist.shapes {
            let need = s.demand.per_gpu_milli();
            let mut st = ShapeStat::default();
            for i in 0..self.frees.len() {
                if !self.placeable[i] {
                    continue;
                }
                if s.models.contains(self.models[i]) && self.frees[i] >= need {
                    st.usable += 1;
                } else {
                    st.unusable_free += self.frees[i];
                }
            }
            self.stats.push(st);
        }
        self.version = node.version;
        self.generation = dist.generation;
        self.loaded = true;
        self.before = self.score(
            dist,
            self.cpu_free,
            self.memory_free,
            self.total_free,
            |_, st| (st.usable, st.unusable_free),
        );
    }

    fn score(
        &self,
        dist: &TaskDistribution,
        cpu_free: u32,
        memory_free: u64,
        total_free: Milli,
        stat: impl Fn(&Shape, &ShapeStat) -> (u32, Milli),
    ) -> f64 {
        // Stranding: the GPU share the host's free CPU/memory can feed at the workload's
        // mean host demand per GPU share; free usable share beyond it is stranded.
        let feed = match self.host {
            HostModel::Cliff => f64::INFINITY,
            HostModel::Stranding | HostModel::ShapeStranding => {
                let cpu = if cpu_free == u32::MAX || dist.cpu_per_milli <= 0.0 {
                    f64::INFINITY
                } else {
                    f64::from(cpu_free) / dist.cpu_per_milli
                };
                let mem = if memory_free == u64::MAX || dist.memory_per_milli <= 0.0 {
                    f64::INFINITY
                } else {
                    memory_free as f64 / dist.memory_per_milli
                };
                cpu.min(mem)
            }
        };
        dist.shapes
            .iter()
            .zip(&self.stats)
            .map(|(s, st)| {
                let (usable, unusable_free) = stat(s, st);
                let can_host = cpu_free >= s.cpu_milli
                    && memory_free >= s.memory_mib
                    && match s.demand {
                        GpuDemand::None => true,
                        GpuDemand::Fraction(_) => usable > 0,
                        GpuDemand::Whole(k) => usable >= u32::from(k),
                    };
                if !can_host {
                    return s.weight * f64::from(total_free);
                }
                let usable_free = f64::from(total_free - unusable_free);
                let stranded = if s.demand == GpuDemand::None {
                    0.0
                } else if self.host == HostModel::ShapeStranding
                    && matches!(s.demand, GpuDemand::Whole(k) if k > 1)
                {
                    (usable_free - shape_feed(s, cpu_free, memory_free)).max(0.0)
                } else {
                    (usable_free - feed).max(0.0)
                };
                s.weight * (f64::from(unusable_free) + stranded)
            })
            .sum()
    }

    /// `F_n` after taking `share` on the (placeable) GPUs at `positions` (indices into the
    /// node's GPU list) and `cpu_milli`/`memory_mib` of host resources.
    pub fn after(
        &self,
        dist: &TaskDistribution,
        positions: &[usize],
        share: Milli,
        cpu_milli: u32,
        memory_mib: u64,
    ) -> f64 {
        let total = self.total_free - share * positions.len() as Milli;
        self.score(
            dist,
            self.cpu_free.saturating_sub(cpu_milli),
            self.memory_free.saturating_sub(memory_mib),
            total,
            |s, st| {
                let need = s.demand.per_gpu_milli();
                let (mut usable, mut unusable) = (st.usable, st.unusable_free);
                for &p in positions {
                    let (f, f2) = (self.frees[p], self.frees[p] - share);
                    let model_ok = s.models.contains(self.models[p]);
                    if model_ok && f >= need {
                        usable -= 1;
                    } else {
                        unusable -= f;
                    }
                    if model_ok && f2 >= need {
                        usable += 1;
                    } else {
                        unusable += f2;
                    }
                }
                (usable, unusable)
            },
        )
    }
}

/// GPU share (thousandths) the host's free CPU and memory can feed with tasks of shape `s`.
fn shape_feed(s: &Shape, cpu_free: u32, memory_free: u64) -> f64 {
    let g = f64::from(s.demand.total_milli());
    let cpu = if cpu_free == u32::MAX || s.cpu_milli == 0 {
        f64::INFINITY
    } else {
        f64::from(cpu_free) / f64::from(s.cpu_milli) * g
    };
    let mem = if memory_free == u64::MAX || s.memory_mib == 0 {
        f64::INFINITY
    } else {
        memory_free as f64 / s.memory_mib as f64 * g
    };
    cpu.min(mem)
}

/// How hard each pool of GPUs is pressed by work that can run only on a few pools.
///
/// A pool is the GPUs of one model, or (with `host`) of one model on one kind of node: GPU
/// count, host CPU and memory. From the target workload (every arrived job, not only the
/// kept shapes): `f_X`, the share of its GPU demand that is *dedicated* to pool `X` (tasks
/// that only some pools can hold, by model or by size, their demand split over those pools
/// by capacity). Until the fleet is full about as much demand again as there is free capacity
/// `F` arrives, so dedicated work will want about `f_X × F` of `X`'s free capacity `F_X`:
/// the pressure is `π_X = f_X × F / F_X`. At `π_X ≥ 1` every free share of `X` taken by a
/// task that could have run elsewhere is a share that dedicated work will miss. FGD's
/// per-node measure cannot see this: it weighs shapes by popularity, not by the demand on
/// a pool relative to the pool's size, so it happily fills a small pool (P100, T4) with
/// unconstrained work and leaves the big one (G2) idle; and it fills the 39 128-core G3
/// nodes, the only ones an 8-GPU task asking 120 cores fits, with work any node could
/// hold (`multi=0.5`).
#[derive(Clone, Debug, Default)]
pub struct PoolPressure {
    generation: u64,
    gpus: usize,
    host: bool,
    /// Pool of each GPU.
    gpu_pool: Vec<u32>,
    /// Per pool: its model, and (with `host`) the GPU count, CPU and memory of its nodes.
    pools: Vec<(ModelId, u32, u32, u64)>,
    /// Dedicated demand share per pool.
    dedicated: Vec<f64>,
    any_dedicated: bool,
    /// Current pressure per pool.
    pub pressure: Vec<f64>,
}

impl PoolPressure {
    /// Recomputes the pressure for the view as it is (`O(GPUs)`; the dedicated shares only
    /// when the distribution or the fleet changed). A pool is a GPU model, or with `host`
    /// a GPU model on one kind of node (GPU count, host CPU and memory): work that only
    /// such nodes can hold (an 8-GPU task asking 120 cores) is dedicated to them too.
    pub fn update(&mut self, view: &LiveView, dist: &TaskDistribution, now_ms: i64, host: bool) {
        if self.generation != dist.generation || self.gpus != view.gpus.len() || self.host != host {
            self.generation = dist.generation;
            self.gpus = view.gpus.len();
            self.host = host;
            self.pools.clear();
            self.gpu_pool.clear();
            let mut index: HashMap<(ModelId, u32, u32, u64), u32> = HashMap::new();
            let mut cap: Vec<f64> = Vec::new();
            for g in &view.gpus {
                let key = if host {
                    let n = &view.nodes[g.node as usize];
                    (
                        g.model,
                        n.gpus.len() as u32,
                        n.cpu_total_milli,
                        n.memory_total_mib,
                    )
                } else {
                    (g.model, 0, 0, 0)
                };
                let i = *index.entry(key).or_insert_with(|| {
                    self.pools.push(key);
                    cap.push(0.0);
                    (self.pools.len() - 1) as u32
                });
                cap[i as usize] += 1.0;
                self.gpu_pool.push(i);
            }
            self.dedicated = vec![0.0; self.pools.len()];
            let mut ids: Vec<usize> = Vec::new();
            for d in &dist.demands {
                ids.clear();
                ids.extend((0..self.pools.len()).filter(|&i| {
                    let (m, gpus, cpu, mem) = self.pools[i];
                    d.models.contains(m)
                        && (!host
                            || (gpus >= u32::from(d.gpus)
                                && (cpu == 0 || cpu >= d.cpu_milli)
                                && (mem == 0 || mem >= d.memory_mib)))
                }));
                if ids.is_empty() || ids.len() == self.pools.len() {
                    continue;
                }
                let c: f64 = ids.iter().map(|&i| cap[i]).sum();
                for &i in &ids {
                    self.dedicated[i] += d.share * cap[i] / c;
                }
            }
            self.any_dedicated = self.dedicated.iter().any(|&x| x > 0.0);
        }
        self.pressure.clear();
        self.pressure.resize(self.pools.len(), 0.0);
        if !self.any_dedicated {
            return;
        }
        let mut free = vec![0.0f64; self.pools.len()];
        for (i, g) in view.gpus.iter().enumerate() {
            if view.effective_health(i as u32, now_ms).placeable() {
                free[self.gpu_pool[i] as usize] += f64::from(g.free_milli());
            }
        }
        let all: f64 = free.iter().sum();
        for ((p, d), f) in self.pressure.iter_mut().zip(&self.dedicated).zip(&free) {
            *p = d * all / f.max(1.0);
        }
    }

    /// Pressure of GPU `g`'s pool (0 when nothing is dedicated to it).
    pub fn of(&self, g: GpuIdx) -> f64 {
        self.gpu_pool
            .get(g as usize)
            .and_then(|&i| self.pressure.get(i as usize))
            .copied()
            .unwrap_or(0.0)
    }
}

/// Fragmentation of the whole view against `dist`, thousandths of a GPU.
pub fn cluster_fragmentation(view: &LiveView, dist: &TaskDistribution, now_ms: i64) -> f64 {
    let mut nf = NodeFrag::default();
    (0..view.nodes.len() as NodeIdx)
        .map(|n| {
            nf.load(view, dist, n, now_ms);
            nf.before
        })
        .sum()
}

/// Whole free GPU capacity in thousandths over placeable GPUs.
pub fn placeable_free_milli(view: &LiveView, now_ms: i64) -> u64 {
    (0..view.gpus.len() as u32)
        .filter(|&g| view.effective_health(g, now_ms).placeable())
        .map(|g| u64::from(view.gpus[g as usize].free_milli()))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{GpuSpec, NodeSpec};

    fn node(used: &[Milli]) -> (LiveView, NodeIdx) {
        let mut v = LiveView::new();
        let n = v.add_node(NodeSpec {
            name: "n".into(),
            supplier: "s".into(),
            cpu_milli: 0,
            memory_mib: 0,
        });
        for (i, &u) in used.iter().enumerate() {
            let g = v
                .add_gpu(
                    GpuSpec {
                        uuid: format!("g{i}"),
                        node: "n".into(),
                        model: "T4".into(),
                        memory_total_mib: 0,
                    },
                    0,
                )
                .unwrap();
            if u > 0 {
                v.take_share(g, i as u64, u);
            }
        }
        (v, n)
    }

    fn one(demand: GpuDemand) -> TaskDistribution {
        TaskDistribution::new(vec![Shape {
            demand,
            cpu_milli: 0,
            memory_mib: 0,
            models: ModelSet::ANY,
            weight: 1.0,
        }])
    }

    fn shape(demand: GpuDemand, cpu_milli: u32, models: ModelSet, weight: f64) -> Shape {
        Shape {
            demand,
            cpu_milli,
            memory_mib: 0,
            models,
            weight,
        }
    }

    /// Adds node `name` (supplier `s`, `cpu_milli` cores, untracked memory) with `gpus`
    /// GPUs of `model`, named `<name><i>`; returns the node.
    fn add_node(v: &mut LiveView, name: &str, cpu_milli: u32, model: &str, gpus: usize) -> NodeIdx {
        let n = v.add_node(NodeSpec {
            name: name.into(),
            supplier: "s".into(),
            cpu_milli,
            memory_mib: 0,
        });
        for i in 0..gpus {
            let spec = GpuSpec {
                uuid: format!("{name}{i}"),
                node: name.into(),
                model: model.into(),
                memory_total_mib: 0,
            };
            v.add_gpu(spec, 0).unwrap();
        }
        n
    }

    #[test]
    fn stranding_sees_gpus_the_host_cannot_feed_and_the_cliff_does_not() {
        let mut v = LiveView::new();
        let n = add_node(&mut v, "n", 8000, "T4", 4);
        // One-GPU tasks needing 2 cores: 8 cores feed all 4 GPUs.
        let d = TaskDistribution::new(vec![shape(GpuDemand::Whole(1), 2000, ModelSet::ANY, 1.0)]);
        let mut nf = NodeFrag {
            host: HostModel::Stranding,
            ..NodeFrag::default()
        };
        nf.load(&v, &d, n, 0);
        assert_eq!(nf.before, 0.0);
        // A CPU-only task taking 4 cores leaves 2 GPUs without CPU: 2000 stranded.
        assert_eq!(nf.after(&d, &[], 0, 4000, 0), 2000.0);
        // 3 cores: 1.5 GPUs fed, 2.5 stranded — smooth, not a step.
        assert_eq!(nf.after(&d, &[], 0, 5000, 0), 2500.0);
        // FGD's cliff sees nothing while one more task still fits.
        let mut cliff = NodeFrag::default();
        cliff.load(&v, &d, n, 0);
        assert_eq!(cliff.after(&d, &[], 0, 5000, 0), 0.0);
        assert_eq!(cliff.after(&d, &[], 0, 7000, 0), 4000.0);
    }

    #[test]
    fn multi_gpu_shapes_are_fed_at_their_own_cpu_demand() {
        let mut v = LiveView::new();
        let n = add_node(&mut v, "n", 32000, "G2", 8);
        // Half-GPU tasks with 8 cores, 8-GPU tasks with 32 cores (4 per GPU), equally
        // popular: the mean, 20 cores per 4.25 GPUs, feeds 6.8 of the 8 free GPUs.
        let d = TaskDistribution::new(vec![
            shape(GpuDemand::Fraction(500), 8000, ModelSet::ANY, 0.5),
            shape(GpuDemand::Whole(8), 32000, ModelSet::ANY, 0.5),
        ]);
        let mut mean = NodeFrag {
            host: HostModel::Stranding,
            ..NodeFrag::default()
        };
        mean.load(&v, &d, n, 0);
        assert!((mean.before - 1200.0).abs() < 1e-6, "{}", mean.before);
        // The 8-GPU task fits this node exactly: nothing of it is stranded.
        let mut own = NodeFrag {
            host: HostModel::ShapeStranding,
            ..NodeFrag::default()
        };
        own.load(&v, &d, n, 0);
        assert!((own.before - 600.0).abs() < 1e-6, "{}", own.before);
        assert!(crate::policy::RigwatchWeights::default().shape_feed);
    }

    #[test]
    fn pool_pressure_is_dedicated_demand_over_free_capacity() {
        let mut v = LiveView::new();
        add_node(&mut v, "a", 0, "G2", 8);
        add_node(&mut v, "b", 0, "T4", 2);
        let t4 = v.model_set(&["T4".to_owned()]);
        let d = TaskDistribution::new(vec![
            shape(GpuDemand::Whole(1), 0, t4, 0.5),
            shape(GpuDemand::Whole(1), 0, ModelSet::ANY, 0.5),
        ]);
        let mut p = PoolPressure::default();
        p.update(&v, &d, 0, false);
        let (g2_gpu, t4_gpu) = (0, 8); // the first GPU of each pool
        // Half the demand needs T4: 0.5 × 10 free GPUs / 2 free T4s.
        assert!((p.of(t4_gpu) - 2.5).abs() < 1e-9, "{:?}", p.pressure);
        assert_eq!(p.of(g2_gpu), 0.0);
        // Taking G2 capacity raises the T4 pressure (less room elsewhere is not less need).
        v.take_share(0, 1, 1000);
        p.update(&v, &d, 0, false);
        assert!((p.of(t4_gpu) - 0.5 * 9.0 / 2.0).abs() < 1e-9);
    }

    #[test]
    fn pool_pressure_by_kind_of_node_sees_work_only_big_hosts_can_hold() {
        // 8 GPUs on a 96-core node, 8 on a 128-core node, same model.
        let mut v = LiveView::new();
        add_node(&mut v, "small", 96_000, "G2", 8);
        add_node(&mut v, "big", 128_000, "G2", 8);
        // A quarter of the demand is 8-GPU tasks asking 120 cores: only "big" holds them.
        let d = TaskDistribution::new(vec![
            shape(GpuDemand::Whole(8), 120_000, ModelSet::ANY, 0.04),
            shape(GpuDemand::Whole(1), 4_000, ModelSet::ANY, 0.96),
        ]);
        let (small, big) = (0, 8);
        let mut p = PoolPressure::default();
        p.update(&v, &d, 0, false);
        assert_eq!((p.of(small), p.of(big)), (0.0, 0.0));
        p.update(&v, &d, 0, true);
        // 0.25 of the demand × 16 free GPUs / 8 free on "big".
        assert!((p.of(big) - 0.5).abs() < 1e-9, "{:?}", p.pressure);
        assert_eq!(p.of(small), 0.0);
    }

    #[test]
    fn pool_pressure_counts_constrained_jobs_the_top_shapes_dropped() {
        let mut v = LiveView::new();
        add_node(&mut v, "a", 0, "G2", 8);
        add_node(&mut v, "b", 0, "T4", 2);
        // 90 unconstrained one-GPU jobs, 10 that only T4 can take.
        let jobs: Vec<Job> = (0..100u64)
            .map(|i| Job {
                models: if i % 10 == 0 {
                    vec!["T4".into()]
                } else {
                    Vec::new()
                },
                ..Job::new(i, GpuDemand::Whole(1))
            })
            .collect();
        // One shape kept: the T4 group is cut from the shapes ...
        let d = TaskDistribution::from_jobs(&v, &jobs, 1);
        assert!(d.shapes().iter().all(|s| s.models == ModelSet::ANY));
        // ... but not from the demand the pools are pressed by: 0.1 × 10 free / 2 free T4s.
        let mut p = PoolPressure::default();
        p.update(&v, &d, 0, false);
        assert!((p.of(8) - 0.5).abs() < 1e-9, "{:?}", p.pressure);
    }

    #[test]
    fn from_jobs_keeps_every_popular_group_and_its_mass() {
        let v = LiveView::new();
        let mut jobs = Vec::new();
        // 60 whole-GPU jobs spread over 12 CPU sizes, 40 half-GPU jobs of one size.
        for i in 0..60u64 {
            jobs.push(Job {
                cpu_milli: 1000 * (1 + (i % 12) as u32),
                ..Job::new(i, GpuDemand::Whole(1))
            });
        }
        for i in 60..100u64 {
            jobs.push(Job {
                cpu_milli: 500,
                ..Job::new(i, GpuDemand::Fraction(500))
            });
        }
        let d = TaskDistribution::from_jobs(&v, &jobs, 4);
        assert_eq!(d.shapes().len(), 4);
        let mass = |dem: GpuDemand| -> f64 {
            d.shapes()
                .iter()
                .filter(|s| s.demand == dem)
                .map(|s| s.weight)
                .sum()
        };
        assert!((mass(GpuDemand::Whole(1)) - 0.6).abs() < 1e-9);
        assert!((mass(GpuDemand::Fraction(500)) - 0.4).abs() < 1e-9);
        // A plain top-4 of exact shapes would hold the half-GPU shape and three 5-job ones.
        assert!((d.shapes().iter().map(|s| s.weight).sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn fragmentation_follows_the_fgd_definition() {
        // Free shares 1000, 600, 300.
        let (v, n) = node(&[0, 400, 700]);
        let mut nf = NodeFrag::default();
        // A half-GPU task fits GPUs 0 and 1; GPU 2's 300 is a fragment.
        nf.load(&v, &one(GpuDemand::Fraction(500)), n, 0);
        assert_eq!(nf.before, 300.0);
        // A whole-GPU task fits GPU 0; the partial GPUs' 600 + 300 are fragments.
        nf.load(&v, &one(GpuDemand::Whole(1)), n, 0);
        assert_eq!(nf.before, 900.0);
        // A 2-GPU task cannot be hosted at all: every free share is a fragment.
        nf.load(&v, &one(GpuDemand::Whole(2)), n, 0);
        assert_eq!(nf.before, 1900.0);
        // Placing 0.5 on GPU 1 (600 → 100) under the half-GPU distribution: +100 fragment.
        let d = one(GpuDemand::Fraction(500));
        nf.load(&v, &d, n, 0);
        assert_eq!(nf.after(&d, &[1], 500, 0, 0) - nf.before, 100.0);
        // Placing it on GPU 0 (1000 → 500) leaves both still usable: no increase.
        assert_eq!(nf.after(&d, &[0], 500, 0, 0) - nf.before, 0.0);
    }
}
