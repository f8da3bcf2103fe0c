//! Folding one event into the aggregates, in one transaction with its event id: a
//! redelivered event finds its id taken and changes nothing.

use giao_proto::events::{AccountStatus, Envelope, envelope::Payload};
use giao_storage::Database;

use super::{ApplySettings, Store, batch::Folded, bind_all};
use crate::{
    domain::{
        clock::{self, ConversationState, Counter, Dims, Fact, FoldSettings, Op},
        time::hour_of,
    },
    error::Error,
};

/// Whether an event type changes the aggregates (others are acknowledged and skipped).
pub fn is_relevant(payload: &Payload) -> bool {
    matches!(
        payload,
        Payload::MessageStored(_)
            | Payload::ConversationOpened(_)
            | Payload::ConversationAssigned(_)
            | Payload::ConversationClosed(_)
            | Payload::SlaBreached(_)
            | Payload::ContactUpdated(_)
            | Payload::AccountStatusChanged(_)
    )
}

impl Store {
    /// Applies one event; `false` when its id was applied before.
    pub async fn apply(
        &self,
        envelope: &Envelope,
        settings: &ApplySettings,
    ) -> Result<bool, Error> {
        match &self.database {
            Database::Postgres(pool) => apply_postgres(pool, envelope, settings).await,
            Database::Sqlite(pool) => apply_sqlite(pool, envelope, settings).await,
        }
    }
}

/// The outbound human message text matches a care-quality pattern.
fn flagged(tenant: &str, payload: &Payload, settings: &ApplySettings) -> bool {
    let Payload::MessageStored(message) = payload else {
        return false;
    };
    use giao_proto::common::{Direction, SenderKind};
    Direction::try_from(message.direction) == Ok(Direction::Outbound)
        && matches!(
            SenderKind::try_from(message.sender_kind),
            Ok(SenderKind::Staff | SenderKind::AccountOwner)
        )
        && settings
            .poaching
            .for_tenant(tenant)
            .iter()
            .any(|pattern| pattern.is_match(&message.text))
}

/// The contact a conversation event is about: the one the clock knows, or the event's.
pub(super) fn contact_of(state: &ConversationState, payload: &Payload) -> String {
    if !state.contact_id.is_empty() {
        return state.contact_id.clone();
    }
    match payload {
        Payload::MessageStored(message) => message.contact_id.clone(),
        Payload::ConversationOpened(opened) => opened.contact_id.clone(),
        _ => String::new(),
    }
}

/// What a conversation event adds: the clock's operations plus care-quality flags.
pub(super) fn conversation_ops(
    tenant: &str,
    state: &mut ConversationState,
    payload: &Payload,
    at: i64,
    settings: &ApplySettings,
    fold: &FoldSettings,
) -> Vec<Op> {
    let mut ops = clock::fold(state, payload, at, fold);
    if flagged(tenant, payload, settings) {
        let hour = hour_of(at);
        let mut dims = Dims {
            user_id: state.owner_user_id.clone(),
            team_id: state.team_id.clone(),
            channel_account_id: state.channel_account_id.clone(),
            lead_source: state.lead_source.clone(),
        };
        if let Payload::MessageStored(message) = payload
            && !message.sender_user_id.is_empty()
        {
            dims.user_id = message.sender_user_id.clone();
        }
        ops.push(Op::Count {
            hour,
            dims: dims.clone(),
            counter: Counter::FlaggedMessages,
        });
        ops.push(Op::Fact {
            hour,
            dims,
            fact: Fact::Flagged,
            conversation_id: state.conversation_id.clone(),
        });
    }
    ops
}

