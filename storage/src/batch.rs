//! [`WriteBatch`]: the flat, allocation-light form every wire format parses into.
//!
//! A batch holds rows of possibly different tables. All strings (table names, tag keys and
//! values, field names, string field values) live in one arena; rows, tags and fields are
//! plain vectors of offsets. Building a row therefore allocates nothing once the vectors have
//! grown, and the WAL encodes a batch by copying four buffers.
//!
//! ```
//! use rigwatch_storage::batch::{FieldValue, WriteBatch};
//! let mut b = WriteBatch::default();
//! let mut row = b.row("gpu", 1_000);
//! row.tag("gpu_uuid", "GPU-1");
//! row.field("utilization", FieldValue::F64(97.0));
//! row.finish(1).unwrap();
//! assert_eq!(b.len(), 1);
//! let r = b.rows().next().unwrap();
//! assert_eq!(r.table(), "gpu");
//! assert_eq!(r.tags().next(), Some(("gpu_uuid", "GPU-1")));
//! ```

use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};

/// The name of the timestamp column in every table.
pub const TIME_COLUMN: &str = "time";

/// The type of a field column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    F64,
    I64,
    U64,
    Bool,
    Str,
}

impl FieldType {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::F64 => "float",
            FieldType::I64 => "integer",
            FieldType::U64 => "unsigned",
            FieldType::Bool => "boolean",
            FieldType::Str => "string",
        }
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A field value as handed to and read from a batch. Strings borrow from the batch arena.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FieldValue<'a> {
    F64(f64),
    I64(i64),
    U64(u64),
    Bool(bool),
    Str(&'a str),
}

impl FieldValue<'_> {
    pub fn field_type(&self) -> FieldType {
        match self {
            FieldValue::F64(_) => FieldType::F64,
            FieldValue::I64(_) => FieldType::I64,
            FieldValue::U64(_) => FieldType::U64,
            FieldValue::Bool(_) => FieldType::Bool,
            FieldValue::Str(_) => FieldType::Str,
        }
    }
}

/// An offset/length pair into the arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct StrRef {
    pub offset: u32,
    pub len: u32,
}

impl StrRef {
    fn range(self) -> Range<usize> {
        self.offset as usize..(self.offset + self.len) as usize
    }
}

/// A stored field value; strings point into the arena.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StoredValue {
    F64(f64),
    I64(i64),
    U64(u64),
    Bool(bool),
    Str(StrRef),
}

/// One row's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowMeta {
    pub table: StrRef,
    pub time: i64,
    /// The 1-based source line (or sample index) the row came from, for error reports.
    pub line: u32,
    /// Range into the batch's tag list; tags are sorted by key.
    pub tags: (u32, u32),
    /// Range into the batch's field list.
    pub fields: (u32, u32),
}

/// Why a row could not be added to a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    #[error("empty table (measurement) name")]
    EmptyTable,
    #[error("row has no fields")]
    NoFields,
    #[error("empty {what} name")]
    EmptyName { what: &'static str },
    #[error("duplicate tag key `{key}`")]
    DuplicateTag { key: String },
    #[error("duplicate field key `{key}`")]
    DuplicateField { key: String },
    #[error("`{key}` is reserved for the timestamp column and cannot be a tag or field")]
    ReservedName { key: String },
    #[error("batch arena is full (more than 4 GiB of strings in one request)")]
    TooLarge,
}

/// Emptied batches kept by [`WriteBatch::recycle`]: about as many as requests are parsed and
/// logged at once. Without them, each large write allocated its batch on a parsing thread and
/// freed it on the WAL thread, and the allocator held on to the freed memory for a while:
/// `bench compare` loads 4 MiB bodies, about 10 MiB of batch each, 180 MiB a second.
const RECYCLE_KEEP: usize = 8;
/// A batch with room for more than this is freed, not kept.
pub const RECYCLE_MAX_BYTES: usize = 32 << 20;
static RECYCLED: std::sync::Mutex<Vec<WriteBatch>> = std::sync::Mutex::new(Vec::new());

/// Rows for any number of tables, in arrival order. See the module docs.
#[derive(Clone, Default, PartialEq)]
pub struct WriteBatch {
    pub(crate) arena: String,
    pub(crate) rows: Vec<RowMeta>,
    pub(crate) tags: Vec<(StrRef, StrRef)>,
    pub(crate) fields: Vec<(StrRef, StoredValue)>,
}

impl fmt::Debug for WriteBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.rows()).finish()
    }
}

impl WriteBatch {
    pub fn with_capacity(rows: usize, arena_bytes: usize) -> Self {
        Self {
            arena: String::with_capacity(arena_bytes),
            rows: Vec::with_capacity(rows),
            tags: Vec::with_capacity(rows * 4),
            fields: Vec::with_capacity(rows * 8),
        }
    }

