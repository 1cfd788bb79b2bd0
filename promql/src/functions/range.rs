//! Functions over range vectors: `rate` and friends, `*_over_time`, regression, and
//! rigwatch's `increase_exact`, `max_gap_over_time`, `uptime_ratio`.

use super::{arg, fmt_g, kahan_inc, quantile, range_arg};
use crate::ast::Expr;
use crate::eval::{EvalError, Evaluator, VSample};
use crate::value::Sample;

/// The range-vector functions [`call_range`] evaluates.
const RANGE_FUNCTIONS: &[&str] = &[
    "rate",
    "increase",
    "delta",
    "irate",
    "idelta",
    "deriv",
    "predict_linear",
    "resets",
    "changes",
    "avg_over_time",
    "sum_over_time",
    "count_over_time",
    "min_over_time",
    "max_over_time",
    "last_over_time",
    "first_over_time",
    "present_over_time",
    "stddev_over_time",
    "stdvar_over_time",
    "quantile_over_time",
    "mad_over_time",
    "ts_of_first_over_time",
    "ts_of_last_over_time",
    "ts_of_min_over_time",
    "ts_of_max_over_time",
    "double_exponential_smoothing",
    "increase_exact",
    "max_gap_over_time",
    "uptime_ratio",
];

/// Dispatches a range-vector function; other names are an error (`info()` and the
/// native-histogram functions are not implemented).
pub(crate) fn call_range(
    ev: &Evaluator<'_>,
    func: &str,
    args: &[Expr],
    t: i64,
) -> Result<Vec<VSample>, EvalError> {
    if !RANGE_FUNCTIONS.contains(&func) {
        return Err(EvalError::Unsupported(format!(
            "function {func}() is not supported by rigwatch"
        )));
    }
    // Scalar parameters, evaluated before the range argument.
    let mut q = 0.0;
    let mut pl_dur = 0.0;
    let (mut sf, mut tf) = (0.0, 0.0);
    let matrix_arg = match func {
        "quantile_over_time" => {
            q = ev.eval_scalar(arg(args, 0, func)?, t)?;
            if !(0.0..=1.0).contains(&q) {
                ev.warn(format!(
                    "quantile value should be between 0 and 1, got {}",
                    fmt_g(q)
                ));
            }
            1
        }
        "predict_linear" => {
            pl_dur = ev.eval_scalar(arg(args, 1, func)?, t)?;
            0
        }
        "double_exponential_smoothing" => {
            sf = ev.eval_scalar(arg(args, 1, func)?, t)?;
            tf = ev.eval_scalar(arg(args, 2, func)?, t)?;
            if sf <= 0.0 || sf >= 1.0 {
                return Err(EvalError::InvalidArgument(format!(
                    "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf:.6}"
                )));
            }
            if tf <= 0.0 || tf >= 1.0 {
                return Err(EvalError::InvalidArgument(format!(
                    "invalid trend factor. Expected: 0 < tf < 1, got: {tf:.6}"
                )));
            }
            0
        }
        _ => 0,
    };
    let (series, end, range) = range_arg(ev, arg(args, matrix_arg, func)?, t)?;
    let start = end.saturating_sub(range);
    let keep_name = matches!(func, "last_over_time" | "first_over_time");
    let mut out = Vec::with_capacity(series.len());
    for s in series {
        let xs: &[Sample] = &s.samples;
        if xs.is_empty() {
            continue;
        }
        let v = match func {
            "rate" => extrapolated_rate(xs, start, end, true, true),
            "increase" => extrapolated_rate(xs, start, end, true, false),
            "delta" => extrapolated_rate(xs, start, end, false, false),
            "irate" => instant_value(xs, true),
            "idelta" => instant_value(xs, false),
            "deriv" => (xs.len() >= 2).then(|| linear_regression(xs, xs[0].t).0),
            "predict_linear" => (xs.len() >= 2).then(|| {
                let (slope, intercept) = linear_regression(xs, t);
                slope * pl_dur + intercept
            }),
            "resets" => Some(xs.windows(2).filter(|w| w[1].v < w[0].v).count() as f64),
            "changes" => Some(
                xs.windows(2)
                    .filter(|w| w[1].v != w[0].v && !(w[1].v.is_nan() && w[0].v.is_nan()))
                    .count() as f64,
            ),
            "avg_over_time" => Some(avg(xs)),
            "sum_over_time" => Some(sum(xs)),
            "count_over_time" => Some(xs.len() as f64),
            "min_over_time" => Some(
                xs.iter()
                    .skip(1)
                    .fold(xs[0].v, |m, x| if m > x.v || m.is_nan() { x.v } else { m }),
            ),
            "max_over_time" => Some(
                xs.iter()
                    .skip(1)
                    .fold(xs[0].v, |m, x| if m < x.v || m.is_nan() { x.v } else { m }),
            ),
            "last_over_time" => Some(xs[xs.len() - 1].v),
            "first_over_time" => Some(xs[0].v),
            "present_over_time" => Some(1.0),
            "stddev_over_time" => Some(variance(xs).sqrt()),
            "stdvar_over_time" => Some(variance(xs)),
            "quantile_over_time" => {
                let mut vals: Vec<f64> = xs.iter().map(|x| x.v).collect();
                Some(quantile(q, &mut vals))
            }
            "mad_over_time" if xs.iter().any(|x| x.v.is_nan()) => Some(f64::NAN),
            "mad_over_time" => {
                let mut vals: Vec<f64> = xs.iter().map(|x| x.v).collect();
                let med = quantile(0.5, &mut vals);
                let mut dev: Vec<f64> = vals.iter().map(|v| (v - med).abs()).collect();
                Some(quantile(0.5, &mut dev))
            }
            "ts_of_first_over_time" => Some(xs[0].t as f64 / 1000.0),
            "ts_of_last_over_time" => Some(xs[xs.len() - 1].t as f64 / 1000.0),
            "ts_of_min_over_time" | "ts_of_max_over_time" => {
                let max = func == "ts_of_max_over_time";
                let mut best = xs[0];
                for x in &xs[1..] {
                    let better = if max { x.v >= best.v } else { x.v <= best.v };
                    if better || best.v.is_nan() {
                        best = *x;
                    }
                }
                Some(best.t as f64 / 1000.0)
            }
            "double_exponential_smoothing" => double_exponential_smoothing(xs, sf, tf),
            "increase_exact" => increase_exact(xs),
            "max_gap_over_time" => Some(max_gap(xs, start, end)),
            "uptime_ratio" => Some(uptime_ratio(xs, start, end, ev.opts.lookback_ms)),
            other => {
                return Err(EvalError::Internal(format!(
                    "range function {other}() listed but not dispatched"
                )));
            }
        };
        if matches!(func, "rate" | "increase") {
            let name = s.labels.metric_name().unwrap_or("");
            if !name.is_empty()
                && !["_total", "_sum", "_count", "_bucket"]
                    .iter()
                    .any(|suf| name.ends_with(suf))
            {
                ev.info(format!(
                    "metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {name:?}"
                ));
            }
        }
        if let Some(v) = v {
            out.push(VSample {
                labels: s.labels,
                v,
                drop_name: if keep_name { s.drop_name } else { true },
            });
        }
    }
    Ok(out)
}

