//! The live view: every GPU's current state, updated in O(1) per observation.
//!
//! GPUs, nodes (workers), suppliers and models are interned into dense indices so the
//! placement hot path walks plain vectors; names are looked up through hash maps only at
//! the edges (`observe_sample("GPU-…")`).

use std::collections::HashMap;

use serde::Serialize;

use crate::gpu_models;
use crate::model::{Health, LeaseId, Milli, WHOLE_GPU};
use crate::{Error, Result};

/// Dense index of a GPU in the view.
pub type GpuIdx = u32;
/// Dense index of a node (worker) in the view.
pub type NodeIdx = u32;
/// Dense index of a supplier in the view.
pub type SupplierIdx = u32;
/// Dense index of a GPU model in the view.
pub type ModelId = u16;

/// Most distinct GPU models one view holds (a job's acceptable models are a 64-bit mask).
pub const MAX_MODELS: usize = 64;

/// A set of GPU models as a bit mask over [`ModelId`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ModelSet(pub u64);

impl ModelSet {
    pub const ANY: ModelSet = ModelSet(u64::MAX);
    pub fn contains(self, m: ModelId) -> bool {
        self.0 & (1u64 << m) != 0
    }
}

/// One GPU model known to the view.
#[derive(Clone, Debug, Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub thermal_limit_c: f32,
    /// Current price, micro-units per GPU-hour (used for price caps and fairness).
    pub price_micro_per_gpu_hour: i64,
}

/// What a worker reports for a node when it registers.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub name: String,
    pub supplier: String,
    /// Host CPU in thousandths of a core; 0 = not tracked.
    pub cpu_milli: u32,
    /// Host memory MiB; 0 = not tracked.
    pub memory_mib: u64,
}

/// What a worker reports for a GPU when it registers.
#[derive(Clone, Debug)]
pub struct GpuSpec {
    pub uuid: String,
    pub node: String,
    pub model: String,
    /// 0 = take the catalog's number for the model.
    pub memory_total_mib: u32,
}

/// One metric sample for a GPU (the last values the allocator decides on).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub ts_ms: i64,
    pub utilization_pct: f32,
    pub temperature_c: f32,
    pub memory_free_mib: u32,
}

/// The view's state of one GPU.
#[derive(Clone, Debug, Serialize)]
pub struct GpuState {
    pub uuid: String,
    pub node: NodeIdx,
    pub supplier: SupplierIdx,
    pub model: ModelId,
    pub memory_total_mib: u32,
    /// Last observed free memory; `None` before the first sample.
    pub memory_free_mib: Option<u32>,
    pub utilization_pct: Option<f32>,
    pub temperature_c: Option<f32>,
    pub health: Health,
    pub last_heartbeat_ms: i64,
    /// When the server last received a row for the GPU, by its own clock (pay follows
    /// this, so an agent's clock cannot keep a silent GPU paid).
    pub last_received_ms: i64,
    /// Sum of lease shares, thousandths; never above 1000.
    pub used_milli: Milli,
    /// Current leases and their shares.
    pub leases: Vec<(LeaseId, Milli)>,
}

impl GpuState {
    pub fn free_milli(&self) -> Milli {
        WHOLE_GPU - self.used_milli
    }
}

/// The view's state of one node (worker).
#[derive(Clone, Debug, Serialize)]
pub struct NodeState {
    pub name: String,
    pub supplier: SupplierIdx,
    pub gpus: Vec<GpuIdx>,
    pub cpu_total_milli: u32,
    pub cpu_used_milli: u32,
    pub memory_total_mib: u64,
    pub memory_used_mib: u64,
    /// GPUs with no lease (any health): a quick pre-check for whole-GPU jobs.
    pub idle_gpus: u32,
    /// Largest free share of any GPU on the node (any health): a pre-check for fractions.
    pub max_free_milli: Milli,
    /// Free share summed over the node's GPUs (any health).
    pub free_gpu_milli: u64,
    /// Bumped on every change that can alter the node's fragmentation (shares, host
    /// resources, health), so policies can cache per-node work.
    pub version: u64,
}

