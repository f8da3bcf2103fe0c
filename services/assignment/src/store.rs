//! Ownership history and handover jobs on both backends, side by side (routing's tables in
//! [`routing`]). Every query filters by tenant.

use chrono::{DateTime, Utc};
use giao_storage::Database;
use uuid::Uuid;

use crate::error::Error;

/// One recorded change of a conversation's owner.
#[derive(Debug, Clone)]
pub struct OwnershipChange {
    pub id: Uuid,
    pub conversation_id: String,
    pub owner_user_id: Option<String>,
    pub previous_owner: Option<String>,
    pub actor: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

type PgHistoryRow = (
    Uuid,
    String,
    Option<String>,
    Option<String>,
    String,
    String,
    DateTime<Utc>,
);
type SqliteHistoryRow = (
    Vec<u8>,
    String,
    Option<String>,
    Option<String>,
    String,
    String,
    i64,
);
type Row = (
    String,
    Option<String>,
    Option<String>,
    String,
    String,
    DateTime<Utc>,
);

/// Appends `changes` in one transaction, so a batch is recorded whole or not at all.
pub async fn record_changes(
    database: &Database,
    tenant_id: &str,
    changes: &[OwnershipChange],
) -> Result<(), Error> {
    match database {
        Database::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            for change in changes {
                sqlx::query(
                    "INSERT INTO ownership_changes \
                     (id, tenant_id, conversation_id, owner_user_id, previous_owner, actor, reason, at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
                )
                .bind(change.id)
                .bind(tenant_id)
                .bind(&change.conversation_id)
                .bind(&change.owner_user_id)
                .bind(&change.previous_owner)
                .bind(&change.actor)
                .bind(&change.reason)
                .bind(change.at)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        }
        Database::Sqlite(pool) => {
            let mut tx = pool.begin().await?;
            for change in changes {
                sqlx::query(
                    "INSERT OR IGNORE INTO ownership_changes \
                     (id, tenant_id, conversation_id, owner_user_id, previous_owner, actor, reason, at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(change.id.as_bytes().to_vec())
                .bind(tenant_id)
                .bind(&change.conversation_id)
                .bind(&change.owner_user_id)
                .bind(&change.previous_owner)
                .bind(&change.actor)
                .bind(&change.reason)
                .bind(change.at.timestamp_micros())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        }
    }
    Ok(())
}

/// A conversation's changes, oldest first, `limit` of them after skipping `offset`.
pub async fn ownership_history(
    database: &Database,
    tenant_id: &str,
    conversation_id: &str,
    offset: i64,
    limit: i64,
) -> Result<Vec<OwnershipChange>, Error> {
    let rows: Vec<(Vec<u8>, Row)> = match database {
        Database::Postgres(pool) => {
            let rows: Vec<PgHistoryRow> = sqlx::query_as(
                "SELECT id, conversation_id, owner_user_id, previous_owner, actor, reason, at \
                     FROM ownership_changes WHERE tenant_id = $1 AND conversation_id = $2 \
                     ORDER BY at, id OFFSET $3 LIMIT $4",
            )
            .bind(tenant_id)
            .bind(conversation_id)
            .bind(offset)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            rows.into_iter()
                .map(|(id, c, o, p, a, r, at)| (id.as_bytes().to_vec(), (c, o, p, a, r, at)))
                .collect()
        }
        Database::Sqlite(pool) => {
            let rows: Vec<SqliteHistoryRow> = sqlx::query_as(
                "SELECT id, conversation_id, owner_user_id, previous_owner, actor, reason, at \
                     FROM ownership_changes WHERE tenant_id = ? AND conversation_id = ? \
                     ORDER BY at, id LIMIT ? OFFSET ?",
            )
            .bind(tenant_id)
            .bind(conversation_id)
            .bind(limit)
            .bind(offset)
            .fetch_all(pool)
            .await?;
            rows.into_iter()
                .map(|(id, c, o, p, a, r, at)| {
                    let at = DateTime::from_timestamp_micros(at).unwrap_or_default();
                    (id, (c, o, p, a, r, at))
                })
                .collect()
        }
    };
    Ok(rows
        .into_iter()
        .map(
            |(id, (conversation_id, owner_user_id, previous_owner, actor, reason, at))| {
                OwnershipChange {
                    id: Uuid::from_slice(&id).unwrap_or_default(),
                    conversation_id,
                    owner_user_id,
                    previous_owner,
                    actor,
                    reason,
                    at,
                }
            },
        )
        .collect())
}

/// Runs one statement on either backend; the SQL uses `$n` placeholders, which SQLite
/// spells `?n`.
macro_rules! execute {
    ($database:expr, $sql:expr $(, $bind:expr)* $(,)?) => {
        match $database {
            Database::Postgres(pool) => sqlx::query(sqlx::AssertSqlSafe($sql))
                $(.bind($bind))*
                .execute(pool)
                .await
                .map(|done| done.rows_affected()),
            Database::Sqlite(pool) => sqlx::query(sqlx::AssertSqlSafe($sql.replace('$', "?")))
                $(.bind($bind))*
                .execute(pool)
                .await
                .map(|done| done.rows_affected()),
        }
    };
}

/// Runs a query returning rows on either backend (`$n` placeholders, `?n` on SQLite).
macro_rules! fetch_all {
    ($database:expr, $row:ty, $sql:expr $(, $bind:expr)* $(,)?) => {
        match $database {
            Database::Postgres(pool) => sqlx::query_as::<_, $row>(sqlx::AssertSqlSafe($sql))
                $(.bind($bind))*
                .fetch_all(pool)
                .await,
            Database::Sqlite(pool) => {
                sqlx::query_as::<_, $row>(sqlx::AssertSqlSafe($sql.replace('$', "?")))
                    $(.bind($bind))*
                    .fetch_all(pool)
                    .await
            }
        }
    };
}

/// A leaver's handover: who takes over and how far it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffboardingJob {
    pub id: String,
    pub successor_user_id: String,
    pub actor: String,
    pub export_id: String,
    pub export_sha256: String,
    pub conversations_moved: i64,
    pub deactivated: bool,
    pub completed: bool,
    pub reminders_moved: i64,
    pub shifts_moved: i64,
    pub contacts_moved: i64,
    /// The leaver's shifts left with them because the heir already works at that time.
    pub shifts_kept: i64,
}

type JobRow = (
    String,
    String,
    String,
    String,
    String,
    i64,
    bool,
    bool,
    i64,
    i64,
    i64,
    i64,
);

const JOB_COLUMNS: &str = "id, successor_user_id, actor, export_id, export_sha256, \
     conversations_moved, deactivated, completed, reminders_moved, shifts_moved, contacts_moved, shifts_kept";

fn job_of(row: JobRow) -> OffboardingJob {
    let (
        id,
        successor_user_id,
        actor,
        export_id,
        export_sha256,
        moved,
        deactivated,
        completed,
        reminders_moved,
        shifts_moved,
        contacts_moved,
        shifts_kept,
    ) = row;
    OffboardingJob {
        contacts_moved,
        shifts_kept,
        reminders_moved,
        shifts_moved,
        id,
        successor_user_id,
        actor,
        export_id,
        export_sha256,
        conversations_moved: moved,
        deactivated,
        completed,
    }
}

pub async fn offboarding_job(
    database: &Database,
    tenant_id: &str,
    user_id: &str,
) -> Result<Option<OffboardingJob>, Error> {
    let sql =
        format!("SELECT {JOB_COLUMNS} FROM offboarding_jobs WHERE tenant_id = $1 AND user_id = $2");
    let row: Option<JobRow> = match database {
        Database::Postgres(pool) => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(tenant_id)
                .bind(user_id)
                .fetch_optional(pool)
                .await?
        }
        Database::Sqlite(pool) => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.replace('$', "?")))
                .bind(tenant_id)
                .bind(user_id)
                .fetch_optional(pool)
                .await?
        }
    };
    Ok(row.map(job_of))
}

