//! The PromQL abstract syntax tree shared by the parser and the evaluator.
//!
//! Times are `i64` milliseconds since the Unix epoch, durations `i64` milliseconds.
//! [`Expr`]'s `Display` prints valid PromQL: `parse(&expr.to_string())` yields the
//! same tree again (parentheses the parser saw are kept as [`Expr::Paren`]).

use std::fmt;

use regex::Regex;

/// A PromQL expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A float literal (`1`, `0x1f`, `1e3`, `Inf`, `NaN`). A leading `-` is a
    /// [`Expr::Unary`], never folded into the literal by the parser.
    Number(f64),
    /// A string literal, unescaped.
    String(String),
    /// An instant vector selector: `metric{a="b"} offset 5m @ 100`.
    VectorSelector(VectorSelector),
    /// A range vector selector: `metric{a="b"}[5m]`. Offset and `@` live on the selector.
    MatrixSelector {
        selector: VectorSelector,
        range_ms: i64,
    },
    /// A subquery: `expr[30m:1m] offset 5m`.
    Subquery(Box<Subquery>),
    /// A parenthesised expression, kept so that `Display` round-trips.
    Paren(Box<Expr>),
    /// Unary `-` or `+`.
    Unary { op: UnaryOp, expr: Box<Expr> },
    /// A binary operation.
    Binary(Box<BinaryExpr>),
    /// A function call; `func` is a name from [`crate::signatures`].
    Call { func: String, args: Vec<Expr> },
    /// An aggregation: `sum by (job) (x)`, `topk(3, x)`.
    Aggregate(Box<AggregateExpr>),
}

/// An instant vector selector.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorSelector {
    /// The metric name if written before the braces (or as the first, bare quoted
    /// string inside them: `{"my.metric"}`).
    pub name: Option<String>,
    /// All matchers; includes a `__name__` Equal matcher when `name` is `Some`.
    pub matchers: Vec<Matcher>,
    /// `offset` in milliseconds; 0 when none, negative allowed.
    pub offset_ms: i64,
    /// The `@` modifier.
    pub at: Option<AtModifier>,
}

/// The `@` modifier of a selector or subquery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtModifier {
    /// `@ <unix seconds>`, stored in milliseconds.
    Timestamp(i64),
    /// `@ start()`
    Start,
    /// `@ end()`
    End,
}

/// How a label matcher compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl MatchOp {
    /// The operator as written in PromQL.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

/// A label matcher such as `job=~"api.*"`. Regex matchers hold their compiled,
/// fully anchored (`^(?s:...)$`) regex, built once in [`Matcher::new`].
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    regex: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl Matcher {
    /// Builds a matcher, compiling the regex for `=~` and `!~`.
    pub fn new(
        name: impl Into<String>,
        op: MatchOp,
        value: impl Into<String>,
    ) -> Result<Self, regex::Error> {
        let value = value.into();
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(Regex::new(&format!("^(?s:{value})$"))?),
            MatchOp::Equal | MatchOp::NotEqual => None,
        };
        Ok(Self {
            name: name.into(),
            op,
            value,
            regex,
        })
    }

    /// An `=` matcher (cannot fail).
    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            op: MatchOp::Equal,
            value: value.into(),
            regex: None,
        }
    }

    /// Whether a label value satisfies this matcher. A missing label is the empty string.
    pub fn matches(&self, value: &str) -> bool {
        match self.op {
            MatchOp::Equal => self.value == value,
            MatchOp::NotEqual => self.value != value,
            MatchOp::Regex => self.regex.as_ref().is_some_and(|r| r.is_match(value)),
            MatchOp::NotRegex => !self.regex.as_ref().is_some_and(|r| r.is_match(value)),
        }
    }

    /// Whether `labels` satisfy every matcher of `matchers` (a missing label is "").
    pub fn all_match(matchers: &[Matcher], labels: &crate::value::Labels) -> bool {
        matchers
            .iter()
            .all(|m| m.matches(labels.get(&m.name).unwrap_or("")))
    }
}

