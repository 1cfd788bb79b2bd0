//! How many distinct time partitions one principal may write into per hour.
//!
//! Each partition a write touches costs buffer chunks now and a Parquet file per table at
//! persist; rows spread over decades would turn one client's requests into thousands of
//! files. A request is already bounded (`--max-write-partitions`, `--agent-max-partitions`);
//! this bounds a principal over time, so that many small requests cannot do what one large
//! one may not. Partitions the principal wrote into earlier in the hour cost nothing again,
//! so steady writing into the current hour never comes near the limit.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The budget's period.
pub const PERIOD: Duration = Duration::from_secs(3_600);

/// Default for agents (per supplier): a week of hourly partitions (a full spool draining
/// after an outage) with room to spare.
pub const DEFAULT_AGENT_PER_HOUR: usize = 256;

/// Default for operators' generic writes (per token): a year of hourly partitions of
/// backfill per hour.
pub const DEFAULT_WRITE_PER_HOUR: usize = 10_000;

/// A refusal: the principal has used its partitions for this period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted {
    /// The limit.
    pub limit: usize,
    /// Until the period ends.
    pub retry_after: Duration,
}

#[derive(Debug)]
struct Period {
    started: Instant,
    opened: HashSet<i64>,
}

/// Partitions opened per principal in the current period (fixed, per principal, starting at
/// its first write).
#[derive(Debug)]
pub struct PartitionBudget {
    per_period: usize,
    principals: Mutex<HashMap<String, Period>>,
}

impl PartitionBudget {
    pub fn new(per_hour: usize) -> Self {
        PartitionBudget {
            per_period: per_hour.max(1),
            principals: Mutex::new(HashMap::new()),
        }
    }

    pub fn limit(&self) -> usize {
        self.per_period
    }

    /// Charges `partitions` (partition numbers, repeats allowed) to `principal`, or refuses
    /// the whole request if the new ones would take it past its limit for this period.
    pub fn charge(
        &self,
        principal: &str,
        partitions: impl IntoIterator<Item = i64>,
    ) -> Result<(), Exhausted> {
        self.charge_at(principal, partitions, Instant::now())
    }

    fn charge_at(
        &self,
        principal: &str,
        partitions: impl IntoIterator<Item = i64>,
        now: Instant,
    ) -> Result<(), Exhausted> {
        let mut all = self.principals.lock();
        // Forget periods that are over (bounded work: at most one entry per principal).
        if all.len() > 1_024 {
            all.retain(|_, p| now.duration_since(p.started) < PERIOD);
        }
        let period = all.entry(principal.to_string()).or_insert_with(|| Period {
            started: now,
            opened: HashSet::new(),
        });
        if now.duration_since(period.started) >= PERIOD {
            period.started = now;
            period.opened.clear();
        }
        let mut new: Vec<i64> = partitions
            .into_iter()
            .filter(|p| !period.opened.contains(p))
            .collect();
        new.sort_unstable();
        new.dedup();
        if period.opened.len() + new.len() > self.per_period {
            return Err(Exhausted {
                limit: self.per_period,
                retry_after: PERIOD.saturating_sub(now.duration_since(period.started)),
            });
        }
        period.opened.extend(new);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_written_before_are_free_new_ones_count() {
        let b = PartitionBudget::new(3);
        let t = Instant::now();
        b.charge_at("a", [1, 1, 2], t).unwrap();
        // The same two again, and one more: at the limit, accepted.
        b.charge_at("a", [1, 2, 3], t).unwrap();
        // A fourth is refused, with the time left in the period.
        let e = b
            .charge_at("a", [4], t + Duration::from_secs(600))
            .unwrap_err();
        assert_eq!(e.limit, 3);
        assert_eq!(e.retry_after, Duration::from_secs(3_000));
        // Old ones still pass; another principal has its own budget.
        b.charge_at("a", [3], t).unwrap();
        b.charge_at("b", [4, 5, 6], t).unwrap();
        // A refused request charged nothing, and the next period starts afresh.
        b.charge_at("a", [7, 8, 9], t + PERIOD).unwrap();
    }

    #[test]
    fn a_request_is_refused_whole() {
        let b = PartitionBudget::new(2);
        let t = Instant::now();
        assert!(b.charge_at("a", [1, 2, 3], t).is_err());
        // Nothing of it was charged.
        b.charge_at("a", [1, 2], t).unwrap();
    }
}
