//! `rigwatch bench dsl`: what a pipe-DSL query costs over the SQL it lowers to.
//!
//! ```text
//!  Fleet (bench/src/dataset.rs) + leases, earnings, jobs, faults, heartbeats (this file)
//!        │ older half written, then persisted to Parquet; newer half left in the buffer
//!        ▼
//!   Db (temporary directory) ── QueryService ──┬── rigwatch_query::dsl::run(text)
//!                                              │     parse, catalog, lowering, execution
//!                                              └── QueryService::sql_scoped(sql)
//!                                                    the SQL that `text | explain` printed
//! ```
//!
//! Both sides run in this process with the same service, session cache and limits as the
//! server's `/api/v1/dsl` and `/api/v1/sql` routes (HTTP and encoding left out: they are the
//! same code for both). Each query is timed as the operator and as one supplier, the two
//! sides alternating (A B, B A, …) so that drift cancels; medians are compared. Answers
//! must agree (else the command fails); a worst ratio above 1.10 is a warning, or a failure
//! with `--max-ratio`.

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type, Float64Type, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use clap::{Args, ValueEnum};
use rigwatch_ingest::line_protocol::{self, Precision};
use rigwatch_query::QueryService;
use rigwatch_query::prometheus::PromOptions;
use rigwatch_storage::batch::{FieldValue, WriteBatch};
use rigwatch_storage::{Db, DbConfig, WriteOptions};

use crate::dataset::Fleet;

const INTERVAL_NS: i64 = 10_000_000_000;
const FLEET_SEED: u64 = 42;
/// The issue's budget: a DSL query costs at most this much more than its SQL.
const BUDGET: f64 = 1.10;
/// Relative tolerance for floating-point answers (aggregation order may differ).
const REL_TOL: f64 = 1e-9;
/// Ticks per write while loading.
const TICKS_PER_WRITE: usize = 30;

/// Dataset size presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Size {
    /// 40 GPUs x 20 minutes, 15 iterations (CI: a debug build in well under a minute).
    Ci,
    /// 200 GPUs x 60 minutes, 20 iterations.
    Default,
}

impl Size {
    /// (GPUs, minutes, iterations).
    fn preset(self) -> (usize, u64, usize) {
        match self {
            Size::Ci => (40, 20, 15),
            Size::Default => (200, 60, 20),
        }
    }
}

/// Options of `rigwatch bench dsl`.
#[derive(Debug, Args)]
pub struct DslBenchArgs {
    /// Dataset preset; --gpus, --minutes and --iterations override its parts.
    #[arg(long, value_enum, default_value_t = Size::Default)]
    pub size: Size,

    /// GPUs in the simulated fleet (32 per supplier, 8 per worker; at least 8).
    #[arg(long)]
    pub gpus: Option<usize>,

    /// Minutes of telemetry, one sample every 10 s, ending now (at least 10).
    #[arg(long)]
    pub minutes: Option<u64>,

    /// Timed runs of each side of each query (after untimed runs whose answers are compared).
    #[arg(long)]
    pub iterations: Option<usize>,

    /// Fail (exit 1) when the worst DSL/SQL ratio is above this. Without it a ratio above
    /// 1.10 is only a warning: timings on a shared machine are noisy.
    #[arg(long)]
    pub max_ratio: Option<f64>,

    /// The supplier whose scoped session is timed beside the operator's.
    #[arg(long, default_value = "supplier-000")]
    pub supplier: String,
}

/// One benchmark query.
struct Query {
    text: &'static str,
    /// Reads a table without a `supplier` tag (`jobs`): a supplier's session cannot see it.
    operator_only: bool,
}

const fn q(text: &'static str) -> Query {
    Query {
        text,
        operator_only: false,
    }
}

