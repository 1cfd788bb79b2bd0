//! The fixed schemas of the tables agents write: `gpu`, `gpu_fault`, `heartbeat`, `host`.
//!
//! The tables are shared by every supplier, so their columns are the server's, not any
//! agent's: a row with a tag or field outside this schema, or a field of another type, is
//! refused (400, nothing of the request stored) before it can add or type a column. One
//! tenant can then neither fix a column's type for everyone (a number written as a string
//! first refuses every other supplier's numbers) nor fill the table's column cap.
//!
//! The schema is what the agent writes ([`GpuLine`](super::fields::GpuLine) for `gpu` and
//! `gpu_fault`, the runner's heartbeat, [`host`](super::host)): the `gpu` metrics come from
//! [`METRICS`](super::fields::METRICS) itself. `supplier` and `worker` are stamped by the
//! server on every row and are not listed here. A numeric value is converted to the
//! schema's type when nothing is lost (`5i` for a float field, `5` or `5u` for an integer
//! field); anything else is a type error.

use std::fmt::Write as _;

use rigwatch_common::tables;
use rigwatch_storage::batch::{FieldType, FieldValue};

use super::fields::{GpuLine, Kind, METRICS};

/// The tag naming a row's GPU.
pub const GPU_UUID_TAG: &str = "gpu_uuid";

/// A table agents write, with its allowed tags and fields.
#[derive(Debug)]
pub struct AgentTable {
    pub name: &'static str,
    /// Tags besides the stamped `supplier` and `worker`.
    pub tags: &'static [&'static str],
    /// Fields with their types (for `gpu`, followed by every metric of [`METRICS`]).
    fields: &'static [(&'static str, FieldType)],
    /// The `gpu` row: its fields continue with the metrics.
    metrics: bool,
    /// Rows are about one GPU: they must carry [`GPU_UUID_TAG`], and the server stamps the
    /// GPU's registered `model` and `gpu_index`.
    pub per_gpu: bool,
}

use FieldType::{F64, I64, Str};

/// The free tag naming where a worker runs.
pub const REGION_TAG: &str = "region";
/// Longest accepted `region` value, bytes.
pub const MAX_REGION_LEN: usize = 64;
/// Most distinct `region` values one supplier's agents may write (per server run); a row
/// with one more is refused (409).
pub const MAX_REGIONS_PER_SUPPLIER: usize = 64;

/// Every table an agent may write. Everything else (leases, earnings, jobs, health verdicts,
/// alert state, batch digests, security events) is the server's own account and must not be
/// forgeable by a supplier's machine.
pub const AGENT_TABLES: [AgentTable; 4] = [
    AgentTable {
        name: tables::GPU,
        tags: &GpuLine::TAGS,
        fields: &GpuLine::ATTRIBUTES,
        metrics: true,
        per_gpu: true,
    },
    AgentTable {
        name: tables::GPU_FAULT,
        // `kind`: `xid` (with `code`, the XID) or `reset`.
        tags: &[GPU_UUID_TAG, "gpu_index", "model", "region", "kind"],
        fields: &[("code", I64), ("severity", Str)],
        metrics: false,
        per_gpu: true,
    },
    AgentTable {
        name: tables::HEARTBEAT,
        tags: &["region"],
        fields: &[
            ("seq", I64),
            ("gpus", I64),
            ("gpus_reporting", I64),
            ("interval_ms", I64),
            ("uptime_s", I64),
            ("spool_batches", I64),
            ("spool_bytes", I64),
            ("spool_dropped_batches", I64),
            ("agent_version", Str),
        ],
        metrics: false,
        per_gpu: false,
    },
    AgentTable {
        name: super::host::TABLE,
        tags: &["region"],
        fields: super::host::FIELDS,
        metrics: false,
        per_gpu: false,
    },
];

/// The schema of an agent table, `None` if agents may not write `name`.
pub fn table(name: &str) -> Option<&'static AgentTable> {
    AGENT_TABLES.iter().find(|t| t.name == name)
}

