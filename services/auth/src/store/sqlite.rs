//! The embedded backend (`giao dev`, fast tests): the same model as PostgreSQL, times as
//! microseconds since the epoch, one writer at a time (`BEGIN IMMEDIATE`).

use chrono::{DateTime, Utc};
use sqlx::SqlitePool;

use super::{Fut, Store, next_record, parse_role, parse_scopes, parse_status};
use crate::{
    domain::{
        ApiKeyRecord, AuditFilter, RefreshRecord, SigningKeyRecord, TenantRecord, UserFilter,
        UserRecord,
        audit::{AuditRecord, GENESIS_HASH, NewAudit},
    },
    error::{Error, is_unique_violation},
};

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    async fn teams(
        &self,
        tenant_id: &str,
        user_ids: &[String],
    ) -> Result<Vec<(String, String)>, Error> {
        Ok(sqlx::query_as(
            "SELECT user_id, team_id FROM user_teams WHERE tenant_id = ?1 AND user_id IN (SELECT value FROM json_each(?2)) \
             ORDER BY team_id",
        )
        .bind(tenant_id)
        .bind(serde_json::to_string(user_ids).unwrap_or_default())
        .fetch_all(&self.pool)
        .await?)
    }

    async fn with_teams(&self, rows: Vec<UserRow>) -> Result<Vec<UserRecord>, Error> {
        let Some(first) = rows.first() else {
            return Ok(Vec::new());
        };
        let tenant_id = first.tenant_id.clone();
        let ids: Vec<String> = rows.iter().map(|row| row.id.clone()).collect();
        let teams = self.teams(&tenant_id, &ids).await?;
        rows.into_iter()
            .map(|row| {
                let team_ids = teams
                    .iter()
                    .filter(|(user, _)| *user == row.id)
                    .map(|(_, team)| team.clone())
                    .collect();
                row.into_record(team_ids)
            })
            .collect()
    }

    async fn one_user(&self, row: Option<UserRow>) -> Result<Option<UserRecord>, Error> {
        match row {
            Some(row) => Ok(self.with_teams(vec![row]).await?.pop()),
            None => Ok(None),
        }
    }
}

fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

fn time(micros: i64) -> Result<DateTime<Utc>, Error> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| Error::Inconsistent(format!("stored time {micros} out of range")))
}

fn opt_time(micros: Option<i64>) -> Result<Option<DateTime<Utc>>, Error> {
    micros.map(time).transpose()
}

#[derive(sqlx::FromRow)]
struct TenantRow {
    id: String,
    display_name: String,
    created_at: i64,
}

#[derive(sqlx::FromRow)]
struct UserRow {
    tenant_id: String,
    id: String,
    email: Option<String>,
    phone: Option<String>,
    display_name: String,
    role: String,
    status: String,
    session_version: i64,
    password_hash: Option<String>,
    failed_logins: i64,
    locked_until: Option<i64>,
    idempotency_key: Option<String>,
    created_at: i64,
}

