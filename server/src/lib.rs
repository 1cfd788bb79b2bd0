//! The rigwatch server: open the store, start the services, compose the routers behind one
//! access layer, serve (`rigwatch serve`), and the demo around it (`rigwatch demo`).
//!
//! ```text
//!  request ─► [forward: query node passes writes to the shard's owner]
//!          ─► [refuse_when_deposed] ─► access::authorize (ROUTES: who may call what)
//!          ─► ingest routes | query routes (SQL, PromQL, DSL) | allocator | alerting | portal
//! ```
//!
//! - [`access`]: the one route table and the middleware that enforces it.
//! - [`cluster`]: where state lives (object store, catalog), the shard lease, shared identity.
//! - [`demo`]: a server plus a simulated fleet of real agents; `workload` feeds it jobs.

pub mod access;
mod admin_token;
pub mod cluster;
pub mod demo;
mod forward;
pub mod workload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use bytesize::ByteSize;
use clap::Args;
use prometheus_client::registry::Registry;
use rigwatch_ingest::admission::{Admission, AdmissionLimits};
use rigwatch_ingest::agent::routes::AgentLimits;
use rigwatch_storage::auth::{AuthStore, Role};
use rigwatch_storage::{Db, DbConfig};
use tracing::info;

/// The default `--compaction-tier`: `bench compare` measured it faster for ranges (one GPU's
/// day 12.1 -> 7.7 ms, a fleet's 306 -> 273 ms) and smaller, with instant queries unchanged.
const DEFAULT_COMPACTION_TIER: Duration = Duration::from_secs(86_400);

