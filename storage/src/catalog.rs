//! The catalog: table definitions, the Parquet files that hold persisted data, and how far
//! the WAL is covered by them.
//!
//! Two homes, one contract. Without `--catalog` it lives on the object store beside the data
//! ([`ObjectCatalog`]: one JSON document per version, written create-only). With
//! `--catalog postgres://…` it lives in PostgreSQL ([`PgCatalog`]: a row per table and per
//! file), where several nodes can share it. Either way a commit names the version it was made
//! from and succeeds only if the catalog is still at that version (compare-and-swap), so two
//! writers can never silently overwrite each other's changes.

mod object;
mod pg;

use serde::{Deserialize, Serialize};

pub use object::ObjectCatalog;
pub use pg::PgCatalog;

use crate::error::Result;
use crate::schema::TableDef;
use crate::wal::SegmentId;

/// The catalog format this build writes and reads.
pub const CATALOG_FORMAT_VERSION: u32 = 1;

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
    /// The time (ns, from `partition`) the file holds when it holds several partitions: a
    /// tier file, merged from a closed tier's partitions (`--compaction-tier`). 0 for a file
    /// of one partition, as every file before tiers.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub span: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

impl FileMeta {
    /// Whether the file holds a whole tier of partitions.
    pub fn is_tier(&self) -> bool {
        self.span > 0
    }
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
    /// How far `files` cover each shard's WAL (`rw_wal_coverage`, every writer's, this one's
    /// included), where nodes share a PostgreSQL catalog: a node reading another shard's
    /// segments skips those at or below its coverage. Empty in a catalog of one node.
    #[serde(skip)]
    pub coverage: std::collections::BTreeMap<String, u64>,
}

/// Where the catalog lives.
#[derive(Debug, Clone)]
pub enum Catalog {
    Object(ObjectCatalog),
    Postgres(PgCatalog),
}

impl Catalog {
    /// The newest committed version, or `None` for a new database.
    pub async fn load(&self) -> Result<Option<CatalogState>> {
        match self {
            Catalog::Object(c) => c.load().await,
            Catalog::Postgres(c) => c.load().await,
        }
    }

    /// Commits `next` if the catalog is still at the version before it, whose files were
    /// `prev_files` and whose WAL coverage was `prev_wal`; otherwise fails with
    /// [`crate::Error::CatalogConflict`] and changes nothing. In PostgreSQL a commit made
    /// under `lease` (compaction's) also fails, with [`crate::Error::Fenced`], unless that
    /// lease is still live and this node's.
    pub async fn commit(
        &self,
        prev_files: &[FileMeta],
        prev_wal: Option<SegmentId>,
        next: &CatalogState,
        lease: Option<&crate::lease::Held>,
    ) -> Result<()> {
        match self {
            Catalog::Object(c) => c.save(next).await,
            Catalog::Postgres(c) => c.commit(prev_files, prev_wal, next, lease).await,
        }
    }

    /// An id for a new data file, never handed out before. `counter` is the id the object
    /// catalog records in its next version; PostgreSQL draws from a sequence instead, so that
    /// nodes writing side by side never collide.
    pub async fn next_file_id(&self, counter: &mut u64) -> Result<u64> {
        match self {
            Catalog::Object(_) => {
                let id = *counter;
                *counter += 1;
                Ok(id)
            }
            Catalog::Postgres(c) => c.next_file_id().await,
        }
    }

    /// Whether other nodes may write beside this one (so files the catalog does not list may
    /// be another node's persist in progress).
    pub fn is_shared(&self) -> bool {
        matches!(self, Catalog::Postgres(_))
    }
}
