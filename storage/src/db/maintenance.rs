//! Persist, compaction, retention and the background loop that runs them.
//!
//! All three change the catalog, so they run one at a time under the persist lock, each
//! saving a complete new catalog version before changing what queries see.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use object_store::ObjectStoreExt;
use tokio::sync::{Notify, oneshot, watch};
use tracing::{info, warn};

use super::wal_thread::WalCmd;
use super::{CatalogWriter, Db, FrozenGen, TICK, now_ms};
use crate::catalog::{CATALOG_FORMAT_VERSION, CatalogState, FileMeta};
use crate::error::{Error, Result};
use crate::persist;
use crate::wal;

/// What a persist did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PersistStats {
    pub files: usize,
    pub rows: u64,
    pub bytes: u64,
    pub wal_segments_removed: usize,
}

/// What a compaction pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompactStats {
    pub partitions: usize,
    pub files_in: usize,
    pub files_out: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// How long replaced files linger before deletion, so running queries can finish.
const DELETE_GRACE: Duration = Duration::from_secs(60);

/// How often one commit is rebased on other nodes' commits before it gives up (and its work
/// is retried on the next pass).
const MAX_REBASES: usize = 5;

impl Db {
    /// Writes everything buffered to Parquet, records it in the catalog and truncates the WAL.
    pub async fn persist(&self) -> Result<PersistStats> {
        if self.is_follower() {
            return Ok(PersistStats::default());
        }
        let mut cw = self.persist_lock.lock().await;
        let (done, rx) = oneshot::channel();
        self.send(WalCmd::Freeze { done })?;
        rx.await.map_err(|_| Error::ShuttingDown)??;
        let gens: Vec<Arc<FrozenGen>> = self.state.read().frozen.clone();
        let mut total = PersistStats::default();
        for generation in gens {
            let s = self.persist_gen(&mut cw, &generation).await?;
            total.files += s.files;
            total.rows += s.rows;
            total.bytes += s.bytes;
            total.wal_segments_removed += s.wal_segments_removed;
        }
        Ok(total)
    }

    async fn persist_gen(
        &self,
        cw: &mut CatalogWriter,
        generation: &Arc<FrozenGen>,
    ) -> Result<PersistStats> {
        let start = Instant::now();
        let mut stats = PersistStats::default();
        let mut new_files = Vec::new();
        for (table, chunks) in &generation.frozen.tables {
            let def = self.schemas.get(table).ok_or_else(|| {
                Error::Internal(format!("frozen table `{table}` has no definition"))
            })?;
            for (partition, chunk) in chunks {
                let (min_time, max_time) = chunk.time_range();
                let (chunk, def2) = (chunk.clone(), def.clone());
                let rows = chunk.rows() as u64;
                let bytes =
                    tokio::task::spawn_blocking(move || persist::encode_chunk(&def2, &chunk))
                        .await
                        .map_err(|e| Error::Internal(format!("parquet encoder panicked: {e}")))??;
                let id = self.catalog.next_file_id(&mut cw.next_file_id).await?;
                let path = persist::file_path(table, *partition, id);
                let size = persist::put(&self.store, &path, bytes).await?;
                stats.files += 1;
                stats.rows += rows;
                stats.bytes += size;
                new_files.push(FileMeta {
                    id,
                    table: table.clone(),
                    partition: *partition,
                    path: path.to_string(),
                    size,
                    rows,
                    min_time,
                    max_time,
                    span: 0,
                });
            }
        }
        crate::crash::point("persist:after_files");
        let mut files = (*self.state.read().files).clone();
        // Rollups of the stretches the new files reach no longer stand for the raw data: they
        // leave in the same commit, and a later pass rebuilds them (`rollup.rs`).
        let stale: Vec<u64> = self
            .stale_rollups(&files, &new_files)
            .iter()
            .map(|f| f.id)
            .collect();
        let mut stale_paths = Vec::new();
        files.retain(|f| {
            let keep = !stale.contains(&f.id);
            if !keep {
                stale_paths.push(f.path.clone());
            }
            keep
        });
        files.extend(new_files);
        self.commit_catalog(cw, files, Some(generation)).await?;
        let now = Instant::now();
        cw.pending_deletes
            .extend(stale_paths.into_iter().map(|p| (now, p)));
        crate::crash::point("persist:after_catalog");
        self.buffer_bytes
            .fetch_sub(generation.frozen.bytes, Ordering::Relaxed);
        self.made_room.notify_waiters();
        self.metrics
            .buffer_bytes
            .set(self.buffer_bytes.load(Ordering::Relaxed) as i64);
        let through = generation.wal_through;
        stats.wal_segments_removed = if let Some(log) = &self.shard_log {
            log.remove_through(through).await?
        } else {
            let dir = self.wal_dir.clone();
            tokio::task::spawn_blocking(move || wal::remove_segments_through(&dir, through))
                .await
                .map_err(|e| Error::Internal(format!("WAL truncation panicked: {e}")))??
        };
        self.metrics.persists.inc();
        self.metrics.persisted_bytes.inc_by(stats.bytes);
        self.metrics
            .persist_seconds
            .observe(start.elapsed().as_secs_f64());
        info!(
            files = stats.files,
            rows = stats.rows,
            bytes = stats.bytes,
            elapsed_ms = start.elapsed().as_millis() as u64,
            "persisted buffer"
        );
        Ok(stats)
    }