/// A subquery `expr[range:step] offset ... @ ...`.
#[derive(Debug, Clone, PartialEq)]
pub struct Subquery {
    pub expr: Expr,
    pub range_ms: i64,
    /// `None` when written `[30m:]` (the evaluator uses the default resolution).
    pub step_ms: Option<i64>,
    pub offset_ms: i64,
    pub at: Option<AtModifier>,
}

/// Unary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    Neg,
    Pos,
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    And,
    Or,
    Unless,
}

impl BinOp {
    /// The operator as written in PromQL.
    pub fn as_str(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Mod => "%",
            BinOp::Pow => "^",
            BinOp::Atan2 => "atan2",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Gt => ">",
            BinOp::Lt => "<",
            BinOp::Ge => ">=",
            BinOp::Le => "<=",
            BinOp::And => "and",
            BinOp::Or => "or",
            BinOp::Unless => "unless",
        }
    }

    /// `== != > < >= <=`
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Eq | BinOp::Ne | BinOp::Gt | BinOp::Lt | BinOp::Ge | BinOp::Le
        )
    }

    /// `and or unless`
    pub fn is_set(self) -> bool {
        matches!(self, BinOp::And | BinOp::Or | BinOp::Unless)
    }

    /// Binding strength, higher binds tighter: `or` 1, `and unless` 2, comparisons 3,
    /// `+ -` 4, `* / % atan2` 5, `^` 6.
    pub fn precedence(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And | BinOp::Unless => 2,
            BinOp::Eq | BinOp::Ne | BinOp::Gt | BinOp::Lt | BinOp::Ge | BinOp::Le => 3,
            BinOp::Add | BinOp::Sub => 4,
            BinOp::Mul | BinOp::Div | BinOp::Mod | BinOp::Atan2 => 5,
            BinOp::Pow => 6,
        }
    }

    /// Only `^` is right-associative.
    pub fn is_right_assoc(self) -> bool {
        self == BinOp::Pow
    }
}

/// A binary expression.
#[derive(Debug, Clone, PartialEq)]
pub struct BinaryExpr {
    pub op: BinOp,
    pub lhs: Expr,
    pub rhs: Expr,
    /// The `bool` modifier of a comparison.
    pub return_bool: bool,
    /// Vector matching (`on`/`ignoring`, `group_left`/`group_right`). `None` when no
    /// modifier was written; the evaluator then uses one-to-one (many-to-many for set
    /// operators) matching on all labels.
    pub matching: Option<VectorMatching>,
}

/// Matching cardinality between the two sides of a binary operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cardinality {
    OneToOne,
    ManyToOne,
    OneToMany,
    ManyToMany,
}

/// `on(...)`/`ignoring(...)` plus `group_left(...)`/`group_right(...)`.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorMatching {
    pub card: Cardinality,
    /// `true` for `on(labels)`, `false` for `ignoring(labels)`.
    pub on: bool,
    pub labels: Vec<String>,
    /// The labels listed in `group_left(...)`/`group_right(...)`.
    pub include: Vec<String>,
}

/// Aggregation operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggOp {
    Sum,
    Avg,
    Min,
    Max,
    Count,
    Group,
    Stddev,
    Stdvar,
    Topk,
    Bottomk,
    Quantile,
    CountValues,
    Limitk,
    LimitRatio,
}

impl AggOp {
    /// Every aggregation operator.
    pub const ALL: [AggOp; 14] = [
        AggOp::Sum,
        AggOp::Avg,
        AggOp::Min,
        AggOp::Max,
        AggOp::Count,
        AggOp::Group,
        AggOp::Stddev,
        AggOp::Stdvar,
        AggOp::Topk,
        AggOp::Bottomk,
        AggOp::Quantile,
        AggOp::CountValues,
        AggOp::Limitk,
        AggOp::LimitRatio,
    ];

