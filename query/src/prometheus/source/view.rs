//! How a metric's rows read back as labels.
//!
//! Every table reads back in rigwatch's own view: its tags are the labels, as they are. Table
//! `gpu` is also readable in dcgm-exporter's view: each field with a DCGM name
//! ([`rigwatch_common::dcgm::FIELDS`]) is a metric of that name, and its labels are
//! dcgm-exporter's ([`rigwatch_common::dcgm::LABELS`]: `gpu`, `UUID`, `device`, `modelName`,
//! `Hostname`, `pci_bus_id`, `DCGM_FI_DRIVER_VERSION`, `instance`, `job`), plus the tags
//! dcgm-exporter has no name for (`supplier`, `region`). Both views read the same rows: a
//! matcher on a DCGM label is translated to the stored column, so `gpu="3"` is still pushed
//! into the scan as `gpu_index = '3'`.
//!
//! ```text
//!   DCGM_FI_DEV_GPU_TEMP{gpu="3", Hostname="w1"}
//!        │ metrics():   name -> (table gpu, field temperature, View::Dcgm)
//!        │ translate(): gpu -> gpu_index = '3', Hostname -> worker = 'w1'  (pushed down)
//!        ▼
//!   scan gpu [supplier, worker, gpu_index, gpu_uuid, model, region, pci_bus_id,
//!             driver_version, temperature, time]   (in the caller's scoped session)
//!        │ labels(): gpu=3, UUID=…, device=nvidia3, Hostname=w1, instance=w1, job=rigwatch, …
//!        ▼
//!   series {__name__="DCGM_FI_DEV_GPU_TEMP", …}
//! ```

use rigwatch_common::dcgm::{self, LabelSource};
use rigwatch_promql::ast::{MatchOp, Matcher};
use rigwatch_promql::value::{Labels, METRIC_NAME};
use rigwatch_storage::FieldType;
use rigwatch_storage::schema::{ColumnKind, TableDef};

use super::MetricRef;

/// Which names a metric's series carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum View {
    /// rigwatch's: `<table>_<field>`, the table's tags as labels.
    Native,
    /// dcgm-exporter's, over table [`DCGM_TABLE`].
    Dcgm,
}

/// The table the dcgm-exporter view reads.
pub const DCGM_TABLE: &str = rigwatch_common::tables::GPU;

/// Tags without a dcgm-exporter name that series in that view keep.
const KEPT_TAGS: [&str; 2] = ["supplier", "region"];

/// The dcgm-exporter metrics of `def`: one per DCGM name of a numeric field it has, and the
/// XID gauge over the agent's fault rows ([`dcgm::XID_METRIC`]).
pub(super) fn dcgm_metrics(def: &std::sync::Arc<TableDef>) -> Vec<MetricRef> {
    if def.name == dcgm::XID_TABLE
        && def.columns.iter().any(|c| {
            c.name == dcgm::XID_FIELD
                && matches!(c.kind, ColumnKind::Field(t) if t != FieldType::Str)
        })
    {
        return vec![MetricRef {
            name: dcgm::XID_METRIC.to_string(),
            table: def.clone(),
            field: dcgm::XID_FIELD.to_string(),
            view: View::Dcgm,
        }];
    }
    if def.name != DCGM_TABLE {
        return Vec::new();
    }
    dcgm::FIELDS
        .iter()
        .filter(|d| {
            def.columns.iter().any(|c| {
                c.name == d.field && matches!(c.kind, ColumnKind::Field(t) if t != FieldType::Str)
            })
        })
        .map(|d| MetricRef {
            name: d.metric.to_string(),
            table: def.clone(),
            field: d.field.to_string(),
            view: View::Dcgm,
        })
        .collect()
}

impl MetricRef {
    /// The label names this metric's series can carry (besides `__name__`).
    pub fn label_names(&self) -> Vec<String> {
        LabelPlan::new(&self.table, self.view)
            .labels
            .into_iter()
            .map(|l| l.name)
            .collect()
    }

