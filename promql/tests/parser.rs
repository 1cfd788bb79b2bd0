//! Parser tests: Prometheus' conformance scripts, precedence, errors with offsets,
//! Display round-trips, every syntax point, and a no-panic fuzz loop.

use std::path::PathBuf;

use rigwatch_promql::ast::{
    AggOp, AtModifier, BinOp, Cardinality, Expr, Grouping, MatchOp, UnaryOp, ValueType,
    VectorSelector,
};
use rigwatch_promql::{ParseError, parse};

// ---- helpers -------------------------------------------------------------------

fn p(s: &str) -> Expr {
    parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
}

fn perr(s: &str) -> ParseError {
    match parse(s) {
        Ok(e) => panic!("{s:?} should fail, parsed as {e:?}"),
        Err(e) => e,
    }
}

/// Asserts `s` fails at byte `offset` with a message containing `needle`.
fn assert_err(s: &str, offset: usize, needle: &str) {
    let e = perr(s);
    assert!(
        e.message.contains(needle),
        "{s:?}: message {:?} lacks {needle:?}",
        e.message
    );
    assert_eq!(e.offset, offset, "{s:?}: wrong offset in {e}");
}

fn sel(e: &Expr) -> &VectorSelector {
    match e {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector { selector, .. } => selector,
        other => panic!("not a selector: {other:?}"),
    }
}

fn bin(e: &Expr) -> &rigwatch_promql::ast::BinaryExpr {
    match e {
        Expr::Binary(b) => b,
        other => panic!("not binary: {other:?}"),
    }
}

fn round_trip(s: &str) {
    let first = p(s);
    let printed = first.to_string();
    let second =
        parse(&printed).unwrap_or_else(|e| panic!("{s:?} printed as {printed:?} which fails: {e}"));
    // Debug, not ==: NaN literals are not equal to themselves.
    assert_eq!(
        format!("{first:?}"),
        format!("{second:?}"),
        "{s:?} printed as {printed:?}"
    );
}

// ---- conformance scripts (in parser/conformance_scripts.rs) -----------------

#[path = "parser/conformance_scripts.rs"]
mod conformance_scripts;

use conformance_scripts::{eval_cases, testdata_dir};

// ---- literals --------------------------------------------------------------------

#[test]
fn number_literals() {
    assert_eq!(p("1"), Expr::Number(1.0));
    assert_eq!(p("1.5"), Expr::Number(1.5));
    assert_eq!(p(".5"), Expr::Number(0.5));
    assert_eq!(p("0x1f"), Expr::Number(31.0));
    assert_eq!(p("0X1F"), Expr::Number(31.0));
    assert_eq!(p("1e3"), Expr::Number(1000.0));
    assert_eq!(p("1.5E-3"), Expr::Number(0.0015));
    assert_eq!(p("1_000_000"), Expr::Number(1_000_000.0));
    assert_eq!(p("0x_ff"), Expr::Number(255.0));
    assert_eq!(p("Inf"), Expr::Number(f64::INFINITY));
    assert_eq!(p("inf"), Expr::Number(f64::INFINITY));
    assert!(matches!(p("NaN"), Expr::Number(v) if v.is_nan()));
    assert!(matches!(p("nan"), Expr::Number(v) if v.is_nan()));
    // A duration is a number of seconds where an expression is expected.
    assert_eq!(p("5m"), Expr::Number(300.0));
    assert_eq!(p("1h30m"), Expr::Number(5400.0));
    assert_eq!(p("1ms"), Expr::Number(0.001));
    // No folding: `-1` is a unary minus on 1.
    assert_eq!(
        p("-1"),
        Expr::Unary {
            op: UnaryOp::Neg,
            expr: Box::new(Expr::Number(1.0))
        }
    );
    assert_err("1_", 0, "bad number");
    assert_err("1 + 1__0", 4, "bad number");
    assert_err("1.2.3", 0, "bad number");
}

