//! Roster, capacity, routing policies, per-conversation load and the unassigned queue, on
//! both backends. Every query filters by tenant.

use chrono::Utc;
use giao_storage::Database;

use crate::{
    error::Error,
    routing::{Agent, Policy, Rule, ShiftChange, Strategy},
};

fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

/// `,t1,t2,`: team membership is then one `LIKE '%,t,%'` on both backends.
fn joined(items: &[String]) -> String {
    let mut joined = String::from(",");
    for item in items {
        joined.push_str(item);
        joined.push(',');
    }
    joined
}

fn split(joined: &str) -> Vec<String> {
    joined
        .split(',')
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

/// A user as mirrored from auth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterUser {
    pub user_id: String,
    pub role: String,
    pub active: bool,
    pub team_ids: Vec<String>,
    pub display_name: String,
}

/// Upserts `users`, all stamped `synced_at_us`.
pub async fn upsert_roster(
    database: &Database,
    tenant_id: &str,
    users: &[RosterUser],
    synced_at_us: i64,
) -> Result<(), Error> {
    for user in users {
        execute!(
            database,
            "INSERT INTO roster_users (tenant_id, user_id, role, active, team_ids, display_name, synced_at_us) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, user_id) DO UPDATE SET \
             role = excluded.role, active = excluded.active, team_ids = excluded.team_ids, \
             display_name = excluded.display_name, synced_at_us = excluded.synced_at_us",
            tenant_id,
            &user.user_id,
            &user.role,
            user.active,
            joined(&user.team_ids),
            &user.display_name,
            synced_at_us,
        )?;
    }
    Ok(())
}

/// Users auth no longer listed in the sync that started at `synced_at_us` are inactive.
pub async fn deactivate_unsynced(
    database: &Database,
    tenant_id: &str,
    synced_at_us: i64,
) -> Result<u64, Error> {
    Ok(execute!(
        database,
        "UPDATE roster_users SET active = FALSE WHERE tenant_id = $1 AND synced_at_us < $2",
        tenant_id,
        synced_at_us,
    )?)
}

/// Marks a user inactive at once (UserDeactivated), before the next sync.
pub async fn deactivate_user(
    database: &Database,
    tenant_id: &str,
    user_id: &str,
) -> Result<(), Error> {
    execute!(
        database,
        "UPDATE roster_users SET active = FALSE WHERE tenant_id = $1 AND user_id = $2",
        tenant_id,
        user_id,
    )?;
    Ok(())
}

pub async fn set_capacity(
    database: &Database,
    tenant_id: &str,
    user_id: &str,
    max_open: i64,
) -> Result<(), Error> {
    if max_open <= 0 {
        execute!(
            database,
            "DELETE FROM agent_capacity WHERE tenant_id = $1 AND user_id = $2",
            tenant_id,
            user_id,
        )?;
    } else {
        execute!(
            database,
            "INSERT INTO agent_capacity (tenant_id, user_id, max_open) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id, user_id) DO UPDATE SET max_open = excluded.max_open",
            tenant_id,
            user_id,
            max_open,
        )?;
    }
    Ok(())
}

/// Every active agent or supervisor of the tenant with availability, capacity and open load.
pub async fn agents(database: &Database, tenant_id: &str) -> Result<Vec<Agent>, Error> {
    type AgentRow = (String, String, Option<String>, Option<i64>, i64);
    let rows = fetch_all!(
        database,
        AgentRow,
        "SELECT r.user_id, r.team_ids, a.availability, c.max_open, \
           (SELECT COUNT(*) FROM conversation_load l WHERE l.tenant_id = r.tenant_id \
              AND l.owner_user_id = r.user_id AND l.is_open) \
         FROM roster_users r \
         LEFT JOIN agent_availability a ON a.tenant_id = r.tenant_id AND a.user_id = r.user_id \
         LEFT JOIN agent_capacity c ON c.tenant_id = r.tenant_id AND c.user_id = r.user_id \
         WHERE r.tenant_id = $1 AND r.active AND r.role IN ('agent', 'supervisor')",
        tenant_id,
    )?;
    Ok(rows
        .into_iter()
        .map(|(user_id, team_ids, availability, max_open, open)| Agent {
            user_id,
            team_ids: split(&team_ids),
            // Nobody is handed work before saying they are online.
            available: availability.as_deref() == Some("online"),
            open,
            max_open,
        })
        .collect())
}

