//! Power cuts during persist and compaction. The local object store's fsyncs go through a
//! model of the page cache ([`PageCache`]): a file's bytes survive a cut only as they were
//! at its last fsync, and a directory's entries only as they were at the directory's last
//! fsync. The power fails at the k-th fsync, for every k that a run of three persists and a
//! compaction makes (and once after they finish); what was not made durable is then thrown
//! away on disk, as a real machine would, and the database is opened again. Every point that
//! was acknowledged before the cut must be there. (The WAL's own fsyncs are real and
//! acknowledged writes wait for them; the crash tests cover the WAL.)

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use parking_lot::Mutex;
use rigwatch_storage::batch::{FieldValue, WriteBatch};
use rigwatch_storage::config::StoreConfig;
use rigwatch_storage::durable::FileSync;
use rigwatch_storage::{Db, WriteOptions};

use super::util::{config, sql};

/// What an fsync made durable, and when the power fails.
#[derive(Debug, Default)]
struct PageCache {
    /// A file's bytes at its last fsync.
    files: Mutex<HashMap<PathBuf, Vec<u8>>>,
    /// A directory's entries at its last fsync.
    dirs: Mutex<HashMap<PathBuf, BTreeSet<OsString>>>,
    /// fsyncs that succeed before the power fails; `None`: it never does.
    left: Mutex<Option<usize>>,
    /// fsyncs made so far.
    made: Mutex<usize>,
}

impl FileSync for PageCache {
    fn sync(&self, path: &Path) -> std::io::Result<()> {
        if let Some(left) = self.left.lock().as_mut() {
            if *left == 0 {
                return Err(std::io::Error::other("power cut"));
            }
            *left -= 1;
        }
        *self.made.lock() += 1;
        if std::fs::metadata(path)?.is_dir() {
            let names = std::fs::read_dir(path)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<std::io::Result<BTreeSet<_>>>()?;
            self.dirs.lock().insert(path.to_path_buf(), names);
        } else {
            self.files
                .lock()
                .insert(path.to_path_buf(), std::fs::read(path)?);
        }
        Ok(())
    }
}

impl PageCache {
    /// The power fails: `root` is rewritten to hold only what was made durable.
    fn cut(&self, root: &Path) {
        let mut kept = BTreeMap::new();
        self.durable(root, &mut kept);
        std::fs::remove_dir_all(root).unwrap();
        std::fs::create_dir_all(root).unwrap();
        for (path, bytes) in kept {
            match bytes {
                None => std::fs::create_dir_all(&path).unwrap(),
                Some(b) => {
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    std::fs::write(&path, b).unwrap();
                }
            }
        }
    }

    /// Everything under `dir` that survives: directories (`None`) and files' bytes.
    fn durable(&self, dir: &Path, out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        let entries = self.dirs.lock().get(dir).cloned().unwrap_or_default();
        for name in entries {
            let child = dir.join(name);
            let is_dir = self.dirs.lock().contains_key(&child) || child.is_dir();
            if is_dir {
                out.insert(child.clone(), None);
                self.durable(&child, out);
            } else if let Some(bytes) = self.files.lock().get(&child) {
                out.insert(child, Some(bytes.clone()));
            }
            // A name whose bytes were never made durable is an empty or missing file
            // after the cut; either way its data is gone.
        }
    }
}

async fn write(db: &Db, from: i64, n: i64) {
    let mut b = WriteBatch::default();
    for v in from..from + n {
        // Three seconds apart: the points span two 10 s partitions per round.
        let mut r = b.row("m", (1_000 + v * 3) * 1_000_000_000);
        r.tag("host", "h1");
        r.field("v", FieldValue::I64(v));
        r.finish(0).unwrap();
    }
    db.write(b, WriteOptions::default()).await.unwrap();
}

/// Three persists and a compaction, each round's points acknowledged first. Returns how
/// many points were acknowledged before the first failure.
async fn run(db: &Db) -> i64 {
    let mut acked = 0;
    for round in 0..3 {
        write(db, round * 5, 5).await;
        acked += 5;
        if db.persist().await.is_err() {
            return acked;
        }
    }
    if db.compact().await.is_err() {
        return acked;
    }
    write(db, 15, 5).await;
    acked + 5
}

async fn values(db: &Arc<Db>) -> Vec<i64> {
    let batches = sql(db, "SELECT v FROM m ORDER BY v").await;
    batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect()
}

#[tokio::test]
async fn every_acknowledged_point_survives_a_power_cut_at_any_fsync() {
    // A run without a cut counts the fsyncs to cut at.
    let dry = tempfile::tempdir().unwrap();
    let cache = Arc::new(PageCache::default());
    let mut c = config(dry.path());
    c.compaction_min_files = 2;
    c.store = StoreConfig::LocalWith(cache.clone());
    let db = Db::open(c).await.unwrap();
    let opened = *cache.made.lock();
    assert_eq!(run(&db).await, 20);
    let total = *cache.made.lock() - opened;
    assert!(
        total >= 20,
        "three persists and a compaction made {total} fsyncs"
    );
    db.shutdown().await.unwrap();

    for k in 0..=total {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(PageCache::default());
        let mut c = config(dir.path());
        c.compaction_min_files = 2;
        c.store = StoreConfig::LocalWith(cache.clone());
        let db = Db::open(c).await.unwrap();
        *cache.left.lock() = Some(k);
        let acked = run(&db).await;
        db.shutdown().await.unwrap();
        drop(db);
        let root = std::fs::canonicalize(dir.path().join("objects")).unwrap();
        cache.cut(&root);

        let mut c = config(dir.path());
        c.compaction_min_files = 2;
        let db = Db::open(c).await.unwrap();
        let got = values(&db).await;
        let want: Vec<i64> = (0..acked).collect();
        assert!(
            want.iter().all(|v| got.contains(v)),
            "power cut at fsync {k} of {total}: acknowledged 0..{acked}, found {got:?}"
        );
        db.shutdown().await.unwrap();
    }
}
