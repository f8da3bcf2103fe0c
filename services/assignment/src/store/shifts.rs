//! Shifts and the last seen on-shift set per account, on both backends. Every query filters
//! by tenant, except the list of tenants that have shifts.

use giao_storage::Database;

use crate::error::Error;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ShiftRow {
    pub shift_id: String,
    pub user_id: String,
    /// `,a,b,`
    pub channel_account_ids: String,
    /// `1,2,3`
    pub weekdays: String,
    pub starts_at: String,
    pub ends_at: String,
}

impl ShiftRow {
    pub fn accounts(&self) -> Vec<String> {
        self.channel_account_ids
            .split(',')
            .filter(|account| !account.is_empty())
            .map(str::to_string)
            .collect()
    }

    pub fn days(&self) -> Vec<u32> {
        self.weekdays
            .split(',')
            .filter_map(|day| day.parse().ok())
            .collect()
    }
}

const COLUMNS: &str = "shift_id, user_id, channel_account_ids, weekdays, starts_at, ends_at";

pub async fn put(database: &Database, tenant_id: &str, shift: &ShiftRow) -> Result<(), Error> {
    execute!(
        database,
        "INSERT INTO shifts (tenant_id, shift_id, user_id, channel_account_ids, weekdays, \
         starts_at, ends_at, updated_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (tenant_id, shift_id) DO UPDATE SET user_id = excluded.user_id, \
         channel_account_ids = excluded.channel_account_ids, weekdays = excluded.weekdays, \
         starts_at = excluded.starts_at, ends_at = excluded.ends_at, \
         updated_at_us = excluded.updated_at_us",
        tenant_id,
        &shift.shift_id,
        &shift.user_id,
        &shift.channel_account_ids,
        &shift.weekdays,
        &shift.starts_at,
        &shift.ends_at,
        chrono::Utc::now().timestamp_micros(),
    )?;
    Ok(())
}

/// Every shift of the tenant (a roster's worth: small).
pub async fn of_tenant(database: &Database, tenant_id: &str) -> Result<Vec<ShiftRow>, Error> {
    Ok(fetch_all!(
        database,
        ShiftRow,
        format!("SELECT {COLUMNS} FROM shifts WHERE tenant_id = $1 ORDER BY shift_id"),
        tenant_id,
    )?)
}

/// A user's shifts (all users' when `user_id` is empty), after `after`.
pub async fn list(
    database: &Database,
    tenant_id: &str,
    user_id: &str,
    after: &str,
    limit: i64,
) -> Result<Vec<ShiftRow>, Error> {
    Ok(fetch_all!(
        database,
        ShiftRow,
        format!(
            "SELECT {COLUMNS} FROM shifts WHERE tenant_id = $1 AND ($2 = '' OR user_id = $2) \
             AND shift_id > $3 ORDER BY shift_id LIMIT $4"
        ),
        tenant_id,
        user_id,
        after,
        limit,
    )?)
}

pub async fn get(
    database: &Database,
    tenant_id: &str,
    shift_id: &str,
) -> Result<Option<ShiftRow>, Error> {
    Ok(fetch_all!(
        database,
        ShiftRow,
        format!("SELECT {COLUMNS} FROM shifts WHERE tenant_id = $1 AND shift_id = $2"),
        tenant_id,
        shift_id,
    )?
    .into_iter()
    .next())
}

/// Hands a leaver's shifts to their successor; returns how many moved.
pub async fn move_all(
    database: &Database,
    tenant_id: &str,
    from_user_id: &str,
    to_user_id: &str,
) -> Result<u64, Error> {
    Ok(execute!(
        database,
        "UPDATE shifts SET user_id = $3 WHERE tenant_id = $1 AND user_id = $2",
        tenant_id,
        from_user_id,
        to_user_id,
    )?)
}

pub async fn tenants(database: &Database) -> Result<Vec<String>, Error> {
    Ok(
        fetch_all!(database, (String,), "SELECT DISTINCT tenant_id FROM shifts",)?
            .into_iter()
            .map(|(tenant,)| tenant)
            .collect(),
    )
}

/// Records who is on shift for the account now; returns who was before (`None` the first
/// time the account is seen).
pub async fn swap_on_shift(
    database: &Database,
    tenant_id: &str,
    channel_account_id: &str,
    on_shift: &str,
) -> Result<Option<String>, Error> {
    let before = fetch_all!(
        database,
        (String,),
        "SELECT on_shift FROM account_shift_state WHERE tenant_id = $1 AND channel_account_id = $2",
        tenant_id,
        channel_account_id,
    )?
    .into_iter()
    .next()
    .map(|(on_shift,)| on_shift);
    if before.as_deref() != Some(on_shift) {
        execute!(
            database,
            "INSERT INTO account_shift_state (tenant_id, channel_account_id, on_shift, changed_at_us) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, channel_account_id) DO UPDATE SET \
             on_shift = excluded.on_shift, changed_at_us = excluded.changed_at_us",
            tenant_id,
            channel_account_id,
            on_shift,
            chrono::Utc::now().timestamp_micros(),
        )?;
    }
    Ok(before)
}