/// The issue's examples (but the `promql(…)` one, see [`PROMQL`]), then a few more stages.
const QUERIES: &[Query] = &[
    q("gpus[5m] | stats avg(utilization) by model | sort avg_utilization desc"),
    q("gpus[5m] | stats avg(rate(energy_mj, 1m)) by model, bucket(1m)"),
    q("earnings[1d] | stats sum(amount) by supplier, bucket(1h) | sort supplier, bucket"),
    q("leases[1d] | stats count() by supplier | top 5 by count"),
    q("leases[1d] | join gpus[5m] on gpu_uuid | stats max(gpus.temperature) by leases.supplier"),
    Query {
        text: "jobs[1d] | where state == \"completed\" | stats count() as done by bucket(1m)",
        operator_only: true,
    },
    q("gpus[1h] | where temperature > 60 and utilization > 50 | stats count() by region, model"),
    q("gpus[30m] | extend mem_gib = memory_used_mib / 1024.0 \
         | stats avg(mem_gib) as mem_gib, max(power_watts) by model, region"),
    q("gpus[1h] | stats max(energy_mj) as energy by gpu_uuid | top 10 by energy"),
    q("gpus[10m] | where utilization > 90 | select time, gpu_uuid, utilization, temperature"),
    q("earnings[1d] | join leases[1d] on lease_id | stats sum(amount) by leases.end_reason"),
    q("faults[1d] | where kind == \"xid\" | stats count() by xid_class(code), model"),
    q("heartbeats[10m] | stats max(seq) by worker"),
    q(
        "leases[1d] | extend hours = (coalesce(end_ms, 0) - start_ms) / 3600000.0 \
         | where hours > 0 | stats sum(hours) as hours by model",
    ),
];

/// The issue's `promql(…)` example. Its SQL reads the PromQL rows that exist only inside the
/// DSL request, so `/api/v1/sql` has no equivalent: it is timed against its source alone.
const PROMQL: &str =
    "promql(\"avg by (model) (gpu_utilization)\", step=30s)[5m] | stats max(value) by model";
const PROMQL_SOURCE: &str = "promql(\"avg by (model) (gpu_utilization)\", step=30s)[5m]";

