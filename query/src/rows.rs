//! Query results read back by services (the allocator's leases and earnings, fault
//! detection's last health states, the agents' batch ids): typed access to Arrow columns by
//! name, with no JSON round trip and no per-row allocation.
//!
//! Each batch's columns are normalised once (strings and dictionaries to `Utf8`, integers
//! and timestamps to `Int64`, floats to `Float64`), then read per row. A reader says what it
//! needs: [`Row::i64`] is `None` for a missing column or a null, and [`Row::req_i64`] an error
//! naming the table's column and row, so a money field that is not there is an error, never 0.

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type};

use crate::{QueryService, Result};

/// A column a reader needed and did not find (missing, null or of another type).
#[derive(Debug, thiserror::Error)]
#[error("{what} row {row}: column `{column}` is {problem}")]
pub struct RowError {
    /// What was being read, e.g. `earnings`.
    pub what: String,
    pub row: usize,
    pub column: String,
    pub problem: &'static str,
}

/// The rows of one query.
#[derive(Debug, Default)]
pub struct Rows {
    what: String,
    batches: Vec<Batch>,
}

#[derive(Debug)]
struct Batch {
    rows: usize,
    columns: HashMap<String, Column>,
}

#[derive(Debug)]
enum Column {
    Str(ArrayRef),
    Int(ArrayRef),
    Float(ArrayRef),
    Bool(ArrayRef),
    Other,
}

impl Column {
    fn of(a: &ArrayRef) -> Self {
        let cast = |to: &DataType| arrow::compute::cast(a, to).ok();
        match a.data_type() {
            DataType::Utf8 => Column::Str(a.clone()),
            DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(..) => {
                cast(&DataType::Utf8).map_or(Column::Other, Column::Str)
            }
            DataType::Int64 => Column::Int(a.clone()),
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Timestamp(..) => cast(&DataType::Int64).map_or(Column::Other, Column::Int),
            DataType::Float64 => Column::Float(a.clone()),
            DataType::Float32 => cast(&DataType::Float64).map_or(Column::Other, Column::Float),
            DataType::Boolean => Column::Bool(a.clone()),
            _ => Column::Other,
        }
    }
}

impl Rows {
    /// Runs `sql` (unscoped: services read their own tables) and keeps its rows. `table` is the
    /// table it reads: when the store has no such table yet, the answer is no rows.
    pub async fn query(q: &QueryService, table: &str, sql: &str) -> Result<Rows> {
        if q.db().table(table).is_none() {
            return Ok(Rows {
                what: table.to_string(),
                batches: Vec::new(),
            });
        }
        let (_, batches) = q.sql(sql).await?;
        Ok(Rows::new(table, &batches))
    }

    /// Rows of `batches`; `what` names them in errors.
    pub fn new(what: &str, batches: &[RecordBatch]) -> Rows {
        let batches = batches
            .iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| Batch {
                rows: b.num_rows(),
                columns: b
                    .schema()
                    .fields()
                    .iter()
                    .zip(b.columns())
                    .map(|(f, a)| (f.name().clone(), Column::of(a)))
                    .collect(),
            })
            .collect();
        Rows {
            what: what.to_string(),
            batches,
        }
    }

    pub fn len(&self) -> usize {
        self.batches.iter().map(|b| b.rows).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every row, in the query's order.
    pub fn iter(&self) -> impl Iterator<Item = Row<'_>> {
        let mut n = 0;
        self.batches.iter().flat_map(move |b| {
            let first = n;
            n += b.rows;
            (0..b.rows).map(move |i| Row {
                what: &self.what,
                batch: b,
                i,
                n: first + i,
            })
        })
    }
}

/// One row of [`Rows`].
#[derive(Clone, Copy)]
pub struct Row<'a> {
    what: &'a str,
    batch: &'a Batch,
    i: usize,
    /// The row's number in the whole answer, for errors.
    n: usize,
}

