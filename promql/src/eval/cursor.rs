//! Per-series cursors: where the previous step's window ended in each series.
//!
//! A range query evaluates every selector at each step, and steps move forward, so the
//! sample that bounds step `t + step`'s window lies just after the one that bounded
//! step `t`'s. Searching from the previous position ([`seek`]) costs a few comparisons
//! per step instead of a binary search over the whole series. The cursor is only a
//! hint: [`seek`] returns the exact position whatever the hint, so `@`, `offset` and
//! subqueries that evaluate a selector at earlier times stay correct (they pay a binary
//! search when they move backwards).

use crate::value::{Sample, Series};

/// How many samples [`seek`] steps over one by one before it switches to a binary
/// search of the rest: a 1-minute step over 10-second samples moves about six.
const LINEAR: usize = 16;

/// The index of the first sample after `bound` (`partition_point(|x| x.t <= bound)`),
/// found from `hint`, a previous answer for the same series.
#[inline]
pub(crate) fn seek(samples: &[Sample], hint: usize, bound: i64) -> usize {
    let hint = hint.min(samples.len());
    if hint > 0 && samples[hint - 1].t > bound {
        // Moved backwards (an `@`, offset or subquery evaluated at an earlier time).
        return samples[..hint].partition_point(|x| x.t <= bound);
    }
    let end = (hint + LINEAR).min(samples.len());
    let mut i = hint;
    while i < end {
        if samples[i].t > bound {
            return i;
        }
        i += 1;
    }
    i + samples[i..].partition_point(|x| x.t <= bound)
}

/// One selector's prefetched series with a cursor pair per series: the ends of the last
/// window read from it (`lo` for the range start, `hi` for its end).
#[derive(Debug, Default)]
pub(crate) struct SelectorData {
    pub series: Vec<Series>,
    pub cursors: std::cell::RefCell<Vec<(usize, usize)>>,
}

impl SelectorData {
    pub fn new(series: Vec<Series>) -> Self {
        let cursors = std::cell::RefCell::new(vec![(0, 0); series.len()]);
        Self { series, cursors }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seek_matches_partition_point_from_any_hint() {
        let samples: Vec<Sample> = (0..100)
            .map(|i| Sample {
                t: i * 10 + (i % 3),
                v: 0.0,
            })
            .collect();
        for bound in [-5, 0, 1, 9, 10, 11, 500, 502, 989, 990, 991, 2000] {
            let want = samples.partition_point(|x| x.t <= bound);
            for hint in [0, 1, 5, 17, 40, 50, 51, 99, 100, 150] {
                assert_eq!(
                    seek(&samples, hint, bound),
                    want,
                    "bound {bound} hint {hint}"
                );
            }
        }
        assert_eq!(seek(&[], 3, 10), 0);
    }
}
