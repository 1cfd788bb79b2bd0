//! Table definitions and write validation.
//!
//! A [`TableDef`] lists a table's tag and field columns in the order they first arrived; the
//! `time` column is implicit and always last in the Arrow schema. Schemas only widen: a column
//! never changes kind or type, so a row validated against an older definition stays valid.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::batch::{FieldType, Row, TIME_COLUMN, WriteBatch};
use crate::error::{ColumnDesc, Error};

/// Most columns a table may have (tags plus fields); a guard against runaway schemas.
pub const MAX_COLUMNS: usize = 1_000;

/// A column's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnKind {
    Tag,
    Field(FieldType),
}

impl ColumnKind {
    fn desc(self) -> ColumnDesc {
        match self {
            ColumnKind::Tag => ColumnDesc::Tag,
            ColumnKind::Field(t) => ColumnDesc::Field(t),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDef {
    pub name: String,
    pub kind: ColumnKind,
}

/// A table's definition. Immutable once shared; widening makes a new `Arc<TableDef>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDef {
    pub name: String,
    /// Event tables keep every row; others upsert on (series, time).
    pub append_only: bool,
    pub columns: Vec<ColumnDef>,
    #[serde(skip)]
    index: HashMap<String, usize>,
}

impl TableDef {
    pub fn new(name: impl Into<String>, append_only: bool) -> Self {
        Self {
            name: name.into(),
            append_only,
            columns: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// Rebuilds the name index (after deserialising).
    pub fn reindex(&mut self) {
        self.index = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Indices of the tag columns, in column order.
    pub fn tag_indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.kind == ColumnKind::Tag)
            .map(|(i, _)| i)
    }

    pub(crate) fn push(&mut self, name: &str, kind: ColumnKind) -> usize {
        let i = self.columns.len();
        self.columns.push(ColumnDef {
            name: name.to_string(),
            kind,
        });
        self.index.insert(name.to_string(), i);
        i
    }

    /// The Arrow schema: one column per [`ColumnDef`], then `time`.
    pub fn arrow_schema(&self) -> SchemaRef {
        let mut fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| Field::new(&c.name, arrow_type(c.kind), true))
            .collect();
        fields.push(Field::new(TIME_COLUMN, time_type(), false));
        Arc::new(Schema::new(fields))
    }

    /// Index of `time` in the Arrow schema.
    pub fn time_index(&self) -> usize {
        self.columns.len()
    }

    /// This definition widened by `other`'s columns that it lacks, appended in `other`'s
    /// order; `None` if it lacks none. Never reorders or drops a column, so data laid out
    /// by this definition (buffered chunks, sorted files) keeps its meaning. A column both
    /// have keeps this definition's kind: rows of the other kind are rejected where they are
    /// validated, as any type conflict is.
    pub fn widened_by(&self, other: &TableDef) -> Option<TableDef> {
        let mut missing = other
            .columns
            .iter()
            .filter(|c| self.column_index(&c.name).is_none())
            .peekable();
        missing.peek()?;
        let mut def = self.clone();
        for c in missing {
            def.push(&c.name, c.kind);
        }
        Some(def)
    }
}

pub fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, None)
}

pub fn tag_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

pub fn arrow_type(kind: ColumnKind) -> DataType {
    match kind {
        ColumnKind::Tag => tag_type(),
        ColumnKind::Field(FieldType::F64) => DataType::Float64,
        ColumnKind::Field(FieldType::I64) => DataType::Int64,
        ColumnKind::Field(FieldType::U64) => DataType::UInt64,
        ColumnKind::Field(FieldType::Bool) => DataType::Boolean,
        ColumnKind::Field(FieldType::Str) => DataType::Utf8,
    }
}

/// A batch whose rows all passed validation, with every tag and field resolved to its column.
#[derive(Debug, Clone)]
pub struct ValidatedBatch {
    pub batch: WriteBatch,
    /// Column index of each entry of the batch's tags, in batch order.
    pub tag_cols: Vec<u32>,
    /// Column index of each entry of the batch's fields, in batch order.
    pub field_cols: Vec<u32>,
    /// The definition each row was validated against (one entry per row).
    pub defs: Vec<Arc<TableDef>>,
}

