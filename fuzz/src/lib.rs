//! The shared oracle of the fuzz targets: parsing never panics, every error is one of the
//! known variants (matched exhaustively below, so a new variant must be reviewed here), points
//! inside the body and displays, and every content line gives exactly one row or one error.

use rigwatch_common::http_error::HttpError;
use rigwatch_ingest::{IngestError, LineError, LineErrorKind};
use rigwatch_storage::batch::WriteBatch;

/// Checks the outcome of a text parser (line protocol or Prometheus text) on `body`.
pub fn check_text(body: &str, batch: &WriteBatch, errors: &[LineError]) {
    let content_lines = body
        .split('\n')
        .map(|l| {
            l.strip_suffix('\r')
                .unwrap_or(l)
                .trim_start_matches([' ', '\t'])
        })
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    assert_eq!(batch.len() + errors.len(), content_lines);
    let mut last_line = 0;
    for e in errors {
        assert!(e.line > last_line, "errors out of order: {errors:?}");
        last_line = e.line;
        assert!(e.byte_offset <= body.len(), "{e:?}");
        assert!(body.is_char_boundary(e.byte_offset), "{e:?}");
        assert!(e.column >= 1, "{e:?}");
        check_kind(&e.kind);
        assert!(!e.to_string().is_empty());
    }
    check_batch(batch);
}

/// Checks the errors of `remote_write::to_batch` for a request of `series` time series.
pub fn check_series(series: usize, batch: &WriteBatch, errors: &[LineError]) {
    for e in errors {
        assert!(e.line >= 1 && e.line as usize <= series, "{e:?}");
        assert_eq!((e.column, e.byte_offset), (0, 0));
        check_kind(&e.kind);
        assert!(!e.to_string().is_empty());
    }
    check_batch(batch);
}

/// Every row of the batch is readable and valid.
fn check_batch(batch: &WriteBatch) {
    for row in batch.rows() {
        assert!(!row.table().is_empty());
        assert!(row.field_count() >= 1);
        let _ = format!("{row:?}");
    }
}

fn check_kind(kind: &LineErrorKind) {
    match kind {
        LineErrorKind::Expected { .. }
        | LineErrorKind::InvalidNumber { .. }
        | LineErrorKind::InvalidFieldValue { .. }
        | LineErrorKind::InvalidSampleValue { .. }
        | LineErrorKind::UnterminatedString
        | LineErrorKind::InvalidEscape { .. }
        | LineErrorKind::BadTimestamp { .. }
        | LineErrorKind::TimestampOverflow { .. }
        | LineErrorKind::MetricNameTwice
        | LineErrorKind::MissingMetricName
        | LineErrorKind::Row(_) => {}
        // nom's generic errors mean a parser path without a precise error: a bug.
        LineErrorKind::Syntax(kind) => panic!("unmapped nom error {kind:?}"),
    }
    assert!(!kind.to_string().is_empty());
}

/// Checks a whole-body error.
pub fn check_ingest_error(e: &IngestError) {
    match e {
        IngestError::BadGzip { .. }
        | IngestError::BadSnappy { .. }
        | IngestError::BadProtobuf { .. }
        | IngestError::NotUtf8 { .. }
        | IngestError::UnknownPrecision { .. } => assert_eq!(e.status_code().as_u16(), 400),
        IngestError::TooLarge { .. } => assert_eq!(e.status_code().as_u16(), 413),
        IngestError::UnsupportedEncoding { .. } => assert_eq!(e.status_code().as_u16(), 415),
    }
    assert!(!e.to_string().is_empty());
}
