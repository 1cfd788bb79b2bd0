//! Recursive descent over the token stream, with Prometheus' parse-time checks.
//!
//! Precedence, loosest first: `or`; `and unless`; comparisons; `+ -`;
//! `* / % atan2`; unary `+ -`; `^` (right-associative); postfix `[range]`,
//! `[range:step]`, `offset`, `@`.

use super::ParseError;
use super::lexer::{Tok, Token};
use crate::ast::{
    AggOp, AtModifier, BinOp, BinaryExpr, Cardinality, Expr, Subquery, UnaryOp, ValueType,
    VectorMatching,
};
use crate::signatures;

mod call;

/// An expression, its type and height, and the byte range it came from.
///
/// The type and height are kept beside the tree so that the checks made while
/// building each node never walk the subtree below it (which would make parsing
/// quadratic and recurse as deep as the tree).
struct Node {
    expr: Expr,
    ty: ValueType,
    /// Levels of the tree from this node down to its deepest leaf (a leaf is 1).
    height: usize,
    start: usize,
    end: usize,
}

impl Node {
    /// A literal or selector.
    fn leaf(expr: Expr, start: usize, end: usize) -> Self {
        Self {
            ty: expr.value_type(),
            expr,
            height: 1,
            start,
            end,
        }
    }

    fn ty(&self) -> ValueType {
        self.ty
    }
}

type PResult<T> = Result<T, ParseError>;

/// Binding power of `^`; unary operators bind just below it.
const POW_PREC: u8 = 6;

/// How many levels an expression tree may have, counting every node on the way
/// from the root to the deepest leaf: binary and unary operators, parentheses,
/// function calls, aggregations and subqueries alike (`1+1+1` has 3 levels, `-(1)`
/// has 3).
///
/// Parsing, evaluating, printing, comparing and dropping a tree all recurse once per
/// level, so this bound is what keeps a query within a thread's stack (tokio's
/// worker and blocking threads have 2 MiB). Measured in a debug build (frames are
/// largest there), the costliest shape per level is parsing nested aggregations,
/// `sum(sum(...))`: 226 levels fill 2 MiB; evaluating nested subqueries fills it at
/// about 590, binary chains at about 760. 128 uses under 60% of 2 MiB in the worst
/// shape; `depth_tests` checks every shape at exactly this depth on a 2 MiB thread.
pub const MAX_DEPTH: usize = 128;

/// Words that can never be a metric name (the lexer's keywords that Prometheus'
/// grammar leaves out of `metric_identifier`).
fn is_non_metric_keyword(w: &str) -> bool {
    [
        "bool",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "atan2",
    ]
    .iter()
    .any(|k| k.eq_ignore_ascii_case(w))
}

fn is_kw(tok: &Tok, kw: &str) -> bool {
    matches!(tok, Tok::Ident(w) if w.eq_ignore_ascii_case(kw))
}

pub(crate) struct Parser<'a> {
    input: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    /// Selectors that failed the "at least one non-empty matcher" rule, by start
    /// offset. `info()`'s second argument is exempt, so the check is settled at the end.
    empty_selectors: Vec<usize>,
    /// Nested `parse_unary` calls and right operands: the parser's own recursion,
    /// bounded by [`MAX_DEPTH`] because each builds a node below the enclosing one's.
    depth: usize,
    /// The lexer's error, if it stopped early; reported on reaching the final `Eof`.
    lex_error: Option<ParseError>,
}

impl<'a> Parser<'a> {
    pub(crate) fn new(input: &'a str, tokens: Vec<Token>, lex_error: Option<ParseError>) -> Self {
        Self {
            input,
            tokens,
            pos: 0,
            empty_selectors: Vec::new(),
            depth: 0,
            lex_error,
        }
    }

    pub(crate) fn parse_all(mut self) -> PResult<Expr> {
        if self.peek().tok == Tok::Eof {
            return Err(self
                .lex_error
                .clone()
                .unwrap_or_else(|| self.err(0, "no expression found in input")));
        }
        let node = self.parse_expr()?;
        if self.peek().tok != Tok::Eof {
            return Err(self.unexpected("", "an operator or end of input"));
        }
        if let Some(e) = self.lex_error {
            return Err(e);
        }
        if let Some(&offset) = self.empty_selectors.iter().min() {
            return Err(self.err(
                offset,
                "vector selector must contain at least one non-empty matcher",
            ));
        }
        Ok(node.expr)
    }

