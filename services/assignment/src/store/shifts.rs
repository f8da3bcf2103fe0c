//! Shifts and the last seen on-shift set per account, on both backends. Every query filters
//! by tenant, except the list of tenants that have shifts.

use chrono::NaiveTime;
use giao_storage::Database;

use crate::{error::Error, routing::ShiftWindow, sla::parse_time};

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

    /// Its days and times (`None` for a stored time that does not parse).
    pub fn window(&self) -> Option<ShiftWindow> {
        Some(ShiftWindow {
            weekdays: self.days(),
            starts_at: parse_time(&self.starts_at)?,
            ends_at: parse_time(&self.ends_at)?,
        })
    }

    /// The first of `others` (another shift id) that this shift overlaps, with the first
    /// moment they share (ISO weekday, local time). Times are compared as written: a
    /// person's shifts are in one local time.
    pub fn first_overlap<'a>(
        &self,
        others: &'a [ShiftRow],
    ) -> Option<(&'a ShiftRow, u32, NaiveTime)> {
        let window = self.window()?;
        others
            .iter()
            .filter(|other| other.shift_id != self.shift_id)
            .find_map(|other| {
                let (day, at) = window.overlap(&other.window()?)?;
                Some((other, day, at))
            })
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

/// A user's shifts, all of them (a rota's worth: small).
pub async fn of_user(
    database: &Database,
    tenant_id: &str,
    user_id: &str,
) -> Result<Vec<ShiftRow>, Error> {
    Ok(fetch_all!(
        database,
        ShiftRow,
        format!(
            "SELECT {COLUMNS} FROM shifts WHERE tenant_id = $1 AND user_id = $2 ORDER BY shift_id"
        ),
        tenant_id,
        user_id,
    )?)
}

/// What a handover did with a leaver's shifts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShiftsHandedOver {
    pub moved: u64,
    /// Left with the leaver because the heir already works at that time.
    pub kept: u64,
}

/// Hands a leaver's shifts to `to_user_id`, oldest id first, except each that overlaps a
/// shift the heir already has (or was just given): one person cannot work two shifts at
/// once, so that one stays with the leaver for a supervisor to re-plan. Run under the
/// tenant's routing lock, like SetShift, so the check and the move are not raced.
pub async fn hand_over(
    database: &Database,
    tenant_id: &str,
    from_user_id: &str,
    to_user_id: &str,
) -> Result<ShiftsHandedOver, Error> {
    let mut theirs = of_user(database, tenant_id, to_user_id).await?;
    let mut outcome = ShiftsHandedOver::default();
    for mut shift in of_user(database, tenant_id, from_user_id).await? {
        if let Some((conflict, _, _)) = shift.first_overlap(&theirs) {
            tracing::info!(
                shift_id = %shift.shift_id,
                conflicting_shift_id = %conflict.shift_id,
                "a leaver's shift overlaps one of the heir's and stays to be re-planned"
            );
            outcome.kept += 1;
            continue;
        }
        outcome.moved += execute!(
            database,
            "UPDATE shifts SET user_id = $4, updated_at_us = $5 \
             WHERE tenant_id = $1 AND shift_id = $2 AND user_id = $3",
            tenant_id,
            &shift.shift_id,
            from_user_id,
            to_user_id,
            chrono::Utc::now().timestamp_micros(),
        )?;
        shift.user_id = to_user_id.to_string();
        theirs.push(shift);
    }
    Ok(outcome)
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
