//! The WAL of a shard on the object store, for nodes that share a catalog.
//!
//! Each group commit becomes one object, `wal/<shard>/<seq:020>.<epoch:010>.<attempt:04>.wal`,
//! in the segment format of the local WAL (header with `seq` as its id, then records). An
//! ingest node acknowledges the group only after the object is written (create-only) and the
//! shard's log head in PostgreSQL (`rw_wal_heads`) has moved from `seq - 1` to `seq` by
//! compare-and-swap under the node's lease epoch. So:
//!
//! - a node that lost its lease cannot acknowledge: its head update matches no row;
//! - an object whose head update never happened (the node died in between, or was fenced) was
//!   never acknowledged, and replay ignores it: only `seq <= head` counts, and for each `seq`
//!   the object of the highest (epoch, attempt), the one the head update followed;
//! - segments at or below the catalog's coverage of the shard are in Parquet and are deleted
//!   after the catalog commit that covers them.
//!
//! An object's body is the segment compressed with zstd (level 1: the WAL's encoding repeats
//! tag values row after row; bytes on the wire and in the bucket cost money and time). A
//! body that starts with the segment magic instead of zstd's is read as it is.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload, path::Path};
use tokio::runtime::Handle;

use super::segment::{self, RECORD_HEADER_LEN};
use super::{SegmentId, codec};
use crate::batch::WriteBatch;
use crate::error::{Error, Result};
use crate::lease::{Held, fenced};
use crate::pg::Pg;

/// zstd's frame magic, little endian.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Fast: the group commit waits for it.
const ZSTD_LEVEL: i32 = 1;

/// One shard's log: its objects and its head.
#[derive(Debug, Clone)]
pub struct ShardLog {
    pub pg: Pg,
    pub store: Arc<dyn ObjectStore>,
    pub shard: String,
}

/// A segment object's place in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct ObjectName {
    seq: u64,
    epoch: u64,
    attempt: u64,
}

fn parse_name(name: &str) -> Option<ObjectName> {
    let mut parts = name.strip_suffix(".wal")?.split('.');
    let mut num = |width: usize| {
        let p = parts.next()?;
        (p.len() == width && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse().ok())
            .flatten()
    };
    let n = ObjectName {
        seq: num(20)?,
        epoch: num(10)?,
        attempt: num(4)?,
    };
    parts.next().is_none().then_some(n)
}

impl ShardLog {
    fn prefix(&self) -> Path {
        Path::from_iter(["wal", self.shard.as_str()])
    }

    fn object(&self, n: ObjectName) -> Path {
        self.prefix().join(format!(
            "{:020}.{:010}.{:04}.wal",
            n.seq, n.epoch, n.attempt
        ))
    }

    /// The shard's head: the last acknowledged segment (0: none yet).
    pub async fn head(&self) -> Result<u64> {
        let client = self.pg.client().await?;
        let row = client
            .query_opt(
                "SELECT head FROM rw_wal_heads WHERE shard = $1",
                &[&self.shard],
            )
            .await
            .map_err(|e| self.pg.error("cannot read a WAL head from", e))?;
        Ok(row.map_or(0, |r| r.get::<_, i64>(0) as u64))
    }

    async fn names(&self) -> Result<Vec<(ObjectName, Path)>> {
        let metas: Vec<_> = self.store.list(Some(&self.prefix())).try_collect().await?;
        let mut names: Vec<_> = metas
            .into_iter()
            .filter_map(|m| Some((parse_name(m.location.filename()?)?, m.location)))
            .collect();
        names.sort_by_key(|(n, _)| *n);
        Ok(names)
    }

    /// The acknowledged segments in `(after, head]`, in order: one object per sequence
    /// number, the one the head update followed.
    pub async fn segments(&self, after: u64, head: u64) -> Result<Vec<(SegmentId, Path)>> {
        let mut out: Vec<(SegmentId, Path)> = Vec::new();
        for (n, path) in self.names().await? {
            if n.seq <= after || n.seq > head {
                continue;
            }
            // Sorted by (seq, epoch, attempt): a later entry for the same seq supersedes.
            match out.last_mut() {
                Some((id, p)) if id.0 == n.seq => *p = path,
                _ => out.push((SegmentId(n.seq), path)),
            }
        }
        let expected = (after + 1..=head).map(SegmentId);
        if let Some(missing) = expected
            .zip(
                out.iter()
                    .map(|(id, _)| Some(*id))
                    .chain(std::iter::repeat(None)),
            )
            .find_map(|(want, got)| (got != Some(want)).then_some(want))
        {
            return Err(Error::Catalog(format!(
                "WAL segment {missing} of shard `{}` is missing from the object store (head {head}, covered through {after})",
                self.shard
            )));
        }
        Ok(out)
    }

