//! Growable typed columns of a buffer chunk, and their conversion to Arrow arrays.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::BooleanBufferBuilder;
use arrow::array::{
    ArrayRef, BooleanArray, DictionaryArray, Float64Array, Int32Array, Int64Array, StringArray,
    UInt64Array, new_null_array,
};
use arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::Int32Type;

use crate::batch::{FieldType, FieldValue};
use crate::schema::{ColumnKind, arrow_type};

const NULL_KEY: i32 = -1;

/// One column of a chunk. Every column holds exactly `rows` entries.
#[derive(Debug)]
pub enum Column {
    Tag {
        keys: Vec<i32>,
        dict: Vec<Box<str>>,
        index: HashMap<Box<str>, i32>,
    },
    F64 {
        values: Vec<f64>,
        valid: BooleanBufferBuilder,
    },
    I64 {
        values: Vec<i64>,
        valid: BooleanBufferBuilder,
    },
    U64 {
        values: Vec<u64>,
        valid: BooleanBufferBuilder,
    },
    Bool {
        values: BooleanBufferBuilder,
        valid: BooleanBufferBuilder,
    },
    Str {
        data: String,
        spans: Vec<(usize, usize)>,
        valid: BooleanBufferBuilder,
    },
}

impl Column {
    /// A column of `rows` nulls.
    pub fn new(kind: ColumnKind, rows: usize) -> Self {
        let mut valid = BooleanBufferBuilder::new(rows.max(16));
        valid.append_n(rows, false);
        match kind {
            ColumnKind::Tag => Column::Tag {
                keys: vec![NULL_KEY; rows],
                dict: Vec::new(),
                index: HashMap::new(),
            },
            ColumnKind::Field(FieldType::F64) => Column::F64 {
                values: vec![0.0; rows],
                valid,
            },
            ColumnKind::Field(FieldType::I64) => Column::I64 {
                values: vec![0; rows],
                valid,
            },
            ColumnKind::Field(FieldType::U64) => Column::U64 {
                values: vec![0; rows],
                valid,
            },
            ColumnKind::Field(FieldType::Bool) => {
                let mut values = BooleanBufferBuilder::new(rows.max(16));
                values.append_n(rows, false);
                Column::Bool { values, valid }
            }
            ColumnKind::Field(FieldType::Str) => Column::Str {
                data: String::new(),
                spans: vec![(0, 0); rows],
                valid,
            },
        }
    }

    /// Makes room for `additional` more rows without reallocating.
    pub fn reserve(&mut self, additional: usize) {
        match self {
            Column::Tag { keys, .. } => keys.reserve(additional),
            Column::F64 { values, valid } => {
                values.reserve(additional);
                valid.reserve(additional);
            }
            Column::I64 { values, valid } => {
                values.reserve(additional);
                valid.reserve(additional);
            }
            Column::U64 { values, valid } => {
                values.reserve(additional);
                valid.reserve(additional);
            }
            Column::Bool { values, valid } => {
                values.reserve(additional);
                valid.reserve(additional);
            }
            Column::Str { spans, valid, .. } => {
                spans.reserve(additional);
                valid.reserve(additional);
            }
        }
    }

    /// Appends one null entry.
    pub fn push_null(&mut self) {
        match self {
            Column::Tag { keys, .. } => keys.push(NULL_KEY),
            Column::F64 { values, valid } => {
                values.push(0.0);
                valid.append(false);
            }
            Column::I64 { values, valid } => {
                values.push(0);
                valid.append(false);
            }
            Column::U64 { values, valid } => {
                values.push(0);
                valid.append(false);
            }
            Column::Bool { values, valid } => {
                values.append(false);
                valid.append(false);
            }
            Column::Str { spans, valid, .. } => {
                spans.push((0, 0));
                valid.append(false);
            }
        }
    }