pub async fn run(args: DslBenchArgs) -> anyhow::Result<ExitCode> {
    let (gpus, minutes, iterations) = args.size.preset();
    let gpus = args.gpus.unwrap_or(gpus);
    let minutes = args.minutes.unwrap_or(minutes);
    let iterations = args.iterations.unwrap_or(iterations);
    ensure!(gpus >= 8, "--gpus must be at least 8");
    ensure!(minutes >= 10, "--minutes must be at least 10");
    ensure!(iterations >= 1, "--iterations must be at least 1");
    if let Some(m) = args.max_ratio {
        ensure!(m > 0.0, "--max-ratio must be > 0");
    }

    let tmp = tempfile::tempdir()?;
    let mut config = DbConfig::new(tmp.path().join("data"));
    config.background = false;
    config.memory_budget = 4 << 30;
    let db = Db::open(config).await.context("opening the store")?;
    eprintln!("loading {gpus} GPUs x {minutes} minutes at 10 s...");
    let t = Instant::now();
    let loaded = load(&db, gpus, minutes).await?;
    eprintln!("loaded in {:.1} s", t.elapsed().as_secs_f64());
    let service = QueryService::new(db.clone());
    let opts = PromOptions::default();

    println!(
        "rigwatch bench dsl: {gpus} GPUs x {minutes} min at 10 s: {} gpu rows, {} other rows; \
         {} rows in {} Parquet files, {} buffered",
        loaded.gpu_rows,
        loaded.other_rows,
        loaded.persisted_rows,
        loaded.persisted_files,
        ((loaded.gpu_rows + loaded.other_rows) as u64).saturating_sub(loaded.persisted_rows),
    );
    println!(
        "  {iterations} iterations per side, alternating; medians in ms; ratio = dsl / sql; \
         +ms = dsl - sql; lower = `… | explain` alone (parse, catalog, lowering){}",
        if cfg!(debug_assertions) {
            "\n  DEBUG BUILD: figures are not representative (use --release)"
        } else {
            ""
        }
    );
    println!();
    for (i, query) in QUERIES.iter().enumerate() {
        println!(
            "  Q{:<2} {}{}",
            i + 1,
            query.text,
            if query.operator_only {
                "   (operator only)"
            } else {
                ""
            }
        );
    }
    println!("  P   {PROMQL}");
    println!();
    println!(
        "  {:<14} {:<4} {:>7} {:>9} {:>9} {:>7} {:>9} {:>9}",
        "scope", "q", "rows", "dsl ms", "sql ms", "ratio", "+ms", "lower ms"
    );

    let scopes: [(String, Option<&str>); 2] = [
        ("operator".to_string(), None),
        (args.supplier.clone(), Some(args.supplier.as_str())),
    ];
    let mut mismatches = Vec::new();
    let mut empty = Vec::new();
    let mut ratios: Vec<(f64, String)> = Vec::new();
    for (label, scope) in &scopes {
        for (i, query) in QUERIES.iter().enumerate() {
            if query.operator_only && scope.is_some() {
                continue;
            }
            let id = format!("Q{}", i + 1);
            let m = measure(&service, &opts, query.text, *scope, iterations).await?;
            if let Some(why) = &m.mismatch {
                println!("  {label:<14} {id:<4} ANSWERS DIFFER: {why}");
                mismatches.push(format!("{label} {id}: {why}"));
                continue;
            }
            if m.rows == 0 {
                empty.push(format!("{label} {id}"));
            }
            let ratio = m.dsl_ms / m.sql_ms;
            println!(
                "  {label:<14} {id:<4} {:>7} {:>9.3} {:>9.3} {:>7.3} {:>+9.3} {:>9.3}",
                m.rows,
                m.dsl_ms,
                m.sql_ms,
                ratio,
                m.dsl_ms - m.sql_ms,
                m.lower_ms
            );
            ratios.push((ratio, format!("{label} {id}")));
        }
        let p = measure_promql(&service, &opts, *scope, iterations).await?;
        println!(
            "  {label:<14} {:<4} {:>7} {:>9.3} {:>9} {:>7} {:>9} {:>9.3}   (source alone {:.3} ms: no SQL route equivalent, not in the ratio)",
            "P", p.rows, p.dsl_ms, "-", "-", "-", p.lower_ms, p.sql_ms
        );
    }
    println!();

    let mut code = ExitCode::SUCCESS;
    if let Some((worst, which)) = ratios.iter().cloned().max_by(|a, b| a.0.total_cmp(&b.0)) {
        let geo = (ratios.iter().map(|(r, _)| r.ln()).sum::<f64>() / ratios.len() as f64).exp();
        println!(
            "  worst ratio {worst:.3} ({which}); geometric mean {geo:.3} over {} queries; budget {BUDGET:.2}",
            ratios.len()
        );
        if let Some(max) = args.max_ratio {
            if worst > max {
                println!("  FAIL: worst ratio {worst:.3} is above --max-ratio {max:.2}");
                code = ExitCode::FAILURE;
            }
        } else if worst > BUDGET {
            println!(
                "  WARNING: worst ratio {worst:.3} is above the {BUDGET:.2} budget \
                 (not failing: timings here are noisy; pass --max-ratio to fail)"
            );
        }
    }
    if !empty.is_empty() {
        println!(
            "  WARNING: no rows answered by {} (the dataset should cover every query)",
            empty.join(", ")
        );
    }
    if !mismatches.is_empty() {
        println!(
            "  FAIL: the DSL and its SQL answered differently for {} queries",
            mismatches.len()
        );
        code = ExitCode::FAILURE;
    }
    db.shutdown().await.ok();
    Ok(code)
}

/// Medians of one query in one scope.
#[derive(Debug, Default)]
struct Measured {
    rows: usize,
    dsl_ms: f64,
    sql_ms: f64,
    lower_ms: f64,
    /// Why the answers differed (after retries), if they did.
    mismatch: Option<String>,
}

type Answer = (SchemaRef, Vec<RecordBatch>);

async fn dsl(
    service: &QueryService,
    opts: &PromOptions,
    text: &str,
    scope: Option<&str>,
) -> anyhow::Result<(Duration, Answer)> {
    let t = Instant::now();
    let answer = rigwatch_query::dsl::run(service, opts, text, scope)
        .await
        .with_context(|| format!("DSL `{text}` (scope {scope:?})"))?;
    Ok((t.elapsed(), answer))
}

async fn sql(
    service: &QueryService,
    text: &str,
    scope: Option<&str>,
) -> anyhow::Result<(Duration, Answer)> {
    let t = Instant::now();
    let answer = service
        .sql_scoped(text, scope)
        .await
        .with_context(|| format!("SQL `{text}` (scope {scope:?})"))?;
    Ok((t.elapsed(), answer))
}