    /// The same log's store and database, for another shard.
    pub fn of(&self, shard: &str) -> ShardLog {
        ShardLog {
            shard: shard.to_string(),
            ..self.clone()
        }
    }

    /// Every shard's head (shards that were ever taken).
    pub async fn heads(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        let client = self.pg.client().await?;
        let rows = client
            .query("SELECT shard, head FROM rw_wal_heads", &[])
            .await
            .map_err(|e| self.pg.error("cannot read the WAL heads from", e))?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
            .collect())
    }

    /// The segment in one object, decompressed.
    pub async fn read(&self, path: &Path) -> Result<Bytes> {
        let body = self.fetch(path).await?;
        Self::unpack(path, body)
    }

    /// One object's body as stored (compressed).
    pub async fn fetch(&self, path: &Path) -> Result<Bytes> {
        Ok(self.store.get(path).await?.bytes().await?)
    }

    /// The segment in a body [`fetch`](Self::fetch) read.
    pub fn unpack(path: &Path, body: Bytes) -> Result<Bytes> {
        if !body.starts_with(&ZSTD_MAGIC) {
            return Ok(body);
        }
        zstd::decode_all(body.as_ref())
            .map(Bytes::from)
            .map_err(|e| Error::Catalog(format!("WAL object {path} does not decompress: {e}")))
    }

    /// Decodes a segment object's records, stopping at a corrupt one (logged).
    pub fn decode(id: SegmentId, path: &Path, bytes: Bytes, mut f: impl FnMut(WriteBatch)) {
        let mut reader = segment::SegmentReader::from_bytes(path.as_ref().into(), id, bytes);
        loop {
            match reader.next() {
                Ok(segment::Step::Record { offset }) => match codec::decode(reader.payload()) {
                    Ok(batch) => f(batch),
                    Err(e) => {
                        tracing::warn!(%path, offset, error = %e, "skipping corrupt WAL object tail");
                        return;
                    }
                },
                Ok(segment::Step::End) => return,
                Ok(segment::Step::Corrupt { offset, reason }) => {
                    tracing::warn!(%path, offset, %reason, "skipping corrupt WAL object tail");
                    return;
                }
                Err(e) => {
                    tracing::warn!(%path, error = %e, "cannot read WAL object");
                    return;
                }
            }
        }
    }

    /// Deletes the segments at or below `through` (covered by Parquet), and leftovers of
    /// attempts that were never acknowledged below it. Returns how many objects went.
    pub async fn remove_through(&self, through: SegmentId) -> Result<usize> {
        let mut removed = 0;
        for (n, path) in self.names().await? {
            if n.seq <= through.0 {
                self.store.delete(&path).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// The WAL writer of a shard this node holds: called from the WAL thread, which blocks on
/// the object store and PostgreSQL through `rt`.
#[derive(Debug)]
pub struct RemoteWal {
    log: ShardLog,
    held: Held,
    rt: Handle,
    /// Segment header plus the records of the group being committed.
    group: Vec<u8>,
    records: usize,
    head: u64,
    /// Attempts at `head + 1` so far (a failed upload may still have landed).
    attempt: u64,
}

impl RemoteWal {
    pub fn new(log: ShardLog, held: Held, head: u64, rt: Handle) -> Self {
        let mut w = Self {
            log,
            held,
            rt,
            group: Vec::new(),
            records: 0,
            head,
            attempt: 0,
        };
        w.reset_group();
        w
    }

    fn reset_group(&mut self) {
        self.group.clear();
        self.group
            .extend_from_slice(&segment::encode_header(SegmentId(self.head + 1)));
        self.records = 0;
    }

    /// Adds `batch` to the group; acknowledged only after [`sync`](Self::sync).
    pub fn append(&mut self, batch: &WriteBatch) -> Result<u64> {
        let start = self.group.len();
        self.group.resize(start + RECORD_HEADER_LEN, 0);
        codec::encode(batch, &mut self.group);
        if segment::seal_record(&mut self.group[start..]).is_none() {
            self.group.truncate(start);
            return Err(Error::Internal(
                "batch encodes to over the 4 GiB record limit".into(),
            ));
        }
        self.records += 1;
        Ok((self.group.len() - start) as u64)
    }

    /// Uploads the group as segment `head + 1` and advances the head under this node's epoch.
    /// On error nothing of the group is acknowledged and the group is dropped.
    pub fn sync(&mut self) -> Result<()> {
        self.sync_fenced(None)
    }

    /// As [`sync`](Self::sync), and the head moves only if this node also still holds
    /// `fence` (checked in the same statement).
    pub fn sync_fenced(&mut self, fence: Option<&Held>) -> Result<()> {
        if self.records == 0 {
            return Ok(());
        }
        let seq = self.head + 1;
        let name = ObjectName {
            seq,
            epoch: self.held.epoch as u64,
            attempt: self.attempt,
        };
        let body = match zstd::encode_all(self.group.as_slice(), ZSTD_LEVEL) {
            Ok(z) => Bytes::from(z),
            Err(_) => Bytes::from(std::mem::take(&mut self.group)),
        };
        let path = self.log.object(name);
        let result = self
            .rt
            .block_on(self.upload_and_advance(&path, body, seq, fence));
        match result {
            Ok(()) => {
                self.head = seq;
                self.attempt = 0;
            }
            Err(_) => self.attempt += 1,
        }
        self.reset_group();
        result
    }

    async fn upload_and_advance(
        &self,
        path: &Path,
        body: Bytes,
        seq: u64,
        fence: Option<&Held>,
    ) -> Result<()> {
        self.log
            .store
            .put_opts(path, PutPayload::from(body), PutMode::Create.into())
            .await?;
        crate::crash::point("wal:after_upload");
        let pg = &self.log.pg;
        let client = pg.client().await?;
        let (seq, prev) = (seq as i64, seq as i64 - 1);
        // Without a second lease the statement checks none (`$7` is NULL).
        let (fence_name, fence_epoch) = (fence.map(|f| &f.name), fence.map(|f| f.epoch));
        let advanced = client
            .execute(
                "UPDATE rw_wal_heads SET head = $2
                 WHERE shard = $1 AND head = $3 AND epoch = $4
                   AND EXISTS (SELECT 1 FROM rw_leases
                               WHERE name = $5 AND holder = $6 AND epoch = $4
                                 AND expires_at > now())
                   AND ($7::text IS NULL
                        OR EXISTS (SELECT 1 FROM rw_leases
                                   WHERE name = $7 AND holder = $6 AND epoch = $8
                                     AND expires_at > now()))",
                &[
                    &self.log.shard,
                    &seq,
                    &prev,
                    &self.held.epoch,
                    &self.held.name,
                    &self.held.holder,
                    &fence_name,
                    &fence_epoch,
                ],
            )
            .await
            .map_err(|e| pg.error("cannot advance the WAL head on", e))?;
        if advanced != 1 {
            return Err(match fence {
                Some(f) => Error::Fenced(format!(
                    "write not acknowledged: node `{}` no longer holds lease `{}` at epoch {} or lease `{}` at epoch {} (another node took it over)",
                    self.held.holder, self.held.name, self.held.epoch, f.name, f.epoch
                )),
                None => fenced("write not acknowledged", &self.held),
            });
        }
        Ok(())
    }

    /// Commits what is pending; every acknowledged segment is then `<=` the answer.
    pub fn rotate(&mut self) -> Result<SegmentId> {
        self.sync()?;
        Ok(SegmentId(self.head))
    }

    pub fn current_segment(&self) -> SegmentId {
        SegmentId(self.head + 1)
    }

    pub fn log(&self) -> &ShardLog {
        &self.log
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_round_trip_and_order_by_seq_epoch_attempt() {
        let n = ObjectName {
            seq: 12,
            epoch: 3,
            attempt: 1,
        };
        let name = format!("{:020}.{:010}.{:04}.wal", n.seq, n.epoch, n.attempt);
        assert_eq!(parse_name(&name), Some(n));
        for bad in [
            "00000000000000000012.wal",
            "12.3.1.wal",
            "00000000000000000012.0000000003.0001.wal.tmp",
            "00000000000000000012.0000000003.0001.0.wal",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
        let later_epoch = ObjectName {
            epoch: 4,
            attempt: 0,
            ..n
        };
        assert!(later_epoch > n);
    }
}
