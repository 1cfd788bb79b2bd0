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
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
#[allow(deprecated)]
use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStreamBuilder};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::batch::TIME_COLUMN;
use crate::error::{Error, Result};
use crate::merge::{self, align};
use crate::schema::TableDef;
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

/// Zstd keeps a column of a merged file only where it saved at least this share of the
/// column's bytes in the inputs. Reading a zstd column chunk costs a compression and a
/// decompression context (the parquet crate makes both per chunk): for a one-GPU day in a
/// tier file, 48 of them, about a seventh of the query. A dictionary-encoded gauge (bit-packed
/// keys of a random walk) saved about 1% in `bench compare`; constant columns grew.
pub const ZSTD_MIN_SAVING: f64 = 0.03;

/// Most rows in a row group of an ordinary data file.
const GROUP_ROWS: usize = 1 << 20;
/// Most rows in a row group of a tier file ([`encode_parts`]): a few partitions' rows, one
/// after another.
pub const TIER_GROUP_ROWS: usize = 1 << 22;

/// How a file's columns are laid out, by what reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Raw rows: fields zstd-compressed, a series index where runs average 4 rows or more.
    Data,
    /// A rollup table's rows (`TABLE@RES`): files that every long-range query opens (a
    /// 30-day chart: 30 closed days and the current day's stretches), one row per series
    /// and bucket. Fields are LZ4-compressed: reading a zstd column chunk creates a
    /// compression and a decompression context (the parquet crate makes both per chunk).
    /// One GPU's 30-day query at 1 h measured 4.7 ms with LZ4 and 11.9 ms with zstd in the
    /// closed days' files (two runs); the month benchmark's rollups (1,000 GPUs) took 135 MB
    /// with LZ4, about 12% more than zstd's. The series index is kept however short the
    /// runs, so one GPU's rows are found without reading every row of an hour's file.
    Rollup,
}

impl Layout {
    /// The layout of `table`'s files.
    pub fn of(table: &str) -> Self {
        if rigwatch_common::rollup::parse_table_name(table).is_some() {
            Layout::Rollup
        } else {
            Layout::Data
        }
    }
}

fn writer_properties(
    schema: &SchemaRef,
    plain: &[String],
    group_rows: usize,
    layout: Layout,
) -> WriterProperties {
    let fields = match layout {
        Layout::Data => Compression::ZSTD(ZstdLevel::try_new(3).expect("valid level")),
        Layout::Rollup => Compression::LZ4_RAW,
    };
    let mut props = WriterProperties::builder()
        .set_compression(fields)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(group_rows))
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
        // Delta-encoded regular timestamps are runs of zero-width miniblocks: LZ4 takes them
        // to 0.07 bytes a row (zstd 0.05) and needs no context to read, where every query
        // reads `time`.
        .set_column_compression(ColumnPath::from(TIME_COLUMN), Compression::LZ4_RAW)
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
    for name in plain {
        props = props
            .set_column_compression(ColumnPath::from(name.as_str()), Compression::UNCOMPRESSED);
    }
    props.build()
}

/// Encodes `batch` as Parquet bytes (CPU-bound: call from a blocking thread).
pub fn encode(batch: &RecordBatch, layout: Layout) -> Result<Vec<u8>> {
    let mut e = Encoder::new(&batch.schema(), batch.get_array_memory_size() / 4, layout)?;
    e.write(batch)?;
    e.finish()
}

/// Encodes batches written one after the other (sorted by (tags, time) as a whole) as one
/// Parquet file with its series index, holding only the encoded row group in progress.
pub struct Encoder {
    w: ArrowWriter<Vec<u8>>,
    index: series_index::Builder,
    layout: Layout,
}

