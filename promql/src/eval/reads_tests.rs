//! [`Reads`]: which selections may be answered from per-bucket aggregates, and the proof by
//! difference: every query evaluated over a store that answers aligned selections with bucket
//! aggregates (as rigwatch's rollups do) gives exactly what it gives over the raw samples
//! (NaN, staleness markers, gaps and sub-bucket lookbacks included).

use super::*;
use crate::parser::parse;
use crate::storage::MemStore;
use crate::value::{Labels, stale_nan};

const M: i64 = 60_000;

#[test]
fn reads_follow_the_selector_and_its_function() {
    let o = EvalOptions::default();
    let q = "a + max_over_time(b[10m]) + min_over_time(c[5m] offset 1m) + rate(d[5m]) \
             + e @ 600 + max_over_time(f[10m:1m]) + timestamp(g)";
    let e = parse(q).unwrap();
    let s = range_selections(&e, 60 * M, 120 * M, M, &o);
    let reads: Vec<Reads> = s.iter().map(|x| x.reads).collect();
    assert_eq!(
        reads,
        vec![
            Reads::Last {
                first: 60 * M,
                step: M
            },
            Reads::Max {
                first: 60 * M,
                step: M,
                range: 10 * M
            },
            Reads::Min {
                first: 59 * M,
                step: M,
                range: 5 * M
            },
            Reads::Raw,
            Reads::Last {
                first: 600_000,
                step: 0
            },
            // The subquery's inner steps: multiples of 1m in (60m - 10m, 120m].
            Reads::Last {
                first: 51 * M,
                step: M
            },
            Reads::Last {
                first: 60 * M,
                step: M
            },
        ]
    );
    // Without the step, a range's evaluation times are unknown: everything is raw.
    assert!(
        selections(&e, 60 * M, 120 * M, &o)
            .iter()
            .all(|x| x.reads == Reads::Raw
                || x.reads
                    == Reads::Last {
                        first: 600_000,
                        step: 0
                    }
                || matches!(x.reads, Reads::Last { first, step } if first == 51 * M && step == M))
    );
    // An instant query is one time.
    let s = selections(
        &parse("max_over_time(x[1h])").unwrap(),
        7200_000,
        7200_000,
        &o,
    );
    assert_eq!(
        s[0].reads,
        Reads::Max {
            first: 7200_000,
            step: 0,
            range: 3600_000
        }
    );

    let last = Reads::Last {
        first: 60 * M,
        step: 5 * M,
    };
    assert!(last.aligned(M) && last.aligned(5 * M) && !last.aligned(10 * M));
    let max = Reads::Max {
        first: 60 * M,
        step: M,
        range: 90_000,
    };
    assert!(!max.aligned(M), "a 90 s window is not whole minutes");
    assert!(!Reads::Raw.aligned(M));
    assert!(
        !Reads::Last {
            first: 30_000,
            step: M
        }
        .aligned(M)
    );
}

/// Answers aligned selections with the aggregates of buckets `m` ms wide, like rollups.
struct Buckets<'a> {
    raw: &'a MemStore,
    m: i64,
    answered: std::cell::Cell<usize>,
}

