//! The reporting service's errors and their one mapping onto gRPC status.

use giao_platform::error::{ErrorCode, ErrorCodeExt, to_status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
    /// Unknown, or not visible to the caller (the two are not told apart).
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl ErrorCodeExt for Error {
    fn error_code(&self) -> ErrorCode {
        match self {
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::NotFound { .. } => ErrorCode::NotFound,
            Error::Database(
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed,
            ) => ErrorCode::Unavailable,
            Error::Database(_) => ErrorCode::Internal,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        to_status(&error)
    }
}
