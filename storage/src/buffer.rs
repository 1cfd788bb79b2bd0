//! The write buffer: validated rows in Arrow-ready columns, per table and time partition.
//!
//! The buffer is queryable as soon as a write is applied. A persist *freezes* the whole
//! buffer (the WAL rotates at the same instant), writes each frozen chunk to Parquet and then
//! drops it; new writes meanwhile land in a fresh buffer.

pub mod chunk;
pub mod column;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub use chunk::Chunk;

use crate::schema::ValidatedBatch;

/// The start of the partition holding `time`.
pub fn partition_of(time: i64, partition_ns: i64) -> i64 {
    time.div_euclid(partition_ns).saturating_mul(partition_ns)
}

/// Mutable buffered rows.
#[derive(Debug)]
pub struct Buffer {
    partition_ns: i64,
    tables: HashMap<String, BTreeMap<i64, Chunk>>,
    bytes: usize,
    rows: usize,
    key_buf: String,
    /// Per table, the most rows one of its chunks held when the buffer was last frozen: a new
    /// chunk makes room for that many at once (bounded by [`ROWS_HINT_MAX`]).
    rows_hint: HashMap<String, usize>,
}

/// The most rows a new chunk makes room for before its first write.
const ROWS_HINT_MAX: usize = 1 << 22;

/// A buffer taken out of service for persisting; immutable and shared with queries.
#[derive(Debug, Default)]
pub struct Frozen {
    pub tables: HashMap<String, Vec<(i64, Arc<Chunk>)>>,
    pub bytes: usize,
}

impl Buffer {
    pub fn new(partition_ns: i64) -> Self {
        Self {
            partition_ns,
            tables: HashMap::new(),
            bytes: 0,
            rows: 0,
            key_buf: String::new(),
            rows_hint: HashMap::new(),
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// Applies every row of a validated batch.
    pub fn apply(&mut self, v: &ValidatedBatch) {
        let (mut t, mut f) = (0usize, 0usize);
        for (i, row) in v.batch.rows().enumerate() {
            let (nt, nf) = (row.tag_count(), row.field_count());
            let def = &v.defs[i];
            let partitions = match self.tables.get_mut(row.table()) {
                Some(p) => p,
                None => self.tables.entry(row.table().to_string()).or_default(),
            };
            let chunk = partitions
                .entry(partition_of(row.time(), self.partition_ns))
                .or_insert_with(|| {
                    let hint = self.rows_hint.get(row.table()).copied().unwrap_or(0);
                    Chunk::with_rows_hint(def.append_only, hint)
                });
            let before = chunk.rows();
            self.bytes += chunk.apply(
                def,
                &row,
                &v.tag_cols[t..t + nt],
                &v.field_cols[f..f + nf],
                &mut self.key_buf,
            );
            self.rows += chunk.rows() - before;
            t += nt;
            f += nf;
        }
    }

    /// Takes every chunk out, leaving the buffer empty.
    pub fn freeze(&mut self) -> Frozen {
        for (table, parts) in &self.tables {
            let most = parts.values().map(Chunk::rows).max().unwrap_or(0);
            match self.rows_hint.get_mut(table) {
                Some(hint) => *hint = most.min(ROWS_HINT_MAX),
                None => {
                    self.rows_hint
                        .insert(table.clone(), most.min(ROWS_HINT_MAX));
                }
            }
        }
        let tables = std::mem::take(&mut self.tables)
            .into_iter()
            .map(|(t, parts)| {
                let chunks = parts.into_iter().map(|(p, c)| (p, Arc::new(c))).collect();
                (t, chunks)
            })
            .collect();
        let bytes = std::mem::take(&mut self.bytes);
        self.rows = 0;
        Frozen { tables, bytes }
    }

    /// Chunks of `table` whose partition may hold times in `[min, max]`.
    pub fn chunks<'a>(
        &'a self,
        table: &str,
        min: i64,
        max: i64,
    ) -> impl Iterator<Item = (i64, &'a Chunk)> + 'a {
        let lo = partition_of(min, self.partition_ns);
        self.tables
            .get(table)
            .filter(|_| lo <= max)
            .into_iter()
            .flat_map(move |parts| parts.range(lo..=max).map(|(p, c)| (*p, c)))
    }
}
