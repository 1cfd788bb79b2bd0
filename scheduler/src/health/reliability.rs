//! The reliability score of a GPU and of a supplier.
//!
//! Over a rolling window (30 days by default), minute by minute:
//!
//! - an **offered** minute is one at or after the GPU was first seen in the window (the
//!   supplier has listed it from then on);
//! - an **up** minute is an offered minute with at least one `gpu` row of the GPU;
//! - a **hardware-down** minute is one inside an interval where the GPU's health was
//!   unhealthy or offline *because of a hardware fault* (`gpu_health` rows with
//!   `hardware=true`, until the next `gpu_health` row);
//!
//! ```text
//!              |up minutes that are not hardware-down|
//! score(GPU) = ---------------------------------------     in [0, 1]
//!                       |offered minutes|
//!
//! score(supplier) = Σ_gpu numerator / Σ_gpu denominator   (minute-weighted)
//! ```
//!
//! So a GPU loses score for every minute it was listed but silent (offline) and for every
//! minute it was held out for a hardware fault, but not for application XIDs (the job's
//! fault) or warnings (degraded GPUs still serve). The SQL behind it:
//!
//! ```sql
//! -- up minutes per GPU
//! SELECT gpu_uuid, date_trunc('minute', time) AS minute FROM gpu
//!  WHERE time > now() - interval '30 days' GROUP BY gpu_uuid, minute;
//! -- hardware-down intervals: consecutive gpu_health rows per GPU
//! SELECT gpu_uuid, time, hardware FROM gpu_health
//!  WHERE time > now() - interval '30 days' ORDER BY gpu_uuid, time;
//! ```
//!
//! and in PromQL, the minute-level up signal is `count_over_time(gpu_utilization[1m]) > 0`
//! and the hardware flag `gpu_health_hardware`.

const MINUTE_NS: i64 = 60_000_000_000;

/// One GPU's score with its parts (minutes).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Reliability {
    pub offered_minutes: u64,
    pub up_minutes: u64,
    pub hardware_down_minutes: u64,
    /// Up minutes that are not hardware-down.
    pub credited_minutes: u64,
    /// credited / offered, 1.0 when nothing was offered.
    pub score: f64,
}

/// The evidence for one minute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinuteEvidence {
    /// Start of the minute (ns).
    pub minute_ns: i64,
    pub up: bool,
    pub hardware_down: bool,
}

/// Minute-level evidence for one GPU over `[window_start, window_end)`.
///
/// `up_minutes`: start times (ns, any order, duplicates allowed) of minutes with data.
/// `health`: `(time_ns, hardware)` of each `gpu_health` row, sorted by time; a row with
/// `hardware = true` starts hardware downtime, the next row ends it.
/// `first_seen_ns`: when the GPU was first seen (rows before the window count as offered
/// from the window start).
pub fn evidence(
    up_minutes: &[i64],
    health: &[(i64, bool)],
    first_seen_ns: i64,
    window_start: i64,
    window_end: i64,
) -> Vec<MinuteEvidence> {
    let floor = |t: i64| t.div_euclid(MINUTE_NS) * MINUTE_NS;
    let start = floor(first_seen_ns.max(window_start));
    if start >= window_end {
        return Vec::new();
    }
    let n = ((window_end - start + MINUTE_NS - 1) / MINUTE_NS) as usize;
    let mut out: Vec<MinuteEvidence> = (0..n)
        .map(|i| MinuteEvidence {
            minute_ns: start + i as i64 * MINUTE_NS,
            up: false,
            hardware_down: false,
        })
        .collect();
    for &m in up_minutes {
        let m = floor(m);
        if m >= start && m < window_end {
            out[((m - start) / MINUTE_NS) as usize].up = true;
        }
    }
    for (i, &(t, hw)) in health.iter().enumerate() {
        if !hw {
            continue;
        }
        let end = health.get(i + 1).map_or(window_end, |&(t2, _)| t2);
        // A minute is down if the downtime covers any part of it.
        let (a, b) = (floor(t).max(start), end.min(window_end));
        let mut m = a;
        while m < b {
            out[((m - start) / MINUTE_NS) as usize].hardware_down = true;
            m += MINUTE_NS;
        }
    }
    out
}

/// Sums minute evidence into a score.
pub fn score(minutes: &[MinuteEvidence]) -> Reliability {
    let mut r = Reliability {
        offered_minutes: minutes.len() as u64,
        ..Default::default()
    };
    for m in minutes {
        r.up_minutes += m.up as u64;
        r.hardware_down_minutes += m.hardware_down as u64;
        r.credited_minutes += (m.up && !m.hardware_down) as u64;
    }
    r.score = if r.offered_minutes == 0 {
        1.0
    } else {
        r.credited_minutes as f64 / r.offered_minutes as f64
    };
    r
}

/// A supplier's score from its GPUs' scores (minute-weighted).
pub fn supplier_score(gpus: &[Reliability]) -> Reliability {
    let mut r = Reliability::default();
    for g in gpus {
        r.offered_minutes += g.offered_minutes;
        r.up_minutes += g.up_minutes;
        r.hardware_down_minutes += g.hardware_down_minutes;
        r.credited_minutes += g.credited_minutes;
    }
    r.score = if r.offered_minutes == 0 {
        1.0
    } else {
        r.credited_minutes as f64 / r.offered_minutes as f64
    };
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_and_hardware_minutes_cost_score() {
        let day = 1_440 * MINUTE_NS;
        // Up every minute except minutes 100..160 (offline), hardware-down 600..630.
        let up: Vec<i64> = (0..1_440)
            .filter(|m| !(100..160).contains(m))
            .map(|m| m * MINUTE_NS + 5)
            .collect();
        let health = [(600 * MINUTE_NS, true), (630 * MINUTE_NS, false)];
        let ev = evidence(&up, &health, 0, 0, day);
        let r = score(&ev);
        assert_eq!(r.offered_minutes, 1_440);
        assert_eq!(r.up_minutes, 1_380);
        assert_eq!(r.hardware_down_minutes, 30);
        assert_eq!(r.credited_minutes, 1_350);
        assert!((r.score - 1_350.0 / 1_440.0).abs() < 1e-12);
        // Listed half-way through the day: only those minutes are offered.
        let late = evidence(&up, &[], 720 * MINUTE_NS, 0, day);
        assert_eq!(score(&late).offered_minutes, 720);
        let s = supplier_score(&[r, score(&late)]);
        assert_eq!(s.offered_minutes, 2_160);
        assert_eq!(s.credited_minutes, 1_350 + 720);
    }
}
