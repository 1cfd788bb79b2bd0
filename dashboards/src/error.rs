//! The portal's errors: each knows its HTTP status and says what was wrong.

use axum::response::{IntoResponse, Response};
use rigwatch_common::http_error::{HttpError, StatusCode, error_response};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Query(#[from] rigwatch_query::Error),
    #[error("no dashboard `{name}` (known: {known})")]
    NoDashboard { name: String, known: String },
    #[error("dashboard `{name}` is not valid JSON: {source}")]
    BadDashboard {
        name: String,
        source: serde_json::Error,
    },
    #[error("{what}")]
    BadRequest { what: String },
    #[error("{what}")]
    Forbidden { what: String },
    #[error("cannot issue a token: {0}")]
    Auth(#[from] rigwatch_storage::auth::AuthError),
    /// A per-caller limit is reached (429); `retry_after` says when to try again.
    #[error("{what}")]
    TooMany {
        what: String,
        retry_after: std::time::Duration,
    },
    /// The server holds its maximum of portal sessions (503).
    #[error(transparent)]
    SessionsFull(#[from] crate::session::SessionsFull),
    #[error("internal error: {0}")]
    Internal(String),
}

impl HttpError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::Query(e) => e.status_code(),
            Error::NoDashboard { .. } => StatusCode::NOT_FOUND,
            Error::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Error::Forbidden { .. } => StatusCode::FORBIDDEN,
            Error::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::SessionsFull(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Auth(rigwatch_storage::auth::AuthError::NotFound(_)) => StatusCode::NOT_FOUND,
            Error::Auth(rigwatch_storage::auth::AuthError::Invalid(_)) => StatusCode::BAD_REQUEST,
            Error::Auth(rigwatch_storage::auth::AuthError::TooManyTokens { .. }) => {
                StatusCode::CONFLICT
            }
            Error::BadDashboard { .. } | Error::Auth(_) | Error::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// How long the caller should wait before trying again, when waiting can help.
    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Error::TooMany { retry_after, .. } => Some(*retry_after),
            Error::SessionsFull(_) => Some(SESSIONS_FULL_RETRY),
            _ => None,
        }
    }
}

/// `Retry-After` when no session can be started: sessions end as people sign out.
const SESSIONS_FULL_RETRY: std::time::Duration = std::time::Duration::from_secs(60);

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        error_response(&self)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
