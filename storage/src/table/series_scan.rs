//! [`SeriesScanExec`]: scans of indexed files that take their tag columns from the series
//! index instead of decoding them.
//!
//! A file with a series index says which series every row belongs to (runs of rows, one
//! series each) and each series' tag values. A scan that projects tags (every PromQL
//! selection does: a series is its labels) reads only the other columns from Parquet and
//! rebuilds the tag columns from the runs: every tag column of a batch shares one key buffer,
//! the series of each row, keying a dictionary of that tag's value in each series. Decoding
//! the tag columns and materialising their keys was about a quarter of a fleet-wide range
//! query; for a one-GPU query it was six of eight column chunks in every row group read.
//!
//! The scan reads exactly the rows it plans: the series the query's tag filter keeps (the
//! same selection the Parquet scan uses), in the row groups and pages whose `time` statistics
//! overlap the query's range. It knows every row it will receive, so it can label each.
//! Filters are not evaluated here: the table's filters are inexact, and the plan above applies
//! them.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, DictionaryArray, Int32Array, RecordBatch, RecordBatchOptions, UInt32Array,
    new_null_array,
};
use arrow::buffer::{BooleanBuffer, NullBuffer, ScalarBuffer};
use arrow::compute::{cast, take};
use arrow::datatypes::{DataType, Int32Type, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::{StreamExt, TryStreamExt};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, RowSelection, RowSelector};
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::statistics::Statistics;

use super::reader::IndexedReaderFactory;
use crate::batch::TIME_COLUMN;
use crate::catalog::FileMeta;
use crate::db::Db;
use crate::series_index::SeriesIndex;

/// Planned rows up to which a scan runs as one partition (a handful in unit tests, so that
/// they read small files through several partitions too).
const SMALL_SCAN_ROWS: u64 = if cfg!(test) { 16 } else { 1 << 16 };

/// One indexed file a scan reads, and which of its rows (`None`: every row) its tag filter
/// keeps.
pub(super) struct IndexedFile {
    pub file: FileMeta,
    pub index: Arc<SeriesIndex>,
    pub footer: Arc<ParquetMetaData>,
    pub rows: Option<RowSelection>,
}

/// Consecutive row groups of one file read by one stream.
#[derive(Debug)]
struct Unit {
    path: String,
    size: u64,
    row_groups: Vec<usize>,
    /// Rows to read, relative to `row_groups`' rows in order.
    selection: RowSelection,
    /// The series of the rows read, in order: (series, rows).
    labels: Vec<(u32, u64)>,
    /// Per projected tag column, its value in each series of the file.
    tags: Arc<[SeriesValues]>,
}

/// One tag column's value in each series of a file: the dictionary values of the rebuilt
/// column, whose keys are series ids.
#[derive(Debug)]
struct SeriesValues {
    /// One string per series (null where the series lacks the tag).
    values: ArrayRef,
    /// Per series, whether it has the tag; `None` when every series has it.
    present: Option<Vec<bool>>,
}

/// Reads indexed files' projected columns, with tag columns rebuilt from the series index.
pub(super) struct SeriesScanExec {
    /// Per output partition, the units it reads in turn.
    partitions: Vec<Vec<Arc<Unit>>>,
    reading: Arc<Reading>,
    rows: u64,
    metrics: ExecutionPlanMetricsSet,
    properties: Arc<PlanProperties>,
}

impl fmt::Debug for SeriesScanExec {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("SeriesScanExec")
            .field("partitions", &self.partitions.len())
            .field("rows", &self.rows)
            .finish()
    }
}