impl NodeState {
    /// Whether the node's host CPU and memory can take `cpu_milli` and `memory_mib` more
    /// (untracked resources, total 0, always can).
    pub fn host_fits(&self, cpu_milli: u32, memory_mib: u64) -> bool {
        (self.cpu_total_milli == 0 || self.cpu_used_milli + cpu_milli <= self.cpu_total_milli)
            && (self.memory_total_mib == 0
                || self.memory_used_mib + memory_mib <= self.memory_total_mib)
    }
}

/// A supplier's standing, for fairness.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SupplierState {
    pub name: String,
    pub offered_gpus: u32,
    /// Earnings credited so far (ledger totals), micro-units.
    pub earned_micro: i64,
    /// Σ rate × share over current leases: micro-units per hour × 1000.
    pub active_rate_milli: i64,
    /// What the current leases are expected to earn over their whole run, micro-units:
    /// rate × share × the job's expected duration, or one hour when it declared none
    /// ([`LiveView::book_supplier`]; the allocator books at start and unbooks at the end).
    pub booked_micro: i64,
}

impl SupplierState {
    /// Earnings per offered GPU, counting what the current leases are expected to earn
    /// ([`Self::booked_micro`]): the quantity the `rigwatch` policy evens out across
    /// suppliers. A steering signal, not money: where earnings are credited while a lease
    /// runs (the server accrues every minute), its accrued part counts twice.
    pub fn earnings_per_gpu(&self) -> f64 {
        if self.offered_gpus == 0 {
            return 0.0;
        }
        (self.earned_micro + self.booked_micro) as f64 / f64::from(self.offered_gpus)
    }
}

/// In-memory view of the fleet.
#[derive(Debug, Default)]
pub struct LiveView {
    pub(crate) gpus: Vec<GpuState>,
    pub(crate) nodes: Vec<NodeState>,
    pub(crate) suppliers: Vec<SupplierState>,
    pub(crate) models: Vec<ModelInfo>,
    gpu_by_uuid: HashMap<String, GpuIdx>,
    node_by_name: HashMap<String, NodeIdx>,
    supplier_by_name: HashMap<String, SupplierIdx>,
    model_by_name: HashMap<String, ModelId>,
    /// A GPU whose last heartbeat (by its rows' time or the server's receipt, the later)
    /// is older than this counts as offline; `None` = never.
    pub heartbeat_timeout_ms: Option<i64>,
    /// GPU capacity and leased shares over the whole view, thousandths.
    pub(crate) total_capacity_milli: u64,
    pub(crate) total_used_milli: u64,
}

impl LiveView {
    pub fn new() -> LiveView {
        LiveView::default()
    }

    pub fn gpus(&self) -> &[GpuState] {
        &self.gpus
    }
    pub fn nodes(&self) -> &[NodeState] {
        &self.nodes
    }
    pub fn suppliers(&self) -> &[SupplierState] {
        &self.suppliers
    }
    pub fn models(&self) -> &[ModelInfo] {
        &self.models
    }
    pub fn gpu(&self, uuid: &str) -> Option<&GpuState> {
        self.gpu_by_uuid.get(uuid).map(|&i| &self.gpus[i as usize])
    }
    pub fn gpu_index(&self, uuid: &str) -> Option<GpuIdx> {
        self.gpu_by_uuid.get(uuid).copied()
    }
    pub fn node_index(&self, name: &str) -> Option<NodeIdx> {
        self.node_by_name.get(name).copied()
    }
    pub fn model_id(&self, name: &str) -> Option<ModelId> {
        self.model_by_name.get(name).copied()
    }
    pub fn model_name(&self, m: ModelId) -> &str {
        &self.models[usize::from(m)].name
    }
    /// GPU capacity in thousandths (placeable or not).
    pub fn capacity_milli(&self) -> u64 {
        self.total_capacity_milli
    }
    /// Thousandths currently leased.
    pub fn used_milli(&self) -> u64 {
        self.total_used_milli
    }