/// Starts the leaver's job, or returns the one already started (the first successor wins).
pub async fn start_offboarding(
    database: &Database,
    tenant_id: &str,
    user_id: &str,
    successor_user_id: &str,
    actor: &str,
) -> Result<OffboardingJob, Error> {
    execute!(
        database,
        "INSERT INTO offboarding_jobs (id, tenant_id, user_id, successor_user_id, actor, created_at_us) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, user_id) DO NOTHING",
        Uuid::now_v7().to_string(),
        tenant_id,
        user_id,
        successor_user_id,
        actor,
        Utc::now().timestamp_micros(),
    )?;
    offboarding_job(database, tenant_id, user_id)
        .await?
        .ok_or_else(|| Error::Database(sqlx::Error::RowNotFound))
}

pub async fn record_export(
    database: &Database,
    tenant_id: &str,
    user_id: &str,
    export_id: &str,
    export_sha256: &str,
) -> Result<(), Error> {
    execute!(
        database,
        "UPDATE offboarding_jobs SET export_id = $3, export_sha256 = $4 \
         WHERE tenant_id = $1 AND user_id = $2",
        tenant_id,
        user_id,
        export_id,
        export_sha256,
    )?;
    Ok(())
}

pub async fn add_moved(
    database: &Database,
    tenant_id: &str,
    user_id: &str,
    moved: i64,
) -> Result<(), Error> {
    execute!(
        database,
        "UPDATE offboarding_jobs SET conversations_moved = conversations_moved + $3 \
         WHERE tenant_id = $1 AND user_id = $2",
        tenant_id,
        user_id,
        moved,
    )?;
    Ok(())
}

