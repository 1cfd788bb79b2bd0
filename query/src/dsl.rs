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
//!
//! `GET /api/v1/dsl/vocabulary` answers the language's words for an editor's completion:
//! its sources (and their tables), stage keywords and functions. It is the same for every
//! caller and holds no data; the fields are the caller's own columns, which an editor reads
//! from `information_schema.columns` through `/api/v1/sql`.

mod promql;

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use rigwatch_common::http_error::{ErrorBody, HttpError};
use rigwatch_dsl::ast::Noun;
use rigwatch_dsl::{PROMQL_SCHEMA, STAGES, TableRef};
use rigwatch_storage::auth::Principal;

use crate::error::{Error, Result};
use crate::prometheus::PromOptions;
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
        .route("/api/v1/dsl/vocabulary", get(vocabulary))
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

/// `GET /api/v1/dsl/vocabulary`: the words of the language, for an editor's completion.
async fn vocabulary() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "success", "data": vocabulary_data() }))
}

/// Sources (each with its table; `promql(…)` has none), stage keywords and functions.
fn vocabulary_data() -> serde_json::Value {
    let mut sources: Vec<serde_json::Value> = Noun::ALL
        .iter()
        .map(|n| serde_json::json!({ "name": n.name(), "table": n.table() }))
        .collect();
    sources.push(serde_json::json!({ "name": "promql", "table": null }));
    let functions: Vec<serde_json::Value> = rigwatch_dsl::functions()
        .map(|f| serde_json::json!({ "name": f.name, "kind": f.kind, "arity": f.arity }))
        .collect();
    serde_json::json!({ "sources": sources, "stages": STAGES, "functions": functions })
}

/// A DSL error with its position (and suggestion) as fields too, for editors.
fn dsl_error(e: Error) -> Response {
    let located = match &e {
        Error::Dsl(d) => Some((d.pos(), d.suggestion().map(str::to_string))),
        Error::DslPromql { pos, .. } => Some((*pos, None)),
        _ => None,
    };
    let status = e.status_code();
    match located {
        Some((pos, suggestion)) if status.is_client_error() => {
            let mut body = ErrorBody::of(&e).with(
                "position",
                serde_json::json!({ "offset": pos.offset, "line": pos.line, "column": pos.column }),
            );
            if let Some(s) = suggestion {
                body = body.with("suggestion", s);
            }
            body.response(status)
        }
        _ => error(e),
    }
}

/// Queries up to this long are parsed and lowered on the async worker itself.
const INLINE_QUERY_BYTES: usize = 4096;

/// Runs the DSL query `text` for `scope` (a supplier, or everyone): its rows, or with
/// `explain` its SQL as one row.
pub async fn run(
    service: &QueryService,
    opts: &PromOptions,
    text: &str,
    scope: Option<&str>,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    // Parsing and lowering recurse over the query, bounded in depth (the fuzz target checks
    // a 2 MiB stack, a worker's). A query of a few lines, every analyst's, is handled on
    // the worker; a longer one on a blocking thread's fresh stack, as a margin for debug
    // builds' larger frames. The hops cost a busy machine more than the work does.
    let inline = text.len() <= INLINE_QUERY_BYTES;
    let query = if inline {
        rigwatch_dsl::parse(text)?
    } else {
        let owned = text.to_string();
        tokio::task::spawn_blocking(move || rigwatch_dsl::parse(&owned)).await??
    };
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
    let lowered = if inline {
        let catalog = |t: &TableRef| schemas.get(t).cloned();
        rigwatch_dsl::lower(text, &query, &catalog)?
    } else {
        let owned = text.to_string();
        tokio::task::spawn_blocking(move || {
            let catalog = |t: &TableRef| schemas.get(t).cloned();
            rigwatch_dsl::lower(&owned, &query, &catalog)
        })
        .await??
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_names_sources_tables_stages_and_functions() {
        let v = vocabulary_data();
        let sources = v["sources"].as_array().unwrap();
        assert_eq!(sources.len(), Noun::ALL.len() + 1);
        assert!(sources.contains(&serde_json::json!({"name": "gpus", "table": "gpu"})));
        assert!(sources.contains(&serde_json::json!({"name": "leases", "table": "lease"})));
        assert!(sources.contains(&serde_json::json!({"name": "promql", "table": null})));
        let stages: Vec<&str> = v["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        assert_eq!(stages, STAGES);
        assert!(stages.contains(&"stats") && stages.contains(&"explain"));
        let functions = v["functions"].as_array().unwrap();
        let avg = functions
            .iter()
            .find(|f| f["name"] == "avg")
            .expect("avg is a function");
        assert_eq!(avg["kind"], "aggregate");
        assert!(avg["arity"].is_string());
        for name in ["count", "bucket", "rate", "xid_class", "now"] {
            assert!(
                functions.iter().any(|f| f["name"] == name),
                "{name} is missing: {v}"
            );
        }
    }
}
