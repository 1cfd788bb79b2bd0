//! The WAL record payload: a compact little-endian encoding of a [`WriteBatch`]'s parts.
//!
//! ```text
//!  u8   record format (= 1)
//!  u32  arena length in bytes      u32 row count      u32 tag count      u32 field count
//!  [u8] arena (UTF-8)
//!  rows:   table (offset u32, len u32), time i64, line u32,
//!          tag range (start u32, end u32), field range (start u32, end u32)      36 bytes each
//!  tags:   key (offset u32, len u32), value (offset u32, len u32)                16 bytes each
//!  fields: key (offset u32, len u32), value tag u8, then by tag:
//!          0 f64 (IEEE bits, 8)  1 i64 (8)  2 u64 (8)  3 bool (1 byte, 0 or 1)
//!          4 string (offset u32, len u32)                                         10..=17 bytes each
//! ```
//!
//! All integers are little endian; nothing follows the last field. Encoding copies the batch's
//! four buffers into one reused `Vec<u8>` and allocates nothing per row. Decoding never panics:
//! every read is bounds-checked, each count is checked against the bytes that remain before
//! anything is allocated for it, the arena must be valid UTF-8 and the offsets are validated by
//! [`WriteBatch::from_parts`].

use crate::batch::{RowMeta, StoredValue, StrRef, WriteBatch};

/// The record format byte written by [`encode`]. Bump it (and keep a decoder for the old
/// value) whenever the layout above changes.
pub const RECORD_FORMAT_V1: u8 = 1;

const PREFIX_LEN: usize = 1 + 4 * 4;
const ROW_LEN: usize = 8 + 8 + 4 + 8 + 8;
const TAG_LEN: usize = 16;
const FIELD_MIN_LEN: usize = 8 + 1 + 1;
const FIELD_MAX_LEN: usize = 8 + 1 + 8;

const VALUE_F64: u8 = 0;
const VALUE_I64: u8 = 1;
const VALUE_U64: u8 = 2;
const VALUE_BOOL: u8 = 3;
const VALUE_STR: u8 = 4;

/// Why a payload could not be decoded. Offsets are byte positions within the payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload truncated at byte {offset}: {needed} more bytes expected")]
    Truncated { offset: usize, needed: usize },
    #[error("unknown record format {format}")]
    UnknownFormat { format: u8 },
    #[error("{what} count {count} at byte {offset} cannot fit in the {remaining} bytes left")]
    CountTooLarge {
        what: &'static str,
        count: u32,
        offset: usize,
        remaining: usize,
    },
    #[error("arena is not valid UTF-8 after {valid_up_to} bytes")]
    InvalidUtf8 { valid_up_to: usize },
    #[error("unknown field value tag {tag} at byte {offset}")]
    UnknownValueTag { tag: u8, offset: usize },
    #[error("invalid boolean byte {byte} at byte {offset}")]
    InvalidBool { byte: u8, offset: usize },
    #[error("{trailing} unexpected bytes after the last field")]
    TrailingBytes { trailing: usize },
    #[error("invalid batch: {reason}")]
    InvalidBatch { reason: &'static str },
}

/// An upper bound of the encoded size of `batch`, exact up to 7 bytes per non-string field.
pub fn encoded_len_upper_bound(batch: &WriteBatch) -> usize {
    let (arena, rows, tags, fields) = batch.parts();
    PREFIX_LEN
        + arena.len()
        + rows.len() * ROW_LEN
        + tags.len() * TAG_LEN
        + fields.len() * FIELD_MAX_LEN
}

/// Appends the encoding of `batch` to `out`.
///
/// Counts are written as `u32`: a [`WriteBatch`] indexes its tags and fields with `u32`, and a
/// batch whose counts overflowed would encode to more than 4 GiB, which the writer rejects.
pub fn encode(batch: &WriteBatch, out: &mut Vec<u8>) {
    let (arena, rows, tags, fields) = batch.parts();
    out.reserve(encoded_len_upper_bound(batch));
    out.push(RECORD_FORMAT_V1);
    for n in [arena.len(), rows.len(), tags.len(), fields.len()] {
        put_u32(out, n as u32);
    }
    out.extend_from_slice(arena.as_bytes());
    for row in rows {
        put_str_ref(out, row.table);
        out.extend_from_slice(&row.time.to_le_bytes());
        put_u32(out, row.line);
        put_u32(out, row.tags.0);
        put_u32(out, row.tags.1);
        put_u32(out, row.fields.0);
        put_u32(out, row.fields.1);
    }
    for (k, v) in tags {
        put_str_ref(out, *k);
        put_str_ref(out, *v);
    }
    for (k, v) in fields {
        put_str_ref(out, *k);
        match *v {
            StoredValue::F64(x) => {
                out.push(VALUE_F64);
                out.extend_from_slice(&x.to_bits().to_le_bytes());
            }
            StoredValue::I64(x) => {
                out.push(VALUE_I64);
                out.extend_from_slice(&x.to_le_bytes());
            }
            StoredValue::U64(x) => {
                out.push(VALUE_U64);
                out.extend_from_slice(&x.to_le_bytes());
            }
            StoredValue::Bool(x) => {
                out.push(VALUE_BOOL);
                out.push(u8::from(x));
            }
            StoredValue::Str(s) => {
                out.push(VALUE_STR);
                put_str_ref(out, s);
            }
        }
    }
}

