//! The connector's errors and their one mapping onto gRPC status.

use giao_platform::error::{ErrorCode, ErrorCodeExt, to_status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("bus: {0}")]
    Bus(#[from] giao_bus::BusError),
}

impl ErrorCodeExt for Error {
    fn error_code(&self) -> ErrorCode {
        match self {
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::NotFound { .. } => ErrorCode::NotFound,
            Error::Unavailable(_) => ErrorCode::Unavailable,
            Error::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            Error::Database(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) | Error::Bus(_) => {
                ErrorCode::Unavailable
            }
            Error::Database(_) => ErrorCode::Internal,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        to_status(&error)
    }
}
