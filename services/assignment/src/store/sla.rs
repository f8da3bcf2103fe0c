//! SLA policies and per-conversation clocks on both backends. Every query filters by tenant,
//! except the scheduler's claim of due clocks, which serves every tenant.

use giao_storage::Database;

use crate::error::Error;

/// An SLA policy as stored: times as `HH:MM`, weekdays and holidays comma-joined.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SlaPolicyRow {
    pub channel_account_id: String,
    pub first_response_secs: i64,
    pub next_response_secs: i64,
    pub weekdays: String,
    pub opens_at: String,
    pub closes_at: String,
    pub holidays: String,
    pub time_zone: String,
    pub escalate_to_user_id: String,
    pub reassign_after_secs: i64,
}

const POLICY_COLUMNS: &str = "channel_account_id, first_response_secs, next_response_secs, \
     weekdays, opens_at, closes_at, holidays, time_zone, escalate_to_user_id, reassign_after_secs";

pub async fn put_policy(
    database: &Database,
    tenant_id: &str,
    policy: &SlaPolicyRow,
) -> Result<(), Error> {
    execute!(
        database,
        "INSERT INTO sla_policies (tenant_id, channel_account_id, first_response_secs, \
         next_response_secs, weekdays, opens_at, closes_at, holidays, time_zone, \
         escalate_to_user_id, updated_at_us, reassign_after_secs) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT (tenant_id, channel_account_id) DO UPDATE SET \
         first_response_secs = excluded.first_response_secs, \
         next_response_secs = excluded.next_response_secs, weekdays = excluded.weekdays, \
         opens_at = excluded.opens_at, closes_at = excluded.closes_at, \
         holidays = excluded.holidays, time_zone = excluded.time_zone, \
         escalate_to_user_id = excluded.escalate_to_user_id, updated_at_us = excluded.updated_at_us, \
         reassign_after_secs = excluded.reassign_after_secs",
        tenant_id,
        &policy.channel_account_id,
        policy.first_response_secs,
        policy.next_response_secs,
        &policy.weekdays,
        &policy.opens_at,
        &policy.closes_at,
        &policy.holidays,
        &policy.time_zone,
        &policy.escalate_to_user_id,
        chrono::Utc::now().timestamp_micros(),
        policy.reassign_after_secs,
    )?;
    Ok(())
}

/// The account's own policy, else the tenant's default.
pub async fn policy_for(
    database: &Database,
    tenant_id: &str,
    channel_account_id: &str,
) -> Result<Option<SlaPolicyRow>, Error> {
    let rows = fetch_all!(
        database,
        SlaPolicyRow,
        format!(
            "SELECT {POLICY_COLUMNS} FROM sla_policies WHERE tenant_id = $1 \
             AND channel_account_id IN ($2, '') ORDER BY channel_account_id DESC LIMIT 1"
        ),
        tenant_id,
        channel_account_id,
    )?;
    Ok(rows.into_iter().next())
}

/// A customer is waiting since `sent_at_us` unless already waiting (the earliest unanswered
/// message counts) or answered after it (a late redelivery). The due time is `first_due`
/// until the conversation has had a reply, `next_due` after.
#[allow(clippy::too_many_arguments)]
pub async fn customer_wrote(
    database: &Database,
    tenant_id: &str,
    conversation_id: &str,
    channel_account_id: &str,
    owner_user_id: &str,
    team_id: &str,
    sent_at_us: i64,
    first_due_us: Option<i64>,
    next_due_us: Option<i64>,
    reassign_at_us: Option<i64>,
) -> Result<(), Error> {
    execute!(
        database,
        "INSERT INTO sla_clocks (tenant_id, conversation_id, channel_account_id, owner_user_id, \
         team_id, kind, waiting_since_us, due_at_us, reassign_at_us) \
         SELECT $1, $2, $3, \
           COALESCE((SELECT l.owner_user_id FROM conversation_load l \
                     WHERE l.tenant_id = $1 AND l.conversation_id = $2), $4), \
           COALESCE((SELECT l.team_id FROM conversation_load l \
                     WHERE l.tenant_id = $1 AND l.conversation_id = $2), $5), \
           'first_response', $6, $7, $9 WHERE TRUE \
         ON CONFLICT (tenant_id, conversation_id) DO UPDATE SET \
           waiting_since_us = excluded.waiting_since_us, \
           kind = CASE WHEN sla_clocks.replied THEN 'next_response' ELSE 'first_response' END, \
           due_at_us = CASE WHEN sla_clocks.replied THEN $8 ELSE $7 END, \
           breached_at_us = NULL, lease_owner = '', lease_until_us = 0, \
           reassign_at_us = excluded.reassign_at_us \
         WHERE sla_clocks.waiting_since_us IS NULL \
           AND sla_clocks.last_outbound_at_us < excluded.waiting_since_us",
        tenant_id,
        conversation_id,
        channel_account_id,
        owner_user_id,
        team_id,
        sent_at_us,
        first_due_us,
        next_due_us,
        reassign_at_us,
    )?;
    Ok(())
}