/// Options of the store and the HTTP server.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Directory for the WAL, the catalog and (with the local object store) Parquet files.
    #[arg(long, env = "RIGWATCH_DATA_DIR", default_value = "rigwatch-data")]
    pub data_dir: PathBuf,

    /// Address to listen on. Loopback by default; use 0.0.0.0:PORT to accept remote agents.
    #[arg(long, env = "RIGWATCH_LISTEN", default_value = "127.0.0.1:9800")]
    pub listen: SocketAddr,

    /// Largest accepted request body, before and after decompression (e.g. 32MiB).
    #[arg(long, env = "RIGWATCH_MAX_BODY", default_value = "32MiB")]
    pub max_body: ByteSize,

    /// Most time partitions (--partition wide) one request to the generic write routes
    /// (/api/v2/write, /write, /api/v1/write, /api/v1/import/prometheus) may touch; more is
    /// 400 and nothing is stored. Agents have their own, tighter limit.
    #[arg(long, env = "RIGWATCH_MAX_WRITE_PARTITIONS", default_value_t = rigwatch_ingest::routes::DEFAULT_MAX_WRITE_PARTITIONS)]
    pub max_write_partitions: usize,

    /// Write requests (agent batches and the generic write routes together) read, parsed and
    /// stored at once. Beyond it requests wait in a queue.
    #[arg(long, env = "RIGWATCH_MAX_CONCURRENT_WRITES", default_value_t = AdmissionLimits::DEFAULT.max_in_flight)]
    pub max_concurrent_writes: usize,

    /// Write requests that may wait for a slot; one more is answered 503 with Retry-After at
    /// once, before its body is read.
    #[arg(long, env = "RIGWATCH_MAX_QUEUED_WRITES", default_value_t = AdmissionLimits::DEFAULT.max_queued)]
    pub max_queued_writes: usize,

    /// Longest a write request waits in the queue; then 503 with Retry-After. Keeps the
    /// acknowledgement latency bounded past capacity instead of growing until clients time out.
    #[arg(long, env = "RIGWATCH_WRITE_QUEUE_TIMEOUT", default_value_t = AdmissionLimits::DEFAULT.max_wait.into())]
    pub write_queue_timeout: humantime::Duration,

    /// Write slots (in progress and queued together) one principal may hold: all agents of a
    /// supplier count as one, every other token as itself. So one cannot shut out the rest.
    #[arg(long, env = "RIGWATCH_MAX_QUEUED_WRITES_PER_PRINCIPAL", default_value_t = AdmissionLimits::DEFAULT.max_per_principal)]
    pub max_queued_writes_per_principal: usize,

    /// Distinct time partitions one token may write into per hour through the generic write
    /// routes (429 beyond, until its hour is over); partitions it wrote into earlier in the
    /// hour stay open to it.
    #[arg(long, env = "RIGWATCH_MAX_WRITE_PARTITIONS_PER_HOUR", default_value_t = rigwatch_ingest::partition_budget::DEFAULT_WRITE_PER_HOUR)]
    pub max_write_partitions_per_hour: usize,

    /// Failed authentications (bad token, bad password) one client address may make per
    /// minute; beyond it, 429 with Retry-After.
    #[arg(long, env = "RIGWATCH_AUTH_FAILURES_PER_MINUTE", default_value_t = crate::access::AUTH_FAILURES_PER_WINDOW)]
    pub auth_failures_per_minute: usize,

    /// Portal sessions one token may hold; signing in again ends its own oldest.
    #[arg(long, env = "RIGWATCH_MAX_SESSIONS_PER_TOKEN", default_value_t = rigwatch_dashboards::session::MAX_SESSIONS_PER_PRINCIPAL)]
    pub max_sessions_per_token: usize,

    /// Portal sessions in all; beyond it a sign-in is refused (503), nobody's session ends.
    #[arg(long, env = "RIGWATCH_MAX_SESSIONS", default_value_t = rigwatch_dashboards::session::MAX_SESSIONS)]
    pub max_sessions: usize,

    /// Live portal event streams one token or session may hold open (429 beyond).
    #[arg(long, env = "RIGWATCH_MAX_STREAMS_PER_TOKEN", default_value_t = rigwatch_dashboards::live::MAX_STREAMS_PER_PRINCIPAL)]
    pub max_streams_per_token: usize,

    /// Live portal event streams open in all (503 beyond).
    #[arg(long, env = "RIGWATCH_MAX_STREAMS", default_value_t = rigwatch_dashboards::live::MAX_STREAMS)]
    pub max_streams: usize,

    /// Agent tokens one supplier may mint in the portal per hour (429 beyond).
    #[arg(long, env = "RIGWATCH_AGENT_TOKEN_MINTS_PER_HOUR", default_value_t = rigwatch_dashboards::routes::MINTS_PER_SUPPLIER)]
    pub agent_token_mints_per_hour: usize,

    /// Memory the write buffer may use; beyond it writes wait for a persist (up to 2 s), then get 503.
    #[arg(long, env = "RIGWATCH_MEMORY_BUDGET", default_value = "1GiB")]
    pub memory_budget: ByteSize,

    /// Persist the buffer to Parquet once it holds this much. While one persist sorts and
    /// encodes, writes fill the next buffer: the write path holds a few times this much.
    #[arg(long, env = "RIGWATCH_PERSIST_BYTES", default_value = "64MiB")]
    pub persist_bytes: ByteSize,

    /// ...or once its oldest write is this old (bounds WAL replay time).
    #[arg(long, env = "RIGWATCH_PERSIST_AGE", default_value = "5m", value_parser = humantime::parse_duration)]
    pub persist_age: Duration,

    /// Width of a time partition (one Parquet file per table and partition after compaction).
    #[arg(long, env = "RIGWATCH_PARTITION", default_value = "1h", value_parser = humantime::parse_duration)]
    pub partition: Duration,

    /// How often to compact partitions and apply retention.
    #[arg(long, env = "RIGWATCH_COMPACTION_INTERVAL", default_value = "1m", value_parser = humantime::parse_duration)]
    pub compaction_interval: Duration,

    /// Compact a partition once it has this many files.
    #[arg(long, env = "RIGWATCH_COMPACTION_MIN_FILES", default_value_t = 4)]
    pub compaction_min_files: usize,

    /// Once a tier of this span (aligned: 1d is a UTC day) has closed, merge its partitions'
    /// files into one file, a row group per partition: 24 times fewer objects, catalog rows
    /// and footers for hourly partitions, one file opened per day by long ranges. A multiple
    /// of --partition above it; 0 keeps one file per partition. Default: 1d, or off where
    /// --partition is a day or more or does not divide one.
    #[arg(long, env = "RIGWATCH_COMPACTION_TIER", value_parser = humantime::parse_duration)]
    pub compaction_tier: Option<Duration>,

    /// Drop data older than this (e.g. 30d); 0 keeps everything.
    #[arg(long, env = "RIGWATCH_RETENTION", default_value = "0s", value_parser = humantime::parse_duration)]
    pub retention: Duration,

    /// Per-table retention overriding --retention, as TABLE=DURATION (repeatable). Table
    /// agent_batch (digests of agent batches, to recognise retries) keeps 1d unless named.
    #[arg(long = "table-retention", env = "RIGWATCH_TABLE_RETENTION", value_delimiter = ',', value_parser = parse_table_retention)]
    pub table_retention: Vec<(String, Duration)>,

    /// Rollup resolutions: per series and field, aggregates (count, sum, min, max, first,
    /// last, increase) over buckets of each, built once a partition closes, kept as tables
    /// `TABLE@RES` (e.g. `gpu@1h`). `1m` is available (`--rollups 1m,1h`) but costs about
    /// four times the raw bytes of 10 s data. Query-language selectors read them instead of the raw
    /// samples wherever the answer is provably the same (README, "Rollups"). One that does not
    /// divide --partition is left out (with a warning); `0` turns rollups off.
    #[arg(long, env = "RIGWATCH_ROLLUPS", value_delimiter = ',', default_value = "1h", value_parser = humantime::parse_duration)]
    pub rollups: Vec<Duration>,

    /// How long each resolution's rollups are kept, as RES=DURATION (repeatable), e.g.
    /// `1m=90d,1h=2y`: raw data can be dropped after days (--retention) while long ranges stay
    /// queryable. A resolution not named keeps its rollups as long as --retention.
    #[arg(long = "rollup-retention", env = "RIGWATCH_ROLLUP_RETENTION", value_delimiter = ',', value_parser = parse_rollup_retention)]
    pub rollup_retention: Vec<(Duration, Duration)>,

    /// Event tables that keep every row instead of upserting on (series, time).
    #[arg(
        long,
        env = "RIGWATCH_APPEND_ONLY_TABLES",
        value_delimiter = ',',
        default_value = "gpu_fault,gpu_health"
    )]
    pub append_only_tables: Vec<String>,

    /// Rotate WAL segments at this size.
    #[arg(long, env = "RIGWATCH_WAL_SEGMENT_SIZE", default_value = "64MiB")]
    pub wal_segment_size: ByteSize,

    #[command(flatten)]
    pub store: crate::cluster::StoreArgs,

    /// How far back an instant query-language selector looks for a sample.
    #[arg(long, env = "RIGWATCH_LOOKBACK_DELTA", default_value = "5m", value_parser = humantime::parse_duration)]
    pub lookback_delta: Duration,

    /// Longest a query may run: SQL statements, and query-language queries (whose `timeout`
    /// parameter may shorten it).
    #[arg(long, env = "RIGWATCH_QUERY_TIMEOUT", default_value = "2m", value_parser = humantime::parse_duration)]
    pub query_timeout: Duration,

    /// Working memory the SQL operators of one supplier's queries (or the operators' queries
    /// together) may hold at once; a query past it is stopped with 503.
    #[arg(long, env = "RIGWATCH_QUERY_MAX_MEMORY", default_value = "1GiB")]
    pub query_max_memory: ByteSize,

    /// Most rows one SQL answer may hold; a larger answer is refused with 413.
    #[arg(long, env = "RIGWATCH_QUERY_MAX_ROWS", default_value_t = 1_000_000)]
    pub query_max_rows: usize,

    /// Most SQL statements one supplier (or the operators together) may run at once; one
    /// more is refused with 429.
    #[arg(long, env = "RIGWATCH_QUERY_MAX_CONCURRENT", default_value_t = 8)]
    pub query_max_concurrent: usize,

    /// Most samples one query-language query may hold in memory.
    #[arg(long, env = "RIGWATCH_QUERY_MAX_SAMPLES", default_value_t = 50_000_000)]
    pub query_max_samples: usize,

    /// The allocator's placement policy: rigwatch (default: fragmentation, health, thermal
    /// headroom and supplier fairness), fgd, best-fit, spread, first-fit or random.
    #[arg(long, env = "RIGWATCH_POLICY", default_value = "rigwatch")]
    pub policy: String,

    /// Price of a GPU model per GPU-hour in currency units, exact to six decimals, as
    /// MODEL=AMOUNT (e.g. H100=2.50; repeatable, or comma-separated). MODEL is a canonical
    /// model or an NVML product name. Applies from the server's start; earlier minutes keep
    /// the price they were accrued at. Models not named use the built-in illustrative card.
    #[arg(long = "rate", env = "RIGWATCH_RATES", value_delimiter = ',', value_parser = parse_rate)]
    pub rates: Vec<(String, i64)>,

    /// The currency of every price and amount (ISO 4217 code). Amounts are kept in
    /// micro-units (1/1,000,000); settled statements round down to the currency's minor unit
    /// (cents for USD) and carry the rest into the next day.
    #[arg(long, env = "RIGWATCH_CURRENCY", default_value = "USD", value_parser = rigwatch_common::money::parse_currency)]
    pub currency: rigwatch_common::money::Currency,

    /// Most workers one supplier may register; a registration past it is refused (409).
    #[arg(long, env = "RIGWATCH_MAX_WORKERS_PER_SUPPLIER", default_value_t = AgentLimits::DEFAULT.max_workers_per_supplier)]
    pub max_workers_per_supplier: usize,

    /// Most GPUs one supplier may hold (claimed by its registrations); a registration past it
    /// is refused (409). A GPU is held until released (DELETE /api/v1/agent/gpus/UUID).
    #[arg(long, env = "RIGWATCH_MAX_GPUS_PER_SUPPLIER", default_value_t = AgentLimits::DEFAULT.max_gpus_per_supplier)]
    pub max_gpus_per_supplier: usize,

    /// Most GPUs one agent registration (one worker) may list.
    #[arg(long, env = "RIGWATCH_MAX_GPUS_PER_REGISTRATION", default_value_t = AgentLimits::DEFAULT.max_gpus_per_registration)]
    pub max_gpus_per_registration: usize,

    /// Oldest row an agent may write (e.g. 7d): an older one fails its request (400). About
    /// what a full agent spool holds.
    #[arg(long, env = "RIGWATCH_AGENT_MAX_AGE", default_value_t = AgentLimits::DEFAULT.max_age.into())]
    pub agent_max_age: humantime::Duration,

    /// How far ahead of the server's clock an agent's row may be (e.g. 5m); further fails its
    /// request (400).
    #[arg(long, env = "RIGWATCH_AGENT_MAX_FUTURE", default_value_t = AgentLimits::DEFAULT.max_future.into())]
    pub agent_max_future: humantime::Duration,

    /// Most time partitions (--partition) one agent request may write to; more fails it (400).
    #[arg(long, env = "RIGWATCH_AGENT_MAX_PARTITIONS", default_value_t = AgentLimits::DEFAULT.max_partitions)]
    pub agent_max_partitions: usize,

    /// Distinct time partitions one supplier's agents together may write into per hour (429
    /// beyond, until the hour is over). The default covers a week-long spool draining.
    #[arg(long, env = "RIGWATCH_AGENT_MAX_PARTITIONS_PER_HOUR", default_value_t = AgentLimits::DEFAULT.max_partitions_per_hour)]
    pub agent_max_partitions_per_hour: usize,

    /// Pay for a lease pauses once its GPU has sent no row for this long (the agent reports
    /// every few seconds): the silent time is not paid (the lease shows it as `unpaid`,
    /// `unpaid_ms`, `paused`), and pay resumes when the GPU is heard again.
    #[arg(long, env = "RIGWATCH_PAY_GRACE", default_value = "2m", value_parser = humantime::parse_duration)]
    pub pay_grace: Duration,

    /// A leased GPU silent this long (no row) ends its leases with end_reason `offline`; the
    /// jobs go back to the queue in their old place. Must be longer than --pay-grace.
    #[arg(long, env = "RIGWATCH_OFFLINE_AFTER", default_value = "10m", value_parser = humantime::parse_duration)]
    pub offline_after: Duration,

    /// How often the allocator places queued jobs and accrues earnings.
    #[arg(long, env = "RIGWATCH_ALLOC_TICK", default_value = "1s", value_parser = humantime::parse_duration)]
    pub alloc_tick: Duration,

    /// How long a Kubernetes extender binding lives without `POST /k8s/TOKEN/renew`; a
    /// lapsed binding's leases end (cancelled), so a pod nobody unbinds stops earning.
    #[arg(long, env = "RIGWATCH_EXTENDER_LEASE_TTL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub extender_lease_ttl: Duration,

    /// An operator token with the admin role, kept only in memory (its hash). When unset and
    /// the data directory has no admin token yet, the server creates one at first start and
    /// prints it once.
    #[arg(long, env = "RIGWATCH_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// A file whose first line is the admin token (instead of --admin-token: a token on the
    /// command line can be read by every user of the machine through `ps`).
    #[arg(
        long,
        env = "RIGWATCH_ADMIN_TOKEN_FILE",
        conflicts_with = "admin_token"
    )]
    pub admin_token_file: Option<PathBuf>,

    #[command(flatten)]
    pub faults: rigwatch_scheduler_service::faults::FaultArgs,

    #[command(flatten)]
    pub alerts: rigwatch_query::alerting::AlertArgs,

    /// Log filter (tracing EnvFilter syntax), e.g. info or rigwatch_storage=debug.
    #[arg(long, env = "RIGWATCH_LOG", default_value = "info")]
    pub log: String,
}

