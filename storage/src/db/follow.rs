//! Reading the shards other nodes write.
//!
//! Beside other nodes (a PostgreSQL catalog) every node reads every shard it does not write:
//! a query node (`--mode query`, `compact`, a standby) all of them, a shard's owner the
//! others. Each shard it follows has a buffer of its own ([`super::State::followed`]) holding
//! the shard's acknowledged segments past the catalog's coverage of it.
//!
//! Every [`FOLLOW_INTERVAL`] a node reads the catalog's version and every shard's WAL head.
//! - When the catalog moved, it loads it and swaps in its files together with a rebuilt buffer
//!   for each shard whose coverage moved (from the segments it keeps past the new coverage),
//!   so a query sees each row once: in a file or in a buffer, never both, never neither.
//! - When a head moved, it fetches the new segments and applies them to that shard's buffer.
//!
//! A row acknowledged by any shard's owner is queryable on every node after at most one
//! interval plus the time to fetch its segment, and reaches an owner's subscribers (the
//! primary's allocator and fault detection) then. A node's own commit that had to be rebased
//! on another node's swaps in the other shards' new coverage the same way
//! ([`Db::refollow`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;
use tokio::sync::watch;
use tracing::{info, warn};

use super::Db;
use crate::buffer::Buffer;
use crate::catalog::Catalog;
use crate::error::Result;
use crate::schema::{Schemas, ValidatedBatch};
use crate::wal::{SegmentId, ShardLog};

/// How often a node looks for new catalog versions and WAL segments of other shards.
pub const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

/// The shards a node reads but does not write, and where it is in each.
#[derive(Debug)]
pub(crate) struct Following {
    /// Any shard's log: the shared store and database ([`ShardLog::of`] names the shard).
    log: ShardLog,
    /// The shard this node writes, if any: never followed.
    own: Option<String>,
    /// Each shard's coverage in the catalog version whose files queries see now.
    coverage: BTreeMap<String, u64>,
    shards: BTreeMap<String, Followed>,
}

/// One followed shard.
#[derive(Debug, Default)]
struct Followed {
    /// Segments at or below this one are in files.
    covered: u64,
    /// Segments through this one are in the shard's buffer.
    applied: u64,
    /// The bodies (as stored) of the segments in `(covered, applied]`, to rebuild the
    /// buffer from when the coverage moves.
    segments: VecDeque<(SegmentId, Path, Bytes)>,
}

impl Following {
    /// Follows every shard but `own`, from the coverage in `coverage` (the catalog version
    /// loaded at open). Answers each followed shard's buffer, read through its head now.
    pub(crate) async fn start(
        log: ShardLog,
        own: Option<String>,
        coverage: BTreeMap<String, u64>,
        schemas: &Schemas,
        partition_ns: i64,
    ) -> Result<(Self, BTreeMap<String, Buffer>)> {
        let mut f = Following {
            log,
            own,
            coverage,
            shards: BTreeMap::new(),
        };
        let mut buffers = BTreeMap::new();
        for (shard, head) in f.log.heads().await? {
            if f.own.as_deref() == Some(shard.as_str()) {
                continue;
            }
            let batches = f.read(&shard, head).await?;
            let mut buffer = Buffer::new(partition_ns);
            for v in validate(schemas, batches) {
                buffer.apply(&v);
            }
            let fol = &f.shards[&shard];
            info!(
                %shard,
                covered_through = fol.covered,
                head,
                rows = buffer.rows(),
                "following the shard's WAL on the object store"
            );
            buffers.insert(shard, buffer);
        }
        Ok((f, buffers))
    }

    /// Fetches `shard`'s acknowledged segments past what it applied, through `head`; answers
    /// their batches, to apply to its buffer.
    async fn read(&mut self, shard: &str, head: u64) -> Result<Vec<crate::batch::WriteBatch>> {
        let covered = self.coverage.get(shard).copied().unwrap_or(0);
        let log = self.log.of(shard);
        let fol = self.shards.entry(shard.to_string()).or_insert(Followed {
            covered,
            applied: covered,
            segments: VecDeque::new(),
        });
        let mut batches = Vec::new();
        if head <= fol.applied {
            return Ok(batches);
        }
        // All or nothing: a segment that cannot be read now (the owner deleted it as a
        // persist covered it) is tried again after the catalog that covers it.
        let mut read = Vec::new();
        for (id, path) in log.segments(fol.applied, head).await? {
            let body = log.fetch(&path).await?;
            decode(id, &path, body.clone(), &mut batches)?;
            read.push((id, path, body));
        }
        fol.segments.extend(read);
        fol.applied = head;
        Ok(batches)
    }

    /// Moves each followed shard to its coverage in `coverage` (a catalog version about to
    /// be swapped in): drops the segments now in files, and rebuilds the buffer of each
    /// shard whose coverage moved from the segments left. Answers those buffers.
    fn refollow(
        &mut self,
        coverage: &BTreeMap<String, u64>,
        schemas: &Schemas,
        partition_ns: i64,
    ) -> Vec<(String, Buffer)> {
        let mut rebuilt = Vec::new();
        for (shard, fol) in &mut self.shards {
            let covered = coverage.get(shard).copied().unwrap_or(0);
            if covered <= fol.covered {
                continue;
            }
            while fol
                .segments
                .front()
                .is_some_and(|(id, _, _)| id.0 <= covered)
            {
                fol.segments.pop_front();
            }
            fol.covered = covered;
            fol.applied = fol.applied.max(covered);
            let mut batches = Vec::new();
            for (id, path, body) in &fol.segments {
                // Read once already: a failure now would have failed then.
                let _ = decode(*id, path, body.clone(), &mut batches);
            }
            let mut buffer = Buffer::new(partition_ns);
            for v in validate(schemas, batches) {
                buffer.apply(&v);
            }
            rebuilt.push((shard.clone(), buffer));
        }
        self.coverage = coverage.clone();
        rebuilt
    }
}

