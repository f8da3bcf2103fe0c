//! Notes, reactions, message edits and contact merges on PostgreSQL.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::postgres::PostgresStore;
use crate::{
    domain::{NewNote, NoteRecord, NoteVersionRecord, ReactionRecord, text},
    error::Error,
};

type NoteRow = (
    Uuid,
    String,
    Uuid,
    Option<Uuid>,
    String,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
);

const NOTE_COLUMNS: &str =
    "id, tenant_id, contact_id, conversation_id, author_user_id, text, created_at, updated_at";

impl PostgresStore {
    async fn notes_with_versions(&self, rows: Vec<NoteRow>) -> Result<Vec<NoteRecord>, Error> {
        let ids: Vec<Uuid> = rows.iter().map(|row| row.0).collect();
        let versions: Vec<(Uuid, String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT note_id, text, author_user_id, replaced_at FROM note_versions \
             WHERE note_id = ANY($1) ORDER BY note_id, version",
        )
        .bind(&ids)
        .fetch_all(self.pool())
        .await?;
        Ok(super::assemble_notes(
            rows.into_iter()
                .map(
                    |(
                        id,
                        tenant_id,
                        contact_id,
                        conversation_id,
                        author_user_id,
                        text,
                        created_at,
                        updated_at,
                    )| {
                        super::NoteBase {
                            id,
                            tenant_id,
                            contact_id,
                            conversation_id,
                            author_user_id,
                            text,
                            created_at,
                            updated_at,
                        }
                    },
                )
                .collect(),
            versions
                .into_iter()
                .map(|(id, text, author_user_id, replaced_at)| {
                    (
                        id,
                        NoteVersionRecord {
                            text,
                            author_user_id,
                            replaced_at,
                        },
                    )
                })
                .collect(),
        ))
    }

