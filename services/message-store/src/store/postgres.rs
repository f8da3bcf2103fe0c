use std::collections::HashMap;

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use futures::future::BoxFuture;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::{OwnerSet, Store};
use crate::{
    domain::{
        AppendOutcome, ConversationFilter, ConversationRecord, HistoryOrder, HistoryQuery,
        StoredMessage, inbound::NewInbound,
    },
    error::Error,
};

/// How many months of partitions exist ahead of the current one.
const MONTHS_AHEAD: u32 = 3;

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Conversation ids by (tenant, channel account, thread), as committed. A conversation
    /// is never deleted and never changes thread, so an entry goes stale only if the
    /// database is restored under a running replica (a batch then notices and forgets them
    /// all); it spares every batch the lookup of the conversations it already knows (see
    /// ADR 0010).
    conversation_ids: std::sync::Arc<std::sync::Mutex<KnownConversations>>,
}

/// The head of every statement that updates several conversations: a CTE `locked` that
/// locks the tenant's (`$1`) conversations named in `$2` (`uuid[]`) in id order. Concurrent
/// batches, owner changes and merges then never lock shared rows in opposite orders (a
/// deadlock). Each id is looked up on its own by primary key (a lateral subquery, which the
/// planner can neither flatten nor reorder), in the order of the sorted ids: a join leaves
/// the plan to statistics, and on a table never analyzed it scanned every conversation of
/// the tenant, and every dead index entry that non-HOT updates leave behind, once per batch.
pub(super) const LOCK_CONVERSATIONS: &str = "WITH locked AS MATERIALIZED ( \
    SELECT x.id FROM (SELECT DISTINCT id FROM UNNEST($2::uuid[]) AS u(id) ORDER BY id) AS w \
    CROSS JOIN LATERAL (SELECT c.id FROM conversations c WHERE c.id = w.id AND c.tenant_id = $1 \
                        FOR NO KEY UPDATE) AS x) ";

/// Conversation ids by (tenant, channel account, external thread).
type KnownConversations = HashMap<(String, String, String), Uuid>;

/// How many conversation ids a replica remembers; past it the memory starts over (some
/// 20 MB at capacity, with ids and thread keys of a few dozen characters).
const CONVERSATION_ID_CAPACITY: usize = 100_000;

impl PostgresStore {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            conversation_ids: Default::default(),
        }
    }

    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The remembered ids of those of `threads` this replica has seen committed.
    pub(super) fn known_conversations(
        &self,
        tenant_id: &str,
        threads: &[(String, String)],
    ) -> HashMap<(String, String), Uuid> {
        let known = self
            .conversation_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        threads
            .iter()
            .filter_map(|(account, thread)| {
                known
                    .get(&(tenant_id.to_owned(), account.clone(), thread.clone()))
                    .map(|&id| ((account.clone(), thread.clone()), id))
            })
            .collect()
    }

    /// Forgets every remembered conversation id.
    pub(super) fn forget_conversations(&self) {
        self.conversation_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Remembers conversation ids once the transaction that read or created them committed.
    pub(super) fn remember_conversations(
        &self,
        tenant_id: &str,
        ids: impl IntoIterator<Item = ((String, String), Uuid)>,
    ) {
        let mut known = self
            .conversation_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for ((account, thread), id) in ids {
            if known.len() >= CONVERSATION_ID_CAPACITY {
                known.clear();
            }
            known.insert((tenant_id.to_owned(), account, thread), id);
        }
    }
}

/// The message columns qualified with a table alias, for joins.
pub(super) fn message_columns(alias: &str) -> String {
    super::qualified(alias, MESSAGE_COLUMNS)
}

/// The conversation columns qualified with a table alias.
pub(super) fn conversation_columns(alias: &str) -> String {
    super::qualified(alias, CONVERSATION_COLUMNS)
}

#[derive(sqlx::FromRow)]
pub(super) struct MessageRow {
    id: Uuid,
    tenant_id: String,
    conversation_id: Uuid,
    channel_account_id: String,
    external_message_id: Option<String>,
    direction: i16,
    sender_kind: i16,
    sender_user_id: Option<String>,
    sender_external_id: String,
    content_type: i16,
    text: String,
    content: Vec<u8>,
    quote_external_id: Option<String>,
    delivery_status: i16,
    sent_at: DateTime<Utc>,
    stored_at: DateTime<Utc>,
    recalled_at: Option<DateTime<Utc>>,
    recalled_by: Option<String>,
    failure_reason: Option<String>,
}

