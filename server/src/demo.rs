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
use rigwatch_ingest::agent::lag::{LagHistogram, quantile};
use rigwatch_ingest::agent::sim::Simulator;
use rigwatch_ingest::agent::{AgentConfig, AgentHandle, AgentStats};
use rigwatch_storage::auth::{AuthStore, Role};

use crate::{ServeArgs, init_tracing, shutdown_signal, start};

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
        let alloc = running
            .alloc
            .clone()
            .expect("the demo's server runs the allocator");
        let cfg = crate::workload::WorkloadConfig {
            trace_dir: args.trace_dir.clone(),
            ..Default::default()
        };
        (
            rigwatch_common::task::spawn(crate::workload::run(alloc.clone(), cfg)),
            rigwatch_common::task::spawn(crate::workload::follow_leases(alloc, fleet.sims.clone())),
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
    /// Simulated GPUs (8 per agent) in the first phase.
    #[arg(long, default_value_t = 1000)]
    pub gpus: usize,

    /// Suppliers the GPUs are spread over.
    #[arg(long, default_value_t = 25)]
    pub suppliers: usize,

    /// How long the first phase runs.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,

    /// Time between samples of each GPU.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,

    /// A second phase: stop agents until this many GPUs are left, and measure how long the
    /// server takes to catch up (acknowledgement lag back under 1 s, the remaining agents'
    /// spools drained). Use it with a first phase past the server's capacity.
    #[arg(long)]
    pub recover_gpus: Option<usize>,

    /// Longest the second phase runs.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub recover_for: Duration,

    /// Length of a measurement window (one printed line each).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub window: Duration,
}

fn sum<'a>(
    stats: impl Iterator<Item = &'a Arc<AgentStats>>,
    f: impl Fn(&AgentStats) -> u64,
) -> u64 {
    stats.map(|s| f(s)).sum()
}

/// One measurement window of `bench agents`.
#[derive(Debug, Clone, Copy)]
struct Window {
    t_s: f64,
    samples_per_s: f64,
    mean_lag_ms: f64,
    spooled_running: u64,
}

/// Counters read at a window's end, to difference with the previous one.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    acked: u64,
    lag_us: u64,
    rows_acked: u64,
}

/// GPU samples acknowledged so far: batches acknowledged × the GPUs of their agent.
fn totals(stats: &[Arc<AgentStats>], gpus_per_agent: &[u64]) -> Totals {
    let mut t = Totals::default();
    for (s, g) in stats.iter().zip(gpus_per_agent) {
        let acked = s.batches_acked.load(Relaxed);
        t.acked += acked;
        t.lag_us += s.sum_lag_us.load(Relaxed);
        t.rows_acked += acked * g;
    }
    t
}

