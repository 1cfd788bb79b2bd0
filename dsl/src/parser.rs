//! The nom parser: query text to [`Query`].
//!
//! ```text
//! query  := ["explain"] source ("|" stage)*
//! source := noun [range] | "promql" "(" string ["," "step" "=" duration] ")" [range]
//! range  := "[" duration "]" | "[" time ".." time "]"
//! stage  := "where" expr | "extend" (name "=" expr),* | "stats" named,* ["by" named,*]
//!         | "join" ["left"] (source | "(" source ("|" stage)* ")") "on" key,*
//!         | "sort" field [asc|desc],* | "top" n "by" field | "select" field,*
//!         | "fill" [literal] | "explain"
//! ```
//!
//! The error type plugs into nom: a recoverable error remembers how far the input got and
//! what would have been accepted there (alternatives that fail at the same place merge their
//! expectations); a fatal one (an unknown source, a bad duration unit) is final. Either
//! becomes a located [`Error`].

mod expr;
mod lex;
#[cfg(test)]
pub(crate) mod tests;

use nom::Offset;
use nom::error::{ErrorKind, ParseError};

use crate::ast::{
    Assign, FieldRef, Ident, JoinKey, Named, Noun, Query, SortKey, Source, SourceKind, Span, Stage,
    StageKind, TimeRange,
};
use crate::error::{Error, Pos, Suggestion};
use crate::suggest::nearest;
use lex::{expected, kw, sym, ws};

/// Parses a whole query.
pub fn parse(text: &str) -> Result<Query, Error> {
    let p = P {
        full: text,
        depth: std::cell::Cell::new(0),
        joins: std::cell::Cell::new(0),
    };
    match p.query(text) {
        Ok((_, q)) => Ok(q),
        Err(nom::Err::Error(e) | nom::Err::Failure(e)) => Err(p.located(e)),
        Err(nom::Err::Incomplete(_)) => Err(Error::Syntax {
            pos: Pos::at(text, text.len()),
            expected: "more input".into(),
            found: "the end of the query".into(),
        }),
    }
}

/// A parse failure inside nom.
#[derive(Debug)]
pub(crate) enum PError<'a> {
    /// Recoverable: the input at the failure and what would have been accepted there.
    Expected { at: &'a str, what: Vec<String> },
    /// Final: no alternative can help.
    Fatal(Error),
}

impl<'a> ParseError<&'a str> for PError<'a> {
    fn from_error_kind(input: &'a str, _: ErrorKind) -> Self {
        PError::Expected {
            at: input,
            what: Vec::new(),
        }
    }

    fn append(_: &'a str, _: ErrorKind, other: Self) -> Self {
        other
    }

    /// The alternative that got further wins; at the same place, expectations merge.
    fn or(self, other: Self) -> Self {
        match (self, other) {
            (PError::Fatal(e), _) | (_, PError::Fatal(e)) => PError::Fatal(e),
            (
                PError::Expected {
                    at: a,
                    what: mut wa,
                },
                PError::Expected { at: b, what: wb },
            ) => {
                if a.len() < b.len() {
                    PError::Expected { at: a, what: wa }
                } else if b.len() < a.len() {
                    PError::Expected { at: b, what: wb }
                } else {
                    for w in wb {
                        if !wa.contains(&w) {
                            wa.push(w);
                        }
                    }
                    PError::Expected { at: a, what: wa }
                }
            }
        }
    }
}

pub(crate) type PResult<'a, T> = nom::IResult<&'a str, T, PError<'a>>;