/// `--rate MODEL=AMOUNT`: the price in µ per GPU-hour, parsed exactly.
fn parse_rate(s: &str) -> Result<(String, i64), String> {
    let (model, amount) = s.split_once('=').ok_or_else(|| {
        format!(
            "--rate: expected MODEL=AMOUNT (currency units per GPU-hour, e.g. H100=2.50), got `{s}`"
        )
    })?;
    let model = model.trim();
    if model.is_empty() {
        return Err(format!("--rate: `{s}` names no model"));
    }
    let micro = rigwatch_common::money::parse_micro(amount)
        .map_err(|e| format!("--rate: the price in `{s}` is not accepted: {e}"))?;
    Ok((model.to_string(), micro))
}

fn parse_table_retention(s: &str) -> Result<(String, Duration), String> {
    let (table, d) = s
        .split_once('=')
        .ok_or_else(|| format!("expected TABLE=DURATION, got `{s}`"))?;
    let d = humantime::parse_duration(d).map_err(|e| format!("bad duration in `{s}`: {e}"))?;
    Ok((table.to_string(), d))
}

fn parse_rollup_retention(s: &str) -> Result<(Duration, Duration), String> {
    let (res, keep) = s
        .split_once('=')
        .ok_or_else(|| format!("expected RES=DURATION (e.g. 1h=2y), got `{s}`"))?;
    let res =
        humantime::parse_duration(res).map_err(|e| format!("bad resolution in `{s}`: {e}"))?;
    let keep =
        humantime::parse_duration(keep).map_err(|e| format!("bad duration in `{s}`: {e}"))?;
    Ok((res, keep))
}

