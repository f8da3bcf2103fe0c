//! Outbound messages, delivery reports and recalls on PostgreSQL.

use chrono::{DateTime, Utc};
use giao_proto::common::{DeliveryStatus, Direction, SenderKind};
use uuid::Uuid;

use super::postgres::{MessageRow, PostgresStore, message_columns};
use crate::{
    domain::{DeliveryChange, MessageRef, NewOutbound, StoredMessage, text},
    error::Error,
};

impl PostgresStore {
    pub(super) async fn insert_outbound(
        &self,
        message: &NewOutbound,
        now: DateTime<Utc>,
    ) -> Result<(StoredMessage, bool), Error> {
        let mut tx = self.pool().begin().await?;
        let message_id = Uuid::now_v7();
        let claimed: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO outbound_keys (tenant_id, idempotency_key, message_id, sent_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING RETURNING message_id",
        )
        .bind(&message.tenant_id)
        .bind(&message.idempotency_key)
        .bind(message_id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        if claimed.is_none() {
            tx.rollback().await?;
            let (id, sent_at): (Uuid, DateTime<Utc>) = sqlx::query_as(
                "SELECT message_id, sent_at FROM outbound_keys WHERE tenant_id = $1 AND idempotency_key = $2",
            )
            .bind(&message.tenant_id)
            .bind(&message.idempotency_key)
            .fetch_one(self.pool())
            .await?;
            let existing = self
                .fetch_by_id(&message.tenant_id, id, Some(sent_at))
                .await?
                .ok_or_else(|| Error::Inconsistent("outbound key without its message".into()))?;
            return Ok((existing, false));
        }
        let row = sqlx::query_as::<_, MessageRow>(sqlx::AssertSqlSafe(format!(
            "INSERT INTO messages (id, tenant_id, conversation_id, channel_account_id, direction, sender_kind, \
             sender_user_id, content_type, text, content, quote_external_id, delivery_status, sent_at, stored_at, folded_text) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $14) RETURNING {}",
            message_columns("messages")
        )))
        .bind(message_id)
        .bind(&message.tenant_id)
        .bind(message.conversation_id)
        .bind(&message.channel_account_id)
        .bind(Direction::Outbound as i16)
        .bind(SenderKind::Staff as i16)
        .bind(&message.sender_user_id)
        .bind(message.content.r#type as i16)
        .bind(&message.content.text)
        .bind(prost::Message::encode_to_vec(&message.content))
        .bind(&message.quote_external_id)
        .bind(DeliveryStatus::Pending as i16)
        .bind(now)
        .bind(text::fold(&message.content.text))
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE conversations SET last_outbound_at = GREATEST(COALESCE(last_outbound_at, $3), $3), \
             last_activity_at = GREATEST(last_activity_at, $3), unread_count = 0, last_message_preview = $4 \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(&message.tenant_id)
        .bind(message.conversation_id)
        .bind(now)
        .bind(message.content.text.chars().take(120).collect::<String>())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((row.into(), true))
    }

    async fn fetch_by_id(
        &self,
        tenant_id: &str,
        id: Uuid,
        sent_at: Option<DateTime<Utc>>,
    ) -> Result<Option<StoredMessage>, Error> {
        // With sent_at the lookup touches one partition; without it, every partition's index.
        let row = sqlx::query_as::<_, MessageRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM messages WHERE tenant_id = $1 AND id = $2 AND ($3::timestamptz IS NULL OR sent_at = $3)",
            message_columns("messages")
        )))
        .bind(tenant_id)
        .bind(id)
        .bind(sent_at)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(Into::into))
    }

    pub(super) async fn fetch_message(
        &self,
        tenant_id: &str,
        reference: &MessageRef,
    ) -> Result<Option<StoredMessage>, Error> {
        match reference {
            MessageRef::Id(id) => self.fetch_by_id(tenant_id, *id, None).await,
            MessageRef::External {
                channel_account_id,
                external_message_id,
            } => {
                let key: Option<(Uuid, DateTime<Utc>)> = sqlx::query_as(
                    "SELECT message_id, sent_at FROM message_keys \
                     WHERE tenant_id = $1 AND channel_account_id = $2 AND external_message_id = $3",
                )
                .bind(tenant_id)
                .bind(channel_account_id)
                .bind(external_message_id)
                .fetch_optional(self.pool())
                .await?;
                match key {
                    Some((id, sent_at)) => self.fetch_by_id(tenant_id, id, Some(sent_at)).await,
                    None => Ok(None),
                }
            }
        }
    }

    pub(super) async fn fetch_quoted(
        &self,
        tenant_id: &str,
        references: &[(String, String)],
    ) -> Result<Vec<super::QuotedRow>, Error> {
        if references.is_empty() {
            return Ok(Vec::new());
        }
        let (accounts, external_ids): (Vec<&str>, Vec<&str>) = references
            .iter()
            .map(|(account, external_id)| (account.as_str(), external_id.as_str()))
            .unzip();
        // Key by key, as the batch lookups go (see `CONTACTS_BY_IDENTITY`).
        Ok(sqlx::query_as(
            "SELECT w.account, w.external_id, k.message_id \
             FROM UNNEST($2::text[], $3::text[]) AS w(account, external_id) \
             CROSS JOIN LATERAL (SELECT message_id FROM message_keys \
                 WHERE tenant_id = $1 AND channel_account_id = w.account \
                   AND external_message_id = w.external_id LIMIT 1) AS k",
        )
        .bind(tenant_id)
        .bind(accounts)
        .bind(external_ids)
        .fetch_all(self.pool())
        .await?)
    }

    pub(super) async fn apply_delivery(
        &self,
        tenant_id: &str,
        message_id: Uuid,
        expected: i32,
        change: &DeliveryChange,
    ) -> Result<bool, Error> {
        let mut tx = self.pool().begin().await?;
        let updated: Option<(String, DateTime<Utc>)> = sqlx::query_as(
            "UPDATE messages SET delivery_status = $4, failure_reason = COALESCE($5, failure_reason), \
             external_message_id = COALESCE(external_message_id, $6) \
             WHERE tenant_id = $1 AND id = $2 AND delivery_status = $3 RETURNING channel_account_id, sent_at",
        )
        .bind(tenant_id)
        .bind(message_id)
        .bind(expected as i16)
        .bind(change.status as i16)
        .bind(&change.failure_reason)
        .bind(&change.external_message_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((channel_account_id, sent_at)) = updated else {
            tx.rollback().await?;
            return Ok(false);
        };
        // Later reports name the message by the channel's id: make it findable.
        if let Some(external_message_id) = &change.external_message_id {
            sqlx::query(
                "INSERT INTO message_keys (tenant_id, channel_account_id, external_message_id, message_id, sent_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(tenant_id)
            .bind(&channel_account_id)
            .bind(external_message_id)
            .bind(message_id)
            .bind(sent_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    pub(super) async fn apply_recall(
        &self,
        tenant_id: &str,
        message_id: Uuid,
        recalled_by: &str,
        at: DateTime<Utc>,
    ) -> Result<(), Error> {
        sqlx::query(
            "UPDATE messages SET recalled_at = $3, recalled_by = $4 \
             WHERE tenant_id = $1 AND id = $2 AND recalled_at IS NULL",
        )
        .bind(tenant_id)
        .bind(message_id)
        .bind(at)
        .bind(recalled_by)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub(super) async fn link_attachments(
        &self,
        tenant_id: &str,
        message_id: Uuid,
        storage_keys: &[String],
    ) -> Result<(), Error> {
        for key in storage_keys {
            sqlx::query(
                "INSERT INTO attachment_refs (tenant_id, storage_key, message_id) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(tenant_id)
            .bind(key)
            .bind(message_id)
            .execute(self.pool())
            .await?;
        }
        Ok(())
    }

    pub(super) async fn referring_messages(
        &self,
        tenant_id: &str,
        storage_key: &str,
    ) -> Result<Vec<Uuid>, Error> {
        Ok(sqlx::query_scalar(
            "SELECT message_id FROM attachment_refs WHERE tenant_id = $1 AND storage_key = $2",
        )
        .bind(tenant_id)
        .bind(storage_key)
        .fetch_all(self.pool())
        .await?)
    }
}
