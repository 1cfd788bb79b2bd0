//! [`Db`]: the write path, the query snapshot, and the background maintenance that ties the
//! WAL, the buffer, Parquet files and the catalog together.
//!
//! Ordering rules that make an acknowledged write survive a crash:
//! 1. A write is acknowledged only after its WAL record is fsynced (unless the writer asked
//!    for `no_sync`), and it is applied to the buffer in WAL order.
//! 2. A persist rotates the WAL and freezes the buffer in one step on the WAL thread, so the
//!    frozen data is exactly the content of the WAL segments up to the rotated one.
//! 3. The catalog version that adds the frozen data's files also records that those segments
//!    are covered; only after it is saved are the segments deleted. Replay skips covered
//!    segments, so nothing is applied twice (which matters for append-only tables).

mod follow;
mod maintenance;
mod rollup;
#[cfg(test)]
mod tests;
mod tier;
mod wal_thread;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::durable::{RealSync, SyncedLocalStore};
use arrow::array::RecordBatch;
use datafusion::execution::cache::cache_manager::FileMetadataCache;
use datafusion::execution::cache::default_cache::DefaultCache;
use futures::StreamExt;
use object_store::ObjectStore;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, broadcast, oneshot, watch};
use tracing::{error, info, warn};

pub use follow::FOLLOW_INTERVAL;
pub use maintenance::{CompactStats, PersistStats};
pub use rollup::{Cover, RollupStats};
pub use tier::TierStats;
use wal_thread::WalCmd;

use crate::batch::WriteBatch;
use crate::buffer::{Buffer, Frozen};
use crate::catalog::{
    CATALOG_FORMAT_VERSION, Catalog, CatalogState, FileMeta, ObjectCatalog, PgCatalog,
};
use crate::config::{CatalogConfig, DbConfig, Maintenance, StoreConfig, WalHome};
use crate::error::{Error, Result};
use crate::metrics::StorageMetrics;
use crate::schema::{RejectedRow, Schemas, TableDef};
use crate::wal::{self, RemoteWal, SegmentId, ShardLog, Wal, WalWriter};

/// Per-request write options.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// Acknowledge before the WAL is fsynced. Faster; a crash may lose the write.
    pub no_sync: bool,
    /// Written by one of the singletons (the allocator, fault detection, the rule
    /// evaluator): see [`Singleton`].
    pub singleton: Singleton,
}

impl WriteOptions {
    /// The options of a singleton's write.
    pub fn singleton(singleton: Singleton) -> Self {
        Self {
            singleton,
            ..Self::default()
        }
    }
}

/// Whether a write comes from a singleton, a duty one node at a time does under the lease
/// [`crate::lease::SINGLETONS_LEASE`]. Where nodes share a catalog, such a write is
/// acknowledged only if the node still holds that lease at the epoch it held when it opened
/// the database: the shard's WAL head moves in the same statement that checks it. So a
/// leader that was paused past its lease and replaced can neither place nor pay. A node on
/// its own has no lease and writes as usual.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Singleton {
    /// An ordinary write.
    #[default]
    No,
    /// Fenced by the singletons' lease.
    Fenced,
    /// Fenced, and every row also carries the lease's epoch in the field
    /// [`LEADER_EPOCH`], so each record says which leader wrote it.
    Stamped,
}

/// The field of a singleton's record that holds its leader's epoch ([`Singleton::Stamped`]).
pub const LEADER_EPOCH: &str = "leader_epoch";

/// What happened to a write.
#[derive(Debug, Default)]
pub struct WriteOutcome {
    /// Rows accepted (durable unless `no_sync`).
    pub rows: usize,
    /// Field values accepted.
    pub values: usize,
    /// Rows rejected by validation, with their source lines.
    pub rejected: Vec<RejectedRow>,
}

