//! Rollups: per-series aggregates of every sampled table over fixed buckets (`--rollups`, 1 m
//! and 1 h by default), built from persisted data and kept as ordinary tables beside it.
//!
//! Table `gpu`'s 1-minute rollup is table `gpu@1m` (names: `rigwatch_common::rollup`). A row
//! holds one raw field of one series over one bucket: tag `field` names the field, the raw
//! tags follow, and the values are count, sum, min, max, first, last (a staleness marker
//! included), the first and last sample times, and the counter increase within the bucket.
//! `time` is the bucket's end; the bucket holds samples with `end - resolution < t <= end`.
//! Rows are sorted by (field, tags, time), so one field's rows are contiguous and a query for
//! one field of one GPU reads that GPU's pages only.
//!
//! **Unit.** A rollup file answers for one partition-sized stretch `(q, q + partition]`: the
//! raw samples of partition `q` after its first instant, and the first instant of the next
//! partition. It is built once both partitions are closed (ended `persist_age` ago) and
//! nothing buffered falls in the stretch; building reads the stretch through the table's own
//! scan, so overlapping files are merged with last-write-wins exactly as a query sees them.
//!
//! **Exactness.** A rollup file stands for the raw data it was built from. A persist that adds
//! a file overlapping a stretch removes the stretch's rollups in the same catalog commit (a
//! later pass rebuilds them), and [`Db::rollup_cover`] leaves out a stretch that buffered rows
//! overlap. So where [`Db::rollup_cover`] names a stretch, its rollup is an aggregate of
//! exactly the raw rows a query would read there. Compaction and tier merges change files but
//! not rows, so they do not invalidate anything (a rollup whose inputs changed identity while
//! it was being built is dropped and rebuilt, to be safe).
//!
//! Rollups are kept as long as `--rollup-retention` says (by default as long as the raw data),
//! so raw rows can be dropped after days while the rollups keep months queryable.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Builder, Int64Builder, RecordBatch, StringDictionaryBuilder,
    TimestampNanosecondBuilder, new_null_array,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int32Type, TimestampNanosecondType};
use arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::{Column, ScalarValue};
use datafusion::logical_expr::{Expr, SortExpr, lit};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use rigwatch_common::rollup::{self as names, STALE_NAN_BITS};
use tracing::{info, warn};

use super::{Db, State};
use crate::batch::{FieldType, TIME_COLUMN};
use crate::catalog::FileMeta;
use crate::error::{Error, Result};
use crate::schema::{ColumnKind, TableDef, tag_type};
use crate::table::{DbTable, OBJECT_STORE_URL};
use crate::{merge, persist};

/// What one rollup pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RollupStats {
    /// Stretches (table and partition) rolled up.
    pub stretches: usize,
    pub files: usize,
    pub rows_in: u64,
    pub rows_out: u64,
    pub bytes: u64,
    /// Closed days whose rollup files were merged into one per resolution.
    pub days: usize,
}

/// A stretch a rollup file answers for: raw samples with `from < t <= to` (ns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cover {
    pub from: i64,
    pub to: i64,
    /// The rollup file's id.
    pub file: u64,
}

/// Samples are bucketed by their millisecond (`floor(t_ns / 1 ms)`), as PromQL sees them, so a
/// window `(T - r, T]` of whole buckets holds exactly their samples even for sub-millisecond
/// times: the stretch `(from, to]` holds the raw rows with `from + 1 ms <= t < to + 1 ms` (ns).
const MS: i64 = 1_000_000;

/// The raw rows' times `[lo, hi)` (ns) of the stretch `(from, to]`.
fn raw_span(from: i64, to: i64) -> (i64, i64) {
    (from.saturating_add(MS), to.saturating_add(MS))
}

/// Rollup files of a closed day are merged into one file of this span.
const ROLLUP_DAY_NS: i64 = 86_400 * 1_000_000_000;

/// A day of rollups up to this many rows is re-sorted as a whole when merged (a day of hourly
/// rollups of 20 fields of 4,000 GPUs is 1.9 M rows); a larger one keeps its stretches' row
/// groups (copied, streaming).
const SORTED_DAY_MAX_ROWS: u64 = 4_000_000;

/// Built stretches are committed in groups of this many (each commit writes a catalog
/// version).
const COMMIT_EVERY: usize = 32;

/// A built stretch waiting for its commit.
struct Built {
    table: String,
    from: i64,
    /// The raw files it was built from.
    inputs: Vec<u64>,
    files: Vec<FileMeta>,
}

