//! The agent's bounded on-disk queue of batches the server has not acknowledged.
//!
//! Each batch (a gzip-compressed line-protocol body, exactly what is POSTed) is one file
//! `<seq>.lp.gz`, or `<seq>.<batch id>.lp.gz` for a batch with an id (see
//! [`BatchId`]), `seq` a zero-padded monotonic number, written atomically: a temporary
//! file, fsync, rename, fsync of the directory, so a batch and its id land together and it
//! is resent under the same id however often it is retried. Batches drain oldest first. When the total
//! size would pass the bound, the oldest batches are deleted and counted: the count is
//! logged and reported in every heartbeat (`spool_dropped_batches`), never silent.
//! The queue survives an agent restart: opening a directory picks up its batches (and
//! removes temporary files a crash left behind).
//!
//! [`BatchIds`] numbers the agent's batches, in the same directory (file `batch_ids`: a
//! random epoch and a high-water mark, reserved a block at a time and fsynced before any
//! number of the block is used), so a restarted agent never reuses a number it sent.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::Rng;
use tracing::warn;

use super::dedup::BatchId;

/// Counters shared with the collector thread (for heartbeats) and tests.
#[derive(Debug, Default)]
pub struct SpoolStats {
    pub batches: AtomicU64,
    pub bytes: AtomicU64,
    /// Batches dropped because the bound was hit, since this agent started.
    pub dropped_batches: AtomicU64,
}

/// An I/O error on a spool path.
#[derive(Debug, thiserror::Error)]
#[error("spool {path}: {source}")]
pub struct SpoolError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError {
        path: path.to_path_buf(),
        source,
    }
}

/// The queue. Not shared: the transport task owns it.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    suffix: &'static str,
    max_bytes: u64,
    max_items: usize,
    /// Oldest first.
    files: VecDeque<Entry>,
    total: u64,
    next_seq: u64,
    stats: Arc<SpoolStats>,
}

/// A queued batch.
#[derive(Debug)]
struct Entry {
    seq: u64,
    size: u64,
    id: Option<BatchId>,
    /// Its file's name (kept as found: a name whose id does not parse is still sent).
    name: String,
}

/// The oldest queued batch, as [`Spool::peek_batch`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spooled {
    pub seq: u64,
    /// The id it was first sent (or spooled) with; `None` for a batch spooled without one.
    pub id: Option<BatchId>,
    pub body: Vec<u8>,
}

const SUFFIX: &str = ".lp.gz";
/// Where the count of dropped batches is kept.
const DROPPED_FILE: &str = "dropped_batches";

impl Spool {
    /// Opens (creating) `dir`, bounded to `max_bytes` of batches.
    pub fn open(dir: &Path, max_bytes: u64, stats: Arc<SpoolStats>) -> Result<Self, SpoolError> {
        Self::open_with(dir, SUFFIX, max_bytes, usize::MAX, stats)
    }

