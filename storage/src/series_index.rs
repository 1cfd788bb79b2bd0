//! A series index in each data file's footer: which rows hold which series.
//!
//! Files are sorted by series (tags, then time), so a series occupies one run of rows per row
//! group. The writer records every run's length and its series' tag values under the footer
//! key [`KEY`] (JSON, zstd-compressed, base64: about 15 KB for an hourly file of 1,000 GPUs). A scan whose filter names tags (one GPU, one worker, a supplier's
//! tenancy scope) evaluates those terms once per series instead of once per row, and reads
//! only the matching runs: a row selection the Parquet reader turns into reads of just the
//! pages that hold them. Page statistics alone cannot do this when a tag is not the first sort
//! key: `gpu_uuid = X` matched one page in every `gpu_index` group, 15 of 88 pages per hourly
//! file, 170 times the rows wanted.
//!
//! Files without the key (written before it existed, or whose index would not pay: runs
//! averaging under [`MIN_RUN_ROWS`] rows, or more than [`MAX_RUNS`]) are read as before. An
//! index that fails its checks is ignored the same way, so the index can only ever narrow a
//! read to rows that could match, never lose one.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, DictionaryArray, RecordBatch};
use arrow::buffer::BooleanBuffer;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int32Type, Schema, SchemaRef};
use base64::Engine as _;
use parking_lot::Mutex;
use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use serde::{Deserialize, Serialize};

/// The footer key under which a data file keeps its series index.
pub const KEY: &str = "rigwatch.series.v1";

/// Most runs an index records.
const MAX_RUNS: usize = 1 << 18;
/// Fewest rows a run must hold on average for a file to carry an index.
const MIN_RUN_ROWS: u64 = 4;
/// Largest index (as JSON) a reader unpacks.
const MAX_INDEX_BYTES: usize = 256 << 20;

/// The index as stored.
#[derive(Debug, Serialize, Deserialize)]
struct Encoded {
    rows: u64,
    /// Tag columns, by name.
    columns: Vec<String>,
    /// Per column, its distinct values.
    values: Vec<Vec<String>>,
    /// Per series, per column (series-major): 0 for an absent tag, else `i + 1` for
    /// `values[column][i]`.
    keys: Vec<u32>,
    /// Every run's rows, in file order, and its series.
    lengths: Vec<u64>,
    series: Vec<u32>,
}

fn is_tag(t: &DataType) -> bool {
    *t == crate::schema::tag_type()
}

/// Records the runs of the rows a file is written from, in the order they are written.
#[derive(Debug)]
pub struct Builder {
    /// Tag columns' positions in the written schema.
    tags: Vec<usize>,
    names: Vec<String>,
    interned: Vec<HashMap<String, u32>>,
    values: Vec<Vec<String>>,
    index: HashMap<Box<[u32]>, u32>,
    keys: Vec<u32>,
    starts: Vec<u64>,
    series: Vec<u32>,
    rows: u64,
    /// The last row's tag ids; `None` before the first row and after a row group ends.
    last: Option<Vec<u32>>,
    overflow: bool,
}