/// Stretches that hold raw data (raw table, start), and those rolled up (rollup table, start).
type Stretches<'a> = (BTreeSet<(&'a str, i64)>, HashSet<(&'a str, i64)>);

impl Db {
    /// The rollup resolutions in effect (ns), finest first: those of `--rollups` that divide the
    /// partition.
    pub fn rollup_resolutions(&self) -> Vec<i64> {
        let mut out: Vec<i64> = self
            .config
            .rollups
            .iter()
            .filter_map(|d| i64::try_from(d.as_nanos()).ok())
            .filter(|&r| r >= 1_000_000_000 && self.partition_ns % r == 0)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The name of `raw`'s rollup table at resolution `res_ns`.
    pub fn rollup_table_name(raw: &str, res_ns: i64) -> String {
        names::table_name(
            raw,
            &names::resolution_label((res_ns / 1_000_000_000) as u64),
        )
    }

    /// Whether `def`'s table is rolled up: a sampled table (not append-only, not a record table
    /// of `rollup_skip`) with a numeric field, whose tags do not collide with a rollup
    /// column's name.
    pub fn rolls_up(&self, def: &TableDef) -> bool {
        !def.append_only
            && !def.name.contains(names::MARK)
            && !self.config.rollup_skip.contains(&def.name)
            && def.columns.iter().any(|c| numeric(c.kind))
            && !def.columns.iter().any(|c| {
                c.kind == ColumnKind::Tag
                    && (c.name == names::FIELD_TAG
                        || names::VALUE_COLUMNS.iter().any(|(v, _)| *v == c.name))
            })
    }

    /// The stretches within `[min, max]` where `raw`'s rollup at `res_ns` stands for the raw
    /// data (see the module documentation), in time order, adjacent stretches of one file
    /// joined. A stretch with buffered rows is left out, even inside a merged day.
    pub fn rollup_cover(&self, raw: &str, res_ns: i64, min: i64, max: i64) -> Vec<Cover> {
        let name = Self::rollup_table_name(raw, res_ns);
        let part = self.partition_ns;
        let st = self.state.read();
        let mut files: Vec<&FileMeta> = st
            .files
            .iter()
            .filter(|f| f.table == name && !st.corrupt.contains(&f.id))
            .collect();
        files.sort_by_key(|f| f.partition);
        let mut out: Vec<Cover> = Vec::new();
        for f in files {
            let (from, to) = self.stretch_of(f);
            if from >= max || to < min {
                continue;
            }
            // Only the stretches of the span asked for.
            let mut q = from.max((min - 1).div_euclid(part) * part);
            while q < to && q < max {
                let end = q + part;
                if !buffered_overlaps(&st, raw, q, end) {
                    match out.last_mut() {
                        Some(c) if c.to == q && c.file == f.id => c.to = end,
                        _ => out.push(Cover {
                            from: q,
                            to: end,
                            file: f.id,
                        }),
                    }
                }
                q = end;
            }
        }
        out
    }

    /// Whether `table` may hold rows with times in `[min, max]` (ns): a file or buffered rows
    /// overlap it. Cheap; lets a reader skip planning a scan that would find nothing.
    pub fn may_hold(&self, table: &str, min: i64, max: i64) -> bool {
        let st = self.state.read();
        st.files
            .iter()
            .any(|f| f.table == table && f.min_time <= max && f.max_time >= min)
            || buffered_overlaps(&st, table, min.saturating_sub(MS), max.saturating_sub(MS))
    }

    /// The stretch `(from, to]` a rollup file answers for.
    pub(super) fn stretch_of(&self, f: &FileMeta) -> (i64, i64) {
        (
            f.partition,
            f.partition.saturating_add(f.span.max(self.partition_ns)),
        )
    }

    /// Rollup files of `new`'s tables whose stretch `new` overlaps: they no longer stand for
    /// the raw data once `new` is committed.
    pub(super) fn stale_rollups<'a>(
        &self,
        files: &'a [FileMeta],
        new: &[FileMeta],
    ) -> Vec<&'a FileMeta> {
        files
            .iter()
            .filter(|f| {
                let Some((raw, _)) = names::parse_table_name(&f.table) else {
                    return false;
                };
                let (from, to) = self.stretch_of(f);
                let (lo, hi) = raw_span(from, to);
                new.iter()
                    .any(|n| n.table == raw && n.min_time < hi && n.max_time >= lo)
            })
            .collect()
    }

    /// Builds the rollups missing for every closed stretch that has raw data.
    pub async fn build_rollups(self: &Arc<Self>) -> Result<RollupStats> {
        let mut stats = RollupStats::default();
        let res = self.rollup_resolutions();
        if res.is_empty() || self.maintenance_lease().is_none() {
            return Ok(stats);
        }
        // One pass at a time; a pass that waited finds built what the other built.
        let _pass = self.rollup_lock.lock().await;
        let start = Instant::now();
        let part = self.partition_ns;
        let closed_before = self.closed_before();
        let (files, corrupt) = {
            let st = self.state.read();
            (st.files.clone(), st.corrupt.clone())
        };
        let (wanted, have) = self.stretches(&files, &corrupt);
        let mut pending: Vec<Built> = Vec::new();
        for (table, q) in wanted {
            if q.saturating_add(part) > closed_before {
                continue;
            }
            let Some(def) = self.schemas.get(table) else {
                continue;
            };
            if !self.rolls_up(&def) {
                continue;
            }
            let missing: Vec<i64> = res
                .iter()
                .copied()
                .filter(|&m| !have.contains(&(Self::rollup_table_name(table, m).as_str(), q)))
                .collect();
            if missing.is_empty() {
                continue;
            }
            let inputs = {
                let st = self.state.read();
                if buffered_overlaps(&st, table, q, q + part) {
                    continue;
                }
                raw_inputs(&st, table, q, q + part)
            };
            match self.roll_up_stretch(&def, q, &missing).await {
                Ok((files, rows_in)) => {
                    stats.rows_in += rows_in;
                    pending.push(Built {
                        table: table.to_string(),
                        from: q,
                        inputs,
                        files,
                    });
                }
                Err(e) => {
                    warn!(table, stretch = q, error = %e, "rollup not built; retried next pass");
                    continue;
                }
            }
            if pending.len() >= COMMIT_EVERY {
                self.commit_rollups(std::mem::take(&mut pending), &mut stats)
                    .await?;
            }
        }
        self.commit_rollups(pending, &mut stats).await?;
        stats.days = self.merge_rollup_days().await?;
        if stats.stretches > 0 || stats.days > 0 {
            info!(
                stretches = stats.stretches,
                files = stats.files,
                days = stats.days,
                rows_in = stats.rows_in,
                rows_out = stats.rows_out,
                bytes = stats.bytes,
                seconds = start.elapsed().as_secs_f64(),
                "built rollups"
            );
        }
        Ok(stats)
    }

    /// The stretches that hold raw data, and those rolled up, in `files`.
    fn stretches<'a>(&self, files: &'a [FileMeta], corrupt: &HashSet<u64>) -> Stretches<'a> {
        let part = self.partition_ns;
        let mut wanted: BTreeSet<(&str, i64)> = BTreeSet::new();
        let mut have: HashSet<(&str, i64)> = HashSet::new();
        for f in files.iter().filter(|f| !corrupt.contains(&f.id)) {
            if names::parse_table_name(&f.table).is_some() {
                let (from, to) = self.stretch_of(f);
                let mut q = from;
                while q < to {
                    have.insert((&f.table, q));
                    q += part;
                }
                continue;
            }
            // The stretch `(q, q + part]` holding a time's millisecond.
            let stretch = |t: i64| (t.div_euclid(MS) * MS - 1).div_euclid(part) * part;
            let (lo, hi) = (stretch(f.min_time), stretch(f.max_time));
            let mut q = lo;
            while q <= hi {
                wanted.insert((&f.table, q));
                q += part;
            }
        }
        (wanted, have)
    }

    /// Merges each closed day of each rollup table into one file (re-sorted, or for a very
    /// large day its stretches' files as row groups, `tier.rs`), once every stretch of the day that holds raw data is rolled up: a
    /// month at 1 h then reads 30 files, not 720. A merged day stands for all its stretches,
    /// so a late write anywhere in it drops the whole day's file and its stretches are rolled
    /// up (and merged) again.
    async fn merge_rollup_days(&self) -> Result<usize> {
        let part = self.partition_ns;
        let day = ROLLUP_DAY_NS;
        if day <= part || day % part != 0 {
            return Ok(0);
        }
        let closed_before = self.closed_before();
        let (files, corrupt) = {
            let st = self.state.read();
            (st.files.clone(), st.corrupt.clone())
        };
        let (wanted, _) = self.stretches(&files, &corrupt);
        let mut days: BTreeMap<(&str, i64), Vec<&FileMeta>> = BTreeMap::new();
        for f in files.iter().filter(|f| !corrupt.contains(&f.id)) {
            if names::parse_table_name(&f.table).is_some() {
                days.entry((&f.table, f.partition.div_euclid(day) * day))
                    .or_default()
                    .push(f);
            }
        }
        let mut merged = 0;
        for ((table, start), group) in days {
            if start.saturating_add(day) > closed_before
                || group.len() < 2
                || group.iter().any(|f| f.is_tier())
            {
                continue;
            }
            let Some((raw, _)) = names::parse_table_name(table) else {
                continue;
            };
            let present: HashSet<i64> = group.iter().map(|f| f.partition).collect();
            let complete = (0..day / part)
                .map(|k| start + k * part)
                .all(|q| present.contains(&q) || !wanted.contains(&(raw, q)));
            let Some(def) = self.schemas.get(table) else {
                continue;
            };
            if !complete {
                continue;
            }
            let id = {
                let mut cw = self.persist_lock.lock().await;
                self.catalog.next_file_id(&mut cw.next_file_id).await?
            };
            let path = persist::file_path(table, start, id);
            let rows_in: u64 = group.iter().map(|f| f.rows).sum();
            let written = if rows_in <= SORTED_DAY_MAX_ROWS {
                self.sort_day(&def, &group, &path).await
            } else {
                self.merge_tier(&def, &group, &path).await
            };
            let (size, rows) = match written {
                Ok(written) => written,
                Err(e) => {
                    warn!(table, day = start, error = %e, "rollup day not merged; retried next pass");
                    continue;
                }
            };
            let new = FileMeta {
                id,
                table: table.to_string(),
                partition: start,
                path: path.to_string(),
                size,
                rows,
                min_time: group.iter().map(|f| f.min_time).min().unwrap_or(start),
                max_time: group
                    .iter()
                    .map(|f| f.max_time)
                    .max()
                    .unwrap_or(start + day),
                span: day,
            };
            let mut cw = self.persist_lock.lock().await;
            // A persist may have dropped one of the day's files meanwhile (a late write):
            // then the merged file would bring it back.
            let current = self.state.read().files.clone();
            let ids: HashSet<u64> = current.iter().map(|f| f.id).collect();
            if !group.iter().all(|f| ids.contains(&f.id)) {
                cw.pending_deletes.push((Instant::now(), path.to_string()));
                continue;
            }
            self.replace_files(&mut cw, &group, new, "rollup:after_day")
                .await?;
            merged += 1;
        }
        Ok(merged)
    }

    /// Writes the rows of `files` (disjoint stretches of one rollup table) to `path` as one
    /// file in (field, tags, time) order: one field's rows of the whole day are then
    /// contiguous, pages prune by field, and a query decodes a few large column chunks instead
    /// of one per stretch (each costs a decompression context). Answers size and rows.
    async fn sort_day(
        &self,
        def: &Arc<TableDef>,
        files: &[&FileMeta],
        path: &object_store::path::Path,
    ) -> Result<(u64, u64)> {
        let schema = def.arrow_schema();
        let mut batches = Vec::new();
        for f in files {
            batches.extend(persist::read(&self.store, &f.path, &schema).await?);
        }
        let def2 = def.clone();
        let sorted = tokio::task::spawn_blocking(move || {
            let all = arrow::compute::concat_batches(&schema, &batches)?;
            merge::sort(&def2, &all)
        })
        .await
        .map_err(|e| Error::Internal(format!("rollup sort panicked: {e}")))??;
        let rows = sorted.num_rows() as u64;
        let size = persist::write(&self.store, path, sorted, persist::Layout::Rollup).await?;
        Ok((size, rows))
    }

    /// Adds the built rollups whose inputs are still exactly the stretch's raw data.
    async fn commit_rollups(&self, built: Vec<Built>, stats: &mut RollupStats) -> Result<()> {
        if built.is_empty() {
            return Ok(());
        }
        let mut cw = self.persist_lock.lock().await;
        let mut files = (*self.state.read().files).clone();
        let mut added = 0;
        for b in built {
            let to = b.from + self.partition_ns;
            let valid = {
                let st = self.state.read();
                !buffered_overlaps(&st, &b.table, b.from, to)
                    && raw_inputs(&st, &b.table, b.from, to) == b.inputs
            };
            for f in b.files {
                let exists = files.iter().any(|g| {
                    let (from, to) = self.stretch_of(g);
                    g.table == f.table && from <= f.partition && f.partition < to
                });
                if valid && !exists {
                    stats.rows_out += f.rows;
                    stats.bytes += f.size;
                    stats.files += 1;
                    files.push(f);
                    added += 1;
                } else {
                    cw.pending_deletes.push((Instant::now(), f.path));
                }
            }
            stats.stretches += usize::from(valid);
        }
        if added > 0 {
            files.sort_by_key(|f| f.id);
            self.commit_catalog(&mut cw, files, None).await?;
        }
        Ok(())
    }

    /// Rolls up `(q, q + partition]` of `def`'s table at each of `res`; one file per
    /// resolution, written but not yet in the catalog. Also answers the raw rows read.
    async fn roll_up_stretch(
        self: &Arc<Self>,
        def: &Arc<TableDef>,
        q: i64,
        res: &[i64],
    ) -> Result<(Vec<FileMeta>, u64)> {
        let to = q + self.partition_ns;
        let (lo, hi) = raw_span(q, to);
        let mut merged = None;
        if let Some(inputs) = self.stretch_files(&def.name, q, to).await {
            let mut acc = Accumulator::new(def, res)?;
            let def2 = def.clone();
            let rows = tokio::task::spawn_blocking(move || {
                roll_up_runs(&def2, inputs, lo, hi, &mut acc).map(|rows| (acc, rows))
            })
            .await
            .map_err(|e| Error::Internal(format!("rollup panicked: {e}")))?;
            // A file that does not decode: the scan below finds and excludes it.
            merged = rows.ok();
        }
        let (acc, rows_in) = match merged {
            Some(done) => done,
            None => {
                let mut acc = Accumulator::new(def, res)?;
                let rows = self.roll_up_scan(def, lo, hi, &mut acc).await?;
                (acc, rows)
            }
        };
        let outputs = acc.finish();
        let mut files = Vec::with_capacity(outputs.len());
        // A file per resolution even without rows (a stretch whose rows hold no numbers), so
        // the stretch counts as rolled up and is not read again every pass.
        for (m, out) in res.iter().zip(outputs) {
            let rdef = self.rollup_def(def, *m);
            let batch = out.into_batch(&rdef)?;
            let sorted = merge::sort(&rdef, &batch)?;
            let times = sorted
                .column(rdef.time_index())
                .as_primitive::<TimestampNanosecondType>();
            let (min_time, max_time) = (
                arrow::compute::min(times).unwrap_or(to),
                arrow::compute::max(times).unwrap_or(to),
            );
            let id = {
                let mut cw = self.persist_lock.lock().await;
                self.catalog.next_file_id(&mut cw.next_file_id).await?
            };
            let path = persist::file_path(&rdef.name, q, id);
            let rows = sorted.num_rows() as u64;
            let size = persist::write(&self.store, &path, sorted, persist::Layout::Rollup).await?;
            files.push(FileMeta {
                id,
                table: rdef.name.clone(),
                partition: q,
                path: path.to_string(),
                size,
                rows,
                min_time,
                max_time,
                span: 0,
            });
        }
        Ok((files, rows_in))
    }

    /// The definition of `raw`'s rollup table at `res_ns`, created or widened with `raw`'s
    /// tags (columns: `field`, the raw tags, the values; tags added later go last, so the
    /// sort order of older files stays a prefix).
    /// The raw files of the stretch `(from, to]`, as stored, oldest first, where each is an
    /// ordinary partition file (sorted by (tags, time)) and every one can be fetched; `None`
    /// otherwise (a tier file holds several partitions one after the other), and the stretch
    /// goes through the table's scan.
    async fn stretch_files(&self, table: &str, from: i64, to: i64) -> Option<Vec<bytes::Bytes>> {
        let files: Vec<FileMeta> = {
            let st = self.state.read();
            stretch_inputs(&st, table, from, to).cloned().collect()
        };
        if files.iter().any(FileMeta::is_tier) {
            return None;
        }
        let mut out = Vec::with_capacity(files.len());
        for f in &files {
            out.push(persist::fetch(&self.store, &f.path).await.ok()?);
        }
        Some(out)
    }

    /// Feeds the raw rows `[lo, hi)` to `acc` through the table's own scan, sorted by (tags,
    /// time) there: holds the stretch in memory. Answers the rows read.
    async fn roll_up_scan(
        self: &Arc<Self>,
        def: &Arc<TableDef>,
        lo: i64,
        hi: i64,
        acc: &mut Accumulator,
    ) -> Result<u64> {
        let df = |e: datafusion::error::DataFusionError| Error::Internal(format!("rollup: {e}"));
        let ctx = SessionContext::new();
        let url = datafusion::execution::object_store::ObjectStoreUrl::parse(OBJECT_STORE_URL)
            .map_err(df)?;
        ctx.register_object_store(url.as_ref(), self.store.clone());
        let time = || Expr::Column(Column::from_name(TIME_COLUMN));
        let ts = |ns: i64| lit(ScalarValue::TimestampNanosecond(Some(ns), None));
        let mut order: Vec<SortExpr> = def
            .tag_indices()
            .map(|i| Expr::Column(Column::from_name(&def.columns[i].name)).sort(true, true))
            .collect();
        order.push(time().sort(true, true));
        let frame = ctx
            .read_table(Arc::new(DbTable::new(self.clone(), def.clone())))
            .map_err(df)?
            .filter(time().gt_eq(ts(lo)).and(time().lt(ts(hi))))
            .map_err(df)?
            .sort(order)
            .map_err(df)?;
        let mut stream = frame.execute_stream().await.map_err(df)?;
        let mut rows_in = 0u64;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(df)?;
            rows_in += batch.num_rows() as u64;
            acc.push(&batch)?;
        }
        Ok(rows_in)
    }

    fn rollup_def(&self, raw: &TableDef, res_ns: i64) -> Arc<TableDef> {
        let name = Self::rollup_table_name(&raw.name, res_ns);
        let existing = self.schemas.get(&name);
        let mut def = match &existing {
            Some(d) => (**d).clone(),
            None => {
                let mut d = TableDef::new(name.clone(), false);
                d.push(names::FIELD_TAG, ColumnKind::Tag);
                for i in raw.tag_indices() {
                    d.push(&raw.columns[i].name, ColumnKind::Tag);
                }
                for (v, int) in names::VALUE_COLUMNS {
                    let t = if int { FieldType::I64 } else { FieldType::F64 };
                    d.push(v, ColumnKind::Field(t));
                }
                d
            }
        };
        for i in raw.tag_indices() {
            if def.column_index(&raw.columns[i].name).is_none() {
                def.push(&raw.columns[i].name, ColumnKind::Tag);
            }
        }
        if existing.as_deref() != Some(&def) {
            self.schemas.load([def]);
        }
        self.schemas.get(&name).expect("loaded above")
    }
}

