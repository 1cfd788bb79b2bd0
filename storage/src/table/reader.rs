//! The Parquet reader scans use: DataFusion's cached reader, asked for footers *with* their
//! page index.
//!
//! DataFusion opens a file asking for the footer alone and loads the page index afterwards,
//! outside the metadata cache: every scan of a cached file parsed its page index again
//! (about a tenth of a one-GPU range query). Asking for both up front caches both.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::ParquetFileReaderFactory;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::FutureExt;
use futures::future::BoxFuture;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};

/// Creates readers whose footers come with their page index, through the metadata cache.
#[derive(Debug)]
pub struct IndexedReaderFactory(pub CachedParquetFileReaderFactory);

impl IndexedReaderFactory {
    /// A reader of `file` whose footer comes with its page index, through the cache.
    pub fn open(
        &self,
        partition_index: usize,
        file: PartitionedFile,
    ) -> datafusion::error::Result<IndexedReader> {
        Ok(IndexedReader(self.0.create_reader(
            partition_index,
            file,
            None,
            &ExecutionPlanMetricsSet::new(),
        )?))
    }
}

impl ParquetFileReaderFactory for IndexedReaderFactory {
    fn create_reader(
        &self,
        partition_index: usize,
        file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> datafusion::error::Result<Box<dyn AsyncFileReader + Send>> {
        Ok(Box::new(IndexedReader(self.0.create_reader(
            partition_index,
            file,
            metadata_size_hint,
            metrics,
        )?)))
    }
}

pub struct IndexedReader(Box<dyn AsyncFileReader + Send>);

impl AsyncFileReader for IndexedReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.0.get_bytes(range)
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        self.0.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        let options = options
            .cloned()
            .unwrap_or_default()
            .with_page_index_policy(PageIndexPolicy::Optional);
        async move { self.0.get_metadata(Some(&options)).await }.boxed()
    }
}
