//! A k-way merge of sorted runs that holds one batch per run, not the runs.
//!
//! Compaction merges a partition's files, each already sorted by (tags, time) (persist sorts,
//! and so does every merge). [`super::merge`] concatenates them, sorts the whole and copies it
//! again: three copies of a partition in memory at once (an hour of 1,000 GPUs × 20 fields is
//! about 70 MB each). This reads each file a batch at a time, repeatedly takes the smallest
//! key among the runs' current rows, and emits output batches of a fixed size, with the same
//! answer as [`super::merge`]: rows with equal (tags, time) collapse into one taking, for each
//! field, the newest non-null value (later runs are newer; within a run, later rows), unless
//! the table is append-only.

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::compute::interleave;
use arrow::datatypes::SchemaRef;
use arrow::row::{OwnedRow, RowConverter, Rows, SortField};

use super::{Result, align};
use crate::schema::{ColumnKind, TableDef};

/// One input run: its current batch, that batch's keys in row form, and where it stands.
struct Cursor<I> {
    rest: I,
    /// Index of the current batch in [`Merger::held`].
    slot: usize,
    keys: Rows,
    row: usize,
    rows: usize,
}

struct Merger<'a> {
    def: &'a TableDef,
    schema: &'a SchemaRef,
    converter: RowConverter,
    /// Batches that output rows still point into: every cursor's current batch, and those
    /// finished since the last output batch was built.
    held: Vec<RecordBatch>,
    /// Per column, the (held batch, row) of each output row so far.
    picks: Vec<Vec<(usize, usize)>>,
    /// The key of the last output row.
    last: Option<OwnedRow>,
    is_field: Vec<bool>,
}

/// Merges `runs` (each yields batches in `schema`, `def`'s Arrow schema, sorted by (tags,
/// time); oldest run first) into batches of at most `batch_rows` rows, in order, passing each
/// to `emit`. Holds about one batch per run and one output batch.
pub fn merge_sorted<I>(
    def: &TableDef,
    schema: &SchemaRef,
    runs: Vec<I>,
    batch_rows: usize,
    mut emit: impl FnMut(RecordBatch) -> Result<()>,
) -> Result<()>
where
    I: Iterator<Item = Result<RecordBatch>>,
{
    let batch_rows = batch_rows.max(1);
    let key_cols: Vec<usize> = def.tag_indices().chain([def.time_index()]).collect();
    let converter = RowConverter::new(
        key_cols
            .iter()
            .map(|&i| SortField::new(schema.field(i).data_type().clone()))
            .collect(),
    )?;
    let mut m = Merger {
        def,
        schema,
        converter,
        held: Vec::new(),
        picks: vec![Vec::new(); schema.fields().len()],
        last: None,
        is_field: (0..schema.fields().len())
            .map(|i| {
                def.columns
                    .get(i)
                    .is_some_and(|c| matches!(c.kind, ColumnKind::Field(_)))
            })
            .collect(),
    };
    let mut cursors: Vec<Cursor<I>> = Vec::with_capacity(runs.len());
    for rest in runs {
        if let Some(c) = m.open(rest, &key_cols)? {
            cursors.push(c);
        }
    }
    loop {
        // The run whose current row has the smallest key; on a tie the older run (a lower
        // index), so equal keys come out oldest first.
        let mut min: Option<usize> = None;
        for (i, c) in cursors.iter().enumerate() {
            let better = match min {
                None => true,
                Some(j) => c.keys.row(c.row) < cursors[j].keys.row(cursors[j].row),
            };
            if better {
                min = Some(i);
            }
        }
        let Some(i) = min else { break };
        let (slot, row) = (cursors[i].slot, cursors[i].row);
        let key = cursors[i].keys.row(row);
        let same = !m.def.append_only && m.last.as_ref().is_some_and(|l| l.row() == key);
        if same {
            // Newer than what the output row holds: its non-null fields win.
            for (c, picks) in m.picks.iter_mut().enumerate() {
                if m.is_field[c] && m.held[slot].column(c).is_valid(row) {
                    *picks.last_mut().expect("a row was output") = (slot, row);
                }
            }
        } else {
            if m.picks[0].len() >= batch_rows {
                emit(m.flush(&mut cursors)?)?;
            }
            let slot = cursors[i].slot;
            for picks in &mut m.picks {
                picks.push((slot, row));
            }
            m.last = Some(cursors[i].keys.row(row).owned());
        }
        cursors[i].row += 1;
        if cursors[i].row == cursors[i].rows {
            // On to the run's next batch, or the run is done. (The finished batch stays held
            // until the output rows that point into it are built.)
            let run = cursors.remove(i);
            if let Some(next) = m.open(run.rest, &key_cols)? {
                cursors.insert(i, next);
            }
        }
    }
    if !m.picks[0].is_empty() {
        emit(m.flush(&mut cursors)?)?;
    }
    Ok(())
}