    // ---- token helpers -------------------------------------------------------

    fn peek(&self) -> &Token {
        // The token list always ends with Eof and `bump` never passes it.
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn peek_at(&self, n: usize) -> &Tok {
        &self.tokens[(self.pos + n).min(self.tokens.len() - 1)].tok
    }

    fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if t.tok != Tok::Eof {
            self.pos += 1;
        }
        t
    }

    fn prev_end(&self) -> usize {
        if self.pos == 0 {
            0
        } else {
            self.tokens[self.pos - 1].end
        }
    }

    fn err(&self, offset: usize, message: impl Into<String>) -> ParseError {
        ParseError::new(self.input, offset, message)
    }

    /// "duration out of range" naming the text at `start..end`.
    #[cold]
    fn out_of_range(&self, start: usize, end: usize) -> ParseError {
        let text = self.input.get(start..end).unwrap_or_default();
        self.err(start, format!("duration out of range: {text:?}"))
    }

    /// The error for a tree deeper than [`MAX_DEPTH`], at the token that made it so.
    #[cold]
    fn too_deep(&self, offset: usize) -> ParseError {
        self.err(
            offset,
            format!("expression nests deeper than {MAX_DEPTH} levels"),
        )
    }

    /// A node over children whose tallest is `child_height` levels high, refused
    /// (at `at`) if it would make the tree deeper than [`MAX_DEPTH`].
    fn parent(
        &self,
        expr: Expr,
        ty: ValueType,
        child_height: usize,
        at: usize,
        start: usize,
        end: usize,
    ) -> PResult<Node> {
        let height = child_height + 1;
        if height > MAX_DEPTH {
            return Err(self.too_deep(at));
        }
        Ok(Node {
            expr,
            ty,
            height,
            start,
            end,
        })
    }

    /// "unexpected <token> in <context>, expected <expected>" at the current token.
    fn unexpected(&self, context: &str, expected: &str) -> ParseError {
        let t = self.peek();
        if t.tok == Tok::Eof
            && let Some(e) = &self.lex_error
        {
            return e.clone();
        }
        let mut msg = format!("unexpected {}", t.tok.describe());
        if !context.is_empty() {
            msg.push_str(" in ");
            msg.push_str(context);
        }
        if !expected.is_empty() {
            msg.push_str(", expected ");
            msg.push_str(expected);
        }
        self.err(t.start, msg)
    }

    fn expect(&mut self, tok: Tok, context: &str, expected: &str) -> PResult<Token> {
        if self.peek().tok == tok {
            Ok(self.bump())
        } else {
            Err(self.unexpected(context, expected))
        }
    }

    // ---- binary expressions --------------------------------------------------

    fn parse_expr(&mut self) -> PResult<Node> {
        self.parse_binary(1)
    }

    fn peek_binop(&self) -> Option<BinOp> {
        Some(match &self.peek().tok {
            Tok::Add => BinOp::Add,
            Tok::Sub => BinOp::Sub,
            Tok::Mul => BinOp::Mul,
            Tok::Div => BinOp::Div,
            Tok::Mod => BinOp::Mod,
            Tok::Pow => BinOp::Pow,
            Tok::EqEq => BinOp::Eq,
            Tok::Ne => BinOp::Ne,
            Tok::Gt => BinOp::Gt,
            Tok::Lt => BinOp::Lt,
            Tok::Ge => BinOp::Ge,
            Tok::Le => BinOp::Le,
            Tok::Ident(w) if w.eq_ignore_ascii_case("and") => BinOp::And,
            Tok::Ident(w) if w.eq_ignore_ascii_case("or") => BinOp::Or,
            Tok::Ident(w) if w.eq_ignore_ascii_case("unless") => BinOp::Unless,
            Tok::Ident(w) if w.eq_ignore_ascii_case("atan2") => BinOp::Atan2,
            _ => return None,
        })
    }

