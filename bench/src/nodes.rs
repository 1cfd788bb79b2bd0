//! `rigwatch bench nodes`: ingest and query throughput with 1, 2, 3... nodes sharing a real
//! PostgreSQL and SeaweedFS, all on this machine.
//!
//! With N nodes the cluster has N shards (`--shards N`) and every node owns one (`--mode
//! all`; node 1 takes shard 0, the primary). Writes (the simulated fleet's `gpu` rows, line
//! protocol, as an operator) are split by GPU: each GPU's rows always go to one node, into
//! its shard, as a supplier's agents' rows go to their shard; then a fixed mix of PromQL and
//! SQL runs round-robin on every node, each reading every shard.
//! `--one-shard` measures the other layout: one owner and N-1 query nodes (`--mode query`)
//! that pass their writes on to it. On one machine the nodes share its cores, so the figures
//! to compare are per CPU second (user + system time of every rigwatch process), not totals.
//! Also printed: how long after the last acknowledged write every node answers with all
//! rows, and the object store requests and bytes per million values (every node's /metrics).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt;

use crate::dataset::{FIELDS_PER_ROW, Fleet};
use crate::engines::{Postgres, S3_ENV, SeaweedFs};

/// Options of `rigwatch bench nodes`.
#[derive(Debug, Args)]
pub struct NodesArgs {
    /// Node counts to measure, one run each: N nodes owning a shard each (or, with
    /// `--one-shard`, the owner plus N-1 query nodes).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub nodes: Vec<usize>,

    /// GPUs in the simulated fleet.
    #[arg(long, default_value_t = 200)]
    pub gpus: usize,

    /// Samples per GPU (10 s apart).
    #[arg(long, default_value_t = 120)]
    pub ticks: u64,

    /// Ticks per write request.
    #[arg(long, default_value_t = 2)]
    pub ticks_per_request: u64,

    /// Requests in flight at once (writes, then queries).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,

    /// Queries in the query phase.
    #[arg(long, default_value_t = 300)]
    pub queries: usize,

    /// One shard: node 1 owns it and the others are query nodes, instead of one shard per
    /// node.
    #[arg(long)]
    pub one_shard: bool,

    /// Add a compaction node (`--mode compact`) beside the N nodes, which then never compact
    /// (`--mode ingest` for owners). Its CPU counts with theirs.
    #[arg(long)]
    pub compact_node: bool,
}

const TOKEN: &str = "bench-nodes-admin-token-not-a-secret";
const START_NS: i64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z
const INTERVAL_NS: i64 = 10_000_000_000;

