//! Readers for the Alibaba openb trace (nodes, pods) and the Philly runtimes, with errors
//! that name the file, line and column.

use std::path::Path;

use crate::model::{GpuDemand, Job};
use crate::rng::fnv1a;
use crate::view::{GpuSpec, LiveView, NodeSpec};
use crate::{Error, Result};

/// One row of `openb_node_list_*.csv`: `sn,cpu_milli,memory_mib,gpu,model`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceNode {
    pub sn: String,
    pub cpu_milli: u32,
    pub memory_mib: u64,
    pub gpus: u32,
    pub model: String,
}

/// One row of `openb_pod_list_*.csv`:
/// `name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,…`.
#[derive(Clone, Debug, PartialEq)]
pub struct TracePod {
    pub name: String,
    pub cpu_milli: u32,
    pub memory_mib: u64,
    pub demand: GpuDemand,
    /// Acceptable models (`gpu_spec` split on `|`); empty = any.
    pub models: Vec<String>,
    pub qos: String,
    pub creation_time: i64,
}

impl TracePod {
    /// The pod as a job: priority from QoS (Guaranteed 3, LS 2, Burstable 1, BE 0).
    pub fn to_job(&self, id: u64) -> Job {
        let priority = match self.qos.as_str() {
            "Guaranteed" => 3,
            "LS" => 2,
            "Burstable" => 1,
            _ => 0,
        };
        Job {
            models: self.models.clone(),
            cpu_milli: self.cpu_milli,
            memory_mib: self.memory_mib,
            priority,
            ..Job::new(id, self.demand)
        }
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::Io {
        path: path.display().to_string(),
        source_msg: format!("cannot read trace file: {e}"),
    })
}

/// A CSV with a header row and no quoting (the trace files have none).
struct Csv<'a> {
    path: String,
    header: Vec<&'a str>,
    rows: Vec<(usize, Vec<&'a str>)>,
}

impl<'a> Csv<'a> {
    fn parse(path: &Path, text: &'a str) -> Result<Csv<'a>> {
        let path_s = path.display().to_string();
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let Some((_, head)) = lines.next() else {
            return Err(Error::Trace {
                path: path_s,
                line: 1,
                column: String::new(),
                reason: "empty file, expected a header row".into(),
            });
        };
        let header: Vec<&str> = head.trim().split(',').collect();
        let rows = lines
            .map(|(i, l)| (i + 1, l.trim_end_matches('\r').split(',').collect()))
            .collect();
        Ok(Csv {
            path: path_s,
            header,
            rows,
        })
    }

    fn col(&self, name: &str) -> Result<usize> {
        self.header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| Error::Trace {
                path: self.path.clone(),
                line: 1,
                column: name.to_owned(),
                reason: format!("missing column; header has {:?}", self.header),
            })
    }

    fn col_opt(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| *h == name)
    }

    fn field<T: std::str::FromStr>(&self, line: usize, row: &[&str], col: usize) -> Result<T> {
        let raw = row.get(col).copied().unwrap_or("");
        raw.trim().parse().map_err(|_| Error::Trace {
            path: self.path.clone(),
            line,
            column: self.header[col].to_owned(),
            reason: format!("cannot parse {raw:?} as {}", std::any::type_name::<T>()),
        })
    }
}

/// Reads a node list.
pub fn load_nodes(path: &Path) -> Result<Vec<TraceNode>> {
    let text = read(path)?;
    let csv = Csv::parse(path, &text)?;
    let (sn, cpu, mem, gpu, model) = (
        csv.col("sn")?,
        csv.col("cpu_milli")?,
        csv.col("memory_mib")?,
        csv.col("gpu")?,
        csv.col("model")?,
    );
    csv.rows
        .iter()
        .map(|(line, r)| {
            Ok(TraceNode {
                sn: csv.field(*line, r, sn)?,
                cpu_milli: csv.field(*line, r, cpu)?,
                memory_mib: csv.field(*line, r, mem)?,
                gpus: csv.field(*line, r, gpu)?,
                model: csv.field(*line, r, model)?,
            })
        })
        .collect()
}

