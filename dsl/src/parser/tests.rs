use proptest::prelude::*;

use super::*;
use crate::ast::{BinOp, Duration, Expr, ExprKind, Timestamp, UnaryOp};

/// The seven examples of the language's issue, verbatim.
pub(crate) const EXAMPLES: [&str; 7] = [
    "gpus[5m] | stats avg(utilization) by model | sort avg_utilization desc",
    "gpus[5m] | stats avg(rate(energy_mj, 1m)) by model, bucket(1m)",
    "earnings[1d] | stats sum(amount) by supplier, bucket(1h) | sort supplier, bucket",
    "leases[1d] | stats count() by supplier | top 5 by count",
    "leases[1d] | join gpus[5m] on gpu_uuid | stats max(gpus.temperature) by leases.supplier",
    "jobs[1d] | where state == \"completed\" | stats count() as done by bucket(1m)",
    "promql(\"avg by (model) (gpu_utilization)\", step=30s)[5m] | stats max(value) by model",
];

fn err(text: &str) -> Error {
    parse(text).expect_err(text)
}

#[test]
fn the_examples_parse_and_render_back() {
    for text in EXAMPLES {
        let q = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(q.to_string(), text);
    }
    let q = parse(EXAMPLES[4]).unwrap();
    assert_eq!(q.source.kind, SourceKind::Table(Noun::Leases));
    let StageKind::Join {
        source,
        on,
        left: false,
    } = &q.stages[0].kind
    else {
        panic!("{:?}", q.stages[0]);
    };
    assert_eq!(source.kind, SourceKind::Table(Noun::Gpus));
    assert!(matches!(
        source.range,
        Some(TimeRange::Last(Duration { ms: 300_000, .. }))
    ));
    assert!(matches!(&on[..], [JoinKey::Same(f)] if f.name == "gpu_uuid"));
    let q = parse(EXAMPLES[6]).unwrap();
    let SourceKind::Promql { expr, step } = &q.source.kind else {
        panic!("{q:?}");
    };
    assert_eq!(expr, "avg by (model) (gpu_utilization)");
    assert_eq!(step.map(|s| s.ms), Some(30_000));
}

#[test]
fn spans_point_into_the_text() {
    let text = "gpus[5m] | where utilisation > 50 and model == \"H100\"";
    let q = parse(text).unwrap();
    assert_eq!(q.source.span, Span::new(0, 8));
    assert_eq!(q.stages[0].span, Span::new(11, text.len()));
    let StageKind::Where(e) = &q.stages[0].kind else {
        panic!()
    };
    let ExprKind::Binary { op, left, .. } = &e.kind else {
        panic!("{e:?}")
    };
    assert_eq!(*op, BinOp::And);
    let ExprKind::Binary { left: field, .. } = &left.kind else {
        panic!()
    };
    assert_eq!(&text[field.span.start..field.span.end], "utilisation");
    assert_eq!(e.span, Span::new(17, text.len()));
}

#[test]
fn ranges_durations_and_times() {
    let q = parse("earnings[2026-11-01 .. 2026-12-01T06:30]").unwrap();
    let Some(TimeRange::Between { from, to, .. }) = q.source.range else {
        panic!("{q:?}")
    };
    assert_eq!(from.unix_ms(), 1_793_491_200_000);
    assert_eq!((to.month, to.hour, to.minute), (12, 6, 30));
    assert_eq!(
        parse("gpus[2026-11-01 00:00:00 .. 2026-11-02]")
            .unwrap()
            .to_string(),
        "gpus[2026-11-01 .. 2026-11-02]"
    );
    let q = parse("gpus[1h30m]").unwrap();
    assert!(matches!(q.source.range, Some(TimeRange::Last(d)) if d.ms == 5_400_000));
    let q = parse("gpus | where time > now() - 90s").unwrap();
    assert_eq!(q.to_string(), "gpus | where time > now() - 1m30s");
}

