//! The syntax tree of a pipeline. Every node keeps the byte span it was parsed from, so that
//! errors found later (an unknown field, a misplaced aggregate) still point into the text.
//!
//! `Display` renders a tree back to query text that parses to the same tree (spans aside).

use std::fmt;

/// A byte range of the query text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// From the start of `self` to the end of `other`.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start, other.end)
    }
}

/// A parsed query: an optional `explain`, a source and its stages.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// `explain` before the source or as the last stage: return the SQL, do not run it.
    pub explain: bool,
    pub source: Source,
    pub stages: Vec<Stage>,
}

/// The domain nouns a pipeline reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Noun {
    Gpus,
    Faults,
    Health,
    Leases,
    Jobs,
    Earnings,
    Heartbeats,
    Hosts,
    Payouts,
}

impl Noun {
    pub const ALL: [Noun; 9] = [
        Noun::Gpus,
        Noun::Faults,
        Noun::Health,
        Noun::Leases,
        Noun::Jobs,
        Noun::Earnings,
        Noun::Heartbeats,
        Noun::Hosts,
        Noun::Payouts,
    ];

    /// The word in the query.
    pub fn name(self) -> &'static str {
        match self {
            Noun::Gpus => "gpus",
            Noun::Faults => "faults",
            Noun::Health => "health",
            Noun::Leases => "leases",
            Noun::Jobs => "jobs",
            Noun::Earnings => "earnings",
            Noun::Heartbeats => "heartbeats",
            Noun::Hosts => "hosts",
            Noun::Payouts => "payouts",
        }
    }

    pub fn from_name(name: &str) -> Option<Noun> {
        Noun::ALL.into_iter().find(|n| n.name() == name)
    }
}

/// Where rows come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    /// A stored table, by its domain noun.
    Table(Noun),
    /// `promql("<expr>", step=<d>)`: a PromQL range query's result as rows.
    Promql {
        expr: String,
        /// The resolution; `None` lets the server choose.
        step: Option<Duration>,
    },
    /// `(<pipeline>)`: a whole pipeline's result, as the right side of a `join`.
    Pipeline(Box<Query>),
}

/// A source with its optional time range: `gpus[5m]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub kind: SourceKind,
    pub range: Option<TimeRange>,
    pub span: Span,
}

impl Source {
    /// The qualifier of this source's fields after a join: its noun, or `promql`.
    pub fn qualifier(&self) -> &'static str {
        match &self.kind {
            SourceKind::Table(n) => n.name(),
            SourceKind::Promql { .. } => "promql",
            SourceKind::Pipeline(q) => q.source.qualifier(),
        }
    }
}

/// A duration: `5m`, `1h30m`, `250ms`; held in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration {
    pub ms: i64,
    pub span: Span,
}

/// A time range of a source.
#[derive(Debug, Clone, PartialEq)]
pub enum TimeRange {
    /// `[5m]`: from that long before now until now.
    Last(Duration),
    /// `[2026-11-01 .. 2026-12-01]`: from the first time (inclusive) to the second
    /// (exclusive), UTC.
    Between {
        from: Timestamp,
        to: Timestamp,
        span: Span,
    },
}

/// A UTC calendar time, `YYYY-MM-DD` with optional `THH:MM[:SS]` (or a space instead of `T`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl Timestamp {
    /// `2026-11-01 00:00:00`, the form SQL's `TIMESTAMP '…'` reads.
    pub fn sql(&self) -> String {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_ms(&self) -> i64 {
        // Days from civil (Howard Hinnant's algorithm).
        let (y, m, d) = (
            i64::from(self.year) - i64::from(self.month <= 2),
            i64::from(self.month),
            i64::from(self.day),
        );
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        let secs = days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second);
        secs * 1000
    }
}

