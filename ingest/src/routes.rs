//! HTTP write routes, compatible with the clients people already use.
//!
//! | route | format | like |
//! |---|---|---|
//! | `POST /api/v2/write?precision=` | line protocol | InfluxDB v2 (`bucket`, `org` accepted and ignored) |
//! | `POST /write?precision=` | line protocol | InfluxDB v1 (`db` accepted and ignored) |
//! | `POST /api/v1/import/prometheus` | text exposition with timestamps | VictoriaMetrics |
//! | `POST /api/v1/write` | remote_write (protobuf + snappy) | Prometheus |
//!
//! A body with `Content-Encoding: gzip` is inflated (up to the same size limit). Good lines are
//! stored even when others are bad: the answer is then 400 with every rejected line, its
//! number, column, byte offset and reason, and the count of accepted lines (as InfluxDB 3
//! does for partial writes). `no_sync=true` acknowledges before the WAL fsync.
//!
//! These routes are for operators and take any time (backfill), but one request may touch
//! at most [`IngestState::max_partitions`] time partitions (`--max-write-partitions`): each
//! opens buffer chunks and, at persist, Parquet files. Beyond it the answer is 400 naming the
//! first line past the limit, and nothing of the request is stored.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Extension;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use rigwatch_common::http_error::HttpError;
use rigwatch_storage::auth::Principal;
use rigwatch_storage::batch::WriteBatch;
use rigwatch_storage::{Db, WriteOptions};
use serde::{Deserialize, Serialize};

use crate::admission::{Admission, BODY_READ_TIMEOUT, principal_key};
use crate::error::{IngestError, LineError, utf8};
use crate::line_protocol::{self, Precision};
use crate::partition_budget::PartitionBudget;
use crate::{gzip, prom_text, remote_write};

/// Shared state of the write routes.
#[derive(Debug, Clone)]
pub struct IngestState {
    pub db: Arc<Db>,
    /// Largest accepted body, before and after decompression.
    pub max_body_bytes: usize,
    /// Most time partitions one request may touch.
    pub max_partitions: usize,
    /// The write queue these routes share with the agent write route.
    pub admission: Arc<Admission>,
    /// Distinct time partitions each token may write into per hour
    /// (`--max-write-partitions-per-hour`).
    pub partitions_per_hour: Arc<PartitionBudget>,
}

/// Default of [`IngestState::max_partitions`]: with hourly partitions, six weeks of backfill
/// in one request.
pub const DEFAULT_MAX_WRITE_PARTITIONS: usize = 1_000;

/// The write routes.
pub fn router(state: IngestState) -> Router {
    Router::new()
        .route("/api/v2/write", post(write_lp))
        .route("/write", post(write_lp))
        .route("/api/v1/import/prometheus", post(write_prom_text))
        .route("/api/v1/write", post(write_remote))
        .route_layer(axum::middleware::from_fn_with_state(
            state.admission.clone(),
            crate::admission::admit,
        ))
        .with_state(state)
}

#[derive(Debug, Deserialize, Default)]
pub struct WriteParams {
    precision: Option<String>,
    no_sync: Option<bool>,
    /// Default timestamp (ms) for Prometheus text samples without one.
    timestamp: Option<i64>,
}

/// One rejected line in a response.
#[derive(Debug, Serialize)]
struct Rejected {
    line: u32,
    column: usize,
    byte_offset: usize,
    error: String,
}

#[derive(Debug, Serialize)]
struct ErrorBody {
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    accepted_lines: Option<usize>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rejected: Vec<Rejected>,
}

