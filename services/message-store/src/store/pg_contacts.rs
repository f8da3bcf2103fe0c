//! Contacts, tags, the care pipeline and search on PostgreSQL.

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::postgres::PostgresStore;
use crate::{
    domain::{
        ContactChange, ContactFilter, SearchHit, SearchPaging, SearchQuery,
        contact::{self, ContactRecord},
        inbound::NewInbound,
    },
    error::Error,
};

#[derive(sqlx::FromRow)]
struct ContactRow {
    id: Uuid,
    tenant_id: String,
    customer_code: String,
    display_name: String,
    care_status: String,
    lead_source: String,
    custom_fields: String,
    owner_user_id: Option<String>,
    merged_into: Option<Uuid>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

const CONTACT_COLUMNS: &str = "id, tenant_id, customer_code, display_name, care_status, lead_source, \
     custom_fields, owner_user_id, merged_into, created_at, updated_at";

/// Escapes LIKE wildcards so a query matches literally.
fn like_pattern(folded: &str) -> String {
    let escaped = folded
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

impl PostgresStore {
    /// The contact of a channel user, created on first sight with the next customer code.
    pub(super) async fn resolve_contact(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        message: &NewInbound,
        external_user_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(Uuid, bool), Error> {
        let existing: Option<Uuid> = sqlx::query_scalar(
            "SELECT contact_id FROM contact_identities \
             WHERE tenant_id = $1 AND channel_account_id = $2 AND external_user_id = $3",
        )
        .bind(&message.tenant_id)
        .bind(&message.channel_account_id)
        .bind(external_user_id)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(id) = existing {
            return Ok((id, false));
        }
        // The code comes from its own short statement, outside this transaction: holding the
        // tenant's counter row until commit would serialise every ingest and let two batches
        // deadlock. A code taken by a transaction that then loses is skipped, never reused.
        let number: i64 = sqlx::query_scalar(
            "INSERT INTO contact_codes (tenant_id, last_number) VALUES ($1, 1) \
             ON CONFLICT (tenant_id) DO UPDATE SET last_number = contact_codes.last_number + 1 \
             RETURNING last_number",
        )
        .bind(&message.tenant_id)
        .fetch_one(self.pool())
        .await?;
        let pipeline = self.pipeline_stages(&message.tenant_id).await?;
        let first_stage = pipeline.first().cloned().unwrap_or_else(|| "new".into());
        let id = Uuid::now_v7();
        let name = message.customer.display_name.trim().to_string();
        // Claim the identity first: a concurrent first sight of the same customer waits here
        // and then finds the contact the winner created.
        let claimed = sqlx::query_scalar::<_, Uuid>(
            "INSERT INTO contact_identities (tenant_id, channel_account_id, external_user_id, contact_id, display_name, avatar_url) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING contact_id",
        )
        .bind(&message.tenant_id)
        .bind(&message.channel_account_id)
        .bind(external_user_id)
        .bind(id)
        .bind(&name)
        .bind(&message.customer.avatar_url)
        .fetch_optional(&mut **tx)
        .await?;
        if claimed.is_none() {
            let winner: Uuid = sqlx::query_scalar(
                "SELECT contact_id FROM contact_identities \
                 WHERE tenant_id = $1 AND channel_account_id = $2 AND external_user_id = $3",
            )
            .bind(&message.tenant_id)
            .bind(&message.channel_account_id)
            .bind(external_user_id)
            .fetch_one(&mut **tx)
            .await?;
            return Ok((winner, false));
        }
        sqlx::query(
            "INSERT INTO contacts (id, tenant_id, customer_code, display_name, care_status, folded_name, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(id)
        .bind(&message.tenant_id)
        .bind(contact::customer_code(number))
        .bind(&name)
        .bind(&first_stage)
        .bind(crate::domain::text::fold(&name))
        .bind(now)
        .execute(&mut **tx)
        .await?;
        // A phone the channel shared is kept when it is a real number; anything else is dropped.
        if let Ok(phone) = crate::domain::phone::normalize(&message.customer.phone) {
            sqlx::query("INSERT INTO contact_phones (tenant_id, contact_id, phone) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(&message.tenant_id)
                .bind(id)
                .bind(phone)
                .execute(&mut **tx)
                .await?;
        }
        Ok((id, true))
    }

    pub(super) async fn pipeline_stages(&self, tenant_id: &str) -> Result<Vec<String>, Error> {
        let stored = self.pipeline_json(tenant_id).await?;
        Ok(match stored {
            Some(json) => super::stage_keys(&json),
            None => contact::default_pipeline()
                .stages
                .into_iter()
                .map(|stage| stage.key)
                .collect(),
        })
    }

    pub(super) async fn pipeline_json(&self, tenant_id: &str) -> Result<Option<String>, Error> {
        Ok(
            sqlx::query_scalar("SELECT stages FROM care_pipelines WHERE tenant_id = $1")
                .bind(tenant_id)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    pub(super) async fn save_pipeline(&self, tenant_id: &str, json: &str) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO care_pipelines (tenant_id, stages) VALUES ($1, $2) \
             ON CONFLICT (tenant_id) DO UPDATE SET stages = EXCLUDED.stages",
        )
        .bind(tenant_id)
        .bind(json)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn hydrate(
        &self,
        tenant_id: &str,
        rows: Vec<ContactRow>,
    ) -> Result<Vec<ContactRecord>, Error> {
        let ids: Vec<Uuid> = rows.iter().map(|row| row.id).collect();
        let phones: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT contact_id, phone FROM contact_phones WHERE tenant_id = $1 AND contact_id = ANY($2) ORDER BY phone",
        )
        .bind(tenant_id)
        .bind(&ids)
        .fetch_all(self.pool())
        .await?;
        let tags: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT contact_id, tag FROM contact_tags WHERE tenant_id = $1 AND contact_id = ANY($2) ORDER BY tag",
        )
        .bind(tenant_id)
        .bind(&ids)
        .fetch_all(self.pool())
        .await?;
        let identities: Vec<(Uuid, String, String, String, String)> = sqlx::query_as(
            "SELECT contact_id, channel_account_id, external_user_id, display_name, avatar_url \
             FROM contact_identities WHERE tenant_id = $1 AND contact_id = ANY($2) \
             ORDER BY channel_account_id, external_user_id",
        )
        .bind(tenant_id)
        .bind(&ids)
        .fetch_all(self.pool())
        .await?;
        let merges: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "SELECT target_id, source_id FROM contact_merges WHERE tenant_id = $1 AND target_id = ANY($2) ORDER BY merged_at",
        )
        .bind(tenant_id)
        .bind(&ids)
        .fetch_all(self.pool())
        .await?;
        let bases = rows
            .into_iter()
            .map(|row| {
                Ok(super::ContactBase {
                    id: row.id,
                    tenant_id: row.tenant_id,
                    customer_code: row.customer_code,
                    display_name: row.display_name,
                    care_status: row.care_status,
                    lead_source: row.lead_source,
                    custom_fields: row.custom_fields,
                    owner_user_id: row.owner_user_id,
                    merged_into: row.merged_into,
                    created_at: row.created_at,
                    updated_at: row.updated_at,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(super::assemble(
            bases,
            super::ContactParts {
                phones,
                tags,
                identities,
                merges,
            },
        ))
    }

    pub(super) async fn fetch_contact(
        &self,
        tenant_id: &str,
        id: Uuid,
    ) -> Result<Option<ContactRecord>, Error> {
        let rows = sqlx::query_as::<_, ContactRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {CONTACT_COLUMNS} FROM contacts WHERE tenant_id = $1 AND id = $2"
        )))
        .bind(tenant_id)
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        Ok(self.hydrate(tenant_id, rows).await?.pop())
    }

    /// Contacts by id in one round of queries, in the order asked. (`= ANY` names the ids
    /// to the planner, which cannot see into UNNEST: joined alone, it hashes the tenant's
    /// every contact for each page of an export.)
    pub(super) async fn fetch_contacts_by_ids(
        &self,
        tenant_id: &str,
        ids: &[Uuid],
    ) -> Result<Vec<ContactRecord>, Error> {
        let rows = sqlx::query_as::<_, ContactRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {CONTACT_COLUMNS} FROM contacts k \
             JOIN UNNEST($2::uuid[]) WITH ORDINALITY AS w(wanted_id, position) ON w.wanted_id = k.id \
             WHERE k.tenant_id = $1 AND k.id = ANY($2) ORDER BY w.position"
        )))
        .bind(tenant_id)
        .bind(ids)
        .fetch_all(self.pool())
        .await?;
        self.hydrate(tenant_id, rows).await
    }

    /// Whether any conversation of the contact is visible to an owner or teams.
    pub(super) async fn contact_visible(
        &self,
        tenant_id: &str,
        id: Uuid,
        owner: Option<&str>,
        teams: Option<&[String]>,
    ) -> Result<bool, Error> {
        if owner.is_none() && teams.is_none() {
            return Ok(true);
        }
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM conversations WHERE tenant_id = $1 AND contact_id = $2 \
             AND (owner_user_id = $3 OR team_id = ANY($4)))",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(owner)
        .bind(teams.map(<[String]>::to_vec))
        .fetch_one(self.pool())
        .await?)
    }

    pub(super) async fn fetch_contacts(
        &self,
        tenant_id: &str,
        filter: &ContactFilter,
    ) -> Result<Vec<ContactRecord>, Error> {
        let rows = sqlx::query_as::<_, ContactRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {CONTACT_COLUMNS} FROM contacts k WHERE tenant_id = $1 AND merged_into IS NULL \
             AND ($2::text IS NULL OR EXISTS (SELECT 1 FROM contact_tags t WHERE t.tenant_id = k.tenant_id AND t.contact_id = k.id AND t.tag = $2)) \
             AND ($3::text IS NULL OR care_status = $3) \
             AND ($4::text IS NULL OR lead_source = $4) \
             AND ($5::text IS NULL OR owner_user_id = $5) \
             AND (($6::text IS NULL AND $7::text[] IS NULL) OR EXISTS (SELECT 1 FROM conversations c \
                  WHERE c.tenant_id = k.tenant_id AND c.contact_id = k.id AND (c.owner_user_id = $6 OR c.team_id = ANY($7)))) \
             AND ($8::timestamptz IS NULL OR (updated_at, id) < ($8, $9)) \
             ORDER BY updated_at DESC, id DESC LIMIT $10"
        )))
        .bind(tenant_id)
        .bind(&filter.tag)
        .bind(&filter.care_status)
        .bind(&filter.lead_source)
        .bind(&filter.owner_user_id)
        .bind(&filter.visible_owner)
        .bind(&filter.visible_teams)
        .bind(filter.after.map(|p| p.at))
        .bind(filter.after.map(|p| p.id))
        .bind(i64::from(filter.limit))
        .fetch_all(self.pool())
        .await?;
        self.hydrate(tenant_id, rows).await
    }

    pub(super) async fn change_contact(
        &self,
        tenant_id: &str,
        id: Uuid,
        change: &ContactChange,
        now: DateTime<Utc>,
    ) -> Result<Option<(ContactRecord, ContactRecord)>, Error> {
        let Some(before) = self.fetch_contact(tenant_id, id).await? else {
            return Ok(None);
        };
        let mut tx = self.pool().begin().await?;
        let custom_fields = change
            .custom_fields
            .as_ref()
            .map(|fields| serde_json::to_string(fields).unwrap_or_else(|_| "{}".into()));
        sqlx::query(
            "UPDATE contacts SET display_name = COALESCE($3, display_name), \
             folded_name = COALESCE($4, folded_name), care_status = COALESCE($5, care_status), \
             lead_source = COALESCE($6, lead_source), custom_fields = COALESCE($7, custom_fields), updated_at = $8 \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(&change.display_name)
        .bind(change.display_name.as_deref().map(crate::domain::text::fold))
        .bind(&change.care_status)
        .bind(&change.lead_source)
        .bind(custom_fields)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if let Some(phones) = &change.phones {
            sqlx::query("DELETE FROM contact_phones WHERE tenant_id = $1 AND contact_id = $2")
                .bind(tenant_id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            for phone in phones {
                sqlx::query("INSERT INTO contact_phones (tenant_id, contact_id, phone) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                    .bind(tenant_id)
                    .bind(id)
                    .bind(phone)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        for tag in &change.add_tags {
            sqlx::query("INSERT INTO contact_tags (tenant_id, contact_id, tag) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(tenant_id)
                .bind(id)
                .bind(tag)
                .execute(&mut *tx)
                .await?;
        }
        for tag in &change.remove_tags {
            sqlx::query(
                "DELETE FROM contact_tags WHERE tenant_id = $1 AND contact_id = $2 AND tag = $3",
            )
            .bind(tenant_id)
            .bind(id)
            .bind(tag)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        let after = self
            .fetch_contact(tenant_id, id)
            .await?
            .ok_or_else(|| Error::Inconsistent("contact vanished during an update".into()))?;
        Ok(Some((before, after)))
    }

    pub(super) async fn fetch_tag_counts(
        &self,
        tenant_id: &str,
    ) -> Result<Vec<(String, i64)>, Error> {
        Ok(sqlx::query_as(
            "SELECT tag, COUNT(*) FROM contact_tags WHERE tenant_id = $1 GROUP BY tag ORDER BY tag",
        )
        .bind(tenant_id)
        .fetch_all(self.pool())
        .await?)
    }

    pub(super) async fn run_search(
        &self,
        tenant_id: &str,
        query: &SearchQuery,
    ) -> Result<Vec<SearchHit>, Error> {
        let mut hits = Vec::new();
        // The paged kind follows the cursor; the others come on the first page only.
        if query.contacts && query.includes(SearchPaging::Contacts) {
            let rows = sqlx::query_as::<_, ContactRow>(sqlx::AssertSqlSafe(format!(
                "SELECT {CONTACT_COLUMNS} FROM contacts k WHERE tenant_id = $1 AND merged_into IS NULL \
                 AND (folded_name LIKE $2 OR customer_code = upper($3) \
                      OR ($4::text IS NOT NULL AND EXISTS (SELECT 1 FROM contact_phones p \
                          WHERE p.tenant_id = k.tenant_id AND p.contact_id = k.id AND p.phone = $4))) \
                 AND (($5::text IS NULL AND $6::text[] IS NULL) OR EXISTS (SELECT 1 FROM conversations c \
                      WHERE c.tenant_id = k.tenant_id AND c.contact_id = k.id AND (c.owner_user_id = $5 OR c.team_id = ANY($6)))) \
                 AND ($8::timestamptz IS NULL OR (updated_at, id) < ($8, $9)) \
                 ORDER BY updated_at DESC, id DESC LIMIT $7"
            )))
            // Planned for each pattern: a cached generic plan cannot tell a rare order
            // code (trigram index) from a common word (newest-first scan) and picks wrong.
            .persistent(false)
            .bind(tenant_id)
            .bind(like_pattern(&query.folded))
            .bind(&query.folded)
            .bind(&query.phone)
            .bind(&query.visible_owner)
            .bind(&query.visible_teams)
            .bind(i64::from(query.limit))
            .bind(query.after_for(SearchPaging::Contacts).map(|p| p.at))
            .bind(query.after_for(SearchPaging::Contacts).map(|p| p.id))
            .fetch_all(self.pool())
            .await?;
            hits.extend(
                self.hydrate(tenant_id, rows)
                    .await?
                    .into_iter()
                    .map(SearchHit::Contact),
            );
        }
        if query.notes && query.includes(SearchPaging::Notes) {
            hits.extend(
                self.search_notes(tenant_id, query)
                    .await?
                    .into_iter()
                    .map(SearchHit::Note),
            );
        }
        if query.messages && query.includes(SearchPaging::Messages) && !query.folded.is_empty() {
            let rows = sqlx::query_as::<_, super::postgres::MessageRow>(sqlx::AssertSqlSafe(format!(
                "SELECT {columns} FROM messages m JOIN conversations c ON c.tenant_id = m.tenant_id AND c.id = m.conversation_id \
                 WHERE m.tenant_id = $1 AND m.folded_text LIKE $2 \
                 AND ($3::uuid IS NULL OR m.conversation_id = $3) \
                 AND (($4::text IS NULL AND $5::text[] IS NULL) OR c.owner_user_id = $4 OR c.team_id = ANY($5)) \
                 AND ($6::timestamptz IS NULL OR (m.sent_at, m.id) < ($6, $7)) \
                 AND ($9::uuid IS NULL OR c.contact_id = $9) \
                 ORDER BY m.sent_at DESC, m.id DESC LIMIT $8",
                columns = super::postgres::message_columns("m")
            )))
            // Planned for each pattern: a cached generic plan cannot tell a rare order
            // code (trigram index) from a common word (newest-first scan) and picks wrong.
            .persistent(false)
            .bind(tenant_id)
            .bind(like_pattern(&query.folded))
            .bind(query.conversation_id)
            .bind(&query.visible_owner)
            .bind(&query.visible_teams)
            .bind(query.after_for(SearchPaging::Messages).map(|p| p.at))
            .bind(query.after_for(SearchPaging::Messages).map(|p| p.id))
            .bind(i64::from(query.limit))
            .bind(query.contact_id)
            .fetch_all(self.pool())
            .await?;
            hits.extend(rows.into_iter().map(|row| SearchHit::Message(row.into())));
        }
        Ok(hits)
    }
}
