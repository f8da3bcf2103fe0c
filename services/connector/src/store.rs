//! Channel accounts, on PostgreSQL or SQLite. Every query names the tenant: an id of another
//! tenant reads as absent.

use chrono::Utc;
use giao_storage::Database;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountRecord {
    pub id: String,
    pub tenant_id: String,
    pub kind: i32,
    pub display_name: String,
    pub status: i32,
}

/// An account with everything but its credentials.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Account {
    pub id: String,
    pub tenant_id: String,
    pub kind: i32,
    pub display_name: String,
    pub status: i32,
    pub external_id: String,
    pub team_id: String,
    pub send_rate_per_minute: u32,
    pub status_reason: String,
    /// Microseconds since the epoch.
    pub status_since: i64,
    pub disabled: bool,
    pub created_at: i64,
}

/// Credentials as stored: the key id and the sealed bytes.
#[derive(Debug, Clone)]
pub struct SealedCredentials {
    pub key_id: String,
    pub sealed: Vec<u8>,
}

/// A new account and its sealed credentials.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub account: Account,
    pub credentials: Option<SealedCredentials>,
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AccountStore {
    database: Database,
}

type Row = (
    String,
    String,
    i16,
    String,
    i16,
    String,
    String,
    i32,
    String,
    i64,
    bool,
    i64,
);

const COLUMNS: &str = "id, tenant_id, kind, display_name, status, external_id, team_id, \
     send_rate_per_minute, status_reason, status_since, disabled";

fn columns(database: &Database) -> String {
    match database {
        Database::Postgres(_) => {
            format!("{COLUMNS}, (EXTRACT(EPOCH FROM created_at) * 1000000)::BIGINT")
        }
        Database::Sqlite(_) => format!("{COLUMNS}, created_at"),
    }
}

fn from_row(row: Row) -> Account {
    let (
        id,
        tenant_id,
        kind,
        display_name,
        status,
        external_id,
        team_id,
        rate,
        status_reason,
        status_since,
        disabled,
        created_at,
    ) = row;
    Account {
        id,
        tenant_id,
        kind: kind.into(),
        display_name,
        status: status.into(),
        external_id,
        team_id,
        send_rate_per_minute: rate.max(0) as u32,
        status_reason,
        status_since,
        disabled,
        created_at,
    }
}

/// SQLite numbers parameters `?N`; the statements here are written with PostgreSQL's `$N`.
pub(crate) fn for_backend(database: &Database, sql: &str) -> String {
    match database {
        Database::Postgres(_) => sql.to_string(),
        Database::Sqlite(_) => sql.replace('$', "?"),
    }
}

/// Runs the same statement on either pool: `$bind` receives the prepared query as `$q`.
macro_rules! on_pool {
    ($database:expr, $sql:expr, $make:path, |$q:ident| $bind:expr, $run:ident) => {{
        let sql = $crate::store::for_backend($database, $sql);
        match $database {
            giao_storage::Database::Postgres(pool) => {
                // Built only from constant statements: no caller text reaches the SQL.
                let $q = $make(sqlx::AssertSqlSafe(sql));
                $bind.$run(pool).await
            }
            giao_storage::Database::Sqlite(pool) => {
                let $q = $make(sqlx::AssertSqlSafe(sql));
                $bind.$run(pool).await
            }
        }
    }};
    // `execute`: the number of rows affected (the result types differ per backend).
    ($database:expr, $sql:expr, |$q:ident| $bind:expr) => {{
        let sql = $crate::store::for_backend($database, $sql);
        match $database {
            giao_storage::Database::Postgres(pool) => {
                let $q = sqlx::query(sqlx::AssertSqlSafe(sql));
                $bind.execute(pool).await.map(|done| done.rows_affected())
            }
            giao_storage::Database::Sqlite(pool) => {
                let $q = sqlx::query(sqlx::AssertSqlSafe(sql));
                $bind.execute(pool).await.map(|done| done.rows_affected())
            }
        }
    }};
}

/// The connector's other stores write their statements the same way.
pub(crate) use on_pool;

