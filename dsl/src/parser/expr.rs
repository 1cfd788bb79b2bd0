//! Expressions, loosest first:
//!
//! ```text
//! or  := and ("or" and)*
//! and := not ("and" not)*
//! not := "not" not | cmp
//! cmp := add [("==" | "!=" | "<" | "<=" | ">" | ">=") add | ["not"] "in" "(" expr,* ")"]
//! add := mul (("+" | "-") mul)*
//! mul := neg (("*" | "/") neg)*
//! neg := "-" neg | primary
//! primary := "(" or ")" | string | number | duration | time | true | false | null
//!          | name "(" expr,* ")" | field
//! ```
//!
//! Comparisons do not chain (`a < b < c` is an error), as in SQL. The grammar is parsed by
//! precedence climbing, so that one level of parentheses costs two stack frames, not one
//! per precedence level; nesting is bounded all the same ([`MAX_NESTING`], [`MAX_DEPTH`]).

use super::lex::{Number, expected, kw, sym, ws};
use super::{P, PError, PResult};
use crate::ast::{
    BinOp, Expr, ExprKind, IN_PRECEDENCE, Ident, NEG_PRECEDENCE, NOT_PRECEDENCE, Span, UnaryOp,
};
use crate::error::Error;

/// The deepest expression tree accepted (a chain `a or b or …` counts one level per
/// operator): the lowering and the SQL planner recurse over it.
pub(crate) const MAX_DEPTH: usize = 64;

/// The deepest the parser recurses: parentheses, calls, `not` and `-` nested in each other.
pub(crate) const MAX_NESTING: usize = 32;