    /// Saves a new catalog version with `files`, then makes it what queries see. A persist
    /// (of the frozen generation `persisted`, which leaves the buffer in the same step as its
    /// files arrive) is this node's shard's; anything else is maintenance, committed only
    /// under the compaction lease where there is one.
    ///
    /// Beside other nodes the catalog may have moved on since `files` was computed from this
    /// node's view: the change is then rebased on the new version ([`Db::rebase`]) and tried
    /// again, or refused where that could change an answer.
    pub(super) async fn commit_catalog(
        &self,
        cw: &mut CatalogWriter,
        files: Vec<FileMeta>,
        persisted: Option<&Arc<FrozenGen>>,
    ) -> Result<()> {
        let wal_through = persisted.map(|g| g.wal_through);
        let persist = wal_through.is_some();
        let lease = if persist {
            None
        } else {
            match self.maintenance_lease() {
                Some(lease) => lease,
                None => {
                    return Err(Error::Fenced(
                        "maintenance commit refused: this node does not hold the compaction lease"
                            .into(),
                    ));
                }
            }
        };
        let prev_wal = cw.wal_persisted_through;
        let shared = self.catalog.is_shared();
        let mut state = CatalogState {
            format_version: CATALOG_FORMAT_VERSION,
            version: cw.version + 1,
            // Beside other nodes only the shard's owner writes table definitions (as it
            // persists what it accepted): a compactor's view of them may lag.
            tables: if shared && !persist {
                Vec::new()
            } else {
                self.schemas.all().iter().map(|d| (**d).clone()).collect()
            },
            files,
            wal_persisted_through: wal_through.or(prev_wal),
            next_file_id: cw.next_file_id,
            coverage: Default::default(),
        };
        let mut prev_files = self.state.read().files.clone();
        let mut attempts = 0;
        // The catalog another node moved on to, when this commit was rebased on it.
        let mut moved_on = None;
        loop {
            match self
                .catalog
                .commit(&prev_files, prev_wal, &state, lease.as_ref())
                .await
            {
                Ok(()) => break,
                Err(Error::CatalogConflict { .. }) if shared && attempts < MAX_REBASES => {
                    attempts += 1;
                    let fresh = self.catalog.load().await?.unwrap_or_default();
                    state.files = self
                        .rebase(cw, &prev_files, state.files, &fresh.files, persist)
                        .await?;
                    state.version = fresh.version + 1;
                    cw.version = fresh.version;
                    prev_files = Arc::new(fresh.files);
                    moved_on = Some((fresh.coverage, fresh.tables));
                }
                Err(e) => return Err(e),
            }
        }
        cw.version = state.version;
        cw.wal_persisted_through = state.wal_persisted_through;
        // Other shards' rows that the other node's commit moved into files leave their
        // buffers in the same step as those files arrive.
        let rebuilt = match moved_on {
            Some((coverage, tables)) => self.refollow(&coverage, &tables).await,
            None => Vec::new(),
        };
        self.swap_in(state.files, rebuilt, persisted);
        Ok(())
    }

