#![no_main]
//! The PromQL parser and evaluator. The input is read two ways: as query text, and as
//! a recipe for a deeply nested query (a wrapper chosen per level, up to several
//! times the nesting limit), so that deep trees of every shape are tried, not only
//! the shallow ones random text gives. Oracle: on a 2 MiB stack (a tokio thread's),
//! parsing never panics or overflows; an accepted tree is at most `MAX_DEPTH` deep,
//! prints back to itself, and evaluates without panicking; a refused one has a
//! located error.

use libfuzzer_sys::fuzz_target;
use rigwatch_promql::ast::Expr;
use rigwatch_promql::eval::{EvalOptions, instant_query, range_query};
use rigwatch_promql::parser::{MAX_DEPTH, parse};
use rigwatch_promql::storage::MemStore;
use rigwatch_promql::value::Labels;

/// `(before, after)` around the inner expression, one per level.
const WRAPPERS: [(&str, &str); 16] = [
    ("", " + 1"),
    ("1 - ", ""),
    ("", " ^ 2"),
    ("-", ""),
    ("(", ")"),
    ("abs(", ")"),
    ("sum by (a) (", ")"),
    ("topk(2, ", ")"),
    ("max_over_time((", ")[1m:20s] offset 10s)"),
    ("", " or x"),
    ("x unless ", ""),
    ("", " + on(a) group_left x"),
    ("", " > bool 0"),
    ("label_replace(", ", \"b\", \"$1\", \"a\", \"(.*)\")"),
    ("scalar(", ")"),
    ("vector(", ")"),
];

fn nested(data: &[u8]) -> String {
    let [a, b, rest @ ..] = data else {
        return String::new();
    };
    let levels = usize::from(u16::from_le_bytes([*a, *b])) % (4 * MAX_DEPTH);
    let (mut open, mut close) = (String::new(), Vec::new());
    for i in 0..levels {
        let (o, c) = WRAPPERS
            [usize::from(rest.get(i % rest.len().max(1)).copied().unwrap_or(0)) % WRAPPERS.len()];
        open.push_str(o);
        close.push(c);
    }
    close.reverse();
    format!("{open}x{}", close.concat())
}

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

fn check(query: &str) {
    match parse(query) {
        Err(e) => {
            assert!(
                e.offset <= query.len() && query.is_char_boundary(e.offset),
                "{e:?}"
            );
            assert!(
                e.line >= 1 && e.column >= 1 && !e.message.is_empty(),
                "{e:?}"
            );
        }
        Ok(expr) => {
            assert!(depth(&expr) <= MAX_DEPTH, "{query:?}");
            let printed = expr.to_string();
            assert_eq!(
                parse(&printed).as_ref(),
                Ok(&expr),
                "{query:?} printed as {printed:?}"
            );
            let mut store = MemStore::new();
            let labels = Labels::from_pairs([("__name__", "x"), ("a", "1")]);
            for i in 0..10 {
                store.add_sample(&labels, i * 30_000, i as f64);
            }
            let opts = EvalOptions {
                max_samples: 100_000,
                deadline: Some(std::time::Instant::now() + std::time::Duration::from_secs(1)),
                ..EvalOptions::default()
            };
            let _ = instant_query(&store, &expr, 270_000, &opts);
            let _ = range_query(&store, &expr, 0, 270_000, 60_000, &opts);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    let deep = nested(data);
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            check(&text);
            check(&deep);
        })
        .expect("spawn")
        .join()
        .expect("no panic, no stack overflow");
});