fn error_response(status: StatusCode, code: &'static str, message: String) -> Response {
    let mut resp = (
        status,
        axum::Json(ErrorBody {
            code,
            message,
            accepted_lines: None,
            rejected: Vec::new(),
        }),
    )
        .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// The body as sent, up to `limit` bytes and within [`BODY_READ_TIMEOUT`].
async fn read_raw(limit: usize, body: Body) -> Result<Bytes, Response> {
    tokio::time::timeout(BODY_READ_TIMEOUT, collect(body, limit))
        .await
        .map_err(|_| body_timeout())?
        .ok_or_else(|| ingest_error(IngestError::TooLarge { limit }))
}

/// Reads `body` into one buffer sized from its length (`Content-Length`) where it says one:
/// each frame is copied in and freed at once, instead of every frame being kept until the
/// end and then copied again into one buffer. `None` past `limit` bytes or on a broken body.
pub(crate) async fn collect(body: Body, limit: usize) -> Option<Bytes> {
    let hint = axum::body::HttpBody::size_hint(&body);
    if hint.lower() > limit as u64 {
        return None;
    }
    // A length a client claims reserves at most this much before its bytes arrive.
    const RESERVE_MAX: u64 = 16 << 20;
    let reserve = hint.exact().unwrap_or(0).min(RESERVE_MAX);
    let mut buf = bytes::BytesMut::with_capacity(reserve as usize);
    let mut frames = body.into_data_stream();
    while let Some(frame) = frames.next().await {
        let data = frame.ok()?;
        if buf.len() + data.len() > limit {
            return None;
        }
        if buf.is_empty() && hint.exact() == Some(data.len() as u64) {
            // The whole body in one frame: no copy.
            return Some(data);
        }
        buf.extend_from_slice(&data);
    }
    Some(buf.freeze())
}

/// 408: the body did not arrive within [`BODY_READ_TIMEOUT`] of the request's admission.
fn body_timeout() -> Response {
    error_response(
        StatusCode::REQUEST_TIMEOUT,
        "timeout",
        format!(
            "the request body did not arrive within {} s; nothing of it was stored",
            BODY_READ_TIMEOUT.as_secs()
        ),
    )
}

fn ingest_error(e: IngestError) -> Response {
    let status = e.status_code();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported",
        _ => "invalid",
    };
    error_response(status, code, e.to_string())
}

