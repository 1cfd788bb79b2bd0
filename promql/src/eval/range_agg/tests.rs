//! The series-at-a-time path against the step-by-step evaluation of the same query.

use proptest::prelude::*;

use super::super::{EvalOptions, range_query, range_query_stepwise};
use super::applies;
use crate::parser::parse;
use crate::storage::MemStore;
use crate::value::{Labels, Value, stale_nan};

const OPS: [&str; 8] = [
    "sum", "avg", "count", "group", "min", "max", "stddev", "stdvar",
];
const GROUPINGS: [&str; 5] = [
    "",
    " by (region)",
    " without (gpu)",
    " by (region, gpu)",
    " without (region, gpu)",
];
const MODIFIERS: [&str; 4] = ["", " offset 1m", " @ 300", " offset -30s"];

/// A value a GPU gauge might take, and the awkward ones.
fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => (-1000i32..1000).prop_map(|v| v as f64 / 10.0),
        1 => Just(f64::NAN),
        1 => Just(stale_nan()),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(-0.0),
        1 => Just(1e308),
    ]
}

/// Up to 8 series of `x` (regions r0..r2, GPUs g0..g7), each with samples at some of the
/// 15 s ticks of ten minutes.
fn fleet() -> impl Strategy<Value = Vec<(usize, Vec<Option<f64>>)>> {
    prop::collection::vec(
        (
            0usize..3,
            prop::collection::vec(prop::option::weighted(0.7, value()), 40),
        ),
        0..8,
    )
}

fn store(fleet: &[(usize, Vec<Option<f64>>)]) -> MemStore {
    let mut s = MemStore::new();
    for (g, (region, samples)) in fleet.iter().enumerate() {
        let labels = Labels::from_pairs([
            ("__name__", "x"),
            ("region", format!("r{region}").as_str()),
            ("gpu", format!("g{g}").as_str()),
        ]);
        for (i, v) in samples.iter().enumerate() {
            if let Some(v) = v {
                s.add_sample(&labels, i as i64 * 15_000, *v);
            }
        }
    }
    s
}

/// The answer as (labels, [(t, bits)]) per series, or the error's text.
fn answer(s: &MemStore, q: &str, start: i64, end: i64, step: i64, limit: usize) -> String {
    answer_by(range_query, s, q, start, end, step, limit)
}

type RangeQuery = fn(
    &dyn crate::storage::Queryable,
    &crate::ast::Expr,
    i64,
    i64,
    i64,
    &EvalOptions,
) -> Result<crate::eval::QueryResult, crate::eval::EvalError>;

fn answer_by(
    f: RangeQuery,
    s: &MemStore,
    q: &str,
    start: i64,
    end: i64,
    step: i64,
    limit: usize,
) -> String {
    let opts = EvalOptions {
        max_samples: limit,
        ..EvalOptions::default()
    };
    match f(s, &parse(q).expect("parses"), start, end, step, &opts) {
        Ok(r) => {
            let Value::Matrix(m) = r.value else {
                return format!("not a matrix: {:?}", r.value);
            };
            let series: Vec<String> = m
                .iter()
                .map(|s| {
                    let pts: Vec<String> = s
                        .samples
                        .iter()
                        .map(|p| format!("{}:{:x}", p.t, p.v.to_bits()))
                        .collect();
                    format!("{:?} {}", s.labels, pts.join(","))
                })
                .collect();
            format!("{series:?} warnings {:?}", r.warnings)
        }
        Err(e) => format!("error: {e}"),
    }
}

#[test]
fn only_plain_folding_aggregations_of_a_selector_apply() {
    for (q, yes) in [
        ("avg(x)", true),
        ("(sum by (a) ((x)))", true),
        ("max without (gpu) (x offset 5m)", true),
        ("topk(3, x)", false),
        ("quantile(0.9, x)", false),
        ("sum(rate(x[5m]))", false),
        ("sum(x) * 1", false),
        ("sum(x * 2)", false),
    ] {
        assert_eq!(applies(&parse(q).unwrap()).is_some(), yes, "{q}");
    }
}

