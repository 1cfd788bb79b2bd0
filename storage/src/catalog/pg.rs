//! The catalog in PostgreSQL: `rw_catalog` holds the version, `rw_tables` a row per table
//! definition, `rw_files` a row per data file, `rw_wal_coverage` how far each writer's WAL is
//! covered by files. A commit is one transaction that advances the version by
//! compare-and-swap and applies the difference between the version it was made from and the
//! new one (files added and removed, tables changed, the writer's coverage).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use tracing::info;

use super::{CATALOG_FORMAT_VERSION, CatalogState, FileMeta};
use crate::error::{Error, Result};
use crate::lease::{Held, fenced};
use crate::pg::Pg;
use crate::schema::TableDef;
use crate::wal::SegmentId;

/// The catalog of a database shared through PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgCatalog {
    pg: Pg,
    /// Whose WAL coverage this node reads and advances (its node id; later, its shard).
    writer: Arc<str>,
    /// The tables as last committed or loaded, to send only the ones that changed.
    committed_tables: Arc<Mutex<HashMap<String, serde_json::Value>>>,
    /// The shard lease every commit must still hold.
    fence: Option<Held>,
}

/// `stored` (the committed definition of `name`) widened by `ours`' columns it lacks.
fn widen_json(
    name: &str,
    stored: serde_json::Value,
    ours: &serde_json::Value,
) -> Result<serde_json::Value> {
    let parse = |v: serde_json::Value| {
        serde_json::from_value::<TableDef>(v).map_err(|e| {
            Error::Catalog(format!(
                "table `{name}` in the PostgreSQL catalog does not parse: {e}"
            ))
        })
    };
    let mut have = parse(stored.clone())?;
    have.reindex();
    let mut ours = parse(ours.clone())?;
    ours.reindex();
    match have.widened_by(&ours) {
        None => Ok(stored),
        Some(wider) => serde_json::to_value(&wider)
            .map_err(|e| Error::Catalog(format!("cannot encode table `{name}`: {e}"))),
    }
}

fn int(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v)
        .map_err(|_| Error::Catalog(format!("{what} {v} does not fit PostgreSQL's bigint")))
}

impl PgCatalog {
    pub fn new(pg: Pg, writer: &str, fence: Option<Held>) -> Self {
        Self {
            pg,
            writer: writer.into(),
            committed_tables: Arc::default(),
            fence,
        }
    }

    pub fn pg(&self) -> &Pg {
        &self.pg
    }

    /// The committed catalog as this writer sees it (its own WAL coverage).
    pub async fn load(&self) -> Result<Option<CatalogState>> {
        let mut client = self.pg.client().await?;
        let err = |e| self.pg.error("cannot read the catalog from", e);
        // One snapshot for the version and the rows it describes.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(err)?;
        let row = tx
            .query_one(
                "SELECT version, format_version FROM rw_catalog WHERE id = 1",
                &[],
            )
            .await
            .map_err(err)?;
        let version: i64 = row.get(0);
        let format: i32 = row.get(1);
        if format as u32 != CATALOG_FORMAT_VERSION {
            return Err(Error::Catalog(format!(
                "the PostgreSQL catalog has format version {format}, this build reads {CATALOG_FORMAT_VERSION}"
            )));
        }
        if version == 0 {
            return Ok(None);
        }
        let mut tables = Vec::new();
        let mut committed = HashMap::new();
        for row in tx
            .query("SELECT name, def FROM rw_tables ORDER BY name", &[])
            .await
            .map_err(err)?
        {
            let name: String = row.get(0);
            let json: serde_json::Value = row.get(1);
            let def: TableDef = serde_json::from_value(json.clone()).map_err(|e| {
                Error::Catalog(format!(
                    "table `{name}` in the PostgreSQL catalog does not parse: {e}"
                ))
            })?;
            committed.insert(name, json);
            tables.push(def);
        }
        let files = tx
            .query(
                "SELECT id, table_name, partition_start, path, size, rows, min_time, max_time, span
                 FROM rw_files ORDER BY id",
                &[],
            )
            .await
            .map_err(err)?
            .iter()
            .map(|r| FileMeta {
                id: r.get::<_, i64>(0) as u64,
                table: r.get(1),
                partition: r.get(2),
                path: r.get(3),
                size: r.get::<_, i64>(4) as u64,
                rows: r.get::<_, i64>(5) as u64,
                min_time: r.get(6),
                max_time: r.get(7),
                span: r.get(8),
            })
            .collect::<Vec<_>>();
        let coverage: std::collections::BTreeMap<String, u64> = tx
            .query("SELECT writer, persisted_through FROM rw_wal_coverage", &[])
            .await
            .map_err(err)?
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
            .collect();
        let covered = coverage.get(&*self.writer).map(|c| SegmentId(*c));
        tx.commit().await.map_err(err)?;
        *self.committed_tables.lock() = committed;
        info!(version, files = files.len(), writer = %self.writer, "loaded catalog from PostgreSQL");
        Ok(Some(CatalogState {
            format_version: CATALOG_FORMAT_VERSION,
            version: version as u64,
            tables,
            next_file_id: files.last().map_or(1, |f| f.id + 1),
            files,
            wal_persisted_through: covered,
            coverage,
        }))
    }