impl ServeArgs {
    /// Every option at its documented default (and `RIGWATCH_*` variables, as for `serve`),
    /// with `data_dir`: for servers started in-process by benchmarks.
    pub fn with_defaults(data_dir: PathBuf) -> anyhow::Result<Self> {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let mut args = <Only as clap::Parser>::try_parse_from(["rigwatch"])
            .context("the serve options' defaults and RIGWATCH_* variables")?
            .serve;
        args.data_dir = data_dir;
        Ok(args)
    }

    /// The database's configuration and the node's part; `prefer`: the shard this node
    /// owned before its part changed, tried first.
    async fn db_config(
        &self,
        prefer: Option<&str>,
    ) -> anyhow::Result<(DbConfig, crate::cluster::Role)> {
        let mut c = DbConfig::new(&self.data_dir);
        let owner = self.store.configure(&mut c, prefer).await?;
        c.partition = self.partition;
        c.memory_budget = self.memory_budget.as_u64() as usize;
        c.persist_bytes = self.persist_bytes.as_u64() as usize;
        c.persist_age = self.persist_age;
        c.compaction_interval = self.compaction_interval;
        c.compaction_min_files = self.compaction_min_files;
        let fits = |tier: Duration| {
            tier > self.partition && tier.as_nanos().is_multiple_of(self.partition.as_nanos())
        };
        c.compaction_tier = match self.compaction_tier {
            Some(tier) if tier.is_zero() => None,
            Some(tier) if fits(tier) => Some(tier),
            Some(tier) => anyhow::bail!(
                "--compaction-tier ({}) must be a multiple of --partition ({}) above it, or 0",
                humantime::format_duration(tier),
                humantime::format_duration(self.partition)
            ),
            None => Some(DEFAULT_COMPACTION_TIER).filter(|&day| fits(day)),
        };
        c.retention = (!self.retention.is_zero()).then_some(self.retention);
        // Batch digests are needed only to recognise a retry (minutes): a day is plenty,
        // unless the operator says otherwise.
        c.table_retention = [(
            rigwatch_ingest::agent::dedup::BATCH_TABLE.to_string(),
            Duration::from_secs(86_400),
        )]
        .into_iter()
        .chain(self.table_retention.iter().cloned())
        .collect();
        c.append_only_tables = self.append_only_tables.clone();
        let rollups: Vec<Duration> = self
            .rollups
            .iter()
            .copied()
            .filter(|r| !r.is_zero())
            .collect();
        for r in &rollups {
            if r.subsec_nanos() != 0 {
                anyhow::bail!(
                    "--rollups: {} must be whole seconds",
                    humantime::format_duration(*r)
                );
            }
        }
        // A resolution that does not divide the partition (the default 1h under a 1m
        // partition) cannot be built per partition: it is left out, with a warning.
        let (rollups, unfit): (Vec<Duration>, Vec<Duration>) = rollups
            .into_iter()
            .partition(|r| self.partition.as_nanos().is_multiple_of(r.as_nanos()));
        for r in unfit {
            tracing::warn!(
                resolution = %humantime::format_duration(r),
                partition = %humantime::format_duration(self.partition),
                "rollup resolution does not divide --partition; not built"
            );
        }
        for (r, _) in &self.rollup_retention {
            if !rollups.contains(r) {
                anyhow::bail!(
                    "--rollup-retention names {}, which is not one of --rollups",
                    humantime::format_duration(*r)
                );
            }
        }
        c.rollups = rollups;
        c.rollup_retention = self.rollup_retention.clone();
        c.wal.segment_max_bytes = self.wal_segment_size.as_u64();
        Ok((c, owner))
    }
}

