//! Rollups: per-series aggregates of a table over fixed buckets (1 minute and 1 hour by
//! default), kept beside the raw rows so long ranges read a few rows per series instead of
//! every sample. The storage builds them (`rigwatch-storage` `db/rollup.rs`); the PromQL
//! source reads them where the answer is provably the raw data's (`rigwatch-query`
//! `prometheus/rollups.rs`). Both name tables and columns through this module.
//!
//! A rollup of table `gpu` at 1 m is the table `gpu@1m`. Its rows are in long form: tag
//! [`FIELD_TAG`] names the raw field, the raw table's tags follow, and [`VALUE_COLUMNS`] hold
//! the aggregates. A row's `time` is the end of its bucket, and the bucket holds the raw
//! samples with `end - resolution < t <= end`: left-open like PromQL's windows `(t - r, t]`, so
//! a window whose ends are multiples of the resolution is a whole number of buckets.

/// Separates a rollup table's raw table from its resolution (`gpu@1m`). Table names with it
/// are reserved: a write to one is refused.
pub const MARK: char = '@';

/// The tag that names the raw field a rollup row aggregates.
pub const FIELD_TAG: &str = "field";

/// Samples in the bucket, staleness markers not counted (integer).
pub const COUNT: &str = "count";
/// Sum of the samples (float).
pub const SUM: &str = "sum";
/// Smallest and largest sample, by PromQL's `min_over_time`/`max_over_time` rule: NaN only if
/// every sample is NaN.
pub const MIN: &str = "min";
pub const MAX: &str = "max";
/// The first sample and its time (ns).
pub const FIRST: &str = "first";
pub const FIRST_NS: &str = "first_ns";
/// The last sample, a staleness marker included (an instant selector sees it), and its time
/// (ns).
pub const LAST: &str = "last";
pub const LAST_NS: &str = "last_ns";
/// The counter increase within the bucket: the sum of the steps between consecutive samples,
/// a decrease (a counter reset) counting as the new value.
pub const INCREASE: &str = "increase";

/// Every value column of a rollup table, in column order, and whether it is an integer
/// (`count`, and the times in ns) rather than a float.
pub const VALUE_COLUMNS: [(&str, bool); 9] = [
    (COUNT, true),
    (SUM, false),
    (MIN, false),
    (MAX, false),
    (FIRST, false),
    (LAST, false),
    (FIRST_NS, true),
    (LAST_NS, true),
    (INCREASE, false),
];

/// The rollup table of `raw` at the resolution labelled `res` (see [`resolution_label`]).
pub fn table_name(raw: &str, res: &str) -> String {
    format!("{raw}{MARK}{res}")
}

/// The raw table and resolution label of a rollup table's name; `None` for other tables.
pub fn parse_table_name(name: &str) -> Option<(&str, &str)> {
    name.rsplit_once(MARK)
}

/// A resolution in seconds as the label table names carry: `1m`, `1h`, `90s`, `1d`.
pub fn resolution_label(secs: u64) -> String {
    match secs {
        0 => "0s".to_string(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Bit pattern of Prometheus' staleness marker (a signalling NaN): the rollup builder and the
/// PromQL evaluator must recognise the same value.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_labels_pick_the_largest_unit() {
        assert_eq!(table_name("gpu", "1m"), "gpu@1m");
        assert_eq!(parse_table_name("gpu@1m"), Some(("gpu", "1m")));
        assert_eq!(parse_table_name("a@b@1h"), Some(("a@b", "1h")));
        assert_eq!(parse_table_name("gpu"), None);
        assert_eq!(resolution_label(60), "1m");
        assert_eq!(resolution_label(3_600), "1h");
        assert_eq!(resolution_label(300), "5m");
        assert_eq!(resolution_label(90), "90s");
        assert_eq!(resolution_label(86_400 * 2), "2d");
    }
}
