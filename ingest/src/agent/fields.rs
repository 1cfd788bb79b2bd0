//! What the agent writes: the `gpu` row's metrics, the inventory, fault events, and their
//! line-protocol encoding.
//!
//! | field | unit | type | DCGM field (dcgm-exporter metric) | NVML call |
//! |---|---|---|---|---|
//! | `utilization` | % | float | `DCGM_FI_DEV_GPU_UTIL` | `nvmlDeviceGetUtilizationRates().gpu` |
//! | `memory_utilization` | % | float | `DCGM_FI_DEV_MEM_COPY_UTIL` | `nvmlDeviceGetUtilizationRates().memory` |
//! | `memory_used_mib` | MiB | integer | `DCGM_FI_DEV_FB_USED` | `nvmlDeviceGetMemoryInfo().used` / 2^20 |
//! | `memory_free_mib` | MiB | integer | `DCGM_FI_DEV_FB_FREE` | `nvmlDeviceGetMemoryInfo().free` / 2^20 |
//! | `temperature` | °C | float | `DCGM_FI_DEV_GPU_TEMP` | `nvmlDeviceGetTemperature(GPU)` |
//! | `memory_temperature` | °C | float | `DCGM_FI_DEV_MEMORY_TEMP` | `nvmlDeviceGetFieldValues(NVML_FI_DEV_MEMORY_TEMP)` |
//! | `power_watts` | W | float | `DCGM_FI_DEV_POWER_USAGE` | `nvmlDeviceGetPowerUsage()` (mW) / 1000 |
//! | `energy_mj` | mJ since driver load | integer | `DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION` | `nvmlDeviceGetTotalEnergyConsumption()` |
//! | `sm_clock_mhz` | MHz | integer | `DCGM_FI_DEV_SM_CLOCK` | `nvmlDeviceGetClockInfo(SM)` |
//! | `memory_clock_mhz` | MHz | integer | `DCGM_FI_DEV_MEM_CLOCK` | `nvmlDeviceGetClockInfo(MEM)` |
//! | `pcie_tx_bytes_per_s` | B/s | integer | `DCGM_FI_PROF_PCIE_TX_BYTES` | `nvmlDeviceGetPcieThroughput(TX)` (KiB/s) × 1024 |
//! | `pcie_rx_bytes_per_s` | B/s | integer | `DCGM_FI_PROF_PCIE_RX_BYTES` | `nvmlDeviceGetPcieThroughput(RX)` (KiB/s) × 1024 |
//! | `pcie_replay_total` | count | integer | `DCGM_FI_DEV_PCIE_REPLAY_COUNTER` | `nvmlDeviceGetPcieReplayCounter()` |
//! | `ecc_sbe_total` | count (volatile) | integer | `DCGM_FI_DEV_ECC_SBE_VOL_TOTAL` | `nvmlDeviceGetTotalEccErrors(CORRECTED, VOLATILE)` |
//! | `ecc_dbe_total` | count (volatile) | integer | `DCGM_FI_DEV_ECC_DBE_VOL_TOTAL` | `nvmlDeviceGetTotalEccErrors(UNCORRECTED, VOLATILE)` |
//! | `retired_pages_sbe` | pages | integer | `DCGM_FI_DEV_RETIRED_SBE` | `nvmlDeviceGetRetiredPages(MULTIPLE_SINGLE_BIT)` |
//! | `retired_pages_dbe` | pages | integer | `DCGM_FI_DEV_RETIRED_DBE` | `nvmlDeviceGetRetiredPages(DOUBLE_BIT)` |
//! | `remapped_rows_correctable` | rows | integer | `DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS` | `nvmlDeviceGetRemappedRows().corrRows` |
//! | `remapped_rows_uncorrectable` | rows | integer | `DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS` | `nvmlDeviceGetRemappedRows().uncRows` |
//! | `row_remap_failure` | 0/1 | integer | `DCGM_FI_DEV_ROW_REMAP_FAILURE` | `nvmlDeviceGetRemappedRows().isFailureOccurred` |
//! | `throttle_reasons` | bitmask (`nvmlClocksEventReasons`) | integer | `DCGM_FI_DEV_CLOCK_THROTTLE_REASONS` | `nvmlDeviceGetCurrentClocksEventReasons()` |
//! | `compute_processes` | count | integer | — | `nvmlDeviceGetComputeRunningProcesses()` length |
//! | `gr_engine_active` | ratio 0–1 | float | `DCGM_FI_PROF_GR_ENGINE_ACTIVE` | GPM `GRAPHICS_UTIL` / 100 |
//! | `sm_active` | ratio 0–1 | float | `DCGM_FI_PROF_SM_ACTIVE` | GPM `SM_UTIL` / 100 |
//! | `sm_occupancy` | ratio 0–1 | float | `DCGM_FI_PROF_SM_OCCUPANCY` | GPM `SM_OCCUPANCY` / 100 |
//! | `tensor_active` | ratio 0–1 | float | `DCGM_FI_PROF_PIPE_TENSOR_ACTIVE` | GPM `ANY_TENSOR_UTIL` / 100 |
//! | `dram_active` | ratio 0–1 | float | `DCGM_FI_PROF_DRAM_ACTIVE` | GPM `DRAM_BW_UTIL` / 100 |
//!
//! The last five are the **activity** fields: how busy the GPU's units were over the
//! interval, where `utilization` only says that some kernel ran. NVML measures them through
//! GPM (GPU performance monitoring: `nvmlGpmSampleGet` twice, `nvmlGpmMetricsGet` on the
//! pair), on Hopper and newer; dcgm-exporter's profiling module has them on data-centre GPUs
//! from Volta on (`--scrape`). Consumer GPUs (GeForce) have neither: their rows carry no
//! activity field at all, never a zero.
//! Stable attributes copied onto every `gpu` row (from the inventory): `memory_total_mib`
//! (`DCGM_FI_DEV_FB_TOTAL`, `nvmlDeviceGetMemoryInfo().total`), `power_limit_watts`
//! (`DCGM_FI_DEV_POWER_MGMT_LIMIT`, `nvmlDeviceGetEnforcedPowerLimit()`), `pci_bus_id`,
//! `driver_version`. Tags: `gpu_uuid`, `gpu_index`, `model`, `region` (optional), plus
//! `supplier` and `worker`, which the server stamps.
//!
//! XID errors (`nvmlEventTypeXidCriticalError`, `DCGM_FI_DEV_XID_ERRORS`) are rows of
//! `gpu_fault` (append-only): tags as above plus `kind=xid`, fields `code`, `severity`.
//!
//! The DCGM column is kept once, in [`rigwatch_common::dcgm::FIELDS`] (the PromQL source
//! serves each field under that name too); a new field with a DCGM name gets its row there.
//!
//! These names and types are the whole schema of what an agent may write; the server
//! refuses anything else (see [`schema`](super::schema)).

