//! Plain types and rules of the message store, away from gRPC and SQL.
//!
//! - [`inbound`]: validation of a captured channel message into a [`inbound::NewInbound`].
//! - [`cursor`]: opaque pagination cursors.
//! - [`visibility`]: who may see which conversation.
//! - [`text`]: Vietnamese folding for search; [`phone`]: phone numbers to E.164.

pub mod contact;
pub mod cursor;
pub mod delivery;
pub mod inbound;
pub mod phone;
pub mod text;
pub mod visibility;

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Largest text of one message, in characters.
pub const MAX_TEXT_CHARS: usize = 8_000;
/// Largest id or name we accept from a channel, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Largest batch of AppendInboundBatch.
pub const MAX_BATCH: usize = 500;
/// Default and largest page sizes.
pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 500;

/// A stored message as the database holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    pub id: Uuid,
    pub tenant_id: String,
    pub conversation_id: Uuid,
    pub channel_account_id: String,
    pub external_message_id: Option<String>,
    pub direction: i32,
    pub sender_kind: i32,
    pub sender_user_id: Option<String>,
    pub sender_external_id: String,
    pub content_type: i32,
    pub text: String,
    /// `giao.common.v1.MessageContent`, protobuf-encoded.
    pub content: Vec<u8>,
    pub quote_external_id: Option<String>,
    pub delivery_status: i32,
    pub sent_at: DateTime<Utc>,
    pub stored_at: DateTime<Utc>,
    /// Recalled or deleted on the channel: the content above stays, flagged.
    pub recalled_at: Option<DateTime<Utc>>,
    pub recalled_by: Option<String>,
    pub failure_reason: Option<String>,
}

/// A conversation as the database holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationRecord {
    pub id: Uuid,
    pub tenant_id: String,
    pub channel_account_id: String,
    pub channel_kind: i32,
    pub external_thread_id: String,
    pub thread_kind: i32,
    pub customer_external_id: String,
    pub title: String,
    pub status: i32,
    pub owner_user_id: Option<String>,
    pub team_id: Option<String>,
    pub unread_count: i64,
    pub last_inbound_at: Option<DateTime<Utc>>,
    pub last_outbound_at: Option<DateTime<Utc>>,
    pub last_activity_at: DateTime<Utc>,
    pub last_message_preview: String,
    pub created_at: DateTime<Utc>,
    pub contact_id: Option<Uuid>,
}

