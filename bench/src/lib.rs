//! The benchmarks behind `rigwatch bench`: numbers and ratios against peers, never pass/fail
//! on timing (a benchmark fails only when answers disagree).
//!
//! - [`ingest`]: parser and end-to-end ingest throughput, bytes per value, peak RSS.
//! - [`compare`]: one dataset and one PromQL list against Prometheus and VictoriaMetrics.
//! - [`dsl`]: what a pipe-DSL query costs over the SQL it lowers to.
//! - [`nodes`]: ingest and query throughput with several nodes on PostgreSQL and SeaweedFS.
//! - [`dataset`]: the deterministic simulated fleet they load; [`engines`]: PostgreSQL and
//!   SeaweedFS started on loopback (also used by the multi-node tests).

use std::process::ExitCode;

use clap::Subcommand;

pub mod compare;
pub mod dataset;
pub mod dsl;
pub mod engines;
pub mod ingest;
pub mod nodes;

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Ingest throughput (parser alone and end to end over HTTP), storage size, peak RSS.
    Ingest(ingest::IngestArgs),
    /// Simulated GPUs streaming through real agents over HTTP: does one server keep up?
    Agents(rigwatch_server::demo::AgentBenchArgs),
    /// One dataset and one PromQL list against rigwatch, Prometheus and VictoriaMetrics.
    Compare(crate::compare::CompareArgs),
    /// What a pipe-DSL query costs over the SQL it lowers to (the budget: at most 10 % more).
    ///
    /// Loads a simulated fleet into an in-process store (gpu telemetry, leases, earnings,
    /// jobs, faults, heartbeats; the older half persisted to Parquet, the newer half in the
    /// buffer) and, for each query, times `rigwatch_query::dsl::run` (parse, catalog lookup,
    /// lowering, execution: what /api/v1/dsl does) against `QueryService::sql_scoped` running
    /// the SQL that the query's `explain` prints (what /api/v1/sql does), as the operator and
    /// as one supplier. HTTP and encoding are left out: they are the same code on both routes.
    /// The two sides alternate (A B, B A, ...) and their medians are compared; `lower` is the
    /// median of `... | explain` alone. The `promql(...)` example has no SQL route equivalent
    /// and is shown beside its source alone, outside the ratio. Exits non-zero when the DSL
    /// and its SQL answer differently; a worst ratio above 1.10 is a warning, or a failure
    /// with --max-ratio.
    Dsl(crate::dsl::DslBenchArgs),
    /// Ingest and query throughput with 1, 2, 3... nodes sharing a real PostgreSQL and
    /// SeaweedFS on this machine (the owner plus query nodes): values and queries per second
    /// and per CPU second, how soon every node sees every row, and object store requests and
    /// bytes per million values. Needs PostgreSQL and SeaweedFS installed.
    Nodes(crate::nodes::NodesArgs),
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Ingest(args) => ingest::run(args).await,
        BenchCommand::Agents(args) => rigwatch_server::demo::bench_agents(args).await,
        BenchCommand::Compare(args) => crate::compare::run(args).await,
        BenchCommand::Dsl(args) => crate::dsl::run(args).await,
        BenchCommand::Nodes(args) => crate::nodes::run(args).await,
    }
}
