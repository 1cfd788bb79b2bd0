//! PostgreSQL: where several nodes keep the state they share (the catalog, WAL heads,
//! leases). One connection per [`Pg`], reconnected when it breaks; the schema is created and
//! upgraded by numbered migrations, each applied once, under an advisory lock so that nodes
//! starting together do not race.
//!
//! Connections are plain TCP (`sslmode=disable`): run PostgreSQL on loopback or a trusted
//! network. The URL is never logged with its password.

use std::sync::Arc;

use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::{Client, NoTls};
use tracing::{info, warn};

use crate::error::{Error, Result};

/// The schema, one step per entry; entry `i` is migration `i + 1`. Append only: a released
/// migration is never edited, a change is a new entry.
const MIGRATIONS: &[&str] = &[
    // 1: the catalog, WAL heads and leases.
    "CREATE TABLE rw_catalog (
         id int PRIMARY KEY CHECK (id = 1),
         version bigint NOT NULL,
         format_version int NOT NULL
     );
     INSERT INTO rw_catalog (id, version, format_version) VALUES (1, 0, 1);
     CREATE TABLE rw_tables (name text PRIMARY KEY, def jsonb NOT NULL);
     CREATE TABLE rw_files (
         id bigint PRIMARY KEY,
         table_name text NOT NULL,
         partition_start bigint NOT NULL,
         path text NOT NULL UNIQUE,
         size bigint NOT NULL,
         rows bigint NOT NULL,
         min_time bigint NOT NULL,
         max_time bigint NOT NULL
     );
     CREATE INDEX rw_files_table ON rw_files (table_name, partition_start);
     CREATE SEQUENCE rw_file_ids START 1;
     CREATE TABLE rw_wal_coverage (
         writer text PRIMARY KEY,
         persisted_through bigint NOT NULL
     );
     CREATE TABLE rw_leases (
         name text PRIMARY KEY,
         holder text NOT NULL,
         epoch bigint NOT NULL,
         expires_at timestamptz NOT NULL,
         address text NOT NULL DEFAULT ''
     );",
    // 2: each shard's WAL head and the epoch allowed to advance it.
    "CREATE TABLE rw_wal_heads (
         shard text PRIMARY KEY,
         head bigint NOT NULL,
         epoch bigint NOT NULL
     );",
    // 3: the supplier and token registry (hashes only), shared by every node.
    "CREATE TABLE rw_auth (
         id int PRIMARY KEY CHECK (id = 1),
         version bigint NOT NULL,
         doc jsonb NOT NULL
     );
     INSERT INTO rw_auth (id, version, doc) VALUES (1, 0, 'null');",
    // 4: the agents' GPU claims and worker registrations, as the lines of their files.
    "CREATE TABLE rw_agent_lines (
         seq bigserial PRIMARY KEY,
         file text NOT NULL,
         lines text NOT NULL
     );",
    // 5: tier files (several partitions merged into one file): the time they span.
    "ALTER TABLE rw_files ADD COLUMN span bigint NOT NULL DEFAULT 0;",
    // 6: how many shards the cluster's writes are split into (the first node's --shards).
    "CREATE TABLE rw_cluster (
         id int PRIMARY KEY CHECK (id = 1),
         shards int NOT NULL CHECK (shards > 0)
     );",
];

/// A key for `pg_advisory_xact_lock` that no other application is likely to use.
const MIGRATION_LOCK: i64 = 0x7269_6777_6174_6368; // "rigwatch"

/// A shared PostgreSQL connection.
#[derive(Clone)]
pub struct Pg {
    url: Arc<str>,
    conn: Arc<Mutex<Option<Conn>>>,
}

struct Conn {
    client: Client,
    /// Drives the connection; stopped when the connection is dropped.
    _task: rigwatch_common::task::Task<()>,
}

impl std::fmt::Debug for Pg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pg")
            .field("url", &redact(&self.url))
            .finish()
    }
}

/// `url` with any password replaced by `***`, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// A guard holding the connection; derefs to a [`Client`].
pub struct PgGuard<'a>(MutexGuard<'a, Option<Conn>>);

impl std::ops::Deref for PgGuard<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.0.as_ref().expect("connected").client
    }
}

impl std::ops::DerefMut for PgGuard<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.0.as_mut().expect("connected").client
    }
}

impl Pg {
    /// Connects and brings the schema up to date.
    pub async fn connect(url: &str) -> Result<Pg> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(Error::Catalog(format!(
                "--catalog must be a postgres:// URL (postgres://USER:PASSWORD@HOST:PORT/DB), got `{}`",
                redact(url)
            )));
        }
        let pg = Pg {
            url: url.into(),
            conn: Arc::new(Mutex::new(None)),
        };
        pg.migrate().await?;
        Ok(pg)
    }

    /// The connection, reconnecting first if it is closed.
    pub async fn client(&self) -> Result<PgGuard<'_>> {
        let mut slot = self.conn.lock().await;
        if slot.as_ref().is_none_or(|c| c.client.is_closed()) {
            let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
                .await
                .map_err(|e| self.error("cannot connect to", e))?;
            let url = redact(&self.url);
            let task = rigwatch_common::task::spawn(async move {
                if let Err(error) = connection.await {
                    warn!(%error, %url, "PostgreSQL connection closed");
                }
            });
            *slot = Some(Conn {
                client,
                _task: task,
            });
        }
        Ok(PgGuard(slot))
    }

    /// An error for a failed statement against this database.
    pub fn error(&self, what: &str, e: tokio_postgres::Error) -> Error {
        Error::Catalog(format!("{what} PostgreSQL {}: {e}", redact(&self.url)))
    }

    async fn migrate(&self) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.error("cannot start a migration on", e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(|e| self.error("cannot lock migrations on", e))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS rw_migrations (
                 version int PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(|e| self.error("cannot create rw_migrations on", e))?;
        let row = tx
            .query_one("SELECT coalesce(max(version), 0) FROM rw_migrations", &[])
            .await
            .map_err(|e| self.error("cannot read rw_migrations on", e))?;
        let applied: i32 = row.get(0);
        if applied as usize > MIGRATIONS.len() {
            return Err(Error::Catalog(format!(
                "PostgreSQL {} has schema version {applied}, newer than this build's {}: upgrade rigwatch",
                redact(&self.url),
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
            let version = i as i32 + 1;
            tx.batch_execute(sql)
                .await
                .map_err(|e| self.error(&format!("migration {version} failed on"), e))?;
            tx.execute(
                "INSERT INTO rw_migrations (version) VALUES ($1)",
                &[&version],
            )
            .await
            .map_err(|e| self.error("cannot record a migration on", e))?;
            info!(version, "applied PostgreSQL migration");
        }
        tx.commit()
            .await
            .map_err(|e| self.error("cannot commit migrations on", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact("postgres://rw:s3cret@127.0.0.1:5432/rigwatch"),
            "postgres://rw:***@127.0.0.1:5432/rigwatch"
        );
        assert_eq!(
            redact("postgres://rw@127.0.0.1/rigwatch"),
            "postgres://rw@127.0.0.1/rigwatch"
        );
        assert_eq!(redact("host=x"), "host=x");
    }
}
