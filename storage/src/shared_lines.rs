//! Append-only JSON-lines files shared by the nodes: the agents' GPU claims and worker
//! registrations (`gpu_claims.jsonl`, `agents.jsonl`).
//!
//! Each shard's owner writes its suppliers' lines (query nodes pass registrations on), and
//! each append goes to PostgreSQL (`rw_agent_lines`) before the local file, so that a node
//! taking over rewrites its files from there ([`SharedLines::restore`]) and knows every GPU
//! claimed and every worker registered before it serves: another supplier cannot claim a GPU
//! in the moment of a failover, and agents keep writing without registering again.
//!
//! A GPU may be claimed through any shard's owner, so a claim is checked and appended under a
//! cluster-wide lock, after taking in the lines other owners appended since this node last
//! looked ([`SharedLines::append_checked_blocking`]): two suppliers cannot claim one GPU
//! through two shards.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::runtime::Handle;

use crate::error::Result;
use crate::pg::Pg;

/// The shared log of the agents' line files.
#[derive(Debug, Clone)]
pub struct SharedLines {
    pg: Pg,
    /// Per file, the last line this node has read or appended (`rw_agent_lines.seq`).
    seen: Arc<Mutex<HashMap<String, i64>>>,
}

impl SharedLines {
    pub fn new(pg: Pg) -> Self {
        Self {
            pg,
            seen: Arc::default(),
        }
    }

    /// Rewrites `dir/file` with the shared log's lines of `file`; answers how many bytes.
    pub async fn restore(&self, dir: &Path, file: &str) -> Result<usize> {
        let client = self.pg.client().await?;
        let rows = client
            .query(
                "SELECT lines, seq FROM rw_agent_lines WHERE file = $1 ORDER BY seq",
                &[&file],
            )
            .await
            .map_err(|e| {
                self.pg
                    .error(&format!("cannot read the shared {file} from"), e)
            })?;
        let text: String = rows.iter().map(|r| r.get::<_, String>(0)).collect();
        if let Some(last) = rows.last() {
            self.seen.lock().insert(file.to_string(), last.get(1));
        }
        std::fs::create_dir_all(dir)?;
        let path = dir.join(file);
        let tmp = path.with_extension("jsonl.tmp");
        std::fs::write(&tmp, text.as_bytes())?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(text.len())
    }

    /// Appends whole lines of `file` to the shared log, blocking the calling thread (a
    /// worker thread of a multi-threaded runtime) until PostgreSQL has them.
    pub fn append_blocking(&self, file: &str, lines: &[u8]) -> io::Result<()> {
        let text = std::str::from_utf8(lines)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            .to_string();
        let (pg, file) = (self.pg.clone(), file.to_string());
        let insert = async move {
            let client = pg.client().await.map_err(io::Error::other)?;
            client
                .execute(
                    "INSERT INTO rw_agent_lines (file, lines) VALUES ($1, $2)",
                    &[&file, &text],
                )
                .await
                .map_err(|e| io::Error::other(pg.error("cannot share an agent record with", e)))?;
            Ok(())
        };
        tokio::task::block_in_place(|| Handle::current().block_on(insert))
    }

    /// The lines of `file` appended since this node last looked (its own appends through
    /// [`append_blocking`](Self::append_blocking) included: taking a line in twice changes
    /// nothing).
    pub async fn news(&self, file: &str) -> Result<String> {
        let after = self.seen.lock().get(file).copied().unwrap_or(0);
        let client = self.pg.client().await?;
        let rows = client
            .query(
                "SELECT lines, seq FROM rw_agent_lines WHERE file = $1 AND seq > $2 ORDER BY seq",
                &[&file, &after],
            )
            .await
            .map_err(|e| {
                self.pg
                    .error(&format!("cannot read the shared {file} from"), e)
            })?;
        if let Some(last) = rows.last() {
            let mut seen = self.seen.lock();
            let at = seen.entry(file.to_string()).or_insert(0);
            *at = (*at).max(last.get(1));
        }
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }

    /// Appends lines of `file` decided under a cluster-wide lock on it: `decide` gets the
    /// lines other nodes appended since this node last looked (to take in first), and
    /// answers the lines to append (none: nothing is appended) or an error (nothing is).
    /// Blocks the calling thread (a worker thread of a multi-threaded runtime).
    pub fn append_checked_blocking<E: From<io::Error>>(
        &self,
        file: &str,
        decide: impl FnOnce(&str) -> std::result::Result<Vec<u8>, E>,
    ) -> std::result::Result<(), E> {
        let run = async {
            let err = |e| io::Error::other(self.pg.error("cannot share an agent record with", e));
            let mut client = self.pg.client().await.map_err(io::Error::other)?;
            let tx = client.transaction().await.map_err(err)?;
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext('rw_agent_lines/' || $1))",
                &[&file],
            )
            .await
            .map_err(err)?;
            let after = self.seen.lock().get(file).copied().unwrap_or(0);
            let rows = tx
                .query(
                    "SELECT lines, seq FROM rw_agent_lines WHERE file = $1 AND seq > $2 ORDER BY seq",
                    &[&file, &after],
                )
                .await
                .map_err(err)?;
            let others: String = rows.iter().map(|r| r.get::<_, String>(0)).collect();
            let mut last = rows.last().map_or(after, |r| r.get(1));
            let mine = match decide(&others) {
                Ok(lines) => lines,
                Err(e) => {
                    // What was taken in stays taken in.
                    self.seen.lock().insert(file.to_string(), last);
                    return Ok(Err(e));
                }
            };
            if !mine.is_empty() {
                let text = std::str::from_utf8(&mine)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                last = tx
                    .query_one(
                        "INSERT INTO rw_agent_lines (file, lines) VALUES ($1, $2) RETURNING seq",
                        &[&file, &text],
                    )
                    .await
                    .map_err(err)?
                    .get(0);
            }
            tx.commit().await.map_err(err)?;
            self.seen.lock().insert(file.to_string(), last);
            Ok::<_, io::Error>(Ok(()))
        };
        tokio::task::block_in_place(|| Handle::current().block_on(run))?
    }
}
