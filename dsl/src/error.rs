//! The DSL's error type: every error is the query's fault (HTTP 400) and names where in the
//! text it is, by byte offset, line and column.

use rigwatch_common::http_error::{HttpError, StatusCode};

use std::fmt;

use crate::ast::Span;

/// A place in the query text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    /// Byte offset from the start of the text.
    pub offset: usize,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters, within the line.
    pub column: usize,
}

impl Pos {
    /// The position of byte `offset` of `text` (clamped to the text, and to a char boundary).
    pub fn at(text: &str, offset: usize) -> Pos {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Pos {
            offset,
            line,
            column,
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {} (byte {})",
            self.line, self.column, self.offset
        )
    }
}

/// `; did you mean `x`?` when there is a suggestion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suggestion(pub Option<String>);

impl fmt::Display for Suggestion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(s) => write!(f, "; did you mean `{s}`?"),
            None => Ok(()),
        }
    }
}

/// Why a DSL query was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The text does not follow the grammar.
    #[error("{pos}: expected {expected}, found {found}")]
    Syntax {
        pos: Pos,
        /// What would have been accepted here, e.g. "`|` or the end of the query".
        expected: String,
        /// What is there instead (a short excerpt, or "the end of the query").
        found: String,
    },

    /// A source noun that does not exist.
    #[error("{pos}: unknown source `{name}` (expected one of {expected}){suggestion}")]
    UnknownSource {
        pos: Pos,
        name: String,
        expected: &'static str,
        suggestion: Suggestion,
    },

    /// A word where a stage should start.
    #[error("{pos}: unknown stage `{name}` (expected {expected}){suggestion}")]
    UnknownStage {
        pos: Pos,
        name: String,
        expected: String,
        suggestion: Suggestion,
    },

    /// A source whose table the caller cannot read (or that holds no rows yet).
    #[error("{pos}: source `{source_name}` (table `{table}`) has no data this caller may read")]
    NoTable {
        pos: Pos,
        source_name: String,
        table: String,
    },

    /// A field that the relation at this stage does not have.
    #[error("{pos}: unknown field `{name}` (expected a field of {relation}){suggestion}")]
    UnknownField {
        pos: Pos,
        name: String,
        /// What the stage reads from, e.g. "gpus" or "the stats result".
        relation: String,
        suggestion: Suggestion,
    },

    /// An unqualified field that more than one joined source has.
    #[error("{pos}: field `{name}` is ambiguous: qualify it as one of {candidates}")]
    AmbiguousField {
        pos: Pos,
        name: String,
        candidates: String,
    },

    /// A function that does not exist.
    #[error("{pos}: unknown function `{name}` (expected {expected}){suggestion}")]
    UnknownFunction {
        pos: Pos,
        name: String,
        expected: &'static str,
        suggestion: Suggestion,
    },

    /// A function called with the wrong number of arguments.
    #[error("{pos}: `{function}` takes {expected}, not {given}")]
    Arity {
        pos: Pos,
        function: String,
        expected: &'static str,
        given: usize,
    },

    /// A construct used where it has no meaning (an aggregate in `where`, `rate` outside an
    /// aggregate, `explain` in the middle of a pipeline, ...).
    #[error("{pos}: {what} {rule}")]
    Misplaced {
        pos: Pos,
        what: String,
        /// Where it may be used instead.
        rule: &'static str,
    },

    /// An argument of the wrong type.
    #[error("{pos}: `{function}` expects {expected}, but `{argument}` is {found}")]
    Type {
        pos: Pos,
        function: String,
        expected: &'static str,
        argument: String,
        found: &'static str,
    },

    /// Two output columns of one stage with the same name.
    #[error("{pos}: the column `{name}` appears twice; name one with `as`")]
    DuplicateColumn { pos: Pos, name: String },

    /// A value out of range (a zero duration, an inverted time range, a huge number).
    #[error("{pos}: {message}")]
    Value { pos: Pos, message: &'static str },
}

impl Error {
    /// Where in the text the problem is.
    pub fn pos(&self) -> Pos {
        match self {
            Error::Syntax { pos, .. }
            | Error::UnknownSource { pos, .. }
            | Error::UnknownStage { pos, .. }
            | Error::NoTable { pos, .. }
            | Error::UnknownField { pos, .. }
            | Error::AmbiguousField { pos, .. }
            | Error::UnknownFunction { pos, .. }
            | Error::Arity { pos, .. }
            | Error::Misplaced { pos, .. }
            | Error::Type { pos, .. }
            | Error::DuplicateColumn { pos, .. }
            | Error::Value { pos, .. } => *pos,
        }
    }

    /// The suggested name, when the error has one.
    pub fn suggestion(&self) -> Option<&str> {
        match self {
            Error::UnknownSource { suggestion, .. }
            | Error::UnknownStage { suggestion, .. }
            | Error::UnknownField { suggestion, .. }
            | Error::UnknownFunction { suggestion, .. } => suggestion.0.as_deref(),
            _ => None,
        }
    }
}

impl HttpError for Error {
    /// The HTTP status: every DSL error is a problem with the query.
    fn status_code(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }
}

/// Builds located errors for one query text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Locator<'a> {
    pub text: &'a str,
}

impl Locator<'_> {
    pub fn pos(&self, span: Span) -> Pos {
        Pos::at(self.text, span.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters() {
        let text = "gpus\n| whére x";
        assert_eq!(
            Pos::at(text, 0),
            Pos {
                offset: 0,
                line: 1,
                column: 1
            }
        );
        // `x` is after a two-byte `é`: byte 14, but character column 9 of line 2.
        let p = Pos::at(text, 14);
        assert_eq!((p.line, p.column, p.offset), (2, 9, 14));
        // Inside a multi-byte character: moved back to its start.
        assert_eq!(Pos::at(text, 10).offset, 9);
        assert_eq!(Pos::at(text, 999).offset, text.len());
        assert_eq!(p.to_string(), "line 2, column 9 (byte 14)");
    }
}