use std::fmt::Write as _;

use rigwatch_storage::batch::FieldType;
use serde::{Deserialize, Serialize};

/// Whether a metric is stored as a float (gauges) or an integer (counters, MiB, MHz, masks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Float,
    Int,
}

/// One metric of the `gpu` row: its field name, unit and sources.
#[derive(Debug, Clone, Copy)]
pub struct MetricSpec {
    pub name: &'static str,
    pub unit: &'static str,
    pub kind: Kind,
    /// The DCGM field (also the dcgm-exporter metric name); empty if DCGM has none. From
    /// the one table of DCGM names, [`rigwatch_common::dcgm::FIELDS`].
    pub dcgm: &'static str,
    pub nvml: &'static str,
}

macro_rules! metrics {
    ($($variant:ident => $name:literal, $unit:literal, $kind:ident, $nvml:literal;)*) => {
        /// The metrics of a `gpu` row, in field order.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(usize)]
        pub enum Metric { $($variant),* }

        /// Every metric's specification, indexed by `Metric as usize`.
        pub const METRICS: &[MetricSpec] = &[
            $(MetricSpec {
                name: $name,
                unit: $unit,
                kind: Kind::$kind,
                dcgm: rigwatch_common::dcgm::metric_of($name),
                nvml: $nvml,
            }),*
        ];
    };
}