/// A row that failed validation.
#[derive(Debug)]
pub struct RejectedRow {
    /// 1-based source line.
    pub line: u32,
    pub error: Error,
}

/// All table definitions. Cheap to read; widening takes the write lock briefly.
#[derive(Debug, Default)]
pub struct Schemas {
    tables: RwLock<HashMap<String, Arc<TableDef>>>,
    append_only: Vec<String>,
}

impl Schemas {
    /// `append_only` names the event tables whose rows are never deduplicated.
    pub fn new(append_only: Vec<String>) -> Self {
        Self {
            tables: RwLock::default(),
            append_only,
        }
    }

    pub fn load(&self, defs: impl IntoIterator<Item = TableDef>) {
        let mut tables = self.tables.write();
        for mut def in defs {
            def.reindex();
            tables.insert(def.name.clone(), Arc::new(def));
        }
    }

    /// Takes in definitions another node wrote: a table not known here is added; a known
    /// one only gains the columns it lacks ([`TableDef::widened_by`]), never a new order, so
    /// buffered data stays readable. Answers whether anything changed.
    pub fn merge(&self, defs: impl IntoIterator<Item = TableDef>) -> bool {
        let mut tables = self.tables.write();
        let mut changed = false;
        for mut def in defs {
            def.reindex();
            let next = match tables.get(&def.name) {
                None => def,
                Some(have) => match have.widened_by(&def) {
                    Some(wider) => wider,
                    None => continue,
                },
            };
            tables.insert(next.name.clone(), Arc::new(next));
            changed = true;
        }
        changed
    }

    pub fn get(&self, table: &str) -> Option<Arc<TableDef>> {
        self.tables.read().get(table).cloned()
    }

    pub fn all(&self) -> Vec<Arc<TableDef>> {
        let mut v: Vec<_> = self.tables.read().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<_> = self.tables.read().keys().cloned().collect();
        v.sort();
        v
    }

    /// Checks every row against the table definitions, widening them for new tables and
    /// columns. Rows with a type conflict are returned as rejected; the rest come back
    /// resolved. Widening is kept even if the write later fails (as in InfluxDB).
    pub fn validate(&self, batch: WriteBatch) -> (ValidatedBatch, Vec<RejectedRow>) {
        // Fast path: every table and column already known.
        {
            let tables = self.tables.read();
            if let Some(v) = try_resolve_all(&tables, &batch) {
                return (v.finish(batch), Vec::new());
            }
        }
        let mut tables = self.tables.write();
        let mut out = Resolved::with_capacity(&batch);
        let mut rejected = Vec::new();
        let mut keep = Vec::with_capacity(batch.len());
        for row in batch.rows() {
            let table = row.table();
            if table.contains(rigwatch_common::rollup::MARK) {
                rejected.push(RejectedRow {
                    line: row.line(),
                    error: Error::ReservedTable {
                        table: table.to_string(),
                    },
                });
                keep.push(false);
                continue;
            }
            if !tables.contains_key(table) {
                let append_only = self.append_only.iter().any(|t| t == table);
                tables.insert(
                    table.to_string(),
                    Arc::new(TableDef::new(table, append_only)),
                );
            }
            let def = tables.get_mut(table).expect("inserted above");
            match widen(def, &row) {
                Ok(()) => {
                    out.push_row(def, &row);
                    keep.push(true);
                }
                Err(error) => {
                    rejected.push(RejectedRow {
                        line: row.line(),
                        error,
                    });
                    keep.push(false);
                }
            }
        }
        let batch = if rejected.is_empty() {
            batch
        } else {
            let mut kept = WriteBatch::reused(batch.len(), 0);
            for (row, keep) in batch.rows().zip(keep) {
                if keep {
                    kept.push_row(row);
                }
            }
            batch.recycle();
            kept
        };
        (out.finish(batch), rejected)
    }
}