/// Staff answered at `sent_at_us`: the wait (if it began before) ends.
pub async fn staff_replied(
    database: &Database,
    tenant_id: &str,
    conversation_id: &str,
    channel_account_id: &str,
    sent_at_us: i64,
) -> Result<(), Error> {
    execute!(
        database,
        "INSERT INTO sla_clocks (tenant_id, conversation_id, channel_account_id, replied, \
         last_outbound_at_us) VALUES ($1, $2, $3, TRUE, $4) \
         ON CONFLICT (tenant_id, conversation_id) DO UPDATE SET replied = TRUE, \
           last_outbound_at_us = CASE WHEN sla_clocks.last_outbound_at_us > $4 \
             THEN sla_clocks.last_outbound_at_us ELSE $4 END, \
           due_at_us = CASE WHEN sla_clocks.waiting_since_us <= $4 THEN NULL \
             ELSE sla_clocks.due_at_us END, \
           reassign_at_us = CASE WHEN sla_clocks.waiting_since_us <= $4 THEN NULL \
             ELSE sla_clocks.reassign_at_us END, \
           waiting_since_us = CASE WHEN sla_clocks.waiting_since_us <= $4 THEN NULL \
             ELSE sla_clocks.waiting_since_us END",
        tenant_id,
        conversation_id,
        channel_account_id,
        sent_at_us,
    )?;
    Ok(())
}

/// Keeps the clock's owner and team in step with ownership (visibility, escalation).
pub async fn set_owner(
    database: &Database,
    tenant_id: &str,
    conversation_id: &str,
    owner_user_id: &str,
    team_id: &str,
) -> Result<(), Error> {
    execute!(
        database,
        "UPDATE sla_clocks SET owner_user_id = $3, team_id = $4 \
         WHERE tenant_id = $1 AND conversation_id = $2",
        tenant_id,
        conversation_id,
        owner_user_id,
        team_id,
    )?;
    Ok(())
}

/// A clock the scheduler has claimed.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DueClock {
    pub tenant_id: String,
    pub conversation_id: String,
    pub channel_account_id: String,
    pub owner_user_id: String,
    pub team_id: String,
    pub kind: String,
    pub waiting_since_us: i64,
    pub due_at_us: i64,
}

const DUE_COLUMNS: &str = "tenant_id, conversation_id, channel_account_id, owner_user_id, \
     team_id, kind, waiting_since_us, due_at_us";