impl From<MessageRow> for StoredMessage {
    fn from(row: MessageRow) -> Self {
        StoredMessage {
            id: row.id,
            tenant_id: row.tenant_id,
            conversation_id: row.conversation_id,
            channel_account_id: row.channel_account_id,
            external_message_id: row.external_message_id,
            direction: row.direction.into(),
            sender_kind: row.sender_kind.into(),
            sender_user_id: row.sender_user_id,
            sender_external_id: row.sender_external_id,
            content_type: row.content_type.into(),
            text: row.text,
            content: row.content,
            quote_external_id: row.quote_external_id,
            delivery_status: row.delivery_status.into(),
            sent_at: row.sent_at,
            stored_at: row.stored_at,
            recalled_at: row.recalled_at,
            recalled_by: row.recalled_by,
            failure_reason: row.failure_reason,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ConversationRow {
    id: Uuid,
    tenant_id: String,
    channel_account_id: String,
    channel_kind: i16,
    external_thread_id: String,
    thread_kind: i16,
    customer_external_id: String,
    title: String,
    status: i16,
    owner_user_id: Option<String>,
    team_id: Option<String>,
    unread_count: i32,
    last_inbound_at: Option<DateTime<Utc>>,
    last_outbound_at: Option<DateTime<Utc>>,
    last_activity_at: DateTime<Utc>,
    last_message_preview: String,
    created_at: DateTime<Utc>,
    contact_id: Option<Uuid>,
}

impl From<ConversationRow> for ConversationRecord {
    fn from(row: ConversationRow) -> Self {
        ConversationRecord {
            id: row.id,
            tenant_id: row.tenant_id,
            channel_account_id: row.channel_account_id,
            channel_kind: row.channel_kind.into(),
            external_thread_id: row.external_thread_id,
            thread_kind: row.thread_kind.into(),
            customer_external_id: row.customer_external_id,
            title: row.title,
            status: row.status.into(),
            owner_user_id: row.owner_user_id,
            team_id: row.team_id,
            unread_count: row.unread_count.into(),
            last_inbound_at: row.last_inbound_at,
            last_outbound_at: row.last_outbound_at,
            last_activity_at: row.last_activity_at,
            last_message_preview: row.last_message_preview,
            created_at: row.created_at,
            contact_id: row.contact_id,
        }
    }
}

pub(super) const CONVERSATION_COLUMNS: &str = "id, tenant_id, channel_account_id, channel_kind, external_thread_id, thread_kind, \
     customer_external_id, title, status, owner_user_id, team_id, unread_count, last_inbound_at, \
     last_outbound_at, last_activity_at, last_message_preview, created_at, contact_id";

pub(super) const MESSAGE_COLUMNS: &str = "id, tenant_id, conversation_id, channel_account_id, external_message_id, direction, \
     sender_kind, sender_user_id, sender_external_id, content_type, text, content, quote_external_id, \
     delivery_status, sent_at, stored_at, recalled_at, recalled_by, failure_reason";

/// Columns written when a message is inserted (the rest start empty).
pub(super) const MESSAGE_INSERT_COLUMNS: &str = "id, tenant_id, conversation_id, channel_account_id, external_message_id, direction, \
     sender_kind, sender_user_id, sender_external_id, content_type, text, content, quote_external_id, \
     delivery_status, sent_at, stored_at, folded_text";

pub(super) fn small(value: i32) -> i16 {
    i16::try_from(value).unwrap_or(i16::MAX)
}

impl PostgresStore {
    async fn append(
        &self,
        message: &NewInbound,
        now: DateTime<Utc>,
    ) -> Result<AppendOutcome, Error> {
        let mut tx = self.pool.begin().await?;
        let inbound = message.direction == giao_proto::common::Direction::Inbound as i32;

        let (contact_id, contact_created) = match message.contact_key() {
            Some(external_user_id) => {
                let (id, created) = self
                    .resolve_contact(&mut tx, message, &external_user_id, now)
                    .await?;
                (Some(id), created)
            }
            None => (None, false),
        };
        let conversation_id = Uuid::now_v7();
        let title = if message.group_name.is_empty() {
            message.customer.display_name.clone()
        } else {
            message.group_name.clone()
        };
        let inserted = sqlx::query_scalar::<_, Uuid>(
            "INSERT INTO conversations (id, tenant_id, channel_account_id, channel_kind, external_thread_id, \
             thread_kind, customer_external_id, title, status, last_activity_at, created_at, contact_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $10, $11) \
             ON CONFLICT ON CONSTRAINT conversations_thread_key DO NOTHING RETURNING id",
        )
        .bind(conversation_id)
        .bind(&message.tenant_id)
        .bind(&message.channel_account_id)
        .bind(small(message.channel_kind))
        .bind(&message.external_thread_id)
        .bind(small(message.thread_kind))
        .bind(&message.customer.external_user_id)
        .bind(&title)
        .bind(message.sent_at)
        .bind(now)
        .bind(contact_id)
        .fetch_optional(&mut *tx)
        .await?;
        let conversation_created = inserted.is_some();

        let message_id = Uuid::now_v7();
        let key = sqlx::query_scalar::<_, Uuid>(
            "INSERT INTO message_keys (tenant_id, channel_account_id, external_message_id, message_id, sent_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING message_id",
        )
        .bind(&message.tenant_id)
        .bind(&message.channel_account_id)
        .bind(&message.external_message_id)
        .bind(message_id)
        .bind(message.sent_at)
        .fetch_optional(&mut *tx)
        .await?;

        if key.is_none() {
            // Already stored: answer with what is there, change nothing.
            tx.rollback().await?;
            let existing = self.existing(message).await?;
            let conversation = self
                .fetch_conversation(&message.tenant_id, existing.conversation_id)
                .await?
                .ok_or_else(|| {
                    Error::Inconsistent("conversation of a stored message is missing".into())
                })?;
            return Ok(AppendOutcome {
                message: existing,
                created: false,
                contact_id: conversation.contact_id,
                conversation,
                conversation_created: false,
                contact_created: false,
            });
        }

        let conversation = update_conversation(&mut tx, message, inbound, contact_id).await?;
        let content = prost::Message::encode_to_vec(&message.content);
        let row = sqlx::query_as::<_, MessageRow>(sqlx::AssertSqlSafe(format!(
            "INSERT INTO messages ({MESSAGE_INSERT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
             RETURNING {MESSAGE_COLUMNS}"
        )))
        .bind(message_id)
        .bind(&message.tenant_id)
        .bind(conversation.id)
        .bind(&message.channel_account_id)
        .bind(&message.external_message_id)
        .bind(small(message.direction))
        .bind(small(message.sender_kind))
        .bind(&message.sender_external_id)
        .bind(small(message.content.r#type))
        .bind(&message.content.text)
        .bind(content)
        .bind(&message.quote_external_id)
        .bind(small(delivered_status(inbound)))
        .bind(message.sent_at)
        .bind(now)
        .bind(crate::domain::text::fold(&message.content.text))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(AppendOutcome {
            message: row.into(),
            created: true,
            conversation,
            conversation_created,
            contact_id,
            contact_created,
        })
    }

    async fn existing(&self, message: &NewInbound) -> Result<StoredMessage, Error> {
        let row = sqlx::query_as::<_, MessageRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE (m.id, m.sent_at) = \
             (SELECT message_id, sent_at FROM message_keys WHERE tenant_id = $1 AND channel_account_id = $2 \
              AND external_message_id = $3)"
        )))
        .bind(&message.tenant_id)
        .bind(&message.channel_account_id)
        .bind(&message.external_message_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(Into::into)
            .ok_or_else(|| Error::Inconsistent("message key without a message".into()))
    }

    async fn fetch_conversation(
        &self,
        tenant_id: &str,
        id: Uuid,
    ) -> Result<Option<ConversationRecord>, Error> {
        let row = sqlx::query_as::<_, ConversationRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE tenant_id = $1 AND id = $2"
        )))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Into::into))
    }

    async fn fetch_history(
        &self,
        tenant_id: &str,
        conversation_id: Uuid,
        query: &HistoryQuery,
    ) -> Result<Vec<StoredMessage>, Error> {
        let (comparison, order) = match query.order {
            HistoryOrder::NewestFirst => ("<", "DESC"),
            HistoryOrder::OldestFirst => (">", "ASC"),
        };
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE tenant_id = $1 AND conversation_id = $2 \
             AND ($3::timestamptz IS NULL OR (sent_at, id) {comparison} ($3, $4)) \
             ORDER BY sent_at {order}, id {order} LIMIT $5"
        );
        let rows = sqlx::query_as::<_, MessageRow>(sqlx::AssertSqlSafe(sql))
            .bind(tenant_id)
            .bind(conversation_id)
            .bind(query.after.map(|p| p.at))
            .bind(query.after.map(|p| p.id))
            .bind(i64::from(query.limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn fetch_conversations(
        &self,
        tenant_id: &str,
        filter: &ConversationFilter,
    ) -> Result<Vec<ConversationRecord>, Error> {
        let sql = format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE tenant_id = $1 \
             AND ($2::smallint IS NULL OR status = $2) \
             AND ($3::text IS NULL OR channel_account_id = $3) \
             AND ($4::text IS NULL OR owner_user_id = $4) \
             AND ($5::text IS NULL OR team_id = $5) \
             AND (($6::text IS NULL AND $7::text[] IS NULL) OR owner_user_id = $6 OR team_id = ANY($7)) \
             AND ($8::timestamptz IS NULL OR (last_activity_at, id) < ($8, $9)) \
             AND ($11::text IS NULL OR EXISTS (SELECT 1 FROM contact_tags t WHERE t.tenant_id = conversations.tenant_id \
                  AND t.contact_id = conversations.contact_id AND t.tag = $11)) \
             AND (($12::text IS NULL AND $13::text IS NULL) OR EXISTS (SELECT 1 FROM contacts k \
                  WHERE k.tenant_id = conversations.tenant_id AND k.id = conversations.contact_id \
                  AND ($12::text IS NULL OR k.care_status = $12) AND ($13::text IS NULL OR k.lead_source = $13))) \
             AND (NOT $14 OR (last_inbound_at IS NOT NULL AND (last_outbound_at IS NULL OR last_inbound_at > last_outbound_at))) \
             AND (NOT $15 OR owner_user_id IS NULL) \
             AND ($16::timestamptz IS NULL OR last_activity_at >= $16) \
             AND ($17::uuid IS NULL OR contact_id = $17) \
             ORDER BY last_activity_at DESC, id DESC LIMIT $10"
        );
        let rows = sqlx::query_as::<_, ConversationRow>(sqlx::AssertSqlSafe(sql))
            .bind(tenant_id)
            .bind(filter.status.map(small))
            .bind(&filter.channel_account_id)
            .bind(&filter.owner_user_id)
            .bind(&filter.team_id)
            .bind(&filter.visible_owner)
            .bind(&filter.visible_teams)
            .bind(filter.after.map(|p| p.at))
            .bind(filter.after.map(|p| p.id))
            .bind(i64::from(filter.limit))
            .bind(&filter.tag)
            .bind(&filter.care_status)
            .bind(&filter.lead_source)
            .bind(filter.waiting_for_reply)
            .bind(filter.unassigned)
            .bind(filter.updated_since)
            .bind(filter.contact_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn ensure_partitions(&self, now: DateTime<Utc>) -> Result<(), Error> {
        let first = NaiveDate::from_ymd_opt(now.year(), now.month(), 1)
            .ok_or_else(|| Error::Inconsistent("bad calendar date".into()))?;
        for offset in 0..=MONTHS_AHEAD {
            let Some(start) = first.checked_add_months(Months::new(offset)) else {
                continue;
            };
            let Some(end) = start.checked_add_months(Months::new(1)) else {
                continue;
            };
            let name = format!("messages_{}", start.format("%Y_%m"));
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {name} PARTITION OF messages FOR VALUES FROM ('{start}') TO ('{end}')"
            );
            if let Err(error) = sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&self.pool)
                .await
            {
                // Typically rows for that month already sit in the default partition; they
                // stay readable there. Logged so an operator can move them.
                tracing::warn!(partition = %name, %error, "cannot create message partition");
            }
        }
        Ok(())
    }
}

