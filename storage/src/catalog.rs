//! The catalog: table definitions, the Parquet files that hold persisted data, and how far
//! the WAL is covered by them.
//!
//! Each change writes a new, complete version as `catalog/<version:020>.json` on the object
//! store; the newest version that parses wins on start, so a torn write of the newest file
//! falls back to the one before it. The format carries `format_version` from the first release.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, path::Path};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::schema::TableDef;
use crate::wal::SegmentId;

/// The catalog format this build writes and reads.
pub const CATALOG_FORMAT_VERSION: u32 = 1;
/// How many old catalog versions to keep beside the newest.
const KEEP_VERSIONS: u64 = 8;

/// One persisted Parquet file: the rows of one table in one time partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// Increases with every file written; a higher id holds newer writes.
    pub id: u64,
    pub table: String,
    /// Start of the time partition (ns).
    pub partition: i64,
    /// Object store path.
    pub path: String,
    pub size: u64,
    pub rows: u64,
    pub min_time: i64,
    pub max_time: i64,
}

/// One version of the catalog.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CatalogState {
    pub format_version: u32,
    pub version: u64,
    pub tables: Vec<TableDef>,
    pub files: Vec<FileMeta>,
    /// Every WAL segment up to and including this one is covered by `files`.
    pub wal_persisted_through: Option<SegmentId>,
    pub next_file_id: u64,
}

/// Reads and writes catalog versions on an object store.
#[derive(Debug, Clone)]
pub struct CatalogStore {
    store: Arc<dyn ObjectStore>,
}

fn version_path(v: u64) -> Path {
    Path::from(format!("catalog/{v:020}.json"))
}

impl CatalogStore {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store }
    }

    async fn versions(&self) -> Result<Vec<u64>> {
        let prefix = Path::from("catalog");
        let metas: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        let mut versions: Vec<u64> = metas
            .iter()
            .filter_map(|m| m.location.filename()?.strip_suffix(".json")?.parse().ok())
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    /// The newest catalog version that can be read, or `None` for a new database.
    pub async fn load(&self) -> Result<Option<CatalogState>> {
        for v in self.versions().await?.into_iter().rev() {
            let path = version_path(v);
            let bytes = match self.store.get(&path).await {
                Ok(r) => r.bytes().await?,
                Err(error) => {
                    warn!(%error, %path, "skipping unreadable catalog version");
                    continue;
                }
            };
            match serde_json::from_slice::<CatalogState>(&bytes) {
                Ok(state) if state.format_version == CATALOG_FORMAT_VERSION => {
                    info!(
                        version = state.version,
                        files = state.files.len(),
                        "loaded catalog"
                    );
                    return Ok(Some(state));
                }
                Ok(state) => {
                    return Err(Error::Catalog(format!(
                        "catalog {path} has format version {}, this build reads {CATALOG_FORMAT_VERSION}",
                        state.format_version
                    )));
                }
                Err(error) => warn!(%error, %path, "skipping corrupt catalog version"),
            }
        }
        Ok(None)
    }

    /// Writes `state` as a new version and prunes old ones.
    pub async fn save(&self, state: &CatalogState) -> Result<()> {
        let json = serde_json::to_vec_pretty(state)
            .map_err(|e| Error::Catalog(format!("cannot encode catalog: {e}")))?;
        self.store
            .put(&version_path(state.version), PutPayload::from(json))
            .await?;
        if state.version > KEEP_VERSIONS {
            for v in self.versions().await? {
                if v + KEEP_VERSIONS < state.version {
                    // A leftover old version is harmless; it is retried next time.
                    let _ = self.store.delete(&version_path(v)).await;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn newest_readable_version_wins() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let cat = CatalogStore::new(store.clone());
        assert!(cat.load().await.unwrap().is_none());
        for v in 1..=12 {
            let s = CatalogState {
                format_version: CATALOG_FORMAT_VERSION,
                version: v,
                next_file_id: v,
                ..Default::default()
            };
            cat.save(&s).await.unwrap();
        }
        assert_eq!(cat.load().await.unwrap().unwrap().version, 12);
        assert_eq!(cat.versions().await.unwrap().len(), 9);
        // A torn newest version falls back to the previous one.
        store
            .put(&version_path(13), PutPayload::from(&b"{\"format_ver"[..]))
            .await
            .unwrap();
        assert_eq!(cat.load().await.unwrap().unwrap().version, 12);
    }
}
