//! Folding many events at once, with the same outcome as applying them one by one: runs of
//! conversation events are folded in memory and written in one transaction with a few
//! multi-row statements per table (the bulk load of a benchmark, a catch-up after downtime);
//! other events go through [`Store::apply`] in their place in the order.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use giao_proto::events::Envelope;
use giao_storage::Database;

use super::{
    ApplySettings, Sql, Store, Value,
    apply::{contact_of, conversation_ops},
    bind_all,
};
use crate::{
    domain::{
        clock::{self, ConversationState, Counter, Dims, FoldSettings, Op},
        time::day_of,
    },
    error::Error,
};

/// Rows per multi-row statement (well under both drivers' bind limits).
const ROWS: usize = 200;

type HourKey = (String, i64, Dims);
/// (tenant, conversation, started at) of a wait.
type WaitKey = (String, String, i64);
/// (dimensions, first wait, ended at, outcome, customer since) of a wait.
type WaitRow = (Dims, bool, Option<i64>, &'static str, i64);

type Counters = BTreeMap<HourKey, [i64; Counter::ALL.len()]>;
type Samples = BTreeMap<(String, i64, Dims, &'static str, i64), i64>;
type Facts = BTreeSet<(String, &'static str, i64, String, Dims)>;

/// The batch's figures re-keyed by UTC day, for the daily roll-ups.
struct Daily {
    counters: Counters,
    samples: Samples,
    facts: Facts,
}

#[derive(Default)]
pub(super) struct Folded {
    counters: Counters,
    samples: Samples,
    facts: Facts,
    /// Waits opened in this batch: (dims, first, ended_at, outcome).
    new_waits: BTreeMap<WaitKey, WaitRow>,
    /// Waits opened before this batch and closed in it.
    closed_waits: Vec<(String, String, i64, i64, &'static str)>,
    users: BTreeSet<(String, String, String)>,
}

impl Folded {
    fn daily(&self) -> Daily {
        let mut daily = Daily {
            counters: Counters::new(),
            samples: Samples::new(),
            facts: Facts::new(),
        };
        for ((tenant, hour, dims), counts) in &self.counters {
            let sums = daily
                .counters
                .entry((tenant.clone(), day_of(*hour), dims.clone()))
                .or_default();
            for (sum, count) in sums.iter_mut().zip(counts) {
                *sum += count;
            }
        }
        for ((tenant, hour, dims, kind, bucket), count) in &self.samples {
            *daily
                .samples
                .entry((tenant.clone(), day_of(*hour), dims.clone(), kind, *bucket))
                .or_default() += count;
        }
        for (tenant, metric, hour, conversation, dims) in &self.facts {
            daily.facts.insert((
                tenant.clone(),
                metric,
                day_of(*hour),
                conversation.clone(),
                dims.clone(),
            ));
        }
        daily
    }

    /// The statements that add the folded figures to their hours and to the daily roll-ups
    /// of their days: table by table, hourly before daily, each in key order, so that two
    /// replicas writing overlapping rows take their locks in the same order (PostgreSQL
    /// would otherwise deadlock them).
    pub(super) fn aggregate_statements(&self) -> Vec<Sql> {
        let mut statements = Vec::new();
        // Each figure goes to its hour and to the daily roll-up of its day.
        let daily = self.daily();
        let columns: Vec<&str> = Counter::ALL
            .iter()
            .map(|counter| counter.column())
            .collect();
        for (table, rows) in [("hourly", &self.counters), ("daily", &daily.counters)] {
            let counters: Vec<_> = rows.iter().collect();
            for chunk in counters.chunks(ROWS) {
                let mut sql = Sql::default();
                sql.push(&format!(
                    "INSERT INTO {table} (tenant_id, hour, user_id, team_id, channel_account_id, lead_source, {}) VALUES ",
                    columns.join(", ")
                ));
                values(&mut sql, chunk, |sql, ((tenant, hour, key), counts)| {
                    sql.text(tenant).push(", ").int(*hour).push(", ");
                    dims(sql, key);
                    for count in counts.iter() {
                        sql.push(", ").int(*count);
                    }
                });
                let updates: Vec<String> = columns
                    .iter()
                    .map(|column| format!("{column} = {table}.{column} + excluded.{column}"))
                    .collect();
                sql.push(&format!(
                    " ON CONFLICT (tenant_id, user_id, hour, team_id, channel_account_id, lead_source) DO UPDATE SET {}",
                    updates.join(", ")
                ));
                statements.push(sql);
            }
        }
        for (table, rows) in [
            ("hourly_hist", &self.samples),
            ("daily_hist", &daily.samples),
        ] {
            let samples: Vec<_> = rows.iter().collect();
            for chunk in samples.chunks(ROWS) {
                let mut sql = Sql::default();
                sql.push(&format!("INSERT INTO {table} (tenant_id, hour, user_id, team_id, channel_account_id, lead_source, kind, bucket, count) VALUES "));
                values(
                    &mut sql,
                    chunk,
                    |sql, ((tenant, hour, key, kind, bucket), count)| {
                        sql.text(tenant).push(", ").int(*hour).push(", ");
                        dims(sql, key);
                        sql.push(", ")
                            .text(kind)
                            .push(", ")
                            .int(*bucket)
                            .push(", ")
                            .int(**count);
                    },
                );
                sql.push(&format!(" ON CONFLICT (tenant_id, user_id, kind, hour, team_id, channel_account_id, lead_source, bucket) DO UPDATE SET count = {table}.count + excluded.count"));
                statements.push(sql);
            }
        }
        for (table, rows) in [("facts", &self.facts), ("daily_facts", &daily.facts)] {
            let facts: Vec<_> = rows.iter().collect();
            for chunk in facts.chunks(ROWS) {
                let mut sql = Sql::default();
                sql.push(&format!("INSERT INTO {table} (tenant_id, metric, user_id, hour, conversation_id, team_id, channel_account_id, lead_source) VALUES "));
                values(
                    &mut sql,
                    chunk,
                    |sql, (tenant, metric, hour, conversation, key)| {
                        sql.text(tenant)
                            .push(", ")
                            .text(metric)
                            .push(", ")
                            .text(&key.user_id)
                            .push(", ")
                            .int(*hour)
                            .push(", ")
                            .text(conversation)
                            .push(", ")
                            .text(&key.team_id)
                            .push(", ")
                            .text(&key.channel_account_id)
                            .push(", ")
                            .text(&key.lead_source);
                    },
                );
                sql.push(" ON CONFLICT DO NOTHING");
                statements.push(sql);
            }
        }
        statements
    }

    pub(super) fn add(&mut self, tenant: &str, ops: Vec<Op>) {
        for op in ops {
            match op {
                Op::Count {
                    hour,
                    dims,
                    counter,
                } => {
                    let index = Counter::ALL
                        .iter()
                        .position(|known| *known == counter)
                        .unwrap_or_default();
                    self.counters
                        .entry((tenant.to_string(), hour, dims))
                        .or_default()[index] += 1;
                }
                Op::Sample {
                    hour,
                    dims,
                    kind,
                    bucket,
                } => {
                    *self
                        .samples
                        .entry((tenant.to_string(), hour, dims, kind.name(), bucket))
                        .or_default() += 1;
                }
                Op::Fact {
                    hour,
                    dims,
                    fact,
                    conversation_id,
                } => {
                    self.facts.insert((
                        tenant.to_string(),
                        fact.name(),
                        hour,
                        conversation_id,
                        dims,
                    ));
                }
                Op::OpenWait {
                    conversation_id,
                    started_at,
                    customer_since,
                    dims,
                    first,
                } => {
                    self.new_waits
                        .entry((tenant.to_string(), conversation_id, started_at))
                        .or_insert((dims, first, None, "", customer_since));
                }
                Op::CloseWait {
                    conversation_id,
                    started_at,
                    ended_at,
                    outcome,
                } => {
                    let key = (tenant.to_string(), conversation_id, started_at);
                    match self.new_waits.get_mut(&key) {
                        Some(wait) => {
                            wait.2 = Some(ended_at);
                            wait.3 = outcome;
                        }
                        None => self
                            .closed_waits
                            .push((key.0, key.1, key.2, ended_at, outcome)),
                    }
                }
                Op::KnownUser { user_id, team_id } => {
                    self.users.insert((tenant.to_string(), user_id, team_id));
                }
            }
        }
    }
}

/// `(…), (…)` rows of a multi-row insert.
fn values<T>(sql: &mut Sql, rows: &[T], mut row: impl FnMut(&mut Sql, &T)) {
    for (index, item) in rows.iter().enumerate() {
        sql.push(if index == 0 { "(" } else { ", (" });
        row(sql, item);
        sql.push(")");
    }
}

fn dims(sql: &mut Sql, dims: &Dims) {
    sql.text(&dims.user_id)
        .push(", ")
        .text(&dims.team_id)
        .push(", ")
        .text(&dims.channel_account_id)
        .push(", ")
        .text(&dims.lead_source);
}

impl Store {
    /// Applies `envelopes` in order; returns how many were new.
    pub async fn apply_batch(
        &self,
        envelopes: &[Envelope],
        settings: &ApplySettings,
    ) -> Result<u64, Error> {
        let mut applied = 0;
        let mut run: Vec<&Envelope> = Vec::new();
        for envelope in envelopes {
            let Some(payload) = envelope.payload.as_ref() else {
                continue;
            };
            if !super::is_relevant(payload) || envelope.event_id.is_empty() {
                continue;
            }
            if clock::conversation_of(payload).is_some() && clock::event_time(envelope).is_some() {
                run.push(envelope);
                continue;
            }
            applied += self.fold_run(&mut run, settings).await?;
            if self.apply(envelope, settings).await? {
                applied += 1;
            }
        }
        applied += self.fold_run(&mut run, settings).await?;
        Ok(applied)
    }

    async fn fold_run(
        &self,
        run: &mut Vec<&Envelope>,
        settings: &ApplySettings,
    ) -> Result<u64, Error> {
        if run.is_empty() {
            return Ok(0);
        }
        let applied = match &self.database {
            Database::Postgres(pool) => fold_postgres(pool, run, settings).await?,
            Database::Sqlite(pool) => fold_sqlite(pool, run, settings).await?,
        };
        run.clear();
        Ok(applied)
    }
}

macro_rules! backend_fold {
    ($name:ident, $pool:ty, $lock:literal, $now:literal) => {
        async fn $name(
            pool: &$pool,
            run: &[&Envelope],
            settings: &ApplySettings,
        ) -> Result<u64, Error> {
            let mut tx = pool.begin().await?;
            // Which events are new (and the first of any repeats inside the run).
            let mut fresh: HashSet<String> = HashSet::new();
            for chunk in run.chunks(ROWS) {
                let mut sql = Sql::default();
                sql.push("INSERT INTO processed_events (event_id, tenant_id, processed_at) VALUES ");
                values(&mut sql, chunk, |sql, envelope| {
                    sql.text(&envelope.event_id)
                        .push(", ")
                        .text(&envelope.tenant_id)
                        .push(concat!(", ", $now));
                });
                sql.push(" ON CONFLICT (event_id) DO NOTHING RETURNING event_id");
                let rows: Vec<(String,)> =
                    bind_all!(sqlx::query_as(sqlx::AssertSqlSafe(sql.text.clone())), sql)
                        .fetch_all(&mut *tx)
                        .await?;
                fresh.extend(rows.into_iter().map(|(id,)| id));
            }
            let events: Vec<&Envelope> = run
                .iter()
                .copied()
                .filter(|envelope| fresh.remove(&envelope.event_id))
                .collect();
            // The clocks of every conversation involved, locked.
            let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for envelope in &events {
                if let Some(id) = envelope.payload.as_ref().and_then(clock::conversation_of) {
                    wanted
                        .entry(envelope.tenant_id.clone())
                        .or_default()
                        .insert(id.to_string());
                }
            }
            let mut states: BTreeMap<(String, String), ConversationState> = BTreeMap::new();
            for (tenant, ids) in &wanted {
                let ids: Vec<&String> = ids.iter().collect();
                for chunk in ids.chunks(ROWS) {
                    // Rows for conversations seen for the first time, so that they are
                    // locked too (see `apply`); sorted ids keep replicas' lock order alike.
                    let mut sql = Sql::default();
                    sql.push("INSERT INTO conversations (tenant_id, conversation_id) VALUES ");
                    values(&mut sql, chunk, |sql, id| {
                        sql.text(tenant).push(", ").text(id);
                    });
                    sql.push(" ON CONFLICT (tenant_id, conversation_id) DO NOTHING");
                    bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql.text.clone())), sql)
                        .execute(&mut *tx)
                        .await?;
                    let mut sql = Sql::default();
                    sql.push(
                        "SELECT conversation_id, channel_account_id, contact_id, lead_source, \
                         owner_user_id, team_id, opened_at, closed_at, customer_waiting_since, \
                         segment_started_at, segment_first, segment_breached, first_response_micros, \
                         messages_in, messages_out, last_message_at \
                         FROM conversations WHERE tenant_id = ",
                    )
                    .text(tenant)
                    .push(" AND conversation_id IN (");
                    for (index, id) in chunk.iter().enumerate() {
                        if index > 0 {
                            sql.push(", ");
                        }
                        sql.text(id);
                    }
                    sql.push(")").push($lock);
                    let rows: Vec<ConversationState> =
                        bind_all!(sqlx::query_as(sqlx::AssertSqlSafe(sql.text.clone())), sql)
                            .fetch_all(&mut *tx)
                            .await?;
                    for state in rows {
                        states.insert((tenant.clone(), state.conversation_id.clone()), state);
                    }
                }
            }
            // Lead sources of the contacts involved, for conversations without their own.
            let mut contacts: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for envelope in &events {
                let (Some(payload), Some(id)) = (
                    envelope.payload.as_ref(),
                    envelope.payload.as_ref().and_then(clock::conversation_of),
                ) else {
                    continue;
                };
                let key = (envelope.tenant_id.clone(), id.to_string());
                let contact = match states.get(&key) {
                    Some(state) => contact_of(state, payload),
                    None => contact_of(&ConversationState::new(id), payload),
                };
                if !contact.is_empty() {
                    contacts.entry(envelope.tenant_id.clone()).or_default().insert(contact);
                }
            }
            let mut leads: BTreeMap<(String, String), String> = BTreeMap::new();
            for (tenant, ids) in &contacts {
                let ids: Vec<&String> = ids.iter().collect();
                for chunk in ids.chunks(ROWS) {
                    let mut sql = Sql::default();
                    sql.push("SELECT contact_id, lead_source FROM contacts WHERE tenant_id = ")
                        .text(tenant)
                        .push(" AND contact_id IN (");
                    for (index, id) in chunk.iter().enumerate() {
                        if index > 0 {
                            sql.push(", ");
                        }
                        sql.text(id);
                    }
                    sql.push(")");
                    let rows: Vec<(String, String)> =
                        bind_all!(sqlx::query_as(sqlx::AssertSqlSafe(sql.text.clone())), sql)
                            .fetch_all(&mut *tx)
                            .await?;
                    for (contact, lead) in rows {
                        leads.insert((tenant.clone(), contact), lead);
                    }
                }
            }
            // Business hours in each tenant's own zone.
            let mut folds: BTreeMap<String, FoldSettings> = BTreeMap::new();
            for tenant in wanted.keys() {
                let zone: Option<(String,)> =
                    sqlx::query_as("SELECT time_zone FROM tenant_settings WHERE tenant_id = $1")
                        .bind(tenant)
                        .fetch_optional(&mut *tx)
                        .await?;
                folds.insert(
                    tenant.clone(),
                    settings.fold_for(zone.as_ref().map(|(zone,)| zone.as_str())),
                );
            }
            let mut folded = Folded::default();
            for envelope in &events {
                let (Some(payload), Some(at)) =
                    (envelope.payload.as_ref(), clock::event_time(envelope))
                else {
                    continue;
                };
                let Some(id) = clock::conversation_of(payload) else {
                    continue;
                };
                let state = states
                    .entry((envelope.tenant_id.clone(), id.to_string()))
                    .or_insert_with(|| ConversationState::new(id));
                if state.lead_source.is_empty() {
                    let contact = contact_of(state, payload);
                    if let Some(lead) = leads.get(&(envelope.tenant_id.clone(), contact)) {
                        state.lead_source = lead.clone();
                    }
                }
                let fold = folds.get(&envelope.tenant_id).unwrap_or(&settings.fold);
                let ops = conversation_ops(&envelope.tenant_id, state, payload, at, settings, fold);
                folded.add(&envelope.tenant_id, ops);
            }

            for sql in folded.aggregate_statements() {
                bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql.text.clone())), sql)
                    .execute(&mut *tx)
                    .await?;
            }
            let waits: Vec<_> = folded.new_waits.iter().collect();
            for chunk in waits.chunks(ROWS) {
                let mut sql = Sql::default();
                sql.push("INSERT INTO waits (tenant_id, conversation_id, started_at, user_id, team_id, channel_account_id, lead_source, first_wait, ended_at, outcome, customer_since) VALUES ");
                values(&mut sql, chunk, |sql, ((tenant, conversation, started), (key, first, ended, outcome, since))| {
                    sql.text(tenant)
                        .push(", ")
                        .text(conversation)
                        .push(", ")
                        .int(*started)
                        .push(", ");
                    dims(sql, key);
                    sql.push(", ")
                        .int(i64::from(*first))
                        .push(", ")
                        .bind(Value::OptInt(*ended))
                        .push(", ")
                        .text(outcome)
                        .push(", ")
                        .int(*since);
                });
                sql.push(" ON CONFLICT DO NOTHING");
                bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql.text.clone())), sql)
                    .execute(&mut *tx)
                    .await?;
            }
            for (tenant, conversation, started, ended, outcome) in &folded.closed_waits {
                sqlx::query(
                    "UPDATE waits SET ended_at = $4, outcome = $5 \
                     WHERE tenant_id = $1 AND conversation_id = $2 AND started_at = $3",
                )
                .bind(tenant)
                .bind(conversation)
                .bind(*started)
                .bind(*ended)
                .bind(*outcome)
                .execute(&mut *tx)
                .await?;
            }
            let users: Vec<_> = folded.users.iter().collect();
            for chunk in users.chunks(ROWS) {
                let mut sql = Sql::default();
                sql.push("INSERT INTO known_users (tenant_id, user_id, team_id) VALUES ");
                values(&mut sql, chunk, |sql, (tenant, user, team)| {
                    sql.text(tenant).push(", ").text(user).push(", ").text(team);
                });
                sql.push(" ON CONFLICT DO NOTHING");
                bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql.text.clone())), sql)
                    .execute(&mut *tx)
                    .await?;
            }
            let states: Vec<_> = states.iter().collect();
            for chunk in states.chunks(ROWS) {
                let mut sql = Sql::default();
                sql.push(
                    "INSERT INTO conversations (tenant_id, conversation_id, channel_account_id, \
                     contact_id, lead_source, owner_user_id, team_id, opened_at, closed_at, \
                     customer_waiting_since, segment_started_at, segment_first, segment_breached, \
                     first_response_micros, messages_in, messages_out, last_message_at) VALUES ",
                );
                values(&mut sql, chunk, |sql, ((tenant, _), state)| {
                    sql.text(tenant)
                        .push(", ")
                        .text(&state.conversation_id)
                        .push(", ")
                        .text(&state.channel_account_id)
                        .push(", ")
                        .text(&state.contact_id)
                        .push(", ")
                        .text(&state.lead_source)
                        .push(", ")
                        .text(&state.owner_user_id)
                        .push(", ")
                        .text(&state.team_id);
                    for value in [
                        Value::OptInt(state.opened_at),
                        Value::OptInt(state.closed_at),
                        Value::OptInt(state.customer_waiting_since),
                        Value::OptInt(state.segment_started_at),
                        Value::Int(state.segment_first),
                        Value::Int(state.segment_breached),
                        Value::OptInt(state.first_response_micros),
                        Value::Int(state.messages_in),
                        Value::Int(state.messages_out),
                        Value::OptInt(state.last_message_at),
                    ] {
                        sql.push(", ").bind(value);
                    }
                });
                sql.push(
                    " ON CONFLICT (tenant_id, conversation_id) DO UPDATE SET \
                     channel_account_id = excluded.channel_account_id, contact_id = excluded.contact_id, \
                     lead_source = excluded.lead_source, owner_user_id = excluded.owner_user_id, \
                     team_id = excluded.team_id, opened_at = excluded.opened_at, \
                     closed_at = excluded.closed_at, customer_waiting_since = excluded.customer_waiting_since, \
                     segment_started_at = excluded.segment_started_at, segment_first = excluded.segment_first, \
                     segment_breached = excluded.segment_breached, \
                     first_response_micros = excluded.first_response_micros, \
                     messages_in = excluded.messages_in, messages_out = excluded.messages_out, \
                     last_message_at = excluded.last_message_at",
                );
                bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql.text.clone())), sql)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(events.len() as u64)
        }
    };
}

backend_fold!(fold_postgres, sqlx::PgPool, " FOR UPDATE", "now()");
backend_fold!(
    fold_sqlite,
    sqlx::SqlitePool,
    "",
    "CAST(strftime('%s', 'now') AS INTEGER)"
);