impl AccountStore {
    pub fn new(database: Database) -> Self {
        Self { database }
    }

    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Creates the account unless it exists; returns what is stored. Used for the demo.
    pub async fn ensure(&self, account: &AccountRecord) -> Result<AccountRecord, sqlx::Error> {
        let now = Utc::now();
        match &self.database {
            Database::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO channel_accounts (id, tenant_id, kind, display_name, status, created_at, status_since) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                )
                .bind(&account.id)
                .bind(&account.tenant_id)
                .bind(account.kind as i16)
                .bind(&account.display_name)
                .bind(account.status as i16)
                .bind(now)
                .bind(now.timestamp_micros())
                .execute(pool)
                .await?;
            }
            Database::Sqlite(pool) => {
                sqlx::query(
                    "INSERT INTO channel_accounts (id, tenant_id, kind, display_name, status, created_at, status_since) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                )
                .bind(&account.id)
                .bind(&account.tenant_id)
                .bind(account.kind)
                .bind(&account.display_name)
                .bind(account.status)
                .bind(now.timestamp_micros())
                .bind(now.timestamp_micros())
                .execute(pool)
                .await?;
            }
        }
        let stored = self
            .get(&account.tenant_id, &account.id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        Ok(AccountRecord {
            id: stored.id,
            tenant_id: stored.tenant_id,
            kind: stored.kind,
            display_name: stored.display_name,
            status: stored.status,
        })
    }

    /// Inserts a new account. With an idempotency key already used in the tenant, inserts
    /// nothing and returns the account created the first time.
    pub async fn create(&self, new: &NewAccount) -> Result<(Account, bool), sqlx::Error> {
        if let Some(key) = &new.idempotency_key
            && let Some(existing) = self.by_idempotency_key(&new.account.tenant_id, key).await?
        {
            return Ok((existing, false));
        }
        let a = &new.account;
        let (kid, sealed) = match &new.credentials {
            Some(c) => (Some(c.key_id.clone()), Some(c.sealed.clone())),
            None => (None, None),
        };
        let now = Utc::now();
        let sql = "INSERT INTO channel_accounts (id, tenant_id, kind, display_name, status, \
                   created_at, external_id, team_id, send_rate_per_minute, status_reason, \
                   status_since, disabled, credentials, credentials_kid, idempotency_key) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";
        let result = match &self.database {
            Database::Postgres(pool) => sqlx::query(sql)
                .bind(&a.id)
                .bind(&a.tenant_id)
                .bind(a.kind as i16)
                .bind(&a.display_name)
                .bind(a.status as i16)
                .bind(now)
                .bind(&a.external_id)
                .bind(&a.team_id)
                .bind(a.send_rate_per_minute as i32)
                .bind(&a.status_reason)
                .bind(now.timestamp_micros())
                .bind(a.disabled)
                .bind(&sealed)
                .bind(&kid)
                .bind(&new.idempotency_key)
                .execute(pool)
                .await
                .map(|_| ()),
            Database::Sqlite(pool) => sqlx::query(sqlx::AssertSqlSafe(sql.replace('$', "?")))
                .bind(&a.id)
                .bind(&a.tenant_id)
                .bind(a.kind)
                .bind(&a.display_name)
                .bind(a.status)
                .bind(now.timestamp_micros())
                .bind(&a.external_id)
                .bind(&a.team_id)
                .bind(a.send_rate_per_minute as i32)
                .bind(&a.status_reason)
                .bind(now.timestamp_micros())
                .bind(a.disabled)
                .bind(&sealed)
                .bind(&kid)
                .bind(&new.idempotency_key)
                .execute(pool)
                .await
                .map(|_| ()),
        };
        match result {
            Ok(_) => {}
            // Two concurrent creates with one key: the loser returns the winner's account.
            Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
                if let Some(key) = &new.idempotency_key
                    && let Some(existing) = self.by_idempotency_key(&a.tenant_id, key).await?
                {
                    return Ok((existing, false));
                }
                return Err(sqlx::Error::Database(error));
            }
            Err(error) => return Err(error),
        }
        let stored = self
            .get(&a.tenant_id, &a.id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        Ok((stored, true))
    }

    async fn by_idempotency_key(
        &self,
        tenant_id: &str,
        key: &str,
    ) -> Result<Option<Account>, sqlx::Error> {
        let sql = format!(
            "SELECT {} FROM channel_accounts WHERE tenant_id = $1 AND idempotency_key = $2",
            columns(&self.database)
        );
        let row: Option<Row> = on_pool!(
            &self.database,
            &sql,
            sqlx::query_as,
            |q| q.bind(tenant_id).bind(key),
            fetch_optional
        )?;
        Ok(row.map(from_row))
    }

