//! Plain types and rules of the auth service, away from gRPC and SQL: user fields and their
//! validation, passwords, opaque secrets, lockout, and the audit chain ([`audit`]).

pub mod audit;

use chrono::{DateTime, Utc};
use giao_authz::Role;
use giao_platform::error::invalid_field;
use sha2::{Digest, Sha256};

use crate::error::Error;

pub const MAX_NAME_CHARS: usize = 200;
pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_BYTES: usize = 1024;
pub const MAX_TEAMS: usize = 50;
pub const MAX_SCOPES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserStatus {
    Active,
    Suspended,
    Offboarded,
}

impl UserStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Suspended => "suspended",
            UserStatus::Offboarded => "offboarded",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "active" => Some(UserStatus::Active),
            "suspended" => Some(UserStatus::Suspended),
            "offboarded" => Some(UserStatus::Offboarded),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRecord {
    pub id: String,
    pub display_name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub tenant_id: String,
    pub id: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub display_name: String,
    pub role: Role,
    pub status: UserStatus,
    pub team_ids: Vec<String>,
    pub session_version: i64,
    /// Argon2id PHC string; `None` when no password was ever set.
    pub password_hash: Option<String>,
    pub failed_logins: i64,
    pub locked_until: Option<DateTime<Utc>>,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password hash stays out of logs.
        f.debug_struct("UserRecord")
            .field("tenant_id", &self.tenant_id)
            .field("id", &self.id)
            .field("role", &self.role)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl UserRecord {
    pub fn is_locked(&self, now: DateTime<Utc>) -> bool {
        self.locked_until.is_some_and(|until| until > now)
    }
}

/// Filters of ListUsers; `after` is the last user id of the previous page.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    pub role: Option<Role>,
    pub status: Option<UserStatus>,
    pub team_id: Option<String>,
    pub after: Option<String>,
    pub limit: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    pub token_hash: String,
    pub tenant_id: String,
    pub user_id: String,
    pub family_id: String,
    pub session_version: i64,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub public_key: Vec<u8>,
    /// nonce (12 bytes) followed by the ChaCha20-Poly1305 ciphertext of the 32-byte seed.
    pub encrypted_private_key: Vec<u8>,
    pub created_at: DateTime<Utc>,
    /// When it stopped signing; it verifies until the tokens it signed have expired.
    pub retired_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for SigningKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRecord")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub scopes: Vec<String>,
    /// SHA-256 (hex) of the whole `gk_…` string.
    pub key_hash: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Filters of ListAudit.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Seq of the last record of the previous page.
    pub after_seq: Option<i64>,
    pub oldest_first: bool,
    pub limit: i64,
}

/// SHA-256 hex: how refresh tokens and API keys are stored.
pub fn sha256_hex(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

/// 32 random bytes, base64url: the secret part of refresh tokens, API keys and passwords.
pub fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    giao_authz::token::encode_secret(&bytes)
}

pub fn new_refresh_token() -> String {
    format!("rt_{}", random_secret())
}

/// Trims and lowercases an email; `None` for an empty one.
pub fn normalize_email(field: &str, raw: &str) -> Result<Option<String>, Error> {
    let email = raw.trim().to_lowercase();
    if email.is_empty() {
        return Ok(None);
    }
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
        })
        && !email.chars().any(char::is_whitespace);
    if !valid {
        return Err(Error::InvalidArgument(invalid_field(
            field,
            raw,
            "expected an email address",
        )));
    }
    Ok(Some(email))
}

/// Keeps digits (and a leading +); `None` for an empty one.
pub fn normalize_phone(field: &str, raw: &str) -> Result<Option<String>, Error> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    let plus = trimmed.starts_with('+');
    let digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
    let only_separators = trimmed
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')' | '+'));
    if !only_separators || !(8..=15).contains(&digits.len()) {
        return Err(Error::InvalidArgument(invalid_field(
            field,
            raw,
            "expected a phone number of 8 to 15 digits",
        )));
    }
    Ok(Some(if plus { format!("+{digits}") } else { digits }))
}

/// The login field of Login: an email when it has an `@`, else a phone number.
pub fn normalize_login(raw: &str) -> Option<String> {
    if raw.contains('@') {
        normalize_email("login", raw).ok().flatten()
    } else {
        normalize_phone("login", raw).ok().flatten()
    }
}

pub fn validate_display_name(raw: &str) -> Result<String, Error> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(Error::InvalidArgument(
            "missing display_name: required".into(),
        ));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(Error::InvalidArgument(format!(
            "invalid display_name: at most {MAX_NAME_CHARS} characters"
        )));
    }
    Ok(name.to_string())
}