impl Builder {
    /// A builder for rows in `schema`, whose tags are its dictionary-of-string columns.
    pub fn new(schema: &Schema) -> Self {
        let tags: Vec<usize> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| is_tag(f.data_type()))
            .map(|(i, _)| i)
            .collect();
        let n = tags.len();
        Self {
            names: tags
                .iter()
                .map(|&i| schema.field(i).name().clone())
                .collect(),
            tags,
            interned: vec![HashMap::new(); n],
            values: vec![Vec::new(); n],
            index: HashMap::new(),
            keys: Vec::new(),
            starts: Vec::new(),
            series: Vec::new(),
            rows: 0,
            last: None,
            overflow: n == 0,
        }
    }

    /// Adds the next rows written.
    pub fn push(&mut self, batch: &RecordBatch) {
        let n = batch.num_rows();
        if n == 0 || self.overflow {
            self.rows += n as u64;
            return;
        }
        let mut cols: Vec<DictionaryArray<Int32Type>> = Vec::with_capacity(self.tags.len());
        for &i in &self.tags {
            let c = batch.column(i);
            let c = if is_tag(c.data_type()) {
                c.clone()
            } else {
                match cast(c, &crate::schema::tag_type()) {
                    Ok(c) => c,
                    Err(_) => {
                        self.overflow = true;
                        return;
                    }
                }
            };
            cols.push(c.as_dictionary::<Int32Type>().clone());
        }
        // Rows where some tag's key (or its nullness) changes start a run within the batch.
        let mut starts = vec![false; n];
        starts[0] = true;
        for col in &cols {
            let keys = col.keys();
            let k = keys.values();
            match keys.nulls() {
                None => (1..n).for_each(|i| starts[i] |= k[i] != k[i - 1]),
                Some(nulls) => (1..n).for_each(|i| {
                    let (a, b) = (nulls.is_valid(i - 1), nulls.is_valid(i));
                    starts[i] |= a != b || (b && k[i] != k[i - 1]);
                }),
            }
        }
        let mut caches: Vec<Vec<u32>> = cols
            .iter()
            .map(|c| vec![u32::MAX; c.values().len()])
            .collect();
        let mut cur = vec![0u32; cols.len()];
        for row in (0..n).filter(|&r| starts[r]) {
            for (t, col) in cols.iter().enumerate() {
                cur[t] = self.intern(t, col, row, &mut caches[t]);
            }
            if self.last.as_deref() == Some(&cur[..]) {
                continue;
            }
            let id = match self.index.get(&cur[..]) {
                Some(&id) => id,
                None => {
                    let id = self.index.len() as u32;
                    self.index.insert(cur.clone().into_boxed_slice(), id);
                    self.keys.extend_from_slice(&cur);
                    id
                }
            };
            self.starts.push(self.rows + row as u64);
            self.series.push(id);
            self.last = Some(cur.clone());
        }
        self.rows += n as u64;
        if self.starts.len() > MAX_RUNS {
            self.overflow = true;
            self.starts = Vec::new();
            self.series = Vec::new();
            self.index = HashMap::new();
        }
    }

    /// The id (0 = absent) of tag `t`'s value at `row` of `col`; an empty value is a value,
    /// as SQL sees it.
    fn intern(
        &mut self,
        t: usize,
        col: &DictionaryArray<Int32Type>,
        row: usize,
        cache: &mut [u32],
    ) -> u32 {
        if col.is_null(row) {
            return 0;
        }
        let k = col.keys().value(row) as usize;
        if let Some(&id) = cache.get(k)
            && id != u32::MAX
        {
            return id;
        }
        let values = col.values().as_string::<i32>();
        let id = if k >= values.len() || values.is_null(k) {
            0
        } else {
            let v = values.value(k);
            match self.interned[t].get(v) {
                Some(&id) => id,
                None => {
                    self.values[t].push(v.to_string());
                    let id = self.values[t].len() as u32;
                    self.interned[t].insert(v.to_string(), id);
                    id
                }
            }
        };
        if let Some(slot) = cache.get_mut(k) {
            *slot = id;
        }
        id
    }

    /// Ends a row group: the next row starts a run even if its series continues.
    pub fn end_group(&mut self) {
        self.last = None;
    }

    /// The footer entry to store, if the file should carry an index.
    pub fn finish(self) -> Option<parquet::file::metadata::KeyValue> {
        self.entry(MIN_RUN_ROWS)
    }

    /// The footer entry however short the runs (one row per series in a rollup file), unless
    /// there are none or too many.
    pub fn finish_always(self) -> Option<parquet::file::metadata::KeyValue> {
        self.entry(1)
    }

    fn entry(self, min_run_rows: u64) -> Option<parquet::file::metadata::KeyValue> {
        let text = self.encode(min_run_rows)?;
        Some(parquet::file::metadata::KeyValue::new(
            KEY.to_string(),
            text,
        ))
    }

    fn encode(self, min_run_rows: u64) -> Option<String> {
        let runs = self.starts.len() as u64;
        if self.overflow || runs == 0 || self.rows < runs * min_run_rows {
            return None;
        }
        let mut lengths: Vec<u64> = self.starts.windows(2).map(|w| w[1] - w[0]).collect();
        lengths.extend(self.starts.last().map(|&s| self.rows - s));
        let json = serde_json::to_vec(&Encoded {
            rows: self.rows,
            columns: self.names,
            values: self.values,
            keys: self.keys,
            lengths,
            series: self.series,
        })
        .ok()?;
        // Footer values are text: zstd (run lengths repeat, keys climb slowly), then base64.
        let packed = zstd::bulk::compress(&json, 3).ok()?;
        Some(base64::engine::general_purpose::STANDARD_NO_PAD.encode(packed))
    }
}

/// A file's series index, parsed and checked.
#[derive(Debug)]
pub struct SeriesIndex {
    rows: u64,
    /// Per tag column: its value in each series.
    columns: Vec<(String, ArrayRef)>,
    /// Per tag column, the same values as plain strings (the dictionary values of the tag
    /// columns a scan rebuilds: `table/series_scan.rs`).
    plain: Vec<ArrayRef>,
    series: usize,
    starts: Vec<u64>,
    ids: Vec<u32>,
    /// The runs of each series, in file order: series `s`'s are
    /// `series_runs[run_offsets[s]..run_offsets[s + 1]]` (indexes into `starts`), so that a
    /// query for a few series finds their runs without a pass over every run of the file.
    run_offsets: Vec<u32>,
    series_runs: Vec<u32>,
}