/// The SQL `text` lowers to, from `text | explain`.
async fn lowered_sql(
    service: &QueryService,
    opts: &PromOptions,
    text: &str,
    scope: Option<&str>,
) -> anyhow::Result<String> {
    let (_, (_, batches)) = dsl(service, opts, &format!("{text} | explain"), scope).await?;
    let col = batches
        .first()
        .and_then(|b| b.column_by_name("sql"))
        .context("explain answered no `sql` column")?;
    let text = col
        .as_string_opt::<i32>()
        .context("explain's `sql` is not text")?;
    ensure!(text.len() == 1, "explain answered {} rows", text.len());
    Ok(text.value(0).to_string())
}

async fn measure(
    service: &QueryService,
    opts: &PromOptions,
    text: &str,
    scope: Option<&str>,
    iterations: usize,
) -> anyhow::Result<Measured> {
    let lowered = lowered_sql(service, opts, text, scope).await?;
    // Untimed runs, compared. A range ending at now() moves between the two runs, and may
    // let a tick of samples out in between: a difference is retried a few times.
    let mut out = Measured::default();
    for _ in 0..3 {
        let (_, a) = dsl(service, opts, text, scope).await?;
        let (_, b) = sql(service, &lowered, scope).await?;
        match same(&a, &b) {
            Ok(rows) => {
                out.rows = rows;
                out.mismatch = None;
                break;
            }
            Err(why) => out.mismatch = Some(why),
        }
    }
    if out.mismatch.is_some() {
        return Ok(out);
    }
    let mut d = Vec::with_capacity(iterations);
    let mut s = Vec::with_capacity(iterations);
    for i in 0..iterations {
        if i % 2 == 0 {
            d.push(dsl(service, opts, text, scope).await?.0);
            s.push(sql(service, &lowered, scope).await?.0);
        } else {
            s.push(sql(service, &lowered, scope).await?.0);
            d.push(dsl(service, opts, text, scope).await?.0);
        }
    }
    let explain = format!("{text} | explain");
    let mut l = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        l.push(dsl(service, opts, &explain, scope).await?.0);
    }
    out.dsl_ms = median_ms(d);
    out.sql_ms = median_ms(s);
    out.lower_ms = median_ms(l);
    Ok(out)
}

/// The `promql(…)` example: `sql_ms` is its source alone (the PromQL evaluation, through the
/// DSL too), for scale.
async fn measure_promql(
    service: &QueryService,
    opts: &PromOptions,
    scope: Option<&str>,
    iterations: usize,
) -> anyhow::Result<Measured> {
    let (_, (_, batches)) = dsl(service, opts, PROMQL, scope).await?;
    dsl(service, opts, PROMQL_SOURCE, scope).await?;
    let mut d = Vec::with_capacity(iterations);
    let mut s = Vec::with_capacity(iterations);
    let mut l = Vec::with_capacity(iterations);
    let explain = format!("{PROMQL} | explain");
    for i in 0..iterations {
        if i % 2 == 0 {
            d.push(dsl(service, opts, PROMQL, scope).await?.0);
            s.push(dsl(service, opts, PROMQL_SOURCE, scope).await?.0);
        } else {
            s.push(dsl(service, opts, PROMQL_SOURCE, scope).await?.0);
            d.push(dsl(service, opts, PROMQL, scope).await?.0);
        }
        l.push(dsl(service, opts, &explain, scope).await?.0);
    }
    Ok(Measured {
        rows: batches.iter().map(RecordBatch::num_rows).sum(),
        dsl_ms: median_ms(d),
        sql_ms: median_ms(s),
        lower_ms: median_ms(l),
        mismatch: None,
    })
}

fn median_ms(mut v: Vec<Duration>) -> f64 {
    v.sort();
    let n = v.len();
    let mid = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    };
    mid.as_secs_f64() * 1e3
}

// ---------------------------------------------------------------------------------------
// Comparing answers

/// A cell: floats compared with a tolerance, everything else as displayed.
#[derive(Debug, Clone)]
enum Cell {
    Text(String),
    Float(f64),
}

