//! `POST /api/v1/dsl` (and `GET ?q=`): the analyst pipe DSL.
//!
//! ```text
//!  query text ──► rigwatch_dsl::parse ──► promql(…) sources evaluated (scoped PromQL)
//!                                          │
//!      caller's table schemas (scoped) ──► rigwatch_dsl::lower ──► one SQL statement
//!                                                                   │
//!                     QueryService (the caller's scoped session, the SQL route's limits)
//!                                                                   │
//!                                   JSON | JSONL | CSV | Arrow IPC (the SQL route's encoder)
//! ```
//!
//! The SQL runs exactly where `/api/v1/sql` runs the caller's SQL, so tenancy is the same by
//! construction: the caller's session holds only its rows. `explain` answers the SQL as one
//! row (column `sql`) instead of running it; the text is the lowering's and names only what
//! the query named. A DSL error is a 400 whose body also carries `position` (`offset`,
//! `line`, `column`) and, when there is one, `suggestion`.

mod promql;

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rigwatch_dsl::{PROMQL_SCHEMA, TableRef};
use rigwatch_storage::auth::Principal;

use crate::error::{Error, Result};
use crate::promql::PromOptions;
use crate::routes::{MAX_QUERY_BYTES, SqlParams, answer, error, query_request};
use crate::service::QueryService;

#[derive(Debug, Clone)]
struct DslState {
    service: QueryService,
    opts: Arc<PromOptions>,
}

/// The DSL route. `opts` bound its `promql(…)` sources like the Prometheus API's queries.
pub fn router(service: QueryService, opts: PromOptions) -> Router {
    Router::new()
        .route("/api/v1/dsl", get(dsl).post(dsl))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_QUERY_BYTES))
        .with_state(DslState {
            service,
            opts: Arc::new(opts),
        })
}

async fn dsl(
    State(state): State<DslState>,
    principal: Option<Extension<Principal>>,
    Query(params): Query<SqlParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (format, text, principal) = match query_request(params, &headers, &body, principal) {
        Ok(r) => r,
        Err(e) => return error(e),
    };
    match run(&state.service, &state.opts, &text, principal.scope()).await {
        Ok((schema, batches)) => answer(format, &schema, &batches),
        Err(e) => dsl_error(e),
    }
}

/// A DSL error with its position (and suggestion) as fields too, for editors.
fn dsl_error(e: Error) -> Response {
    let located = match &e {
        Error::Dsl(d) => Some((d.pos(), d.suggestion().map(str::to_string))),
        Error::DslPromql { pos, .. } => Some((*pos, None)),
        _ => None,
    };
    let status = StatusCode::from_u16(e.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match located {
        Some((pos, suggestion)) if status.is_client_error() => {
            let mut body = serde_json::json!({
                "error": e.to_string(),
                "position": { "offset": pos.offset, "line": pos.line, "column": pos.column },
            });
            if let Some(s) = suggestion {
                body["suggestion"] = s.into();
            }
            (status, axum::Json(body)).into_response()
        }
        _ => error(e),
    }
}

/// Runs the DSL query `text` for `scope` (a supplier, or everyone): its rows, or with
/// `explain` its SQL as one row.
pub async fn run(
    service: &QueryService,
    opts: &PromOptions,
    text: &str,
    scope: Option<&str>,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    // Parsing and lowering recurse over the query (bounded, but deep in a debug build):
    // both run on a blocking thread's fresh stack, not on an async worker's.
    let owned = text.to_string();
    let query = tokio::task::spawn_blocking(move || rigwatch_dsl::parse(&owned)).await??;
    let promql = promql::evaluate_sources(service, opts, text, &query, scope).await?;
    // Field names are checked against what this caller's session shows.
    let ctx = service.scoped_context(scope)?;
    let mut schemas: HashMap<TableRef, SchemaRef> = HashMap::new();
    for table in query.stored_tables() {
        if let Ok(provider) = ctx.table_provider(table.name.as_str()).await {
            schemas.insert(table, provider.schema());
        }
    }
    for (table, batch) in &promql {
        schemas.insert(table.clone(), batch.schema());
    }
    let owned = text.to_string();
    let lowered = tokio::task::spawn_blocking(move || {
        let catalog = |t: &TableRef| schemas.get(t).cloned();
        rigwatch_dsl::lower(&owned, &query, &catalog)
    })
    .await??;
    tracing::debug!(sql = %lowered.sql, "DSL query lowered");
    if lowered.explain {
        return explain(&lowered.sql);
    }
    if promql.is_empty() {
        return service.sql_scoped(&lowered.sql, scope).await;
    }
    let tables = promql.into_iter().map(|(t, b)| (t.name, b)).collect();
    let ctx = service.request_context(scope, PROMQL_SCHEMA, tables)?;
    service.sql_in(&ctx, &lowered.sql, scope).await
}

/// The answer of `explain`: one row, column `sql`.
fn explain(sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let schema = Arc::new(Schema::new(vec![Field::new("sql", DataType::Utf8, false)]));
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(vec![sql]))])
        .map_err(|e| Error::DataFusion(e.into()))?;
    Ok((schema, vec![batch]))
}
