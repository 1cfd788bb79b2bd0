//! The one table between the agent's `gpu` fields and NVIDIA's names for them.
//!
//! dcgm-exporter publishes each DCGM field as a Prometheus metric of the same name
//! (`DCGM_FI_DEV_GPU_TEMP`), with its own label names (`gpu`, `UUID`, `modelName`, ...).
//! The agent stores the same readings as fields of table `gpu` (`temperature`) with
//! rigwatch's tags (`gpu_index`, `gpu_uuid`, `model`, ...). This module says which is
//! which, once:
//!
//! - the agent's dcgm-exporter scraper reads [`FIELDS`] to know which field a scraped
//!   metric feeds ([`field_of`]) and names each field's DCGM source ([`metric_of`]);
//! - the PromQL source serves every field under its DCGM name too, with the labels of
//!   [`LABELS`], over the same rows (no second copy).
//!
//! The profiling fields (`DCGM_FI_PROF_SM_ACTIVE`, `DCGM_FI_PROF_PIPE_TENSOR_ACTIVE`, ...)
//! are ratios (0 to 1) in DCGM and in the `gpu` row alike; a GPU that cannot measure them
//! has no value (never zero), so a query for one has no series of that GPU. A DCGM field the
//! agent does not write (`DCGM_FI_PROF_PIPE_FP64_ACTIVE`, ...) is not in [`FIELDS`]: a query
//! for it has no series. A new `gpu` field with a DCGM counterpart gets its row here.

/// Whether dcgm-exporter publishes a field as a gauge or a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Gauge,
    Counter,
}

impl MetricType {
    /// The name Prometheus' metadata uses.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Gauge => "gauge",
            MetricType::Counter => "counter",
        }
    }
}

/// One `gpu` field and the dcgm-exporter metric that carries the same reading in the same
/// unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DcgmField {
    /// The field of table `gpu`.
    pub field: &'static str,
    /// The DCGM field, which is also the dcgm-exporter metric name.
    pub metric: &'static str,
    pub metric_type: MetricType,
    /// dcgm-exporter's help text (from its default counters file), unit included.
    pub help: &'static str,
}

const fn f(
    field: &'static str,
    metric: &'static str,
    metric_type: MetricType,
    help: &'static str,
) -> DcgmField {
    DcgmField {
        field,
        metric,
        metric_type,
        help,
    }
}

use MetricType::{Counter, Gauge};

