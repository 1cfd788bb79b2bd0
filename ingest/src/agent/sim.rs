//! A simulated GPU worker with coherent dynamics, for `rigwatch agent --simulate N`, the demo
//! and tests. It is a [`Collector`] like real NVML, so everything after collection is shared.
//!
//! Per step (one `--interval`), for each GPU:
//! - utilization follows the load: a job generator (idle gaps, jobs of 60–100 % for minutes)
//!   unless [`Simulator::set_load`] pinned it;
//! - memory used follows the job's footprint with a first-order lag (τ ≈ 2 s);
//! - power follows utilization (idle → TDP, capped at the power limit, τ ≈ 1 s) and
//!   temperature follows power with thermal lag (τ ≈ 25 s) towards
//!   `ambient + power × R_thermal`; above the model's slowdown temperature the GPU throttles
//!   (HW slowdown + SW thermal bits, SM clock −25 %);
//! - energy integrates power; PCIe throughput follows utilization;
//! - on GPUs with activity metrics ([`GpuModel::activity`]: data-centre models; GeForce has
//!   none), each job has a kernel mix drawn when it starts (share of SMs it keeps busy, warp
//!   occupancy, tensor-core share, memory-bandwidth share): `gr_engine_active` is the
//!   utilization as a ratio, `sm_active` ≤ it, `sm_occupancy` and `tensor_active` ≤
//!   `sm_active`, `dram_active` ≤ `gr_engine_active`; older models use their tensor cores
//!   less ([`GpuModel::tensor_scale`]);
//! - rarely, a cooling failure (thermal resistance +40 % for minutes) that makes a loaded
//!   GPU throttle;
//! - rarely, an XID: application (13, 31, 43), hardware (48, 64, 79, 95) or informational
//!   (63, 92), with their side effects (ECC counters, retired pages / remapped rows, 79 drops
//!   the GPU off the bus for a while).
//!
//! Everything is drawn from one ChaCha8 stream in a fixed order, so a seed replays exactly.
//! Tests drive it through [`Simulator::inject_xid`], [`Simulator::disconnect`] and
//! [`Simulator::set_fault_rate`].

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rigwatch_common::rng::SplitMix64;

use super::fields::{GpuEvent, GpuInfo, GpuSample, Metric};
use super::host::{HostField, HostSample, ProcHost};
use super::{CollectError, Collector};

/// A GPU model with its real specifications.
#[derive(Debug, Clone, Copy)]
pub struct GpuModel {
    /// Name as NVML reports it.
    pub name: &'static str,
    pub memory_mib: u64,
    /// Default power limit (board TDP), W.
    pub tdp_watts: f64,
    pub idle_watts: f64,
    pub max_sm_clock_mhz: u32,
    pub mem_clock_mhz: u32,
    /// Temperature at which the GPU starts to slow down (°C).
    pub slowdown_c: f64,
    /// Has HBM (reports memory temperature) and MIG.
    pub datacenter: bool,
    /// Reports the activity fields (SM, tensor, DRAM active): what DCGM's profiling module
    /// measures on data-centre GPUs. GeForce cards have none.
    pub activity: bool,
    /// How much of a job's SM activity uses the tensor cores on this model, relative to the
    /// newest (1.0): older tensor cores handle fewer data types.
    pub tensor_scale: f64,
}