pub(super) fn delivered_status(inbound: bool) -> i32 {
    if inbound {
        giao_proto::common::DeliveryStatus::Delivered as i32
    } else {
        giao_proto::common::DeliveryStatus::Sent as i32
    }
}

async fn update_conversation(
    tx: &mut Transaction<'_, Postgres>,
    message: &NewInbound,
    inbound: bool,
    contact_id: Option<Uuid>,
) -> Result<ConversationRecord, Error> {
    // A customer writing again reopens a closed conversation; times only move forward so
    // late-arriving messages do not rewind the inbox.
    let row = sqlx::query_as::<_, ConversationRow>(sqlx::AssertSqlSafe(format!(
        "UPDATE conversations SET \
           last_activity_at = GREATEST(last_activity_at, $4), \
           last_inbound_at = CASE WHEN $5 THEN GREATEST(COALESCE(last_inbound_at, $4), $4) ELSE last_inbound_at END, \
           last_outbound_at = CASE WHEN $5 THEN last_outbound_at ELSE GREATEST(COALESCE(last_outbound_at, $4), $4) END, \
           unread_count = CASE WHEN $5 THEN unread_count + 1 ELSE 0 END, \
           status = CASE WHEN $5 AND status = 3 THEN 1 ELSE status END, \
           last_message_preview = CASE WHEN $4 >= last_activity_at THEN $6 ELSE last_message_preview END, \
           contact_id = COALESCE(contact_id, $7) \
         WHERE tenant_id = $1 AND channel_account_id = $2 AND external_thread_id = $3 \
         RETURNING {CONVERSATION_COLUMNS}"
    )))
    .bind(&message.tenant_id)
    .bind(&message.channel_account_id)
    .bind(&message.external_thread_id)
    .bind(message.sent_at)
    .bind(inbound)
    .bind(message.preview())
    .bind(contact_id)
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.into())
}

