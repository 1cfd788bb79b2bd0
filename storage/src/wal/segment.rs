//! Segment files: naming, the segment header, record framing, creating a segment durably and
//! reading its records back one by one. The byte layout is documented in [`super`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::SegmentId;
use super::codec::DecodeError;
use crate::error::{Error, Result};

/// The first eight bytes of every segment.
pub const MAGIC: [u8; 8] = *b"RIGWAL\0\0";
/// The segment format version this code writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Magic, version, segment id.
pub const HEADER_LEN: usize = 8 + 2 + 8;
/// Payload length and CRC32C before every record's payload.
pub const RECORD_HEADER_LEN: usize = 4 + 4;

const WRITE_BUFFER: usize = 1 << 20;
const READ_BUFFER: usize = 256 << 10;

/// Why the rest of a segment cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    #[error("segment header truncated ({len} of {HEADER_LEN} bytes)")]
    ShortHeader { len: u64 },
    #[error("bad segment magic {found:02x?}")]
    BadMagic { found: [u8; 8] },
    #[error("unsupported WAL format version {version} (this build reads {FORMAT_VERSION})")]
    UnsupportedVersion { version: u16 },
    #[error("header names segment {header} but the file name says {name}")]
    IdMismatch { header: u64, name: u64 },
    #[error("record header truncated ({available} of {RECORD_HEADER_LEN} bytes)")]
    ShortRecordHeader { available: u64 },
    #[error("record length {len} runs past the end of the file ({available} bytes left)")]
    LengthPastEnd { len: u32, available: u64 },
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("undecodable payload: {0}")]
    Decode(#[from] DecodeError),
}

pub(crate) fn io_error(path: &Path, source: io::Error) -> Error {
    Error::WalIo {
        path: path.to_path_buf(),
        source,
    }
}

/// The file name of segment `id`: twenty zero-padded digits and `.wal`.
pub fn file_name(id: SegmentId) -> String {
    format!("{:020}.wal", id.0)
}

pub(crate) fn segment_path(dir: &Path, id: SegmentId) -> PathBuf {
    dir.join(file_name(id))
}

/// The id in a segment file name, or `None` for any other file.
fn parse_file_name(name: &str) -> Option<SegmentId> {
    let digits = name.strip_suffix(".wal")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(SegmentId)
}

/// Lists segment ids present in `dir`, sorted. A missing directory has none; files with other
/// names are ignored.
pub fn list_segments(dir: &Path) -> Result<Vec<SegmentId>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(dir, e)),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        if let Some(id) = entry.file_name().to_str().and_then(parse_file_name) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Makes the directory's entries (created or removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}

pub(crate) fn encode_header(id: SegmentId) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[10..].copy_from_slice(&id.0.to_le_bytes());
    h
}

fn check_header(h: &[u8; HEADER_LEN], id: SegmentId) -> Result<(), Corruption> {
    let mut magic = [0u8; 8];
    magic.copy_from_slice(&h[..8]);
    if magic != MAGIC {
        return Err(Corruption::BadMagic { found: magic });
    }
    let version = u16::from_le_bytes([h[8], h[9]]);
    if version != FORMAT_VERSION {
        return Err(Corruption::UnsupportedVersion { version });
    }
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&h[10..]);
    let header = u64::from_le_bytes(raw);
    if header != id.0 {
        return Err(Corruption::IdMismatch { header, name: id.0 });
    }
    Ok(())
}

/// Fills in the record header in front of a payload that was encoded at
/// `buf[RECORD_HEADER_LEN..]`. Returns `None` if the payload is 4 GiB or larger.
pub(crate) fn seal_record(buf: &mut [u8]) -> Option<()> {
    let (head, payload) = buf.split_at_mut_checked(RECORD_HEADER_LEN)?;
    let len = u32::try_from(payload.len()).ok()?;
    head[..4].copy_from_slice(&len.to_le_bytes());
    head[4..].copy_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    Some(())
}

/// The segment being written.
pub(crate) struct SegmentWriter {
    pub id: SegmentId,
    pub path: PathBuf,
    file: BufWriter<File>,
    /// Bytes written so far, header included.
    pub len: u64,
    pub records: u64,
}

impl SegmentWriter {
    /// Creates segment `id` in `dir` (failing if it exists), writes its header and makes file
    /// and directory entry durable. On error no partial file is left behind, as far as the
    /// file system lets us remove it.
    pub fn create(dir: &Path, id: SegmentId) -> Result<Self> {
        let path = segment_path(dir, id);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        let mut w = Self {
            id,
            path,
            file: BufWriter::with_capacity(WRITE_BUFFER, file),
            len: HEADER_LEN as u64,
            records: 0,
        };
        let header = encode_header(id);
        let done = w
            .file
            .write_all(&header)
            .map_err(|e| io_error(&w.path, e))
            .and_then(|()| w.sync())
            .and_then(|()| sync_dir(dir));
        if let Err(e) = done {
            if let Err(rm) = fs::remove_file(&w.path) {
                tracing::warn!(path = %w.path.display(), error = %rm, "cannot remove partial WAL segment");
            }
            return Err(e);
        }
        Ok(w)
    }

    pub fn write_record(&mut self, framed: &[u8]) -> Result<()> {
        self.file
            .write_all(framed)
            .map_err(|e| io_error(&self.path, e))?;
        self.len += framed.len() as u64;
        self.records += 1;
        Ok(())
    }