    fn parse_binary(&mut self, min_prec: u8) -> PResult<Node> {
        let mut lhs = self.parse_unary()?;
        while let Some(op) = self.peek_binop() {
            let prec = op.precedence();
            if prec < min_prec {
                break;
            }
            let op_tok = self.bump();
            let (return_bool, matching) = self.parse_bin_modifiers()?;
            let next_min = if op.is_right_assoc() { prec } else { prec + 1 };
            // The right operand is a level below this operator: counted, so that a
            // right-associative chain (`1^1^1...`) cannot recurse past the limit.
            if self.depth >= MAX_DEPTH {
                return Err(self.too_deep(self.peek().start));
            }
            self.depth += 1;
            let rhs = self.parse_binary(next_min);
            self.depth -= 1;
            let rhs = rhs?;
            lhs = self.build_binary(op, op_tok.start, lhs, rhs, return_bool, matching)?;
        }
        Ok(lhs)
    }

    /// `bool`, `on(...)`/`ignoring(...)`, `group_left(...)`/`group_right(...)`.
    fn parse_bin_modifiers(&mut self) -> PResult<(bool, Option<VectorMatching>)> {
        let mut return_bool = false;
        if is_kw(&self.peek().tok, "bool") {
            self.bump();
            return_bool = true;
        }
        let mut matching = None;
        let tok = self.peek().tok.clone();
        if is_kw(&tok, "on") || is_kw(&tok, "ignoring") {
            let on = is_kw(&tok, "on");
            self.bump();
            let labels = self.parse_grouping_labels(if on { "on" } else { "ignoring" })?;
            let mut card = Cardinality::OneToOne;
            let mut include = Vec::new();
            let next = self.peek().tok.clone();
            if is_kw(&next, "group_left") || is_kw(&next, "group_right") {
                card = if is_kw(&next, "group_left") {
                    Cardinality::ManyToOne
                } else {
                    Cardinality::OneToMany
                };
                self.bump();
                if self.peek().tok == Tok::LParen {
                    include = self.parse_grouping_labels("group modifier")?;
                }
            }
            matching = Some(VectorMatching {
                card,
                on,
                labels,
                include,
            });
        } else if is_kw(&tok, "group_left") || is_kw(&tok, "group_right") {
            return Err(self.err(
                self.peek().start,
                "group_left/group_right need a preceding on(...) or ignoring(...)",
            ));
        }
        let tok = self.peek().tok.clone();
        if ["fill", "fill_left", "fill_right"]
            .iter()
            .any(|k| is_kw(&tok, k))
            && *self.peek_at(1) == Tok::LParen
        {
            return Err(self.err(
                self.peek().start,
                "fill modifiers for binary operations are experimental in Prometheus and not supported",
            ));
        }
        Ok((return_bool, matching))
    }

    fn build_binary(
        &mut self,
        op: BinOp,
        op_start: usize,
        lhs: Node,
        rhs: Node,
        return_bool: bool,
        mut matching: Option<VectorMatching>,
    ) -> PResult<Node> {
        let (lt, rt) = (lhs.ty(), rhs.ty());
        let name = op.as_str();
        if return_bool && !op.is_comparison() {
            return Err(self.err(
                op_start,
                "bool modifier can only be used on comparison operators",
            ));
        }
        if op.is_comparison() && !return_bool && lt == ValueType::Scalar && rt == ValueType::Scalar
        {
            return Err(self.err(
                op_start,
                "comparisons between scalars must use BOOL modifier",
            ));
        }
        for (side, t) in [(&lhs, lt), (&rhs, rt)] {
            if t != ValueType::Scalar && t != ValueType::Vector {
                return Err(self.err(
                    side.start,
                    format!(
                        "binary expression must contain only scalar and instant vector types, got {t}"
                    ),
                ));
            }
        }
        if let Some(m) = &matching
            && m.on
            && let Some(l) = m.labels.iter().find(|l| m.include.contains(l))
        {
            return Err(self.err(
                op_start,
                format!("label {l:?} must not occur in ON and GROUP clause at once"),
            ));
        }
        if op.is_set() && (lt == ValueType::Scalar || rt == ValueType::Scalar) {
            return Err(self.err(
                op_start,
                format!("set operator {name:?} not allowed in binary scalar expression"),
            ));
        }
        if lt != ValueType::Vector || rt != ValueType::Vector {
            if matching.as_ref().is_some_and(|m| !m.labels.is_empty()) {
                return Err(self.err(
                    op_start,
                    "vector matching only allowed between instant vectors",
                ));
            }
            matching = None;
        } else if op.is_set()
            && let Some(m) = &mut matching
        {
            if matches!(m.card, Cardinality::ManyToOne | Cardinality::OneToMany) {
                return Err(self.err(
                    op_start,
                    format!("no grouping allowed for {name:?} operation"),
                ));
            }
            m.card = Cardinality::ManyToMany;
        }
        let ty = if lt == ValueType::Scalar && rt == ValueType::Scalar {
            ValueType::Scalar
        } else {
            ValueType::Vector
        };
        let (start, end) = (lhs.start, rhs.end);
        let child_height = lhs.height.max(rhs.height);
        let expr = Expr::Binary(Box::new(BinaryExpr {
            op,
            lhs: lhs.expr,
            rhs: rhs.expr,
            return_bool,
            matching,
        }));
        self.parent(expr, ty, child_height, op_start, start, end)
    }

