//! `rigwatch dsl`: send a pipe-DSL query to a running server, print the result as a table.

use std::process::ExitCode;

use clap::Args;

use crate::sql_cli::{ServerArgs, send};

/// Options of `rigwatch dsl`.
#[derive(Debug, Args)]
pub struct DslArgs {
    /// The query, e.g. 'gpus[5m] | stats avg(utilization) by model' (docs/dsl.md is the
    /// language reference; prefix `explain` to print the SQL it runs).
    pub query: String,

    #[command(flatten)]
    pub server: ServerArgs,
}

pub async fn run(args: DslArgs) -> anyhow::Result<ExitCode> {
    send("/api/v1/dsl", args.query, &args.server).await
}