impl ConversationRecord {
    /// The customer spoke last and nobody has answered yet.
    pub fn waiting_for_reply(&self) -> bool {
        match (self.last_inbound_at, self.last_outbound_at) {
            (Some(inbound), Some(outbound)) => inbound > outbound,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

/// What storing one inbound message did.
#[derive(Debug, Clone)]
pub struct AppendOutcome {
    pub message: StoredMessage,
    /// False when the same (channel account, external id) was already stored.
    pub created: bool,
    pub conversation: ConversationRecord,
    pub conversation_created: bool,
    /// The customer's contact (none for messages the account owner typed in a group).
    pub contact_id: Option<Uuid>,
    pub contact_created: bool,
}

/// A pending outbound message a staff member wrote.
#[derive(Debug, Clone)]
pub struct NewOutbound {
    pub tenant_id: String,
    pub conversation_id: Uuid,
    pub channel_account_id: String,
    pub sender_user_id: String,
    pub content: giao_proto::common::MessageContent,
    pub quote_external_id: Option<String>,
    pub idempotency_key: String,
}

/// Which message a delivery report is about.
#[derive(Debug, Clone)]
pub enum MessageRef {
    Id(Uuid),
    External {
        channel_account_id: String,
        external_message_id: String,
    },
}

/// A delivery report.
#[derive(Debug, Clone)]
pub struct DeliveryChange {
    pub status: i32,
    pub failure_reason: Option<String>,
    /// The channel's id, learnt when a send succeeds.
    pub external_message_id: Option<String>,
}

/// Filters of ListContacts, after visibility.
#[derive(Debug, Clone, Default)]
pub struct ContactFilter {
    pub tag: Option<String>,
    pub care_status: Option<String>,
    pub lead_source: Option<String>,
    pub owner_user_id: Option<String>,
    /// Agents and supervisors: contacts of conversations they can see.
    pub visible_owner: Option<String>,
    pub visible_teams: Option<Vec<String>>,
    pub after: Option<cursor::Position>,
    pub limit: u32,
}

/// A change to a contact; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ContactChange {
    pub display_name: Option<String>,
    pub phones: Option<Vec<String>>,
    pub care_status: Option<String>,
    pub lead_source: Option<String>,
    pub custom_fields: Option<std::collections::BTreeMap<String, String>>,
    pub add_tags: Vec<String>,
    pub remove_tags: Vec<String>,
}

/// One search hit.
#[derive(Debug, Clone)]
pub enum SearchHit {
    Message(StoredMessage),
    Contact(contact::ContactRecord),
    Note(NoteRecord),
}

/// A note on a contact, with every earlier text.
#[derive(Debug, Clone, PartialEq)]
pub struct NoteRecord {
    pub id: Uuid,
    pub tenant_id: String,
    pub contact_id: Uuid,
    pub conversation_id: Option<Uuid>,
    pub author_user_id: String,
    pub text: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Oldest first.
    pub versions: Vec<NoteVersionRecord>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NoteVersionRecord {
    pub text: String,
    pub author_user_id: String,
    pub replaced_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewNote {
    pub tenant_id: String,
    pub contact_id: Uuid,
    pub conversation_id: Option<Uuid>,
    pub author_user_id: String,
    pub text: String,
    pub idempotency_key: Option<String>,
}

/// The latest reaction of one person to a message.
#[derive(Debug, Clone, PartialEq)]
pub struct ReactionRecord {
    pub message_id: Uuid,
    pub reactor_external_id: String,
    pub reaction: String,
    pub at: DateTime<Utc>,
}

/// Largest note, in characters.
pub const MAX_NOTE_CHARS: usize = 10_000;

#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    /// Folded query text.
    pub folded: String,
    /// The query as a phone number, when it is one.
    pub phone: Option<String>,
    pub messages: bool,
    pub contacts: bool,
    pub notes: bool,
    pub conversation_id: Option<Uuid>,
    /// Only this contact's conversations and notes.
    pub contact_id: Option<Uuid>,
    pub visible_owner: Option<String>,
    pub visible_teams: Option<Vec<String>>,
    /// Which hits `after` pages; the other kinds come on the first page only.
    pub paging: SearchPaging,
    pub after: Option<cursor::Position>,
    pub limit: u32,
}

/// The kind of hit a search cursor pages: messages on (sent_at, id), contacts on
/// (updated_at, id), notes on (created_at, id), each newest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SearchPaging {
    #[default]
    Messages,
    Contacts,
    Notes,
}

impl SearchQuery {
    /// The cursor for hits of `kind`, or None when `kind` is not the paged one.
    pub fn after_for(&self, kind: SearchPaging) -> Option<cursor::Position> {
        self.after.filter(|_| self.paging == kind)
    }

    /// Hits of `kind` belong on this page: the paged kind always, the others on the first.
    pub fn includes(&self, kind: SearchPaging) -> bool {
        self.paging == kind || self.after.is_none()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryOrder {
    NewestFirst,
    OldestFirst,
}

#[derive(Debug, Clone)]
pub struct HistoryQuery {
    pub order: HistoryOrder,
    pub after: Option<cursor::Position>,
    pub limit: u32,
}

#[derive(Debug, Clone, Default)]
pub struct ConversationFilter {
    pub status: Option<i32>,
    pub channel_account_id: Option<String>,
    pub owner_user_id: Option<String>,
    pub team_id: Option<String>,
    pub tag: Option<String>,
    pub care_status: Option<String>,
    pub lead_source: Option<String>,
    pub contact_id: Option<Uuid>,
    pub waiting_for_reply: bool,
    pub unassigned: bool,
    pub updated_since: Option<DateTime<Utc>>,
    /// Agents: only their own; supervisors: only their teams'.
    pub visible_owner: Option<String>,
    pub visible_teams: Option<Vec<String>>,
    pub after: Option<cursor::Position>,
    pub limit: u32,
}

/// Clamps a requested page size to the service's bounds.
pub fn page_size(requested: u32) -> u32 {
    match requested {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}