    // ---- unary and postfix ---------------------------------------------------

    fn parse_unary(&mut self) -> PResult<Node> {
        if self.depth >= MAX_DEPTH {
            return Err(self.too_deep(self.peek().start));
        }
        self.depth += 1;
        let result = self.parse_unary_inner();
        self.depth -= 1;
        result
    }

    fn parse_unary_inner(&mut self) -> PResult<Node> {
        let op = match self.peek().tok {
            Tok::Add => UnaryOp::Pos,
            Tok::Sub => UnaryOp::Neg,
            _ => return self.parse_postfix(),
        };
        let op_tok = self.bump();
        // The operand extends over `^` (which binds tighter) but nothing looser.
        let operand = self.parse_binary(POW_PREC)?;
        let t = operand.ty();
        if t != ValueType::Scalar && t != ValueType::Vector {
            return Err(self.err(
                op_tok.start,
                format!(
                    "unary expression only allowed on expressions of type scalar or instant vector, got {t:?}",
                    t = t.as_str()
                ),
            ));
        }
        let expr = Expr::Unary {
            op,
            expr: Box::new(operand.expr),
        };
        self.parent(
            expr,
            t,
            operand.height,
            op_tok.start,
            op_tok.start,
            operand.end,
        )
    }

    fn parse_postfix(&mut self) -> PResult<Node> {
        let node = self.parse_primary()?;
        self.parse_postfix_ops(node)
    }

    /// Ranges, subqueries, `offset` and `@` after a primary expression. Out of line so
    /// that its large frame is not on the stack while the primary recurses.
    #[inline(never)]
    fn parse_postfix_ops(&mut self, mut node: Node) -> PResult<Node> {
        loop {
            let tok = self.peek().tok.clone();
            node = match tok {
                Tok::LBracket => self.parse_range_or_subquery(node)?,
                Tok::At => self.parse_at(node)?,
                ref t if is_kw(t, "offset") => self.parse_offset(node)?,
                ref t if is_kw(t, "anchored") || is_kw(t, "smoothed") => {
                    return Err(self.err(
                        self.peek().start,
                        "the anchored and smoothed modifiers are experimental in Prometheus and not supported",
                    ));
                }
                _ => return Ok(node),
            };
        }
    }

    /// A range or subquery duration inside brackets: a duration or a number of
    /// seconds, greater than zero.
    fn parse_bracket_duration(&mut self, context: &str) -> PResult<i64> {
        let t = self.peek().clone();
        let ms = match t.tok {
            Tok::Duration(ms) => ms,
            Tok::Number(secs) => {
                secs_to_ms(secs).ok_or_else(|| self.out_of_range(t.start, t.end))?
            }
            Tok::Ident(_) | Tok::LParen | Tok::Sub | Tok::Add => {
                return Err(self.err(
                    t.start,
                    "duration expressions are experimental in Prometheus and not supported; expected a number or duration",
                ));
            }
            _ => return Err(self.unexpected(context, "number or duration")),
        };
        self.bump();
        if ms <= 0 {
            return Err(self.err(t.start, "duration must be greater than 0"));
        }
        Ok(ms)
    }