    pub async fn get(&self, tenant_id: &str, id: &str) -> Result<Option<Account>, sqlx::Error> {
        let sql = format!(
            "SELECT {} FROM channel_accounts WHERE tenant_id = $1 AND id = $2",
            columns(&self.database)
        );
        let row: Option<Row> = on_pool!(
            &self.database,
            &sql,
            sqlx::query_as,
            |q| q.bind(tenant_id).bind(id),
            fetch_optional
        )?;
        Ok(row.map(from_row))
    }

    /// A page of the tenant's accounts in id order, after `after`; `kind`/`status` 0 = any.
    pub async fn list_page(
        &self,
        tenant_id: &str,
        kind: i32,
        status: i32,
        after: &str,
        limit: u32,
    ) -> Result<Vec<Account>, sqlx::Error> {
        let sql = format!(
            "SELECT {} FROM channel_accounts WHERE tenant_id = $1 AND id > $2 \
             AND ($3 = 0 OR kind = $3) AND ($4 = 0 OR status = $4) ORDER BY id LIMIT $5",
            columns(&self.database)
        );
        let rows: Vec<Row> = on_pool!(
            &self.database,
            &sql,
            sqlx::query_as,
            |q| q
                .bind(tenant_id)
                .bind(after)
                .bind(kind as i16)
                .bind(status as i16)
                .bind(i64::from(limit)),
            fetch_all
        )?;
        Ok(rows.into_iter().map(from_row).collect())
    }

    /// Every account of the tenant (used by the simulator's demo path).
    pub async fn list(&self, tenant_id: &str) -> Result<Vec<Account>, sqlx::Error> {
        self.list_page(tenant_id, 0, 0, "", 10_000).await
    }

    pub async fn update(&self, account: &Account) -> Result<bool, sqlx::Error> {
        let sql = "UPDATE channel_accounts SET display_name = $3, team_id = $4, \
                   send_rate_per_minute = $5, external_id = $6 WHERE tenant_id = $1 AND id = $2";
        let done = on_pool!(&self.database, sql, |q| q
            .bind(&account.tenant_id)
            .bind(&account.id)
            .bind(&account.display_name)
            .bind(&account.team_id)
            .bind(account.send_rate_per_minute as i32)
            .bind(&account.external_id))?;
        Ok(done == 1)
    }

    /// Moves the account to `status` unless it is disabled (a disabled account only changes
    /// when `disable` is true, which is how it gets there). Returns the previous status when
    /// it changed.
    pub async fn set_status(
        &self,
        tenant_id: &str,
        id: &str,
        status: i32,
        reason: &str,
        disable: bool,
    ) -> Result<Option<i32>, sqlx::Error> {
        let Some(before) = self.get(tenant_id, id).await? else {
            return Ok(None);
        };
        if before.status == status && before.disabled == disable {
            // Same status: nothing to announce, but keep the reason current so an operator
            // reads why the account is in it now, not why it first got there.
            if before.status_reason != reason {
                let sql = "UPDATE channel_accounts SET status_reason = $4 \
                           WHERE tenant_id = $1 AND id = $2 AND status = $3";
                on_pool!(&self.database, sql, |q| q
                    .bind(tenant_id)
                    .bind(id)
                    .bind(status as i16)
                    .bind(reason))?;
            }
            return Ok(None);
        }
        let sql = "UPDATE channel_accounts SET status = $3, status_reason = $4, \
                   status_since = $5, disabled = $6 \
                   WHERE tenant_id = $1 AND id = $2 AND status = $7 AND (disabled = FALSE OR $6)";
        let done = on_pool!(&self.database, sql, |q| q
            .bind(tenant_id)
            .bind(id)
            .bind(status as i16)
            .bind(reason)
            .bind(Utc::now().timestamp_micros())
            .bind(disable || before.disabled)
            .bind(before.status as i16))?;
        Ok((done == 1).then_some(before.status))
    }