metrics! {
    Utilization => "utilization", "%", Float, "nvmlDeviceGetUtilizationRates.gpu";
    MemoryUtilization => "memory_utilization", "%", Float, "nvmlDeviceGetUtilizationRates.memory";
    MemoryUsedMib => "memory_used_mib", "MiB", Int, "nvmlDeviceGetMemoryInfo.used";
    MemoryFreeMib => "memory_free_mib", "MiB", Int, "nvmlDeviceGetMemoryInfo.free";
    Temperature => "temperature", "C", Float, "nvmlDeviceGetTemperature(GPU)";
    MemoryTemperature => "memory_temperature", "C", Float, "nvmlDeviceGetFieldValues(NVML_FI_DEV_MEMORY_TEMP)";
    PowerWatts => "power_watts", "W", Float, "nvmlDeviceGetPowerUsage";
    EnergyMj => "energy_mj", "mJ", Int, "nvmlDeviceGetTotalEnergyConsumption";
    SmClockMhz => "sm_clock_mhz", "MHz", Int, "nvmlDeviceGetClockInfo(SM)";
    MemoryClockMhz => "memory_clock_mhz", "MHz", Int, "nvmlDeviceGetClockInfo(MEM)";
    PcieTxBytesPerS => "pcie_tx_bytes_per_s", "B/s", Int, "nvmlDeviceGetPcieThroughput(TX)";
    PcieRxBytesPerS => "pcie_rx_bytes_per_s", "B/s", Int, "nvmlDeviceGetPcieThroughput(RX)";
    PcieReplayTotal => "pcie_replay_total", "count", Int, "nvmlDeviceGetPcieReplayCounter";
    EccSbeTotal => "ecc_sbe_total", "count", Int, "nvmlDeviceGetTotalEccErrors(CORRECTED,VOLATILE)";
    EccDbeTotal => "ecc_dbe_total", "count", Int, "nvmlDeviceGetTotalEccErrors(UNCORRECTED,VOLATILE)";
    RetiredPagesSbe => "retired_pages_sbe", "pages", Int, "nvmlDeviceGetRetiredPages(MULTIPLE_SINGLE_BIT)";
    RetiredPagesDbe => "retired_pages_dbe", "pages", Int, "nvmlDeviceGetRetiredPages(DOUBLE_BIT)";
    RemappedRowsCorrectable => "remapped_rows_correctable", "rows", Int, "nvmlDeviceGetRemappedRows.corrRows";
    RemappedRowsUncorrectable => "remapped_rows_uncorrectable", "rows", Int, "nvmlDeviceGetRemappedRows.uncRows";
    RowRemapFailure => "row_remap_failure", "bool", Int, "nvmlDeviceGetRemappedRows.isFailureOccurred";
    ThrottleReasons => "throttle_reasons", "bitmask", Int, "nvmlDeviceGetCurrentClocksEventReasons";
    ComputeProcesses => "compute_processes", "count", Int, "nvmlDeviceGetComputeRunningProcesses";
    GrEngineActive => "gr_engine_active", "ratio", Float, "nvmlGpmMetricsGet(GRAPHICS_UTIL)";
    SmActive => "sm_active", "ratio", Float, "nvmlGpmMetricsGet(SM_UTIL)";
    SmOccupancy => "sm_occupancy", "ratio", Float, "nvmlGpmMetricsGet(SM_OCCUPANCY)";
    TensorActive => "tensor_active", "ratio", Float, "nvmlGpmMetricsGet(ANY_TENSOR_UTIL)";
    DramActive => "dram_active", "ratio", Float, "nvmlGpmMetricsGet(DRAM_BW_UTIL)";
}

