//! Configuration of a [`crate::Db`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;

use crate::wal::WalOptions;

/// Where persisted Parquet files and catalog versions live.
#[derive(Debug, Clone, Default)]
pub enum StoreConfig {
    /// `<data_dir>/objects` on the local file system, each write fsynced before it returns
    /// ([`crate::durable::SyncedLocalStore`]).
    #[default]
    Local,
    /// As `Local`, with the fsyncs made through this [`FileSync`] (a power-cut test's model
    /// of the page cache).
    LocalWith(Arc<dyn crate::durable::FileSync>),
    /// Any object store (S3-compatible, in-memory for tests, ...).
    Custom(Arc<dyn ObjectStore>),
}

/// Where the catalog lives.
#[derive(Debug, Clone, Default)]
pub enum CatalogConfig {
    /// On the object store beside the data: one node.
    #[default]
    Object,
    /// In PostgreSQL, shared by several nodes; `writer` names whose WAL coverage this node
    /// keeps (the shard it writes). With `fence`, every commit first checks that this node
    /// still holds the shard's lease at that epoch.
    Postgres {
        pg: crate::pg::Pg,
        writer: String,
        fence: Option<crate::lease::Held>,
    },
}

/// Where the WAL lives.
#[derive(Debug, Clone, Default)]
pub enum WalHome {
    /// `<data_dir>/wal`.
    #[default]
    Local,
    /// A shard's log on the shared object store, held under `held` from `head` on.
    Shard {
        log: crate::wal::ShardLog,
        held: crate::lease::Held,
        head: u64,
        /// The singletons' lease, if this node took it: the fence of every singleton's
        /// write ([`crate::Singleton`]).
        singletons: Option<crate::lease::Held>,
    },
    /// No WAL of its own: follow a shard another node owns, and refuse writes.
    Follow { log: crate::wal::ShardLog },
}

/// Who compacts, merges tiers, builds rollups and applies retention.
#[derive(Debug, Clone, Default)]
pub enum Maintenance {
    /// This database, unless it follows another node's shard (one node on its own).
    #[default]
    Here,
    /// Never this node (`--mode ingest`, `query`, a standby).
    Elsewhere,
    /// This node while it holds the compaction lease; its commits are fenced by it.
    Leased(std::sync::Arc<crate::lease::Keeper>),
}

/// Everything a database needs to open. [`DbConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct DbConfig {
    /// WAL (and, for a local store, Parquet files) live here.
    pub data_dir: PathBuf,
    pub store: StoreConfig,
    pub catalog: CatalogConfig,
    pub wal_home: WalHome,
    pub maintenance: Maintenance,
    /// Width of a time partition.
    pub partition: Duration,
    /// Above this many buffered bytes a write waits for a persist to make room, up to
    /// `backpressure_wait`, then gets `Backpressure` (HTTP 503).
    pub memory_budget: usize,
    /// How long a write over the budget waits for room before it is refused.
    pub backpressure_wait: Duration,
    /// Persist once the buffer holds this many bytes...
    pub persist_bytes: usize,
    /// ...or its oldest unpersisted write is this old.
    pub persist_age: Duration,
    /// How often to look for partitions to compact.
    pub compaction_interval: Duration,
    /// Compact a partition once it has this many files.
    pub compaction_min_files: usize,
    /// Merge each closed tier of this span (e.g. a day) into one file (`db/tier.rs`); None, or a
    /// span not a multiple of `partition` above it, turns it off.
    pub compaction_tier: Option<Duration>,
    /// Drop data older than this (None: keep forever), unless `table_retention` says otherwise.
    pub retention: Option<Duration>,
    pub table_retention: HashMap<String, Duration>,
    /// Rollup resolutions (`db/rollup.rs`); each must divide `partition`. Empty turns rollups
    /// off.
    pub rollups: Vec<Duration>,
    /// How long each resolution's rollups are kept (resolution, keep); a resolution not listed
    /// keeps them as long as `retention`.
    pub rollup_retention: Vec<(Duration, Duration)>,
    /// Tables never rolled up besides append-only ones (records rather than samples).
    pub rollup_skip: Vec<String>,
    /// Event tables: every row is kept, nothing is deduplicated.
    pub append_only_tables: Vec<String>,
    pub wal: WalOptions,
    /// Run the persist/compaction/retention loop (tests turn it off to drive it by hand).
    pub background: bool,
}

impl DbConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            store: StoreConfig::Local,
            catalog: CatalogConfig::Object,
            wal_home: WalHome::Local,
            maintenance: Maintenance::Here,
            partition: Duration::from_secs(3600),
            memory_budget: 1 << 30,
            backpressure_wait: Duration::from_secs(2),
            // `bench compare` (1,000 GPUs x 24 h): peak RSS 1,104 -> 830 MiB against 256 MiB,
            // ingest 5.08 -> 5.45 M values/s, bytes/value unchanged once compacted.
            persist_bytes: 64 << 20,
            persist_age: Duration::from_secs(300),
            compaction_interval: Duration::from_secs(60),
            compaction_min_files: 4,
            // Off until a measurement shows a gain (README, "How data is stored").
            compaction_tier: None,
            retention: None,
            table_retention: HashMap::new(),
            // 1 m rollups of 10 s data cost about four times the raw data's bytes (long form,
            // nine values a row) and made only fleet-wide ranges faster (`bench compare`,
            // issue 16): opt in with `--rollups 1m,1h`.
            rollups: vec![Duration::from_secs(3600)],
            rollup_retention: Vec::new(),
            rollup_skip: rigwatch_common::tables::RECORDS
                .iter()
                .map(|t| t.to_string())
                .collect(),
            append_only_tables: vec!["gpu_fault".to_string(), "gpu_health".to_string()],
            wal: WalOptions::default(),
            background: true,
        }
    }

    pub fn retention_for(&self, table: &str) -> Option<Duration> {
        if let Some(keep) = self.table_retention.get(table) {
            return Some(*keep);
        }
        if let Some((_, res)) = rigwatch_common::rollup::parse_table_name(table)
            && let Some((_, keep)) = self
                .rollup_retention
                .iter()
                .find(|(r, _)| rigwatch_common::rollup::resolution_label(r.as_secs()) == res)
        {
            return Some(*keep);
        }
        self.retention
    }
}
