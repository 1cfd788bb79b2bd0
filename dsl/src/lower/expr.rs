//! Field names and scalar expressions.
//!
//! A field is looked up in the columns of the current step. After a join the columns are
//! qualified (`leases.supplier`); an unqualified name then means the pipeline's own source
//! first, then the one joined source that has it. `amount` on earnings means `amount_micro`.

use super::functions::{self, FUNCTION_LIST, Kind};
use super::{Col, Lowerer};
use crate::ast::{BinOp, Expr, ExprKind, FieldRef, UnaryOp};
use crate::catalog::{Ty, interval, quote, string_literal};
use crate::error::{Error, Suggestion};
use crate::suggest::nearest;

impl Lowerer<'_, '_> {
    /// The column `f` names.
    pub(crate) fn resolve(&self, f: &FieldRef) -> Result<&Col, Error> {
        let find = |name: &str| self.cols.iter().find(|c| c.name == name);
        let alias = |q: Option<&str>, name: &str| {
            self.aliases
                .iter()
                .find(|(aq, a, _)| *a == name && *aq == q)
                .map(|(_, _, c)| *c)
        };
        if let Some(c) = find(&f.full()) {
            return Ok(c);
        }
        let name = f.name.as_str();
        match (&f.qualifier, self.joined) {
            // `gpus.utilization` before any join: the source's own field.
            (Some(q), false) if q == self.primary => {
                if let Some(c) = find(name).or_else(|| alias(None, name).and_then(find)) {
                    return Ok(c);
                }
            }
            (Some(q), true) => {
                if let Some(c) = alias(Some(q), name).and_then(|t| find(&format!("{q}.{t}"))) {
                    return Ok(c);
                }
            }
            (Some(_), false) => {}
            (None, false) => {
                if let Some(c) = alias(None, name).and_then(find) {
                    return Ok(c);
                }
            }
            (None, true) => {
                let p = self.primary;
                let own = find(&format!("{p}.{name}"))
                    .or_else(|| alias(Some(p), name).and_then(|t| find(&format!("{p}.{t}"))));
                if let Some(c) = own {
                    return Ok(c);
                }
                let matches: Vec<&Col> = self
                    .cols
                    .iter()
                    .filter(|c| c.name.rsplit_once('.').is_some_and(|(_, n)| n == name))
                    .collect();
                match matches.as_slice() {
                    [one] => return Ok(one),
                    [] => {}
                    many => {
                        return Err(Error::AmbiguousField {
                            pos: self.loc.pos(f.span),
                            name: name.to_string(),
                            candidates: many
                                .iter()
                                .map(|c| format!("`{}`", c.name))
                                .collect::<Vec<_>>()
                                .join(", "),
                        });
                    }
                }
            }
        }
        let mut candidates: Vec<&str> = Vec::new();
        for c in &self.cols {
            candidates.push(&c.name);
            if let Some((_, last)) = c.name.rsplit_once('.') {
                candidates.push(last);
            }
        }
        candidates.extend(self.aliases.iter().map(|(_, a, _)| *a));
        let full = f.full();
        // A stats result names `avg(utilization)` `avg_utilization`: point there too.
        let suffix = format!("_{name}");
        let suggestion = nearest(&full, candidates.iter().copied())
            .or_else(|| nearest(name, candidates.iter().copied()))
            .or_else(|| {
                candidates
                    .iter()
                    .find(|c| c.ends_with(&suffix))
                    .map(|c| c.to_string())
            });
        Err(Error::UnknownField {
            pos: self.loc.pos(f.span),
            name: full,
            relation: self.what.clone(),
            suggestion: Suggestion(suggestion),
        })
    }