#[test]
fn operators_bind_as_documented() {
    let q = parse("gpus | where a or b and not c == 1 + 2 * -3").unwrap();
    let StageKind::Where(e) = &q.stages[0].kind else {
        panic!()
    };
    // or( a, and( b, not( ==(c, +(1, *(2, -3))) ) ) )
    let ExprKind::Binary {
        op: BinOp::Or,
        right,
        ..
    } = &e.kind
    else {
        panic!("{e}")
    };
    let ExprKind::Binary {
        op: BinOp::And,
        right,
        ..
    } = &right.kind
    else {
        panic!("{e}")
    };
    assert!(matches!(
        right.kind,
        ExprKind::Unary {
            op: UnaryOp::Not,
            ..
        }
    ));
    // Parentheses survive where they matter, and only there.
    for text in [
        "gpus | where (a or b) and c",
        "gpus | where a - (b - c)",
        "gpus | where (a == b) == c",
        "gpus | where x not in (\"a\", 'b') and y in (1, 2.5)",
        "gpus | extend w = power_watts / 1000.0 * 2",
        "gpus | where -(-x) < 1e-7",
    ] {
        let once = parse(text).unwrap().to_string();
        assert_eq!(parse(&once).unwrap().to_string(), once, "{text}");
    }
    assert_eq!(
        parse("gpus | where x not in (\"a\", 'b')")
            .unwrap()
            .to_string(),
        "gpus | where x not in (\"a\", \"b\")"
    );
}

#[test]
fn explain_is_a_prefix_or_the_last_stage() {
    assert!(parse("explain gpus | stats count()").unwrap().is_explain());
    assert!(
        parse("gpus | stats count() | explain")
            .unwrap()
            .is_explain()
    );
    assert!(!parse("gpus | stats count()").unwrap().is_explain());
    let e = err("gpus | explain | stats count()");
    assert!(
        matches!(&e, Error::Misplaced { pos, .. } if pos.offset == 7),
        "{e}"
    );
}

#[test]
fn syntax_errors_say_where_and_what_was_expected() {
    let e = err("gpus[5m] | stats avg(utilization) by");
    assert_eq!(
        e.to_string(),
        "line 1, column 37 (byte 36): expected an expression, found the end of the query"
    );
    let e = err("gpus | where a ==");
    assert!(e.to_string().contains("expected an expression"), "{e}");
    let e = err("gpus[5m] stats count()");
    assert_eq!(e.pos().offset, 9);
    assert!(
        e.to_string()
            .contains("expected `|` or the end of the query, found `stats`"),
        "{e}"
    );
    let e = err("gpus\n| where x == \"open");
    assert_eq!((e.pos().line, e.pos().column), (2, 14), "{e}");
    assert!(e.to_string().contains("closing \""), "{e}");
    let e = err("gpus[5min]");
    assert!(
        e.to_string()
            .contains("expected a duration unit (ms, s, m, h, d or w), found `min`"),
        "{e}"
    );
    let e = err("gpus | stats count() by bucket(1m");
    assert!(e.to_string().contains("expected `,` or `)`"), "{e}");
    let e = err("gpus | top 0 by x");
    assert!(e.to_string().contains("at least 1"), "{e}");
    let e = err("earnings[2026-12-01 .. 2026-11-01]");
    assert!(e.to_string().contains("after its start"), "{e}");
    let e = err("earnings[2026-02-30 .. 2026-03-01]");
    assert!(e.to_string().contains("not a valid UTC date"), "{e}");
    let e = err("gpus | where x == 99999999999999999999");
    assert!(e.to_string().contains("integer too large"), "{e}");
    let e = err("gpus | where a < b < c");
    assert!(e.to_string().contains("expected `|` or the end"), "{e}");
}

#[test]
fn nesting_and_length_are_bounded_without_running_out_of_stack() {
    let n = 200_000;
    for text in [
        format!("gpus | where {}x{}", "(".repeat(n), ")".repeat(n)),
        format!("gpus | where {}x", "not ".repeat(n)),
        format!("gpus | where {}x", "-".repeat(n)),
        format!("gpus | where x{}", " or x".repeat(n)),
        format!("gpus | where {}1{}", "abs(".repeat(n), ")".repeat(n)),
        format!("gpus | where x in ({}1{})", "(".repeat(n), ")".repeat(n)),
    ] {
        let e = err(&text);
        assert!(e.to_string().contains("nested too deeply"), "{e}");
    }
    // Up to the limit is fine.
    let ok = format!("gpus | where x{}", " or x".repeat(MAX_DEPTH_FOR_TESTS - 2));
    parse(&ok).unwrap();
    let stages = format!("gpus{}", " | where x".repeat(MAX_STAGES + 1));
    assert!(err(&stages).to_string().contains("too many stages"));
    parse(&format!("gpus{}", " | where x".repeat(MAX_STAGES))).unwrap();
}

const MAX_DEPTH_FOR_TESTS: usize = expr::MAX_DEPTH;