/// The agent batches stored in the last hour (oldest first), so a retry of one whose
/// acknowledgement was lost in a crash is recognised after the restart.
async fn seen_batches(
    query: &rigwatch_query::QueryService,
) -> Vec<rigwatch_ingest::agent::dedup::Seen> {
    use rigwatch_ingest::agent::dedup;
    let Some(sql) = dedup::seen_sql(query.db()) else {
        return Vec::new();
    };
    let rows = match rigwatch_query::rows::Rows::query(query, dedup::BATCH_TABLE, &sql).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read recent agent batches; retries after this restart may be stored twice");
            return Vec::new();
        }
    };
    rows.iter()
        .filter_map(|r| {
            dedup::Seen::from_row(
                r.str("supplier")?,
                r.str("worker")?,
                r.i64("digest"),
                r.str(dedup::ID_FIELD),
            )
        })
        .collect()
}

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
}

pub fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, and never when NO_COLOR is set
    // (https://no-color.org): log files and pipes get plain text.
    use std::io::IsTerminal as _;
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

/// A running server: its address, the store, and a handle to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub db: Arc<Db>,
    /// Suppliers and tokens (`auth.json` in the data directory).
    pub auth: Arc<AuthStore>,
    /// The allocator: live view, jobs, leases, earnings (not on a query node).
    pub alloc: Option<rigwatch_scheduler_service::allocator::AllocService>,
    /// Fault detection and GPU health (not on a query node).
    pub faults: Option<rigwatch_scheduler_service::faults::FaultHandle>,
    /// Alert rules and notifications (not on a query node).
    pub alerts: Option<rigwatch_query::alerting::AlertHandle>,
    /// The write queue (agent and generic write routes).
    pub admission: Arc<Admission>,
    /// The shard lease, when nodes share a catalog.
    owner: Option<crate::cluster::ShardOwner>,
    /// What wakes the node when its part changes (a standby's lease watch, an owner's
    /// deposition); `None` on a node on its own or a query node.
    part_change: Option<crate::cluster::PartChange>,
    /// The exchange of the auth registry with the other nodes.
    _auth_sync: Option<rigwatch_common::task::Task<()>>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: rigwatch_common::task::Task<std::io::Result<()>>,
}