/// Which rows of a file a scan reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    All,
    None,
    Rows(RowSelection),
}

impl SeriesIndex {
    /// Parses a stored index; `None` if it is malformed or inconsistent with `rows`.
    pub fn parse(text: &str, rows: u64) -> Option<Self> {
        let packed = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(text)
            .ok()?;
        // The stored JSON is bounded by its runs; a corrupt size claim is refused here.
        let json = zstd::bulk::decompress(&packed, MAX_INDEX_BYTES).ok()?;
        let e: Encoded = serde_json::from_slice(&json).ok()?;
        let ncols = e.columns.len();
        if e.rows != rows
            || e.values.len() != ncols
            || ncols == 0
            || !e.keys.len().is_multiple_of(ncols)
            || e.lengths.len() != e.series.len()
            || e.lengths.contains(&0)
            || e.lengths.iter().try_fold(0u64, |a, &l| a.checked_add(l)) != Some(rows)
        {
            return None;
        }
        let starts: Vec<u64> = e
            .lengths
            .iter()
            .scan(0u64, |at, &l| {
                let start = *at;
                *at += l;
                Some(start)
            })
            .collect();
        let series = e.keys.len() / ncols;
        if e.series.iter().any(|&s| s as usize >= series) {
            return None;
        }
        let mut columns = Vec::with_capacity(ncols);
        for (c, (name, values)) in e.columns.into_iter().zip(e.values).enumerate() {
            let keys: Vec<Option<i32>> = (0..series)
                .map(|s| match e.keys[s * ncols + c] {
                    0 => Ok(None),
                    k if (k as usize) <= values.len() => Ok(Some(k as i32 - 1)),
                    _ => Err(()),
                })
                .collect::<Result<_, _>>()
                .ok()?;
            let dict = DictionaryArray::<Int32Type>::try_new(
                keys.into_iter().collect(),
                Arc::new(arrow::array::StringArray::from(values)),
            )
            .ok()?;
            columns.push((name, Arc::new(dict) as ArrayRef));
        }
        let plain = columns
            .iter()
            .map(|(_, a)| cast(a, &DataType::Utf8).ok())
            .collect::<Option<Vec<_>>>()?;
        let mut run_offsets = vec![0u32; series + 1];
        for &s in &e.series {
            run_offsets[s as usize + 1] += 1;
        }
        for s in 0..series {
            run_offsets[s + 1] += run_offsets[s];
        }
        let mut series_runs = vec![0u32; e.series.len()];
        let mut next = run_offsets.clone();
        for (run, &s) in e.series.iter().enumerate() {
            series_runs[next[s as usize] as usize] = run as u32;
            next[s as usize] += 1;
        }
        Some(Self {
            rows,
            columns,
            plain,
            series,
            starts,
            ids: e.series,
            run_offsets,
            series_runs,
        })
    }

    /// The rows of the file.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The series of the file (the rows of [`Self::series_batch`]).
    pub fn series(&self) -> usize {
        self.series
    }

    /// The first row of every run, in file order.
    pub fn run_starts(&self) -> &[u64] {
        &self.starts
    }

    /// The series of every run (an index into [`Self::series_batch`]'s rows).
    pub fn run_series(&self) -> &[u32] {
        &self.ids
    }

    /// Tag column `name`'s value in each series, as plain strings (null where a series
    /// lacks it); `None` when the file has no such tag.
    pub fn tag_values(&self, name: &str) -> Option<&ArrayRef> {
        let i = self.columns.iter().position(|(n, _)| n == name)?;
        self.plain.get(i)
    }

    /// Roughly how much memory the index holds.
    pub fn bytes(&self) -> usize {
        self.columns
            .iter()
            .map(|(n, a)| n.len() + a.get_array_memory_size())
            .sum::<usize>()
            + self
                .plain
                .iter()
                .map(|a| a.get_array_memory_size())
                .sum::<usize>()
            + self.starts.len() * 16
            + self.run_offsets.len() * 4
    }