/// Reads the body under the size limit, inflating gzip.
async fn read_body(
    state: &IngestState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, Response> {
    let limit = state.max_body_bytes;
    let raw = read_raw(limit, body).await?;
    let encoding = headers.get(header::CONTENT_ENCODING).map(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .trim()
            .to_ascii_lowercase()
    });
    let gzipped = match encoding.as_deref() {
        None | Some("") | Some("identity") => false,
        Some("gzip") | Some("x-gzip") => true,
        Some(other) => {
            return Err(ingest_error(IngestError::UnsupportedEncoding {
                encoding: other.to_string(),
            }));
        }
    };
    if gzipped {
        let inflated = tokio::task::spawn_blocking(move || gzip::decompress(&raw, limit))
            .await
            .map_err(|e| {
                error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })?
            .map_err(ingest_error)?;
        Ok(Bytes::from(inflated))
    } else {
        Ok(raw)
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Runs CPU-heavy parsing off the async workers when the body is large.
async fn parse_off_thread<F>(len: usize, f: F) -> Result<(WriteBatch, Vec<LineError>), Response>
where
    F: FnOnce() -> Result<(WriteBatch, Vec<LineError>), IngestError> + Send + 'static,
{
    let result = if len < 64 * 1024 {
        f()
    } else {
        tokio::task::spawn_blocking(f).await.map_err(|e| {
            error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })?
    };
    result.map_err(ingest_error)
}

async fn write_lp(
    State(state): State<IngestState>,
    principal: Option<Extension<Principal>>,
    Query(params): Query<WriteParams>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let precision = match params.precision.as_deref() {
        None => Precision::Ns,
        Some(p) => match p.parse::<Precision>() {
            Ok(p) => p,
            Err(e) => return ingest_error(e),
        },
    };
    let body = match read_body(&state, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let text_body = body.clone();
    let parsed = parse_off_thread(body.len(), move || {
        let text = utf8(&text_body)?;
        let mut batch = WriteBatch::reused(text.len() / 200, text.len());
        let errors = line_protocol::parse(text, precision, now_ns(), &mut batch);
        Ok((batch, errors))
    })
    .await;
    finish_write(
        &state,
        principal.as_deref(),
        Some(&body),
        parsed,
        params.no_sync.unwrap_or(false),
    )
    .await
}

async fn write_prom_text(
    State(state): State<IngestState>,
    principal: Option<Extension<Principal>>,
    Query(params): Query<WriteParams>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match read_body(&state, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let default_ms = params.timestamp.unwrap_or(now_ns() / 1_000_000);
    let text_body = body.clone();
    let parsed = parse_off_thread(body.len(), move || {
        let text = utf8(&text_body)?;
        let mut batch = WriteBatch::reused(text.len() / 64, text.len());
        let errors = prom_text::parse(text, default_ms, &mut batch);
        Ok((batch, errors))
    })
    .await;
    finish_write(
        &state,
        principal.as_deref(),
        Some(&body),
        parsed,
        params.no_sync.unwrap_or(false),
    )
    .await
}

async fn write_remote(
    State(state): State<IngestState>,
    principal: Option<Extension<Principal>>,
    Query(params): Query<WriteParams>,
    body: Body,
) -> Response {
    // remote_write bodies are snappy-compressed protobuf, never gzip.
    let limit = state.max_body_bytes;
    let body = match read_raw(limit, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let raw = body.clone();
    let parsed = parse_off_thread(body.len(), move || {
        let req = remote_write::decode(&raw, limit)?;
        let mut batch = WriteBatch::reused(0, 0);
        let errors = remote_write::to_batch(&req, &mut batch);
        Ok((batch, errors))
    })
    .await;
    // Line numbers of remote_write errors are series indices, not text lines.
    finish_write(
        &state,
        principal.as_deref(),
        None,
        parsed,
        params.no_sync.unwrap_or(false),
    )
    .await
}

/// Writes the good rows and reports the bad ones. `text` is the body for formats whose
/// line numbers are text lines (for byte offsets); `None` for remote_write, whose "lines" are
/// series indices.
async fn finish_write(
    state: &IngestState,
    principal: Option<&Principal>,
    text: Option<&Bytes>,
    parsed: Result<(WriteBatch, Vec<LineError>), Response>,
    no_sync: bool,
) -> Response {
    let (batch, parse_errors) = match parsed {
        Ok(p) => p,
        Err(r) => return r,
    };
    let partitions = match partitions_of(&batch, state.db.partition_ns(), state.max_partitions) {
        Ok(p) => p,
        Err((line, time)) => {
            let what = if text.is_some() { "line" } else { "series" };
            return error_response(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!(
                    "{what} {line}: time {time} ns is in a time partition past the {} this \
                     request may touch (--max-write-partitions); nothing was stored: split the \
                     backfill into smaller requests",
                    state.max_partitions
                ),
            );
        }
    };
    let key = principal.map_or_else(|| "anonymous".to_string(), principal_key);
    if let Err(e) = state.partitions_per_hour.charge(&key, partitions) {
        let mut resp = error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "limit",
            format!(
                "this token has written into {} distinct time partitions this hour, the most \
                 it may (--max-write-partitions-per-hour); nothing of this request was stored; \
                 partitions written earlier this hour are still open to it",
                e.limit
            ),
        );
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(e.retry_after.as_secs().max(1)),
        );
        return resp;
    }
    let outcome = match state
        .db
        .write(
            batch,
            WriteOptions {
                no_sync,
                ..WriteOptions::default()
            },
        )
        .await
    {
        Ok(o) => o,
        Err(e) => {
            let status = e.status_code();
            let code = if e.is_retryable() {
                "unavailable"
            } else {
                "internal"
            };
            return error_response(status, code, e.to_string());
        }
    };
    if parse_errors.is_empty() && outcome.rejected.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let mut rejected: Vec<Rejected> = parse_errors
        .iter()
        .map(|e| Rejected {
            line: e.line,
            column: e.column,
            byte_offset: e.byte_offset,
            error: e.to_string(),
        })
        .collect();
    if !outcome.rejected.is_empty() {
        let starts = text.map(|b| line_starts(b)).unwrap_or_default();
        for r in &outcome.rejected {
            let (column, byte_offset) = match starts.get(r.line.saturating_sub(1) as usize) {
                Some(offset) => (1, *offset),
                None => (0, 0),
            };
            rejected.push(Rejected {
                line: r.line,
                column,
                byte_offset,
                error: format!("line {}: {}", r.line, r.error),
            });
        }
    }
    rejected.sort_by_key(|r| r.line);
    // A remote_write series rejected by the schema has one entry, not one per sample.
    rejected.dedup_by_key(|r| r.line);
    let message = format!(
        "partial write: {} line(s) rejected, {} row(s) accepted",
        rejected.len(),
        outcome.rows
    );
    (
        StatusCode::BAD_REQUEST,
        axum::Json(ErrorBody {
            code: "invalid",
            message,
            accepted_lines: Some(outcome.rows),
            rejected,
        }),
    )
        .into_response()
}

/// The first row (its line and time) past `max` distinct time partitions, if any. Rows of
/// a request mostly come in time order, so only a change of partition costs a set lookup.
/// The distinct time partitions of `batch`, or the line and time of the first row past the
/// `max` one request may touch.
fn partitions_of(
    batch: &WriteBatch,
    partition_ns: i64,
    max: usize,
) -> Result<Vec<i64>, (u32, i64)> {
    let mut seen = std::collections::HashSet::new();
    let mut last = None;
    for row in batch.rows() {
        let p = row.time().div_euclid(partition_ns.max(1));
        if last == Some(p) {
            continue;
        }
        last = Some(p);
        if seen.insert(p) && seen.len() > max {
            return Err((row.line(), row.time()));
        }
    }
    Ok(seen.into_iter().collect())
}

/// Byte offset of the start of each line.
fn line_starts(body: &[u8]) -> Vec<usize> {
    std::iter::once(0)
        .chain(
            body.iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .collect()
}
