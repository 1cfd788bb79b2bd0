//! What the lowering knows of the world: the tables behind the source nouns, the caller's
//! view of their columns, and column types.

use arrow::datatypes::{DataType, SchemaRef};
use rigwatch_common::tables;

use crate::ast::Noun;

/// The schema under which a request registers the rows of its `promql(…)` sources.
pub const PROMQL_SCHEMA: &str = "dsl";

/// A table the SQL reads: a stored table in the default schema, or a `promql(…)` source's
/// rows in [`PROMQL_SCHEMA`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableRef {
    pub schema: Option<&'static str>,
    pub name: String,
}

impl TableRef {
    pub fn stored(name: &str) -> TableRef {
        TableRef {
            schema: None,
            name: name.to_string(),
        }
    }

    /// The table of the `index`-th `promql(…)` source of a query (counted in text order).
    pub fn promql(index: usize) -> TableRef {
        TableRef {
            schema: Some(PROMQL_SCHEMA),
            name: format!("promql_{index}"),
        }
    }

    /// The quoted SQL name.
    pub fn sql(&self) -> String {
        match self.schema {
            Some(s) => format!("{}.{}", quote(s), quote(&self.name)),
            None => quote(&self.name),
        }
    }
}

/// The caller's view of the tables. The server answers from the caller's scoped session,
/// so a field a caller may not read is an unknown field to it.
pub trait Catalog {
    /// The columns of `table` as the caller sees them; `None` if the caller sees no such
    /// table.
    fn schema(&self, table: &TableRef) -> Option<SchemaRef>;
}

impl<F: Fn(&TableRef) -> Option<SchemaRef>> Catalog for F {
    fn schema(&self, table: &TableRef) -> Option<SchemaRef> {
        self(table)
    }
}

impl Noun {
    /// The stored table behind the noun.
    pub fn table(self) -> &'static str {
        match self {
            Noun::Gpus => tables::GPU,
            Noun::Faults => tables::GPU_FAULT,
            Noun::Health => tables::GPU_HEALTH,
            Noun::Leases => tables::LEASE,
            Noun::Jobs => tables::JOB,
            Noun::Earnings => tables::EARNINGS,
            Noun::Heartbeats => tables::HEARTBEAT,
            Noun::Hosts => tables::HOST,
            Noun::Payouts => tables::PAYOUT,
        }
    }

    /// DSL names for columns: `amount` on earnings is the integer `amount_micro`.
    pub fn aliases(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Noun::Earnings | Noun::Payouts => &[("amount", "amount_micro")],
            _ => &[],
        }
    }

    /// The tags that identify one series of a telemetry source (for per-series functions
    /// such as `rate`); `None` for event sources.
    pub fn series_key(self) -> Option<&'static [&'static str]> {
        match self {
            // A GPU is (supplier, UUID).
            Noun::Gpus => Some(&["supplier", "gpu_uuid"]),
            Noun::Heartbeats | Noun::Hosts => Some(&["supplier", "worker"]),
            _ => None,
        }
    }
}

/// The type of a column or expression, as far as the lowering needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// A dictionary-encoded string tag.
    Tag,
    Str,
    Int,
    Float,
    Bool,
    Time,
    Interval,
    Null,
    /// Anything else (left to DataFusion to check).
    Other,
}

impl Ty {
    pub fn from_arrow(t: &DataType) -> Ty {
        match t {
            DataType::Dictionary(_, v) if Ty::from_arrow(v) == Ty::Str => Ty::Tag,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ty::Str,
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64 => Ty::Int,
            DataType::Float16 | DataType::Float32 | DataType::Float64 => Ty::Float,
            DataType::Boolean => Ty::Bool,
            DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => Ty::Time,
            DataType::Interval(_) | DataType::Duration(_) => Ty::Interval,
            DataType::Null => Ty::Null,
            _ => Ty::Other,
        }
    }

    /// Whether sums and averages make sense (unknown types get the benefit of the doubt).
    pub fn numeric(self) -> bool {
        matches!(self, Ty::Int | Ty::Float | Ty::Null | Ty::Other)
    }

    /// For messages: "a tag", "a number", ...
    pub fn describe(self) -> &'static str {
        match self {
            Ty::Tag => "a tag (text)",
            Ty::Str => "text",
            Ty::Int => "an integer",
            Ty::Float => "a number",
            Ty::Bool => "a boolean",
            Ty::Time => "a time",
            Ty::Interval => "a duration",
            Ty::Null => "null",
            Ty::Other => "a value",
        }
    }
}

/// A SQL identifier in double quotes.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A SQL string literal.
pub fn string_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A SQL interval literal for `ms` milliseconds: `INTERVAL '1 hours 30 minutes'`.
pub fn interval(ms: i64) -> String {
    const UNITS: [(&str, i64); 5] = [
        ("days", 86_400_000),
        ("hours", 3_600_000),
        ("minutes", 60_000),
        ("seconds", 1_000),
        ("milliseconds", 1),
    ];
    let mut parts = Vec::new();
    let mut rest = ms;
    for (unit, size) in UNITS {
        if rest >= size {
            parts.push(format!("{} {unit}", rest / size));
            rest %= size;
        }
    }
    if parts.is_empty() {
        parts.push("0 seconds".into());
    }
    format!("INTERVAL '{}'", parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_literals_are_quoted() {
        assert_eq!(quote("leases.supplier"), "\"leases.supplier\"");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
        assert_eq!(string_literal("it's"), "'it''s'");
        assert_eq!(TableRef::stored("gpu").sql(), "\"gpu\"");
        assert_eq!(TableRef::promql(2).sql(), "\"dsl\".\"promql_2\"");
    }

    #[test]
    fn intervals_spell_out_units() {
        assert_eq!(interval(300_000), "INTERVAL '5 minutes'");
        assert_eq!(interval(5_400_000), "INTERVAL '1 hours 30 minutes'");
        assert_eq!(
            interval(86_400_000 * 8 + 5),
            "INTERVAL '8 days 5 milliseconds'"
        );
        assert_eq!(interval(0), "INTERVAL '0 seconds'");
    }

    #[test]
    fn types_come_from_arrow() {
        let tag = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        assert_eq!(Ty::from_arrow(&tag), Ty::Tag);
        assert_eq!(Ty::from_arrow(&DataType::Int64), Ty::Int);
        assert_eq!(
            Ty::from_arrow(&DataType::Timestamp(
                arrow::datatypes::TimeUnit::Nanosecond,
                None
            )),
            Ty::Time
        );
        assert!(!Ty::Tag.numeric());
        assert!(Ty::Float.numeric());
    }
}
