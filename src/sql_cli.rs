//! `rigwatch sql`: send a query to a running server, print the result. `rigwatch dsl`
//! (`dsl_cli.rs`) sends its queries the same way.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

/// Options of `rigwatch sql`.
#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The SQL query (DataFusion dialect), e.g. 'SELECT count(*) FROM gpu'.
    pub query: String,

    #[command(flatten)]
    pub server: ServerArgs,
}

/// Where to send a query and how to print its answer.
#[derive(Debug, Args)]
pub struct ServerArgs {
    #[command(flatten)]
    pub conn: crate::client_args::Connection,

    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    /// An aligned text table.
    Table,
    Csv,
    Json,
}

pub async fn run(args: SqlArgs) -> anyhow::Result<ExitCode> {
    send("/api/v1/sql", args.query, &args.server).await
}

/// POSTs `query` to `path` and prints the answer: an aligned table (decoded from Arrow IPC),
/// or the server's CSV or JSON as is.
pub async fn send(path: &str, query: String, args: &ServerArgs) -> anyhow::Result<ExitCode> {
    let format = match args.format {
        OutputFormat::Table => "arrow",
        OutputFormat::Csv => "csv",
        OutputFormat::Json => "json",
    };
    let url = format!("{}{path}?format={format}", args.conn.base());
    let req = args
        .conn
        .auth(reqwest::Client::new().post(&url).body(query));
    let resp = req.send().await.with_context(|| {
        format!(
            "no rigwatch server answered at {} (start one with `rigwatch serve`)",
            args.conn.server
        )
    })?;
    let status = resp.status();
    let body = resp.bytes().await.context("reading the response")?;
    if !status.is_success() {
        let msg = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        bail!("query failed ({status}): {msg}");
    }
    match args.format {
        OutputFormat::Table => {
            let reader = arrow::ipc::reader::StreamReader::try_new(&body[..], None)
                .context("decoding the Arrow result")?;
            let batches = reader.collect::<Result<Vec<_>, _>>()?;
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
            eprintln!("{rows} row(s)");
        }
        _ => {
            use std::io::Write;
            std::io::stdout().write_all(&body)?;
            if !body.ends_with(b"\n") {
                println!();
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
