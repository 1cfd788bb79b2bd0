//! [`SyncedLocalStore`]: the local object store, durable when a write returns.
//!
//! `object_store`'s `LocalFileSystem` writes an object to a staging file and renames it into
//! place, but never fsyncs: after a power cut the page cache is gone, and with it a Parquet
//! file or catalog version whose WAL segments persist already deleted. This wrapper makes
//! every `put` durable before it returns, in the order a power cut needs:
//!
//! ```text
//!  put(objects/gpu/p1/00042.parquet)
//!    └─ LocalFileSystem: write staging file, rename into place
//!    └─ fsync the file                 its bytes are on disk
//!    └─ fsync its directory, and up from there each directory not yet known durable
//!                                      its name (and any new directory's) is on disk
//! ```
//!
//! So a catalog version that lists a file is durable only after the file is, and the WAL
//! segments a persist covers are removed only after the catalog version that covers them is.
//! The fsyncs go through a [`FileSync`], which a power-cut test replaces with a model of the
//! page cache. A multipart upload (a large file streamed as it is encoded) is made durable
//! the same way when it completes: `LocalFileSystem` writes its parts to a staging file and
//! renames that into place.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// Makes a file's contents, or a directory's entries, durable.
pub trait FileSync: fmt::Debug + Send + Sync + 'static {
    fn sync(&self, path: &FsPath) -> std::io::Result<()>;
}

/// `fsync(2)` on the file or directory.
#[derive(Debug, Default)]
pub struct RealSync;

impl FileSync for RealSync {
    fn sync(&self, path: &FsPath) -> std::io::Result<()> {
        std::fs::File::open(path)?.sync_all()
    }
}

/// The local file system under `root`, each `put` durable on return.
#[derive(Debug)]
pub struct SyncedLocalStore {
    inner: LocalFileSystem,
    root: PathBuf,
    sync: Arc<dyn FileSync>,
    /// Directories whose own name is durable in their parent (fsynced once after they were
    /// made; the store never removes a directory), so a put stops climbing at them.
    durable_dirs: Arc<parking_lot::Mutex<HashSet<PathBuf>>>,
}

impl SyncedLocalStore {
    /// Creates `root` if missing; it and its parent are made durable (the directory the
    /// objects live in must itself survive a power cut).
    pub fn new(root: &FsPath, sync: Arc<dyn FileSync>) -> Result<Self> {
        let io = |source: std::io::Error| object_store::Error::Generic {
            store: "local",
            source: Box::new(source),
        };
        std::fs::create_dir_all(root).map_err(io)?;
        let root = std::fs::canonicalize(root).map_err(io)?;
        sync.sync(&root).map_err(io)?;
        if let Some(parent) = root.parent() {
            sync.sync(parent).map_err(io)?;
        }
        Ok(Self {
            inner: LocalFileSystem::new_with_prefix(&root)?,
            durable_dirs: Arc::new(parking_lot::Mutex::new(HashSet::from([root.clone()]))),
            root,
            sync,
        })
    }

    /// fsyncs the object's file, then its directory and the new ones above it ([`sync_chain`]), on
    /// a blocking thread.
    async fn make_durable(&self, location: &Path) -> Result<()> {
        let file = self.inner.path_to_filesystem(location)?;
        sync_chain_blocking(self.sync.clone(), self.durable_dirs.clone(), file).await
    }
}

/// [`sync_chain`] on a blocking thread.
async fn sync_chain_blocking(
    sync: Arc<dyn FileSync>,
    known: Arc<parking_lot::Mutex<HashSet<PathBuf>>>,
    file: PathBuf,
) -> Result<()> {
    tokio::task::spawn_blocking(move || sync_chain(&*sync, &known, &file))
        .await
        .map_err(|e| object_store::Error::Generic {
            store: "local",
            source: Box::new(e),
        })?
}

/// A multipart upload to the local store, durable once [`MultipartUpload::complete`] returns.
#[derive(Debug)]
struct DurableUpload {
    inner: Box<dyn MultipartUpload>,
    file: PathBuf,
    sync: Arc<dyn FileSync>,
    known: Arc<parking_lot::Mutex<HashSet<PathBuf>>>,
}

#[async_trait]
impl MultipartUpload for DurableUpload {
    fn put_part(&mut self, data: PutPayload) -> object_store::UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let result = self.inner.complete().await?;
        sync_chain_blocking(self.sync.clone(), self.known.clone(), self.file.clone()).await?;
        Ok(result)
    }

    async fn abort(&mut self) -> Result<()> {
        self.inner.abort().await
    }
}

