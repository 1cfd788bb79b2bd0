//! Evaluator tests on hand-built data (the Prometheus suite runs in
//! `tests/conformance.rs`).

use std::cell::RefCell;
use std::time::{Duration, Instant};

use super::*;
use crate::parser::parse;
use crate::storage::MemStore;
use crate::value::Labels;

const M: i64 = 60_000;

type SeriesSpec<'a> = (&'a [(&'a str, &'a str)], &'a [(i64, f64)]);

fn store(series: &[SeriesSpec<'_>]) -> MemStore {
    let mut s = MemStore::new();
    for (labels, pts) in series {
        let l = Labels::from_pairs(labels.iter().copied());
        for &(t, v) in *pts {
            s.add_sample(&l, t, v);
        }
    }
    s
}

fn instant(s: &MemStore, q: &str, t: i64) -> Result<QueryResult, EvalError> {
    instant_query(s, &parse(q).unwrap(), t, &EvalOptions::default())
}

fn scalar_of(r: &QueryResult) -> f64 {
    match &r.value {
        Value::Vector(v) if v.len() == 1 => v[0].1.v,
        Value::Scalar { v, .. } => *v,
        other => panic!("expected one sample, got {other:?}"),
    }
}

#[test]
fn subquery_steps_are_absolute_multiples() {
    assert_eq!(
        subquery_steps(65_000, 65_000, 30_000, 10_000),
        (40_000, 60_000)
    );
    assert_eq!(
        subquery_steps(60_000, 60_000, 30_000, 10_000),
        (40_000, 60_000)
    );
    assert_eq!(subquery_steps(-7, -7, 0, 5), (-5, -10));
}

#[test]
fn selections_account_for_lookback_range_offset_at_and_subqueries() {
    let o = EvalOptions::default();
    let e = parse("a + rate(b[5m] offset 1m) + c @ 100 + max_over_time(d[10m:1m])").unwrap();
    let s = selections(&e, 20 * M, 30 * M, &o);
    let span = |i: usize| (s[i].min_t, s[i].max_t);
    assert_eq!(s.len(), 4);
    assert_eq!(span(0), (15 * M + 1, 30 * M)); // lookback 5m, left-open
    assert_eq!(span(1), (14 * M + 1, 29 * M)); // 5m range, 1m offset
    assert_eq!(span(2), (100_000 - 5 * M + 1, 100_000)); // @ pins the time
    // Inner steps of the subquery: multiples of 1m in (20m-10m, 30m] → 11m..30m,
    // each with a 5m lookback.
    assert_eq!(span(3), (11 * M - 5 * M + 1, 30 * M));
}

/// A store that records what the evaluator asks for.
struct Recording<'a> {
    inner: &'a MemStore,
    calls: RefCell<Vec<(i64, i64)>>,
}

impl Queryable for Recording<'_> {
    fn select(
        &self,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<Series>, EvalError> {
        self.calls.borrow_mut().push((min_t, max_t));
        self.inner.select(matchers, min_t, max_t)
    }
}

#[test]
fn evaluator_reads_exactly_the_reported_selections() {
    let s = store(&[(&[("__name__", "x")], &[(0, 1.0), (M, 2.0), (2 * M, 3.0)])]);
    let q = "sum_over_time(x[2m]) + x offset 1m + avg_over_time(x[5m:30s] @ end())";
    let e = parse(q).unwrap();
    let o = EvalOptions::default();
    let rec = Recording {
        inner: &s,
        calls: RefCell::new(vec![]),
    };
    range_query(&rec, &e, M, 3 * M, 30_000, &o).unwrap();
    let want: Vec<(i64, i64)> = selections(&e, M, 3 * M, &o)
        .iter()
        .map(|x| (x.min_t, x.max_t))
        .collect();
    assert_eq!(*rec.calls.borrow(), want);
}