    /// An empty batch with room for about `rows` rows and `arena_bytes` of strings: one kept
    /// by [`WriteBatch::recycle`] where there is one, so that a steady stream of requests
    /// reuses the same few buffers instead of allocating and freeing several MiB each.
    pub fn reused(rows: usize, arena_bytes: usize) -> Self {
        let kept = RECYCLED.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let Some(mut b) = kept else {
            return Self::with_capacity(rows, arena_bytes);
        };
        b.arena.reserve(arena_bytes);
        b.rows.reserve(rows);
        b.tags.reserve(rows * 4);
        b.fields.reserve(rows * 8);
        b
    }

    /// Empties the batch and keeps it for [`WriteBatch::reused`], unless enough are kept
    /// already or it is larger than [`RECYCLE_MAX_BYTES`] (a rare huge request is freed).
    pub fn recycle(mut self) {
        if self.capacity_bytes() > RECYCLE_MAX_BYTES {
            return;
        }
        self.arena.clear();
        self.rows.clear();
        self.tags.clear();
        self.fields.clear();
        let mut kept = RECYCLED.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < RECYCLE_KEEP {
            kept.push(self);
        }
    }

    /// Bytes the batch's buffers have room for.
    fn capacity_bytes(&self) -> usize {
        self.arena.capacity()
            + self.rows.capacity() * std::mem::size_of::<RowMeta>()
            + self.tags.capacity() * std::mem::size_of::<(StrRef, StrRef)>()
            + self.fields.capacity() * std::mem::size_of::<(StrRef, StoredValue)>()
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Number of field values over all rows.
    pub fn field_count(&self) -> usize {
        self.fields.len()
    }

    /// Approximate heap size in bytes.
    pub fn size_bytes(&self) -> usize {
        self.arena.len()
            + self.rows.len() * std::mem::size_of::<RowMeta>()
            + self.tags.len() * std::mem::size_of::<(StrRef, StrRef)>()
            + self.fields.len() * std::mem::size_of::<(StrRef, StoredValue)>()
    }

    /// Starts a row. Add tags and fields to the returned builder, then call
    /// [`RowBuilder::finish`]; dropping the builder without finishing discards the row.
    pub fn row(&mut self, table: &str, time: i64) -> RowBuilder<'_> {
        let mark = Mark {
            arena: self.arena.len(),
            tags: self.tags.len(),
            fields: self.fields.len(),
        };
        let table = self.push_str(table);
        RowBuilder {
            batch: self,
            mark,
            table,
            time,
            finished: false,
            overflow: false,
        }
    }

    /// Iterates the rows in order.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = Row<'_>> + '_ {
        self.rows.iter().map(move |meta| Row { batch: self, meta })
    }

    /// The `i`-th row.
    pub fn get(&self, i: usize) -> Option<Row<'_>> {
        self.rows.get(i).map(|meta| Row { batch: self, meta })
    }

    /// Copies `row` (from any batch) onto the end of this batch.
    pub fn push_row(&mut self, row: Row<'_>) {
        let mut b = self.row(row.table(), row.time());
        for (k, v) in row.tags() {
            b.tag(k, v);
        }
        for (k, v) in row.fields() {
            b.field(k, v);
        }
        // The source row was valid, so this cannot fail.
        let _ = b.finish(row.line());
    }

    /// Appends all rows of `other`.
    pub fn extend_from(&mut self, other: &WriteBatch) {
        for row in other.rows() {
            self.push_row(row);
        }
    }

    /// The same rows, each with the field `key` set to `value` (replacing a field of that
    /// name): for the few rows a singleton writes, so not on a hot path.
    pub fn stamped(&self, key: &str, value: FieldValue<'_>) -> WriteBatch {
        let mut out = WriteBatch::with_capacity(self.len(), self.arena.len() + 64);
        for row in self.rows() {
            let mut b = out.row(row.table(), row.time());
            for (k, v) in row.tags() {
                b.tag(k, v);
            }
            for (k, v) in row.fields() {
                if k != key {
                    b.field(k, v);
                }
            }
            b.field(key, value);
            // The source row was valid and `key` is a valid field name.
            let _ = b.finish(row.line());
        }
        out
    }

    fn push_str(&mut self, s: &str) -> StrRef {
        let offset = self.arena.len();
        self.arena.push_str(s);
        StrRef {
            offset: offset as u32,
            len: s.len() as u32,
        }
    }

    pub(crate) fn str(&self, r: StrRef) -> &str {
        &self.arena[r.range()]
    }

    /// The raw parts, for encoders: (arena, rows, tags, fields).
    #[allow(clippy::type_complexity)]
    pub fn parts(
        &self,
    ) -> (
        &str,
        &[RowMeta],
        &[(StrRef, StrRef)],
        &[(StrRef, StoredValue)],
    ) {
        (&self.arena, &self.rows, &self.tags, &self.fields)
    }

    /// Reassembles a batch from raw parts, checking every offset so that a decoded batch can
    /// never index out of bounds.
    pub fn from_parts(
        arena: String,
        rows: Vec<RowMeta>,
        tags: Vec<(StrRef, StrRef)>,
        fields: Vec<(StrRef, StoredValue)>,
    ) -> Result<Self, &'static str> {
        let ok_str = |r: StrRef| {
            let end = r.offset as usize + r.len as usize;
            end <= arena.len()
                && arena.is_char_boundary(r.offset as usize)
                && arena.is_char_boundary(end)
        };
        for row in &rows {
            if !ok_str(row.table)
                || row.tags.0 > row.tags.1
                || row.tags.1 as usize > tags.len()
                || row.fields.0 > row.fields.1
                || row.fields.1 as usize > fields.len()
            {
                return Err("row offsets out of bounds");
            }
        }
        for (k, v) in &tags {
            if !ok_str(*k) || !ok_str(*v) {
                return Err("tag offsets out of bounds");
            }
        }
        for (k, v) in &fields {
            if !ok_str(*k) {
                return Err("field key offsets out of bounds");
            }
            if let StoredValue::Str(s) = v
                && !ok_str(*s)
            {
                return Err("field value offsets out of bounds");
            }
        }
        Ok(Self {
            arena,
            rows,
            tags,
            fields,
        })
    }
}

