//! `rigwatch job`: submit, list, show, complete and cancel allocator jobs on a running server.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// Options of `rigwatch job`.
#[derive(Debug, Args)]
pub struct JobArgs {
    #[command(subcommand)]
    pub command: JobCommand,

    #[command(flatten)]
    pub conn: crate::client_args::Connection,
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Queue a job; it starts as soon as the allocator finds room.
    Submit {
        /// Whole GPUs on one worker (1-8).
        #[arg(long, conflicts_with = "milli")]
        gpus: Option<u8>,
        /// A share of one GPU in thousandths (1-999), e.g. 250 for a quarter.
        #[arg(long)]
        milli: Option<u16>,
        /// Acceptable GPU models (repeatable); any when not given.
        #[arg(long = "model")]
        models: Vec<String>,
        /// Minimum memory per GPU, MiB.
        #[arg(long, default_value_t = 0)]
        min_memory_mib: u32,
        /// Higher runs first.
        #[arg(long, default_value_t = 0)]
        priority: i32,
        /// Expected run time, e.g. 2h (helps placement; not enforced).
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
        /// Highest acceptable price per GPU-hour, in currency units with up to six decimals
        /// (e.g. 2.50).
        #[arg(long, value_parser = parse_price)]
        price_cap: Option<i64>,
    },
    /// Every job with its state.
    List,
    /// One job with its leases.
    Show { id: u64 },
    /// Mark a running job completed (its leases end now).
    Complete { id: u64 },
    /// Cancel a queued or running job.
    Cancel { id: u64 },
}

/// `--price-cap`: a decimal amount, kept in micro-units.
fn parse_price(s: &str) -> Result<i64, String> {
    rigwatch_common::money::parse_micro(s).map_err(|e| e.to_string())
}

pub async fn run(args: JobArgs) -> anyhow::Result<ExitCode> {
    let base = args.conn.base().to_string();
    let client = reqwest::Client::new();
    let auth = |r: reqwest::RequestBuilder| args.conn.auth(r);
    let req = match &args.command {
        JobCommand::Submit {
            gpus,
            milli,
            models,
            min_memory_mib,
            priority,
            duration,
            price_cap,
        } => {
            if gpus.is_none() && milli.is_none() {
                bail!(
                    "say how much GPU the job needs: --gpus N (whole GPUs) or --milli M (thousandths of one)"
                );
            }
            let body = json!({
                "gpus": gpus,
                "gpu_milli": milli,
                "models": models,
                "min_gpu_memory_mib": min_memory_mib,
                "priority": priority,
                "expected_duration_s": duration.map(|d| d.as_secs()).unwrap_or(0),
                "price_cap_micro_per_gpu_hour": price_cap,
            });
            client.post(format!("{base}/api/v1/jobs")).json(&body)
        }
        JobCommand::List => client.get(format!("{base}/api/v1/jobs")),
        JobCommand::Show { id } => client.get(format!("{base}/api/v1/jobs/{id}")),
        JobCommand::Complete { id } => client.post(format!("{base}/api/v1/jobs/{id}/complete")),
        JobCommand::Cancel { id } => client.delete(format!("{base}/api/v1/jobs/{id}")),
    };
    let resp = auth(req).send().await.with_context(|| {
        format!("no rigwatch server answered at {base} (start one with `rigwatch serve`)")
    })?;
    let status = resp.status();
    let body: Value = resp
        .json()
        .await
        .context("the server's answer is not JSON")?;
    if !status.is_success() {
        bail!(
            "{status}: {}",
            body["error"].as_str().unwrap_or("no message")
        );
    }
    match &body["data"] {
        Value::Array(jobs) => {
            println!(
                "{:>6}  {:<10}  {:<14}  {:>6}  {:>8}  leases",
                "id", "state", "demand", "prio", "restarts"
            );
            for j in jobs {
                println!("{}", line(j));
            }
            eprintln!("{} job(s)", jobs.len());
        }
        j => println!("{}", serde_json::to_string_pretty(j)?),
    }
    Ok(ExitCode::SUCCESS)
}

fn line(j: &Value) -> String {
    let demand = &j["job"]["demand"];
    let demand = if let Some(n) = demand.get("whole") {
        format!("{n} GPU")
    } else if let Some(m) = demand.get("fraction") {
        format!("{m}/1000 GPU")
    } else {
        demand.to_string()
    };
    format!(
        "{:>6}  {:<10}  {:<14}  {:>6}  {:>8}  {}",
        j["job"]["id"],
        j["state"].as_str().unwrap_or(""),
        demand,
        j["job"]["priority"],
        j["restarts"].as_u64().unwrap_or(0),
        j["leases"]
    )
}
