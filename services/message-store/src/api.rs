//! The gRPC surface of the message store: request validation, permission and visibility
//! checks, then the store. Every read is scoped to the caller's tenant; what the caller may
//! not see answers NotFound.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use giao_authz::{Permission, Principal, principal};
use giao_proto::{
    common::{self, PageResponse},
    messagestore::{
        self as pb, AppendInboundBatchRequest, AppendInboundBatchResponse, AppendInboundRequest,
        AppendInboundResponse, GetConversationRequest, GetHistoryRequest, GetHistoryResponse,
        ListConversationsRequest, ListConversationsResponse,
        message_store_service_server::MessageStoreService,
    },
};
use prost_types::Timestamp;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::{
        self, ConversationFilter, ConversationRecord, HistoryOrder, HistoryQuery, MAX_BATCH,
        StoredMessage, cursor::Position, visibility,
    },
    error::Error,
    ingest::Ingestor,
    store::Store,
};

#[derive(Clone)]
pub struct Api {
    store: Arc<dyn Store>,
    ingestor: Ingestor,
}

impl Api {
    pub fn new(store: Arc<dyn Store>, ingestor: Ingestor) -> Self {
        Self { store, ingestor }
    }

    async fn visible_conversation(
        &self,
        principal: &Principal,
        field: &str,
        raw_id: &str,
    ) -> Result<ConversationRecord, Error> {
        let id = parse_id(field, raw_id)?;
        let not_found = || Error::NotFound {
            what: "conversation",
            id: raw_id.to_string(),
        };
        let conversation = self
            .store
            .conversation(&principal.tenant_id, id)
            .await?
            .ok_or_else(not_found)?;
        if !visibility::can_see(principal, &conversation) {
            return Err(not_found());
        }
        Ok(conversation)
    }
}

