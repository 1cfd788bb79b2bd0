//! Exactly-once agent batches.
//!
//! An agent retries a batch whose acknowledgement it did not get (a timeout, a connection
//! cut after the server had stored it). For gauges that is harmless (a retried row upserts
//! onto itself), but event tables keep every row, so a retried XID would be counted twice.
//! The server therefore remembers each worker's recent batches and acknowledges a repeat
//! without storing it again.
//!
//! A batch is recognised by its [`BatchId`], sent in header [`BATCH_HEADER`] as
//! `<epoch>-<seq>`: `epoch` 16 hex digits the agent chose at random when its spool directory
//! was first used, `seq` a decimal number that grows by one per batch and is never reused
//! (the agent persists a high-water mark, see `spool::BatchIds`). A spooled batch keeps its
//! id across retries and agent restarts, so two different batches never share an id even
//! when their bytes are equal (the same XID a minute later, a heartbeat without a time).
//! A batch without the header (an older agent) is recognised by a digest instead: the first
//! 8 bytes of the SHA-256 of the decompressed body.
//!
//! What was stored is written with the batch itself, as a row of table [`BATCH_TABLE`] (tags
//! `supplier`, `worker`; fields `digest` (always, for servers that know only digests),
//! `rows`, and `batch`, the id, when there is one), in the same WAL record as the data: a
//! batch is stored if and only if its row is. At start the server seeds the memory from that
//! table's last hour ([`seen_sql`], [`Seen::from_row`]), so a retry that arrives after a
//! crash and restart is recognised too. An id seen again with other bytes is an agent bug
//! (a reused number): it is refused ([`Begin::Conflict`]) rather than dropped or stored.
//!
//! Memory is bounded per worker: the last [`PER_WORKER`] batches. An agent sends one batch
//! at a time and retries the unacknowledged one before any later batch, so a retry is always
//! among a worker's most recent batches.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::str::FromStr;

use parking_lot::Mutex;
use rigwatch_storage::Db;
use sha2::{Digest, Sha256};

/// Where stored batches are recorded.
pub const BATCH_TABLE: &str = rigwatch_common::tables::AGENT_BATCH;

/// The field of [`BATCH_TABLE`] holding a batch's [`BatchId`] (as `<epoch>-<seq>`).
pub const ID_FIELD: &str = "batch";

/// The request header carrying a batch's id.
pub const BATCH_HEADER: &str = "x-rigwatch-batch";

/// Recent batches kept per worker (about a quarter of an hour at one batch a second; a retry
/// comes within the agent's backoff, at most a minute or two, unless the agent spooled it,
/// and a spooled batch is resent before any later one).
pub const PER_WORKER: usize = 1_024;

/// An agent's id for one of its batches: unique per (supplier, worker) as long as the agent
/// keeps its spool directory, and across a lost directory too (a new random epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId {
    /// Chosen at random when the agent's id file was created.
    pub epoch: u64,
    /// Grows by one per batch; never reused within an epoch.
    pub seq: u64,
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{}", self.epoch, self.seq)
    }
}

/// Why a batch id did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("batch id `{text}` is not `<epoch>-<seq>` (16 hex digits, a dash, a decimal number)")]
pub struct BatchIdError {
    pub text: String,
}