/// Appends the batches of one segment body to `out`.
fn decode(
    id: SegmentId,
    path: &Path,
    body: Bytes,
    out: &mut Vec<crate::batch::WriteBatch>,
) -> Result<()> {
    let bytes = ShardLog::unpack(path, body)?;
    ShardLog::decode(id, path, bytes, |b| out.push(b));
    Ok(())
}

/// Validates followed batches against this node's definitions (widening them as the
/// shard's owner did); rows that conflict are left out, and counted in the log.
fn validate(schemas: &Schemas, batches: Vec<crate::batch::WriteBatch>) -> Vec<ValidatedBatch> {
    let mut rejected = 0;
    let out = batches
        .into_iter()
        .map(|b| {
            let (v, rej) = schemas.validate(b);
            rejected += rej.len();
            v
        })
        .collect();
    if rejected > 0 {
        warn!(
            rejected,
            "rows of another shard conflict with this node's table definitions: left out here"
        );
    }
    out
}

impl Db {
    /// Catches up with the other shards once (see the module's comment).
    pub(crate) async fn follow_once(&self) -> Result<()> {
        let (Some(following), Catalog::Postgres(catalog)) = (&self.following, &self.catalog) else {
            return Ok(());
        };
        // The persist lock before the follow lock, as a commit takes them. A shard's owner
        // does not wait for its own persist or maintenance pass: it takes in the catalog on
        // a later tick (or in that commit, if it was rebased).
        let cw = if self.is_follower() {
            Some(self.persist_lock.lock().await)
        } else {
            self.persist_lock.try_lock().ok()
        };
        let mut f = following.lock().await;
        if let Some(mut cw) = cw
            && catalog.version().await? != cw.version
        {
            let fresh = catalog.load().await?.unwrap_or_default();
            self.schemas.merge(fresh.tables.iter().cloned());
            let rebuilt = f.refollow(&fresh.coverage, &self.schemas, self.partition_ns);
            cw.version = fresh.version;
            self.swap_in(fresh.files, rebuilt, None);
        }
        // One shard's failure (a segment its owner deleted as a persist covered it, before
        // this node took in that catalog) does not hold the others back.
        let mut first_error = None;
        for (shard, head) in f.log.heads().await? {
            if f.own.as_deref() == Some(shard.as_str()) {
                continue;
            }
            let batches = match f.read(&shard, head).await {
                Ok(b) => b,
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            if batches.is_empty() {
                continue;
            }
            let validated = validate(&self.schemas, batches);
            {
                let mut st = self.state.write();
                let buffer = st
                    .followed
                    .entry(shard)
                    .or_insert_with(|| Buffer::new(self.partition_ns));
                for v in &validated {
                    buffer.apply(v);
                }
                self.metrics.followed_bytes.set(followed_bytes(&st) as i64);
            }
            // A shard's owner passes the other shards' rows to its subscribers too, once they
            // are queryable: the primary's allocator and fault detection watch every GPU,
            // whichever shard its supplier writes. (A follower has no such subscribers.)
            if !self.is_follower() && self.subscribers.receiver_count() > 0 {
                for v in validated {
                    let _ = self.subscribers.send(Arc::new(v.batch));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// After a commit of this node's that was rebased on a catalog other nodes moved on to:
    /// the other shards' buffers at that catalog's coverage (the segments now in its files
    /// dropped), to swap in with its files. Call holding the persist lock.
    pub(crate) async fn refollow(
        &self,
        coverage: &BTreeMap<String, u64>,
        tables: &[crate::schema::TableDef],
    ) -> Vec<(String, Buffer)> {
        let Some(following) = &self.following else {
            return Vec::new();
        };
        self.schemas.merge(tables.iter().cloned());
        let mut f = following.lock().await;
        f.refollow(coverage, &self.schemas, self.partition_ns)
    }

    /// Makes `files` what queries read, with the followed shards' `rebuilt` buffers and
    /// without the frozen generation `retired` (persisted into `files`), in one step: a
    /// query sees each row once.
    pub(crate) fn swap_in(
        &self,
        files: Vec<crate::catalog::FileMeta>,
        rebuilt: Vec<(String, Buffer)>,
        retired: Option<&Arc<super::FrozenGen>>,
    ) {
        self.metrics.files.set(files.len() as i64);
        self.metrics
            .file_bytes
            .set(files.iter().map(|f| f.size as i64).sum());
        let mut st = self.state.write();
        st.files = Arc::new(files);
        if let Some(generation) = retired {
            st.frozen.retain(|g| !Arc::ptr_eq(g, generation));
        }
        for (shard, buffer) in rebuilt {
            st.followed.insert(shard, buffer);
        }
        self.metrics.followed_bytes.set(followed_bytes(&st) as i64);
    }
}

fn followed_bytes(st: &super::State) -> usize {
    st.followed.values().map(Buffer::bytes).sum()
}

/// Follows the other shards until shutdown or until the database is dropped.
pub(crate) async fn run(db: Weak<Db>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
        let Some(db) = db.upgrade() else { return };
        if let Err(error) = db.follow_once().await {
            warn!(%error, "cannot catch up with the other shards; retrying");
        }
    }
}
