//! Reminders and follow-up rules on both backends. Every query filters by tenant, except
//! the scheduler's claim of due reminders, which serves every tenant.

use giao_storage::Database;

use crate::error::Error;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ReminderRow {
    pub reminder_id: String,
    pub user_id: String,
    pub conversation_id: String,
    pub contact_id: String,
    pub text: String,
    pub due_at_us: i64,
    pub fired_at_us: Option<i64>,
    pub source: String,
}

const COLUMNS: &str =
    "reminder_id, user_id, conversation_id, contact_id, text, due_at_us, fired_at_us, source";

/// A reminder to create.
#[derive(Debug, Clone)]
pub struct NewReminder {
    pub reminder_id: String,
    pub user_id: String,
    pub conversation_id: String,
    pub contact_id: String,
    pub text: String,
    pub due_at_us: i64,
    pub source: String,
    pub quiet_secs: i64,
    pub created_by: String,
    pub idempotency_key: String,
}

/// Creates the reminder unless its id (or the creator's idempotency key) exists; returns
/// the stored one either way.
pub async fn create(
    database: &Database,
    tenant_id: &str,
    reminder: &NewReminder,
) -> Result<Option<ReminderRow>, Error> {
    execute!(
        database,
        "INSERT INTO reminders (tenant_id, reminder_id, user_id, conversation_id, contact_id, \
         text, due_at_us, source, quiet_secs, created_by, idempotency_key, created_at_us) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING",
        tenant_id,
        &reminder.reminder_id,
        &reminder.user_id,
        &reminder.conversation_id,
        &reminder.contact_id,
        &reminder.text,
        reminder.due_at_us,
        &reminder.source,
        reminder.quiet_secs,
        &reminder.created_by,
        &reminder.idempotency_key,
        chrono::Utc::now().timestamp_micros(),
    )?;
    let rows = fetch_all!(
        database,
        ReminderRow,
        format!(
            "SELECT {COLUMNS} FROM reminders WHERE tenant_id = $1 AND (reminder_id = $2 \
             OR ($4 <> '' AND created_by = $3 AND idempotency_key = $4))"
        ),
        tenant_id,
        &reminder.reminder_id,
        &reminder.created_by,
        &reminder.idempotency_key,
    )?;
    Ok(rows.into_iter().next())
}

/// A user's reminders by due time, after the cursor.
pub async fn list(
    database: &Database,
    tenant_id: &str,
    user_id: &str,
    after: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<ReminderRow>, Error> {
    let (after_at, after_id) = after.unwrap_or((i64::MIN, String::new()));
    Ok(fetch_all!(
        database,
        ReminderRow,
        format!(
            "SELECT {COLUMNS} FROM reminders WHERE tenant_id = $1 AND user_id = $2 \
             AND (due_at_us > $3 OR (due_at_us = $3 AND reminder_id > $4)) \
             ORDER BY due_at_us, reminder_id LIMIT $5"
        ),
        tenant_id,
        user_id,
        after_at,
        after_id,
        limit,
    )?)
}

/// A reminder the scheduler claimed.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DueReminder {
    pub tenant_id: String,
    pub reminder_id: String,
    pub user_id: String,
    pub conversation_id: String,
    pub contact_id: String,
    pub text: String,
    pub due_at_us: i64,
}

const DUE_COLUMNS: &str =
    "tenant_id, reminder_id, user_id, conversation_id, contact_id, text, due_at_us";