    /// Interns a tag value, returning its dictionary key.
    pub fn intern(&mut self, value: &str) -> i32 {
        let Column::Tag { dict, index, .. } = self else {
            unreachable!("intern on a field column");
        };
        if let Some(k) = index.get(value) {
            return *k;
        }
        let k = dict.len() as i32;
        dict.push(value.into());
        index.insert(value.into(), k);
        k
    }

    pub fn set_tag_key(&mut self, row: usize, key: i32) {
        if let Column::Tag { keys, .. } = self {
            keys[row] = key;
        }
    }

    /// Sets a field value. The value's type matches the column (validated upstream); returns
    /// the bytes of variable-length data added.
    pub fn set(&mut self, row: usize, value: FieldValue<'_>) -> usize {
        match (self, value) {
            (Column::F64 { values, valid }, FieldValue::F64(x)) => {
                values[row] = x;
                valid.set_bit(row, true);
            }
            (Column::I64 { values, valid }, FieldValue::I64(x)) => {
                values[row] = x;
                valid.set_bit(row, true);
            }
            (Column::U64 { values, valid }, FieldValue::U64(x)) => {
                values[row] = x;
                valid.set_bit(row, true);
            }
            (Column::Bool { values, valid }, FieldValue::Bool(x)) => {
                values.set_bit(row, x);
                valid.set_bit(row, true);
            }
            (Column::Str { data, spans, valid }, FieldValue::Str(s)) => {
                let start = data.len();
                data.push_str(s);
                spans[row] = (start, data.len());
                valid.set_bit(row, true);
                return s.len();
            }
            // Validation guarantees matching types; a mismatch is a bug, not data.
            (c, v) => debug_assert!(false, "type mismatch {c:?} {v:?}"),
        }
        0
    }

    /// Bytes per row of fixed-width storage, for memory accounting.
    pub fn row_width(&self) -> usize {
        match self {
            Column::Tag { .. } => 4,
            Column::F64 { .. } | Column::I64 { .. } | Column::U64 { .. } => 8,
            Column::Bool { .. } => 1,
            Column::Str { .. } => 16,
        }
    }

    /// Copies the column into an Arrow array.
    pub fn to_array(&self) -> ArrayRef {
        let nulls = |valid: &BooleanBufferBuilder| {
            let n = NullBuffer::new(valid.finish_cloned());
            (n.null_count() > 0).then_some(n)
        };
        match self {
            Column::Tag { keys, dict, .. } => {
                let key_nulls: NullBuffer = keys.iter().map(|k| *k != NULL_KEY).collect();
                let keys = Int32Array::new(
                    ScalarBuffer::from(keys.iter().map(|k| (*k).max(0)).collect::<Vec<i32>>()),
                    (key_nulls.null_count() > 0).then_some(key_nulls),
                );
                let values = StringArray::from_iter_values(dict.iter().map(|s| &**s));
                Arc::new(
                    DictionaryArray::<Int32Type>::try_new(keys, Arc::new(values))
                        .expect("keys are in range"),
                )
            }
            Column::F64 { values, valid } => {
                Arc::new(Float64Array::new(values.clone().into(), nulls(valid)))
            }
            Column::I64 { values, valid } => {
                Arc::new(Int64Array::new(values.clone().into(), nulls(valid)))
            }
            Column::U64 { values, valid } => {
                Arc::new(UInt64Array::new(values.clone().into(), nulls(valid)))
            }
            Column::Bool { values, valid } => {
                let v = values.finish_cloned();
                Arc::new(BooleanArray::new(v, nulls(valid)))
            }
            Column::Str { data, spans, valid } => {
                let mut bytes = String::with_capacity(data.len());
                let mut offsets = Vec::with_capacity(spans.len() + 1);
                offsets.push(0i32);
                for (i, (s, e)) in spans.iter().enumerate() {
                    if valid.get_bit(i) {
                        bytes.push_str(&data[*s..*e]);
                    }
                    offsets.push(bytes.len() as i32);
                }
                Arc::new(StringArray::new(
                    OffsetBuffer::new(ScalarBuffer::from(offsets)),
                    bytes.into_bytes().into(),
                    nulls(valid),
                ))
            }
        }
    }
}

