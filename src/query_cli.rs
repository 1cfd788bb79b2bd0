//! `rigwatch query`: run a query-language expression against a running server and print it.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde_json::Value;

/// Options of `rigwatch query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The expression (PromQL), e.g. 'avg by (model) (gpu_utilization)'.
    pub expr: String,

    /// Evaluation time of an instant query: Unix seconds or RFC 3339 (default: now).
    #[arg(long, conflicts_with_all = ["start", "end"])]
    pub time: Option<String>,

    /// Start of a range query (Unix seconds or RFC 3339); makes this a range query.
    #[arg(long, requires = "end")]
    pub start: Option<String>,

    /// End of a range query.
    #[arg(long, requires = "start")]
    pub end: Option<String>,

    /// Resolution of a range query: seconds or a duration such as 1m.
    #[arg(long, default_value = "1m")]
    pub step: String,

    #[command(flatten)]
    pub conn: crate::client_args::Connection,

    /// Output: a table of series, or the server's JSON as is.
    #[arg(long, value_enum, default_value_t = QueryFormat::Table)]
    pub format: QueryFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum QueryFormat {
    Table,
    Json,
}

pub async fn run(args: QueryArgs) -> anyhow::Result<ExitCode> {
    let base = args.conn.base();
    let (path, mut form) = match (&args.start, &args.end) {
        (Some(s), Some(e)) => (
            "query_range",
            vec![
                ("start", s.clone()),
                ("end", e.clone()),
                ("step", args.step.clone()),
            ],
        ),
        _ => (
            "query",
            args.time
                .iter()
                .map(|t| ("time", t.clone()))
                .collect::<Vec<_>>(),
        ),
    };
    form.push(("query", args.expr.clone()));
    let req = args.conn.auth(
        reqwest::Client::new()
            .post(format!("{base}/api/v1/{path}"))
            .form(&form),
    );
    let resp = req.send().await.with_context(|| {
        format!("no rigwatch server answered at {base} (start one with `rigwatch serve`)")
    })?;
    let status = resp.status();
    let body: Value = resp
        .json()
        .await
        .context("the server's answer is not JSON")?;
    if body["status"] != "success" {
        bail!(
            "query failed ({status}, {}): {}",
            body["errorType"].as_str().unwrap_or("?"),
            body["error"].as_str().unwrap_or("no message")
        );
    }
    if let QueryFormat::Json = args.format {
        println!("{body}");
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", render(&body["data"]));
    for w in body["warnings"].as_array().into_iter().flatten() {
        eprintln!("warning: {}", w.as_str().unwrap_or_default());
    }
    Ok(ExitCode::SUCCESS)
}

fn metric(m: &Value) -> String {
    let Some(obj) = m.as_object() else {
        return "{}".into();
    };
    let name = obj.get("__name__").and_then(Value::as_str).unwrap_or("");
    let labels: Vec<String> = obj
        .iter()
        .filter(|(k, _)| *k != "__name__")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!("{name}{{{}}}", labels.join(", "))
}

/// A result as text: one line per sample of a vector, one block per series of a matrix.
fn render(data: &Value) -> String {
    let mut out = String::new();
    let result = &data["result"];
    match data["resultType"].as_str() {
        Some("vector") => {
            let rows = result.as_array().cloned().unwrap_or_default();
            let width = rows
                .iter()
                .map(|r| metric(&r["metric"]).len())
                .max()
                .unwrap_or(0);
            for r in &rows {
                let _ = writeln!(
                    out,
                    "{:<width$}  {}",
                    metric(&r["metric"]),
                    r["value"][1].as_str().unwrap_or("")
                );
            }
            let _ = writeln!(out, "({} series)", rows.len());
        }
        Some("matrix") => {
            let series = result.as_array().cloned().unwrap_or_default();
            for s in &series {
                let _ = writeln!(out, "{}", metric(&s["metric"]));
                for p in s["values"].as_array().into_iter().flatten() {
                    let _ = writeln!(out, "  {}  {}", p[0], p[1].as_str().unwrap_or(""));
                }
            }
            let _ = writeln!(out, "({} series)", series.len());
        }
        Some(_) => {
            let _ = writeln!(out, "{}", result[1].as_str().unwrap_or(""));
        }
        None => {
            let _ = writeln!(out, "{data}");
        }
    }
    out
}
