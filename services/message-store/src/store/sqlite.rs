use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sqlx::{Sqlite, SqlitePool, Transaction};
use uuid::Uuid;

use super::{OwnerSet, Store};
use crate::{
    domain::{
        AppendOutcome, ConversationFilter, ConversationRecord, HistoryOrder, HistoryQuery,
        StoredMessage, inbound::NewInbound,
    },
    error::Error,
};

/// The embedded backend: the same model as PostgreSQL, times as microseconds.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    pub(super) fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

pub(super) fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

pub(super) fn time(micros: i64) -> Result<DateTime<Utc>, Error> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| Error::Inconsistent(format!("stored time {micros} out of range")))
}

#[derive(sqlx::FromRow)]
pub(super) struct MessageRow {
    id: Uuid,
    tenant_id: String,
    conversation_id: Uuid,
    channel_account_id: String,
    external_message_id: Option<String>,
    direction: i32,
    sender_kind: i32,
    sender_user_id: Option<String>,
    sender_external_id: String,
    content_type: i32,
    text: String,
    content: Vec<u8>,
    quote_external_id: Option<String>,
    delivery_status: i32,
    sent_at: i64,
    stored_at: i64,
    recalled_at: Option<i64>,
    recalled_by: Option<String>,
    failure_reason: Option<String>,
}

impl TryFrom<MessageRow> for StoredMessage {
    type Error = Error;

    fn try_from(row: MessageRow) -> Result<Self, Error> {
        Ok(StoredMessage {
            id: row.id,
            tenant_id: row.tenant_id,
            conversation_id: row.conversation_id,
            channel_account_id: row.channel_account_id,
            external_message_id: row.external_message_id,
            direction: row.direction,
            sender_kind: row.sender_kind,
            sender_user_id: row.sender_user_id,
            sender_external_id: row.sender_external_id,
            content_type: row.content_type,
            text: row.text,
            content: row.content,
            quote_external_id: row.quote_external_id,
            delivery_status: row.delivery_status,
            sent_at: time(row.sent_at)?,
            stored_at: time(row.stored_at)?,
            recalled_at: row.recalled_at.map(time).transpose()?,
            recalled_by: row.recalled_by,
            failure_reason: row.failure_reason,
        })
    }
}

#[derive(sqlx::FromRow)]
struct ConversationRow {
    id: Uuid,
    tenant_id: String,
    channel_account_id: String,
    channel_kind: i32,
    external_thread_id: String,
    thread_kind: i32,
    customer_external_id: String,
    title: String,
    status: i32,
    owner_user_id: Option<String>,
    team_id: Option<String>,
    unread_count: i64,
    last_inbound_at: Option<i64>,
    last_outbound_at: Option<i64>,
    last_activity_at: i64,
    last_message_preview: String,
    created_at: i64,
    contact_id: Option<Uuid>,
}

impl TryFrom<ConversationRow> for ConversationRecord {
    type Error = Error;

    fn try_from(row: ConversationRow) -> Result<Self, Error> {
        Ok(ConversationRecord {
            id: row.id,
            tenant_id: row.tenant_id,
            channel_account_id: row.channel_account_id,
            channel_kind: row.channel_kind,
            external_thread_id: row.external_thread_id,
            thread_kind: row.thread_kind,
            customer_external_id: row.customer_external_id,
            title: row.title,
            status: row.status,
            owner_user_id: row.owner_user_id,
            team_id: row.team_id,
            unread_count: row.unread_count,
            last_inbound_at: row.last_inbound_at.map(time).transpose()?,
            last_outbound_at: row.last_outbound_at.map(time).transpose()?,
            last_activity_at: time(row.last_activity_at)?,
            last_message_preview: row.last_message_preview,
            created_at: time(row.created_at)?,
            contact_id: row.contact_id,
        })
    }
}

const CONVERSATION_COLUMNS: &str = "id, tenant_id, channel_account_id, channel_kind, external_thread_id, thread_kind, \
     customer_external_id, title, status, owner_user_id, team_id, unread_count, last_inbound_at, \
     last_outbound_at, last_activity_at, last_message_preview, created_at, contact_id";