impl Running {
    /// Write requests refused by admission control so far (queue full, waited too long, or
    /// a principal's share).
    pub fn admission_refusals(&self) -> u64 {
        let m = self.admission.metrics();
        m.refused_queue_full.get() + m.refused_timeout.get() + m.refused_principal.get()
    }

    /// Resolves once this node's part among the nodes changed: a standby found the shard's
    /// lease free, or an owner lost it. Never on a node on its own or a query node.
    pub async fn part_changed(&self) {
        match &self.part_change {
            Some(p) => p.changed().await,
            None => std::future::pending().await,
        }
    }

    /// Stops accepting requests, waits for in-flight ones (at most [`STOP_GRACE`]; a live
    /// stream lasts as long as its browser listens), syncs the WAL.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        match tokio::time::timeout(STOP_GRACE, &mut self.task).await {
            Ok(served) => served??,
            Err(_) => {
                tracing::warn!(grace = ?STOP_GRACE, "requests still in flight after the grace period are cut off");
                self.task.abort();
            }
        }
        // Stop alerting, fault detection and the allocator before the WAL is synced.
        drop(self.alerts);
        drop(self.faults);
        if let Some(alloc) = self.alloc {
            alloc.stop().await;
        }
        self.db.shutdown().await?;
        if let Some(owner) = self.owner {
            owner.release().await;
        }
        Ok(())
    }
}

/// How long stopping waits for requests in flight.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Opens the store and starts serving on `args.listen`.
pub async fn start(args: &ServeArgs) -> anyhow::Result<Running> {
    start_on(args, None, None).await
}