fn rows_of(answer: &Answer) -> Result<Vec<Vec<Cell>>, String> {
    let options = FormatOptions::default().with_null("null");
    let mut rows = Vec::new();
    for batch in &answer.1 {
        let mut columns = Vec::with_capacity(batch.num_columns());
        for col in batch.columns() {
            let cells: Vec<Cell> = match col.data_type() {
                DataType::Float64 => {
                    let a = col.as_primitive::<Float64Type>();
                    (0..a.len())
                        .map(|i| {
                            if a.is_null(i) {
                                Cell::Text("null".into())
                            } else {
                                Cell::Float(a.value(i))
                            }
                        })
                        .collect()
                }
                DataType::Float32 => {
                    let a = col.as_primitive::<Float32Type>();
                    (0..a.len())
                        .map(|i| {
                            if a.is_null(i) {
                                Cell::Text("null".into())
                            } else {
                                Cell::Float(f64::from(a.value(i)))
                            }
                        })
                        .collect()
                }
                _ => {
                    let f = ArrayFormatter::try_new(col.as_ref(), &options)
                        .map_err(|e| e.to_string())?;
                    (0..col.len())
                        .map(|i| Cell::Text(f.value(i).to_string()))
                        .collect()
                }
            };
            columns.push(cells);
        }
        for r in 0..batch.num_rows() {
            rows.push(columns.iter().map(|c| c[r].clone()).collect());
        }
    }
    // Row order is the engine's unless the query sorts (and ties may fall either way):
    // compare as sets, by the text cells first.
    let key = |row: &Vec<Cell>| -> (Vec<String>, Vec<f64>) {
        let mut t = Vec::new();
        let mut f = Vec::new();
        for c in row {
            match c {
                Cell::Text(s) => t.push(s.clone()),
                Cell::Float(x) => f.push(*x),
            }
        }
        (t, f)
    };
    rows.sort_by(|a, b| {
        let (ta, fa) = key(a);
        let (tb, fb) = key(b);
        ta.cmp(&tb).then_with(|| {
            fa.iter()
                .zip(&fb)
                .map(|(x, y)| x.total_cmp(y))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        })
    });
    Ok(rows)
}

/// `Ok(rows)` when the two answers agree, else why not.
fn same(a: &Answer, b: &Answer) -> Result<usize, String> {
    let names = |s: &SchemaRef| -> Vec<String> {
        s.fields().iter().map(|f| f.name().to_string()).collect()
    };
    if names(&a.0) != names(&b.0) {
        return Err(format!(
            "columns {:?} (dsl) vs {:?} (sql)",
            names(&a.0),
            names(&b.0)
        ));
    }
    let (ra, rb) = (rows_of(a)?, rows_of(b)?);
    if ra.len() != rb.len() {
        return Err(format!(
            "{} rows (dsl) vs {} rows (sql)",
            ra.len(),
            rb.len()
        ));
    }
    for (i, (x, y)) in ra.iter().zip(&rb).enumerate() {
        let equal = x.len() == y.len()
            && x.iter().zip(y).all(|(p, q)| match (p, q) {
                (Cell::Text(p), Cell::Text(q)) => p == q,
                (Cell::Float(p), Cell::Float(q)) => {
                    p == q
                        || (p.is_nan() && q.is_nan())
                        || (p - q).abs() <= REL_TOL * p.abs().max(q.abs())
                }
                _ => false,
            });
        if !equal {
            return Err(format!("row {i}: {x:?} (dsl) vs {y:?} (sql)"));
        }
    }
    Ok(ra.len())
}

// ---------------------------------------------------------------------------------------
// The dataset

/// What [`load`] wrote.
struct Loaded {
    gpu_rows: usize,
    other_rows: usize,
    persisted_rows: u64,
    persisted_files: usize,
}

/// A GPU of the fleet, from its first rendered sample.
struct Gpu {
    supplier: String,
    worker: String,
    uuid: String,
    model: String,
    region: String,
}

/// SplitMix64, as in bench/src/dataset.rs: deterministic and good enough for a simulation.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn unit(x: u64) -> f64 {
    (mix(x) >> 11) as f64 / (1u64 << 53) as f64
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Rows written before the split moment (persisted to Parquet) and after it (buffered). A
/// row goes by when it is written, not by its time: a lease's row (time = its start) is
/// written open at its start and rewritten ended at its end, maybe on the other side.
struct Phases {
    split_ms: i64,
    older: WriteBatch,
    newer: WriteBatch,
}

