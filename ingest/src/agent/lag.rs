//! Acknowledgement latency of an agent's batches: a fixed log-scale histogram of atomics, so
//! that the transport can record every acknowledgement without a lock and a benchmark or test
//! can read quantiles (p50, p99) across a fleet at any time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets per doubling: bucket bounds grow by 2^(1/4) ≈ 19 %, the quantiles' resolution.
const PER_OCTAVE: u32 = 4;
/// 1 µs to 2^34 µs (about 4.8 hours).
const BUCKETS: usize = 34 * PER_OCTAVE as usize + 1;

/// Counts of latencies by log-scale bucket.
#[derive(Debug)]
pub struct LagHistogram {
    buckets: [AtomicU64; BUCKETS],
}

impl Default for LagHistogram {
    fn default() -> Self {
        LagHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

fn bucket_of(us: u64) -> usize {
    if us <= 1 {
        return 0;
    }
    // Index = ceil(PER_OCTAVE · log2(us)), computed without floating point drift at powers
    // of two: floor part from the bit length, fraction by comparing with the bucket bounds.
    let octave = 63 - us.leading_zeros();
    let mut i = (octave * PER_OCTAVE) as usize;
    while i < BUCKETS - 1 && upper_bound_us(i) < us as f64 {
        i += 1;
    }
    i.min(BUCKETS - 1)
}

/// The largest latency (µs) counted in bucket `i`.
fn upper_bound_us(i: usize) -> f64 {
    2f64.powf(i as f64 / PER_OCTAVE as f64)
}

impl LagHistogram {
    pub fn record(&self, lag: Duration) {
        let us = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// Adds this histogram's counts into `into` (to merge a fleet's agents).
    pub fn add_to(&self, into: &mut [u64]) {
        for (slot, b) in into.iter_mut().zip(&self.buckets) {
            *slot += b.load(Ordering::Relaxed);
        }
    }

    /// A zeroed count array for [`LagHistogram::add_to`] and [`quantile`].
    pub fn counts() -> Vec<u64> {
        vec![0; BUCKETS]
    }
}

/// The `q` quantile (0..=1) of merged `counts`, as the upper bound of its bucket (so at most
/// 19 % above the true value); `None` when nothing was counted.
pub fn quantile(counts: &[u64], q: f64) -> Option<Duration> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(Duration::from_secs_f64(upper_bound_us(i) / 1e6));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_a_bucket_of_the_truth() {
        let h = LagHistogram::default();
        // 1..=1000 ms, one each: p50 ≈ 500 ms, p99 ≈ 990 ms.
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        let mut c = LagHistogram::counts();
        h.add_to(&mut c);
        let p50 = quantile(&c, 0.5).unwrap().as_secs_f64() * 1e3;
        let p99 = quantile(&c, 0.99).unwrap().as_secs_f64() * 1e3;
        assert!((500.0..=500.0 * 1.19).contains(&p50), "p50 {p50}");
        assert!((990.0..=990.0 * 1.19).contains(&p99), "p99 {p99}");
        assert!(quantile(&LagHistogram::counts(), 0.99).is_none());
    }

    #[test]
    fn every_value_lands_in_a_bucket_whose_bound_covers_it() {
        for us in [0u64, 1, 2, 3, 7, 8, 9, 1_000, 999_999, 1 << 33, u64::MAX] {
            let i = bucket_of(us);
            assert!(i < BUCKETS);
            if us < (1 << 34) {
                assert!(upper_bound_us(i) >= us as f64, "{us} in bucket {i}");
                assert!(
                    i == 0 || upper_bound_us(i - 1) < us as f64,
                    "{us} in bucket {i}"
                );
            }
        }
    }
}