impl FromStr for BatchId {
    type Err = BatchIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BatchIdError {
            text: s.chars().take(64).collect(),
        };
        let (epoch, seq) = s.split_once('-').ok_or_else(bad)?;
        let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
        if epoch.len() != 16 || !epoch.chars().all(hex) {
            return Err(bad());
        }
        if seq.is_empty() || seq.len() > 20 || !seq.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        Ok(BatchId {
            epoch: u64::from_str_radix(epoch, 16).map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// How a batch is recognised: its id, or (from an agent that sends none) its digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BatchKey {
    Id(BatchId),
    Digest(i64),
}

/// A batch already stored, as read back from [`BATCH_TABLE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub supplier: String,
    pub worker: String,
    pub key: BatchKey,
    pub digest: i64,
}

impl Seen {
    /// Decodes one row of [`seen_sql`]'s answer; `None` for a row without a digest. A row
    /// whose id does not parse (never written by this server) is known by its digest.
    pub fn from_row(
        supplier: &str,
        worker: &str,
        digest: Option<i64>,
        id: Option<&str>,
    ) -> Option<Seen> {
        let digest = digest?;
        let key = match id.map(str::parse::<BatchId>) {
            Some(Ok(id)) => BatchKey::Id(id),
            _ => BatchKey::Digest(digest),
        };
        Some(Seen {
            supplier: supplier.to_string(),
            worker: worker.to_string(),
            key,
            digest,
        })
    }
}

/// The query that reads the batches stored in the last hour, oldest first, as columns
/// `supplier`, `worker`, `digest` (Int64), `batch` (Utf8, null for a batch without an id);
/// `None` if no batch was ever stored. (A table written only by older servers has no
/// `batch` column: it reads as null.)
pub fn seen_sql(db: &Db) -> Option<String> {
    let def = db.table(BATCH_TABLE)?;
    let id = if def.column_index(ID_FIELD).is_some() {
        format!("CAST({ID_FIELD} AS VARCHAR)")
    } else {
        "CAST(NULL AS VARCHAR)".to_string()
    };
    Some(format!(
        "SELECT supplier, worker, digest, {id} AS {ID_FIELD} FROM {BATCH_TABLE} \
         WHERE time > now() - interval '1 hour' AND digest IS NOT NULL ORDER BY time"
    ))
}

/// The digest of a decompressed batch body.
pub fn digest(body: &[u8]) -> i64 {
    let d = Sha256::digest(body);
    i64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

/// What [`Batches::begin`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Begin {
    /// New: store it, then call [`Batches::finish`].
    New,
    /// Stored before: acknowledge without storing.
    Duplicate,
    /// The same batch is being stored by another request right now.
    InFlight,
    /// The id was stored before with other bytes (an agent that reused a number).
    Conflict,
}

/// The recent batches of each `supplier/worker`.
#[derive(Debug, Default)]
pub struct Batches {
    inner: Mutex<Inner>,
}

/// One worker's recent batches: their digests by key, and the keys oldest first.
#[derive(Debug, Default)]
struct Recent {
    order: VecDeque<BatchKey>,
    digests: HashMap<BatchKey, i64>,
}

#[derive(Debug, Default)]
struct Inner {
    recent: HashMap<String, Recent>,
    in_flight: HashSet<(String, BatchKey)>,
}

fn worker_key(supplier: &str, worker: &str) -> String {
    format!("{supplier}/{worker}")
}

impl Inner {
    fn remember(&mut self, worker: String, key: BatchKey, digest: i64) {
        let recent = self.recent.entry(worker).or_default();
        if recent.digests.insert(key, digest).is_none() {
            recent.order.push_back(key);
            if recent.order.len() > PER_WORKER
                && let Some(old) = recent.order.pop_front()
            {
                recent.digests.remove(&old);
            }
        }
    }
}

impl Batches {
    /// Seeded with batches stored before a restart, oldest first.
    pub fn seeded(seen: impl IntoIterator<Item = Seen>) -> Self {
        let b = Batches::default();
        {
            let mut inner = b.inner.lock();
            for s in seen {
                inner.remember(worker_key(&s.supplier, &s.worker), s.key, s.digest);
            }
        }
        b
    }

    /// Claims `key` for this request unless it was stored or is being stored. `digest` is
    /// the body's, to tell a retry from a reused id.
    pub fn begin(&self, supplier: &str, worker: &str, key: BatchKey, digest: i64) -> Begin {
        let w = worker_key(supplier, worker);
        let mut inner = self.inner.lock();
        match inner.recent.get(&w).and_then(|r| r.digests.get(&key)) {
            Some(&d) if d == digest => return Begin::Duplicate,
            Some(_) => return Begin::Conflict,
            None => {}
        }
        if !inner.in_flight.insert((w, key)) {
            return Begin::InFlight;
        }
        Begin::New
    }

