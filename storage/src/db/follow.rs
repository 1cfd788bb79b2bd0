//! A follower: a node that serves queries over a shard it does not own (`--mode query`).
//!
//! It writes nothing. Every [`FOLLOW_INTERVAL`] it reads the catalog's version from
//! PostgreSQL and the shard's WAL head; when the catalog changed it reloads the tables and
//! files and rebuilds its buffer from the shard's segments past the new coverage; when only
//! the head moved it applies the new segments. Files and buffer are swapped in together, so a
//! query sees each row once. A row acknowledged by the owner is queryable here after at most
//! one interval plus the time to fetch its segment.

use std::sync::Weak;
use std::time::Duration;

use tokio::sync::watch;
use tracing::warn;

use super::{Db, replay_shard};
use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::wal::ShardLog;

/// How often a follower looks for new catalog versions and WAL segments.
pub const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

/// Where a follower is in the shard's history.
#[derive(Debug)]
pub(crate) struct Position {
    pub log: ShardLog,
    pub catalog_version: u64,
    pub applied: u64,
}

impl Db {
    /// Catches up with the owner once.
    pub(crate) async fn follow_once(&self, at: &mut Position) -> Result<()> {
        let Catalog::Postgres(catalog) = &self.catalog else {
            return Err(Error::Internal(
                "a follower needs the PostgreSQL catalog".into(),
            ));
        };
        let version = catalog.version().await?;
        let head = at.log.head().await?;
        if version != at.catalog_version {
            let state = catalog.load().await?.unwrap_or_default();
            self.schemas.load(state.tables.iter().cloned());
            let covered = state.wal_persisted_through.map_or(0, |s| s.0);
            let buffer = replay_shard(
                &at.log,
                covered,
                head.max(covered),
                &self.schemas,
                self.partition_ns,
            )
            .await?;
            let bytes = buffer.bytes();
            {
                // Not in the middle of a maintenance pass (`--mode compact`): it computes its
                // commit from the files it started with.
                let _pass = self.persist_lock.lock().await;
                let mut st = self.state.write();
                st.files = std::sync::Arc::new(state.files);
                st.buffer = buffer;
            }
            self.buffer_bytes
                .store(bytes, std::sync::atomic::Ordering::Relaxed);
            *at = Position {
                log: at.log.clone(),
                catalog_version: version,
                applied: head.max(covered),
            };
        } else if head > at.applied {
            for (id, path) in at.log.segments(at.applied, head).await? {
                let bytes = at.log.read(&path).await?;
                let mut batches = Vec::new();
                ShardLog::decode(id, &path, bytes, |b| batches.push(b));
                let mut st = self.state.write();
                for batch in batches {
                    let (v, _) = self.schemas.validate(batch);
                    st.buffer.apply(&v);
                }
            }
            at.applied = head;
        }
        Ok(())
    }
}

impl Db {
    /// On a shard's owner beside a separate compactor: takes in the catalog versions other
    /// nodes committed (merged, rolled-up or expired files), so that its queries read the
    /// files that are listed now. Its buffer and WAL coverage are its own and stay.
    pub(crate) async fn follow_catalog(&self) -> Result<()> {
        let Catalog::Postgres(catalog) = &self.catalog else {
            return Ok(());
        };
        if self.is_follower() {
            return Ok(());
        }
        let Ok(mut cw) = self.persist_lock.try_lock() else {
            return Ok(());
        };
        if catalog.version().await? == cw.version {
            return Ok(());
        }
        let fresh = catalog.load().await?.unwrap_or_default();
        cw.version = fresh.version;
        self.metrics.files.set(fresh.files.len() as i64);
        self.metrics
            .file_bytes
            .set(fresh.files.iter().map(|f| f.size as i64).sum());
        self.state.write().files = std::sync::Arc::new(fresh.files);
        Ok(())
    }
}

/// Follows the owner until shutdown or until the database is dropped.
pub(crate) async fn run(db: Weak<Db>, mut at: Position, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
        let Some(db) = db.upgrade() else { return };
        if let Err(error) = db.follow_once(&mut at).await {
            warn!(%error, "cannot catch up with the shard's owner; retrying");
        }
    }
}
