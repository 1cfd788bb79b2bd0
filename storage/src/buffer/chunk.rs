//! A chunk: the buffered rows of one table in one time partition.
//!
//! Rows are upserted on arrival: a chunk keeps a map from (series, time) to row, so a repeated
//! write overwrites the fields it carries and leaves the others as they were. A chunk is thus
//! always free of duplicates, and persisting it needs only a sort. Append-only (event) chunks
//! skip the map and keep every row.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, TimestampNanosecondArray};
use parking_lot::Mutex;

use super::column::{Column, null_array};
use crate::batch::Row;
#[cfg(test)]
use crate::schema::ColumnKind;
use crate::schema::TableDef;

/// Buffered rows of one table partition.
#[derive(Debug)]
pub struct Chunk {
    append_only: bool,
    time: Vec<i64>,
    /// Each row's series (an index into `series_tags`).
    row_series: Vec<u32>,
    cols: Vec<Column>,
    series: HashMap<Box<str>, u32>,
    series_tags: Vec<Box<[(u32, i32)]>>,
    rows_by_key: HashMap<(u32, i64), u32>,
    min_time: i64,
    max_time: i64,
    bytes: usize,
    /// Rows to make room for at once ([`Chunk::with_rows_hint`]).
    rows_hint: usize,
    /// The last Arrow copy handed out, with the column count it was built for.
    cache: Mutex<Option<RecordBatch>>,
}

impl Chunk {
    pub fn new(append_only: bool) -> Self {
        Self::with_rows_hint(append_only, 0)
    }

    /// A chunk that makes room for `rows` rows once it gets its first, instead of growing
    /// its columns by doubling (each step a copy, and the old buffer freed).
    pub fn with_rows_hint(append_only: bool, rows: usize) -> Self {
        Self {
            append_only,
            time: Vec::new(),
            row_series: Vec::new(),
            cols: Vec::new(),
            series: HashMap::new(),
            series_tags: Vec::new(),
            rows_by_key: HashMap::new(),
            min_time: i64::MAX,
            max_time: i64::MIN,
            bytes: 0,
            rows_hint: rows,
            cache: Mutex::new(None),
        }
    }

    pub fn rows(&self) -> usize {
        self.time.len()
    }