    /// The change from `prev` to `next`, applied to `fresh` (the catalog another node moved
    /// on to). Refused ([`Error::CatalogConflict`]) where the result could differ from
    /// committing the change alone:
    /// - a file it replaces is gone (another node replaced it first);
    /// - a file added meanwhile holds rows of a table and time it replaces (last write wins
    ///   follows file order, and the merged file would read as older than rows it does not
    ///   hold);
    /// - a rollup it adds covers raw rows added meanwhile.
    ///
    /// A persist is never refused: its files get new ids (newer than everything committed,
    /// as their rows are), and rollups the new rows make stale leave with it.
    async fn rebase(
        &self,
        cw: &mut CatalogWriter,
        prev: &[FileMeta],
        next: Vec<FileMeta>,
        fresh: &[FileMeta],
        persist: bool,
    ) -> Result<Vec<FileMeta>> {
        use std::collections::HashSet;
        let ids = |f: &[FileMeta]| f.iter().map(|f| f.id).collect::<HashSet<u64>>();
        let (prev_ids, next_ids, fresh_ids) = (ids(prev), ids(&next), ids(fresh));
        let removed: Vec<&FileMeta> = prev.iter().filter(|f| !next_ids.contains(&f.id)).collect();
        let mut added: Vec<FileMeta> = next
            .into_iter()
            .filter(|f| !prev_ids.contains(&f.id))
            .collect();
        let concurrent: Vec<FileMeta> = fresh
            .iter()
            .filter(|f| !prev_ids.contains(&f.id))
            .cloned()
            .collect();
        let conflict = |detail: String| Error::CatalogConflict {
            expected: cw.version,
            detail,
        };
        if !persist {
            if let Some(f) = removed.iter().find(|f| !fresh_ids.contains(&f.id)) {
                return Err(conflict(format!(
                    "file {} it replaces was replaced by another node",
                    f.path
                )));
            }
            if let Some(c) = concurrent.iter().find(|c| {
                removed.iter().any(|r| {
                    r.table == c.table && r.min_time <= c.max_time && c.min_time <= r.max_time
                })
            }) {
                return Err(conflict(format!(
                    "{} was added meanwhile with rows of a table and time it replaces",
                    c.path
                )));
            }
            if let Some(stale) = self.stale_rollups(&added, &concurrent).first() {
                return Err(conflict(format!(
                    "rollup {} covers raw rows added meanwhile",
                    stale.path
                )));
            }
        }
        let mut drop: HashSet<u64> = removed.iter().map(|f| f.id).collect();
        if persist {
            for f in &mut added {
                f.id = self.catalog.next_file_id(&mut cw.next_file_id).await?;
            }
            let now = Instant::now();
            for stale in self.stale_rollups(&concurrent, &added) {
                drop.insert(stale.id);
                cw.pending_deletes.push((now, stale.path.clone()));
            }
        }
        let mut files: Vec<FileMeta> = fresh
            .iter()
            .filter(|f| !drop.contains(&f.id))
            .cloned()
            .chain(added)
            .collect();
        files.sort_by_key(|f| f.id);
        info!(
            files = files.len(),
            concurrent = concurrent.len(),
            "another node committed meanwhile: rebased this commit on its catalog"
        );
        Ok(files)
    }

    /// Merges each partition that has at least `compaction_min_files` files into one file,
    /// and each closed partition (it ended more than `persist_age` ago, so its writes have
    /// been persisted) that has two or more: a query reads a closed partition's one file
    /// straight, with pruning, instead of merging its files on every read.
    pub async fn compact(&self) -> Result<CompactStats> {
        self.compact_where(self.config.compaction_min_files, self.closed_before())
            .await
    }

    /// Partitions starting before this time (ns) are closed: they ended more than
    /// `persist_age` ago, so every write for them has been persisted (a later write is a late
    /// one). Compaction, tier merges and rollups wait for it.
    pub(super) fn closed_before(&self) -> i64 {
        now_ms()
            .saturating_mul(1_000_000)
            .saturating_sub(self.config.persist_age.as_nanos() as i64)
            .saturating_sub(self.partition_ns)
    }

    /// As [`Db::compact`], with an explicit threshold (2 compacts every multi-file partition).
    pub async fn compact_with(&self, min_files: usize) -> Result<CompactStats> {
        self.compact_where(min_files, i64::MIN).await
    }

