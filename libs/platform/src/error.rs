//! One small set of error codes shared by every service. Each service keeps its own
//! `thiserror` enum and implements [`ErrorCodeExt`] for it; [`to_status`] then turns any of
//! them into a `tonic::Status` the same way everywhere: client errors keep their message,
//! internal errors are logged and answered with a generic message so nothing leaks.

use std::fmt::Display;

/// What kind of failure an error is, independent of transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    Unauthenticated,
    FailedPrecondition,
    ResourceExhausted,
    Unavailable,
    DeadlineExceeded,
    Unimplemented,
    Internal,
}

impl ErrorCode {
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
            ErrorCode::NotFound => tonic::Code::NotFound,
            ErrorCode::AlreadyExists => tonic::Code::AlreadyExists,
            ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
            ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorCode::FailedPrecondition => tonic::Code::FailedPrecondition,
            ErrorCode::ResourceExhausted => tonic::Code::ResourceExhausted,
            ErrorCode::Unavailable => tonic::Code::Unavailable,
            ErrorCode::DeadlineExceeded => tonic::Code::DeadlineExceeded,
            ErrorCode::Unimplemented => tonic::Code::Unimplemented,
            ErrorCode::Internal => tonic::Code::Internal,
        }
    }

    pub fn http_status(self) -> http::StatusCode {
        match self {
            ErrorCode::InvalidArgument => http::StatusCode::BAD_REQUEST,
            ErrorCode::NotFound => http::StatusCode::NOT_FOUND,
            ErrorCode::AlreadyExists => http::StatusCode::CONFLICT,
            ErrorCode::PermissionDenied => http::StatusCode::FORBIDDEN,
            ErrorCode::Unauthenticated => http::StatusCode::UNAUTHORIZED,
            ErrorCode::FailedPrecondition => http::StatusCode::PRECONDITION_FAILED,
            ErrorCode::ResourceExhausted => http::StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable => http::StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::DeadlineExceeded => http::StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::Unimplemented => http::StatusCode::NOT_IMPLEMENTED,
            ErrorCode::Internal => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether a caller may retry the same request (with the same idempotency key).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::Unavailable | ErrorCode::DeadlineExceeded | ErrorCode::ResourceExhausted
        )
    }
}

/// Implemented by every service's error enum.
pub trait ErrorCodeExt {
    fn error_code(&self) -> ErrorCode;
}

/// Turns a service error into a gRPC status. Internal and unavailable errors are logged with
/// their cause and answered with a generic message: database and driver details never reach
/// callers.
pub fn to_status<E: ErrorCodeExt + Display>(error: &E) -> tonic::Status {
    let code = error.error_code();
    match code {
        ErrorCode::Internal => {
            tracing::error!(error = %error, "internal error");
            tonic::Status::internal("internal error")
        }
        ErrorCode::Unavailable => {
            tracing::warn!(error = %error, "dependency unavailable");
            tonic::Status::unavailable("service temporarily unavailable, retry later")
        }
        _ => tonic::Status::new(code.grpc_code(), error.to_string()),
    }
}

/// Builds the message for an invalid field, so every service words it the same way:
/// `invalid conversation_id "abc": expected a UUID`.
pub fn invalid_field(field: &str, value: &str, expected: &str) -> String {
    let shown: String = value.chars().take(64).collect();
    format!("invalid {field} \"{shown}\": {expected}")
}

/// A ready-made error for request validation, usable by any service.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("missing {0}: required")]
    Missing(&'static str),
    #[error("{0}")]
    Invalid(String),
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
}

impl ErrorCodeExt for RequestError {
    fn error_code(&self) -> ErrorCode {
        match self {
            RequestError::Missing(_) | RequestError::Invalid(_) => ErrorCode::InvalidArgument,
            RequestError::NotFound { .. } => ErrorCode::NotFound,
        }
    }
}

impl From<RequestError> for tonic::Status {
    fn from(error: RequestError) -> Self {
        to_status(&error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("database exploded: password=hunter2")]
    struct Secret;

    impl ErrorCodeExt for Secret {
        fn error_code(&self) -> ErrorCode {
            ErrorCode::Internal
        }
    }

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let status = to_status(&Secret);
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("hunter2"));
    }

    #[test]
    fn client_errors_keep_the_field_name() {
        let status = to_status(&RequestError::Invalid(invalid_field(
            "conversation_id",
            "abc",
            "expected a UUID",
        )));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "invalid conversation_id \"abc\": expected a UUID"
        );
    }
}