/// "`x`, `y` or `z`"
fn one_of(what: &[String]) -> String {
    match what {
        [] => "something else".into(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// What the input holds at a failure: the next token-ish excerpt, or the end.
pub(crate) fn found(at: &str) -> String {
    let at = ws(at);
    if at.is_empty() {
        return "the end of the query".into();
    }
    let word: String = if at.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
        at.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
            .take(24)
            .collect()
    } else {
        at.chars().take(1).collect()
    };
    format!("`{word}`")
}

/// The parser over one text; knows the text so that it can turn positions into offsets.
pub(crate) struct P<'a> {
    full: &'a str,
    /// How deep the expression parser has recursed.
    depth: std::cell::Cell<usize>,
    /// How many `join (…)` pipelines enclose the parser's position.
    joins: std::cell::Cell<usize>,
}

/// The most stages a query may have (each is a step of the SQL the planner recurses over).
pub const MAX_STAGES: usize = 64;
/// How deep `join (…)` pipelines may nest in each other.
const MAX_JOIN_NESTING: usize = 4;

/// The stage keywords, in the order the reference lists them.
pub const STAGES: &[&str] = &[
    "where", "extend", "stats", "join", "sort", "top", "select", "fill", "explain",
];
const SOURCES: &str =
    "gpus, faults, health, leases, jobs, earnings, heartbeats, hosts, payouts or promql(…)";

impl<'a> P<'a> {
    fn span(&self, start: &'a str, end: &'a str) -> Span {
        Span::new(self.full.offset(start), self.full.offset(end))
    }

    fn pos(&self, at: &'a str) -> Pos {
        Pos::at(self.full, self.full.offset(at))
    }

    fn pos_of(&self, span: Span) -> Pos {
        Pos::at(self.full, span.start)
    }

    fn fatal(&self, e: Error) -> nom::Err<PError<'a>> {
        nom::Err::Failure(PError::Fatal(e))
    }

    fn located(&self, e: PError<'a>) -> Error {
        match e {
            PError::Fatal(e) => e,
            PError::Expected { at, what } => Error::Syntax {
                pos: self.pos(ws(at)),
                expected: one_of(&what),
                found: found(at),
            },
        }
    }

    fn query(&self, i: &'a str) -> PResult<'a, Query> {
        let (i, explain) = match kw("explain")(i) {
            Ok((rest, _)) => (rest, true),
            Err(_) => (i, false),
        };
        let (i, mut q) = self.pipeline(i, false)?;
        q.explain = explain;
        Ok((i, q))
    }

    /// A source and its stages, up to the end of the text or, `nested` in a `join (…)`, up
    /// to the closing parenthesis (not consumed).
    fn pipeline(&self, i: &'a str, nested: bool) -> PResult<'a, Query> {
        let (mut i, source) = self.source(i)?;
        let mut stages: Vec<Stage> = Vec::new();
        loop {
            let at_end = ws(i);
            if at_end.is_empty() || nested && at_end.starts_with(')') {
                break;
            }
            if stages.len() == MAX_STAGES {
                return Err(self.fatal(Error::Value {
                    pos: self.pos(at_end),
                    message: "too many stages (at most 64)",
                }));
            }
            let Ok((rest, _)) = sym("|")(i) else {
                let end = if nested {
                    "`)`"
                } else {
                    "the end of the query"
                };
                return Err(nom::Err::Error(PError::Expected {
                    at: at_end,
                    what: vec!["`|`".into(), end.into()],
                }));
            };
            if let Some(last) = stages.last().filter(|s| s.kind == StageKind::Explain) {
                return Err(self.fatal(Error::Misplaced {
                    pos: self.pos_of(last.span),
                    what: "`explain`".into(),
                    rule: "must be the first word or the last stage",
                }));
            }
            let (rest, stage) = self.stage(rest)?;
            if nested && stage.kind == StageKind::Explain {
                return Err(self.fatal(Error::Misplaced {
                    pos: self.pos_of(stage.span),
                    what: "`explain`".into(),
                    rule: "belongs to the whole query, not to a joined pipeline",
                }));
            }
            stages.push(stage);
            i = rest;
        }
        Ok((
            i,
            Query {
                explain: false,
                source,
                stages,
            },
        ))
    }

    /// The right side of a `join`: a source, or a pipeline in parentheses.
    fn join_source(&self, i: &'a str) -> PResult<'a, Source> {
        let start = ws(i);
        let Ok((inner, _)) = sym("(")(start) else {
            return self.source(start);
        };
        // Joined pipelines may join pipelines: bounded like nested expressions.
        let depth = self.joins.get();
        if depth >= MAX_JOIN_NESTING {
            return Err(self.fatal(Error::Value {
                pos: self.pos(start),
                message: "pipelines nest too deep in joins (at most 4)",
            }));
        }
        self.joins.set(depth + 1);
        let parsed = self.pipeline(inner, true);
        self.joins.set(depth);
        let (rest, q) = parsed?;
        let (rest, _) = sym(")")(rest)?;
        Ok((
            rest,
            Source {
                kind: SourceKind::Pipeline(Box::new(q)),
                range: None,
                span: self.span(start, rest),
            },
        ))
    }

    pub(crate) fn source(&self, i: &'a str) -> PResult<'a, Source> {
        let start = ws(i);
        let (rest, (name, name_span)) = self
            .ident(start)
            .map_err(|_| expected(start, &format!("a source ({SOURCES})")))?;
        let (rest, kind) = if name == "promql" {
            self.promql(rest)?
        } else {
            match Noun::from_name(name) {
                Some(n) => (rest, SourceKind::Table(n)),
                None => {
                    let names: Vec<&str> = Noun::ALL
                        .iter()
                        .map(|n| n.name())
                        .chain(["promql"])
                        .collect();
                    return Err(self.fatal(Error::UnknownSource {
                        pos: self.pos_of(name_span),
                        name: name.to_string(),
                        expected: SOURCES,
                        suggestion: Suggestion(nearest(name, names)),
                    }));
                }
            }
        };
        let (rest, range) = match sym("[")(rest) {
            Ok(_) => {
                let (rest, r) = self.range(rest)?;
                (rest, Some(r))
            }
            Err(_) => (rest, None),
        };
        Ok((
            rest,
            Source {
                kind,
                range,
                span: self.span(start, rest),
            },
        ))
    }

    /// `("<expr>", step=<d>)` after the word `promql`.
    fn promql(&self, i: &'a str) -> PResult<'a, SourceKind> {
        let (i, _) = sym("(")(i)?;
        let (i, (expr, _)) = self.string(i)?;
        let (i, step) = match sym(",")(i) {
            Ok((i, _)) => {
                let (i, _) = kw("step")(i)?;
                let (i, _) = sym("=")(i)?;
                let (i, d) = self.duration(i)?;
                if d.ms <= 0 {
                    return Err(self.fatal(Error::Value {
                        pos: self.pos_of(d.span),
                        message: "the step must be longer than zero",
                    }));
                }
                (i, Some(d))
            }
            Err(_) => (i, None),
        };
        let (i, _) = sym(")")(i)
            .map_err(|_| expected(ws(i), if step.is_some() { "`)`" } else { "`,` or `)`" }))?;
        Ok((i, SourceKind::Promql { expr, step }))
    }

    /// `[5m]` or `[2026-11-01 .. 2026-12-01]`.
    fn range(&self, i: &'a str) -> PResult<'a, TimeRange> {
        let (after_open, _) = sym("[")(i)?;
        let start = ws(after_open);
        let (rest, range) = match self.timestamp(start) {
            Ok((rest, (from, from_span))) => {
                let (rest, _) = sym("..")(rest)?;
                let (rest, (to, to_span)) = self.timestamp(rest)?;
                if to <= from {
                    return Err(self.fatal(Error::Value {
                        pos: self.pos_of(to_span),
                        message: "the end of the range must be after its start",
                    }));
                }
                (
                    rest,
                    TimeRange::Between {
                        from,
                        to,
                        span: from_span.to(to_span),
                    },
                )
            }
            Err(nom::Err::Error(_)) => {
                let (rest, d) = self.duration(start).map_err(|e| match e {
                    nom::Err::Error(_) => expected(
                        start,
                        "a duration such as 5m, or a range such as 2026-11-01 .. 2026-12-01",
                    ),
                    e => e,
                })?;
                if d.ms <= 0 {
                    return Err(self.fatal(Error::Value {
                        pos: self.pos_of(d.span),
                        message: "the range must be longer than zero",
                    }));
                }
                (rest, TimeRange::Last(d))
            }
            Err(e) => return Err(e),
        };
        let (rest, _) = sym("]")(rest)?;
        Ok((rest, range))
    }

    fn stage(&self, i: &'a str) -> PResult<'a, Stage> {
        let start = ws(i);
        let (rest, kind) = if let Ok((i, _)) = kw("where")(start) {
            let (i, e) = self.expr(i)?;
            (i, StageKind::Where(e))
        } else if let Ok((i, _)) = kw("extend")(start) {
            let (i, assigns) = self.list(i, |i| {
                let (i, (name, span)) = self.ident(i)?;
                let (i, _) = sym("=")(i)?;
                let (i, value) = self.expr(i)?;
                let name = Ident {
                    name: name.to_string(),
                    span,
                };
                Ok((i, Assign { name, value }))
            })?;
            (i, StageKind::Extend(assigns))
        } else if let Ok((i, _)) = kw("stats")(start) {
            self.stats(i)?
        } else if let Ok((i, _)) = kw("join")(start) {
            let (i, left) = match kw("left")(i) {
                Ok((i, _)) => (i, true),
                Err(_) => (i, false),
            };
            let (i, source) = self.join_source(i)?;
            let (i, _) = kw("on")(i)?;
            let (i, on) = self.list(i, |i| {
                let (i, left) = self.field(i)?;
                match sym("==")(i) {
                    Ok((i, _)) => {
                        let (i, right) = self.field(i)?;
                        Ok((i, JoinKey::Pair(left, right)))
                    }
                    Err(_) => Ok((i, JoinKey::Same(left))),
                }
            })?;
            (i, StageKind::Join { source, on, left })
        } else if let Ok((i, _)) = kw("sort")(start) {
            let (i, keys) = self.list(i, |i| {
                let (i, field) = self.field(i)?;
                if let Ok((i, _)) = kw("desc")(i) {
                    Ok((i, SortKey { field, desc: true }))
                } else if let Ok((i, _)) = kw("asc")(i) {
                    Ok((i, SortKey { field, desc: false }))
                } else {
                    Ok((i, SortKey { field, desc: false }))
                }
            })?;
            (i, StageKind::Sort(keys))
        } else if let Ok((i, _)) = kw("top")(start) {
            let (i, (n, span)) = self.integer(i)?;
            if n == 0 {
                return Err(self.fatal(Error::Value {
                    pos: self.pos_of(span),
                    message: "`top` needs at least 1 row",
                }));
            }
            let (i, _) = kw("by")(i)?;
            let (i, by) = self.field(i)?;
            (i, StageKind::Top { n, by })
        } else if let Ok((i, _)) = kw("select")(start) {
            let (i, fields) = self.list(i, |i| self.field(i))?;
            (i, StageKind::Select(fields))
        } else if let Ok((i, _)) = kw("fill")(start) {
            let after = ws(i);
            if after.is_empty() || after.starts_with('|') || after.starts_with(')') {
                (i, StageKind::Fill(None))
            } else {
                let (i, e) = self.expr(i)?;
                (i, StageKind::Fill(Some(e)))
            }
        } else if let Ok((i, _)) = kw("explain")(start) {
            (i, StageKind::Explain)
        } else {
            return Err(self.unknown_stage(start));
        };
        Ok((
            rest,
            Stage {
                kind,
                span: self.span(start, rest),
            },
        ))
    }

    fn unknown_stage(&self, at: &'a str) -> nom::Err<PError<'a>> {
        let what = format!("a stage ({})", STAGES.join(", "));
        match self.ident(at) {
            Ok((_, (word, span))) => self.fatal(Error::UnknownStage {
                pos: self.pos_of(span),
                name: word.to_string(),
                expected: what,
                suggestion: Suggestion(nearest(word, STAGES.iter().copied())),
            }),
            Err(_) => expected(at, &what),
        }
    }

    /// `stats <named>, … [by <named>, …]` after the word `stats`.
    fn stats(&self, i: &'a str) -> PResult<'a, StageKind> {
        let (i, aggs) = if kw("by")(i).is_ok() {
            (i, Vec::new())
        } else {
            self.list(i, |i| self.named(i))?
        };
        let (i, by) = match kw("by")(i) {
            Ok((i, _)) => self.list(i, |i| self.named(i))?,
            Err(_) => (i, Vec::new()),
        };
        Ok((i, StageKind::Stats { aggs, by }))
    }

    /// `<expr> [as <name>]`
    fn named(&self, i: &'a str) -> PResult<'a, Named> {
        let (i, expr) = self.expr(i)?;
        match kw("as")(i) {
            Ok((i, _)) => {
                let (i, (name, span)) = self.ident(i)?;
                let alias = Some(Ident {
                    name: name.to_string(),
                    span,
                });
                Ok((i, Named { expr, alias }))
            }
            Err(_) => Ok((i, Named { expr, alias: None })),
        }
    }

    /// `name` or `qualifier.name`.
    pub(crate) fn field(&self, i: &'a str) -> PResult<'a, FieldRef> {
        let start = ws(i);
        let (i, (first, _)) = self
            .ident(start)
            .map_err(|_| expected(start, "a field name"))?;
        if let Ok((rest, _)) = sym(".")(i)
            && !i.starts_with(char::is_whitespace)
        {
            let (rest, (second, _)) = self.ident(rest)?;
            return Ok((
                rest,
                FieldRef {
                    qualifier: Some(first.to_string()),
                    name: second.to_string(),
                    span: self.span(start, rest),
                },
            ));
        }
        Ok((
            i,
            FieldRef {
                qualifier: None,
                name: first.to_string(),
                span: self.span(start, i),
            },
        ))
    }

    /// One or more `item`s separated by commas.
    fn list<T>(
        &self,
        i: &'a str,
        mut item: impl FnMut(&'a str) -> PResult<'a, T>,
    ) -> PResult<'a, Vec<T>> {
        let (mut i, first) = item(i)?;
        let mut out = vec![first];
        while let Ok((rest, _)) = sym(",")(i) {
            let (rest, next) = item(rest)?;
            out.push(next);
            i = rest;
        }
        Ok((i, out))
    }
}
