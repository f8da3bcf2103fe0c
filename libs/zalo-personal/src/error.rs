//! The library's one error type.

/// What went wrong talking the Zalo web protocol.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input that cannot be encoded, decoded or decrypted; names what was wrong.
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    /// Ciphertext that does not decrypt under the key: a wrong or stale key, or corrupted data.
    /// Kept apart from [`Error::Malformed`] because the cure differs (log in again, reconnect).
    #[error("cannot decrypt {what}: wrong key or corrupted data")]
    Decrypt { what: &'static str },
    /// The server answered with a non-zero `error_code` (for example 102: the session key
    /// timed out; -69 or 221: rate limits).
    #[error("zalo error {code}: {message}")]
    Api { code: i64, message: String },
}

impl Error {
    pub(crate) fn malformed(what: &'static str, detail: impl Into<String>) -> Self {
        Self::Malformed {
            what,
            detail: detail.into(),
        }
    }

    /// The server's `error_code`, when the error is an answer of the server.
    pub fn api_code(&self) -> Option<i64> {
        match self {
            Self::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}