fn numeric(kind: ColumnKind) -> bool {
    matches!(kind, ColumnKind::Field(t) if t != FieldType::Str)
}

/// Whether buffered rows of `table` fall in the stretch `(from, to]`.
fn buffered_overlaps(st: &State, table: &str, from: i64, to: i64) -> bool {
    let (lo, hi) = raw_span(from, to);
    let hit = |(min, max): (i64, i64)| min < hi && max >= lo;
    std::iter::once(&st.buffer)
        .chain(st.followed.values())
        .any(|b| {
            b.chunks(table, lo, hi - 1)
                .any(|(_, c)| hit(c.time_range()))
        })
        || st.frozen.iter().any(|g| {
            g.frozen
                .tables
                .get(table)
                .into_iter()
                .flatten()
                .any(|(_, c)| hit(c.time_range()))
        })
}

/// `table`'s files holding rows of the stretch `(from, to]`, in id order.
fn stretch_inputs<'a>(
    st: &'a State,
    table: &'a str,
    from: i64,
    to: i64,
) -> impl Iterator<Item = &'a FileMeta> + 'a {
    let (lo, hi) = raw_span(from, to);
    st.files
        .iter()
        .filter(move |f| f.table == table && !st.corrupt.contains(&f.id))
        .filter(move |f| f.min_time < hi && f.max_time >= lo)
}

