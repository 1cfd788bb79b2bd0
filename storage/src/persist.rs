//! Parquet files on the object store: writing sorted batches, reading them back, checking them.
//!
//! Files are sorted by (tags, time), fields and `time` zstd-compressed (tags are not), with
//! page-level statistics so that DataFusion can prune row groups and pages by time and tag
//! predicates, and a series index in the footer ([`crate::series_index`]) that narrows a read
//! to the series a tag filter keeps. The `time` column is delta-encoded (regular sampling makes it nearly free); fields keep dictionary encoding and
//! fall back to byte-stream-split (floats: lets zstd find the repeated exponent bytes of slowly
//! changing gauges) or delta (integers: counters grow steadily).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, path::Path};
// ParquetObjectReader is deprecated upstream in favour of hand-written AsyncFileReaders; it
// still does exactly what we need, so keep it until the replacement settles.
use parquet::arrow::ArrowWriter;
#[allow(deprecated)]
use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStreamBuilder};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::batch::TIME_COLUMN;
use crate::error::{Error, Result};
use crate::merge::align;
use crate::series_index;

/// The object path of a data file.
pub fn file_path(table: &str, partition: i64, id: u64) -> Path {
    Path::from_iter([
        "tables",
        table,
        &partition.to_string(),
        &format!("{id:020}.parquet"),
    ])
}

/// Most rows in one data page.
const PAGE_ROWS: usize = 4096;

fn writer_properties(schema: &SchemaRef) -> WriterProperties {
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid level"),
        ))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(1 << 20))
        // Rows are sorted by series, so small pages let a query for one GPU skip the pages
        // of every other GPU through the page index (a 4,096-row page holds about 11 GPUs'
        // hour at 10 s), at a small cost in page headers.
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_write_batch_size(PAGE_ROWS)
        // A column with more distinct values than fit in 64 KiB (8,192 floats: counters,
        // noisy gauges) falls back to the encodings below instead of an ever-growing
        // dictionary; measured on `bench ingest --gpus 200 --ticks 1080`: 0.686 -> 0.625
        // bytes/value (the 1 MiB default never fell back within a file).
        .set_dictionary_page_size_limit(64 << 10)
        .set_column_encoding(ColumnPath::from(TIME_COLUMN), Encoding::DELTA_BINARY_PACKED)
        .set_column_dictionary_enabled(ColumnPath::from(TIME_COLUMN), false)
        .set_created_by(format!("rigwatch {}", env!("CARGO_PKG_VERSION")));
    // Dictionary encoding stays on (gauges often repeat few values); these are the encodings
    // a column falls back to once its dictionary grows too large.
    for f in schema.fields() {
        let col = ColumnPath::from(f.name().as_str());
        match f.data_type() {
            DataType::Float64 => {
                props = props.set_column_encoding(col, Encoding::BYTE_STREAM_SPLIT)
            }
            DataType::Int64 | DataType::UInt64 => {
                props = props.set_column_encoding(col, Encoding::DELTA_BINARY_PACKED)
            }
            // Tags are stored uncompressed: sorted by series, their pages are short runs of
            // dictionary keys that zstd's frame overhead made *larger*, and only the widest
            // dictionaries (GPU UUIDs) shrank, by about 15 KB an hourly file of 1,000 GPUs.
            // Every column chunk read with zstd creates a compression and a decompression
            // context (the parquet crate makes both per chunk): with tags read for every
            // series' labels, that was a tenth of a one-GPU range query.
            DataType::Dictionary(..) => {
                props = props.set_column_compression(col, Compression::UNCOMPRESSED)
            }
            _ => {}
        }
    }
    props.build()
}

/// Encodes `batch` as Parquet bytes (CPU-bound: call from a blocking thread).
pub fn encode(batch: &RecordBatch) -> Result<Vec<u8>> {
    let schema = batch.schema();
    let mut out = Vec::with_capacity(batch.get_array_memory_size() / 4);
    let mut index = series_index::Builder::new(&schema);
    index.push(batch);
    let mut w = ArrowWriter::try_new(&mut out, schema.clone(), Some(writer_properties(&schema)))?;
    w.write(batch)?;
    if let Some(kv) = index.finish() {
        w.append_key_value_metadata(kv);
    }
    w.close()?;
    Ok(out)
}

/// What [`encode_parts`] receives.
#[derive(Debug)]
pub enum Part {
    /// Rows for the current row group.
    Rows(RecordBatch),
    /// Ends the current row group: the next rows start a new one.
    EndOfGroup,
}

/// Encodes the parts `rx` delivers (rows in `schema`, in order) as one Parquet file, ending a
/// row group at each [`Part::EndOfGroup`] (and at the row-group size); ends when the sender is
/// dropped (CPU-bound: call from a blocking thread).
pub fn encode_parts(schema: &SchemaRef, rx: std::sync::mpsc::Receiver<Part>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, schema.clone(), Some(writer_properties(schema)))?;
    let mut index = series_index::Builder::new(schema);
    for part in rx {
        match part {
            Part::Rows(batch) => {
                let batch = align(&batch, schema)?;
                index.push(&batch);
                w.write(&batch)?;
            }
            Part::EndOfGroup => {
                index.end_group();
                w.flush()?;
            }
        }
    }
    if let Some(kv) = index.finish() {
        w.append_key_value_metadata(kv);
    }
    w.close()?;
    Ok(out)
}

/// Writes `batch` to `path`; returns the file size.
pub async fn write(store: &Arc<dyn ObjectStore>, path: &Path, batch: RecordBatch) -> Result<u64> {
    let bytes = tokio::task::spawn_blocking(move || encode(&batch))
        .await
        .map_err(|e| Error::Internal(format!("parquet encoder panicked: {e}")))??;
    let size = bytes.len() as u64;
    store
        .put(path, PutPayload::from(Bytes::from(bytes)))
        .await?;
    Ok(size)
}

/// Reads a whole file, aligned to `schema`.
#[allow(deprecated)]
pub async fn read(
    store: &Arc<dyn ObjectStore>,
    path: &str,
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>> {
    let reader = ParquetObjectReader::new(store.clone(), Path::from(path));
    let stream = ParquetRecordBatchStreamBuilder::new(reader)
        .await?
        .build()?;
    let batches: Vec<RecordBatch> = stream.try_collect().await?;
    batches
        .iter()
        .map(|b| align(b, schema).map_err(Error::from))
        .collect()
}

/// Reads a file's footer: cheap, and enough to catch truncated or overwritten files.
#[allow(deprecated)]
pub async fn check(store: &Arc<dyn ObjectStore>, path: &str) -> Result<()> {
    let reader = ParquetObjectReader::new(store.clone(), Path::from(path));
    ParquetRecordBatchStreamBuilder::new(reader).await?;
    Ok(())
}
