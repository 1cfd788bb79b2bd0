//! `rigwatch bench compare`: one dataset, one query list, rigwatch beside Prometheus and
//! VictoriaMetrics.
//!
//! ```text
//!            Fleet (deterministic, bench/src/dataset.rs)
//!                 │ line protocol, 30 ticks x one shard of GPUs per request
//!     ┌───────────┼──────────────────────────────┐
//!     ▼           ▼ (parsed, re-encoded)          ▼
//!  rigwatch    Prometheus 2.x                 VictoriaMetrics
//!  /api/v2/write  /api/v1/write (remote write)  /write (line protocol)
//!     │           │                               │
//!   persist     snapshot                       force_flush      → bytes/value, VmHWM
//!     └───────────┴──── the same PromQL list ─────┘             → answers agree? latency
//! ```
//!
//! Every system runs as its own process on loopback with its own temporary data directory
//! (rigwatch is this binary re-executed with the hidden `--internal-serve`, so its peak RSS
//! is the server's alone). The command exits non-zero when any answer disagrees; timings are
//! printed and written as JSON, never asserted. bench/README.md documents the configuration.

mod isolation;
mod peers;
mod queries;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use rigwatch_ingest::line_protocol::{self, Precision};
use rigwatch_ingest::remote_write::{self, Label, Sample, TimeSeries, WriteRequest};
use rigwatch_storage::batch::{FieldValue, WriteBatch};

use crate::dataset::{FIELDS_PER_ROW, Fleet};
use peers::{System, ensure_peers_installed, internal_serve, load};
use queries::{agree, queries, run_query};
use report::{QueryReport, Report};

/// Ticks rendered (and sent) per request. Fixed: the fleet simulation reseeds per render
/// call, so this is part of the dataset's definition.
const TICKS_PER_CHUNK: u64 = 30;
/// 2026-01-01T00:00:00Z; samples sit half an interval after it (see [`Dataset`]).
const EPOCH_NS: i64 = 1_767_225_600_000_000_000;
const FLEET_SEED: u64 = 42;
const TOKEN: &str = "bench-compare-admin-token";
/// Relative tolerance for answers to agree.
const REL_TOL: f64 = 1e-6;

/// Dataset size presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Size {
    /// 100 GPUs x 1 h (CI: debug build, under ~3 minutes).
    Ci,
    /// 200 GPUs x 6 h.
    Small,
    /// 1,000 GPUs x 24 h (the issue's figure).
    Default,
    /// 4,000 GPUs x 24 h.
    Large,
    /// 1,000 GPUs x 30 days at 60 s: the long ranges (1 h steps over the month, one GPU's
    /// 7 days at 1 m).
    Month,
}

impl Size {
    /// (GPUs, duration, sample interval, query repetitions).
    fn preset(self) -> (usize, Duration, Duration, usize) {
        let h = |n: u64| Duration::from_secs(n * 3600);
        let s10 = Duration::from_secs(10);
        match self {
            Size::Ci => (100, h(1), s10, 3),
            Size::Small => (200, h(6), s10, 5),
            Size::Default => (1000, h(24), s10, 10),
            Size::Large => (4000, h(24), s10, 10),
            Size::Month => (1000, h(24 * 30), Duration::from_secs(60), 5),
        }
    }
}

/// Options of `rigwatch bench compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Dataset preset; --gpus, --duration and --runs override its parts.
    #[arg(long, value_enum, default_value_t = Size::Default)]
    pub size: Size,

    /// GPUs in the simulated fleet (20 fields each).
    #[arg(long)]
    pub gpus: Option<usize>,

    /// Time span of the dataset (e.g. 24h).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,

    /// Sample interval; must divide one minute (default: the preset's, 10s; 1m for month).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub interval: Option<Duration>,

    /// Timed repetitions of each query per system (after one untimed run whose answer is
    /// compared).
    #[arg(long)]
    pub runs: Option<usize>,

    /// Requests in flight at once while loading (each owns a shard of the GPUs).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,

    /// Where to write the results as JSON.
    #[arg(long, default_value = "bench-compare.json")]
    pub json: PathBuf,

    /// Keep the three data directories (their path is printed) instead of deleting them.
    #[arg(long)]
    pub keep_data: bool,

    /// Internal: serve rigwatch from this data directory for the parent benchmark.
    #[arg(long, hide = true)]
    pub internal_serve: Option<PathBuf>,
}