impl UserRow {
    fn into_record(self, team_ids: Vec<String>) -> Result<UserRecord, Error> {
        Ok(UserRecord {
            role: parse_role(&self.role)?,
            status: parse_status(&self.status)?,
            tenant_id: self.tenant_id,
            id: self.id,
            email: self.email,
            phone: self.phone,
            display_name: self.display_name,
            team_ids,
            session_version: self.session_version,
            password_hash: self.password_hash,
            failed_logins: self.failed_logins,
            locked_until: opt_time(self.locked_until)?,
            idempotency_key: self.idempotency_key,
            created_at: time(self.created_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct RefreshRow {
    token_hash: String,
    tenant_id: String,
    user_id: String,
    family_id: String,
    session_version: i64,
    created_at: i64,
    expires_at: i64,
    used_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl TryFrom<RefreshRow> for RefreshRecord {
    type Error = Error;

    fn try_from(row: RefreshRow) -> Result<Self, Error> {
        Ok(RefreshRecord {
            token_hash: row.token_hash,
            tenant_id: row.tenant_id,
            user_id: row.user_id,
            family_id: row.family_id,
            session_version: row.session_version,
            created_at: time(row.created_at)?,
            expires_at: time(row.expires_at)?,
            used_at: opt_time(row.used_at)?,
            revoked_at: opt_time(row.revoked_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    kid: String,
    public_key: Vec<u8>,
    encrypted_private_key: Vec<u8>,
    created_at: i64,
    retired_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct ApiKeyRow {
    id: String,
    tenant_id: String,
    name: String,
    scopes: String,
    key_hash: String,
    created_by: String,
    created_at: i64,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl TryFrom<ApiKeyRow> for ApiKeyRecord {
    type Error = Error;

    fn try_from(row: ApiKeyRow) -> Result<Self, Error> {
        Ok(ApiKeyRecord {
            scopes: parse_scopes(&row.scopes)?,
            id: row.id,
            tenant_id: row.tenant_id,
            name: row.name,
            key_hash: row.key_hash,
            created_by: row.created_by,
            created_at: time(row.created_at)?,
            last_used_at: opt_time(row.last_used_at)?,
            revoked_at: opt_time(row.revoked_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    tenant_id: String,
    seq: i64,
    at: i64,
    actor: String,
    action: String,
    target: String,
    details_json: String,
    prev_hash: String,
    hash: String,
}

impl TryFrom<AuditRow> for AuditRecord {
    type Error = Error;

    fn try_from(row: AuditRow) -> Result<Self, Error> {
        Ok(AuditRecord {
            tenant_id: row.tenant_id,
            seq: row.seq,
            at: time(row.at)?,
            actor: row.actor,
            action: row.action,
            target: row.target,
            details_json: row.details_json,
            prev_hash: row.prev_hash,
            hash: row.hash,
        })
    }
}

const USER_COLUMNS: &str = "tenant_id, id, email, phone, display_name, role, status, \
    session_version, password_hash, failed_logins, locked_until, idempotency_key, created_at";

const AUDIT_COLUMNS: &str =
    "tenant_id, seq, at, actor, action, target, details_json, prev_hash, hash";

const API_KEY_COLUMNS: &str =
    "id, tenant_id, name, scopes, key_hash, created_by, created_at, last_used_at, revoked_at";

impl Store for SqliteStore {
    fn create_tenant<'a>(&'a self, tenant: &'a TenantRecord) -> Fut<'a, bool> {
        Box::pin(async move {
            let inserted = sqlx::query(
                "INSERT INTO tenants (id, display_name, created_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(&tenant.id)
            .bind(&tenant.display_name)
            .bind(micros(tenant.created_at))
            .execute(&self.pool)
            .await?
            .rows_affected();
            Ok(inserted == 1)
        })
    }

    fn tenant<'a>(&'a self, id: &'a str) -> Fut<'a, Option<TenantRecord>> {
        Box::pin(async move {
            let row: Option<TenantRow> =
                sqlx::query_as("SELECT id, display_name, created_at FROM tenants WHERE id = ?1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
            row.map(|row| {
                Ok(TenantRecord {
                    id: row.id,
                    display_name: row.display_name,
                    created_at: time(row.created_at)?,
                })
            })
            .transpose()
        })
    }

    fn insert_user<'a>(&'a self, user: &'a UserRecord) -> Fut<'a, ()> {
        Box::pin(async move {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let inserted = sqlx::query(
                "INSERT INTO users (tenant_id, id, email, phone, display_name, role, status, \
                 session_version, password_hash, failed_logins, locked_until, idempotency_key, \
                 created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, NULL, ?10, ?11)",
            )
            .bind(&user.tenant_id)
            .bind(&user.id)
            .bind(&user.email)
            .bind(&user.phone)
            .bind(&user.display_name)
            .bind(user.role.as_str())
            .bind(user.status.as_str())
            .bind(user.session_version)
            .bind(&user.password_hash)
            .bind(&user.idempotency_key)
            .bind(micros(user.created_at))
            .execute(&mut *tx)
            .await;
            if let Err(error) = inserted {
                return Err(if is_unique_violation(&error) {
                    Error::AlreadyExists("a user with this email or phone already exists".into())
                } else {
                    error.into()
                });
            }
            for team in &user.team_ids {
                sqlx::query(
                    "INSERT INTO user_teams (tenant_id, user_id, team_id) VALUES (?1, ?2, ?3)",
                )
                .bind(&user.tenant_id)
                .bind(&user.id)
                .bind(team)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn user<'a>(&'a self, tenant_id: &'a str, id: &'a str) -> Fut<'a, Option<UserRecord>> {
        Box::pin(async move {
            let row: Option<UserRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = ?1 AND id = ?2"
            )))
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
            self.one_user(row).await
        })
    }

    fn user_by_login<'a>(
        &'a self,
        tenant_id: &'a str,
        login: &'a str,
    ) -> Fut<'a, Option<UserRecord>> {
        Box::pin(async move {
            let row: Option<UserRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = ?1 AND (email = ?2 OR phone = ?2)"
            )))
            .bind(tenant_id)
            .bind(login)
            .fetch_optional(&self.pool)
            .await?;
            self.one_user(row).await
        })
    }

    fn list_users<'a>(
        &'a self,
        tenant_id: &'a str,
        filter: &'a UserFilter,
    ) -> Fut<'a, Vec<UserRecord>> {
        Box::pin(async move {
            let rows: Vec<UserRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {USER_COLUMNS} FROM users u WHERE tenant_id = ?1 \
                 AND (?2 IS NULL OR role = ?2) \
                 AND (?3 IS NULL OR status = ?3) \
                 AND (?4 IS NULL OR EXISTS (SELECT 1 FROM user_teams t \
                      WHERE t.tenant_id = u.tenant_id AND t.user_id = u.id AND t.team_id = ?4)) \
                 AND (?5 IS NULL OR id > ?5) \
                 ORDER BY id LIMIT ?6"
            )))
            .bind(tenant_id)
            .bind(filter.role.map(|role| role.as_str()))
            .bind(filter.status.map(|status| status.as_str()))
            .bind(&filter.team_id)
            .bind(&filter.after)
            .bind(filter.limit)
            .fetch_all(&self.pool)
            .await?;
            self.with_teams(rows).await
        })
    }

    fn update_user<'a>(&'a self, user: &'a UserRecord) -> Fut<'a, ()> {
        Box::pin(async move {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::query(
                "UPDATE users SET role = ?3, status = ?4, session_version = ?5, \
                 display_name = ?6 WHERE tenant_id = ?1 AND id = ?2",
            )
            .bind(&user.tenant_id)
            .bind(&user.id)
            .bind(user.role.as_str())
            .bind(user.status.as_str())
            .bind(user.session_version)
            .bind(&user.display_name)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM user_teams WHERE tenant_id = ?1 AND user_id = ?2")
                .bind(&user.tenant_id)
                .bind(&user.id)
                .execute(&mut *tx)
                .await?;
            for team in &user.team_ids {
                sqlx::query(
                    "INSERT INTO user_teams (tenant_id, user_id, team_id) VALUES (?1, ?2, ?3)",
                )
                .bind(&user.tenant_id)
                .bind(&user.id)
                .bind(team)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn record_login_failure<'a>(
        &'a self,
        tenant_id: &'a str,
        user_id: &'a str,
        threshold: i64,
        locked_until: DateTime<Utc>,
    ) -> Fut<'a, Option<UserRecord>> {
        Box::pin(async move {
            // One statement, so concurrent failures are all counted.
            let row: Option<UserRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE users SET failed_logins = failed_logins + 1, \
                 locked_until = CASE WHEN failed_logins + 1 >= ?3 THEN ?4 ELSE locked_until END \
                 WHERE tenant_id = ?1 AND id = ?2 RETURNING {USER_COLUMNS}"
            )))
            .bind(tenant_id)
            .bind(user_id)
            .bind(threshold)
            .bind(micros(locked_until))
            .fetch_optional(&self.pool)
            .await?;
            self.one_user(row).await
        })
    }

    fn reset_login_failures<'a>(&'a self, tenant_id: &'a str, user_id: &'a str) -> Fut<'a, ()> {
        Box::pin(async move {
            sqlx::query(
                "UPDATE users SET failed_logins = 0, locked_until = NULL \
                 WHERE tenant_id = ?1 AND id = ?2",
            )
            .bind(tenant_id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn insert_refresh<'a>(&'a self, record: &'a RefreshRecord) -> Fut<'a, ()> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO refresh_tokens (token_hash, tenant_id, user_id, family_id, \
                 session_version, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .bind(&record.token_hash)
            .bind(&record.tenant_id)
            .bind(&record.user_id)
            .bind(&record.family_id)
            .bind(record.session_version)
            .bind(micros(record.created_at))
            .bind(micros(record.expires_at))
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn refresh<'a>(&'a self, token_hash: &'a str) -> Fut<'a, Option<RefreshRecord>> {
        Box::pin(async move {
            let row: Option<RefreshRow> = sqlx::query_as(
                "SELECT token_hash, tenant_id, user_id, family_id, session_version, created_at, \
                 expires_at, used_at, revoked_at FROM refresh_tokens WHERE token_hash = ?1",
            )
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
            row.map(TryInto::try_into).transpose()
        })
    }

    fn mark_refresh_used<'a>(&'a self, token_hash: &'a str, now: DateTime<Utc>) -> Fut<'a, bool> {
        Box::pin(async move {
            let updated = sqlx::query(
                "UPDATE refresh_tokens SET used_at = ?2 \
                 WHERE token_hash = ?1 AND used_at IS NULL AND revoked_at IS NULL",
            )
            .bind(token_hash)
            .bind(micros(now))
            .execute(&self.pool)
            .await?
            .rows_affected();
            Ok(updated == 1)
        })
    }

    fn revoke_family<'a>(&'a self, family_id: &'a str, now: DateTime<Utc>) -> Fut<'a, u64> {
        Box::pin(async move {
            Ok(sqlx::query(
                "UPDATE refresh_tokens SET revoked_at = ?2 \
                 WHERE family_id = ?1 AND revoked_at IS NULL",
            )
            .bind(family_id)
            .bind(micros(now))
            .execute(&self.pool)
            .await?
            .rows_affected())
        })
    }

    fn revoke_user_refresh<'a>(
        &'a self,
        tenant_id: &'a str,
        user_id: &'a str,
        now: DateTime<Utc>,
    ) -> Fut<'a, u64> {
        Box::pin(async move {
            Ok(sqlx::query(
                "UPDATE refresh_tokens SET revoked_at = ?3 \
                 WHERE tenant_id = ?1 AND user_id = ?2 AND revoked_at IS NULL",
            )
            .bind(tenant_id)
            .bind(user_id)
            .bind(micros(now))
            .execute(&self.pool)
            .await?
            .rows_affected())
        })
    }

    fn insert_signing_key<'a>(&'a self, key: &'a SigningKeyRecord) -> Fut<'a, ()> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO signing_keys (kid, public_key, encrypted_private_key, created_at, \
                 retired_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(&key.kid)
            .bind(&key.public_key)
            .bind(&key.encrypted_private_key)
            .bind(micros(key.created_at))
            .bind(key.retired_at.map(micros))
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn signing_keys(&self) -> Fut<'_, Vec<SigningKeyRecord>> {
        Box::pin(async move {
            let rows: Vec<KeyRow> = sqlx::query_as(
                "SELECT kid, public_key, encrypted_private_key, created_at, retired_at \
                 FROM signing_keys ORDER BY created_at, kid",
            )
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter()
                .map(|row| {
                    Ok(SigningKeyRecord {
                        kid: row.kid,
                        public_key: row.public_key,
                        encrypted_private_key: row.encrypted_private_key,
                        created_at: time(row.created_at)?,
                        retired_at: opt_time(row.retired_at)?,
                    })
                })
                .collect()
        })
    }

    fn retire_signing_keys<'a>(&'a self, keep: &'a str, now: DateTime<Utc>) -> Fut<'a, ()> {
        Box::pin(async move {
            sqlx::query(
                "UPDATE signing_keys SET retired_at = ?2 WHERE kid <> ?1 AND retired_at IS NULL",
            )
            .bind(keep)
            .bind(micros(now))
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn insert_api_key<'a>(&'a self, key: &'a ApiKeyRecord) -> Fut<'a, ()> {
        Box::pin(async move {
            let scopes = serde_json::to_string(&key.scopes)
                .map_err(|error| Error::Inconsistent(error.to_string()))?;
            sqlx::query(
                "INSERT INTO api_keys (id, tenant_id, name, scopes, key_hash, created_by, \
                 created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .bind(&key.id)
            .bind(&key.tenant_id)
            .bind(&key.name)
            .bind(scopes)
            .bind(&key.key_hash)
            .bind(&key.created_by)
            .bind(micros(key.created_at))
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn api_key<'a>(&'a self, id: &'a str) -> Fut<'a, Option<ApiKeyRecord>> {
        Box::pin(async move {
            let row: Option<ApiKeyRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = ?1"
            )))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
            row.map(TryInto::try_into).transpose()
        })
    }

    fn list_api_keys<'a>(
        &'a self,
        tenant_id: &'a str,
        after: Option<&'a str>,
        limit: i64,
    ) -> Fut<'a, Vec<ApiKeyRecord>> {
        Box::pin(async move {
            let rows: Vec<ApiKeyRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant_id = ?1 \
                 AND (?2 IS NULL OR id > ?2) ORDER BY id LIMIT ?3"
            )))
            .bind(tenant_id)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter().map(TryInto::try_into).collect()
        })
    }

    fn revoke_api_key<'a>(
        &'a self,
        tenant_id: &'a str,
        id: &'a str,
        now: DateTime<Utc>,
    ) -> Fut<'a, Option<ApiKeyRecord>> {
        Box::pin(async move {
            let row: Option<ApiKeyRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?3) \
                 WHERE tenant_id = ?1 AND id = ?2 RETURNING {API_KEY_COLUMNS}"
            )))
            .bind(tenant_id)
            .bind(id)
            .bind(micros(now))
            .fetch_optional(&self.pool)
            .await?;
            row.map(TryInto::try_into).transpose()
        })
    }