#[inline]
fn put_u32(out: &mut Vec<u8>, x: u32) {
    out.extend_from_slice(&x.to_le_bytes());
}

#[inline]
fn put_str_ref(out: &mut Vec<u8>, r: StrRef) {
    put_u32(out, r.offset);
    put_u32(out, r.len);
}

/// Decodes a payload written by [`encode`]. Never panics, whatever `buf` holds.
pub fn decode(buf: &[u8]) -> Result<WriteBatch, DecodeError> {
    let mut r = Reader { buf, pos: 0 };
    let format = r.u8()?;
    if format != RECORD_FORMAT_V1 {
        return Err(DecodeError::UnknownFormat { format });
    }
    let arena_len = r.u32()?;
    let row_count = r.u32()?;
    let tag_count = r.u32()?;
    let field_count = r.u32()?;

    let arena_bytes = r.take(arena_len as usize)?;
    let arena = std::str::from_utf8(arena_bytes)
        .map_err(|e| DecodeError::InvalidUtf8 {
            valid_up_to: e.valid_up_to(),
        })?
        .to_owned();

    let mut rows = Vec::with_capacity(r.check_count("row", row_count, ROW_LEN)?);
    for _ in 0..row_count {
        rows.push(RowMeta {
            table: r.str_ref()?,
            time: r.i64()?,
            line: r.u32()?,
            tags: (r.u32()?, r.u32()?),
            fields: (r.u32()?, r.u32()?),
        });
    }

    let mut tags = Vec::with_capacity(r.check_count("tag", tag_count, TAG_LEN)?);
    for _ in 0..tag_count {
        tags.push((r.str_ref()?, r.str_ref()?));
    }

    let mut fields = Vec::with_capacity(r.check_count("field", field_count, FIELD_MIN_LEN)?);
    for _ in 0..field_count {
        let key = r.str_ref()?;
        let tag_offset = r.pos;
        let value = match r.u8()? {
            VALUE_F64 => StoredValue::F64(f64::from_bits(r.u64()?)),
            VALUE_I64 => StoredValue::I64(r.i64()?),
            VALUE_U64 => StoredValue::U64(r.u64()?),
            VALUE_BOOL => {
                let offset = r.pos;
                match r.u8()? {
                    0 => StoredValue::Bool(false),
                    1 => StoredValue::Bool(true),
                    byte => return Err(DecodeError::InvalidBool { byte, offset }),
                }
            }
            VALUE_STR => StoredValue::Str(r.str_ref()?),
            tag => {
                return Err(DecodeError::UnknownValueTag {
                    tag,
                    offset: tag_offset,
                });
            }
        };
        fields.push((key, value));
    }

    let trailing = r.remaining();
    if trailing != 0 {
        return Err(DecodeError::TrailingBytes { trailing });
    }
    WriteBatch::from_parts(arena, rows, tags, fields)
        .map_err(|reason| DecodeError::InvalidBatch { reason })
}

/// A bounds-checked cursor. Invariant: `pos <= buf.len()`.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let rest = &self.buf[self.pos..];
        match rest.get(..n) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(DecodeError::Truncated {
                offset: self.pos,
                needed: n - rest.len(),
            }),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_le_bytes)
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        self.array().map(i64::from_le_bytes)
    }

    fn str_ref(&mut self) -> Result<StrRef, DecodeError> {
        Ok(StrRef {
            offset: self.u32()?,
            len: self.u32()?,
        })
    }

    /// Checks that `count` items of at least `min_len` bytes each fit in what is left, so a
    /// corrupt count cannot make the decoder allocate more than the payload's own size.
    fn check_count(
        &self,
        what: &'static str,
        count: u32,
        min_len: usize,
    ) -> Result<usize, DecodeError> {
        let count_usize = count as usize;
        match count_usize.checked_mul(min_len) {
            Some(need) if need <= self.remaining() => Ok(count_usize),
            _ => Err(DecodeError::CountTooLarge {
                what,
                count,
                offset: self.pos,
                remaining: self.remaining(),
            }),
        }
    }
}

#[cfg(test)]
mod tests;