impl Phases {
    fn at(&mut self, written_ms: i64) -> &mut WriteBatch {
        if written_ms < self.split_ms {
            &mut self.older
        } else {
            &mut self.newer
        }
    }
}

fn identities(first_tick: &str) -> anyhow::Result<Vec<Gpu>> {
    let mut batch = WriteBatch::default();
    let errors = line_protocol::parse(first_tick, Precision::Ns, 0, &mut batch);
    if let Some(e) = errors.first() {
        bail!("the fleet's line protocol failed to parse: {e}");
    }
    Ok(batch
        .rows()
        .map(|r| {
            let tag = |k: &str| {
                r.tags()
                    .find(|(key, _)| *key == k)
                    .map(|(_, v)| v.to_string())
                    .unwrap_or_default()
            };
            Gpu {
                supplier: tag("supplier"),
                worker: tag("worker"),
                uuid: tag("gpu_uuid"),
                model: tag("model"),
                region: tag("region"),
            }
        })
        .collect())
}

async fn write_lp(db: &Db, ticks: &[String]) -> anyhow::Result<usize> {
    let mut rows = 0;
    for chunk in ticks.chunks(TICKS_PER_WRITE) {
        let body = chunk.concat();
        let mut batch = WriteBatch::with_capacity(chunk.len() * 256, body.len());
        let errors = line_protocol::parse(&body, Precision::Ns, 0, &mut batch);
        if let Some(e) = errors.first() {
            bail!("the fleet's line protocol failed to parse: {e}");
        }
        rows += write(db, batch).await?;
    }
    Ok(rows)
}

async fn write(db: &Db, batch: WriteBatch) -> anyhow::Result<usize> {
    if batch.is_empty() {
        return Ok(0);
    }
    let n = batch.len();
    let out = db
        .write(
            batch,
            WriteOptions {
                no_sync: true,
                ..WriteOptions::default()
            },
        )
        .await?;
    ensure!(
        out.rejected.is_empty() && out.rows == n,
        "the store accepted {} of {n} rows",
        out.rows
    );
    Ok(n)
}

/// Writes the dataset, the older half (by write time) persisted to Parquet.
async fn load(db: &Db, gpus: usize, minutes: u64) -> anyhow::Result<Loaded> {
    let ticks = minutes as usize * 6;
    let end_ns = now_ns() / INTERVAL_NS * INTERVAL_NS;
    let start_ns = end_ns - (ticks as i64 - 1) * INTERVAL_NS;
    let lp = Fleet::new(gpus, FLEET_SEED).render_lp(start_ns, INTERVAL_NS, ticks as u64);
    let fleet = identities(&lp[0])?;
    let half = ticks / 2;
    let mut phases = Phases {
        split_ms: (start_ns + half as i64 * INTERVAL_NS) / 1_000_000,
        older: WriteBatch::default(),
        newer: WriteBatch::default(),
    };
    let start_ms = start_ns / 1_000_000;
    let end_ms = end_ns / 1_000_000;
    let mut other_rows = allocator_rows(&mut phases, &fleet, start_ms, end_ms)?;
    other_rows += fault_rows(&mut phases, &fleet, start_ms, end_ms)?;
    other_rows += heartbeat_rows(&mut phases, &fleet, start_ns, ticks)?;

    let mut gpu_rows = write_lp(db, &lp[..half]).await?;
    let Phases { older, newer, .. } = phases;
    write(db, older).await?;
    let persisted = db.persist().await.context("persisting the older half")?;
    gpu_rows += write_lp(db, &lp[half..]).await?;
    write(db, newer).await?;
    Ok(Loaded {
        gpu_rows,
        other_rows,
        persisted_rows: persisted.rows,
        persisted_files: persisted.files,
    })
}

/// Micro-units per GPU-hour by model.
fn rate_micro(model: &str) -> i64 {
    if model.contains("H100") {
        3_600_000
    } else if model.contains("A100") {
        2_000_000
    } else if model.contains("L40S") {
        1_000_000
    } else {
        500_000
    }
}