    fn parse_range_or_subquery(&mut self, node: Node) -> PResult<Node> {
        let open = self.bump();
        let range_ms = self.parse_bracket_duration("subquery or range selector")?;
        match self.peek().tok {
            Tok::RBracket => {
                let close = self.bump();
                let selector = match node.expr {
                    Expr::VectorSelector(vs) => vs,
                    _ => {
                        return Err(
                            self.err(open.start, "ranges only allowed for vector selectors")
                        );
                    }
                };
                if selector.offset_ms != 0 {
                    return Err(self.err(open.start, "no offset modifiers allowed before range"));
                }
                if selector.at.is_some() {
                    return Err(self.err(open.start, "no @ modifiers allowed before range"));
                }
                Ok(Node::leaf(
                    Expr::MatrixSelector { selector, range_ms },
                    node.start,
                    close.end,
                ))
            }
            Tok::Colon => {
                self.bump();
                let step_ms = if self.peek().tok == Tok::RBracket {
                    None
                } else {
                    Some(self.parse_bracket_duration("subquery selector")?)
                };
                let close = self.expect(Tok::RBracket, "subquery selector", "\"]\"")?;
                let t = node.ty();
                if t != ValueType::Vector {
                    return Err(self.err(
                        node.start,
                        format!("subquery is only allowed on instant vector, got {t} instead"),
                    ));
                }
                let expr = Expr::Subquery(Box::new(Subquery {
                    expr: node.expr,
                    range_ms,
                    step_ms,
                    offset_ms: 0,
                    at: None,
                }));
                self.parent(
                    expr,
                    ValueType::Matrix,
                    node.height,
                    open.start,
                    node.start,
                    close.end,
                )
            }
            Tok::Add | Tok::Sub | Tok::Mul | Tok::Div | Tok::Mod | Tok::Pow | Tok::LParen => {
                Err(self.err(
                    self.peek().start,
                    "duration expressions are experimental in Prometheus and not supported",
                ))
            }
            _ => Err(self.unexpected("subquery or range", "\":\" or \"]\"")),
        }
    }

