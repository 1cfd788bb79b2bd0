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

use crate::model::{GpuDemand, Job, Milli};
use crate::view::{LiveView, ModelId, ModelSet, NodeIdx};

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
#[derive(Clone, Debug, PartialEq)]
pub struct TaskDistribution {
    shapes: Vec<Shape>,
}

/// Default number of most popular shapes kept by [`TaskDistribution::from_jobs`].
pub const DEFAULT_TOP_SHAPES: usize = 32;

impl TaskDistribution {
    /// Shapes from a list of jobs: the `top_k` most frequent (demand, host CPU, host memory,
    /// models) combinations, weights renormalised over them. Bounding `k` bounds the cost of
    /// one placement decision (`O(k)` per candidate GPU).
    pub fn from_jobs<'a>(
        view: &LiveView,
        jobs: impl IntoIterator<Item = &'a Job>,
        top_k: usize,
    ) -> TaskDistribution {
        let mut counts: HashMap<(GpuDemand, u32, u64, u64), u64> = HashMap::new();
        let mut order = Vec::new();
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
        // Most frequent first; first appearance breaks ties so the result is deterministic.
        let mut ranked: Vec<(usize, (GpuDemand, u32, u64, u64))> =
            order.into_iter().enumerate().collect();
        ranked.sort_by_key(|&(i, k)| (std::cmp::Reverse(counts[&k]), i));
        ranked.truncate(top_k.max(1));
        let total: u64 = ranked.iter().map(|(_, k)| counts[k]).sum();
        if total == 0 {
            return TaskDistribution::generic();
        }
        let shapes = ranked
            .into_iter()
            .map(|(_, k)| Shape {
                demand: k.0,
                cpu_milli: k.1,
                memory_mib: k.2,
                models: ModelSet(k.3),
                weight: counts[&k] as f64 / total as f64,
            })
            .collect();
        TaskDistribution { shapes }
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
        TaskDistribution {
            shapes: demands
                .into_iter()
                .map(|demand| Shape {
                    demand,
                    cpu_milli: 0,
                    memory_mib: 0,
                    models: ModelSet::ANY,
                    weight: w,
                })
                .collect(),
        }
    }

    pub fn shapes(&self) -> &[Shape] {
        &self.shapes
    }
}

/// A node's GPUs as fragmentation sees them, copied into reusable buffers so a candidate
/// placement can be applied hypothetically without touching the view.
#[derive(Debug, Default)]
pub struct NodeFrag {
    pub(crate) frees: Vec<Milli>,
    pub(crate) models: Vec<ModelId>,
    pub(crate) placeable: Vec<bool>,
    cpu_free: u32,
    memory_free: u64,
    /// `F_n` of the node as it is.
    pub before: f64,
}

impl NodeFrag {
    /// Loads node `n` from the view (reusing the buffers) and computes its `F_n`.
    pub fn load(&mut self, view: &LiveView, dist: &TaskDistribution, n: NodeIdx, now_ms: i64) {
        let node = &view.nodes[n as usize];
        self.frees.clear();
        self.models.clear();
        self.placeable.clear();
        for &g in &node.gpus {
            let gpu = &view.gpus[g as usize];
            self.frees.push(gpu.free_milli());
            self.models.push(gpu.model);
            self.placeable
                .push(view.effective_health(g, now_ms).placeable());
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
        self.before = self.score(dist);
    }

    /// `F_n` of the loaded state.
    pub fn score(&self, dist: &TaskDistribution) -> f64 {
        dist.shapes
            .iter()
            .map(|s| s.weight * f64::from(self.shape_frag(s)))
            .sum()
    }

    /// `F_n(m)` in thousandths.
    fn shape_frag(&self, s: &Shape) -> Milli {
        let need = s.demand.per_gpu_milli();
        let host_ok = self.cpu_free >= s.cpu_milli && self.memory_free >= s.memory_mib;
        let mut total_free = 0;
        let mut unusable_free = 0;
        let mut usable = 0u32;
        for i in 0..self.frees.len() {
            if !self.placeable[i] {
                continue;
            }
            let f = self.frees[i];
            total_free += f;
            if s.models.contains(self.models[i]) && f >= need {
                usable += 1;
            } else {
                unusable_free += f;
            }
        }
        let can_host = host_ok
            && match s.demand {
                GpuDemand::None => true,
                GpuDemand::Fraction(_) => usable > 0,
                GpuDemand::Whole(k) => usable >= u32::from(k),
            };
        if can_host { unusable_free } else { total_free }
    }

    /// `F_n` after taking `share` on the GPUs at `positions` (indices into the node's GPU
    /// list) and `cpu_milli`/`memory_mib` of host resources; the buffers are restored.
    pub fn after(
        &mut self,
        dist: &TaskDistribution,
        positions: &[usize],
        share: Milli,
        cpu_milli: u32,
        memory_mib: u64,
    ) -> f64 {
        for &p in positions {
            self.frees[p] -= share;
        }
        let (cpu, mem) = (self.cpu_free, self.memory_free);
        self.cpu_free = cpu.saturating_sub(cpu_milli);
        self.memory_free = mem.saturating_sub(memory_mib);
        let after = self.score(dist);
        self.cpu_free = cpu;
        self.memory_free = mem;
        for &p in positions {
            self.frees[p] += share;
        }
        after
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
