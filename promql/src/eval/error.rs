//! Evaluation errors and their Prometheus API error types.

use thiserror::Error;

/// The Prometheus HTTP API `errorType` an [`EvalError`] maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The query is wrong for the data or its arguments (`bad_data`, HTTP 400).
    BadData,
    /// The query failed while running (`execution`, HTTP 422).
    Execution,
    /// The deadline passed (`timeout`, HTTP 503).
    Timeout,
    /// The caller gave up (`canceled`, HTTP 499 in Prometheus' API).
    Canceled,
    /// A bug in the evaluator (`internal`, HTTP 500).
    Internal,
}

impl ErrorKind {
    /// The API's `errorType` string.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadData => "bad_data",
            ErrorKind::Execution => "execution",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Canceled => "canceled",
            ErrorKind::Internal => "internal",
        }
    }

    /// The HTTP status Prometheus' API answers with for this kind.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::BadData => 400,
            ErrorKind::Execution => 422,
            ErrorKind::Timeout => 503,
            ErrorKind::Canceled => 499,
            ErrorKind::Internal => 500,
        }
    }

    /// Whether running the same query again may succeed (only a timeout can: the
    /// other kinds are about the query, the data or a bug).
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Timeout)
    }
}

/// Why an evaluation failed. Messages follow Prometheus' wording where one exists.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum EvalError {
    /// Two series of one vector ended with identical labels (e.g. after a function
    /// dropped the metric name).
    #[error("vector cannot contain metrics with the same labelset")]
    DuplicateLabelset,
    /// A vector-matching binary operation found duplicate series on one side.
    #[error(
        "found duplicate series for the match group {group} on the {side} hand-side of the operation: [{first}, {second}];many-to-many matching not allowed: matching labels must be unique on one side"
    )]
    ManyToMany {
        group: String,
        side: &'static str,
        first: String,
        second: String,
    },
    /// group_left/group_right found more than one series on the "one" side.
    #[error(
        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
    )]
    MultipleMatches,
    /// An aggregation or function argument was out of its domain.
    #[error("{0}")]
    InvalidArgument(String),
    /// A regular expression given to label_replace or similar did not compile.
    #[error("invalid regular expression in {function}(): {message}")]
    InvalidRegex {
        function: &'static str,
        message: String,
    },
    /// A label name produced or given to a function is not valid.
    #[error("invalid {what} name {name:?}")]
    InvalidLabelName { what: &'static str, name: String },
    /// The query would hold more samples in memory than allowed.
    #[error(
        "query processing would load too many samples into memory in query execution (limit {limit})"
    )]
    TooManySamples { limit: usize },
    /// The deadline in [`crate::eval::EvalOptions`] passed.
    #[error("query timed out in {stage}")]
    Timeout { stage: &'static str },
    /// The caller cancelled the query.
    #[error("query was canceled in {stage}")]
    Canceled { stage: &'static str },
    /// The expression cannot be evaluated this way (e.g. a range query of a string).
    #[error("{0}")]
    Unsupported(String),
    /// Reading series from storage failed.
    #[error("storage: {0}")]
    Storage(String),
    /// An evaluator invariant broke: a bug.
    #[error("internal error: {0}")]
    Internal(String),
}

impl EvalError {
    /// The Prometheus API error type.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EvalError::InvalidArgument(_)
            | EvalError::InvalidRegex { .. }
            | EvalError::InvalidLabelName { .. }
            | EvalError::Unsupported(_) => ErrorKind::BadData,
            EvalError::DuplicateLabelset
            | EvalError::ManyToMany { .. }
            | EvalError::MultipleMatches
            | EvalError::TooManySamples { .. }
            | EvalError::Storage(_) => ErrorKind::Execution,
            EvalError::Timeout { .. } => ErrorKind::Timeout,
            EvalError::Canceled { .. } => ErrorKind::Canceled,
            EvalError::Internal(_) => ErrorKind::Internal,
        }
    }
}
