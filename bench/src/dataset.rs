//! A deterministic simulated GPU fleet: wide `gpu` rows as line protocol.
//!
//! Used by the ingest benchmark (rendered ahead of time, sent over HTTP); `rigwatch demo` runs
//! real agents over the simulator in `rigwatch_ingest::agent::sim` instead. Values drift smoothly per GPU so that compression
//! sees realistic gauges, not noise.

use std::fmt::Write as _;

#[cfg(test)]
use rigwatch_storage::batch::{FieldValue, WriteBatch};

const MODELS: [(&str, u64); 4] = [
    ("NVIDIA H100 80GB HBM3", 81_559),
    ("NVIDIA A100-SXM4-80GB", 81_920),
    ("NVIDIA L40S", 46_068),
    ("NVIDIA GeForce RTX 4090", 24_564),
];
const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];

/// Number of fields in each `gpu` row.
pub const FIELDS_PER_ROW: usize = 20;

/// One simulated GPU.
#[derive(Debug, Clone)]
struct Gpu {
    supplier: String,
    worker: String,
    uuid: String,
    index: usize,
    model: usize,
    region: usize,
    util: f64,
    energy_mj: u64,
    seed: u64,
}

/// A deterministic fleet.
#[derive(Debug, Clone)]
pub struct Fleet {
    gpus: Vec<Gpu>,
    /// Samples taken so far: the random draws are keyed by it, so a fleet rendered in chunks
    /// continues one random walk instead of replaying the first chunk's steps.
    tick: u64,
}

/// SplitMix64: tiny, deterministic, good enough for simulation.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn unit(x: u64) -> f64 {
    (mix(x) >> 11) as f64 / (1u64 << 53) as f64
}

impl Fleet {
    /// `n` GPUs, 8 per worker, 4 workers per supplier.
    pub fn new(n: usize, seed: u64) -> Self {
        let gpus = (0..n)
            .map(|i| {
                let worker = i / 8;
                let s = mix(seed ^ i as u64);
                Gpu {
                    supplier: format!("supplier-{:03}", worker / 4),
                    worker: format!("worker-{worker:04}"),
                    uuid: format!(
                        "GPU-{:08x}-{:04x}-{:04x}",
                        mix(s) as u32,
                        (s >> 16) as u16,
                        i as u16
                    ),
                    index: i % 8,
                    model: (worker * 7 + seed as usize) % MODELS.len(),
                    region: (worker / 4) % REGIONS.len(),
                    util: unit(s) * 100.0,
                    energy_mj: 0,
                    seed: s,
                }
            })
            .collect();
        Self { gpus, tick: 0 }
    }

    /// Advances every GPU by one sample and calls `emit` with its values.
    fn step(&mut self, mut emit: impl FnMut(&Gpu, &Sample)) {
        let tick = self.tick;
        self.tick += 1;
        for g in &mut self.gpus {
            let r = unit(g.seed ^ tick);
            // Utilization drifts, with occasional jumps as jobs start and end.
            g.util = if r < 0.02 {
                (r * 5000.0).min(100.0)
            } else {
                (g.util + (r - 0.5) * 6.0).clamp(0.0, 100.0)
            };
            g.util = (g.util * 10.0).round() / 10.0;
            let (_, mem_total) = MODELS[g.model];
            let power = (60.0 + g.util * 3.4).round();
            g.energy_mj += (power * 10.0) as u64;
            let s = Sample {
                util: g.util,
                mem_util: (g.util * 0.7).round(),
                mem_used: (mem_total as f64 * g.util / 130.0) as u64,
                mem_total,
                temp: (35.0 + g.util * 0.45).round(),
                mem_temp: (40.0 + g.util * 0.4).round(),
                power,
                power_limit: 400.0,
                sm_clock: if g.util > 1.0 { 1980 } else { 345 },
                mem_clock: 2619,
                energy_mj: g.energy_mj,
                fan: (30.0 + g.util * 0.5).round(),
                pcie_tx: (g.util * 120.0) as u64,
                pcie_rx: (g.util * 80.0) as u64,
                pcie_replay: 0,
                ecc_sbe: 0,
                ecc_dbe: 0,
                xid: 0,
                throttle: if g.util > 95.0 { 4 } else { 0 },
                healthy: true,
            };
            emit(g, &s);
        }
    }

