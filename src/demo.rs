//! `rigwatch demo`: one process running the server plus a simulated GPU fleet.

use std::time::Duration;

use clap::Args;

use crate::fleet;
use crate::server::{ServeArgs, init_tracing, shutdown_signal, start};

/// Options of `rigwatch demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub serve: ServeArgs,

    /// Simulated GPUs in the demo fleet.
    #[arg(long, env = "RIGWATCH_DEMO_GPUS", default_value_t = 64)]
    pub gpus: usize,

    /// Seconds between samples of the simulated fleet.
    #[arg(long, env = "RIGWATCH_DEMO_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<std::process::ExitCode> {
    init_tracing(&args.serve.log);
    let running = start(&args.serve).await?;
    let base = format!("http://{}", running.addr);
    println!(
        "rigwatch demo: server on {base}, {} simulated GPUs every {:?}",
        args.gpus, args.interval
    );
    println!("  health:  {base}/health");
    println!("  metrics: {base}/metrics");
    println!(
        "  SQL:     curl -s {base}/api/v1/sql --data 'SELECT model, avg(utilization) FROM gpu GROUP BY model'"
    );
    println!("  CLI:     cargo run --release -- sql --url {base} 'SELECT count(*) FROM gpu'");
    let db = running.db.clone();
    let fleet = fleet::Fleet::new(args.gpus, 7);
    let interval = args.interval;
    let writer = tokio::spawn(async move { fleet::run_live(&db, fleet, interval).await });
    shutdown_signal().await;
    writer.abort();
    running.stop().await?;
    Ok(std::process::ExitCode::SUCCESS)
}