/// The depth of a tree whose subtrees were all checked (so this recursion is bounded).
fn depth(e: &Expr) -> usize {
    1 + match &e.kind {
        ExprKind::Unary { expr, .. } => depth(expr),
        ExprKind::Binary { left, right, .. } => depth(left).max(depth(right)),
        ExprKind::In { expr, list, .. } => list.iter().map(depth).fold(depth(expr), usize::max),
        ExprKind::Call { args, .. } => args.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// What follows an operand.
enum Infix {
    Binary(BinOp),
    /// `in`, or `not in` when true.
    In(bool),
}

/// The infix operator at the start of `i` (after blanks), with the input after it.
fn infix(i: &str) -> Option<(Infix, &str)> {
    let i = ws(i);
    for (text, op) in [
        ("==", BinOp::Eq),
        ("!=", BinOp::NotEq),
        ("<=", BinOp::LtEq),
        (">=", BinOp::GtEq),
        ("<", BinOp::Lt),
        (">", BinOp::Gt),
        ("+", BinOp::Add),
        ("-", BinOp::Sub),
        ("*", BinOp::Mul),
        ("/", BinOp::Div),
    ] {
        if let Some(rest) = i.strip_prefix(text) {
            return Some((Infix::Binary(op), rest));
        }
    }
    for (word, op) in [("or", BinOp::Or), ("and", BinOp::And)] {
        if let Ok((rest, _)) = kw(word)(i) {
            return Some((Infix::Binary(op), rest));
        }
    }
    if let Ok((rest, _)) = kw("in")(i) {
        return Some((Infix::In(false), rest));
    }
    if let Ok((rest, _)) = kw("not")(i)
        && let Ok((rest, _)) = kw("in")(rest)
    {
        return Some((Infix::In(true), rest));
    }
    None
}

impl<'a> P<'a> {
    pub(crate) fn expr(&self, i: &'a str) -> PResult<'a, Expr> {
        self.climb(i, 1)
    }

    /// `(a, b, …)` after `in` / `not in`.
    fn in_list(&self, i: &'a str, left: Expr, negated: bool) -> PResult<'a, Expr> {
        let (rest, _) = sym("(")(i)?;
        let (rest, list) = self.list(rest, |i| self.expr(i))?;
        let end = ws(rest);
        let (rest, _) = sym(")")(rest).map_err(|_| {
            nom::Err::Error(PError::Expected {
                at: end,
                what: vec!["`,`".into(), "`)`".into()],
            })
        })?;
        let e = self.checked(Expr {
            span: left.span.to(self.span(end, rest)),
            kind: ExprKind::In {
                expr: Box::new(left),
                list,
                negated,
            },
        })?;
        Ok((rest, e))
    }

    fn too_deep(&self, at: Span) -> nom::Err<PError<'a>> {
        self.fatal(Error::Value {
            pos: self.pos_of(at),
            message: "expression nested too deeply (at most 32 levels of parentheses and \
                      calls, 64 operators deep; write a long list of `or`s as `in (…)`)",
        })
    }

    /// A composite node, refused when it makes the tree too deep.
    fn checked(&self, e: Expr) -> Result<Expr, nom::Err<PError<'a>>> {
        if depth(&e) > MAX_DEPTH {
            return Err(self.too_deep(e.span));
        }
        Ok(e)
    }

    /// An expression whose operators all bind at least as tightly as `min`.
    fn climb(&self, i: &'a str, min: u8) -> PResult<'a, Expr> {
        let start = ws(i);
        let d = self.depth.get() + 1;
        if d > MAX_NESTING {
            return Err(self.too_deep(self.span(start, start)));
        }
        self.depth.set(d);
        let r = self.climb_at(start, min);
        self.depth.set(d - 1);
        r
    }

    fn climb_at(&self, start: &'a str, min: u8) -> PResult<'a, Expr> {
        // A prefix operator, or an operand.
        let prefix = if min <= NOT_PRECEDENCE {
            kw("not")(start)
                .ok()
                .map(|(r, _)| (UnaryOp::Not, r, NOT_PRECEDENCE))
        } else {
            None
        };
        let prefix = prefix.or_else(|| {
            sym("-")(start)
                .ok()
                .map(|(r, _)| (UnaryOp::Neg, r, NEG_PRECEDENCE))
        });
        let (mut i, mut left) = match prefix {
            Some((op, rest, p)) => {
                let (rest, inner) = self.climb(rest, p)?;
                let e = self.checked(Expr {
                    span: self.span(start, start).to(inner.span),
                    kind: ExprKind::Unary {
                        op,
                        expr: Box::new(inner),
                    },
                })?;
                (rest, e)
            }
            None => self.primary(start)?,
        };
        // Infix operators, left-associative; one comparison per level.
        let mut compared = false;
        while let Some((op, rest)) = infix(i) {
            let p = match op {
                Infix::Binary(op) => op.precedence(),
                Infix::In(_) => IN_PRECEDENCE,
            };
            if p < min || (p == IN_PRECEDENCE && compared) {
                break;
            }
            compared = p == IN_PRECEDENCE;
            left = match op {
                Infix::Binary(op) => {
                    let (rest, right) = self.climb(rest, p + 1)?;
                    i = rest;
                    self.checked(Expr {
                        span: left.span.to(right.span),
                        kind: ExprKind::Binary {
                            op,
                            left: Box::new(left),
                            right: Box::new(right),
                        },
                    })?
                }
                Infix::In(negated) => {
                    let (rest, e) = self.in_list(rest, left, negated)?;
                    i = rest;
                    e
                }
            };
        }
        Ok((i, left))
    }

    /// A parenthesised expression, a call or an operand. Kept small: it is on the path of
    /// every level of nesting, and a debug build gives each local its own stack slot.
    fn primary(&self, i: &'a str) -> PResult<'a, Expr> {
        let start = ws(i);
        if let Some(rest) = start.strip_prefix('(') {
            let (rest, inner) = self.expr(rest)?;
            let (rest, _) = sym(")")(rest)?;
            return Ok((rest, inner));
        }
        if let Some((name, span, rest)) = self.call_start(start) {
            return self.call(start, name, span, rest);
        }
        self.operand(start)
    }

    /// `name(` at `start`: the name, its span and the input after the parenthesis.
    #[inline(never)]
    fn call_start(&self, start: &'a str) -> Option<(&'a str, Span, &'a str)> {
        let (after, (name, span)) = self.ident(start).ok()?;
        let (rest, _) = sym("(")(after).ok()?;
        Some((name, span, rest))
    }

    /// The arguments and closing parenthesis of a call.
    fn call(&self, start: &'a str, name: &'a str, span: Span, rest: &'a str) -> PResult<'a, Expr> {
        let (rest, args) = match sym(")")(rest) {
            Ok((rest, _)) => (rest, Vec::new()),
            Err(_) => {
                let (rest, args) = self.list(rest, |i| self.expr(i))?;
                let end = ws(rest);
                let (rest, _) = sym(")")(rest).map_err(|_| {
                    nom::Err::Error(PError::Expected {
                        at: end,
                        what: vec!["`,`".into(), "`)`".into()],
                    })
                })?;
                (rest, args)
            }
        };
        let name = Ident {
            name: name.to_string(),
            span,
        };
        let call = self.checked(Expr {
            kind: ExprKind::Call { name, args },
            span: self.span(start, rest),
        })?;
        Ok((rest, call))
    }

    /// A literal or a field: no recursion.
    #[inline(never)]
    fn operand(&self, start: &'a str) -> PResult<'a, Expr> {
        let lit = |rest: &'a str, kind| {
            Ok((
                rest,
                Expr {
                    kind,
                    span: self.span(start, rest),
                },
            ))
        };
        if start.starts_with(['"', '\'']) {
            let (rest, (s, _)) = self.string(start)?;
            return lit(rest, ExprKind::Str(s));
        }
        if is_date(start) {
            let (rest, (t, _)) = self.timestamp(start)?;
            return lit(rest, ExprKind::Time(t));
        }
        if start.starts_with(|c: char| c.is_ascii_digit()) {
            let (rest, n) = self.number(start)?;
            let kind = match n {
                Number::Int(v) => ExprKind::Int(v),
                Number::Float(v) => ExprKind::Float(v),
                Number::Duration(d) => ExprKind::Duration(d.ms),
            };
            return lit(rest, kind);
        }
        for (word, kind) in [
            ("true", ExprKind::Bool(true)),
            ("false", ExprKind::Bool(false)),
            ("null", ExprKind::Null),
        ] {
            if let Ok((rest, _)) = kw(word)(start) {
                return lit(rest, kind);
            }
        }
        match self.field(start) {
            Ok((rest, f)) => lit(rest, ExprKind::Field(f)),
            Err(_) => Err(expected(start, "an expression")),
        }
    }
}

/// Whether `s` starts with a date, `YYYY-MM-DD` (not followed by a letter or digit): a
/// time literal rather than arithmetic on numbers.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..10].iter().all(u8::is_ascii_digit)
        && !b.get(10).is_some_and(|c| {
            c.is_ascii_digit() || c.is_ascii_alphabetic() && *c != b'T' && *c != b'Z'
        })
}
