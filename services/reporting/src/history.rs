//! `giao-reporting rebuild --from message-store`: the aggregates rebuilt from message-store's
//! lifetime record instead of the bus, which keeps only `bus.max_age_days` of events.
//!
//! Each tenant's contacts, conversations and histories are read through message-store's
//! gRPC API with that tenant's service key and turned into the events message-store would
//! have published (`ContactUpdated` created, `ConversationOpened`, `MessageStored`), under the
//! same event ids, then folded exactly like live events. What only the bus knows (ownership
//! history, SLA breaches, account status, care-status transitions, when a conversation
//! closed) is either left out or approximated as docs/reporting.md ("Rebuilding") describes.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context;
use giao_platform::grpc::TraceInterceptor;
use giao_proto::{
    common::PageRequest,
    events::{self, Envelope, envelope::Payload},
    messagestore::{
        Contact, Conversation, ConversationStatus, GetHistoryRequest, HistoryDirection,
        ListContactsRequest, ListConversationsRequest, Message,
        message_store_service_client::MessageStoreServiceClient,
    },
};
use serde::{Deserialize, Serialize};
use tonic::{codegen::InterceptedService, transport::Channel};

use crate::{
    domain::time::from_timestamp,
    store::{ApplySettings, Store},
};

/// Largest page message-store serves.
const PAGE: u32 = 500;
/// Events folded per batch (a few conversations' histories at a time).
const BATCH: usize = 2_000;

/// How `rebuild --from message-store` reaches message-store.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MessageStoreLink {
    /// `http://host:port`.
    pub endpoint: String,
    /// Service keys per tenant (`tenant → gk_<id>_<secret>`, scopes `messages.read` and
    /// `contacts.read`); the rebuild covers exactly these tenants. Secrets: never logged,
    /// never shown by Debug.
    pub tenant_api_keys: BTreeMap<String, String>,
    pub timeout_ms: u64,
}

impl std::fmt::Debug for MessageStoreLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageStoreLink")
            .field("endpoint", &self.endpoint)
            .field(
                "tenant_api_keys",
                &self.tenant_api_keys.keys().collect::<Vec<_>>(),
            )
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

type Client = MessageStoreServiceClient<InterceptedService<Channel, TraceInterceptor>>;

fn envelope(
    tenant: &str,
    event_id: String,
    at: &prost_types::Timestamp,
    payload: Payload,
) -> Envelope {
    Envelope {
        event_id,
        tenant_id: tenant.to_string(),
        occurred_at: Some(*at),
        producer: "message-store".into(),
        payload: Some(payload),
        ..Default::default()
    }
}

/// A contact as the event that created it, carrying its current lead source and care
/// status (no transition is counted: when the status changed is not kept).
pub fn contact_event(tenant: &str, contact: &Contact) -> Option<Envelope> {
    let at = contact.created_at.as_ref()?;
    Some(envelope(
        tenant,
        format!("contact-created-{}", contact.contact_id),
        at,
        Payload::ContactUpdated(events::ContactUpdated {
            contact_id: contact.contact_id.clone(),
            created: true,
            care_status: contact.care_status.clone(),
            lead_source: contact.lead_source.clone(),
            ..Default::default()
        }),
    ))
}