/// The catalog the simulator draws from.
pub const CATALOG: &[GpuModel] = &[
    GpuModel {
        name: "NVIDIA H100 80GB HBM3",
        memory_mib: 81_559,
        tdp_watts: 700.0,
        idle_watts: 70.0,
        max_sm_clock_mhz: 1980,
        mem_clock_mhz: 2619,
        slowdown_c: 87.0,
        datacenter: true,
        activity: true,
        tensor_scale: 1.0,
    },
    GpuModel {
        name: "NVIDIA A100-SXM4-80GB",
        memory_mib: 81_920,
        tdp_watts: 400.0,
        idle_watts: 55.0,
        max_sm_clock_mhz: 1410,
        mem_clock_mhz: 1593,
        slowdown_c: 90.0,
        datacenter: true,
        activity: true,
        tensor_scale: 0.9,
    },
    GpuModel {
        name: "NVIDIA A100-SXM4-40GB",
        memory_mib: 40_960,
        tdp_watts: 400.0,
        idle_watts: 50.0,
        max_sm_clock_mhz: 1410,
        mem_clock_mhz: 1215,
        slowdown_c: 90.0,
        datacenter: true,
        activity: true,
        tensor_scale: 0.9,
    },
    GpuModel {
        name: "NVIDIA L40S",
        memory_mib: 46_068,
        tdp_watts: 350.0,
        idle_watts: 35.0,
        max_sm_clock_mhz: 2520,
        mem_clock_mhz: 9001,
        slowdown_c: 88.0,
        datacenter: false,
        activity: true,
        tensor_scale: 0.8,
    },
    GpuModel {
        name: "NVIDIA GeForce RTX 4090",
        memory_mib: 24_564,
        tdp_watts: 450.0,
        idle_watts: 25.0,
        max_sm_clock_mhz: 2520,
        mem_clock_mhz: 10_501,
        slowdown_c: 88.0,
        datacenter: false,
        activity: false,
        tensor_scale: 0.8,
    },
    GpuModel {
        name: "NVIDIA GeForce RTX 3090",
        memory_mib: 24_576,
        tdp_watts: 350.0,
        idle_watts: 30.0,
        max_sm_clock_mhz: 2100,
        mem_clock_mhz: 9751,
        slowdown_c: 93.0,
        datacenter: false,
        activity: false,
        tensor_scale: 0.6,
    },
    GpuModel {
        name: "Tesla T4",
        memory_mib: 15_360,
        tdp_watts: 70.0,
        idle_watts: 10.0,
        max_sm_clock_mhz: 1590,
        mem_clock_mhz: 5001,
        slowdown_c: 85.0,
        datacenter: false,
        activity: true,
        tensor_scale: 0.5,
    },
    GpuModel {
        name: "Tesla V100-SXM2-16GB",
        memory_mib: 16_160,
        tdp_watts: 300.0,
        idle_watts: 40.0,
        max_sm_clock_mhz: 1530,
        mem_clock_mhz: 877,
        slowdown_c: 87.0,
        datacenter: true,
        activity: true,
        tensor_scale: 0.5,
    },
];

/// `nvmlClocksEventReasons` bits.
pub mod throttle {
    pub const GPU_IDLE: u64 = 0x1;
    pub const SW_POWER_CAP: u64 = 0x4;
    pub const HW_SLOWDOWN: u64 = 0x8;
    pub const SW_THERMAL_SLOWDOWN: u64 = 0x20;
}

const AMBIENT_C: f64 = 28.0;
/// Default chance of an XID per GPU per step (about one per GPU per two days at 1 Hz).
pub const DEFAULT_FAULT_RATE: f64 = 6e-6;

/// Where a GPU's load comes from.
#[derive(Debug, Clone, Copy)]
enum Load {
    /// The built-in job generator: a job (or an idle gap) with its level and steps left.
    Auto {
        util: f64,
        mem_frac: f64,
        steps_left: u32,
    },
    /// Pinned by [`Simulator::set_load`].
    Pinned { util: f64, mem_mib: f64 },
}

/// What a job's kernels do with the GPU while they run (ratios, 0–1).
#[derive(Debug, Clone, Copy, PartialEq)]
struct KernelMix {
    /// Share of the SMs kept busy while a kernel runs.
    coverage: f64,
    /// Resident warps over the maximum, on a busy SM.
    occupancy: f64,
    /// Share of busy SM cycles with the tensor pipe active (on the newest model).
    tensor: f64,
    /// Share of the engine's active time the memory interface is busy.
    dram: f64,
}

impl KernelMix {
    /// A job's mix, from the GPU's own generator (not the shared stream: activity must not
    /// shift any other draw of a seed). A third of jobs barely use tensor cores (FP32 or
    /// integer work); the rest are mixed-precision training or inference.
    fn draw(rng: &mut SplitMix64) -> Self {
        let mut r = || rng.next_f64();
        let tensor_user = r() < 0.67;
        let tensor_level = r();
        KernelMix {
            coverage: 0.55 + 0.43 * r(),
            occupancy: 0.2 + 0.5 * r(),
            tensor: if tensor_user {
                0.25 + 0.5 * tensor_level
            } else {
                0.02 * tensor_level
            },
            dram: 0.15 + 0.55 * r(),
        }
    }
}

