//! The portal's errors: each knows its HTTP status and says what was wrong.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

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
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn status_code(&self) -> StatusCode {
        match self {
            Error::Query(e) => {
                StatusCode::from_u16(e.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            Error::NoDashboard { .. } => StatusCode::NOT_FOUND,
            Error::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Error::Forbidden { .. } => StatusCode::FORBIDDEN,
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
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status_code();
        (
            status,
            axum::Json(serde_json::json!({ "status": "error", "error": self.to_string() })),
        )
            .into_response()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