/// fsyncs `file`, then its directory (the file's new name); a directory not yet known
/// durable (one this put may have created) has its own name in its parent, so the climb
/// goes on to the parent, and stops after the first known one (the root is known from the
/// start).
fn sync_chain(
    sync: &dyn FileSync,
    known: &parking_lot::Mutex<HashSet<PathBuf>>,
    file: &FsPath,
) -> Result<()> {
    let fail = |path: &FsPath, source: std::io::Error| object_store::Error::Generic {
        store: "local",
        source: format!("fsync of {} failed: {source}", path.display()).into(),
    };
    sync.sync(file).map_err(|e| fail(file, e))?;
    let mut made = Vec::new();
    let mut dir = file.parent();
    while let Some(d) = dir {
        sync.sync(d).map_err(|e| fail(d, e))?;
        if known.lock().contains(d) {
            break;
        }
        made.push(d.to_path_buf());
        dir = d.parent();
    }
    // Only once every parent up to a known directory is synced.
    known.lock().extend(made);
    Ok(())
}

/// The most bytes one `get_ranges` call reads on the calling thread.
pub const INLINE_READ_BYTES: u64 = 1 << 20;

/// `ranges` of the file at `path`, read with `pread`, with `LocalFileSystem`'s errors: a
/// missing file is [`object_store::Error::NotFound`], a range past its end an error that
/// names both.
fn read_ranges(path: &FsPath, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
    use std::os::unix::fs::FileExt;
    let generic = |source: String| object_store::Error::Generic {
        store: "local",
        source: source.into(),
    };
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => object_store::Error::NotFound {
            path: path.display().to_string(),
            source: Box::new(e),
        },
        _ => generic(format!("cannot open {}: {e}", path.display())),
    })?;
    ranges
        .iter()
        .map(|r| {
            let len = r
                .end
                .checked_sub(r.start)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| generic(format!("invalid range {r:?} of {}", path.display())))?;
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, r.start).map_err(|e| {
                generic(format!(
                    "cannot read bytes {r:?} of {}: {e}",
                    path.display()
                ))
            })?;
            Ok(Bytes::from(buf))
        })
        .collect()
}

impl fmt::Display for SyncedLocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SyncedLocalStore({})", self.root.display())
    }
}

#[async_trait]
impl ObjectStore for SyncedLocalStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let result = self.inner.put_opts(location, payload, opts).await?;
        self.make_durable(location).await?;
        Ok(result)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        Ok(Box::new(DurableUpload {
            inner: self.inner.put_multipart_opts(location, opts).await?,
            file: self.inner.path_to_filesystem(location)?,
            sync: self.sync.clone(),
            known: self.durable_dirs.clone(),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    /// Small reads (at most [`INLINE_READ_BYTES`] in all, the pages of a row group that one
    /// series needs) are made on the calling thread: from the page cache they take
    /// microseconds, while a hand-off to the blocking pool and back took most of a one-GPU
    /// query's time (a day's tier file: one call per row group, 24 of them). Larger reads
    /// go to the blocking pool in one call, as `LocalFileSystem` does.
    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let total: u64 = ranges.iter().map(|r| r.end.saturating_sub(r.start)).sum();
        if total <= INLINE_READ_BYTES {
            return read_ranges(&self.inner.path_to_filesystem(location)?, ranges);
        }
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        // A deletion that a power cut undoes leaves an orphan, which the next start removes.
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await?;
        self.make_durable(to).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    /// Inline reads (small) and pool reads (large) answer the same bytes and the same errors
    /// as `LocalFileSystem`.
    #[tokio::test]
    async fn ranges_read_inline_or_on_the_pool_match_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = SyncedLocalStore::new(dir.path(), Arc::new(RealSync)).unwrap();
        let big = INLINE_READ_BYTES as usize + 4096;
        let data: Vec<u8> = (0..big).map(|i| (i * 7 % 251) as u8).collect();
        let path = Path::from("t/f.bin");
        store
            .put(&path, PutPayload::from(data.clone()))
            .await
            .unwrap();
        for ranges in [
            vec![0..0],
            vec![3..9, 100..4000, 1..2],
            vec![0..big as u64],
            vec![
                10..(INLINE_READ_BYTES / 2),
                (INLINE_READ_BYTES / 2)..big as u64,
            ],
        ] {
            let got = store.get_ranges(&path, &ranges).await.unwrap();
            let want: Vec<&[u8]> = ranges
                .iter()
                .map(|r| &data[r.start as usize..r.end as usize])
                .collect();
            assert_eq!(got, want, "{ranges:?}");
        }
        let missing = store.get_ranges(&Path::from("t/none"), &[0..4]).await;
        assert!(
            matches!(missing, Err(object_store::Error::NotFound { .. })),
            "{missing:?}"
        );
        let past = store
            .get_ranges(&path, &[big as u64 - 2..big as u64 + 2])
            .await
            .unwrap_err()
            .to_string();
        assert!(past.contains("f.bin"), "{past}");
    }
}
