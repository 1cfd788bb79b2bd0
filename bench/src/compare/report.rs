//! The table and the JSON file.

use serde_json::{Value, json};

use super::Dataset;
use super::peers::{Kind, System};
use super::queries::Query;
use crate::dataset::FIELDS_PER_ROW;

pub(super) struct QueryReport {
    pub(super) query: Query,
    pub(super) series: usize,
    /// rigwatch's first value (first series in label order), for a glance and for tests.
    pub(super) first_value: Option<f64>,
    /// Per system (rigwatch, prometheus, victoriametrics), seconds per run.
    pub(super) latencies: Vec<Vec<f64>>,
    pub(super) notes: Vec<String>,
}

pub(super) struct Report {
    pub(super) ds: Dataset,
    pub(super) runs: usize,
    pub(super) versions: Vec<String>,
    /// Per system: (values/s, seconds, bytes stored).
    pub(super) ingest: Vec<(f64, f64, u64)>,
    pub(super) rss_mib: Vec<Option<f64>>,
    pub(super) queries: Vec<QueryReport>,
}

pub(super) fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = (p * (s.len() - 1) as f64).round() as usize;
    s[rank]
}

impl Report {
    pub(super) fn new(ds: &Dataset, runs: usize, systems: &[System]) -> Self {
        Self {
            ds: ds.clone(),
            runs,
            versions: systems.iter().map(|s| s.version.clone()).collect(),
            ingest: Vec::new(),
            rss_mib: Vec::new(),
            queries: Vec::new(),
        }
    }

    /// Rows of (figure, unit, value per system).
    pub(super) fn rows(&self) -> Vec<(String, &'static str, Vec<f64>)> {
        let values = self.ds.values() as f64;
        let mut rows = vec![
            (
                "ingest".to_string(),
                "values/s",
                self.ingest.iter().map(|i| i.0).collect(),
            ),
            (
                "stored".to_string(),
                "bytes/value",
                self.ingest.iter().map(|i| i.2 as f64 / values).collect(),
            ),
            (
                "peak RSS".to_string(),
                "MiB",
                self.rss_mib.iter().map(|r| r.unwrap_or(f64::NAN)).collect(),
            ),
        ];
        for q in &self.queries {
            let name = q.query.name;
            rows.push((
                format!("{name} median"),
                "ms",
                q.latencies
                    .iter()
                    .map(|l| percentile(l, 0.5) * 1e3)
                    .collect(),
            ));
            rows.push((
                format!("{name} p95"),
                "ms",
                q.latencies
                    .iter()
                    .map(|l| percentile(l, 0.95) * 1e3)
                    .collect(),
            ));
        }
        rows
    }

    pub(super) fn print(&self) {
        let ds = &self.ds;
        println!(
            "rigwatch bench compare: {} GPUs x {} fields x {} s x {} samples = {} values; {} timed runs per query",
            ds.gpus,
            FIELDS_PER_ROW,
            ds.interval_ms / 1000,
            ds.ticks,
            ds.values(),
            self.runs
        );
        for v in &self.versions {
            println!("  {v}");
        }
        println!(
            "{:<32} {:>11} {:>13} {:>13} {:>16} {:>9} {:>9}",
            "figure", "unit", "rigwatch", "prometheus", "victoriametrics", "rw/prom", "rw/vm"
        );
        for (name, unit, v) in self.rows() {
            let cell = |x: f64| {
                if x >= 1000.0 {
                    format!("{x:.0}")
                } else {
                    format!("{x:.3}")
                }
            };
            println!(
                "{:<32} {:>11} {:>13} {:>13} {:>16} {:>9.2} {:>9.2}",
                name,
                unit,
                cell(v[0]),
                cell(v[1]),
                cell(v[2]),
                v[0] / v[1],
                v[0] / v[2]
            );
        }
        println!(
            "(ratios are rigwatch / peer: above 1 is better for values/s, worse for the others)"
        );
        for q in &self.queries {
            for n in &q.notes {
                println!("{n}");
            }
        }
    }

    pub(super) fn to_json(&self) -> Value {
        let names = [
            Kind::Rigwatch.name(),
            Kind::Prometheus.name(),
            Kind::Victoria.name(),
        ];
        let per_system = |v: &[f64]| -> Value {
            let mut m = serde_json::Map::new();
            for (n, x) in names.iter().zip(v) {
                m.insert((*n).into(), json!(x.is_finite().then_some(*x)));
            }
            m.insert("rigwatch_per_prometheus".into(), json!(v[0] / v[1]));
            m.insert("rigwatch_per_victoriametrics".into(), json!(v[0] / v[2]));
            Value::Object(m)
        };
        let figures: Vec<Value> = self
            .rows()
            .into_iter()
            .map(|(name, unit, v)| json!({"figure": name, "unit": unit, "values": per_system(&v)}))
            .collect();
        let queries: Vec<Value> = self
            .queries
            .iter()
            .map(|q| {
                json!({
                    "name": q.query.name,
                    "expr": q.query.expr,
                    "victoriametrics_expr": q.query.vm_expr,
                    "kind": if q.query.range { "range" } else { "instant" },
                    "step_s": q.query.range.then_some(q.query.step_s),
                    "span_ms": q.query.span_ms,
                    "series": q.series,
                    "first_value": q.first_value.filter(|v| v.is_finite()),
                    "agree": q.notes.is_empty(),
                    "disagreements": q.notes,
                    "median_ms": per_system(&q.latencies.iter().map(|l| percentile(l, 0.5) * 1e3).collect::<Vec<_>>()),
                    "p95_ms": per_system(&q.latencies.iter().map(|l| percentile(l, 0.95) * 1e3).collect::<Vec<_>>()),
                })
            })
            .collect();
        let ds = &self.ds;
        json!({
            "dataset": {
                "gpus": ds.gpus,
                "fields": FIELDS_PER_ROW,
                "interval_s": ds.interval_ms as f64 / 1000.0,
                "samples_per_series": ds.ticks,
                "values": ds.values(),
                "first_sample_ms": ds.first_ms(),
                "last_sample_ms": ds.last_ms(),
                "eval_ms": ds.eval_ms(),
                "range_start_ms": ds.range_start_ms(),
            },
            "runs": self.runs,
            "versions": names.iter().zip(&self.versions).map(|(n, v)| json!({"system": n, "version": v})).collect::<Vec<_>>(),
            "ingest_seconds": per_system(&self.ingest.iter().map(|i| i.1).collect::<Vec<_>>()),
            "stored_bytes": per_system(&self.ingest.iter().map(|i| i.2 as f64).collect::<Vec<_>>()),
            "figures": figures,
            "queries": queries,
            "agree": self.queries.iter().all(|q| q.notes.is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&v, 0.5), 3.0);
        assert_eq!(percentile(&v, 0.95), 5.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
