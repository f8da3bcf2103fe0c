//! Persistence of conversations and messages: one trait, a PostgreSQL and a SQLite
//! implementation side by side, held to the same contract tests (tests/store_contract.rs).

mod pg_batch;
mod pg_contacts;
mod pg_notes;
mod pg_outbound;
mod postgres;
mod sqlite;
mod sqlite_contacts;
mod sqlite_notes;
mod sqlite_outbound;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt, future::BoxFuture, stream::BoxStream};
use giao_storage::Database;
use uuid::Uuid;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use crate::{
    domain::{
        AppendOutcome, ContactChange, ContactFilter, ConversationFilter, ConversationRecord,
        DeliveryChange, HistoryQuery, MessageRef, NewOutbound, SearchHit, SearchQuery,
        StoredMessage, contact::ContactRecord, inbound::NewInbound,
    },
    error::Error,
};

/// What [`Store::set_owner_checked`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerSet {
    /// How many conversations and customers were updated.
    Updated { conversations: u64, contacts: u64 },
    /// These ids are not the tenant's conversations; nothing changed.
    Unknown(Vec<Uuid>),
}

pub trait Store: Send + Sync + 'static {
    /// Stores a message idempotently on (tenant, channel account, external message id),
    /// creating its conversation on first sight, in one transaction.
    fn append_inbound<'a>(
        &'a self,
        message: &'a NewInbound,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<AppendOutcome, Error>>;

    /// Stores a batch of one tenant's messages, with the same outcome as appending them one
    /// by one in order. Backends override this with a set-based path.
    fn append_inbound_batch<'a>(
        &'a self,
        messages: &'a [NewInbound],
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<AppendOutcome>, Error>> {
        Box::pin(async move {
            let mut outcomes = Vec::with_capacity(messages.len());
            for message in messages {
                outcomes.push(self.append_inbound(message, now).await?);
            }
            Ok(outcomes)
        })
    }

    fn conversation<'a>(
        &'a self,
        tenant_id: &'a str,
        id: Uuid,
    ) -> BoxFuture<'a, Result<Option<ConversationRecord>, Error>>;

    fn history<'a>(
        &'a self,
        tenant_id: &'a str,
        conversation_id: Uuid,
        query: &'a HistoryQuery,
    ) -> BoxFuture<'a, Result<Vec<StoredMessage>, Error>>;

    fn list_conversations<'a>(
        &'a self,
        tenant_id: &'a str,
        filter: &'a ConversationFilter,
    ) -> BoxFuture<'a, Result<Vec<ConversationRecord>, Error>>;

    /// Every message of several conversations for an export: conversations in id order, each
    /// oldest first, streamed so a very long history never sits in memory. The default pages
    /// through [`Store::history`] one conversation at a time.
    fn histories<'a>(
        &'a self,
        tenant_id: &'a str,
        conversation_ids: &'a [Uuid],
    ) -> BoxStream<'a, Result<StoredMessage, Error>> {
        let mut ids = conversation_ids.to_vec();
        ids.sort();
        futures::stream::iter(ids)
            .then(move |conversation_id| async move {
                let mut query = HistoryQuery {
                    order: crate::domain::HistoryOrder::OldestFirst,
                    after: None,
                    limit: 500,
                };
                let mut all = Vec::new();
                loop {
                    let page = self.history(tenant_id, conversation_id, &query).await?;
                    let full = page.len() as u32 >= query.limit;
                    query.after = page.last().map(|last| crate::domain::cursor::Position {
                        at: last.sent_at,
                        id: last.id,
                    });
                    all.extend(page);
                    if !full {
                        return Ok::<_, Error>(all);
                    }
                }
            })
            .map_ok(|page| futures::stream::iter(page.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    /// Contacts by id, in the order asked, unknown ids skipped.
    fn contacts<'a>(
        &'a self,
        tenant_id: &'a str,
        ids: &'a [Uuid],
    ) -> BoxFuture<'a, Result<Vec<ContactRecord>, Error>> {
        Box::pin(async move {
            let mut found = Vec::with_capacity(ids.len());
            for id in ids {
                found.extend(self.contact(tenant_id, *id).await?);
            }
            Ok(found)
        })
    }

    /// Every note of several contacts (with versions), grouped by contact in the order asked,
    /// newest first within a contact.
    fn notes_of<'a>(
        &'a self,
        tenant_id: &'a str,
        contact_ids: &'a [Uuid],
    ) -> BoxFuture<'a, Result<Vec<crate::domain::NoteRecord>, Error>> {
        Box::pin(async move {
            let mut found = Vec::new();
            for contact_id in contact_ids {
                let mut after = None;
                loop {
                    let page = self.list_notes(tenant_id, *contact_id, after, 500).await?;
                    let full = page.len() >= 500;
                    after = page.last().map(|last| crate::domain::cursor::Position {
                        at: last.created_at,
                        id: last.id,
                    });
                    found.extend(page);
                    if !full {
                        break;
                    }
                }
            }
            Ok(found)
        })
    }

    /// Sets the owner (and team) of conversations, with their customers when asked, all or
    /// nothing: `Unknown` names the ids that are not the tenant's conversations, and then
    /// nothing changed. Backends check inside the update, in one transaction.
    fn set_owner_checked<'a>(
        &'a self,
        tenant_id: &'a str,
        conversation_ids: &'a [Uuid],
        owner_user_id: Option<&'a str>,
        team_id: Option<&'a str>,
        with_contacts: bool,
    ) -> BoxFuture<'a, Result<OwnerSet, Error>>;

    /// Sets a conversation's status; answers when its status last changed (now, if this call
    /// changed it), or `None` for an unknown id. Setting the current status changes nothing.
    fn set_status<'a>(
        &'a self,
        tenant_id: &'a str,
        id: Uuid,
        status: i32,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<DateTime<Utc>>, Error>>;

    /// The contact of a channel user, created (with the next customer code) when the user is
    /// new; answers the contact id and whether this call created it.
    fn ensure_contact<'a>(
        &'a self,
        user: &'a NewInbound,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(Uuid, bool), Error>>;

    /// Housekeeping run at start and then daily (PostgreSQL: monthly partitions ahead).
    fn maintain(&self, now: DateTime<Utc>) -> BoxFuture<'_, Result<(), Error>>;

    fn contact<'a>(
        &'a self,
        tenant_id: &'a str,
        id: Uuid,
    ) -> BoxFuture<'a, Result<Option<ContactRecord>, Error>>;

    /// Whether the contact has a conversation owned by `owner` or one of `teams` (both
    /// `None`: no restriction).
    fn contact_visible<'a>(
        &'a self,
        tenant_id: &'a str,
        id: Uuid,
        owner: Option<&'a str>,
        teams: Option<&'a [String]>,
    ) -> BoxFuture<'a, Result<bool, Error>>;

    fn list_contacts<'a>(
        &'a self,
        tenant_id: &'a str,
        filter: &'a ContactFilter,
    ) -> BoxFuture<'a, Result<Vec<ContactRecord>, Error>>;

    /// Applies a change in one transaction; `(before, after)`, or `None` for an unknown id.
    fn update_contact<'a>(
        &'a self,
        tenant_id: &'a str,
        id: Uuid,
        change: &'a ContactChange,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<(ContactRecord, ContactRecord)>, Error>>;

    fn tag_counts<'a>(
        &'a self,
        tenant_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, i64)>, Error>>;

    /// The tenant's pipeline as stored JSON, `None` for the default.
    fn pipeline<'a>(&'a self, tenant_id: &'a str) -> BoxFuture<'a, Result<Option<String>, Error>>;

    fn set_pipeline<'a>(
        &'a self,
        tenant_id: &'a str,
        json: &'a str,
    ) -> BoxFuture<'a, Result<(), Error>>;

    fn search<'a>(
        &'a self,
        tenant_id: &'a str,
        query: &'a SearchQuery,
    ) -> BoxFuture<'a, Result<Vec<SearchHit>, Error>>;

    /// Records a pending outbound message once per idempotency key; `(message, created)`.
    fn record_outbound<'a>(
        &'a self,
        message: &'a NewOutbound,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(StoredMessage, bool), Error>>;

    fn find_message<'a>(
        &'a self,
        tenant_id: &'a str,
        reference: &'a MessageRef,
    ) -> BoxFuture<'a, Result<Option<StoredMessage>, Error>>;

    /// Ids of the stored messages named by (channel account, external id), in one lookup
    /// for a whole page's quotes; a reference to a message not stored (yet) is left out.
    fn quoted_messages<'a>(
        &'a self,
        tenant_id: &'a str,
        references: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<Vec<QuotedRow>, Error>>;

    /// Applies a delivery report if the message is still in `expected` (so concurrent
    /// reports cannot move it backwards); true when applied.
    fn update_delivery<'a>(
        &'a self,
        tenant_id: &'a str,
        message_id: Uuid,
        expected: i32,
        change: &'a DeliveryChange,
    ) -> BoxFuture<'a, Result<bool, Error>>;

    fn add_note<'a>(
        &'a self,
        note: &'a crate::domain::NewNote,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(crate::domain::NoteRecord, bool), Error>>;

    fn note<'a>(
        &'a self,
        tenant_id: &'a str,
        id: Uuid,
    ) -> BoxFuture<'a, Result<Option<crate::domain::NoteRecord>, Error>>;

    /// Replaces a note's text, keeping the old text as a version.
    fn edit_note<'a>(
        &'a self,
        tenant_id: &'a str,
        id: Uuid,
        text: &'a str,
        editor: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<crate::domain::NoteRecord>, Error>>;

    fn list_notes<'a>(
        &'a self,
        tenant_id: &'a str,
        contact_id: Uuid,
        after: Option<crate::domain::cursor::Position>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<crate::domain::NoteRecord>, Error>>;

    fn add_reaction<'a>(
        &'a self,
        tenant_id: &'a str,
        reaction: &'a crate::domain::ReactionRecord,
    ) -> BoxFuture<'a, Result<(), Error>>;

    fn reactions<'a>(
        &'a self,
        tenant_id: &'a str,
        message_ids: &'a [Uuid],
    ) -> BoxFuture<'a, Result<Vec<crate::domain::ReactionRecord>, Error>>;

    /// Moves everything of `source` to `target` and marks `source` merged, in one transaction.
    fn merge_contacts<'a>(
        &'a self,
        tenant_id: &'a str,
        target: Uuid,
        source: Uuid,
        actor: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// Replaces a message's content after an edit on the channel, keeping the old one as a
    /// version; a repeated report changes nothing.
    fn edit_message<'a>(
        &'a self,
        tenant_id: &'a str,
        message_id: Uuid,
        content: &'a giao_proto::common::MessageContent,
        at: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// Earlier contents of messages: (message id, encoded content, replaced at), oldest first.
    fn message_versions<'a>(
        &'a self,
        tenant_id: &'a str,
        message_ids: &'a [Uuid],
    ) -> BoxFuture<'a, Result<Vec<crate::store::VersionRow>, Error>>;

    /// Records that a message refers to stored attachments (idempotent).
    fn link_attachments<'a>(
        &'a self,
        tenant_id: &'a str,
        message_id: Uuid,
        storage_keys: &'a [String],
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// The messages that refer to an attachment.
    fn attachment_messages<'a>(
        &'a self,
        tenant_id: &'a str,
        storage_key: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Uuid>, Error>>;

    /// Flags a message recalled (first report wins); the content stays.
    fn mark_recalled<'a>(
        &'a self,
        tenant_id: &'a str,
        message_id: Uuid,
        recalled_by: &'a str,
        at: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), Error>>;
}

