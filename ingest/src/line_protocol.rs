//! InfluxDB line protocol (v2), parsed with nom straight into a [`WriteBatch`].
//!
//! ```text
//! measurement[,tag=value...] field=value[,field=value...] [timestamp]
//! gpu,gpu_uuid=GPU-1,model=H100\ SXM utilization=97,temp=61i,ok=t,note="fan \"2\"" 1700000000
//! ```
//!
//! * Escapes: in the measurement `\,` `\ ` and `\\`; in tag keys, tag values and field keys
//!   also `\=`. A backslash before any other character is kept literally (`C:\x` stays
//!   `C:\x`). String field values are double-quoted and escape `\"` and `\\`; a string cannot
//!   span lines (the protocol forbids raw newlines in values).
//! * Field values: floats (`1`, `-1.5`, `1e3`: a plain integer is a float), integers `12i`,
//!   unsigned `12u`, booleans `t T true True TRUE f F false False FALSE`, strings. NaN and
//!   infinities are not accepted.
//! * The timestamp is an optional integer in the request's [`Precision`]; a missing one
//!   takes the caller's default.
//! * Blank lines and lines starting with `#` are skipped, CRLF is accepted, leading spaces
//!   and tabs are ignored, as are spaces at the end of a line.
//!
//! Parsing is zero-copy: tokens are slices of the body and are copied only into the batch
//! arena. A token containing a backslash is unescaped into a scratch buffer that is reused for
//! the whole body, so the happy path allocates nothing per line.
//!
//! Every rejected line yields a [`LineError`]; the lines around it are kept.

use std::str::FromStr;

use rigwatch_storage::batch::{FieldType, FieldValue, WriteBatch};

use crate::error::{
    After, Expected, IngestError, LineError, LineErrorKind, Located, PResult, each_line, expected,
    fail,
};

/// The unit of the timestamps in a request (the `precision` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// Nanoseconds (`ns`, or `n` as in InfluxDB v1).
    #[default]
    Ns,
    /// Microseconds (`us`, or `u`/`µ`).
    Us,
    /// Milliseconds (`ms`).
    Ms,
    /// Seconds (`s`).
    S,
    /// Minutes (`m`, InfluxDB v1 only).
    M,
    /// Hours (`h`, InfluxDB v1 only).
    H,
}

impl Precision {
    /// Nanoseconds per unit.
    pub fn nanos(self) -> i64 {
        match self {
            Precision::Ns => 1,
            Precision::Us => 1_000,
            Precision::Ms => 1_000_000,
            Precision::S => 1_000_000_000,
            Precision::M => 60_000_000_000,
            Precision::H => 3_600_000_000_000,
        }
    }

    /// The canonical short name (`ns`, `us`, `ms`, `s`, `m`, `h`).
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Ns => "ns",
            Precision::Us => "us",
            Precision::Ms => "ms",
            Precision::S => "s",
            Precision::M => "m",
            Precision::H => "h",
        }
    }

    /// Converts a timestamp in this unit to nanoseconds; `None` on overflow.
    pub fn to_nanos(self, value: i64) -> Option<i64> {
        value.checked_mul(self.nanos())
    }
}

impl FromStr for Precision {
    type Err = IngestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "ns" | "n" => Precision::Ns,
            "us" | "u" | "µ" | "μ" | "µs" | "μs" => Precision::Us,
            "ms" => Precision::Ms,
            "s" => Precision::S,
            "m" => Precision::M,
            "h" => Precision::H,
            _ => {
                return Err(IngestError::UnknownPrecision {
                    value: s.to_owned(),
                });
            }
        })
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses `body` into `batch`, one row per line, and returns the rejected lines (in order).
///
/// Rows without a timestamp get `default_time_ns`.
///
/// ```
/// use rigwatch_ingest::line_protocol::{parse, Precision};
/// use rigwatch_storage::batch::{FieldValue, WriteBatch};
///
/// let mut batch = WriteBatch::default();
/// let body = "gpu,gpu_uuid=GPU-1 utilization=97,temp=61i 1700000000\ngpu utilization\n";
/// let errors = parse(body, Precision::S, 0, &mut batch);
/// assert_eq!(batch.len(), 1);
/// let row = batch.get(0).unwrap();
/// assert_eq!(row.time(), 1_700_000_000_000_000_000);
/// assert_eq!(row.fields().nth(1), Some(("temp", FieldValue::I64(61))));
/// assert_eq!(
///     errors[0].to_string(),
///     "line 2, column 16 (byte 69): expected '=' after field key \"utilization\""
/// );
/// ```
pub fn parse(
    body: &str,
    precision: Precision,
    default_time_ns: i64,
    batch: &mut WriteBatch,
) -> Vec<LineError> {
    let mut cx = Cx {
        precision,
        default_time_ns,
        a: String::new(),
        b: String::new(),
    };
    each_line(body, |line, line_no| {
        parse_line(line, line_no, &mut cx, batch)
    })
}