    /// A scalar expression: its SQL and type.
    pub(crate) fn expr(&self, e: &Expr) -> Result<(String, Ty), Error> {
        Ok(match &e.kind {
            ExprKind::Field(f) => {
                let c = self.resolve(f)?;
                (quote(&c.name), c.ty)
            }
            ExprKind::Str(s) => (string_literal(s), Ty::Str),
            ExprKind::Int(v) => (v.to_string(), Ty::Int),
            ExprKind::Float(v) => (format!("{v:?}"), Ty::Float),
            ExprKind::Bool(b) => ((if *b { "TRUE" } else { "FALSE" }).into(), Ty::Bool),
            ExprKind::Null => ("NULL".into(), Ty::Null),
            ExprKind::Duration(ms) => (interval(*ms), Ty::Interval),
            ExprKind::Time(t) => (format!("TIMESTAMP '{}'", t.sql()), Ty::Time),
            ExprKind::Unary { op, expr } => {
                let (s, ty) = self.expr(expr)?;
                match op {
                    UnaryOp::Not => (format!("(NOT {s})"), Ty::Bool),
                    UnaryOp::Neg => (format!("(- {s})"), ty),
                }
            }
            ExprKind::Binary { .. } => {
                let (sql, ty) = self.binary(e)?;
                (format!("({sql})"), ty)
            }
            ExprKind::In {
                expr,
                list,
                negated,
            } => {
                let (s, _) = self.expr(expr)?;
                let mut items = Vec::new();
                for item in list {
                    items.push(self.expr(item)?.0);
                }
                let not = if *negated { "NOT " } else { "" };
                (format!("({s} {not}IN ({}))", items.join(", ")), Ty::Bool)
            }
            ExprKind::Call { name, args } => {
                let f = self.function(name, args.len())?;
                if f.kind != Kind::Scalar {
                    return Err(misplaced(self, e, f.kind));
                }
                let mut lowered = Vec::new();
                for a in args {
                    lowered.push(self.expr(a)?);
                }
                if matches!(f.name, "xid_class" | "throttled") && !lowered[0].1.numeric() {
                    return Err(Error::Type {
                        pos: self.loc.pos(args[0].span),
                        function: f.name.to_string(),
                        expected: if f.name == "xid_class" {
                            "an XID code (a number)"
                        } else {
                            "a throttle_reasons bitmask (a number)"
                        },
                        argument: args[0].to_string(),
                        found: lowered[0].1.describe(),
                    });
                }
                functions::scalar_sql(f.name, &lowered)
            }
        })
    }

    /// A binary expression without its outer parentheses. A left operand with an operator of
    /// the same precedence is not parenthesised either (`a OR b OR c`), so that a long chain
    /// stays flat for the SQL parser, whose recursion is limited.
    fn binary(&self, e: &Expr) -> Result<(String, Ty), Error> {
        let ExprKind::Binary { op, left, right } = &e.kind else {
            return self.expr(e);
        };
        let (l, lt) = match &left.kind {
            ExprKind::Binary { op: lop, .. }
                if lop.precedence() == op.precedence() && op.precedence() != 4 =>
            {
                self.binary(left)?
            }
            _ => self.expr(left)?,
        };
        let (r, rt) = self.expr(right)?;
        Ok((
            format!("{l} {} {r}", op.sql()),
            arithmetic_type(*op, lt, rt),
        ))
    }

    /// The function `name`, checked to exist and to take `given` arguments.
    pub(crate) fn function(
        &self,
        name: &crate::ast::Ident,
        given: usize,
    ) -> Result<&'static functions::Function, Error> {
        let Some(f) = functions::lookup(&name.name) else {
            return Err(Error::UnknownFunction {
                pos: self.loc.pos(name.span),
                name: name.name.clone(),
                expected: FUNCTION_LIST,
                suggestion: Suggestion(nearest(
                    &name.name,
                    functions::FUNCTIONS.iter().map(|f| f.name),
                )),
            });
        };
        if given < f.min_args || given > f.max_args {
            return Err(Error::Arity {
                pos: self.loc.pos(name.span),
                function: f.name.to_string(),
                expected: f.arity,
                given,
            });
        }
        Ok(f)
    }
}

/// The error for a call of a non-scalar function where a scalar belongs.
pub(crate) fn misplaced(l: &Lowerer<'_, '_>, e: &Expr, kind: Kind) -> Error {
    let name = match &e.kind {
        ExprKind::Call { name, .. } => name.name.as_str(),
        _ => "",
    };
    let (what, rule) = match kind {
        Kind::Aggregate => (
            format!("the aggregate `{name}`"),
            "belongs at the top of a `stats` item, e.g. `stats avg(utilization)`",
        ),
        Kind::PerSeries => (
            format!("`{name}`"),
            "belongs inside an aggregate of `stats`, e.g. `stats avg(rate(energy_mj, 1m))`",
        ),
        Kind::Bucket => (
            format!("`{name}`"),
            "is a `stats … by` key, e.g. `stats count() by bucket(1h)`",
        ),
        Kind::Scalar => (format!("`{name}`"), "is not an aggregate"),
    };
    Error::Misplaced {
        pos: l.loc.pos(e.span),
        what,
        rule,
    }
}

pub(crate) fn arithmetic_type(op: BinOp, l: Ty, r: Ty) -> Ty {
    match op {
        BinOp::Or
        | BinOp::And
        | BinOp::Eq
        | BinOp::NotEq
        | BinOp::Lt
        | BinOp::LtEq
        | BinOp::Gt
        | BinOp::GtEq => Ty::Bool,
        BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div => match (op, l, r) {
            (BinOp::Add | BinOp::Sub, Ty::Time, Ty::Interval)
            | (BinOp::Add, Ty::Interval, Ty::Time) => Ty::Time,
            (BinOp::Sub, Ty::Time, Ty::Time) => Ty::Interval,
            (_, Ty::Int, Ty::Int) => Ty::Int,
            (_, Ty::Float, Ty::Int | Ty::Float) | (_, Ty::Int, Ty::Float) => Ty::Float,
            _ => Ty::Other,
        },
    }
}