#[derive(Debug, Clone)]
struct SimGpu {
    info: GpuInfo,
    model: GpuModel,
    load: Load,
    util: f64,
    mem_used: f64,
    power: f64,
    temp: f64,
    energy_mj: f64,
    pcie_replay: u64,
    ecc_sbe: u64,
    ecc_dbe: u64,
    retired_sbe: u64,
    retired_dbe: u64,
    remapped_corr: u64,
    remapped_unc: u64,
    /// Steps left off the bus (no samples).
    disconnected: u32,
    /// Steps left of a cooling failure (a dead fan, a blocked intake): thermal resistance
    /// is 40 % higher, so a loaded GPU runs past its slowdown temperature and throttles.
    overheating: u32,
    /// The current job's kernel mix, and the generator it is drawn from.
    mix: KernelMix,
    mix_rng: SplitMix64,
}

#[derive(Debug)]
struct SimState {
    gpus: Vec<SimGpu>,
    rng: ChaCha8Rng,
    dt_s: f64,
    fault_rate: f64,
    pending: Vec<(usize, u32)>,
    /// Events of the last steps, until `events()` takes them.
    events: Vec<GpuEvent>,
}

/// A simulated worker. Cheap to clone: clones share the GPUs, so a test or the allocator can
/// hold one while the agent's collector thread samples the other.
#[derive(Debug, Clone)]
pub struct Simulator {
    state: Arc<Mutex<SimState>>,
}

impl Simulator {
    /// `gpus` GPUs of one model picked by `seed` (servers hold identical GPUs), stepped
    /// every `interval`.
    pub fn new(gpus: usize, seed: u64, interval: Duration) -> Self {
        let model = CATALOG[(seed % CATALOG.len() as u64) as usize];
        Self::with_models(&vec![model; gpus], seed, interval)
    }