pub async fn run(args: CompareArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &args.internal_serve {
        return internal_serve(dir).await;
    }
    // On Ctrl-C/SIGTERM the benchmark future is dropped: the peers are killed (kill on drop)
    // and the temporary directory removed, instead of leaving them running.
    tokio::select! {
        r = compare(args) => r,
        () = rigwatch_server::shutdown_signal() => bail!("interrupted; the peers were stopped"),
    }
}

async fn compare(args: CompareArgs) -> anyhow::Result<ExitCode> {
    let (gpus, duration, interval, runs) = args.size.preset();
    let ds = Dataset::new(
        args.gpus.unwrap_or(gpus),
        args.duration.unwrap_or(duration),
        args.interval.unwrap_or(interval),
    )?;
    let runs = args.runs.unwrap_or(runs).max(1);
    if args.concurrency == 0 {
        bail!("--concurrency must be > 0");
    }
    ensure_peers_installed()?;

    let tmp = tempfile::Builder::new()
        .prefix("rigwatch-bench-compare-")
        .tempdir()?;
    let root = if args.keep_data {
        let p = tmp.keep();
        eprintln!("data directories kept under {}", p.display());
        p
    } else {
        tmp.path().to_path_buf()
    };
    eprintln!(
        "dataset: {} GPUs x {} fields x {} s x {} ({} samples each, {} values)",
        ds.gpus,
        FIELDS_PER_ROW,
        ds.interval_ms / 1000,
        humantime::format_duration(Duration::from_millis(ds.ticks * ds.interval_ms as u64)),
        ds.ticks,
        ds.values()
    );
    let mut systems = vec![
        System::start_rigwatch(&root).await?,
        System::start_prometheus(&root).await?,
        System::start_victoria(&root).await?,
    ];
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;

    let mut report = Report::new(&ds, runs, &systems);
    for sys in &mut systems {
        eprintln!(
            "loading {} through {} ...",
            sys.kind.name(),
            sys.kind.write_path()
        );
        let secs = load(&client, sys, &ds, args.concurrency).await?;
        eprintln!("  {:.1} s, flushing ...", secs);
        let bytes = sys.flush(&client).await?;
        report.ingest.push((ds.values() as f64 / secs, secs, bytes));
    }

    let queries = queries(&ds);
    let mut disagreements = 0;
    for q in &queries {
        eprintln!("query {} ...", q.expr);
        let mut answers = Vec::new();
        let mut lat = Vec::new();
        for sys in &systems {
            let (answer, times) = run_query(&client, sys, q, &ds, runs).await?;
            answers.push(answer);
            lat.push(times);
        }
        let mut notes = Vec::new();
        for (i, sys) in systems.iter().enumerate().skip(1) {
            if let Err(diff) = agree(&answers[0], &answers[i], q.ties) {
                disagreements += 1;
                let line = format!(
                    "DISAGREE {}: rigwatch vs {}: {diff}",
                    q.expr,
                    sys.kind.name()
                );
                eprintln!("{line}");
                notes.push(line);
            }
        }
        report.queries.push(QueryReport {
            query: q.clone(),
            series: answers[0].len(),
            first_value: answers[0].first().and_then(|(_, s)| s.first()).map(|p| p.1),
            latencies: lat,
            notes,
        });
    }
    // The cost of tenancy, on rigwatch alone.
    eprintln!("tenancy cost: each query as one supplier ...");
    let (tenancy, tenancy_disagreements) =
        isolation::measure(&client, &systems[0], &queries, &ds, runs).await?;
    disagreements += tenancy_disagreements;
    for (i, sys) in systems.iter().enumerate() {
        report.rss_mib.push(sys.peak_rss_mib());
        report.versions[i] = sys.version.clone();
    }
    for (i, sys) in systems.into_iter().enumerate() {
        if let Some(bytes) = sys.stop().await {
            report.ingest[i].2 = bytes;
        }
    }
    report.print();
    isolation::print(&tenancy);
    let json = report.to_json();
    std::fs::write(&args.json, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("cannot write {}", args.json.display()))?;
    eprintln!("wrote {}", args.json.display());
    if disagreements > 0 {
        eprintln!("{disagreements} answer(s) disagree");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The dataset: `gpus` GPUs sampled every `interval_ms` for `ticks` samples.
///
/// Sample `k` is at `EPOCH + interval/2 + k * interval`. Queries are evaluated on whole
/// minutes and every window is a whole number of minutes, so (with an interval dividing one
/// minute) no sample sits on a window boundary and Prometheus 2.x's closed windows, 3.x's
/// left-open ones and VictoriaMetrics' agree.
#[derive(Debug, Clone)]
struct Dataset {
    gpus: usize,
    interval_ms: i64,
    ticks: u64,
}

impl Dataset {
    fn new(gpus: usize, duration: Duration, interval: Duration) -> anyhow::Result<Self> {
        let interval_ms = interval.as_millis() as i64;
        if gpus == 0 {
            bail!("--gpus must be > 0");
        }
        if interval_ms < 2 || 60_000 % interval_ms != 0 {
            bail!(
                "--interval {} must divide one minute (e.g. 5s, 10s, 15s, 30s, 1m)",
                humantime::format_duration(interval)
            );
        }
        let ticks = (duration.as_millis() as i64 / interval_ms) as u64;
        if ticks * (interval_ms as u64) < 15 * 60_000 {
            bail!("--duration must be at least 15m (the queries need a 5m window and a range)");
        }
        Ok(Self {
            gpus,
            interval_ms,
            ticks,
        })
    }

    fn values(&self) -> u64 {
        self.gpus as u64 * self.ticks * FIELDS_PER_ROW as u64
    }

    fn first_ms(&self) -> i64 {
        EPOCH_NS / 1_000_000 + self.interval_ms / 2
    }

    fn last_ms(&self) -> i64 {
        self.first_ms() + (self.ticks as i64 - 1) * self.interval_ms
    }

    /// Evaluation time of instant queries and end of range queries: the last whole minute.
    fn eval_ms(&self) -> i64 {
        self.last_ms().div_euclid(60_000) * 60_000
    }

    /// Start of range queries: the first whole minute after the first sample, plus a minute.
    fn range_start_ms(&self) -> i64 {
        (self.first_ms().div_euclid(60_000) + 2) * 60_000
    }

    /// Whether the data spans more than a week: range queries then step by the hour (at
    /// one minute a month is 43,200 points a series, past Prometheus' 11,000).
    fn long(&self) -> bool {
        self.eval_ms() - self.range_start_ms() > 7 * 86_400_000
    }

    /// Renders chunk `c` into `shards` line-protocol bodies (shard `s` holds GPUs
    /// `[s*gpus/shards, (s+1)*gpus/shards)`), continuing `fleet`'s simulation.
    fn render_chunk(&self, fleet: &mut Fleet, c: u64, shards: usize) -> Vec<String> {
        let first = c * TICKS_PER_CHUNK;
        let n = TICKS_PER_CHUNK.min(self.ticks - first);
        let interval_ns = self.interval_ms * 1_000_000;
        let start = EPOCH_NS + interval_ns / 2 + first as i64 * interval_ns;
        let ticks = fleet.render_lp(start, interval_ns, n);
        let per_tick = ticks.first().map_or(0, String::len);
        let mut bodies: Vec<String> = (0..shards)
            .map(|_| String::with_capacity(per_tick * n as usize / shards + 64))
            .collect();
        for tick in &ticks {
            for (i, line) in tick.lines().enumerate() {
                let b = &mut bodies[i * shards / self.gpus];
                b.push_str(line);
                b.push('\n');
            }
        }
        bodies.retain(|b| !b.is_empty());
        bodies
    }

    fn chunks(&self) -> u64 {
        self.ticks.div_ceil(TICKS_PER_CHUNK)
    }

    /// The `gpu_uuid` of the first GPU (the single-GPU queries' target).
    fn first_uuid(&self) -> String {
        let body = Fleet::new(self.gpus, FLEET_SEED).render_lp(EPOCH_NS, 1, 1);
        let line = body[0].lines().next().unwrap_or_default();
        line.split(',')
            .find_map(|kv| kv.strip_prefix("gpu_uuid="))
            .unwrap_or_default()
            .to_string()
    }
}

/// Converts one line-protocol body (rows of table `t`, whole ticks, the same row keys in the
/// same order in every tick, as [`Dataset::render_chunk`] makes them) into a remote-write
/// request with one series per (row key, field), metric `<t>_<field>`: the names rigwatch
/// and VictoriaMetrics give the same lines. Labels are built once per series; each series'
/// samples ascend.
fn lp_to_remote_write(body: &str) -> anyhow::Result<WriteRequest> {
    let mut batch = WriteBatch::with_capacity(body.len() / 400 + 1, body.len());
    let errors = line_protocol::parse(body, Precision::Ns, 0, &mut batch);
    if let Some(e) = errors.first() {
        bail!("generated data failed to parse: {e}");
    }
    let first_t = batch.get(0).map(|r| r.time());
    let per_tick = batch
        .rows()
        .take_while(|r| Some(r.time()) == first_t)
        .count()
        .max(1);
    if !batch.len().is_multiple_of(per_tick) {
        bail!(
            "{} rows are not whole ticks of {per_tick} rows",
            batch.len()
        );
    }
    let samples_per_series = batch.len() / per_tick;
    let mut series: Vec<TimeSeries> = Vec::new();
    // The first series of the row at each position within a tick.
    let mut starts: Vec<usize> = Vec::with_capacity(per_tick + 1);
    for (r, row) in batch.rows().enumerate() {
        let pos = r % per_tick;
        if r < per_tick {
            starts.push(series.len());
            let mut tags: Vec<Label> = row
                .tags()
                .map(|(k, v)| Label {
                    name: k.to_string(),
                    value: v.to_string(),
                })
                .collect();
            tags.sort_by(|a, b| a.name.cmp(&b.name));
            for (field, value) in row.fields() {
                if as_f64(value).is_none() {
                    continue;
                }
                let mut labels = Vec::with_capacity(tags.len() + 1);
                labels.push(Label {
                    name: remote_write::NAME_LABEL.into(),
                    value: format!("{}_{field}", row.table()),
                });
                labels.extend(tags.iter().cloned());
                series.push(TimeSeries {
                    labels,
                    samples: Vec::with_capacity(samples_per_series),
                });
            }
            if r + 1 == per_tick {
                starts.push(series.len());
            }
        } else if !row.tags().all(|(k, v)| {
            series[starts[pos]]
                .labels
                .iter()
                .any(|l| l.name == k && l.value == v)
        }) {
            bail!(
                "line {}: rows are not in the same order in every tick",
                r + 1
            );
        }
        let t_ms = row.time().div_euclid(1_000_000);
        let mut i = starts[pos];
        let end = starts.get(pos + 1).copied().unwrap_or(series.len());
        for (field, value) in row.fields() {
            let Some(v) = as_f64(value) else { continue };
            let name = &series.get(i).map(|s| s.labels[0].value.as_str());
            if i >= end || !name.is_some_and(|n| n.ends_with(field)) {
                bail!("line {}: fields differ from the first tick's", r + 1);
            }
            series[i].samples.push(Sample {
                value: v,
                timestamp: t_ms,
            });
            i += 1;
        }
    }
    Ok(WriteRequest { timeseries: series })
}

/// A field as a sample value: numbers as they are, booleans as 0/1 (as VictoriaMetrics'
/// line-protocol import stores them), strings not at all.
fn as_f64(v: FieldValue<'_>) -> Option<f64> {
    match v {
        FieldValue::F64(v) => Some(v),
        FieldValue::I64(v) => Some(v as f64),
        FieldValue::U64(v) => Some(v as f64),
        FieldValue::Bool(b) => Some(f64::from(u8::from(b))),
        FieldValue::Str(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_keeps_samples_off_minute_boundaries() {
        let ds = Dataset::new(10, Duration::from_secs(3600), Duration::from_secs(10)).unwrap();
        assert_eq!(ds.ticks, 360);
        assert_eq!(ds.values(), 10 * 360 * 20);
        for k in 0..ds.ticks as i64 {
            assert_ne!((ds.first_ms() + k * ds.interval_ms) % 60_000, 0);
        }
        assert_eq!(ds.eval_ms() % 60_000, 0);
        assert!(ds.eval_ms() <= ds.last_ms() && ds.eval_ms() > ds.last_ms() - 60_000);
        assert!(ds.range_start_ms() > ds.first_ms());
        assert!(Dataset::new(10, Duration::from_secs(3600), Duration::from_secs(7)).is_err());
        assert!(Dataset::new(10, Duration::from_secs(600), Duration::from_secs(10)).is_err());
    }

    #[test]
    fn chunks_shard_gpus_and_convert_to_remote_write() {
        let ds = Dataset::new(10, Duration::from_secs(3600), Duration::from_secs(10)).unwrap();
        let mut fleet = Fleet::new(ds.gpus, FLEET_SEED);
        let bodies = ds.render_chunk(&mut fleet, 0, 3);
        assert_eq!(bodies.len(), 3);
        let lines: usize = bodies.iter().map(|b| b.lines().count()).sum();
        assert_eq!(lines, 10 * TICKS_PER_CHUNK as usize);
        // The first GPU is in shard 0 and nowhere else.
        let uuid = ds.first_uuid();
        assert!(bodies[0].contains(&uuid));
        assert!(!bodies[1].contains(&uuid) && !bodies[2].contains(&uuid));

        let req = lp_to_remote_write(&bodies[0]).unwrap();
        let gpus_in_shard = bodies[0].lines().count() / TICKS_PER_CHUNK as usize;
        assert_eq!(req.timeseries.len(), gpus_in_shard * FIELDS_PER_ROW);
        let first = &req.timeseries[0];
        assert_eq!(first.labels[0].name, "__name__");
        assert_eq!(first.labels[0].value, "gpu_utilization");
        assert!(first.labels.windows(2).all(|w| w[0].name < w[1].name));
        assert!(
            first
                .labels
                .iter()
                .any(|l| l.name == "gpu_uuid" && l.value == uuid)
        );
        assert_eq!(first.samples.len(), TICKS_PER_CHUNK as usize);
        assert_eq!(first.samples[0].timestamp, ds.first_ms());
        assert!(
            first
                .samples
                .windows(2)
                .all(|w| w[1].timestamp - w[0].timestamp == 10_000)
        );
        let model = first.labels.iter().find(|l| l.name == "model").unwrap();
        assert!(model.value.contains(' '), "escaped spaces are unescaped");
        // Booleans become 0/1 like VictoriaMetrics' line-protocol import.
        let healthy = req
            .timeseries
            .iter()
            .find(|s| s.labels[0].value == "gpu_healthy")
            .unwrap();
        assert_eq!(healthy.samples[0].value, 1.0);
        // Rows must keep their order from tick to tick.
        let mut lines: Vec<&str> = bodies[0].lines().collect();
        lines.swap(gpus_in_shard, gpus_in_shard + 1);
        let err = lp_to_remote_write(&lines.join("\n")).unwrap_err();
        assert!(err.to_string().contains("same order"), "{err}");
        // The next chunk continues where this one ended.
        let next = ds.render_chunk(&mut fleet, 1, 3);
        let req2 = lp_to_remote_write(&next[0]).unwrap();
        assert_eq!(
            req2.timeseries[0].samples[0].timestamp,
            ds.first_ms() + TICKS_PER_CHUNK as i64 * 10_000
        );
    }
}
