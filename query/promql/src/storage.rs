//! The series interface the evaluator reads through, and an in-memory store.

use std::collections::BTreeMap;

use crate::ast::Matcher;
use crate::eval::EvalError;
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
            let ok = matchers
                .iter()
                .all(|m| m.matches(labels.get(&m.name).unwrap_or("")));
            if !ok {
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