impl SeriesScanExec {
    /// Plans the scan of `files` for `projection` (of `table_schema`, whose tag columns are
    /// `is_tag`) over `[min, max]` ns, in at most `target` partitions; `None` when nothing
    /// is left to read.
    pub fn try_new(
        db: &Db,
        files: Vec<IndexedFile>,
        table_schema: &SchemaRef,
        projection: &[usize],
        is_tag: impl Fn(usize) -> bool,
        (min, max): (i64, i64),
        target: usize,
    ) -> DFResult<Option<Self>> {
        let schema = Arc::new(table_schema.project(projection)?);
        let mut tag_fields = Vec::new();
        let mut read = Vec::new();
        let sources: Arc<[Option<usize>]> = projection
            .iter()
            .map(|&i| {
                if is_tag(i) {
                    tag_fields.push(table_schema.field(i).clone());
                    Some(tag_fields.len() - 1)
                } else {
                    read.push(table_schema.field(i).name().clone());
                    None
                }
            })
            .collect();
        if read.is_empty() {
            read.push(TIME_COLUMN.to_string());
        }
        let tag_schema = Arc::new(Schema::new(tag_fields));
        let mut units = Vec::new();
        let mut rows = 0u64;
        for f in files {
            let tags: Arc<[SeriesValues]> = tag_schema
                .fields()
                .iter()
                .map(|field| {
                    let values = f
                        .index
                        .tag_values(field.name())
                        .cloned()
                        .unwrap_or_else(|| new_null_array(&DataType::Utf8, f.index.series()));
                    let present = (values.null_count() > 0)
                        .then(|| (0..values.len()).map(|i| values.is_valid(i)).collect());
                    SeriesValues { values, present }
                })
                .collect();
            let groups = row_groups(&f.footer, min, max);
            let wanted = intersect(
                &selected_ranges(f.rows.as_ref(), f.file.rows),
                &pages_in_time(&f.footer, &groups, min, max),
            );
            let runs = Runs {
                starts: f.index.run_starts(),
                series: f.index.run_series(),
                rows: f.index.rows(),
            };
            // A tier file's row groups are shared among the partitions, as its byte ranges
            // were among the Parquet scan's threads.
            let per_unit = groups.len().div_ceil(target.max(1)).max(1);
            for chunk in groups.chunks(per_unit) {
                if let Some((selection, labels)) = plan_rows(runs, chunk, &wanted) {
                    rows += labels.iter().map(|(_, n)| n).sum::<u64>();
                    let (labels, tags) = local_series(labels, &tags, f.index.series())?;
                    units.push(Arc::new(Unit {
                        path: f.file.path.clone(),
                        size: f.file.size,
                        row_groups: chunk.iter().map(|(i, _)| *i).collect(),
                        selection,
                        labels,
                        tags,
                    }));
                }
            }
        }
        if units.is_empty() {
            return Ok(None);
        }
        // A small read (one GPU's day is 8,640 rows) is one stream: sharing it out costs
        // more in thread hand-offs than the decoding it spreads.
        let n = if rows <= SMALL_SCAN_ROWS {
            1
        } else {
            target.clamp(1, units.len())
        };
        let mut partitions = vec![Vec::new(); n];
        for (i, u) in units.into_iter().enumerate() {
            partitions[i % n].push(u);
        }
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(n),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Some(Self {
            partitions,
            reading: Arc::new(Reading {
                schema,
                sources,
                read: read.into(),
                reader: IndexedReaderFactory(CachedParquetFileReaderFactory::new(
                    db.store().clone(),
                    db.parquet_metadata(),
                )),
            }),
            rows,
            metrics: ExecutionPlanMetricsSet::new(),
            properties: Arc::new(properties),
        }))
    }
}

/// The position of the `time` column among a file's Parquet columns.
fn time_column(footer: &ParquetMetaData) -> Option<usize> {
    footer
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.name() == TIME_COLUMN)
}

/// The row groups of a file (index, and first row and rows) whose `time` statistics may
/// overlap `[min, max]`.
fn row_groups(footer: &ParquetMetaData, min: i64, max: i64) -> Vec<(usize, Range<u64>)> {
    let time = time_column(footer);
    let mut at = 0u64;
    let mut out = Vec::new();
    for (i, rg) in footer.row_groups().iter().enumerate() {
        let n = rg.num_rows().max(0) as u64;
        let range = at..at + n;
        at += n;
        let stats = time.and_then(|t| match rg.column(t).statistics() {
            Some(Statistics::Int64(s)) => Some((s.min_opt().copied(), s.max_opt().copied())),
            _ => None,
        });
        let outside = matches!(stats, Some((Some(lo), Some(hi))) if hi < min || lo > max);
        if n > 0 && !outside {
            out.push((i, range));
        }
    }
    out
}

