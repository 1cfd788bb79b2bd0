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
}

impl Error {
    /// The HTTP status: 400 for problems with the query, 500 for failures while running it.
    pub fn status_code(&self) -> u16 {
        use datafusion::error::DataFusionError as D;
        match self {
            Error::EmptyQuery | Error::UnknownFormat(_) => 400,
            Error::DataFusion(e) => match e.find_root() {
                D::SQL(..) | D::Plan(_) | D::SchemaError(..) | D::NotImplemented(_) => 400,
                D::ResourcesExhausted(_) => 503,
                _ => 500,
            },
            Error::Encode { .. } => 500,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