impl Store for PostgresStore {
    fn append_inbound<'a>(
        &'a self,
        message: &'a NewInbound,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<AppendOutcome, Error>> {
        Box::pin(self.append(message, now))
    }

    fn append_inbound_batch<'a>(
        &'a self,
        messages: &'a [NewInbound],
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<AppendOutcome>, Error>> {
        Box::pin(self.append_batch(messages, now))
    }

    fn conversation<'a>(
        &'a self,
        tenant_id: &'a str,
        id: Uuid,
    ) -> BoxFuture<'a, Result<Option<ConversationRecord>, Error>> {
        Box::pin(self.fetch_conversation(tenant_id, id))
    }

    fn history<'a>(
        &'a self,
        tenant_id: &'a str,
        conversation_id: Uuid,
        query: &'a HistoryQuery,
    ) -> BoxFuture<'a, Result<Vec<StoredMessage>, Error>> {
        Box::pin(self.fetch_history(tenant_id, conversation_id, query))
    }

    fn list_conversations<'a>(
        &'a self,
        tenant_id: &'a str,
        filter: &'a ConversationFilter,
    ) -> BoxFuture<'a, Result<Vec<ConversationRecord>, Error>> {
        Box::pin(self.fetch_conversations(tenant_id, filter))
    }

    fn maintain(&self, now: DateTime<Utc>) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(self.ensure_partitions(now))
    }

    fn ensure_contact<'a>(
        &'a self,
        user: &'a NewInbound,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(Uuid, bool), Error>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            let resolved = self
                .resolve_contact(&mut tx, user, &user.customer.external_user_id, now)
                .await?;
            tx.commit().await?;
            Ok(resolved)
        })
    }

    fn set_status<'a>(
        &'a self,
        tenant_id: &'a str,
        id: Uuid,
        status: i32,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<DateTime<Utc>>, Error>> {
        Box::pin(async move {
            // Only a real change stamps the time, so concurrent or retried calls agree on it.
            sqlx::query(
                "UPDATE conversations SET status = $3, status_changed_at = $4 \
                 WHERE tenant_id = $1 AND id = $2 AND status <> $3",
            )
            .bind(tenant_id)
            .bind(id)
            .bind(small(status))
            .bind(now)
            .execute(&self.pool)
            .await?;
            Ok(sqlx::query_scalar(
                "SELECT COALESCE(status_changed_at, created_at) FROM conversations \
                 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
        })
    }

    fn histories<'a>(
        &'a self,
        tenant_id: &'a str,
        conversation_ids: &'a [Uuid],
    ) -> futures::stream::BoxStream<'a, Result<StoredMessage, Error>> {
        use futures::{StreamExt, TryStreamExt};
        // One query for a page of conversations, rows streamed from the server as the export
        // writes them (the connection is held for the page).
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE tenant_id = $1 AND conversation_id = ANY($2) \
             ORDER BY conversation_id, sent_at, id"
        );
        sqlx::query_as::<_, MessageRow>(sqlx::AssertSqlSafe(sql))
            .bind(tenant_id)
            .bind(conversation_ids)
            .fetch(&self.pool)
            .map_ok(StoredMessage::from)
            .map_err(Error::from)
            .boxed()
    }

    fn contacts<'a>(
        &'a self,
        tenant_id: &'a str,
        ids: &'a [Uuid],
    ) -> BoxFuture<'a, Result<Vec<crate::domain::contact::ContactRecord>, Error>> {
        Box::pin(self.fetch_contacts_by_ids(tenant_id, ids))
    }

    fn notes_of<'a>(
        &'a self,
        tenant_id: &'a str,
        contact_ids: &'a [Uuid],
    ) -> BoxFuture<'a, Result<Vec<crate::domain::NoteRecord>, Error>> {
        Box::pin(self.fetch_notes_of(tenant_id, contact_ids))
    }

    fn set_owner_checked<'a>(
        &'a self,
        tenant_id: &'a str,
        conversation_ids: &'a [Uuid],
        owner_user_id: Option<&'a str>,
        team_id: Option<&'a str>,
        with_contacts: bool,
    ) -> BoxFuture<'a, Result<OwnerSet, Error>> {
        Box::pin(async move {
            // The update answers which ids it found, so the check costs no query of its own
            // (a handover moves 200 pages this way); an unknown id rolls everything back.
            // The rows are locked in id order first (see `LOCK_CONVERSATIONS`).
            let mut tx = self.pool.begin().await?;
            let found: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "{LOCK_CONVERSATIONS} \
                 UPDATE conversations c SET owner_user_id = $3, team_id = $4 \
                 FROM locked l WHERE c.tenant_id = $1 AND c.id = l.id RETURNING c.id"
            )))
            // Planned with the ids at hand: a cached generic plan may scan the whole
            // tenant for every batch of a large handover.
            .persistent(false)
            .bind(tenant_id)
            .bind(conversation_ids)
            .bind(owner_user_id)
            .bind(team_id)
            .fetch_all(&mut *tx)
            .await?;
            // Compared as sets: an id named twice is updated (and answered) once.
            let updated = found.len() as u64;
            let found: std::collections::HashSet<Uuid> = found.into_iter().collect();
            let unknown: Vec<Uuid> = conversation_ids
                .iter()
                .filter(|id| !found.contains(id))
                .copied()
                .collect();
            if !unknown.is_empty() {
                tx.rollback().await?;
                return Ok(OwnerSet::Unknown(unknown));
            }
            let contacts = if with_contacts {
                set_contact_owners(&mut tx, tenant_id, conversation_ids, owner_user_id).await?
            } else {
                0
            };
            tx.commit().await?;
            Ok(OwnerSet::Updated {
                conversations: updated,
                contacts,
            })
        })
    }

    super::contact_store_methods!();
}