    /// The metric's type and help text for `/api/v1/metadata`.
    pub fn metadata(&self) -> (&'static str, String) {
        if self.field.is_empty() {
            let help = format!(
                "counter derived from the rows of table `{}`",
                self.table.name
            );
            return ("counter", help);
        }
        if self.name == dcgm::XID_METRIC {
            let help = format!(
                "{} (the agent's XID rows of table `{}`: a sample at each XID)",
                dcgm::XID_HELP,
                self.table.name
            );
            return ("gauge", help);
        }
        if self.view == View::Dcgm
            && let Some(d) = dcgm::FIELDS.iter().find(|d| d.metric == self.name)
        {
            let help = format!(
                "{} (field `{}` of table `{}`)",
                d.help, self.field, self.table.name
            );
            return (d.metric_type.as_str(), help);
        }
        let kind = if self.name.ends_with("_total") || self.field.ends_with("_total") {
            "counter"
        } else if self.field == "value" {
            "unknown"
        } else {
            "gauge"
        };
        (
            kind,
            format!("field `{}` of table `{}`", self.field, self.table.name),
        )
    }
}

/// One label of a view and where its value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LabelDef {
    pub name: String,
    pub source: Source,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Source {
    /// `prefix` + the value of scanned label column `col` (absent where the column is).
    Column { col: usize, prefix: &'static str },
    /// The same value on every series.
    Const(&'static str),
}

/// A condition on a tag column pushed into the scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Pushdown {
    IsNull(String),
    Eq(String, String),
    /// Null or not equal.
    NotEq(String, String),
}

/// The label columns a view of one table scans, and its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LabelPlan {
    /// Column names, and whether each is a tag (only tags are pushed down).
    pub columns: Vec<(String, bool)>,
    pub labels: Vec<LabelDef>,
}

impl LabelPlan {
    pub fn new(def: &TableDef, view: View) -> Self {
        let mut plan = LabelPlan {
            columns: Vec::new(),
            labels: Vec::new(),
        };
        let tags = def
            .columns
            .iter()
            .filter(|c| c.kind == ColumnKind::Tag)
            .map(|c| c.name.as_str());
        if view == View::Native {
            for t in tags {
                plan.push_column(t.to_string(), t, true, "");
            }
            return plan;
        }
        let has = |name: &str, tag: bool| {
            def.columns.iter().any(|c| {
                c.name == name
                    && if tag {
                        c.kind == ColumnKind::Tag
                    } else {
                        c.kind == ColumnKind::Field(FieldType::Str)
                    }
            })
        };
        let mut used = Vec::new();
        for (name, source) in dcgm::LABELS {
            let (column, tag, prefix) = match *source {
                LabelSource::Tag(t) => (t, true, ""),
                LabelSource::Field(f) => (f, false, ""),
                LabelSource::Prefixed { prefix, tag } => (tag, true, prefix),
                LabelSource::Const(v) => {
                    plan.labels.push(LabelDef {
                        name: name.to_string(),
                        source: Source::Const(v),
                    });
                    continue;
                }
            };
            used.push(column);
            if has(column, tag) {
                plan.push_column(name.to_string(), column, tag, prefix);
            }
        }
        // Tags dcgm-exporter has no name for keep theirs: `supplier` and `region` (a fault
        // row's `kind`, `class` and `detector` say what the metric name already says).
        for t in tags.filter(|t| !used.contains(t) && KEPT_TAGS.contains(t)) {
            plan.push_column(t.to_string(), t, true, "");
        }
        plan
    }

    fn push_column(&mut self, label: String, column: &str, tag: bool, prefix: &'static str) {
        let col = match self.columns.iter().position(|(c, _)| c == column) {
            Some(i) => i,
            None => {
                self.columns.push((column.to_string(), tag));
                self.columns.len() - 1
            }
        };
        self.labels.push(LabelDef {
            name: label,
            source: Source::Column { col, prefix },
        });
    }