macro_rules! backend_apply {
    ($name:ident, $pool:ty, $lock:literal, $now:literal) => {
        async fn $name(
            pool: &$pool,
            envelope: &Envelope,
            settings: &ApplySettings,
        ) -> Result<bool, Error> {
            let tenant = envelope.tenant_id.as_str();
            let Some(payload) = envelope.payload.as_ref() else {
                return Ok(false);
            };
            let Some(at) = clock::event_time(envelope) else {
                return Ok(false);
            };
            let hour = hour_of(at);
            let mut tx = pool.begin().await?;
            let fresh = sqlx::query(concat!(
                "INSERT INTO processed_events (event_id, tenant_id, processed_at) VALUES ($1, $2, ",
                $now,
                ") ON CONFLICT (event_id) DO NOTHING"
            ))
            .bind(&envelope.event_id)
            .bind(tenant)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !fresh {
                return Ok(false);
            }
            let mut ops: Vec<Op> = Vec::new();
            if let Some(conversation_id) = clock::conversation_of(payload) {
                // A brand-new conversation has no row to lock, so two replicas folding its
                // first events could both start from an empty clock and the later write
                // would erase the earlier. Creating the row first makes the second insert
                // wait for the first transaction, then read what it wrote.
                sqlx::query(
                    "INSERT INTO conversations (tenant_id, conversation_id) VALUES ($1, $2) \
                     ON CONFLICT (tenant_id, conversation_id) DO NOTHING",
                )
                .bind(tenant)
                .bind(conversation_id)
                .execute(&mut *tx)
                .await?;
                let loaded: Option<ConversationState> = sqlx::query_as(concat!(
                    "SELECT conversation_id, channel_account_id, contact_id, lead_source, \
                     owner_user_id, team_id, opened_at, closed_at, customer_waiting_since, \
                     segment_started_at, segment_first, segment_breached, first_response_micros, \
                     messages_in, messages_out, last_message_at \
                     FROM conversations WHERE tenant_id = $1 AND conversation_id = $2",
                    $lock
                ))
                .bind(tenant)
                .bind(conversation_id)
                .fetch_optional(&mut *tx)
                .await?;
                let mut state = loaded.unwrap_or_else(|| ConversationState::new(conversation_id));
                // A conversation without a lead source of its own takes its contact's.
                let contact = contact_of(&state, payload);
                if state.lead_source.is_empty() && !contact.is_empty() {
                    let lead: Option<(String,)> = sqlx::query_as(
                        "SELECT lead_source FROM contacts WHERE tenant_id = $1 AND contact_id = $2",
                    )
                    .bind(tenant)
                    .bind(&contact)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some((lead,)) = lead {
                        state.lead_source = lead;
                    }
                }
                // Business hours in the tenant's own zone, as stored when the event is folded.
                let zone: Option<(String,)> =
                    sqlx::query_as("SELECT time_zone FROM tenant_settings WHERE tenant_id = $1")
                        .bind(tenant)
                        .fetch_optional(&mut *tx)
                        .await?;
                let fold = settings.fold_for(zone.as_ref().map(|(zone,)| zone.as_str()));
                ops = conversation_ops(tenant, &mut state, payload, at, settings, &fold);
                sqlx::query(
                    "INSERT INTO conversations (tenant_id, conversation_id, channel_account_id, \
                     contact_id, lead_source, owner_user_id, team_id, opened_at, closed_at, \
                     customer_waiting_since, segment_started_at, segment_first, segment_breached, \
                     first_response_micros, messages_in, messages_out, last_message_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
                     ON CONFLICT (tenant_id, conversation_id) DO UPDATE SET \
                     channel_account_id = excluded.channel_account_id, contact_id = excluded.contact_id, \
                     lead_source = excluded.lead_source, owner_user_id = excluded.owner_user_id, \
                     team_id = excluded.team_id, opened_at = excluded.opened_at, \
                     closed_at = excluded.closed_at, customer_waiting_since = excluded.customer_waiting_since, \
                     segment_started_at = excluded.segment_started_at, segment_first = excluded.segment_first, \
                     segment_breached = excluded.segment_breached, \
                     first_response_micros = excluded.first_response_micros, \
                     messages_in = excluded.messages_in, messages_out = excluded.messages_out, \
                     last_message_at = excluded.last_message_at",
                )
                .bind(tenant)
                .bind(&state.conversation_id)
                .bind(&state.channel_account_id)
                .bind(&state.contact_id)
                .bind(&state.lead_source)
                .bind(&state.owner_user_id)
                .bind(&state.team_id)
                .bind(state.opened_at)
                .bind(state.closed_at)
                .bind(state.customer_waiting_since)
                .bind(state.segment_started_at)
                .bind(state.segment_first)
                .bind(state.segment_breached)
                .bind(state.first_response_micros)
                .bind(state.messages_in)
                .bind(state.messages_out)
                .bind(state.last_message_at)
                .execute(&mut *tx)
                .await?;
            } else if let Payload::ContactUpdated(update) = payload
                && !update.contact_id.is_empty()
                && update.merged_into_contact_id.is_empty()
            {
                // As for conversations: create the row first so that it can be locked even
                // when this is the contact's first event; `known` is whether it existed.
                let known = sqlx::query(
                    "INSERT INTO contacts (tenant_id, contact_id) VALUES ($1, $2) \
                     ON CONFLICT (tenant_id, contact_id) DO NOTHING",
                )
                .bind(tenant)
                .bind(&update.contact_id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 0;
                let before: Option<(String, String, Option<i64>)> = sqlx::query_as(concat!(
                    "SELECT lead_source, care_status, created_at FROM contacts \
                     WHERE tenant_id = $1 AND contact_id = $2",
                    $lock
                ))
                .bind(tenant)
                .bind(&update.contact_id)
                .fetch_optional(&mut *tx)
                .await?;
                let (old_lead, old_status, old_created) = before.unwrap_or_default();
                let lead_source = if update.lead_source.is_empty() {
                    old_lead
                } else {
                    update.lead_source.clone()
                };
                let status = if update.care_status.is_empty() {
                    old_status.clone()
                } else {
                    update.care_status.clone()
                };
                let from = if update.previous_care_status.is_empty() {
                    old_status
                } else {
                    update.previous_care_status.clone()
                };
                let created_now = update.created && old_created.is_none();
                let created_at = old_created.or(update.created.then_some(at));
                sqlx::query(
                    "INSERT INTO contacts (tenant_id, contact_id, lead_source, care_status, created_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, contact_id) DO UPDATE SET \
                     lead_source = excluded.lead_source, care_status = excluded.care_status, \
                     created_at = excluded.created_at",
                )
                .bind(tenant)
                .bind(&update.contact_id)
                .bind(&lead_source)
                .bind(&status)
                .bind(created_at)
                .execute(&mut *tx)
                .await?;
                let contact_dims = Dims {
                    lead_source: lead_source.clone(),
                    ..Dims::default()
                };
                if created_now {
                    ops.push(Op::Count {
                        hour,
                        dims: contact_dims.clone(),
                        counter: Counter::NewContacts,
                    });
                }
                if !status.is_empty() && status != from && (known || !from.is_empty() || !update.created) {
                    sqlx::query(
                        "INSERT INTO care_transitions (tenant_id, hour, lead_source, from_status, to_status, count) \
                         VALUES ($1, $2, $3, $4, $5, 1) \
                         ON CONFLICT (tenant_id, hour, lead_source, from_status, to_status) \
                         DO UPDATE SET count = care_transitions.count + 1",
                    )
                    .bind(tenant)
                    .bind(hour)
                    .bind(&lead_source)
                    .bind(&from)
                    .bind(&status)
                    .execute(&mut *tx)
                    .await?;
                    let won = |value: &str| settings.won_statuses.iter().any(|s| s == value);
                    if won(&status) && !won(&from) {
                        // Credited to whoever owns the contact's latest conversation.
                        let latest: Option<(String, String, String, String, String)> = sqlx::query_as(
                            "SELECT conversation_id, owner_user_id, team_id, channel_account_id, lead_source \
                             FROM conversations WHERE tenant_id = $1 AND contact_id = $2 \
                             ORDER BY COALESCE(last_message_at, 0) DESC, conversation_id LIMIT 1",
                        )
                        .bind(tenant)
                        .bind(&update.contact_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                        match latest {
                            Some((conversation_id, user_id, team_id, channel_account_id, conversation_lead)) => {
                                let dims = Dims {
                                    user_id,
                                    team_id,
                                    channel_account_id,
                                    lead_source: if conversation_lead.is_empty() {
                                        lead_source.clone()
                                    } else {
                                        conversation_lead
                                    },
                                };
                                ops.push(Op::Count {
                                    hour,
                                    dims: dims.clone(),
                                    counter: Counter::Conversions,
                                });
                                ops.push(Op::Fact {
                                    hour,
                                    dims,
                                    fact: Fact::Conversion,
                                    conversation_id,
                                });
                            }
                            None => ops.push(Op::Count {
                                hour,
                                dims: contact_dims,
                                counter: Counter::Conversions,
                            }),
                        }
                    }
                }
            } else if let Payload::AccountStatusChanged(change) = payload
                && !change.channel_account_id.is_empty()
            {
                let status = AccountStatus::try_from(change.status).unwrap_or(AccountStatus::Unspecified);
                match status {
                    AccountStatus::Unspecified => {}
                    AccountStatus::Connected => {
                        sqlx::query(
                            "UPDATE account_outages SET ended_at = $3 \
                             WHERE tenant_id = $1 AND channel_account_id = $2 AND ended_at IS NULL",
                        )
                        .bind(tenant)
                        .bind(&change.channel_account_id)
                        .bind(at)
                        .execute(&mut *tx)
                        .await?;
                    }
                    other => {
                        let open: Option<(i64,)> = sqlx::query_as(
                            "SELECT started_at FROM account_outages \
                             WHERE tenant_id = $1 AND channel_account_id = $2 AND ended_at IS NULL",
                        )
                        .bind(tenant)
                        .bind(&change.channel_account_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                        if open.is_none() {
                            // When a replica racing on the same account opened one first,
                            // the one-open-outage index (migration 0003) makes this nothing.
                            sqlx::query(
                                "INSERT INTO account_outages (tenant_id, channel_account_id, started_at, ended_at, status) \
                                 VALUES ($1, $2, $3, NULL, $4) ON CONFLICT DO NOTHING",
                            )
                            .bind(tenant)
                            .bind(&change.channel_account_id)
                            .bind(at)
                            .bind(other.as_str_name())
                            .execute(&mut *tx)
                            .await?;
                        }
                    }
                }
            }
            // Figures go through the batch's writer (its hours, their daily roll-ups, one
            // lock order for every replica); the clocks' own rows follow.
            let (figures, others): (Vec<Op>, Vec<Op>) = ops.into_iter().partition(|op| {
                matches!(op, Op::Count { .. } | Op::Sample { .. } | Op::Fact { .. })
            });
            let mut folded = Folded::default();
            folded.add(tenant, figures);
            for sql in folded.aggregate_statements() {
                bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql.text.clone())), sql)
                    .execute(&mut *tx)
                    .await?;
            }
            for op in others {
                match op {
                    // Written above.
                    Op::Count { .. } | Op::Sample { .. } | Op::Fact { .. } => {}
                    Op::OpenWait { conversation_id, started_at, customer_since, dims, first } => {
                        sqlx::query(
                            "INSERT INTO waits (tenant_id, conversation_id, started_at, user_id, team_id, channel_account_id, lead_source, first_wait, ended_at, outcome, customer_since) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, '', $9) ON CONFLICT DO NOTHING",
                        )
                        .bind(tenant)
                        .bind(&conversation_id)
                        .bind(started_at)
                        .bind(&dims.user_id)
                        .bind(&dims.team_id)
                        .bind(&dims.channel_account_id)
                        .bind(&dims.lead_source)
                        .bind(i64::from(first))
                        .bind(customer_since)
                        .execute(&mut *tx)
                        .await?;
                    }
                    Op::CloseWait { conversation_id, started_at, ended_at, outcome } => {
                        sqlx::query(
                            "UPDATE waits SET ended_at = $4, outcome = $5 \
                             WHERE tenant_id = $1 AND conversation_id = $2 AND started_at = $3",
                        )
                        .bind(tenant)
                        .bind(&conversation_id)
                        .bind(started_at)
                        .bind(ended_at)
                        .bind(outcome)
                        .execute(&mut *tx)
                        .await?;
                    }
                    Op::KnownUser { user_id, team_id } => {
                        sqlx::query(
                            "INSERT INTO known_users (tenant_id, user_id, team_id) VALUES ($1, $2, $3) \
                             ON CONFLICT DO NOTHING",
                        )
                        .bind(tenant)
                        .bind(&user_id)
                        .bind(&team_id)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
            }
            tx.commit().await?;
            Ok(true)
        }
    };
}

// PostgreSQL locks the conversation's clock against a second replica folding the same
// conversation; SQLite has one writer at a time anyway.
backend_apply!(apply_postgres, sqlx::PgPool, " FOR UPDATE", "now()");
backend_apply!(
    apply_sqlite,
    sqlx::SqlitePool,
    "",
    "CAST(strftime('%s', 'now') AS INTEGER)"
);
