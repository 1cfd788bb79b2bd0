//! `rigwatch demo`: a server plus a simulated fleet that reaches it the way real suppliers
//! do: one in-process agent per worker, each POSTing over HTTP on loopback with its own
//! supplier's token, through the same agent code path as `rigwatch agent`.
//!
//! Also `rigwatch bench agents`: the same fleet at a chosen size against a fresh server,
//! reporting whether the server keeps up (acknowledgement lag and spool backlog over time).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use rigwatch_ingest::agent::sim::Simulator;
use rigwatch_ingest::agent::{AgentConfig, AgentHandle, AgentStats};
use rigwatch_storage::auth::{AuthStore, Role};

use crate::server::{ServeArgs, init_tracing, shutdown_signal, start};

/// Options of `rigwatch demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub serve: ServeArgs,

    /// Suppliers in the demo fleet (each with its own agent token).
    #[arg(long, env = "RIGWATCH_DEMO_SUPPLIERS", default_value_t = 25)]
    pub suppliers: usize,

    /// Simulated GPUs in the demo fleet, spread over the suppliers, 8 per worker.
    #[arg(long, env = "RIGWATCH_DEMO_GPUS", default_value_t = 300)]
    pub gpus: usize,

    /// Time between samples of each simulated GPU.
    #[arg(long, env = "RIGWATCH_DEMO_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,

    /// Where the cluster traces are (`alibaba-openb-2023/`, `philly/`): the demo's jobs take
    /// their GPU shapes and durations from them. Without them a built-in mix is used.
    #[arg(long, env = "RIGWATCH_TRACE_DIR", default_value = "../shared/data")]
    pub trace_dir: std::path::PathBuf,

    /// Run no jobs: the simulated GPUs then idle (and earn nothing).
    #[arg(long, env = "RIGWATCH_DEMO_NO_WORKLOAD")]
    pub no_workload: bool,
}

/// A running simulated fleet: one agent per worker.
pub struct DemoFleet {
    pub agents: Vec<AgentHandle>,
    pub gpus: usize,
    /// Handles on the simulated workers (clones share the GPUs): the workload drives them.
    pub sims: Vec<Simulator>,
}

