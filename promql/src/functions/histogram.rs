//! `histogram_quantile`, `histogram_quantiles` and `histogram_fraction` over classic
//! histograms (series with an `le` bucket label).

use std::collections::HashMap;

use super::{arg, fmt_float, fmt_g};
use crate::ast::Expr;
use crate::eval::{EvalError, Evaluator, VSample};
use crate::value::Labels;

/// Differences smaller than this (relative) between adjacent cumulative buckets are
/// floating-point noise and silently evened out.
const SMALL_DELTA_TOLERANCE: f64 = 1e-12;

#[derive(Clone, Copy)]
struct Bucket {
    upper: f64,
    count: f64,
}

/// Prometheus' relative float comparison (`almost.Equal`).
fn almost_equal(a: f64, b: f64, eps: f64) -> bool {
    const MIN_NORMAL: f64 = f64::MIN_POSITIVE;
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < eps * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < eps
}

/// Sorts, merges equal bounds and makes counts monotonic. Returns whether a real
/// (not rounding-noise) decrease had to be fixed.
fn prepare(buckets: &mut Vec<Bucket>) -> bool {
    buckets.sort_by(|a, b| {
        a.upper
            .partial_cmp(&b.upper)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    // Coalesce equal upper bounds.
    let mut merged: Vec<Bucket> = Vec::with_capacity(buckets.len());
    for b in buckets.iter() {
        match merged.last_mut() {
            Some(last) if last.upper == b.upper => last.count += b.count,
            _ => merged.push(*b),
        }
    }
    *buckets = merged;
    let mut forced = false;
    if buckets.is_empty() {
        return false;
    }
    let mut prev = buckets[0].count;
    for b in buckets.iter_mut().skip(1) {
        let cur = b.count;
        if cur == prev {
            continue;
        }
        if almost_equal(prev, cur, SMALL_DELTA_TOLERANCE) {
            b.count = prev;
            continue;
        }
        if cur < prev {
            b.count = prev;
            forced = true;
            continue;
        }
        prev = cur;
    }
    forced
}

/// The q-quantile of cumulative buckets, and whether monotonicity was forced.
fn bucket_quantile(q: f64, mut buckets: Vec<Bucket>) -> (f64, bool) {
    if q.is_nan() {
        return (f64::NAN, false);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, false);
    }
    if q > 1.0 {
        return (f64::INFINITY, false);
    }
    buckets.sort_by(|a, b| {
        a.upper
            .partial_cmp(&b.upper)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    if buckets.last().is_none_or(|b| b.upper != f64::INFINITY) {
        return (f64::NAN, false);
    }
    let forced = prepare(&mut buckets);
    if buckets.len() < 2 {
        return (f64::NAN, forced);
    }
    let observations = buckets[buckets.len() - 1].count;
    if observations == 0.0 {
        return (f64::NAN, forced);
    }
    let mut rank = q * observations;
    let n = buckets.len() - 1;
    let b = buckets[..n].partition_point(|x| x.count < rank);
    if b == n {
        return (buckets[n - 1].upper, forced);
    }
    if b == 0 && buckets[0].upper <= 0.0 {
        return (buckets[0].upper, forced);
    }
    let mut start = 0.0;
    let end = buckets[b].upper;
    let mut count = buckets[b].count;
    if b > 0 {
        start = buckets[b - 1].upper;
        count -= buckets[b - 1].count;
        rank -= buckets[b - 1].count;
    }
    (start + (end - start) * (rank / count), forced)
}

/// The fraction of observations between `lower` and `upper`, interpolating linearly
/// inside a bucket (the classic-bucket form of Prometheus' `histogramFraction`; the
/// lowest bucket starts at 0 when its upper bound is positive, as in
/// `histogram_quantile`).
fn bucket_fraction(lower: f64, upper: f64, mut buckets: Vec<Bucket>) -> f64 {
    buckets.sort_by(|a, b| {
        a.upper
            .partial_cmp(&b.upper)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    if buckets.last().is_none_or(|b| b.upper != f64::INFINITY) {
        return f64::NAN;
    }
    prepare(&mut buckets);
    let total = buckets[buckets.len() - 1].count;
    if total == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let (mut rank, mut lower_rank, mut upper_rank) = (0.0, 0.0, 0.0);
    let (mut lower_set, mut upper_set) = (false, false);
    for (i, b) in buckets.iter().enumerate() {
        let lo = match i {
            0 if b.upper > 0.0 => 0.0,
            0 => f64::NEG_INFINITY,
            _ => buckets[i - 1].upper,
        };
        let in_bucket = b.count - rank;
        let interpolate = |v: f64| {
            if b.upper.is_infinite() || lo.is_infinite() {
                rank
            } else {
                rank + in_bucket * (v - lo) / (b.upper - lo)
            }
        };
        if !lower_set && lo >= lower {
            lower_rank = rank;
            lower_set = true;
        }
        if !upper_set && lo >= upper {
            upper_rank = rank;
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        if !lower_set && lo < lower && b.upper > lower {
            lower_rank = interpolate(lower);
            lower_set = true;
        }
        if !upper_set && lo < upper && b.upper > upper {
            upper_rank = interpolate(upper);
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        rank = b.count;
    }
    if !lower_set || lower_rank > total {
        lower_rank = total;
    }
    if !upper_set || upper_rank > total {
        upper_rank = total;
    }
    (upper_rank - lower_rank) / total
}

/// Groups classic bucket series by their labels without `le`.
fn group_buckets(ev: &Evaluator<'_>, v: Vec<VSample>) -> Vec<(Labels, Vec<Bucket>)> {
    let mut index: HashMap<u64, usize> = HashMap::new();
    let mut groups: Vec<(Labels, Vec<Bucket>)> = Vec::new();
    let le = ["le".to_string()];
    for s in v {
        let le_val = s.labels.get("le").unwrap_or("");
        let upper = match parse_go_float(le_val) {
            Some(u) => u,
            None => {
                ev.warn(format!(
                    "bucket label \"le\" is missing or has a malformed value of {le_val:?} for metric name {:?}",
                    s.labels.metric_name().unwrap_or("")
                ));
                continue;
            }
        };
        // Like Prometheus, the metric name is not part of the group: it is dropped.
        let key = s.labels.hash_without(&le, true);
        let gi = *index.entry(key).or_insert_with(|| {
            groups.push((s.labels.without(&["le"]), Vec::new()));
            groups.len() - 1
        });
        groups[gi].1.push(Bucket { upper, count: s.v });
    }
    groups
}

fn parse_go_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        _ => s.parse::<f64>().ok(),
    }
}

fn monotonicity_info(ev: &Evaluator<'_>, labels: &Labels) {
    ev.info(format!(
        "input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name {:?}",
        labels.metric_name().unwrap_or("")
    ));
}

fn check_q(ev: &Evaluator<'_>, q: f64) {
    if !(0.0..=1.0).contains(&q) {
        ev.warn(format!(
            "quantile value should be between 0 and 1, got {}",
            fmt_g(q)
        ));
    }
}

pub(crate) fn histogram_quantile(
    ev: &Evaluator<'_>,
    args: &[Expr],
    t: i64,
) -> Result<Vec<VSample>, EvalError> {
    let f = "histogram_quantile";
    let q = ev.eval_scalar(arg(args, 0, f)?, t)?;
    let v = ev.eval_vector(arg(args, 1, f)?, t)?;
    if !v.is_empty() {
        check_q(ev, q);
    }
    let mut out = Vec::new();
    for (labels, buckets) in group_buckets(ev, v) {
        let (val, forced) = bucket_quantile(q, buckets);
        if forced {
            monotonicity_info(ev, &labels);
        }
        out.push(VSample {
            labels,
            v: val,
            drop_name: true,
        });
    }
    Ok(out)
}

/// `histogram_quantiles(v, "label", q1, q2, ...)`: one series per quantile, labelled
/// with the quantile.
pub(crate) fn histogram_quantiles(
    ev: &Evaluator<'_>,
    args: &[Expr],
    t: i64,
) -> Result<Vec<VSample>, EvalError> {
    let f = "histogram_quantiles";
    let v = ev.eval_vector(arg(args, 0, f)?, t)?;
    let label = ev.eval_string(arg(args, 1, f)?, t)?;
    let mut qs = Vec::new();
    for a in &args[2.min(args.len())..] {
        qs.push(ev.eval_scalar(a, t)?);
    }
    for &q in &qs {
        check_q(ev, q);
    }
    let mut out = Vec::new();
    for (labels, buckets) in group_buckets(ev, v) {
        for &q in &qs {
            let (val, forced) = bucket_quantile(q, buckets.clone());
            if forced {
                monotonicity_info(ev, &labels);
            }
            out.push(VSample {
                labels: labels.with(&label, &fmt_float(q)),
                v: val,
                drop_name: true,
            });
        }
    }
    Ok(out)
}

pub(crate) fn histogram_fraction(
    ev: &Evaluator<'_>,
    args: &[Expr],
    t: i64,
) -> Result<Vec<VSample>, EvalError> {
    let f = "histogram_fraction";
    let lower = ev.eval_scalar(arg(args, 0, f)?, t)?;
    let upper = ev.eval_scalar(arg(args, 1, f)?, t)?;
    let v = ev.eval_vector(arg(args, 2, f)?, t)?;
    let mut out = Vec::new();
    for (labels, buckets) in group_buckets(ev, v) {
        out.push(VSample {
            labels,
            v: bucket_fraction(lower, upper, buckets),
            drop_name: true,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(pts: &[(f64, f64)]) -> Vec<Bucket> {
        pts.iter()
            .map(|&(upper, count)| Bucket { upper, count })
            .collect()
    }

    #[test]
    fn quantile_interpolates_within_bucket() {
        let bs = b(&[(0.1, 50.0), (0.5, 100.0), (f64::INFINITY, 100.0)]);
        let (v, forced) = bucket_quantile(0.75, bs);
        assert!((v - 0.3).abs() < 1e-12 && !forced);
    }

    #[test]
    fn non_monotonic_buckets_are_fixed_and_reported() {
        let bs = b(&[(1.0, 10.0), (2.0, 5.0), (f64::INFINITY, 10.0)]);
        let (v, forced) = bucket_quantile(0.5, bs);
        assert!(forced);
        assert!((v - 0.5).abs() < 1e-12, "{v}");
    }

    #[test]
    fn fraction_inverts_quantile() {
        let bs = b(&[(0.1, 50.0), (0.5, 100.0), (f64::INFINITY, 100.0)]);
        let f = bucket_fraction(f64::NEG_INFINITY, 0.3, bs.clone());
        assert!((f - 0.75).abs() < 1e-12, "{f}");
        let f = bucket_fraction(0.1, f64::INFINITY, bs.clone());
        assert!((f - 0.5).abs() < 1e-12, "{f}");
        assert_eq!(bucket_fraction(0.3, 0.1, bs), 0.0);
    }

    #[test]
    fn missing_inf_bucket_is_nan() {
        assert!(bucket_quantile(0.5, b(&[(1.0, 1.0)])).0.is_nan());
    }
}
