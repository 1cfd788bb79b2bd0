//! Random write workloads and the in-test model of what a table must contain afterwards.
//!
//! The model is deliberately naive: a map from (tag values, time) to the fields written so
//! far, merged field by field (last write wins per field), or a plain list for append-only
//! tables. The store must agree with it wherever its data lives.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rigwatch_storage::FieldValue;
use rigwatch_storage::WriteBatch;

use super::util::{Cell, EVENTS, Rows};

/// A field's type in the generated workload (each field keeps one type throughout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    F64,
    I64,
    U64,
    Bool,
    Str,
}

/// A table of the workload. Columns marked late only appear in the second half of the
/// batches, so the schema widens while data is already buffered and persisted.
#[derive(Debug)]
pub struct Spec {
    pub name: &'static str,
    pub append_only: bool,
    /// (name, late); the first tag is always present and is the GROUP BY key of aggregates.
    pub tags: &'static [(&'static str, bool)],
    /// (name, type, late).
    pub fields: &'static [(&'static str, Kind, bool)],
}

pub const SPECS: &[Spec] = &[
    Spec {
        name: "gpu",
        append_only: false,
        tags: &[("host", false), ("gpu", false), ("rack", true)],
        fields: &[
            ("util", Kind::F64, false),
            ("temp", Kind::I64, false),
            ("mem", Kind::U64, false),
            ("ok", Kind::Bool, false),
            ("model", Kind::Str, false),
            ("power", Kind::F64, true),
            ("clock", Kind::I64, true),
            ("note", Kind::Str, true),
        ],
    },
    Spec {
        name: "node",
        append_only: false,
        tags: &[("host", false)],
        fields: &[
            ("load", Kind::F64, false),
            ("procs", Kind::I64, false),
            ("up", Kind::Bool, false),
            ("kernel", Kind::Str, true),
        ],
    },
    Spec {
        name: EVENTS,
        append_only: true,
        tags: &[("host", false), ("kind", false)],
        fields: &[
            ("xid", Kind::I64, false),
            ("msg", Kind::Str, false),
            ("fatal", Kind::Bool, true),
            ("code", Kind::U64, true),
        ],
    },
];

/// A field value. Floats are multiples of 1/4 with small magnitude, so sums are exact in any
/// order and every path must return bit-identical aggregates.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    F64(f64),
    I64(i64),
    U64(u64),
    Bool(bool),
    Str(String),
}

impl Val {
    pub fn cell(&self) -> Cell {
        match self {
            Val::F64(x) => Cell::F64(*x),
            Val::I64(x) => Cell::I64(*x),
            Val::U64(x) => Cell::U64(*x),
            Val::Bool(x) => Cell::Bool(*x),
            Val::Str(x) => Cell::Str(x.clone()),
        }
    }

    fn as_field(&self) -> FieldValue<'_> {
        match self {
            Val::F64(x) => FieldValue::F64(*x),
            Val::I64(x) => FieldValue::I64(*x),
            Val::U64(x) => FieldValue::U64(*x),
            Val::Bool(x) => FieldValue::Bool(*x),
            Val::Str(x) => FieldValue::Str(x),
        }
    }
}

/// (table, tag values in spec order, time).
type Key = (usize, Vec<Option<String>>, i64);