    /// The offset and `@` fields of a node that may carry them.
    fn modifier_slots<'n>(
        &self,
        node: &'n mut Node,
        what: &str,
    ) -> PResult<(&'n mut i64, &'n mut Option<AtModifier>)> {
        match &mut node.expr {
            Expr::VectorSelector(vs) | Expr::MatrixSelector { selector: vs, .. } => {
                Ok((&mut vs.offset_ms, &mut vs.at))
            }
            Expr::Subquery(sq) => Ok((&mut sq.offset_ms, &mut sq.at)),
            _ => Err(self.err(
                node.start,
                format!(
                    "{what} modifier must be preceded by an instant vector selector or range vector selector or a subquery"
                ),
            )),
        }
    }

    /// An optionally signed number or duration, in seconds.
    fn parse_signed_seconds(&mut self, context: &str, expected: &str) -> PResult<f64> {
        let sign = match self.peek().tok {
            Tok::Sub => {
                self.bump();
                -1.0
            }
            Tok::Add => {
                self.bump();
                1.0
            }
            _ => 1.0,
        };
        let t = self.peek().clone();
        let secs = match t.tok {
            Tok::Number(v) => v,
            Tok::Duration(ms) => ms as f64 / 1000.0,
            Tok::LParen => {
                return Err(self.err(
                    t.start,
                    format!("duration expressions are experimental in Prometheus and not supported in {context}"),
                ));
            }
            _ => return Err(self.unexpected(context, expected)),
        };
        self.bump();
        Ok(sign * secs)
    }

    fn parse_offset(&mut self, mut node: Node) -> PResult<Node> {
        let kw = self.bump();
        let at = self.peek().start;
        let secs = self.parse_signed_seconds("offset", "number or duration")?;
        let ms = secs_to_ms(secs).ok_or_else(|| self.out_of_range(at, self.prev_end()))?;
        let end = self.prev_end();
        let (offset, _) = self.modifier_slots(&mut node, "offset")?;
        if *offset != 0 {
            return Err(self.err(kw.start, "offset may not be set multiple times"));
        }
        *offset = ms;
        node.end = end;
        Ok(node)
    }

    fn parse_at(&mut self, mut node: Node) -> PResult<Node> {
        let at_tok = self.bump();
        let tok = self.peek().tok.clone();
        let modifier = if is_kw(&tok, "start") || is_kw(&tok, "end") {
            self.bump();
            self.expect(Tok::LParen, "@", "\"(\"")?;
            self.expect(Tok::RParen, "@", "\")\"")?;
            if is_kw(&tok, "start") {
                AtModifier::Start
            } else {
                AtModifier::End
            }
        } else {
            let ts_at = self.peek().start;
            let ts = self.parse_signed_seconds("@", "timestamp")?;
            if !ts.is_finite() || ts.abs() >= i64::MAX as f64 / 1000.0 {
                let shown = match ts {
                    t if t.is_nan() => "NaN".to_owned(),
                    t if t == f64::INFINITY => "+Inf".to_owned(),
                    t if t == f64::NEG_INFINITY => "-Inf".to_owned(),
                    t => t.to_string(),
                };
                return Err(self.err(
                    ts_at,
                    format!("timestamp out of bounds for @ modifier: {shown}"),
                ));
            }
            AtModifier::Timestamp((ts * 1000.0).round() as i64)
        };
        let end = self.prev_end();
        let (_, at) = self.modifier_slots(&mut node, "@")?;
        if at.is_some() {
            return Err(self.err(at_tok.start, "@ <timestamp> may not be set multiple times"));
        }
        *at = Some(modifier);
        node.end = end;
        Ok(node)
    }

    // ---- primary expressions -------------------------------------------------

    fn parse_primary(&mut self) -> PResult<Node> {
        let t = self.peek().clone();
        match &t.tok {
            Tok::Number(v) => {
                self.bump();
                Ok(Node::leaf(Expr::Number(*v), t.start, t.end))
            }
            Tok::Duration(ms) => {
                self.bump();
                Ok(Node::leaf(
                    Expr::Number(*ms as f64 / 1000.0),
                    t.start,
                    t.end,
                ))
            }
            Tok::Str(s) => {
                self.bump();
                Ok(Node::leaf(Expr::String(s.clone()), t.start, t.end))
            }
            Tok::LParen => {
                self.bump();
                let inner = self.parse_expr()?;
                let close = self.expect(Tok::RParen, "parenthesized expression", "\")\"")?;
                self.parent(
                    Expr::Paren(Box::new(inner.expr)),
                    inner.ty,
                    inner.height,
                    t.start,
                    t.start,
                    close.end,
                )
            }
            Tok::LBrace => self.parse_selector(None, t.start),
            Tok::Ident(word) => self.parse_word(word.clone(), &t),
            _ => Err(self.unexpected("", "expression")),
        }
    }

    /// An aggregation, function call or metric name.
    fn parse_word(&mut self, word: String, t: &Token) -> PResult<Node> {
        let next = self.peek_at(1).clone();
        if let Some(op) = AggOp::from_keyword(&word)
            && (next == Tok::LParen || is_kw(&next, "by") || is_kw(&next, "without"))
        {
            return self.parse_aggregate(op, t.start);
        }
        if next == Tok::LParen && !word.contains(':') {
            if let Some(sig) = signatures::lookup(&word) {
                return self.parse_call(sig, t.start);
            }
            if !crate::ast::is_reserved_word(&word) {
                return Err(self.err(t.start, format!("unknown function with name {word:?}")));
            }
        }
        if is_non_metric_keyword(&word) {
            if is_kw(&t.tok, "group_left") || is_kw(&t.tok, "group_right") {
                return Err(self.err(
                    t.start,
                    "group_left/group_right need a preceding on(...) or ignoring(...)",
                ));
            }
            return Err(self.unexpected("", "expression"));
        }
        self.bump();
        self.parse_selector(Some(word), t.start)
    }
}

/// Seconds (from a number literal) to milliseconds, `None` if out of range (beyond
/// what Prometheus' nanosecond durations hold).
fn secs_to_ms(secs: f64) -> Option<i64> {
    let ms = (secs * 1000.0).round();
    (ms.is_finite() && ms.abs() <= super::lexer::MAX_DURATION_MS as f64).then_some(ms as i64)
}
