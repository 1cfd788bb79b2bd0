//! The real collector: NVIDIA's management library through `nvml-wrapper`, loaded at run
//! time (`libnvidia-ml.so.1`), so the binary builds and starts on machines without a driver.
//!
//! All calls run on the agent's collector thread (see [`super::runner`]), never on a tokio
//! worker. The field ↔ DCGM ↔ NVML ↔ unit table is in [`super::fields`]. A metric a GPU does
//! not support (`NVML_ERROR_NOT_SUPPORTED`, or any other error for that call) is omitted
//! from its row, never written as zero; the first failure of each metric on each GPU is
//! logged once. Retired pages and remapped rows change rarely and cost more (the library
//! allocates for them), so they are read every 30th sample and repeated in between.
//! XID errors come from an NVML event set registered for `nvmlEventTypeXidCriticalError`,
//! polled without blocking at every sample.
//!
//! The activity fields (SM active, SM occupancy, tensor active, DRAM active, graphics engine
//! active) come from GPM where the GPU has it (`nvmlGpmQueryDeviceSupport`: Hopper and
//! newer): each sample takes a GPM sample and computes the metrics over the interval since
//! the previous one. A GPU without GPM, and every GPU's first sample, has no activity field.

use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{
    Clock, EccCounter, MemoryError, PcieUtilCounter, RetirementCause, TemperatureSensor,
};
use nvml_wrapper::enums::device::SampleValue;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::enums::gpm::GpmMetricId;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::gpm::{GpmSample, gpm_metrics_get};
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::sys_exports::field_id::{
    NVML_FI_DEV_MEMORY_TEMP, NVML_FI_DEV_REMAPPED_COR, NVML_FI_DEV_REMAPPED_FAILURE,
    NVML_FI_DEV_REMAPPED_UNC,
};
use nvml_wrapper::{Device, EventSet, Nvml};
use tracing::{info, warn};

use super::fields::{GpuEvent, GpuInfo, GpuSample, Metric};
use super::{CollectError, Collector};

/// The library NVML is loaded from on Linux.
pub const LIBRARY: &str = "libnvidia-ml.so.1";

/// How often (in samples) the slow counters are re-read.
const SLOW_EVERY: u64 = 30;

/// The GPM metric behind each activity field, in [`Metric::ACTIVITY`] order; GPM reports
/// percentages, the fields are ratios.
const GPM_METRICS: [GpmMetricId; 5] = [
    GpmMetricId::GraphicsUtil,
    GpmMetricId::SmUtil,
    GpmMetricId::SmOccupancy,
    GpmMetricId::AnyTensorUtil,
    GpmMetricId::DramBwUtil,
];

/// A GPU's GPM state.
enum Gpm {
    /// Not asked yet.
    Unprobed,
    /// No GPM on this GPU (or it failed): no activity fields.
    Unsupported,
    /// Supported; the previous GPM sample, to pair with the next.
    Ready(Option<GpmSample<'static>>),
}

/// A collector over every NVIDIA GPU of this machine.
pub struct NvmlCollector {
    nvml: &'static Nvml,
    count: u32,
    events: Option<EventSet<'static>>,
    /// Per GPU: metrics whose failure was already logged (bit per metric).
    warned: Vec<u32>,
    /// Per GPU: the slow counters (retired pages SBE/DBE, remapped rows C/U/failure).
    slow: Vec<[Option<f64>; 5]>,
    /// Per GPU: GPM state for the activity fields.
    gpm: Vec<Gpm>,
    ticks: u64,
}

impl std::fmt::Debug for NvmlCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlCollector")
            .field("gpus", &self.count)
            .finish()
    }
}

impl NvmlCollector {
    /// Loads and initialises NVML. The error says which library was looked for and why it
    /// could not be used.
    pub fn open() -> Result<Self, CollectError> {
        let nvml = Nvml::init().map_err(|e| CollectError::NvmlUnavailable {
            library: LIBRARY.to_string(),
            reason: describe(&e),
        })?;
        // One NVML handle for the life of the process: devices and event sets borrow it.
        let nvml: &'static Nvml = Box::leak(Box::new(nvml));
        let count = nvml.device_count().map_err(|e| CollectError::Nvml {
            call: "nvmlDeviceGetCount",
            index: 0,
            reason: describe(&e),
        })?;
        let mut events = nvml.create_event_set().ok();
        for i in 0..count {
            let (Some(set), Ok(dev)) = (events.take(), nvml.device_by_index(i)) else {
                continue;
            };
            match dev.register_events(EventTypes::CRITICAL_XID_ERROR, set) {
                Ok(set) => events = Some(set),
                Err(e) => {
                    warn!(gpu = i, error = %e.error, "cannot watch XID errors on this GPU");
                    events = nvml.create_event_set().ok();
                }
            }
        }
        info!(
            gpus = count,
            xid_events = events.is_some(),
            "NVML initialised"
        );
        Ok(NvmlCollector {
            nvml,
            count,
            events,
            warned: vec![0; count as usize],
            slow: vec![[None; 5]; count as usize],
            gpm: (0..count).map(|_| Gpm::Unprobed).collect(),
            ticks: 0,
        })
    }

