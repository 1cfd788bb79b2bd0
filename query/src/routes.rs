//! `POST /api/v1/sql` (and `GET ?q=`): run SQL, answer JSON, CSV or Arrow IPC.
//!
//! The body is the SQL text, or JSON `{"query": "..."}` / `{"q": "..."}`. The format comes from
//! `?format=json|jsonl|csv|arrow`, else from `Accept`, else JSON. Errors answer
//! `{"error": "..."}` with 400 for a bad query and 500 for a failure while running it.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rigwatch_storage::auth::Principal;
use serde::Deserialize;

use crate::error::Error;
use crate::format::{Format, encode};
use crate::service::QueryService;

/// Largest SQL text accepted.
const MAX_QUERY_BYTES: usize = 1 << 20;

/// The SQL routes.
pub fn router(service: QueryService) -> Router {
    Router::new()
        .route("/api/v1/sql", get(sql).post(sql))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_QUERY_BYTES))
        .with_state(service)
}

#[derive(Debug, Deserialize, Default)]
pub struct SqlParams {
    q: Option<String>,
    format: Option<String>,
}

#[derive(Debug, Deserialize)]
struct JsonBody {
    #[serde(alias = "q")]
    query: String,
}

fn error(e: Error) -> Response {
    let status = StatusCode::from_u16(e.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = if status == StatusCode::INTERNAL_SERVER_ERROR {
        let id = crate::error::log_internal(&e);
        serde_json::json!({ "error": crate::error::internal_message(&id), "request_id": id })
    } else {
        serde_json::json!({ "error": e.to_string() })
    };
    (status, axum::Json(body)).into_response()
}

async fn sql(
    State(service): State<QueryService>,
    principal: Option<Extension<Principal>>,
    Query(params): Query<SqlParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let format = match params.format.as_deref() {
        Some(f) => match Format::from_param(f) {
            Ok(f) => f,
            Err(e) => return error(e),
        },
        None => Format::from_accept(
            headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        ),
    };
    let text = match params.q {
        Some(q) => q,
        None => {
            let is_json = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json"));
            let parsed = if is_json {
                serde_json::from_slice::<JsonBody>(&body)
                    .map(|b| b.query)
                    .map_err(|e| e.to_string())
            } else {
                String::from_utf8(body.to_vec()).map_err(|e| format!("query is not UTF-8: {e}"))
            };
            match parsed {
                Ok(t) => t,
                Err(msg) => {
                    return (
                        StatusCode::BAD_REQUEST,
                        axum::Json(serde_json::json!({ "error": msg })),
                    )
                        .into_response();
                }
            }
        }
    };
    // Fail closed: the server's access layer puts the caller here; without it, nothing.
    let Some(Extension(principal)) = principal else {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({ "error": "not authenticated" })),
        )
            .into_response();
    };
    let (schema, batches) = match service.sql_scoped(&text, principal.scope()).await {
        Ok(r) => r,
        Err(e) => return error(e),
    };
    match encode(format, &schema, &batches) {
        Ok(bytes) => ([(header::CONTENT_TYPE, format.content_type())], bytes).into_response(),
        Err(e) => error(e),
    }
}