    /// One GPU per entry of `models`.
    pub fn with_models(models: &[GpuModel], seed: u64, interval: Duration) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let gpus = models
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let uuid = format!(
                    "GPU-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                    rng.random::<u32>(),
                    rng.random::<u16>(),
                    rng.random::<u16>(),
                    rng.random::<u16>(),
                    rng.random::<u64>() & 0xffff_ffff_ffff
                );
                let info = GpuInfo {
                    index: i as u32,
                    uuid,
                    model: m.name.to_string(),
                    memory_total_mib: m.memory_mib,
                    pci_bus_id: format!("00000000:{:02X}:00.0", 0x18 + 0x11 * i),
                    driver_version: "550.54.15".into(),
                    cuda_version: "12.4".into(),
                    power_limit_watts: Some(m.tdp_watts),
                    mig_enabled: m.datacenter.then_some(false),
                };
                SimGpu {
                    info,
                    model: *m,
                    load: Load::Auto {
                        util: 0.0,
                        mem_frac: 0.0,
                        steps_left: rng.random_range(0..30),
                    },
                    util: 0.0,
                    mem_used: 0.0,
                    power: m.idle_watts,
                    temp: AMBIENT_C + 5.0,
                    energy_mj: rng.random_range(1e6..1e9_f64).round(),
                    pcie_replay: 0,
                    ecc_sbe: 0,
                    ecc_dbe: 0,
                    retired_sbe: 0,
                    retired_dbe: 0,
                    remapped_corr: 0,
                    remapped_unc: 0,
                    disconnected: 0,
                    overheating: 0,
                    mix: KernelMix {
                        coverage: 0.0,
                        occupancy: 0.0,
                        tensor: 0.0,
                        dram: 0.0,
                    },
                    mix_rng: SplitMix64::new(seed ^ (i as u64).wrapping_mul(0xa076_1d64_78bd_642f)),
                }
            })
            .collect();
        Simulator {
            state: Arc::new(Mutex::new(SimState {
                gpus,
                rng,
                dt_s: interval.as_secs_f64().max(1e-3),
                fault_rate: DEFAULT_FAULT_RATE,
                pending: Vec::new(),
                events: Vec::new(),
            })),
        }
    }

    pub fn len(&self) -> usize {
        self.state.lock().gpus.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The GPUs' inventory.
    pub fn infos(&self) -> Vec<GpuInfo> {
        self.state
            .lock()
            .gpus
            .iter()
            .map(|g| g.info.clone())
            .collect()
    }

    /// Pins GPU `gpu` to `util` % and `mem_mib` MiB of memory (what a placed job uses).
    pub fn set_load(&self, gpu: usize, util: f64, mem_mib: u64) {
        if let Some(g) = self.state.lock().gpus.get_mut(gpu) {
            g.load = Load::Pinned {
                util: util.clamp(0.0, 100.0),
                mem_mib: (mem_mib as f64).min(g.model.memory_mib as f64),
            };
            g.mix = KernelMix::draw(&mut g.mix_rng);
        }
    }

    /// Returns GPU `gpu` to the built-in job generator.
    pub fn clear_load(&self, gpu: usize) {
        if let Some(g) = self.state.lock().gpus.get_mut(gpu) {
            g.load = Load::Auto {
                util: 0.0,
                mem_frac: 0.0,
                steps_left: 0,
            };
        }
    }

    /// Chance of a random XID per GPU per step (0 turns random faults off).
    pub fn set_fault_rate(&self, rate: f64) {
        self.state.lock().fault_rate = rate.max(0.0);
    }

    /// Makes GPU `gpu` report XID `code` (with its side effects) at the next collection.
    pub fn inject_xid(&self, gpu: usize, code: u32) {
        self.state.lock().pending.push((gpu, code));
    }

    /// Breaks GPU `gpu`'s cooling for `dur` (rounded up to whole steps): under load it
    /// heats past its slowdown temperature and throttles.
    pub fn cooling_failure(&self, gpu: usize, dur: Duration) {
        let mut s = self.state.lock();
        let steps = (dur.as_secs_f64() / s.dt_s).ceil() as u32;
        if let Some(g) = s.gpus.get_mut(gpu) {
            g.overheating = g.overheating.max(steps);
        }
    }

    /// Takes GPU `gpu` off the bus for `dur` (rounded up to whole steps): it is left out of
    /// samples.
    pub fn disconnect(&self, gpu: usize, dur: Duration) {
        let mut s = self.state.lock();
        let steps = (dur.as_secs_f64() / s.dt_s).ceil() as u32;
        if let Some(g) = s.gpus.get_mut(gpu) {
            g.disconnected = g.disconnected.max(steps);
        }
    }
}

/// Applies an XID's side effects to the GPU's counters.
fn apply_xid(g: &mut SimGpu, code: u32, rng: &mut ChaCha8Rng) {
    match code {
        48 => {
            g.ecc_dbe += 1;
            g.retired_dbe += 1;
            g.remapped_unc += 1;
        }
        63 | 64 => {
            g.retired_sbe += 1;
            g.remapped_corr += 1;
        }
        92 => g.ecc_sbe += rng.random_range(10..200),
        79 => g.disconnected = g.disconnected.max(rng.random_range(30..120)),
        95 => g.ecc_dbe += 1,
        _ => {}
    }
}

/// XIDs that happen at random, with weights (application errors are the common ones).
const RANDOM_XIDS: &[(u32, u32)] = &[
    (13, 30),
    (31, 25),
    (43, 15),
    (63, 10),
    (92, 5),
    (48, 4),
    (64, 3),
    (79, 3),
    (95, 5),
];