const MESSAGE_COLUMNS: &str = "id, tenant_id, conversation_id, channel_account_id, external_message_id, direction, \
     sender_kind, sender_user_id, sender_external_id, content_type, text, content, quote_external_id, \
     delivery_status, sent_at, stored_at, recalled_at, recalled_by, failure_reason";

const MESSAGE_INSERT_COLUMNS: &str = "id, tenant_id, conversation_id, channel_account_id, external_message_id, direction, \
     sender_kind, sender_user_id, sender_external_id, content_type, text, content, quote_external_id, \
     delivery_status, sent_at, stored_at, folded_text";

/// The message columns qualified with a table alias, for joins.
pub(super) fn message_columns(alias: &str) -> String {
    super::qualified(alias, MESSAGE_COLUMNS)
}

impl SqliteStore {
    async fn append(
        &self,
        message: &NewInbound,
        now: DateTime<Utc>,
    ) -> Result<AppendOutcome, Error> {
        // IMMEDIATE takes the write lock up front, so two writers never deadlock on upgrade.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let inbound = message.direction == giao_proto::common::Direction::Inbound as i32;
        let title = if message.group_name.is_empty() {
            message.customer.display_name.clone()
        } else {
            message.group_name.clone()
        };
        let (contact_id, contact_created) = match message.contact_key() {
            Some(external_user_id) => {
                let (id, created) = self
                    .resolve_contact(&mut tx, message, &external_user_id, now)
                    .await?;
                (Some(id), created)
            }
            None => (None, false),
        };
        let inserted = sqlx::query(
            "INSERT INTO conversations (id, tenant_id, channel_account_id, channel_kind, external_thread_id, \
             thread_kind, customer_external_id, title, status, last_activity_at, created_at, contact_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, ?9, ?10, ?11) ON CONFLICT DO NOTHING",
        )
        .bind(Uuid::now_v7())
        .bind(&message.tenant_id)
        .bind(&message.channel_account_id)
        .bind(message.channel_kind)
        .bind(&message.external_thread_id)
        .bind(message.thread_kind)
        .bind(&message.customer.external_user_id)
        .bind(&title)
        .bind(micros(message.sent_at))
        .bind(micros(now))
        .bind(contact_id)
        .execute(&mut *tx)
        .await?;
        let conversation_created = inserted.rows_affected() == 1;
        let conversation_id: Uuid = sqlx::query_scalar(
            "SELECT id FROM conversations WHERE tenant_id = ?1 AND channel_account_id = ?2 AND external_thread_id = ?3",
        )
        .bind(&message.tenant_id)
        .bind(&message.channel_account_id)
        .bind(&message.external_thread_id)
        .fetch_one(&mut *tx)
        .await?;

        let content = prost::Message::encode_to_vec(&message.content);
        let row = sqlx::query_as::<_, MessageRow>(sqlx::AssertSqlSafe(format!(
            "INSERT INTO messages ({MESSAGE_INSERT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) \
             ON CONFLICT DO NOTHING RETURNING {MESSAGE_COLUMNS}"
        )))
        .bind(Uuid::now_v7())
        .bind(&message.tenant_id)
        .bind(conversation_id)
        .bind(&message.channel_account_id)
        .bind(&message.external_message_id)
        .bind(message.direction)
        .bind(message.sender_kind)
        .bind(&message.sender_external_id)
        .bind(message.content.r#type)
        .bind(&message.content.text)
        .bind(content)
        .bind(&message.quote_external_id)
        .bind(delivered_status(inbound))
        .bind(micros(message.sent_at))
        .bind(micros(now))
        .bind(crate::domain::text::fold(&message.content.text))
        .fetch_optional(&mut *tx)
        .await?;

        let Some(row) = row else {
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
        };
        let conversation = update_conversation(&mut tx, message, inbound, contact_id).await?;
        tx.commit().await?;
        Ok(AppendOutcome {
            message: row.try_into()?,
            created: true,
            conversation,
            conversation_created,
            contact_id,
            contact_created,
        })
    }

    async fn existing(&self, message: &NewInbound) -> Result<StoredMessage, Error> {
        let row = sqlx::query_as::<_, MessageRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE tenant_id = ?1 AND channel_account_id = ?2 \
             AND external_message_id = ?3"
        )))
        .bind(&message.tenant_id)
        .bind(&message.channel_account_id)
        .bind(&message.external_message_id)
        .fetch_optional(&self.pool)
        .await?;
        row.ok_or_else(|| Error::Inconsistent("duplicate message vanished".into()))?
            .try_into()
    }

    async fn fetch_conversation(
        &self,
        tenant_id: &str,
        id: Uuid,
    ) -> Result<Option<ConversationRecord>, Error> {
        let row = sqlx::query_as::<_, ConversationRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE tenant_id = ?1 AND id = ?2"
        )))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(TryInto::try_into).transpose()
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
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE tenant_id = ?1 AND conversation_id = ?2 \
             AND (?3 IS NULL OR (sent_at, id) {comparison} (?3, ?4)) \
             ORDER BY sent_at {order}, id {order} LIMIT ?5"
        );
        let rows = sqlx::query_as::<_, MessageRow>(sqlx::AssertSqlSafe(sql))
            .bind(tenant_id)
            .bind(conversation_id)
            .bind(query.after.map(|p| micros(p.at)))
            .bind(query.after.map(|p| p.id))
            .bind(i64::from(query.limit))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn fetch_conversations(
        &self,
        tenant_id: &str,
        filter: &ConversationFilter,
    ) -> Result<Vec<ConversationRecord>, Error> {
        let teams = filter
            .visible_teams
            .as_ref()
            .map(|teams| serde_json::to_string(teams).unwrap_or_else(|_| "[]".into()));
        let sql = format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE tenant_id = ?1 \
             AND (?2 IS NULL OR status = ?2) \
             AND (?3 IS NULL OR channel_account_id = ?3) \
             AND (?4 IS NULL OR owner_user_id = ?4) \
             AND (?5 IS NULL OR team_id = ?5) \
             AND ((?6 IS NULL AND ?7 IS NULL) OR owner_user_id = ?6 \
                  OR team_id IN (SELECT value FROM json_each(COALESCE(?7, '[]')))) \
             AND (?8 IS NULL OR (last_activity_at, id) < (?8, ?9)) \
             AND (?11 IS NULL OR EXISTS (SELECT 1 FROM contact_tags t WHERE t.tenant_id = conversations.tenant_id \
                  AND t.contact_id = conversations.contact_id AND t.tag = ?11)) \
             AND ((?12 IS NULL AND ?13 IS NULL) OR EXISTS (SELECT 1 FROM contacts k \
                  WHERE k.tenant_id = conversations.tenant_id AND k.id = conversations.contact_id \
                  AND (?12 IS NULL OR k.care_status = ?12) AND (?13 IS NULL OR k.lead_source = ?13))) \
             AND (NOT ?14 OR (last_inbound_at IS NOT NULL AND (last_outbound_at IS NULL OR last_inbound_at > last_outbound_at))) \
             AND (NOT ?15 OR owner_user_id IS NULL) \
             AND (?16 IS NULL OR last_activity_at >= ?16) \
             AND (?17 IS NULL OR contact_id = ?17) \
             ORDER BY last_activity_at DESC, id DESC LIMIT ?10"
        );
        let rows = sqlx::query_as::<_, ConversationRow>(sqlx::AssertSqlSafe(sql))
            .bind(tenant_id)
            .bind(filter.status)
            .bind(&filter.channel_account_id)
            .bind(&filter.owner_user_id)
            .bind(&filter.team_id)
            .bind(&filter.visible_owner)
            .bind(teams)
            .bind(filter.after.map(|p| micros(p.at)))
            .bind(filter.after.map(|p| p.id))
            .bind(i64::from(filter.limit))
            .bind(&filter.tag)
            .bind(&filter.care_status)
            .bind(&filter.lead_source)
            .bind(filter.waiting_for_reply)
            .bind(filter.unassigned)
            .bind(filter.updated_since.map(micros))
            .bind(filter.contact_id)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }
}

