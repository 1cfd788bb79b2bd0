//! Prometheus remote_write (protocol 1.0): a snappy-compressed (block format) protobuf
//! `prometheus.WriteRequest`.
//!
//! The messages are written by hand with `prost` derives (no `protoc`); only what rigwatch
//! stores is declared, and prost skips the rest (metadata, exemplars, native histograms).
//!
//! ```text
//! WriteRequest { timeseries = 1: [TimeSeries { labels = 1: [Label { name = 1, value = 2 }],
//!                                               samples = 2: [Sample { value = 1: double,
//!                                                                      timestamp = 2: int64 ms }] }],
//!                metadata = 3 (ignored) }
//! ```
//!
//! Each sample becomes one row: table = the `__name__` label, field `value`, the other labels
//! as tags (empty values dropped, as Prometheus does), time = timestamp ms × 1,000,000.

use prost::Message;
use rigwatch_storage::batch::{FieldValue, WriteBatch};

use crate::error::{IngestError, LineError, LineErrorKind, Result};
use crate::prom_text::VALUE_FIELD;

/// The label that holds the metric name.
pub const NAME_LABEL: &str = "__name__";

/// `prometheus.WriteRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Eq, Hash, Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, Copy, PartialEq, Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Decompresses (snappy block format) and decodes a remote_write body. The decompressed
/// length in the snappy header is checked against `max_decompressed` before anything is
/// allocated.
///
/// ```
/// use rigwatch_common::http_error::HttpError;
/// use rigwatch_ingest::remote_write::{decode, encode, Label, Sample, TimeSeries, WriteRequest};
/// let req = WriteRequest {
///     timeseries: vec![TimeSeries {
///         labels: vec![Label { name: "__name__".into(), value: "up".into() }],
///         samples: vec![Sample { value: 1.0, timestamp: 1_700_000_000_000 }],
///     }],
/// };
/// assert_eq!(decode(&encode(&req), 1 << 20).unwrap(), req);
/// assert_eq!(decode(&encode(&req), 4).unwrap_err().status_code().as_u16(), 413);
/// ```
pub fn decode(body: &[u8], max_decompressed: usize) -> Result<WriteRequest> {
    let len =
        snap::raw::decompress_len(body).map_err(|source| IngestError::BadSnappy { source })?;
    if len > max_decompressed {
        return Err(IngestError::TooLarge {
            limit: max_decompressed,
        });
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|source| IngestError::BadSnappy { source })?;
    WriteRequest::decode(raw.as_slice()).map_err(|source| IngestError::BadProtobuf { source })
}

/// Encodes and snappy-compresses a request (for clients, tests and benchmarks).
pub fn encode(req: &WriteRequest) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy compresses any input below 4 GiB")
}

/// Adds every sample of `req` to `batch` and returns the rejected series.
///
/// `LineError::line` is the 1-based index of the time series (`column` and `byte_offset` are
/// 0). A series yields at most one error, its first; its other samples are still written if
/// they are valid (only a timestamp overflow can fail one sample but not the next).
pub fn to_batch(req: &WriteRequest, batch: &mut WriteBatch) -> Vec<LineError> {
    let mut errors = Vec::new();
    for (i, series) in req.timeseries.iter().enumerate() {
        let line = u32::try_from(i + 1).unwrap_or(u32::MAX);
        if let Err(kind) = add_series(series, line, batch) {
            errors.push(LineError {
                line,
                byte_offset: 0,
                column: 0,
                kind,
            });
        }
    }
    errors
}

