//! Prometheus text exposition format (version 0.0.4), parsed with nom into a [`WriteBatch`].
//!
//! ```text
//! # HELP gpu_temp_celsius GPU temperature.
//! # TYPE gpu_temp_celsius gauge
//! gpu_temp_celsius{gpu_uuid="GPU-1",model="H100 \"SXM\""} 61.5 1700000000000
//! ```
//!
//! Each sample becomes one row: table = metric name, one F64 field `value`, the labels as
//! tags, time = the timestamp in milliseconds × 1,000,000 (or the caller's default). This is
//! the mapping of the data model: a sample named `m` reads back as `m`.
//!
//! * Comment lines (`# HELP`, `# TYPE`, anything else after `#`) and blank lines are
//!   skipped; CRLF is accepted; spaces and tabs may surround tokens.
//! * Label values are double-quoted with the escapes `\\`, `\"` and `\n`; any other escape
//!   is an error. A label with an empty value is dropped (Prometheus treats it as absent).
//! * Values use Go's float syntax: decimal and hexadecimal (`0x1p-3`) floats, `NaN`, `Inf`,
//!   `+Inf`, `-Inf` (case-insensitive, `Infinity` too). Out-of-range values are rejected.
//! * The metric name stands before the braces. If none does, a `__name__="..."` label (or,
//!   as in Prometheus 3, a bare quoted string inside the braces) is the name; giving the name
//!   twice is an error. Label names may be quoted too (`{"my.label"="x"}`).
//! * OpenMetrics extras (exemplars, `# EOF`) are not part of this format.

use nom::Parser;
use nom::bytes::complete::{take_till1, take_while};
use nom::character::complete::satisfy;
use nom::combinator::{opt, recognize};
use rigwatch_storage::batch::{FieldValue, WriteBatch};

use crate::error::{
    After, Expected, LineError, LineErrorKind, Located, PResult, each_line, expected, fail,
};

/// The field every sample is stored in.
pub const VALUE_FIELD: &str = "value";

/// Parses `body` into `batch`, one row per sample, and returns the rejected lines.
///
/// Samples without a timestamp get `default_time_ms` (saturated to the `i64` nanosecond
/// range).
///
/// ```
/// use rigwatch_ingest::prom_text::parse;
/// use rigwatch_storage::batch::{FieldValue, WriteBatch};
///
/// let mut batch = WriteBatch::default();
/// let body = "# TYPE up gauge\nup{job=\"agent\"} 1 1700000000000\nup{job=} 1\n";
/// let errors = parse(body, 0, &mut batch);
/// let row = batch.get(0).unwrap();
/// assert_eq!((row.table(), row.time()), ("up", 1_700_000_000_000_000_000));
/// assert_eq!(row.fields().next(), Some(("value", FieldValue::F64(1.0))));
/// assert_eq!(
///     errors[0].to_string(),
///     "line 3, column 8 (byte 55): expected a double-quoted label value after label name \"job\""
/// );
/// ```
pub fn parse(body: &str, default_time_ms: i64, batch: &mut WriteBatch) -> Vec<LineError> {
    let mut cx = Cx {
        default_time_ns: default_time_ms.saturating_mul(1_000_000),
        scratch: String::new(),
        labels: Vec::new(),
    };
    each_line(body, |line, line_no| sample(line, line_no, &mut cx, batch))
}

/// A piece of text: a slice of the body, or a range of the scratch buffer (unescaped).
#[derive(Clone, Copy, Debug)]
enum Text<'a> {
    Body(&'a str),
    Scratch(usize, usize),
}

impl<'a> Text<'a> {
    fn get<'s>(self, scratch: &'s str) -> &'s str
    where
        'a: 's,
    {
        match self {
            Text::Body(s) => s,
            Text::Scratch(start, end) => &scratch[start..end],
        }
    }
}

/// Parser state reused over all lines, so that a line allocates nothing once it has grown.
struct Cx<'a> {
    default_time_ns: i64,
    /// Unescaped strings of the current line.
    scratch: String,
    /// Labels of the current line (the row can only start once the name is known).
    labels: Vec<(Text<'a>, Text<'a>)>,
}

/// Spaces and tabs. (Not nom's `space0`: in nom 8.0.0 it returns an empty remainder that
/// points at the *start* of an all-blank input, which would corrupt error offsets.)
fn ws(input: &str) -> PResult<'_, &str> {
    let rest = input.trim_start_matches([' ', '\t']);
    Ok((rest, &input[..input.len() - rest.len()]))
}

fn metric_name(input: &str) -> PResult<'_, &str> {
    recognize((
        satisfy(|c| c.is_ascii_alphabetic() || c == '_' || c == ':'),
        take_while(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
    ))
    .parse(input)
}

fn label_name(input: &str) -> PResult<'_, &str> {
    recognize((
        satisfy(|c| c.is_ascii_alphabetic() || c == '_'),
        take_while(|c: char| c.is_ascii_alphanumeric() || c == '_'),
    ))
    .parse(input)
}