/// `rate`, `increase` and `delta` with Prometheus' extrapolation: towards each window
/// boundary by the gap to it, unless that gap exceeds 1.1 × the average sample
/// interval (then by half an interval); counters are not extrapolated below zero.
fn extrapolated_rate(
    xs: &[Sample],
    range_start: i64,
    range_end: i64,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if xs.len() < 2 {
        return None;
    }
    let first = xs[0];
    let last = xs[xs.len() - 1];
    let mut result = last.v - first.v;
    if is_counter {
        let mut prev = first.v;
        for x in &xs[1..] {
            if x.v < prev {
                result += prev;
            }
            prev = x.v;
        }
    }
    let mut to_start = (first.t - range_start) as f64 / 1000.0;
    let mut to_end = (range_end - last.t) as f64 / 1000.0;
    let sampled = (last.t - first.t) as f64 / 1000.0;
    let avg_gap = sampled / (xs.len() - 1) as f64;
    let threshold = avg_gap * 1.1;
    if to_start >= threshold {
        to_start = avg_gap / 2.0;
    }
    if is_counter && result > 0.0 && first.v >= 0.0 {
        let to_zero = sampled * (first.v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg_gap / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if is_rate {
        factor /= (range_end - range_start) as f64 / 1000.0;
    }
    Some(result * factor)
}

/// `irate` / `idelta` from the last two samples.
fn instant_value(xs: &[Sample], is_rate: bool) -> Option<f64> {
    if xs.len() < 2 {
        return None;
    }
    let (a, b) = (xs[xs.len() - 2], xs[xs.len() - 1]);
    let mut v = if is_rate && b.v < a.v { b.v } else { b.v - a.v };
    let dt = b.t - a.t;
    if dt == 0 {
        return None;
    }
    if is_rate {
        v /= dt as f64 / 1000.0;
    }
    Some(v)
}

/// Least-squares slope and intercept (at `intercept_t`), times in seconds.
fn linear_regression(xs: &[Sample], intercept_t: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut sxy, mut cxy, mut sx2, mut cx2) = (0.0, 0.0, 0.0, 0.0);
    let init = xs[0].v;
    let mut const_y = true;
    for (i, s) in xs.iter().enumerate() {
        if const_y && i > 0 && s.v != init {
            const_y = false;
        }
        n += 1.0;
        let x = (s.t - intercept_t) as f64 / 1000.0;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(s.v, sy, cy);
        (sxy, cxy) = kahan_inc(x * s.v, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if const_y {
        if init.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

fn sum(xs: &[Sample]) -> f64 {
    let (mut s, mut c) = (0.0, 0.0);
    for x in xs {
        (s, c) = kahan_inc(x.v, s, c);
    }
    if s.is_infinite() { s } else { s + c }
}

/// Mean with Kahan summation, switching to an incremental mean once the sum would
/// overflow (as Prometheus' `avg_over_time` and `avg`).
fn avg(xs: &[Sample]) -> f64 {
    let (mut sum, mut mean, mut c) = (xs[0].v, 0.0, 0.0);
    let mut count = 1.0;
    let mut incremental = false;
    for (i, x) in xs.iter().enumerate().skip(1) {
        count = (i + 1) as f64;
        if !incremental {
            let (ns, nc) = kahan_inc(x.v, sum, c);
            if !ns.is_infinite() {
                sum = ns;
                c = nc;
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            c /= count - 1.0;
        }
        if mean.is_infinite() {
            if x.v.is_infinite() && (mean > 0.0) == (x.v > 0.0) {
                continue;
            }
            if !x.v.is_infinite() && !x.v.is_nan() {
                continue;
            }
        }
        let cur = mean + c;
        (mean, c) = kahan_inc(x.v / count - cur / count, mean, c);
    }
    if incremental {
        mean + c
    } else {
        sum / count + c / count
    }
}

fn variance(xs: &[Sample]) -> f64 {
    let (mut count, mut mean, mut cm, mut aux, mut ca) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for x in xs {
        count += 1.0;
        let delta = x.v - (mean + cm);
        (mean, cm) = kahan_inc(delta / count, mean, cm);
        (aux, ca) = kahan_inc(delta * (x.v - (mean + cm)), aux, ca);
    }
    (aux + ca) / count
}

fn double_exponential_smoothing(xs: &[Sample], sf: f64, tf: f64) -> Option<f64> {
    if xs.len() < 2 {
        return None;
    }
    let (mut s0, mut s1) = (0.0, xs[0].v);
    let mut b = xs[1].v - xs[0].v;
    for (i, x) in xs.iter().enumerate().skip(1) {
        let scaled = sf * x.v;
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = scaled + y;
    }
    Some(s1)
}

/// rigwatch `increase_exact(v[r])`: the last minus the first sample value in the
/// window, adding the value before each counter reset (a decrease), with no
/// extrapolation. Needs two samples, like `increase`.
fn increase_exact(xs: &[Sample]) -> Option<f64> {
    if xs.len() < 2 {
        return None;
    }
    let mut r = xs[xs.len() - 1].v - xs[0].v;
    for w in xs.windows(2) {
        if w[1].v < w[0].v {
            r += w[0].v;
        }
    }
    Some(r)
}

/// rigwatch `max_gap_over_time(v[r])`: the longest stretch in seconds without a
/// sample in the window `(end - r, end]`, counting from the window start to the first
/// sample and from the last sample to the window end.
fn max_gap(xs: &[Sample], start: i64, end: i64) -> f64 {
    let mut gap = xs[0].t - start;
    for w in xs.windows(2) {
        gap = gap.max(w[1].t - w[0].t);
    }
    gap = gap.max(end - xs[xs.len() - 1].t);
    gap as f64 / 1000.0
}

/// rigwatch `uptime_ratio(v[r])`: the fraction of the window `(end - r, end]`
/// during which the series counts as up. The window is cut at its samples into
/// gaps: window start → first sample, between consecutive samples, last sample →
/// window end. A gap no longer than the lookback delta is up (an instant selector
/// would still see the series); a longer gap is down for its whole length. So
/// `uptime_ratio = 1 - (total length of gaps > lookback) / r`; a series scraped
/// regularly over the whole window gives exactly 1. Staleness markers are not seen,
/// as with every range function.
fn uptime_ratio(xs: &[Sample], start: i64, end: i64, lookback: i64) -> f64 {
    let range = end - start;
    if range <= 0 {
        return f64::NAN;
    }
    let mut down: i64 = 0;
    let mut prev = start;
    for x in xs {
        let gap = x.t - prev;
        if gap > lookback {
            down += gap;
        }
        prev = x.t;
    }
    let tail = end - prev;
    if tail > lookback {
        down += tail;
    }
    1.0 - down as f64 / range as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(pts: &[(i64, f64)]) -> Vec<Sample> {
        pts.iter().map(|&(t, v)| Sample { t, v }).collect()
    }

    #[test]
    fn rate_extrapolates_like_prometheus() {
        // 0..=100 by 10 every 10s, window (0, 100s]: samples 10s..100s.
        let xs = s(&(1..=10)
            .map(|i| (i * 10_000, i as f64 * 10.0))
            .collect::<Vec<_>>());
        let r = extrapolated_rate(&xs, 0, 100_000, true, true).unwrap();
        assert!((r - 1.0).abs() < 1e-12, "{r}");
        // Counter reset adds the pre-reset value.
        let xs = s(&[(10_000, 5.0), (20_000, 10.0), (30_000, 2.0)]);
        assert_eq!(increase_exact(&xs), Some(7.0));
    }

    #[test]
    fn rigwatch_gap_and_uptime() {
        let xs = s(&[(10_000, 1.0), (20_000, 1.0), (400_000, 1.0)]);
        assert_eq!(max_gap(&xs, 0, 600_000), 380.0);
        // Only the 20s → 400s gap is longer than the 300s lookback.
        let u = uptime_ratio(&xs, 0, 600_000, 300_000);
        assert!((u - (1.0 - 380.0 / 600.0)).abs() < 1e-12);
        // With a 1s lookback every gap is down.
        assert_eq!(uptime_ratio(&xs, 0, 600_000, 1_000), 0.0);
        // Regular samples over the whole window: fully up.
        let reg = s(&(1..=40).map(|i| (i * 15_000, 1.0)).collect::<Vec<_>>());
        assert_eq!(uptime_ratio(&reg, 0, 600_000, 300_000), 1.0);
    }

    #[test]
    fn regression() {
        let xs = s(&[(0, 1.0), (1000, 3.0), (2000, 5.0)]);
        let (slope, icpt) = linear_regression(&xs, 0);
        assert!((slope - 2.0).abs() < 1e-12 && (icpt - 1.0).abs() < 1e-12);
    }
}