impl SimState {
    fn step(&mut self, now_ns: i64, out: &mut Vec<GpuSample>) {
        let events = &mut self.events;
        let dt = self.dt_s;
        let a_mem = 1.0 - (-dt / 2.0).exp();
        let a_power = 1.0 - (-dt / 1.0).exp();
        let a_temp = 1.0 - (-dt / 25.0).exp();
        let total_weight: u32 = RANDOM_XIDS.iter().map(|x| x.1).sum();
        for (gpu, code) in std::mem::take(&mut self.pending) {
            if let Some(g) = self.gpus.get_mut(gpu) {
                apply_xid(g, code, &mut self.rng);
                events.push(GpuEvent {
                    gpu,
                    time_ns: now_ns,
                    xid: code,
                });
            }
        }
        for (i, g) in self.gpus.iter_mut().enumerate() {
            let rng = &mut self.rng;
            // Draw the same numbers every step whatever the state, so one GPU's history does
            // not shift another's.
            let r_job: f64 = rng.random();
            let r_level: f64 = rng.random();
            let r_len: f64 = rng.random();
            let r_noise: f64 = rng.random();
            let r_fault: f64 = rng.random();
            let r_code: u32 = rng.random_range(0..total_weight);
            let r_replay: f64 = rng.random();
            let r_cooling: f64 = rng.random();

            let (target_util, target_mem) = match &mut g.load {
                Load::Pinned { util, mem_mib } => (*util, *mem_mib),
                Load::Auto {
                    util,
                    mem_frac,
                    steps_left,
                } => {
                    if *steps_left == 0 {
                        // 70 % of the time a job follows, else an idle gap.
                        if r_job < 0.7 {
                            *util = 60.0 + 40.0 * r_level;
                            *mem_frac = 0.2 + 0.75 * r_level;
                            g.mix = KernelMix::draw(&mut g.mix_rng);
                        } else {
                            *util = 0.0;
                            *mem_frac = 0.0;
                        }
                        // Exponential length, mean 3 minutes of real time.
                        *steps_left = ((-r_len.max(1e-9).ln()) * 180.0 / dt).ceil() as u32;
                    }
                    *steps_left = steps_left.saturating_sub(1);
                    (*util, *mem_frac * g.model.memory_mib as f64)
                }
            };
            let noise = if target_util > 0.0 {
                (r_noise - 0.5) * 6.0
            } else {
                0.0
            };
            g.util = (target_util + noise).clamp(0.0, 100.0).round();
            g.mem_used += (target_mem - g.mem_used) * a_mem;

            let m = g.model;
            let limit = g.info.power_limit_watts.unwrap_or(m.tdp_watts);
            let want = m.idle_watts + (m.tdp_watts - m.idle_watts) * (g.util / 100.0).powf(0.9);
            let power_capped = want > limit;
            g.power += (want.min(limit) - g.power) * a_power;
            // Thermal resistance chosen so that sustained TDP settles 6 °C below slowdown:
            // a cooling problem (or a power-limit raise) is what makes a GPU throttle.
            let mut r_th = (m.slowdown_c - 6.0 - AMBIENT_C) / m.tdp_watts;
            if r_cooling < self.fault_rate / 2.0 {
                // Lasts 2 to 10 minutes of real time.
                g.overheating = g
                    .overheating
                    .max(((120.0 + r_cooling / self.fault_rate * 960.0) / dt) as u32);
            }
            if g.overheating > 0 {
                g.overheating -= 1;
                r_th *= 1.4;
            }
            g.temp += (AMBIENT_C + g.power * r_th - g.temp) * a_temp;
            g.energy_mj += g.power * dt * 1000.0;

            let thermal = g.temp >= m.slowdown_c;
            let mut reasons = 0u64;
            if g.util == 0.0 {
                reasons |= throttle::GPU_IDLE;
            }
            if power_capped {
                reasons |= throttle::SW_POWER_CAP;
            }
            if thermal {
                reasons |= throttle::HW_SLOWDOWN | throttle::SW_THERMAL_SLOWDOWN;
            }
            let mut sm_clock = if g.util > 0.0 {
                m.max_sm_clock_mhz as f64
            } else {
                210.0
            };
            if thermal {
                sm_clock *= 0.75;
            }
            if r_replay < 1e-4 {
                g.pcie_replay += 1;
            }
            if r_fault < self.fault_rate {
                let mut acc = 0;
                let code = RANDOM_XIDS
                    .iter()
                    .find(|(_, w)| {
                        acc += w;
                        r_code < acc
                    })
                    .map_or(13, |x| x.0);
                apply_xid(g, code, rng);
                events.push(GpuEvent {
                    gpu: i,
                    time_ns: now_ns,
                    xid: code,
                });
            }
            if g.disconnected > 0 {
                g.disconnected -= 1;
                continue;
            }
            let mut s = GpuSample::new(i, now_ns);
            s.set(Metric::Utilization, g.util);
            s.set(
                Metric::MemoryUtilization,
                (g.util * 0.6 + g.mem_used / m.memory_mib as f64 * 10.0).round(),
            );
            s.set(Metric::MemoryUsedMib, g.mem_used.round());
            s.set(
                Metric::MemoryFreeMib,
                (m.memory_mib as f64 - g.mem_used).round(),
            );
            s.set(Metric::Temperature, g.temp.round());
            if m.datacenter {
                s.set(Metric::MemoryTemperature, (g.temp + 4.0).round());
            }
            s.set(Metric::PowerWatts, (g.power * 100.0).round() / 100.0);
            s.set(Metric::EnergyMj, g.energy_mj.round());
            s.set(Metric::SmClockMhz, sm_clock.round());
            s.set(Metric::MemoryClockMhz, m.mem_clock_mhz as f64);
            s.set(Metric::PcieTxBytesPerS, (g.util * 9.0e7).round());
            s.set(Metric::PcieRxBytesPerS, (g.util * 6.0e7).round());
            s.set(Metric::PcieReplayTotal, g.pcie_replay as f64);
            if m.datacenter {
                s.set(Metric::EccSbeTotal, g.ecc_sbe as f64);
                s.set(Metric::EccDbeTotal, g.ecc_dbe as f64);
                s.set(Metric::RetiredPagesSbe, g.retired_sbe as f64);
                s.set(Metric::RetiredPagesDbe, g.retired_dbe as f64);
                s.set(Metric::RemappedRowsCorrectable, g.remapped_corr as f64);
                s.set(Metric::RemappedRowsUncorrectable, g.remapped_unc as f64);
                s.set(Metric::RowRemapFailure, 0.0);
            }
            s.set(Metric::ThrottleReasons, reasons as f64);
            s.set(
                Metric::ComputeProcesses,
                if g.util > 0.0 { 1.0 } else { 0.0 },
            );
            if m.activity {
                let ratio = |x: f64| (x.clamp(0.0, 1.0) * 1000.0).round() / 1000.0;
                let engine = g.util / 100.0;
                let sm = engine * g.mix.coverage;
                s.set(Metric::GrEngineActive, ratio(engine));
                s.set(Metric::SmActive, ratio(sm));
                s.set(Metric::SmOccupancy, ratio(sm * g.mix.occupancy));
                s.set(
                    Metric::TensorActive,
                    ratio(sm * g.mix.tensor * m.tensor_scale),
                );
                s.set(Metric::DramActive, ratio(engine * g.mix.dram));
            }
            out.push(s);
        }
    }
}