impl DemoFleet {
    /// Starts `gpus` simulated GPUs (8 per worker) spread over `suppliers` suppliers, each
    /// supplier added to `auth` (or given a fresh token if it exists) and its agents sending
    /// to `server`. Spools live under `spool_root`.
    pub fn start(
        auth: &AuthStore,
        server: &str,
        suppliers: usize,
        gpus: usize,
        interval: Duration,
        spool_root: &Path,
        fault_rate: f64,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            suppliers > 0 && gpus > 0,
            "need at least one supplier and GPU"
        );
        let per_supplier = gpus.div_ceil(suppliers);
        let mut agents = Vec::new();
        let mut sims = Vec::new();
        let mut left = gpus;
        for s in 0..suppliers {
            if left == 0 {
                break;
            }
            let name = format!("supplier-{s:02}");
            let token = match auth.add_supplier(&name) {
                Ok(t) => t.token,
                Err(_) => {
                    auth.issue(Role::Agent, Some(&name), None, "demo")
                        .with_context(|| format!("cannot issue a token for {name}"))?
                        .token
                }
            };
            let mut mine = per_supplier.min(left);
            left -= mine;
            let mut w = 0;
            while mine > 0 {
                let n = mine.min(8);
                mine -= n;
                let worker = format!("{name}-node{w}");
                let seed = (s * 131 + w * 7 + 3) as u64;
                let sim = Simulator::new(n, seed, interval);
                sim.set_fault_rate(fault_rate);
                let mut config =
                    AgentConfig::new(server, &token, &worker, spool_root.join(&worker));
                config.interval = interval;
                config.region = Some(["eu-west", "us-east", "ap-south"][s % 3].to_string());
                config.backoff_max = Duration::from_secs(5);
                // Spread the fleet's ticks over the interval, as independent machines are.
                let n_agents = gpus.div_ceil(8).max(1) as u32;
                config.start_delay = interval * (agents.len() as u32 % n_agents) / n_agents;
                sims.push(sim.clone());
                agents.push(AgentHandle::spawn(config, sim)?);
                w += 1;
            }
        }
        Ok(DemoFleet { agents, gpus, sims })
    }

    pub fn stats(&self) -> impl Iterator<Item = &Arc<AgentStats>> {
        self.agents.iter().map(|a| &a.stats)
    }

    /// Stops every agent (unsent batches go to their spools).
    pub async fn stop(self) {
        // Ask all first, then wait: each stop flushes to disk.
        let stoppers: Vec<_> = self.agents.iter().map(|a| a.stopper()).collect();
        for stop in stoppers {
            stop();
        }
        for a in self.agents {
            if let Err(e) = a.wait().await {
                tracing::warn!(error = %e, "demo agent ended with an error");
            }
        }
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    // Fifty in-process agents each announce their start; at the default level that would
    // bury the URLs below, so the demo keeps the agents to warnings unless asked otherwise.
    let filter = if args.serve.log == "info" {
        "info,rigwatch_ingest::agent=warn"
    } else {
        args.serve.log.as_str()
    };
    init_tracing(filter);
    let running = start(&args.serve).await?;
    let base = format!("http://{}", running.addr);
    let analyst = running
        .auth
        .issue(Role::Analyst, None, None, "demo")
        .context("cannot issue the demo's analyst token")?;
    let fleet = DemoFleet::start(
        &running.auth,
        &base,
        args.suppliers,
        args.gpus,
        args.interval,
        &args.serve.data_dir.join("demo-spool"),
        2e-4,
    )?;
    let token = &analyst.token;
    println!(
        "rigwatch demo: server on {base}; {} simulated GPUs from {} suppliers ({} agents) every {:?}",
        fleet.gpus,
        args.suppliers,
        fleet.agents.len(),
        args.interval
    );
    println!("  health:     {base}/health");
    println!(
        "  inventory:  curl -s -H 'Authorization: Bearer {token}' {base}/api/v1/agent/inventory"
    );
    println!("  analyst token (shown once): {token}");
    println!("  try:");
    for q in [
        "SELECT supplier, count(DISTINCT gpu_uuid) AS gpus, round(avg(utilization), 1) AS util FROM gpu WHERE time > now() - INTERVAL '1 minute' GROUP BY supplier ORDER BY util DESC",
        "SELECT model, round(avg(temperature), 1) AS temp_c, round(avg(power_watts)) AS watts FROM gpu GROUP BY model ORDER BY watts DESC",
        "SELECT code, severity, count(*) AS faults FROM gpu_fault GROUP BY code, severity ORDER BY faults DESC",
        "SELECT supplier, worker, max(time) AS last_heartbeat FROM heartbeat GROUP BY supplier, worker ORDER BY last_heartbeat LIMIT 5",
    ] {
        println!("    curl -s -H 'Authorization: Bearer {token}' {base}/api/v1/sql --data \"{q}\"");
    }
    // Jobs from the traces, placed by the allocator; the simulated GPUs follow their leases.
    let workload = (!args.no_workload).then(|| {
        let alloc = running.alloc.clone();
        let cfg = crate::workload::WorkloadConfig {
            trace_dir: args.trace_dir.clone(),
            ..Default::default()
        };
        (
            tokio::spawn(crate::workload::run(alloc.clone(), cfg)),
            tokio::spawn(crate::workload::follow_leases(alloc, fleet.sims.clone())),
        )
    });
    if workload.is_some() {
        println!("  jobs:       curl -s -H 'Authorization: Bearer {token}' {base}/api/v1/jobs");
        println!(
            "  earnings:   cargo run --release -- query --token {token} 'sum by (supplier) (last_over_time(rigwatch_earnings_total[1h]))'"
        );
    }
    let portal = running
        .auth
        .issue(Role::Supplier, Some("supplier-00"), None, "portal");
    if let Ok(p) = portal {
        let t = p.token;
        println!("  portal:     {base}/portal  (sign in as supplier-00 with {t})");
    }
    shutdown_signal().await;
    if let Some((a, b)) = workload {
        a.abort();
        b.abort();
    }
    fleet.stop().await;
    running.stop().await?;
    Ok(ExitCode::SUCCESS)
}