    /// The conditions on stored columns that `matchers` imply, to push into the scan; `None`
    /// when no row of this view can match. Sound, not complete: every matcher is applied to
    /// the label sets afterwards too.
    pub fn translate(&self, matchers: &[Matcher]) -> Option<Vec<Pushdown>> {
        let mut out = Vec::new();
        for m in matchers.iter().filter(|m| m.name != METRIC_NAME) {
            let Some(label) = self.labels.iter().find(|l| l.name == m.name) else {
                // The label does not exist in this view: it reads as "".
                if !m.matches("") {
                    return None;
                }
                continue;
            };
            let (col, prefix) = match label.source {
                Source::Const(v) if !m.matches(v) => return None,
                Source::Const(_) => continue,
                Source::Column { col, prefix } => (col, prefix),
            };
            let (column, tag) = &self.columns[col];
            if !tag {
                continue;
            }
            match m.op {
                MatchOp::Equal if m.value.is_empty() => out.push(Pushdown::IsNull(column.clone())),
                MatchOp::Equal => match m.value.strip_prefix(prefix) {
                    Some(v) if !v.is_empty() => out.push(Pushdown::Eq(column.clone(), v.into())),
                    // `device="gpu0"`: no value of the column reads like that.
                    _ => return None,
                },
                MatchOp::NotEqual if !m.value.is_empty() && prefix.is_empty() => {
                    out.push(Pushdown::NotEq(column.clone(), m.value.clone()));
                }
                // Regex matchers (and `!=` on a prefixed label) run on the label sets.
                _ => {}
            }
        }
        Some(out)
    }