/// Runs the fleet against a fresh server and prints, every window: GPU samples
/// acknowledged per second, mean and max sampling-to-acknowledgement lag, and the spool
/// backlog. A server that keeps up shows flat lag and an empty spool; one past its capacity
/// should keep acknowledging at its capacity (the plateau) and refuse the rest with 503, so
/// that agents spool and back off. With `--recover-gpus`, a second phase drops the load and
/// reports how long the backlog takes to clear.
pub async fn bench_agents(args: AgentBenchArgs) -> anyhow::Result<ExitCode> {
    let tmp = tempfile::tempdir()?;
    let mut serve = ServeArgs::with_defaults(tmp.path().join("data"))?;
    serve.listen = "127.0.0.1:0".parse()?;
    serve.log = "warn".into();
    serve.admin_token = Some("bench-admin-token-not-a-secret".into());
    init_tracing(&serve.log);
    let running = start(&serve).await?;
    let base = format!("http://{}", running.addr);
    // Real agents keep their spools on their own machines' disks: here they go to memory
    // (tmpfs) when there is one, so that a thousand agents' spool fsyncs do not queue on
    // the disk behind the server's WAL, which no real fleet would do.
    let spool_root = match tempfile::tempdir_in("/dev/shm") {
        Ok(d) => d,
        Err(_) => tempfile::tempdir_in(tmp.path())?,
    };
    let mut fleet = DemoFleet::start(
        &running.auth,
        &base,
        args.suppliers,
        args.gpus,
        args.interval,
        spool_root.path(),
        0.0,
    )?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "bench agents: {} GPUs, {} agents, interval {:?}, for {:?}; server and agents in one process on {cores} cores; write queue: {} in flight, {} queued, {} wait",
        args.gpus,
        fleet.agents.len(),
        args.interval,
        args.duration,
        serve.max_concurrent_writes,
        serve.max_queued_writes,
        serve.write_queue_timeout,
    );
    println!(
        "{:>6} {:>6} {:>12} {:>12} {:>12} {:>12} {:>10}",
        "phase", "t_s", "samples/s", "mean_lag_ms", "p99_lag_ms", "max_lag_ms", "spooled"
    );
    let all: Vec<Arc<AgentStats>> = fleet.stats().cloned().collect();
    // Measure the steady state: first every agent registers (each registration is a
    // durable write of the GPU claims, one at a time).
    let registering = Instant::now();
    while all.iter().any(|s| !s.registered.load(Relaxed))
        && registering.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let registered = all.iter().filter(|s| s.registered.load(Relaxed)).count();
    eprintln!(
        "{registered} of {} agents registered in {:.1} s; spools in {}",
        all.len(),
        registering.elapsed().as_secs_f64(),
        spool_root.path().display()
    );
    // The simulator gives each agent up to 8 GPUs; the last of a supplier may have fewer.
    let gpus_per_agent: Vec<u64> = fleet.sims.iter().map(|s| s.len() as u64).collect();
    let started = Instant::now();
    let mut last = Totals::default();
    let mut last_hist = LagHistogram::counts();
    let mut windows: Vec<(u8, Window)> = Vec::new();
    let mut running_agents = all.len();
    let mut phase = 1u8;
    let mut phase_started = started;
    loop {
        let limit = if phase == 1 {
            args.duration
        } else {
            args.recover_for
        };
        if phase_started.elapsed() >= limit {
            if phase == 1
                && let Some(keep_gpus) = args.recover_gpus
            {
                let keep = keep_gpus.div_ceil(8).min(fleet.agents.len());
                let dropped = fleet.agents.split_off(keep);
                eprintln!(
                    "phase 2: stopping {} agents, {} keep running",
                    dropped.len(),
                    keep
                );
                DemoFleet {
                    agents: dropped,
                    gpus: 0,
                    sims: Vec::new(),
                }
                .stop()
                .await;
                running_agents = keep;
                phase = 2;
                phase_started = Instant::now();
                continue;
            }
            break;
        }
        tokio::time::sleep(args.window).await;
        let now = totals(&all, &gpus_per_agent);
        let max_lag = all
            .iter()
            .map(|s| s.max_lag_us.swap(0, Relaxed))
            .max()
            .unwrap_or(0);
        let mut hist = LagHistogram::counts();
        for s in &all {
            s.lag.add_to(&mut hist);
        }
        let in_window: Vec<u64> = hist.iter().zip(&last_hist).map(|(a, b)| a - b).collect();
        let p99 = quantile(&in_window, 0.99).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
        last_hist = hist;
        let spooled_running = sum(all[..running_agents].iter(), |s| {
            s.spool.batches.load(Relaxed)
        });
        let d_acked = now.acked - last.acked;
        let w = Window {
            t_s: started.elapsed().as_secs_f64(),
            samples_per_s: (now.rows_acked - last.rows_acked) as f64 / args.window.as_secs_f64(),
            mean_lag_ms: if d_acked > 0 {
                (now.lag_us - last.lag_us) as f64 / d_acked as f64 / 1000.0
            } else {
                f64::NAN
            },
            spooled_running,
        };
        println!(
            "{:>6} {:>6.0} {:>12.0} {:>12.1} {:>12.1} {:>12.1} {:>10}",
            phase,
            w.t_s,
            w.samples_per_s,
            w.mean_lag_ms,
            p99,
            max_lag as f64 / 1000.0,
            w.spooled_running
        );
        windows.push((phase, w));
        last = now;
    }
    fleet.stop().await;
    // Read after the agents stopped, so that produced and stored cover the same samples.
    let spooled: u64 = sum(all.iter(), |s| s.spool.batches.load(Relaxed));
    let rows: u64 = sum(all.iter(), |s| s.gpu_rows.load(Relaxed));
    let acked_rows = totals(&all, &gpus_per_agent).rows_acked;
    let stored = crate::count_rows(&running.db, "gpu").await?;
    let refused = running.admission_refusals();
    running.stop().await?;

    // The plateau: acknowledged samples/s over phase 1 after its first window (ramp-up).
    let phase1: Vec<Window> = windows
        .iter()
        .filter(|(p, _)| *p == 1)
        .map(|(_, w)| *w)
        .collect();
    let steady = if phase1.len() > 1 {
        &phase1[1..]
    } else {
        &phase1[..]
    };
    let mut rates: Vec<f64> = steady.iter().map(|w| w.samples_per_s).collect();
    rates.sort_by(f64::total_cmp);
    let median = rates.get(rates.len() / 2).copied().unwrap_or(0.0);
    let lowest = rates.first().copied().unwrap_or(0.0);
    let offered = args.gpus as f64 / args.interval.as_secs_f64();
    println!(
        "summary: {} GPUs at {:?} offer {offered:.0} samples/s; acknowledged (median of phase-1 windows after the first) {median:.0} samples/s, lowest window {lowest:.0}: {:.0} samples/s per core",
        args.gpus,
        args.interval,
        median / cores as f64,
    );
    let mut hist = LagHistogram::counts();
    for s in &all {
        s.lag.add_to(&mut hist);
    }
    let ms = |q: f64| quantile(&hist, q).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    println!(
        "summary: {rows} samples produced, {acked_rows} acknowledged, {stored} stored, {spooled} batches left in spools at stop; {refused} write requests refused with 503 by admission control; acknowledgement lag p50 {:.1} ms, p99 {:.1} ms (bucket bounds, within 19 %)",
        ms(0.5),
        ms(0.99)
    );
    if args.recover_gpus.is_some() {
        let phase2: Vec<Window> = windows
            .iter()
            .filter(|(p, _)| *p == 2)
            .map(|(_, w)| *w)
            .collect();
        let p2_start = phase1.last().map_or(0.0, |w| w.t_s);
        match phase2
            .iter()
            .find(|w| w.mean_lag_ms < 1_000.0 && w.spooled_running == 0)
        {
            Some(w) => println!(
                "summary: recovery: {:.0} s after the load dropped, lag {:.1} ms and the running agents' spools empty",
                w.t_s - p2_start,
                w.mean_lag_ms
            ),
            None => println!(
                "summary: recovery: not within {:?} (last window: lag {:.1} ms, {} batches spooled)",
                args.recover_for,
                phase2.last().map_or(f64::NAN, |w| w.mean_lag_ms),
                phase2.last().map_or(0, |w| w.spooled_running)
            ),
        }
    }
    anyhow::ensure!(
        stored >= acked_rows,
        "{acked_rows} samples were acknowledged but only {stored} are stored"
    );
    Ok(ExitCode::SUCCESS)
}