/// A contact row before its phones, tags and identities are attached.
pub(crate) struct ContactBase {
    pub id: Uuid,
    pub tenant_id: String,
    pub customer_code: String,
    pub display_name: String,
    pub care_status: String,
    pub lead_source: String,
    pub custom_fields: String,
    pub owner_user_id: Option<String>,
    pub merged_into: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What each backend loads next to a page of contacts.
#[derive(Default)]
pub(crate) struct ContactParts {
    pub phones: Vec<(Uuid, String)>,
    pub tags: Vec<(Uuid, String)>,
    pub identities: Vec<(Uuid, String, String, String, String)>,
    /// (target, merged source)
    pub merges: Vec<(Uuid, Uuid)>,
}

/// Attaches phones, tags and identities to their contacts, keeping the page order.
pub(crate) fn assemble(bases: Vec<ContactBase>, parts: ContactParts) -> Vec<ContactRecord> {
    use crate::domain::contact::Identity;
    bases
        .into_iter()
        .map(|base| ContactRecord {
            phones: parts
                .phones
                .iter()
                .filter(|(id, _)| *id == base.id)
                .map(|(_, phone)| phone.clone())
                .collect(),
            tags: parts
                .tags
                .iter()
                .filter(|(id, _)| *id == base.id)
                .map(|(_, tag)| tag.clone())
                .collect(),
            identities: parts
                .identities
                .iter()
                .filter(|(id, ..)| *id == base.id)
                .map(
                    |(_, channel_account_id, external_user_id, display_name, avatar_url)| {
                        Identity {
                            channel_account_id: channel_account_id.clone(),
                            external_user_id: external_user_id.clone(),
                            display_name: display_name.clone(),
                            avatar_url: avatar_url.clone(),
                        }
                    },
                )
                .collect(),
            merged_contact_ids: parts
                .merges
                .iter()
                .filter(|(target, _)| *target == base.id)
                .map(|(_, source)| *source)
                .collect(),
            custom_fields: serde_json::from_str(&base.custom_fields).unwrap_or_default(),
            id: base.id,
            tenant_id: base.tenant_id,
            customer_code: base.customer_code,
            display_name: base.display_name,
            care_status: base.care_status,
            lead_source: base.lead_source,
            owner_user_id: base.owner_user_id,
            merged_into: base.merged_into,
            created_at: base.created_at,
            updated_at: base.updated_at,
        })
        .collect()
}

/// An earlier content of a message: (message id, encoded content, replaced at).
pub(crate) type VersionRow = (Uuid, Vec<u8>, DateTime<Utc>);
/// A quote found: (channel account, external id, message id).
pub(crate) type QuotedRow = (String, String, Uuid);

/// A note row before its versions are attached.
pub(crate) struct NoteBase {
    pub id: Uuid,
    pub tenant_id: String,
    pub contact_id: Uuid,
    pub conversation_id: Option<Uuid>,
    pub author_user_id: String,
    pub text: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Attaches versions (ordered oldest first) to their notes.
pub(crate) fn assemble_notes(
    bases: Vec<NoteBase>,
    versions: Vec<(Uuid, crate::domain::NoteVersionRecord)>,
) -> Vec<crate::domain::NoteRecord> {
    bases
        .into_iter()
        .map(|base| crate::domain::NoteRecord {
            versions: versions
                .iter()
                .filter(|(id, _)| *id == base.id)
                .map(|(_, version)| version.clone())
                .collect(),
            id: base.id,
            tenant_id: base.tenant_id,
            contact_id: base.contact_id,
            conversation_id: base.conversation_id,
            author_user_id: base.author_user_id,
            text: base.text,
            created_at: base.created_at,
            updated_at: base.updated_at,
        })
        .collect()
}

/// `columns` (a comma-separated list) qualified with a table alias, for joins; used by
/// both backends' stores.
fn qualified(alias: &str, columns: &str) -> String {
    columns
        .split(',')
        .map(|column| format!("{alias}.{}", column.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How many columns a comma-separated list names (at compile time, for binary COPY rows).
const fn column_count(columns: &str) -> i16 {
    let bytes = columns.as_bytes();
    let (mut count, mut at) = (1, 0);
    while at < bytes.len() {
        if bytes[at] == b',' {
            count += 1;
        }
        at += 1;
    }
    count
}

/// The keys of a stored pipeline.
pub(crate) fn stage_keys(json: &str) -> Vec<String> {
    pipeline_from_json(json)
        .stages
        .into_iter()
        .map(|stage| stage.key)
        .collect()
}

/// Pipelines are stored as JSON `[{"key","label","terminal","won"}]`.
pub(crate) fn pipeline_to_json(pipeline: &giao_proto::messagestore::CarePipeline) -> String {
    let stages: Vec<serde_json::Value> = pipeline
        .stages
        .iter()
        .map(|stage| {
            serde_json::json!({
                "key": stage.key, "label": stage.label, "terminal": stage.terminal, "won": stage.won
            })
        })
        .collect();
    serde_json::Value::Array(stages).to_string()
}

pub(crate) fn pipeline_from_json(json: &str) -> giao_proto::messagestore::CarePipeline {
    let values: Vec<serde_json::Value> = serde_json::from_str(json).unwrap_or_default();
    giao_proto::messagestore::CarePipeline {
        stages: values
            .iter()
            .map(|value| giao_proto::messagestore::CareStage {
                key: value["key"].as_str().unwrap_or_default().to_string(),
                label: value["label"].as_str().unwrap_or_default().to_string(),
                terminal: value["terminal"].as_bool().unwrap_or_default(),
                won: value["won"].as_bool().unwrap_or_default(),
            })
            .collect(),
    }
}

/// Implements the contact part of [`Store`] for a backend whose inherent methods carry the
/// same names, so the two backends stay side by side without repeating the plumbing.
macro_rules! contact_store_methods {
    () => {
        fn contact<'a>(
            &'a self,
            tenant_id: &'a str,
            id: uuid::Uuid,
        ) -> futures::future::BoxFuture<
            'a,
            Result<Option<crate::domain::contact::ContactRecord>, crate::error::Error>,
        > {
            Box::pin(self.fetch_contact(tenant_id, id))
        }

        fn contact_visible<'a>(
            &'a self,
            tenant_id: &'a str,
            id: uuid::Uuid,
            owner: Option<&'a str>,
            teams: Option<&'a [String]>,
        ) -> futures::future::BoxFuture<'a, Result<bool, crate::error::Error>> {
            Box::pin(self.contact_visible(tenant_id, id, owner, teams))
        }

        fn list_contacts<'a>(
            &'a self,
            tenant_id: &'a str,
            filter: &'a crate::domain::ContactFilter,
        ) -> futures::future::BoxFuture<
            'a,
            Result<Vec<crate::domain::contact::ContactRecord>, crate::error::Error>,
        > {
            Box::pin(self.fetch_contacts(tenant_id, filter))
        }

        fn update_contact<'a>(
            &'a self,
            tenant_id: &'a str,
            id: uuid::Uuid,
            change: &'a crate::domain::ContactChange,
            now: chrono::DateTime<chrono::Utc>,
        ) -> futures::future::BoxFuture<
            'a,
            Result<
                Option<(
                    crate::domain::contact::ContactRecord,
                    crate::domain::contact::ContactRecord,
                )>,
                crate::error::Error,
            >,
        > {
            Box::pin(self.change_contact(tenant_id, id, change, now))
        }

