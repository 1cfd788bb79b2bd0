//! The catalog on the object store: each version is a complete JSON document,
//! `catalog/<version:020>.json`, written create-only so that a second writer committing the
//! same version fails instead of overwriting. On start the newest version that parses wins; a
//! newer one that does not parse (a torn write on a store without atomic puts) is logged and
//! moved aside so the next commit can take its number.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload, path::Path};
use tracing::{info, warn};

use super::{CATALOG_FORMAT_VERSION, CatalogState};
use crate::error::{Error, Result};
/// How many old catalog versions to keep beside the newest.
const KEEP_VERSIONS: u64 = 8;

/// Reads and writes catalog versions on an object store.
#[derive(Debug, Clone)]
pub struct ObjectCatalog {
    store: Arc<dyn ObjectStore>,
}

fn version_path(v: u64) -> Path {
    Path::from(format!("catalog/{v:020}.json"))
}

impl ObjectCatalog {
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

    /// The newest catalog version that can be read, or `None` for a new database. A store
    /// that cannot be read is an error, never an older version: what an older catalog does
    /// not list would count as orphaned.
    pub async fn load(&self) -> Result<Option<CatalogState>> {
        let mut torn = Vec::new();
        for v in self.versions().await?.into_iter().rev() {
            let path = version_path(v);
            let bytes = match self.store.get(&path).await {
                Ok(r) => r.bytes().await?,
                // Pruned between the listing and now: an older version.
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            match serde_json::from_slice::<CatalogState>(&bytes) {
                Ok(state) if state.format_version == CATALOG_FORMAT_VERSION => {
                    info!(
                        version = state.version,
                        files = state.files.len(),
                        "loaded catalog"
                    );
                    for path in torn {
                        self.set_aside(&path).await?;
                    }
                    return Ok(Some(state));
                }
                Ok(state) => {
                    return Err(Error::Catalog(format!(
                        "catalog {path} has format version {}, this build reads {CATALOG_FORMAT_VERSION}",
                        state.format_version
                    )));
                }
                Err(error) => {
                    warn!(%error, %path, "skipping corrupt catalog version");
                    torn.push(path);
                }
            }
        }
        Ok(None)
    }

    /// Moves an unreadable version to `catalog-corrupt/` (kept for inspection), freeing its
    /// number for the next commit.
    async fn set_aside(&self, path: &Path) -> Result<()> {
        let name = path.filename().unwrap_or("unknown");
        let to = Path::from_iter(["catalog-corrupt", name]);
        self.store.copy(path, &to).await?;
        self.store.delete(path).await?;
        warn!(from = %path, %to, "moved a corrupt catalog version aside");
        Ok(())
    }

    /// Writes `state` as a new version, create-only, and prunes old ones. If that version
    /// exists already, another writer committed first: [`Error::CatalogConflict`].
    pub async fn save(&self, state: &CatalogState) -> Result<()> {
        let json = serde_json::to_vec_pretty(state)
            .map_err(|e| Error::Catalog(format!("cannot encode catalog: {e}")))?;
        let path = version_path(state.version);
        match self
            .store
            .put_opts(&path, PutPayload::from(json), PutMode::Create.into())
            .await
        {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => {
                return Err(Error::CatalogConflict {
                    expected: state.version - 1,
                    detail: format!("{path} was written by another writer"),
                });
            }
            Err(e) => return Err(e.into()),
        }
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
        let cat = ObjectCatalog::new(store.clone());
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
        // ...and is moved aside, so the next commit can take version 13.
        let next = CatalogState {
            format_version: CATALOG_FORMAT_VERSION,
            version: 13,
            ..Default::default()
        };
        cat.save(&next).await.unwrap();
        assert_eq!(cat.load().await.unwrap().unwrap().version, 13);
        assert!(
            store
                .get(&Path::from("catalog-corrupt/00000000000000000013.json"))
                .await
                .is_ok()
        );
        // A second writer committing the same version loses, and changes nothing.
        let err = cat.save(&next).await.unwrap_err();
        assert!(
            matches!(err, Error::CatalogConflict { expected: 12, .. }),
            "{err}"
        );
    }
}