/// A frozen buffer on its way to Parquet.
#[derive(Debug)]
pub(crate) struct FrozenGen {
    pub frozen: Frozen,
    /// Every WAL record of this generation is in a segment <= this one.
    pub wal_through: SegmentId,
}

#[derive(Debug)]
pub(crate) struct State {
    pub buffer: Buffer,
    /// The buffers of the shards other nodes write, past the coverage of `files`
    /// ([`follow`]).
    pub followed: std::collections::BTreeMap<String, Buffer>,
    /// Oldest first.
    pub frozen: Vec<Arc<FrozenGen>>,
    /// Sorted by id.
    pub files: Arc<Vec<FileMeta>>,
    /// Files that failed their check; excluded from queries.
    pub corrupt: HashSet<u64>,
}

/// State owned by whoever holds the persist lock (persist, compaction, retention).
#[derive(Debug)]
pub(crate) struct CatalogWriter {
    pub version: u64,
    pub next_file_id: u64,
    pub wal_persisted_through: Option<SegmentId>,
    /// Replaced files, deleted a while later so running queries can finish reading them.
    pub pending_deletes: Vec<(std::time::Instant, String)>,
}

/// The data of one table visible to a query, oldest first.
#[derive(Debug)]
pub struct TableSnapshot {
    pub files: Vec<FileMeta>,
    /// Buffered data as (partition start, batch in the definition's schema).
    pub buffered: Vec<(i64, RecordBatch)>,
    /// The partitions whose buffered batches may hold one series at one time twice (two
    /// chunks of the partition share a series and overlap in time): only these need their
    /// batches merged with each other. Chunks of one series live in one shard, so the
    /// buffers of several shards rarely do.
    pub shared_keys: std::collections::HashSet<i64>,
}

/// Accepted batches a subscriber may fall behind by before it skips some.
const SUBSCRIBER_BACKLOG: usize = 16_384;

/// The time-series database. Open with [`Db::open`]; share as `Arc<Db>`.
#[derive(Debug)]
pub struct Db {
    config: DbConfig,
    partition_ns: i64,
    schemas: Arc<Schemas>,
    pub(crate) state: RwLock<State>,
    store: Arc<dyn ObjectStore>,
    pub(crate) catalog: Catalog,
    wal_dir: PathBuf,
    /// The shared log this node writes instead of `wal_dir`, if any.
    pub(crate) shard_log: Option<ShardLog>,
    /// The shards other nodes write, where nodes share a catalog.
    pub(crate) following: Option<tokio::sync::Mutex<follow::Following>>,
    wal_tx: OnceLock<std::sync::mpsc::Sender<WalCmd>>,
    wal_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Active plus frozen buffer bytes.
    buffer_bytes: AtomicUsize,
    /// Unix ms of the oldest unpersisted write in the active buffer; 0 if empty.
    oldest_unpersisted_ms: AtomicI64,
    persist_lock: tokio::sync::Mutex<CatalogWriter>,
    /// Held by a rollup pass from start to end: the background pass and one asked for
    /// (`bench compare`'s flush, tests) otherwise built the same stretches side by side, twice
    /// the work and memory, and the loser's files were thrown away.
    rollup_lock: tokio::sync::Mutex<()>,
    metrics: StorageMetrics,
    subscribers: broadcast::Sender<Arc<WriteBatch>>,
    wakeup: Arc<Notify>,
    /// Woken whenever a persist takes bytes out of the buffer ([`Db::room_in_buffer`]).
    made_room: Notify,
    shutdown_tx: watch::Sender<bool>,
    tasks: Mutex<Vec<rigwatch_common::task::Task<()>>>,
    /// Parsed Parquet footers and page indexes of data files, shared by every session's
    /// scans (files are immutable and never reuse a path, so an entry never goes stale).
    parquet_metadata: Arc<FileMetadataCache>,
    /// Data files' series indexes, parsed ([`crate::series_index`]).
    series_indexes: crate::series_index::IndexCache,
}