/// The names of the agent tables, for messages.
pub fn table_names() -> String {
    AGENT_TABLES
        .iter()
        .map(|t| t.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a row does not fit its table's schema.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "line {line}: unknown tag `{key}` in table `{table}` (agents write a fixed schema: {schema})"
    )]
    UnknownTag {
        line: u32,
        table: &'static str,
        key: String,
        schema: String,
    },
    #[error(
        "line {line}: unknown field `{key}` in table `{table}` (agents write a fixed schema: {schema})"
    )]
    UnknownField {
        line: u32,
        table: &'static str,
        key: String,
        schema: String,
    },
    #[error(
        "line {line}: field `{field}` of table `{table}` is {expected}, but the row gives {given}{value}"
    )]
    WrongType {
        line: u32,
        table: &'static str,
        field: String,
        expected: FieldType,
        given: FieldType,
        /// ` (value)` for a number that would not convert losslessly, else empty.
        value: String,
    },
    #[error("line {line}: a `{table}` row must carry a `{GPU_UUID_TAG}` tag (the GPU it is about)")]
    MissingGpu { line: u32, table: &'static str },
}

/// Largest integer magnitude an `f64` holds exactly (2^53).
const EXACT_F64: f64 = 9_007_199_254_740_992.0;

impl AgentTable {
    pub fn has_tag(&self, key: &str) -> bool {
        self.tags.contains(&key)
    }

    /// The type of field `key`, `None` if the table has no such field.
    pub fn field_type(&self, key: &str) -> Option<FieldType> {
        if let Some((_, t)) = self.fields.iter().find(|(k, _)| *k == key) {
            return Some(*t);
        }
        if !self.metrics {
            return None;
        }
        METRICS
            .iter()
            .find(|m| m.name == key)
            .map(|m| match m.kind {
                Kind::Float => F64,
                Kind::Int => I64,
            })
    }

    fn field_list(&self) -> impl Iterator<Item = (&'static str, FieldType)> {
        let metrics = METRICS.iter().filter(|_| self.metrics).map(|m| {
            (
                m.name,
                match m.kind {
                    Kind::Float => F64,
                    Kind::Int => I64,
                },
            )
        });
        self.fields.iter().copied().chain(metrics)
    }