/// Number of metrics in a `gpu` row.
pub const METRIC_COUNT: usize = METRICS.len();

impl Metric {
    /// Every metric, in field order.
    pub const ALL: [Metric; METRIC_COUNT] = METRIC_BY_INDEX;

    pub fn spec(self) -> &'static MetricSpec {
        &METRICS[self as usize]
    }

    /// The metric fed by a DCGM field name (`DCGM_FI_DEV_GPU_UTIL`, ...).
    /// Every name DCGM has for a field is accepted (dcgm-exporter 3.x renamed the throttle
    /// field).
    pub fn from_dcgm(name: &str) -> Option<Metric> {
        let field = rigwatch_common::dcgm::field_of(name)?;
        Metric::ALL.into_iter().find(|m| m.spec().name == field)
    }
}

const METRIC_BY_INDEX: [Metric; METRIC_COUNT] = [
    Metric::Utilization,
    Metric::MemoryUtilization,
    Metric::MemoryUsedMib,
    Metric::MemoryFreeMib,
    Metric::Temperature,
    Metric::MemoryTemperature,
    Metric::PowerWatts,
    Metric::EnergyMj,
    Metric::SmClockMhz,
    Metric::MemoryClockMhz,
    Metric::PcieTxBytesPerS,
    Metric::PcieRxBytesPerS,
    Metric::PcieReplayTotal,
    Metric::EccSbeTotal,
    Metric::EccDbeTotal,
    Metric::RetiredPagesSbe,
    Metric::RetiredPagesDbe,
    Metric::RemappedRowsCorrectable,
    Metric::RemappedRowsUncorrectable,
    Metric::RowRemapFailure,
    Metric::ThrottleReasons,
    Metric::ComputeProcesses,
    Metric::GrEngineActive,
    Metric::SmActive,
    Metric::SmOccupancy,
    Metric::TensorActive,
    Metric::DramActive,
];

impl Metric {
    /// The activity fields (see the module's table), measured only where the GPU can.
    pub const ACTIVITY: [Metric; 5] = [
        Metric::GrEngineActive,
        Metric::SmActive,
        Metric::SmOccupancy,
        Metric::TensorActive,
        Metric::DramActive,
    ];
}

/// A GPU as found at registration: what does not change while the agent runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuInfo {
    /// NVML index on this worker (`nvidia-smi -i`).
    pub index: u32,
    pub uuid: String,
    /// Product name as NVML reports it, e.g. `NVIDIA H100 80GB HBM3`.
    pub model: String,
    pub memory_total_mib: u64,
    #[serde(default)]
    pub pci_bus_id: String,
    #[serde(default)]
    pub driver_version: String,
    #[serde(default)]
    pub cuda_version: String,
    /// Enforced power limit in watts, if readable.
    #[serde(default)]
    pub power_limit_watts: Option<f64>,
    /// MIG mode (current), `None` where the GPU has no MIG.
    #[serde(default)]
    pub mig_enabled: Option<bool>,
}

/// One sample of one GPU: a value per supported metric.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuSample {
    /// Index into the collector's inventory (not necessarily the NVML index).
    pub gpu: usize,
    pub time_ns: i64,
    values: [f64; METRIC_COUNT],
    /// Bit `i` set: metric `i` has a value.
    present: u32,
}

const _: () = assert!(METRIC_COUNT <= 32);

impl GpuSample {
    pub fn new(gpu: usize, time_ns: i64) -> Self {
        GpuSample {
            gpu,
            time_ns,
            values: [0.0; METRIC_COUNT],
            present: 0,
        }
    }

    pub fn set(&mut self, m: Metric, value: f64) {
        if value.is_finite() {
            self.values[m as usize] = value;
            self.present |= 1 << m as usize;
        }
    }

