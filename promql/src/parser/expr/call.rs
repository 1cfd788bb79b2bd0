//! Aggregations, function calls and vector selectors: the terms that take arguments or
//! label matchers, with their parse-time checks.

use super::super::ParseError;
use super::super::lexer::Tok;
use super::{Node, PResult, Parser, is_kw};
use crate::ast::{
    AggOp, AggregateExpr, Expr, Grouping, MatchOp, Matcher, ValueType, VectorSelector,
};
use crate::signatures;

impl Parser<'_> {
    /// An aggregation's keyword, grouping and arguments; checked by
    /// [`Self::finish_aggregate`] (out of line: its frame stays off the stack while
    /// the arguments recurse).
    pub(super) fn parse_aggregate(&mut self, op: AggOp, start: usize) -> PResult<Node> {
        self.bump();
        let grouping = self.parse_opt_grouping()?;
        let open = self.peek().start;
        let args = self.parse_call_args(None)?;
        self.finish_aggregate(op, start, open, grouping, args)
    }

    #[inline(never)]
    fn finish_aggregate(
        &mut self,
        op: AggOp,
        start: usize,
        open: usize,
        mut grouping: Option<Grouping>,
        args: Vec<Node>,
    ) -> PResult<Node> {
        if grouping.is_none() {
            grouping = self.parse_opt_grouping()?;
        }
        let end = self.prev_end();
        if args.is_empty() {
            return Err(self.err(start, "no arguments for aggregate expression provided"));
        }
        let want = if op.takes_param() { 2 } else { 1 };
        if args.len() != want {
            return Err(self.err(
                open,
                format!(
                    "wrong number of arguments for aggregate expression provided, expected {want}, got {}",
                    args.len()
                ),
            ));
        }
        let mut args = args.into_iter();
        let param = if op.takes_param() { args.next() } else { None };
        let expr = args.next().expect("argument count checked above");
        if expr.ty() != ValueType::Vector {
            return Err(self.err(
                expr.start,
                format!(
                    "expected type instant vector in aggregation expression, got {}",
                    expr.ty()
                ),
            ));
        }
        if let Some(p) = &param {
            let want = if op == AggOp::CountValues {
                ValueType::String
            } else {
                ValueType::Scalar
            };
            if p.ty() != want {
                return Err(self.err(
                    p.start,
                    format!(
                        "expected type {want} in aggregation parameter, got {}",
                        p.ty()
                    ),
                ));
            }
        }
        let child_height = expr.height.max(param.as_ref().map_or(0, |p| p.height));
        let expr = Expr::Aggregate(Box::new(AggregateExpr {
            op,
            expr: expr.expr,
            param: param.map(|p| p.expr),
            grouping: grouping.unwrap_or(Grouping::By(Vec::new())),
        }));
        self.parent(expr, ValueType::Vector, child_height, start, start, end)
    }

    fn parse_opt_grouping(&mut self) -> PResult<Option<Grouping>> {
        let tok = self.peek().tok.clone();
        if is_kw(&tok, "by") {
            self.bump();
            Ok(Some(Grouping::By(self.parse_grouping_labels("by")?)))
        } else if is_kw(&tok, "without") {
            self.bump();
            Ok(Some(Grouping::Without(
                self.parse_grouping_labels("without")?,
            )))
        } else {
            Ok(None)
        }
    }

    /// `(label, "quoted label", ...)` with an optional trailing comma.
    pub(super) fn parse_grouping_labels(&mut self, context: &str) -> PResult<Vec<String>> {
        let ctx = format!("grouping opts of {context}");
        self.expect(Tok::LParen, &ctx, "\"(\"")?;
        let mut labels = Vec::new();
        loop {
            let t = self.peek().clone();
            match t.tok {
                Tok::RParen => {
                    self.bump();
                    return Ok(labels);
                }
                Tok::Ident(w) => {
                    self.bump();
                    labels.push(w);
                }
                Tok::Str(s) => {
                    if s.is_empty() {
                        return Err(self.err(t.start, "invalid label name for grouping: \"\""));
                    }
                    self.bump();
                    labels.push(s);
                }
                _ => return Err(self.unexpected(&ctx, "label")),
            }
            match self.peek().tok {
                Tok::Comma => {
                    self.bump();
                }
                Tok::RParen => {}
                _ => return Err(self.unexpected(&ctx, "\",\" or \")\"")),
            }
        }
    }

    /// `( expr, expr, ... )`; a trailing comma is an error, as in Prometheus.
    /// `func` names the function (`None` for an aggregation) in error messages.
    fn parse_call_args(&mut self, func: Option<&str>) -> PResult<Vec<Node>> {
        if self.peek().tok != Tok::LParen {
            return Err(self.unexpected_in_args(func, "\"(\""));
        }
        self.bump();
        let mut args = Vec::new();
        if self.peek().tok == Tok::RParen {
            self.bump();
            return Ok(args);
        }
        loop {
            args.push(self.parse_expr()?);
            match self.peek().tok {
                Tok::Comma => {
                    let comma = self.bump();
                    if self.peek().tok == Tok::RParen {
                        return Err(self.err(
                            comma.start,
                            "trailing commas not allowed in function call args",
                        ));
                    }
                }
                Tok::RParen => {
                    self.bump();
                    return Ok(args);
                }
                _ => return Err(self.unexpected_in_args(func, "\",\" or \")\"")),
            }
        }
    }

    #[cold]
    fn unexpected_in_args(&self, func: Option<&str>, expected: &str) -> ParseError {
        match func {
            Some(name) => self.unexpected(&format!("call to function {name:?}"), expected),
            None => self.unexpected("aggregation", expected),
        }
    }

    /// A function call's arguments; checked by [`Self::finish_call`] (out of line:
    /// its frame stays off the stack while the arguments recurse).
    pub(super) fn parse_call(
        &mut self,
        sig: &'static signatures::Signature,
        start: usize,
    ) -> PResult<Node> {
        self.bump();
        let args = self.parse_call_args(Some(sig.name))?;
        self.finish_call(sig, start, args)
    }

    #[inline(never)]
    fn finish_call(
        &mut self,
        sig: &'static signatures::Signature,
        start: usize,
        args: Vec<Node>,
    ) -> PResult<Node> {
        let end = self.prev_end();
        let (lo, hi) = sig.arg_bounds();
        let n = args.len();
        if lo == hi.unwrap_or(usize::MAX) && n != lo {
            return Err(self.err(
                start,
                format!(
                    "expected {lo} argument(s) in call to {:?}, got {n}",
                    sig.name
                ),
            ));
        }
        if n < lo {
            return Err(self.err(
                start,
                format!(
                    "expected at least {lo} argument(s) in call to {:?}, got {n}",
                    sig.name
                ),
            ));
        }
        if let Some(hi) = hi
            && n > hi
        {
            return Err(self.err(
                start,
                format!(
                    "expected at most {hi} argument(s) in call to {:?}, got {n}",
                    sig.name
                ),
            ));
        }
        if sig.name == "info"
            && let Some(arg) = args.get(1)
        {
            match &arg.expr {
                Expr::VectorSelector(vs) if vs.name.is_some() => {
                    return Err(self.err(
                        arg.start,
                        "expected label selectors only, got vector selector instead",
                    ));
                }
                Expr::VectorSelector(_) => self.empty_selectors.retain(|&o| o != arg.start),
                _ => return Err(self.err(arg.start, "expected label selectors only")),
            }
        }
        for (i, arg) in args.iter().enumerate() {
            let want = sig.arg_type(i);
            if arg.ty() != want {
                return Err(self.err(
                    arg.start,
                    format!(
                        "expected type {want} in call to function {:?}, got {}",
                        sig.name,
                        arg.ty()
                    ),
                ));
            }
        }
        let child_height = args.iter().map(|a| a.height).max().unwrap_or(0);
        let expr = Expr::Call {
            func: sig.name.to_owned(),
            args: args.into_iter().map(|a| a.expr).collect(),
        };
        self.parent(expr, sig.return_type, child_height, start, start, end)
    }

    // ---- selectors -----------------------------------------------------------

    pub(super) fn parse_selector(
        &mut self,
        outside_name: Option<String>,
        start: usize,
    ) -> PResult<Node> {
        let mut matchers = Vec::new();
        let mut name = outside_name.clone();
        if let Some(n) = &outside_name {
            matchers.push(Matcher::equal("__name__", n.clone()));
        }
        let mut end = self.prev_end();
        if self.peek().tok == Tok::LBrace {
            self.bump();
            loop {
                let t = self.peek().clone();
                match t.tok {
                    Tok::RBrace => {
                        self.bump();
                        break;
                    }
                    Tok::Ident(label) => {
                        self.bump();
                        matchers.push(self.parse_matcher_rest(label, t.start)?);
                    }
                    Tok::Str(s) => {
                        self.bump();
                        if matches!(
                            self.peek().tok,
                            Tok::Assign | Tok::Ne | Tok::ReMatch | Tok::ReNoMatch
                        ) {
                            matchers.push(self.parse_matcher_rest(s, t.start)?);
                        } else {
                            if name.is_none() {
                                name = Some(s.clone());
                            }
                            matchers.push(Matcher::equal("__name__", s));
                        }
                    }
                    _ => return Err(self.unexpected("label matching", "label matcher or \"}\"")),
                }
                match self.peek().tok {
                    Tok::Comma => {
                        self.bump();
                    }
                    Tok::RBrace => {}
                    _ => return Err(self.unexpected("label matching", "\",\" or \"}\"")),
                }
            }
            end = self.prev_end();
        }
        if let Some(n) = &outside_name {
            if let Some(m) = matchers[1..].iter().find(|m| m.name == "__name__") {
                return Err(self.err(
                    start,
                    format!("metric name must not be set twice: {n:?} or {:?}", m.value),
                ));
            }
        } else if matchers.iter().all(|m| m.matches("")) {
            self.empty_selectors.push(start);
        }
        Ok(Node::leaf(
            Expr::VectorSelector(VectorSelector {
                name,
                matchers,
                offset_ms: 0,
                at: None,
            }),
            start,
            end,
        ))
    }

    /// The operator and value of a matcher whose label name was just read.
    fn parse_matcher_rest(&mut self, label: String, label_start: usize) -> PResult<Matcher> {
        let op = match self.peek().tok {
            Tok::Assign => MatchOp::Equal,
            Tok::Ne => MatchOp::NotEqual,
            Tok::ReMatch => MatchOp::Regex,
            Tok::ReNoMatch => MatchOp::NotRegex,
            _ => return Err(self.unexpected("label matching", "label matching operator")),
        };
        self.bump();
        let value = match &self.peek().tok {
            Tok::Str(s) => s.clone(),
            _ => return Err(self.unexpected("label matching", "string")),
        };
        self.bump();
        Matcher::new(label, op, value).map_err(|e| {
            self.err(
                label_start,
                format!("invalid regular expression in label matcher: {e}"),
            )
        })
    }
}