/// Most memory the Parquet footer and page-index cache holds.
const PARQUET_METADATA_CACHE_BYTES: usize = 64 << 20;

/// Most memory the parsed series indexes hold.
const SERIES_INDEX_CACHE_BYTES: usize = 32 << 20;

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Db {
    /// Opens (or creates) a database: loads the catalog, checks its files, removes orphans left
    /// by a crash, replays the WAL and starts the WAL thread and background maintenance.
    pub async fn open(config: DbConfig) -> Result<Arc<Db>> {
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| Error::WalIo {
            path: data_dir.clone(),
            source,
        })?;
        let store: Arc<dyn ObjectStore> = match &config.store {
            StoreConfig::Local => Arc::new(SyncedLocalStore::new(
                &data_dir.join("objects"),
                Arc::new(RealSync),
            )?),
            StoreConfig::LocalWith(sync) => Arc::new(SyncedLocalStore::new(
                &data_dir.join("objects"),
                sync.clone(),
            )?),
            StoreConfig::Custom(s) => s.clone(),
        };
        let metrics = StorageMetrics::default();
        let store: Arc<dyn ObjectStore> = Arc::new(crate::counted::CountedStore::new(
            store,
            metrics.object_store.clone(),
        ));
        // The shared WAL goes through the same counted store.
        let counted = |log: &ShardLog| ShardLog {
            store: store.clone(),
            ..log.clone()
        };
        let catalog = match &config.catalog {
            CatalogConfig::Object => Catalog::Object(ObjectCatalog::new(store.clone())),
            CatalogConfig::Postgres { pg, writer, fence } => {
                Catalog::Postgres(PgCatalog::new(pg.clone(), writer, fence.clone()))
            }
        };
        let loaded = catalog.load().await?.unwrap_or(CatalogState {
            format_version: CATALOG_FORMAT_VERSION,
            ..Default::default()
        });
        let schemas = Arc::new(Schemas::new(config.append_only_tables.clone()));
        schemas.load(loaded.tables.iter().cloned());

        let corrupt = check_files(&store, &loaded.files).await;
        // Beside other nodes, a file the catalog does not list may be another node's persist
        // in progress: only files older than any persist could take are orphans. A follower
        // deletes nothing: a file just replaced by the owner's compaction is still being read
        // there until its grace ends.
        let orphan_age = if catalog.is_shared() {
            SHARED_ORPHAN_AGE
        } else {
            Duration::ZERO
        };
        if !matches!(config.wal_home, WalHome::Follow { .. }) {
            remove_orphans(&store, &loaded.files, orphan_age).await;
        }

        let partition_ns = i64::try_from(config.partition.as_nanos())
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| Error::Internal("partition duration must be > 0".into()))?;
        let wal_dir = data_dir.join("wal");
        let mut following = None;
        let (buffer, wal_writer) = match &config.wal_home {
            WalHome::Local => {
                let schemas = schemas.clone();
                let wal_dir = wal_dir.clone();
                let opts = config.wal.clone();
                let after = loaded.wal_persisted_through;
                let (buffer, wal) = tokio::task::spawn_blocking(move || {
                    replay(&wal_dir, after, &schemas, partition_ns, opts)
                })
                .await
                .map_err(|e| Error::Internal(format!("WAL replay panicked: {e}")))??;
                (buffer, Some(wal))
            }
            WalHome::Shard {
                log, held, head, ..
            } => {
                let log = &counted(log);
                let after = loaded.wal_persisted_through.map_or(0, |s| s.0);
                let buffer = replay_shard(log, after, *head, &schemas, partition_ns).await?;
                following = Some(
                    follow::Following::start(
                        log.clone(),
                        Some(log.shard.clone()),
                        loaded.coverage.clone(),
                        &schemas,
                        partition_ns,
                    )
                    .await?,
                );
                let wal = RemoteWal::new(
                    log.clone(),
                    held.clone(),
                    *head,
                    tokio::runtime::Handle::current(),
                );
                (buffer, Some(Wal::Remote(wal)))
            }
            WalHome::Follow { log } => {
                following = Some(
                    follow::Following::start(
                        counted(log),
                        None,
                        loaded.coverage.clone(),
                        &schemas,
                        partition_ns,
                    )
                    .await?,
                );
                (Buffer::new(partition_ns), None)
            }
        };
        let shard_log = match &config.wal_home {
            WalHome::Shard { log, .. } => Some(counted(log)),
            WalHome::Local | WalHome::Follow { .. } => None,
        };

        metrics.files.set(loaded.files.len() as i64);
        metrics
            .file_bytes
            .set(loaded.files.iter().map(|f| f.size as i64).sum());
        metrics.corrupt_files.set(corrupt.len() as i64);
        let (following, followed) = match following {
            Some((f, buffers)) => (Some(tokio::sync::Mutex::new(f)), buffers),
            None => (None, Default::default()),
        };
        metrics
            .followed_bytes
            .set(followed.values().map(Buffer::bytes).sum::<usize>() as i64);
        let buffered = buffer.bytes();
        let oldest = if buffer.is_empty() { 0 } else { now_ms() };
        let (shutdown_tx, _) = watch::channel(false);
        let db = Arc::new(Db {
            partition_ns,
            schemas,
            state: RwLock::new(State {
                buffer,
                followed,
                frozen: Vec::new(),
                files: Arc::new(loaded.files.clone()),
                corrupt,
            }),
            store,
            catalog,
            wal_dir,
            shard_log,
            following,
            wal_tx: OnceLock::new(),
            wal_thread: Mutex::new(None),
            buffer_bytes: AtomicUsize::new(buffered),
            oldest_unpersisted_ms: AtomicI64::new(oldest),
            persist_lock: tokio::sync::Mutex::new(CatalogWriter {
                version: loaded.version,
                next_file_id: loaded.next_file_id,
                wal_persisted_through: loaded.wal_persisted_through,
                pending_deletes: Vec::new(),
            }),
            rollup_lock: tokio::sync::Mutex::new(()),
            metrics,
            // Room for about ten seconds of 1,250 agents' batches: subscribers (the live
            // view, fault detection) ride out a stall of the host instead of skipping
            // batches. A slot's batch is freed once every subscriber has seen it.
            subscribers: broadcast::channel(SUBSCRIBER_BACKLOG).0,
            wakeup: Arc::new(Notify::new()),
            made_room: Notify::new(),
            shutdown_tx,
            tasks: Mutex::new(Vec::new()),
            parquet_metadata: Arc::new(
                DefaultCache::new(PARQUET_METADATA_CACHE_BYTES)
                    .with_name("rigwatch-parquet-metadata"),
            ),
            series_indexes: crate::series_index::IndexCache::new(SERIES_INDEX_CACHE_BYTES),
            config,
        });
        if db.following.is_some() {
            let task = rigwatch_common::task::spawn(follow::run(
                Arc::downgrade(&db),
                db.shutdown_tx.subscribe(),
            ));
            db.tasks.lock().push(task);
        }
        if db.is_follower() {
            // A follower: no WAL thread (writes are refused), no persist; maintenance only
            // under the compaction lease (`--mode compact`).
            if matches!(db.config.maintenance, Maintenance::Leased(_)) && db.config.background {
                let task = rigwatch_common::task::spawn(maintenance::background(
                    Arc::downgrade(&db),
                    db.wakeup.clone(),
                    db.shutdown_tx.subscribe(),
                ));
                db.tasks.lock().push(task);
            }
            return Ok(db);
        }
        let wal_writer = wal_writer.expect("a writer has a WAL");
        let (tx, rx) = std::sync::mpsc::channel();
        let _ = db.wal_tx.set(tx);
        let weak = Arc::downgrade(&db);
        let handle = std::thread::Builder::new()
            .name("rigwatch-wal".into())
            .spawn(move || wal_thread::run(weak, wal_writer, rx))?;
        *db.wal_thread.lock() = Some(handle);
        if db.config.background {
            let task = rigwatch_common::task::spawn(maintenance::background(
                Arc::downgrade(&db),
                db.wakeup.clone(),
                db.shutdown_tx.subscribe(),
            ));
            db.tasks.lock().push(task);
        }
        Ok(db)
    }

    pub fn config(&self) -> &DbConfig {
        &self.config
    }

    pub fn schemas(&self) -> &Schemas {
        &self.schemas
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The cache of data files' Parquet metadata that scans read footers through.
    pub fn parquet_metadata(&self) -> Arc<FileMetadataCache> {
        self.parquet_metadata.clone()
    }

    pub fn metrics(&self) -> &StorageMetrics {
        &self.metrics
    }

    /// A data file's footer with its page index, through the metadata cache (the same entry
    /// a scan's reader uses).
    pub async fn footer(
        &self,
        file: &FileMeta,
    ) -> datafusion::error::Result<Arc<parquet::file::metadata::ParquetMetaData>> {
        use datafusion::datasource::listing::PartitionedFile;
        use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
        use parquet::file::metadata::PageIndexPolicy;
        let pf = PartitionedFile::new(file.path.clone(), file.size);
        DFParquetMetadata::new(self.store.as_ref(), &pf.object_meta)
            .with_file_metadata_cache(Some(self.parquet_metadata.clone()))
            .with_page_index_policy(Some(PageIndexPolicy::Optional))
            .fetch_metadata()
            .await
    }

    /// A data file's parsed series index, if it has one: from the index cache, else from its
    /// footer, read (with its page index, for the scan that follows) through the metadata
    /// cache.
    pub async fn series_index(
        &self,
        file: &FileMeta,
    ) -> datafusion::error::Result<Option<Arc<crate::series_index::SeriesIndex>>> {
        if let Some(index) = self.series_indexes.get(&file.path) {
            return Ok(index);
        }
        let metadata = self.footer(file).await?;
        let meta = metadata.file_metadata();
        let index = meta
            .key_value_metadata()
            .and_then(|kv| kv.iter().find(|kv| kv.key == crate::series_index::KEY))
            .and_then(|kv| kv.value.as_deref())
            .and_then(|text| {
                crate::series_index::SeriesIndex::parse(text, meta.num_rows().max(0) as u64)
            })
            .map(Arc::new);
        self.series_indexes.insert(&file.path, index.clone());
        Ok(index)
    }

    pub fn partition_ns(&self) -> i64 {
        self.partition_ns
    }

    /// Every accepted write, as it lands (after it is durable and queryable); on a shard's
    /// owner also every other shard's, as this node reads it ([`follow`]).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<WriteBatch>> {
        self.subscribers.subscribe()
    }

    /// Waits while the buffer is over its memory budget (a persist is asked for at once),
    /// up to `backpressure_wait`: a writer slowed to the persists' pace keeps its order and
    /// its connection, where a refusal costs it a retry delay with nothing stored meanwhile.
    /// Still over the budget then: `Backpressure`.
    async fn room_in_buffer(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.config.backpressure_wait;
        loop {
            // Registered before the check, so a persist finishing in between still wakes us.
            let made_room = self.made_room.notified();
            tokio::pin!(made_room);
            made_room.as_mut().enable();
            let used = self.buffer_bytes.load(Ordering::Relaxed);
            if used <= self.config.memory_budget {
                return Ok(());
            }
            self.wakeup.notify_one();
            if tokio::time::timeout_at(deadline, made_room).await.is_err() {
                self.metrics.writes_backpressured.inc();
                return Err(Error::Backpressure {
                    used: self.buffer_bytes.load(Ordering::Relaxed),
                    budget: self.config.memory_budget,
                });
            }
        }
    }

    /// Validates, logs and applies a batch. Rows that fail validation are reported in the
    /// outcome; the rest are written. Fails as a whole only if nothing could be made durable.
    pub async fn write(&self, batch: WriteBatch, opts: WriteOptions) -> Result<WriteOutcome> {
        if batch.is_empty() {
            return Ok(WriteOutcome::default());
        }
        self.room_in_buffer().await?;
        let (fence, batch) = self.fence(batch, opts.singleton)?;
        let (validated, rejected) = self.schemas.validate(batch);
        self.metrics.rows_rejected.inc_by(rejected.len() as u64);
        let outcome = WriteOutcome {
            rows: validated.batch.len(),
            values: validated.batch.field_count(),
            rejected,
        };
        if outcome.rows > 0 {
            let (done, rx) = oneshot::channel();
            self.send(WalCmd::Write {
                batch: validated,
                sync: !opts.no_sync,
                fence,
                done,
            })?;
            rx.await.map_err(|_| Error::ShuttingDown)??;
        }
        Ok(outcome)
    }

    /// The lease a singleton's write must still hold when it is acknowledged, and the batch
    /// as it is logged (stamped with the lease's epoch if asked).
    fn fence(
        &self,
        batch: WriteBatch,
        singleton: Singleton,
    ) -> Result<(Option<crate::lease::Held>, WriteBatch)> {
        if singleton == Singleton::No {
            return Ok((None, batch));
        }
        let WalHome::Shard {
            held, singletons, ..
        } = &self.config.wal_home
        else {
            // One node on its own (or a follower, which refuses every write anyway).
            return Ok((None, batch));
        };
        let Some(lease) = singletons else {
            return Err(Error::Fenced(format!(
                "node `{}` does not hold lease `{}`: only the node that does runs the allocator, fault detection and alert rules",
                held.holder,
                crate::lease::SINGLETONS_LEASE
            )));
        };
        let batch = match singleton {
            Singleton::Stamped => {
                batch.stamped(LEADER_EPOCH, crate::batch::FieldValue::I64(lease.epoch))
            }
            Singleton::No | Singleton::Fenced => batch,
        };
        Ok((Some(lease.clone()), batch))
    }

    /// The epoch of the singletons' lease this node writes under, where nodes share a
    /// catalog and it holds that lease.
    pub fn leader_epoch(&self) -> Option<i64> {
        match &self.config.wal_home {
            WalHome::Shard {
                singletons: Some(l),
                ..
            } => Some(l.epoch),
            _ => None,
        }
    }

    /// Whether this node follows another's shard (and refuses writes).
    pub fn is_follower(&self) -> bool {
        matches!(self.config.wal_home, WalHome::Follow { .. })
    }

    /// Whether this node compacts, merges tiers, builds rollups and applies retention now:
    /// `None` if not; otherwise the lease its commits must still hold, if any.
    pub(crate) fn maintenance_lease(&self) -> Option<Option<crate::lease::Held>> {
        match &self.config.maintenance {
            Maintenance::Here => (!self.is_follower()).then_some(None),
            Maintenance::Elsewhere => None,
            Maintenance::Leased(keeper) => keeper.current().map(Some),
        }
    }

    fn send(&self, cmd: WalCmd) -> Result<()> {
        if self.is_follower() {
            return Err(Error::ReadOnly);
        }
        self.wal_tx
            .get()
            .ok_or(Error::ShuttingDown)?
            .send(cmd)
            .map_err(|_| Error::ShuttingDown)
    }

    /// The definition of `table`, if it exists.
    pub fn table(&self, table: &str) -> Option<Arc<TableDef>> {
        self.schemas.get(table)
    }

    /// Files and buffered data of `def`'s table that may hold times in `[min, max]`.
    pub fn snapshot(&self, def: &TableDef, min: i64, max: i64) -> TableSnapshot {
        if min > max {
            return TableSnapshot {
                files: Vec::new(),
                buffered: Vec::new(),
                shared_keys: Default::default(),
            };
        }
        let st = self.state.read();
        let overlaps = |lo: i64, hi: i64| lo <= max && hi >= min;
        let files = st
            .files
            .iter()
            .filter(|f| f.table == def.name && !st.corrupt.contains(&f.id))
            .filter(|f| overlaps(f.min_time, f.max_time))
            .cloned()
            .collect();
        // Oldest first. Other shards' rows before this node's: where a series and time were
        // written through two shards (an operator's plain write through two nodes), this
        // node's own write counts as the later one.
        let chunks: Vec<(i64, &crate::buffer::Chunk)> = st
            .followed
            .values()
            .flat_map(|b| b.chunks(&def.name, min, max))
            .chain(st.frozen.iter().flat_map(|g| {
                g.frozen
                    .tables
                    .get(&def.name)
                    .into_iter()
                    .flatten()
                    .map(|(p, c)| (*p, &**c))
            }))
            .chain(st.buffer.chunks(&def.name, min, max))
            .filter(|(_, c)| {
                let (lo, hi) = c.time_range();
                overlaps(lo, hi)
            })
            .collect();
        let mut shared_keys = std::collections::HashSet::new();
        for (i, (p, a)) in chunks.iter().enumerate() {
            if !shared_keys.contains(p)
                && chunks[i + 1..]
                    .iter()
                    .any(|(q, b)| q == p && a.may_share_keys(b))
            {
                shared_keys.insert(*p);
            }
        }
        let buffered = chunks
            .iter()
            .map(|(p, c)| (*p, c.to_record_batch(def)))
            .collect();
        TableSnapshot {
            files,
            buffered,
            shared_keys,
        }
    }

    /// Marks a file as corrupt (logged once), excluding it from queries from now on.
    pub fn quarantine(&self, file: &FileMeta, reason: &str) {
        let mut st = self.state.write();
        if st.corrupt.insert(file.id) {
            error!(path = %file.path, table = %file.table, %reason, "excluding corrupt Parquet file from queries");
            self.metrics.corrupt_files.set(st.corrupt.len() as i64);
        }
    }

    /// Current catalog files (for tests and tools).
    pub fn files(&self) -> Arc<Vec<FileMeta>> {
        self.state.read().files.clone()
    }

    /// Rows currently buffered (active and frozen).
    pub fn buffered_rows(&self) -> usize {
        let st = self.state.read();
        st.buffer.rows()
            + st.followed.values().map(Buffer::rows).sum::<usize>()
            + st.frozen
                .iter()
                .flat_map(|g| g.frozen.tables.values().flatten())
                .map(|(_, c)| c.rows())
                .sum::<usize>()
    }

    /// Stops background work and the WAL thread after a final fsync. Idempotent.
    pub async fn shutdown(&self) -> Result<()> {
        let _ = self.shutdown_tx.send(true);
        let tasks: Vec<_> = self.tasks.lock().drain(..).collect();
        for t in tasks {
            let _ = t.await;
        }
        let (done, rx) = oneshot::channel();
        if self.send(WalCmd::Stop { done }).is_ok() {
            rx.await.map_err(|_| Error::ShuttingDown)??;
        }
        let handle = self.wal_thread.lock().take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        if let Maintenance::Leased(keeper) = &self.config.maintenance {
            keeper.release().await;
        }
        info!("storage shut down; WAL synced");
        Ok(())
    }
}