impl Encoder {
    /// `capacity`: bytes to reserve for the output.
    pub fn new(schema: &SchemaRef, capacity: usize, layout: Layout) -> Result<Self> {
        let w = ArrowWriter::try_new(
            Vec::with_capacity(capacity),
            schema.clone(),
            Some(writer_properties(schema, &[], GROUP_ROWS, layout)),
        )?;
        Ok(Self {
            w,
            index: series_index::Builder::new(schema),
            layout,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.index.push(batch);
        self.w.write(batch)?;
        Ok(())
    }

    /// The file's bytes.
    pub fn finish(mut self) -> Result<Vec<u8>> {
        let index = match self.layout {
            Layout::Data => self.index.finish(),
            Layout::Rollup => self.index.finish_always(),
        };
        if let Some(kv) = index {
            self.w.append_key_value_metadata(kv);
        }
        // Closes the row group in progress and writes the footer once.
        Ok(self.w.into_inner()?)
    }
}

/// What [`encode_parts`] receives.
#[derive(Debug)]
pub enum Part {
    /// Rows for the current row group.
    Rows(RecordBatch),
    /// Ends the current row group: the next rows start a new one.
    EndOfGroup,
    /// Every row was sent: the file may be finished.
    End,
}

/// Encodes the parts `rx` delivers (rows in `schema`, in order) into `out` as one Parquet
/// file, ending a row group at each [`Part::EndOfGroup`] (and at [`TIER_GROUP_ROWS`]), the
/// columns `plain` names uncompressed, until [`Part::End`]. A sender dropped before it sent
/// `End` is an error: the file would be missing rows (CPU-bound: call from a blocking thread).
pub fn encode_parts<W: std::io::Write + Send>(
    schema: &SchemaRef,
    plain: &[String],
    mut rx: tokio::sync::mpsc::Receiver<Part>,
    out: W,
) -> Result<()> {
    let mut w = ArrowWriter::try_new(
        out,
        schema.clone(),
        Some(writer_properties(
            schema,
            plain,
            TIER_GROUP_ROWS,
            Layout::Data,
        )),
    )?;
    let mut index = series_index::Builder::new(schema);
    loop {
        match rx.blocking_recv() {
            Some(Part::Rows(batch)) => {
                let batch = align(&batch, schema)?;
                index.push(&batch);
                w.write(&batch)?;
            }
            Some(Part::EndOfGroup) => {
                index.end_group();
                w.flush()?;
            }
            Some(Part::End) => break,
            None => {
                return Err(Error::Internal(
                    "the rows of a file being encoded stopped before their end".into(),
                ));
            }
        }
    }
    if let Some(kv) = index.finish() {
        w.append_key_value_metadata(kv);
    }
    w.close()?;
    Ok(())
}

/// Bytes in each part of a streamed upload ([`put_streamed`]). S3 needs at least 5 MiB in
/// every part but the last; what an upload holds in memory is a few parts.
pub const UPLOAD_PART_BYTES: usize = 5 << 20;

/// Parts of a streamed upload sent to the store at once.
const UPLOADS_IN_FLIGHT: usize = 2;

/// Where an encoder run by [`put_streamed`] writes: each part goes to the upload as soon as
/// it is full, so a file of any size costs a few parts of memory, not its whole size.
pub struct PartWriter {
    part: Vec<u8>,
    part_bytes: usize,
    written: u64,
    tx: tokio::sync::mpsc::Sender<Bytes>,
}

impl PartWriter {
    /// Sends the part in progress; `more`: another part follows (gets a fresh buffer).
    fn send(&mut self, more: bool) -> std::io::Result<()> {
        let next = if more {
            Vec::with_capacity(self.part_bytes)
        } else {
            Vec::new()
        };
        let part = std::mem::replace(&mut self.part, next);
        self.tx
            .blocking_send(Bytes::from(part))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload stopped"))
    }
}

impl std::io::Write for PartWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.part_bytes - self.part.len());
        self.part.extend_from_slice(&buf[..n]);
        self.written += n as u64;
        if self.part.len() == self.part_bytes {
            self.send(true)?;
        }
        Ok(n)
    }

    /// Parts go when full, the last one when the encoder returns.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Stores at `path` what `encode` writes (on a blocking thread), uploading it in parts of