type PolicyRow = (
    String,
    String,
    String,
    bool,
    i64,
    String,
    String,
    String,
    String,
);

const POLICY_COLUMNS: &str = "channel_account_id, team_id, strategy, sticky_owner, \
     max_open_per_agent, rules_json, last_user_id, time_zone, on_shift_change";

fn policy_of(row: PolicyRow) -> Policy {
    let (
        channel_account_id,
        team_id,
        strategy,
        sticky_owner,
        max_open,
        rules,
        last,
        time_zone,
        on_shift_change,
    ) = row;
    Policy {
        channel_account_id,
        team_id,
        strategy: Strategy::parse(&strategy).unwrap_or(Strategy::RoundRobin),
        sticky_owner,
        max_open_per_agent: max_open,
        rules: serde_json::from_str::<Vec<Rule>>(&rules).unwrap_or_default(),
        last_user_id: last,
        time_zone,
        on_shift_change: ShiftChange::parse(&on_shift_change),
    }
}

/// Creates or replaces a policy; the round-robin position survives a replacement.
pub async fn put_policy(
    database: &Database,
    tenant_id: &str,
    policy: &Policy,
) -> Result<(), Error> {
    let rules = serde_json::to_string(&policy.rules).unwrap_or_else(|_| "[]".into());
    execute!(
        database,
        "INSERT INTO routing_policies (tenant_id, channel_account_id, team_id, strategy, \
         sticky_owner, max_open_per_agent, rules_json, updated_at_us, time_zone, on_shift_change) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (tenant_id, channel_account_id) \
         DO UPDATE SET team_id = excluded.team_id, strategy = excluded.strategy, \
         sticky_owner = excluded.sticky_owner, max_open_per_agent = excluded.max_open_per_agent, \
         rules_json = excluded.rules_json, updated_at_us = excluded.updated_at_us, \
         time_zone = excluded.time_zone, on_shift_change = excluded.on_shift_change",
        tenant_id,
        &policy.channel_account_id,
        &policy.team_id,
        policy.strategy.as_str(),
        policy.sticky_owner,
        policy.max_open_per_agent,
        rules,
        now_us(),
        &policy.time_zone,
        policy.on_shift_change.as_str(),
    )?;
    Ok(())
}