#[test]
fn unknown_words_get_suggestions() {
    let e = err("gpu[5m] | stats count()");
    assert_eq!(
        e.to_string(),
        "line 1, column 1 (byte 0): unknown source `gpu` (expected one of gpus, faults, \
         health, leases, jobs, earnings, heartbeats, hosts, payouts or promql(…)); did you mean `gpus`?"
    );
    assert_eq!(e.suggestion(), Some("gpus"));
    let e = err("gpus | wher x > 1");
    assert_eq!(e.suggestion(), Some("where"));
    assert_eq!(e.pos().offset, 7);
    let e = err("gpus | stast count()");
    assert_eq!(e.suggestion(), Some("stats"));
    assert_eq!(err("gpus | frobnicate").suggestion(), None);
}

fn ident() -> impl Strategy<Value = String> {
    "[a-z_][a-z0-9_]{0,7}".prop_filter("reserved", |s| !lex::RESERVED.contains(&s.as_str()))
}

fn field() -> impl Strategy<Value = FieldRef> {
    (proptest::option::of(ident()), ident()).prop_map(|(qualifier, name)| FieldRef {
        qualifier,
        name,
        span: Span::default(),
    })
}

fn e(kind: ExprKind) -> Expr {
    Expr {
        kind,
        span: Span::default(),
    }
}

fn expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        field().prop_map(|f| e(ExprKind::Field(f))),
        any::<String>().prop_map(|s| e(ExprKind::Str(s))),
        (0..i64::MAX).prop_map(|v| e(ExprKind::Int(v))),
        (0.0..1e300f64).prop_map(|v| e(ExprKind::Float(v))),
        any::<bool>().prop_map(|b| e(ExprKind::Bool(b))),
        Just(e(ExprKind::Null)),
        (1..1_000_000_000i64).prop_map(|ms| e(ExprKind::Duration(ms))),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        let ops = [
            BinOp::Or,
            BinOp::And,
            BinOp::Eq,
            BinOp::NotEq,
            BinOp::Lt,
            BinOp::LtEq,
            BinOp::Gt,
            BinOp::GtEq,
            BinOp::Add,
            BinOp::Sub,
            BinOp::Mul,
            BinOp::Div,
        ];
        prop_oneof![
            (
                prop::sample::select(ops.to_vec()),
                inner.clone(),
                inner.clone()
            )
                .prop_map(|(op, l, r)| e(ExprKind::Binary {
                    op,
                    left: Box::new(l),
                    right: Box::new(r)
                })),
            (any::<bool>(), inner.clone()).prop_map(|(not, x)| e(ExprKind::Unary {
                op: if not { UnaryOp::Not } else { UnaryOp::Neg },
                expr: Box::new(x)
            })),
            (
                inner.clone(),
                prop::collection::vec(inner.clone(), 1..4),
                any::<bool>()
            )
                .prop_map(|(x, list, negated)| e(ExprKind::In {
                    expr: Box::new(x),
                    list,
                    negated
                })),
            (ident(), prop::collection::vec(inner, 0..3)).prop_map(|(name, args)| e(
                ExprKind::Call {
                    name: Ident {
                        name,
                        span: Span::default()
                    },
                    args
                }
            )),
        ]
    })
}

fn named() -> impl Strategy<Value = Named> {
    (expr(), proptest::option::of(ident())).prop_map(|(expr, alias)| Named {
        expr,
        alias: alias.map(|name| Ident {
            name,
            span: Span::default(),
        }),
    })
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    (1970u16..2100, 1u8..=12, 1u8..=28, 0u8..24, 0u8..60, 0u8..60).prop_map(
        |(year, month, day, hour, minute, second)| Timestamp {
            year,
            month,
            day,
            hour,
            minute,
            second,
        },
    )
}

fn source() -> impl Strategy<Value = Source> {
    let dur = |lo| {
        (lo..10_000_000_000i64).prop_map(|ms| Duration {
            ms,
            span: Span::default(),
        })
    };
    let kind = prop_oneof![
        prop::sample::select(Noun::ALL.to_vec()).prop_map(SourceKind::Table),
        (any::<String>(), proptest::option::of(dur(1)))
            .prop_map(|(expr, step)| SourceKind::Promql { expr, step }),
    ];
    let range = prop_oneof![
        Just(None),
        dur(1).prop_map(|d| Some(TimeRange::Last(d))),
        (timestamp(), timestamp())
            .prop_filter("ordered", |(a, b)| a != b)
            .prop_map(|(a, b)| Some(TimeRange::Between {
                from: a.min(b),
                to: a.max(b),
                span: Span::default()
            })),
    ];
    (kind, range).prop_map(|(kind, range)| Source {
        kind,
        range,
        span: Span::default(),
    })
}