/// Options of `rigwatch bench agents`.
#[derive(Debug, Clone, Args)]
pub struct AgentBenchArgs {
    /// Simulated GPUs (8 per agent).
    #[arg(long, default_value_t = 1000)]
    pub gpus: usize,

    /// Suppliers the GPUs are spread over.
    #[arg(long, default_value_t = 25)]
    pub suppliers: usize,

    /// How long to run.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,

    /// Time between samples of each GPU.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
}

fn sum(fleet: &DemoFleet, f: impl Fn(&AgentStats) -> u64) -> u64 {
    fleet.stats().map(|s| f(s)).sum()
}

/// Runs the fleet against a fresh server and prints, every 5 s: GPU samples acknowledged
/// per second, mean and max sampling-to-acknowledgement lag, and the spool backlog. A
/// server that keeps up shows flat lag and an empty spool.
pub async fn bench_agents(args: AgentBenchArgs) -> anyhow::Result<ExitCode> {
    let tmp = tempfile::tempdir()?;
    let mut serve = ServeArgs::with_defaults(tmp.path().join("data"))?;
    serve.listen = "127.0.0.1:0".parse()?;
    serve.log = "warn".into();
    serve.admin_token = Some("bench-admin-token-not-a-secret".into());
    init_tracing(&serve.log);
    let running = start(&serve).await?;
    let base = format!("http://{}", running.addr);
    let fleet = DemoFleet::start(
        &running.auth,
        &base,
        args.suppliers,
        args.gpus,
        args.interval,
        &tmp.path().join("spool"),
        0.0,
    )?;
    eprintln!(
        "bench agents: {} GPUs, {} agents, interval {:?}, for {:?} (server and agents in one process)",
        args.gpus,
        fleet.agents.len(),
        args.interval,
        args.duration
    );
    println!(
        "{:>6} {:>12} {:>12} {:>12} {:>10}",
        "t_s", "samples/s", "mean_lag_ms", "max_lag_ms", "spooled"
    );
    let started = Instant::now();
    let mut last = (0u64, 0u64, 0u64);
    let mut window_means = Vec::new();
    while started.elapsed() < args.duration {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let acked = sum(&fleet, |s| s.batches_acked.load(Relaxed));
        let lag = sum(&fleet, |s| s.sum_lag_us.load(Relaxed));
        let rows = sum(&fleet, |s| s.gpu_rows.load(Relaxed));
        let max_lag = fleet
            .stats()
            .map(|s| s.max_lag_us.swap(0, Relaxed))
            .max()
            .unwrap_or(0);
        let spooled = sum(&fleet, |s| s.spool.batches.load(Relaxed));
        let d_acked = acked - last.0;
        let mean_ms = if d_acked > 0 {
            (lag - last.1) as f64 / d_acked as f64 / 1000.0
        } else {
            f64::NAN
        };
        window_means.push(mean_ms);
        println!(
            "{:>6.0} {:>12.0} {:>12.1} {:>12.1} {:>10}",
            started.elapsed().as_secs_f64(),
            (rows - last.2) as f64 / 5.0,
            mean_ms,
            max_lag as f64 / 1000.0,
            spooled
        );
        last = (acked, lag, rows);
    }
    let stats: Vec<Arc<AgentStats>> = fleet.stats().cloned().collect();
    fleet.stop().await;
    // Read after the agents stopped, so that produced and stored cover the same samples.
    let spooled: u64 = stats.iter().map(|s| s.spool.batches.load(Relaxed)).sum();
    let rows: u64 = stats.iter().map(|s| s.gpu_rows.load(Relaxed)).sum();
    let stored = crate::server::count_rows(&running.db, "gpu").await?;
    running.stop().await?;
    let half = window_means.len() / 2;
    let mean = |w: &[f64]| w.iter().sum::<f64>() / w.len().max(1) as f64;
    println!(
        "summary: {} GPUs at {:?}: {rows} samples produced, {stored} stored, {spooled} batches left in spools at stop; mean lag first half {:.1} ms, second half {:.1} ms",
        args.gpus,
        args.interval,
        mean(&window_means[..half]),
        mean(&window_means[half..]),
    );
    Ok(ExitCode::SUCCESS)
}