/// Claims due reminders for `lease_owner` (see `store::sla::claim_due`).
pub async fn claim_due(
    database: &Database,
    lease_owner: &str,
    now_us: i64,
    lease_until_us: i64,
    limit: i64,
) -> Result<Vec<DueReminder>, Error> {
    let rows = match database {
        Database::Postgres(pool) => {
            sqlx::query_as::<_, DueReminder>(sqlx::AssertSqlSafe(format!(
                "UPDATE reminders r SET lease_owner = $1, lease_until_us = $2 \
                 FROM (SELECT tenant_id, reminder_id FROM reminders \
                       WHERE fired_at_us IS NULL AND due_at_us <= $3 AND lease_until_us < $3 \
                       ORDER BY due_at_us LIMIT $4 FOR UPDATE SKIP LOCKED) d \
                 WHERE r.tenant_id = d.tenant_id AND r.reminder_id = d.reminder_id \
                 RETURNING {}",
                DUE_COLUMNS
                    .split(", ")
                    .map(|column| format!("r.{column}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
            .bind(lease_owner)
            .bind(lease_until_us)
            .bind(now_us)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }
        Database::Sqlite(pool) => {
            sqlx::query_as::<_, DueReminder>(sqlx::AssertSqlSafe(format!(
                "UPDATE reminders SET lease_owner = ?1, lease_until_us = ?2 \
                 WHERE rowid IN (SELECT rowid FROM reminders \
                       WHERE fired_at_us IS NULL AND due_at_us <= ?3 AND lease_until_us < ?3 \
                       ORDER BY due_at_us LIMIT ?4) \
                 RETURNING {DUE_COLUMNS}"
            )))
            .bind(lease_owner)
            .bind(lease_until_us)
            .bind(now_us)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }
    };
    Ok(rows)
}

pub async fn mark_fired(
    database: &Database,
    reminder: &DueReminder,
    lease_owner: &str,
    fired_at_us: i64,
) -> Result<bool, Error> {
    Ok(execute!(
        database,
        "UPDATE reminders SET fired_at_us = $4 WHERE tenant_id = $1 AND reminder_id = $2 \
         AND lease_owner = $3 AND fired_at_us IS NULL AND due_at_us = $5",
        &reminder.tenant_id,
        &reminder.reminder_id,
        lease_owner,
        fired_at_us,
        reminder.due_at_us,
    )? > 0)
}

/// Something was sent to the customer at `sent_at_us`: pending follow-ups of the
/// conversation wait their quiet period again from then.
pub async fn push_follow_ups(
    database: &Database,
    tenant_id: &str,
    conversation_id: &str,
    sent_at_us: i64,
) -> Result<(), Error> {
    execute!(
        database,
        "UPDATE reminders SET due_at_us = $3 + quiet_secs * 1000000, lease_until_us = 0 \
         WHERE tenant_id = $1 AND conversation_id = $2 AND source <> 'manual' \
         AND fired_at_us IS NULL AND due_at_us < $3 + quiet_secs * 1000000",
        tenant_id,
        conversation_id,
        sent_at_us,
    )?;
    Ok(())
}

/// The contact's care status changed: its pending follow-ups no longer apply.
pub async fn drop_follow_ups(
    database: &Database,
    tenant_id: &str,
    contact_id: &str,
) -> Result<(), Error> {
    execute!(
        database,
        "DELETE FROM reminders WHERE tenant_id = $1 AND contact_id = $2 \
         AND source <> 'manual' AND fired_at_us IS NULL",
        tenant_id,
        contact_id,
    )?;
    Ok(())
}

/// Pending follow-ups follow the conversation's new owner.
pub async fn follow_owner(
    database: &Database,
    tenant_id: &str,
    conversation_id: &str,
    owner_user_id: &str,
) -> Result<(), Error> {
    execute!(
        database,
        "UPDATE reminders SET user_id = $3 WHERE tenant_id = $1 AND conversation_id = $2 \
         AND source <> 'manual' AND fired_at_us IS NULL",
        tenant_id,
        conversation_id,
        owner_user_id,
    )?;
    Ok(())
}

/// Hands a leaver's pending reminders to their successor; returns how many moved.
pub async fn move_pending(
    database: &Database,
    tenant_id: &str,
    from_user_id: &str,
    to_user_id: &str,
) -> Result<u64, Error> {
    Ok(execute!(
        database,
        "UPDATE reminders SET user_id = $3 WHERE tenant_id = $1 AND user_id = $2 \
         AND fired_at_us IS NULL",
        tenant_id,
        from_user_id,
        to_user_id,
    )?)
}

/// Hands a leaver's pending reminders to whoever now owns what they are about: the
/// conversation's new owner, else the owner of the contact's latest conversation, else
/// `fallback`. Returns how many moved.
pub async fn move_pending_to_owners(
    database: &Database,
    tenant_id: &str,
    from_user_id: &str,
    fallback: &str,
) -> Result<u64, Error> {
    Ok(execute!(
        database,
        "UPDATE reminders SET user_id = COALESCE( \
           (SELECT l.owner_user_id FROM conversation_load l \
              WHERE l.tenant_id = reminders.tenant_id \
              AND l.conversation_id = reminders.conversation_id \
              AND reminders.conversation_id <> '' AND l.owner_user_id <> $2), \
           (SELECT l.owner_user_id FROM conversation_load l \
              WHERE l.tenant_id = reminders.tenant_id AND l.contact_id = reminders.contact_id \
              AND reminders.contact_id <> '' AND l.owner_user_id <> $2 \
              ORDER BY l.updated_at_us DESC LIMIT 1), \
           $3) \
         WHERE tenant_id = $1 AND user_id = $2 AND fired_at_us IS NULL",
        tenant_id,
        from_user_id,
        fallback,
    )?)
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FollowUpRuleRow {
    pub rule_id: String,
    pub care_status: String,
    pub quiet_secs: i64,
    pub text: String,
}

pub async fn put_rule(
    database: &Database,
    tenant_id: &str,
    rule: &FollowUpRuleRow,
) -> Result<(), Error> {
    execute!(
        database,
        "INSERT INTO follow_up_rules (tenant_id, rule_id, care_status, quiet_secs, text, \
         updated_at_us) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, rule_id) \
         DO UPDATE SET care_status = excluded.care_status, quiet_secs = excluded.quiet_secs, \
         text = excluded.text, updated_at_us = excluded.updated_at_us",
        tenant_id,
        &rule.rule_id,
        &rule.care_status,
        rule.quiet_secs,
        &rule.text,
        chrono::Utc::now().timestamp_micros(),
    )?;
    Ok(())
}

pub async fn rules_for(
    database: &Database,
    tenant_id: &str,
    care_status: &str,
) -> Result<Vec<FollowUpRuleRow>, Error> {
    Ok(fetch_all!(
        database,
        FollowUpRuleRow,
        "SELECT rule_id, care_status, quiet_secs, text FROM follow_up_rules \
         WHERE tenant_id = $1 AND care_status = $2 ORDER BY rule_id",
        tenant_id,
        care_status,
    )?)
}

/// The contact's conversations that have an owner, with the owner.
pub async fn owned_conversations(
    database: &Database,
    tenant_id: &str,
    contact_id: &str,
) -> Result<Vec<(String, String)>, Error> {
    Ok(fetch_all!(
        database,
        (String, String),
        "SELECT conversation_id, owner_user_id FROM conversation_load \
         WHERE tenant_id = $1 AND contact_id = $2 AND owner_user_id IS NOT NULL \
         AND is_open ORDER BY conversation_id",
        tenant_id,
        contact_id,
    )?)
}
