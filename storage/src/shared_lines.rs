//! Append-only JSON-lines files shared by the nodes: the agents' GPU claims and worker
//! registrations (`gpu_claims.jsonl`, `agents.jsonl`).
//!
//! One node writes them (the shard's owner: query nodes pass registrations on), and each
//! append goes to PostgreSQL (`rw_agent_lines`) before the local file, so that a node taking
//! over rewrites its files from there ([`SharedLines::restore`]) and knows every GPU claimed
//! and every worker registered before it serves: another supplier cannot claim a GPU in the
//! moment of a failover, and agents keep writing without registering again.

use std::io;
use std::path::Path;

use tokio::runtime::Handle;

use crate::error::Result;
use crate::pg::Pg;

/// The shared log of the agents' line files.
#[derive(Debug, Clone)]
pub struct SharedLines {
    pg: Pg,
}

impl SharedLines {
    pub fn new(pg: Pg) -> Self {
        Self { pg }
    }

    /// Rewrites `dir/file` with the shared log's lines of `file`; answers how many bytes.
    pub async fn restore(&self, dir: &Path, file: &str) -> Result<usize> {
        let client = self.pg.client().await?;
        let rows = client
            .query(
                "SELECT lines FROM rw_agent_lines WHERE file = $1 ORDER BY seq",
                &[&file],
            )
            .await
            .map_err(|e| {
                self.pg
                    .error(&format!("cannot read the shared {file} from"), e)
            })?;
        let text: String = rows.iter().map(|r| r.get::<_, String>(0)).collect();
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
}