#[test]
fn lookback_is_left_open_and_staleness_ends_series() {
    let s = store(&[
        (&[("__name__", "a")], &[(0, 1.0)]),
        (
            &[("__name__", "b")],
            &[(0, 1.0), (M, crate::value::stale_nan())],
        ),
    ]);
    // A sample exactly lookback old is out; one ms younger is in.
    assert!(matches!(instant(&s, "a", 5 * M).unwrap().value, Value::Vector(v) if v.is_empty()));
    assert_eq!(scalar_of(&instant(&s, "a", 5 * M - 1).unwrap()), 1.0);
    assert_eq!(scalar_of(&instant(&s, "b", M - 1).unwrap()), 1.0);
    assert!(matches!(instant(&s, "b", M).unwrap().value, Value::Vector(v) if v.is_empty()));
    // Range selectors never return the marker.
    match instant(&s, "b[10m]", 2 * M).unwrap().value {
        Value::Matrix(m) => assert_eq!(m[0].samples.len(), 1),
        other => panic!("{other:?}"),
    }
}

#[test]
fn rigwatch_extensions() {
    let s = store(&[(
        &[("__name__", "c_total")],
        &[
            (0, 10.0),
            (M, 20.0),
            (2 * M, 5.0),
            (3 * M, 8.0),
            (10 * M, 9.0),
        ],
    )]);
    // (0, 10m]: samples 1m..10m: 20 → 5 reset (+20) → 9 = 9 - 20 + 20.
    assert_eq!(
        scalar_of(&instant(&s, "increase_exact(c_total[10m])", 10 * M).unwrap()),
        9.0
    );
    // Gaps: start→1m = 60s, 3m→10m = 420s.
    assert_eq!(
        scalar_of(&instant(&s, "max_gap_over_time(c_total[10m])", 10 * M).unwrap()),
        420.0
    );
    // Gaps 1m, 1m, 1m, 7m: only the 7m one exceeds the 5m lookback → 3m of 10m up.
    let u = scalar_of(&instant(&s, "uptime_ratio(c_total[10m])", 10 * M).unwrap());
    assert!((u - 0.3).abs() < 1e-12, "{u}");
}

#[test]
fn limits_and_errors_have_api_kinds() {
    let s = store(&[
        (&[("__name__", "x"), ("a", "1")], &[(0, 1.0), (M, 1.0)]),
        (&[("__name__", "y"), ("a", "1")], &[(0, 2.0), (M, 2.0)]),
    ]);
    let e = parse("x[10m]").unwrap();
    let mut o = EvalOptions {
        max_samples: 1,
        ..EvalOptions::default()
    };
    let err = instant_query(&s, &e, M, &o).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Execution);
    assert!(err.to_string().contains("too many samples"), "{err}");
    o.max_samples = 100;
    o.deadline = Some(Instant::now() - Duration::from_millis(1));
    let timeout = instant_query(&s, &e, M, &o).unwrap_err();
    assert_eq!(timeout.kind(), ErrorKind::Timeout);
    assert!(timeout.kind().is_retryable() && timeout.kind().http_status() == 503);
    o.deadline = None;
    o.cancel = Some(std::sync::Arc::new(std::sync::atomic::AtomicBool::new(
        true,
    )));
    assert_eq!(
        range_query(&s, &e.clone(), 0, M, M, &o).unwrap_err().kind(),
        ErrorKind::BadData
    );
    let sel = parse("x").unwrap();
    assert_eq!(
        range_query(&s, &sel, 0, M, M, &o).unwrap_err().kind(),
        ErrorKind::Canceled
    );
    o.cancel = None;
    let info = instant(&s, "info(x)", M).unwrap_err();
    assert_eq!(info.kind(), ErrorKind::BadData);
    assert!(
        info.to_string().contains("info() is not supported"),
        "{info}"
    );
    let dup = instant(&s, "abs({a=\"1\"})", M).unwrap_err();
    assert_eq!(dup, EvalError::DuplicateLabelset);
    let range = range_query(&s, &e, 0, M, M, &EvalOptions::default()).unwrap_err();
    assert_eq!(range.kind(), ErrorKind::BadData);
}

