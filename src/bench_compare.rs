//! `rigwatch bench compare`: one dataset, one query list, rigwatch beside Prometheus and
//! VictoriaMetrics.
//!
//! ```text
//!            Fleet (deterministic, src/fleet.rs)
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, ValueEnum};
use rigwatch_ingest::line_protocol::{self, Precision};
use rigwatch_ingest::remote_write::{self, Label, Sample, TimeSeries, WriteRequest};
use rigwatch_storage::batch::{FieldValue, WriteBatch};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::fleet::{FIELDS_PER_ROW, Fleet};
use crate::server::ServeArgs;

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
}

impl Size {
    /// (GPUs, duration, query repetitions).
    fn preset(self) -> (usize, Duration, usize) {
        let h = |n: u64| Duration::from_secs(n * 3600);
        match self {
            Size::Ci => (100, h(1), 3),
            Size::Small => (200, h(6), 5),
            Size::Default => (1000, h(24), 10),
            Size::Large => (4000, h(24), 10),
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

    /// Sample interval; must divide one minute.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub interval: Duration,

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
    let (gpus, duration, runs) = args.size.preset();
    let ds = Dataset::new(
        args.gpus.unwrap_or(gpus),
        args.duration.unwrap_or(duration),
        args.interval,
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
            latencies: lat,
            notes,
        });
    }
    for (i, sys) in systems.iter().enumerate() {
        report.rss_mib.push(sys.peak_rss_mib());
        report.versions[i] = sys.version.clone();
    }
    for sys in systems {
        sys.stop().await;
    }
    report.print();
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

// ---------------------------------------------------------------------------------------
// Dataset

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

/// Converts one line-protocol body (rows of table `t`) into a remote-write request with one
/// series per (row key, field), metric `<t>_<field>`: the names rigwatch and VictoriaMetrics
/// give the same lines. Samples stay in body order, so each series' samples ascend.
fn lp_to_remote_write(body: &str) -> anyhow::Result<WriteRequest> {
    let mut batch = WriteBatch::with_capacity(body.len() / 400 + 1, body.len());
    let errors = line_protocol::parse(body, Precision::Ns, 0, &mut batch);
    if let Some(e) = errors.first() {
        bail!("generated data failed to parse: {e}");
    }
    let mut index: HashMap<Vec<Label>, usize> = HashMap::new();
    let mut series: Vec<TimeSeries> = Vec::new();
    for row in batch.rows() {
        let t_ms = row.time().div_euclid(1_000_000);
        let mut tags: Vec<Label> = row
            .tags()
            .map(|(k, v)| Label {
                name: k.to_string(),
                value: v.to_string(),
            })
            .collect();
        tags.sort_by(|a, b| a.name.cmp(&b.name));
        for (field, value) in row.fields() {
            let v = match value {
                FieldValue::F64(v) => v,
                FieldValue::I64(v) => v as f64,
                FieldValue::U64(v) => v as f64,
                FieldValue::Bool(b) => f64::from(u8::from(b)),
                FieldValue::Str(_) => continue,
            };
            let mut labels = Vec::with_capacity(tags.len() + 1);
            labels.push(Label {
                name: remote_write::NAME_LABEL.into(),
                value: format!("{}_{field}", row.table()),
            });
            labels.extend(tags.iter().cloned());
            let next = series.len();
            let i = *index.entry(labels.clone()).or_insert(next);
            if i == next {
                series.push(TimeSeries {
                    labels,
                    samples: Vec::new(),
                });
            }
            series[i].samples.push(Sample {
                value: v,
                timestamp: t_ms,
            });
        }
    }
    Ok(WriteRequest { timeseries: series })
}

// ---------------------------------------------------------------------------------------
// The three systems

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rigwatch,
    Prometheus,
    Victoria,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Rigwatch => "rigwatch",
            Kind::Prometheus => "prometheus",
            Kind::Victoria => "victoriametrics",
        }
    }

    fn write_path(self) -> &'static str {
        match self {
            Kind::Rigwatch => "line protocol (/api/v2/write, fsync on)",
            Kind::Prometheus => "remote write (/api/v1/write)",
            Kind::Victoria => "line protocol (/write)",
        }
    }
}