#[test]
fn string_literals() {
    assert_eq!(p(r#""a\"b""#), Expr::String("a\"b".into()));
    assert_eq!(p(r"'it\'s'"), Expr::String("it's".into()));
    assert_eq!(p(r#"'say "hi"'"#), Expr::String("say \"hi\"".into()));
    assert_eq!(p("`raw\\n`"), Expr::String("raw\\n".into()));
    assert_eq!(
        p(r#""\a\b\f\n\r\t\v\\""#),
        Expr::String("\x07\x08\x0c\n\r\t\x0b\\".into())
    );
    assert_eq!(
        p(r#""\x41\102\u00e9\U0001F600""#),
        Expr::String("ABé😀".into())
    );
    assert_eq!(p(r#""日本語""#), Expr::String("日本語".into()));
    assert_err(r#""\q""#, 1, "unknown escape sequence");
    assert_err(r#"'\"'"#, 1, "unknown escape sequence");
    assert_err(r#"1 + "abc"#, 4, "unterminated quoted string");
    assert_err("`abc", 0, "unterminated raw string");
    assert_err(r#""\uD800""#, 1, "invalid Unicode code point");
}

// ---- selectors -------------------------------------------------------------------

#[test]
fn vector_selectors_and_matchers() {
    let e = p(r#"metric{a="b", c!="d", e=~"f.*", g!~"h",}"#);
    let vs = sel(&e);
    assert_eq!(vs.name.as_deref(), Some("metric"));
    let ops: Vec<_> = vs
        .matchers
        .iter()
        .map(|m| (m.name.as_str(), m.op))
        .collect();
    assert_eq!(
        ops,
        vec![
            ("__name__", MatchOp::Equal),
            ("a", MatchOp::Equal),
            ("c", MatchOp::NotEqual),
            ("e", MatchOp::Regex),
            ("g", MatchOp::NotRegex)
        ]
    );
    // Regex matchers are fully anchored.
    let re = &vs.matchers[3];
    assert!(re.matches("foo") && re.matches("f") && !re.matches("xf"));
    assert!(vs.matchers[4].matches("hh") && !vs.matchers[4].matches("h"));

    let e = p(r#"{__name__="m"}"#);
    assert_eq!(sel(&e).name, None);
    assert_eq!(sel(&e).matchers[0].value, "m");

    let e = p("colon:metric:name");
    assert_eq!(sel(&e).name.as_deref(), Some("colon:metric:name"));

    // Prometheus 3 quoted UTF-8 names.
    let e = p(r#"{"my.metric", "label.with.dots"="x"}"#);
    let vs = sel(&e);
    assert_eq!(vs.name.as_deref(), Some("my.metric"));
    assert_eq!(vs.matchers[0].name, "__name__");
    assert_eq!(vs.matchers[1].name, "label.with.dots");
    let e = p(r#"sum by ("label.with.dots") ({"m.1"})"#);
    let Expr::Aggregate(a) = &e else { panic!() };
    assert_eq!(a.grouping, Grouping::By(vec!["label.with.dots".into()]));

    // Keywords are label names inside braces and metric names where Prometheus
    // allows them.
    let e = p(r#"sum{by="x", offset="y", and="z"}"#);
    assert_eq!(sel(&e).name.as_deref(), Some("sum"));
    assert_eq!(sel(&e).matchers[1].name, "by");
    assert_eq!(sel(&e).name.as_deref(), Some("sum"));
    assert_eq!(sel(&p("offset")).name.as_deref(), Some("offset"));
    assert_eq!(sel(&p("by")).name.as_deref(), Some("by"));
    assert_eq!(sel(&p("step")).name.as_deref(), Some("step"));
    let e = p("and and or");
    assert_eq!(bin(&e).op, BinOp::And);
    assert_eq!(sel(&bin(&e).lhs).name.as_deref(), Some("and"));
    assert_eq!(sel(&bin(&e).rhs).name.as_deref(), Some("or"));
}

#[test]
fn selector_validation() {
    assert_err("{}", 0, "at least one non-empty matcher");
    assert_err(r#"x + {a=""}"#, 4, "at least one non-empty matcher");
    assert_err(r#"{a=~".*"}"#, 0, "at least one non-empty matcher");
    assert_err(r#"{a!="x"}"#, 0, "at least one non-empty matcher");
    p(r#"{a=~".+"}"#);
    p(r#"{a="", b="x"}"#);
    assert_err(
        r#"foo{__name__="bar"}"#,
        0,
        "metric name must not be set twice",
    );
    assert_err(r#"foo{"bar"}"#, 0, "metric name must not be set twice");
    assert_err(r#"foo{a=~"("}"#, 4, "invalid regular expression");
    assert_err(r#"foo{a}"#, 5, "expected label matching operator");
    assert_err(r#"foo{a=}"#, 6, "expected string");
    assert_err(r#"foo{a="b" c="d"}"#, 10, r#"expected "," or "}""#);
    assert_err(r#"foo{,}"#, 4, "expected label matcher");
    assert_err(r#"foo{a="b"}}"#, 10, "unexpected right brace");
    assert_err(r#"foo{a="b""#, 9, "unexpected end of input inside braces");
    assert_err("foo{a:b=\"c\"}", 5, "unexpected character inside braces");
}

#[test]
fn offset_and_at_modifiers() {
    assert_eq!(sel(&p("foo offset 5m")).offset_ms, 300_000);
    assert_eq!(sel(&p("foo offset -5m")).offset_ms, -300_000);
    assert_eq!(sel(&p("foo offset 1.5")).offset_ms, 1500);
    assert_eq!(sel(&p("foo OFFSET 1h30m")).offset_ms, 5_400_000);
    assert_eq!(
        sel(&p("foo @ 1609746000")).at,
        Some(AtModifier::Timestamp(1_609_746_000_000))
    );
    assert_eq!(
        sel(&p("foo @ 100.5")).at,
        Some(AtModifier::Timestamp(100_500))
    );
    assert_eq!(
        sel(&p("foo @ -10")).at,
        Some(AtModifier::Timestamp(-10_000))
    );
    assert_eq!(sel(&p("foo @ start()")).at, Some(AtModifier::Start));
    assert_eq!(sel(&p("foo @ end()")).at, Some(AtModifier::End));
    // Either order, also on ranges and subqueries.
    for s in ["foo offset 5m @ 100", "foo @ 100 offset 5m"] {
        let vs = sel(&p(s)).clone();
        assert_eq!(
            (vs.offset_ms, vs.at),
            (300_000, Some(AtModifier::Timestamp(100_000)))
        );
    }
    let e = p("foo[5m] @ end() offset 1m");
    let vs = sel(&e);
    assert_eq!((vs.offset_ms, vs.at), (60_000, Some(AtModifier::End)));
    let Expr::Subquery(sq) = p("rate(foo[1m])[10m:1m] offset 5m @ start()") else {
        panic!()
    };
    assert_eq!(
        (sq.range_ms, sq.step_ms, sq.offset_ms, sq.at),
        (600_000, Some(60_000), 300_000, Some(AtModifier::Start))
    );
    // Offset binds tighter than any binary operator.
    let e = p("foo offset -2^2");
    assert_eq!(bin(&e).op, BinOp::Pow);
    assert_eq!(sel(&bin(&e).lhs).offset_ms, -2000);

    assert_err(
        "foo offset 5m offset 1m",
        14,
        "offset may not be set multiple times",
    );
    assert_err("foo @ 1 @ 2", 8, "may not be set multiple times");
    assert_err("foo @ start() @ end()", 14, "may not be set multiple times");
    assert_err(
        "sum(foo) offset 5m",
        0,
        "offset modifier must be preceded by",
    );
    assert_err("(foo) @ 5", 0, "@ modifier must be preceded by");
    assert_err("foo offset", 10, "expected number or duration");
    assert_err("foo offset bar", 11, "expected number or duration");
    assert_err("foo @ bar", 6, "expected timestamp");
    assert_err("foo @ Inf", 6, "timestamp out of bounds");
    assert_err(
        "foo offset 5m[1m]",
        13,
        "no offset modifiers allowed before range",
    );
    assert_err("foo @ 5 [1m]", 8, "no @ modifiers allowed before range");
}

#[test]
fn ranges_and_subqueries() {
    let Expr::MatrixSelector { selector, range_ms } = p("foo[5m]") else {
        panic!()
    };
    assert_eq!((selector.name.as_deref(), range_ms), (Some("foo"), 300_000));
    let Expr::MatrixSelector { range_ms, .. } = p("foo[90]") else {
        panic!()
    };
    assert_eq!(range_ms, 90_000);
    let Expr::MatrixSelector { range_ms, .. } = p("foo[ 1h30m ]") else {
        panic!()
    };
    assert_eq!(range_ms, 5_400_000);
    let Expr::Subquery(sq) = p("foo[30m:]") else {
        panic!()
    };
    assert_eq!((sq.range_ms, sq.step_ms), (1_800_000, None));
    let Expr::Subquery(sq) = p("(a + b)[30m:1m]") else {
        panic!()
    };
    assert_eq!(sq.step_ms, Some(60_000));
    assert!(matches!(sq.expr, Expr::Paren(_)));
    let Expr::Subquery(sq) = p("foo offset 1m [30m:1m]") else {
        panic!()
    };
    assert_eq!(sel(&sq.expr).offset_ms, 60_000);

    assert_err("(foo)[5m]", 5, "ranges only allowed for vector selectors");
    assert_err(
        "rate(foo[5m])[5m]",
        13,
        "ranges only allowed for vector selectors",
    );
    assert_err(
        "foo[5m][5m:]",
        0,
        "subquery is only allowed on instant vector",
    );
    assert_err(
        r#""a"[5m:]"#,
        0,
        "subquery is only allowed on instant vector",
    );
    assert_err("foo[0s]", 4, "duration must be greater than 0");
    assert_err("foo[5m:0]", 7, "duration must be greater than 0");
    assert_err("foo[]", 4, "expected number or duration");
    assert_err("foo[5m", 6, "unclosed left bracket");
    assert_err("foo[5m:1m:1m]", 9, "expected \"]\"");
    assert_err("foo[5m + step()]", 7, "duration expressions");
    assert_err("foo[1m5h]", 4, "not a valid duration");
    assert_err("foo[9.5e10]", 4, "duration out of range");
    assert_err("foo offset 9.5e10", 11, "duration out of range");
    assert_err("foo[300y]", 4, "duration out of range");
}

// ---- operators and precedence ------------------------------------------------

#[test]
fn precedence_and_associativity() {
    // `^` is right-associative and binds tighter than unary minus.
    let e = p("-2^2");
    let Expr::Unary { op, expr } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(*op, UnaryOp::Neg);
    assert_eq!(bin(expr).op, BinOp::Pow);
    let e = p("2^3^2");
    assert_eq!(bin(&e).op, BinOp::Pow);
    assert_eq!(bin(&e).lhs, Expr::Number(2.0));
    assert_eq!(bin(&bin(&e).rhs).op, BinOp::Pow);
    let e = p("2 ^ -1 * 3");
    assert_eq!(bin(&e).op, BinOp::Mul);
    assert_eq!(bin(&bin(&e).lhs).op, BinOp::Pow);
    // Unary minus binds tighter than `*`.
    let e = p("-a * b");
    assert_eq!(bin(&e).op, BinOp::Mul);
    assert!(matches!(bin(&e).lhs, Expr::Unary { .. }));
    // Left associativity.
    let e = p("a - b - c");
    assert_eq!(bin(&bin(&e).lhs).op, BinOp::Sub);
    let e = p("a / b * c % d atan2 e");
    assert_eq!(bin(&e).op, BinOp::Atan2);
    // Levels: or < and/unless < comparisons < + - < * / % atan2.
    let e = p("a or b and c unless d == e + f * g");
    let or = bin(&e);
    assert_eq!(or.op, BinOp::Or);
    let unless = bin(&or.rhs);
    assert_eq!(unless.op, BinOp::Unless);
    assert_eq!(bin(&unless.lhs).op, BinOp::And);
    let eq = bin(&unless.rhs);
    assert_eq!(eq.op, BinOp::Eq);
    let add = bin(&eq.rhs);
    assert_eq!(add.op, BinOp::Add);
    assert_eq!(bin(&add.rhs).op, BinOp::Mul);
    let e = p("a + b > c - d");
    assert_eq!(bin(&e).op, BinOp::Gt);
    let e = p("a * b + c");
    assert_eq!(bin(&e).op, BinOp::Add);
    let e = p("a atan2 b + c");
    assert_eq!(bin(&e).op, BinOp::Add);
    // Keywords are case-insensitive.
    assert_eq!(bin(&p("a AND b")).op, BinOp::And);
    // Comparisons are left-associative too.
    let e = p("a > b < c");
    assert_eq!(bin(&e).op, BinOp::Lt);
    assert_eq!(bin(&bin(&e).lhs).op, BinOp::Gt);
}

#[test]
fn binary_modifiers() {
    let e = p("a == bool b");
    assert!(bin(&e).return_bool);
    let e = p("1 > bool 2");
    assert!(bin(&e).return_bool);
    let e = p("a * on(x, y) group_left(z) b");
    let m = bin(&e).matching.clone().unwrap();
    assert_eq!(
        (m.card, m.on, m.labels, m.include),
        (
            Cardinality::ManyToOne,
            true,
            vec!["x".into(), "y".into()],
            vec!["z".into()]
        )
    );
    let e = p("a / ignoring(x) group_right b");
    let m = bin(&e).matching.clone().unwrap();
    assert_eq!(
        (m.card, m.on, m.include.len()),
        (Cardinality::OneToMany, false, 0)
    );
    let e = p("a and on(x) b");
    assert_eq!(
        bin(&e).matching.as_ref().unwrap().card,
        Cardinality::ManyToMany
    );
    let e = p("a > bool ignoring(x) b");
    assert!(bin(&e).return_bool && !bin(&e).matching.as_ref().unwrap().on);
    assert_eq!(bin(&p("a + b")).matching, None);
    // Keywords may be label names in the lists.
    let e = p("a + on(by, offset, sum) b");
    assert_eq!(bin(&e).matching.as_ref().unwrap().labels.len(), 3);

    assert_err(
        "a + bool b",
        2,
        "bool modifier can only be used on comparison",
    );
    assert_err("1 > 2", 2, "comparisons between scalars must use BOOL");
    assert_err(
        "a and 1",
        2,
        "set operator \"and\" not allowed in binary scalar",
    );
    assert_err("1 or a", 2, "not allowed in binary scalar");
    assert_err(
        "a and on(x) group_left b",
        2,
        "no grouping allowed for \"and\"",
    );
    assert_err(
        "1 + on(x) a",
        2,
        "vector matching only allowed between instant vectors",
    );
    assert_err(
        "a * on(x) group_left(x) b",
        2,
        "must not occur in ON and GROUP clause",
    );
    assert_err(
        "a * group_left b",
        4,
        "need a preceding on(...) or ignoring(...)",
    );
    assert_err("a + on b", 7, "expected \"(\"");
    assert_err("a + on(x b", 9, "expected \",\" or \")\"");
    assert_err(
        r#""a" + 1"#,
        0,
        "binary expression must contain only scalar and instant vector",
    );
    assert_err("1 + foo[5m]", 4, "only scalar and instant vector");
    assert_err("a + fill(0) b", 4, "fill modifiers");
    assert_err("-foo[5m]", 0, "unary expression only allowed");
    assert_err(r#"-"a""#, 0, "unary expression only allowed");
}

// ---- aggregations and functions ----------------------------------------------

#[test]
fn aggregations() {
    for (s, grouping) in [
        ("sum(x)", Grouping::By(vec![])),
        ("sum by (a) (x)", Grouping::By(vec!["a".into()])),
        (
            "sum(x) by (a, b,)",
            Grouping::By(vec!["a".into(), "b".into()]),
        ),
        ("sum without (a) (x)", Grouping::Without(vec!["a".into()])),
        ("SUM(x) WITHOUT ()", Grouping::Without(vec![])),
    ] {
        let Expr::Aggregate(a) = p(s) else {
            panic!("{s}")
        };
        assert_eq!((a.op, a.grouping), (AggOp::Sum, grouping), "{s}");
    }
    for (s, op) in [
        ("topk(3, x)", AggOp::Topk),
        ("bottomk(3, x)", AggOp::Bottomk),
        ("quantile(0.9, x)", AggOp::Quantile),
        ("count_values(\"v\", x)", AggOp::CountValues),
        ("limitk(2, x)", AggOp::Limitk),
        ("limit_ratio(0.5, x)", AggOp::LimitRatio),
    ] {
        let Expr::Aggregate(a) = p(s) else {
            panic!("{s}")
        };
        assert_eq!(a.op, op);
        assert!(a.param.is_some(), "{s}");
    }
    for op in AggOp::ALL {
        let s = if op.takes_param() {
            let param = if op == AggOp::CountValues {
                "\"v\""
            } else {
                "1"
            };
            format!("{}({param}, x)", op.as_str())
        } else {
            format!("{}(x)", op.as_str())
        };
        let Expr::Aggregate(a) = p(&s) else {
            panic!("{s}")
        };
        assert_eq!(a.op, op);
        round_trip(&s);
    }
    assert_err("sum()", 0, "no arguments for aggregate expression");
    assert_err("topk(x)", 4, "expected 2, got 1");
    assert_err("sum(1, x)", 3, "expected 1, got 2");
    assert_err(
        "sum(1)",
        4,
        "expected type instant vector in aggregation expression, got scalar",
    );
    assert_err(
        "topk(\"a\", x)",
        5,
        "expected type scalar in aggregation parameter, got string",
    );
    assert_err(
        "count_values(1, x)",
        13,
        "expected type string in aggregation parameter",
    );
    assert_err("sum by (a) x", 11, "expected \"(\"");
    assert_err("sum by a (x)", 7, "expected \"(\"");
    assert_err("sum(x,)", 5, "trailing commas");
}

#[test]
fn function_calls() {
    let Expr::Call { func, args } = p("rate(foo[5m])") else {
        panic!()
    };
    assert_eq!((func.as_str(), args.len()), ("rate", 1));
    p("time()");
    p("round(x)");
    p("round(x, 5)");
    p("label_join(x, \"d\", \",\", \"a\", \"b\", \"c\")");
    p("histogram_quantile(0.9, rate(x_bucket[5m]))");
    p("hour()");
    p("vector(1)");
    p("scalar(x) + 1");
    p("step() + range() + start() + end()");
    p("min_of(1, 2) + max_of(3, 4)");
    p("info(x, {job=~\".+\"})");
    p("info(x, {__name__=~\".*\"})");
    for f in ["increase_exact", "uptime_ratio", "max_gap_over_time"] {
        p(&format!("{f}(gpu_up[1h])"));
        assert_err(
            &format!("{f}(gpu_up)"),
            f.len() + 1,
            "expected type range vector",
        );
    }
    assert_eq!(p("time()").value_type(), ValueType::Scalar);
    assert_eq!(p("pi() * 2").value_type(), ValueType::Scalar);
    assert_eq!(p("scalar(x)").value_type(), ValueType::Scalar);

    assert_err("foo_bar(x)", 0, "unknown function with name \"foo_bar\"");
    assert_err("RATE(x[5m])", 0, "unknown function");
    assert_err("histogram_count(x)", 0, "unknown function");
    assert_err(
        "rate(x)",
        5,
        "expected type range vector in call to function \"rate\", got instant vector",
    );
    assert_err("abs(x[5m])", 4, "expected type instant vector");
    assert_err(
        "rate()",
        0,
        "expected 1 argument(s) in call to \"rate\", got 0",
    );
    assert_err("round()", 0, "expected at least 1 argument(s)");
    assert_err("round(x, 1, 2)", 0, "expected at most 2 argument(s)");
    assert_err("label_join(x, \"a\")", 0, "expected at least 3");
    assert_err(
        "label_replace(x, \"a\", \"b\", \"c\", 1)",
        32,
        "expected type string",
    );
    assert_err("abs(x,)", 5, "trailing commas not allowed");
    assert_err("abs(x y)", 6, "expected \",\" or \")\"");
    assert_err(
        "info(x, y)",
        8,
        "expected label selectors only, got vector selector",
    );
}

// ---- errors ------------------------------------------------------------------

#[test]
fn error_display_has_offset_line_and_column() {
    let e = perr("sum(rate(foo{job=\"a\",}[5m])) by (job)\n  + on(x y");
    assert_eq!(e.offset, 47);
    assert_eq!((e.line, e.column), (2, 10));
    assert_eq!(
        e.to_string(),
        "parse error at byte 47 (line 2, col 10): unexpected identifier \"y\" in grouping opts of on, expected \",\" or \")\""
    );
    let e = perr("foo{job=\"api\",}}");
    assert_eq!(
        e.to_string(),
        "parse error at byte 15 (line 1, col 16): unexpected right brace \"}\""
    );
    // Columns count characters, offsets count bytes.
    let e = perr("\"é\" +");
    assert_eq!((e.offset, e.column), (6, 6));
    assert_err("", 0, "no expression found");
    assert_err("   # only a comment", 0, "no expression found");
    assert_err(
        "foo bar",
        4,
        "unexpected identifier \"bar\", expected an operator or end of input",
    );
    assert_err("(foo", 4, "unclosed left parenthesis");
    assert_err("foo)", 3, "unexpected right parenthesis");
    assert_err("1 +", 3, "unexpected end of input, expected expression");
    assert_err("foo ~ bar", 4, "unexpected character");
    assert_err("foo anchored", 4, "anchored and smoothed");
}

#[test]
fn comments_and_whitespace() {
    let e = p("sum(  # total\n  rate(x[5m])  # per second\n)\n");
    assert!(matches!(e, Expr::Aggregate(_)));
    p("\tfoo\r\n+\nbar");
}

// ---- display -----------------------------------------------------------------

#[test]
fn display_round_trips() {
    for s in [
        "1",
        "-1",
        "+1",
        "1.5e-300",
        "1e300",
        "Inf",
        "-Inf",
        "NaN",
        "0x1f",
        "5m",
        r#""quote\" back\\slash \n tab\t é""#,
        "`raw`",
        r#"foo{a="b", c!="d", e=~"f.*", g!~"h"}"#,
        r#"{"my.metric", "a.b"="c"}"#,
        r#"{a="b", "my.metric"}"#,
        r#"{"a", "b"}"#,
        r#"{__name__="m"}"#,
        r#"{__name__=~"m.*", job="x"}"#,
        r#"sum{by="x"}"#,
        "offset",
        "a:b:c",
        "foo offset 5m",
        "foo offset -1h30m",
        "foo offset 1.5",
        "foo @ 100.25",
        "foo @ -5",
        "foo @ start() offset 5m",
        "foo[1y2w3d4h5m6s7ms]",
        "foo[5m] offset 1m @ end()",
        "foo[30m:]",
        "foo[30m:1m] offset 5m",
        "rate(foo[5m])[30m:1m] @ 100",
        "(a + b)[5m:]",
        "-2 ^ 2",
        "(-2) ^ 2",
        "2 ^ 3 ^ 2",
        "(2 ^ 3) ^ 2",
        "a - (b - c)",
        "a - b - c",
        "a / b * c",
        "a or b and c unless d",
        "(a or b) and c",
        "a > bool b",
        "a * on(x) group_left(y, z) b",
        "a * on() group_right b",
        "a + ignoring() b",
        "a and ignoring(x) b",
        "a atan2 b",
        "sum by (a, b) (x)",
        "sum(x) without (a)",
        "sum by () (x)",
        r#"sum by ("a.b", by, "inf") (x)"#,
        r#"count_values("v", x)"#,
        "topk(3, x) by (a)",
        "quantile(-0.5, x)",
        "label_replace(x, \"d\", \"$1\", \"s\", \"(.*)\")",
        "round(x, 0.5)",
        "time()",
        "step() * 2",
        "-(a + b)",
        "-(-a)",
        "- -a",
        "((a))",
        "1 + 2 * 3",
        "(1 + 2) * 3",
        "foo offset -2 ^ 2",
        "1 == bool -1",
        "info(x, {a=\"b\"})",
    ] {
        round_trip(s);
    }
}

#[test]
fn display_adds_parentheses_for_hand_built_trees() {
    use rigwatch_promql::ast::BinaryExpr;
    let num = |v| Expr::Number(v);
    let b = |op, lhs, rhs| {
        Expr::Binary(Box::new(BinaryExpr {
            op,
            lhs,
            rhs,
            return_bool: false,
            matching: None,
        }))
    };
    let tree = b(BinOp::Mul, b(BinOp::Add, num(1.0), num(2.0)), num(3.0));
    assert_eq!(tree.to_string(), "(1 + 2) * 3");
    assert_eq!(p(&tree.to_string()).to_string(), "(1 + 2) * 3");
    let tree = b(BinOp::Sub, num(1.0), b(BinOp::Sub, num(2.0), num(3.0)));
    assert_eq!(tree.to_string(), "1 - (2 - 3)");
    let tree = b(BinOp::Pow, b(BinOp::Pow, num(2.0), num(3.0)), num(2.0));
    assert_eq!(tree.to_string(), "(2 ^ 3) ^ 2");
    let neg = Expr::Unary {
        op: UnaryOp::Neg,
        expr: Box::new(num(2.0)),
    };
    assert_eq!(b(BinOp::Pow, neg, num(2.0)).to_string(), "(-2) ^ 2");
    // A negative literal (the parser never builds one, an evaluator might) keeps
    // its meaning too.
    assert_eq!(b(BinOp::Pow, num(-2.0), num(2.0)).to_string(), "(-2) ^ 2");
    let neg_neg = Expr::Unary {
        op: UnaryOp::Neg,
        expr: Box::new(num(-1.0)),
    };
    assert_eq!(neg_neg.to_string(), "- -1");
    // Metric names that are keywords are written quoted.
    for kw in ["offset", "bool", "sum", "range", "anchored", "inf"] {
        let e = p(&format!("{{\"{kw}\"}}"));
        let printed = e.to_string();
        assert_eq!(printed, format!("{{\"{kw}\"}}"));
        assert_eq!(p(&printed), e);
    }
}

// ---- robustness --------------------------------------------------------------

/// A small deterministic PRNG (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const FRAGMENTS: &[&str] = &[
    "sum",
    "by",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "'",
    "`",
    "\\",
    "=",
    "=~",
    "!~",
    "!=",
    "==",
    "offset",
    "@",
    "start()",
    "-",
    "+",
    "^",
    "*",
    "/",
    "%",
    "5m",
    "1e",
    "0x",
    "1_",
    ".",
    "Inf",
    "nan",
    "bool",
    "on",
    "ignoring",
    "group_left",
    "and",
    "or",
    "rate",
    "foo",
    "#",
    "\n",
    " ",
    "é",
    "\u{0}",
    "\\x",
    "\\u12",
    "topk",
    "1h30m",
    "-5m",
    "[5m:]",
    "atan2",
    "info",
    "\"\\xff\"",
    "9999999999999999999999",
];

#[test]
fn never_panics_on_random_or_truncated_input() {
    let mut corpus: Vec<String> = vec![
        "sum by (job) (rate(http_requests_total{job=~\"api.*\"}[5m] offset 1m @ 100))".into(),
        "topk(3, -foo ^ 2 > bool on(a) group_left(b) bar)[30m:1m]".into(),
        "label_replace({\"a.b\", c='d'}, \"x\", \"$1\", `y`, \"(.*)\") # comment".into(),
    ];
    if let Some(dir) = testdata_dir() {
        corpus.extend(eval_cases(&dir).into_iter().map(|c| c.expr));
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut inputs = 0usize;
    for s in &corpus {
        // Every prefix (on char boundaries).
        for (i, _) in s.char_indices() {
            let _ = parse(&s[..i]);
            inputs += 1;
        }
        // Random splices of fragments into the expression.
        for _ in 0..20 {
            let mut t = s.clone();
            for _ in 0..1 + rng.below(3) {
                let mut at = rng.below(t.len() + 1);
                while !t.is_char_boundary(at) {
                    at -= 1;
                }
                t.insert_str(at, FRAGMENTS[rng.below(FRAGMENTS.len())]);
            }
            if let Ok(e) = parse(&t) {
                // Whatever parses must print to something that parses the same.
                assert_eq!(
                    format!("{:?}", parse(&e.to_string())),
                    format!("{:?}", Ok::<_, ParseError>(e)),
                    "{t:?}"
                );
            }
            inputs += 1;
        }
    }
    // Pure fragment soup.
    for _ in 0..20_000 {
        let n = 1 + rng.below(12);
        let t: String = (0..n)
            .map(|_| FRAGMENTS[rng.below(FRAGMENTS.len())])
            .collect();
        if let Ok(e) = parse(&t) {
            assert_eq!(
                format!("{:?}", parse(&e.to_string())),
                format!("{:?}", Ok::<_, ParseError>(e)),
                "{t:?}"
            );
        }
        inputs += 1;
    }
    println!("fuzz: {inputs} inputs without a panic");
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    use rigwatch_promql::parser::MAX_DEPTH;
    // Every level counts: MAX_DEPTH - 1 parentheses around a literal is MAX_DEPTH levels.
    let deep = format!(
        "{}1{}",
        "(".repeat(MAX_DEPTH - 1),
        ")".repeat(MAX_DEPTH - 1)
    );
    assert_eq!(p(&deep).to_string(), deep);
    let very_deep = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
    assert_err(&very_deep, MAX_DEPTH, "expression nests deeper than");
    let minus = format!("{}1", "-".repeat(100_000));
    assert_err(&minus, MAX_DEPTH, "expression nests deeper than");
    // Binary chains too: `1+1+...` (the body limit allows 250,000 terms).
    let chain = vec!["1"; 250_000].join("+");
    assert_err(&chain, 2 * MAX_DEPTH - 1, "expression nests deeper than");
    let ok = vec!["1"; MAX_DEPTH].join(" + ");
    assert_eq!(p(&ok).to_string(), ok);
}