    pub(super) async fn fetch_note(
        &self,
        tenant_id: &str,
        id: Uuid,
    ) -> Result<Option<NoteRecord>, Error> {
        let rows: Vec<NoteRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {NOTE_COLUMNS} FROM notes WHERE tenant_id = $1 AND id = $2"
        )))
        .bind(tenant_id)
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        Ok(self.notes_with_versions(rows).await?.pop())
    }

    pub(super) async fn insert_note(
        &self,
        note: &NewNote,
        now: DateTime<Utc>,
    ) -> Result<(NoteRecord, bool), Error> {
        let id = Uuid::now_v7();
        let inserted: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO notes (id, tenant_id, contact_id, conversation_id, author_user_id, text, folded_text, \
             idempotency_key, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
             ON CONFLICT ON CONSTRAINT notes_idempotency_key DO NOTHING RETURNING id",
        )
        .bind(id)
        .bind(&note.tenant_id)
        .bind(note.contact_id)
        .bind(note.conversation_id)
        .bind(&note.author_user_id)
        .bind(&note.text)
        .bind(text::fold(&note.text))
        .bind(&note.idempotency_key)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        let (id, created) = match inserted {
            Some(id) => (id, true),
            None => (
                sqlx::query_scalar(
                    "SELECT id FROM notes WHERE tenant_id = $1 AND idempotency_key = $2",
                )
                .bind(&note.tenant_id)
                .bind(&note.idempotency_key)
                .fetch_one(self.pool())
                .await?,
                false,
            ),
        };
        let note = self
            .fetch_note(&note.tenant_id, id)
            .await?
            .ok_or_else(|| Error::Inconsistent("note vanished after insert".into()))?;
        Ok((note, created))
    }

    pub(super) async fn change_note(
        &self,
        tenant_id: &str,
        id: Uuid,
        new_text: &str,
        editor: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<NoteRecord>, Error> {
        let mut tx = self.pool().begin().await?;
        let current: Option<(String, String)> = sqlx::query_as(
            "SELECT text, author_user_id FROM notes WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
        )
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((old_text, old_author)) = current else {
            return Ok(None);
        };
        if old_text != new_text {
            sqlx::query(
                "INSERT INTO note_versions (note_id, version, text, author_user_id, replaced_at) \
                 VALUES ($1, (SELECT COALESCE(MAX(version), 0) + 1 FROM note_versions WHERE note_id = $1), $2, $3, $4)",
            )
            .bind(id)
            .bind(&old_text)
            .bind(&old_author)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE notes SET text = $3, folded_text = $4, author_user_id = $5, updated_at = $6 \
                 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant_id)
            .bind(id)
            .bind(new_text)
            .bind(text::fold(new_text))
            .bind(editor)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.fetch_note(tenant_id, id).await
    }

    pub(super) async fn fetch_notes(
        &self,
        tenant_id: &str,
        contact_id: Uuid,
        after: Option<crate::domain::cursor::Position>,
        limit: u32,
    ) -> Result<Vec<NoteRecord>, Error> {
        let rows: Vec<NoteRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {NOTE_COLUMNS} FROM notes WHERE tenant_id = $1 AND contact_id = $2 \
             AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4)) \
             ORDER BY created_at DESC, id DESC LIMIT $5"
        )))
        .bind(tenant_id)
        .bind(contact_id)
        .bind(after.map(|p| p.at))
        .bind(after.map(|p| p.id))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        self.notes_with_versions(rows).await
    }

    /// Every note of several contacts in one query, grouped in the order of `contact_ids`
    /// (bounded by `= ANY` as in `fetch_contacts_by_ids`).
    pub(super) async fn fetch_notes_of(
        &self,
        tenant_id: &str,
        contact_ids: &[Uuid],
    ) -> Result<Vec<NoteRecord>, Error> {
        let rows: Vec<NoteRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {NOTE_COLUMNS} FROM notes n \
             JOIN UNNEST($2::uuid[]) WITH ORDINALITY AS w(wanted_id, position) ON w.wanted_id = n.contact_id \
             WHERE n.tenant_id = $1 AND n.contact_id = ANY($2) \
             ORDER BY w.position, n.created_at DESC, n.id DESC"
        )))
        .bind(tenant_id)
        .bind(contact_ids)
        .fetch_all(self.pool())
        .await?;
        self.notes_with_versions(rows).await
    }

    pub(super) async fn search_notes(
        &self,
        tenant_id: &str,
        query: &crate::domain::SearchQuery,
    ) -> Result<Vec<NoteRecord>, Error> {
        let pattern = format!(
            "%{}%",
            query
                .folded
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let rows: Vec<NoteRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {NOTE_COLUMNS} FROM notes n WHERE tenant_id = $1 AND folded_text LIKE $2 \
             AND (($3::text IS NULL AND $4::text[] IS NULL) OR EXISTS (SELECT 1 FROM conversations c \
                  WHERE c.tenant_id = n.tenant_id AND c.contact_id = n.contact_id AND (c.owner_user_id = $3 OR c.team_id = ANY($4)))) \
             AND ($6::uuid IS NULL OR n.contact_id = $6) \
             AND ($7::timestamptz IS NULL OR (created_at, id) < ($7, $8)) \
             ORDER BY created_at DESC, id DESC LIMIT $5"
        )))
        // Planned for each pattern: a cached generic plan cannot tell a rare order
        // code (trigram index) from a common word (newest-first scan) and picks wrong.
        .persistent(false)
        .bind(tenant_id)
        .bind(pattern)
        .bind(&query.visible_owner)
        .bind(&query.visible_teams)
        .bind(i64::from(query.limit))
        .bind(query.contact_id)
        .bind(query.after_for(crate::domain::SearchPaging::Notes).map(|p| p.at))
        .bind(query.after_for(crate::domain::SearchPaging::Notes).map(|p| p.id))
        .fetch_all(self.pool())
        .await?;
        self.notes_with_versions(rows).await
    }

    pub(super) async fn upsert_reaction(
        &self,
        tenant_id: &str,
        reaction: &ReactionRecord,
    ) -> Result<(), Error> {
        // Reports can arrive out of order: the latest reaction of a person wins.
        sqlx::query(
            "INSERT INTO message_reactions (tenant_id, message_id, reactor_external_id, reaction, at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, message_id, reactor_external_id) \
             DO UPDATE SET reaction = EXCLUDED.reaction, at = EXCLUDED.at WHERE message_reactions.at <= EXCLUDED.at",
        )
        .bind(tenant_id)
        .bind(reaction.message_id)
        .bind(&reaction.reactor_external_id)
        .bind(&reaction.reaction)
        .bind(reaction.at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub(super) async fn fetch_reactions(
        &self,
        tenant_id: &str,
        message_ids: &[Uuid],
    ) -> Result<Vec<ReactionRecord>, Error> {
        let rows: Vec<(Uuid, String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT message_id, reactor_external_id, reaction, at FROM message_reactions \
             WHERE tenant_id = $1 AND message_id = ANY($2) ORDER BY at",
        )
        .bind(tenant_id)
        .bind(message_ids)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(message_id, reactor_external_id, reaction, at)| ReactionRecord {
                    message_id,
                    reactor_external_id,
                    reaction,
                    at,
                },
            )
            .collect())
    }

    pub(super) async fn merge(
        &self,
        tenant_id: &str,
        target: Uuid,
        source: Uuid,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        let mut tx = self.pool().begin().await?;
        for statement in [
            "UPDATE contact_identities SET contact_id = $2 WHERE tenant_id = $1 AND contact_id = $3",
            "INSERT INTO contact_phones (tenant_id, contact_id, phone) SELECT tenant_id, $2, phone FROM contact_phones \
             WHERE tenant_id = $1 AND contact_id = $3 ON CONFLICT DO NOTHING",
            "DELETE FROM contact_phones WHERE tenant_id = $1 AND contact_id = $3",
            "INSERT INTO contact_tags (tenant_id, contact_id, tag) SELECT tenant_id, $2, tag FROM contact_tags \
             WHERE tenant_id = $1 AND contact_id = $3 ON CONFLICT DO NOTHING",
            "DELETE FROM contact_tags WHERE tenant_id = $1 AND contact_id = $3",
            // Locked in id order, as every multi-row update of conversations (no deadlock
            // against an ingest batch or a handover touching the same rows).
            "UPDATE conversations SET contact_id = $2 WHERE tenant_id = $1 AND id = ANY(ARRAY( \
               SELECT id FROM conversations WHERE tenant_id = $1 AND contact_id = $3 \
               ORDER BY id FOR NO KEY UPDATE))",
            "UPDATE notes SET contact_id = $2 WHERE tenant_id = $1 AND contact_id = $3",
            "UPDATE contact_merges SET target_id = $2 WHERE tenant_id = $1 AND target_id = $3",
        ] {
            sqlx::query(statement)
                .bind(tenant_id)
                .bind(target)
                .bind(source)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO contact_merges (tenant_id, target_id, source_id, merged_by, merged_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(tenant_id)
        .bind(target)
        .bind(source)
        .bind(actor)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE contacts SET merged_into = $2, updated_at = $3 WHERE tenant_id = $1 AND id = $4")
            .bind(tenant_id)
            .bind(target)
            .bind(now)
            .bind(source)
            .execute(&mut *tx)
            .await?;
        // The remaining contact keeps its own values and gains what it lacked.
        sqlx::query(
            "UPDATE contacts t SET \
               display_name = CASE WHEN t.display_name = '' THEN s.display_name ELSE t.display_name END, \
               folded_name = CASE WHEN t.display_name = '' THEN s.folded_name ELSE t.folded_name END, \
               lead_source = CASE WHEN t.lead_source = '' THEN s.lead_source ELSE t.lead_source END, \
               custom_fields = (s.custom_fields::jsonb || t.custom_fields::jsonb)::text, \
               updated_at = $4 \
             FROM contacts s WHERE t.tenant_id = $1 AND t.id = $2 AND s.tenant_id = $1 AND s.id = $3",
        )
        .bind(tenant_id)
        .bind(target)
        .bind(source)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn apply_edit(
        &self,
        tenant_id: &str,
        message_id: Uuid,
        content: &giao_proto::common::MessageContent,
        at: DateTime<Utc>,
    ) -> Result<(), Error> {
        let mut tx = self.pool().begin().await?;
        let current: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT content FROM messages WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
        )
        .bind(tenant_id)
        .bind(message_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(current) = current else {
            return Ok(());
        };
        let new_content = prost::Message::encode_to_vec(content);
        if current == new_content {
            // A repeated report of the same edit changes nothing.
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO message_versions (tenant_id, message_id, version, content, replaced_at) VALUES \
             ($1, $2, (SELECT COALESCE(MAX(version), 0) + 1 FROM message_versions WHERE tenant_id = $1 AND message_id = $2), $3, $4)",
        )
        .bind(tenant_id)
        .bind(message_id)
        .bind(&current)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE messages SET content = $3, text = $4, folded_text = $5, content_type = $6 \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant_id)
        .bind(message_id)
        .bind(&new_content)
        .bind(&content.text)
        .bind(text::fold(&content.text))
        .bind(content.r#type as i16)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn fetch_versions(
        &self,
        tenant_id: &str,
        message_ids: &[Uuid],
    ) -> Result<Vec<crate::store::VersionRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT message_id, content, replaced_at FROM message_versions \
             WHERE tenant_id = $1 AND message_id = ANY($2) ORDER BY message_id, version",
        )
        .bind(tenant_id)
        .bind(message_ids)
        .fetch_all(self.pool())
        .await?)
    }
}
