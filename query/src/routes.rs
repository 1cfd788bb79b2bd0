//! `POST /api/v1/sql` (and `GET ?q=`): run SQL, answer JSON, CSV or Arrow IPC.
//!
//! The body is the SQL text, or JSON `{"query": "..."}` / `{"q": "..."}`. The format comes from
//! `?format=json|jsonl|csv|arrow`, else from `Accept`, else JSON. Errors answer the one error
//! body (`{"status": "error", "errorType": "bad_data", "error": "..."}`, see
//! `rigwatch_common::http_error`) with 400 for a bad query and 500, with a `request_id`, for a
//! failure while running it.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rigwatch_common::http_error::{ErrorBody, HttpError};
use rigwatch_storage::auth::Principal;
use serde::Deserialize;

use crate::error::Error;
use crate::format::{Format, encode};
use crate::service::QueryService;

/// Largest SQL text accepted.
pub(crate) const MAX_QUERY_BYTES: usize = 1 << 20;

/// The SQL routes.
pub fn router(service: QueryService) -> Router {
    Router::new()
        .route("/api/v1/sql", get(sql).post(sql))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_QUERY_BYTES))
        .with_state(service)
}

#[derive(Debug, Deserialize, Default)]
pub struct SqlParams {
    pub(crate) q: Option<String>,
    pub(crate) format: Option<String>,
}

#[derive(Debug, Deserialize)]
struct JsonBody {
    #[serde(alias = "q")]
    query: String,
}

/// The answer for a failed query: 400-class errors say what is wrong; a 500 gets a request
/// id and the detail goes to the log.
pub(crate) fn error(e: Error) -> Response {
    let status = e.status_code();
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        let id = crate::error::log_internal(&e);
        return ErrorBody::for_status(status, crate::error::internal_message(&id))
            .with("request_id", id)
            .response(status);
    }
    let mut body = ErrorBody::of(&e);
    if let Some(wait) = e.retry_after() {
        body = body.with("retry_after_s", wait.as_secs().max(1));
    }
    body.response(status)
}

/// The output format: `?format=`, else `Accept`, else JSON.
fn request_format(param: Option<&str>, headers: &HeaderMap) -> Result<Format, Error> {
    match param {
        Some(f) => Format::from_param(f),
        None => Ok(Format::from_accept(
            headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        )),
    }
}

/// The query text: `?q=`, else a JSON body's `query` (or `q`), else the body as text.
fn request_text(q: Option<String>, headers: &HeaderMap, body: &Bytes) -> Result<String, Error> {
    if let Some(q) = q {
        return Ok(q);
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        serde_json::from_slice::<JsonBody>(body)
            .map(|b| b.query)
            .map_err(Error::BodyJson)
    } else {
        String::from_utf8(body.to_vec()).map_err(Error::BodyUtf8)
    }
}

/// The caller the access layer put on the request; without one, nothing (fail closed).
fn caller(principal: Option<Extension<Principal>>) -> Result<Principal, Error> {
    principal
        .map(|Extension(p)| p)
        .ok_or(Error::NotAuthenticated)
}

/// What a query route reads from its request: the output format, the query text and the
/// caller, or the first thing wrong with them.
pub(crate) fn query_request(
    params: SqlParams,
    headers: &HeaderMap,
    body: &Bytes,
    principal: Option<Extension<Principal>>,
) -> Result<(Format, String, Principal), Error> {
    let format = request_format(params.format.as_deref(), headers)?;
    let text = request_text(params.q, headers, body)?;
    Ok((format, text, caller(principal)?))
}

/// A result encoded in `format`.
pub(crate) fn answer(format: Format, schema: &SchemaRef, batches: &[RecordBatch]) -> Response {
    match encode(format, schema, batches) {
        Ok(bytes) => ([(header::CONTENT_TYPE, format.content_type())], bytes).into_response(),
        Err(e) => error(e),
    }
}

async fn sql(
    State(service): State<QueryService>,
    principal: Option<Extension<Principal>>,
    Query(params): Query<SqlParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (format, text, principal) = match query_request(params, &headers, &body, principal) {
        Ok(r) => r,
        Err(e) => return error(e),
    };
    match service.sql_scoped(&text, principal.scope()).await {
        Ok((schema, batches)) => answer(format, &schema, &batches),
        Err(e) => error(e),
    }
}