    /// Opens (creating) `dir` as a queue of `<seq><suffix>` files, bounded to `max_bytes`
    /// and to `max_items` entries (the server's alert outbox uses it for webhook messages).
    pub fn open_with(
        dir: &Path,
        suffix: &'static str,
        max_bytes: u64,
        max_items: usize,
        stats: Arc<SpoolStats>,
    ) -> Result<Self, SpoolError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let mut files = Vec::new();
        for entry in fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
                continue;
            }
            let Some(stem) = name.strip_suffix(suffix) else {
                continue;
            };
            let (seq, id) = match stem.split_once('.') {
                Some((seq, id)) => (seq, id.parse::<BatchId>().ok()),
                None => (stem, None),
            };
            let Ok(seq) = seq.parse::<u64>() else {
                continue;
            };
            let size = entry.metadata().map_err(io(&entry.path()))?.len();
            files.push(Entry {
                seq,
                size,
                id,
                name: name.into_owned(),
            });
        }
        files.sort_unstable_by_key(|e| e.seq);
        // Drops are reported for the life of the spool, across agent restarts.
        let dropped = fs::read_to_string(dir.join(DROPPED_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        stats.dropped_batches.fetch_max(dropped, Ordering::Relaxed);
        let total = files.iter().map(|f| f.size).sum();
        let next_seq = files.last().map_or(0, |f| f.seq + 1);
        let spool = Spool {
            dir: dir.to_path_buf(),
            suffix,
            max_bytes,
            max_items: max_items.max(1),
            files: files.into(),
            total,
            next_seq,
            stats,
        };
        spool.publish();
        Ok(spool)
    }

    fn name(&self, seq: u64, id: Option<BatchId>) -> String {
        match id {
            Some(id) => format!("{seq:020}.{id}{}", self.suffix),
            None => format!("{seq:020}{}", self.suffix),
        }
    }

    fn publish(&self) {
        self.stats
            .batches
            .store(self.files.len() as u64, Ordering::Relaxed);
        self.stats.bytes.store(self.total, Ordering::Relaxed);
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn bytes(&self) -> u64 {
        self.total
    }

    pub fn stats(&self) -> &Arc<SpoolStats> {
        &self.stats
    }

    fn count_drops(&self, n: u64) -> u64 {
        let all = self.stats.dropped_batches.fetch_add(n, Ordering::Relaxed) + n;
        // Best effort: losing this file only resets the reported count.
        let _ = fs::write(self.dir.join(DROPPED_FILE), format!("{all}\n"));
        all
    }

    /// Appends a batch; drops the oldest batches if the bound is passed. Returns how many
    /// were dropped. A batch larger than the whole bound is itself dropped (and counted).
    pub fn push(&mut self, body: &[u8]) -> Result<u64, SpoolError> {
        self.push_batch(body, None)
    }

    /// [`Spool::push`] of a batch that keeps `id` whenever it is resent.
    pub fn push_batch(&mut self, body: &[u8], id: Option<BatchId>) -> Result<u64, SpoolError> {
        let len = body.len() as u64;
        if len > self.max_bytes {
            self.count_drops(1);
            warn!(
                bytes = len,
                max = self.max_bytes,
                "batch larger than the whole spool: dropped"
            );
            return Ok(1);
        }
        let mut dropped = 0;
        while self.total + len > self.max_bytes || self.files.len() >= self.max_items {
            let Some(old) = self.files.pop_front() else {
                break;
            };
            let path = self.dir.join(&old.name);
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(io(&path)(e));
            }
            self.total -= old.size;
            dropped += 1;
        }
        if dropped > 0 {
            let all = self.count_drops(dropped);
            warn!(
                dropped,
                dropped_total = all,
                max_bytes = self.max_bytes,
                max_items = self.max_items,
                dir = %self.dir.display(),
                "spool full: dropped the oldest batches"
            );
        }
        let seq = self.next_seq;
        let name = self.name(seq, id);
        let path = self.dir.join(&name);
        let tmp = path.with_extension("tmp");
        {
            let mut f = File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(body).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        fs::rename(&tmp, &path).map_err(io(&path))?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.next_seq += 1;
        self.files.push_back(Entry {
            seq,
            size: len,
            id,
            name,
        });
        self.total += len;
        self.publish();
        Ok(dropped)
    }

    /// The oldest batch: its sequence number and body.
    pub fn peek(&self) -> Result<Option<(u64, Vec<u8>)>, SpoolError> {
        Ok(self.peek_batch()?.map(|b| (b.seq, b.body)))
    }

    /// The oldest batch, with its id.
    pub fn peek_batch(&self) -> Result<Option<Spooled>, SpoolError> {
        let Some(front) = self.files.front() else {
            return Ok(None);
        };
        let path = self.dir.join(&front.name);
        let body = fs::read(&path).map_err(io(&path))?;
        Ok(Some(Spooled {
            seq: front.seq,
            id: front.id,
            body,
        }))
    }

    /// Removes the oldest batch once the server acknowledged it (or rejected it for good).
    pub fn pop(&mut self, seq: u64) -> Result<(), SpoolError> {
        if self.files.front().map(|f| f.seq) != Some(seq) {
            return Ok(());
        }
        let Entry { size, name, .. } = self.files.pop_front().expect("front exists");
        let path = self.dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        self.total -= size;
        self.publish();
        Ok(())
    }
}

/// Where [`BatchIds`] keeps its epoch and high-water mark.
pub const IDS_FILE: &str = "batch_ids";

/// Numbers reserved at a time (one fsync per block; at most this many are skipped by a
/// restart).
const ID_BLOCK: u64 = 1_024;

/// Why the batch id file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("batch ids {path}: {reason}")]
struct BadIdsFile {
    path: PathBuf,
    reason: &'static str,
}

/// Numbers an agent's batches: `epoch` chosen at random when the file is first created (or
/// found unreadable: a fresh epoch can never repeat an id), `seq` from the persisted
/// high-water mark, which is advanced a block at a time before any number of the block is
/// handed out. So a number is never given twice, even across a kill -9.
#[derive(Debug)]
pub struct BatchIds {
    path: PathBuf,
    epoch: u64,
    next: u64,
    /// Numbers below this are reserved in the file.
    reserved: u64,
}

impl BatchIds {
    /// Opens (creating) `<dir>/batch_ids`.
    pub fn open(dir: &Path) -> Result<Self, SpoolError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(IDS_FILE);
        let fresh = |path: PathBuf| BatchIds {
            path,
            epoch: rand::rng().random(),
            next: 0,
            reserved: 0,
        };
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(fresh(path)),
            Err(e) => return Err(io(&path)(e)),
        };
        let parsed = text.split_once(' ').and_then(|(epoch, high)| {
            Some((
                u64::from_str_radix(epoch.trim(), 16).ok()?,
                high.trim().parse::<u64>().ok()?,
            ))
        });
        Ok(match parsed {
            Some((epoch, high)) => BatchIds {
                path,
                epoch,
                next: high,
                reserved: high,
            },
            None => {
                let error = BadIdsFile {
                    path: path.clone(),
                    reason: "not `<epoch hex> <next>`",
                };
                warn!(%error, "unreadable batch id file: numbering batches in a new epoch");
                fresh(path)
            }
        })
    }

    /// The next batch id. Blocks on an fsync once per [`ID_BLOCK`] ids: call it off the
    /// async runtime.
    pub fn next_id(&mut self) -> Result<BatchId, SpoolError> {
        if self.next >= self.reserved {
            let high = self.next.saturating_add(ID_BLOCK);
            self.persist(high)?;
            self.reserved = high;
        }
        let id = BatchId {
            epoch: self.epoch,
            seq: self.next,
        };
        self.next += 1;
        Ok(id)
    }

    fn persist(&self, high: u64) -> Result<(), SpoolError> {
        let tmp = self.path.with_extension("tmp");
        {
            let mut f = File::create(&tmp).map_err(io(&tmp))?;
            writeln!(f, "{:016x} {high}", self.epoch).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        fs::rename(&tmp, &self.path).map_err(io(&self.path))?;
        if let Some(dir) = self.path.parent()
            && let Ok(d) = File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_bound_drops_the_oldest_and_a_suffix_names_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(SpoolStats::default());
        let mut s = Spool::open_with(dir.path(), ".json", 1 << 20, 2, stats.clone()).unwrap();
        assert_eq!(s.push(b"a").unwrap(), 0);
        assert_eq!(s.push(b"b").unwrap(), 0);
        assert_eq!(s.push(b"c").unwrap(), 1, "the third push drops the oldest");
        drop(s);
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json"))
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        let s = Spool::open_with(dir.path(), ".json", 1 << 20, 2, stats.clone()).unwrap();
        assert_eq!(s.peek().unwrap().unwrap().1, b"b");
        assert_eq!(stats.dropped_batches.load(Ordering::Relaxed), 1);
        // The agent's own suffix does not see these files.
        let other = Spool::open(dir.path(), 1 << 20, Arc::default()).unwrap();
        assert!(other.is_empty());
    }

    #[test]
    fn push_peek_pop_in_order_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(SpoolStats::default());
        let mut s = Spool::open(dir.path(), 1000, stats.clone()).unwrap();
        s.push(b"one").unwrap();
        s.push(b"two").unwrap();
        drop(s);
        let mut s = Spool::open(dir.path(), 1000, stats.clone()).unwrap();
        assert_eq!(s.len(), 2);
        s.push(b"three").unwrap();
        let (seq, body) = s.peek().unwrap().unwrap();
        assert_eq!(body, b"one");
        s.pop(seq).unwrap();
        assert_eq!(s.peek().unwrap().unwrap().1, b"two");
        assert_eq!(stats.batches.load(Ordering::Relaxed), 2);
        assert_eq!(stats.bytes.load(Ordering::Relaxed), 8);
    }

    #[test]
    fn a_batch_keeps_its_id_across_a_reopen_and_old_files_have_none() {
        let dir = tempfile::tempdir().unwrap();
        let id = BatchId { epoch: 9, seq: 41 };
        // A batch spooled by an agent that had no ids.
        fs::write(dir.path().join(format!("{:020}{SUFFIX}", 3)), b"old").unwrap();
        let mut s = Spool::open(dir.path(), 1000, Arc::default()).unwrap();
        s.push_batch(b"new", Some(id)).unwrap();
        s.push(b"plain").unwrap();
        drop(s);
        let mut s = Spool::open(dir.path(), 1000, Arc::default()).unwrap();
        assert_eq!(s.len(), 3);
        let old = s.peek_batch().unwrap().unwrap();
        assert_eq!(
            (old.seq, old.id, old.body.as_slice()),
            (3, None, &b"old"[..])
        );
        s.pop(old.seq).unwrap();
        let new = s.peek_batch().unwrap().unwrap();
        assert_eq!((new.id, new.body.as_slice()), (Some(id), &b"new"[..]));
        s.pop(new.seq).unwrap();
        assert_eq!(s.peek_batch().unwrap().unwrap().id, None);
        assert_eq!(s.peek().unwrap().unwrap().1, b"plain");
    }

    #[test]
    fn batch_ids_are_never_reused_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut ids = BatchIds::open(dir.path()).unwrap();
        let first: Vec<BatchId> = (0..3).map(|_| ids.next_id().unwrap()).collect();
        assert_eq!(first.iter().map(|i| i.seq).collect::<Vec<_>>(), [0, 1, 2]);
        let epoch = first[0].epoch;
        // A kill -9 here: the rest of the reserved block is skipped, nothing reused.
        drop(ids);
        let mut ids = BatchIds::open(dir.path()).unwrap();
        let next = ids.next_id().unwrap();
        assert_eq!(
            next,
            BatchId {
                epoch,
                seq: ID_BLOCK
            }
        );
        // Past a block, the mark moves on before its numbers are used.
        for _ in 0..ID_BLOCK {
            ids.next_id().unwrap();
        }
        drop(ids);
        let mut ids = BatchIds::open(dir.path()).unwrap();
        assert_eq!(ids.next_id().unwrap().seq, 3 * ID_BLOCK);
        // The agent's spool does not mistake the file for a batch.
        assert!(
            Spool::open(dir.path(), 1000, Arc::default())
                .unwrap()
                .is_empty()
        );
        // An unreadable file starts a new epoch rather than numbering from 0 again.
        fs::write(dir.path().join(IDS_FILE), "garbage").unwrap();
        let mut ids = BatchIds::open(dir.path()).unwrap();
        let fresh = ids.next_id().unwrap();
        assert_ne!(fresh.epoch, epoch);
        assert_eq!(fresh.seq, 0);
    }

    #[test]
    fn full_spool_drops_oldest_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(SpoolStats::default());
        let mut s = Spool::open(dir.path(), 25, stats.clone()).unwrap();
        for i in 0..5u8 {
            s.push(&[i; 10]).unwrap();
        }
        // 25 bytes hold two 10-byte batches: 0, 1 and 2 were dropped.
        assert_eq!(stats.dropped_batches.load(Ordering::Relaxed), 3);
        assert_eq!(s.len(), 2);
        assert_eq!(s.peek().unwrap().unwrap().1, vec![3u8; 10]);
        assert_eq!(s.len(), 2);
        // The count survives a restart.
        drop(s);
        let fresh = Arc::new(SpoolStats::default());
        let s = Spool::open(dir.path(), 25, fresh.clone()).unwrap();
        assert_eq!(fresh.dropped_batches.load(Ordering::Relaxed), 3);
        assert_eq!(s.len(), 2);
    }
}
