//! [`WalWriter`]: appends records to the current segment, syncs, rotates.
//!
//! The writer is synchronous and owned by one thread (the group-commit thread), so it takes
//! `&mut self` and holds no locks. A typical commit round is a few [`WalWriter::append`]s
//! followed by one [`WalWriter::sync`], after which the writers of those batches are acked.
//!
//! # Failures
//!
//! A failed write leaves the segment possibly ending in a torn record, and after a failed
//! `fsync` the kernel may have dropped the dirty pages while a retried `fsync` reports success.
//! So after either, `append` and `sync` refuse to touch the segment again, and
//! [`WalWriter::rotate`] is the way out:
//!
//! - after a failed **write**, `rotate` still syncs the segment (the records appended before
//!   the failure are whole), and fails, leaving the writer unusable, if that sync fails;
//! - after a failed **sync**, `rotate` abandons the segment without syncing it: whatever was
//!   appended since the last successful sync was reported as failed and may or may not be
//!   replayed after a crash.
//!
//! Either way the new segment starts clean.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use super::segment::{self, RECORD_HEADER_LEN, SegmentWriter, io_error};
use super::{SegmentId, WalOptions, codec};
use crate::batch::WriteBatch;
use crate::error::Result;

/// The encoding buffer is kept between appends up to this capacity.
const SCRATCH_KEEP: usize = 8 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Ok,
    /// A write failed: the segment may end in a torn record, but what came before is whole.
    WriteFailed,
    /// An fsync failed: nothing since the last good sync can be trusted to be on disk.
    SyncFailed,
}

/// Synchronous WAL writer; see the [module docs](super) and the failure rules above.
pub struct WalWriter {
    dir: PathBuf,
    opts: WalOptions,
    segment: SegmentWriter,
    /// Segments left by automatic rotation whose last records still await `fdatasync`.
    unsynced: Vec<(PathBuf, File)>,
    /// The current segment got records since its last successful sync.
    dirty: bool,
    health: Health,
    scratch: Vec<u8>,
    #[cfg(test)]
    pub(super) faults: Faults,
}

/// An operation that tests can make fail (see `Faults`); free in non-test builds.
#[derive(Debug, Clone, Copy)]
enum Op {
    Write,
    Sync,
    Create,
}

/// Test-only fault injection: each flag fails the next operation of its kind, once.
#[cfg(test)]
#[derive(Debug, Default)]
pub(super) struct Faults {
    pub write: bool,
    pub sync: bool,
    pub create: bool,
}

impl std::fmt::Debug for WalWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalWriter")
            .field("dir", &self.dir)
            .field("segment", &self.segment.id)
            .field("segment_bytes", &self.segment.len)
            .field("unsynced_segments", &self.unsynced.len())
            .field("dirty", &self.dirty)
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