/// A double-quoted string with the escapes `\\`, `\"` and `\n`. `input` starts with `"`.
fn quoted<'a>(input: &'a str, scratch: &mut String) -> PResult<'a, Text<'a>> {
    let body = &input[1..];
    let special = |b: &u8| *b == b'"' || *b == b'\\';
    let Some(p) = body.as_bytes().iter().position(special) else {
        return fail(input, LineErrorKind::UnterminatedString);
    };
    if body.as_bytes()[p] == b'"' {
        return Ok((&body[p + 1..], Text::Body(&body[..p])));
    }
    let start = scratch.len();
    let mut rest = body;
    loop {
        let Some(p) = rest.as_bytes().iter().position(special) else {
            return fail(input, LineErrorKind::UnterminatedString);
        };
        scratch.push_str(&rest[..p]);
        if rest.as_bytes()[p] == b'"' {
            return Ok((&rest[p + 1..], Text::Scratch(start, scratch.len())));
        }
        let escape = match rest[p + 1..].chars().next() {
            Some('\\') => '\\',
            Some('"') => '"',
            Some('n') => '\n',
            Some(escape) => return fail(&rest[p..], LineErrorKind::InvalidEscape { escape }),
            None => return fail(input, LineErrorKind::UnterminatedString),
        };
        scratch.push(escape);
        rest = &rest[p + 2..];
    }
}

/// One sample line (without line ending and leading whitespace) into one row.
fn sample<'a>(
    input: &'a str,
    line_no: u32,
    cx: &mut Cx<'a>,
    batch: &mut WriteBatch,
) -> PResult<'a, ()> {
    cx.scratch.clear();
    cx.labels.clear();
    let (r, name) = opt(metric_name).parse(input)?;
    let mut name = name.map(Text::Body);
    let (r, space) = ws(r)?;
    let (r, after) = if r.starts_with('{') {
        (labels(r, &mut name, cx)?.0, After::Labels)
    } else if name.is_none() {
        return expected(input, Expected::MetricName, After::Nothing);
    } else if space.is_empty() && !r.is_empty() {
        return expected(r, Expected::SampleValue, After::MetricName);
    } else {
        (r, After::MetricName)
    };
    let Some(name) = name else {
        return fail(input, LineErrorKind::MissingMetricName);
    };

    let (r, _) = ws(r)?;
    let Ok((r, text)) = take_till1::<_, _, ()>(|c: char| c == ' ' || c == '\t').parse(r) else {
        return expected(r, Expected::SampleValue, after);
    };
    let Some(value) = parse_go_float(text) else {
        return fail(
            text,
            LineErrorKind::InvalidSampleValue { text: text.into() },
        );
    };

    let (r, _) = ws(r)?;
    let mut time = cx.default_time_ns;
    let r = if let Ok((rest, text)) =
        take_till1::<_, _, ()>(|c: char| c == ' ' || c == '\t').parse(r)
    {
        time = timestamp_ms(text)?;
        let (rest, _) = ws(rest)?;
        if !rest.is_empty() {
            return expected(rest, Expected::EndOfLine, After::Timestamp);
        }
        rest
    } else {
        r
    };
    debug_assert!(r.is_empty());

    let scratch = cx.scratch.as_str();
    let mut row = batch.row(name.get(scratch), time);
    for (k, v) in &cx.labels {
        let v = v.get(scratch);
        if !v.is_empty() {
            row.tag(k.get(scratch), v);
        }
    }
    row.field(VALUE_FIELD, FieldValue::F64(value));
    match row.finish(line_no) {
        Ok(()) => Ok((r, ())),
        Err(e) => fail(input, LineErrorKind::Row(e)),
    }
}

/// `{name="value",...}`; labels go to `cx.labels`, a `__name__` label or bare quoted string
/// to `name`.
fn labels<'a>(input: &'a str, name: &mut Option<Text<'a>>, cx: &mut Cx<'a>) -> PResult<'a, ()> {
    let (mut r, _) = ws(&input[1..])?;
    let mut after = After::Brace;
    loop {
        if let Some(rest) = r.strip_prefix('}') {
            return Ok((rest, ()));
        }
        let item = r;
        let quoted_name = r.starts_with('"');
        let (rest, label) = if quoted_name {
            quoted(r, &mut cx.scratch)?
        } else {
            match label_name(r) {
                Ok((rest, n)) => (rest, Text::Body(n)),
                Err(_) => return expected(r, Expected::LabelName, after),
            }
        };
        let (rest, _) = ws(rest)?;
        let label_str = || label.get(&cx.scratch).to_owned();
        if let Some(rest) = rest.strip_prefix('=') {
            let (rest, _) = ws(rest)?;
            if !rest.starts_with('"') {
                return expected(rest, Expected::LabelValue, After::LabelName(label_str()));
            }
            let (rest, value) = quoted(rest, &mut cx.scratch)?;
            if label.get(&cx.scratch) == "__name__" {
                if name.is_some() {
                    return fail(item, LineErrorKind::MetricNameTwice);
                }
                *name = Some(value);
            } else {
                cx.labels.push((label, value));
            }
            r = rest;
        } else if quoted_name {
            // Prometheus 3: a bare quoted string in the braces is the metric name.
            if name.is_some() {
                return fail(item, LineErrorKind::MetricNameTwice);
            }
            *name = Some(label);
            r = rest;
        } else {
            return expected(rest, Expected::Equals, After::LabelName(label_str()));
        }

        let (rest, _) = ws(r)?;
        if let Some(rest) = rest.strip_prefix(',') {
            r = ws(rest)?.0;
            after = After::Comma;
        } else if rest.starts_with('}') {
            r = rest;
        } else {
            let label = label.get(&cx.scratch).to_owned();
            return expected(rest, Expected::CommaOrBrace, After::LabelValue(label));
        }
    }
}