    /// Renders `ticks` samples of every GPU, `interval_ns` apart from `start_ns`, as line
    /// protocol, one request body per tick.
    pub fn render_lp(&mut self, start_ns: i64, interval_ns: i64, ticks: u64) -> Vec<String> {
        (0..ticks)
            .map(|t| {
                let ts = start_ns + t as i64 * interval_ns;
                let mut body = String::with_capacity(self.gpus.len() * 420);
                self.step(|g, s| {
                    let _ = writeln!(
                        body,
                        "gpu,supplier={},worker={},gpu_uuid={},gpu_index={},model={},region={} \
utilization={},memory_utilization={},memory_used_mib={}i,memory_total_mib={}i,temperature={},\
memory_temperature={},power_watts={},power_limit_watts={},sm_clock_mhz={}i,memory_clock_mhz={}i,\
energy_mj={}i,fan_percent={},pcie_tx_kbps={}i,pcie_rx_kbps={}i,pcie_replay_total={}i,\
ecc_sbe_total={}i,ecc_dbe_total={}i,xid_last={}i,throttle_reasons={}i,healthy={} {ts}",
                        g.supplier,
                        g.worker,
                        g.uuid,
                        g.index,
                        MODELS[g.model].0.replace(' ', "\\ "),
                        REGIONS[g.region],
                        s.util,
                        s.mem_util,
                        s.mem_used,
                        s.mem_total,
                        s.temp,
                        s.mem_temp,
                        s.power,
                        s.power_limit,
                        s.sm_clock,
                        s.mem_clock,
                        s.energy_mj,
                        s.fan,
                        s.pcie_tx,
                        s.pcie_rx,
                        s.pcie_replay,
                        s.ecc_sbe,
                        s.ecc_dbe,
                        s.xid,
                        s.throttle,
                        s.healthy,
                    );
                });
                body
            })
            .collect()
    }

    /// The next tick as a batch (the unit test checks it against the line-protocol form).
    #[cfg(test)]
    pub fn batch(&mut self, ts: i64) -> WriteBatch {
        let mut b = WriteBatch::with_capacity(self.gpus.len(), self.gpus.len() * 400);
        self.step(|g, s| {
            let idx = g.index.to_string();
            let mut r = b.row("gpu", ts);
            r.tag("supplier", &g.supplier)
                .tag("worker", &g.worker)
                .tag("gpu_uuid", &g.uuid)
                .tag("gpu_index", &idx)
                .tag("model", MODELS[g.model].0)
                .tag("region", REGIONS[g.region])
                .field("utilization", FieldValue::F64(s.util))
                .field("memory_utilization", FieldValue::F64(s.mem_util))
                .field("memory_used_mib", FieldValue::I64(s.mem_used as i64))
                .field("memory_total_mib", FieldValue::I64(s.mem_total as i64))
                .field("temperature", FieldValue::F64(s.temp))
                .field("memory_temperature", FieldValue::F64(s.mem_temp))
                .field("power_watts", FieldValue::F64(s.power))
                .field("power_limit_watts", FieldValue::F64(s.power_limit))
                .field("sm_clock_mhz", FieldValue::I64(s.sm_clock))
                .field("memory_clock_mhz", FieldValue::I64(s.mem_clock))
                .field("energy_mj", FieldValue::I64(s.energy_mj as i64))
                .field("fan_percent", FieldValue::F64(s.fan))
                .field("pcie_tx_kbps", FieldValue::I64(s.pcie_tx as i64))
                .field("pcie_rx_kbps", FieldValue::I64(s.pcie_rx as i64))
                .field("pcie_replay_total", FieldValue::I64(s.pcie_replay))
                .field("ecc_sbe_total", FieldValue::I64(s.ecc_sbe))
                .field("ecc_dbe_total", FieldValue::I64(s.ecc_dbe))
                .field("xid_last", FieldValue::I64(s.xid))
                .field("throttle_reasons", FieldValue::I64(s.throttle))
                .field("healthy", FieldValue::Bool(s.healthy));
            let _ = r.finish(1);
        });
        b
    }
}

/// Values of one sample.
#[derive(Debug)]
struct Sample {
    util: f64,
    mem_util: f64,
    mem_used: u64,
    mem_total: u64,
    temp: f64,
    mem_temp: f64,
    power: f64,
    power_limit: f64,
    sm_clock: i64,
    mem_clock: i64,
    energy_mj: u64,
    fan: f64,
    pcie_tx: u64,
    pcie_rx: u64,
    pcie_replay: i64,
    ecc_sbe: i64,
    ecc_dbe: i64,
    xid: i64,
    throttle: i64,
    healthy: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_is_deterministic_and_wide() {
        let a = Fleet::new(16, 1).render_lp(0, 10, 2);
        let b = Fleet::new(16, 1).render_lp(0, 10, 2);
        assert_eq!(a, b);
        assert_eq!(a[0].lines().count(), 16);
        let batch = Fleet::new(16, 1).batch(5);
        assert_eq!(batch.len(), 16);
        assert_eq!(batch.field_count(), 16 * FIELDS_PER_ROW);
    }

    #[test]
    fn rendering_in_chunks_continues_the_walk() {
        let whole = Fleet::new(4, 7).render_lp(0, 10, 60);
        let mut fleet = Fleet::new(4, 7);
        let mut chunked = fleet.render_lp(0, 10, 30);
        chunked.extend(fleet.render_lp(300, 10, 30));
        assert_eq!(whole, chunked);
    }
}