    pub async fn credentials(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<SealedCredentials>, sqlx::Error> {
        Ok(self
            .versioned_credentials(tenant_id, id)
            .await?
            .map(|(credentials, _)| credentials))
    }

    /// Replaces the credentials in one statement, so a rotated refresh token is either
    /// stored with everything else or not at all. Bumps the version, so a token refresh
    /// that began from the replaced credentials does not overwrite them.
    pub async fn set_credentials(
        &self,
        tenant_id: &str,
        id: &str,
        credentials: &SealedCredentials,
    ) -> Result<bool, sqlx::Error> {
        self.write_credentials(tenant_id, id, None, credentials)
            .await
    }

    /// Writes credentials, bumping the version and ending any refresh claim; with
    /// `only_at`, only if the version is still that one.
    async fn write_credentials(
        &self,
        tenant_id: &str,
        id: &str,
        only_at: Option<i64>,
        credentials: &SealedCredentials,
    ) -> Result<bool, sqlx::Error> {
        let sql = "UPDATE channel_accounts SET credentials = $3, credentials_kid = $4, \
                   credentials_version = credentials_version + 1, refresh_claim = '', \
                   refresh_claim_until = 0 WHERE tenant_id = $1 AND id = $2 \
                   AND ($5 IS NULL OR credentials_version = $5)";
        let done = on_pool!(&self.database, sql, |q| q
            .bind(tenant_id)
            .bind(id)
            .bind(&credentials.sealed)
            .bind(&credentials.key_id)
            .bind(only_at))?;
        Ok(done == 1)
    }

    /// The credentials with the version every write bumps.
    pub async fn versioned_credentials(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<(SealedCredentials, i64)>, sqlx::Error> {
        let sql = "SELECT credentials_kid, credentials, credentials_version FROM channel_accounts \
                   WHERE tenant_id = $1 AND id = $2";
        let row: Option<(Option<String>, Option<Vec<u8>>, i64)> = on_pool!(
            &self.database,
            sql,
            sqlx::query_as,
            |q| q.bind(tenant_id).bind(id),
            fetch_optional
        )?;
        Ok(match row {
            Some((Some(key_id), Some(sealed), version)) => {
                Some((SealedCredentials { key_id, sealed }, version))
            }
            _ => None,
        })
    }

    /// Claims the right to refresh the token of credentials at `version` for `ttl`: true for
    /// exactly one of several replicas asking at once, and only while nobody else holds an
    /// unexpired claim. The expiry is set and compared on the database's clock, so replicas
    /// whose clocks disagree still agree on when a claim ran out.
    pub async fn claim_refresh(
        &self,
        tenant_id: &str,
        id: &str,
        version: i64,
        claim: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, sqlx::Error> {
        let now = self.clock_micros().await?;
        let until = now.saturating_add(i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX));
        let sql = "UPDATE channel_accounts SET refresh_claim = $4, refresh_claim_until = $6 \
                   WHERE tenant_id = $1 AND id = $2 AND credentials_version = $3 \
                   AND (refresh_claim = '' OR refresh_claim_until <= $5)";
        let done = on_pool!(&self.database, sql, |q| q
            .bind(tenant_id)
            .bind(id)
            .bind(version)
            .bind(claim)
            .bind(now)
            .bind(until))?;
        Ok(done == 1)
    }

    /// Microseconds since the epoch by the database's clock (PostgreSQL is shared by every
    /// replica). A SQLite file is only shared by processes on one host: its clock is theirs.
    async fn clock_micros(&self) -> Result<i64, sqlx::Error> {
        match &self.database {
            Database::Postgres(pool) => {
                let (now,): (i64,) = sqlx::query_as(
                    "SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT",
                )
                .fetch_one(pool)
                .await?;
                Ok(now)
            }
            Database::Sqlite(_) => Ok(chrono::Utc::now().timestamp_micros()),
        }
    }

    /// Stores refreshed credentials if they are still at `version` (nothing else wrote them
    /// since the refresh began), bumping it and ending the claim.
    pub async fn finish_refresh(
        &self,
        tenant_id: &str,
        id: &str,
        version: i64,
        credentials: &SealedCredentials,
    ) -> Result<bool, sqlx::Error> {
        self.write_credentials(tenant_id, id, Some(version), credentials)
            .await
    }

    /// Ends a refresh claim that stored nothing, so a waiting replica need not wait it out.
    pub async fn release_refresh(
        &self,
        tenant_id: &str,
        id: &str,
        claim: &str,
    ) -> Result<(), sqlx::Error> {
        let sql = "UPDATE channel_accounts SET refresh_claim = '', refresh_claim_until = 0 \
                   WHERE tenant_id = $1 AND id = $2 AND refresh_claim = $3";
        on_pool!(&self.database, sql, |q| q
            .bind(tenant_id)
            .bind(id)
            .bind(claim))?;
        Ok(())
    }

    /// Marks a claimed refresh as refused by Zalo: until the credentials are written again
    /// (a new connect), nobody presents the spent refresh token another time.
    pub async fn refuse_refresh(
        &self,
        tenant_id: &str,
        id: &str,
        claim: &str,
    ) -> Result<(), sqlx::Error> {
        let sql = "UPDATE channel_accounts SET refresh_claim = $4, refresh_claim_until = $5 \
                   WHERE tenant_id = $1 AND id = $2 AND refresh_claim = $3";
        on_pool!(&self.database, sql, |q| q
            .bind(tenant_id)
            .bind(id)
            .bind(claim)
            .bind(REFRESH_REFUSED)
            .bind(i64::MAX))?;
        Ok(())
    }

    /// Whether Zalo refused the refresh token of the credentials at `version`.
    pub async fn refresh_refused(
        &self,
        tenant_id: &str,
        id: &str,
        version: i64,
    ) -> Result<bool, sqlx::Error> {
        let sql = "SELECT COUNT(*) FROM channel_accounts WHERE tenant_id = $1 AND id = $2 \
                   AND credentials_version = $3 AND refresh_claim = $4";
        let (count,): (i64,) = on_pool!(
            &self.database,
            sql,
            sqlx::query_as,
            |q| q
                .bind(tenant_id)
                .bind(id)
                .bind(version)
                .bind(REFRESH_REFUSED),
            fetch_one
        )?;
        Ok(count > 0)
    }

    /// The tenant's OA account for Zalo's `oa_id`, if one was connected before.
    pub async fn find_oa(
        &self,
        tenant_id: &str,
        oa_id: &str,
    ) -> Result<Option<Account>, sqlx::Error> {
        let sql = format!(
            "SELECT {} FROM channel_accounts WHERE tenant_id = $1 AND kind = $2 \
             AND external_id = $3 ORDER BY created_at, id LIMIT 1",
            columns(&self.database)
        );
        let row: Option<Row> = on_pool!(
            &self.database,
            &sql,
            sqlx::query_as,
            |q| q
                .bind(tenant_id)
                .bind(giao_proto::common::ChannelKind::ZaloOa as i16)
                .bind(oa_id),
            fetch_optional
        )?;
        Ok(row.map(from_row))
    }

    /// Takes the account's next send slot (GCRA: `pacing_tat_us` is the theoretical arrival
    /// time): the slot is `max(tat, now) + interval_us`, taken only if it lies at most
    /// `horizon_us` after now. One conditional UPDATE, so replicas sending for one account
    /// at once each get their own slot. Returns the slot and `now`, both by the database's
    /// clock; `None` when it lies further out (nothing is taken) or the account is gone.
    pub async fn take_send_slot(
        &self,
        tenant_id: &str,
        id: &str,
        interval_us: i64,
        horizon_us: i64,
    ) -> Result<Option<(i64, i64)>, sqlx::Error> {
        match &self.database {
            Database::Postgres(pool) => {
                // One reading of the clock for the whole statement.
                let sql = "WITH clock AS (SELECT \
                           (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT AS now) \
                           UPDATE channel_accounts \
                           SET pacing_tat_us = GREATEST(pacing_tat_us, clock.now) + $3 \
                           FROM clock WHERE tenant_id = $1 AND id = $2 \
                           AND GREATEST(pacing_tat_us, clock.now) + $3 - clock.now <= $4 \
                           RETURNING pacing_tat_us, clock.now";
                sqlx::query_as(sql)
                    .bind(tenant_id)
                    .bind(id)
                    .bind(interval_us)
                    .bind(horizon_us)
                    .fetch_optional(pool)
                    .await
            }
            Database::Sqlite(pool) => {
                // A SQLite file is shared only on one host: its clock is the replicas'.
                let now = Utc::now().timestamp_micros();
                let sql = "UPDATE channel_accounts \
                           SET pacing_tat_us = MAX(pacing_tat_us, ?5) + ?3 \
                           WHERE tenant_id = ?1 AND id = ?2 \
                           AND MAX(pacing_tat_us, ?5) + ?3 - ?5 <= ?4 \
                           RETURNING pacing_tat_us, ?5";
                sqlx::query_as(sql)
                    .bind(tenant_id)
                    .bind(id)
                    .bind(interval_us)
                    .bind(horizon_us)
                    .bind(now)
                    .fetch_optional(pool)
                    .await
            }
        }
    }
}

/// The claim a refused refresh leaves (random claims are hex, so never this).
const REFRESH_REFUSED: &str = "refused";

/// A row whose credentials are sealed under a retired key.
#[derive(Debug, Clone)]
pub struct StaleSeal {
    pub tenant_id: String,
    pub account_id: String,
    pub credentials: SealedCredentials,
}

/// Re-sealing after a key rotation. These queries span tenants on purpose (a rotation
/// re-seals every tenant's rows); nothing here is reachable from a caller's request.
#[derive(Debug, Clone)]
pub struct SealStore {
    database: Database,
}

impl SealStore {
    pub fn new(database: Database) -> Self {
        Self { database }
    }

    /// One account's sealed credentials, as [`Self::replace`] takes them.
    pub async fn sealed(
        &self,
        tenant_id: &str,
        account_id: &str,
    ) -> Result<Option<StaleSeal>, sqlx::Error> {
        let accounts = AccountStore::new(self.database.clone());
        Ok(accounts
            .credentials(tenant_id, account_id)
            .await?
            .map(|credentials| StaleSeal {
                tenant_id: tenant_id.to_string(),
                account_id: account_id.to_string(),
                credentials,
            }))
    }

    /// Up to `limit` rows sealed under the key `retired`, after (tenant, account) `after`
    /// in key order.
    pub async fn sealed_under(
        &self,
        retired: &str,
        after: (&str, &str),
        limit: u32,
    ) -> Result<Vec<StaleSeal>, sqlx::Error> {
        let sql = "SELECT tenant_id, id, credentials_kid, credentials FROM channel_accounts \
                   WHERE credentials IS NOT NULL AND credentials_kid = $1 \
                   AND (tenant_id > $2 OR (tenant_id = $2 AND id > $3)) \
                   ORDER BY tenant_id, id LIMIT $4";
        let rows: Vec<(String, String, String, Vec<u8>)> = on_pool!(
            &self.database,
            sql,
            sqlx::query_as,
            |q| q
                .bind(retired)
                .bind(after.0)
                .bind(after.1)
                .bind(i64::from(limit)),
            fetch_all
        )?;
        Ok(rows
            .into_iter()
            .map(|(tenant_id, account_id, key_id, sealed)| StaleSeal {
                tenant_id,
                account_id,
                credentials: SealedCredentials { key_id, sealed },
            })
            .collect())
    }

    /// Replaces a stale seal with `resealed` (the same plaintext under the current key) only
    /// if the row still holds exactly `stale`: a credentials write in between wins. The
    /// version is not bumped: nothing a refresh read has changed.
    pub async fn replace(
        &self,
        stale: &StaleSeal,
        resealed: &SealedCredentials,
    ) -> Result<bool, sqlx::Error> {
        let sql = "UPDATE channel_accounts SET credentials = $5, credentials_kid = $6 \
                   WHERE tenant_id = $1 AND id = $2 AND credentials_kid = $3 AND credentials = $4";
        let done = on_pool!(&self.database, sql, |q| q
            .bind(&stale.tenant_id)
            .bind(&stale.account_id)
            .bind(&stale.credentials.key_id)
            .bind(&stale.credentials.sealed)
            .bind(&resealed.sealed)
            .bind(&resealed.key_id))?;
        Ok(done == 1)
    }
}

/// One account's session lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub tenant_id: String,
    pub account_id: String,
    /// The replica holding it; empty when free.
    pub owner: String,
    /// Fencing token: bumped by every acquisition.
    pub token: i64,
    /// Microseconds since the epoch.
    pub expires_at: i64,
}

type LeaseRow = (String, String, String, i64, i64);

fn lease(row: LeaseRow) -> Lease {
    let (tenant_id, account_id, owner, token, expires_at) = row;
    Lease {
        tenant_id,
        account_id,
        owner,
        token,
        expires_at,
    }
}

/// Session leases. These queries span tenants on purpose: the runtime shares every
/// tenant's accounts among replicas. Nothing here is reachable from a caller's request
/// except [`LeaseStore::for_tenant`], which names the tenant.
#[derive(Debug, Clone)]
pub struct LeaseStore {
    database: Database,
}

impl LeaseStore {
    pub fn new(database: Database) -> Self {
        Self { database }
    }