/// An integer millisecond timestamp, in nanoseconds.
fn timestamp_ms(text: &str) -> Result<i64, nom::Err<Located<'_>>> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let bad = || {
        nom::Err::Failure(Located::new(
            text,
            LineErrorKind::BadTimestamp { text: text.into() },
        ))
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let value: i64 = text.parse().map_err(|_| bad())?;
    value.checked_mul(1_000_000).ok_or_else(|| {
        nom::Err::Failure(Located::new(
            text,
            LineErrorKind::TimestampOverflow { value, unit: "ms" },
        ))
    })
}

/// Parses a float as Go's `strconv.ParseFloat` does (decimal or hexadecimal with `p`
/// exponent, `Inf`/`Infinity`/`NaN` in any case, optional sign); `None` if invalid or out of
/// range.
pub fn parse_go_float(text: &str) -> Option<f64> {
    let (negative, unsigned) = match text.as_bytes().first()? {
        b'+' => (false, &text[1..]),
        b'-' => (true, &text[1..]),
        _ => (false, text),
    };
    let value = if unsigned.eq_ignore_ascii_case("inf") || unsigned.eq_ignore_ascii_case("infinity")
    {
        f64::INFINITY
    } else if unsigned.eq_ignore_ascii_case("nan") {
        f64::NAN
    } else {
        let value = if let Some(hex) = unsigned
            .strip_prefix("0x")
            .or_else(|| unsigned.strip_prefix("0X"))
        {
            parse_hex_float(hex)?
        } else {
            // Rust also takes `inf`/`nan` here and a second sign; only digits and '.' may lead.
            match unsigned.as_bytes().first()? {
                b'0'..=b'9' | b'.' => unsigned.parse::<f64>().ok()?,
                _ => return None,
            }
        };
        if value.is_infinite() {
            return None;
        }
        value
    };
    Some(if negative { -value } else { value })
}

/// The part of a Go hexadecimal float after `0x`: hex digits with an optional `.`,
/// underscores between digits, then a mandatory binary exponent `p[+-]digits`.
fn parse_hex_float(text: &str) -> Option<f64> {
    let (mantissa, exponent) = text.split_once(['p', 'P'])?;
    let (exp_negative, exp_digits) = match exponent.as_bytes().first()? {
        b'+' => (false, &exponent[1..]),
        b'-' => (true, &exponent[1..]),
        _ => (false, exponent),
    };
    if exp_digits.is_empty() || !exp_digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let exp = exp_digits.bytes().fold(0i32, |acc, b| {
        acc.saturating_mul(10).saturating_add(i32::from(b - b'0'))
    });
    let exp = if exp_negative { -exp } else { exp };

    let (mut bits, mut shift, mut sticky) = (0u64, 0i32, false);
    let (mut dot, mut any_digit) = (false, false);
    let bytes = mantissa.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'_' {
            // Go: an underscore separates two digits, or the `0x` prefix and a digit.
            let prev_ok = i == 0 || bytes[i - 1].is_ascii_hexdigit();
            let next_ok = bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit);
            if !prev_ok || !next_ok {
                return None;
            }
            continue;
        }
        if b == b'.' {
            if dot {
                return None;
            }
            dot = true;
            continue;
        }
        let digit = u64::from(char::from(b).to_digit(16)?);
        any_digit = true;
        if bits >> 60 == 0 {
            bits = bits << 4 | digit;
            if dot {
                shift -= 4;
            }
        } else {
            // More digits than fit: keep their weight, remember that they were not zero.
            if !dot {
                shift += 4;
            }
            sticky |= digit != 0;
        }
    }
    if !any_digit {
        return None;
    }
    let bits = if sticky { bits | 1 } else { bits };
    Some(ldexp(bits as f64, exp.saturating_add(shift)))
}

/// `x * 2^exp` without intermediate overflow of the power.
fn ldexp(mut x: f64, mut exp: i32) -> f64 {
    while exp > 1000 && x.is_finite() && x != 0.0 {
        x *= 2f64.powi(1000);
        exp -= 1000;
    }
    while exp < -1000 && x != 0.0 && x.is_finite() {
        x *= 2f64.powi(-1000);
        exp += 1000;
    }
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    x * 2f64.powi(exp)
}

#[cfg(test)]
mod tests;
