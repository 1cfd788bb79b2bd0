//! The query crate's error type.

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
}

impl Error {
    /// The HTTP status: 400 for problems with the query, 500 for failures while running it.
    pub fn status_code(&self) -> u16 {
        use datafusion::error::DataFusionError as D;
        match self {
            Error::EmptyQuery | Error::UnknownFormat(_) => 400,
            Error::ExplainRefused => 403,
            Error::TooManyRows { .. } => 413,
            Error::TooManyQueries { .. } => 429,
            Error::Timeout { .. } | Error::MemoryLimit { .. } => 503,
            Error::DataFusion(e) => match e.find_root() {
                D::SQL(..) | D::Plan(_) | D::SchemaError(..) | D::NotImplemented(_) => 400,
                // The query failed on the data it reads (a cast, a division by zero, a bad
                // regex, an overflow): the query's problem, reported as it is.
                D::Execution(_) => 400,
                D::ArrowError(e, _) => match e.as_ref() {
                    arrow::error::ArrowError::CastError(_)
                    | arrow::error::ArrowError::DivideByZero
                    | arrow::error::ArrowError::ComputeError(_)
                    | arrow::error::ArrowError::ParseError(_)
                    | arrow::error::ArrowError::InvalidArgumentError(_)
                    | arrow::error::ArrowError::ArithmeticOverflow(_) => 400,
                    _ => 500,
                },
                D::ResourcesExhausted(_) => 503,
                _ => 500,
            },
            Error::Encode { .. } => 500,
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
