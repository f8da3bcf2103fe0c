//! Zalo OA Open API error codes → what happens to the message and to the account.

use giao_proto::events::AccountStatus;

/// What to do after a send failed with a Zalo error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Transient: try again later with backoff.
    Backoff,
    /// The access token is bad or expired: refresh it, then try again.
    RefreshToken,
    /// The uploaded attachment expired: upload again, then try again.
    Reupload,
    /// Permanent for this message: tell the sender, never retry.
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub retry: Retry,
    /// The account status this error implies, if any.
    pub account_status: Option<AccountStatus>,
    /// In words a staff member understands.
    pub reason: &'static str,
}

impl Outcome {
    pub fn retryable(&self) -> bool {
        self.retry != Retry::Never
    }
}

const fn outcome(
    retry: Retry,
    account_status: Option<AccountStatus>,
    reason: &'static str,
) -> Outcome {
    Outcome {
        retry,
        account_status,
        reason,
    }
}

/// Whether the token endpoint's `code` says the refresh token itself is no good (invalid,
/// spent, expired or revoked), so only a new connect helps. -14014 is what Zalo (and the
/// simulator) answer for such a token; any other code (rate limit, system errors) says
/// nothing about the token, and the refresh is tried again.
pub fn refresh_token_refused(code: i64) -> bool {
    code == -14014
}

/// Classifies a non-zero Zalo `error` code. Unknown codes are treated as permanent so a
/// message is never retried forever on something nobody understands.
pub fn classify(code: i64) -> Outcome {
    use AccountStatus::{NeedsLogin, RateLimited};
    use Retry::{Backoff, Never, RefreshToken, Reupload};
    match code {
        -32 => outcome(
            Backoff,
            Some(RateLimited),
            "Zalo rate limit reached; retrying",
        ),
        -100 => outcome(Reupload, None, "the attachment expired; uploading it again"),
        -201 => outcome(Never, None, "Zalo rejected the message as invalid"),
        -211 => outcome(Never, None, "the OA is out of message quota"),
        -213 => outcome(Never, None, "the user does not follow the OA"),
        -216 => outcome(
            RefreshToken,
            None,
            "the access token is invalid; refreshing",
        ),
        -217 => outcome(Never, None, "the user has blocked the OA"),
        -220 => outcome(RefreshToken, None, "the access token expired; refreshing"),
        -223 | -224 => outcome(
            Never,
            Some(NeedsLogin),
            "the OA is not authorised for this API (permission or tier)",
        ),
        -227 => outcome(Never, None, "the user is inactive"),
        -230 => outcome(
            Never,
            None,
            "outside the 7-day window: the user has not interacted in 7 days",
        ),
        -232 => outcome(Never, None, "the user's interaction has expired"),
        -234 => outcome(
            Never,
            None,
            "transaction messages cannot be sent at night (22:00-06:00)",
        ),
        -240 => outcome(Never, None, "this Zalo API version has been shut down"),
        -244 => outcome(
            Never,
            None,
            "the user's account type cannot receive this message",
        ),
        -248 => outcome(Never, None, "the message violates Zalo's content standards"),
        _ => outcome(Never, None, "Zalo refused the message"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_code_maps_to_its_decision() {
        use Retry::*;
        let table: &[(i64, Retry, Option<AccountStatus>)] = &[
            (-32, Backoff, Some(AccountStatus::RateLimited)),
            (-100, Reupload, None),
            (-201, Never, None),
            (-211, Never, None),
            (-213, Never, None),
            (-216, RefreshToken, None),
            (-217, Never, None),
            (-220, RefreshToken, None),
            (-223, Never, Some(AccountStatus::NeedsLogin)),
            (-224, Never, Some(AccountStatus::NeedsLogin)),
            (-227, Never, None),
            (-230, Never, None),
            (-232, Never, None),
            (-234, Never, None),
            (-240, Never, None),
            (-244, Never, None),
            (-248, Never, None),
            (-9999, Never, None),
        ];
        for (code, retry, status) in table {
            let got = classify(*code);
            assert_eq!(got.retry, *retry, "code {code}");
            assert_eq!(got.account_status, *status, "code {code}");
            assert_eq!(got.retryable(), *retry != Never, "code {code}");
        }
        // The window errors are permanent: a sender is told, the message is not retried.
        for code in [-213, -217, -227, -230, -232, -234, -244] {
            assert!(!classify(code).retryable(), "code {code}");
        }
        assert!(classify(-230).reason.contains("7-day"));
    }
}