/// One generated row.
#[derive(Debug, Clone)]
pub struct GenRow {
    pub table: usize,
    pub tags: Vec<Option<String>>,
    pub time: i64,
    pub fields: Vec<(&'static str, Val)>,
}

pub fn to_batch(rows: &[GenRow]) -> WriteBatch {
    let mut b = WriteBatch::default();
    for (i, r) in rows.iter().enumerate() {
        let spec = &SPECS[r.table];
        let mut row = b.row(spec.name, r.time);
        for ((name, _), v) in spec.tags.iter().zip(&r.tags) {
            if let Some(v) = v {
                row.tag(name, v);
            }
        }
        for (name, v) in &r.fields {
            row.field(name, v.as_field());
        }
        row.finish(i as u32 + 1).expect("generated rows are valid");
    }
    b
}

const STRINGS: &[&str] = &["", "H100 SXM", "ümlaut ✓", "a,b=c d", "with \"quote\"", "x"];
pub const SEC: i64 = 1_000_000_000;
/// Times fall in [-20 s, 60 s): eight 10 s partitions, two of them before the epoch.
pub const TIME_RANGE: std::ops::Range<i64> = -20 * SEC..60 * SEC;

fn value(rng: &mut StdRng, kind: Kind) -> Val {
    match kind {
        Kind::F64 => Val::F64(rng.random_range(-4000..4000) as f64 / 4.0),
        Kind::I64 => Val::I64(rng.random_range(-1_000_000..1_000_000)),
        Kind::U64 if rng.random_bool(0.2) => Val::U64(u64::MAX - rng.random_range(0..1000)),
        Kind::U64 => Val::U64(rng.random_range(0..1_000_000)),
        Kind::Bool => Val::Bool(rng.random_bool(0.5)),
        Kind::Str => Val::Str(STRINGS.choose(rng).expect("non-empty").to_string()),
    }
}

fn tag_value(rng: &mut StdRng, table: &str, tag: &str) -> String {
    match tag {
        "host" => format!("h{}", rng.random_range(0..3)),
        "gpu" => rng.random_range(0..4).to_string(),
        "rack" => format!("r{}", rng.random_range(0..2)),
        "kind" => ["xid", "ecc", "thermal"]
            .choose(rng)
            .expect("non-empty")
            .to_string(),
        _ => panic!("no generator for tag {table}.{tag}"),
    }
}

/// A workload: `batches` batches whose second half may use the late columns. About a third
/// of the rows rewrite an earlier key with a random subset of fields.
pub fn generate(seed: u64, batches: usize) -> Vec<Vec<GenRow>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut keys: Vec<Key> = Vec::new();
    let mut out = Vec::with_capacity(batches);
    for b in 0..batches {
        let late_ok = b >= batches / 2;
        let n = rng.random_range(10..60);
        let mut rows = Vec::with_capacity(n);
        for _ in 0..n {
            let table = rng.random_range(0..SPECS.len());
            let spec = &SPECS[table];
            let earlier: Vec<&Key> = keys.iter().filter(|k| k.0 == table).collect();
            let (tags, time) = match earlier.choose(&mut rng) {
                Some(k) if rng.random_bool(0.35) => (k.1.clone(), k.2),
                _ => {
                    let tags = spec
                        .tags
                        .iter()
                        .map(|(name, late)| {
                            (!*late || (late_ok && rng.random_bool(0.5)))
                                .then(|| tag_value(&mut rng, spec.name, name))
                        })
                        .collect();
                    let time = if rng.random_bool(0.1) {
                        // On a partition boundary, or a nanosecond either side of one.
                        rng.random_range(-2..6) * 10 * SEC + rng.random_range(-1..=1)
                    } else {
                        rng.random_range(TIME_RANGE)
                    };
                    (tags, time)
                }
            };
            let mut fields: Vec<(&'static str, Val)> = Vec::new();
            for (name, kind, late) in spec.fields {
                if (!*late || late_ok) && rng.random_bool(0.5) {
                    fields.push((name, value(&mut rng, *kind)));
                }
            }
            if fields.is_empty() {
                let (name, kind, _) = spec.fields[rng.random_range(0..2)];
                fields.push((name, value(&mut rng, kind)));
            }
            keys.push((table, tags.clone(), time));
            rows.push(GenRow {
                table,
                tags,
                time,
                fields,
            });
        }
        out.push(rows);
    }
    out
}

type FieldMap = BTreeMap<&'static str, Val>;

/// One table's expected content.
#[derive(Debug, Default, Clone)]
pub struct TableModel {
    upserts: BTreeMap<(Vec<Option<String>>, i64), FieldMap>,
    events: Vec<(Vec<Option<String>>, i64, FieldMap)>,
    /// Columns written so far (tags and fields).
    pub columns: Vec<&'static str>,
}

/// A model row: tag values, time, fields.
pub type ModelRow<'a> = (&'a [Option<String>], i64, &'a FieldMap);

impl TableModel {
    pub fn rows(&self) -> Vec<ModelRow<'_>> {
        self.upserts
            .iter()
            .map(|((t, time), f)| (t.as_slice(), *time, f))
            .chain(
                self.events
                    .iter()
                    .map(|(t, time, f)| (t.as_slice(), *time, f)),
            )
            .collect()
    }

    pub fn has(&self, column: &str) -> bool {
        self.columns.contains(&column)
    }
}

/// The expected content of every table.
#[derive(Debug, Clone)]
pub struct Model {
    pub tables: Vec<TableModel>,
}

impl Default for Model {
    fn default() -> Self {
        Self {
            tables: vec![TableModel::default(); SPECS.len()],
        }
    }
}

impl Model {
    pub fn apply(&mut self, rows: &[GenRow]) {
        for r in rows {
            let spec = &SPECS[r.table];
            let t = &mut self.tables[r.table];
            for ((name, _), v) in spec.tags.iter().zip(&r.tags) {
                if v.is_some() && !t.columns.contains(name) {
                    t.columns.push(name);
                }
            }
            for (name, _) in &r.fields {
                if !t.columns.contains(name) {
                    t.columns.push(name);
                }
            }
            let fields = r.fields.iter().cloned();
            if spec.append_only {
                t.events.push((r.tags.clone(), r.time, fields.collect()));
            } else {
                t.upserts
                    .entry((r.tags.clone(), r.time))
                    .or_default()
                    .extend(fields);
            }
        }
    }

    /// The value of `column` in a row of table `table`.
    pub fn cell(table: usize, row: &ModelRow<'_>, column: &str) -> Cell {
        let spec = &SPECS[table];
        if column == "time" {
            return Cell::Time(row.1);
        }
        if let Some(i) = spec.tags.iter().position(|(n, _)| *n == column) {
            return row.0[i].clone().map_or(Cell::Null, Cell::Str);
        }
        row.2.get(column).map_or(Cell::Null, Val::cell)
    }

    /// Rows of `table` passing `keep`, projected on `columns`.
    pub fn select(
        &self,
        table: usize,
        columns: &[String],
        keep: impl Fn(&ModelRow<'_>) -> bool,
    ) -> Rows {
        self.tables[table]
            .rows()
            .iter()
            .filter(|r| keep(r))
            .map(|r| columns.iter().map(|c| Self::cell(table, r, c)).collect())
            .collect()
    }
}