/// Replays the WAL into a fresh buffer, then opens a writer on a new segment.
fn replay(
    dir: &std::path::Path,
    after: Option<SegmentId>,
    schemas: &Schemas,
    partition_ns: i64,
    opts: wal::WalOptions,
) -> Result<(Buffer, Wal)> {
    let mut buffer = Buffer::new(partition_ns);
    let mut rejected = 0usize;
    let stats = wal::replay(dir, after, |_, batch| {
        let (v, rej) = schemas.validate(batch);
        rejected += rej.len();
        buffer.apply(&v);
    })?;
    if rejected > 0 {
        warn!(
            rejected,
            "WAL replay rejected rows that no longer fit their table"
        );
    }
    info!(
        segments = stats.segments,
        records = stats.records,
        rows = stats.rows,
        corrupt_segments = stats.corrupt_segments,
        "replayed WAL"
    );
    let writer = WalWriter::open(dir, opts)?;
    Ok((buffer, Wal::Local(writer)))
}

/// Replays a shard's acknowledged segments past `after` (through `head`) into a fresh buffer.
pub(crate) async fn replay_shard(
    log: &ShardLog,
    after: u64,
    head: u64,
    schemas: &Schemas,
    partition_ns: i64,
) -> Result<Buffer> {
    let mut buffer = Buffer::new(partition_ns);
    let (mut rows, mut rejected) = (0usize, 0usize);
    let segments = log.segments(after, head).await?;
    for (id, path) in &segments {
        let bytes = log.read(path).await?;
        ShardLog::decode(*id, path, bytes, |batch| {
            let (v, rej) = schemas.validate(batch);
            rejected += rej.len();
            rows += v.batch.len();
            buffer.apply(&v);
        });
    }
    if rejected > 0 {
        warn!(
            rejected,
            "WAL replay rejected rows that no longer fit their table"
        );
    }
    info!(
        shard = %log.shard,
        segments = segments.len(),
        rows,
        covered_through = after,
        head,
        "replayed the shard's WAL from the object store"
    );
    Ok(buffer)
}