#[derive(Default)]
struct Resolved {
    tag_cols: Vec<u32>,
    field_cols: Vec<u32>,
    defs: Vec<Arc<TableDef>>,
}

impl Resolved {
    fn with_capacity(b: &WriteBatch) -> Self {
        let (_, rows, tags, fields) = b.parts();
        Self {
            tag_cols: Vec::with_capacity(tags.len()),
            field_cols: Vec::with_capacity(fields.len()),
            defs: Vec::with_capacity(rows.len()),
        }
    }

    /// Records a row that is known to fit `def`.
    fn push_row(&mut self, def: &Arc<TableDef>, row: &Row<'_>) {
        for (k, _) in row.tags() {
            self.tag_cols
                .push(def.column_index(k).expect("validated") as u32);
        }
        for (k, _) in row.fields() {
            self.field_cols
                .push(def.column_index(k).expect("validated") as u32);
        }
        self.defs.push(def.clone());
    }

    fn finish(self, batch: WriteBatch) -> ValidatedBatch {
        ValidatedBatch {
            batch,
            tag_cols: self.tag_cols,
            field_cols: self.field_cols,
            defs: self.defs,
        }
    }
}

/// Resolves every row without changing any definition; `None` if anything is new or wrong.
fn try_resolve_all(
    tables: &HashMap<String, Arc<TableDef>>,
    batch: &WriteBatch,
) -> Option<Resolved> {
    let mut out = Resolved::with_capacity(batch);
    let mut last: Option<&Arc<TableDef>> = None;
    for row in batch.rows() {
        let def = match last {
            Some(d) if d.name == row.table() => d,
            // A rollup table is never written directly: the slow path refuses the row.
            _ => tables
                .get(row.table())
                .filter(|d| !d.name.contains(rigwatch_common::rollup::MARK))?,
        };
        last = Some(def);
        for (k, _) in row.tags() {
            let i = def.column_index(k)?;
            if def.columns[i].kind != ColumnKind::Tag {
                return None;
            }
            out.tag_cols.push(i as u32);
        }
        for (k, v) in row.fields() {
            let i = def.column_index(k)?;
            if def.columns[i].kind != ColumnKind::Field(v.field_type()) {
                return None;
            }
            out.field_cols.push(i as u32);
        }
        out.defs.push(def.clone());
    }
    Some(out)
}