#[derive(Clone, Copy)]
struct Mark {
    arena: usize,
    tags: usize,
    fields: usize,
}

/// Builds one row of a [`WriteBatch`]; see [`WriteBatch::row`].
pub struct RowBuilder<'b> {
    batch: &'b mut WriteBatch,
    mark: Mark,
    table: StrRef,
    time: i64,
    finished: bool,
    overflow: bool,
}

impl RowBuilder<'_> {
    fn push(&mut self, s: &str) -> StrRef {
        if self.batch.arena.len() + s.len() > u32::MAX as usize {
            self.overflow = true;
            return StrRef::default();
        }
        self.batch.push_str(s)
    }

    /// Adds a tag. Order does not matter; tags are sorted by key when the row finishes.
    pub fn tag(&mut self, key: &str, value: &str) -> &mut Self {
        let k = self.push(key);
        let v = self.push(value);
        self.batch.tags.push((k, v));
        self
    }

    /// Adds a field.
    pub fn field(&mut self, key: &str, value: FieldValue<'_>) -> &mut Self {
        let k = self.push(key);
        let v = match value {
            FieldValue::F64(x) => StoredValue::F64(x),
            FieldValue::I64(x) => StoredValue::I64(x),
            FieldValue::U64(x) => StoredValue::U64(x),
            FieldValue::Bool(x) => StoredValue::Bool(x),
            FieldValue::Str(s) => StoredValue::Str(self.push(s)),
        };
        self.batch.fields.push((k, v));
        self
    }

    /// Overrides the row's timestamp (for formats that give it after the fields).
    pub fn set_time(&mut self, time: i64) -> &mut Self {
        self.time = time;
        self
    }

    /// Validates and commits the row. `line` is the 1-based source line for error reports.
    /// On error nothing of the row remains in the batch.
    pub fn finish(mut self, line: u32) -> Result<(), RowError> {
        let result = self.validate();
        if result.is_ok() {
            let b = &mut *self.batch;
            b.rows.push(RowMeta {
                table: self.table,
                time: self.time,
                line,
                tags: (self.mark.tags as u32, b.tags.len() as u32),
                fields: (self.mark.fields as u32, b.fields.len() as u32),
            });
            self.finished = true;
        }
        result
    }

    fn validate(&mut self) -> Result<(), RowError> {
        if self.overflow {
            return Err(RowError::TooLarge);
        }
        let b = &mut *self.batch;
        if self.table.len == 0 {
            return Err(RowError::EmptyTable);
        }
        let arena = &b.arena;
        let s = |r: StrRef| &arena[r.range()];
        let tags = &mut b.tags[self.mark.tags..];
        tags.sort_unstable_by(|a, b| s(a.0).cmp(s(b.0)));
        for (i, (k, _)) in tags.iter().enumerate() {
            let key = s(*k);
            if key.is_empty() {
                return Err(RowError::EmptyName { what: "tag" });
            }
            if key == TIME_COLUMN {
                return Err(RowError::ReservedName { key: key.into() });
            }
            if i > 0 && s(tags[i - 1].0) == key {
                return Err(RowError::DuplicateTag { key: key.into() });
            }
        }
        let fields = &b.fields[self.mark.fields..];
        if fields.is_empty() {
            return Err(RowError::NoFields);
        }
        for (i, (k, _)) in fields.iter().enumerate() {
            let key = s(*k);
            if key.is_empty() {
                return Err(RowError::EmptyName { what: "field" });
            }
            if key == TIME_COLUMN {
                return Err(RowError::ReservedName { key: key.into() });
            }
            // Rows have few fields; a quadratic check beats hashing here.
            if fields[..i].iter().any(|(k2, _)| s(*k2) == key) {
                return Err(RowError::DuplicateField { key: key.into() });
            }
        }
        Ok(())
    }
}

