//! Keyed sliding-window limits with bounded memory: at most `limit` events per key in any
//! `window`.
//!
//! Each key keeps the instants of its last `limit` events (never more), and the map keeps at
//! most `max_keys` keys: a new key beyond that first sweeps keys with no event left in the
//! window, then drops the key that has been quiet longest. So a caller with many keys (an
//! attacker with many addresses) can reset some counters, but cannot grow the memory.
//!
//! An event may carry a fingerprint: a repeat of a fingerprint already in the window is not
//! counted again (the same stale token retried by a client is one failure, not hundreds;
//! guessing means new tokens, and each one counts).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A key's recent events, oldest first: when, and the fingerprint if one was given.
type Log = VecDeque<(Instant, Option<u64>)>;

/// A keyed sliding-window limit.
#[derive(Debug)]
pub struct Throttle<K> {
    limit: usize,
    window: Duration,
    max_keys: usize,
    map: Mutex<HashMap<K, Log>>,
}

impl<K: Hash + Eq + Clone> Throttle<K> {
    /// At most `limit` events per key in any `window`, for at most `max_keys` keys at once.
    pub fn new(limit: usize, window: Duration, max_keys: usize) -> Self {
        Self {
            limit: limit.max(1),
            window,
            max_keys: max_keys.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    fn prune(log: &mut Log, window: Duration, now: Instant) {
        while log
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= window)
        {
            log.pop_front();
        }
    }

    /// How long `key` must wait before its next event is allowed, if it is at its limit now.
    pub fn wait(&self, key: &K) -> Option<Duration> {
        self.wait_at(key, Instant::now())
    }

    fn wait_at(&self, key: &K, now: Instant) -> Option<Duration> {
        let mut map = self.map.lock();
        let log = map.get_mut(key)?;
        Self::prune(log, self.window, now);
        if log.is_empty() {
            map.remove(key);
            return None;
        }
        (log.len() >= self.limit).then(|| {
            let oldest = log.front().map_or(now, |(t, _)| *t);
            (oldest + self.window).saturating_duration_since(now)
        })
    }

    /// Counts an event for `key` (once per `fingerprint` within the window, when given).
    /// `Ok(n)`: allowed, `n` events now in the window; `Err(wait)`: at the limit, nothing
    /// recorded, the next is allowed after `wait`.
    pub fn record(&self, key: K, fingerprint: Option<u64>) -> Result<usize, Duration> {
        self.record_at(key, fingerprint, Instant::now())
    }

    fn record_at(&self, key: K, fingerprint: Option<u64>, now: Instant) -> Result<usize, Duration> {
        let mut map = self.map.lock();
        if !map.contains_key(&key) && map.len() >= self.max_keys {
            let window = self.window;
            map.retain(|_, log| {
                Self::prune(log, window, now);
                !log.is_empty()
            });
            if map.len() >= self.max_keys
                && let Some(quietest) = map
                    .iter()
                    .min_by_key(|(_, log)| log.back().map(|(t, _)| *t))
                    .map(|(k, _)| k.clone())
            {
                map.remove(&quietest);
            }
        }
        let log = map.entry(key).or_default();
        Self::prune(log, self.window, now);
        if fingerprint.is_some() && log.iter().any(|(_, f)| *f == fingerprint) {
            return Ok(log.len());
        }
        if log.len() >= self.limit {
            let oldest = log.front().map_or(now, |(t, _)| *t);
            return Err((oldest + self.window).saturating_duration_since(now));
        }
        log.push_back((now, fingerprint));
        Ok(log.len())
    }

    /// Keys held (for tests and metrics).
    pub fn keys(&self) -> usize {
        self.map.lock().len()
    }
}

/// Whole seconds to put in `Retry-After` for a wait (at least 1).
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_events_per_key_in_a_sliding_window() {
        let t = Throttle::new(3, Duration::from_secs(60), 100);
        let t0 = Instant::now();
        for i in 1..=3 {
            assert_eq!(t.record_at("a", None, t0), Ok(i));
        }
        assert_eq!(
            t.record_at("a", None, t0 + Duration::from_secs(10)),
            Err(Duration::from_secs(50))
        );
        assert_eq!(
            t.wait_at(&"a", t0 + Duration::from_secs(10)),
            Some(Duration::from_secs(50))
        );
        // Another key is not affected.
        assert_eq!(t.record_at("b", None, t0), Ok(1));
        assert_eq!(t.wait_at(&"b", t0), None);
        // Once the window has passed, events are allowed again.
        assert_eq!(t.wait_at(&"a", t0 + Duration::from_secs(60)), None);
        assert_eq!(t.record_at("a", None, t0 + Duration::from_secs(61)), Ok(1));
    }

    #[test]
    fn a_repeated_fingerprint_counts_once() {
        let t = Throttle::new(2, Duration::from_secs(60), 100);
        let t0 = Instant::now();
        for _ in 0..10 {
            assert_eq!(t.record_at("ip", Some(7), t0), Ok(1));
        }
        assert_eq!(t.record_at("ip", Some(8), t0), Ok(2));
        assert!(t.record_at("ip", Some(9), t0).is_err());
        assert!(t.wait_at(&"ip", t0).is_some());
    }

    #[test]
    fn memory_is_bounded_by_the_key_cap() {
        let t = Throttle::new(5, Duration::from_secs(60), 50);
        let t0 = Instant::now();
        // The first key is at its limit and stays busy.
        for _ in 0..5 {
            t.record_at(0u32, None, t0 + Duration::from_secs(30))
                .unwrap();
        }
        for k in 1..10_000u32 {
            t.record_at(k, None, t0).unwrap();
            assert!(t.keys() <= 50);
        }
        // The quietest keys went first: the busy one is still limited.
        assert!(t.wait_at(&0, t0 + Duration::from_secs(31)).is_some());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2500)), 3);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
