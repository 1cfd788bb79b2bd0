//! Function evaluation: every PromQL function of Prometheus 3 that works on floats,
//! plus rigwatch's range functions:
//!
//! * `increase_exact(v[r])`: last minus first sample in the window, adding the value
//!   before each counter reset; no extrapolation; needs two samples.
//! * `max_gap_over_time(v[r])`: the longest stretch in seconds without a sample,
//!   counting window start → first sample and last sample → window end.
//! * `uptime_ratio(v[r])`: `1 - (length of gaps longer than the lookback) / r`,
//!   where the gaps are window start → first sample, between samples, and last
//!   sample → window end (a shorter gap is up: an instant selector still sees the
//!   series); regular samples over the whole window give exactly 1.
//!
//! Not implemented: `info()` (experimental; an error says so) and everything that
//! needs native histograms.
//!
//! Functions that change a series' meaning mark the metric name for removal (it is
//! dropped at the end of evaluation, so `label_replace` can still read it);
//! `last_over_time`, `first_over_time`, `sort*`, `label_*` and `timestamp`'s input
//! selection keep it.

mod histogram;
mod range;

use crate::ast::Expr;
use crate::eval::{EvalError, Evaluator, RSeries, VSample, Val};
use crate::value::{Labels, METRIC_NAME};

/// Kahan-compensated summation step: returns the new sum and compensation.
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// Go's `math.Max`: NaN wins, and +0 beats -0.
pub(crate) fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        return f64::NAN;
    }
    if a == 0.0 && b == 0.0 {
        return if a.is_sign_negative() { b } else { a };
    }
    if a > b { a } else { b }
}

/// Go's `math.Min`: NaN wins, and -0 beats +0.
pub(crate) fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        return f64::NAN;
    }
    if a == 0.0 && b == 0.0 {
        return if a.is_sign_negative() { a } else { b };
    }
    if a < b { a } else { b }
}