/// A `(…)` pipeline for the right side of a join: a source and simple stages.
fn nested() -> impl Strategy<Value = Source> {
    let simple = prop_oneof![
        expr().prop_map(StageKind::Where),
        prop::collection::vec(field(), 1..4).prop_map(StageKind::Select),
        (1..1000u64, field()).prop_map(|(n, by)| StageKind::Top { n, by }),
    ];
    (source(), prop::collection::vec(simple, 0..3)).prop_map(|(source, kinds)| Source {
        kind: SourceKind::Pipeline(Box::new(Query {
            explain: false,
            source,
            stages: kinds
                .into_iter()
                .map(|kind| Stage {
                    kind,
                    span: Span::default(),
                })
                .collect(),
        })),
        range: None,
        span: Span::default(),
    })
}

fn stage() -> impl Strategy<Value = StageKind> {
    prop_oneof![
        expr().prop_map(StageKind::Where),
        prop::collection::vec(
            (ident(), expr()).prop_map(|(name, value)| crate::ast::Assign {
                name: Ident {
                    name,
                    span: Span::default()
                },
                value
            }),
            1..3
        )
        .prop_map(StageKind::Extend),
        (
            prop::collection::vec(named(), 0..3),
            prop::collection::vec(named(), 0..3)
        )
            .prop_filter("stats needs something", |(a, b)| !a.is_empty()
                || !b.is_empty())
            .prop_map(|(aggs, by)| StageKind::Stats { aggs, by }),
        (
            prop_oneof![source(), nested()],
            prop::collection::vec(
                prop_oneof![
                    field().prop_map(JoinKey::Same),
                    (field(), field()).prop_map(|(l, r)| JoinKey::Pair(l, r)),
                ],
                1..3
            ),
            any::<bool>()
        )
            .prop_map(|(source, on, left)| StageKind::Join { source, on, left }),
        prop_oneof![
            Just(None),
            Just(Some(ExprKind::Null)),
            (-5i64..100).prop_map(|v| Some(ExprKind::Int(v))),
        ]
        .prop_map(|v| StageKind::Fill(v.map(|kind| Expr {
            kind,
            span: Span::default()
        }))),
        prop::collection::vec(
            (field(), any::<bool>()).prop_map(|(field, desc)| SortKey { field, desc }),
            1..3
        )
        .prop_map(StageKind::Sort),
        (1..1000u64, field()).prop_map(|(n, by)| StageKind::Top { n, by }),
        prop::collection::vec(field(), 1..4).prop_map(StageKind::Select),
    ]
}

fn query() -> impl Strategy<Value = Query> {
    (
        any::<bool>(),
        source(),
        prop::collection::vec(stage(), 0..5),
        any::<bool>(),
    )
        .prop_map(|(explain, source, kinds, explain_last)| {
            let mut stages: Vec<Stage> = kinds
                .into_iter()
                .map(|kind| Stage {
                    kind,
                    span: Span::default(),
                })
                .collect();
            if explain_last {
                stages.push(Stage {
                    kind: StageKind::Explain,
                    span: Span::default(),
                });
            }
            Query {
                explain,
                source,
                stages,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Rendering a pipeline and parsing it back gives the same pipeline.
    #[test]
    fn render_then_parse_round_trips(q in query()) {
        let text = q.to_string();
        let back = parse(&text).map_err(|e| TestCaseError::fail(format!("{text}\n{e}")))?;
        prop_assert_eq!(back.to_string(), text);
    }

    /// Any text: an answer or a located error, never a panic; the position is in the text.
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,60}") {
        if let Err(e) = parse(&text) {
            prop_assert!(e.pos().offset <= text.len());
        }
    }

    /// Text made of the language's own tokens, which gets deeper into the grammar.
    #[test]
    fn token_soup_never_panics(words in prop::collection::vec(prop::sample::select(vec![
        "gpus", "leases", "promql", "(", ")", "[", "]", "|", "where", "stats", "by", "as",
        "join", "on", "sort", "desc", "top", "select", "extend", "=", "==", "<", "not", "in",
        "and", "or", ",", "\"x\"", "'", "5m", "1.5", "7", "-", "*", "..", "2026-11-01",
        "count()", "avg", "rate", "bucket", "x", "y.z", ".", "explain", "step", "\\",
    ]), 0..24)) {
        let text = words.join(" ");
        if let Err(e) = parse(&text) {
            prop_assert!(e.pos().offset <= text.len());
        }
        let tight = words.concat();
        let _ = parse(&tight);
    }
}