        fn tag_counts<'a>(
            &'a self,
            tenant_id: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<Vec<(String, i64)>, crate::error::Error>> {
            Box::pin(self.fetch_tag_counts(tenant_id))
        }

        fn pipeline<'a>(
            &'a self,
            tenant_id: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<Option<String>, crate::error::Error>> {
            Box::pin(self.pipeline_json(tenant_id))
        }

        fn set_pipeline<'a>(
            &'a self,
            tenant_id: &'a str,
            json: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<(), crate::error::Error>> {
            Box::pin(self.save_pipeline(tenant_id, json))
        }

        fn search<'a>(
            &'a self,
            tenant_id: &'a str,
            query: &'a crate::domain::SearchQuery,
        ) -> futures::future::BoxFuture<
            'a,
            Result<Vec<crate::domain::SearchHit>, crate::error::Error>,
        > {
            Box::pin(self.run_search(tenant_id, query))
        }

        fn record_outbound<'a>(
            &'a self,
            message: &'a crate::domain::NewOutbound,
            now: chrono::DateTime<chrono::Utc>,
        ) -> futures::future::BoxFuture<
            'a,
            Result<(crate::domain::StoredMessage, bool), crate::error::Error>,
        > {
            Box::pin(self.insert_outbound(message, now))
        }

        fn find_message<'a>(
            &'a self,
            tenant_id: &'a str,
            reference: &'a crate::domain::MessageRef,
        ) -> futures::future::BoxFuture<
            'a,
            Result<Option<crate::domain::StoredMessage>, crate::error::Error>,
        > {
            Box::pin(self.fetch_message(tenant_id, reference))
        }

        fn quoted_messages<'a>(
            &'a self,
            tenant_id: &'a str,
            references: &'a [(String, String)],
        ) -> futures::future::BoxFuture<
            'a,
            Result<Vec<crate::store::QuotedRow>, crate::error::Error>,
        > {
            Box::pin(self.fetch_quoted(tenant_id, references))
        }

        fn update_delivery<'a>(
            &'a self,
            tenant_id: &'a str,
            message_id: uuid::Uuid,
            expected: i32,
            change: &'a crate::domain::DeliveryChange,
        ) -> futures::future::BoxFuture<'a, Result<bool, crate::error::Error>> {
            Box::pin(self.apply_delivery(tenant_id, message_id, expected, change))
        }

        fn mark_recalled<'a>(
            &'a self,
            tenant_id: &'a str,
            message_id: uuid::Uuid,
            recalled_by: &'a str,
            at: chrono::DateTime<chrono::Utc>,
        ) -> futures::future::BoxFuture<'a, Result<(), crate::error::Error>> {
            Box::pin(self.apply_recall(tenant_id, message_id, recalled_by, at))
        }

        fn add_note<'a>(
            &'a self,
            note: &'a crate::domain::NewNote,
            now: chrono::DateTime<chrono::Utc>,
        ) -> futures::future::BoxFuture<
            'a,
            Result<(crate::domain::NoteRecord, bool), crate::error::Error>,
        > {
            Box::pin(self.insert_note(note, now))
        }

        fn note<'a>(
            &'a self,
            tenant_id: &'a str,
            id: uuid::Uuid,
        ) -> futures::future::BoxFuture<
            'a,
            Result<Option<crate::domain::NoteRecord>, crate::error::Error>,
        > {
            Box::pin(self.fetch_note(tenant_id, id))
        }

        fn edit_note<'a>(
            &'a self,
            tenant_id: &'a str,
            id: uuid::Uuid,
            text: &'a str,
            editor: &'a str,
            now: chrono::DateTime<chrono::Utc>,
        ) -> futures::future::BoxFuture<
            'a,
            Result<Option<crate::domain::NoteRecord>, crate::error::Error>,
        > {
            Box::pin(self.change_note(tenant_id, id, text, editor, now))
        }

        fn list_notes<'a>(
            &'a self,
            tenant_id: &'a str,
            contact_id: uuid::Uuid,
            after: Option<crate::domain::cursor::Position>,
            limit: u32,
        ) -> futures::future::BoxFuture<
            'a,
            Result<Vec<crate::domain::NoteRecord>, crate::error::Error>,
        > {
            Box::pin(self.fetch_notes(tenant_id, contact_id, after, limit))
        }

        fn add_reaction<'a>(
            &'a self,
            tenant_id: &'a str,
            reaction: &'a crate::domain::ReactionRecord,
        ) -> futures::future::BoxFuture<'a, Result<(), crate::error::Error>> {
            Box::pin(self.upsert_reaction(tenant_id, reaction))
        }

        fn reactions<'a>(
            &'a self,
            tenant_id: &'a str,
            message_ids: &'a [uuid::Uuid],
        ) -> futures::future::BoxFuture<
            'a,
            Result<Vec<crate::domain::ReactionRecord>, crate::error::Error>,
        > {
            Box::pin(self.fetch_reactions(tenant_id, message_ids))
        }

        fn merge_contacts<'a>(
            &'a self,
            tenant_id: &'a str,
            target: uuid::Uuid,
            source: uuid::Uuid,
            actor: &'a str,
            now: chrono::DateTime<chrono::Utc>,
        ) -> futures::future::BoxFuture<'a, Result<(), crate::error::Error>> {
            Box::pin(self.merge(tenant_id, target, source, actor, now))
        }

        fn edit_message<'a>(
            &'a self,
            tenant_id: &'a str,
            message_id: uuid::Uuid,
            content: &'a giao_proto::common::MessageContent,
            at: chrono::DateTime<chrono::Utc>,
        ) -> futures::future::BoxFuture<'a, Result<(), crate::error::Error>> {
            Box::pin(self.apply_edit(tenant_id, message_id, content, at))
        }

        fn message_versions<'a>(
            &'a self,
            tenant_id: &'a str,
            message_ids: &'a [uuid::Uuid],
        ) -> futures::future::BoxFuture<
            'a,
            Result<Vec<crate::store::VersionRow>, crate::error::Error>,
        > {
            Box::pin(self.fetch_versions(tenant_id, message_ids))
        }

        fn link_attachments<'a>(
            &'a self,
            tenant_id: &'a str,
            message_id: uuid::Uuid,
            storage_keys: &'a [String],
        ) -> futures::future::BoxFuture<'a, Result<(), crate::error::Error>> {
            Box::pin(self.link_attachments(tenant_id, message_id, storage_keys))
        }

        fn attachment_messages<'a>(
            &'a self,
            tenant_id: &'a str,
            storage_key: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<Vec<uuid::Uuid>, crate::error::Error>> {
            Box::pin(self.referring_messages(tenant_id, storage_key))
        }
    };
}
pub(crate) use contact_store_methods;

/// The store for a connected database.
pub fn for_database(database: &Database) -> Arc<dyn Store> {
    match database {
        Database::Postgres(pool) => Arc::new(PostgresStore::new(pool.clone())),
        Database::Sqlite(pool) => Arc::new(SqliteStore::new(pool.clone())),
    }
}
