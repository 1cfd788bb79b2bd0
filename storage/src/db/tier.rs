//! Tier compaction: once a tier of a table (a day by default, `--compaction-tier`) is closed,
//! its partitions' files are merged into one file that spans the tier.
//!
//! A query over a day then opens one file and reads one footer instead of one per hour: the
//! per-file cost that dominated long ranges. The tier file keeps its inputs' rows as they
//! were, one partition after the other (each sorted by (tags, time)), in [`TIER_ROW_GROUPS`]
//! row groups of several partitions each: a query for the last minutes still reads one hour's
//! pages (the page index of `time` narrows a row group to them, `series_scan.rs`), and a query
//! for one GPU reads that GPU's pages of each partition, from a few column chunks instead of
//! one per partition (each zstd column chunk read costs two codec contexts: in
//! `bench compare --size month`, about a fifth of a one-GPU 7-day range). Being one
//! partition's only file, each input holds keys no other holds, so nothing needs
//! deduplicating, and the copy streams: no tier is held in memory.
//! (A k-way merge into one global (tags, time) order was tried first: a fleet-wide instant
//! query then had to decode every GPU's page holding the last minutes, 8x slower.)
//!
//! A tier is merged once. A write that arrives later for a merged tier is persisted as an
//! ordinary partition file beside the tier file; partition compaction merges such files with
//! each other (never into the tier file), and a query merges them with the tier file's rows
//! (`table.rs`: everything within a tier file's span is one group).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::TaskContext;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use object_store::path::Path;

use tracing::info;

use super::Db;
use crate::catalog::FileMeta;
use crate::error::{Error, Result};
use crate::persist;
use crate::schema::TableDef;
use crate::table::OBJECT_STORE_URL;

/// Row groups a tier file is written in (fewer where a row group would pass
/// [`persist::TIER_GROUP_ROWS`] rows): few column chunks for a long one-series read, and
/// still one row group per scan thread for a fleet-wide one.
pub const TIER_ROW_GROUPS: usize = 4;

