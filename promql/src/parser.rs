//! The PromQL parser: `parse("rate(x[5m])")` → [`Expr`].
//!
//! ```text
//!  input ──lexer (nom)──▶ tokens ──recursive descent──▶ Expr (type-checked)
//! ```
//!
//! It follows Prometheus 3's grammar and parse-time checks: operator precedence and
//! associativity, selector rules, modifiers, function signatures
//! ([`crate::signatures`]) and operand types. Number literals are not folded (`-1` is
//! a [`Expr::Unary`]). Experimental syntax Prometheus gates behind feature flags is
//! partly supported: `limitk`, `limit_ratio` and the experimental functions are
//! accepted; duration expressions (`[5m + step()]`, `offset (1h)`), `fill(...)`
//! binary modifiers and the `anchored`/`smoothed` modifiers are rejected with an
//! error that says so.

mod expr;
mod lexer;

pub use expr::MAX_DEPTH;

use std::fmt;

use crate::ast::Expr;

/// A syntax or type error, located by byte offset (and line/column for people).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    /// Byte offset into the input where the problem starts.
    pub offset: usize,
    /// 1-based line of `offset`.
    pub line: usize,
    /// 1-based column (in characters) of `offset` within its line.
    pub column: usize,
    /// What was wrong and, where it helps, what was expected.
    pub message: String,
}

impl ParseError {
    pub(crate) fn new(input: &str, offset: usize, message: impl Into<String>) -> Self {
        let offset = offset.min(input.len());
        // `offset` always sits on a char boundary: it comes from token starts.
        let before = input.get(..offset).unwrap_or(input);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Self {
            offset,
            line,
            column,
            message: message.into(),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "parse error at byte {} (line {}, col {}): {}",
            self.offset, self.line, self.column, self.message
        )
    }
}

/// Parses a PromQL expression.
pub fn parse(input: &str) -> Result<Expr, ParseError> {
    let (tokens, lex_error) = lexer::tokenize(input);
    expr::Parser::new(input, tokens, lex_error).parse_all()
}