/// Leases, their jobs and their earnings, as the allocator writes them (scheduler/service/src/allocator/rows.rs):
/// each supplier leases a different number of its GPUs (so `top` has no ties); one lease in
/// four is still running, the others end completed, cancelled, preempted or faulted.
fn allocator_rows(
    phases: &mut Phases,
    fleet: &[Gpu],
    start_ms: i64,
    end_ms: i64,
) -> anyhow::Result<usize> {
    const REASONS: [(&str, &str); 5] = [
        ("completed", "completed"),
        ("completed", "completed"),
        ("cancelled", "cancelled"),
        ("preempted", "requeued"),
        ("fault_hardware", "failed"),
    ];
    const ENTRY_MS: i64 = 5 * 60_000;
    let span = end_ms - start_ms;
    let mut rows = 0;
    let mut k = 0u64;
    for (i, g) in fleet.iter().enumerate() {
        let supplier_index = i / 32;
        if (i % 32) >= 10 + 3 * (supplier_index % 7) {
            continue;
        }
        k += 1;
        let lease_id = (1000 + i).to_string();
        let job_id = (500_000 + i).to_string();
        let seed = mix(FLEET_SEED ^ ((i as u64) << 8));
        let l_start = start_ms + (unit(seed) * (span / 2) as f64) as i64 / 1000 * 1000;
        let ended = (k % 4 != 3).then(|| {
            let dur = 120_000 + (unit(seed ^ 1) * (span / 2 - 120_000) as f64) as i64;
            (l_start + dur / 1000 * 1000, REASONS[(k % 5) as usize])
        });
        let share: i64 = if k.is_multiple_of(3) { 500 } else { 1000 };
        let lease = |b: &mut WriteBatch, end: Option<(i64, &str)>| -> anyhow::Result<()> {
            let mut r = b.row("lease", l_start * 1_000_000);
            r.tag("lease_id", &lease_id)
                .tag("job_id", &job_id)
                .tag("gpu_uuid", &g.uuid)
                .tag("worker", &g.worker)
                .tag("supplier", &g.supplier)
                .tag("model", &g.model)
                .field("share_milli", FieldValue::I64(share))
                .field("start_ms", FieldValue::I64(l_start));
            if let Some((e, reason)) = end {
                r.field("end_ms", FieldValue::I64(e))
                    .field("end_reason", FieldValue::Str(reason));
            }
            r.finish(0).map_err(|e| anyhow::anyhow!("lease row: {e:?}"))
        };
        let submitted = l_start - 15_000;
        let job = |b: &mut WriteBatch, end: Option<(i64, &str, &str)>| -> anyhow::Result<()> {
            let mut r = b.row("job", submitted * 1_000_000);
            r.tag("job_id", &job_id)
                .field(
                    "state",
                    FieldValue::Str(end.map_or("running", |(_, _, state)| state)),
                )
                .field("submitted_ms", FieldValue::I64(submitted))
                .field("priority", FieldValue::I64(0))
                .field("models", FieldValue::Str(&g.model))
                .field("gpus", FieldValue::I64(1))
                .field("started_ms", FieldValue::I64(l_start))
                .field("restarts", FieldValue::I64(0));
            if let Some((e, reason, _)) = end {
                r.field("ended_ms", FieldValue::I64(e))
                    .field("end_reason", FieldValue::Str(reason));
            }
            r.finish(0).map_err(|e| anyhow::anyhow!("job row: {e:?}"))
        };
        // Open at the start; rewritten ended at the end (last write wins), unless both
        // writes fall on the same side of the split, where only the last one is written.
        let end_write = ended.map(|(e, _)| e);
        let same_side =
            end_write.is_some_and(|e| (e < phases.split_ms) == (l_start < phases.split_ms));
        if !same_side {
            lease(phases.at(l_start), None)?;
            job(phases.at(l_start), None)?;
            rows += 2;
        }
        if let Some((e, (reason, state))) = ended {
            lease(phases.at(e), Some((e, reason)))?;
            job(phases.at(e), Some((e, reason, state)))?;
            rows += 2;
        }
        // Earnings: one entry per 5 minutes leased, written when it closes.
        let rate = rate_micro(&g.model);
        let until = end_write.unwrap_or(end_ms);
        let mut from = l_start;
        while from < until {
            let to = (from + ENTRY_MS).min(until);
            let amount = rate * share / 1000 * (to - from) / 3_600_000;
            let mut r = phases.at(to).row("earnings", from * 1_000_000);
            r.tag("lease_id", &lease_id)
                .tag("gpu_uuid", &g.uuid)
                .tag("supplier", &g.supplier)
                .tag("model", &g.model)
                .field("amount_micro", FieldValue::I64(amount))
                .field("rate_micro_per_gpu_hour", FieldValue::I64(rate))
                .field("share_milli", FieldValue::I64(share))
                .field("to_ms", FieldValue::I64(to))
                .field("duration_ms", FieldValue::I64(to - from))
                .field("ledger_version", FieldValue::I64(2));
            r.finish(0)
                .map_err(|e| anyhow::anyhow!("earnings row: {e:?}"))?;
            rows += 1;
            from = to;
        }
    }
    Ok(rows)
}

