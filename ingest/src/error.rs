//! Errors of the write formats.
//!
//! Two levels:
//!
//! * [`IngestError`] rejects a whole request body (bad gzip or snappy framing, not UTF-8,
//!   too large, undecodable protobuf). It knows its HTTP status.
//! * [`LineError`] rejects one line (one sample, one time series) of an otherwise readable
//!   body; the parsers collect them and keep every good line. It names the line, the column
//!   and the absolute byte offset, and its [`LineErrorKind`] says what was expected.

use rigwatch_common::http_error::{HttpError, StatusCode};

use std::fmt;

use nom::error::{ErrorKind, ParseError};
use rigwatch_storage::batch::{FieldType, RowError};

/// `Result` with [`IngestError`] as the default error.
pub type Result<T, E = IngestError> = std::result::Result<T, E>;

/// A request body that cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("invalid gzip stream near compressed byte {offset}: {message}")]
    BadGzip { offset: usize, message: String },
    #[error("invalid snappy block: {source}")]
    BadSnappy {
        #[source]
        source: snap::Error,
    },
    #[error("invalid protobuf message: {source}")]
    BadProtobuf {
        #[source]
        source: prost::DecodeError,
    },
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("request body is not valid UTF-8 at byte {byte_offset}")]
    NotUtf8 { byte_offset: usize },
    #[error(
        "unknown timestamp precision `{value}` (expected ns, us, ms or s; v1 also takes n, u, m, h)"
    )]
    UnknownPrecision { value: String },
    #[error("unsupported Content-Encoding `{encoding}` (send gzip or an uncompressed body)")]
    UnsupportedEncoding { encoding: String },
}

impl HttpError for IngestError {
    /// The HTTP status this error maps to: 413 for [`IngestError::TooLarge`], else 400.
    fn status_code(&self) -> StatusCode {
        match self {
            IngestError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::UnsupportedEncoding { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// Whether sending the same request again could succeed. Never: these are all client
    /// errors that depend only on the bytes sent.
    fn is_retryable(&self) -> bool {
        false
    }
}

/// Checks that `body` is UTF-8, naming the offset of the first invalid byte.
///
/// ```
/// use rigwatch_ingest::{utf8, IngestError};
/// assert_eq!(utf8(b"cpu f=1").unwrap(), "cpu f=1");
/// assert!(matches!(utf8(b"ab\xffc"), Err(IngestError::NotUtf8 { byte_offset: 2 })));
/// ```
pub fn utf8(body: &[u8]) -> Result<&str> {
    std::str::from_utf8(body).map_err(|e| IngestError::NotUtf8 {
        byte_offset: e.valid_up_to(),
    })
}

/// One rejected line (Prometheus text: one sample; remote_write: one time series).
///
/// Displays as `line 3, column 17 (byte 120): expected '=' after field key "temp"`. Errors
/// without a position in a text body (remote_write, where `line` is the 1-based index of the
/// time series) have `column == 0` and display as `line 3: ...`.
#[derive(Debug, Clone, PartialEq)]
pub struct LineError {
    /// 1-based line number (remote_write: 1-based time series index).
    pub line: u32,
    /// Absolute byte offset in the body of the offending character.
    pub byte_offset: usize,
    /// 1-based column within the line, counted in characters (Unicode scalar values);
    /// 0 when the error has no position in a text body.
    pub column: usize,
    pub kind: LineErrorKind,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.column == 0 {
            write!(f, "line {}: {}", self.line, self.kind)
        } else {
            write!(
                f,
                "line {}, column {} (byte {}): {}",
                self.line, self.column, self.byte_offset, self.kind
            )
        }
    }
}

impl std::error::Error for LineError {}

/// What was wrong with a line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LineErrorKind {
    /// A syntax error: something else was found where `expected` must stand.
    #[error("expected {expected}{after}")]
    Expected { expected: Expected, after: After },
    /// A numeric field value that does not parse as its type (or overflows it).
    #[error("invalid {ty} value \"{text}\" for field \"{field}\"")]
    InvalidNumber {
        field: String,
        text: String,
        ty: FieldType,
    },
    /// A field value that is neither a number, a boolean nor a quoted string.
    #[error(
        "invalid value \"{text}\" for field \"{field}\": expected a number, a boolean or a quoted string"
    )]
    InvalidFieldValue { field: String, text: String },
    /// A Prometheus sample value that is not a Go float.
    #[error("invalid sample value \"{text}\": expected a float, NaN, +Inf or -Inf")]
    InvalidSampleValue { text: String },
    /// A quoted string without its closing quote before the end of the line.
    #[error("unterminated string: missing closing '\"' before the end of the line")]
    UnterminatedString,
    /// A backslash escape that the format does not define.
    #[error("invalid escape sequence \"\\{escape}\" (expected \\\\, \\\" or \\n)")]
    InvalidEscape { escape: char },
    /// A timestamp that is not an integer.
    #[error("invalid timestamp \"{text}\": expected an integer")]
    BadTimestamp { text: String },
    /// A timestamp whose nanosecond value does not fit in an `i64`.
    #[error("timestamp {value} {unit} does not fit in 64-bit nanoseconds")]
    TimestampOverflow { value: i64, unit: &'static str },
    /// The metric name was given twice (Prometheus text: before the braces and again inside
    /// them; remote_write: two `__name__` labels).
    #[error(
        "metric name given twice (as the name and as a __name__ label, or in two __name__ labels)"
    )]
    MetricNameTwice,
    /// A sample or series without a metric name.
    #[error("missing metric name (no __name__ label)")]
    MissingMetricName,
    /// The line parsed, but the batch rejected the row.
    #[error(transparent)]
    Row(#[from] RowError),
    /// A nom combinator failed in a way the parser did not map to a more precise kind.
    #[error("syntax error ({})", .0.description())]
    Syntax(ErrorKind),
}

