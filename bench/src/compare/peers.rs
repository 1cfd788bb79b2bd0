//! The three systems as child processes: start, write, flush, measure, stop.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use rigwatch_ingest::remote_write;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::{Dataset, FLEET_SEED, TOKEN, lp_to_remote_write};
use crate::dataset::Fleet;
use rigwatch_server::ServeArgs;

// ---------------------------------------------------------------------------------------
// Dataset

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Rigwatch,
    Prometheus,
    Victoria,
}

impl Kind {
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Rigwatch => "rigwatch",
            Kind::Prometheus => "prometheus",
            Kind::Victoria => "victoriametrics",
        }
    }

    pub(super) fn write_path(self) -> &'static str {
        match self {
            Kind::Rigwatch => "line protocol (/api/v2/write, fsync on)",
            Kind::Prometheus => "remote write (/api/v1/write)",
            Kind::Victoria => "line protocol (/write)",
        }
    }
}

/// A peer process, killed when dropped.
pub(super) struct System {
    pub(super) kind: Kind,
    pub(super) base: String,
    pub(super) data_dir: PathBuf,
    pub(super) child: Child,
    /// rigwatch only: the control channel of `--internal-serve`.
    pub(super) control: Option<(ChildStdin, tokio::io::Lines<BufReader<ChildStdout>>)>,
    pub(super) log: PathBuf,
    pub(super) version: String,
}

pub(super) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(super) fn log_file(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))
}

/// The first line `bin arg` prints, else the installed Debian package's version.
pub(super) fn version_of(bin: &str, arg: &str) -> String {
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
    pub(super) async fn start_rigwatch(root: &Path) -> anyhow::Result<Self> {
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

    pub(super) async fn start_prometheus(root: &Path) -> anyhow::Result<Self> {
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

    pub(super) async fn start_victoria(root: &Path) -> anyhow::Result<Self> {
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

    pub(super) async fn wait_ready(&self, path: &str) -> anyhow::Result<()> {
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

    pub(super) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub(super) fn request(&self, client: &reqwest::Client, path: &str) -> reqwest::RequestBuilder {
        let req = client.post(format!("{}{path}", self.base));
        match self.kind {
            Kind::Rigwatch => req.bearer_auth(TOKEN),
            _ => req,
        }
    }

    /// Sends one prepared body, retrying while the server answers 503 (over its budget).
    pub(super) async fn write(&self, client: &reqwest::Client, body: Body) -> anyhow::Result<()> {
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
    /// VictoriaMetrics force-flushes, then the data directory (measured again after its
    /// graceful shutdown, see [`System::stop`], and that figure is the one reported);
    /// Prometheus takes a snapshot (head included) and the snapshot is measured (its WAL is
    /// not the stored form).
    pub(super) async fn flush(&mut self, client: &reqwest::Client) -> anyhow::Result<u64> {
        match self.kind {
            Kind::Rigwatch => {
                let (stdin, lines) = self.control.as_mut().context("no control channel")?;
                stdin.write_all(b"persist\n").await?;
                stdin.flush().await?;
                let answer = lines.next_line().await?;
                if answer.as_deref() != Some("persisted") {
                    bail!("rigwatch failed to persist: {}", self.log_tail());
                }
                let tables = self.data_dir.join("objects").join("tables");
                let mut rollups = 0;
                for e in std::fs::read_dir(&tables).into_iter().flatten().flatten() {
                    if e.file_name()
                        .to_string_lossy()
                        .contains(rigwatch_common::rollup::MARK)
                    {
                        rollups += du(&e.path())?;
                    }
                }
                let total = du(&self.data_dir)?;
                eprintln!(
                    "  rigwatch stores {total} bytes, of which rollups {rollups} ({:.0}%)",
                    100.0 * rollups as f64 / total.max(1) as f64
                );
                Ok(total)
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

    pub(super) fn peak_rss_mib(&self) -> Option<f64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    }

    /// Stops the process gracefully (rigwatch: end of its control channel; the peers:
    /// SIGTERM), killing it after 60 s. For VictoriaMetrics, returns the data directory's
    /// size (less the caches it saves at shutdown) once it has shut down: only then is every
    /// in-memory part on disk.
    pub(super) async fn stop(mut self) -> Option<u64> {
        if let Some((stdin, _)) = self.control.take() {
            drop(stdin);
        } else if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let exited = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .is_ok();
        let _ = self.child.kill().await;
        // Its `cache` directory (caches saved at shutdown) is not stored data.
        let cache = du(&self.data_dir.join("cache")).unwrap_or(0);
        (exited && self.kind == Kind::Victoria)
            .then(|| du(&self.data_dir).ok())
            .flatten()
            .map(|total| total.saturating_sub(cache))
    }
}

/// Disk usage like `du`: allocated blocks, each hard-linked file once.
pub(super) fn du(path: &Path) -> anyhow::Result<u64> {
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
pub(super) enum Body {
    Lp(String),
    RemoteWrite(Vec<u8>),
}

/// Loads the dataset into `sys`: chunk by chunk (30 ticks), each chunk's shards in parallel,
/// the next chunk once all are acknowledged, so every series' samples arrive in order and the
/// fleet advances together (Prometheus' head only accepts samples within an hour of its
/// newest). Only the sending is timed; rendering and encoding are not.
pub(super) async fn load(
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
/// `listening ADDR`; each `persist` line on stdin persists, compacts and builds rollups, then prints
/// `persisted`; end of stdin stops the server gracefully.
pub(super) async fn internal_serve(dir: &Path) -> anyhow::Result<ExitCode> {
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
    rigwatch_server::init_tracing(&serve.args.log);
    let running = rigwatch_server::start(&serve.args).await?;
    let mut out = tokio::io::stdout();
    out.write_all(format!("listening {}\n", running.addr).as_bytes())
        .await?;
    out.flush().await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim() == "persist" {
            running.db.persist().await?;
            running.db.compact_with(2).await?;
            running.db.compact_tiers().await?;
            // Rollups are part of what is stored, and the queries read them where they can.
            running.db.build_rollups().await?;
            // The data directory is measured next: no query runs, so the files compaction
            // replaced need not wait out their grace.
            running.db.delete_replaced_files().await;
            out.write_all(b"persisted\n").await?;
            out.flush().await?;
        }
    }
    running.stop().await?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn ensure_peers_installed() -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