#[tonic::async_trait]
impl MessageStoreService for Api {
    #[tracing::instrument(skip_all)]
    async fn append_inbound(
        &self,
        request: Request<AppendInboundRequest>,
    ) -> Result<Response<AppendInboundResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::MESSAGES_INGEST)?;
        let message = request
            .into_inner()
            .message
            .ok_or_else(|| Error::InvalidArgument("missing message: required".into()))?;
        let inbound = domain::inbound::validate(&caller.tenant_id, message, "message.", Utc::now())
            .map_err(Error::InvalidArgument)?;
        let outcome = self.ingestor.store(&inbound).await?;
        Ok(Response::new(append_response(outcome)))
    }

    #[tracing::instrument(skip_all)]
    async fn append_inbound_batch(
        &self,
        request: Request<AppendInboundBatchRequest>,
    ) -> Result<Response<AppendInboundBatchResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::MESSAGES_INGEST)?;
        let messages = request.into_inner().messages;
        if messages.is_empty() {
            return Err(Error::InvalidArgument("invalid messages: empty batch".into()).into());
        }
        if messages.len() > MAX_BATCH {
            return Err(Error::InvalidArgument(format!(
                "invalid messages: {} in one batch, at most {MAX_BATCH}",
                messages.len()
            ))
            .into());
        }
        // Validate everything first so a bad item writes nothing.
        let now = Utc::now();
        let validated = messages
            .into_iter()
            .enumerate()
            .map(|(index, message)| {
                domain::inbound::validate(
                    &caller.tenant_id,
                    message,
                    &format!("messages[{index}]."),
                    now,
                )
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::InvalidArgument)?;
        let mut results = Vec::with_capacity(validated.len());
        for inbound in &validated {
            results.push(append_response(self.ingestor.store(inbound).await?));
        }
        Ok(Response::new(AppendInboundBatchResponse { results }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_history(
        &self,
        request: Request<GetHistoryRequest>,
    ) -> Result<Response<GetHistoryResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::MESSAGES_READ)?;
        let request = request.into_inner();
        let conversation = self
            .visible_conversation(&caller, "conversation_id", &request.conversation_id)
            .await?;
        let page = request.page.unwrap_or_default();
        let query = HistoryQuery {
            order: match pb::HistoryDirection::try_from(request.direction) {
                Ok(pb::HistoryDirection::Forward) => HistoryOrder::OldestFirst,
                Ok(pb::HistoryDirection::Backward) => HistoryOrder::NewestFirst,
                Err(_) => {
                    return Err(Error::InvalidArgument(format!(
                        "invalid direction: unknown value {}",
                        request.direction
                    ))
                    .into());
                }
            },
            after: parse_cursor(&page.cursor)?,
            limit: domain::page_size(page.page_size),
        };
        let messages = self
            .store
            .history(&caller.tenant_id, conversation.id, &query)
            .await?;
        let next_cursor = next_cursor(&messages, query.limit, |m| Position {
            at: m.sent_at,
            id: m.id,
        });
        Ok(Response::new(GetHistoryResponse {
            messages: messages.into_iter().map(message_to_proto).collect(),
            page: Some(PageResponse { next_cursor }),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_conversation(
        &self,
        request: Request<GetConversationRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::MESSAGES_READ)?;
        let conversation = self
            .visible_conversation(
                &caller,
                "conversation_id",
                &request.get_ref().conversation_id,
            )
            .await?;
        Ok(Response::new(conversation_to_proto(conversation)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_conversations(
        &self,
        request: Request<ListConversationsRequest>,
    ) -> Result<Response<ListConversationsResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::MESSAGES_READ)?;
        let request = request.into_inner();
        let page = request.page.unwrap_or_default();
        let status = match pb::ConversationStatus::try_from(request.status) {
            Ok(pb::ConversationStatus::Unspecified) => None,
            Ok(status) => Some(status as i32),
            Err(_) => {
                return Err(Error::InvalidArgument(format!(
                    "invalid status: unknown value {}",
                    request.status
                ))
                .into());
            }
        };
        let mut filter = ConversationFilter {
            status,
            channel_account_id: non_empty(request.channel_account_id),
            owner_user_id: non_empty(request.owner_user_id),
            team_id: non_empty(request.team_id),
            after: parse_cursor(&page.cursor)?,
            limit: domain::page_size(page.page_size),
            ..Default::default()
        };
        visibility::restrict(&caller, &mut filter);
        let conversations = self
            .store
            .list_conversations(&caller.tenant_id, &filter)
            .await?;
        let next_cursor = next_cursor(&conversations, filter.limit, |c| Position {
            at: c.last_activity_at,
            id: c.id,
        });
        Ok(Response::new(ListConversationsResponse {
            conversations: conversations
                .into_iter()
                .map(conversation_to_proto)
                .collect(),
            page: Some(PageResponse { next_cursor }),
        }))
    }
}

fn append_response(outcome: domain::AppendOutcome) -> AppendInboundResponse {
    AppendInboundResponse {
        message: Some(message_to_proto(outcome.message)),
        created: outcome.created,
        conversation_created: outcome.conversation_created,
    }
}

fn non_empty(value: String) -> Option<String> {
    Some(value).filter(|value| !value.is_empty())
}

fn parse_id(field: &str, raw: &str) -> Result<Uuid, Error> {
    if raw.is_empty() {
        return Err(Error::InvalidArgument(format!("missing {field}: required")));
    }
    Uuid::parse_str(raw).map_err(|_| {
        Error::InvalidArgument(giao_platform::error::invalid_field(
            field,
            raw,
            "expected a UUID",
        ))
    })
}

fn parse_cursor(cursor: &str) -> Result<Option<Position>, Error> {
    if cursor.is_empty() {
        return Ok(None);
    }
    Position::decode(cursor).map(Some).ok_or_else(|| {
        Error::InvalidArgument("invalid page.cursor: not a cursor from this service".into())
    })
}

/// A full page may have more behind it; a short page is the end.
fn next_cursor<T>(items: &[T], limit: u32, position: impl Fn(&T) -> Position) -> String {
    match items.last() {
        Some(last) if items.len() as u32 >= limit => position(last).encode(),
        _ => String::new(),
    }
}

pub(crate) fn timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

pub(crate) fn message_to_proto(message: StoredMessage) -> pb::Message {
    let content = <common::MessageContent as prost::Message>::decode(message.content.as_slice())
        .unwrap_or_else(|error| {
            tracing::error!(message_id = %message.id, %error, "stored content does not decode");
            common::MessageContent {
                r#type: message.content_type,
                text: message.text.clone(),
                ..Default::default()
            }
        });
    pb::Message {
        message_id: message.id.to_string(),
        conversation_id: message.conversation_id.to_string(),
        channel_account_id: message.channel_account_id,
        external_message_id: message.external_message_id.unwrap_or_default(),
        direction: message.direction,
        sender_kind: message.sender_kind,
        sender_user_id: message.sender_user_id.unwrap_or_default(),
        sender_external_id: message.sender_external_id,
        content: Some(content),
        quote_external_id: message.quote_external_id.unwrap_or_default(),
        delivery_status: message.delivery_status,
        sent_at: Some(timestamp(message.sent_at)),
        stored_at: Some(timestamp(message.stored_at)),
        ..Default::default()
    }
}

pub(crate) fn conversation_to_proto(conversation: ConversationRecord) -> pb::Conversation {
    let waiting_for_reply = conversation.waiting_for_reply();
    pb::Conversation {
        conversation_id: conversation.id.to_string(),
        channel_account_id: conversation.channel_account_id,
        external_thread_id: conversation.external_thread_id,
        thread_kind: conversation.thread_kind,
        title: conversation.title,
        status: conversation.status,
        owner_user_id: conversation.owner_user_id.unwrap_or_default(),
        team_id: conversation.team_id.unwrap_or_default(),
        unread_count: u32::try_from(conversation.unread_count).unwrap_or(u32::MAX),
        last_inbound_at: conversation.last_inbound_at.map(timestamp),
        last_outbound_at: conversation.last_outbound_at.map(timestamp),
        last_activity_at: Some(timestamp(conversation.last_activity_at)),
        created_at: Some(timestamp(conversation.created_at)),
        waiting_for_reply,
        last_message_preview: conversation.last_message_preview,
        ..Default::default()
    }
}
