//! [`replay`]: reads the segments back at startup, tolerating torn and corrupt tails.

use std::path::Path;

use super::segment::{self, Corruption, SegmentReader, Step};
use super::{SegmentId, codec};
use crate::batch::WriteBatch;
use crate::error::Result;

/// What [`replay`] found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReplayStats {
    /// Segments opened, the corrupt ones included.
    pub segments: usize,
    /// Intact records handed to the callback.
    pub records: usize,
    /// Rows in those records.
    pub rows: usize,
    /// Segments whose header or some record was torn or corrupt.
    pub corrupt_segments: usize,
    /// Bytes from the first bad record to the end of its segment, summed over segments.
    pub skipped_bytes: u64,
}

/// Reads every segment in `dir` with id greater than `after` (all if `None`), in id order, and
/// calls `f(segment_id, batch)` for each intact record, in order.
///
/// A torn or corrupt record (short header, length past the end of the file, checksum
/// mismatch, undecodable payload) or a bad segment header (magic, version, id that does not
/// match the file name) ends *that* segment: it is logged, counted in the stats, and replay goes
/// on with the next segment. Records before it are all delivered. No file content can make
/// this panic; only real I/O errors are returned. A missing directory replays nothing.
pub fn replay(
    dir: &Path,
    after: Option<SegmentId>,
    mut f: impl FnMut(SegmentId, WriteBatch),
) -> Result<ReplayStats> {
    let mut stats = ReplayStats::default();
    for id in segment::list_segments(dir)? {
        if after.is_some_and(|after| id <= after) {
            continue;
        }
        let Some(mut reader) = SegmentReader::open(segment::segment_path(dir, id), id)? else {
            continue;
        };
        stats.segments += 1;
        let file_len = reader.file_len();
        let bad = loop {
            match reader.next()? {
                Step::End => break None,
                Step::Corrupt { offset, reason } => break Some((offset, reason)),
                Step::Record { offset } => match codec::decode(reader.payload()) {
                    Ok(batch) => {
                        stats.records += 1;
                        stats.rows += batch.len();
                        f(id, batch);
                    }
                    Err(e) => break Some((offset, Corruption::Decode(e))),
                },
            }
        };
        if let Some((offset, reason)) = bad {
            let skipped = file_len.saturating_sub(offset);
            stats.corrupt_segments += 1;
            stats.skipped_bytes += skipped;
            tracing::warn!(
                path = %reader.path().display(),
                offset,
                reason = %reason,
                skipped_bytes = skipped,
                "skipping corrupt WAL tail"
            );
        }
    }
    Ok(stats)
}