    /// Interns `name`, seeding its thermal limit and rate from the catalog.
    pub fn intern_model(&mut self, name: &str) -> Result<ModelId> {
        // One model, whichever of its names is given ("NVIDIA H100 80GB HBM3" is "H100").
        let name = gpu_models::canonical_or_same(name);
        if let Some(&m) = self.model_by_name.get(name) {
            return Ok(m);
        }
        if self.models.len() >= MAX_MODELS {
            return Err(Error::TooManyModels {
                model: name.to_owned(),
                max: MAX_MODELS,
            });
        }
        let facts = gpu_models::lookup(name);
        let id = self.models.len() as ModelId;
        self.models.push(ModelInfo {
            name: name.to_owned(),
            thermal_limit_c: facts
                .map_or(gpu_models::FALLBACK_THERMAL_LIMIT_C, |f| f.thermal_limit_c),
            price_micro_per_gpu_hour: facts
                .map_or(gpu_models::FALLBACK_PRICE_MICRO_PER_GPU_HOUR, |f| {
                    f.price_micro_per_gpu_hour
                }),
        });
        self.model_by_name.insert(name.to_owned(), id);
        Ok(id)
    }

    /// The set of models named in `names` (empty = any). Unknown names match nothing.
    pub fn model_set(&self, names: &[String]) -> ModelSet {
        if names.is_empty() {
            return ModelSet::ANY;
        }
        let mut bits = 0u64;
        for n in names {
            let n = gpu_models::canonical_or_same(n);
            if let Some(&m) = self.model_by_name.get(n) {
                bits |= 1u64 << m;
            } else if let Some((_, &m)) = self
                .model_by_name
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
            {
                bits |= 1u64 << m;
            }
        }
        ModelSet(bits)
    }

    /// Sets the price of a model (micro-units per GPU-hour) used for price caps.
    pub fn set_model_rate(&mut self, model: &str, price_micro: i64) -> Result<()> {
        let m = self.intern_model(model)?;
        self.models[usize::from(m)].price_micro_per_gpu_hour = price_micro;
        Ok(())
    }

    /// Sets the thermal slowdown limit of a model.
    pub fn set_thermal_limit(&mut self, model: &str, limit_c: f32) -> Result<()> {
        let m = self.intern_model(model)?;
        self.models[usize::from(m)].thermal_limit_c = limit_c;
        Ok(())
    }

    fn intern_supplier(&mut self, name: &str) -> SupplierIdx {
        if let Some(&s) = self.supplier_by_name.get(name) {
            return s;
        }
        let id = self.suppliers.len() as SupplierIdx;
        self.suppliers.push(SupplierState {
            name: name.to_owned(),
            ..Default::default()
        });
        self.supplier_by_name.insert(name.to_owned(), id);
        id
    }

    /// Registers a node, or returns the existing one of that name (updating its host
    /// capacity).
    pub fn add_node(&mut self, spec: NodeSpec) -> NodeIdx {
        let supplier = self.intern_supplier(&spec.supplier);
        if let Some(&n) = self.node_by_name.get(&spec.name) {
            let node = &mut self.nodes[n as usize];
            node.cpu_total_milli = spec.cpu_milli;
            node.memory_total_mib = spec.memory_mib;
            node.version += 1;
            return n;
        }
        let id = self.nodes.len() as NodeIdx;
        self.nodes.push(NodeState {
            name: spec.name.clone(),
            supplier,
            gpus: Vec::new(),
            cpu_total_milli: spec.cpu_milli,
            cpu_used_milli: 0,
            memory_total_mib: spec.memory_mib,
            memory_used_mib: 0,
            idle_gpus: 0,
            max_free_milli: 0,
            free_gpu_milli: 0,
            version: 0,
        });
        self.node_by_name.insert(spec.name, id);
        id
    }