/// The ids of [`stretch_inputs`].
fn raw_inputs(st: &State, table: &str, from: i64, to: i64) -> Vec<u64> {
    stretch_inputs(st, table, from, to).map(|f| f.id).collect()
}

/// Feeds the raw rows `[lo, hi)` of `inputs` (a stretch's partition files, oldest first, each
/// sorted by (tags, time)) to `acc` in (tags, time) order, merged and deduplicated a batch at a
/// time as a query merges them ([`merge::merge_sorted`]), without holding the stretch in
/// memory. Answers the rows read.
fn roll_up_runs(
    def: &TableDef,
    inputs: Vec<bytes::Bytes>,
    lo: i64,
    hi: i64,
    acc: &mut Accumulator,
) -> Result<u64> {
    let schema = def.arrow_schema();
    let runs = inputs
        .into_iter()
        .map(|b| persist::batches(b))
        .collect::<Result<Vec<_>>>()?;
    let time = def.time_index();
    let mut rows_in = 0u64;
    merge::merge_sorted(def, &schema, runs, persist::MERGE_READ_ROWS, |batch| {
        let times = batch.column(time).as_primitive::<TimestampNanosecondType>();
        let keep: arrow::array::BooleanArray =
            times.iter().map(|t| t.map(|t| t >= lo && t < hi)).collect();
        let kept = arrow::compute::filter_record_batch(&batch, &keep)?;
        rows_in += kept.num_rows() as u64;
        acc.push(&kept)
            .map_err(|e| arrow::error::ArrowError::ExternalError(Box::new(e)))
    })?;
    Ok(rows_in)
}