proptest! {
    /// Every folding operator, grouping and selector modifier, over series with gaps,
    /// NaN, staleness markers and infinities, under sample limits small enough to trip:
    /// the same series, bit for bit, or the same error, as the step-by-step evaluation
    /// (`(…) * 1` keeps the query off the series-at-a-time path and changes no value).
    #[test]
    fn series_at_a_time_answers_as_step_by_step(
        fleet in fleet(),
        op in 0usize..OPS.len(),
        grouping in 0usize..GROUPINGS.len(),
        modifier in 0usize..MODIFIERS.len(),
        start in 0i64..300_000,
        span in 0i64..600_000,
        step in prop_oneof![Just(15_000i64), Just(60_000), 1_000i64..200_000],
        limit in prop_oneof![Just(50_000_000usize), 0usize..60],
    ) {
        let s = store(&fleet);
        let q = format!("{}{}(x{})", OPS[op], GROUPINGS[grouping], MODIFIERS[modifier]);
        let end = start + span;
        let fast = answer(&s, &q, start, end, step, limit);
        let slow = answer(&s, &format!("({q}) * 1"), start, end, step, limit);
        prop_assert_eq!(fast, slow, "{}", q);
    }
}

proptest! {
    /// A plain selector (every single-metric chart), with every modifier, over series with
    /// gaps, NaN, staleness markers and infinities, under sample limits small enough to
    /// trip: the same series, bit for bit, or the same error, as step by step.
    #[test]
    fn a_plain_selector_answers_as_step_by_step(
        fleet in fleet(),
        modifier in 0usize..MODIFIERS.len(),
        parens in any::<bool>(),
        start in 0i64..300_000,
        span in 0i64..600_000,
        step in prop_oneof![Just(15_000i64), Just(60_000), 1_000i64..200_000],
        limit in prop_oneof![Just(50_000_000usize), 0usize..120],
    ) {
        let s = store(&fleet);
        let q = format!("x{}", MODIFIERS[modifier]);
        let q = if parens { format!("({q})") } else { q };
        let end = start + span;
        let fast = answer(&s, &q, start, end, step, limit);
        let slow = answer_by(range_query_stepwise, &s, &q, start, end, step, limit);
        prop_assert_eq!(fast, slow, "{}", q);
    }
}

/// Every sample limit from none to past the whole query: the limit trips at the same step,
/// with the same error, as step by step (a random limit rarely lands on a boundary). The
/// fetch alone holds about 80 samples; at a 5 s step the steps count up to about 300 more.
#[test]
fn every_sample_limit_trips_where_step_by_step_trips() {
    let fleet: Vec<(usize, Vec<Option<f64>>)> = (0..4)
        .map(|g| {
            let samples = (0..40)
                .map(|i| ((i + g) % 3 != 0).then_some((i * g) as f64))
                .collect();
            (g % 2, samples)
        })
        .collect();
    let s = store(&fleet);
    for q in [
        "sum(x)",
        "avg by (region) (x)",
        "max without (gpu) (x offset 30s)",
    ] {
        let mut tripped = 0;
        for limit in 0..400 {
            let fast = answer(&s, q, 0, 300_000, 5_000, limit);
            let slow = answer(&s, &format!("({q}) * 1"), 0, 300_000, 5_000, limit);
            tripped += usize::from(fast.starts_with("error"));
            assert_eq!(fast, slow, "{q} under a limit of {limit}");
        }
        // Some limits trip (at the fetch or during the steps), and the largest passes all.
        assert!((1..400).contains(&tripped), "{q}: {tripped} limits tripped");
    }
    for q in ["x", "x offset 30s", "(x @ 200)"] {
        let mut tripped = 0;
        for limit in 0..400 {
            let fast = answer(&s, q, 0, 300_000, 5_000, limit);
            let slow = answer_by(range_query_stepwise, &s, q, 0, 300_000, 5_000, limit);
            tripped += usize::from(fast.starts_with("error"));
            assert_eq!(fast, slow, "{q} under a limit of {limit}");
        }
        assert!((1..400).contains(&tripped), "{q}: {tripped} limits tripped");
    }
}