/// Reads every file's footer; returns the ids of those that fail.
async fn check_files(store: &Arc<dyn ObjectStore>, files: &[FileMeta]) -> HashSet<u64> {
    futures::stream::iter(files.iter())
        .map(|f| async move {
            match crate::persist::check(store, &f.path).await {
                Ok(()) => None,
                Err(e) => {
                    error!(path = %f.path, table = %f.table, error = %e, "excluding corrupt Parquet file from queries");
                    Some(f.id)
                }
            }
        })
        .buffer_unordered(16)
        .filter_map(|x| async move { x })
        .collect()
        .await
}

/// Deletes data files the catalog does not know: leftovers of a persist or compaction that
/// crashed before (or after) its catalog commit.
async fn remove_orphans(store: &Arc<dyn ObjectStore>, files: &[FileMeta], min_age: Duration) {
    use object_store::ObjectStoreExt;
    let known: HashSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let cutoff = chrono_cutoff(min_age);
    let prefix = object_store::path::Path::from("tables");
    let mut listing = store.list(Some(&prefix));
    let mut orphans = Vec::new();
    while let Some(item) = listing.next().await {
        match item {
            Ok(meta)
                if !known.contains(meta.location.as_ref())
                    && cutoff.is_none_or(|c| meta.last_modified < c) =>
            {
                orphans.push(meta.location)
            }
            Ok(_) => {}
            Err(error) => {
                warn!(%error, "cannot list data files; orphans are kept");
                return;
            }
        }
    }
    for path in orphans {
        info!(%path, "removing orphaned data file");
        if let Err(error) = store.delete(&path).await {
            warn!(%error, %path, "cannot remove orphaned data file");
        }
    }
}

/// How old an unlisted data file must be before a node sharing its catalog removes it.
const SHARED_ORPHAN_AGE: Duration = Duration::from_secs(3600);

/// The instant before which an unlisted file counts as orphaned; `None`: every one does.
fn chrono_cutoff(min_age: Duration) -> Option<chrono::DateTime<chrono::Utc>> {
    if min_age.is_zero() {
        return None;
    }
    let age = chrono::Duration::from_std(min_age).ok()?;
    Some(chrono::Utc::now() - age)
}

/// A short pause used by the background loop.
pub(crate) const TICK: Duration = Duration::from_millis(500);