/// Claims up to `limit` clocks due at `now_us` for `lease_owner` until `lease_until_us`.
/// Replicas claim disjoint sets: PostgreSQL skips rows another replica has locked and
/// leaves rows under a live lease alone; SQLite has one writer. A claim whose replica dies
/// is taken over once its lease runs out.
pub async fn claim_due(
    database: &Database,
    lease_owner: &str,
    now_us: i64,
    lease_until_us: i64,
    limit: i64,
) -> Result<Vec<DueClock>, Error> {
    let rows = match database {
        Database::Postgres(pool) => {
            sqlx::query_as::<_, DueClock>(sqlx::AssertSqlSafe(format!(
                "UPDATE sla_clocks c SET lease_owner = $1, lease_until_us = $2 \
                 FROM (SELECT tenant_id, conversation_id FROM sla_clocks \
                       WHERE waiting_since_us IS NOT NULL AND breached_at_us IS NULL \
                         AND due_at_us IS NOT NULL AND due_at_us <= $3 AND lease_until_us < $3 \
                       ORDER BY due_at_us LIMIT $4 FOR UPDATE SKIP LOCKED) d \
                 WHERE c.tenant_id = d.tenant_id AND c.conversation_id = d.conversation_id \
                 RETURNING {}",
                DUE_COLUMNS
                    .split(", ")
                    .map(|column| format!("c.{column}"))
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
            sqlx::query_as::<_, DueClock>(sqlx::AssertSqlSafe(format!(
                "UPDATE sla_clocks SET lease_owner = ?1, lease_until_us = ?2 \
                 WHERE rowid IN (SELECT rowid FROM sla_clocks \
                       WHERE waiting_since_us IS NOT NULL AND breached_at_us IS NULL \
                         AND due_at_us IS NOT NULL AND due_at_us <= ?3 AND lease_until_us < ?3 \
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

/// Records the breach of the wait that began at `waiting_since_us`, if this replica still
/// holds the claim (it may have lost it to a newer wait or an expired lease).
pub async fn mark_breached(
    database: &Database,
    clock: &DueClock,
    lease_owner: &str,
    breached_at_us: i64,
) -> Result<bool, Error> {
    let updated = execute!(
        database,
        "UPDATE sla_clocks SET breached_at_us = $5 WHERE tenant_id = $1 AND conversation_id = $2 \
         AND lease_owner = $3 AND waiting_since_us = $4 AND breached_at_us IS NULL",
        &clock.tenant_id,
        &clock.conversation_id,
        lease_owner,
        clock.waiting_since_us,
        breached_at_us,
    )?;
    Ok(updated > 0)
}

/// A conversation waiting for a reply.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Waiting {
    pub conversation_id: String,
    pub owner_user_id: String,
    pub team_id: String,
    pub waiting_since_us: i64,
    pub due_at_us: Option<i64>,
    pub breached_at_us: Option<i64>,
}

/// Whose waiting conversations a caller sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Tenant,
    /// Their own (agents).
    Own(String),
    /// Their own and their teams' (supervisors).
    Teams {
        user_id: String,
        team_ids: Vec<String>,
    },
}

/// Waiting conversations the scope sees, longest wait first, after the cursor.
pub async fn unattended(
    database: &Database,
    tenant_id: &str,
    scope: &Scope,
    team_id: &str,
    after: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<Waiting>, Error> {
    let (mode, user, teams) = match scope {
        Scope::Tenant => ("all", String::new(), String::from(",")),
        Scope::Own(user) => ("own", user.clone(), String::from(",")),
        Scope::Teams { user_id, team_ids } => {
            let mut joined = String::from(",");
            for team in team_ids {
                joined.push_str(team);
                joined.push(',');
            }
            ("teams", user_id.clone(), joined)
        }
    };
    let (after_at, after_id) = after.unwrap_or((i64::MIN, String::new()));
    let rows = fetch_all!(
        database,
        Waiting,
        "SELECT conversation_id, owner_user_id, team_id, waiting_since_us, due_at_us, \
         breached_at_us FROM sla_clocks WHERE tenant_id = $1 AND waiting_since_us IS NOT NULL \
         AND ($2 = 'all' OR owner_user_id = $3 \
              OR ($2 = 'teams' AND team_id <> '' AND $4 LIKE '%,' || team_id || ',%')) \
         AND ($5 = '' OR team_id = $5) \
         AND (waiting_since_us > $6 OR (waiting_since_us = $6 AND conversation_id > $7)) \
         ORDER BY waiting_since_us, conversation_id LIMIT $8",
        tenant_id,
        mode,
        user,
        teams,
        team_id,
        after_at,
        after_id,
        limit,
    )?;
    Ok(rows)
}

/// Claims clocks whose owner has had `reassign_after_secs` without answering (see
/// `claim_due`; the same lease, released again by `reassigned`).
pub async fn claim_reassign(
    database: &Database,
    lease_owner: &str,
    now_us: i64,
    lease_until_us: i64,
    limit: i64,
) -> Result<Vec<DueClock>, Error> {
    let columns = "tenant_id, conversation_id, channel_account_id, owner_user_id, team_id, kind, \
                   waiting_since_us, COALESCE(due_at_us, 0) AS due_at_us";
    let rows = match database {
        Database::Postgres(pool) => {
            sqlx::query_as::<_, DueClock>(sqlx::AssertSqlSafe(format!(
                "UPDATE sla_clocks c SET lease_owner = $1, lease_until_us = $2 \
                 FROM (SELECT tenant_id, conversation_id FROM sla_clocks \
                       WHERE waiting_since_us IS NOT NULL AND reassign_at_us IS NOT NULL \
                         AND reassign_at_us <= $3 AND lease_until_us < $3 \
                       ORDER BY reassign_at_us LIMIT $4 FOR UPDATE SKIP LOCKED) d \
                 WHERE c.tenant_id = d.tenant_id AND c.conversation_id = d.conversation_id \
                 RETURNING {}",
                "c.tenant_id, c.conversation_id, c.channel_account_id, c.owner_user_id, \
                 c.team_id, c.kind, c.waiting_since_us, COALESCE(c.due_at_us, 0) AS due_at_us"
            )))
            .bind(lease_owner)
            .bind(lease_until_us)
            .bind(now_us)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }
        Database::Sqlite(pool) => {
            sqlx::query_as::<_, DueClock>(sqlx::AssertSqlSafe(format!(
                "UPDATE sla_clocks SET lease_owner = ?1, lease_until_us = ?2 \
                 WHERE rowid IN (SELECT rowid FROM sla_clocks \
                       WHERE waiting_since_us IS NOT NULL AND reassign_at_us IS NOT NULL \
                         AND reassign_at_us <= ?3 AND lease_until_us < ?3 \
                       ORDER BY reassign_at_us LIMIT ?4) \
                 RETURNING {columns}"
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

/// The re-assignment of this wait is done (or found nobody): it happens once per wait, and
/// the clock's lease is free for its breach.
pub async fn reassigned(
    database: &Database,
    clock: &DueClock,
    lease_owner: &str,
) -> Result<(), Error> {
    execute!(
        database,
        "UPDATE sla_clocks SET reassign_at_us = NULL, lease_until_us = 0 \
         WHERE tenant_id = $1 AND conversation_id = $2 AND lease_owner = $3 \
         AND waiting_since_us = $4",
        &clock.tenant_id,
        &clock.conversation_id,
        lease_owner,
        clock.waiting_since_us,
    )?;
    Ok(())
}