    pub fn get(&self, m: Metric) -> Option<f64> {
        (self.present & (1 << m as usize) != 0).then_some(self.values[m as usize])
    }

    pub fn is_empty(&self) -> bool {
        self.present == 0
    }

    /// The metrics with a value, in field order.
    pub fn iter(&self) -> impl Iterator<Item = (Metric, f64)> + '_ {
        Metric::ALL
            .into_iter()
            .filter_map(|m| self.get(m).map(|v| (m, v)))
    }
}

/// A fault event on one GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuEvent {
    /// Index into the collector's inventory.
    pub gpu: usize,
    pub time_ns: i64,
    /// The XID code.
    pub xid: u32,
}

/// How serious an XID is, for health and allocation.
pub fn xid_severity(xid: u32) -> &'static str {
    match xid {
        // Application errors: a job's fault, the GPU is fine (13 graphics engine exception,
        // 31 MMU fault, 43 GPU stopped processing, 45 preemptive cleanup).
        13 | 31 | 43 | 45 => "application",
        // Hardware: ECC DBE (48), ECC page retirement / row remap failure (64), fell off the
        // bus (79), uncontained ECC (95), 74 NVLink, 94 contained ECC, 119/120 GSP.
        48 | 64 | 74 | 79 | 94 | 95 | 119 | 120 => "hardware",
        // Informational: 63 ECC page retirement / row remapping recorded, 92 high SBE rate.
        63 | 92 => "informational",
        _ => "unknown",
    }
}