/// The rows of `groups` (file rows) in pages whose `time` statistics in the page index may
/// overlap `[min, max]`. A tier file's row group holds several partitions one after another,
/// so its pages narrow a short range to the partition holding it; in an ordinary file (one
/// partition, sorted by series) every page spans about the whole partition and all are kept.
/// A row group without a page index for `time` is kept whole.
fn pages_in_time(
    footer: &ParquetMetaData,
    groups: &[(usize, Range<u64>)],
    min: i64,
    max: i64,
) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::with_capacity(groups.len());
    let mut keep = |r: Range<u64>| match out.last_mut() {
        Some(last) if last.end == r.start => last.end = r.end,
        _ => out.push(r),
    };
    let time = time_column(footer);
    for (g, rows) in groups {
        let pages = time.and_then(|t| {
            let index = footer.column_index()?.get(*g)?.get(t)?;
            let offsets = footer.offset_index()?.get(*g)?.get(t)?;
            match index {
                ColumnIndexMetaData::INT64(index) => Some((index, offsets.page_locations())),
                _ => None,
            }
        });
        let Some((index, locations)) = pages.filter(|_| min > i64::MIN || max < i64::MAX) else {
            keep(rows.clone());
            continue;
        };
        for (p, page) in locations.iter().enumerate() {
            let start = rows.start + page.first_row_index.max(0) as u64;
            let end = locations
                .get(p + 1)
                .map_or(rows.end, |next| {
                    rows.start + next.first_row_index.max(0) as u64
                })
                .min(rows.end);
            let overlaps = match (index.min_value(p), index.max_value(p)) {
                (Some(lo), Some(hi)) => *hi >= min && *lo <= max,
                // No statistics: it may hold anything.
                _ => true,
            };
            if overlaps && start < end {
                keep(start..end);
            }
        }
    }
    out
}

/// The rows in both `a` and `b` (sorted, disjoint ranges each).
fn intersect(a: &[Range<u64>], b: &[Range<u64>]) -> Vec<Range<u64>> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        let (lo, hi) = (a[i].start.max(b[j].start), a[i].end.min(b[j].end));
        if lo < hi {
            out.push(lo..hi);
        }
        if a[i].end < b[j].end {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// The row ranges a selection keeps (all `rows` when there is none).
fn selected_ranges(selection: Option<&RowSelection>, rows: u64) -> Vec<Range<u64>> {
    let Some(selection) = selection else {
        return std::iter::once(0..rows).collect();
    };
    let mut at = 0u64;
    let mut out = Vec::new();
    for s in selection.iter() {
        let n = s.row_count as u64;
        if !s.skip && n > 0 {
            match out.last_mut() {
                Some(Range { end, .. }) if *end == at => *end += n,
                _ => out.push(at..at + n),
            }
        }
        at += n;
    }
    out
}

/// A file's runs of one series each, in file order, covering the file.
#[derive(Debug, Clone, Copy)]
struct Runs<'a> {
    /// Each run's first row.
    starts: &'a [u64],
    /// Each run's series.
    series: &'a [u32],
    rows: u64,
}

impl Runs<'_> {
    /// Run `r`'s first row, end and series.
    fn get(&self, r: usize) -> Option<(u64, u64, u32)> {
        let start = *self.starts.get(r)?;
        let end = self.starts.get(r + 1).copied().unwrap_or(self.rows);
        Some((start, end, *self.series.get(r)?))
    }

    /// The run holding `row`.
    fn find(&self, row: u64) -> Option<usize> {
        self.starts.partition_point(|&s| s <= row).checked_sub(1)
    }
}

/// `labels` (series of a file with `series` series, and rows) renumbered to the series
/// they hold, in order of first appearance, with each tag column's values for those series
/// only. A unit reading one GPU of a fleet's file then labels its rows from one value per
/// tag, not one per series of the file: a tag filter above the scan compares every value of
/// a batch's dictionary.
fn local_series(
    labels: Vec<(u32, u64)>,
    tags: &Arc<[SeriesValues]>,
    series: usize,
) -> DFResult<(Vec<(u32, u64)>, Arc<[SeriesValues]>)> {
    const NONE: u32 = u32::MAX;
    let mut local = vec![NONE; series];
    let mut order: Vec<u32> = Vec::new();
    for &(id, _) in &labels {
        let slot = local.get_mut(id as usize).ok_or_else(|| {
            DataFusionError::Internal(format!("series {id} of a file with {series}"))
        })?;
        if *slot == NONE {
            *slot = order.len() as u32;
            order.push(id);
        }
    }
    if order.len() == series {
        // Every series: the file's own values serve, in the file's numbering.
        return Ok((labels, tags.clone()));
    }
    let labels = labels
        .into_iter()
        .map(|(id, n)| (local[id as usize], n))
        .collect();
    let ids = UInt32Array::from(order);
    let tags = tags
        .iter()
        .map(|t| {
            Ok(SeriesValues {
                values: take(&t.values, &ids, None)?,
                present: t
                    .present
                    .as_ref()
                    .map(|p| ids.values().iter().map(|&s| p[s as usize]).collect()),
            })
        })
        .collect::<DFResult<Vec<_>>>()?;
    Ok((labels, tags.into()))
}

