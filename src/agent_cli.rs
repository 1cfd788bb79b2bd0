//! `rigwatch agent`: stream this machine's GPUs (NVML, a dcgm-exporter scrape, or a
//! simulation) to a rigwatch server.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bytesize::ByteSize;
use clap::Args;
use rigwatch_ingest::agent::dcgm::DcgmScraper;
use rigwatch_ingest::agent::nvml::NvmlCollector;
use rigwatch_ingest::agent::sim::Simulator;
use rigwatch_ingest::agent::{AgentConfig, AgentHandle, Collector};
use tracing::info;

use rigwatch_server::{init_tracing, shutdown_signal};

/// Options of `rigwatch agent`.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// The rigwatch server to send to.
    #[arg(long, env = "RIGWATCH_SERVER", default_value = "http://127.0.0.1:9800")]
    pub server: String,

    /// Agent token of your supplier (from `rigwatch supplier add NAME` on the server host).
    #[arg(long, env = "RIGWATCH_TOKEN", hide_env_values = true)]
    pub token: String,

    /// This machine's name in your fleet (default: the host name).
    #[arg(long, env = "RIGWATCH_WORKER")]
    pub worker: Option<String>,

    /// Region tag for every row (e.g. eu-west).
    #[arg(long, env = "RIGWATCH_REGION")]
    pub region: Option<String>,

    /// Time between samples.
    #[arg(long, env = "RIGWATCH_AGENT_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,

    /// Stream N simulated GPUs instead of real ones (no driver needed).
    #[arg(long, env = "RIGWATCH_SIMULATE", conflicts_with = "scrape")]
    pub simulate: Option<usize>,

    /// Seed of the simulation (same seed, same GPUs and same history).
    #[arg(long, env = "RIGWATCH_SEED", default_value_t = 1)]
    pub seed: u64,

    /// Read GPUs from NVIDIA dcgm-exporter instead of NVML, e.g. http://127.0.0.1:9400/metrics.
    #[arg(long, env = "RIGWATCH_SCRAPE")]
    pub scrape: Option<String>,

    /// Where batches wait while the server is unreachable (kept across restarts).
    #[arg(long, env = "RIGWATCH_SPOOL_DIR", default_value = "rigwatch-spool")]
    pub spool_dir: PathBuf,

    /// Most disk the spool may use; past it the oldest batches are dropped (and counted).
    #[arg(long, env = "RIGWATCH_SPOOL_MAX", default_value = "256MiB")]
    pub spool_max: ByteSize,

    /// Longest wait between retries while the server is unreachable.
    #[arg(long, env = "RIGWATCH_MAX_BACKOFF", default_value = "30s", value_parser = humantime::parse_duration)]
    pub max_backoff: Duration,

    /// Time between rows of table `host` (CPU, memory, swap, disk use and I/O, network
    /// errors of this machine, from /proc); 0 sends none. With --simulate the host is
    /// simulated too.
    #[arg(long, env = "RIGWATCH_HOST_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub host_interval: Duration,

    /// The file system whose size and use `host` rows report (give the one your jobs'
    /// data lives on).
    #[arg(long, env = "RIGWATCH_HOST_DISK", default_value = "/")]
    pub host_disk: PathBuf,

    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "RIGWATCH_LOG", default_value = "info")]
    pub log: String,
}

pub async fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    init_tracing(&args.log);
    let worker = args
        .worker
        .clone()
        .unwrap_or_else(rigwatch_ingest::agent::host::host_name);
    let collector: Box<dyn Collector> = if let Some(n) = args.simulate {
        anyhow::ensure!(n > 0, "--simulate needs at least 1 GPU");
        info!(gpus = n, seed = args.seed, "simulating GPUs");
        Box::new(Simulator::new(n, args.seed, args.interval))
    } else if let Some(url) = &args.scrape {
        Box::new(DcgmScraper::new(url)?)
    } else {
        // Loading the library and enumerating GPUs blocks: keep it off the async workers.
        let nvml = tokio::task::spawn_blocking(NvmlCollector::open).await?;
        Box::new(nvml?)
    };
    let mut config = AgentConfig::new(&args.server, &args.token, &worker, args.spool_dir.clone());
    config.region = args.region.clone();
    config.interval = args.interval;
    config.spool_max_bytes = args.spool_max.as_u64();
    config.backoff_max = args.max_backoff;
    config.host_interval = (!args.host_interval.is_zero()).then_some(args.host_interval);
    if config.host_interval.is_some() {
        rigwatch_ingest::agent::host::check_disk(&args.host_disk).map_err(anyhow::Error::msg)?;
    }
    config.host_disk = args.host_disk.clone();
    eprintln!(
        "rigwatch agent: worker `{worker}` sending to {} every {:?} (spool {})",
        args.server,
        args.interval,
        args.spool_dir.display()
    );
    let handle = AgentHandle::spawn(config, collector).context("cannot start the agent")?;
    let stats = handle.stats.clone();
    let stop = handle.stopper();
    let signal = tokio::spawn(async move {
        shutdown_signal().await;
        info!("stopping: unsent batches go to the spool");
        stop();
    });
    let result = handle.wait().await;
    signal.abort();
    result?;
    use std::sync::atomic::Ordering::Relaxed;
    eprintln!(
        "rigwatch agent: {} samples, {} batches acknowledged, {} spooled, {} dropped from a full spool",
        stats.gpu_rows.load(Relaxed),
        stats.batches_acked.load(Relaxed),
        stats.batches_spooled.load(Relaxed),
        stats.spool.dropped_batches.load(Relaxed),
    );
    Ok(ExitCode::SUCCESS)
}
