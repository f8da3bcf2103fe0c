//! The auth service's errors and their one mapping onto gRPC status.

use giao_platform::error::{ErrorCode, ErrorCodeExt, to_status};

/// The one message for every failed password login, so that a caller cannot tell an unknown
/// user from a wrong password.
pub const BAD_LOGIN: &str = "invalid login or password";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    #[error("{0}")]
    AlreadyExists(String),
    /// A missing, wrong or revoked credential; the message never contains it.
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("bus: {0}")]
    Bus(#[from] giao_bus::BusError),
    /// Key material that cannot be used (wrong key-encryption key, corrupt row).
    #[error("key material: {0}")]
    Keys(String),
    /// Data that should not exist (a bug or manual tampering); logged, never shown.
    #[error("inconsistent data: {0}")]
    Inconsistent(String),
}

impl Error {
    pub fn unauthenticated(message: &str) -> Self {
        Error::Unauthenticated(message.to_string())
    }
}

impl ErrorCodeExt for Error {
    fn error_code(&self) -> ErrorCode {
        match self {
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::NotFound { .. } => ErrorCode::NotFound,
            Error::AlreadyExists(_) => ErrorCode::AlreadyExists,
            Error::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Error::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            Error::Database(
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed,
            )
            | Error::Bus(_) => ErrorCode::Unavailable,
            Error::Database(_) | Error::Keys(_) | Error::Inconsistent(_) => ErrorCode::Internal,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        to_status(&error)
    }
}

/// A unique-constraint violation, for turning duplicates into AlreadyExists.
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}