impl Column {
    /// The column's entries at `rows`, in that order, as an Arrow array (one copy; used to
    /// persist a chunk in sorted order without an unsorted copy first).
    pub fn gather(&self, rows: &[u32]) -> ArrayRef {
        let nulls = |valid: &BooleanBufferBuilder| -> Option<NullBuffer> {
            let n: NullBuffer = rows.iter().map(|&r| valid.get_bit(r as usize)).collect();
            (n.null_count() > 0).then_some(n)
        };
        match self {
            Column::Tag { keys, dict, .. } => {
                let picked: Vec<i32> = rows.iter().map(|&r| keys[r as usize]).collect();
                let key_nulls: NullBuffer = picked.iter().map(|k| *k != NULL_KEY).collect();
                let keys = Int32Array::new(
                    ScalarBuffer::from(picked.into_iter().map(|k| k.max(0)).collect::<Vec<_>>()),
                    (key_nulls.null_count() > 0).then_some(key_nulls),
                );
                let values = StringArray::from_iter_values(dict.iter().map(|s| &**s));
                Arc::new(
                    DictionaryArray::<Int32Type>::try_new(keys, Arc::new(values))
                        .expect("keys are in range"),
                )
            }
            Column::F64 { values, valid } => Arc::new(Float64Array::new(
                rows.iter().map(|&r| values[r as usize]).collect(),
                nulls(valid),
            )),
            Column::I64 { values, valid } => Arc::new(Int64Array::new(
                rows.iter().map(|&r| values[r as usize]).collect(),
                nulls(valid),
            )),
            Column::U64 { values, valid } => Arc::new(UInt64Array::new(
                rows.iter().map(|&r| values[r as usize]).collect(),
                nulls(valid),
            )),
            Column::Bool { values, valid } => {
                let v = rows.iter().map(|&r| values.get_bit(r as usize)).collect();
                Arc::new(BooleanArray::new(v, nulls(valid)))
            }
            Column::Str { data, spans, valid } => Arc::new(
                rows.iter()
                    .map(|&r| {
                        let (s, e) = spans[r as usize];
                        valid.get_bit(r as usize).then(|| &data[s..e])
                    })
                    .collect::<StringArray>(),
            ),
        }
    }

    /// The tag value of `key` in this tag column's dictionary.
    pub fn tag_value(&self, key: i32) -> Option<&str> {
        match self {
            Column::Tag { dict, .. } if key != NULL_KEY => dict.get(key as usize).map(|s| &**s),
            _ => None,
        }
    }
}

/// An all-null array for a column the chunk has not seen yet.
pub fn null_array(kind: ColumnKind, rows: usize) -> ArrayRef {
    new_null_array(&arrow_type(kind), rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Array;

    #[test]
    fn columns_round_trip_to_arrow() {
        let mut c = Column::new(ColumnKind::Field(FieldType::Str), 1);
        c.push_null();
        c.set(1, FieldValue::Str("héllo"));
        let a = c.to_array();
        let a = a.as_any().downcast_ref::<StringArray>().unwrap();
        assert!(a.is_null(0));
        assert_eq!(a.value(1), "héllo");

        let mut t = Column::new(ColumnKind::Tag, 0);
        for v in ["a", "b", "a"] {
            t.push_null();
            let k = t.intern(v);
            let row = match &t {
                Column::Tag { keys, .. } => keys.len() - 1,
                _ => unreachable!(),
            };
            t.set_tag_key(row, k);
        }
        t.push_null();
        let a = t.to_array();
        assert_eq!(a.len(), 4);
        assert_eq!(a.null_count(), 1);
    }
}
