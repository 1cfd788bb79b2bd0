//! The write-ahead log: every acknowledged [`WriteBatch`] is on disk here before it reaches the
//! write buffer, so a crash loses nothing that was acked.
//!
//! ```text
//!  group-commit thread:  append(batch) … append(batch) ─► sync() ─► ack the writers
//!                                 │
//!  wal/00000000000000000007.wal   closed (rotate() returned 7) ─┐ data persisted to Parquet:
//!  wal/00000000000000000008.wal   current                       └ remove_segments_through(7)
//!
//!  startup:  replay(dir, after = last id persisted) ─► write buffer;  WalWriter::open(dir)
//! ```
//!
//! The log is a directory of *segments*, numbered by a monotonic [`SegmentId`]. A
//! [`WalWriter`] only ever appends to a segment it created itself: [`WalWriter::open`] starts a
//! new one past the highest existing id, because the last segment of a crashed process may end
//! in a torn record. Segments rotate when they grow past [`WalOptions::segment_max_bytes`] or
//! when [`WalWriter::rotate`] is called (before persisting the write buffer);
//! [`remove_segments_through`] deletes them once their data is safe elsewhere. [`replay()`]
//! reads them back, stopping at the first bad record of each segment and going on with the
//! next.
//!
//! # On-disk format, version 1
//!
//! A segment file is named `{id:020}.wal` (twenty zero-padded decimal digits) and holds a
//! header followed by records back to back. All integers are little endian.
//!
//! ```text
//!  header   offset 0   8 bytes  magic  b"RIGWAL\0\0"
//!           offset 8   u16      format version (= 1)
//!           offset 10  u64      segment id, equal to the one in the file name
//!  record   offset 0   u32      payload length
//!           offset 4   u32      CRC32C (Castagnoli) of the payload
//!           offset 8   [u8]     payload: one WriteBatch (layout in the `codec` module)
//! ```
//!
//! Compatibility: the segment version covers the header and the record framing, and the
//! payload's first byte is its own record-format number, so either can evolve on its own. A
//! reader must keep decoding every version it ever wrote; an unknown version is treated like
//! corruption (logged, segment skipped), never guessed at. Golden-byte tests (`segment.rs`,
//! `codec/tests.rs`) pin version 1.
//!
//! Durability: records are buffered (1 MiB) and become durable at [`WalWriter::sync`]
//! (`fdatasync`). Creating a segment syncs its header and the directory entry before the
//! segment is used; removing segments syncs the directory.
//!
//! Ids: a new writer continues after the highest id on disk, so ids only grow as long as the
//! directory is not emptied by hand. [`remove_segments_through`] with an id from
//! [`WalWriter::rotate`] always leaves the current segment (a higher id) in place.

pub mod codec;
pub mod remote;
mod replay;
mod segment;
mod writer;

use std::fmt;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use remote::{RemoteWal, ShardLog};
pub use replay::{ReplayStats, replay};
pub use segment::{file_name, list_segments};
pub use writer::WalWriter;

/// The log a node writes: its own directory, or a shard's log on the shared object store.
#[derive(Debug)]
pub enum Wal {
    Local(WalWriter),
    Remote(RemoteWal),
}

impl Wal {
    /// Adds `batch`; durable after [`sync`](Self::sync). Returns its encoded size.
    pub fn append(&mut self, batch: &WriteBatch) -> Result<u64> {
        match self {
            Wal::Local(w) => w.append(batch),
            Wal::Remote(w) => w.append(batch),
        }
    }

    pub fn sync(&mut self) -> Result<()> {
        self.sync_fenced(None)
    }

    /// As [`sync`](Self::sync); on a shared log the group is acknowledged only if the node
    /// also still holds `fence` (a local log has no other writer to fence off).
    pub fn sync_fenced(&mut self, fence: Option<&crate::lease::Held>) -> Result<()> {
        match self {
            Wal::Local(w) => w.sync(),
            Wal::Remote(w) => w.sync_fenced(fence),
        }
    }

    /// Ends the current segment; every record appended so far is in a segment `<=` the answer.
    pub fn rotate(&mut self) -> Result<SegmentId> {
        match self {
            Wal::Local(w) => w.rotate(),
            Wal::Remote(w) => w.rotate(),
        }
    }

    /// Whether every group must be committed before it is acknowledged, whatever the writer
    /// asked (a shared log: there is no page cache to leave it in).
    pub fn always_syncs(&self) -> bool {
        matches!(self, Wal::Remote(_))
    }
}

use crate::batch::WriteBatch;
use crate::error::Result;

/// Monotonic segment number; the file name is `format!("{:020}.wal", id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SegmentId(pub u64);

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// WAL tuning.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// When the current segment is larger than this, the next append goes to a new segment.
    /// Default 64 MiB.
    pub segment_max_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            segment_max_bytes: 64 << 20,
        }
    }
}

/// Deletes every segment file with id `<= through` in `dir`, once the data they hold is
/// persisted, and syncs the directory. Returns how many files were removed. Pass an id
/// returned by [`WalWriter::rotate`] so that the writer's current segment is never removed.
pub fn remove_segments_through(dir: &Path, through: SegmentId) -> Result<usize> {
    let mut removed = 0;
    for id in list_segments(dir)? {
        if id > through {
            break;
        }
        let path = segment::segment_path(dir, id);
        match std::fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(segment::io_error(&path, e)),
        }
    }
    if removed > 0 {
        segment::sync_dir(dir)?;
        tracing::debug!(dir = %dir.display(), through = through.0, removed, "WAL segments removed");
    }
    Ok(removed)
}

#[cfg(test)]
mod tests;