    /// Approximate heap bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn time_range(&self) -> (i64, i64) {
        (self.min_time, self.max_time)
    }

    /// Upserts (or, for append-only chunks, appends) one validated row. `tag_cols` and
    /// `field_cols` give the column of each of the row's tags and fields. Returns the bytes
    /// the chunk grew by.
    pub fn apply(
        &mut self,
        def: &TableDef,
        row: &Row<'_>,
        tag_cols: &[u32],
        field_cols: &[u32],
        key_buf: &mut String,
    ) -> usize {
        let before = self.bytes;
        *self.cache.get_mut() = None;
        if self.time.capacity() == 0 {
            self.time.reserve(self.rows_hint);
            self.row_series.reserve(self.rows_hint);
        }
        while self.cols.len() < def.columns.len() {
            let kind = def.columns[self.cols.len()].kind;
            let mut col = Column::new(kind, self.time.len());
            col.reserve(self.rows_hint.saturating_sub(self.time.len()));
            self.bytes += col.row_width() * self.time.len();
            self.cols.push(col);
        }

        key_buf.clear();
        for (k, v) in row.tags() {
            key_buf.push_str(k);
            key_buf.push('\0');
            key_buf.push_str(v);
            key_buf.push('\0');
        }
        let series = match self.series.get(key_buf.as_str()) {
            Some(s) => *s,
            None => self.new_series(row, tag_cols, key_buf),
        };

        let time = row.time();
        let existing = if self.append_only {
            None
        } else {
            self.rows_by_key.get(&(series, time)).copied()
        };
        let at = match existing {
            Some(r) => r as usize,
            None => {
                let r = self.time.len();
                self.time.push(time);
                self.row_series.push(series);
                for c in &mut self.cols {
                    c.push_null();
                }
                for (col, key) in self.series_tags[series as usize].iter() {
                    self.cols[*col as usize].set_tag_key(r, *key);
                }
                if !self.append_only {
                    self.rows_by_key.insert((series, time), r as u32);
                    self.bytes += 24;
                }
                self.bytes += 12 + self.cols.iter().map(Column::row_width).sum::<usize>();
                self.min_time = self.min_time.min(time);
                self.max_time = self.max_time.max(time);
                r
            }
        };
        for ((_, value), col) in row.fields().zip(field_cols) {
            self.bytes += self.cols[*col as usize].set(at, value);
        }
        self.bytes - before
    }

    fn new_series(&mut self, row: &Row<'_>, tag_cols: &[u32], key: &str) -> u32 {
        let id = self.series_tags.len() as u32;
        let tags: Box<[(u32, i32)]> = row
            .tags()
            .zip(tag_cols)
            .map(|((_, v), col)| (*col, self.cols[*col as usize].intern(v)))
            .collect();
        self.bytes += key.len() * 2 + 48 + tags.len() * 8;
        self.series_tags.push(tags);
        self.series.insert(key.into(), id);
        id
    }

    /// Whether this chunk and `other` (of one table) may hold a row of the same series at the
    /// same time: their times overlap and they share a series. `false` is exact: their rows
    /// never need merging with each other.
    pub fn may_share_keys(&self, other: &Chunk) -> bool {
        if self.time.is_empty()
            || other.time.is_empty()
            || self.max_time < other.min_time
            || other.max_time < self.min_time
        {
            return false;
        }
        let (small, large) = if self.series.len() <= other.series.len() {
            (self, other)
        } else {
            (other, self)
        };
        small.series.keys().any(|k| large.series.contains_key(k))
    }

    /// The chunk as one Arrow batch in `def`'s schema (columns the chunk never saw are null).
    /// Rows are in arrival order, deduplicated unless append-only.
    pub fn to_record_batch(&self, def: &TableDef) -> RecordBatch {
        let schema = def.arrow_schema();
        let mut cache = self.cache.lock();
        if let Some(b) = cache.as_ref()
            && b.schema() == schema
        {
            return b.clone();
        }
        let rows = self.time.len();
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(def.columns.len() + 1);
        for (i, c) in def.columns.iter().enumerate() {
            arrays.push(match self.cols.get(i) {
                Some(col) => col.to_array(),
                None => null_array(c.kind, rows),
            });
        }
        arrays.push(Arc::new(TimestampNanosecondArray::from(self.time.clone())));
        let batch = RecordBatch::try_new(schema, arrays).expect("chunk columns match the schema");
        *cache = Some(batch.clone());
        batch
    }

    /// The chunk as one Arrow batch in `def`'s schema, sorted as [`crate::merge::sort`] sorts
    /// (by tag values in column order, a missing tag first, then time; rows with equal keys,
    /// possible only in an append-only chunk, in arrival order).
    pub fn to_sorted_record_batch(&self, def: &TableDef) -> RecordBatch {
        self.gather(def, &self.sorted_rows(def))
    }

    /// The rows numbered `rows`, in that order, as one Arrow batch in `def`'s schema: built
    /// straight from the columns (one copy). Persist gathers [`Chunk::sorted_rows`] a slice
    /// at a time, so it never holds a sorted copy of the whole chunk.
    pub fn gather(&self, def: &TableDef, rows: &[u32]) -> RecordBatch {
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(def.columns.len() + 1);
        for (i, c) in def.columns.iter().enumerate() {
            arrays.push(match self.cols.get(i) {
                Some(col) => col.gather(rows),
                None => null_array(c.kind, rows.len()),
            });
        }
        arrays.push(Arc::new(TimestampNanosecondArray::from_iter_values(
            rows.iter().map(|&r| self.time[r as usize]),
        )));
        RecordBatch::try_new(def.arrow_schema(), arrays).expect("chunk columns match the schema")
    }

    /// Row numbers in (tags, time) order, as [`Chunk::to_sorted_record_batch`] sorts them.
    pub fn sorted_rows(&self, def: &TableDef) -> Vec<u32> {
        let tag_cols: Vec<usize> = def.tag_indices().filter(|&c| c < self.cols.len()).collect();
        let value = |series: usize, col: usize| -> Option<&str> {
            let (_, key) = self.series_tags[series]
                .iter()
                .find(|(c, _)| *c as usize == col)?;
            self.cols[col].tag_value(*key)
        };
        let mut by_tags: Vec<u32> = (0..self.series_tags.len() as u32).collect();
        by_tags.sort_unstable_by(|&a, &b| {
            tag_cols
                .iter()
                .map(|&c| value(a as usize, c).cmp(&value(b as usize, c)))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let mut rank = vec![0u32; by_tags.len()];
        for (i, s) in by_tags.iter().enumerate() {
            rank[*s as usize] = i as u32;
        }
        let mut rows: Vec<(u32, i64, u32)> = (0..self.time.len())
            .map(|r| (rank[self.row_series[r] as usize], self.time[r], r as u32))
            .collect();
        // Stable, so equal keys keep arrival order.
        rows.sort_by_key(|&(series, time, _)| (series, time));
        rows.into_iter().map(|(_, _, r)| r).collect()
    }

    /// Number of tag columns seen (for tests and stats).
    pub fn series_count(&self) -> usize {
        self.series_tags.len()
    }

    #[cfg(test)]
    fn kinds(&self) -> Vec<ColumnKind> {
        self.cols
            .iter()
            .map(|c| match c {
                Column::Tag { .. } => ColumnKind::Tag,
                Column::F64 { .. } => ColumnKind::Field(crate::FieldType::F64),
                Column::I64 { .. } => ColumnKind::Field(crate::FieldType::I64),
                Column::U64 { .. } => ColumnKind::Field(crate::FieldType::U64),
                Column::Bool { .. } => ColumnKind::Field(crate::FieldType::Bool),
                Column::Str { .. } => ColumnKind::Field(crate::FieldType::Str),
            })
            .collect()
    }
}

/// Validates `b` (every row must pass, all of one table) and applies it to a new chunk, as
/// the buffer does; answers the chunk and the table's definition. For tests.
#[cfg(test)]
pub(crate) fn chunk_of(
    s: &crate::schema::Schemas,
    b: crate::batch::WriteBatch,
) -> (Chunk, Arc<TableDef>) {
    let (v, rej) = s.validate(b);
    assert!(rej.is_empty(), "{rej:?}");
    let mut chunk = Chunk::new(v.defs[0].append_only);
    let mut key = String::new();
    let (mut t, mut f) = (0usize, 0usize);
    for (i, row) in v.batch.rows().enumerate() {
        let (nt, nf) = (row.tag_count(), row.field_count());
        chunk.apply(
            &v.defs[i],
            &row,
            &v.tag_cols[t..t + nt],
            &v.field_cols[f..f + nf],
            &mut key,
        );
        t += nt;
        f += nf;
    }
    // The definition as the last row left it (each row's may have added columns).
    let table = v.batch.get(0).expect("a row").table().to_string();
    (chunk, s.get(&table).expect("validated"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{FieldValue, WriteBatch};
    use crate::schema::Schemas;
    use arrow::util::pretty::pretty_format_batches;

    #[test]
    fn chunks_share_keys_only_with_a_common_series_at_overlapping_times() {
        let s = Schemas::default();
        let chunk = |rows: &[(&str, &str, i64)]| {
            let mut b = WriteBatch::default();
            for (i, (gpu, host, t)) in rows.iter().enumerate() {
                let mut r = b.row("gpu", *t);
                r.tag("gpu", gpu)
                    .tag("host", host)
                    .field("util", FieldValue::F64(1.0));
                r.finish(i as u32 + 1).unwrap();
            }
            chunk_of(&s, b).0
        };
        let a = chunk(&[("0", "h", 10), ("1", "h", 20)]);
        // Same gpu values, another host: other series.
        let other_series = chunk(&[("0", "x", 10), ("1", "x", 20)]);
        let same_series = chunk(&[("9", "x", 15), ("1", "h", 30)]);
        let later = chunk(&[("0", "h", 21), ("1", "h", 40)]);
        assert!(!a.may_share_keys(&other_series));
        assert!(!other_series.may_share_keys(&a));
        assert!(a.may_share_keys(&same_series));
        assert!(same_series.may_share_keys(&a));
        // One series, but no time in common.
        assert!(!a.may_share_keys(&later));
        assert!(!a.may_share_keys(&Chunk::new(false)));
    }

    #[test]
    fn upserts_field_by_field() {
        let s = Schemas::default();
        let mut b = WriteBatch::default();
        let mut r = b.row("gpu", 10);
        r.tag("gpu", "0")
            .field("util", FieldValue::F64(1.0))
            .field("temp", FieldValue::I64(50));
        r.finish(1).unwrap();
        let mut r = b.row("gpu", 10);
        r.tag("gpu", "0").field("util", FieldValue::F64(2.0));
        r.finish(2).unwrap();
        let mut r = b.row("gpu", 10);
        r.tag("gpu", "1").field("name", FieldValue::Str("a100"));
        r.finish(3).unwrap();
        let (c, def) = chunk_of(&s, b);
        assert_eq!(c.rows(), 2);
        assert_eq!(c.series_count(), 2);
        assert_eq!(c.kinds().len(), 4);
        let out = pretty_format_batches(&[c.to_record_batch(&def)])
            .unwrap()
            .to_string();
        let expected = "\
+-----+------+------+------+-------------------------------+
| gpu | util | temp | name | time                          |
+-----+------+------+------+-------------------------------+
| 0   | 2.0  | 50   |      | 1970-01-01T00:00:00.000000010 |
| 1   |      |      | a100 | 1970-01-01T00:00:00.000000010 |
+-----+------+------+------+-------------------------------+";
        assert_eq!(out, expected);
    }

    proptest::proptest! {
        /// Rows written in any order, with missing tags, missing fields and overwrites,
        /// come out of `to_sorted_record_batch` exactly as sorting the unsorted copy does.
        #[test]
        fn sorted_straight_from_the_columns_equals_sorting_a_copy(
            rows in proptest::collection::vec(
                (0u8..4, proptest::option::of(0u8..3), 0i64..20, proptest::option::of(-5i64..5),
                 proptest::option::of(proptest::bool::ANY), proptest::option::of("[ab]{0,2}")),
                1..120,
            ),
        ) {
            let s = Schemas::default();
            let mut b = WriteBatch::default();
            for (gpu, host, t, int, flag, text) in &rows {
                let mut r = b.row("gpu", *t);
                r.tag("gpu", &format!("g{gpu}"));
                if let Some(h) = host {
                    r.tag("host", &format!("h{h}"));
                }
                r.field("util", FieldValue::F64(*t as f64 * 0.5));
                if let Some(i) = int {
                    r.field("n", FieldValue::I64(*i));
                }
                if let Some(f) = flag {
                    r.field("ok", FieldValue::Bool(*f));
                }
                if let Some(x) = text {
                    r.field("note", FieldValue::Str(x));
                }
                r.finish(1).unwrap();
            }
            let (c, def) = chunk_of(&s, b);
            let want = crate::merge::sort(&def, &c.to_record_batch(&def)).unwrap();
            proptest::prop_assert_eq!(c.to_sorted_record_batch(&def), want);
        }
    }

    #[test]
    fn sorted_append_only_rows_keep_arrival_order_among_equal_keys() {
        let s = Schemas::new(vec!["gpu".into()]);
        let mut b = WriteBatch::default();
        for (gpu, xid) in [("b", 1), ("a", 2), ("b", 3), ("a", 4)] {
            let mut r = b.row("gpu", 5);
            r.tag("gpu", gpu).field("xid", FieldValue::I64(xid));
            r.finish(1).unwrap();
        }
        let (c, def) = chunk_of(&s, b);
        let sorted = c.to_sorted_record_batch(&def);
        let out = pretty_format_batches(&[sorted]).unwrap().to_string();
        let xids: Vec<&str> = out
            .lines()
            .skip(3)
            .filter_map(|l| l.split('|').nth(2))
            .map(str::trim)
            .collect();
        assert_eq!(xids, ["2", "4", "1", "3"]);
    }

    #[test]
    fn append_only_keeps_every_row() {
        let s = Schemas::new(vec!["gpu".into()]);
        let mut b = WriteBatch::default();
        for _ in 0..3 {
            let mut r = b.row("gpu", 5);
            r.tag("gpu", "0").field("xid", FieldValue::I64(79));
            r.finish(1).unwrap();
        }
        let (c, _) = chunk_of(&s, b);
        assert_eq!(c.rows(), 3);
        assert_eq!(c.time_range(), (5, 5));
    }
}