/// One `|`-separated stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub kind: StageKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StageKind {
    /// `where <expr>`
    Where(Expr),
    /// `extend <name> = <expr>, …`
    Extend(Vec<Assign>),
    /// `stats <agg> [as <name>], … [by <key> [as <name>], …]`
    Stats { aggs: Vec<Named>, by: Vec<Named> },
    /// `join [left] <source> on <key>, …`; `left` keeps the rows that match nothing.
    Join {
        source: Source,
        on: Vec<JoinKey>,
        left: bool,
    },
    /// `sort <field> [asc|desc], …`
    Sort(Vec<SortKey>),
    /// `top <n> by <field>`: the `n` rows with the largest values.
    Top { n: u64, by: FieldRef },
    /// `select <field>, …`
    Select(Vec<FieldRef>),
    /// `fill [<value>]` after a `stats … by bucket(…)`: a row for every bucket of every
    /// key, the missing ones with `value` (0 when not given; `null` adds rows only).
    Fill(Option<Expr>),
    /// `explain`: the SQL instead of the rows.
    Explain,
}

/// `<name> = <expr>` of `extend`.
#[derive(Debug, Clone, PartialEq)]
pub struct Assign {
    pub name: Ident,
    pub value: Expr,
}

/// An expression with an optional `as <name>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Named {
    pub expr: Expr,
    pub alias: Option<Ident>,
}

/// `gpu_uuid` (the same name on both sides) or `left == right`.
#[derive(Debug, Clone, PartialEq)]
pub enum JoinKey {
    Same(FieldRef),
    Pair(FieldRef, FieldRef),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    pub field: FieldRef,
    pub desc: bool,
}

/// A plain name (a new column, a function).
#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A field, optionally qualified by a source: `temperature`, `gpus.temperature`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldRef {
    pub qualifier: Option<String>,
    pub name: String,
    pub span: Span,
}

impl FieldRef {
    /// `q.name` or `name`.
    pub fn full(&self) -> String {
        match &self.qualifier {
            Some(q) => format!("{q}.{}", self.name),
            None => self.name.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Field(FieldRef),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Null,
    /// A duration literal (`5m`), for time arithmetic and `bucket(…)`.
    Duration(i64),
    /// A UTC time literal: `2026-11-02`, `2026-11-02T02:30`.
    Time(Timestamp),
    Unary {
        op: UnaryOp,
        expr: Box<Expr>,
    },
    Binary {
        op: BinOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    /// `x in (a, b)`, `x not in (a, b)`
    In {
        expr: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    Call {
        name: Ident,
        args: Vec<Expr>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    Not,
    Neg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Or,
    And,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    Add,
    Sub,
    Mul,
    Div,
}

impl BinOp {
    /// Binding strength: higher binds tighter.
    pub fn precedence(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And => 2,
            BinOp::Eq | BinOp::NotEq | BinOp::Lt | BinOp::LtEq | BinOp::Gt | BinOp::GtEq => 4,
            BinOp::Add | BinOp::Sub => 5,
            BinOp::Mul | BinOp::Div => 6,
        }
    }

    /// The operator in SQL.
    pub fn sql(self) -> &'static str {
        match self {
            BinOp::Or => "OR",
            BinOp::And => "AND",
            BinOp::Eq => "=",
            BinOp::NotEq => "<>",
            BinOp::Lt => "<",
            BinOp::LtEq => "<=",
            BinOp::Gt => ">",
            BinOp::GtEq => ">=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
        }
    }

    /// The operator in the DSL.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "or",
            BinOp::And => "and",
            BinOp::Eq => "==",
            BinOp::NotEq => "!=",
            BinOp::Lt => "<",
            BinOp::LtEq => "<=",
            BinOp::Gt => ">",
            BinOp::GtEq => ">=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
        }
    }
}

/// Precedence of `not` (between `and` and comparisons) and of `in` (a comparison).
pub const NOT_PRECEDENCE: u8 = 3;
pub const IN_PRECEDENCE: u8 = 4;
/// Unary minus binds tighter than any binary operator.
pub const NEG_PRECEDENCE: u8 = 7;

impl Expr {
    fn precedence(&self) -> u8 {
        match &self.kind {
            ExprKind::Binary { op, .. } => op.precedence(),
            ExprKind::Unary {
                op: UnaryOp::Not, ..
            } => NOT_PRECEDENCE,
            ExprKind::Unary {
                op: UnaryOp::Neg, ..
            } => NEG_PRECEDENCE,
            ExprKind::In { .. } => IN_PRECEDENCE,
            // A negative literal renders with its sign: treat it like a negation.
            ExprKind::Int(v) if *v < 0 => NEG_PRECEDENCE,
            ExprKind::Float(v) if v.is_sign_negative() => NEG_PRECEDENCE,
            _ => u8::MAX,
        }
    }