    /// The keyword as written in PromQL.
    pub fn as_str(self) -> &'static str {
        match self {
            AggOp::Sum => "sum",
            AggOp::Avg => "avg",
            AggOp::Min => "min",
            AggOp::Max => "max",
            AggOp::Count => "count",
            AggOp::Group => "group",
            AggOp::Stddev => "stddev",
            AggOp::Stdvar => "stdvar",
            AggOp::Topk => "topk",
            AggOp::Bottomk => "bottomk",
            AggOp::Quantile => "quantile",
            AggOp::CountValues => "count_values",
            AggOp::Limitk => "limitk",
            AggOp::LimitRatio => "limit_ratio",
        }
    }

    /// Looks up a keyword, case-insensitively like Prometheus.
    pub fn from_keyword(word: &str) -> Option<AggOp> {
        AggOp::ALL
            .into_iter()
            .find(|op| op.as_str().eq_ignore_ascii_case(word))
    }

    /// Whether the operator takes a parameter before the expression.
    pub fn takes_param(self) -> bool {
        matches!(
            self,
            AggOp::Topk
                | AggOp::Bottomk
                | AggOp::Quantile
                | AggOp::CountValues
                | AggOp::Limitk
                | AggOp::LimitRatio
        )
    }
}

/// An aggregation expression.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateExpr {
    pub op: AggOp,
    pub expr: Expr,
    /// The parameter of `topk`, `bottomk`, `quantile`, `count_values`, `limitk`,
    /// `limit_ratio`; `None` for the others.
    pub param: Option<Expr>,
    pub grouping: Grouping,
}

/// `by (...)` or `without (...)`; `sum(x)` is `By(vec![])`.
#[derive(Debug, Clone, PartialEq)]
pub enum Grouping {
    By(Vec<String>),
    Without(Vec<String>),
}

/// The static type of an expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    Scalar,
    Vector,
    Matrix,
    String,
}

impl ValueType {
    /// The name Prometheus uses in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::Scalar => "scalar",
            ValueType::Vector => "instant vector",
            ValueType::Matrix => "range vector",
            ValueType::String => "string",
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Expr {
    /// The static type of the expression.
    pub fn value_type(&self) -> ValueType {
        match self {
            Expr::Number(_) => ValueType::Scalar,
            Expr::String(_) => ValueType::String,
            Expr::VectorSelector(_) | Expr::Aggregate(_) => ValueType::Vector,
            Expr::MatrixSelector { .. } | Expr::Subquery(_) => ValueType::Matrix,
            Expr::Paren(e) => e.value_type(),
            Expr::Unary { expr, .. } => expr.value_type(),
            Expr::Binary(b) => {
                if b.lhs.value_type() == ValueType::Scalar
                    && b.rhs.value_type() == ValueType::Scalar
                {
                    ValueType::Scalar
                } else {
                    ValueType::Vector
                }
            }
            Expr::Call { func, .. } => crate::signatures::lookup(func)
                .map(|s| s.return_type)
                .unwrap_or(ValueType::Vector),
        }
    }
}

/// Formats a duration in milliseconds the way PromQL writes it (`1h30m`, `500ms`,
/// `0s`). Negative durations get a leading `-`.
pub fn format_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    if ms < 0 {
        out.push('-');
    }
    let mut rest = ms.unsigned_abs();
    const UNITS: [(u64, &str); 7] = [
        (365 * 24 * 3_600_000, "y"),
        (7 * 24 * 3_600_000, "w"),
        (24 * 3_600_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
        (1, "ms"),
    ];
    for (unit_ms, suffix) in UNITS {
        let n = rest / unit_ms;
        if n > 0 {
            out.push_str(&n.to_string());
            out.push_str(suffix);
            rest -= n * unit_ms;
        }
    }
    out
}

/// Whether `s` can be written unquoted as a metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`)
/// without being read as a keyword.
pub fn is_plain_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    first_ok
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        && !is_reserved_word(s)
}

/// Whether `s` can be written unquoted as a label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn is_plain_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Words that the lexer reads as keywords outside braces (case-insensitive).
pub fn is_reserved_word(s: &str) -> bool {
    const WORDS: [&str; 25] = [
        "and",
        "or",
        "unless",
        "atan2",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "start",
        "end",
        "step",
        "range",
        "min_of",
        "max_of",
        "anchored",
        "smoothed",
        "fill",
        "fill_left",
        "fill_right",
        "inf",
        "nan",
    ];
    WORDS.iter().any(|w| w.eq_ignore_ascii_case(s)) || AggOp::from_keyword(s).is_some()
}