    fn device(&self, index: u32) -> Result<Device<'static>, CollectError> {
        self.nvml
            .device_by_index(index)
            .map_err(|e| CollectError::Nvml {
                call: "nvmlDeviceGetHandleByIndex",
                index,
                reason: describe(&e),
            })
    }

    /// Records `value` for `m`, or logs (once per GPU and metric) why it is missing.
    fn put<T: Into<f64>>(&mut self, s: &mut GpuSample, m: Metric, value: Result<T, NvmlError>) {
        match value {
            Ok(v) => s.set(m, v.into()),
            Err(NvmlError::NotSupported) => {}
            Err(e) => {
                let bit = 1u32 << m as usize;
                if let Some(w) = self.warned.get_mut(s.gpu)
                    && *w & bit == 0
                {
                    *w |= bit;
                    warn!(gpu = s.gpu, metric = m.spec().name, error = %e, "metric unavailable; omitting it");
                }
            }
        }
    }
}

impl NvmlCollector {
    /// Sets the activity fields of `s` from GPM, where the GPU has it.
    fn activity(&mut self, d: &Device<'static>, s: &mut GpuSample) {
        let Some(state) = self.gpm.get_mut(s.gpu) else {
            return;
        };
        if matches!(state, Gpm::Unprobed) {
            let supported = d.gpm_support().unwrap_or(false);
            info!(
                gpu = s.gpu,
                gpm = supported,
                "activity fields (SM, tensor, DRAM active) {}",
                if supported {
                    "recorded through GPM"
                } else {
                    "not available on this GPU"
                }
            );
            *state = if supported {
                Gpm::Ready(None)
            } else {
                Gpm::Unsupported
            };
        }
        let Gpm::Ready(prev) = state else {
            return;
        };
        let now = match d.gpm_sample() {
            Ok(now) => now,
            Err(e) => {
                *state = Gpm::Unsupported;
                self.put::<f64>(s, Metric::SmActive, Err(e));
                return;
            }
        };
        let Some(before) = prev.take() else {
            *prev = Some(now);
            return;
        };
        let result = gpm_metrics_get(self.nvml, &before, &now, &GPM_METRICS);
        *prev = Some(now);
        match result {
            Ok(values) => {
                for (m, v) in Metric::ACTIVITY.into_iter().zip(values) {
                    if let Ok(v) = v {
                        s.set(m, (v.value / 100.0).clamp(0.0, 1.0));
                    }
                }
            }
            Err(e) => self.put::<f64>(s, Metric::SmActive, Err(e)),
        }
    }
}

fn describe(e: &NvmlError) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        // Some errors repeat their source in their own message: say each thing once.
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        src = inner.source();
    }
    s
}

fn sample_value(v: &SampleValue) -> f64 {
    match *v {
        SampleValue::F64(x) => x,
        SampleValue::U32(x) => x as f64,
        SampleValue::U64(x) => x as f64,
        SampleValue::I64(x) => x as f64,
    }
}

