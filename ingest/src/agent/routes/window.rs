//! The times an agent's rows may have: not older than `--agent-max-age`, not further ahead
//! than `--agent-max-future`, and within `--agent-max-partitions` time partitions per request.

use rigwatch_storage::batch::WriteBatch;

use super::AgentLimits;

/// The times an agent's rows may have.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    /// The server's clock when the request arrived.
    pub(super) now: i64,
    pub(super) limits: AgentLimits,
    /// The store's time partition.
    pub(super) partition_ns: i64,
}

/// Why a request's times were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum WindowError {
    #[error(
        "line {line}: time {time} is {} before the server's clock, more than {} \
         (`--agent-max-age`)", human(*.age_ns), human(*.max_ns)
    )]
    TooOld {
        line: u32,
        time: i64,
        age_ns: i128,
        max_ns: i128,
    },
    #[error(
        "line {line}: time {time} is {} after the server's clock, more than {} \
         (`--agent-max-future`; is the agent's clock right?)", human(*.ahead_ns), human(*.max_ns)
    )]
    InFuture {
        line: u32,
        time: i64,
        ahead_ns: i128,
        max_ns: i128,
    },
    #[error(
        "line {line}: time {time} makes the request touch more than {max} time partitions \
         of {} (`--agent-max-partitions`)", human(i128::from(*.partition_ns))
    )]
    TooManyPartitions {
        line: u32,
        time: i64,
        max: usize,
        partition_ns: i64,
    },
}

impl Window {
    /// Refuses the first row outside `[now - max_age, now + max_future]`, or the first whose
    /// partition is one more than the request may touch.
    pub(super) fn check(&self, batch: &WriteBatch) -> Result<(), WindowError> {
        let max_age = self.limits.max_age.as_nanos() as i128;
        let max_future = self.limits.max_future.as_nanos() as i128;
        let now = i128::from(self.now);
        let partition = self.partition_ns.max(1);
        let mut partitions = std::collections::HashSet::new();
        for row in batch.rows() {
            let (line, time) = (row.line(), row.time());
            let t = i128::from(time);
            if now - t > max_age {
                return Err(WindowError::TooOld {
                    line,
                    time,
                    age_ns: now - t,
                    max_ns: max_age,
                });
            }
            if t - now > max_future {
                return Err(WindowError::InFuture {
                    line,
                    time,
                    ahead_ns: t - now,
                    max_ns: max_future,
                });
            }
            if partitions.insert(time.div_euclid(partition))
                && partitions.len() > self.limits.max_partitions
            {
                return Err(WindowError::TooManyPartitions {
                    line,
                    time,
                    max: self.limits.max_partitions,
                    partition_ns: partition,
                });
            }
        }
        Ok(())
    }
}

/// A span of nanoseconds for a message: `3d 4h`, `5m 2s`, `12s`, `250ms`.
fn human(ns: i128) -> String {
    let ms = ns / 1_000_000;
    let s = ms / 1_000;
    let (d, h, m) = (s / 86_400, s / 3_600 % 24, s / 60 % 60);
    match () {
        _ if d > 0 && h > 0 => format!("{d}d {h}h"),
        _ if d > 0 => format!("{d}d"),
        _ if h > 0 && m > 0 => format!("{h}h {m}m"),
        _ if h > 0 => format!("{h}h"),
        _ if m > 0 && s % 60 > 0 => format!("{m}m {}s", s % 60),
        _ if m > 0 => format!("{m}m"),
        _ if s > 0 => format!("{s}s"),
        _ => format!("{ms}ms"),
    }
}

#[cfg(test)]
mod tests {
    use rigwatch_storage::batch::FieldValue;

    use super::*;

    const S: i64 = 1_000_000_000;
    const HOUR: i64 = 3_600 * S;

    fn batch(times: &[i64]) -> WriteBatch {
        let mut b = WriteBatch::default();
        for (i, t) in times.iter().enumerate() {
            let mut r = b.row("heartbeat", *t);
            r.field("seq", FieldValue::I64(i as i64));
            r.finish(i as u32 + 1).unwrap();
        }
        b
    }

    fn window(now: i64) -> Window {
        Window {
            now,
            limits: AgentLimits::DEFAULT,
            partition_ns: HOUR,
        }
    }

    #[test]
    fn rows_outside_the_window_are_refused_naming_the_line_and_time() {
        let now = 1_800_000_000 * S;
        let w = window(now);
        let max_age = 7 * 24 * HOUR;
        assert_eq!(
            w.check(&batch(&[now, now - max_age, now + 300 * S])),
            Ok(())
        );
        let old = now - max_age - 1;
        assert_eq!(
            w.check(&batch(&[now, old])),
            Err(WindowError::TooOld {
                line: 2,
                time: old,
                age_ns: i128::from(max_age + 1),
                max_ns: i128::from(max_age),
            })
        );
        let ahead = now + 300 * S + 1;
        let e = w.check(&batch(&[now, now, ahead])).unwrap_err();
        assert!(matches!(e, WindowError::InFuture { line: 3, time, .. } if time == ahead));
        assert!(
            e.to_string()
                .starts_with(&format!("line 3: time {ahead} is 5m after")),
            "{e}"
        );
        let e = w.check(&batch(&[1])).unwrap_err().to_string();
        assert!(
            e.contains("line 1: time 1 is 20833d 7h before") && e.contains("more than 7d"),
            "{e}"
        );
        // Extremes do not overflow.
        assert!(w.check(&batch(&[i64::MIN])).is_err());
        assert!(w.check(&batch(&[i64::MAX])).is_err());
    }

    #[test]
    fn a_request_touches_a_bounded_number_of_partitions() {
        // Half past an hour: `now - h·1h` and one second before share a partition.
        let now = 1_800_000_000 * S + HOUR / 2;
        let w = window(now);
        // 48 hourly partitions, several rows each, and the first ones again: accepted.
        let mut times: Vec<i64> = (0..48)
            .flat_map(|h| [now - h * HOUR, now - h * HOUR - S])
            .collect();
        times.push(now);
        assert_eq!(w.check(&batch(&times)), Ok(()));
        times.push(now - 48 * HOUR);
        let e = w.check(&batch(&times)).unwrap_err();
        assert_eq!(
            e,
            WindowError::TooManyPartitions {
                line: times.len() as u32,
                time: now - 48 * HOUR,
                max: 48,
                partition_ns: HOUR,
            }
        );
        assert!(
            e.to_string().contains("more than 48 time partitions of 1h"),
            "{e}"
        );
    }

    #[test]
    fn spans_read_well() {
        assert_eq!(human(250 * 1_000_000), "250ms");
        assert_eq!(human(i128::from(12 * S)), "12s");
        assert_eq!(human(i128::from(302 * S)), "5m 2s");
        assert_eq!(human(i128::from(HOUR)), "1h");
        assert_eq!(human(i128::from(26 * HOUR)), "1d 2h");
        assert_eq!(human(i128::from(7 * 24 * HOUR)), "7d");
    }
}
