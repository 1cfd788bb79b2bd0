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
#[derive(Clone, Debug)]
pub struct TaskDistribution {
    shapes: Vec<Shape>,
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
        TaskDistribution {
            shapes,
            generation: next_generation(),
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
            generation: next_generation(),
        }
    }

    pub fn shapes(&self) -> &[Shape] {
        &self.shapes
    }
}

/// Per-shape summary of one node: how many GPUs could take the shape's per-GPU share,
/// how much free share could not, and whether the host has room.
#[derive(Clone, Copy, Debug, Default)]
struct ShapeStat {
    usable: u32,
    unusable_free: Milli,
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
                s.weight * f64::from(if can_host { unusable_free } else { total_free })
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
        TaskDistribution {
            shapes: vec![Shape {
                demand,
                cpu_milli: 0,
                memory_mib: 0,
                models: ModelSet::ANY,
                weight: 1.0,
            }],
            generation: next_generation(),
        }
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