/// Passwords are never echoed, not even in the error.
pub fn validate_password(field: &str, password: &str) -> Result<(), Error> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::InvalidArgument(format!(
            "invalid {field}: at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::InvalidArgument(format!(
            "invalid {field}: at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

/// An id of something another service owns (a team), as a subject-safe token.
pub fn validate_ref_id(field: &str, raw: &str) -> Result<String, Error> {
    let valid = !raw.is_empty()
        && raw.len() <= 64
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if !valid {
        return Err(Error::InvalidArgument(invalid_field(
            field,
            raw,
            "expected 1 to 64 letters, digits, -, _, . or :",
        )));
    }
    Ok(raw.to_string())
}

pub fn validate_teams(field: &str, raw: &[String]) -> Result<Vec<String>, Error> {
    if raw.len() > MAX_TEAMS {
        return Err(Error::InvalidArgument(format!(
            "invalid {field}: at most {MAX_TEAMS} teams"
        )));
    }
    let mut teams = raw
        .iter()
        .map(|team| validate_ref_id(field, team))
        .collect::<Result<Vec<_>, _>>()?;
    teams.sort();
    teams.dedup();
    Ok(teams)
}

/// A tenant slug: lowercase letters, digits and `-`, 2 to 40, usable in bus subjects.
pub fn validate_tenant_slug(field: &str, raw: &str) -> Result<String, Error> {
    let valid = (2..=40).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !raw.starts_with('-')
        && !raw.ends_with('-');
    if !valid {
        return Err(Error::InvalidArgument(invalid_field(
            field,
            raw,
            "expected 2 to 40 lowercase letters, digits or -",
        )));
    }
    Ok(raw.to_string())
}

/// API key scopes: permission names from the authz table, deduplicated.
pub fn validate_scopes(raw: &[String]) -> Result<Vec<String>, Error> {
    if raw.is_empty() {
        return Err(Error::InvalidArgument("missing scopes: required".into()));
    }
    if raw.len() > MAX_SCOPES {
        return Err(Error::InvalidArgument(format!(
            "invalid scopes: at most {MAX_SCOPES}"
        )));
    }
    let mut scopes = Vec::with_capacity(raw.len());
    for scope in raw {
        if giao_authz::permission_named(scope).is_none() {
            return Err(Error::InvalidArgument(invalid_field(
                "scopes",
                scope,
                "not a permission (e.g. messages.ingest)",
            )));
        }
        scopes.push(scope.clone());
    }
    scopes.sort();
    scopes.dedup();
    Ok(scopes)
}

pub mod password {
    //! Argon2id with the crate's default parameters; a PHC string carries its own salt and
    //! parameters, so stronger defaults later still verify old hashes.

    use argon2::{
        Argon2,
        password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash},
    };

    use crate::error::Error;

    /// Blocking (tens of milliseconds): call from `spawn_blocking`.
    pub fn hash(password: &str) -> Result<String, Error> {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|error| Error::Keys(format!("cannot hash a password: {error}")))
    }

    /// Blocking. A malformed stored hash verifies nothing.
    pub fn verify(password: &str, stored: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(stored) else {
            return false;
        };
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    }

    /// A hash of nothing anyone knows: unknown users are checked against it so that they
    /// take as long as known ones.
    pub fn decoy() -> &'static str {
        static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        DECOY.get_or_init(|| hash(&super::random_secret()).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_lowercased_and_checked() {
        assert_eq!(
            normalize_email("email", " Boss@Acme.VN ").expect("valid"),
            Some("boss@acme.vn".into())
        );
        assert_eq!(normalize_email("email", "").expect("empty"), None);
        let error = normalize_email("email", "not-an-email").expect_err("invalid");
        assert!(error.to_string().contains("invalid email"));
    }

    #[test]
    fn phones_keep_digits() {
        assert_eq!(
            normalize_phone("phone", "+84 912-345-678").expect("valid"),
            Some("+84912345678".into())
        );
        assert!(normalize_phone("phone", "12ab").is_err());
        assert_eq!(normalize_login("0912 345 678"), Some("0912345678".into()));
    }

    #[test]
    fn scopes_must_be_permissions() {
        assert_eq!(
            validate_scopes(&["messages.ingest".into(), "messages.ingest".into()]).expect("valid"),
            vec!["messages.ingest".to_string()]
        );
        let error = validate_scopes(&["messages.everything".into()]).expect_err("unknown");
        assert!(error.to_string().contains("scopes"), "{error}");
    }

    #[test]
    fn passwords_hash_and_verify() {
        let hash = password::hash("correct horse").expect("hashes");
        assert!(hash.starts_with("$argon2id$"));
        assert!(password::verify("correct horse", &hash));
        assert!(!password::verify("wrong horse", &hash));
        assert!(!password::verify("correct horse", "garbage"));
    }

    #[test]
    fn tenant_slugs() {
        assert!(validate_tenant_slug("tenant", "acme").is_ok());
        assert!(validate_tenant_slug("tenant", "Acme").is_err());
        assert!(validate_tenant_slug("tenant", "a.b").is_err());
    }
}
