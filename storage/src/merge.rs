//! Sorting by (series, time) and merging overlapping data with last-write-wins per field.
//!
//! Used by persist (sort a chunk), compaction (merge a partition's files) and queries (merge a
//! partition whose files and buffered rows overlap). Inputs are ordered oldest first; for each
//! (tag set, time) the newest non-null value of every field wins, matching what the buffer's
//! upsert does on arrival, so results are identical before and after persist and compaction.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, UInt32Array, new_null_array};
use arrow::compute::{SortColumn, SortOptions, cast, concat_batches, lexsort_to_indices, take};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::row::{RowConverter, SortField};

use crate::schema::{ColumnKind, TableDef};

type Result<T> = std::result::Result<T, ArrowError>;

mod stream;
pub use stream::merge_sorted;

/// Reshapes `batch` to `schema`: columns matched by name, cast where the type differs (e.g. a
/// Parquet file read back without dictionaries), and all-null where the batch lacks them.
pub fn align(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema() == *schema {
        return Ok(batch.clone());
    }
    let rows = batch.num_rows();
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            Some(c) => cast(c, f.data_type()),
            None => Ok(new_null_array(f.data_type(), rows)),
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

fn key_columns(def: &TableDef, batch: &RecordBatch) -> Vec<ArrayRef> {
    let mut keys: Vec<ArrayRef> = def.tag_indices().map(|i| batch.column(i).clone()).collect();
    keys.push(batch.column(def.time_index()).clone());
    keys
}

fn sort_indices(keys: &[ArrayRef], with_seq: bool) -> Result<UInt32Array> {
    let opts = SortOptions {
        descending: false,
        nulls_first: true,
    };
    let mut cols: Vec<SortColumn> = keys
        .iter()
        .map(|k| SortColumn {
            values: k.clone(),
            options: Some(opts),
        })
        .collect();
    if with_seq {
        let n = keys.first().map_or(0, |k| k.len()) as u32;
        cols.push(SortColumn {
            values: Arc::new(UInt32Array::from_iter_values(0..n)),
            options: Some(opts),
        });
    }
    lexsort_to_indices(&cols, None)
}

fn take_all(batch: &RecordBatch, idx: &UInt32Array) -> Result<RecordBatch> {
    let cols = batch
        .columns()
        .iter()
        .map(|c| take(c, idx, None))
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(batch.schema(), cols)
}

/// Sorts a batch (in `def`'s Arrow schema) by tag columns then time. The batch must already be
/// free of duplicates (a buffer chunk is).
pub fn sort(def: &TableDef, batch: &RecordBatch) -> Result<RecordBatch> {
    if batch.num_rows() <= 1 {
        return Ok(batch.clone());
    }
    let idx = sort_indices(&key_columns(def, batch), false)?;
    take_all(batch, &idx)
}

/// Merges `batches` (each in `schema`, which is `def`'s Arrow schema; oldest first) into one
/// batch sorted by (tags, time). Unless the table is append-only, rows with the same tags and
/// time collapse into one, taking for each field the newest non-null value.
pub fn merge(def: &TableDef, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<RecordBatch> {
    let all = concat_batches(schema, batches)?;
    if all.num_rows() <= 1 {
        return Ok(all);
    }
    let idx = sort_indices(&key_columns(def, &all), true)?;
    let sorted = take_all(&all, &idx)?;
    if def.append_only {
        return Ok(sorted);
    }

    // Group boundaries: adjacent rows with equal (tags, time).
    let keys = key_columns(def, &sorted);
    let converter = RowConverter::new(
        keys.iter()
            .map(|k| SortField::new(k.data_type().clone()))
            .collect(),
    )?;
    let rows = converter.convert_columns(&keys)?;
    let n = sorted.num_rows();
    let mut starts: Vec<u32> = Vec::with_capacity(n);
    starts.push(0);
    for i in 1..n {
        if rows.row(i) != rows.row(i - 1) {
            starts.push(i as u32);
        }
    }
    if starts.len() == n {
        return Ok(sorted);
    }

    let ends: Vec<u32> = starts[1..].iter().copied().chain([n as u32]).collect();
    let first = UInt32Array::from(starts.clone());
    let mut columns = Vec::with_capacity(sorted.num_columns());
    for (i, col) in sorted.columns().iter().enumerate() {
        let is_field = def
            .columns
            .get(i)
            .is_some_and(|c| matches!(c.kind, ColumnKind::Field(_)));
        if !is_field || col.null_count() == 0 {
            // Tags and time are equal within a group; a field without nulls takes the newest.
            let pick = if is_field {
                UInt32Array::from(ends.iter().map(|e| e - 1).collect::<Vec<_>>())
            } else {
                first.clone()
            };
            columns.push(take(col, &pick, None)?);
            continue;
        }
        let pick: UInt32Array = starts
            .iter()
            .zip(&ends)
            .map(|(&s, &e)| {
                (s..e)
                    .rev()
                    .find(|&r| col.is_valid(r as usize))
                    .unwrap_or(e - 1)
            })
            .collect::<Vec<u32>>()
            .into();
        columns.push(take(col, &pick, None)?);
    }
    RecordBatch::try_new(sorted.schema(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{FieldValue, WriteBatch};
    use crate::schema::Schemas;
    use arrow::util::pretty::pretty_format_batches;

    #[allow(clippy::type_complexity)]
    fn chunk_batch(s: &Schemas, rows: &[(&str, i64, &[(&str, FieldValue<'_>)])]) -> RecordBatch {
        let mut b = WriteBatch::default();
        for (tag, t, fields) in rows {
            let mut r = b.row("gpu", *t);
            r.tag("gpu", tag);
            for (k, v) in *fields {
                r.field(k, *v);
            }
            r.finish(1).unwrap();
        }
        let (c, def) = crate::buffer::chunk::chunk_of(s, b);
        c.to_record_batch(&def)
    }

    #[test]
    fn merge_takes_newest_non_null_per_field() {
        let s = Schemas::default();
        let old = chunk_batch(
            &s,
            &[
                (
                    "b",
                    1,
                    &[("u", FieldValue::F64(1.0)), ("t", FieldValue::I64(10))],
                ),
                ("a", 2, &[("u", FieldValue::F64(5.0))]),
            ],
        );
        let new = chunk_batch(&s, &[("b", 1, &[("u", FieldValue::F64(2.0))])]);
        let def = s.get("gpu").unwrap();
        let schema = def.arrow_schema();
        let old = align(&old, &schema).unwrap();
        let new = align(&new, &schema).unwrap();
        let out = merge(&def, &schema, &[old, new]).unwrap();
        let expected = "\
+-----+-----+----+-------------------------------+
| gpu | u   | t  | time                          |
+-----+-----+----+-------------------------------+
| a   | 5.0 |    | 1970-01-01T00:00:00.000000002 |
| b   | 2.0 | 10 | 1970-01-01T00:00:00.000000001 |
+-----+-----+----+-------------------------------+";
        assert_eq!(pretty_format_batches(&[out]).unwrap().to_string(), expected);
    }
}
