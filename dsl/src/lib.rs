//! rigwatch's analyst language: a small pipe DSL for utilization, earnings and faults.
//!
//! ```text
//!  "gpus[5m] | stats avg(utilization) by model | sort avg_utilization desc"
//!        │
//!     parse (nom) ──► Query (AST, byte spans) ──► lower ──► one SQL statement
//!                                                  ▲              │
//!                     Catalog: the caller's own ───┘              ▼
//!                     table schemas                 the caller's scoped SQL session
//! ```
//!
//! A pipeline is a source (`gpus`, `faults`, `health`, `leases`, `jobs`, `earnings`,
//! `heartbeats`, `hosts`, `payouts`, or `promql("…")`) with an optional time range, then stages separated by
//! `|`. It lowers to ONE SQL statement over the same tables as `/api/v1/sql`, and the server
//! runs it in the caller's scoped session: a supplier sees only its own rows through the
//! DSL exactly as through SQL, because the scoping is below both. Field names are checked
//! against the schemas the caller's session shows, so a misspelt field is an error with a
//! position and a suggestion, not a planner message.
//!
//! `docs/dsl.md` is the language reference.

pub mod ast;
pub mod catalog;
pub mod error;
mod lower;
mod parser;
mod suggest;

pub use ast::Query;
pub use catalog::{Catalog, PROMQL_SCHEMA, TableRef, Ty};
pub use error::{Error, Pos};
pub use lower::{Lowered, lower};
pub use parser::{STAGES, parse};
pub use suggest::{edit_distance, nearest};

use ast::{Source, SourceKind, Span, StageKind, TimeRange};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A `promql(…)` source of a query, which the server evaluates before the SQL runs and
/// registers as [`PromqlSource::table`].
#[derive(Debug, Clone)]
pub struct PromqlSource<'q> {
    /// Where the rows must be registered for the lowered SQL to find them.
    pub table: TableRef,
    /// The PromQL expression.
    pub expr: &'q str,
    pub step_ms: Option<i64>,
    pub range: Option<&'q TimeRange>,
    pub span: Span,
}

/// Without a range, a `promql(…)` source covers the last hour.
pub const PROMQL_DEFAULT_RANGE_MS: i64 = 3_600_000;
/// Without a step, a `promql(…)` source has about this many points per series.
pub const PROMQL_DEFAULT_POINTS: i64 = 250;

impl PromqlSource<'_> {
    /// `(start, end, step)` in Unix milliseconds for a query made at `now_ms`.
    pub fn window(&self, now_ms: i64) -> (i64, i64, i64) {
        let (start, end) = match self.range {
            Some(TimeRange::Last(d)) => (now_ms.saturating_sub(d.ms), now_ms),
            Some(TimeRange::Between { from, to, .. }) => (from.unix_ms(), to.unix_ms()),
            None => (now_ms - PROMQL_DEFAULT_RANGE_MS, now_ms),
        };
        let step = self.step_ms.unwrap_or_else(|| {
            // Whole seconds, at least one.
            let raw = (end - start) / PROMQL_DEFAULT_POINTS;
            ((raw + 999) / 1000).max(1) * 1000
        });
        (start, end, step)
    }
}

impl Query {
    /// Whether the SQL is asked for instead of the rows (`explain` first or last).
    pub fn is_explain(&self) -> bool {
        self.explain
            || self
                .stages
                .last()
                .is_some_and(|s| s.kind == StageKind::Explain)
    }

    /// Every source in text order: the pipeline's own, then each joined one (a joined
    /// pipeline's own sources in their place).
    pub fn sources(&self) -> Vec<&Source> {
        let mut out = vec![&self.source];
        for s in &self.stages {
            if let StageKind::Join { source, .. } = &s.kind {
                match &source.kind {
                    SourceKind::Pipeline(q) => out.extend(q.sources()),
                    _ => out.push(source),
                }
            }
        }
        out
    }

    /// The `promql(…)` sources, numbered as the lowering numbers their tables.
    pub fn promql_sources(&self) -> Vec<PromqlSource<'_>> {
        self.sources()
            .into_iter()
            .filter_map(|s| match &s.kind {
                SourceKind::Promql { expr, step } => Some((s, expr, step)),
                SourceKind::Table(_) | SourceKind::Pipeline(_) => None,
            })
            .enumerate()
            .map(|(i, (s, expr, step))| PromqlSource {
                table: TableRef::promql(i),
                expr,
                step_ms: step.map(|d| d.ms),
                range: s.range.as_ref(),
                span: s.span,
            })
            .collect()
    }

    /// The stored tables the query reads.
    pub fn stored_tables(&self) -> Vec<TableRef> {
        let mut out: Vec<TableRef> = Vec::new();
        for s in self.sources() {
            if let SourceKind::Table(n) = s.kind {
                let t = TableRef::stored(n.table());
                if !out.contains(&t) {
                    out.push(t);
                }
            }
        }
        out
    }
}

/// One function of the language, as an editor's completion shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionDoc {
    pub name: &'static str,
    /// `scalar` (anywhere), `aggregate` (a `stats` item), `per-series` (inside an
    /// aggregate, on a telemetry source) or `bucket` (a `stats … by` key).
    pub kind: &'static str,
    /// How the arguments read: "one argument", "a duration, e.g. bucket(1h)".
    pub arity: &'static str,
}

/// Every function of the language, from the one table the lowering checks calls against.
pub fn functions() -> impl Iterator<Item = FunctionDoc> {
    lower::functions::FUNCTIONS.iter().map(|f| FunctionDoc {
        name: f.name,
        kind: f.kind.word(),
        arity: f.arity,
    })
}

/// Parses and lowers `text` in one go (for callers without `promql(…)` sources to
/// evaluate in between).
pub fn to_sql(text: &str, catalog: &dyn Catalog) -> Result<Lowered> {
    let query = parse(text)?;
    lower(text, &query, catalog)
}
