//! Why a job request was not acknowledged, and how HTTP answers it.

use rigwatch_common::http_error::{HttpError, StatusCode};

/// Why a job was not accepted.
#[derive(Debug)]
pub enum SubmitError {
    /// The request itself is wrong (or can never be placed): the message says how.
    Invalid(String),
    /// The job's row could not be written; nothing was queued.
    NotStored(String),
}

impl std::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubmitError::Invalid(m) | SubmitError::NotStored(m) => f.write_str(m),
        }
    }
}

impl HttpError for SubmitError {
    fn status_code(&self) -> StatusCode {
        match self {
            SubmitError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            SubmitError::NotStored(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Why ending a job was not acknowledged.
#[derive(Debug)]
pub enum EndError {
    NotFound(String),
    /// It already ended (and its rows are stored).
    Ended(String),
    /// It ended, but its rows are not durable yet (retried every tick).
    NotStored(String),
}

impl std::fmt::Display for EndError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndError::NotFound(m) | EndError::Ended(m) | EndError::NotStored(m) => f.write_str(m),
        }
    }
}

impl HttpError for EndError {
    fn status_code(&self) -> StatusCode {
        match self {
            EndError::NotFound(_) => StatusCode::NOT_FOUND,
            EndError::Ended(_) => StatusCode::CONFLICT,
            // The job has ended; the same request again confirms once its rows are in.
            EndError::NotStored(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}