/// A conversation and its messages (oldest first) as the events message-store published
/// for them, in the order they happened. Every message carries the conversation's current
/// owner and team: the ownership history lives only on the bus.
pub fn conversation_events(
    tenant: &str,
    conversation: &Conversation,
    messages: &[Message],
) -> Vec<Envelope> {
    let mut events = Vec::with_capacity(messages.len() + 2);
    if let Some(at) = conversation.created_at.as_ref() {
        events.push(envelope(
            tenant,
            format!("conversation-opened-{}", conversation.conversation_id),
            at,
            Payload::ConversationOpened(events::ConversationOpened {
                conversation_id: conversation.conversation_id.clone(),
                channel_account_id: conversation.channel_account_id.clone(),
                contact_id: conversation.contact_id.clone(),
                thread_kind: conversation.thread_kind,
                opened_at: Some(*at),
                ..Default::default()
            }),
        ));
    }
    let mut stored: Vec<(i64, Envelope)> = messages
        .iter()
        .filter_map(|message| {
            let at = message.sent_at.as_ref()?;
            let content = message.content.clone().unwrap_or_default();
            Some((
                from_timestamp(at)?,
                envelope(
                    tenant,
                    format!("message-stored-{}", message.message_id),
                    at,
                    Payload::MessageStored(events::MessageStored {
                        message_id: message.message_id.clone(),
                        conversation_id: conversation.conversation_id.clone(),
                        contact_id: conversation.contact_id.clone(),
                        channel_account_id: conversation.channel_account_id.clone(),
                        direction: message.direction,
                        sender_kind: message.sender_kind,
                        sender_user_id: message.sender_user_id.clone(),
                        sent_at: Some(*at),
                        owner_user_id: conversation.owner_user_id.clone(),
                        team_id: conversation.team_id.clone(),
                        content_type: content.r#type,
                        text: content.text,
                        ..Default::default()
                    }),
                ),
            ))
        })
        .collect();
    // Stable: messages sent in the same microsecond keep message-store's order.
    stored.sort_by_key(|(at, _)| *at);
    let last = stored.last().map(|(_, envelope)| envelope.occurred_at);
    events.extend(stored.into_iter().map(|(_, envelope)| envelope));
    // When it closed is not exposed: its last activity is the latest time known to be
    // before the close, so a customer left waiting is not counted as waiting forever.
    if ConversationStatus::try_from(conversation.status) == Ok(ConversationStatus::Closed)
        && let Some(at) = conversation
            .last_activity_at
            .or(last.flatten())
            .or(conversation.created_at)
    {
        events.push(envelope(
            tenant,
            format!(
                "conversation-closed-{}-rebuilt",
                conversation.conversation_id
            ),
            &at,
            Payload::ConversationClosed(events::ConversationClosed {
                conversation_id: conversation.conversation_id.clone(),
                ..Default::default()
            }),
        ));
    }
    events
}

async fn client(link: &MessageStoreLink, key: &str) -> anyhow::Result<Client> {
    let timeout = Duration::from_millis(if link.timeout_ms == 0 {
        30_000
    } else {
        link.timeout_ms
    });
    let channel = giao_platform::grpc::channel(&link.endpoint, timeout)
        .context("invalid message_store.endpoint")?;
    let interceptor =
        TraceInterceptor::with_bearer(key).context("invalid message_store.tenant_api_keys")?;
    Ok(MessageStoreServiceClient::with_interceptor(
        channel,
        interceptor,
    ))
}

fn page(cursor: &str) -> Option<PageRequest> {
    Some(PageRequest {
        page_size: PAGE,
        cursor: cursor.to_string(),
    })
}

/// Rebuilds every tenant of `link` into `store`; returns how many events were folded.
pub async fn rebuild(
    link: &MessageStoreLink,
    store: &Store,
    settings: &ApplySettings,
) -> anyhow::Result<u64> {
    if link.endpoint.is_empty() || link.tenant_api_keys.is_empty() {
        anyhow::bail!(
            "rebuilding from message-store needs message_store.endpoint and \
             message_store.tenant_api_keys (one service key per tenant to rebuild)"
        );
    }
    let mut applied = 0;
    for (tenant, key) in &link.tenant_api_keys {
        let folded = rebuild_tenant(tenant, &mut client(link, key).await?, store, settings)
            .await
            .with_context(|| format!("rebuilding tenant {tenant} from message-store"))?;
        tracing::info!(tenant, folded, "tenant rebuilt from message-store");
        applied += folded;
    }
    Ok(applied)
}