/// Per-body parser state: settings and two reusable unescape buffers.
struct Cx {
    precision: Precision,
    default_time_ns: i64,
    a: String,
    b: String,
}

/// Characters a backslash escapes in a measurement.
const MEASUREMENT_ESCAPES: &[u8] = b", \\";
/// Characters a backslash escapes in tag keys, tag values and field keys.
const KEY_ESCAPES: &[u8] = b",= \\";
/// Characters a backslash escapes in string field values.
const STRING_ESCAPES: &[u8] = b"\"\\";

/// A token as it appears in the body, and whether it contains a backslash.
#[derive(Clone, Copy, Debug)]
struct Token<'a> {
    raw: &'a str,
    escaped: bool,
}

/// Takes bytes up to the first one for which `stop` holds that is not preceded by a
/// backslash. A backslash always consumes the byte after it (so an escaped stop byte is part
/// of the token); whether that pair means the escaped character or both characters is up to
/// [`unescape`]. Never fails; the token may be empty.
#[inline(always)]
fn escaped_until<'a>(input: &'a str, stop: impl Fn(u8) -> bool) -> PResult<'a, Token<'a>> {
    let bytes = input.as_bytes();
    let mut i = 0;
    let mut escaped = false;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\\' {
            escaped = true;
            i += 2;
        } else if stop(b) {
            break;
        } else {
            i += 1;
        }
    }
    // `i` is at an ASCII stop byte or past the end, so the split is on a char boundary.
    let i = i.min(bytes.len());
    let (raw, rest) = input.split_at(i);
    Ok((rest, Token { raw, escaped }))
}

/// The text of `token`: the body slice itself, or its unescaped form built in `scratch`.
#[inline]
fn unescape<'s>(token: Token<'s>, escapes: &[u8], scratch: &'s mut String) -> &'s str {
    if !token.escaped {
        return token.raw;
    }
    scratch.clear();
    let mut rest = token.raw;
    while let Some(p) = rest.find('\\') {
        scratch.push_str(&rest[..p]);
        let after = &rest[p + 1..];
        match after.as_bytes().first() {
            Some(&c) if escapes.contains(&c) => {
                scratch.push(c as char);
                rest = &after[1..];
            }
            _ => {
                scratch.push('\\');
                rest = after;
            }
        }
    }
    scratch.push_str(rest);
    scratch
}

fn measurement(input: &str) -> PResult<'_, Token<'_>> {
    let (rest, token) = escaped_until(input, |b| b == b',' || b == b' ')?;
    if token.raw.is_empty() {
        return expected(input, Expected::MeasurementName, After::Nothing);
    }
    Ok((rest, token))
}

/// A tag key or field key: up to `=`, `,` or space.
#[inline]
fn key(input: &str) -> PResult<'_, Token<'_>> {
    escaped_until(input, |b| b == b'=' || b == b',' || b == b' ')
}

/// A tag value: up to `,` or space (a bare `=` is part of the value).
#[inline]
fn tag_value(input: &str) -> PResult<'_, Token<'_>> {
    escaped_until(input, |b| b == b',' || b == b' ')
}

/// One line (without its line ending and leading whitespace) into one row.
fn parse_line<'a>(
    input: &'a str,
    line_no: u32,
    cx: &mut Cx,
    batch: &mut WriteBatch,
) -> PResult<'a, ()> {
    let (mut rest, m) = measurement(input)?;
    let table = unescape(m, MEASUREMENT_ESCAPES, &mut cx.a);
    let mut row = batch.row(table, cx.default_time_ns);

    let mut after = After::Measurement;
    while let Some(r) = rest.strip_prefix(',') {
        let (r, k) = key(r)?;
        if k.raw.is_empty() {
            return expected(r, Expected::TagKey, After::Comma);
        }
        let k = unescape(k, KEY_ESCAPES, &mut cx.a);
        let Some(r) = r.strip_prefix('=') else {
            return expected(r, Expected::Equals, After::TagKey(k.into()));
        };
        let (r, v) = tag_value(r)?;
        if v.raw.is_empty() {
            return expected(r, Expected::TagValue, After::TagKey(k.into()));
        }
        row.tag(k, unescape(v, KEY_ESCAPES, &mut cx.b));
        rest = r;
        after = After::Tags;
    }

    // At least one space, then the field set.
    let fields = rest.trim_start_matches(' ');
    if fields.len() == rest.len() || fields.is_empty() {
        return expected(fields, Expected::FieldSet, after);
    }
    rest = fields;
    loop {
        let (r, k) = key(rest)?;
        if k.raw.is_empty() {
            return expected(r, Expected::FieldKey, after);
        }
        let k = unescape(k, KEY_ESCAPES, &mut cx.a);
        let Some(r) = r.strip_prefix('=') else {
            return expected(r, Expected::Equals, After::FieldKey(k.into()));
        };
        let (r, value) = field_value(r, k, &mut cx.b)?;
        row.field(k, value);
        match r.as_bytes().first() {
            Some(b',') => {
                rest = &r[1..];
                after = After::Comma;
            }
            Some(b' ') | None => {
                rest = r;
                break;
            }
            Some(_) => {
                return expected(r, Expected::FieldSeparator, After::FieldValue(k.into()));
            }
        }
    }

    let rest = rest.trim_start_matches(' ');
    if !rest.is_empty() {
        let (r, ts) = timestamp(rest, cx.precision)?;
        let r = r.trim_start_matches(' ');
        if !r.is_empty() {
            return expected(r, Expected::EndOfLine, After::Timestamp);
        }
        row.set_time(ts);
    }
    match row.finish(line_no) {
        Ok(()) => Ok(("", ())),
        Err(e) => fail(input, LineErrorKind::Row(e)),
    }
}