/// Reads a pod list.
pub fn load_pods(path: &Path) -> Result<Vec<TracePod>> {
    let text = read(path)?;
    let csv = Csv::parse(path, &text)?;
    let name = csv.col("name")?;
    let cpu = csv.col("cpu_milli")?;
    let mem = csv.col("memory_mib")?;
    let num_gpu = csv.col("num_gpu")?;
    let gpu_milli = csv.col("gpu_milli")?;
    // Optional: openb_pod_list_multigpu30.csv has only the first five columns.
    let spec = csv.col_opt("gpu_spec");
    let qos = csv.col_opt("qos");
    let created = csv.col_opt("creation_time");
    csv.rows
        .iter()
        .map(|(line, r)| {
            let n: u32 = csv.field(*line, r, num_gpu)?;
            let m: u32 = csv.field(*line, r, gpu_milli)?;
            let demand = GpuDemand::from_trace(n, m).ok_or_else(|| Error::Trace {
                path: csv.path.clone(),
                line: *line,
                column: "num_gpu".into(),
                reason: format!(
                    "unsupported demand num_gpu={n} gpu_milli={m} (need 0, 1×1..999 or 1..8×1000)"
                ),
            })?;
            let spec_s: String = spec.map_or(Ok(String::new()), |c| csv.field(*line, r, c))?;
            Ok(TracePod {
                name: csv.field(*line, r, name)?,
                cpu_milli: csv.field(*line, r, cpu)?,
                memory_mib: csv.field(*line, r, mem)?,
                demand,
                models: spec_s
                    .split('|')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
                qos: qos.map_or(Ok(String::new()), |c| csv.field(*line, r, c))?,
                // Without timestamps, file order is arrival order.
                creation_time: match created {
                    Some(c) => csv.field(*line, r, c)?,
                    None => *line as i64,
                },
            })
        })
        .collect()
}

/// Reads Philly runtimes (one number of seconds per line after a header), in ms, each at
/// least one second.
pub fn load_runtimes(path: &Path) -> Result<Vec<u64>> {
    let text = read(path)?;
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate().skip(1) {
        let l = l.trim();
        if l.is_empty() {
            continue;
        }
        let s: f64 = l.parse().map_err(|_| Error::Trace {
            path: path.display().to_string(),
            line: i + 1,
            column: "runtime".into(),
            reason: format!("cannot parse {l:?} as seconds"),
        })?;
        if !s.is_finite() || s < 0.0 {
            return Err(Error::Trace {
                path: path.display().to_string(),
                line: i + 1,
                column: "runtime".into(),
                reason: format!("runtime {s} is not a non-negative number of seconds"),
            });
        }
        out.push(((s * 1000.0) as u64).max(1000));
    }
    Ok(out)
}

/// The supplier a node belongs to: `supplier-NN` by FNV-1a of its serial number.
pub fn supplier_of(sn: &str, suppliers: u32) -> String {
    format!(
        "supplier-{:02}",
        fnv1a(sn.as_bytes()) % u64::from(suppliers.max(1))
    )
}

/// A live view holding the trace's nodes (host CPU and memory tracked), grouped into
/// `suppliers` suppliers.
pub fn build_view(nodes: &[TraceNode], suppliers: u32) -> Result<LiveView> {
    let mut view = LiveView::new();
    for n in nodes {
        view.add_node(NodeSpec {
            name: n.sn.clone(),
            supplier: supplier_of(&n.sn, suppliers),
            cpu_milli: n.cpu_milli,
            memory_mib: n.memory_mib,
        });
        for i in 0..n.gpus {
            view.add_gpu(
                GpuSpec {
                    uuid: format!("{}-gpu{i}", n.sn),
                    node: n.sn.clone(),
                    model: n.model.clone(),
                    memory_total_mib: 0,
                },
                0,
            )?;
        }
    }
    Ok(view)
}