fn add_series(series: &TimeSeries, line: u32, batch: &mut WriteBatch) -> Result<(), LineErrorKind> {
    let mut names = series.labels.iter().filter(|l| l.name == NAME_LABEL);
    let Some(name) = names.next() else {
        return Err(LineErrorKind::MissingMetricName);
    };
    if names.next().is_some() {
        return Err(LineErrorKind::MetricNameTwice);
    }
    let mut first_error = None;
    for sample in &series.samples {
        let result = match sample.timestamp.checked_mul(1_000_000) {
            None => Err(LineErrorKind::TimestampOverflow {
                value: sample.timestamp,
                unit: "ms",
            }),
            Some(time) => {
                let mut row = batch.row(&name.value, time);
                for label in &series.labels {
                    if label.name != NAME_LABEL && !label.value.is_empty() {
                        row.tag(&label.name, &label.value);
                    }
                }
                row.field(VALUE_FIELD, FieldValue::F64(sample.value));
                row.finish(line).map_err(LineErrorKind::Row)
            }
        };
        if let Err(kind) = result {
            if matches!(kind, LineErrorKind::Row(_)) {
                // The labels are the same for every sample: all would fail alike.
                return Err(kind);
            }
            first_error.get_or_insert(kind);
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use rigwatch_common::http_error::HttpError;

    use super::*;
    use rigwatch_storage::batch::RowError;

    fn label(name: &str, value: &str) -> Label {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }

    fn series(labels: &[(&str, &str)], samples: &[(f64, i64)]) -> TimeSeries {
        TimeSeries {
            labels: labels.iter().map(|(n, v)| label(n, v)).collect(),
            samples: samples
                .iter()
                .map(|&(value, timestamp)| Sample { value, timestamp })
                .collect(),
        }
    }

    #[test]
    fn round_trip_and_rows() {
        let req = WriteRequest {
            timeseries: vec![
                series(
                    &[
                        ("__name__", "gpu_temp"),
                        ("gpu_uuid", "GPU-1"),
                        ("empty", ""),
                    ],
                    &[(61.5, 1_000), (f64::NAN, 2_000)],
                ),
                series(&[("job", "x")], &[(1.0, 0)]),
                series(&[("__name__", "up"), ("b", "2"), ("a", "1")], &[(1.0, -5)]),
            ],
        };
        let body = encode(&req);
        let decoded = decode(&body, 1 << 20).unwrap();
        assert_eq!(decoded.timeseries.len(), 3);
        assert_eq!(decoded.timeseries[2], req.timeseries[2]);

        let mut batch = WriteBatch::default();
        let errors = to_batch(&decoded, &mut batch);
        assert_eq!(
            errors,
            vec![LineError {
                line: 2,
                byte_offset: 0,
                column: 0,
                kind: LineErrorKind::MissingMetricName,
            }]
        );
        assert_eq!(
            errors[0].to_string(),
            "line 2: missing metric name (no __name__ label)"
        );
        assert_eq!(batch.len(), 3);
        let r = batch.get(0).unwrap();
        assert_eq!(
            (r.table(), r.time(), r.line()),
            ("gpu_temp", 1_000_000_000, 1)
        );
        assert_eq!(r.tags().collect::<Vec<_>>(), vec![("gpu_uuid", "GPU-1")]);
        assert_eq!(
            r.fields().collect::<Vec<_>>(),
            vec![("value", FieldValue::F64(61.5))]
        );
        let r = batch.get(1).unwrap();
        assert!(matches!(r.fields().next(), Some(("value", FieldValue::F64(v))) if v.is_nan()));
        let r = batch.get(2).unwrap();
        assert_eq!((r.table(), r.time(), r.line()), ("up", -5_000_000, 3));
        assert_eq!(r.tags().collect::<Vec<_>>(), vec![("a", "1"), ("b", "2")]);
    }

    #[test]
    fn per_series_errors() {
        let req = WriteRequest {
            timeseries: vec![
                series(
                    &[("__name__", "m"), ("a", "1"), ("a", "2")],
                    &[(1.0, 1), (2.0, 2)],
                ),
                series(&[("__name__", "m")], &[(1.0, i64::MAX), (2.0, 7)]),
                series(&[("__name__", "")], &[(1.0, 1)]),
                series(&[("__name__", "m"), ("__name__", "n")], &[(1.0, 1)]),
            ],
        };
        let mut batch = WriteBatch::default();
        let errors = to_batch(&req, &mut batch);
        let kinds: Vec<_> = errors.iter().map(|e| (e.line, e.kind.clone())).collect();
        assert_eq!(
            kinds,
            vec![
                (
                    1,
                    LineErrorKind::Row(RowError::DuplicateTag { key: "a".into() })
                ),
                (
                    2,
                    LineErrorKind::TimestampOverflow {
                        value: i64::MAX,
                        unit: "ms"
                    }
                ),
                (3, LineErrorKind::Row(RowError::EmptyTable)),
                (4, LineErrorKind::MetricNameTwice),
            ]
        );
        // The good sample of series 2 is kept.
        assert_eq!(batch.len(), 1);
        assert_eq!(batch.get(0).unwrap().time(), 7_000_000);
    }

    #[test]
    fn decode_errors() {
        let req = WriteRequest {
            timeseries: vec![series(&[("__name__", "m")], &[(1.0, 1)])],
        };
        let body = encode(&req);
        let len = req.encoded_len();
        assert!(decode(&body, len).is_ok());
        assert!(matches!(
            decode(&body, len - 1),
            Err(IngestError::TooLarge { limit }) if limit == len - 1
        ));
        // Not snappy: a length header claiming more bytes than follow.
        let err = decode(b"\xff\xff\x03garbage", 1 << 30).unwrap_err();
        assert!(matches!(err, IngestError::BadSnappy { .. }), "{err}");
        assert_eq!(err.status_code().as_u16(), 400);
        // A header that claims 2 GiB is refused before allocating.
        let err = decode(b"\x80\x80\x80\x80\x08", 1 << 20).unwrap_err();
        assert!(matches!(err, IngestError::TooLarge { .. }), "{err}");
        // Valid snappy, invalid protobuf (field 1 declared as a 100-byte message).
        let bad = snap::raw::Encoder::new()
            .compress_vec(b"\x0a\x64\x01")
            .unwrap();
        let err = decode(&bad, 1 << 20).unwrap_err();
        assert!(matches!(err, IngestError::BadProtobuf { .. }), "{err}");
        assert!(err.to_string().starts_with("invalid protobuf message"));
        // Empty body: an empty request.
        let empty = snap::raw::Encoder::new().compress_vec(b"").unwrap();
        assert_eq!(decode(&empty, 0).unwrap(), WriteRequest::default());
    }

    #[test]
    fn unknown_fields_are_skipped() {
        // metadata (field 3 of WriteRequest) is ignored.
        let mut raw = WriteRequest {
            timeseries: vec![series(&[("__name__", "m")], &[(1.0, 1)])],
        }
        .encode_to_vec();
        raw.extend_from_slice(b"\x1a\x02\x08\x01");
        let body = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
        let req = decode(&body, 1 << 20).unwrap();
        assert_eq!(req.timeseries.len(), 1);
    }
}