    /// Ends a [`Begin::New`] claim: `stored` says whether the batch (and its row of
    /// [`BATCH_TABLE`]) is now in the store.
    pub fn finish(&self, supplier: &str, worker: &str, key: BatchKey, digest: i64, stored: bool) {
        let w = worker_key(supplier, worker);
        let mut inner = self.inner.lock();
        inner.in_flight.remove(&(w.clone(), key));
        if stored {
            inner.remember(w, key, digest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seq: u64) -> BatchKey {
        BatchKey::Id(BatchId { epoch: 7, seq })
    }

    #[test]
    fn a_stored_batch_is_a_duplicate_a_failed_one_is_not() {
        let b = Batches::default();
        let d = digest(b"gpu,gpu_uuid=GPU-1 utilization=5 1\n");
        let k = BatchKey::Digest(d);
        assert_eq!(b.begin("acme", "w1", k, d), Begin::New);
        assert_eq!(b.begin("acme", "w1", k, d), Begin::InFlight);
        // Another worker's identical body is its own.
        assert_eq!(b.begin("acme", "w2", k, d), Begin::New);
        b.finish("acme", "w2", k, d, false);
        assert_eq!(
            b.begin("acme", "w2", k, d),
            Begin::New,
            "a failed store is forgotten"
        );
        b.finish("acme", "w1", k, d, true);
        assert_eq!(b.begin("acme", "w1", k, d), Begin::Duplicate);
        assert_ne!(d, digest(b"gpu,gpu_uuid=GPU-1 utilization=5 2\n"));
    }

    #[test]
    fn batches_with_ids_are_told_apart_by_id_not_bytes() {
        let b = Batches::default();
        let d = digest(b"heartbeat seq=1i\n");
        assert_eq!(b.begin("acme", "w1", id(1), d), Begin::New);
        b.finish("acme", "w1", id(1), d, true);
        // The same bytes under the next id are a new batch.
        assert_eq!(b.begin("acme", "w1", id(2), d), Begin::New);
        b.finish("acme", "w1", id(2), d, true);
        // Neither the digest nor the same seq of another epoch was remembered.
        assert_eq!(b.begin("acme", "w1", BatchKey::Digest(d), d), Begin::New);
        let other_epoch = BatchKey::Id(BatchId { epoch: 8, seq: 1 });
        assert_eq!(b.begin("acme", "w1", other_epoch, d), Begin::New);
        // A retry is a duplicate; the same id with other bytes is a conflict.
        assert_eq!(b.begin("acme", "w1", id(1), d), Begin::Duplicate);
        assert_eq!(b.begin("acme", "w1", id(1), d ^ 1), Begin::Conflict);
    }

    #[test]
    fn memory_is_bounded_per_worker_and_seeded_after_a_restart() {
        let seen = (0..PER_WORKER as u64 + 10).map(|s| {
            Seen::from_row(
                "a",
                "w",
                Some(s as i64),
                Some(&BatchId { epoch: 7, seq: s }.to_string()),
            )
            .unwrap()
        });
        let b = Batches::seeded(seen);
        assert_eq!(
            b.begin("a", "w", id(5), 5),
            Begin::New,
            "the oldest were forgotten"
        );
        let last = PER_WORKER as u64;
        assert_eq!(b.begin("a", "w", id(last), last as i64), Begin::Duplicate);
        let inner = b.inner.lock();
        let r = &inner.recent["a/w"];
        assert_eq!((r.order.len(), r.digests.len()), (PER_WORKER, PER_WORKER));
    }

    #[test]
    fn ids_round_trip_and_bad_ones_are_refused() {
        let i = BatchId {
            epoch: 0x00ab_cdef_0123_4567,
            seq: 42,
        };
        assert_eq!(i.to_string(), "00abcdef01234567-42");
        assert_eq!("00abcdef01234567-42".parse::<BatchId>(), Ok(i));
        let max = BatchId {
            epoch: u64::MAX,
            seq: u64::MAX,
        };
        assert_eq!(max.to_string().parse::<BatchId>(), Ok(max));
        for bad in [
            "",
            "42",
            "abc-1",
            "00abcdef01234567-",
            "00abcdef01234567--1",
            "00ABCDEF01234567-1",
            "00abcdef01234567-1x",
            "00abcdef01234567-99999999999999999999",
            "g0abcdef01234567-1",
        ] {
            assert!(bad.parse::<BatchId>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn rows_read_back_are_known_by_id_else_by_digest() {
        let by_id = Seen::from_row("a", "w", Some(3), Some("0000000000000007-9")).unwrap();
        assert_eq!(by_id.key, id(9));
        assert_eq!(by_id.digest, 3);
        let old = Seen::from_row("a", "w", Some(3), None).unwrap();
        assert_eq!(old.key, BatchKey::Digest(3));
        let garbled = Seen::from_row("a", "w", Some(3), Some("x")).unwrap();
        assert_eq!(garbled.key, BatchKey::Digest(3));
        assert!(Seen::from_row("a", "w", None, Some("0000000000000007-9")).is_none());
    }
}