/// One field's aggregate over one bucket.
#[derive(Debug, Clone, Copy, Default)]
struct Agg {
    /// Any sample, a staleness marker included.
    seen: bool,
    count: i64,
    sum: f64,
    min: f64,
    max: f64,
    first: f64,
    first_t: i64,
    last: f64,
    last_t: i64,
    /// The last sample that is not a staleness marker.
    prev: f64,
    increase: f64,
}

impl Agg {
    fn add(&mut self, t: i64, v: f64) {
        self.seen = true;
        self.last = v;
        self.last_t = t;
        if v.to_bits() == STALE_NAN_BITS {
            return;
        }
        if self.count == 0 {
            (self.sum, self.min, self.max, self.first, self.first_t) = (v, v, v, v, t);
            self.increase = 0.0;
        } else {
            self.sum += v;
            // PromQL's min_over_time/max_over_time rule: NaN only if every sample is NaN.
            if self.max < v || self.max.is_nan() {
                self.max = v;
            }
            if self.min > v || self.min.is_nan() {
                self.min = v;
            }
            self.increase += if v >= self.prev { v - self.prev } else { v };
        }
        self.prev = v;
        self.count += 1;
    }
}

/// Rollup rows of one resolution, column by column.
struct Out {
    field: StringDictionaryBuilder<Int32Type>,
    /// The raw tags' names and values.
    tag_names: Vec<String>,
    tags: Vec<StringDictionaryBuilder<Int32Type>>,
    count: Int64Builder,
    first_ns: Int64Builder,
    last_ns: Int64Builder,
    /// sum, min, max, first, last, increase.
    floats: [Float64Builder; 6],
    time: TimestampNanosecondBuilder,
    rows: usize,
}