/// Escapes a tag key/value or measurement for line protocol (`,`, `=`, space).
pub fn push_escaped_tag(out: &mut String, s: &str) {
    for c in s.chars() {
        if matches!(c, ',' | '=' | ' ' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Escapes a string field value (without the quotes).
fn push_escaped_str(out: &mut String, s: &str) {
    for c in s.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// The precomputed line-protocol pieces of one GPU: its tag set and stable attributes.
#[derive(Debug, Clone)]
pub struct GpuLine {
    /// `,gpu_uuid=...,gpu_index=...,model=...[,region=...]`
    tags: String,
    /// `memory_total_mib=...i,...` (never empty: `memory_total_mib` is always there).
    attrs: String,
}

impl GpuLine {
    /// The tags of `gpu` rows (besides `supplier` and `worker`, stamped by the server), in
    /// the order written.
    pub const TAGS: [&'static str; 4] = ["gpu_uuid", "gpu_index", "model", "region"];

    /// The stable attributes on every `gpu` row, in the order written, with their types.
    pub const ATTRIBUTES: [(&'static str, FieldType); 4] = [
        ("memory_total_mib", FieldType::I64),
        ("power_limit_watts", FieldType::F64),
        ("pci_bus_id", FieldType::Str),
        ("driver_version", FieldType::Str),
    ];

    pub fn new(info: &GpuInfo, region: Option<&str>) -> Self {
        let [uuid_tag, index_tag, model_tag, region_tag] = Self::TAGS;
        let [(total, _), (limit, _), (bus, _), (driver, _)] = Self::ATTRIBUTES;
        let mut tags = String::new();
        for (k, v) in [
            (uuid_tag, info.uuid.as_str()),
            (index_tag, &info.index.to_string()),
            (model_tag, info.model.as_str()),
        ]
        .into_iter()
        .chain(region.map(|r| (region_tag, r)))
        {
            if v.is_empty() {
                continue;
            }
            tags.push(',');
            tags.push_str(k);
            tags.push('=');
            push_escaped_tag(&mut tags, v);
        }
        let mut attrs = format!("{total}={}i", info.memory_total_mib);
        if let Some(p) = info.power_limit_watts {
            let _ = write!(attrs, ",{limit}={p}");
        }
        for (k, v) in [(bus, &info.pci_bus_id), (driver, &info.driver_version)] {
            if !v.is_empty() {
                let _ = write!(attrs, ",{k}=\"");
                push_escaped_str(&mut attrs, v);
                attrs.push('"');
            }
        }
        GpuLine { tags, attrs }
    }

    /// Appends the `gpu` row of `s`.
    pub fn push_sample(&self, out: &mut String, s: &GpuSample) {
        out.push_str("gpu");
        out.push_str(&self.tags);
        out.push(' ');
        out.push_str(&self.attrs);
        for (m, v) in s.iter() {
            let spec = m.spec();
            let _ = match spec.kind {
                Kind::Float => write!(out, ",{}={}", spec.name, v),
                Kind::Int => write!(out, ",{}={}i", spec.name, v.round() as i64),
            };
        }
        let _ = writeln!(out, " {}", s.time_ns);
    }

    /// Appends the `gpu_fault` row of `e`.
    pub fn push_event(&self, out: &mut String, e: &GpuEvent) {
        let _ = writeln!(
            out,
            "gpu_fault{},kind=xid code={}i,severity=\"{}\" {}",
            self.tags,
            e.xid,
            xid_severity(e.xid),
            e.time_ns
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_table_is_dense_and_named_uniquely() {
        for (i, m) in Metric::ALL.iter().enumerate() {
            assert_eq!(*m as usize, i);
        }
        let mut names: Vec<_> = METRICS.iter().map(|m| m.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), METRIC_COUNT);
        assert_eq!(
            Metric::from_dcgm("DCGM_FI_DEV_FB_USED"),
            Some(Metric::MemoryUsedMib)
        );
        assert_eq!(Metric::from_dcgm(""), None);
        assert_eq!(
            Metric::from_dcgm("DCGM_FI_DEV_CLOCKS_EVENT_REASONS"),
            Some(Metric::ThrottleReasons)
        );
        assert_eq!(Metric::Temperature.spec().dcgm, "DCGM_FI_DEV_GPU_TEMP");
        assert_eq!(Metric::ComputeProcesses.spec().dcgm, "");
        // The activity metrics are the one list of activity fields DCGM's table names.
        assert_eq!(
            Metric::ACTIVITY.map(|m| m.spec().name),
            rigwatch_common::dcgm::ACTIVITY_FIELDS
        );
        assert_eq!(
            Metric::from_dcgm("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"),
            Some(Metric::TensorActive)
        );
        // Every DCGM name is of a field the agent writes (a metric or an attribute).
        for d in rigwatch_common::dcgm::FIELDS {
            assert!(
                METRICS.iter().any(|m| m.name == d.field)
                    || GpuLine::ATTRIBUTES.iter().any(|(a, _)| *a == d.field),
                "{} names no field of `gpu`",
                d.metric
            );
        }
    }

    #[test]
    fn sample_line_omits_unset_metrics_and_escapes_tags() {
        let info = GpuInfo {
            index: 3,
            uuid: "GPU-abc".into(),
            model: "NVIDIA H100 80GB HBM3".into(),
            memory_total_mib: 81559,
            pci_bus_id: "00000000:1B:00.0".into(),
            driver_version: "550.54.15".into(),
            cuda_version: "12.4".into(),
            power_limit_watts: Some(700.0),
            mig_enabled: Some(false),
        };
        let line = GpuLine::new(&info, Some("eu-west"));
        let mut s = GpuSample::new(0, 42);
        s.set(Metric::Utilization, 97.5);
        s.set(Metric::MemoryUsedMib, 1024.0);
        s.set(Metric::Temperature, f64::NAN); // not finite: omitted
        let mut out = String::new();
        line.push_sample(&mut out, &s);
        assert_eq!(
            out,
            "gpu,gpu_uuid=GPU-abc,gpu_index=3,model=NVIDIA\\ H100\\ 80GB\\ HBM3,region=eu-west \
memory_total_mib=81559i,power_limit_watts=700,pci_bus_id=\"00000000:1B:00.0\",\
driver_version=\"550.54.15\",utilization=97.5,memory_used_mib=1024i 42\n"
        );
    }
}