impl Merger<'_> {
    /// A cursor at the first row of `rest`'s next non-empty batch; `None` once it is done.
    fn open<I>(&mut self, mut rest: I, key_cols: &[usize]) -> Result<Option<Cursor<I>>>
    where
        I: Iterator<Item = Result<RecordBatch>>,
    {
        for batch in rest.by_ref() {
            let batch = align(&batch?, self.schema)?;
            if batch.num_rows() == 0 {
                continue;
            }
            let cols: Vec<ArrayRef> = key_cols.iter().map(|&i| batch.column(i).clone()).collect();
            let keys = self.converter.convert_columns(&cols)?;
            let rows = batch.num_rows();
            self.held.push(batch);
            return Ok(Some(Cursor {
                rest,
                slot: self.held.len() - 1,
                keys,
                row: 0,
                rows,
            }));
        }
        Ok(None)
    }

    /// Builds the output batch from the picks, then keeps only the batches cursors still
    /// read from.
    fn flush<I>(&mut self, cursors: &mut [Cursor<I>]) -> Result<RecordBatch> {
        let mut columns = Vec::with_capacity(self.picks.len());
        for (c, picks) in self.picks.iter_mut().enumerate() {
            let sources: Vec<&dyn Array> = self.held.iter().map(|b| b.column(c).as_ref()).collect();
            columns.push(interleave(&sources, picks)?);
            picks.clear();
        }
        let out = RecordBatch::try_new(self.schema.clone(), columns)?;
        let mut kept = Vec::with_capacity(cursors.len());
        for c in cursors.iter_mut() {
            kept.push(self.held[c.slot].clone());
            c.slot = kept.len() - 1;
        }
        self.held = kept;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{FieldValue, WriteBatch};
    use crate::schema::Schemas;

    /// A sorted run of `rows` (gpu tag, time, field values), as persist writes one.
    fn run(s: &Schemas, rows: &[(u8, i64, Option<i64>, Option<f64>)]) -> RecordBatch {
        let mut b = WriteBatch::default();
        for (gpu, t, n, u) in rows {
            let mut r = b.row("gpu", *t);
            r.tag("gpu", &format!("g{gpu}"));
            // A row needs a field: `seen` is always there.
            r.field("seen", FieldValue::I64(*t));
            if let Some(n) = n {
                r.field("n", FieldValue::I64(*n));
            }
            if let Some(u) = u {
                r.field("u", FieldValue::F64(*u));
            }
            r.finish(1).unwrap();
        }
        let (c, def) = crate::buffer::chunk::chunk_of(s, b);
        c.to_sorted_record_batch(&def)
    }

    fn split(batch: &RecordBatch, size: usize) -> Vec<Result<RecordBatch>> {
        (0..batch.num_rows())
            .step_by(size.max(1))
            .map(|o| Ok(batch.slice(o, size.min(batch.num_rows() - o))))
            .collect()
    }

    type Rows = Vec<(u8, i64, Option<i64>, Option<f64>)>;

    fn rows() -> impl proptest::strategy::Strategy<Value = Rows> {
        proptest::collection::vec(
            (
                0u8..3,
                0i64..12,
                proptest::option::of(-3i64..3),
                proptest::option::of(-2.0f64..2.0),
            ),
            1..40,
        )
    }

    proptest::proptest! {
        /// Any runs, read in batches of any size and merged into batches of any size, give
        /// exactly what the in-memory merge gives, deduplicated or (append-only) not.
        #[test]
        fn streaming_merge_equals_the_in_memory_merge(
            runs in proptest::collection::vec(rows(), 1..5),
            read in 1usize..7,
            out in 1usize..9,
            append_only in proptest::bool::ANY,
        ) {
            let s = if append_only { Schemas::new(vec!["gpu".into()]) } else { Schemas::default() };
            let runs: Vec<RecordBatch> = runs.iter().map(|r| run(&s, r)).collect();
            let def = s.get("gpu").unwrap();
            let schema = def.arrow_schema();
            let runs: Vec<RecordBatch> =
                runs.iter().map(|b| align(b, &schema).unwrap()).collect();
            let want = super::super::merge(&def, &schema, &runs).unwrap();
            let mut got = Vec::new();
            merge_sorted(
                &def,
                &schema,
                runs.iter().map(|b| split(b, read).into_iter()).collect(),
                out,
                |b| {
                    assert!(b.num_rows() <= out);
                    got.push(b);
                    Ok(())
                },
            )
            .unwrap();
            let got = arrow::compute::concat_batches(&schema, &got).unwrap();
            proptest::prop_assert_eq!(got, want);
        }
    }
}