/// Opens the store and starts serving on `listener` (bound already, non-blocking), or on a
/// new socket bound to `args.listen`; an owner takes shard `prefer` first, if it is free.
async fn start_on(
    args: &ServeArgs,
    listener: Option<std::net::TcpListener>,
    prefer: Option<&str>,
) -> anyhow::Result<Running> {
    if args.offline_after <= args.pay_grace {
        anyhow::bail!(
            "--offline-after ({}) must be longer than --pay-grace ({}): pay pauses first, the lease ends later",
            humantime::format_duration(args.offline_after),
            humantime::format_duration(args.pay_grace)
        );
    }
    let (config, role) = args.db_config(prefer).await?;
    let db = Db::open(config)
        .await
        .with_context(|| format!("cannot open data directory {}", args.data_dir.display()))?;
    let auth =
        Arc::new(AuthStore::open(&args.data_dir).with_context(|| {
            format!("cannot open the auth file in {}", args.data_dir.display())
        })?);
    // The owner's GPU claims and worker registrations come from the shared log, so that a
    // node taking over knows every claim before it serves.
    let shared_lines = match &role {
        crate::cluster::Role::Owner(o) => {
            let lines = rigwatch_storage::shared_lines::SharedLines::new(o.pg().clone());
            for file in [
                rigwatch_ingest::agent::claims::CLAIMS_FILE,
                rigwatch_ingest::agent::registry::REGISTRY_FILE,
            ] {
                lines
                    .restore(&args.data_dir, file)
                    .await
                    .with_context(|| format!("cannot restore {file} from PostgreSQL"))?;
            }
            Some(lines)
        }
        _ => None,
    };
    // Beside other nodes, the registry is shared: learn every supplier and token first.
    let auth_sync = match role.pg() {
        Some(pg) => Some(crate::cluster::share_auth(pg, &auth).await?),
        None => None,
    };
    let admin_token = admin_token::admin_token(args)?;
    if admin_token.as_ref().is_some_and(|t| t.len() < 16) {
        anyhow::bail!(
            "the admin token (--admin-token or --admin-token-file) must be at least 16 characters"
        );
    }
    if admin_token.is_none() && !auth.has_admin() {
        let t = auth
            .issue(Role::Admin, None, None, "bootstrap")
            .context("cannot create the first admin token")?;
        eprintln!(
            "rigwatch: created the first admin token (shown once, stored hashed in {}):\n  {}",
            auth.path().display(),
            t.token
        );
    }
    // The allocator, fault detection and alert rules run on one node: alone, or the shard
    // owner holding the singletons' lease (it reads every shard; their writes are fenced by
    // that lease); other nodes pass their routes on to it.
    let alloc = if !role.runs_singletons() {
        None
    } else {
        Some(
            rigwatch_scheduler_service::allocator::AllocService::start(
                db.clone(),
                rigwatch_scheduler_service::allocator::AllocSettings {
                    policy: args.policy.clone(),
                    tick: args.alloc_tick,
                    rates: args.rates.clone(),
                    currency: args.currency,
                    extender_ttl: args.extender_lease_ttl,
                    pay_grace: args.pay_grace,
                    offline_after: args.offline_after,
                },
            )
            .await
            .context("cannot start the allocator")?,
        )
    };
    let gate = access::Gate::new(auth.clone(), admin_token.as_deref())
        .with_failure_limit(args.auth_failures_per_minute, access::AUTH_FAILURE_WINDOW)
        .with_sessions(Arc::new(rigwatch_dashboards::Sessions::with_limits(
            rigwatch_dashboards::session::DEFAULT_TTL,
            args.max_sessions_per_token,
            args.max_sessions,
        )));
    let (faults, alerts) = match &alloc {
        None => (None, None),
        Some(alloc) => {
            let to_alloc = alloc.clone();
            let alloc = alloc.clone();
            let faults = rigwatch_scheduler_service::faults::spawn(
                db.clone(),
                &args.faults,
                Some(Box::new(move |t| {
                    to_alloc.health_changed(&t.gpu.gpu_uuid, t.to, t.hardware)
                })),
                Some(Box::new(move |uuid: &str| {
                    alloc.gpu_load(uuid).map(|milli| milli > 0)
                })),
            )
            .await;
            let alerts = rigwatch_query::alerting::spawn(db.clone(), &args.alerts, args.listen)
                .await
                .context("cannot start alerting")?;
            (Some(faults), Some(alerts))
        }
    };
    let mut registry = Registry::default();
    if let Some(f) = &faults {
        f.register(&mut registry);
    }
    if let Some(a) = &alerts {
        a.register(&mut registry);
    }
    db.metrics().register(&mut registry);
    let query = rigwatch_query::QueryService::with_limits(
        db.clone(),
        rigwatch_query::QueryLimits {
            timeout: args.query_timeout,
            max_memory: usize::try_from(args.query_max_memory.as_u64()).unwrap_or(usize::MAX),
            max_rows: args.query_max_rows,
            max_concurrent: args.query_max_concurrent.max(1),
        },
    );
    let prom_options = rigwatch_query::prometheus::PromOptions {
        lookback: args.lookback_delta,
        max_samples: args.query_max_samples,
        timeout: args.query_timeout,
        ..Default::default()
    };
    let seen_batches = seen_batches(&query).await;
    query.metrics().register(&mut registry);
    let admission = Admission::new(AdmissionLimits {
        max_in_flight: args.max_concurrent_writes,
        max_queued: args.max_queued_writes,
        max_wait: args.write_queue_timeout.into(),
        max_per_principal: args.max_queued_writes_per_principal,
    });
    admission.register(&mut registry);
    let state = AppState {
        registry: Arc::new(registry),
    };
    let mut app = Router::new()
        .route("/health", get(health))
        // A browser opening the server's address goes to the portal (303).
        .route(
            "/",
            get(|| async { axum::response::Redirect::to("/portal") }),
        )
        .route("/metrics", get(metrics))
        .with_state(state)
        .merge(rigwatch_ingest::routes::router(
            rigwatch_ingest::routes::IngestState {
                db: db.clone(),
                max_body_bytes: args.max_body.as_u64() as usize,
                max_partitions: args.max_write_partitions,
                admission: admission.clone(),
                partitions_per_hour: Arc::new(
                    rigwatch_ingest::partition_budget::PartitionBudget::new(
                        args.max_write_partitions_per_hour,
                    ),
                ),
            },
        ))
        .merge(rigwatch_query::routes::router(query.clone()))
        .merge(rigwatch_query::prometheus::router(
            query.clone(),
            prom_options.clone(),
        ))
        // The DSL's promql(…) sources are bounded like the Prometheus API's queries.
        .merge(rigwatch_query::dsl::router(query.clone(), prom_options))
        .merge(rigwatch_ingest::agent::routes::router(
            rigwatch_ingest::agent::routes::AgentState {
                db: db.clone(),
                auth: auth.clone(),
                max_body_bytes: args.max_body.as_u64() as usize,
                seen_batches,
                limits: AgentLimits {
                    max_workers_per_supplier: args.max_workers_per_supplier,
                    max_gpus_per_supplier: args.max_gpus_per_supplier,
                    max_gpus_per_registration: args.max_gpus_per_registration,
                    max_age: args.agent_max_age.into(),
                    max_future: args.agent_max_future.into(),
                    max_partitions: args.agent_max_partitions,
                    max_partitions_per_hour: args.agent_max_partitions_per_hour,
                },
                admission: admission.clone(),
                shared: shared_lines,
            },
        )?)
        .merge(rigwatch_dashboards::router(
            // The same query service: one session cache, and the portal's queries count
            // in /metrics like every other.
            rigwatch_dashboards::PortalState::new(gate.sessions().clone(), auth.clone(), query)
                .with_limits(rigwatch_dashboards::PortalLimits {
                    streams_per_principal: args.max_streams_per_token,
                    streams: args.max_streams,
                    mints_per_supplier_per_hour: args.agent_token_mints_per_hour,
                }),
        ));
    if let Some(alloc) = &alloc {
        app = app.merge(alloc.router());
    }
    if let Some(a) = &alerts {
        app = app.merge(a.router());
    }
    app = app.merge(crate::cluster::status::router(
        crate::cluster::status::StatusState {
            pg: role.pg().cloned(),
            node: args.store.node_id(),
            mode: args.store.mode_name(),
            shard: role.shard().map(str::to_string),
        },
    ));
    // Every route above is behind the access layer: it must be added after the last merge.
    app = app.layer(axum::middleware::from_fn_with_state(
        gate,
        access::authorize,
    ));
    if let crate::cluster::Role::Owner(owner) = &role {
        app = app.layer(axum::middleware::from_fn_with_state(
            owner.lost(),
            crate::cluster::refuse_when_deposed,
        ));
    }
    if let Some(pg) = role.pg() {
        // Outside the access layer: the owner authenticates what it is passed.
        let fwd = Arc::new(crate::forward::Forward::new(
            pg.clone(),
            args.store.shards,
            role.shard(),
            role.runs_singletons(),
            auth.clone(),
            args.max_body.as_u64() as usize,
        )?);
        app = app.layer(axum::middleware::from_fn_with_state(
            fwd,
            crate::forward::forward,
        ));
    }
    let app = app.layer(
        tower_http::trace::TraceLayer::new_for_http()
            // Refusals past capacity (503) are flow control, answered by the thousand
            // under overload: not errors for the log. Other server errors still are.
            .on_failure(
                |class: tower_http::classify::ServerErrorsFailureClass,
                 latency: Duration,
                 _span: &tracing::Span| match class {
                    tower_http::classify::ServerErrorsFailureClass::StatusCode(s)
                        if s == axum::http::StatusCode::SERVICE_UNAVAILABLE =>
                    {
                        tracing::debug!(?latency, "refused: 503")
                    }
                    other => {
                        tracing::error!(classification = %other, ?latency, "response failed")
                    }
                },
            )
            .make_span_with(|req: &axum::http::Request<axum::body::Body>| {
                // The path, never the query string or an extender token in the path.
                tracing::debug_span!(
                    "request",
                    method = %req.method(),
                    path = %access::redacted_path(req.uri().path()),
                )
            }),
    );
    let listener = match listener {
        Some(l) => tokio::net::TcpListener::from_std(l)?,
        None => tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?,
    };
    let addr = listener.local_addr()?;
    let part_change = match &role {
        crate::cluster::Role::Owner(owner) => Some(owner.part_change()),
        crate::cluster::Role::Standby(pg) => Some(crate::cluster::PartChange::when_free(
            pg,
            args.store.lease_ttl,
            args.store.shards,
        )),
        crate::cluster::Role::Alone | crate::cluster::Role::Query(_) => None,
    };
    let owner = match role {
        crate::cluster::Role::Owner(owner) => {
            let url = args.store.advertise_url.clone().unwrap_or_else(|| {
                if addr.ip().is_unspecified() {
                    format!(
                        "http://{}:{}",
                        rigwatch_ingest::agent::host::host_name(),
                        addr.port()
                    )
                } else {
                    format!("http://{addr}")
                }
            });
            owner.advertise(&url).await?;
            Some(owner)
        }
        _ => None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = rigwatch_common::task::spawn(async move {
        // The peer address lets the access layer throttle failed sign-ins per client.
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stopped.await;
        })
        .await
    });
    Ok(Running {
        addr,
        db,
        auth,
        alloc,
        faults,
        alerts,
        admission,
        owner,
        part_change,
        _auth_sync: auth_sync,
        stop,
        task,
    })
}

pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<std::process::ExitCode> {
    init_tracing(&args.log);
    // One socket for the process's life: when the node's part changes (a standby takes the
    // shard over, a deposed owner stands by) its services restart on it, and connections
    // that arrive meanwhile wait in its backlog instead of being refused.
    let socket = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    socket.set_nonblocking(true)?;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut running = start_on(&args, Some(socket.try_clone()?), None).await?;
    info!(addr = %running.addr, data_dir = %args.data_dir.display(), "rigwatch listening");
    eprintln!("rigwatch listening on http://{}", running.addr);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = running.part_changed() => {}
        }
        info!("this node's part changed: restarting its services");
        // An owner restarting to take the singletons keeps its shard (if still free).
        let prefer = running.owner.as_ref().map(|o| o.shard.clone());
        if let Err(e) = running.stop().await {
            tracing::warn!(error = %e, "stopping the services of the node's previous part failed");
        }
        running = loop {
            match start_on(&args, Some(socket.try_clone()?), prefer.as_deref()).await {
                Ok(r) => break r,
                Err(e) => {
                    tracing::error!(error = %e, "cannot restart the node's services; retrying in a second");
                    tokio::select! {
                        _ = &mut shutdown => return Ok(std::process::ExitCode::FAILURE),
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
    }
    info!("shutting down");
    running.stop().await?;
    Ok(std::process::ExitCode::SUCCESS)
}

async fn health() -> impl IntoResponse {
    let body = serde_json::json!({
        "status": "pass",
        "version": env!("CARGO_PKG_VERSION"),
    });
    axum::Json(body)
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            out,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `SELECT count(*)` of a table, through the same SQL path users take.
pub async fn count_rows(db: &Arc<Db>, table: &str) -> anyhow::Result<u64> {
    use arrow::array::{Array, Int64Array};
    let service = rigwatch_query::QueryService::new(db.clone());
    let (_, batches) = service
        .sql(&format!("SELECT count(*) AS n FROM \"{table}\""))
        .await?;
    let n = batches
        .first()
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .map(|a| a.value(0))
        })
        .context("count(*) returned no rows")?;
    Ok(n as u64)
}
