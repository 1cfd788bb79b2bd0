//! Every shape of deep expression, at the deepest [`MAX_DEPTH`] accepts, is parsed,
//! evaluated (instant and range), printed, compared, cloned and dropped on a thread
//! with a 2 MiB stack (what tokio gives its threads); one level deeper, and far
//! deeper, is a located parse error. Run in a debug build, where frames are largest.

use crate::ast::Expr;
use crate::eval::{EvalOptions, instant_query, range_query, selections};
use crate::parser::{MAX_DEPTH, parse};
use crate::storage::MemStore;
use crate::value::Labels;

const STACK: usize = 2 << 20;

fn join(term: &str, sep: &str, n: usize) -> String {
    vec![term; n].join(sep)
}

/// An expression of `shape` with exactly `n` levels (n >= 3).
fn text(shape: &str, n: usize) -> String {
    let wrap = |open: &str, inner: &str, close: &str, k: usize| {
        format!("{}{inner}{}", open.repeat(k), close.repeat(k))
    };
    match shape {
        "add" => join("1", "+", n),
        "pow" => join("1", "^", n),
        "or" => join("x", " or ", n),
        "unless" => join("x", " unless ", n),
        "group_left" => join("x", " + on(a) group_left ", n),
        "compare" => join("x", " > bool ", n),
        "neg" => format!("{}1", "-".repeat(n - 1)),
        "neg_paren" => {
            // -(-(...)): two levels per `-(`.
            let k = (n - 1) / 2;
            let base = if (n - 1).is_multiple_of(2) { "x" } else { "-x" };
            wrap("-(", base, ")", k)
        }
        "paren" => wrap("(", "1", ")", n - 1),
        "right_nested" => {
            let k = (n - 1) / 2;
            let base = if (n - 1).is_multiple_of(2) {
                "x"
            } else {
                "(x)"
            };
            wrap("x + (", base, ")", k)
        }
        "abs" => wrap("abs(", "vector(1)", ")", n - 2),
        "label_replace" => wrap(
            "label_replace(",
            "x",
            ", \"b\", \"$1\", \"a\", \"(.*)\")",
            n - 1,
        ),
        "sum" => wrap("sum(", "x", ")", n - 1),
        "topk" => wrap("topk(1, ", "x", ")", n - 1),
        "subquery" => {
            // max_over_time(...[1m:1m]): two levels per wrap.
            let k = (n - 1) / 2;
            let base = if (n - 1).is_multiple_of(2) {
                "x"
            } else {
                "(x)"
            };
            wrap("max_over_time(", base, "[1m:20s] offset 10s)", k)
        }
        other => panic!("unknown shape {other}"),
    }
}

const SHAPES: [&str; 15] = [
    "add",
    "pow",
    "or",
    "unless",
    "group_left",
    "compare",
    "neg",
    "neg_paren",
    "paren",
    "right_nested",
    "abs",
    "label_replace",
    "sum",
    "topk",
    "subquery",
];

fn depth(e: &Expr) -> usize {
    1 + match e {
        Expr::Number(_)
        | Expr::String(_)
        | Expr::VectorSelector(_)
        | Expr::MatrixSelector { .. } => 0,
        Expr::Paren(x) | Expr::Unary { expr: x, .. } => depth(x),
        Expr::Subquery(sq) => depth(&sq.expr),
        Expr::Binary(b) => depth(&b.lhs).max(depth(&b.rhs)),
        Expr::Call { args, .. } => args.iter().map(depth).max().unwrap_or(0),
        Expr::Aggregate(a) => depth(&a.expr).max(a.param.as_ref().map_or(0, depth)),
    }
}

fn store() -> MemStore {
    let mut s = MemStore::new();
    let l = Labels::from_pairs([("__name__", "x"), ("a", "1")]);
    for i in 0..30 {
        s.add_sample(&l, i * 10_000, i as f64);
    }
    s
}

fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(f)
        .expect("spawn")
        .join()
        .expect("the thread finished without overflowing its stack")
}

#[test]
fn deepest_accepted_trees_fit_a_2_mib_stack() {
    for shape in SHAPES {
        let t = text(shape, MAX_DEPTH);
        on_small_stack(move || {
            let e = parse(&t).unwrap_or_else(|err| panic!("{shape}: {err}"));
            assert_eq!(depth(&e), MAX_DEPTH, "{shape}");
            let printed = e.to_string();
            assert_eq!(parse(&printed).as_ref(), Ok(&e), "{shape}: round trip");
            assert!(!format!("{e:?}").is_empty());
            let copy = e.clone();
            assert_eq!(copy, e);
            assert_eq!(copy.value_type(), e.value_type());
            let opts = EvalOptions::default();
            let reads_series = !["add", "pow", "neg", "paren", "abs"].contains(&shape);
            assert_eq!(!selections(&e, 0, 290_000, &opts).is_empty(), reads_series);
            let s = store();
            let r = instant_query(&s, &e, 290_000, &opts);
            assert!(r.is_ok(), "{shape}: {r:?}");
            let r = range_query(&s, &e, 0, 290_000, 60_000, &opts);
            assert!(r.is_ok(), "{shape}: {r:?}");
            drop(copy);
            drop(e);
        });
    }
}

#[test]
fn one_level_deeper_is_a_located_error() {
    for shape in SHAPES {
        for n in [MAX_DEPTH + 1, MAX_DEPTH + 2, 250_000] {
            let t = text(shape, n);
            let err = on_small_stack(move || parse(&t).expect_err("too deep"));
            assert_eq!(
                err.message,
                format!("expression nests deeper than {MAX_DEPTH} levels"),
                "{shape} at {n}: {err}"
            );
        }
    }
}

#[test]
fn a_long_left_chain_fails_at_the_operator_past_the_limit() {
    // `1+1+...`: the tree gets one level deeper at each `+`; the one that makes it
    // MAX_DEPTH + 1 levels is the MAX_DEPTH-th `+`, at byte 2 * MAX_DEPTH - 1.
    let err = parse(&join("1", "+", 250_000)).expect_err("too deep");
    assert_eq!(err.offset, 2 * MAX_DEPTH - 1);
    assert_eq!(
        err.to_string(),
        format!(
            "parse error at byte {} (line 1, col {}): expression nests deeper than {MAX_DEPTH} levels",
            2 * MAX_DEPTH - 1,
            2 * MAX_DEPTH
        )
    );
}

#[test]
fn long_flat_lists_are_not_depth() {
    // Many matchers, many arguments of one call, long label lists: wide, not deep.
    let matchers = vec!["a=\"1\""; 10_000].join(",");
    assert!(parse(&format!("x{{{matchers}}}")).is_ok());
    let labels = vec!["a"; 10_000].join(",");
    assert!(parse(&format!("sum by ({labels}) (x)")).is_ok());
}
