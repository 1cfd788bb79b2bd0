//! The query crate's error type.

use rigwatch_common::http_error::{HttpError, StatusCode};

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The query text is empty.
    #[error("empty query: send the SQL text as the request body or as ?q=")]
    EmptyQuery,

    /// DataFusion rejected or failed the query; its message names the problem.
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),

    /// The result could not be encoded.
    #[error("cannot encode result as {format}: {source}")]
    Encode {
        format: &'static str,
        #[source]
        source: arrow::error::ArrowError,
    },

    /// A JSON request body that is not `{"query": "..."}`.
    #[error("{0}")]
    BodyJson(#[source] serde_json::Error),

    /// A request body that is not UTF-8 text.
    #[error("query is not UTF-8: {0}")]
    BodyUtf8(#[source] std::string::FromUtf8Error),

    /// No caller on the request (the access layer puts one there for every allowed call).
    #[error("not authenticated")]
    NotAuthenticated,

    /// An unknown `format` parameter.
    #[error("unknown format `{0}` (expected json, jsonl, csv or arrow)")]
    UnknownFormat(String),

    /// The statement ran past its deadline and was stopped.
    #[error("query stopped after {after:?} (the limit is --query-timeout)")]
    Timeout { after: std::time::Duration },

    /// The answer has more rows than one answer may hold.
    #[error(
        "the answer has more than {limit} rows (the limit is --query-max-rows): aggregate, filter or add LIMIT"
    )]
    TooManyRows { limit: usize },

    /// The statement's operators needed more memory than the caller's share.
    #[error(
        "the query needs more than {limit} bytes of working memory (the limit is --query-max-memory): {source}"
    )]
    MemoryLimit {
        limit: usize,
        #[source]
        source: datafusion::error::DataFusionError,
    },

    /// The caller already runs as many statements as it may at once.
    #[error(
        "already running {limit} queries at once (the limit is --query-max-concurrent): retry when one ends"
    )]
    TooManyQueries { limit: usize },

    /// A supplier asked for a plan: plans and their run-time counts describe the whole
    /// table, every supplier's rows included.
    #[error("EXPLAIN is not available to supplier tokens (plans count every supplier's rows)")]
    ExplainRefused,

    /// A DSL query that does not parse or does not fit the caller's tables.
    #[error("{0}")]
    Dsl(#[from] rigwatch_dsl::Error),

    /// A task of the query panicked (a bug).
    #[error("query task failed: {0}")]
    Task(#[from] tokio::task::JoinError),

    /// A `promql(…)` source of a DSL query could not be evaluated.
    #[error("{pos}: promql source: {source}")]
    DslPromql {
        pos: rigwatch_dsl::Pos,
        #[source]
        source: PromqlError,
    },
}

/// Why a PromQL evaluation failed (the Prometheus API and the DSL's `promql(…)` sources).
#[derive(Debug, thiserror::Error)]
pub enum PromqlError {
    #[error("{0}")]
    Parse(#[from] rigwatch_promql::ParseError),
    #[error("{0}")]
    Eval(#[from] rigwatch_promql::eval::EvalError),
    #[error("{0}")]
    Fetch(#[from] crate::prometheus::source::FetchError),
    /// Reading the series took longer than the query may.
    #[error("query timed out in query preparation")]
    Timeout,
    /// A range with more steps than one series may have.
    #[error(
        "exceeded maximum resolution of {limit} points per timeseries ({points} asked): use a larger step"
    )]
    TooManyPoints { points: i64, limit: i64 },
    /// The result is not series (a string).
    #[error("the expression gives a {type_name}, not series")]
    NotSeries { type_name: &'static str },
    /// The caller's session could not be set up.
    #[error("{0}")]
    Session(Box<Error>),
    #[error("evaluation panicked: {0}")]
    Panicked(String),
}

impl From<tokio::task::JoinError> for PromqlError {
    fn from(e: tokio::task::JoinError) -> Self {
        PromqlError::Panicked(e.to_string())
    }
}

impl PromqlError {
    /// A panic caught while evaluating, with its message.
    pub fn panicked(payload: &(dyn std::any::Any + Send)) -> Self {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        PromqlError::Panicked(msg)
    }
}

impl HttpError for PromqlError {
    /// The HTTP status, as the Prometheus API answers it.
    fn status_code(&self) -> StatusCode {
        use crate::prometheus::source::FetchError;
        match self {
            PromqlError::Parse(_) | PromqlError::TooManyPoints { .. } => StatusCode::BAD_REQUEST,
            PromqlError::NotSeries { .. } => StatusCode::BAD_REQUEST,
            PromqlError::Eval(e) => match e.kind().http_status() {
                // 499 (client gone) is not a status a client can see.
                499 => StatusCode::SERVICE_UNAVAILABLE,
                s => StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            },
            PromqlError::Fetch(FetchError::TooManySamples { .. }) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            PromqlError::Fetch(_) | PromqlError::Panicked(_) => StatusCode::INTERNAL_SERVER_ERROR,
            PromqlError::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            PromqlError::Session(e) => e.status_code(),
        }
    }
}

impl HttpError for Error {
    /// The HTTP status: 400 for problems with the query, 500 for failures while running it.
    fn status_code(&self) -> StatusCode {
        use datafusion::error::DataFusionError as D;
        match self {
            Error::EmptyQuery
            | Error::UnknownFormat(_)
            | Error::BodyJson(_)
            | Error::BodyUtf8(_) => StatusCode::BAD_REQUEST,
            Error::NotAuthenticated => StatusCode::UNAUTHORIZED,
            Error::Dsl(e) => e.status_code(),
            Error::DslPromql { source, .. } => source.status_code(),
            Error::ExplainRefused => StatusCode::FORBIDDEN,
            Error::TooManyRows { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::TooManyQueries { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Timeout { .. } | Error::MemoryLimit { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::DataFusion(e) => match e.find_root() {
                D::SQL(..) | D::Plan(_) | D::SchemaError(..) | D::NotImplemented(_) => {
                    StatusCode::BAD_REQUEST
                }
                // The query failed on the data it reads (a cast, a division by zero, a bad
                // regex, an overflow): the query's problem, reported as it is.
                D::Execution(_) => StatusCode::BAD_REQUEST,
                D::ArrowError(e, _) => match e.as_ref() {
                    arrow::error::ArrowError::CastError(_)
                    | arrow::error::ArrowError::DivideByZero
                    | arrow::error::ArrowError::ComputeError(_)
                    | arrow::error::ArrowError::ParseError(_)
                    | arrow::error::ArrowError::InvalidArgumentError(_)
                    | arrow::error::ArrowError::ArithmeticOverflow(_) => StatusCode::BAD_REQUEST,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                },
                D::ResourcesExhausted(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Error::Encode { .. } | Error::Task(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl Error {
    /// Whether the failure is a data file that could not be decoded (a corrupt page), which
    /// a scrub of the store can find and exclude.
    pub fn is_corrupt_data(&self) -> bool {
        matches!(self, Error::DataFusion(e) if is_parquet(e))
    }
}

fn is_parquet(e: &datafusion::error::DataFusionError) -> bool {
    use datafusion::error::DataFusionError as D;
    match e.find_root() {
        D::ParquetError(_) => true,
        D::ArrowError(a, _) => matches!(a.as_ref(), arrow::error::ArrowError::ParquetError(_)),
        _ => false,
    }
}

/// Logs an internal failure with a fresh request id and returns the id. Clients get the
/// id and a generic message; the detail (file paths, internal state) stays in the log.
pub fn log_internal(detail: &dyn std::fmt::Display) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let id = format!("{t:x}-{n:x}");
    tracing::error!(request_id = %id, error = %detail, "internal error answering a query");
    id
}

/// The message a client gets for an internal failure.
pub fn internal_message(request_id: &str) -> String {
    format!("internal error (request id {request_id}; the server log has the detail)")
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