    /// The labels of one series from its label columns' values (in `columns` order).
    pub fn labels(&self, values: &[Option<String>], metric: &str) -> Labels {
        Labels::from_pairs(
            self.labels
                .iter()
                .filter_map(|l| {
                    let value = match &l.source {
                        Source::Const(v) => v.to_string(),
                        Source::Column { col, prefix } => {
                            let v = values.get(*col)?.as_ref()?;
                            format!("{prefix}{v}")
                        }
                    };
                    Some((l.name.clone(), value))
                })
                .chain(std::iter::once((
                    METRIC_NAME.to_string(),
                    metric.to_string(),
                ))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rigwatch_storage::schema::ColumnDef;

    fn gpu_table() -> TableDef {
        let tag = |n: &str| ColumnDef {
            name: n.into(),
            kind: ColumnKind::Tag,
        };
        let field = |n: &str, t| ColumnDef {
            name: n.into(),
            kind: ColumnKind::Field(t),
        };
        let mut def = TableDef::new("gpu", false);
        def.columns = vec![
            tag("supplier"),
            tag("worker"),
            tag("gpu_uuid"),
            tag("gpu_index"),
            tag("model"),
            tag("region"),
            field("memory_total_mib", FieldType::I64),
            field("pci_bus_id", FieldType::Str),
            field("driver_version", FieldType::Str),
            field("temperature", FieldType::F64),
            field("compute_processes", FieldType::I64),
        ];
        def.reindex();
        def
    }

    fn matcher(name: &str, op: MatchOp, value: &str) -> Matcher {
        Matcher::new(name, op, value).expect("valid matcher")
    }

    #[test]
    fn dcgm_labels_translate_to_stored_tags() {
        let plan = LabelPlan::new(&gpu_table(), View::Dcgm);
        let eq = |n, v| matcher(n, MatchOp::Equal, v);
        let pd = |c: &str, v: &str| Pushdown::Eq(c.into(), v.into());
        assert_eq!(
            plan.translate(&[
                eq("__name__", "DCGM_FI_DEV_GPU_TEMP"),
                eq("gpu", "3"),
                eq("UUID", "GPU-1"),
                eq("modelName", "H100"),
                eq("Hostname", "w1"),
                eq("instance", "w1"),
                eq("device", "nvidia3"),
                eq("supplier", "acme"),
                eq("job", dcgm::JOB),
            ]),
            Some(vec![
                pd("gpu_index", "3"),
                pd("gpu_uuid", "GPU-1"),
                pd("model", "H100"),
                pd("worker", "w1"),
                pd("worker", "w1"),
                pd("gpu_index", "3"),
                pd("supplier", "acme"),
            ])
        );
        // Regexes, string attributes and `!=` on `device` are left to the label sets.
        assert_eq!(
            plan.translate(&[
                matcher("gpu", MatchOp::Regex, ".*"),
                matcher("instance", MatchOp::Regex, "w.*"),
                eq("pci_bus_id", "00000000:1B:00.0"),
                matcher("device", MatchOp::NotEqual, "nvidia0"),
            ]),
            Some(vec![])
        );
        assert_eq!(
            plan.translate(&[matcher("gpu", MatchOp::NotEqual, "0"), eq("region", "")]),
            Some(vec![
                Pushdown::NotEq("gpu_index".into(), "0".into()),
                Pushdown::IsNull("region".into()),
            ])
        );
    }

    #[test]
    fn dcgm_matchers_that_cannot_match_skip_the_scan() {
        let plan = LabelPlan::new(&gpu_table(), View::Dcgm);
        for m in [
            matcher("job", MatchOp::Equal, "dcgm"),
            matcher("device", MatchOp::Equal, "gpu0"),
            matcher("device", MatchOp::Equal, "nvidia"),
            // rigwatch's own names are not labels of the DCGM view.
            matcher("gpu_index", MatchOp::Equal, "0"),
            matcher("worker", MatchOp::Regex, ".+"),
        ] {
            assert_eq!(plan.translate(std::slice::from_ref(&m)), None, "{m:?}");
        }
        assert!(
            plan.translate(&[matcher("job", MatchOp::Regex, "rig.*")])
                .is_some()
        );
    }

    #[test]
    fn dcgm_series_carry_dcgm_label_names() {
        let plan = LabelPlan::new(&gpu_table(), View::Dcgm);
        let cols: Vec<&str> = plan.columns.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(
            cols,
            [
                "gpu_index",
                "gpu_uuid",
                "model",
                "worker",
                "pci_bus_id",
                "driver_version",
                "supplier",
                "region"
            ]
        );
        let v = |s: &str| Some(s.to_string());
        let labels = plan.labels(
            &[
                v("2"),
                v("GPU-2"),
                v("H100"),
                v("w1"),
                v("00000000:1B:00.0"),
                v("550.54.15"),
                v("acme"),
                None,
            ],
            "DCGM_FI_DEV_GPU_TEMP",
        );
        let got: Vec<(&str, &str)> = labels.iter().collect();
        let mut want = vec![
            ("DCGM_FI_DRIVER_VERSION", "550.54.15"),
            ("Hostname", "w1"),
            ("UUID", "GPU-2"),
            ("__name__", "DCGM_FI_DEV_GPU_TEMP"),
            ("device", "nvidia2"),
            ("gpu", "2"),
            ("instance", "w1"),
            ("job", "rigwatch"),
            ("modelName", "H100"),
            ("pci_bus_id", "00000000:1B:00.0"),
            ("supplier", "acme"),
        ];
        want.sort_unstable();
        assert_eq!(got, want);
    }

    #[test]
    fn native_view_keeps_tags_and_only_gpu_has_dcgm_names() {
        let def = std::sync::Arc::new(gpu_table());
        let plan = LabelPlan::new(&def, View::Native);
        assert!(plan.columns.iter().all(|(_, tag)| *tag));
        assert_eq!(plan.labels.len(), 6);
        assert_eq!(
            plan.translate(&[matcher("gpu_index", MatchOp::Equal, "1")]),
            Some(vec![Pushdown::Eq("gpu_index".into(), "1".into())])
        );
        let names: Vec<String> = dcgm_metrics(&def).into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["DCGM_FI_DEV_FB_TOTAL", "DCGM_FI_DEV_GPU_TEMP"]);
        let mut other = gpu_table();
        other.name = "host".into();
        assert!(dcgm_metrics(&std::sync::Arc::new(other)).is_empty());
    }

    #[test]
    fn fault_rows_read_as_the_xid_gauge_with_dcgm_labels_only() {
        let mut def = gpu_table();
        def.name = dcgm::XID_TABLE.into();
        def.columns.retain(|c| c.kind == ColumnKind::Tag);
        for (name, kind) in [
            ("kind", ColumnKind::Tag),
            ("detector", ColumnKind::Tag),
            (dcgm::XID_FIELD, ColumnKind::Field(FieldType::I64)),
        ] {
            def.columns.push(ColumnDef {
                name: name.into(),
                kind,
            });
        }
        def.reindex();
        let def = std::sync::Arc::new(def);
        let metrics = dcgm_metrics(&def);
        assert_eq!(metrics.len(), 1);
        assert_eq!(metrics[0].name, dcgm::XID_METRIC);
        assert_eq!(metrics[0].metadata().0, "gauge");
        let names = metrics[0].label_names();
        for l in ["gpu", "UUID", "Hostname", "modelName", "supplier", "region"] {
            assert!(names.iter().any(|n| n == l), "{l} missing from {names:?}");
        }
        for l in ["kind", "detector", "gpu_uuid", "worker"] {
            assert!(!names.iter().any(|n| n == l), "{l} in {names:?}");
        }
    }
}