    /// Compacts partitions with at least `min_files` files, and those starting before
    /// `closed_before` (ns) with at least two.
    async fn compact_where(&self, min_files: usize, closed_before: i64) -> Result<CompactStats> {
        if self.maintenance_lease().is_none() {
            return Ok(CompactStats::default());
        }
        let mut cw = self.persist_lock.lock().await;
        let start = Instant::now();
        self.delete_pending(&mut cw, DELETE_GRACE).await;
        let (files, corrupt) = {
            let st = self.state.read();
            (st.files.clone(), st.corrupt.clone())
        };
        let mut groups: BTreeMap<(&str, i64), Vec<&FileMeta>> = BTreeMap::new();
        // Tier files are merged only with their tier (`tier.rs`), never into a partition.
        for f in files
            .iter()
            .filter(|f| !corrupt.contains(&f.id) && !f.is_tier())
        {
            groups.entry((&f.table, f.partition)).or_default().push(f);
        }
        let mut stats = CompactStats::default();
        for ((table, partition), group) in groups {
            let threshold = if partition < closed_before {
                2
            } else {
                min_files.max(2)
            };
            if group.len() < threshold {
                continue;
            }
            let Some(def) = self.schemas.get(table) else {
                continue;
            };
            let schema = def.arrow_schema();
            let mut inputs = Vec::with_capacity(group.len());
            let mut unreadable = false;
            for f in &group {
                match persist::fetch(&self.store, &f.path).await {
                    Ok(b) => inputs.push(b),
                    // A corrupt file is excluded (and logged) rather than failing every
                    // compaction pass; the partition is compacted next pass without it.
                    Err(e) => {
                        self.quarantine(f, &e.to_string());
                        unreadable = true;
                    }
                }
            }
            if unreadable {
                continue;
            }
            let def2 = def.clone();
            let merged =
                tokio::task::spawn_blocking(move || persist::merge_files(&def2, &schema, inputs))
                    .await
                    .map_err(|e| Error::Internal(format!("merge panicked: {e}")))?;
            let (bytes, rows) = match merged {
                Ok(m) => m,
                Err(e) => {
                    // A file whose footer or pages do not read: find it, exclude it.
                    let schema = def.arrow_schema();
                    let mut found = false;
                    for f in &group {
                        if let Err(e) = persist::read(&self.store, &f.path, &schema).await {
                            self.quarantine(f, &e.to_string());
                            found = true;
                        }
                    }
                    if found {
                        continue;
                    }
                    return Err(e);
                }
            };
            let id = self.catalog.next_file_id(&mut cw.next_file_id).await?;
            let path = persist::file_path(table, partition, id);
            let size = persist::put(&self.store, &path, bytes).await?;
            let new = FileMeta {
                id,
                table: table.to_string(),
                partition,
                path: path.to_string(),
                size,
                rows,
                min_time: group.iter().map(|f| f.min_time).min().unwrap_or(0),
                max_time: group.iter().map(|f| f.max_time).max().unwrap_or(0),
                span: 0,
            };
            self.replace_files(&mut cw, &group, new, "compact:after_file")
                .await?;
            crate::crash::point("compact:after_catalog");
            stats.partitions += 1;
            stats.files_in += group.len();
            stats.files_out += 1;
            stats.bytes_in += group.iter().map(|f| f.size).sum::<u64>();
            stats.bytes_out += size;
        }
        if stats.partitions > 0 {
            self.metrics.compactions.inc_by(stats.partitions as u64);
            self.metrics
                .compaction_seconds
                .observe(start.elapsed().as_secs_f64());
            info!(
                partitions = stats.partitions,
                files_in = stats.files_in,
                bytes_in = stats.bytes_in,
                bytes_out = stats.bytes_out,
                "compacted partitions"
            );
        }
        Ok(stats)
    }

    /// Commits the catalog with `replaced` swapped for `new` (crash point `crash_at` before the
    /// commit), and queues the replaced files for deletion once running queries are done.
    pub(super) async fn replace_files(
        &self,
        cw: &mut CatalogWriter,
        replaced: &[&FileMeta],
        new: FileMeta,
        crash_at: &str,
    ) -> Result<()> {
        let mut next: Vec<FileMeta> = (*self.state.read().files)
            .iter()
            .filter(|f| !replaced.iter().any(|r| r.id == f.id))
            .cloned()
            .collect();
        let path = object_store::path::Path::from(new.path.as_str());
        next.push(new);
        next.sort_by_key(|f| f.id);
        crate::crash::point(crash_at);
        if let Err(e) = self.commit_catalog(cw, next, None).await {
            // Never listed: nothing reads it. (A crash here leaves it to orphan removal.)
            if let Err(error) = self.store.delete(&path).await {
                warn!(%error, %path, "cannot remove a merged file whose commit failed");
            }
            return Err(e);
        }
        let now = Instant::now();
        cw.pending_deletes
            .extend(replaced.iter().map(|f| (now, f.path.clone())));
        Ok(())
    }