/// What one tier pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TierStats {
    /// Tiers merged into one file each.
    pub tiers: usize,
    pub files_in: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Db {
    /// Merges every closed tier that has two or more partition files, one per partition, and
    /// no tier file yet, into one tier file. A tier is closed once it ended more than
    /// `persist_age` and a partition ago (as a partition is closed for partition compaction).
    pub async fn compact_tiers(&self) -> Result<TierStats> {
        let mut stats = TierStats::default();
        let Some(span) = self.tier_ns() else {
            return Ok(stats);
        };
        if self.maintenance_lease().is_none() {
            return Ok(stats);
        }
        let closed_before = self.closed_before();
        let start = Instant::now();
        let (files, corrupt) = {
            let st = self.state.read();
            (st.files.clone(), st.corrupt.clone())
        };
        let mut tiers: BTreeMap<(&str, i64), Vec<&FileMeta>> = BTreeMap::new();
        // Rollup tables are merged by day in `rollup.rs`, only once a day is complete.
        for f in files.iter().filter(|f| {
            !corrupt.contains(&f.id)
                && rigwatch_common::rollup::parse_table_name(&f.table).is_none()
        }) {
            let tier = f.partition.div_euclid(span).saturating_mul(span);
            tiers.entry((&f.table, tier)).or_default().push(f);
        }
        for ((table, tier), group) in tiers {
            if tier.saturating_add(span) > closed_before
                || group.len() < 2
                || group.iter().any(|f| f.is_tier())
            {
                continue;
            }
            // One file per partition: partition compaction has not caught up otherwise, and
            // the inputs would not be disjoint.
            let mut partitions = HashSet::new();
            if !group.iter().all(|f| partitions.insert(f.partition)) {
                continue;
            }
            let Some(def) = self.schemas.get(table) else {
                continue;
            };
            let id = {
                let mut cw = self.persist_lock.lock().await;
                self.catalog.next_file_id(&mut cw.next_file_id).await?
            };
            let path = persist::file_path(table, tier, id);
            // The merge runs without the persist lock, so writes keep being persisted.
            let (size, rows) = match self.merge_tier(&def, &group, &path).await {
                Ok(written) => written,
                Err(e) => {
                    tracing::warn!(table, tier, error = %e, "tier not merged; retried next pass");
                    continue;
                }
            };
            let new = FileMeta {
                id,
                table: table.to_string(),
                partition: tier,
                path: path.to_string(),
                size,
                rows,
                min_time: group.iter().map(|f| f.min_time).min().unwrap_or(0),
                max_time: group.iter().map(|f| f.max_time).max().unwrap_or(0),
                span,
            };
            let mut cw = self.persist_lock.lock().await;
            let replaced: HashSet<u64> = group.iter().map(|f| f.id).collect();
            let current = self.state.read().files.clone();
            // Retention or a quarantine may have taken an input meanwhile: then the tier
            // file would bring its rows back. Drop it and try again next pass.
            let present = current.iter().filter(|f| replaced.contains(&f.id)).count();
            if present != replaced.len()
                || self
                    .state
                    .read()
                    .corrupt
                    .iter()
                    .any(|c| replaced.contains(c))
            {
                cw.pending_deletes.push((Instant::now(), path.to_string()));
                continue;
            }
            self.replace_files(&mut cw, &group, new, "tier:after_file")
                .await?;
            stats.tiers += 1;
            stats.files_in += group.len();
            stats.bytes_in += group.iter().map(|f| f.size).sum::<u64>();
            stats.bytes_out += size;
        }
        if stats.tiers > 0 {
            self.metrics.compactions.inc_by(stats.tiers as u64);
            info!(
                tiers = stats.tiers,
                files_in = stats.files_in,
                bytes_in = stats.bytes_in,
                bytes_out = stats.bytes_out,
                seconds = start.elapsed().as_secs_f64(),
                "merged closed tiers"
            );
        }
        Ok(stats)
    }

    /// The tier span in ns, when tiers are on.
    fn tier_ns(&self) -> Option<i64> {
        let span = i64::try_from(self.config.compaction_tier?.as_nanos()).ok()?;
        (span > self.partition_ns && span % self.partition_ns == 0).then_some(span)
    }

    /// Writes `files` (in time order) to `path` as one file of [`TIER_ROW_GROUPS`] row groups,
    /// each holding a few inputs' rows one after the other; answers its size and rows.
    pub(super) async fn merge_tier(
        &self,
        def: &TableDef,
        files: &[&FileMeta],
        path: &Path,
    ) -> Result<(u64, u64)> {
        let schema = def.arrow_schema();
        let df =
            |e: datafusion::error::DataFusionError| Error::Internal(format!("tier merge: {e}"));
        let url = ObjectStoreUrl::parse(OBJECT_STORE_URL).map_err(df)?;
        let ctx = SessionContext::new();
        ctx.register_object_store(url.as_ref(), self.store.clone());
        // Columns zstd barely shrank in the inputs are stored uncompressed: cheaper to read.
        let mut footers = Vec::with_capacity(files.len());
        for f in files {
            footers.push(self.footer(f).await.map_err(df)?);
        }
        let plain = persist::plain_columns(&footers);
        // Encoding is CPU work: a blocking thread encodes while the next input is read, and
        // the file goes to the store a part at a time as it is encoded (a day of a large
        // fleet is hundreds of MB).
        let (tx, rx) = tokio::sync::mpsc::channel::<persist::Part>(4);
        let encoder_schema = schema.clone();
        let upload =
            persist::put_streamed(&self.store, path, persist::UPLOAD_PART_BYTES, move |out| {
                persist::encode_parts(&encoder_schema, &plain, rx, out)
            });
        let feed = async move {
            let mut rows = 0u64;
            let mut sorted: Vec<&&FileMeta> = files.iter().collect();
            sorted.sort_by_key(|f| (f.partition, f.id));
            let per_group = sorted.len().div_ceil(TIER_ROW_GROUPS).max(1);
            for (i, f) in sorted.into_iter().enumerate() {
                let source = ParquetSource::new(schema.clone()).with_parquet_file_reader_factory(
                    Arc::new(CachedParquetFileReaderFactory::new(
                        self.store.clone(),
                        self.parquet_metadata(),
                    )),
                );
                let config = FileScanConfigBuilder::new(url.clone(), Arc::new(source))
                    .with_file_groups(vec![FileGroup::new(vec![PartitionedFile::new(
                        f.path.clone(),
                        f.size,
                    )])])
                    .build();
                let plan = DataSourceExec::from_data_source(config);
                let task: Arc<TaskContext> = ctx.task_ctx();
                let mut stream = plan.execute(0, task).map_err(df)?;
                while let Some(batch) = stream.next().await {
                    let batch = batch.map_err(df)?;
                    rows += batch.num_rows() as u64;
                    // A closed channel: the encoder failed, and the upload says why.
                    if tx.send(persist::Part::Rows(batch)).await.is_err() {
                        return Ok(rows);
                    }
                }
                if (i + 1) % per_group == 0 && tx.send(persist::Part::EndOfGroup).await.is_err() {
                    return Ok(rows);
                }
            }
            // Only now may the encoder finish the file: an error above drops `tx` without
            // it, and the upload is aborted.
            let _ = tx.send(persist::Part::End).await;
            Ok::<_, Error>(rows)
        };
        let (uploaded, fed) = tokio::join!(upload, feed);
        let rows = fed?;
        let (size, ()) = uploaded?;
        Ok((size, rows))
    }
}

#[cfg(test)]
mod tests;
