//! ExportHistory: the selected history as JSON Lines, ending with a manifest of counts and the
//! SHA-256 of every byte sent, so a handover or an audit can prove what was exported.
//!
//! Lines, one JSON object each, in this order: per conversation a `conversation` line then its
//! `message` lines oldest first; then each contact of those conversations (`contact`) and its
//! `note` lines.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use giao_authz::Principal;
use giao_proto::{
    common::MessageContent,
    messagestore::{ExportChunk, ExportManifest, export_chunk::Chunk},
};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::{
    api::timestamp,
    domain::{
        ConversationFilter, ConversationRecord, NoteRecord, StoredMessage, contact::ContactRecord,
        cursor::Position, visibility,
    },
    error::Error,
    store::Store,
};

/// Bytes of JSON Lines per chunk sent.
const CHUNK_BYTES: usize = 64 * 1024;
const PAGE: u32 = 500;

#[derive(Debug, Clone)]
pub enum Selector {
    Contact(Uuid),
    Owner(String),
    ChannelAccount(String),
    Tenant,
}

#[derive(Debug, Clone, Copy)]
pub struct Range {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// Accumulates lines into chunks, counting and hashing everything sent.
struct Writer {
    sender: mpsc::Sender<Result<ExportChunk, tonic::Status>>,
    buffer: Vec<u8>,
    hasher: Sha256,
    bytes: u64,
    manifest: ExportManifest,
}

impl Writer {
    async fn line(&mut self, value: serde_json::Value) -> Result<(), Error> {
        let mut line =
            serde_json::to_vec(&value).map_err(|error| Error::Inconsistent(error.to_string()))?;
        line.push(b'\n');
        self.buffer.extend_from_slice(&line);
        if self.buffer.len() >= CHUNK_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Error> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::take(&mut self.buffer);
        self.hasher.update(&chunk);
        self.bytes += chunk.len() as u64;
        self.sender
            .send(Ok(ExportChunk {
                chunk: Some(Chunk::Jsonl(chunk)),
            }))
            .await
            .map_err(|_| Error::Cancelled)
    }
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn message_line(message: &StoredMessage) -> serde_json::Value {
    let content =
        <MessageContent as prost::Message>::decode(message.content.as_slice()).unwrap_or_default();
    json!({
        "type": "message",
        "message_id": message.id,
        "conversation_id": message.conversation_id,
        "channel_account_id": message.channel_account_id,
        "external_message_id": message.external_message_id,
        "direction": message.direction,
        "sender_kind": message.sender_kind,
        "sender_user_id": message.sender_user_id,
        "sender_external_id": message.sender_external_id,
        "content_type": message.content_type,
        "text": message.text,
        "attachments": content.attachments.iter().map(|a| json!({
            "url": a.url, "storage_key": a.storage_key, "name": a.name, "mime_type": a.mime_type, "size_bytes": a.size_bytes
        })).collect::<Vec<_>>(),
        "quote_external_id": message.quote_external_id,
        "delivery_status": message.delivery_status,
        "failure_reason": message.failure_reason,
        "sent_at": time(message.sent_at),
        "recalled_at": message.recalled_at.map(time),
        "recalled_by": message.recalled_by,
    })
}

fn conversation_line(conversation: &ConversationRecord) -> serde_json::Value {
    json!({
        "type": "conversation",
        "conversation_id": conversation.id,
        "channel_account_id": conversation.channel_account_id,
        "external_thread_id": conversation.external_thread_id,
        "thread_kind": conversation.thread_kind,
        "title": conversation.title,
        "status": conversation.status,
        "owner_user_id": conversation.owner_user_id,
        "team_id": conversation.team_id,
        "contact_id": conversation.contact_id,
        "created_at": time(conversation.created_at),
    })
}

fn contact_line(contact: &ContactRecord) -> serde_json::Value {
    json!({
        "type": "contact",
        "contact_id": contact.id,
        "customer_code": contact.customer_code,
        "display_name": contact.display_name,
        "phones": contact.phones,
        "tags": contact.tags,
        "care_status": contact.care_status,
        "lead_source": contact.lead_source,
        "custom_fields": contact.custom_fields,
        "identities": contact.identities.iter().map(|i| json!({
            "channel_account_id": i.channel_account_id, "external_user_id": i.external_user_id, "display_name": i.display_name
        })).collect::<Vec<_>>(),
        "merged_contact_ids": contact.merged_contact_ids,
        "created_at": time(contact.created_at),
    })
}

fn note_line(note: &NoteRecord) -> serde_json::Value {
    json!({
        "type": "note",
        "note_id": note.id,
        "contact_id": note.contact_id,
        "conversation_id": note.conversation_id,
        "author_user_id": note.author_user_id,
        "text": note.text,
        "created_at": time(note.created_at),
        "versions": note.versions.iter().map(|v| json!({
            "text": v.text, "author_user_id": v.author_user_id, "replaced_at": time(v.replaced_at)
        })).collect::<Vec<_>>(),
    })
}

/// Streams the export into `sender`, ending with the manifest. Runs until done or until the
/// caller goes away.
pub async fn run(
    store: Arc<dyn Store>,
    ingestor: crate::ingest::Ingestor,
    caller: Principal,
    selector: Selector,
    range: Option<Range>,
    purpose: String,
    sender: mpsc::Sender<Result<ExportChunk, tonic::Status>>,
) {
    let export_id = Uuid::now_v7();
    let mut writer = Writer {
        sender: sender.clone(),
        buffer: Vec::new(),
        hasher: Sha256::new(),
        bytes: 0,
        manifest: ExportManifest {
            export_id: export_id.to_string(),
            ..Default::default()
        },
    };
    match write_all(&store, &caller, &selector, range, &mut writer).await {
        Ok(()) => {
            let mut manifest = std::mem::take(&mut writer.manifest);
            manifest.bytes = writer.bytes;
            manifest.sha256 = hex::encode(writer.hasher.finalize_reset());
            manifest.generated_at = Some(timestamp(Utc::now()));
            // Who exported what, for the audit trail (the auth service's log records it too).
            tracing::info!(
                export_id = %export_id,
                tenant_id = %caller.tenant_id,
                actor = %caller.user_id,
                selector = ?selector,
                purpose = %purpose,
                conversations = manifest.conversations,
                messages = manifest.messages,
                sha256 = %manifest.sha256,
                "history exported"
            );
            // No proof of an export leaves before its audit record is durable on the bus.
            let recorded = ingestor
                .audit(
                    &caller.tenant_id,
                    format!("history-exported-{export_id}"),
                    &caller.user_id,
                    "history.exported",
                    &format!("{selector:?}"),
                    json!({
                        "export_id": manifest.export_id,
                        "purpose": purpose,
                        "conversations": manifest.conversations,
                        "messages": manifest.messages,
                        "contacts": manifest.contacts,
                        "notes": manifest.notes,
                        "bytes": manifest.bytes,
                        "sha256": manifest.sha256,
                    }),
                )
                .await;
            let last = match recorded {
                Ok(()) => Ok(ExportChunk {
                    chunk: Some(Chunk::Manifest(manifest)),
                }),
                Err(error) => Err(tonic::Status::from(error)),
            };
            let _ = sender.send(last).await;
        }
        Err(Error::Cancelled) => {
            tracing::info!(export_id = %export_id, "export abandoned by the caller")
        }
        Err(error) => {
            let _ = sender.send(Err(error.into())).await;
        }
    }
}

async fn write_all(
    store: &Arc<dyn Store>,
    caller: &Principal,
    selector: &Selector,
    range: Option<Range>,
    writer: &mut Writer,
) -> Result<(), Error> {
    let mut filter = ConversationFilter {
        limit: PAGE,
        ..Default::default()
    };
    match selector {
        Selector::Contact(id) => filter.contact_id = Some(*id),
        Selector::Owner(owner) => filter.owner_user_id = Some(owner.clone()),
        Selector::ChannelAccount(account) => filter.channel_account_id = Some(account.clone()),
        Selector::Tenant => {}
    }
    visibility::restrict(caller, &mut filter);
    // Contacts in first-seen order, each once.
    let mut contact_ids: Vec<Uuid> = match selector {
        Selector::Contact(id) => vec![*id],
        _ => Vec::new(),
    };
    let mut seen: std::collections::HashSet<Uuid> = contact_ids.iter().copied().collect();
    // Each next page is read while the current one is written: the export is a chain of
    // round trips, and overlapping them keeps a handover's wait for it short.
    let mut conversations = store.list_conversations(&caller.tenant_id, &filter).await?;
    loop {
        let next_filter = match conversations.last() {
            Some(last) if conversations.len() as u32 >= PAGE => Some(ConversationFilter {
                after: Some(Position {
                    at: last.last_activity_at,
                    id: last.id,
                }),
                ..filter.clone()
            }),
            _ => None,
        };
        let next_page = async {
            match &next_filter {
                Some(next) => store
                    .list_conversations(&caller.tenant_id, next)
                    .await
                    .map(Some),
                None => Ok(None),
            }
        };
        let written = write_conversations(
            store,
            &caller.tenant_id,
            &conversations,
            range,
            writer,
            &mut contact_ids,
            &mut seen,
        );
        let (next_page, written) = tokio::join!(next_page, written);
        written?;
        match next_page? {
            Some(page) => conversations = page,
            None => break,
        }
    }
    let mut chunks = contact_ids.chunks(PAGE as usize);
    let mut current = match chunks.next() {
        Some(chunk) => Some(contacts_with_notes(store, &caller.tenant_id, chunk).await?),
        None => None,
    };
    while let Some((contacts, notes)) = current.take() {
        let next = async {
            match chunks.next() {
                Some(chunk) => contacts_with_notes(store, &caller.tenant_id, chunk)
                    .await
                    .map(Some),
                None => Ok(None),
            }
        };
        let (next, written) = tokio::join!(next, write_contacts(&contacts, &notes, writer));
        written?;
        current = next?;
    }
    writer.flush().await
}

/// One page of conversations, each followed by its messages (in `range`); notes the
/// contacts met for the first time.
async fn write_conversations(
    store: &Arc<dyn Store>,
    tenant_id: &str,
    conversations: &[ConversationRecord],
    range: Option<Range>,
    writer: &mut Writer,
    contact_ids: &mut Vec<Uuid>,
    seen: &mut std::collections::HashSet<Uuid>,
) -> Result<(), Error> {
    // A page's histories come in one pass, conversation by conversation in id order.
    let mut page: Vec<&ConversationRecord> = conversations.iter().collect();
    page.sort_by_key(|conversation| conversation.id);
    let ids: Vec<Uuid> = page.iter().map(|conversation| conversation.id).collect();
    let mut messages = store.histories(tenant_id, &ids).peekable();
    for conversation in page {
        writer.line(conversation_line(conversation)).await?;
        writer.manifest.conversations += 1;
        if let Some(contact_id) = conversation.contact_id
            && seen.insert(contact_id)
        {
            contact_ids.push(contact_id);
        }
        while let Some(next) = std::pin::Pin::new(&mut messages).peek().await {
            let belongs = match next {
                Ok(message) => message.conversation_id == conversation.id,
                Err(_) => true,
            };
            if !belongs {
                break;
            }
            let Some(message) = messages.next().await else {
                break;
            };
            let message = message?;
            if range
                .is_none_or(|range| message.sent_at >= range.start && message.sent_at < range.end)
            {
                writer.line(message_line(&message)).await?;
                writer.manifest.messages += 1;
            }
        }
    }
    Ok(())
}

/// A chunk of contacts and their notes.
async fn contacts_with_notes(
    store: &Arc<dyn Store>,
    tenant_id: &str,
    chunk: &[Uuid],
) -> Result<(Vec<ContactRecord>, Vec<NoteRecord>), Error> {
    let (contacts, notes) = tokio::join!(
        store.contacts(tenant_id, chunk),
        store.notes_of(tenant_id, chunk)
    );
    Ok((contacts?, notes?))
}

/// Contacts, each followed by its notes.
async fn write_contacts(
    contacts: &[ContactRecord],
    notes: &[NoteRecord],
    writer: &mut Writer,
) -> Result<(), Error> {
    let known: std::collections::HashSet<Uuid> =
        contacts.iter().map(|contact| contact.id).collect();
    let mut notes = notes.iter().peekable();
    for contact in contacts {
        writer.line(contact_line(contact)).await?;
        writer.manifest.contacts += 1;
        // Notes come grouped by contact in chunk order; those of a contact that no longer
        // exists are skipped.
        while notes
            .next_if(|note| !known.contains(&note.contact_id))
            .is_some()
        {}
        while let Some(note) = notes.next_if(|note| note.contact_id == contact.id) {
            writer.line(note_line(note)).await?;
            writer.manifest.notes += 1;
        }
    }
    Ok(())
}