/// What a parser expected to find; see [`LineErrorKind::Expected`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    MeasurementName,
    TagKey,
    TagValue,
    FieldKey,
    FieldValue,
    /// A space followed by the field set.
    FieldSet,
    Equals,
    MetricName,
    LabelName,
    /// A double-quoted label value.
    LabelValue,
    /// `,`, a space or the end of the line after a field value.
    FieldSeparator,
    /// `,` or `}` after a label.
    CommaOrBrace,
    SampleValue,
    EndOfLine,
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Expected::MeasurementName => "a measurement name",
            Expected::TagKey => "a tag key",
            Expected::TagValue => "a tag value",
            Expected::FieldKey => "a field key",
            Expected::FieldValue => "a field value",
            Expected::FieldSet => "a space and a field set",
            Expected::Equals => "'='",
            Expected::MetricName => "a metric name",
            Expected::LabelName => "a label name",
            Expected::LabelValue => "a double-quoted label value",
            Expected::FieldSeparator => "',', ' ' or the end of the line",
            Expected::CommaOrBrace => "',' or '}'",
            Expected::SampleValue => "a space and a sample value",
            Expected::EndOfLine => "the end of the line",
        })
    }
}

/// Where an [`Expected`] error happened: what the parser had just read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    /// Nothing to add (start of a line, or context is obvious).
    Nothing,
    Measurement,
    Comma,
    /// After the opening `{` of a label set.
    Brace,
    TagKey(String),
    TagValue(String),
    Tags,
    FieldKey(String),
    FieldValue(String),
    Timestamp,
    MetricName,
    LabelName(String),
    LabelValue(String),
    Labels,
    SampleValue,
}

impl fmt::Display for After {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            After::Nothing => Ok(()),
            After::Measurement => f.write_str(" after the measurement"),
            After::Comma => f.write_str(" after ','"),
            After::Brace => f.write_str(" after '{'"),
            After::TagKey(k) => write!(f, " after tag key \"{k}\""),
            After::TagValue(k) => write!(f, " after the value of tag \"{k}\""),
            After::Tags => f.write_str(" after the tag set"),
            After::FieldKey(k) => write!(f, " after field key \"{k}\""),
            After::FieldValue(k) => write!(f, " after the value of field \"{k}\""),
            After::Timestamp => f.write_str(" after the timestamp"),
            After::MetricName => f.write_str(" after the metric name"),
            After::LabelName(k) => write!(f, " after label name \"{k}\""),
            After::LabelValue(k) => write!(f, " after the value of label \"{k}\""),
            After::Labels => f.write_str(" after the labels"),
            After::SampleValue => f.write_str(" after the sample value"),
        }
    }
}

/// The error type the nom parsers of this crate run with: where in the body it happened and
/// what went wrong. Converted to a [`LineError`] by [`Located::locate`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Located<'a> {
    /// The input at the offending character (a suffix of the body).
    pub at: &'a str,
    pub kind: LineErrorKind,
}

impl<'a> Located<'a> {
    pub fn new(at: &'a str, kind: LineErrorKind) -> Self {
        Self { at, kind }
    }

    pub fn expected(at: &'a str, expected: Expected, after: After) -> Self {
        Self::new(at, LineErrorKind::Expected { expected, after })
    }

    /// Resolves the position against the line it occurred in. `line` must be a slice of the
    /// same body as `self.at`, starting at absolute offset `line_start`.
    pub fn locate(self, body: &str, line_no: u32, line_start: usize) -> LineError {
        let byte_offset = offset_in(body, self.at);
        LineError {
            line: line_no,
            byte_offset,
            column: column(body, line_start, byte_offset),
            kind: self.kind,
        }
    }
}