impl Out {
    fn new(tag_names: Vec<String>) -> Self {
        Self {
            field: StringDictionaryBuilder::new(),
            tags: tag_names
                .iter()
                .map(|_| StringDictionaryBuilder::new())
                .collect(),
            tag_names,
            count: Int64Builder::new(),
            first_ns: Int64Builder::new(),
            last_ns: Int64Builder::new(),
            floats: std::array::from_fn(|_| Float64Builder::new()),
            time: TimestampNanosecondBuilder::new(),
            rows: 0,
        }
    }

    fn append(&mut self, field: &str, tags: &[Option<String>], a: &Agg, end: i64) {
        self.field.append_value(field);
        for (b, v) in self.tags.iter_mut().zip(tags) {
            b.append_option(v.as_deref());
        }
        let counted = a.count > 0;
        self.count.append_value(a.count);
        self.first_ns.append_option(counted.then_some(a.first_t));
        self.last_ns.append_value(a.last_t);
        let vals = [a.sum, a.min, a.max, a.first];
        for (b, v) in self.floats.iter_mut().zip(vals) {
            b.append_option(counted.then_some(v));
        }
        self.floats[4].append_value(a.last);
        self.floats[5].append_option(counted.then_some(a.increase));
        self.time.append_value(end);
        self.rows += 1;
    }