/// Adds the leaver's reminders and shifts handed over by this run (a resumed run moves
/// only what the crashed one had not) and records how many shifts stay with the leaver.
pub async fn add_moved_extras(
    database: &Database,
    tenant_id: &str,
    user_id: &str,
    reminders: i64,
    shifts: i64,
    shifts_kept: i64,
) -> Result<(), Error> {
    execute!(
        database,
        "UPDATE offboarding_jobs SET reminders_moved = reminders_moved + $3, \
         shifts_moved = shifts_moved + $4, shifts_kept = $5 \
         WHERE tenant_id = $1 AND user_id = $2",
        tenant_id,
        user_id,
        reminders,
        shifts,
        shifts_kept,
    )?;
    Ok(())
}

pub async fn mark_deactivated(
    database: &Database,
    tenant_id: &str,
    user_id: &str,
) -> Result<(), Error> {
    execute!(
        database,
        "UPDATE offboarding_jobs SET deactivated = TRUE WHERE tenant_id = $1 AND user_id = $2",
        tenant_id,
        user_id,
    )?;
    Ok(())
}

pub async fn complete_offboarding(
    database: &Database,
    tenant_id: &str,
    user_id: &str,
    conversations_moved: i64,
    contacts_moved: i64,
) -> Result<(), Error> {
    execute!(
        database,
        "UPDATE offboarding_jobs SET completed = TRUE, completed_at_us = $3, \
         conversations_moved = $4, contacts_moved = $5 WHERE tenant_id = $1 AND user_id = $2",
        tenant_id,
        user_id,
        Utc::now().timestamp_micros(),
        conversations_moved,
        contacts_moved,
    )?;
    Ok(())
}

/// How many customers (distinct contacts of the conversations) moved away from
/// `previous_owner` for `reason`. The history is written before each move and routing's
/// record of the conversation (with its contact) too, so the count survives a crash.
pub async fn count_contacts_moved_from(
    database: &Database,
    tenant_id: &str,
    previous_owner: &str,
    reason: &str,
) -> Result<i64, Error> {
    let rows = fetch_all!(
        database,
        (i64,),
        "SELECT COUNT(DISTINCT l.contact_id) FROM ownership_changes o \
         JOIN conversation_load l ON l.tenant_id = o.tenant_id \
           AND l.conversation_id = o.conversation_id \
         WHERE o.tenant_id = $1 AND o.previous_owner = $2 AND o.reason = $3 \
         AND l.contact_id <> ''",
        tenant_id,
        previous_owner,
        reason,
    )?;
    Ok(rows.into_iter().next().map_or(0, |(count,)| count))
}