/// What a unit over `groups` (row groups: index and rows) reads of the rows `wanted`: the
/// selection relative to those row groups' rows, and the series of the rows read as
/// (series, rows) by `runs`; `None` when it would read nothing.
fn plan_rows(
    runs: Runs<'_>,
    groups: &[(usize, Range<u64>)],
    wanted: &[Range<u64>],
) -> Option<(RowSelection, Vec<(u32, u64)>)> {
    let mut selectors = Vec::new();
    let mut labels: Vec<(u32, u64)> = Vec::new();
    // `at`: position in the concatenation of the row groups; `base`: where `group` starts in it.
    let (mut at, mut base) = (0u64, 0u64);
    for (_, group) in groups {
        let first = wanted.partition_point(|w| w.end <= group.start);
        for w in wanted[first..].iter().take_while(|w| w.start < group.end) {
            let (lo, hi) = (w.start.max(group.start), w.end.min(group.end));
            if lo >= hi {
                continue;
            }
            let rel = base + (lo - group.start);
            if rel > at {
                selectors.push(RowSelector::skip((rel - at) as usize));
            }
            selectors.push(RowSelector::select((hi - lo) as usize));
            at = rel + (hi - lo);
            // Label rows lo..hi by the runs they cross.
            let mut r = runs.find(lo)?;
            let mut row = lo;
            while row < hi {
                let (_, end, id) = runs.get(r)?;
                let end = end.min(hi);
                if end <= row {
                    return None;
                }
                match labels.last_mut() {
                    Some((last, n)) if *last == id => *n += end - row,
                    _ => labels.push((id, end - row)),
                }
                row = end;
                r += 1;
            }
        }
        base += group.end - group.start;
    }
    if labels.is_empty() {
        return None;
    }
    if base > at {
        selectors.push(RowSelector::skip((base - at) as usize));
    }
    Some((RowSelection::from(selectors), labels))
}

impl DisplayAs for SeriesScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "SeriesScanExec: units={}, rows={}",
            self.partitions.iter().map(Vec::len).sum::<usize>(),
            self.rows
        )
    }
}

impl ExecutionPlan for SeriesScanExec {
    fn name(&self) -> &str {
        "SeriesScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DFResult<TreeNodeRecursion>,
    ) -> DFResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return Err(DataFusionError::Internal(
                "SeriesScanExec has no children".into(),
            ));
        }
        Ok(self)
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(
                datafusion::physical_plan::execution_plan::ChildrenPropertiesMode::Recompute,
            ),
        )
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DFResult<SendableRecordBatchStream> {
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let units = self.partitions.get(partition).cloned().ok_or_else(|| {
            DataFusionError::Internal(format!("SeriesScanExec has no partition {partition}"))
        })?;
        let batch_size = context.session_config().batch_size();
        let ctx = Arc::new(ReadContext {
            reading: self.reading.clone(),
            batch_size,
            partition,
        });
        let stream = futures::stream::iter(units)
            .then(move |unit| {
                let ctx = ctx.clone();
                async move { ctx.open(unit).await }
            })
            .try_flatten()
            .inspect_ok(move |b| baseline.record_output(b.num_rows()));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.reading.schema.clone(),
            stream,
        )))
    }
}

/// How every unit is read and assembled.
struct Reading {
    /// Output schema: the table's projected columns.
    schema: SchemaRef,
    /// Per output column: `Some(i)` for the `i`th projected tag, `None` for a column read.
    sources: Arc<[Option<usize>]>,
    /// Columns read from Parquet, by name (never empty: `time` stands in for none).
    read: Arc<[String]>,
    reader: IndexedReaderFactory,
}

