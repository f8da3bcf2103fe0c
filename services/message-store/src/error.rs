//! The message store's errors and their one mapping onto gRPC status.

use giao_platform::error::{ErrorCode, ErrorCodeExt, to_status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
    /// Unknown, another tenant's or not visible to the caller; `field` names the request
    /// field that carried the id.
    #[error("{field} \"{}\": not found", shown(id))]
    NotFound { field: String, id: String },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("bus: {0}")]
    Bus(#[from] giao_bus::BusError),
    /// The attachment store failed.
    #[error("attachment storage: {0}")]
    Storage(String),
    /// The caller went away (a stream's receiver was dropped).
    #[error("cancelled by the caller")]
    Cancelled,
    /// Data that should not exist (a bug or manual tampering); logged, never shown.
    #[error("inconsistent data: {0}")]
    Inconsistent(String),
}

/// An id as echoed back: bounded, since it came from the caller.
fn shown(id: &str) -> String {
    id.chars().take(64).collect()
}

impl ErrorCodeExt for Error {
    fn error_code(&self) -> ErrorCode {
        match self {
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::NotFound { .. } => ErrorCode::NotFound,
            Error::Database(
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed,
            )
            | Error::Bus(_) => ErrorCode::Unavailable,
            Error::Database(_) | Error::Inconsistent(_) => ErrorCode::Internal,
            Error::Cancelled | Error::Storage(_) => ErrorCode::Unavailable,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        to_status(&error)
    }
}