/// Writes `s` as a double-quoted PromQL string with Go-style escapes.
pub fn write_quoted(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if c.is_control() => write!(f, "\\u{:04x}", c as u32)?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

fn write_label_name(f: &mut fmt::Formatter<'_>, name: &str) -> fmt::Result {
    // `inf`/`nan` lex as numbers in grouping lists, so they are quoted too.
    if is_plain_label_name(name)
        && !name.eq_ignore_ascii_case("inf")
        && !name.eq_ignore_ascii_case("nan")
    {
        f.write_str(name)
    } else {
        write_quoted(f, name)
    }
}

fn write_label_list(f: &mut fmt::Formatter<'_>, labels: &[String]) -> fmt::Result {
    f.write_str("(")?;
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write_label_name(f, l)?;
    }
    f.write_str(")")
}

fn write_number(f: &mut fmt::Formatter<'_>, v: f64) -> fmt::Result {
    if v.is_nan() {
        f.write_str("NaN")
    } else if v.is_infinite() {
        f.write_str(if v > 0.0 { "Inf" } else { "-Inf" })
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        write!(f, "{v}")
    } else {
        // `{:?}` is the shortest representation that reads back exactly, and switches
        // to exponent form for very large or small magnitudes.
        write!(f, "{v:?}")
    }
}

fn write_modifiers(
    f: &mut fmt::Formatter<'_>,
    offset_ms: i64,
    at: Option<AtModifier>,
) -> fmt::Result {
    if let Some(at) = at {
        match at {
            AtModifier::Start => f.write_str(" @ start()")?,
            AtModifier::End => f.write_str(" @ end()")?,
            AtModifier::Timestamp(ms) => {
                if ms % 1000 == 0 {
                    write!(f, " @ {}", ms / 1000)?
                } else {
                    write!(f, " @ {}", ms as f64 / 1000.0)?
                }
            }
        }
    }
    if offset_ms != 0 {
        write!(f, " offset {}", format_duration(offset_ms))?;
    }
    Ok(())
}

impl VectorSelector {
    /// Writes the selector without its offset and `@` modifiers.
    ///
    /// The name goes before the braces when it is a plain identifier and its
    /// `__name__` matcher comes first (where the parser puts it); otherwise it is
    /// written as a bare quoted string at its matcher's position, which the parser
    /// reads back the same way.
    fn fmt_base(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let is_name_matcher = |m: &Matcher| {
            m.name == "__name__"
                && m.op == MatchOp::Equal
                && self.name.as_deref() == Some(m.value.as_str())
        };
        let name_index = self.matchers.iter().position(is_name_matcher);
        let outside = match (&self.name, name_index) {
            (Some(n), Some(0)) if is_plain_metric_name(n) => {
                self.matchers[1..].iter().all(|m| m.name != "__name__")
            }
            _ => false,
        };
        let mut rest = self.matchers.iter().enumerate();
        if outside {
            f.write_str(self.name.as_deref().unwrap_or_default())?;
            rest.next();
            if self.matchers.len() == 1 {
                return Ok(());
            }
        }
        f.write_str("{")?;
        for (n, (i, m)) in rest.enumerate() {
            if n > 0 {
                f.write_str(", ")?;
            }
            if Some(i) == name_index {
                write_quoted(f, &m.value)?;
                continue;
            }
            write_label_name(f, &m.name)?;
            f.write_str(m.op.as_str())?;
            write_quoted(f, &m.value)?;
        }
        f.write_str("}")
    }
}

impl fmt::Display for VectorSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_base(f)?;
        write_modifiers(f, self.offset_ms, self.at)
    }
}

impl fmt::Display for Grouping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Grouping::By(l) => {
                f.write_str("by ")?;
                write_label_list(f, l)
            }
            Grouping::Without(l) => {
                f.write_str("without ")?;
                write_label_list(f, l)
            }
        }
    }
}

