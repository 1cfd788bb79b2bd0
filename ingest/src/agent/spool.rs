//! The agent's bounded on-disk queue of batches the server has not acknowledged.
//!
//! Each batch (a gzip-compressed line-protocol body, exactly what is POSTed) is one file
//! `<seq>.lp.gz`, `seq` a zero-padded monotonic number, written atomically: a temporary
//! file, fsync, rename, fsync of the directory. Batches drain oldest first. When the total
//! size would pass the bound, the oldest batches are deleted and counted: the count is
//! logged and reported in every heartbeat (`spool_dropped_batches`), never silent.
//! The queue survives an agent restart: opening a directory picks up its batches (and
//! removes temporary files a crash left behind).

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::warn;

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
    /// (seq, size), oldest first.
    files: VecDeque<(u64, u64)>,
    total: u64,
    next_seq: u64,
    stats: Arc<SpoolStats>,
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
            let Some(seq) = name
                .strip_suffix(suffix)
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            let len = entry.metadata().map_err(io(&entry.path()))?.len();
            files.push((seq, len));
        }
        files.sort_unstable();
        // Drops are reported for the life of the spool, across agent restarts.
        let dropped = fs::read_to_string(dir.join(DROPPED_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        stats.dropped_batches.fetch_max(dropped, Ordering::Relaxed);
        let total = files.iter().map(|f| f.1).sum();
        let next_seq = files.last().map_or(0, |f| f.0 + 1);
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

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}{}", self.suffix))
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
            let Some((seq, size)) = self.files.pop_front() else {
                break;
            };
            let path = self.path(seq);
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(io(&path)(e));
            }
            self.total -= size;
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
        let path = self.path(seq);
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
        self.files.push_back((seq, len));
        self.total += len;
        self.publish();
        Ok(dropped)
    }

    /// The oldest batch: its sequence number and body.
    pub fn peek(&self) -> Result<Option<(u64, Vec<u8>)>, SpoolError> {
        let Some(&(seq, _)) = self.files.front() else {
            return Ok(None);
        };
        let path = self.path(seq);
        let body = fs::read(&path).map_err(io(&path))?;
        Ok(Some((seq, body)))
    }

    /// Removes the oldest batch once the server acknowledged it (or rejected it for good).
    pub fn pop(&mut self, seq: u64) -> Result<(), SpoolError> {
        if self.files.front().map(|f| f.0) != Some(seq) {
            return Ok(());
        }
        let (_, size) = self.files.pop_front().expect("front exists");
        let path = self.path(seq);
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