/// Every move of a handover of `previous_owner` for `reason`: conversation, new owner, its
/// team and who moved it (for publishing its event again after a crash).
pub async fn handover_moves(
    database: &Database,
    tenant_id: &str,
    previous_owner: &str,
    reason: &str,
) -> Result<Vec<(String, String, String, String)>, Error> {
    Ok(fetch_all!(
        database,
        (String, String, String, String),
        "SELECT o.conversation_id, COALESCE(o.owner_user_id, ''), COALESCE(l.team_id, ''), \
         o.actor FROM ownership_changes o LEFT JOIN conversation_load l \
           ON l.tenant_id = o.tenant_id AND l.conversation_id = o.conversation_id \
         WHERE o.tenant_id = $1 AND o.previous_owner = $2 AND o.reason = $3 \
         ORDER BY o.conversation_id",
        tenant_id,
        previous_owner,
        reason,
    )?)
}

/// Who each of `conversation_ids` was already promised to by a handover of
/// `previous_owner` for `reason` (its history is written before the move): a resumed
/// handover keeps those choices, so a conversation is never recorded as going to two people.
pub async fn handover_targets(
    database: &Database,
    tenant_id: &str,
    previous_owner: &str,
    reason: &str,
    conversation_ids: &[String],
) -> Result<std::collections::HashMap<String, String>, Error> {
    let mut targets = std::collections::HashMap::new();
    // Bounded IN lists keep SQLite under its variable limit.
    for chunk in conversation_ids.chunks(500) {
        if chunk.is_empty() {
            continue;
        }
        let rows: Vec<(String, Option<String>)> = match database {
            Database::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT conversation_id, owner_user_id FROM ownership_changes \
                     WHERE tenant_id = $1 AND previous_owner = $2 AND reason = $3 \
                     AND conversation_id = ANY($4)",
                )
                .persistent(false)
                .bind(tenant_id)
                .bind(previous_owner)
                .bind(reason)
                .bind(chunk)
                .fetch_all(pool)
                .await?
            }
            Database::Sqlite(pool) => {
                let marks = vec!["?"; chunk.len()].join(", ");
                let sql = format!(
                    "SELECT conversation_id, owner_user_id FROM ownership_changes \
                     WHERE tenant_id = ? AND previous_owner = ? AND reason = ? \
                     AND conversation_id IN ({marks})"
                );
                let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(tenant_id)
                    .bind(previous_owner)
                    .bind(reason);
                for id in chunk {
                    query = query.bind(id);
                }
                query.fetch_all(pool).await?
            }
        };
        for (conversation_id, owner) in rows {
            if let Some(owner) = owner {
                targets.insert(conversation_id, owner);
            }
        }
    }
    Ok(targets)
}

/// How many conversations moved away from `previous_owner` for `reason`.
pub async fn count_moves_from(
    database: &Database,
    tenant_id: &str,
    previous_owner: &str,
    reason: &str,
) -> Result<i64, Error> {
    let sql = "SELECT COUNT(*) FROM ownership_changes \
               WHERE tenant_id = $1 AND previous_owner = $2 AND reason = $3";
    let count: i64 = match database {
        Database::Postgres(pool) => {
            sqlx::query_scalar(sql)
                .bind(tenant_id)
                .bind(previous_owner)
                .bind(reason)
                .fetch_one(pool)
                .await?
        }
        Database::Sqlite(pool) => {
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql.replace('$', "?")))
                .bind(tenant_id)
                .bind(previous_owner)
                .bind(reason)
                .fetch_one(pool)
                .await?
        }
    };
    Ok(count)
}