/// `part_bytes` while it is being encoded; answers the object's size and what `encode`
/// returned. The object appears whole or not at all: an encoder or upload failure aborts the
/// upload.
pub async fn put_streamed<T: Send + 'static>(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    part_bytes: usize,
    encode: impl FnOnce(&mut PartWriter) -> Result<T> + Send + 'static,
) -> Result<(u64, T)> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let mut upload = object_store::WriteMultipart::new_with_chunk_size(
        store.put_multipart(path).await?,
        part_bytes,
    );
    let encoder = tokio::task::spawn_blocking(move || {
        let mut w = PartWriter {
            part: Vec::with_capacity(part_bytes),
            part_bytes,
            written: 0,
            tx,
        };
        let value = encode(&mut w)?;
        if !w.part.is_empty() {
            w.send(false)?;
        }
        Ok::<_, Error>((w.written, value))
    });
    let mut failed = None;
    while let Some(part) = rx.recv().await {
        if let Err(e) = upload.wait_for_capacity(UPLOADS_IN_FLIGHT).await {
            failed = Some(Error::from(e));
            break;
        }
        upload.put(part);
    }
    // An encoder still writing sees the upload stop.
    drop(rx);
    let encoded = encoder
        .await
        .map_err(|e| Error::Internal(format!("parquet encoder panicked: {e}")))
        .and_then(|r| r);
    // The upload's own error explains an encoder's broken pipe.
    let error = match (failed, encoded) {
        (None, Ok(done)) => {
            upload.finish().await?;
            return Ok(done);
        }
        (Some(e), _) | (None, Err(e)) => e,
    };
    if let Err(e) = upload.abort().await {
        tracing::warn!(%path, error = %e, "could not abort an upload; its parts stay");
    }
    Err(error)
}

/// The zstd-compressed columns of `footers` (files to be merged) that zstd shrank by less
/// than [`ZSTD_MIN_SAVING`] in all of them together: the merged file stores them uncompressed.
pub fn plain_columns(footers: &[Arc<parquet::file::metadata::ParquetMetaData>]) -> Vec<String> {
    let mut sizes: std::collections::BTreeMap<String, (i64, i64, bool)> = Default::default();
    for footer in footers {
        for rg in footer.row_groups() {
            for c in rg.columns() {
                let e = sizes.entry(c.column_path().string()).or_default();
                e.0 += c.compressed_size();
                e.1 += c.uncompressed_size();
                e.2 |= !matches!(c.compression(), Compression::ZSTD(_));
            }
        }
    }
    sizes
        .into_iter()
        .filter(|(name, (compressed, raw, other))| {
            name != TIME_COLUMN
                && !other
                && *raw > 0
                && (*compressed as f64) > (*raw as f64) * (1.0 - ZSTD_MIN_SAVING)
        })
        .map(|(name, _)| name)
        .collect()
}

/// Writes `batch` to `path`; returns the file size.
pub async fn write(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    batch: RecordBatch,
    layout: Layout,
) -> Result<u64> {
    let bytes = tokio::task::spawn_blocking(move || encode(&batch, layout))
        .await
        .map_err(|e| Error::Internal(format!("parquet encoder panicked: {e}")))??;
    put(store, path, bytes).await
}

/// Stores an encoded file at `path`; returns its size.
pub async fn put(store: &Arc<dyn ObjectStore>, path: &Path, bytes: Vec<u8>) -> Result<u64> {
    let size = bytes.len() as u64;
    store
        .put(path, PutPayload::from(Bytes::from(bytes)))
        .await?;
    Ok(size)
}

/// A whole file's bytes, as stored (compressed). Its footer is read by [`batches`].
pub async fn fetch(store: &Arc<dyn ObjectStore>, path: &str) -> Result<Bytes> {
    Ok(store.get(&Path::from(path)).await?.bytes().await?)
}

/// Rows of a buffer chunk gathered (sorted) and encoded at a time: a multiple of
/// [`PAGE_ROWS`], so pages come out as from one batch.
const PERSIST_BATCH_ROWS: usize = 16 * PAGE_ROWS;

/// Encodes a buffer chunk as one Parquet file sorted by (tags, time), gathering the sorted
/// rows a slice at a time: what it holds besides the chunk is one slice and the encoded row
/// group, not a sorted copy of the chunk (CPU-bound: call from a blocking thread).
pub fn encode_chunk(def: &TableDef, chunk: &crate::buffer::Chunk) -> Result<Vec<u8>> {
    let order = chunk.sorted_rows(def);
    let mut out = Encoder::new(
        &def.arrow_schema(),
        chunk.bytes() / 8,
        Layout::of(&def.name),
    )?;
    for rows in order.chunks(PERSIST_BATCH_ROWS) {
        out.write(&chunk.gather(def, rows))?;
    }
    out.finish()
}