    /// Renders `self`, in parentheses when it binds looser than `min`.
    fn fmt_at(&self, f: &mut fmt::Formatter<'_>, min: u8) -> fmt::Result {
        if self.precedence() < min {
            write!(f, "(")?;
            self.fmt_at(f, 0)?;
            return write!(f, ")");
        }
        match &self.kind {
            ExprKind::Field(r) => write!(f, "{r}"),
            ExprKind::Str(s) => write_string(f, s),
            ExprKind::Int(v) => write!(f, "{v}"),
            ExprKind::Float(v) => write!(f, "{v:?}"),
            ExprKind::Bool(b) => write!(f, "{b}"),
            ExprKind::Null => write!(f, "null"),
            ExprKind::Duration(ms) => write_duration(f, *ms),
            ExprKind::Time(t) => write!(f, "{t}"),
            ExprKind::Unary { op, expr } => match op {
                UnaryOp::Not => {
                    write!(f, "not ")?;
                    expr.fmt_at(f, NOT_PRECEDENCE)
                }
                UnaryOp::Neg => {
                    write!(f, "-")?;
                    // `--x` would not lex as two minus signs everywhere: keep them apart.
                    expr.fmt_at(f, NEG_PRECEDENCE + 1)
                }
            },
            ExprKind::Binary { op, left, right } => {
                let p = op.precedence();
                // Comparisons do not chain: both sides bind tighter.
                let left_min = if p == 4 { p + 1 } else { p };
                left.fmt_at(f, left_min)?;
                write!(f, " {} ", op.symbol())?;
                right.fmt_at(f, p + 1)
            }
            ExprKind::In {
                expr,
                list,
                negated,
            } => {
                expr.fmt_at(f, IN_PRECEDENCE + 1)?;
                write!(f, "{} (", if *negated { " not in" } else { " in" })?;
                for (i, e) in list.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    e.fmt_at(f, 0)?;
                }
                write!(f, ")")
            }
            ExprKind::Call { name, args } => {
                write!(f, "{}(", name.name)?;
                for (i, e) in args.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    e.fmt_at(f, 0)?;
                }
                write!(f, ")")
            }
        }
    }
}

/// A string literal in double quotes, with `\"`, `\\`, `\n` and `\t` escaped.
fn write_string(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    write!(f, "\"")?;
    for c in s.chars() {
        match c {
            '"' => write!(f, "\\\"")?,
            '\\' => write!(f, "\\\\")?,
            '\n' => write!(f, "\\n")?,
            '\t' => write!(f, "\\t")?,
            c => write!(f, "{c}")?,
        }
    }
    write!(f, "\"")
}

/// `1h30m`: the largest units first; `0s` for zero.
pub fn write_duration(f: &mut impl fmt::Write, ms: i64) -> fmt::Result {
    const UNITS: [(&str, i64); 6] = [
        ("w", 604_800_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    if ms == 0 {
        return write!(f, "0s");
    }
    let mut rest = ms;
    for (unit, size) in UNITS {
        if rest >= size {
            write!(f, "{}{unit}", rest / size)?;
            rest %= size;
        }
    }
    Ok(())
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_at(f, 0)
    }
}

impl fmt::Display for FieldRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.full())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)?;
        if (self.hour, self.minute, self.second) != (0, 0, 0) {
            write!(f, "T{:02}:{:02}:{:02}", self.hour, self.minute, self.second)?;
        }
        Ok(())
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            SourceKind::Table(n) => write!(f, "{}", n.name())?,
            SourceKind::Promql { expr, step } => {
                write!(f, "promql(")?;
                write_string(f, expr)?;
                if let Some(step) = step {
                    write!(f, ", step=")?;
                    write_duration(f, step.ms)?;
                }
                write!(f, ")")?;
            }
            SourceKind::Pipeline(q) => write!(f, "({q})")?,
        }
        match &self.range {
            None => Ok(()),
            Some(TimeRange::Last(d)) => {
                write!(f, "[")?;
                write_duration(f, d.ms)?;
                write!(f, "]")
            }
            Some(TimeRange::Between { from, to, .. }) => write!(f, "[{from} .. {to}]"),
        }
    }
}