/// Policies ordered by channel account (the default, `""`, first), after `after`.
pub async fn list_policies(
    database: &Database,
    tenant_id: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Policy>, Error> {
    let rows = fetch_all!(
        database,
        PolicyRow,
        format!(
            "SELECT {POLICY_COLUMNS} FROM routing_policies WHERE tenant_id = $1 \
             AND ($2 IS NULL OR channel_account_id > $2) ORDER BY channel_account_id LIMIT $3"
        ),
        tenant_id,
        after,
        limit,
    )?;
    Ok(rows.into_iter().map(policy_of).collect())
}

/// The account's own policy, else the tenant's default, else none (not routed).
pub async fn policy_for(
    database: &Database,
    tenant_id: &str,
    channel_account_id: &str,
) -> Result<Option<Policy>, Error> {
    let rows = fetch_all!(
        database,
        PolicyRow,
        format!(
            "SELECT {POLICY_COLUMNS} FROM routing_policies WHERE tenant_id = $1 \
             AND channel_account_id IN ($2, '') ORDER BY channel_account_id DESC LIMIT 1"
        ),
        tenant_id,
        channel_account_id,
    )?;
    Ok(rows.into_iter().next().map(policy_of))
}

/// The policy that names `team_id` as its pool (the tenant's default first, then by
/// account), used when a leaver's work is shared across their team.
pub async fn team_policy(
    database: &Database,
    tenant_id: &str,
    team_id: &str,
) -> Result<Option<Policy>, Error> {
    let rows = fetch_all!(
        database,
        PolicyRow,
        format!(
            "SELECT {POLICY_COLUMNS} FROM routing_policies WHERE tenant_id = $1 \
             AND team_id = $2 ORDER BY channel_account_id LIMIT 1"
        ),
        tenant_id,
        team_id,
    )?;
    Ok(rows.into_iter().next().map(policy_of))
}

pub async fn set_last_user(
    database: &Database,
    tenant_id: &str,
    channel_account_id: &str,
    user_id: &str,
) -> Result<(), Error> {
    execute!(
        database,
        "UPDATE routing_policies SET last_user_id = $3 \
         WHERE tenant_id = $1 AND channel_account_id = $2",
        tenant_id,
        channel_account_id,
        user_id,
    )?;
    Ok(())
}

/// A conversation as this service tracks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Load {
    pub tenant_id: String,
    pub conversation_id: String,
    pub contact_id: String,
    pub channel_account_id: String,
    pub owner_user_id: Option<String>,
    pub team_id: String,
    /// False while routing's choice is not yet written to message-store.
    pub applied: bool,
    pub reason: String,
    /// Whose it was before routing moved it (shift changes), for the history.
    pub previous_owner_user_id: Option<String>,
}

type LoadRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    bool,
    String,
    Option<String>,
);

const LOAD_COLUMNS: &str = "tenant_id, conversation_id, contact_id, channel_account_id, \
     owner_user_id, team_id, applied, reason, previous_owner_user_id";

fn load_of(row: LoadRow) -> Load {
    let (
        tenant_id,
        conversation_id,
        contact_id,
        channel_account_id,
        owner,
        team_id,
        applied,
        reason,
        previous,
    ) = row;
    Load {
        previous_owner_user_id: previous,
        tenant_id,
        conversation_id,
        contact_id,
        channel_account_id,
        owner_user_id: owner,
        team_id,
        applied,
        reason,
    }
}

pub async fn load(
    database: &Database,
    tenant_id: &str,
    conversation_id: &str,
) -> Result<Option<Load>, Error> {
    let rows = fetch_all!(
        database,
        LoadRow,
        format!(
            "SELECT {LOAD_COLUMNS} FROM conversation_load \
             WHERE tenant_id = $1 AND conversation_id = $2"
        ),
        tenant_id,
        conversation_id,
    )?;
    Ok(rows.into_iter().next().map(load_of))
}

/// Records a conversation's owner. `applied = false` is routing's reservation, written
/// under the tenant's lock before message-store is told, so capacity counts it at once.
pub async fn put_load(database: &Database, load: &Load) -> Result<(), Error> {
    execute!(
        database,
        "INSERT INTO conversation_load (tenant_id, conversation_id, contact_id, channel_account_id, \
         owner_user_id, team_id, applied, reason, updated_at_us, previous_owner_user_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (tenant_id, conversation_id) DO UPDATE SET owner_user_id = excluded.owner_user_id, \
         team_id = excluded.team_id, applied = excluded.applied, reason = excluded.reason, \
         previous_owner_user_id = excluded.previous_owner_user_id, \
         updated_at_us = excluded.updated_at_us, \
         contact_id = CASE WHEN excluded.contact_id = '' THEN conversation_load.contact_id \
                      ELSE excluded.contact_id END, \
         channel_account_id = CASE WHEN excluded.channel_account_id = '' \
                      THEN conversation_load.channel_account_id ELSE excluded.channel_account_id END",
        &load.tenant_id,
        &load.conversation_id,
        &load.contact_id,
        &load.channel_account_id,
        &load.owner_user_id,
        &load.team_id,
        load.applied,
        &load.reason,
        now_us(),
        &load.previous_owner_user_id,
    )?;
    if let Some(owner) = &load.owner_user_id {
        super::sla::set_owner(
            database,
            &load.tenant_id,
            &load.conversation_id,
            owner,
            &load.team_id,
        )
        .await?;
        super::reminders::follow_owner(database, &load.tenant_id, &load.conversation_id, owner)
            .await?;
    }
    Ok(())
}