/// A peer process, killed when dropped.
struct System {
    kind: Kind,
    base: String,
    data_dir: PathBuf,
    child: Child,
    /// rigwatch only: the control channel of `--internal-serve`.
    control: Option<(ChildStdin, tokio::io::Lines<BufReader<ChildStdout>>)>,
    log: PathBuf,
    version: String,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn log_file(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))
}

/// The first line `bin arg` prints, else the installed Debian package's version.
fn version_of(bin: &str, arg: &str) -> String {
    let run = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .and_then(|o| {
                let text = String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr);
                text.lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .map(str::to_string)
            })
    };
    run(bin, &[arg])
        .or_else(|| run("dpkg-query", &["-W", "-f", "${Package} ${Version}\n", bin]))
        .unwrap_or_else(|| format!("{bin} (version unknown)"))
}

impl System {
    async fn start_rigwatch(root: &Path) -> anyhow::Result<Self> {
        let data_dir = root.join("rigwatch");
        let log = root.join("rigwatch.log");
        let exe = std::env::current_exe().context("cannot find this executable")?;
        let mut child = Command::new(exe)
            .args(["bench", "compare", "--internal-serve"])
            .arg(&data_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file(&log)?)
            .kill_on_drop(true)
            .spawn()
            .context("cannot re-execute rigwatch as the benchmark server")?;
        let stdin = child.stdin.take().context("child stdin")?;
        let mut lines = BufReader::new(child.stdout.take().context("child stdout")?).lines();
        let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .context("rigwatch did not start within 60 s")??;
        let Some(addr) = first.as_deref().and_then(|l| l.strip_prefix("listening ")) else {
            bail!(
                "rigwatch did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        Ok(Self {
            kind: Kind::Rigwatch,
            base: format!("http://{addr}"),
            data_dir,
            child,
            control: Some((stdin, lines)),
            log,
            version: format!("rigwatch {}", env!("CARGO_PKG_VERSION")),
        })
    }