    /// One row per series with the columns of `tags` (the table's tag columns; a tag this
    /// file lacks is null), for evaluating terms over tags once per series.
    pub fn series_batch(&self, tags: &SchemaRef) -> Result<RecordBatch, arrow::error::ArrowError> {
        let columns = tags
            .fields()
            .iter()
            .map(|f| match self.columns.iter().find(|(n, _)| n == f.name()) {
                Some((_, a)) if a.data_type() == f.data_type() => Ok(a.clone()),
                Some((_, a)) => cast(a, f.data_type()),
                None => Ok(arrow::array::new_null_array(f.data_type(), self.series)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        RecordBatch::try_new_with_options(
            tags.clone(),
            columns,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(self.series)),
        )
    }

    /// The rows of the series `keep` holds for (one entry per series of
    /// [`Self::series_batch`]; null keeps nothing).
    pub fn selection(&self, keep: &BooleanArray) -> Selection {
        let kept = match keep.nulls() {
            Some(valid) => keep.values() & valid.inner(),
            None => keep.values().clone(),
        };
        if keep.len() != self.series {
            // Not one verdict per series (a bug): read everything, the filter above decides.
            debug_assert!(false, "{} verdicts for {} series", keep.len(), self.series);
            return Selection::All;
        }
        let n = kept.count_set_bits();
        if n == 0 {
            Selection::None
        } else if n == self.series {
            Selection::All
        } else if n * SPARSE_SERIES < self.series {
            self.selection_of_few(&kept)
        } else {
            self.selection_of_many(&kept)
        }
    }

    /// [`Self::selection`] in one pass over every run.
    fn selection_of_many(&self, kept: &BooleanBuffer) -> Selection {
        let mut selectors: Vec<RowSelector> = Vec::new();
        for (i, (&start, &id)) in self.starts.iter().zip(&self.ids).enumerate() {
            let end = self.starts.get(i + 1).copied().unwrap_or(self.rows);
            let len = (end - start) as usize;
            let k = kept.value(id as usize);
            match selectors.last_mut() {
                Some(last) if last.skip != k => last.row_count += len,
                _ => selectors.push(if k {
                    RowSelector::select(len)
                } else {
                    RowSelector::skip(len)
                }),
            }
        }
        Selection::Rows(RowSelection::from(selectors))
    }

    /// [`Self::selection`] from the kept series' own runs: for a few series of many (one GPU
    /// of a fleet's day), a small fraction of the runs.
    fn selection_of_few(&self, kept: &BooleanBuffer) -> Selection {
        let mut runs: Vec<u32> = kept
            .set_indices()
            .flat_map(|s| {
                let (from, to) = (self.run_offsets[s], self.run_offsets[s + 1]);
                self.series_runs[from as usize..to as usize].iter().copied()
            })
            .collect();
        runs.sort_unstable();
        let mut selectors: Vec<RowSelector> = Vec::with_capacity(runs.len() * 2 + 1);
        let mut at = 0u64;
        for run in runs {
            let start = self.starts[run as usize];
            let end = self
                .starts
                .get(run as usize + 1)
                .copied()
                .unwrap_or(self.rows);
            if start > at {
                selectors.push(RowSelector::skip((start - at) as usize));
            }
            match selectors.last_mut() {
                Some(last) if !last.skip => last.row_count += (end - start) as usize,
                _ => selectors.push(RowSelector::select((end - start) as usize)),
            }
            at = end;
        }
        if at < self.rows {
            selectors.push(RowSelector::skip((self.rows - at) as usize));
        }
        Selection::Rows(RowSelection::from(selectors))
    }
}

/// A selection keeping fewer than one series in this many reads the kept series' runs
/// only ([`SeriesIndex::selection`]).
const SPARSE_SERIES: usize = 8;

/// Parsed indexes by file path, bounded in bytes. Files are immutable and never reuse a path,
/// so an entry never goes stale; a file without an index is remembered as `None`.
/// Indexes by path (`None`: the file has none), and the bytes they hold.
type Entries = (HashMap<String, Option<Arc<SeriesIndex>>>, usize);

#[derive(Debug)]
pub struct IndexCache {
    limit: usize,
    inner: Mutex<Entries>,
}

impl IndexCache {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            inner: Mutex::new((HashMap::new(), 0)),
        }
    }

    pub fn get(&self, path: &str) -> Option<Option<Arc<SeriesIndex>>> {
        self.inner.lock().0.get(path).cloned()
    }

    pub fn insert(&self, path: &str, index: Option<Arc<SeriesIndex>>) {
        let size = index.as_ref().map_or(0, |i| i.bytes()) + path.len() + 64;
        if size > self.limit / 4 {
            return;
        }
        let mut g = self.inner.lock();
        let (map, bytes) = &mut *g;
        // Over budget: forget about half, whichever entries come first.
        if *bytes + size > self.limit {
            let mut freed = 0;
            let victims: Vec<String> = map
                .iter()
                .take_while(|(p, i)| {
                    let ok = freed < self.limit / 2;
                    freed += i.as_ref().map_or(0, |i| i.bytes()) + p.len() + 64;
                    ok
                })
                .map(|(p, _)| p.clone())
                .collect();
            for p in victims {
                if let Some(i) = map.remove(&p) {
                    *bytes -= i.as_ref().map_or(0, |i| i.bytes()) + p.len() + 64;
                }
            }
        }
        if let Some(old) = map.insert(path.to_string(), index) {
            *bytes -= old.as_ref().map_or(0, |i| i.bytes()) + path.len() + 64;
        }
        *bytes += size;
    }
}

#[cfg(test)]
mod tests;