    /// Commits the change from the previous version (`prev_files`, `prev_wal`) to `next` if
    /// the catalog is still at `next.version - 1`.
    pub async fn commit(
        &self,
        prev_files: &[FileMeta],
        prev_wal: Option<SegmentId>,
        next: &CatalogState,
        lease: Option<&Held>,
    ) -> Result<()> {
        let prev_version = next.version - 1;
        let before: HashSet<u64> = prev_files.iter().map(|f| f.id).collect();
        let after: HashSet<u64> = next.files.iter().map(|f| f.id).collect();
        let added: Vec<&FileMeta> = next
            .files
            .iter()
            .filter(|f| !before.contains(&f.id))
            .collect();
        let removed: Vec<i64> = prev_files
            .iter()
            .filter(|f| !after.contains(&f.id))
            .map(|f| f.id as i64)
            .collect();
        let mut changed_tables = Vec::new();
        {
            let committed = self.committed_tables.lock();
            for def in &next.tables {
                let json = serde_json::to_value(def).map_err(|e| {
                    Error::Catalog(format!("cannot encode table `{}`: {e}", def.name))
                })?;
                if committed.get(&def.name) != Some(&json) {
                    changed_tables.push((def.name.clone(), json));
                }
            }
        }

        let mut client = self.pg.client().await?;
        let err = |e| self.pg.error("cannot commit the catalog to", e);
        let tx = client.transaction().await.map_err(err)?;
        if let Some(held) = &self.fence {
            // FOR SHARE: a takeover of the shard waits until this commit is done.
            let holds = tx
                .query_opt(
                    "SELECT 1 FROM rw_wal_heads WHERE shard = $1 AND epoch = $2 FOR SHARE",
                    &[&&*self.writer, &held.epoch],
                )
                .await
                .map_err(err)?;
            if holds.is_none() {
                return Err(fenced("catalog commit refused", held));
            }
        }
        if let Some(held) = lease {
            crate::lease::check_in(&self.pg, &tx, held, "catalog commit refused").await?;
        }
        let (from, to) = (int(prev_version, "version")?, int(next.version, "version")?);
        let swapped = tx
            .execute(
                "UPDATE rw_catalog SET version = $2 WHERE id = 1 AND version = $1",
                &[&from, &to],
            )
            .await
            .map_err(err)?;
        if swapped != 1 {
            let now: i64 = tx
                .query_one("SELECT version FROM rw_catalog WHERE id = 1", &[])
                .await
                .map_err(err)?
                .get(0);
            return Err(Error::CatalogConflict {
                expected: prev_version,
                detail: format!(
                    "the PostgreSQL catalog is at version {now}: another node committed"
                ),
            });
        }
        // Definitions only widen: another node (another shard's owner) may have added
        // columns this one has not seen, and they must not be lost to this commit.
        for (name, json) in &mut changed_tables {
            let stored = tx
                .query_opt(
                    "SELECT def FROM rw_tables WHERE name = $1 FOR UPDATE",
                    &[&*name],
                )
                .await
                .map_err(err)?;
            if let Some(row) = stored {
                let stored: serde_json::Value = row.get(0);
                *json = widen_json(name, stored, json)?;
            }
            tx.execute(
                "INSERT INTO rw_tables (name, def) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET def = excluded.def",
                &[&*name, &*json],
            )
            .await
            .map_err(err)?;
        }
        if !removed.is_empty() {
            let gone = tx
                .execute("DELETE FROM rw_files WHERE id = ANY($1)", &[&removed])
                .await
                .map_err(err)?;
            if gone as usize != removed.len() {
                // Rolled back when `tx` drops.
                return Err(Error::CatalogConflict {
                    expected: prev_version,
                    detail: format!(
                        "{} of the {} files it replaces were already gone",
                        removed.len() - gone as usize,
                        removed.len()
                    ),
                });
            }
        }
        let insert = tx
            .prepare(
                "INSERT INTO rw_files
                 (id, table_name, partition_start, path, size, rows, min_time, max_time, span)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .await
            .map_err(err)?;
        for f in added {
            tx.execute(
                &insert,
                &[
                    &int(f.id, "file id")?,
                    &f.table,
                    &f.partition,
                    &f.path,
                    &int(f.size, "file size")?,
                    &int(f.rows, "row count")?,
                    &f.min_time,
                    &f.max_time,
                    &f.span,
                ],
            )
            .await
            .map_err(err)?;
        }
        if let Some(through) = next.wal_persisted_through
            && next.wal_persisted_through != prev_wal
        {
            tx.execute(
                "INSERT INTO rw_wal_coverage (writer, persisted_through) VALUES ($1, $2)
                 ON CONFLICT (writer) DO UPDATE SET persisted_through = excluded.persisted_through",
                &[&&*self.writer, &int(through.0, "WAL segment")?],
            )
            .await
            .map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        let mut committed = self.committed_tables.lock();
        for (name, json) in changed_tables {
            committed.insert(name, json);
        }
        Ok(())
    }

    /// The committed version (cheap: one row).
    pub async fn version(&self) -> Result<u64> {
        let client = self.pg.client().await?;
        let row = client
            .query_one("SELECT version FROM rw_catalog WHERE id = 1", &[])
            .await
            .map_err(|e| self.pg.error("cannot read the catalog version from", e))?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    /// A file id from the shared sequence.
    pub async fn next_file_id(&self) -> Result<u64> {
        let client = self.pg.client().await?;
        let row = client
            .query_one("SELECT nextval('rw_file_ids')", &[])
            .await
            .map_err(|e| self.pg.error("cannot draw a file id from", e))?;
        Ok(row.get::<_, i64>(0) as u64)
    }
}
