//! The series interface the evaluator reads through, and an in-memory store.

use std::collections::BTreeMap;

use crate::ast::Matcher;
use crate::eval::{EvalError, Selection};
use crate::value::{Labels, Sample, Series};

/// A source of series. `rigwatch-query` implements it over DataFusion (after
/// prefetching [`crate::eval::selections`] into a [`MemStore`]); tests use
/// [`MemStore`] directly.
pub trait Queryable {
    /// Every series whose labels satisfy all `matchers`, with its samples in
    /// `[min_t, max_t]` (both inclusive, milliseconds) sorted by time. Series without
    /// samples in the span may be left out.
    fn select(
        &self,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<Series>, EvalError>;

    /// The series of `sel`. A source may answer with per-bucket aggregates where
    /// [`crate::eval::Reads`] allows; by default it reads every sample.
    fn select_for(&self, sel: &Selection) -> Result<Vec<Series>, EvalError> {
        self.select(&sel.matchers, sel.min_t, sel.max_t)
    }
}

/// Series held in memory, ordered by labels.
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    series: BTreeMap<Labels, Vec<Sample>>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one sample. A sample at an existing timestamp replaces it (last write
    /// wins); out-of-order samples are inserted in place.
    pub fn add_sample(&mut self, labels: &Labels, t: i64, v: f64) {
        let samples = match self.series.get_mut(labels) {
            Some(s) => s,
            None => self.series.entry(labels.clone()).or_default(),
        };
        match samples.last() {
            Some(last) if last.t < t => samples.push(Sample { t, v }),
            None => samples.push(Sample { t, v }),
            _ => match samples.binary_search_by_key(&t, |s| s.t) {
                Ok(i) => samples[i].v = v,
                Err(i) => samples.insert(i, Sample { t, v }),
            },
        }
    }

    /// Adds a whole series (merged with any samples already held for its labels).
    pub fn add_series(&mut self, series: Series) {
        for s in series.samples {
            self.add_sample(&series.labels, s.t, s.v);
        }
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        self.series.clear();
    }

    /// Number of series held.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// Number of samples held.
    pub fn sample_count(&self) -> usize {
        self.series.values().map(Vec::len).sum()
    }
}

impl Queryable for MemStore {
    fn select(
        &self,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<Series>, EvalError> {
        let mut out = Vec::new();
        for (labels, samples) in &self.series {
            if !Matcher::all_match(matchers, labels) {
                continue;
            }
            let lo = samples.partition_point(|s| s.t < min_t);
            let hi = samples.partition_point(|s| s.t <= max_t);
            if lo < hi {
                out.push(Series {
                    labels: labels.clone(),
                    samples: samples[lo..hi].to_vec(),
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_stay_sorted_and_bounds_are_inclusive() {
        let mut s = MemStore::new();
        let a = Labels::from_pairs([("__name__", "a"), ("x", "1")]);
        let b = Labels::from_pairs([("__name__", "b")]);
        for t in [30, 10, 20, 10] {
            s.add_sample(&a, t, t as f64);
        }
        s.add_sample(&a, 20, -1.0); // last write wins
        s.add_sample(&b, 5, 1.0);
        assert_eq!((s.series_count(), s.sample_count()), (2, 4));
        let got = s.select(&[Matcher::equal("x", "1")], 10, 20).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].samples,
            vec![Sample { t: 10, v: 10.0 }, Sample { t: 20, v: -1.0 }]
        );
        // A matcher on a missing label compares with "".
        let absent = Matcher::new("x", crate::ast::MatchOp::Equal, "").unwrap();
        let got = s.select(&[absent], 0, 100).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].labels, b);
        // Series without samples in the span are left out.
        assert!(s.select(&[], 31, 100).unwrap().is_empty());
    }
}