#[test]
fn range_query_with_subquery_matches_instant_queries() {
    let pts: Vec<(i64, f64)> = (0..60).map(|i| (i * 15_000, (i * i % 17) as f64)).collect();
    let s = store(&[(&[("__name__", "g")], &pts)]);
    let q = "max_over_time(deriv(g[2m])[5m:30s]) + min_over_time(g[3m:])";
    let e = parse(q).unwrap();
    let o = EvalOptions::default();
    let r = range_query(&s, &e, 5 * M, 14 * M, 20_000, &o).unwrap();
    let Value::Matrix(m) = r.value else { panic!() };
    assert_eq!(m.len(), 1);
    assert!(m[0].samples.len() > 20);
    for smp in &m[0].samples {
        let want = scalar_of(&instant_query(&s, &e, smp.t, &o).unwrap());
        assert_eq!(smp.v.to_bits(), want.to_bits(), "at {}", smp.t);
    }
}

/// Throughput probe (not a pass/fail test; timing never decides):
/// `cargo test -p rigwatch-promql --lib -- --ignored --nocapture throughput`.
#[test]
#[ignore = "measurement: prints throughput; run explicitly with --ignored"]
fn throughput() {
    let mut s = MemStore::new();
    let (series, step, points) = (1000, 15_000, 1440); // 6h at 15s
    for i in 0..series {
        let l = Labels::from_pairs([
            ("__name__".to_string(), "m_total".to_string()),
            ("job".to_string(), format!("job{}", i % 10)),
            ("instance".to_string(), format!("i{i}")),
        ]);
        for p in 0..points {
            s.add_sample(&l, p * step, (p * (i + 1)) as f64);
        }
    }
    let total = s.sample_count();
    let o = EvalOptions::default();
    let end = (points - 1) * step;
    for (q, st) in [
        ("sum by (job) (rate(m_total[5m]))", 60_000),
        ("m_total", 60_000),
        ("max_over_time(rate(m_total[5m])[30m:1m])", 300_000),
    ] {
        let e = parse(q).unwrap();
        let t0 = Instant::now();
        let r = range_query(&s, &e, 0, end, st, &o).unwrap();
        let dt = t0.elapsed();
        let Value::Matrix(m) = r.value else { panic!() };
        let out: usize = m.iter().map(|x| x.samples.len()).sum();
        println!(
            "{q}: {} steps, {total} samples stored, {out} output points, {:.1} ms, {:.2} M stored samples/s",
            end / st + 1,
            dt.as_secs_f64() * 1000.0,
            total as f64 / dt.as_secs_f64() / 1e6
        );
    }
}

#[test]
fn times_at_the_ends_of_i64_saturate_instead_of_overflowing() {
    let s = store(&[(&[("__name__", "x")], &[(0, 1.0), (60_000, 2.0)])]);
    let o = EvalOptions::default();
    // `@` as far out as the parser allows, with offsets and ranges pushing past i64.
    for q in [
        "x @ 9223372036854000 offset -1y",
        "x @ -9223372036854000 offset 1y",
        "rate(x[292y] @ -9223372036854000)",
        "max_over_time(x[292y:1y] @ -9223372036854000 offset 292y)",
        "max_over_time(max_over_time(x[1h:1m] @ 9223372036854000 offset -292y)[1h:1m] offset -292y)",
    ] {
        let e = parse(q).unwrap();
        let _ = selections(&e, i64::MIN, i64::MAX, &o);
        assert!(instant_query(&s, &e, 0, &o).is_ok(), "{q}");
    }
    // A range query whose end is the last representable time stops there.
    let e = parse("x").unwrap();
    assert!(range_query(&s, &e, i64::MAX - 10, i64::MAX, 7, &o).is_ok());
}

#[test]
fn a_subquery_with_too_many_steps_fails_at_the_sample_limit_as_it_goes() {
    let s = store(&[]);
    let o = EvalOptions {
        max_samples: 1000,
        ..EvalOptions::default()
    };
    let e = parse("max_over_time(vector(1)[292y:1ms])").unwrap();
    let err = instant_query(&s, &e, 0, &o).unwrap_err();
    assert!(
        matches!(err, EvalError::TooManySamples { limit: 1000 }),
        "{err}"
    );
}