/// Every `gpu` field with a dcgm-exporter counterpart. A field may have several names (a
/// DCGM rename keeps the old name readable); the first is the field's own.
pub const FIELDS: &[DcgmField] = &[
    f(
        "utilization",
        "DCGM_FI_DEV_GPU_UTIL",
        Gauge,
        "GPU utilization (in %).",
    ),
    f(
        "memory_utilization",
        "DCGM_FI_DEV_MEM_COPY_UTIL",
        Gauge,
        "Memory utilization (in %).",
    ),
    f(
        "memory_used_mib",
        "DCGM_FI_DEV_FB_USED",
        Gauge,
        "Framebuffer memory used (in MiB).",
    ),
    f(
        "memory_free_mib",
        "DCGM_FI_DEV_FB_FREE",
        Gauge,
        "Framebuffer memory free (in MiB).",
    ),
    f(
        "memory_total_mib",
        "DCGM_FI_DEV_FB_TOTAL",
        Gauge,
        "Framebuffer memory total (in MiB).",
    ),
    f(
        "temperature",
        "DCGM_FI_DEV_GPU_TEMP",
        Gauge,
        "GPU temperature (in C).",
    ),
    f(
        "memory_temperature",
        "DCGM_FI_DEV_MEMORY_TEMP",
        Gauge,
        "Memory temperature (in C).",
    ),
    f(
        "power_watts",
        "DCGM_FI_DEV_POWER_USAGE",
        Gauge,
        "Power draw (in W).",
    ),
    f(
        "power_limit_watts",
        "DCGM_FI_DEV_POWER_MGMT_LIMIT",
        Gauge,
        "Enforced power limit (in W).",
    ),
    f(
        "energy_mj",
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        Counter,
        "Total energy consumption since boot (in mJ).",
    ),
    f(
        "sm_clock_mhz",
        "DCGM_FI_DEV_SM_CLOCK",
        Gauge,
        "SM clock frequency (in MHz).",
    ),
    f(
        "memory_clock_mhz",
        "DCGM_FI_DEV_MEM_CLOCK",
        Gauge,
        "Memory clock frequency (in MHz).",
    ),
    // dcgm-exporter calls these counters, but the values are rates (bytes per second).
    f(
        "pcie_tx_bytes_per_s",
        "DCGM_FI_PROF_PCIE_TX_BYTES",
        Gauge,
        "The rate of data transmitted over the PCIe bus, including protocol headers and data payloads (in B/s).",
    ),
    f(
        "pcie_rx_bytes_per_s",
        "DCGM_FI_PROF_PCIE_RX_BYTES",
        Gauge,
        "The rate of data received over the PCIe bus, including protocol headers and data payloads (in B/s).",
    ),
    f(
        "pcie_replay_total",
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
        Counter,
        "Total number of PCIe retries.",
    ),
    f(
        "ecc_sbe_total",
        "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
        Counter,
        "Total number of single-bit volatile ECC errors.",
    ),
    f(
        "ecc_dbe_total",
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
        Counter,
        "Total number of double-bit volatile ECC errors.",
    ),
    f(
        "retired_pages_sbe",
        "DCGM_FI_DEV_RETIRED_SBE",
        Counter,
        "Total number of retired pages due to single-bit errors.",
    ),
    f(
        "retired_pages_dbe",
        "DCGM_FI_DEV_RETIRED_DBE",
        Counter,
        "Total number of retired pages due to double-bit errors.",
    ),
    f(
        "remapped_rows_correctable",
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
        Counter,
        "Number of remapped rows for correctable errors.",
    ),
    f(
        "remapped_rows_uncorrectable",
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
        Counter,
        "Number of remapped rows for uncorrectable errors.",
    ),
    f(
        "row_remap_failure",
        "DCGM_FI_DEV_ROW_REMAP_FAILURE",
        Gauge,
        "Whether remapping of rows has failed.",
    ),
    f(
        "throttle_reasons",
        "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",
        Gauge,
        "Current clock throttle reasons (bitmask of nvmlClocksEventReasons).",
    ),
    // dcgm-exporter 3.x's name for the same field.
    f(
        "throttle_reasons",
        "DCGM_FI_DEV_CLOCKS_EVENT_REASONS",
        Gauge,
        "Current clock event reasons (bitmask of nvmlClocksEventReasons).",
    ),
    // The profiling (activity) fields: ratios over the sample interval, on GPUs that have
    // them (DCGM's profiling module on data-centre GPUs; NVML GPM on Hopper and newer).
    f(
        "gr_engine_active",
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
        Gauge,
        "Ratio of time the graphics engine is active.",
    ),
    f(
        "sm_active",
        "DCGM_FI_PROF_SM_ACTIVE",
        Gauge,
        "The ratio of cycles an SM has at least 1 warp assigned.",
    ),
    f(
        "sm_occupancy",
        "DCGM_FI_PROF_SM_OCCUPANCY",
        Gauge,
        "The ratio of number of warps resident on an SM.",
    ),
    f(
        "tensor_active",
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
        Gauge,
        "Ratio of cycles the tensor (HMMA) pipe is active.",
    ),
    f(
        "dram_active",
        "DCGM_FI_PROF_DRAM_ACTIVE",
        Gauge,
        "Ratio of cycles the device memory interface is active sending or receiving data.",
    ),
];

/// The activity (profiling) fields of [`FIELDS`]: measured only on GPUs that support them.
pub const ACTIVITY_FIELDS: [&str; 5] = [
    "gr_engine_active",
    "sm_active",
    "sm_occupancy",
    "tensor_active",
    "dram_active",
];

