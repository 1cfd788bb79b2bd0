//! Exactly-once agent batches.
//!
//! An agent retries a batch whose acknowledgement it did not get (a timeout, a connection
//! cut after the server had stored it). For gauges that is harmless (a retried row upserts
//! onto itself), but event tables keep every row, so a retried XID would be counted twice.
//! The server therefore remembers a digest (the first 8 bytes of the SHA-256 of the
//! decompressed body) of each worker's recent batches and acknowledges a repeat without
//! storing it again.
//!
//! The digest is written with the batch itself, as a row of table [`BATCH_TABLE`] (tags
//! `supplier`, `worker`; fields `digest`, `rows`), in the same WAL record as the data: a
//! batch is stored if and only if its digest is. At start the server seeds the memory from
//! that table's last hour ([`Seen`]), so a retry that arrives after a crash and restart is
//! recognised too. Two different batches never share a body, as every row carries its time.

use std::collections::{HashMap, HashSet, VecDeque};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

/// Where batch digests are written.
pub const BATCH_TABLE: &str = "agent_batch";

/// Recent digests kept per worker (about a quarter of an hour at one batch a second; a retry
/// comes within the agent's backoff, at most a minute or two, unless the agent spooled it,
/// and a spooled batch is resent only after its first send failed).
const PER_WORKER: usize = 1_024;

/// A batch already stored: (supplier, worker, digest), as read back from [`BATCH_TABLE`].
pub type Seen = (String, String, i64);

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
}

/// The digests of recent batches, per `supplier/worker`.
#[derive(Debug, Default)]
pub struct Batches {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    recent: HashMap<String, (VecDeque<i64>, HashSet<i64>)>,
    in_flight: HashSet<(String, i64)>,
}

fn key(supplier: &str, worker: &str) -> String {
    format!("{supplier}/{worker}")
}

impl Inner {
    fn remember(&mut self, key: String, digest: i64) {
        let (order, set) = self.recent.entry(key).or_default();
        if set.insert(digest) {
            order.push_back(digest);
            if order.len() > PER_WORKER
                && let Some(old) = order.pop_front()
            {
                set.remove(&old);
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
            for (supplier, worker, d) in seen {
                inner.remember(key(&supplier, &worker), d);
            }
        }
        b
    }

    /// Claims `digest` for this request unless it was stored or is being stored.
    pub fn begin(&self, supplier: &str, worker: &str, digest: i64) -> Begin {
        let k = key(supplier, worker);
        let mut inner = self.inner.lock();
        if inner
            .recent
            .get(&k)
            .is_some_and(|(_, set)| set.contains(&digest))
        {
            return Begin::Duplicate;
        }
        if !inner.in_flight.insert((k, digest)) {
            return Begin::InFlight;
        }
        Begin::New
    }

    /// Ends a [`Begin::New`] claim: `stored` says whether the batch (and its digest row) is
    /// now in the store.
    pub fn finish(&self, supplier: &str, worker: &str, digest: i64, stored: bool) {
        let k = key(supplier, worker);
        let mut inner = self.inner.lock();
        inner.in_flight.remove(&(k.clone(), digest));
        if stored {
            inner.remember(k, digest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_batch_is_a_duplicate_a_failed_one_is_not() {
        let b = Batches::default();
        let d = digest(b"gpu,gpu_uuid=GPU-1 utilization=5 1\n");
        assert_eq!(b.begin("acme", "w1", d), Begin::New);
        assert_eq!(b.begin("acme", "w1", d), Begin::InFlight);
        // Another worker's identical body is its own.
        assert_eq!(b.begin("acme", "w2", d), Begin::New);
        b.finish("acme", "w2", d, false);
        assert_eq!(
            b.begin("acme", "w2", d),
            Begin::New,
            "a failed store is forgotten"
        );
        b.finish("acme", "w1", d, true);
        assert_eq!(b.begin("acme", "w1", d), Begin::Duplicate);
        assert_ne!(d, digest(b"gpu,gpu_uuid=GPU-1 utilization=5 2\n"));
    }

    #[test]
    fn memory_is_bounded_per_worker_and_seeded_after_a_restart() {
        let b = Batches::seeded((0..PER_WORKER as i64 + 10).map(|d| ("a".into(), "w".into(), d)));
        assert_eq!(
            b.begin("a", "w", 5),
            Begin::New,
            "the oldest were forgotten"
        );
        assert_eq!(b.begin("a", "w", PER_WORKER as i64), Begin::Duplicate);
        let inner = b.inner.lock();
        let (order, set) = &inner.recent["a/w"];
        assert_eq!((order.len(), set.len()), (PER_WORKER, PER_WORKER));
    }
}