    /// Deletes the files compaction replaced now, without the grace that lets running queries
    /// finish reading them: for a measurement of what is stored when no query runs.
    pub async fn delete_replaced_files(&self) {
        let mut cw = self.persist_lock.lock().await;
        self.delete_pending(&mut cw, Duration::ZERO).await;
    }

    /// Drops files whose newest row is older than their table's retention. Returns how many.
    pub async fn enforce_retention(&self) -> Result<usize> {
        if self.maintenance_lease().is_none() {
            return Ok(0);
        }
        let mut cw = self.persist_lock.lock().await;
        let now_ns = now_ms().saturating_mul(1_000_000);
        let files = self.state.read().files.clone();
        let (keep, drop): (Vec<FileMeta>, Vec<FileMeta>) =
            files
                .iter()
                .cloned()
                .partition(|f| match self.config.retention_for(&f.table) {
                    Some(r) => f.max_time >= now_ns.saturating_sub(r.as_nanos() as i64),
                    None => true,
                });
        if drop.is_empty() {
            return Ok(0);
        }
        self.commit_catalog(&mut cw, keep, None).await?;
        let now = Instant::now();
        cw.pending_deletes
            .extend(drop.iter().map(|f| (now, f.path.clone())));
        info!(files = drop.len(), "dropped files past retention");
        Ok(drop.len())
    }

    /// Reads every file (of `table`, or of all tables) in full and excludes those that fail to
    /// decode. The footer check at open catches truncated or overwritten files; this catches
    /// corrupt pages behind an intact footer. Returns how many files were newly excluded.
    pub async fn scrub(&self, table: Option<&str>) -> usize {
        let files = self.files();
        let corrupt = self.state.read().corrupt.clone();
        let mut excluded = 0;
        for f in files.iter() {
            if corrupt.contains(&f.id) || table.is_some_and(|t| t != f.table) {
                continue;
            }
            let Some(def) = self.schemas.get(&f.table) else {
                continue;
            };
            if let Err(e) = persist::read(&self.store, &f.path, &def.arrow_schema()).await {
                self.quarantine(f, &e.to_string());
                excluded += 1;
            }
        }
        excluded
    }

    async fn delete_pending(&self, cw: &mut CatalogWriter, grace: Duration) {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut cw.pending_deletes)
            .into_iter()
            .partition(|(t, _)| t.elapsed() >= grace);
        cw.pending_deletes = later;
        for (_, path) in due {
            let p = object_store::path::Path::from(path.as_str());
            if let Err(error) = self.store.delete(&p).await {
                warn!(%error, %path, "cannot delete replaced data file");
            }
        }
    }

    fn should_persist(&self) -> bool {
        let active = self.state.read().buffer.bytes();
        if active >= self.config.persist_bytes
            || self.buffer_bytes.load(Ordering::Relaxed) > self.config.memory_budget
        {
            return true;
        }
        let oldest = self.oldest_unpersisted_ms.load(Ordering::Relaxed);
        oldest > 0 && now_ms() - oldest >= self.config.persist_age.as_millis() as i64
    }
}

/// Persists when the buffer is large or old enough; compacts and applies retention on their
/// interval. Ends when `shutdown` flips or the database is dropped.
pub(crate) async fn background(
    db: Weak<Db>,
    wakeup: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_compaction = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = wakeup.notified() => {}
            _ = shutdown.changed() => return,
        }
        let Some(db) = db.upgrade() else { return };
        if db.should_persist()
            && let Err(error) = db.persist().await
        {
            warn!(%error, "persist failed; will retry");
        }
        if last_compaction.elapsed() >= db.config.compaction_interval {
            last_compaction = Instant::now();
            if let Err(error) = db.compact().await {
                warn!(%error, "compaction failed; will retry");
            }
            if let Err(error) = db.compact_tiers().await {
                warn!(%error, "tier compaction failed; will retry");
            }
            if let Err(error) = db.build_rollups().await {
                warn!(%error, "building rollups failed; will retry");
            }
            if let Err(error) = db.enforce_retention().await {
                warn!(%error, "retention failed; will retry");
            }
        }
    }
}