impl Collector for NvmlCollector {
    fn inventory(&mut self) -> Result<Vec<GpuInfo>, CollectError> {
        let driver = self.nvml.sys_driver_version().unwrap_or_default();
        let cuda = self
            .nvml
            .sys_cuda_driver_version()
            .map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10))
            .unwrap_or_default();
        (0..self.count)
            .map(|i| {
                let d = self.device(i)?;
                let uuid = d.uuid().map_err(|e| CollectError::Nvml {
                    call: "nvmlDeviceGetUUID",
                    index: i,
                    reason: describe(&e),
                })?;
                Ok(GpuInfo {
                    index: i,
                    uuid,
                    model: d.name().unwrap_or_else(|_| "unknown".into()),
                    memory_total_mib: d.memory_info().map_or(0, |m| m.total >> 20),
                    pci_bus_id: d.pci_info().map(|p| p.bus_id).unwrap_or_default(),
                    driver_version: driver.clone(),
                    cuda_version: cuda.clone(),
                    power_limit_watts: d.enforced_power_limit().ok().map(|mw| mw as f64 / 1000.0),
                    mig_enabled: d.mig_mode().ok().map(|m| m.current == 1),
                })
            })
            .collect()
    }

    fn sample(&mut self, now_ns: i64, out: &mut Vec<GpuSample>) -> Result<(), CollectError> {
        let slow_tick = self.ticks.is_multiple_of(SLOW_EVERY);
        self.ticks += 1;
        for i in 0..self.count {
            let d = match self.device(i) {
                Ok(d) => d,
                // Off the bus: no row (a heartbeat still reports `gpus_reporting`).
                Err(_) => continue,
            };
            let gpu = i as usize;
            let mut s = GpuSample::new(gpu, now_ns);
            match d.utilization_rates() {
                Ok(u) => {
                    s.set(Metric::Utilization, u.gpu as f64);
                    s.set(Metric::MemoryUtilization, u.memory as f64);
                }
                Err(NvmlError::GpuLost) => continue,
                Err(e) => self.put::<f64>(&mut s, Metric::Utilization, Err(e)),
            }
            match d.memory_info() {
                Ok(m) => {
                    s.set(Metric::MemoryUsedMib, (m.used >> 20) as f64);
                    s.set(Metric::MemoryFreeMib, (m.free >> 20) as f64);
                }
                Err(e) => self.put::<f64>(&mut s, Metric::MemoryUsedMib, Err(e)),
            }
            let v = d.temperature(TemperatureSensor::Gpu);
            self.put(&mut s, Metric::Temperature, v);
            let v = d.power_usage().map(|mw| mw as f64 / 1000.0);
            self.put(&mut s, Metric::PowerWatts, v);
            let v = d.total_energy_consumption().map(|mj| mj as f64);
            self.put(&mut s, Metric::EnergyMj, v);
            let v = d.clock_info(Clock::SM);
            self.put(&mut s, Metric::SmClockMhz, v);
            let v = d.clock_info(Clock::Memory);
            self.put(&mut s, Metric::MemoryClockMhz, v);
            let v = d
                .pcie_throughput(PcieUtilCounter::Send)
                .map(|kb| kb as f64 * 1024.0);
            self.put(&mut s, Metric::PcieTxBytesPerS, v);
            let v = d
                .pcie_throughput(PcieUtilCounter::Receive)
                .map(|kb| kb as f64 * 1024.0);
            self.put(&mut s, Metric::PcieRxBytesPerS, v);
            let v = d.pcie_replay_counter();
            self.put(&mut s, Metric::PcieReplayTotal, v);
            let v = d
                .total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile)
                .map(|c| c as f64);
            self.put(&mut s, Metric::EccSbeTotal, v);
            let v = d
                .total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile)
                .map(|c| c as f64);
            self.put(&mut s, Metric::EccDbeTotal, v);
            let v = d.current_throttle_reasons().map(|r| r.bits() as f64);
            self.put(&mut s, Metric::ThrottleReasons, v);
            let v = d.running_compute_processes_count();
            self.put(&mut s, Metric::ComputeProcesses, v);
            self.activity(&d, &mut s);
            // Memory temperature (HBM GPUs) only exists as a field value.
            if let Ok(values) = d.field_values_for(&[FieldId(NVML_FI_DEV_MEMORY_TEMP)])
                && let Some(Ok(fv)) = values.first()
                && let Ok(v) = &fv.value
            {
                let t = sample_value(v);
                if t > 0.0 {
                    s.set(Metric::MemoryTemperature, t);
                }
            }
            if slow_tick {
                let mut slow = [None; 5];
                slow[0] = d
                    .retired_pages(RetirementCause::MultipleSingleBitEccErrors)
                    .ok()
                    .map(|p| p.len() as f64);
                slow[1] = d
                    .retired_pages(RetirementCause::DoubleBitEccError)
                    .ok()
                    .map(|p| p.len() as f64);
                if let Ok(values) = d.field_values_for(&[
                    FieldId(NVML_FI_DEV_REMAPPED_COR),
                    FieldId(NVML_FI_DEV_REMAPPED_UNC),
                    FieldId(NVML_FI_DEV_REMAPPED_FAILURE),
                ]) {
                    for (k, v) in values.iter().enumerate().take(3) {
                        slow[2 + k] = v
                            .as_ref()
                            .ok()
                            .and_then(|fv| fv.value.as_ref().ok())
                            .map(sample_value);
                    }
                }
                self.slow[gpu] = slow;
            }
            let slow = self.slow[gpu];
            for (m, v) in [
                Metric::RetiredPagesSbe,
                Metric::RetiredPagesDbe,
                Metric::RemappedRowsCorrectable,
                Metric::RemappedRowsUncorrectable,
                Metric::RowRemapFailure,
            ]
            .into_iter()
            .zip(slow)
            {
                if let Some(v) = v {
                    s.set(m, v);
                }
            }
            out.push(s);
        }
        Ok(())
    }

    fn events(&mut self, now_ns: i64, out: &mut Vec<GpuEvent>) {
        let Some(set) = &self.events else {
            return;
        };
        // Drain what is pending without blocking the sampling loop.
        for _ in 0..1000 {
            match set.wait(0) {
                Ok(ev) => {
                    let Some(XidError::Value(code)) = ev.event_data else {
                        continue;
                    };
                    let gpu = ev.device.index().unwrap_or(u32::MAX) as usize;
                    if gpu < self.count as usize {
                        out.push(GpuEvent {
                            gpu,
                            time_ns: now_ns,
                            xid: code as u32,
                        });
                    }
                }
                Err(_) => break,
            }
        }
    }
}