    /// Registers a GPU on an already registered node.
    pub fn add_gpu(&mut self, spec: GpuSpec, now_ms: i64) -> Result<GpuIdx> {
        let Some(&node) = self.node_by_name.get(&spec.node) else {
            return Err(Error::UnknownNode { node: spec.node });
        };
        if let Some(&g) = self.gpu_by_uuid.get(&spec.uuid) {
            let other = &self.nodes[self.gpus[g as usize].node as usize].name;
            return Err(Error::DuplicateGpu {
                uuid: spec.uuid,
                node: other.clone(),
            });
        }
        let model = self.intern_model(&spec.model)?;
        let memory_total_mib = if spec.memory_total_mib == 0 {
            gpu_models::lookup(&spec.model).map_or(0, |f| f.memory_mib)
        } else {
            spec.memory_total_mib
        };
        let supplier = self.nodes[node as usize].supplier;
        let id = self.gpus.len() as GpuIdx;
        self.gpus.push(GpuState {
            uuid: spec.uuid.clone(),
            node,
            supplier,
            model,
            memory_total_mib,
            memory_free_mib: None,
            utilization_pct: None,
            temperature_c: None,
            health: Health::Healthy,
            last_heartbeat_ms: now_ms,
            last_received_ms: now_ms,
            used_milli: 0,
            leases: Vec::new(),
        });
        let n = &mut self.nodes[node as usize];
        n.gpus.push(id);
        n.idle_gpus += 1;
        n.max_free_milli = WHOLE_GPU;
        n.free_gpu_milli += u64::from(WHOLE_GPU);
        n.version += 1;
        self.suppliers[supplier as usize].offered_gpus += 1;
        self.total_capacity_milli += u64::from(WHOLE_GPU);
        self.gpu_by_uuid.insert(spec.uuid, id);
        Ok(id)
    }

    fn gpu_mut(&mut self, uuid: &str) -> Result<&mut GpuState> {
        match self.gpu_by_uuid.get(uuid) {
            Some(&g) => Ok(&mut self.gpus[g as usize]),
            None => Err(Error::UnknownGpu {
                uuid: uuid.to_owned(),
            }),
        }
    }

    /// Records a metric sample; a sample is also a heartbeat.
    pub fn observe_sample(&mut self, uuid: &str, s: &Sample) -> Result<()> {
        let g = self.gpu_mut(uuid)?;
        g.utilization_pct = Some(s.utilization_pct);
        g.temperature_c = Some(s.temperature_c);
        g.memory_free_mib = Some(s.memory_free_mib);
        g.last_heartbeat_ms = g.last_heartbeat_ms.max(s.ts_ms);
        Ok(())
    }

    pub fn set_health(&mut self, uuid: &str, health: Health) -> Result<()> {
        let g = self.gpu_mut(uuid)?;
        if g.health != health {
            g.health = health;
            let n = g.node as usize;
            self.nodes[n].version += 1;
        }
        Ok(())
    }

    /// The server received a row for `uuid` at `now_ms` (its own clock).
    pub fn received(&mut self, uuid: &str, now_ms: i64) -> Result<()> {
        let g = self.gpu_mut(uuid)?;
        g.last_received_ms = g.last_received_ms.max(now_ms);
        Ok(())
    }

    pub fn heartbeat(&mut self, uuid: &str, ts_ms: i64) -> Result<()> {
        let g = self.gpu_mut(uuid)?;
        g.last_heartbeat_ms = g.last_heartbeat_ms.max(ts_ms);
        Ok(())
    }

    /// Health as placement sees it at `now_ms`: a stale heartbeat reads as offline.
    pub fn effective_health(&self, g: GpuIdx, now_ms: i64) -> Health {
        let gpu = &self.gpus[g as usize];
        match self.heartbeat_timeout_ms {
            Some(t) if now_ms - gpu.last_heartbeat_ms.max(gpu.last_received_ms) > t => {
                Health::Offline
            }
            _ => gpu.health,
        }
    }