    pub async fn heartbeat(&self, replica: &str, expires_at: i64) -> Result<(), sqlx::Error> {
        on_pool!(
            &self.database,
            "INSERT INTO connector_replicas (replica_id, expires_at) VALUES ($1, $2) \
             ON CONFLICT (replica_id) DO UPDATE SET expires_at = $2",
            |q| q.bind(replica).bind(expires_at)
        )?;
        Ok(())
    }

    pub async fn leave(&self, replica: &str) -> Result<(), sqlx::Error> {
        on_pool!(
            &self.database,
            "DELETE FROM connector_replicas WHERE replica_id = $1",
            |q| q.bind(replica)
        )?;
        Ok(())
    }

    pub async fn live_replicas(&self, now: i64) -> Result<Vec<String>, sqlx::Error> {
        let rows: Vec<(String,)> = on_pool!(
            &self.database,
            "SELECT replica_id FROM connector_replicas WHERE expires_at > $1 ORDER BY replica_id",
            sqlx::query_as,
            |q| q.bind(now),
            fetch_all
        )?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// (tenant, account) of every account that should have a session.
    pub async fn active_accounts(&self) -> Result<Vec<(String, String)>, sqlx::Error> {
        on_pool!(
            &self.database,
            "SELECT tenant_id, id FROM channel_accounts WHERE disabled = FALSE \
             ORDER BY tenant_id, id",
            sqlx::query_as,
            |q| q,
            fetch_all
        )
    }

    pub async fn all(&self) -> Result<Vec<Lease>, sqlx::Error> {
        let rows: Vec<LeaseRow> = on_pool!(
            &self.database,
            "SELECT tenant_id, channel_account_id, owner, token, expires_at FROM session_leases",
            sqlx::query_as,
            |q| q,
            fetch_all
        )?;
        Ok(rows.into_iter().map(lease).collect())
    }

    /// Live leases of one tenant, by account id.
    pub async fn for_tenant(&self, tenant_id: &str, now: i64) -> Result<Vec<Lease>, sqlx::Error> {
        let rows: Vec<LeaseRow> = on_pool!(
            &self.database,
            "SELECT tenant_id, channel_account_id, owner, token, expires_at FROM session_leases \
             WHERE tenant_id = $1 AND owner <> '' AND expires_at > $2 ORDER BY channel_account_id",
            sqlx::query_as,
            |q| q.bind(tenant_id).bind(now),
            fetch_all
        )?;
        Ok(rows.into_iter().map(lease).collect())
    }

    /// Takes a lease nobody ever held. Returns the token on success.
    pub async fn create(
        &self,
        tenant_id: &str,
        account_id: &str,
        owner: &str,
        expires_at: i64,
    ) -> Result<Option<i64>, sqlx::Error> {
        let done = on_pool!(
            &self.database,
            "INSERT INTO session_leases (tenant_id, channel_account_id, owner, token, expires_at) \
             VALUES ($1, $2, $3, 1, $4) ON CONFLICT DO NOTHING",
            |q| q
                .bind(tenant_id)
                .bind(account_id)
                .bind(owner)
                .bind(expires_at)
        )?;
        Ok((done == 1).then_some(1))
    }

    /// Takes a free or expired lease last seen with `seen_token`. The condition on the token
    /// makes two replicas racing for it see exactly one winner.
    pub async fn take(
        &self,
        tenant_id: &str,
        account_id: &str,
        owner: &str,
        seen_token: i64,
        now: i64,
        expires_at: i64,
    ) -> Result<Option<i64>, sqlx::Error> {
        let done = on_pool!(
            &self.database,
            "UPDATE session_leases SET owner = $3, token = token + 1, expires_at = $4 \
             WHERE tenant_id = $1 AND channel_account_id = $2 AND token = $5 \
             AND (owner = '' OR expires_at <= $6)",
            |q| q
                .bind(tenant_id)
                .bind(account_id)
                .bind(owner)
                .bind(expires_at)
                .bind(seen_token)
                .bind(now)
        )?;
        Ok((done == 1).then_some(seen_token + 1))
    }

    /// Extends a lease still held with `token`; false when it was lost.
    pub async fn renew(
        &self,
        tenant_id: &str,
        account_id: &str,
        owner: &str,
        token: i64,
        expires_at: i64,
    ) -> Result<bool, sqlx::Error> {
        let done = on_pool!(
            &self.database,
            "UPDATE session_leases SET expires_at = $5 WHERE tenant_id = $1 \
             AND channel_account_id = $2 AND owner = $3 AND token = $4",
            |q| q
                .bind(tenant_id)
                .bind(account_id)
                .bind(owner)
                .bind(token)
                .bind(expires_at)
        )?;
        Ok(done == 1)
    }

    pub async fn release(
        &self,
        tenant_id: &str,
        account_id: &str,
        owner: &str,
        token: i64,
    ) -> Result<bool, sqlx::Error> {
        let done = on_pool!(
            &self.database,
            "UPDATE session_leases SET owner = '', expires_at = 0 WHERE tenant_id = $1 \
             AND channel_account_id = $2 AND owner = $3 AND token = $4",
            |q| q.bind(tenant_id).bind(account_id).bind(owner).bind(token)
        )?;
        Ok(done == 1)
    }

    /// Gives back every lease `owner` holds, in one statement (a replica stopping with
    /// thousands of sessions must not spend its shutdown on one UPDATE each). Only this
    /// replica's rows match: another replica's lease names another owner.
    pub async fn release_all(&self, owner: &str) -> Result<u64, sqlx::Error> {
        on_pool!(
            &self.database,
            "UPDATE session_leases SET owner = '', expires_at = 0 WHERE owner = $1",
            |q| q.bind(owner)
        )
    }

    pub async fn record(
        &self,
        tenant_id: &str,
        account_id: &str,
        owner: &str,
        token: i64,
        at: i64,
    ) -> Result<(), sqlx::Error> {
        on_pool!(
            &self.database,
            "INSERT INTO session_history (tenant_id, channel_account_id, owner, token, acquired_at) \
             VALUES ($1, $2, $3, $4, $5)",
            |q| q
                .bind(tenant_id)
                .bind(account_id)
                .bind(owner)
                .bind(token)
                .bind(at)
        )?;
        Ok(())
    }

    /// Every acquisition: (tenant, account, owner, token, acquired_at), in token order.
    pub async fn history(&self) -> Result<Vec<(String, String, String, i64, i64)>, sqlx::Error> {
        on_pool!(
            &self.database,
            "SELECT tenant_id, channel_account_id, owner, token, acquired_at FROM session_history \
             ORDER BY tenant_id, channel_account_id, token",
            sqlx::query_as,
            |q| q,
            fetch_all
        )
    }
}

/// An OA connect waiting for its OAuth callback.
#[derive(Clone)]
pub struct OauthState {
    pub code_verifier: String,
    pub display_name: String,
    pub team_id: String,
    pub redirect_uri: String,
    pub expires_at: i64,
}

// The verifier never reaches a log line.
impl std::fmt::Debug for OauthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OauthState")
            .field("display_name", &self.display_name)
            .finish_non_exhaustive()
    }
}