/// A `rigwatch serve` child process.
struct Node {
    child: Child,
    base: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    async fn start(dir: &Path, args: &[&str]) -> anyhow::Result<Node> {
        std::fs::create_dir_all(dir)?;
        let log = dir.join("serve.log");
        let child = Command::new(std::env::current_exe()?)
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen", "127.0.0.1:0", "--log", "warn,rigwatch=info"])
            .args(["--max-body", "256MiB", "--admin-token", TOKEN])
            .args(args)
            .envs(S3_ENV)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let mut node = Node {
            child,
            base: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(addr) = text
                .lines()
                .find_map(|l| l.strip_prefix("rigwatch listening on "))
            {
                node.base = addr.trim().to_string();
                return Ok(node);
            }
            if let Some(status) = node.child.try_wait()? {
                bail!("a node exited with {status} before listening:\n{text}");
            }
            if Instant::now() > deadline {
                bail!("a node did not listen within 60 s:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// User plus system CPU seconds so far.
    fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which may hold spaces): utime is the 12th, stime
        // the 13th, in clock ticks (100 a second on Linux).
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<f64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0.0))
            .collect();
        (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
    }
}

/// One run's figures.
#[derive(Debug)]
struct Run {
    nodes: usize,
    values_per_s: f64,
    values_per_cpu_s: f64,
    visible_after_ms: f64,
    puts_per_m_values: f64,
    gets_per_m_values: f64,
    sent_bytes_per_value: f64,
    queries_per_s: f64,
    queries_per_cpu_s: f64,
}

pub async fn run(args: NodesArgs) -> anyhow::Result<ExitCode> {
    if args.nodes.is_empty() || args.nodes.contains(&0) {
        bail!("--nodes takes node counts of at least 1, e.g. 1,2,3");
    }
    if args.gpus == 0 || args.ticks == 0 || args.ticks_per_request == 0 || args.concurrency == 0 {
        bail!("--gpus, --ticks, --ticks-per-request and --concurrency must all be > 0");
    }
    let ticks = Fleet::new(args.gpus, 42).render_lp(START_NS, INTERVAL_NS, args.ticks);
    let bodies: Arc<Vec<String>> = Arc::new(
        ticks
            .chunks(args.ticks_per_request as usize)
            .map(|c| c.concat())
            .collect(),
    );
    let rows = args.gpus as u64 * args.ticks;
    let mut runs = Vec::new();
    for &n in &args.nodes {
        eprintln!("== {n} node(s): starting PostgreSQL, SeaweedFS and the nodes");
        runs.push(one_run(n, &args, &bodies, rows).await?);
    }
    println!(
        "\n{} GPUs x {} samples x {FIELDS_PER_ROW} fields = {} values; {} cores on this machine",
        args.gpus,
        args.ticks,
        rows * FIELDS_PER_ROW as u64,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "| nodes | ingest values/s | values per CPU s | all nodes see every row after | S3 PUT / M values | S3 GET / M values | bytes sent / value | queries/s | queries per CPU s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &runs {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} ms | {:.1} | {:.1} | {:.3} | {:.1} | {:.1} |",
            r.nodes,
            r.values_per_s,
            r.values_per_cpu_s,
            r.visible_after_ms,
            r.puts_per_m_values,
            r.gets_per_m_values,
            r.sent_bytes_per_value,
            r.queries_per_s,
            r.queries_per_cpu_s
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn one_run(
    n: usize,
    args: &NodesArgs,
    bodies: &Arc<Vec<String>>,
    rows: u64,
) -> anyhow::Result<Run> {
    let pg = Postgres::start()?;
    // A port picked free may be taken before SeaweedFS binds it: try again with new ones.
    let mut weed = SeaweedFs::start("rigwatch").await;
    for _ in 0..2 {
        if weed.is_ok() {
            break;
        }
        weed = SeaweedFs::start("rigwatch").await;
    }
    let weed = weed?;
    let tmp = tempfile::Builder::new()
        .prefix("rigwatch-bench-nodes-")
        .tempdir()?;
    let shared = [
        "--catalog",
        &pg.url,
        "--s3-bucket",
        "rigwatch",
        "--s3-endpoint",
        &weed.endpoint,
        "--s3-allow-http",
        "--persist-age",
        "10s",
    ];
    let shards = if args.one_shard { 1 } else { n }.to_string();
    let mut nodes = Vec::new();
    for i in 0..n {
        let id = format!("n{i}");
        let mut a: Vec<&str> = shared.to_vec();
        a.extend(["--node-id", &id, "--shards", &shards]);
        if i > 0 && args.one_shard {
            a.extend(["--mode", "query"]);
        } else if args.compact_node {
            a.extend(["--mode", "ingest"]);
        }
        let dir: PathBuf = tmp.path().join(&id);
        nodes.push(
            Node::start(&dir, &a)
                .await
                .with_context(|| format!("node {id}"))?,
        );
    }
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    if args.compact_node {
        let mut a: Vec<&str> = shared.to_vec();
        a.extend([
            "--node-id",
            "compactor",
            "--shards",
            &shards,
            "--mode",
            "compact",
        ]);
        let dir: PathBuf = tmp.path().join("compactor");
        nodes.push(Node::start(&dir, &a).await.context("the compaction node")?);
    }
    // Every node's object store traffic, the compaction node's too.
    let all_bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let client = reqwest::Client::builder().no_proxy().build()?;
    let cpu = |nodes: &[Node]| nodes.iter().map(Node::cpu_seconds).sum::<f64>();

    // Ingest: each series always through the same node.
    let requests: Vec<(usize, String)> = bodies
        .iter()
        .flat_map(|body| by_series(body, bases.len()).into_iter().enumerate())
        .filter(|(_, b)| !b.is_empty())
        .collect();
    let metrics_before = object_store_counts(&client, &all_bases).await?;
    let cpu0 = cpu(&nodes);
    let t = Instant::now();
    let mut results = futures::stream::iter(requests)
        .map(|(node, body)| {
            let client = client.clone();
            let url = format!("{}/api/v2/write?precision=ns", bases[node]);
            async move {
                let r = client
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .body(body)
                    .send()
                    .await?;
                anyhow::Ok(r.status())
            }
        })
        .buffer_unordered(args.concurrency);
    while let Some(r) = results.next().await {
        let status = r?;
        if status.as_u16() != 204 {
            bail!("a write answered {status}");
        }
    }
    let ingest_s = t.elapsed().as_secs_f64();
    let ingest_cpu = cpu(&nodes) - cpu0;
    let metrics_after = object_store_counts(&client, &all_bases).await?;

    // Until every node answers with every row.
    let t = Instant::now();
    for base in &bases {
        loop {
            if count_gpu_rows(&client, base).await == Some(rows) {
                break;
            }
            if t.elapsed() > Duration::from_secs(120) {
                bail!("{base} did not see all {rows} rows within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let visible_after_ms = t.elapsed().as_secs_f64() * 1000.0;

    // Queries, round-robin over the nodes.
    let end_s = (START_NS + (args.ticks as i64 - 1) * INTERVAL_NS) / 1_000_000_000;
    let start_s = START_NS / 1_000_000_000;
    let mix = query_mix(start_s, end_s);
    let cpu0 = cpu(&nodes);
    let t = Instant::now();
    let mut results = futures::stream::iter(0..args.queries)
        .map(|i| {
            let client = client.clone();
            let base = bases[i % bases.len()].clone();
            let q = mix[i % mix.len()].clone();
            async move {
                let r = match q {
                    Query::Prom(params) => {
                        client
                            .get(format!("{base}/api/v1/{}", params[0].1))
                            .query(&params[1..])
                            .bearer_auth(TOKEN)
                            .send()
                            .await?
                    }
                    Query::Sql(sql) => {
                        client
                            .post(format!("{base}/api/v1/sql"))
                            .bearer_auth(TOKEN)
                            .body(sql)
                            .send()
                            .await?
                    }
                };
                let status = r.status();
                let _ = r.bytes().await?;
                anyhow::Ok(status)
            }
        })
        .buffer_unordered(args.concurrency);
    while let Some(r) = results.next().await {
        let status = r?;
        if !status.is_success() {
            bail!("a query answered {status}");
        }
    }
    let query_s = t.elapsed().as_secs_f64();
    let query_cpu = cpu(&nodes) - cpu0;

    let values = (rows * FIELDS_PER_ROW as u64) as f64;
    let per_m = |k: &str| {
        (metrics_after.get(k).copied().unwrap_or(0.0)
            - metrics_before.get(k).copied().unwrap_or(0.0))
            / values
            * 1e6
    };
    let run = Run {
        nodes: n,
        values_per_s: values / ingest_s,
        values_per_cpu_s: values / ingest_cpu.max(0.01),
        visible_after_ms,
        puts_per_m_values: per_m("put"),
        gets_per_m_values: per_m("get"),
        sent_bytes_per_value: per_m("sent") / 1e6,
        queries_per_s: args.queries as f64 / query_s,
        queries_per_cpu_s: args.queries as f64 / query_cpu.max(0.01),
    };
    eprintln!("{run:?}");
    drop(nodes);
    Ok(run)
}

/// `body`'s lines split into `n` bodies by series (the line up to its first space), so that
/// every row of a series goes to the same node.
fn by_series(body: &str, n: usize) -> Vec<String> {
    let mut out = vec![String::with_capacity(body.len() / n + 64); n];
    for line in body.lines() {
        // The supplier routing's hash, applied to the series.
        let series = line.split(' ').next().unwrap_or(line);
        let node: usize = rigwatch_server::cluster::shard_of(series, n as u32)
            .parse()
            .expect("a shard is a number");
        let body = &mut out[node];
        body.push_str(line);
        body.push('\n');
    }
    out
}

#[derive(Debug, Clone)]
enum Query {
    /// (`endpoint`, then query parameters).
    Prom(Vec<(&'static str, String)>),
    Sql(String),
}

fn query_mix(start_s: i64, end_s: i64) -> Vec<Query> {
    let instant = |q: &str| {
        Query::Prom(vec![
            ("endpoint", "query".into()),
            ("query", q.into()),
            ("time", end_s.to_string()),
        ])
    };
    let range = |q: &str| {
        Query::Prom(vec![
            ("endpoint", "query_range".into()),
            ("query", q.into()),
            ("start", start_s.to_string()),
            ("end", end_s.to_string()),
            ("step", "60".into()),
        ])
    };
    vec![
        instant("avg(gpu_utilization)"),
        instant("avg by (model) (gpu_temperature)"),
        instant("topk(5, gpu_power_watts)"),
        range("avg(gpu_utilization)"),
        Query::Sql(
            "SELECT model, count(*) AS n, avg(utilization) AS u FROM gpu GROUP BY model".into(),
        ),
    ]
}

async fn count_gpu_rows(client: &reqwest::Client, base: &str) -> Option<u64> {
    let v: serde_json::Value = client
        .post(format!("{base}/api/v1/sql"))
        .bearer_auth(TOKEN)
        .body("SELECT count(*) AS n FROM gpu")
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v[0]["n"].as_u64()
}

/// Every node's object store counters, summed: `put`, `get` requests and bytes `sent`.
async fn object_store_counts(
    client: &reqwest::Client,
    bases: &[String],
) -> anyhow::Result<std::collections::HashMap<String, f64>> {
    let mut text = String::new();
    for base in bases {
        text += &client
            .get(format!("{base}/metrics"))
            .bearer_auth(TOKEN)
            .send()
            .await?
            .text()
            .await?;
    }
    let mut out = std::collections::HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value: f64 = value.parse().unwrap_or(0.0);
        let key = if name.starts_with("rigwatch_storage_object_store_requests_total") {
            if name.contains("op=\"put\"") {
                "put"
            } else if name.contains("op=\"get\"") {
                "get"
            } else {
                continue;
            }
        } else if name.starts_with("rigwatch_storage_object_store_sent_bytes_total") {
            "sent"
        } else {
            continue;
        };
        *out.entry(key.to_string()).or_insert(0.0) += value;
    }
    Ok(out)
}
