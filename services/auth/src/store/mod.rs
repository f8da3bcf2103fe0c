//! Persistence of tenants, users, sessions, keys and the audit chain: one trait, a
//! PostgreSQL and a SQLite implementation side by side. Every tenant-owned row is read and
//! written with its tenant id, so another tenant's ids are simply not found.

mod postgres;
mod sqlite;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use giao_storage::Database;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use crate::{
    domain::{
        ApiKeyRecord, AuditFilter, RefreshRecord, SigningKeyRecord, TenantRecord, UserFilter,
        UserRecord,
        audit::{AuditRecord, NewAudit},
    },
    error::Error,
};

type Fut<'a, T> = BoxFuture<'a, Result<T, Error>>;

pub trait Store: Send + Sync + 'static {
    /// Creates the tenant; `false` when it already existed (left unchanged).
    fn create_tenant<'a>(&'a self, tenant: &'a TenantRecord) -> Fut<'a, bool>;
    fn tenant<'a>(&'a self, id: &'a str) -> Fut<'a, Option<TenantRecord>>;

    /// Inserts a user and its teams; AlreadyExists when the email or phone is taken.
    fn insert_user<'a>(&'a self, user: &'a UserRecord) -> Fut<'a, ()>;
    fn user<'a>(&'a self, tenant_id: &'a str, id: &'a str) -> Fut<'a, Option<UserRecord>>;
    /// By normalised email or phone.
    fn user_by_login<'a>(
        &'a self,
        tenant_id: &'a str,
        login: &'a str,
    ) -> Fut<'a, Option<UserRecord>>;
    fn list_users<'a>(
        &'a self,
        tenant_id: &'a str,
        filter: &'a UserFilter,
    ) -> Fut<'a, Vec<UserRecord>>;
    /// Writes role, status, session version, display name and teams.
    fn update_user<'a>(&'a self, user: &'a UserRecord) -> Fut<'a, ()>;
    /// Counts a failed password and locks the account once `threshold` failures are reached
    /// in a row; returns the user as updated.
    fn record_login_failure<'a>(
        &'a self,
        tenant_id: &'a str,
        user_id: &'a str,
        threshold: i64,
        locked_until: DateTime<Utc>,
    ) -> Fut<'a, Option<UserRecord>>;
    fn reset_login_failures<'a>(&'a self, tenant_id: &'a str, user_id: &'a str) -> Fut<'a, ()>;

    fn insert_refresh<'a>(&'a self, record: &'a RefreshRecord) -> Fut<'a, ()>;
    fn refresh<'a>(&'a self, token_hash: &'a str) -> Fut<'a, Option<RefreshRecord>>;
    /// Marks a refresh token used; `false` when it was already used or revoked (a race with
    /// another use counts as reuse).
    fn mark_refresh_used<'a>(&'a self, token_hash: &'a str, now: DateTime<Utc>) -> Fut<'a, bool>;
    fn revoke_family<'a>(&'a self, family_id: &'a str, now: DateTime<Utc>) -> Fut<'a, u64>;
    fn revoke_user_refresh<'a>(
        &'a self,
        tenant_id: &'a str,
        user_id: &'a str,
        now: DateTime<Utc>,
    ) -> Fut<'a, u64>;

    fn insert_signing_key<'a>(&'a self, key: &'a SigningKeyRecord) -> Fut<'a, ()>;
    fn signing_keys(&self) -> Fut<'_, Vec<SigningKeyRecord>>;
    /// Retires every key but `keep`.
    fn retire_signing_keys<'a>(&'a self, keep: &'a str, now: DateTime<Utc>) -> Fut<'a, ()>;

    fn insert_api_key<'a>(&'a self, key: &'a ApiKeyRecord) -> Fut<'a, ()>;
    /// By id alone: AuthenticateApiKey learns the tenant from the key.
    fn api_key<'a>(&'a self, id: &'a str) -> Fut<'a, Option<ApiKeyRecord>>;
    fn list_api_keys<'a>(
        &'a self,
        tenant_id: &'a str,
        after: Option<&'a str>,
        limit: i64,
    ) -> Fut<'a, Vec<ApiKeyRecord>>;
    /// Returns the key as revoked, `None` when the tenant has no such key.
    fn revoke_api_key<'a>(
        &'a self,
        tenant_id: &'a str,
        id: &'a str,
        now: DateTime<Utc>,
    ) -> Fut<'a, Option<ApiKeyRecord>>;
    /// Sets last_used_at unless it was set less than a minute ago.
    fn touch_api_key<'a>(&'a self, id: &'a str, now: DateTime<Utc>) -> Fut<'a, ()>;

    /// Appends to the tenant's chain under its lock; an event id seen before returns the
    /// record it already produced.
    fn append_audit<'a>(&'a self, tenant_id: &'a str, record: &'a NewAudit)
    -> Fut<'a, AuditRecord>;
    fn list_audit<'a>(
        &'a self,
        tenant_id: &'a str,
        filter: &'a AuditFilter,
    ) -> Fut<'a, Vec<AuditRecord>>;
    /// Records with seq > `after_seq` in seq order, for verification in batches.
    fn audit_chain<'a>(
        &'a self,
        tenant_id: &'a str,
        after_seq: i64,
        limit: i64,
    ) -> Fut<'a, Vec<AuditRecord>>;
}

pub fn for_database(database: &Database) -> Arc<dyn Store> {
    match database {
        Database::Postgres(pool) => Arc::new(PostgresStore::new(pool.clone())),
        Database::Sqlite(pool) => Arc::new(SqliteStore::new(pool.clone())),
    }
}

pub(crate) fn parse_role(value: &str) -> Result<giao_authz::Role, Error> {
    giao_authz::Role::parse(value)
        .ok_or_else(|| Error::Inconsistent(format!("stored role {value:?}")))
}

pub(crate) fn parse_status(value: &str) -> Result<crate::domain::UserStatus, Error> {
    crate::domain::UserStatus::parse(value)
        .ok_or_else(|| Error::Inconsistent(format!("stored status {value:?}")))
}

pub(crate) fn parse_scopes(value: &str) -> Result<Vec<String>, Error> {
    serde_json::from_str(value).map_err(|_| Error::Inconsistent("stored scopes".into()))
}

/// Chain values computed for an append, shared by both backends.
pub(crate) fn next_record(
    tenant_id: &str,
    head_seq: i64,
    head_hash: &str,
    record: &NewAudit,
) -> AuditRecord {
    let at = crate::domain::audit::truncate_to_micros(record.at);
    let seq = head_seq + 1;
    let mut next = AuditRecord {
        tenant_id: tenant_id.to_string(),
        seq,
        at,
        actor: record.actor.clone(),
        action: record.action.clone(),
        target: record.target.clone(),
        details_json: record.details_json.clone(),
        prev_hash: head_hash.to_string(),
        hash: String::new(),
    };
    next.hash = next.expected_hash();
    next
}