fn write_named(f: &mut fmt::Formatter<'_>, items: &[Named]) -> fmt::Result {
    for (i, n) in items.iter().enumerate() {
        if i > 0 {
            write!(f, ", ")?;
        }
        write!(f, "{}", n.expr)?;
        if let Some(a) = &n.alias {
            write!(f, " as {}", a.name)?;
        }
    }
    Ok(())
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            StageKind::Where(e) => write!(f, "where {e}"),
            StageKind::Extend(assigns) => {
                write!(f, "extend ")?;
                for (i, a) in assigns.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{} = {}", a.name.name, a.value)?;
                }
                Ok(())
            }
            StageKind::Stats { aggs, by } => {
                write!(f, "stats")?;
                if !aggs.is_empty() {
                    write!(f, " ")?;
                    write_named(f, aggs)?;
                }
                if !by.is_empty() {
                    write!(f, " by ")?;
                    write_named(f, by)?;
                }
                Ok(())
            }
            StageKind::Join { source, on, left } => {
                let kind = if *left { "left " } else { "" };
                write!(f, "join {kind}{source} on ")?;
                for (i, k) in on.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    match k {
                        JoinKey::Same(r) => write!(f, "{r}")?,
                        JoinKey::Pair(l, r) => write!(f, "{l} == {r}")?,
                    }
                }
                Ok(())
            }
            StageKind::Sort(keys) => {
                write!(f, "sort ")?;
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{}{}", k.field, if k.desc { " desc" } else { "" })?;
                }
                Ok(())
            }
            StageKind::Top { n, by } => write!(f, "top {n} by {by}"),
            StageKind::Select(fields) => {
                write!(f, "select ")?;
                for (i, r) in fields.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{r}")?;
                }
                Ok(())
            }
            StageKind::Fill(None) => write!(f, "fill"),
            StageKind::Fill(Some(v)) => write!(f, "fill {v}"),
            StageKind::Explain => write!(f, "explain"),
        }
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.explain {
            write!(f, "explain ")?;
        }
        write!(f, "{}", self.source)?;
        for s in &self.stages {
            write!(f, " | {s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_render_largest_units_first() {
        let r = |ms| {
            let mut s = String::new();
            write_duration(&mut s, ms).unwrap();
            s
        };
        assert_eq!(r(300_000), "5m");
        assert_eq!(r(5_400_000), "1h30m");
        assert_eq!(r(86_400_000 + 250), "1d250ms");
        assert_eq!(r(1_209_600_000), "2w");
        assert_eq!(r(0), "0s");
    }

    #[test]
    fn timestamps_convert_to_unix_time() {
        let t = Timestamp {
            year: 2026,
            month: 11,
            day: 1,
            hour: 0,
            minute: 0,
            second: 0,
        };
        assert_eq!(t.unix_ms(), 1_793_491_200_000);
        assert_eq!(t.sql(), "2026-11-01 00:00:00");
        assert_eq!(t.to_string(), "2026-11-01");
        let epoch = Timestamp {
            year: 1970,
            month: 1,
            day: 1,
            hour: 0,
            minute: 0,
            second: 1,
        };
        assert_eq!(epoch.unix_ms(), 1000);
        assert_eq!(epoch.to_string(), "1970-01-01T00:00:01");
    }
}