impl AccountStore {
    pub async fn save_oauth_state(
        &self,
        tenant_id: &str,
        state: &str,
        pending: &OauthState,
    ) -> Result<(), sqlx::Error> {
        on_pool!(
            &self.database,
            "INSERT INTO oauth_states (tenant_id, state, code_verifier, display_name, team_id, \
             redirect_uri, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            |q| q
                .bind(tenant_id)
                .bind(state)
                .bind(&pending.code_verifier)
                .bind(&pending.display_name)
                .bind(&pending.team_id)
                .bind(&pending.redirect_uri)
                .bind(pending.expires_at)
        )?;
        Ok(())
    }

    /// Removes and returns the pending connect: a state is used once.
    pub async fn take_oauth_state(
        &self,
        tenant_id: &str,
        state: &str,
    ) -> Result<Option<OauthState>, sqlx::Error> {
        let row: Option<(String, String, String, String, i64)> = on_pool!(
            &self.database,
            "DELETE FROM oauth_states WHERE tenant_id = $1 AND state = $2 \
             RETURNING code_verifier, display_name, team_id, redirect_uri, expires_at",
            sqlx::query_as,
            |q| q.bind(tenant_id).bind(state),
            fetch_optional
        )?;
        Ok(row.map(
            |(code_verifier, display_name, team_id, redirect_uri, expires_at)| OauthState {
                code_verifier,
                display_name,
                team_id,
                redirect_uri,
                expires_at,
            },
        ))
    }
}