impl Collector for Simulator {
    fn inventory(&mut self) -> Result<Vec<GpuInfo>, CollectError> {
        Ok(self.infos())
    }

    fn sample(&mut self, now_ns: i64, out: &mut Vec<GpuSample>) -> Result<(), CollectError> {
        self.state.lock().step(now_ns, out);
        Ok(())
    }

    fn events(&mut self, _now_ns: i64, out: &mut Vec<GpuEvent>) {
        let mut s = self.state.lock();
        out.append(&mut s.events);
    }

    /// A host sized for its GPUs (16 CPUs and 64 GiB per GPU, a 4 TB disk a third full) whose
    /// CPU, memory, disk and network follow the GPUs' load: the data loaders feeding a busy
    /// GPU keep CPUs, disks and the network busy too. No swapping, no network errors.
    fn host(&mut self, _now_ns: i64, _proc: &mut ProcHost, out: &mut HostSample) {
        let s = self.state.lock();
        out.clear();
        let n = s.gpus.len().max(1) as f64;
        let load = s.gpus.iter().map(|g| g.util / 100.0).sum::<f64>() / n;
        let pinned_mib: f64 = s.gpus.iter().map(|g| g.mem_used * 0.5).sum();
        let cpus = (16.0 * n).min(256.0);
        let memory_mib = (65_536.0 * n).min(2_097_152.0);
        let cpu = 4.0 + 56.0 * load;
        out.set(HostField::CpuCount, cpus);
        out.set(HostField::CpuUtilization, (cpu * 10.0).round() / 10.0);
        out.set(HostField::CpuIowait, (2.0 * load * 10.0).round() / 10.0);
        out.set(
            HostField::Load1,
            (cpus * cpu / 100.0 * 100.0).round() / 100.0,
        );
        out.set(HostField::MemoryTotalMib, memory_mib);
        out.set(
            HostField::MemoryUsedMib,
            (8_192.0 + pinned_mib).min(memory_mib).round(),
        );
        out.set(HostField::SwapTotalMib, 8_192.0);
        out.set(HostField::SwapUsedMib, 0.0);
        out.set(HostField::SwapInPagesPerS, 0.0);
        out.set(HostField::SwapOutPagesPerS, 0.0);
        out.set(HostField::DiskTotalBytes, 4.0e12);
        out.set(HostField::DiskUsedBytes, 1.3e12);
        out.set(HostField::DiskReadBytesPerS, (load * n * 2.0e8).round());
        out.set(HostField::DiskWriteBytesPerS, (load * n * 2.0e7).round());
        out.set(HostField::DiskBusyPercent, (load * 70.0).round());
        out.set(HostField::NetRxBytesPerS, (load * n * 1.2e8).round());
        out.set(HostField::NetTxBytesPerS, (load * n * 4.0e7).round());
        for f in [
            HostField::NetRxErrorsTotal,
            HostField::NetTxErrorsTotal,
            HostField::NetRxDroppedTotal,
            HostField::NetTxDroppedTotal,
        ] {
            out.set(f, 0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(sim: &mut Simulator, steps: usize) -> (Vec<GpuSample>, Vec<GpuEvent>) {
        let mut samples = Vec::new();
        let mut events = Vec::new();
        for t in 0..steps {
            sim.sample(t as i64, &mut samples).unwrap();
            sim.events(t as i64, &mut events);
        }
        (samples, events)
    }

    #[test]
    fn same_seed_same_history_other_seed_other_history() {
        let dt = Duration::from_secs(1);
        let mut a = Simulator::new(8, 42, dt);
        let mut b = Simulator::new(8, 42, dt);
        let mut c = Simulator::new(8, 43, dt);
        a.set_fault_rate(0.01);
        b.set_fault_rate(0.01);
        assert_eq!(a.infos(), b.infos());
        assert_ne!(a.infos()[0].uuid, c.infos()[0].uuid);
        let (sa, ea) = run(&mut a, 300);
        let (sb, eb) = run(&mut b, 300);
        let (sc, _) = run(&mut c, 300);
        assert_eq!(sa, sb);
        assert_eq!(ea, eb);
        assert!(
            !ea.is_empty(),
            "a 1% fault rate over 2,400 GPU-steps yields faults"
        );
        assert_ne!(sa, sc);
    }

    #[test]
    fn activity_fields_follow_utilization_and_are_absent_on_geforce() {
        let dt = Duration::from_secs(1);
        let h100 = CATALOG[0];
        let rtx = *CATALOG.iter().find(|m| m.name.contains("4090")).unwrap();
        let mut sim = Simulator::with_models(&[h100, h100, rtx], 5, dt);
        sim.set_fault_rate(0.0);
        let (samples, _) = run(&mut sim, 3000);
        let (mut busy, mut tensor_jobs, mut idle) = (0, 0, 0);
        for s in &samples {
            let get = |m| s.get(m);
            if s.gpu == 2 {
                for m in Metric::ACTIVITY {
                    assert_eq!(get(m), None, "GeForce has no {}", m.spec().name);
                }
                continue;
            }
            let act = Metric::ACTIVITY.map(|m| get(m).expect("H100 reports activity"));
            let [engine, sm, occupancy, tensor, dram] = act;
            assert!(act.iter().all(|v| (0.0..=1.0).contains(v)), "{act:?}");
            let util = get(Metric::Utilization).unwrap();
            assert!((engine - util / 100.0).abs() < 1e-3, "{engine} vs {util}");
            assert!(sm <= engine + 1e-3 && occupancy <= sm + 1e-3 && tensor <= sm + 1e-3);
            assert!(dram <= engine + 1e-3);
            if util == 0.0 {
                idle += 1;
                assert_eq!(act, [0.0; 5]);
            } else {
                busy += 1;
                // A busy GPU keeps at least half of its SMs busy: SM activity is below
                // utilization, never far below.
                assert!(sm >= 0.5 * engine - 1e-3, "{sm} vs {engine}");
                tensor_jobs += usize::from(tensor > 0.1 * sm);
            }
        }
        assert!(busy > 1000 && idle > 100, "busy {busy}, idle {idle}");
        // Jobs differ: some use tensor cores, some do not.
        assert!(
            tensor_jobs > busy / 4 && tensor_jobs < busy,
            "{tensor_jobs} of {busy}"
        );
    }

    #[test]
    fn power_and_temperature_follow_load_with_thermal_lag() {
        let dt = Duration::from_secs(1);
        let mut sim = Simulator::with_models(&[CATALOG[0]], 1, dt);
        sim.set_fault_rate(0.0);
        sim.set_load(0, 0.0, 0);
        let (idle, _) = run(&mut sim, 120);
        let idle = idle.last().unwrap().clone();
        assert_eq!(idle.get(Metric::Utilization), Some(0.0));
        sim.set_load(0, 100.0, 60_000);
        let (busy, _) = run(&mut sim, 200);
        let t = |s: &GpuSample| s.get(Metric::Temperature).unwrap();
        let p = |s: &GpuSample| s.get(Metric::PowerWatts).unwrap();
        // Power reacts within seconds, temperature takes tens of seconds.
        assert!(p(&busy[4]) > 600.0, "power {}", p(&busy[4]));
        assert!(t(&busy[4]) < t(&busy[60]) && t(&busy[60]) < t(&busy[199]) + 0.5);
        assert!(t(&busy[199]) > t(&idle) + 30.0);
        assert!(
            t(&busy[199]) < CATALOG[0].slowdown_c,
            "no throttling at rated power"
        );
        let used = busy[199].get(Metric::MemoryUsedMib).unwrap();
        assert!(
            (used - 60_000.0).abs() < 100.0,
            "memory follows the job: {used}"
        );
        // Energy only grows.
        assert!(busy.windows(2).all(|w| {
            w[1].get(Metric::EnergyMj).unwrap() > w[0].get(Metric::EnergyMj).unwrap()
        }));
    }

    #[test]
    fn a_cooling_failure_under_load_throttles() {
        let dt = Duration::from_secs(1);
        let mut sim = Simulator::with_models(&[CATALOG[4]], 3, dt);
        sim.set_fault_rate(0.0);
        sim.set_load(0, 100.0, 20_000);
        let (before, _) = run(&mut sim, 200);
        let reasons = |s: &GpuSample| s.get(Metric::ThrottleReasons).unwrap() as u64;
        assert_eq!(reasons(before.last().unwrap()) & throttle::HW_SLOWDOWN, 0);
        sim.cooling_failure(0, Duration::from_secs(400));
        let (hot, _) = run(&mut sim, 300);
        let last = hot.last().unwrap();
        assert!(last.get(Metric::Temperature).unwrap() >= CATALOG[4].slowdown_c);
        assert_ne!(reasons(last) & throttle::HW_SLOWDOWN, 0);
        assert!(
            last.get(Metric::SmClockMhz).unwrap()
                < before.last().unwrap().get(Metric::SmClockMhz).unwrap()
        );
    }

    #[test]
    fn injected_faults_and_disconnects() {
        let dt = Duration::from_secs(1);
        let mut sim = Simulator::new(4, 7, dt);
        sim.set_fault_rate(0.0);
        sim.inject_xid(2, 48);
        sim.disconnect(1, Duration::from_secs(3));
        let (samples, events) = run(&mut sim, 5);
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].gpu, events[0].xid), (2, 48));
        // GPU 1 is missing for 3 steps, then back.
        let of = |g: usize| samples.iter().filter(|s| s.gpu == g).count();
        assert_eq!(of(0), 5);
        assert_eq!(of(1), 2);
        // A double-bit ECC error shows in the counters.
        let last2 = samples.iter().rfind(|s| s.gpu == 2).unwrap();
        if CATALOG[(7 % CATALOG.len() as u64) as usize].datacenter {
            assert_eq!(last2.get(Metric::EccDbeTotal), Some(1.0));
        }
    }
}