    /// Thermal headroom in °C (limit − last temperature); `None` before the first sample.
    pub fn thermal_headroom_c(&self, g: GpuIdx) -> Option<f32> {
        let gpu = &self.gpus[g as usize];
        gpu.temperature_c
            .map(|t| self.models[usize::from(gpu.model)].thermal_limit_c - t)
    }

    /// Credits ledger earnings to a supplier (for fairness).
    pub fn credit_supplier(&mut self, supplier: &str, amount_micro: i64) {
        let s = self.intern_supplier(supplier);
        self.suppliers[s as usize].earned_micro += amount_micro;
    }

    /// Adds `amount_micro` (negative: removes it) to the expected earnings of the supplier
    /// of node `n` ([`SupplierState::booked_micro`]).
    pub(crate) fn book_supplier(&mut self, n: NodeIdx, amount_micro: i64) {
        let s = self.nodes[n as usize].supplier as usize;
        self.suppliers[s].booked_micro += amount_micro;
    }

    pub(crate) fn take_share(&mut self, g: GpuIdx, lease: LeaseId, share: Milli) {
        let gpu = &mut self.gpus[g as usize];
        debug_assert!(gpu.used_milli + share <= WHOLE_GPU);
        let was_idle = gpu.used_milli == 0;
        gpu.used_milli += share;
        gpu.leases.push((lease, share));
        let node = gpu.node;
        let rate = self.models[usize::from(gpu.model)].price_micro_per_gpu_hour;
        self.suppliers[gpu.supplier as usize].active_rate_milli += rate * i64::from(share);
        self.total_used_milli += u64::from(share);
        self.nodes[node as usize].free_gpu_milli -= u64::from(share);
        if was_idle {
            self.nodes[node as usize].idle_gpus -= 1;
        }
        self.refresh_node(node);
    }

    fn refresh_node(&mut self, n: NodeIdx) {
        let node = &self.nodes[n as usize];
        let max = node
            .gpus
            .iter()
            .map(|&g| self.gpus[g as usize].free_milli())
            .max()
            .unwrap_or(0);
        let node = &mut self.nodes[n as usize];
        node.max_free_milli = max;
        node.version += 1;
    }

    pub(crate) fn return_share(&mut self, g: GpuIdx, lease: LeaseId) -> Option<Milli> {
        let gpu = &mut self.gpus[g as usize];
        let pos = gpu.leases.iter().position(|&(l, _)| l == lease)?;
        let (_, share) = gpu.leases.swap_remove(pos);
        gpu.used_milli -= share;
        let rate = self.models[usize::from(gpu.model)].price_micro_per_gpu_hour;
        self.suppliers[gpu.supplier as usize].active_rate_milli -= rate * i64::from(share);
        self.total_used_milli -= u64::from(share);
        let node = gpu.node;
        self.nodes[node as usize].free_gpu_milli += u64::from(share);
        if gpu.used_milli == 0 {
            self.nodes[node as usize].idle_gpus += 1;
        }
        self.refresh_node(node);
        Some(share)
    }

    pub(crate) fn take_host(&mut self, n: NodeIdx, cpu_milli: u32, memory_mib: u64) {
        let node = &mut self.nodes[n as usize];
        node.cpu_used_milli += cpu_milli;
        node.memory_used_mib += memory_mib;
        node.version += 1;
    }

    pub(crate) fn return_host(&mut self, n: NodeIdx, cpu_milli: u32, memory_mib: u64) {
        let node = &mut self.nodes[n as usize];
        node.cpu_used_milli = node.cpu_used_milli.saturating_sub(cpu_milli);
        node.memory_used_mib = node.memory_used_mib.saturating_sub(memory_mib);
        node.version += 1;
    }
}