/// Appends each change unless the same move (conversation, from, to, reason) is already
/// recorded: a resumed handover re-records the batch it was in when it died, and the event
/// consumer and the drain may apply one routing decision at the same moment.
pub async fn record_changes_once(
    database: &Database,
    tenant_id: &str,
    changes: &[OwnershipChange],
) -> Result<(), Error> {
    let sql = "INSERT INTO ownership_changes \
               (id, tenant_id, conversation_id, owner_user_id, previous_owner, actor, reason, at) \
               SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE NOT EXISTS ( \
                 SELECT 1 FROM ownership_changes WHERE tenant_id = $2 AND conversation_id = $3 \
                 AND owner_user_id IS NOT DISTINCT FROM $4 \
                 AND previous_owner IS NOT DISTINCT FROM $5 AND reason = $7)";
    match database {
        Database::Postgres(pool) => {
            // The duplicate check reads before it writes, so two callers recording the same
            // move at once would both see nothing: a per-conversation lock (held to commit)
            // makes the second wait and then see the first's row.
            let mut tx = pool.begin().await?;
            let mut conversations: Vec<&str> = changes
                .iter()
                .map(|change| change.conversation_id.as_str())
                .collect();
            conversations.sort_unstable();
            conversations.dedup();
            for conversation_id in conversations {
                sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7105))")
                    .bind(format!("history:{tenant_id}:{conversation_id}"))
                    .execute(&mut *tx)
                    .await?;
            }
            record_changes_pg(&mut tx, tenant_id, changes, true).await?;
            tx.commit().await?;
        }
        Database::Sqlite(pool) => {
            let sql = sql.replace('$', "?").replace("IS NOT DISTINCT FROM", "IS");
            let mut tx = pool.begin().await?;
            for change in changes {
                sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(change.id.as_bytes().to_vec())
                    .bind(tenant_id)
                    .bind(&change.conversation_id)
                    .bind(&change.owner_user_id)
                    .bind(&change.previous_owner)
                    .bind(&change.actor)
                    .bind(&change.reason)
                    .bind(change.at.timestamp_micros())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }
    }
    Ok(())
}

/// Appends changes on PostgreSQL on the caller's connection or transaction; with
/// `skip_recorded`, as [`record_changes_once`] does.
async fn record_changes_pg(
    connection: &mut sqlx::PgConnection,
    tenant_id: &str,
    changes: &[OwnershipChange],
    skip_recorded: bool,
) -> Result<(), Error> {
    // Set-based: one statement per batch, so a 100,000-conversation handover is a few
    // hundred statements, not 100,000.
    let mut ids = Vec::with_capacity(changes.len());
    let mut conversations = Vec::with_capacity(changes.len());
    let mut owners = Vec::with_capacity(changes.len());
    let mut previous = Vec::with_capacity(changes.len());
    let mut actors = Vec::with_capacity(changes.len());
    let mut reasons = Vec::with_capacity(changes.len());
    let mut times = Vec::with_capacity(changes.len());
    for change in changes {
        ids.push(change.id);
        conversations.push(change.conversation_id.clone());
        owners.push(change.owner_user_id.clone());
        previous.push(change.previous_owner.clone());
        actors.push(change.actor.clone());
        reasons.push(change.reason.clone());
        times.push(change.at);
    }
    const INSERT: &str = "INSERT INTO ownership_changes \
         (id, tenant_id, conversation_id, owner_user_id, previous_owner, actor, reason, at) \
         SELECT u.id, $1, u.conversation_id, u.owner, u.previous, u.actor, u.reason, u.at \
         FROM UNNEST($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
                     $8::timestamptz[]) \
           AS u(id, conversation_id, owner, previous, actor, reason, at)";
    const UNRECORDED: &str = " WHERE NOT EXISTS ( \
           SELECT 1 FROM ownership_changes o WHERE o.tenant_id = $1 \
           AND o.conversation_id = ANY($3) AND o.conversation_id = u.conversation_id \
           AND o.owner_user_id IS NOT DISTINCT FROM u.owner \
           AND o.previous_owner IS NOT DISTINCT FROM u.previous AND o.reason = u.reason)";
    let unrecorded = if skip_recorded { UNRECORDED } else { "" };
    let sql = format!("{INSERT}{unrecorded} ON CONFLICT (id) DO NOTHING");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        // Planned with the batch at hand: a cached generic plan can degrade as the history
        // of a large handover grows. `= ANY($3)` bounds the history read to the batch's
        // conversations (the planner cannot see into UNNEST and would hash all of it).
        .persistent(false)
        .bind(tenant_id)
        .bind(ids)
        .bind(conversations)
        .bind(owners)
        .bind(previous)
        .bind(actors)
        .bind(reasons)
        .bind(times)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Records a handover batch before it moves: the history (deduplicated), routing's view of