/// Checks `row` against `def`, adding any new columns. On a conflict `def` is unchanged.
fn widen(def: &mut Arc<TableDef>, row: &Row<'_>) -> Result<(), Error> {
    let mut new_cols: Vec<(&str, ColumnKind)> = Vec::new();
    let wanted = row.tags().map(|(k, _)| (k, ColumnKind::Tag)).chain(
        row.fields()
            .map(|(k, v)| (k, ColumnKind::Field(v.field_type()))),
    );
    for (name, kind) in wanted {
        match def.column_index(name) {
            Some(i) if def.columns[i].kind == kind => {}
            Some(i) => {
                return Err(Error::TypeConflict {
                    table: def.name.clone(),
                    column: name.to_string(),
                    existing: def.columns[i].kind.desc(),
                    attempted: kind.desc(),
                });
            }
            None => new_cols.push((name, kind)),
        }
    }
    if new_cols.is_empty() {
        return Ok(());
    }
    if def.columns.len() + new_cols.len() > MAX_COLUMNS {
        return Err(Error::TooManyColumns {
            table: def.name.clone(),
            limit: MAX_COLUMNS,
        });
    }
    let d = Arc::make_mut(def);
    for (name, kind) in new_cols {
        d.push(name, kind);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::FieldValue;

    #[allow(clippy::type_complexity)]
    fn batch(rows: &[(&str, &[(&str, &str)], &[(&str, FieldValue<'_>)])]) -> WriteBatch {
        let mut b = WriteBatch::default();
        for (i, (t, tags, fields)) in rows.iter().enumerate() {
            let mut r = b.row(t, i as i64);
            for (k, v) in *tags {
                r.tag(k, v);
            }
            for (k, v) in *fields {
                r.field(k, *v);
            }
            r.finish(i as u32 + 1).unwrap();
        }
        b
    }

    #[test]
    fn widens_and_rejects_conflicts_per_row() {
        let s = Schemas::default();
        let b = batch(&[
            ("gpu", &[("gpu", "0")], &[("util", FieldValue::F64(1.0))]),
            ("gpu", &[("gpu", "1")], &[("util", FieldValue::I64(1))]),
            ("gpu", &[("util", "x")], &[("temp", FieldValue::F64(1.0))]),
            ("gpu", &[("gpu", "2")], &[("mem", FieldValue::U64(3))]),
        ]);
        let (v, rejected) = s.validate(b);
        assert_eq!(v.batch.len(), 2);
        assert_eq!(
            rejected.iter().map(|r| r.line).collect::<Vec<_>>(),
            vec![2, 3]
        );
        let msg = rejected[0].error.to_string();
        assert!(msg.contains("`gpu`") && msg.contains("`util`"), "{msg}");
        assert!(msg.contains("float") && msg.contains("integer"), "{msg}");
        let def = s.get("gpu").unwrap();
        let names: Vec<_> = def.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["gpu", "util", "mem"]);
        assert_eq!(v.field_cols, vec![1, 2]);
        // Fast path once everything is known.
        let (v, rejected) = s.validate(batch(&[(
            "gpu",
            &[("gpu", "9")],
            &[("mem", FieldValue::U64(1))],
        )]));
        assert!(rejected.is_empty());
        assert_eq!(
            (v.tag_cols.clone(), v.field_cols.clone()),
            (vec![0], vec![2])
        );
    }

    #[test]
    fn arrow_schema_puts_time_last() {
        let s = Schemas::new(vec!["gpu_fault".into()]);
        s.validate(batch(&[(
            "gpu_fault",
            &[("gpu", "0")],
            &[("xid", FieldValue::I64(79))],
        )]));
        let def = s.get("gpu_fault").unwrap();
        assert!(def.append_only);
        let schema = def.arrow_schema();
        assert_eq!(schema.field(2).name(), "time");
        assert_eq!(schema.field(0).data_type(), &tag_type());
    }

    fn def(name: &str, cols: &[(&str, ColumnKind)]) -> TableDef {
        let mut d = TableDef::new(name, false);
        for (c, k) in cols {
            d.push(c, *k);
        }
        d
    }

    #[test]
    fn merging_another_nodes_definition_only_appends_columns() {
        let f64 = ColumnKind::Field(FieldType::F64);
        let schemas = Schemas::new(Vec::new());
        schemas.load([def("t", &[("gpu", ColumnKind::Tag), ("a", f64)])]);
        // Another node's order, a column this one lacks, and a column of another kind.
        let theirs = def(
            "t",
            &[
                ("b", ColumnKind::Field(FieldType::I64)),
                ("a", ColumnKind::Field(FieldType::Str)),
                ("gpu", ColumnKind::Tag),
                ("host", ColumnKind::Tag),
            ],
        );
        assert!(schemas.merge([theirs.clone(), def("u", &[("x", f64)])]));
        let t = schemas.get("t").unwrap();
        let names: Vec<_> = t
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.kind))
            .collect();
        assert_eq!(
            names,
            [
                ("gpu", ColumnKind::Tag),
                ("a", f64),
                ("b", ColumnKind::Field(FieldType::I64)),
                ("host", ColumnKind::Tag),
            ]
        );
        assert_eq!(t.column_index("host"), Some(3));
        assert!(schemas.get("u").is_some());
        // Nothing new: nothing changes.
        assert!(!schemas.merge([theirs]));
        assert!(t.widened_by(&def("t", &[("a", f64)])).is_none());
    }
}