pub async fn mark_applied(
    database: &Database,
    tenant_id: &str,
    conversation_id: &str,
    owner_user_id: &str,
) -> Result<(), Error> {
    execute!(
        database,
        "UPDATE conversation_load SET applied = TRUE \
         WHERE tenant_id = $1 AND conversation_id = $2 AND owner_user_id = $3",
        tenant_id,
        conversation_id,
        owner_user_id,
    )?;
    Ok(())
}

/// Reservations not yet written to message-store (a replica died or message-store was down).
pub async fn unapplied(database: &Database, limit: i64) -> Result<Vec<Load>, Error> {
    let rows = fetch_all!(
        database,
        LoadRow,
        format!(
            "SELECT {LOAD_COLUMNS} FROM conversation_load WHERE NOT applied \
             ORDER BY updated_at_us LIMIT $1"
        ),
        limit,
    )?;
    Ok(rows.into_iter().map(load_of).collect())
}

/// Who owned this contact's most recent other conversation.
pub async fn previous_owner(
    database: &Database,
    tenant_id: &str,
    contact_id: &str,
    conversation_id: &str,
) -> Result<Option<String>, Error> {
    if contact_id.is_empty() {
        return Ok(None);
    }
    let rows = fetch_all!(
        database,
        (Option<String>,),
        "SELECT owner_user_id FROM conversation_load WHERE tenant_id = $1 AND contact_id = $2 \
         AND conversation_id <> $3 AND owner_user_id IS NOT NULL \
         ORDER BY updated_at_us DESC LIMIT 1",
        tenant_id,
        contact_id,
        conversation_id,
    )?;
    Ok(rows.into_iter().next().and_then(|(owner,)| owner))
}

/// A conversation waiting for an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub conversation_id: String,
    pub channel_account_id: String,
    pub contact_id: String,
    pub lead_source: String,
    pub tags: Vec<String>,
    pub enqueued_at_us: i64,
}

/// Puts a conversation in the queue; a repeat keeps its original place.
pub async fn enqueue(database: &Database, tenant_id: &str, queued: &Queued) -> Result<(), Error> {
    execute!(
        database,
        "INSERT INTO routing_queue (tenant_id, conversation_id, channel_account_id, contact_id, \
         lead_source, tags, enqueued_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (tenant_id, conversation_id) DO NOTHING",
        tenant_id,
        &queued.conversation_id,
        &queued.channel_account_id,
        &queued.contact_id,
        &queued.lead_source,
        joined(&queued.tags),
        queued.enqueued_at_us,
    )?;
    Ok(())
}

pub async fn dequeue(
    database: &Database,
    tenant_id: &str,
    conversation_id: &str,
) -> Result<(), Error> {
    execute!(
        database,
        "DELETE FROM routing_queue WHERE tenant_id = $1 AND conversation_id = $2",
        tenant_id,
        conversation_id,
    )?;
    Ok(())
}

/// The longest-waiting queued conversations first.
pub async fn oldest_queued(
    database: &Database,
    tenant_id: &str,
    limit: i64,
) -> Result<Vec<Queued>, Error> {
    type QueuedRow = (String, String, String, String, String, i64);
    let rows = fetch_all!(
        database,
        QueuedRow,
        "SELECT conversation_id, channel_account_id, contact_id, lead_source, tags, enqueued_at_us \
         FROM routing_queue WHERE tenant_id = $1 ORDER BY enqueued_at_us, conversation_id LIMIT $2",
        tenant_id,
        limit,
    )?;
    Ok(rows
        .into_iter()
        .map(
            |(conversation_id, channel_account_id, contact_id, lead_source, tags, at)| Queued {
                conversation_id,
                channel_account_id,
                contact_id,
                lead_source,
                tags: split(&tags),
                enqueued_at_us: at,
            },
        )
        .collect())
}

