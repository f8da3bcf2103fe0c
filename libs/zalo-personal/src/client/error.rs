//! What a caller of the client sees when a call fails, with Zalo's error codes sorted into what
//! they mean for the account (log in again, slow down, try again).

/// Zalo's `error_code` for a session key that was submitted wrongly or timed out. Answered by
/// `getLoginInfo` when the cookies have expired, and by API calls when `zpw_enk` has.
pub const SESSION_KEY_TIMEOUT: i64 = 102;
/// "Retry limit": the account sent too much; wait before sending again.
pub const RETRY_LIMIT: i64 = -69;
/// "Request limit": too many requests; wait before sending again.
pub const REQUEST_LIMIT: i64 = 221;

/// A failed call of the personal-account client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The request never reached the server: safe to send again.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// Sent, but no (complete) answer: the server may have acted on it.
    #[error("no answer: {0}")]
    NoAnswer(String),
    /// The server answered something this client does not understand.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    /// Encoding, decoding or decrypting failed.
    #[error(transparent)]
    Protocol(crate::Error),
    /// The session key (`zpw_enk`) timed out or was refused (code 102): log in with the
    /// cookies again; if that also fails the account needs a QR login.
    #[error("session key expired (code {SESSION_KEY_TIMEOUT})")]
    SessionKeyExpired,
    /// The cookies no longer log in: the account must be logged in again by QR.
    #[error("the account must log in again (code {code}): {message}")]
    NeedsLogin { code: i64, message: String },
    /// Zalo's retry limit (-69): pause this account's sending.
    #[error("retry limit reached (code {RETRY_LIMIT})")]
    RetryLimit,
    /// Zalo's request limit (221): pause this account's sending.
    #[error("request limit reached (code {REQUEST_LIMIT})")]
    RequestLimit,
    /// Any other non-zero `error_code`.
    #[error("Zalo error {code}: {message}")]
    Zalo { code: i64, message: String },
}

impl ClientError {
    /// Sorts a non-zero `error_code` of an API call.
    pub fn from_code(code: i64, message: &str) -> Self {
        match code {
            SESSION_KEY_TIMEOUT => Self::SessionKeyExpired,
            RETRY_LIMIT => Self::RetryLimit,
            REQUEST_LIMIT => Self::RequestLimit,
            _ => Self::Zalo {
                code,
                message: message.to_string(),
            },
        }
    }

    /// The Zalo error code behind this error, when there is one.
    pub fn code(&self) -> Option<i64> {
        match self {
            Self::SessionKeyExpired => Some(SESSION_KEY_TIMEOUT),
            Self::RetryLimit => Some(RETRY_LIMIT),
            Self::RequestLimit => Some(REQUEST_LIMIT),
            Self::NeedsLogin { code, .. } | Self::Zalo { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// A rate limit: the same request may succeed after a pause.
    pub fn is_rate_limit(&self) -> bool {
        matches!(self, Self::RetryLimit | Self::RequestLimit)
    }

    /// Nothing works until the account logs in again (cookies, or QR when they fail too).
    pub fn needs_login(&self) -> bool {
        matches!(self, Self::SessionKeyExpired | Self::NeedsLogin { .. })
    }
}

impl From<crate::Error> for ClientError {
    /// A server's `error_code` is sorted like any other; the rest are protocol failures.
    fn from(error: crate::Error) -> Self {
        match error {
            crate::Error::Api { code, message } => Self::from_code(code, &message),
            other => Self::Protocol(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_sort_into_account_outcomes() {
        assert!(matches!(
            ClientError::from_code(102, "timeout"),
            ClientError::SessionKeyExpired
        ));
        assert!(ClientError::from_code(102, "").needs_login());
        assert!(ClientError::from_code(-69, "").is_rate_limit());
        assert!(ClientError::from_code(221, "").is_rate_limit());
        let other = ClientError::from_code(-1, "nope");
        assert_eq!(other.code(), Some(-1));
        assert!(!other.is_rate_limit() && !other.needs_login());
    }
}