/// Whether `child` must be wrapped in parentheses as an operand of `parent` (only
/// needed for trees built by hand: the parser keeps written parentheses as
/// [`Expr::Paren`]).
fn needs_parens(parent: BinOp, child: &Expr, is_lhs: bool) -> bool {
    match child {
        Expr::Binary(b) => {
            let (p, c) = (parent.precedence(), b.op.precedence());
            c < p || (c == p && (is_lhs == parent.is_right_assoc()))
        }
        // `-a ^ b` reads as `-(a ^ b)`; a negative literal prints with its sign.
        Expr::Unary { .. } => parent == BinOp::Pow && is_lhs,
        Expr::Number(v) if v.is_sign_negative() && !v.is_nan() => parent == BinOp::Pow && is_lhs,
        _ => false,
    }
}

fn write_operand(
    f: &mut fmt::Formatter<'_>,
    parent: BinOp,
    child: &Expr,
    is_lhs: bool,
) -> fmt::Result {
    if needs_parens(parent, child, is_lhs) {
        write!(f, "({child})")
    } else {
        write!(f, "{child}")
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Number(v) => write_number(f, *v),
            Expr::String(s) => write_quoted(f, s),
            Expr::VectorSelector(vs) => write!(f, "{vs}"),
            Expr::MatrixSelector { selector, range_ms } => {
                selector.fmt_base(f)?;
                write!(f, "[{}]", format_duration(*range_ms))?;
                write_modifiers(f, selector.offset_ms, selector.at)
            }
            Expr::Subquery(sq) => {
                match &sq.expr {
                    e @ (Expr::Binary(_) | Expr::Unary { .. }) => write!(f, "({e})")?,
                    e => write!(f, "{e}")?,
                }
                write!(f, "[{}:", format_duration(sq.range_ms))?;
                if let Some(step) = sq.step_ms {
                    f.write_str(&format_duration(step))?;
                }
                f.write_str("]")?;
                write_modifiers(f, sq.offset_ms, sq.at)
            }
            Expr::Paren(e) => write!(f, "({e})"),
            Expr::Unary { op, expr } => {
                f.write_str(match op {
                    UnaryOp::Neg => "-",
                    UnaryOp::Pos => "+",
                })?;
                match expr.as_ref() {
                    // `^` binds tighter than unary minus, everything else looser.
                    Expr::Binary(b) if b.op != BinOp::Pow => write!(f, "({expr})"),
                    // `- -x`: the space keeps the two operators apart.
                    Expr::Unary { .. } => write!(f, " {expr}"),
                    Expr::Number(v) if v.is_sign_negative() && !v.is_nan() => {
                        write!(f, " {expr}")
                    }
                    e => write!(f, "{e}"),
                }
            }
            Expr::Binary(b) => {
                write_operand(f, b.op, &b.lhs, true)?;
                write!(f, " {}", b.op.as_str())?;
                if b.return_bool {
                    f.write_str(" bool")?;
                }
                if let Some(m) = &b.matching {
                    f.write_str(if m.on { " on" } else { " ignoring" })?;
                    write_label_list(f, &m.labels)?;
                    match m.card {
                        Cardinality::ManyToOne => {
                            f.write_str(" group_left")?;
                            write_label_list(f, &m.include)?;
                        }
                        Cardinality::OneToMany => {
                            f.write_str(" group_right")?;
                            write_label_list(f, &m.include)?;
                        }
                        Cardinality::OneToOne | Cardinality::ManyToMany => {}
                    }
                }
                f.write_str(" ")?;
                write_operand(f, b.op, &b.rhs, false)
            }
            Expr::Call { func, args } => {
                write!(f, "{func}(")?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str(")")
            }
            Expr::Aggregate(a) => {
                f.write_str(a.op.as_str())?;
                match &a.grouping {
                    Grouping::By(l) if l.is_empty() => {}
                    g => write!(f, " {g} ")?,
                }
                f.write_str("(")?;
                if let Some(p) = &a.param {
                    write!(f, "{p}, ")?;
                }
                write!(f, "{})", a.expr)
            }
        }
    }
}