    async fn start_prometheus(root: &Path) -> anyhow::Result<Self> {
        let data_dir = root.join("prometheus");
        let log = root.join("prometheus.log");
        let config = root.join("prometheus.yml");
        // No scrape targets: Prometheus stores only what the benchmark remote-writes.
        std::fs::write(
            &config,
            "global:\n  scrape_interval: 1m\nscrape_configs: []\n",
        )?;
        let port = free_port()?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data_dir.display()))
            .arg("--storage.tsdb.retention.time=100y")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .arg("--web.enable-admin-api")
            .arg("--query.lookback-delta=5m")
            .stdout(Stdio::null())
            .stderr(log_file(&log)?)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start prometheus")?;
        let sys = Self {
            kind: Kind::Prometheus,
            base: format!("http://127.0.0.1:{port}"),
            data_dir,
            child,
            control: None,
            log,
            version: version_of("prometheus", "--version"),
        };
        sys.wait_ready("/-/ready").await?;
        Ok(sys)
    }

    async fn start_victoria(root: &Path) -> anyhow::Result<Self> {
        let data_dir = root.join("victoriametrics");
        let log = root.join("victoriametrics.log");
        let port = free_port()?;
        let child = Command::new("victoria-metrics")
            .arg(format!("-storageDataPath={}", data_dir.display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg("-retentionPeriod=100y")
            // Every repetition computes its answer: no rollup result cache.
            .arg("-search.disableCache")
            .arg("-search.latencyOffset=0s")
            .arg("-loggerLevel=WARN")
            .stdout(Stdio::null())
            .stderr(log_file(&log)?)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start victoria-metrics")?;
        let sys = Self {
            kind: Kind::Victoria,
            base: format!("http://127.0.0.1:{port}"),
            data_dir,
            child,
            control: None,
            log,
            version: version_of("victoria-metrics", "-version"),
        };
        sys.wait_ready("/health").await?;
        Ok(sys)
    }

    async fn wait_ready(&self, path: &str) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{}{path}", self.base)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready after 60 s; its log:\n{}",
                    self.kind.name(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn request(&self, client: &reqwest::Client, path: &str) -> reqwest::RequestBuilder {
        let req = client.post(format!("{}{path}", self.base));
        match self.kind {
            Kind::Rigwatch => req.bearer_auth(TOKEN),
            _ => req,
        }
    }

    /// Sends one prepared body, retrying while the server answers 503 (over its budget).
    async fn write(&self, client: &reqwest::Client, body: Body) -> anyhow::Result<()> {
        loop {
            let req = match (self.kind, &body) {
                (Kind::Rigwatch, Body::Lp(b)) => self
                    .request(client, "/api/v2/write?precision=ns")
                    .body(b.clone()),
                (Kind::Victoria, Body::Lp(b)) => {
                    self.request(client, "/write?precision=ns").body(b.clone())
                }
                (Kind::Prometheus, Body::RemoteWrite(b)) => self
                    .request(client, "/api/v1/write")
                    .header("Content-Encoding", "snappy")
                    .header("Content-Type", "application/x-protobuf")
                    .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                    .body(b.clone()),
                _ => bail!("internal: wrong body kind for {}", self.kind.name()),
            };
            let resp = req.send().await?;
            let status = resp.status();
            if status.is_success() {
                return Ok(());
            }
            if status.as_u16() == 503 {
                let wait = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .map_or(Duration::from_millis(200), Duration::from_secs);
                tokio::time::sleep(wait.min(Duration::from_secs(2))).await;
                continue;
            }
            let text = resp.text().await.unwrap_or_default();
            bail!(
                "{} rejected a write: {status}: {}",
                self.kind.name(),
                &text[..text.len().min(500)]
            );
        }
    }

    /// Makes everything durable in its compressed form and returns the bytes it takes:
    /// rigwatch persists to Parquet and compacts, then the data directory is measured;
    /// VictoriaMetrics force-flushes, then the data directory; Prometheus takes a snapshot
    /// (head included) and the snapshot is measured (its WAL is not the stored form).
    async fn flush(&mut self, client: &reqwest::Client) -> anyhow::Result<u64> {
        match self.kind {
            Kind::Rigwatch => {
                let (stdin, lines) = self.control.as_mut().context("no control channel")?;
                stdin.write_all(b"persist\n").await?;
                stdin.flush().await?;
                let answer = lines.next_line().await?;
                if answer.as_deref() != Some("persisted") {
                    bail!("rigwatch failed to persist: {}", self.log_tail());
                }
                du(&self.data_dir)
            }
            Kind::Victoria => {
                let r = client
                    .get(format!("{}/internal/force_flush", self.base))
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!("victoria-metrics force_flush answered {}", r.status());
                }
                // Flushed parts become searchable and merges settle within about a second.
                tokio::time::sleep(Duration::from_secs(2)).await;
                du(&self.data_dir)
            }
            Kind::Prometheus => {
                let r = self
                    .request(client, "/api/v1/admin/tsdb/snapshot")
                    .send()
                    .await?;
                let status = r.status();
                let v: Value = r.json().await.context("snapshot answer")?;
                let Some(name) = v["data"]["name"].as_str() else {
                    bail!("prometheus snapshot failed: {status} {v}");
                };
                du(&self.data_dir.join("snapshots").join(name))
            }
        }
    }

    fn peak_rss_mib(&self) -> Option<f64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    }

    async fn stop(mut self) {
        // rigwatch stops gracefully when its control channel closes.
        if let Some((stdin, _)) = self.control.take() {
            drop(stdin);
            let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        }
        let _ = self.child.kill().await;
    }
}

/// Disk usage like `du`: allocated blocks, each hard-linked file once.
fn du(path: &Path) -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p)
            .with_context(|| format!("cannot measure {}", p.display()))?;
        if meta.is_dir() {
            for e in std::fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        } else if seen.insert((meta.dev(), meta.ino())) {
            total += meta.blocks() * 512;
        }
    }
    Ok(total)
}

