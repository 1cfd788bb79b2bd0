//! The scheduler's one error type.

use rigwatch_common::http_error::{HttpError, StatusCode};

use thiserror::Error;

/// Everything that can go wrong in the allocator, the ledger and the simulator.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Error {
    #[error("unknown GPU {uuid:?}")]
    UnknownGpu { uuid: String },
    #[error("unknown node {node:?}")]
    UnknownNode { node: String },
    #[error("GPU {uuid:?} is already registered (on node {node:?})")]
    DuplicateGpu { uuid: String, node: String },
    #[error("unknown job {job}")]
    UnknownJob { job: u64 },
    #[error("job {job} is already known (queued or running)")]
    DuplicateJob { job: u64 },
    #[error("job {job}: invalid GPU demand: {reason}")]
    InvalidDemand { job: u64, reason: &'static str },
    #[error("more than {max} distinct GPU models; model {model:?} cannot be interned")]
    TooManyModels { model: String, max: usize },
    #[error("job {job} can never be placed: no node has enough acceptable GPUs and host capacity")]
    Unplaceable { job: u64 },
    #[error("unknown placement policy {name:?}; expected one of {expected}")]
    UnknownPolicy {
        name: String,
        expected: &'static str,
    },
    #[error("lease rows: lease {lease} appears twice with different contents")]
    ConflictingLeaseRows { lease: u64 },
    #[error(
        "lease rows: GPU {uuid:?} would be over-allocated ({total_milli}/1000) by lease {lease}"
    )]
    OverAllocatedOnRebuild {
        uuid: String,
        lease: u64,
        total_milli: u32,
    },
    #[error(
        "rate change for model {model:?} effective at {effective_ms} ms is before the ledger's accrued horizon {accrued_ms} ms"
    )]
    RetroactiveRateChange {
        model: String,
        effective_ms: i64,
        accrued_ms: i64,
    },
    #[error(
        "rate change for model {model:?} effective at {effective_ms} ms is before its previous change at {last_ms} ms; changes must come in time order"
    )]
    RateChangeOutOfOrder {
        model: String,
        effective_ms: i64,
        last_ms: i64,
    },
    #[error("{path}: {source_msg}")]
    Io { path: String, source_msg: String },
    #[error("{path}:{line}: column {column:?}: {reason}")]
    Trace {
        path: String,
        line: usize,
        column: String,
        reason: String,
    },
}

impl HttpError for Error {
    /// HTTP status a client should see for this error (used by the extender routes).
    fn status_code(&self) -> StatusCode {
        match self {
            Error::UnknownGpu { .. } | Error::UnknownNode { .. } | Error::UnknownJob { .. } => {
                StatusCode::NOT_FOUND
            }
            Error::DuplicateGpu { .. } | Error::DuplicateJob { .. } => StatusCode::CONFLICT,
            Error::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// Whether repeating the same request later can succeed.
    fn is_retryable(&self) -> bool {
        matches!(self, Error::Io { .. } | Error::UnknownNode { .. })
    }
}
