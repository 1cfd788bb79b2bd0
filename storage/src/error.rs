//! The storage crate's error type.

use rigwatch_common::http_error::{HttpError, StatusCode};

use std::path::PathBuf;

use crate::batch::{FieldType, RowError};

/// Everything that can go wrong in storage. Variants carry typed context; [`Error::status_code`]
/// says how an HTTP layer should answer and [`Error::is_retryable`] whether a retry can help.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "type conflict in table `{table}`, column `{column}`: it is {existing} but this write has {attempted}"
    )]
    TypeConflict {
        table: String,
        column: String,
        existing: ColumnDesc,
        attempted: ColumnDesc,
    },

    #[error("invalid row: {0}")]
    InvalidRow(#[from] RowError),

    #[error(
        "table `{table}`: names containing `@` are reserved for rollup tables, which rigwatch builds itself; write to the raw table instead"
    )]
    ReservedTable { table: String },

    #[error("table `{table}` would exceed {limit} columns")]
    TooManyColumns { table: String, limit: usize },

    #[error(
        "write buffer is over its memory budget ({used} of {budget} bytes); retry after the next persist"
    )]
    Backpressure { used: usize, budget: usize },

    #[error("the database is shutting down")]
    ShuttingDown,

    #[error("WAL I/O error at {path}: {source}")]
    WalIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("corrupt WAL record in {path} at byte {offset}: {reason}")]
    WalCorrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    #[error("catalog error: {0}")]
    Catalog(String),

    #[error(
        "catalog conflict: this node committed from version {expected}, but {detail}; its change was not applied"
    )]
    CatalogConflict { expected: u64, detail: String },

    #[error("{0}")]
    Fenced(String),

    #[error(
        "this node serves queries only (--mode query): writes go to the node that owns the shard"
    )]
    ReadOnly,

    #[error("object store error: {0}")]
    ObjectStore(#[from] object_store::Error),

    #[error("parquet error: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),

    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    #[error("query error: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),

    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    #[error("internal error: {0}")]
    Internal(String),
}

/// A column's kind as shown in errors: `tag` or a field type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnDesc {
    Tag,
    Field(FieldType),
}

impl std::fmt::Display for ColumnDesc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ColumnDesc::Tag => f.write_str("a tag"),
            ColumnDesc::Field(t @ crate::batch::FieldType::I64) => write!(f, "an {t} field"),
            ColumnDesc::Field(t) => write!(f, "a {t} field"),
        }
    }
}

impl HttpError for Error {
    /// The HTTP status this error maps to.
    fn status_code(&self) -> StatusCode {
        match self {
            Error::TypeConflict { .. }
            | Error::InvalidRow(_)
            | Error::TooManyColumns { .. }
            | Error::ReservedTable { .. } => StatusCode::BAD_REQUEST,
            Error::Backpressure { .. }
            | Error::ShuttingDown
            | Error::Fenced(_)
            | Error::ReadOnly => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether the same request may succeed if retried later.
    fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Backpressure { .. } | Error::ShuttingDown | Error::Fenced(_)
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