impl Drop for RowBuilder<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.batch.arena.truncate(self.mark.arena);
            self.batch.tags.truncate(self.mark.tags);
            self.batch.fields.truncate(self.mark.fields);
        }
    }
}

/// A view of one row.
#[derive(Clone, Copy)]
pub struct Row<'a> {
    batch: &'a WriteBatch,
    meta: &'a RowMeta,
}

impl<'a> Row<'a> {
    pub fn table(&self) -> &'a str {
        self.batch.str(self.meta.table)
    }

    pub fn time(&self) -> i64 {
        self.meta.time
    }

    pub fn line(&self) -> u32 {
        self.meta.line
    }

    /// Tags, sorted by key.
    pub fn tags(&self) -> impl ExactSizeIterator<Item = (&'a str, &'a str)> + 'a {
        let b = self.batch;
        b.tags[self.meta.tags.0 as usize..self.meta.tags.1 as usize]
            .iter()
            .map(move |(k, v)| (b.str(*k), b.str(*v)))
    }

    pub fn tag_count(&self) -> usize {
        (self.meta.tags.1 - self.meta.tags.0) as usize
    }

    /// Fields, in the order given.
    pub fn fields(&self) -> impl ExactSizeIterator<Item = (&'a str, FieldValue<'a>)> + 'a {
        let b = self.batch;
        b.fields[self.meta.fields.0 as usize..self.meta.fields.1 as usize]
            .iter()
            .map(move |(k, v)| {
                let v = match *v {
                    StoredValue::F64(x) => FieldValue::F64(x),
                    StoredValue::I64(x) => FieldValue::I64(x),
                    StoredValue::U64(x) => FieldValue::U64(x),
                    StoredValue::Bool(x) => FieldValue::Bool(x),
                    StoredValue::Str(s) => FieldValue::Str(b.str(s)),
                };
                (b.str(*k), v)
            })
    }

    pub fn field_count(&self) -> usize {
        (self.meta.fields.1 - self.meta.fields.0) as usize
    }
}

impl fmt::Debug for Row<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Row")
            .field("table", &self.table())
            .field("time", &self.time())
            .field("tags", &self.tags().collect::<Vec<_>>())
            .field("fields", &self.fields().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_row_leaves_no_trace() {
        let mut b = WriteBatch::default();
        let mut r = b.row("t", 1);
        r.tag("a", "1").tag("a", "2").field("f", FieldValue::I64(1));
        assert_eq!(r.finish(7), Err(RowError::DuplicateTag { key: "a".into() }));
        assert!(b.is_empty());
        assert!(b.arena.is_empty() && b.tags.is_empty() && b.fields.is_empty());
        let mut r = b.row("t", 2);
        r.field("f", FieldValue::Str("x"));
        r.finish(8).unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(
            b.get(0).unwrap().fields().next(),
            Some(("f", FieldValue::Str("x")))
        );
    }

    #[test]
    fn tags_are_sorted_and_reserved_names_rejected() {
        let mut b = WriteBatch::default();
        let mut r = b.row("t", 1);
        r.tag("z", "1")
            .tag("a", "2")
            .field("f", FieldValue::Bool(true));
        r.finish(1).unwrap();
        let tags: Vec<_> = b.get(0).unwrap().tags().collect();
        assert_eq!(tags, vec![("a", "2"), ("z", "1")]);
        let mut r = b.row("t", 1);
        r.field("time", FieldValue::F64(1.0));
        assert!(matches!(r.finish(2), Err(RowError::ReservedName { .. })));
        let r = b.row("t", 1);
        assert_eq!(r.finish(3), Err(RowError::NoFields));
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn from_parts_rejects_bad_offsets() {
        let bad = StrRef { offset: 2, len: 5 };
        let rows = vec![RowMeta {
            table: bad,
            time: 0,
            line: 1,
            tags: (0, 0),
            fields: (0, 0),
        }];
        assert!(WriteBatch::from_parts("abc".into(), rows, vec![], vec![]).is_err());
    }
}