/// The φ-quantile of `values` (sorted in place), interpolating between ranks as
/// Prometheus does; `NaN` for no values, `±Inf` for φ outside `[0, 1]`.
pub(crate) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    // Go's sort.Float64s puts NaN first.
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)`.
pub(crate) fn fmt_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// Go's `%g` for the values that appear in annotations.
pub(crate) fn fmt_g(v: f64) -> String {
    if v.is_finite() && v != 0.0 && (v.abs() >= 1e21 || v.abs() < 1e-4) {
        let s = format!("{v:e}");
        // Go writes e+06 / e-05: sign and at least two digits.
        match s.split_once('e') {
            Some((m, e)) => {
                let (sign, digits) = match e.strip_prefix('-') {
                    Some(d) => ('-', d),
                    None => ('+', e),
                };
                format!("{m}e{sign}{digits:0>2}")
            }
            None => s,
        }
    } else {
        fmt_float(v)
    }
}

/// Whether a label name is acceptable as a destination (Prometheus 3 accepts any
/// non-empty UTF-8 name).
fn valid_label_name(s: &str) -> bool {
    !s.is_empty()
}

/// Evaluates a call of `func` with `args` at `t`.
pub(crate) fn call<'s>(
    ev: &'s Evaluator<'_>,
    func: &str,
    args: &[Expr],
    t: i64,
) -> Result<Val<'s>, EvalError> {
    let secs = |ms: i64| ms as f64 / 1000.0;
    match func {
        "time" => return Ok(Val::Scalar(secs(t))),
        "pi" => return Ok(Val::Scalar(std::f64::consts::PI)),
        "start" => return Ok(Val::Scalar(secs(ev.start))),
        "end" => return Ok(Val::Scalar(secs(ev.end))),
        "step" => return Ok(Val::Scalar(secs(ev.interval))),
        "range" => return Ok(Val::Scalar(secs(ev.end.saturating_sub(ev.start)))),
        "min_of" | "max_of" => {
            let a = ev.eval_scalar(arg(args, 0, func)?, t)?;
            let b = ev.eval_scalar(arg(args, 1, func)?, t)?;
            return Ok(Val::Scalar(if func == "min_of" {
                go_min(a, b)
            } else {
                go_max(a, b)
            }));
        }
        "vector" => {
            let v = ev.eval_scalar(arg(args, 0, func)?, t)?;
            return Ok(Val::Vector(vec![VSample {
                labels: Labels::empty(),
                v,
                drop_name: false,
            }]));
        }
        "scalar" => {
            let v = ev.eval_vector(arg(args, 0, func)?, t)?;
            return Ok(Val::Scalar(if v.len() == 1 { v[0].v } else { f64::NAN }));
        }
        "timestamp" => {
            let a = unwrap_parens(arg(args, 0, func)?);
            let mut v = match a {
                Expr::VectorSelector(vs) => ev.eval_vector_selector(vs, t, true)?,
                other => {
                    let mut v = ev.eval_vector(other, t)?;
                    for s in &mut v {
                        s.v = secs(t);
                    }
                    v
                }
            };
            for s in &mut v {
                s.drop_name = true;
            }
            return Ok(Val::Vector(v));
        }
        "absent" => {
            let a = arg(args, 0, func)?;
            let v = ev.eval_vector(a, t)?;
            return Ok(Val::Vector(absent(v.is_empty(), a)));
        }
        "absent_over_time" => {
            let a = arg(args, 0, func)?;
            let m = ev.eval_matrix(a, t)?;
            return Ok(Val::Vector(absent(m.is_empty(), a)));
        }
        "label_replace" => return label_replace(ev, args, t).map(Val::Vector),
        "label_join" => return label_join(ev, args, t).map(Val::Vector),
        "sort" | "sort_desc" | "sort_by_label" | "sort_by_label_desc" => {
            return sort(ev, func, args, t).map(Val::Vector);
        }
        "histogram_quantile" => return histogram::histogram_quantile(ev, args, t).map(Val::Vector),
        "histogram_quantiles" => {
            return histogram::histogram_quantiles(ev, args, t).map(Val::Vector);
        }
        "histogram_fraction" => return histogram::histogram_fraction(ev, args, t).map(Val::Vector),
        "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "hour" | "minute"
        | "month" | "year" => {
            let mut v = match args.first() {
                Some(a) => ev.eval_vector(a, t)?,
                None => vec![VSample {
                    labels: Labels::empty(),
                    v: secs(t),
                    drop_name: false,
                }],
            };
            for s in &mut v {
                s.v = date_part(func, s.v);
                s.drop_name = true;
            }
            return Ok(Val::Vector(v));
        }
        _ => {}
    }
    if let Some(f) = simple_math(func) {
        let mut v = ev.eval_vector(arg(args, 0, func)?, t)?;
        for s in &mut v {
            s.v = f(s.v);
            s.drop_name = true;
        }
        return Ok(Val::Vector(v));
    }
    match func {
        "round" => {
            let mut v = ev.eval_vector(arg(args, 0, func)?, t)?;
            let to = match args.get(1) {
                Some(a) => ev.eval_scalar(a, t)?,
                None => 1.0,
            };
            let inv = 1.0 / to;
            for s in &mut v {
                s.v = (s.v * inv + 0.5).floor() / inv;
                s.drop_name = true;
            }
            Ok(Val::Vector(v))
        }
        "clamp" | "clamp_min" | "clamp_max" => {
            let mut v = ev.eval_vector(arg(args, 0, func)?, t)?;
            let p1 = ev.eval_scalar(arg(args, 1, func)?, t)?;
            let (lo, hi) = match func {
                "clamp" => (p1, ev.eval_scalar(arg(args, 2, func)?, t)?),
                "clamp_min" => (p1, f64::NAN),
                _ => (f64::NAN, p1),
            };
            if func == "clamp" && hi < lo {
                return Ok(Val::Vector(vec![]));
            }
            for s in &mut v {
                s.v = match func {
                    "clamp" => go_max(lo, go_min(hi, s.v)),
                    "clamp_min" => go_max(lo, s.v),
                    _ => go_min(hi, s.v),
                };
                s.drop_name = true;
            }
            Ok(Val::Vector(v))
        }
        _ => range::call_range(ev, func, args, t).map(Val::Vector),
    }
}

pub(crate) fn arg<'e>(args: &'e [Expr], i: usize, func: &str) -> Result<&'e Expr, EvalError> {
    args.get(i).ok_or_else(|| {
        EvalError::InvalidArgument(format!("{func}() is missing argument {}", i + 1))
    })
}

pub(crate) fn unwrap_parens(mut e: &Expr) -> &Expr {
    while let Expr::Paren(x) = e {
        e = x;
    }
    e
}

fn simple_math(func: &str) -> Option<fn(f64) -> f64> {
    Some(match func {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sqrt" => f64::sqrt,
        "sgn" => |v: f64| {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                v
            }
        },
        "sin" => f64::sin,
        "cos" => f64::cos,
        "tan" => f64::tan,
        "asin" => f64::asin,
        "acos" => f64::acos,
        "atan" => f64::atan,
        "sinh" => f64::sinh,
        "cosh" => f64::cosh,
        "tanh" => f64::tanh,
        "asinh" => f64::asinh,
        "acosh" => f64::acosh,
        "atanh" => f64::atanh,
        "deg" => |v: f64| v * 180.0 / std::f64::consts::PI,
        "rad" => |v: f64| v * std::f64::consts::PI / 180.0,
        _ => return None,
    })
}

/// `absent`/`absent_over_time`: `{eq-matcher labels} 1` when the input is empty.
fn absent(empty: bool, a: &Expr) -> Vec<VSample> {
    if !empty {
        return vec![];
    }
    let matchers = match unwrap_parens(a) {
        Expr::VectorSelector(vs) => Some(&vs.matchers),
        Expr::MatrixSelector { selector, .. } => Some(&selector.matchers),
        _ => None,
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    if let Some(ms) = matchers {
        let mut dup: Vec<&str> = Vec::new();
        for m in ms {
            if m.name == METRIC_NAME {
                continue;
            }
            if m.op != crate::ast::MatchOp::Equal || pairs.iter().any(|(k, _)| *k == m.name) {
                dup.push(&m.name);
                continue;
            }
            pairs.push((m.name.clone(), m.value.clone()));
        }
        pairs.retain(|(k, _)| !dup.contains(&k.as_str()));
    }
    vec![VSample {
        labels: Labels::from_pairs(pairs),
        v: 1.0,
        drop_name: false,
    }]
}

/// Rejects results where two samples end with the same labels.
fn check_unique(v: &[VSample]) -> Result<(), EvalError> {
    let mut seen = std::collections::HashSet::with_capacity(v.len());
    for s in v {
        let l = if s.drop_name {
            s.labels.without_name()
        } else {
            s.labels.clone()
        };
        if !seen.insert(l) {
            return Err(EvalError::DuplicateLabelset);
        }
    }
    Ok(())
}

fn label_replace(ev: &Evaluator<'_>, args: &[Expr], t: i64) -> Result<Vec<VSample>, EvalError> {
    let f = "label_replace";
    let dst = ev.eval_string(arg(args, 1, f)?, t)?;
    let repl = ev.eval_string(arg(args, 2, f)?, t)?;
    let src = ev.eval_string(arg(args, 3, f)?, t)?;
    let re_src = ev.eval_string(arg(args, 4, f)?, t)?;
    let re =
        regex::Regex::new(&format!("^(?s:{re_src})$")).map_err(|e| EvalError::InvalidRegex {
            function: "label_replace",
            message: format!("{re_src}: {e}"),
        })?;
    if !valid_label_name(&dst) {
        return Err(EvalError::InvalidLabelName {
            what: "destination label",
            name: dst,
        });
    }
    let mut v = ev.eval_vector(arg(args, 0, f)?, t)?;
    let mut buf = String::new();
    for s in &mut v {
        let sv = s.labels.get(&src).unwrap_or("");
        if let Some(caps) = re.captures(sv) {
            buf.clear();
            caps.expand(&repl, &mut buf);
            s.labels = s.labels.with(&dst, &buf);
            if dst == METRIC_NAME {
                s.drop_name = false;
            }
        }
    }
    check_unique(&v)?;
    Ok(v)
}

fn label_join(ev: &Evaluator<'_>, args: &[Expr], t: i64) -> Result<Vec<VSample>, EvalError> {
    let f = "label_join";
    let dst = ev.eval_string(arg(args, 1, f)?, t)?;
    let sep = ev.eval_string(arg(args, 2, f)?, t)?;
    let mut srcs = Vec::new();
    for a in &args[3.min(args.len())..] {
        srcs.push(ev.eval_string(a, t)?);
    }
    if !valid_label_name(&dst) {
        return Err(EvalError::InvalidLabelName {
            what: "destination label",
            name: dst,
        });
    }
    let mut v = ev.eval_vector(arg(args, 0, f)?, t)?;
    let mut buf = String::new();
    for s in &mut v {
        buf.clear();
        for (i, src) in srcs.iter().enumerate() {
            if i > 0 {
                buf.push_str(&sep);
            }
            buf.push_str(s.labels.get(src).unwrap_or(""));
        }
        s.labels = s.labels.with(&dst, &buf);
        if dst == METRIC_NAME {
            s.drop_name = false;
        }
    }
    check_unique(&v)?;
    Ok(v)
}

/// Natural order: digit runs compare numerically.
fn natural_less(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (ab, bb) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < ab.len() && j < bb.len() {
        if ab[i].is_ascii_digit() && bb[j].is_ascii_digit() {
            let si = i;
            while i < ab.len() && ab[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < bb.len() && bb[j].is_ascii_digit() {
                j += 1;
            }
            let na = a[si..i].trim_start_matches('0');
            let nb = b[sj..j].trim_start_matches('0');
            let o = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
            if o != Ordering::Equal {
                return o;
            }
        } else {
            if ab[i] != bb[j] {
                return ab[i].cmp(&bb[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (ab.len() - i).cmp(&(bb.len() - j))
}

fn sort(ev: &Evaluator<'_>, func: &str, args: &[Expr], t: i64) -> Result<Vec<VSample>, EvalError> {
    use std::cmp::Ordering;
    let mut v = ev.eval_vector(arg(args, 0, func)?, t)?;
    if ev.start != ev.end {
        ev.warn(
            "sort is ineffective for range queries since results are always ordered by labels"
                .into(),
        );
        return Ok(v);
    }
    match func {
        "sort" | "sort_desc" => {
            let desc = func == "sort_desc";
            v.sort_by(|a, b| match (a.v.is_nan(), b.v.is_nan()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                _ => {
                    let o = a.v.partial_cmp(&b.v).unwrap_or(Ordering::Equal);
                    if desc { o.reverse() } else { o }
                }
            });
        }
        _ => {
            let desc = func == "sort_by_label_desc";
            let mut names = Vec::new();
            for a in &args[1..] {
                names.push(ev.eval_string(a, t)?);
            }
            v.sort_by(|a, b| {
                let mut o = Ordering::Equal;
                for n in &names {
                    let (x, y) = (a.labels.get(n).unwrap_or(""), b.labels.get(n).unwrap_or(""));
                    if x != y {
                        o = natural_less(x, y);
                        break;
                    }
                }
                if o == Ordering::Equal {
                    o = a.labels.cmp(&b.labels);
                }
                if desc { o.reverse() } else { o }
            });
        }
    }
    Ok(v)
}

/// Civil date from days since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ => {
            if is_leap(y) {
                29
            } else {
                28
            }
        }
    }
}

/// `day_of_month` and friends on a Unix time in seconds (UTC).
fn date_part(func: &str, v: f64) -> f64 {
    if !v.is_finite() {
        return f64::NAN;
    }
    let secs = v as i64;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    match func {
        "day_of_month" => d as f64,
        "day_of_week" => (days + 4).rem_euclid(7) as f64,
        "day_of_year" => {
            let mut n = d;
            for mm in 1..m {
                n += days_in(y, mm);
            }
            n as f64
        }
        "days_in_month" => days_in(y, m) as f64,
        "hour" => (sod / 3600) as f64,
        "minute" => ((sod % 3600) / 60) as f64,
        "month" => m as f64,
        "year" => y as f64,
        _ => f64::NAN,
    }
}

/// The range vector argument of a range function with its window: series, the
/// window's end (reference time) and its length.
pub(crate) fn range_arg<'s>(
    ev: &'s Evaluator<'_>,
    a: &Expr,
    t: i64,
) -> Result<(Vec<RSeries<'s>>, i64, i64), EvalError> {
    let (r, range) = match unwrap_parens(a) {
        Expr::MatrixSelector { selector, range_ms } => {
            (ev.ref_time(selector.at, selector.offset_ms, t), *range_ms)
        }
        Expr::Subquery(sq) => (ev.ref_time(sq.at, sq.offset_ms, t), sq.range_ms),
        other => {
            return Err(EvalError::Unsupported(format!(
                "expected a range vector argument, got {other}"
            )));
        }
    };
    Ok((ev.eval_matrix(a, t)?, r, range))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        // 2024-02-29T13:45:00Z
        let t = 1_709_214_300.0;
        assert_eq!(date_part("year", t), 2024.0);
        assert_eq!(date_part("month", t), 2.0);
        assert_eq!(date_part("day_of_month", t), 29.0);
        assert_eq!(date_part("days_in_month", t), 29.0);
        assert_eq!(date_part("day_of_year", t), 60.0);
        assert_eq!(date_part("day_of_week", t), 4.0);
        assert_eq!(date_part("hour", t), 13.0);
        assert_eq!(date_part("minute", t), 45.0);
    }

    #[test]
    fn quantile_interpolates() {
        let mut v = vec![4.0, 1.0, 2.0, 3.0];
        assert_eq!(quantile(0.5, &mut v), 2.5);
        assert_eq!(quantile(1.5, &mut v), f64::INFINITY);
        assert!(quantile(0.5, &mut []).is_nan());
    }

    #[test]
    fn natural_order() {
        use std::cmp::Ordering;
        assert_eq!(natural_less("a2", "a10"), Ordering::Less);
        assert_eq!(natural_less("b", "a10"), Ordering::Greater);
    }

    #[test]
    fn go_minmax_nan() {
        assert!(go_max(f64::NAN, 1.0).is_nan());
        assert_eq!(go_min(1.0, 2.0), 1.0);
        assert_eq!(fmt_g(f64::NAN), "NaN");
        assert_eq!(fmt_g(1.1), "1.1");
    }
}
