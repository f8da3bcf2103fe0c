//! Outbound messages, delivery reports and recalls on SQLite.

use chrono::{DateTime, Utc};
use giao_proto::common::{DeliveryStatus, Direction, SenderKind};
use uuid::Uuid;

use super::sqlite::{MessageRow, SqliteStore, message_columns, micros};
use crate::{
    domain::{DeliveryChange, MessageRef, NewOutbound, StoredMessage, text},
    error::Error,
};

impl SqliteStore {
    pub(super) async fn insert_outbound(
        &self,
        message: &NewOutbound,
        now: DateTime<Utc>,
    ) -> Result<(StoredMessage, bool), Error> {
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let message_id = Uuid::now_v7();
        let claimed = sqlx::query(
            "INSERT INTO outbound_keys (tenant_id, idempotency_key, message_id, sent_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&message.tenant_id)
        .bind(&message.idempotency_key)
        .bind(message_id)
        .bind(micros(now))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !claimed {
            tx.rollback().await?;
            let id: Uuid = sqlx::query_scalar(
                "SELECT message_id FROM outbound_keys WHERE tenant_id = ?1 AND idempotency_key = ?2",
            )
            .bind(&message.tenant_id)
            .bind(&message.idempotency_key)
            .fetch_one(self.pool())
            .await?;
            let existing = self
                .fetch_message(&message.tenant_id, &MessageRef::Id(id))
                .await?
                .ok_or_else(|| Error::Inconsistent("outbound key without its message".into()))?;
            return Ok((existing, false));
        }
        let row = sqlx::query_as::<_, MessageRow>(sqlx::AssertSqlSafe(format!(
            "INSERT INTO messages (id, tenant_id, conversation_id, channel_account_id, direction, sender_kind, \
             sender_user_id, content_type, text, content, quote_external_id, delivery_status, sent_at, stored_at, folded_text) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13, ?14) RETURNING {}",
            message_columns("messages")
        )))
        .bind(message_id)
        .bind(&message.tenant_id)
        .bind(message.conversation_id)
        .bind(&message.channel_account_id)
        .bind(Direction::Outbound as i32)
        .bind(SenderKind::Staff as i32)
        .bind(&message.sender_user_id)
        .bind(message.content.r#type)
        .bind(&message.content.text)
        .bind(prost::Message::encode_to_vec(&message.content))
        .bind(&message.quote_external_id)
        .bind(DeliveryStatus::Pending as i32)
        .bind(micros(now))
        .bind(text::fold(&message.content.text))
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE conversations SET last_outbound_at = MAX(COALESCE(last_outbound_at, ?3), ?3), \
             last_activity_at = MAX(last_activity_at, ?3), unread_count = 0, last_message_preview = ?4 \
             WHERE tenant_id = ?1 AND id = ?2",
        )
        .bind(&message.tenant_id)
        .bind(message.conversation_id)
        .bind(micros(now))
        .bind(message.content.text.chars().take(120).collect::<String>())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((row.try_into()?, true))
    }

    pub(super) async fn fetch_message(
        &self,
        tenant_id: &str,
        reference: &MessageRef,
    ) -> Result<Option<StoredMessage>, Error> {
        let columns = message_columns("messages");
        let row = match reference {
            MessageRef::Id(id) => {
                sqlx::query_as::<_, MessageRow>(sqlx::AssertSqlSafe(format!(
                    "SELECT {columns} FROM messages WHERE tenant_id = ?1 AND id = ?2"
                )))
                .bind(tenant_id)
                .bind(id)
                .fetch_optional(self.pool())
                .await?
            }
            MessageRef::External {
                channel_account_id,
                external_message_id,
            } => sqlx::query_as::<_, MessageRow>(sqlx::AssertSqlSafe(format!(
                "SELECT {columns} FROM messages WHERE tenant_id = ?1 AND channel_account_id = ?2 \
                     AND external_message_id = ?3"
            )))
            .bind(tenant_id)
            .bind(channel_account_id)
            .bind(external_message_id)
            .fetch_optional(self.pool())
            .await?,
        };
        row.map(TryInto::try_into).transpose()
    }

    pub(super) async fn fetch_quoted(
        &self,
        tenant_id: &str,
        references: &[(String, String)],
    ) -> Result<Vec<super::QuotedRow>, Error> {
        // One indexed lookup per quote: the embedded database answers in-process, so a
        // round trip costs little here.
        let mut found = Vec::new();
        for (account, external_id) in references {
            let id: Option<Uuid> = sqlx::query_scalar(
                "SELECT id FROM messages WHERE tenant_id = ?1 AND channel_account_id = ?2 \
                 AND external_message_id = ?3",
            )
            .bind(tenant_id)
            .bind(account)
            .bind(external_id)
            .fetch_optional(self.pool())
            .await?;
            if let Some(id) = id {
                found.push((account.clone(), external_id.clone(), id));
            }
        }
        Ok(found)
    }

    pub(super) async fn apply_delivery(
        &self,
        tenant_id: &str,
        message_id: Uuid,
        expected: i32,
        change: &DeliveryChange,
    ) -> Result<bool, Error> {
        let updated = sqlx::query(
            "UPDATE messages SET delivery_status = ?4, failure_reason = COALESCE(?5, failure_reason), \
             external_message_id = COALESCE(external_message_id, ?6) \
             WHERE tenant_id = ?1 AND id = ?2 AND delivery_status = ?3",
        )
        .bind(tenant_id)
        .bind(message_id)
        .bind(expected)
        .bind(change.status)
        .bind(&change.failure_reason)
        .bind(&change.external_message_id)
        .execute(self.pool())
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    pub(super) async fn apply_recall(
        &self,
        tenant_id: &str,
        message_id: Uuid,
        recalled_by: &str,
        at: DateTime<Utc>,
    ) -> Result<(), Error> {
        sqlx::query(
            "UPDATE messages SET recalled_at = ?3, recalled_by = ?4 \
             WHERE tenant_id = ?1 AND id = ?2 AND recalled_at IS NULL",
        )
        .bind(tenant_id)
        .bind(message_id)
        .bind(micros(at))
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
                "INSERT INTO attachment_refs (tenant_id, storage_key, message_id) VALUES (?1, ?2, ?3) \
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
            "SELECT message_id FROM attachment_refs WHERE tenant_id = ?1 AND storage_key = ?2",
        )
        .bind(tenant_id)
        .bind(storage_key)
        .fetch_all(self.pool())
        .await?)
    }
}