pub async fn queued_tenants(database: &Database) -> Result<Vec<String>, Error> {
    let rows = fetch_all!(
        database,
        (String,),
        "SELECT DISTINCT tenant_id FROM routing_queue",
    )?;
    Ok(rows.into_iter().map(|(tenant,)| tenant).collect())
}

/// Tenants with a routing policy: their rosters are kept in sync.
pub async fn routed_tenants(database: &Database) -> Result<Vec<String>, Error> {
    let rows = fetch_all!(
        database,
        (String,),
        "SELECT DISTINCT tenant_id FROM routing_policies",
    )?;
    Ok(rows.into_iter().map(|(tenant,)| tenant).collect())
}

/// The supervisor told of a breach in `team_id`: the first active supervisor of the team.
pub async fn supervisor_of(
    database: &Database,
    tenant_id: &str,
    team_id: &str,
) -> Result<Option<String>, Error> {
    if team_id.is_empty() {
        return Ok(None);
    }
    let rows = fetch_all!(
        database,
        (String,),
        "SELECT user_id FROM roster_users WHERE tenant_id = $1 AND active \
         AND role = 'supervisor' AND team_ids LIKE $2 ORDER BY user_id LIMIT 1",
        tenant_id,
        format!("%,{team_id},%"),
    )?;
    Ok(rows.into_iter().next().map(|(user,)| user))
}

/// The open conversations of an account owned by someone outside `keep` (a shift change).
pub async fn open_on_account(
    database: &Database,
    tenant_id: &str,
    channel_account_id: &str,
) -> Result<Vec<Load>, Error> {
    let rows = fetch_all!(
        database,
        LoadRow,
        format!(
            "SELECT {LOAD_COLUMNS} FROM conversation_load WHERE tenant_id = $1 \
             AND channel_account_id = $2 AND is_open AND applied AND owner_user_id IS NOT NULL \
             ORDER BY updated_at_us, conversation_id"
        ),
        tenant_id,
        channel_account_id,
    )?;
    Ok(rows.into_iter().map(load_of).collect())
}

/// How many open conversations the account has.
pub async fn open_count_on_account(
    database: &Database,
    tenant_id: &str,
    channel_account_id: &str,
) -> Result<i64, Error> {
    let rows = fetch_all!(
        database,
        (i64,),
        "SELECT COUNT(*) FROM conversation_load WHERE tenant_id = $1 \
         AND channel_account_id = $2 AND is_open",
        tenant_id,
        channel_account_id,
    )?;
    Ok(rows.into_iter().next().map_or(0, |(count,)| count))
}

/// Active supervisors of the teams of the account's open conversations; the tenant's
/// admins when no such supervisor exists.
pub async fn supervisors_of_account(
    database: &Database,
    tenant_id: &str,
    channel_account_id: &str,
) -> Result<Vec<String>, Error> {
    let supervisors = fetch_all!(
        database,
        (String,),
        "SELECT r.user_id FROM roster_users r WHERE r.tenant_id = $1 AND r.active \
         AND r.role = 'supervisor' AND EXISTS (SELECT 1 FROM conversation_load l \
           WHERE l.tenant_id = r.tenant_id AND l.channel_account_id = $2 AND l.is_open \
           AND l.team_id <> '' AND r.team_ids LIKE '%,' || l.team_id || ',%') \
         ORDER BY r.user_id",
        tenant_id,
        channel_account_id,
    )?;
    if !supervisors.is_empty() {
        return Ok(supervisors.into_iter().map(|(user,)| user).collect());
    }
    let admins = fetch_all!(
        database,
        (String,),
        "SELECT user_id FROM roster_users WHERE tenant_id = $1 AND active AND role = 'admin' \
         ORDER BY user_id",
        tenant_id,
    )?;
    Ok(admins.into_iter().map(|(user,)| user).collect())
}