    /// Writes the buffer out to the file (no fsync).
    pub fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|e| io_error(&self.path, e))
    }

    /// Gives up the buffer and returns path and file. Call it after a successful
    /// [`flush`](Self::flush): anything still buffered is dropped.
    pub fn into_file(self) -> (PathBuf, File) {
        let (file, _unflushed) = self.file.into_parts();
        (self.path, file)
    }

    /// Flushes the buffer and fdatasyncs the file.
    pub fn sync(&mut self) -> Result<()> {
        self.file
            .flush()
            .and_then(|()| self.file.get_ref().sync_data())
            .map_err(|e| io_error(&self.path, e))
    }
}

/// One step of reading a segment.
#[derive(Debug)]
pub(crate) enum Step {
    /// An intact record (checksum verified) starting at byte `offset`; its payload is
    /// [`SegmentReader::payload`].
    Record { offset: u64 },
    /// The segment ended cleanly after the last record.
    End,
    /// Nothing from `offset` on can be trusted.
    Corrupt { offset: u64, reason: Corruption },
}

/// Reads the header, then records, of one segment; the first problem ends it.
pub(crate) struct SegmentReader {
    id: SegmentId,
    path: PathBuf,
    file: Box<dyn Read + Send>,
    file_len: u64,
    offset: u64,
    payload: Vec<u8>,
    done: bool,
}

impl SegmentReader {
    /// Opens segment `id`; `None` if the file has gone (removed since it was listed).
    pub fn open(path: PathBuf, id: SegmentId) -> Result<Option<Self>> {
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path, e)),
        };
        let file_len = file.metadata().map_err(|e| io_error(&path, e))?.len();
        Ok(Some(Self {
            id,
            path,
            file: Box::new(BufReader::with_capacity(READ_BUFFER, file)),
            file_len,
            offset: 0,
            payload: Vec::new(),
            done: false,
        }))
    }

    /// A reader over a segment held in memory (an object of a shared WAL); `path` names it
    /// in errors.
    pub fn from_bytes(path: PathBuf, id: SegmentId, bytes: bytes::Bytes) -> Self {
        Self {
            id,
            path,
            file_len: bytes.len() as u64,
            file: Box::new(io::Cursor::new(bytes)),
            offset: 0,
            payload: Vec::new(),
            done: false,
        }
    }

    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next record, the clean end, or the corruption that ends the segment. Real I/O
    /// errors are returned as errors: they say nothing about the file's content.
    pub fn next(&mut self) -> Result<Step> {
        if self.done {
            return Ok(Step::End);
        }
        let step = self.advance();
        if !matches!(step, Ok(Step::Record { .. })) {
            self.done = true;
        }
        step
    }

    fn advance(&mut self) -> Result<Step> {
        let at = self.offset;
        let left = self.file_len - at;
        let corrupt = |reason| Ok(Step::Corrupt { offset: at, reason });
        if at == 0 {
            if left < HEADER_LEN as u64 {
                return corrupt(Corruption::ShortHeader { len: left });
            }
            let mut h = [0u8; HEADER_LEN];
            if !self.read_exact(&mut h)? {
                return corrupt(Corruption::ShortHeader { len: left });
            }
            if let Err(reason) = check_header(&h, self.id) {
                return corrupt(reason);
            }
            self.offset = HEADER_LEN as u64;
            return self.advance();
        }
        if left == 0 {
            return Ok(Step::End);
        }
        if left < RECORD_HEADER_LEN as u64 {
            return corrupt(Corruption::ShortRecordHeader { available: left });
        }
        let mut h = [0u8; RECORD_HEADER_LEN];
        if !self.read_exact(&mut h)? {
            return corrupt(Corruption::ShortRecordHeader { available: left });
        }
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let stored = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let available = left - RECORD_HEADER_LEN as u64;
        if u64::from(len) > available {
            return corrupt(Corruption::LengthPastEnd { len, available });
        }
        // Bounded by the file's length, checked just above.
        let mut payload = std::mem::take(&mut self.payload);
        payload.clear();
        payload.resize(len as usize, 0);
        let complete = self.read_exact(&mut payload)?;
        self.payload = payload;
        if !complete {
            return corrupt(Corruption::LengthPastEnd { len, available });
        }
        let computed = crc32c::crc32c(&self.payload);
        if computed != stored {
            return corrupt(Corruption::Checksum { stored, computed });
        }
        self.offset = at + (RECORD_HEADER_LEN as u64) + u64::from(len);
        Ok(Step::Record { offset: at })
    }

    /// The payload of the record last returned by [`next`](Self::next).
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// `read_exact`, but a file that shrank under us (early EOF) is `Ok(false)`.
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<bool> {
        match self.file.read_exact(buf) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(io_error(&self.path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip_and_others_are_ignored() {
        for id in [0, 1, 42, u64::MAX] {
            let id = SegmentId(id);
            assert_eq!(parse_file_name(&file_name(id)), Some(id));
        }
        assert_eq!(file_name(SegmentId(7)), "00000000000000000007.wal");
        for other in [
            "7.wal",
            "0000000000000000000a.wal",
            "00000000000000000007.wal.tmp",
            "99999999999999999999.wal",
            "+0000000000000000007.wal",
        ] {
            assert_eq!(parse_file_name(other), None, "{other}");
        }
    }

    /// Compatibility: a format-1 segment header, byte for byte.
    #[test]
    fn header_golden_bytes() {
        let h = encode_header(SegmentId(0x0102));
        assert_eq!(
            h,
            [
                b'R', b'I', b'G', b'W', b'A', b'L', 0, 0, 1, 0, 2, 1, 0, 0, 0, 0, 0, 0
            ]
        );
        assert_eq!(check_header(&h, SegmentId(0x0102)), Ok(()));
        assert_eq!(
            check_header(&h, SegmentId(3)),
            Err(Corruption::IdMismatch {
                header: 0x0102,
                name: 3
            })
        );
    }
}