    fn touch_api_key<'a>(&'a self, id: &'a str, now: DateTime<Utc>) -> Fut<'a, ()> {
        Box::pin(async move {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1 \
                 AND (last_used_at IS NULL OR last_used_at < ?3)",
            )
            .bind(id)
            .bind(micros(now))
            .bind(micros(now - chrono::Duration::minutes(1)))
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn append_audit<'a>(
        &'a self,
        tenant_id: &'a str,
        record: &'a NewAudit,
    ) -> Fut<'a, AuditRecord> {
        Box::pin(async move {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::query(
                "INSERT INTO audit_heads (tenant_id, seq, hash) VALUES (?1, 0, ?2) \
                 ON CONFLICT (tenant_id) DO NOTHING",
            )
            .bind(tenant_id)
            .bind(GENESIS_HASH)
            .execute(&mut *tx)
            .await?;
            // The head row lock serialises appends of one tenant across replicas.
            let (head_seq, head_hash): (i64, String) =
                sqlx::query_as("SELECT seq, hash FROM audit_heads WHERE tenant_id = ?1")
                    .bind(tenant_id)
                    .fetch_one(&mut *tx)
                    .await?;
            if let Some(event_id) = &record.event_id {
                let seen: Option<AuditRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE tenant_id = ?1 AND event_id = ?2"
                )))
                .bind(tenant_id)
                .bind(event_id)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(seen) = seen {
                    tx.commit().await?;
                    return seen.try_into();
                }
            }
            let next = next_record(tenant_id, head_seq, &head_hash, record);
            sqlx::query(
                "INSERT INTO audit_log (tenant_id, seq, at, actor, action, target, details_json, \
                 prev_hash, hash, event_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .bind(tenant_id)
            .bind(next.seq)
            .bind(micros(next.at))
            .bind(&next.actor)
            .bind(&next.action)
            .bind(&next.target)
            .bind(&next.details_json)
            .bind(&next.prev_hash)
            .bind(&next.hash)
            .bind(&record.event_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE audit_heads SET seq = ?2, hash = ?3 WHERE tenant_id = ?1")
                .bind(tenant_id)
                .bind(next.seq)
                .bind(&next.hash)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(next)
        })
    }

    fn list_audit<'a>(
        &'a self,
        tenant_id: &'a str,
        filter: &'a AuditFilter,
    ) -> Fut<'a, Vec<AuditRecord>> {
        Box::pin(async move {
            let (page, order) = if filter.oldest_first {
                ("seq > ?6", "ASC")
            } else {
                ("seq < ?6", "DESC")
            };
            let rows: Vec<AuditRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE tenant_id = ?1 \
                 AND (?2 IS NULL OR actor = ?2) \
                 AND (?3 IS NULL OR action = ?3) \
                 AND (?4 IS NULL OR at >= ?4) \
                 AND (?5 IS NULL OR at < ?5) \
                 AND (?6 IS NULL OR {page}) \
                 ORDER BY seq {order} LIMIT ?7"
            )))
            .bind(tenant_id)
            .bind(&filter.actor)
            .bind(&filter.action)
            .bind(filter.from.map(micros))
            .bind(filter.until.map(micros))
            .bind(filter.after_seq)
            .bind(filter.limit)
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter().map(TryInto::try_into).collect()
        })
    }

    fn audit_chain<'a>(
        &'a self,
        tenant_id: &'a str,
        after_seq: i64,
        limit: i64,
    ) -> Fut<'a, Vec<AuditRecord>> {
        Box::pin(async move {
            let rows: Vec<AuditRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE tenant_id = ?1 AND seq > ?2 \
                 ORDER BY seq LIMIT ?3"
            )))
            .bind(tenant_id)
            .bind(after_seq)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter().map(TryInto::try_into).collect()
        })
    }
}
