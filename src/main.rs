//! The `rigwatch` command line: parse arguments, call into the library crates.

mod agent_cli;
mod client_args;
mod dsl_cli;
mod job_cli;
mod query_cli;
mod rules_cli;
mod sim_cli;
mod sql_cli;
mod supplier_cli;

use std::process::ExitCode;

/// The process's allocator. glibc's malloc kept the memory of a finished persist (its
/// per-thread arenas fragment and are rarely trimmed); mimalloc returns freed pages to the
/// system promptly, which is what bounds the server's resident memory.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

/// rigwatch: telemetry, earnings and allocation for a GPU compute marketplace.
///
/// Start a server with `rigwatch serve`, or everything at once (server plus a simulated GPU
/// fleet) with `rigwatch demo`. Every option can also be set with its RIGWATCH_* environment
/// variable.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: writes, SQL, PromQL (Prometheus API), allocator, fault detection and
    /// alerts, the supplier portal, on a local data directory.
    Serve(rigwatch_server::ServeArgs),
    /// Run a server plus a simulated GPU fleet writing to it, and print the URLs to try.
    Demo(rigwatch_server::demo::DemoArgs),
    /// Run a SQL query against a running server and print the result as a table.
    Sql(sql_cli::SqlArgs),
    /// Run a pipe-DSL query (`gpus[5m] | stats avg(utilization) by model`) against a running
    /// server and print the result as a table.
    Dsl(dsl_cli::DslArgs),
    /// Run a query-language (PromQL) expression against a running server.
    Query(query_cli::QueryArgs),
    /// Submit, list, complete and cancel allocator jobs on a running server.
    Job(job_cli::JobArgs),
    /// Stream this machine's GPUs to a server (NVML, a dcgm-exporter scrape, or --simulate N).
    Agent(agent_cli::AgentArgs),
    /// Manage suppliers and their tokens in the data directory's auth file.
    Supplier(supplier_cli::SupplierArgs),
    /// Alerting rule files: `rigwatch rules check FILE`.
    Rules(rules_cli::RulesArgs),
    /// Benchmarks that print numbers (ingest throughput, bytes per value, peak RSS).
    #[command(subcommand)]
    Bench(rigwatch_bench::BenchCommand),
    /// Replay the openb trace through the placement policies and compare them.
    Sim(sim_cli::SimArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("rigwatch")
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => rigwatch_server::serve(args).await,
            Command::Demo(args) => rigwatch_server::demo::run(args).await,
            Command::Sql(args) => sql_cli::run(args).await,
            Command::Dsl(args) => dsl_cli::run(args).await,
            Command::Query(args) => query_cli::run(args).await,
            Command::Job(args) => job_cli::run(args).await,
            Command::Bench(cmd) => rigwatch_bench::run(cmd).await,
            Command::Agent(args) => agent_cli::run(args).await,
            Command::Supplier(args) => supplier_cli::run(args),
            Command::Rules(args) => rules_cli::run(args),
            Command::Sim(args) => sim_cli::run(args),
        }
    })
}