impl<'a> ParseError<&'a str> for Located<'a> {
    fn from_error_kind(input: &'a str, kind: ErrorKind) -> Self {
        Self::new(input, LineErrorKind::Syntax(kind))
    }

    fn append(_input: &'a str, _kind: ErrorKind, other: Self) -> Self {
        // The innermost error is the most precise one.
        other
    }
}

/// The nom result type of this crate's parsers.
pub(crate) type PResult<'a, O> = nom::IResult<&'a str, O, Located<'a>>;

/// Runs `parse` on every content line of a text body (skipping blank lines and `#` comments,
/// tolerating CRLF and leading blanks) and collects each failure as a located [`LineError`].
/// `parse` gets the line and its 1-based number.
pub(crate) fn each_line<'a>(
    body: &'a str,
    mut parse: impl FnMut(&'a str, u32) -> PResult<'a, ()>,
) -> Vec<LineError> {
    let mut errors = Vec::new();
    for (i, raw) in body.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let line = line.trim_start_matches([' ', '\t']);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line_no = u32::try_from(i + 1).unwrap_or(u32::MAX);
        if let Err(e) = parse(line, line_no) {
            let line_start = offset_in(body, raw);
            errors.push(into_located(e, line).locate(body, line_no, line_start));
        }
    }
    errors
}

/// Absolute offset of `part` (a subslice of `body`) in `body`.
pub(crate) fn offset_in(body: &str, part: &str) -> usize {
    let offset = (part.as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
    debug_assert!(offset <= body.len(), "slice is not part of the body");
    offset.min(body.len())
}

/// 1-based character column of `byte_offset` in the line starting at `line_start`.
pub(crate) fn column(body: &str, line_start: usize, byte_offset: usize) -> usize {
    body.get(line_start..byte_offset)
        .map_or(1, |s| s.chars().count() + 1)
}

/// Fails with `kind` at `at` (a cut: no alternative can succeed).
pub(crate) fn fail<'a, O>(at: &'a str, kind: LineErrorKind) -> PResult<'a, O> {
    Err(nom::Err::Failure(Located::new(at, kind)))
}

/// Fails because `expected` is missing at `at`.
pub(crate) fn expected<'a, O>(at: &'a str, expected: Expected, after: After) -> PResult<'a, O> {
    Err(nom::Err::Failure(Located::expected(at, expected, after)))
}

/// Unwraps a nom error into the located error (this crate parses complete input only, so
/// `Incomplete` cannot happen; it maps to a syntax error at `at`).
pub(crate) fn into_located<'a>(err: nom::Err<Located<'a>>, at: &'a str) -> Located<'a> {
    match err {
        nom::Err::Error(e) | nom::Err::Failure(e) => e,
        nom::Err::Incomplete(_) => Located::new(at, LineErrorKind::Syntax(ErrorKind::Eof)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes() {
        assert_eq!(
            IngestError::TooLarge { limit: 1 }.status_code().as_u16(),
            413
        );
        assert_eq!(
            IngestError::NotUtf8 { byte_offset: 1 }
                .status_code()
                .as_u16(),
            400
        );
        let e = IngestError::BadGzip {
            offset: 3,
            message: "corrupt deflate stream".into(),
        };
        assert_eq!(e.status_code().as_u16(), 400);
        assert!(!e.is_retryable());
    }

    #[test]
    fn utf8_reports_offset() {
        assert!(matches!(utf8("héllo\u{0}".as_bytes()), Ok("héllo\u{0}")));
        let mut bad = "aé".as_bytes().to_vec();
        bad.push(0xC3); // truncated two-byte sequence
        assert!(matches!(
            utf8(&bad),
            Err(IngestError::NotUtf8 { byte_offset: 3 })
        ));
    }

    #[test]
    fn line_error_display() {
        let e = LineError {
            line: 3,
            byte_offset: 120,
            column: 17,
            kind: LineErrorKind::Expected {
                expected: Expected::Equals,
                after: After::FieldKey("temp".into()),
            },
        };
        assert_eq!(
            e.to_string(),
            "line 3, column 17 (byte 120): expected '=' after field key \"temp\""
        );
        let e = LineError {
            line: 2,
            byte_offset: 0,
            column: 0,
            kind: LineErrorKind::MissingMetricName,
        };
        assert_eq!(
            e.to_string(),
            "line 2: missing metric name (no __name__ label)"
        );
        let e = LineErrorKind::Row(RowError::NoFields);
        assert_eq!(e.to_string(), "row has no fields");
    }

    #[test]
    fn column_counts_characters() {
        let body = "ab\nµé=x";
        assert_eq!(column(body, 3, 3), 1);
        assert_eq!(column(body, 3, 7), 3);
    }
}