/// Gives the customers of `conversation_ids` to `owner_user_id`; how many changed.
async fn set_contact_owners(
    connection: &mut sqlx::PgConnection,
    tenant_id: &str,
    conversation_ids: &[Uuid],
    owner_user_id: Option<&str>,
) -> Result<u64, Error> {
    // Rows are locked in id order first: a handover moves several batches at once, and
    // two batches sharing customers must not lock them in opposite orders (a deadlock).
    // The customers are named as `id = ANY(ARRAY(...))`, an index lookup: as a semi-join
    // the planner hashes the whole tenant's contacts for every batch.
    Ok(sqlx::query(
        "UPDATE contacts SET owner_user_id = $3 WHERE tenant_id = $1 \
         AND owner_user_id IS DISTINCT FROM $3 AND id = ANY(ARRAY( \
           SELECT id FROM contacts WHERE tenant_id = $1 \
           AND owner_user_id IS DISTINCT FROM $3 AND id = ANY(ARRAY(SELECT contact_id \
             FROM conversations WHERE tenant_id = $1 AND id = ANY($2))) \
           ORDER BY id FOR UPDATE))",
    )
    .persistent(false)
    .bind(tenant_id)
    .bind(conversation_ids)
    .bind(owner_user_id)
    .execute(&mut *connection)
    .await?
    .rows_affected())
}