/// Records manual moves (Assign, Transfer, BulkReassign, handovers) in one round trip per
/// table on PostgreSQL and one transaction on SQLite: the new owner counts against their
/// capacity, SLA clocks and pending follow-ups follow the owner, and the conversations leave
/// the queue.
pub async fn record_owners(
    database: &Database,
    tenant_id: &str,
    loads: &[Load],
) -> Result<(), Error> {
    if loads.is_empty() {
        return Ok(());
    }
    let now = now_us();
    match database {
        Database::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            record_owners_pg(&mut tx, tenant_id, loads, now).await?;
            tx.commit().await?;
        }
        Database::Sqlite(pool) => {
            let mut tx = pool.begin().await?;
            for load in loads {
                sqlx::query(
                    "INSERT INTO conversation_load (tenant_id, conversation_id, contact_id, \
                     channel_account_id, owner_user_id, team_id, applied, reason, updated_at_us, \
                     previous_owner_user_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, TRUE, ?7, ?8, ?9) \
                     ON CONFLICT (tenant_id, conversation_id) DO UPDATE SET \
                     owner_user_id = excluded.owner_user_id, team_id = excluded.team_id, \
                     applied = TRUE, reason = excluded.reason, \
                     updated_at_us = excluded.updated_at_us, \
                     previous_owner_user_id = excluded.previous_owner_user_id",
                )
                .bind(tenant_id)
                .bind(&load.conversation_id)
                .bind(&load.contact_id)
                .bind(&load.channel_account_id)
                .bind(&load.owner_user_id)
                .bind(&load.team_id)
                .bind(&load.reason)
                .bind(now)
                .bind(&load.previous_owner_user_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE sla_clocks SET owner_user_id = COALESCE(?3, ''), team_id = ?4 \
                     WHERE tenant_id = ?1 AND conversation_id = ?2",
                )
                .bind(tenant_id)
                .bind(&load.conversation_id)
                .bind(&load.owner_user_id)
                .bind(&load.team_id)
                .execute(&mut *tx)
                .await?;
                if let Some(owner) = &load.owner_user_id {
                    sqlx::query(
                        "UPDATE reminders SET user_id = ?3 WHERE tenant_id = ?1 \
                         AND conversation_id = ?2 AND source <> 'manual' AND fired_at_us IS NULL",
                    )
                    .bind(tenant_id)
                    .bind(&load.conversation_id)
                    .bind(owner)
                    .execute(&mut *tx)
                    .await?;
                }
                sqlx::query(
                    "DELETE FROM routing_queue WHERE tenant_id = ?1 AND conversation_id = ?2",
                )
                .bind(tenant_id)
                .bind(&load.conversation_id)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        }
    }
    Ok(())
}