impl<'a> Row<'a> {
    fn col(&self, name: &str) -> Option<&'a Column> {
        self.batch.columns.get(name)
    }

    fn valid(&self, a: &ArrayRef) -> bool {
        !a.is_null(self.i)
    }

    /// A string column's value; `None` when missing or null.
    pub fn str(&self, name: &str) -> Option<&'a str> {
        match self.col(name)? {
            Column::Str(a) if self.valid(a) => Some(a.as_string::<i32>().value(self.i)),
            _ => None,
        }
    }

    /// An integer column's value (timestamps in their unit); `None` when missing or null.
    pub fn i64(&self, name: &str) -> Option<i64> {
        match self.col(name)? {
            Column::Int(a) if self.valid(a) => Some(a.as_primitive::<Int64Type>().value(self.i)),
            _ => None,
        }
    }

    /// A float column's value (integers widened); `None` when missing or null.
    pub fn f64(&self, name: &str) -> Option<f64> {
        match self.col(name)? {
            Column::Float(a) if self.valid(a) => {
                Some(a.as_primitive::<Float64Type>().value(self.i))
            }
            Column::Int(a) if self.valid(a) => {
                Some(a.as_primitive::<Int64Type>().value(self.i) as f64)
            }
            _ => None,
        }
    }

    /// A boolean column's value; `None` when missing or null.
    pub fn bool(&self, name: &str) -> Option<bool> {
        match self.col(name)? {
            Column::Bool(a) if self.valid(a) => Some(a.as_boolean().value(self.i)),
            _ => None,
        }
    }

    fn missing(&self, name: &str) -> RowError {
        let problem = match self.col(name) {
            None => "missing",
            Some(Column::Other) => "of an unreadable type",
            Some(_) => "null or of another type",
        };
        RowError {
            what: self.what.to_string(),
            row: self.n,
            column: name.to_string(),
            problem,
        }
    }

    /// A string the reader cannot do without.
    pub fn req_str(&self, name: &str) -> std::result::Result<&'a str, RowError> {
        self.str(name).ok_or_else(|| self.missing(name))
    }

    /// An integer the reader cannot do without (money, times).
    pub fn req_i64(&self, name: &str) -> std::result::Result<i64, RowError> {
        self.i64(name).ok_or_else(|| self.missing(name))
    }

    /// A string column parsed as a number (ids are kept as tags, which are strings).
    pub fn req_id<T: std::str::FromStr>(&self, name: &str) -> std::result::Result<T, RowError> {
        self.req_str(name)?.parse().map_err(|_| RowError {
            what: self.what.to_string(),
            row: self.n,
            column: name.to_string(),
            problem: "not a number",
        })
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{DictionaryArray, Float64Array, Int32Array, Int64Array, StringArray};
    use arrow::datatypes::Int32Type;

    use std::sync::Arc;

    use super::*;

    fn batch() -> RecordBatch {
        let tag: DictionaryArray<Int32Type> = vec![Some("acme"), None].into_iter().collect();
        RecordBatch::try_from_iter([
            ("supplier", Arc::new(tag) as ArrayRef),
            (
                "amount_micro",
                Arc::new(Int64Array::from(vec![Some(1_500_000), None])) as ArrayRef,
            ),
            ("small", Arc::new(Int32Array::from(vec![7, 8])) as ArrayRef),
            (
                "util",
                Arc::new(Float64Array::from(vec![0.5, 1.0])) as ArrayRef,
            ),
            (
                "id",
                Arc::new(StringArray::from(vec!["42", "x"])) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    #[test]
    fn columns_are_read_by_name_and_type() {
        let rows = Rows::new("earnings", &[batch()]);
        assert_eq!(rows.len(), 2);
        let r: Vec<Row<'_>> = rows.iter().collect();
        assert_eq!(r[0].str("supplier"), Some("acme"));
        assert_eq!(r[1].str("supplier"), None);
        assert_eq!(r[0].req_i64("amount_micro").unwrap(), 1_500_000);
        assert_eq!(r[1].i64("small"), Some(8));
        assert_eq!(r[0].f64("small"), Some(7.0));
        assert_eq!(r[1].f64("util"), Some(1.0));
        assert_eq!(r[0].req_id::<u64>("id").unwrap(), 42);
    }

    #[test]
    fn a_missing_money_field_is_an_error_naming_it() {
        let rows = Rows::new("earnings", &[batch()]);
        let r: Vec<Row<'_>> = rows.iter().collect();
        let e = r[1].req_i64("amount_micro").unwrap_err().to_string();
        assert_eq!(
            e,
            "earnings row 1: column `amount_micro` is null or of another type"
        );
        let e = r[0]
            .req_i64("rate_micro_per_gpu_hour")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`rate_micro_per_gpu_hour` is missing"), "{e}");
        assert!(
            r[1].req_id::<u64>("id")
                .unwrap_err()
                .to_string()
                .contains("not a number")
        );
    }
}
