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
//! page cache. Multipart uploads are refused: the engine writes whole objects only.

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
        let (sync, known) = (self.sync.clone(), self.durable_dirs.clone());
        tokio::task::spawn_blocking(move || sync_chain(&*sync, &known, &file))
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "local",
                source: Box::new(e),
            })?
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
        _opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        Err(object_store::Error::NotSupported {
            source: format!("multipart upload of {location}: rigwatch writes whole objects").into(),
        })
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    /// The local store reads every range in one blocking call; the trait's default would
    /// take two thread hand-offs per range (open, then read), which were most of a one-GPU
    /// query's time (a day's tier file: two column chunks in each of 24 row groups).
    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
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