/// dcgm-exporter's XID gauge: the code of a GPU's last XID error. XIDs are events here, rows
/// of `gpu_fault` (`kind=xid`, as the agent writes them), so this name reads those rows: a
/// sample with the code at each XID, with the labels of [`LABELS`]. A query at time `t`
/// therefore sees a GPU's last XID for the lookback (5 minutes) after it, where
/// dcgm-exporter keeps exporting it until the driver reloads: `DCGM_FI_DEV_XID_ERRORS > 0`
/// fires on a fresh XID and resolves by itself.
pub const XID_METRIC: &str = "DCGM_FI_DEV_XID_ERRORS";

/// dcgm-exporter's help text for [`XID_METRIC`].
pub const XID_HELP: &str = "Value of the last XID error encountered.";

/// The table and field [`XID_METRIC`] reads.
pub const XID_TABLE: &str = crate::tables::GPU_FAULT;
pub const XID_FIELD: &str = "code";

/// The field a dcgm-exporter metric carries, if the agent writes it.
pub fn field_of(metric: &str) -> Option<&'static str> {
    FIELDS.iter().find(|d| d.metric == metric).map(|d| d.field)
}

/// The DCGM name of a `gpu` field (its first, if it has several), or `""` where DCGM has
/// none. `const` so that tables of fields can name their DCGM source at compile time.
pub const fn metric_of(field: &str) -> &'static str {
    let mut i = 0;
    while i < FIELDS.len() {
        if str_eq(FIELDS[i].field, field) {
            return FIELDS[i].metric;
        }
        i += 1;
    }
    ""
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Where a dcgm-exporter label's value comes from in a `gpu` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelSource {
    /// The value of a tag.
    Tag(&'static str),
    /// The value of a string field (a stable attribute, constant per GPU).
    Field(&'static str),
    /// A fixed prefix and the value of a tag (`device` = `nvidia` + `gpu_index`).
    Prefixed {
        prefix: &'static str,
        tag: &'static str,
    },
    /// The same value on every series.
    Const(&'static str),
}

/// The value of `job` on series read under DCGM names.
pub const JOB: &str = "rigwatch";

/// dcgm-exporter's labels and where each comes from. `instance` and `job` are what a
/// Prometheus scrape would attach: `instance` is the worker (a scrape would say
/// `host:9400`; the worker is the host's name here), `job` is [`JOB`]. `modelName` is the
/// canonical model (`H100`), not NVML's product name, which rows do not carry. Tags with no
/// dcgm-exporter name (`supplier`, `region`) keep their own.
pub const LABELS: &[(&str, LabelSource)] = &[
    ("gpu", LabelSource::Tag("gpu_index")),
    ("UUID", LabelSource::Tag("gpu_uuid")),
    (
        "device",
        LabelSource::Prefixed {
            prefix: "nvidia",
            tag: "gpu_index",
        },
    ),
    ("modelName", LabelSource::Tag("model")),
    ("Hostname", LabelSource::Tag("worker")),
    ("pci_bus_id", LabelSource::Field("pci_bus_id")),
    (
        "DCGM_FI_DRIVER_VERSION",
        LabelSource::Field("driver_version"),
    ),
    ("instance", LabelSource::Tag("worker")),
    ("job", LabelSource::Const(JOB)),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_look_like_dcgm() {
        let mut names: Vec<_> = FIELDS.iter().map(|d| d.metric).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FIELDS.len());
        assert!(names.iter().all(|n| n.starts_with("DCGM_FI_")));
    }

    #[test]
    fn lookups_go_both_ways() {
        assert_eq!(field_of("DCGM_FI_DEV_GPU_TEMP"), Some("temperature"));
        assert_eq!(
            field_of("DCGM_FI_DEV_CLOCKS_EVENT_REASONS"),
            Some("throttle_reasons")
        );
        assert_eq!(
            field_of("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"),
            Some("tensor_active")
        );
        // A DCGM field the agent does not write.
        assert_eq!(field_of("DCGM_FI_PROF_PIPE_FP64_ACTIVE"), None);
        for a in ACTIVITY_FIELDS {
            assert!(metric_of(a).starts_with("DCGM_FI_PROF_"), "{a}");
        }
        assert_eq!(
            metric_of("throttle_reasons"),
            "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS"
        );
        assert_eq!(metric_of("compute_processes"), "");
        for d in FIELDS {
            assert_eq!(field_of(metric_of(d.field)), Some(d.field));
        }
    }
}