fn delivered_status(inbound: bool) -> i32 {
    if inbound {
        giao_proto::common::DeliveryStatus::Delivered as i32
    } else {
        giao_proto::common::DeliveryStatus::Sent as i32
    }
}

async fn update_conversation(
    tx: &mut Transaction<'_, Sqlite>,
    message: &NewInbound,
    inbound: bool,
    contact_id: Option<Uuid>,
) -> Result<ConversationRecord, Error> {
    let row = sqlx::query_as::<_, ConversationRow>(sqlx::AssertSqlSafe(format!(
        "UPDATE conversations SET \
           last_message_preview = CASE WHEN ?4 >= last_activity_at THEN ?6 ELSE last_message_preview END, \
           last_activity_at = MAX(last_activity_at, ?4), \
           last_inbound_at = CASE WHEN ?5 THEN MAX(COALESCE(last_inbound_at, ?4), ?4) ELSE last_inbound_at END, \
           last_outbound_at = CASE WHEN ?5 THEN last_outbound_at ELSE MAX(COALESCE(last_outbound_at, ?4), ?4) END, \
           unread_count = CASE WHEN ?5 THEN unread_count + 1 ELSE 0 END, \
           status = CASE WHEN ?5 AND status = 3 THEN 1 ELSE status END, \
           contact_id = COALESCE(contact_id, ?7) \
         WHERE tenant_id = ?1 AND channel_account_id = ?2 AND external_thread_id = ?3 \
         RETURNING {CONVERSATION_COLUMNS}"
    )))
    .bind(&message.tenant_id)
    .bind(&message.channel_account_id)
    .bind(&message.external_thread_id)
    .bind(micros(message.sent_at))
    .bind(inbound)
    .bind(message.preview())
    .bind(contact_id)
    .fetch_one(&mut **tx)
    .await?;
    row.try_into()
}