/// [`record_owners`] on PostgreSQL inside the caller's transaction (a handover records a
/// batch's history and owners in one commit).
pub async fn record_owners_pg(
    tx: &mut sqlx::PgConnection,
    tenant_id: &str,
    loads: &[Load],
    now: i64,
) -> Result<(), Error> {
    if loads.is_empty() {
        return Ok(());
    }
    // Each statement is planned with the batch at hand (`persistent(false)`): a cached
    // generic plan may scan the whole tenant for every batch of a large handover. The joins
    // on the batch also name its keys as `= ANY(...)`: the planner cannot see into UNNEST,
    // and without that bound it hashes the whole tenant's table for each batch (quadratic
    // over a 100,000-conversation handover).
    let column = |f: fn(&Load) -> String| loads.iter().map(f).collect::<Vec<String>>();
    let conversations = column(|l| l.conversation_id.clone());
    let contacts = column(|l| l.contact_id.clone());
    let accounts = column(|l| l.channel_account_id.clone());
    let owners: Vec<Option<String>> = loads.iter().map(|l| l.owner_user_id.clone()).collect();
    let teams = column(|l| l.team_id.clone());
    let reasons = column(|l| l.reason.clone());
    let previous: Vec<Option<String>> = loads
        .iter()
        .map(|l| l.previous_owner_user_id.clone())
        .collect();
    sqlx::query(
        "INSERT INTO conversation_load (tenant_id, conversation_id, contact_id, \
         channel_account_id, owner_user_id, team_id, applied, reason, updated_at_us, \
         previous_owner_user_id) \
         SELECT $1, u.c, u.k, u.a, u.o, u.t, TRUE, u.r, $2, u.p \
         FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
                     $8::text[], $9::text[]) AS u(c, k, a, o, t, r, p) \
         ON CONFLICT (tenant_id, conversation_id) DO UPDATE SET \
         owner_user_id = excluded.owner_user_id, team_id = excluded.team_id, \
         applied = TRUE, reason = excluded.reason, updated_at_us = excluded.updated_at_us, \
         previous_owner_user_id = excluded.previous_owner_user_id",
    )
    .persistent(false)
    .bind(tenant_id)
    .bind(now)
    .bind(&conversations)
    .bind(&contacts)
    .bind(&accounts)
    .bind(&owners)
    .bind(&teams)
    .bind(&reasons)
    .bind(&previous)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE sla_clocks s SET owner_user_id = COALESCE(u.o, ''), team_id = u.t \
         FROM UNNEST($2::text[], $3::text[], $4::text[]) AS u(c, o, t) \
         WHERE s.tenant_id = $1 AND s.conversation_id = ANY($2) AND s.conversation_id = u.c",
    )
    .persistent(false)
    .bind(tenant_id)
    .bind(&conversations)
    .bind(&owners)
    .bind(&teams)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE reminders r SET user_id = u.o \
         FROM UNNEST($2::text[], $3::text[]) AS u(c, o) \
         WHERE r.tenant_id = $1 AND r.conversation_id = ANY($2) AND r.conversation_id = u.c \
         AND u.o IS NOT NULL \
         AND r.source <> 'manual' AND r.fired_at_us IS NULL",
    )
    .persistent(false)
    .bind(tenant_id)
    .bind(&conversations)
    .bind(&owners)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM routing_queue WHERE tenant_id = $1 AND conversation_id = ANY($2)")
        .bind(tenant_id)
        .bind(&conversations)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The conversation was closed at `closed_at_us`: it no longer counts against its owner's
/// capacity, unless the customer wrote after that. Returns whether it closed.
pub async fn closed(
    database: &Database,
    tenant_id: &str,
    conversation_id: &str,
    closed_at_us: i64,
) -> Result<bool, Error> {
    Ok(execute!(
        database,
        "UPDATE conversation_load SET is_open = FALSE, closed_at_us = $3 \
         WHERE tenant_id = $1 AND conversation_id = $2 AND last_inbound_at_us < $3",
        tenant_id,
        conversation_id,
        closed_at_us,
    )? > 0)
}

/// The customer wrote at `sent_at_us`: a conversation closed before that is open again.
pub async fn customer_wrote(
    database: &Database,
    tenant_id: &str,
    conversation_id: &str,
    sent_at_us: i64,
) -> Result<(), Error> {
    execute!(
        database,
        "UPDATE conversation_load SET last_inbound_at_us = $3, \
         is_open = CASE WHEN closed_at_us < $3 THEN TRUE ELSE is_open END \
         WHERE tenant_id = $1 AND conversation_id = $2 AND last_inbound_at_us < $3",
        tenant_id,
        conversation_id,
        sent_at_us,
    )?;
    Ok(())
}