    /// The rows in `def`'s schema.
    fn into_batch(mut self, def: &TableDef) -> Result<RecordBatch> {
        let schema = def.arrow_schema();
        let mut by_name: HashMap<String, ArrayRef> = HashMap::new();
        by_name.insert(names::FIELD_TAG.to_string(), Arc::new(self.field.finish()));
        for (n, mut b) in self.tag_names.into_iter().zip(self.tags) {
            by_name.insert(n, Arc::new(b.finish()));
        }
        let [sum, min, max, first, last, increase] = &mut self.floats;
        let values: [(&str, ArrayRef); 9] = [
            (names::COUNT, Arc::new(self.count.finish())),
            (names::SUM, Arc::new(sum.finish())),
            (names::MIN, Arc::new(min.finish())),
            (names::MAX, Arc::new(max.finish())),
            (names::FIRST, Arc::new(first.finish())),
            (names::LAST, Arc::new(last.finish())),
            (names::FIRST_NS, Arc::new(self.first_ns.finish())),
            (names::LAST_NS, Arc::new(self.last_ns.finish())),
            (names::INCREASE, Arc::new(increase.finish())),
        ];
        for (n, a) in values {
            by_name.insert(n.to_string(), a);
        }
        let mut columns = Vec::with_capacity(schema.fields().len());
        for (i, f) in schema.fields().iter().enumerate() {
            if i == def.time_index() {
                columns.push(Arc::new(self.time.finish()) as ArrayRef);
                continue;
            }
            columns.push(
                by_name
                    .remove(f.name())
                    .unwrap_or_else(|| new_null_array(f.data_type(), self.rows)),
            );
        }
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

/// Folds rows sorted by (tags, time) into rollup rows at each resolution.
struct Accumulator {
    res: Vec<i64>,
    /// Column indices of the raw tags.
    tags: Vec<usize>,
    /// Column index and name of each numeric field.
    fields: Vec<(usize, String)>,
    time: usize,
    converter: RowConverter,
    key: Option<OwnedRow>,
    key_tags: Vec<Option<String>>,
    /// Per resolution: the current bucket's end and each field's aggregate.
    buckets: Vec<i64>,
    aggs: Vec<Vec<Agg>>,
    outs: Vec<Out>,
}

impl Accumulator {
    fn new(def: &TableDef, res: &[i64]) -> Result<Self> {
        let tags: Vec<usize> = def.tag_indices().collect();
        let fields: Vec<(usize, String)> = def
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| numeric(c.kind))
            .map(|(i, c)| (i, c.name.clone()))
            .collect();
        let converter =
            RowConverter::new(tags.iter().map(|_| SortField::new(tag_type())).collect())?;
        Ok(Self {
            res: res.to_vec(),
            time: def.time_index(),
            converter,
            key: None,
            key_tags: Vec::new(),
            buckets: vec![i64::MIN; res.len()],
            aggs: vec![vec![Agg::default(); fields.len()]; res.len()],
            outs: res
                .iter()
                .map(|_| Out::new(tags.iter().map(|&i| def.columns[i].name.clone()).collect()))
                .collect(),
            tags,
            fields,
        })
    }

    fn flush(&mut self, r: usize) {
        let end = self.buckets[r];
        for (a, (_, name)) in self.aggs[r].iter_mut().zip(&self.fields) {
            if a.seen {
                self.outs[r].append(name, &self.key_tags, a, end);
            }
            *a = Agg::default();
        }
    }

    fn push(&mut self, batch: &RecordBatch) -> Result<()> {
        let tag_cols: Vec<ArrayRef> = self.tags.iter().map(|&i| batch.column(i).clone()).collect();
        let keys = self.converter.convert_columns(&tag_cols)?;
        let times = batch
            .column(self.time)
            .as_primitive::<TimestampNanosecondType>();
        let values: Vec<ArrayRef> = self
            .fields
            .iter()
            .map(|(i, _)| cast(batch.column(*i), &DataType::Float64))
            .collect::<std::result::Result<_, _>>()?;
        let values: Vec<&arrow::array::PrimitiveArray<Float64Type>> = values
            .iter()
            .map(|a| a.as_primitive::<Float64Type>())
            .collect();
        for row in 0..batch.num_rows() {
            let key = keys.row(row);
            if self.key.as_ref().is_none_or(|k| k.row() != key) {
                for r in 0..self.res.len() {
                    self.flush(r);
                    self.buckets[r] = i64::MIN;
                }
                self.key = Some(key.owned());
                self.key_tags = tag_cols.iter().map(|c| tag_value(c, row)).collect();
            }
            let t = times.value(row);
            let t_ms = t.div_euclid(MS);
            for r in 0..self.res.len() {
                let m = self.res[r] / MS;
                // The bucket `(end - m, end]` holding t's millisecond.
                let end = ((t_ms - 1).div_euclid(m) * m + m) * MS;
                if end != self.buckets[r] {
                    self.flush(r);
                    self.buckets[r] = end;
                }
            }
            for (f, col) in values.iter().enumerate() {
                if col.is_null(row) {
                    continue;
                }
                let v = col.value(row);
                for aggs in &mut self.aggs {
                    aggs[f].add(t, v);
                }
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Vec<Out> {
        for r in 0..self.res.len() {
            self.flush(r);
        }
        self.outs
    }
}

/// The string value of a dictionary tag column at `row`.
fn tag_value(col: &ArrayRef, row: usize) -> Option<String> {
    if col.is_null(row) {
        return None;
    }
    let dict = col.as_dictionary::<Int32Type>();
    let key = dict.keys().value(row) as usize;
    Some(dict.values().as_string::<i32>().value(key).to_string())
}

#[cfg(test)]
mod tests;