#[derive(Clone)]
enum Body {
    Lp(String),
    RemoteWrite(Vec<u8>),
}

/// Loads the dataset into `sys`: chunk by chunk (30 ticks), each chunk's shards in parallel,
/// the next chunk once all are acknowledged, so every series' samples arrive in order and the
/// fleet advances together (Prometheus' head only accepts samples within an hour of its
/// newest). Only the sending is timed; rendering and encoding are not.
async fn load(
    client: &reqwest::Client,
    sys: &System,
    ds: &Dataset,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let mut fleet = Fleet::new(ds.gpus, FLEET_SEED);
    let mut sending = Duration::ZERO;
    for c in 0..ds.chunks() {
        let lp = ds.render_chunk(&mut fleet, c, concurrency.min(ds.gpus));
        let bodies: Vec<Body> = match sys.kind {
            Kind::Prometheus => lp
                .iter()
                .map(|b| {
                    Ok(Body::RemoteWrite(remote_write::encode(
                        &lp_to_remote_write(b)?,
                    )))
                })
                .collect::<anyhow::Result<_>>()?,
            _ => lp.into_iter().map(Body::Lp).collect(),
        };
        let t = Instant::now();
        futures::future::try_join_all(bodies.into_iter().map(|b| sys.write(client, b)))
            .await
            .with_context(|| format!("loading chunk {c} into {}", sys.kind.name()))?;
        sending += t.elapsed();
    }
    Ok(sending.as_secs_f64())
}

/// `--internal-serve`: rigwatch with `rigwatch serve`'s defaults (plus a 256 MiB body limit,
/// warn logging and the benchmark's admin token) on a free loopback port. Prints
/// `listening ADDR`; each `persist` line on stdin persists and compacts, then prints
/// `persisted`; end of stdin stops the server gracefully.
async fn internal_serve(dir: &Path) -> anyhow::Result<ExitCode> {
    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }
    let dir = dir.to_string_lossy();
    let serve = Serve::try_parse_from([
        "rigwatch-bench-server",
        "--data-dir",
        &dir,
        "--listen",
        "127.0.0.1:0",
        "--max-body",
        "256MiB",
        "--log",
        "warn",
        "--admin-token",
        TOKEN,
    ])?;
    crate::server::init_tracing(&serve.args.log);
    let running = crate::server::start(&serve.args).await?;
    let mut out = tokio::io::stdout();
    out.write_all(format!("listening {}\n", running.addr).as_bytes())
        .await?;
    out.flush().await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim() == "persist" {
            running.db.persist().await?;
            running.db.compact_with(2).await?;
            out.write_all(b"persisted\n").await?;
            out.flush().await?;
        }
    }
    running.stop().await?;
    Ok(ExitCode::SUCCESS)
}