/// What every unit of one partition's stream shares.
struct ReadContext {
    reading: Arc<Reading>,
    batch_size: usize,
    partition: usize,
}

impl ReadContext {
    /// The stream of one unit's batches, labelled.
    async fn open(
        self: Arc<Self>,
        unit: Arc<Unit>,
    ) -> DFResult<futures::stream::BoxStream<'static, DFResult<RecordBatch>>> {
        let file = PartitionedFile::new(unit.path.clone(), unit.size);
        let reader = self.reading.reader.open(self.partition, file)?;
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let builder = ParquetRecordBatchStreamBuilder::new_with_options(reader, options).await?;
        let file_schema = builder.schema().clone();
        let roots: Vec<usize> = self
            .reading
            .read
            .iter()
            .filter_map(|name| file_schema.index_of(name).ok())
            .collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let stream = builder
            .with_projection(mask)
            .with_row_groups(unit.row_groups.clone())
            .with_row_selection(unit.selection.clone())
            .with_batch_size(self.batch_size)
            .build()?;
        let mut labels = Labels {
            runs: unit.clone(),
            run: 0,
            used: 0,
        };
        let ctx = self.clone();
        Ok(stream
            .map(move |batch| {
                let batch = batch?;
                ctx.assemble(&batch, &unit, &mut labels)
            })
            .boxed())
    }

    /// `batch` (the columns read) as the output schema's batch, tags rebuilt.
    fn assemble(
        &self,
        batch: &RecordBatch,
        unit: &Unit,
        labels: &mut Labels,
    ) -> DFResult<RecordBatch> {
        let n = batch.num_rows();
        // One key buffer for every tag column: the series of each row, keying each column's
        // per-series values.
        let ids = labels.take(n)?;
        // Keys checked against the series once; every tag column without nulls reuses them
        // (each column's values hold one entry per series).
        let mut checked: Option<DictionaryArray<Int32Type>> = None;
        let columns = self
            .reading
            .schema
            .fields()
            .iter()
            .zip(self.reading.sources.iter())
            .map(|(f, source)| match source {
                Some(t) => {
                    let tag = &unit.tags[*t];
                    let dict = match (&tag.present, &checked) {
                        (None, Some(keys)) => keys.with_values(tag.values.clone()),
                        (present, _) => {
                            let nulls = present.as_ref().map(|present| {
                                NullBuffer::from(BooleanBuffer::collect_bool(n, |i| {
                                    present[ids[i] as usize]
                                }))
                            });
                            let keys = Int32Array::new(ids.clone(), nulls);
                            let dict = DictionaryArray::try_new(keys, tag.values.clone())?;
                            if present.is_none() {
                                checked = Some(dict.clone());
                            }
                            dict
                        }
                    };
                    Ok(Arc::new(dict) as ArrayRef)
                }
                None => match batch.column_by_name(f.name()) {
                    Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
                    Some(c) => Ok(cast(c, f.data_type())?),
                    None => Ok(new_null_array(f.data_type(), n)),
                },
            })
            .collect::<DFResult<Vec<_>>>()?;
        Ok(RecordBatch::try_new_with_options(
            self.reading.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )?)
    }
}

/// Where a unit's stream is in its runs.
struct Labels {
    runs: Arc<Unit>,
    run: usize,
    /// Rows of run `run` already labelled.
    used: u64,
}

impl Labels {
    /// The series of the next `n` rows read.
    fn take(&mut self, n: usize) -> DFResult<ScalarBuffer<i32>> {
        let mut ids = Vec::with_capacity(n);
        while ids.len() < n {
            let Some(&(id, len)) = self.runs.labels.get(self.run) else {
                return Err(DataFusionError::Internal(format!(
                    "{}: the Parquet reader returned more rows than the series index selected",
                    self.runs.path
                )));
            };
            let k = ((len - self.used) as usize).min(n - ids.len());
            // Series ids index a file's series batch, whose length is an i32 key's.
            ids.extend(std::iter::repeat_n(id as i32, k));
            self.used += k as u64;
            if self.used == len {
                self.run += 1;
                self.used = 0;
            }
        }
        Ok(ScalarBuffer::from(ids))
    }
}

#[cfg(test)]
mod tests;