    /// `tags a, b; fields x (float), y (integer)`: the schema, for error messages.
    pub fn describe(&self) -> String {
        let mut s = String::from("tags ");
        for (i, t) in ["supplier", "worker"]
            .iter()
            .chain(self.tags.iter())
            .enumerate()
        {
            if i > 0 {
                s.push_str(", ");
            }
            s.push_str(t);
        }
        s.push_str("; fields ");
        for (i, (k, t)) in self.field_list().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            let _ = write!(s, "{k} ({t})");
        }
        s
    }

    /// Checks the value of a free tag an agent writes: `region` is a short name (what the
    /// per-supplier region cap counts), `kind` of a fault one of `xid` and `reset`. Free
    /// values are series: an unbounded set would let one supplier create unbounded series.
    pub fn check_tag_value(&self, line: u32, key: &str, value: &str) -> Result<(), String> {
        match key {
            REGION_TAG => {
                let ok = (1..=MAX_REGION_LEN).contains(&value.len())
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
                if !ok {
                    return Err(format!(
                        "line {line}: tag `region` must be 1 to {MAX_REGION_LEN} letters, digits, `-`, `_` or `.`"
                    ));
                }
            }
            "kind" if self.name == tables::GPU_FAULT && !matches!(value, "xid" | "reset") => {
                return Err(format!(
                    "line {line}: tag `kind` of table `gpu_fault` is `xid` or `reset`"
                ));
            }
            _ => {}
        }
        Ok(())
    }

    pub fn unknown_tag(&self, line: u32, key: &str) -> SchemaError {
        SchemaError::UnknownTag {
            line,
            table: self.name,
            key: key.to_string(),
            schema: self.describe(),
        }
    }

    /// `value` as field `key` is stored: its own type, or converted without loss.
    pub fn check_field<'a>(
        &self,
        line: u32,
        key: &str,
        value: FieldValue<'a>,
    ) -> Result<FieldValue<'a>, SchemaError> {
        let Some(expected) = self.field_type(key) else {
            return Err(SchemaError::UnknownField {
                line,
                table: self.name,
                key: key.to_string(),
                schema: self.describe(),
            });
        };
        let converted = match (expected, value) {
            (e, v) if e == v.field_type() => Some(v),
            (F64, FieldValue::I64(x)) if (x as f64).abs() <= EXACT_F64 => {
                Some(FieldValue::F64(x as f64))
            }
            (F64, FieldValue::U64(x)) if x as f64 <= EXACT_F64 => Some(FieldValue::F64(x as f64)),
            (I64, FieldValue::U64(x)) => i64::try_from(x).ok().map(FieldValue::I64),
            (I64, FieldValue::F64(x)) if x.fract() == 0.0 && x.abs() <= EXACT_F64 => {
                Some(FieldValue::I64(x as i64))
            }
            _ => None,
        };
        converted.ok_or_else(|| SchemaError::WrongType {
            line,
            table: self.name,
            field: key.to_string(),
            expected,
            given: value.field_type(),
            value: match value {
                FieldValue::F64(x) => format!(" ({x})"),
                FieldValue::I64(x) => format!(" ({x})"),
                FieldValue::U64(x) => format!(" ({x})"),
                FieldValue::Bool(_) | FieldValue::Str(_) => String::new(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::fields::{GpuEvent, GpuInfo, GpuSample, Metric};
    use super::*;
    use crate::line_protocol::{self, Precision};
    use rigwatch_storage::batch::WriteBatch;

    /// Every line the agent's own encoder writes fits the schema, with every metric set.
    #[test]
    fn what_the_agent_writes_fits_the_schema() {
        let info = GpuInfo {
            index: 1,
            uuid: "GPU-1".into(),
            model: "NVIDIA H100 80GB HBM3".into(),
            memory_total_mib: 81559,
            pci_bus_id: "00000000:1B:00.0".into(),
            driver_version: "550.54.15".into(),
            cuda_version: "12.4".into(),
            power_limit_watts: Some(700.0),
            mig_enabled: Some(false),
        };
        let line = GpuLine::new(&info, Some("eu-west"));
        let mut s = GpuSample::new(0, 1);
        for (i, m) in Metric::ALL.into_iter().enumerate() {
            s.set(m, i as f64 + 0.5);
        }
        let mut text = String::new();
        line.push_sample(&mut text, &s);
        line.push_event(
            &mut text,
            &GpuEvent {
                gpu: 0,
                time_ns: 2,
                xid: 79,
            },
        );
        let mut host = crate::agent::host::HostSample::default();
        for (i, &f) in crate::agent::host::HostField::ALL.iter().enumerate() {
            host.set(f, i as f64 + 1.0);
        }
        host.push_line(&mut text, &crate::agent::host::tags(Some("eu-west")), 3);
        let mut batch = WriteBatch::with_capacity(4, 4096);
        let errors = line_protocol::parse(&text, Precision::Ns, 0, &mut batch);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(batch.len(), 3);
        for row in batch.rows() {
            let t = table(row.table()).expect("an agent table");
            for (k, _) in row.tags() {
                assert!(t.has_tag(k), "{k} of {}", t.name);
            }
            for (k, v) in row.fields() {
                assert_eq!(t.check_field(row.line(), k, v), Ok(v), "{k} of {}", t.name);
            }
        }
    }

    #[test]
    fn numbers_convert_only_without_loss() {
        let gpu = table("gpu").unwrap();
        assert_eq!(
            gpu.check_field(1, "utilization", FieldValue::I64(5)),
            Ok(FieldValue::F64(5.0))
        );
        assert_eq!(
            gpu.check_field(1, "memory_used_mib", FieldValue::F64(1024.0)),
            Ok(FieldValue::I64(1024))
        );
        let err = gpu
            .check_field(3, "memory_used_mib", FieldValue::F64(1.5))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 3: field `memory_used_mib` of table `gpu` is integer, but the row gives float (1.5)"
        );
        let err = gpu
            .check_field(2, "utilization", FieldValue::Str("high"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2: field `utilization` of table `gpu` is float, but the row gives string"
        );
        assert!(matches!(
            gpu.check_field(1, "u", FieldValue::F64(1.0)),
            Err(SchemaError::UnknownField { .. })
        ));
        assert!(
            table("heartbeat")
                .unwrap()
                .describe()
                .contains("seq (integer)")
        );
        assert!(table("earnings").is_none());
    }
}