fn ensure_peers_installed() -> anyhow::Result<()> {
    let missing: Vec<&str> = [
        ("prometheus", "prometheus"),
        ("victoria-metrics", "victoria-metrics"),
    ]
    .into_iter()
    .filter(|(bin, _)| {
        std::process::Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
    })
    .map(|(_, pkg)| pkg)
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let cmd = format!("apt-get install -y {}", missing.join(" "));
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    if !root {
        bail!(
            "missing {}: install them with `sudo {cmd}`",
            missing.join(", ")
        );
    }
    eprintln!("installing {}: {cmd}", missing.join(", "));
    let status = std::process::Command::new("apt-get")
        .args(["install", "-y", "-q"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("cannot run apt-get")?;
    if !status.success() {
        bail!("`{cmd}` failed ({status}); try `apt-get update` first");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Queries

#[derive(Debug, Clone)]
struct Query {
    name: &'static str,
    expr: String,
    /// VictoriaMetrics' expression when MetricsQL's semantics differ from PromQL's.
    vm_expr: Option<String>,
    range: bool,
    /// Tied values may pick different series (topk): compare values only.
    ties: bool,
}

fn queries(ds: &Dataset) -> Vec<Query> {
    let uuid = ds.first_uuid();
    let q = |name, expr: String, range| Query {
        name,
        expr,
        vm_expr: None,
        range,
        ties: false,
    };
    vec![
        q(
            "one GPU, instant",
            format!("gpu_utilization{{gpu_uuid=\"{uuid}\"}}"),
            false,
        ),
        q("fleet avg", "avg(gpu_utilization)".into(), false),
        q("avg by model", "avg by (model) (gpu_utilization)".into(), false),
        Query {
            ties: true,
            ..q("topk 5", "topk(5, gpu_temperature)".into(), false)
        },
        Query {
            // MetricsQL's rate() uses the sample before the window and does not
            // extrapolate; with the window covered by samples, PromQL's extrapolated rate is
            // the slope between the window's first and last samples, which this computes.
            vm_expr: Some(
                "sum(increase_prometheus(gpu_energy_mj[5m]) / (tlast_over_time(gpu_energy_mj[5m]) - tfirst_over_time(gpu_energy_mj[5m])))"
                    .into(),
            ),
            ..q("sum of rates", "sum(rate(gpu_energy_mj[5m]))".into(), false)
        },
        q("quantile 0.99", "quantile(0.99, gpu_power_watts)".into(), false),
        Query {
            // MetricsQL keeps the metric name on max_over_time(); PromQL drops it.
            vm_expr: Some("label_del(max_over_time(gpu_temperature[1h]), \"__name__\")".into()),
            ..q(
                "max_over_time 1h",
                "max_over_time(gpu_temperature[1h])".into(),
                false,
            )
        },
        q(
            "samples in 1h",
            "sum(count_over_time(gpu_power_watts[1h]))".into(),
            false,
        ),
        q(
            "one GPU, range 1m",
            format!("gpu_utilization{{gpu_uuid=\"{uuid}\"}}"),
            true,
        ),
        q("fleet avg, range 1m", "avg(gpu_utilization)".into(), true),
        q(
            "avg by region, range 1m",
            "avg by (region) (gpu_power_watts)".into(),
            true,
        ),
    ]
}

/// One answer, normalised: series sorted by label set, samples as (ms, value).
type Answer = Vec<(BTreeMap<String, String>, Vec<(i64, f64)>)>;

fn parse_answer(v: &Value) -> anyhow::Result<Answer> {
    if v["status"] != "success" {
        bail!("query failed: {v}");
    }
    let point = |p: &Value| -> anyhow::Result<(i64, f64)> {
        let t = p[0].as_f64().context("timestamp")?;
        let s = p[1].as_str().context("value")?;
        let v = match s {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            _ => s.parse().with_context(|| format!("value `{s}`"))?,
        };
        Ok(((t * 1000.0).round() as i64, v))
    };
    let result = v["data"]["result"].as_array().context("no data.result")?;
    let mut out = Answer::new();
    for s in result {
        let labels = s["metric"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let samples = if let Some(values) = s["values"].as_array() {
            values.iter().map(point).collect::<anyhow::Result<_>>()?
        } else {
            vec![point(&s["value"])?]
        };
        out.push((labels, samples));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= REL_TOL * a.abs().max(b.abs())
}

fn fmt_labels(l: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = l.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{{{}}}", inner.join(","))
}

/// `Ok` when the answers agree within [`REL_TOL`]; otherwise the first differences, with
/// both values.
fn agree(ours: &Answer, theirs: &Answer, ties: bool) -> Result<(), String> {
    if ties {
        let values = |a: &Answer| {
            let mut v: Vec<(i64, f64)> = a.iter().flat_map(|(_, s)| s.iter().copied()).collect();
            v.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.total_cmp(&y.1)));
            v
        };
        let (a, b) = (values(ours), values(theirs));
        if a.len() != b.len() {
            return Err(format!("{} values vs {}", a.len(), b.len()));
        }
        for (x, y) in a.iter().zip(&b) {
            if x.0 != y.0 || !close(x.1, y.1) {
                return Err(format!("value {} at {} vs {} at {}", x.1, x.0, y.1, y.0));
            }
        }
        return Ok(());
    }
    let mut diffs = Vec::new();
    let theirs_map: BTreeMap<_, _> = theirs.iter().map(|(l, s)| (l, s)).collect();
    let ours_map: BTreeMap<_, _> = ours.iter().map(|(l, s)| (l, s)).collect();
    for (l, s) in &ours_map {
        let Some(t) = theirs_map.get(l) else {
            diffs.push(format!("{} only in rigwatch", fmt_labels(l)));
            continue;
        };
        if s.len() != t.len() {
            diffs.push(format!(
                "{}: {} samples vs {}",
                fmt_labels(l),
                s.len(),
                t.len()
            ));
            continue;
        }
        if let Some((x, y)) = s
            .iter()
            .zip(t.iter())
            .find(|(x, y)| x.0 != y.0 || !close(x.1, y.1))
        {
            diffs.push(format!(
                "{} at {}: {} vs {} (at {})",
                fmt_labels(l),
                x.0,
                x.1,
                y.1,
                y.0
            ));
        }
    }
    for l in theirs_map.keys() {
        if !ours_map.contains_key(l) {
            diffs.push(format!("{} missing from rigwatch", fmt_labels(l)));
        }
    }
    if diffs.is_empty() {
        return Ok(());
    }
    let n = diffs.len();
    diffs.truncate(5);
    Err(format!("{n} series differ: {}", diffs.join("; ")))
}

/// Runs `q` once for its answer, then `runs` timed times; returns the answer and the
/// latencies in seconds.
async fn run_query(
    client: &reqwest::Client,
    sys: &System,
    q: &Query,
    ds: &Dataset,
    runs: usize,
) -> anyhow::Result<(Answer, Vec<f64>)> {
    let expr = match (sys.kind, &q.vm_expr) {
        (Kind::Victoria, Some(e)) => e.as_str(),
        _ => q.expr.as_str(),
    };
    let secs = |ms: i64| format!("{}", ms as f64 / 1000.0);
    let params: Vec<(&str, String)> = if q.range {
        vec![
            ("query", expr.to_string()),
            ("start", secs(ds.range_start_ms())),
            ("end", secs(ds.eval_ms())),
            ("step", "60".into()),
        ]
    } else {
        vec![("query", expr.to_string()), ("time", secs(ds.eval_ms()))]
    };
    let path = if q.range {
        "/api/v1/query_range"
    } else {
        "/api/v1/query"
    };
    let mut answer = None;
    let mut times = Vec::with_capacity(runs);
    for i in 0..=runs {
        let t = Instant::now();
        let resp = sys.request(client, path).form(&params).send().await?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .with_context(|| format!("{} answered {status} to {expr}", sys.kind.name()))?;
        let elapsed = t.elapsed().as_secs_f64();
        if i == 0 {
            answer =
                Some(parse_answer(&body).with_context(|| format!("{}: {expr}", sys.kind.name()))?);
        } else {
            times.push(elapsed);
        }
    }
    Ok((answer.unwrap_or_default(), times))
}

// ---------------------------------------------------------------------------------------
// Report

struct QueryReport {
    query: Query,
    series: usize,
    /// Per system (rigwatch, prometheus, victoriametrics), seconds per run.
    latencies: Vec<Vec<f64>>,
    notes: Vec<String>,
}

struct Report {
    ds: Dataset,
    runs: usize,
    versions: Vec<String>,
    /// Per system: (values/s, seconds, bytes stored).
    ingest: Vec<(f64, f64, u64)>,
    rss_mib: Vec<Option<f64>>,
    queries: Vec<QueryReport>,
}

fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = (p * (s.len() - 1) as f64).round() as usize;
    s[rank]
}

impl Report {
    fn new(ds: &Dataset, runs: usize, systems: &[System]) -> Self {
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
    fn rows(&self) -> Vec<(String, &'static str, Vec<f64>)> {
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

    fn print(&self) {
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
            "{:<28} {:>11} {:>13} {:>13} {:>16} {:>9} {:>9}",
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
                "{:<28} {:>11} {:>13} {:>13} {:>16} {:>9.2} {:>9.2}",
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

    fn to_json(&self) -> Value {
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
                    "series": q.series,
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

    fn answer(series: &[(&str, &[(i64, f64)])]) -> Answer {
        let mut a: Answer = series
            .iter()
            .map(|(gpu, s)| {
                (
                    BTreeMap::from([("gpu".to_string(), gpu.to_string())]),
                    s.to_vec(),
                )
            })
            .collect();
        a.sort_by(|x, y| x.0.cmp(&y.0));
        a
    }

    #[test]
    fn answers_agree_within_tolerance_and_disagreements_name_both_values() {
        let a = answer(&[("a", &[(0, 1.0), (60, 2.0)]), ("b", &[(0, 3.0)])]);
        let b = answer(&[
            ("b", &[(0, 3.0 * (1.0 + 1e-9))]),
            ("a", &[(0, 1.0), (60, 2.0)]),
        ]);
        assert_eq!(agree(&a, &b, false), Ok(()));
        let c = answer(&[("a", &[(0, 1.0), (60, 2.1)]), ("b", &[(0, 3.0)])]);
        let err = agree(&a, &c, false).unwrap_err();
        assert!(err.contains("2 vs 2.1"), "{err}");
        let d = answer(&[("a", &[(0, 1.0), (60, 2.0)])]);
        let err = agree(&a, &d, false).unwrap_err();
        assert!(err.contains("{gpu=\"b\"} only in rigwatch"), "{err}");
        assert!(agree(&d, &a, false).unwrap_err().contains("missing"));
        // NaN agrees with NaN only.
        let n = answer(&[("a", &[(0, f64::NAN)])]);
        assert_eq!(agree(&n, &n, false), Ok(()));
        assert!(agree(&n, &answer(&[("a", &[(0, 0.0)])]), false).is_err());
    }

    #[test]
    fn ties_compare_values_not_series() {
        let a = answer(&[("a", &[(0, 80.0)]), ("b", &[(0, 80.0)])]);
        let b = answer(&[("c", &[(0, 80.0)]), ("a", &[(0, 80.0)])]);
        assert!(agree(&a, &b, false).is_err());
        assert_eq!(agree(&a, &b, true), Ok(()));
        let c = answer(&[("c", &[(0, 79.0)]), ("a", &[(0, 80.0)])]);
        assert!(agree(&a, &c, true).is_err());
    }

    #[test]
    fn parses_vectors_and_matrices() {
        let v = json!({"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {"gpu": "b"}, "values": [[60, "1.5"], [120, "NaN"]]},
            {"metric": {"gpu": "a"}, "values": [[60.5, "+Inf"]]}
        ]}});
        let a = parse_answer(&v).unwrap();
        assert_eq!(a[0].0["gpu"], "a");
        assert_eq!(a[0].1, vec![(60_500, f64::INFINITY)]);
        assert_eq!(a[1].1[0], (60_000, 1.5));
        assert!(a[1].1[1].1.is_nan());
        let err = parse_answer(&json!({"status": "error", "error": "bad"})).unwrap_err();
        assert!(err.to_string().contains("bad"), "{err}");
    }

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
        // The next chunk continues where this one ended.
        let next = ds.render_chunk(&mut fleet, 1, 3);
        let req2 = lp_to_remote_write(&next[0]).unwrap();
        assert_eq!(
            req2.timeseries[0].samples[0].timestamp,
            ds.first_ms() + TICKS_PER_CHUNK as i64 * 10_000
        );
    }

    #[test]
    fn du_counts_hard_links_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 10_000]).unwrap();
        let one = du(dir.path()).unwrap();
        assert!(one >= 10_000, "{one}");
        std::fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        assert_eq!(du(dir.path()).unwrap(), one);
        assert!(du(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn percentiles() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&v, 0.5), 3.0);
        assert_eq!(percentile(&v, 0.95), 5.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