/// Rows read from one input of a merge at a time.
pub const MERGE_READ_ROWS: usize = 8192;

/// A stored file's rows ([`fetch`]'s bytes), [`MERGE_READ_ROWS`] at a time.
pub fn batches(bytes: Bytes) -> Result<parquet::arrow::arrow_reader::ParquetRecordBatchReader> {
    Ok(ParquetRecordBatchReaderBuilder::try_new(bytes)?
        .with_batch_size(MERGE_READ_ROWS)
        .build()?)
}

/// Merges files of one partition (their bytes as [`fetch`] returns them, oldest first; each
/// sorted by (tags, time)) into one sorted, deduplicated file, a batch at a time
/// ([`merge::merge_sorted`]): in memory, the inputs' compressed bytes, a batch of each, and
/// the output being encoded. Returns the file's bytes and rows (CPU-bound: call from a
/// blocking thread).
pub fn merge_files(
    def: &TableDef,
    schema: &SchemaRef,
    inputs: Vec<Bytes>,
) -> Result<(Vec<u8>, u64)> {
    let capacity = inputs.iter().map(Bytes::len).sum();
    let runs = inputs
        .into_iter()
        .map(batches)
        .collect::<Result<Vec<_>>>()?;
    let mut out = Encoder::new(schema, capacity, Layout::of(&def.name))?;
    let mut rows = 0u64;
    merge::merge_sorted(def, schema, runs, MERGE_READ_ROWS, |batch| {
        rows += batch.num_rows() as u64;
        out.write(&batch)
            .map_err(|e| arrow::error::ArrowError::ExternalError(Box::new(e)))
    })?;
    Ok((out.finish()?, rows))
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

#[cfg(test)]
mod tests {
    use arrow::array::{Float64Array, TimestampNanosecondArray};
    use arrow::datatypes::{Field, Schema, TimeUnit};
    use parquet::file::metadata::ParquetMetaDataReader;

    use super::*;

    /// 40,000 rows: `repeats` cycles through 10,000 distinct floats (too many for a
    /// dictionary; zstd finds the cycle), `constant` is one value (a dictionary of one,
    /// which zstd's frame only makes larger).
    fn batch() -> RecordBatch {
        let n = 40_000;
        let schema = Arc::new(Schema::new(vec![
            Field::new("repeats", DataType::Float64, true),
            Field::new("constant", DataType::Float64, true),
            Field::new(
                TIME_COLUMN,
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                false,
            ),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Float64Array::from_iter_values(
                    (0..n).map(|i| ((i % 10_000) as f64 * 0.7311).sin()),
                )),
                Arc::new(Float64Array::from_iter_values((0..n).map(|_| 400.0))),
                Arc::new(TimestampNanosecondArray::from_iter_values(
                    (0..n).map(|i| i as i64 * 10_000_000_000),
                )),
            ],
        )
        .unwrap()
    }

    fn footer(bytes: Vec<u8>) -> Arc<parquet::file::metadata::ParquetMetaData> {
        Arc::new(
            ParquetMetaDataReader::new()
                .parse_and_finish(&Bytes::from(bytes))
                .unwrap(),
        )
    }

    fn codecs(f: &parquet::file::metadata::ParquetMetaData) -> Vec<(String, Compression)> {
        f.row_group(0)
            .columns()
            .iter()
            .map(|c| (c.column_path().string(), c.compression()))
            .collect()
    }

    #[test]
    fn a_merge_stores_uncompressed_what_zstd_did_not_shrink() {
        let first = footer(encode(&batch(), Layout::Data).unwrap());
        // (A footer does not record zstd's level.)
        let c = codecs(&first);
        assert!(
            matches!(c[0].1, Compression::ZSTD(_)) && matches!(c[1].1, Compression::ZSTD(_)),
            "{c:?}"
        );
        assert_eq!(c[2], (TIME_COLUMN.into(), Compression::LZ4_RAW));
        let plain = plain_columns(&[first.clone(), first]);
        assert_eq!(plain, vec!["constant".to_string()]);
        // The merged file follows the choice.
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let b = batch();
        let schema = b.schema();
        tx.try_send(Part::Rows(b)).unwrap();
        tx.try_send(Part::End).unwrap();
        let mut out = Vec::new();
        encode_parts(&schema, &plain, rx, &mut out).unwrap();
        let merged = footer(out);
        let c = codecs(&merged);
        assert_eq!(c[1], ("constant".into(), Compression::UNCOMPRESSED));
        assert!(matches!(c[0].1, Compression::ZSTD(_)), "{c:?}");
        // Uncompressed inputs never turn a column back to zstd on a guess.
        assert_eq!(plain_columns(&[merged]), Vec::<String>::new());
    }

    #[test]
    fn a_rollup_file_has_lz4_fields_and_an_index_of_one_row_runs() {
        let gpu = arrow::array::DictionaryArray::<arrow::datatypes::Int32Type>::from_iter([
            "a", "b", "c",
        ]);
        let schema = Arc::new(Schema::new(vec![
            Field::new("gpu", crate::schema::tag_type(), true),
            Field::new("v", DataType::Float64, true),
            Field::new(
                TIME_COLUMN,
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                false,
            ),
        ]));
        let b = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(gpu),
                Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0])),
                Arc::new(TimestampNanosecondArray::from(vec![7, 7, 7])),
            ],
        )
        .unwrap();
        let has_index = |f: &parquet::file::metadata::ParquetMetaData| {
            f.file_metadata()
                .key_value_metadata()
                .is_some_and(|kv| kv.iter().any(|kv| kv.key == crate::series_index::KEY))
        };
        let rollup = footer(encode(&b, Layout::Rollup).unwrap());
        assert_eq!(
            codecs(&rollup),
            [
                ("gpu".into(), Compression::UNCOMPRESSED),
                ("v".into(), Compression::LZ4_RAW),
                (TIME_COLUMN.into(), Compression::LZ4_RAW),
            ]
        );
        assert!(has_index(&rollup));
        // Raw data with runs this short carries no index, and zstd fields.
        let data = footer(encode(&b, Layout::Data).unwrap());
        assert!(!has_index(&data));
        assert!(matches!(codecs(&data)[1].1, Compression::ZSTD(_)));
    }

    #[test]
    fn rows_that_stop_before_their_end_make_no_file() {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let b = batch();
        let schema = b.schema();
        tx.try_send(Part::Rows(b)).unwrap();
        drop(tx);
        let err = encode_parts(&schema, &[], rx, Vec::new()).unwrap_err();
        assert!(
            err.to_string().contains("stopped before their end"),
            "{err}"
        );
    }

    /// A streamed upload of many parts stores exactly the bytes written, durably through the
    /// local store's multipart path; a failing encoder leaves no object behind.
    #[tokio::test]
    async fn a_streamed_upload_stores_every_part_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(
            crate::durable::SyncedLocalStore::new(dir.path(), Arc::new(crate::durable::RealSync))
                .unwrap(),
        );
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let path = Path::from("tables/t/0/1.parquet");
        let written = data.clone();
        let (size, rows) = put_streamed(&store, &path, 1024, move |out| {
            use std::io::Write;
            // Uneven writes, crossing part boundaries.
            for piece in written.chunks(700) {
                out.write_all(piece)?;
            }
            Ok(7u64)
        })
        .await
        .unwrap();
        assert_eq!((size, rows), (data.len() as u64, 7));
        assert_eq!(fetch(&store, path.as_ref()).await.unwrap(), data);

        let failed = Path::from("tables/t/0/2.parquet");
        let err = put_streamed(&store, &failed, 1024, |out| {
            use std::io::Write;
            out.write_all(&[1u8; 5000])?;
            Err::<(), _>(Error::Internal("encoder failed".into()))
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("encoder failed"), "{err}");
        let missing = store.head(&failed).await;
        assert!(
            matches!(missing, Err(object_store::Error::NotFound { .. })),
            "{missing:?}"
        );
        let listed: Vec<_> = store.list(None).try_collect().await.unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
    }
}