async fn rebuild_tenant(
    tenant: &str,
    client: &mut Client,
    store: &Store,
    settings: &ApplySettings,
) -> anyhow::Result<u64> {
    let mut applied = 0;
    // Contacts first: a conversation takes its contact's lead source when folded.
    let mut cursor = String::new();
    loop {
        let reply = client
            .list_contacts(ListContactsRequest {
                page: page(&cursor),
                ..Default::default()
            })
            .await?
            .into_inner();
        let events: Vec<Envelope> = reply
            .contacts
            .iter()
            .filter_map(|contact| contact_event(tenant, contact))
            .collect();
        applied += store.apply_batch(&events, settings).await?;
        cursor = reply.page.unwrap_or_default().next_cursor;
        if cursor.is_empty() {
            break;
        }
    }
    let mut pending: Vec<Envelope> = Vec::new();
    let mut cursor = String::new();
    loop {
        let reply = client
            .list_conversations(ListConversationsRequest {
                page: page(&cursor),
                ..Default::default()
            })
            .await?
            .into_inner();
        for conversation in &reply.conversations {
            let messages = history(client, &conversation.conversation_id).await?;
            pending.extend(conversation_events(tenant, conversation, &messages));
            if pending.len() >= BATCH {
                applied += store.apply_batch(&pending, settings).await?;
                pending.clear();
            }
        }
        cursor = reply.page.unwrap_or_default().next_cursor;
        if cursor.is_empty() {
            break;
        }
    }
    applied += store.apply_batch(&pending, settings).await?;
    Ok(applied)
}

/// A conversation's whole history, oldest first.
async fn history(client: &mut Client, conversation_id: &str) -> anyhow::Result<Vec<Message>> {
    let mut messages = Vec::new();
    let mut cursor = String::new();
    loop {
        let reply = client
            .get_history(GetHistoryRequest {
                conversation_id: conversation_id.to_string(),
                page: page(&cursor),
                direction: HistoryDirection::Forward as i32,
            })
            .await?
            .into_inner();
        messages.extend(reply.messages);
        cursor = reply.page.unwrap_or_default().next_cursor;
        if cursor.is_empty() {
            return Ok(messages);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use giao_proto::common::{Direction, MessageContent, SenderKind};

    fn at(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    #[test]
    fn histories_become_the_events_message_store_published() {
        let conversation = Conversation {
            conversation_id: "c1".into(),
            channel_account_id: "oa".into(),
            contact_id: "k1".into(),
            owner_user_id: "ann".into(),
            team_id: "north".into(),
            status: ConversationStatus::Closed as i32,
            created_at: at(100),
            last_activity_at: at(300),
            ..Default::default()
        };
        let message = |id: &str, seconds: i64, direction: Direction, sender: SenderKind| Message {
            message_id: id.into(),
            conversation_id: "c1".into(),
            direction: direction as i32,
            sender_kind: sender as i32,
            sender_user_id: if sender == SenderKind::Staff {
                "ann".into()
            } else {
                String::new()
            },
            content: Some(MessageContent {
                text: format!("text of {id}"),
                ..Default::default()
            }),
            sent_at: at(seconds),
            ..Default::default()
        };
        // Out of order on purpose: events follow the time they were sent.
        let events = conversation_events(
            "acme",
            &conversation,
            &[
                message("m2", 200, Direction::Outbound, SenderKind::Staff),
                message("m1", 100, Direction::Inbound, SenderKind::Customer),
            ],
        );
        let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(
            ids,
            vec![
                "conversation-opened-c1",
                "message-stored-m1",
                "message-stored-m2",
                "conversation-closed-c1-rebuilt"
            ]
        );
        let Some(Payload::MessageStored(reply)) = &events[2].payload else {
            panic!("a message");
        };
        assert_eq!(
            (
                reply.owner_user_id.as_str(),
                reply.team_id.as_str(),
                reply.sender_user_id.as_str(),
                reply.text.as_str(),
                reply.contact_id.as_str()
            ),
            ("ann", "north", "ann", "text of m2", "k1")
        );
        assert_eq!(events[3].occurred_at, at(300));
        let secret = MessageStoreLink {
            tenant_api_keys: [("acme".to_string(), "gk_1_secret".to_string())].into(),
            ..Default::default()
        };
        assert!(!format!("{secret:?}").contains("secret"));
    }
}