impl WalWriter {
    /// Creates `dir` if missing, then starts a new segment numbered one past the highest
    /// existing one (segment 1 in an empty directory). Old segments are never appended to:
    /// their tail may be torn. The new segment's header, file and directory entry are durable
    /// when this returns.
    pub fn open(dir: &Path, opts: WalOptions) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        let id = match segment::list_segments(dir)?.last() {
            Some(last) => next_id(dir, *last)?,
            None => SegmentId(1),
        };
        let segment = SegmentWriter::create(dir, id)?;
        tracing::info!(dir = %dir.display(), segment = id.0, "WAL opened");
        Ok(Self {
            dir: dir.to_path_buf(),
            opts,
            segment,
            unsynced: Vec::new(),
            dirty: false,
            health: Health::Ok,
            scratch: Vec::new(),
            #[cfg(test)]
            faults: Faults::default(),
        })
    }

    /// Encodes `batch` as one record and writes it into the buffer; it is durable only after
    /// the next [`sync`](Self::sync). Returns the record's size on disk (header included).
    ///
    /// If the current segment already holds records and is over
    /// [`WalOptions::segment_max_bytes`], the record goes to a new segment; the old one is
    /// flushed now and fdatasynced by the next `sync`. An error means this batch is not in the
    /// log; batches appended before it are unaffected.
    pub fn append(&mut self, batch: &WriteBatch) -> Result<u64> {
        self.check_health()?;
        if self.segment.records > 0 && self.segment.len > self.opts.segment_max_bytes {
            self.roll_over()?;
        }
        self.scratch.clear();
        self.scratch.resize(RECORD_HEADER_LEN, 0);
        codec::encode(batch, &mut self.scratch);
        if segment::seal_record(&mut self.scratch).is_none() {
            let len = self.scratch.len() - RECORD_HEADER_LEN;
            self.shrink_scratch();
            return Err(io_error(
                &self.segment.path,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("batch encodes to {len} bytes, over the 4 GiB record limit"),
                ),
            ));
        }
        let written = self.scratch.len() as u64;
        let result = self
            .fault(Op::Write)
            .and_then(|()| self.segment.write_record(&self.scratch));
        self.shrink_scratch();
        if let Err(e) = result {
            self.health = Health::WriteFailed;
            return Err(e);
        }
        self.dirty = true;
        Ok(written)
    }

    /// Flushes the buffer and fdatasyncs the current segment (and any segment left by
    /// automatic rotation since the last sync). After `Ok`, every appended record is durable.
    /// New segments are made durable, directory entry included, when they are created. Cheap
    /// when nothing was appended since the last sync.
    pub fn sync(&mut self) -> Result<()> {
        self.check_health()?;
        self.sync_all_dirty()
    }

    /// Syncs, closes the current segment and starts a new one. Returns the id of the segment
    /// just closed: every record appended so far lives in a segment `<=` that id, so it can be
    /// passed to [`remove_segments_through`](super::remove_segments_through) once their data
    /// is persisted.
    ///
    /// This is also how the writer recovers from a failed append or sync (see the module
    /// docs). If the new segment cannot be created, the old one stays current, synced.
    pub fn rotate(&mut self) -> Result<SegmentId> {
        match self.health {
            Health::Ok | Health::WriteFailed => self.sync_all_dirty()?,
            Health::SyncFailed => {
                tracing::warn!(
                    path = %self.segment.path.display(),
                    "abandoning WAL segment after a failed sync"
                );
                self.unsynced.clear();
                self.dirty = false;
            }
        }
        let next = next_id(&self.dir, self.segment.id)?;
        let new = self.create_segment(next)?;
        let closed = std::mem::replace(&mut self.segment, new);
        self.health = Health::Ok;
        tracing::debug!(
            closed = closed.id.0,
            bytes = closed.len,
            records = closed.records,
            "WAL segment rotated"
        );
        Ok(closed.id)
    }

    /// The segment appends currently go to.
    pub fn current_segment(&self) -> SegmentId {
        self.segment.id
    }

    /// The WAL directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Automatic rotation inside `append`: flush the full segment, start the next one, and
    /// leave the old one's fdatasync to the next `sync`, so that a sync failure is reported
    /// there, for the whole group, and not as this append's.
    fn roll_over(&mut self) -> Result<()> {
        if let Err(e) = self.segment.flush() {
            self.health = Health::WriteFailed;
            return Err(e);
        }
        let next = next_id(&self.dir, self.segment.id)?;
        let new = self.create_segment(next)?;
        let old = std::mem::replace(&mut self.segment, new);
        tracing::debug!(
            closed = old.id.0,
            bytes = old.len,
            "WAL segment full, rotated"
        );
        if std::mem::take(&mut self.dirty) {
            self.unsynced.push(old.into_file());
        }
        Ok(())
    }

    fn sync_all_dirty(&mut self) -> Result<()> {
        let result = self.fault(Op::Sync).and_then(|()| {
            for (path, file) in &self.unsynced {
                file.sync_data().map_err(|e| io_error(path, e))?;
            }
            if self.dirty {
                self.segment.sync()?;
            }
            Ok(())
        });
        match result {
            Ok(()) => {
                self.unsynced.clear();
                self.dirty = false;
                Ok(())
            }
            Err(e) => {
                self.health = Health::SyncFailed;
                Err(e)
            }
        }
    }

    fn create_segment(&mut self, id: SegmentId) -> Result<SegmentWriter> {
        self.fault(Op::Create)?;
        SegmentWriter::create(&self.dir, id)
    }

    fn check_health(&self) -> Result<()> {
        let what = match self.health {
            Health::Ok => return Ok(()),
            Health::WriteFailed => "a write",
            Health::SyncFailed => "an fsync",
        };
        Err(io_error(
            &self.segment.path,
            io::Error::other(format!(
                "WAL segment unusable after {what} failed; rotate() to continue in a new one"
            )),
        ))
    }

    fn shrink_scratch(&mut self) {
        if self.scratch.capacity() > SCRATCH_KEEP {
            self.scratch = Vec::new();
        }
    }

    #[cfg(test)]
    fn fault(&mut self, op: Op) -> Result<()> {
        let flag = match op {
            Op::Write => &mut self.faults.write,
            Op::Sync => &mut self.faults.sync,
            Op::Create => &mut self.faults.create,
        };
        if std::mem::take(flag) {
            let msg = format!("injected {op:?} fault");
            return Err(io_error(&self.segment.path, io::Error::other(msg)));
        }
        Ok(())
    }

    #[cfg(not(test))]
    #[inline(always)]
    fn fault(&mut self, _op: Op) -> Result<()> {
        Ok(())
    }
}

fn next_id(dir: &Path, id: SegmentId) -> Result<SegmentId> {
    id.0.checked_add(1).map(SegmentId).ok_or_else(|| {
        io_error(
            dir,
            io::Error::other("WAL segment ids exhausted (u64::MAX reached)"),
        )
    })
}

#[cfg(test)]
mod tests;