/// XID faults, as fault detection writes them (scheduler/service/src/faults.rs): one GPU in seven.
fn fault_rows(
    phases: &mut Phases,
    fleet: &[Gpu],
    start_ms: i64,
    end_ms: i64,
) -> anyhow::Result<usize> {
    const XIDS: [(i64, &str, &str, &str); 6] = [
        (13, "application", "warning", "none"),
        (31, "application", "warning", "none"),
        (43, "application", "warning", "none"),
        (48, "hardware", "critical", "drain"),
        (79, "hardware", "critical", "drain"),
        (94, "hardware", "warning", "reset"),
    ];
    let mut rows = 0;
    for (i, g) in fleet.iter().enumerate().filter(|(i, _)| i % 7 == 3) {
        let seed = mix(FLEET_SEED ^ 0xFA17 ^ ((i as u64) << 4));
        let t = start_ms + (unit(seed) * (end_ms - start_ms) as f64) as i64;
        let (code, class, severity, action) = XIDS[(seed % XIDS.len() as u64) as usize];
        let evidence = format!("NVRM: Xid (PCI:0000:{:02x}:00): {code}", i % 256);
        let mut r = phases.at(t).row("gpu_fault", t * 1_000_000);
        r.tag("supplier", &g.supplier)
            .tag("worker", &g.worker)
            .tag("gpu_uuid", &g.uuid)
            .tag("model", &g.model)
            .tag("kind", "xid")
            .tag("class", class)
            .tag("detector", "health")
            .field("code", FieldValue::I64(code))
            .field("severity", FieldValue::Str(severity))
            .field("evidence", FieldValue::Str(&evidence))
            .field("action", FieldValue::Str(action));
        r.finish(0)
            .map_err(|e| anyhow::anyhow!("fault row: {e:?}"))?;
        rows += 1;
    }
    Ok(rows)
}

/// One agent heartbeat per worker per sample.
fn heartbeat_rows(
    phases: &mut Phases,
    fleet: &[Gpu],
    start_ns: i64,
    ticks: usize,
) -> anyhow::Result<usize> {
    let mut workers: Vec<(&Gpu, i64)> = Vec::new();
    for g in fleet {
        match workers.last_mut() {
            Some((w, n)) if w.worker == g.worker => *n += 1,
            _ => workers.push((g, 1)),
        }
    }
    let mut rows = 0;
    for t in 0..ticks {
        let ts = start_ns + t as i64 * INTERVAL_NS;
        for (g, n) in &workers {
            let mut r = phases.at(ts / 1_000_000).row("heartbeat", ts);
            r.tag("supplier", &g.supplier)
                .tag("worker", &g.worker)
                .tag("region", &g.region)
                .field("seq", FieldValue::I64(t as i64))
                .field("gpus", FieldValue::I64(*n))
                .field("gpus_reporting", FieldValue::I64(*n))
                .field("interval_ms", FieldValue::I64(10_000))
                .field("uptime_s", FieldValue::I64(86_400 + t as i64 * 10))
                .field("agent_version", FieldValue::Str("bench"));
            r.finish(0)
                .map_err(|e| anyhow::anyhow!("heartbeat row: {e:?}"))?;
            rows += 1;
        }
    }
    Ok(rows)
}