impl Store for SqliteStore {
    fn append_inbound<'a>(
        &'a self,
        message: &'a NewInbound,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<AppendOutcome, Error>> {
        Box::pin(self.append(message, now))
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

    fn maintain(&self, _now: DateTime<Utc>) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }

    fn ensure_contact<'a>(
        &'a self,
        user: &'a NewInbound,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(Uuid, bool), Error>> {
        Box::pin(async move {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
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
            // Only a real change stamps the time, so retried calls agree on it.
            sqlx::query(
                "UPDATE conversations SET status = ?3, status_changed_at = ?4 \
                 WHERE tenant_id = ?1 AND id = ?2 AND status <> ?3",
            )
            .bind(tenant_id)
            .bind(id)
            .bind(status)
            .bind(micros(now))
            .execute(&self.pool)
            .await?;
            let changed: Option<i64> = sqlx::query_scalar(
                "SELECT COALESCE(status_changed_at, created_at) FROM conversations \
                 WHERE tenant_id = ?1 AND id = ?2",
            )
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
            changed.map(time).transpose()
        })
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
            // One transaction: a bulk reassignment or a handover page moves all or nothing;
            // an id the update does not find is unknown, and rolls everything back.
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let mut updated = 0;
            let mut unknown = Vec::new();
            for id in conversation_ids {
                let found = sqlx::query(
                    "UPDATE conversations SET owner_user_id = ?3, team_id = ?4 WHERE tenant_id = ?1 AND id = ?2",
                )
                .bind(tenant_id)
                .bind(id)
                .bind(owner_user_id)
                .bind(team_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if found == 0 {
                    unknown.push(*id);
                }
                updated += found;
            }
            if !unknown.is_empty() {
                tx.rollback().await?;
                return Ok(OwnerSet::Unknown(unknown));
            }
            let mut contacts = 0;
            if with_contacts {
                for id in conversation_ids {
                    contacts += sqlx::query(
                        "UPDATE contacts SET owner_user_id = ?3 WHERE tenant_id = ?1 \
                         AND owner_user_id IS NOT ?3 AND id = (SELECT contact_id \
                           FROM conversations WHERE tenant_id = ?1 AND id = ?2)",
                    )
                    .bind(tenant_id)
                    .bind(id)
                    .bind(owner_user_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
            }
            tx.commit().await?;
            Ok(OwnerSet::Updated {
                conversations: updated,
                contacts,
            })
        })
    }

    super::contact_store_methods!();
}