/// owner and customer, and the job's progress, in one transaction on PostgreSQL (one commit
/// per batch).
///
/// `fresh` says no earlier run of this job recorded anything (its count was zero when this
/// run took the job's lock). The count commits with the history, so on PostgreSQL a fresh
/// run has no earlier rows to skip and appends without reading the history back: that read
/// was a third of a 100,000-conversation handover, and the planner, blind to the rows the
/// handover itself is adding, chose to scan the tenant's whole history for it. The caller
/// keeps a repeat within its own run out of `changes`.
pub async fn record_handover_batch(
    database: &Database,
    tenant_id: &str,
    leaver: &str,
    changes: &[OwnershipChange],
    loads: &[routing::Load],
    fresh: bool,
) -> Result<(), Error> {
    if changes.is_empty() && loads.is_empty() {
        return Ok(());
    }
    let recorded = i64::try_from(changes.len()).unwrap_or(i64::MAX);
    match database {
        Database::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            record_changes_pg(&mut tx, tenant_id, changes, !fresh).await?;
            routing::record_owners_pg(&mut tx, tenant_id, loads, Utc::now().timestamp_micros())
                .await?;
            sqlx::query(
                "UPDATE offboarding_jobs SET conversations_moved = conversations_moved + $3 \
                 WHERE tenant_id = $1 AND user_id = $2",
            )
            .bind(tenant_id)
            .bind(leaver)
            .bind(recorded)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        Database::Sqlite(_) => {
            record_changes_once(database, tenant_id, changes).await?;
            routing::record_owners(database, tenant_id, loads).await?;
            add_moved(database, tenant_id, leaver, recorded).await?;
        }
    }
    Ok(())
}

/// Notes that this replica is firing the timer published as `event_id`, just before it
/// publishes: the bus drops a repeated event id, so this is where a double fire shows.
pub async fn record_fire(
    database: &Database,
    tenant_id: &str,
    event_id: &str,
    replica: &str,
) -> Result<(), Error> {
    execute!(
        database,
        "INSERT INTO timer_fires (tenant_id, event_id, replica, fired_at_us) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant_id, event_id, replica) DO NOTHING",
        tenant_id,
        event_id,
        replica,
        Utc::now().timestamp_micros(),
    )?;
    Ok(())
}

/// Forgets fires before `before_us`; returns how many.
pub async fn prune_fires(database: &Database, before_us: i64) -> Result<u64, Error> {
    Ok(execute!(
        database,
        "DELETE FROM timer_fires WHERE fired_at_us < $1",
        before_us,
    )?)
}

/// Every fire of the tenant's timers: (event id, replica), by event id.
pub async fn fires(database: &Database, tenant_id: &str) -> Result<Vec<(String, String)>, Error> {
    Ok(fetch_all!(
        database,
        (String, String),
        "SELECT event_id, replica FROM timer_fires WHERE tenant_id = $1 \
         ORDER BY event_id, fired_at_us",
        tenant_id,
    )?)
}

/// Records an agent's availability (`online`, `away`, `offline`).
pub async fn set_availability(
    database: &Database,
    tenant_id: &str,
    user_id: &str,
    availability: &str,
    updated_by: &str,
) -> Result<(), Error> {
    execute!(
        database,
        "INSERT INTO agent_availability (tenant_id, user_id, availability, updated_by, updated_at_us) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, user_id) DO UPDATE SET \
         availability = excluded.availability, updated_by = excluded.updated_by, \
         updated_at_us = excluded.updated_at_us",
        tenant_id,
        user_id,
        availability,
        updated_by,
        Utc::now().timestamp_micros(),
    )?;
    Ok(())
}

pub mod reminders;
pub mod routing;
pub mod shifts;
pub mod sla;
