//! `rigwatch bench ingest`: the end-to-end ingest benchmark.
//!
//! Writes a deterministic GPU-fleet dataset (wide `gpu` rows, 1,000 GPUs, 10 s interval by
//! default) and prints: field values/s for the line-protocol parser alone, field values/s
//! ingested end to end over HTTP with fsync on, bytes per stored value after persist and
//! compaction, and peak RSS. Numbers, not pass/fail.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt;
use rigwatch_ingest::line_protocol::{self, Precision};
use rigwatch_storage::batch::WriteBatch;

use crate::dataset::{FIELDS_PER_ROW, Fleet};
use rigwatch_server::ServeArgs;

/// Options of `rigwatch bench ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// GPUs in the simulated fleet.
    #[arg(long, default_value_t = 1000)]
    pub gpus: usize,

    /// Samples per GPU (at 10 s, 360 is one hour).
    #[arg(long, default_value_t = 360)]
    pub ticks: u64,

    /// Ticks per HTTP request (each tick is one row per GPU).
    #[arg(long, default_value_t = 5)]
    pub ticks_per_request: u64,

    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,

    /// Data directory for the benchmark server (default: a fresh temporary directory).
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub(crate) async fn run(args: IngestArgs) -> anyhow::Result<ExitCode> {
    if args.gpus == 0 || args.ticks == 0 || args.ticks_per_request == 0 || args.concurrency == 0 {
        bail!("--gpus, --ticks, --ticks-per-request and --concurrency must all be > 0");
    }
    let interval_ns = 10_000_000_000i64;
    let start_ns = 1_767_225_600_000_000_000i64; // 2026-01-01T00:00:00Z
    eprintln!(
        "generating {} GPUs x {} samples ({} fields per row)...",
        args.gpus, args.ticks, FIELDS_PER_ROW
    );
    let ticks = Fleet::new(args.gpus, 42).render_lp(start_ns, interval_ns, args.ticks);
    let bodies: Vec<String> = ticks
        .chunks(args.ticks_per_request as usize)
        .map(|c| c.concat())
        .collect();
    let total_bytes: usize = bodies.iter().map(String::len).sum();
    let rows = args.gpus as u64 * args.ticks;
    let values = rows * FIELDS_PER_ROW as u64;

    // 1. Parser alone, one thread.
    let mut batch = WriteBatch::default();
    let t = Instant::now();
    for body in &bodies {
        batch = WriteBatch::with_capacity(batch.len(), body.len());
        let errors = line_protocol::parse(body, Precision::Ns, 0, &mut batch);
        if !errors.is_empty() {
            bail!("generated data failed to parse: {}", errors[0]);
        }
    }
    let parse_secs = t.elapsed().as_secs_f64();

    // 2. End to end over HTTP, fsync on, authenticated like any writer.
    const BENCH_TOKEN: &str = "bench-admin-token-not-a-secret";
    let tmp = tempfile::tempdir()?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().join("data"));
    let mut serve = ServeArgs::with_defaults(data_dir)?;
    serve.listen = "127.0.0.1:0".parse()?;
    serve.max_body = bytesize::ByteSize::mib(256);
    serve.memory_budget = bytesize::ByteSize::gib(4);
    // One persist at the end, measured on its own.
    serve.persist_bytes = bytesize::ByteSize::gib(2);
    serve.persist_age = Duration::from_secs(3600);
    serve.compaction_interval = Duration::from_secs(3600);
    serve.log = "warn".into();
    serve.admin_token = Some(BENCH_TOKEN.into());
    let running = rigwatch_server::start(&serve).await?;
    let url = format!("http://{}/api/v2/write?precision=ns", running.addr);
    let client = reqwest::Client::new();
    eprintln!(
        "writing {} requests ({:.1} MiB) with {} in flight...",
        bodies.len(),
        total_bytes as f64 / (1 << 20) as f64,
        args.concurrency
    );
    let bodies = Arc::new(bodies);
    let t = Instant::now();
    let mut results = futures::stream::iter(0..bodies.len())
        .map(|i| {
            let client = client.clone();
            let url = url.clone();
            let bodies = bodies.clone();
            async move {
                let resp = client
                    .post(&url)
                    .bearer_auth(BENCH_TOKEN)
                    .body(bodies[i].clone())
                    .send()
                    .await?;
                anyhow::Ok(resp.status())
            }
        })
        .buffer_unordered(args.concurrency);
    while let Some(r) = results.next().await {
        let status = r?;
        if status.as_u16() != 204 {
            bail!("write answered {status}");
        }
    }
    let e2e_secs = t.elapsed().as_secs_f64();

    // 3. Persist + compact, then measure what is stored.
    let t = Instant::now();
    let persisted = running.db.persist().await?;
    let compacted = running.db.compact_with(2).await?;
    let tiered = running.db.compact_tiers().await?;
    let persist_secs = t.elapsed().as_secs_f64();
    // The `gpu` table's files only: the server's own tasks may have written a few rows of
    // their own meanwhile (fault detection sees the old samples' GPUs go offline).
    let files = running.db.files();
    let gpu_files = || files.iter().filter(|f| f.table == "gpu");
    let stored: u64 = gpu_files().map(|f| f.size).sum();
    let stored_rows: u64 = gpu_files().map(|f| f.rows).sum();
    let count = rigwatch_server::count_rows(&running.db, "gpu").await?;
    running
        .stop()
        .await
        .context("stopping the benchmark server")?;
    if count != rows || stored_rows != rows {
        bail!("stored {count} rows (files say {stored_rows}), expected {rows}");
    }

    let parse_rate = values as f64 / parse_secs;
    let e2e_rate = values as f64 / e2e_secs;
    let bpv = stored as f64 / values as f64;
    println!(
        "rigwatch bench ingest: {} GPUs x {} samples = {rows} rows, {values} field values",
        args.gpus, args.ticks
    );
    println!(
        "  line protocol input          {:>12.1} MiB ({:.1} bytes/value)",
        total_bytes as f64 / (1 << 20) as f64,
        total_bytes as f64 / values as f64
    );
    println!(
        "  parser alone (1 thread)      {:>12.0} values/s   ({:.2} s)",
        parse_rate, parse_secs
    );
    println!(
        "  end to end, HTTP, fsync on   {:>12.0} values/s   ({:.2} s, {} req x {} in flight)   budget 1,000,000: {:.2}x",
        e2e_rate,
        e2e_secs,
        bodies.len(),
        args.concurrency,
        e2e_rate / 1e6
    );
    println!(
        "  persist + compact            {:>12.2} s          ({} files -> {} after compaction, {} after {} closed tier(s))",
        persist_secs,
        persisted.files,
        persisted.files - compacted.files_in + compacted.files_out,
        persisted.files - compacted.files_in + compacted.files_out - tiered.files_in + tiered.tiers,
        tiered.tiers
    );
    println!(
        "  stored after persist         {:>12.3} bytes/value ({} bytes)   budget 1.5: {:.2}x",
        bpv,
        stored,
        1.5 / bpv
    );
    if let Some(rss) = peak_rss_mib() {
        println!("  peak RSS (whole process)     {:>12.1} MiB", rss);
    }
    Ok(ExitCode::SUCCESS)
}