impl Queryable for Buckets<'_> {
    fn select(
        &self,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<Series>, EvalError> {
        self.raw.select(matchers, min_t, max_t)
    }

    fn select_for(&self, sel: &Selection) -> Result<Vec<Series>, EvalError> {
        let raw = self.raw.select(&sel.matchers, sel.min_t, sel.max_t)?;
        if !sel.reads.aligned(self.m) {
            return Ok(raw);
        }
        self.answered.set(self.answered.get() + 1);
        let m = self.m;
        let end = |t: i64| (t - 1).div_euclid(m) * m + m;
        Ok(raw
            .into_iter()
            .map(|s| {
                let mut out: Vec<Sample> = Vec::new();
                let mut i = 0;
                while i < s.samples.len() {
                    let e = end(s.samples[i].t);
                    let j = i + s.samples[i..].iter().take_while(|x| end(x.t) == e).count();
                    let bucket = &s.samples[i..j];
                    let last = bucket[bucket.len() - 1];
                    let live: Vec<f64> = bucket
                        .iter()
                        .map(|x| x.v)
                        .filter(|v| !is_stale_nan(*v))
                        .collect();
                    let fold = |better: fn(f64, f64) -> bool| {
                        live.iter().skip(1).fold(live[0], |a, &v| {
                            if better(a, v) || a.is_nan() { v } else { a }
                        })
                    };
                    match sel.reads {
                        Reads::Last { .. } => out.push(last),
                        Reads::Max { .. } if !live.is_empty() => out.push(Sample {
                            t: last.t,
                            v: fold(|a, v| a < v),
                        }),
                        Reads::Min { .. } if !live.is_empty() => out.push(Sample {
                            t: last.t,
                            v: fold(|a, v| a > v),
                        }),
                        _ => {}
                    }
                    i = j;
                }
                Series {
                    labels: s.labels,
                    samples: out,
                }
            })
            .collect())
    }
}

fn data() -> MemStore {
    let mut s = MemStore::new();
    for gpu in 0..4i64 {
        let l = Labels::from_pairs([
            ("__name__", "util"),
            ("gpu", ["a", "b", "c", "d"][gpu as usize]),
        ]);
        let mut t = 3 + gpu * 1_000;
        let mut k = 0i64;
        while t < 200 * M {
            // Irregular steps, a gap, NaN, staleness markers, samples on bucket edges.
            let v = match (k + gpu) % 29 {
                3 => f64::NAN,
                17 => stale_nan(),
                _ => ((k * 13 + gpu * 7) % 41) as f64 - 20.0,
            };
            if !(70 * M..85 * M).contains(&t) || gpu == 0 {
                s.add_sample(&l, t, v);
            }
            t += [7_000, 10_000, 13_000, 60_000 - 3 - gpu * 1_000, 20_000][(k % 5) as usize];
            k += 1;
        }
    }
    s
}

#[test]
fn aligned_selections_answered_from_buckets_give_the_raw_result() {
    let raw = data();
    let queries = [
        "util",
        "avg(util)",
        "sum by (gpu) (util)",
        "timestamp(util)",
        "max_over_time(util[5m])",
        "min_over_time(util[1h])",
        "max by (gpu) (max_over_time(util[10m] offset 2m))",
        "max_over_time(util[3m]) - min_over_time(util[3m])",
        "util @ 6000000",
        "max_over_time(util[20m:1m])",
        "rate(util[5m])",
        "max_over_time(util[90s])",
    ];
    let mut answered = 0;
    for (m, lookback) in [
        (M, 300_000),
        (M, 30_000),
        (5 * M, 300_000),
        (5 * M, 120_000),
    ] {
        let opts = EvalOptions {
            lookback_ms: lookback,
            ..EvalOptions::default()
        };
        let b = Buckets {
            raw: &raw,
            m,
            answered: std::cell::Cell::new(0),
        };
        for q in queries {
            let e = parse(q).unwrap();
            for (start, end, step) in [
                (10 * M, 190 * M, M),
                (10 * M, 190 * M, 5 * M),
                (0, 200 * M, 10 * M),
                (7 * M + 30_000, 150 * M, 2 * M),
            ] {
                let want = range_query(&raw, &e, start, end, step, &opts).unwrap();
                let got = range_query(&b, &e, start, end, step, &opts).unwrap();
                assert_eq!(
                    format!("{:?}", got.value),
                    format!("{:?}", want.value),
                    "{q} over [{start}, {end}] step {step}, buckets {m}, lookback {lookback}"
                );
            }
            for t in [60 * M, 61 * M + 1, 120 * M] {
                let want = instant_query(&raw, &e, t, &opts).unwrap();
                let got = instant_query(&b, &e, t, &opts).unwrap();
                assert_eq!(
                    format!("{:?}", got.value),
                    format!("{:?}", want.value),
                    "{q} at {t}"
                );
            }
        }
        answered += b.answered.get();
    }
    assert!(
        answered > 100,
        "most selections were answered from buckets: {answered}"
    );
}