/// A field value after `key=`; `scratch` receives an unescaped string.
#[inline]
fn field_value<'a: 's, 's>(
    input: &'a str,
    key: &str,
    scratch: &'s mut String,
) -> PResult<'a, FieldValue<'s>> {
    if let Some(quoted) = input.strip_prefix('"') {
        let (r, token) = escaped_until(quoted, |b| b == b'"')?;
        let Some(r) = r.strip_prefix('"') else {
            return fail(input, LineErrorKind::UnterminatedString);
        };
        return Ok((r, FieldValue::Str(unescape(token, STRING_ESCAPES, scratch))));
    }
    let end = input
        .as_bytes()
        .iter()
        .position(|&b| b == b',' || b == b' ')
        .unwrap_or(input.len());
    let (text, rest) = input.split_at(end);
    let Some(&first) = text.as_bytes().first() else {
        return expected(input, Expected::FieldValue, After::FieldKey(key.into()));
    };
    let value = match first {
        b'0'..=b'9' | b'-' | b'.' => number(text).map_err(|ty| {
            nom::Err::Failure(Located::new(
                input,
                LineErrorKind::InvalidNumber {
                    field: key.into(),
                    text: text.into(),
                    ty,
                },
            ))
        })?,
        _ => match text {
            "t" | "T" | "true" | "True" | "TRUE" => FieldValue::Bool(true),
            "f" | "F" | "false" | "False" | "FALSE" => FieldValue::Bool(false),
            _ => {
                return fail(
                    input,
                    LineErrorKind::InvalidFieldValue {
                        field: key.into(),
                        text: text.into(),
                    },
                );
            }
        },
    };
    Ok((rest, value))
}

/// A numeric field value (`12i`, `12u`, or a float); on failure the type it was meant as.
#[inline]
fn number(text: &str) -> Result<FieldValue<'static>, FieldType> {
    let bytes = text.as_bytes();
    match bytes[bytes.len() - 1] {
        b'i' => {
            let digits = &text[..text.len() - 1];
            if !plain_integer(digits, true) {
                return Err(FieldType::I64);
            }
            digits
                .parse()
                .map(FieldValue::I64)
                .map_err(|_| FieldType::I64)
        }
        b'u' => {
            let digits = &text[..text.len() - 1];
            if !plain_integer(digits, false) {
                return Err(FieldType::U64);
            }
            digits
                .parse()
                .map(FieldValue::U64)
                .map_err(|_| FieldType::U64)
        }
        _ => {
            // Rust's float syntax also takes `inf` and `nan`; line protocol does not.
            let unsigned = text.strip_prefix('-').unwrap_or(text);
            match unsigned.as_bytes().first() {
                Some(b'0'..=b'9' | b'.') => {}
                _ => return Err(FieldType::F64),
            }
            text.parse()
                .map(FieldValue::F64)
                .map_err(|_| FieldType::F64)
        }
    }
}

/// `-?[0-9]+` (the sign only if `signed`); Rust's integer parsing would also take `+`.
#[inline]
fn plain_integer(text: &str, signed: bool) -> bool {
    let digits = if signed {
        text.strip_prefix('-').unwrap_or(text)
    } else {
        text
    };
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The timestamp token (up to a space), converted to nanoseconds.
fn timestamp(input: &str, precision: Precision) -> PResult<'_, i64> {
    let end = input.find(' ').unwrap_or(input.len());
    let (text, rest) = input.split_at(end);
    let bad = || {
        nom::Err::Failure(Located::new(
            input,
            LineErrorKind::BadTimestamp { text: text.into() },
        ))
    };
    if !plain_integer(text, true) {
        return Err(bad());
    }
    let value: i64 = text.parse().map_err(|_| bad())?;
    let Some(ns) = precision.to_nanos(value) else {
        return fail(
            input,
            LineErrorKind::TimestampOverflow {
                value,
                unit: precision.as_str(),
            },
        );
    };
    Ok((rest, ns))
}

#[cfg(test)]
mod tests;
