//! The gRPC surface of the message store: request validation, permission and visibility
//! checks, then the store. Every read is scoped to the caller's tenant; what the caller may
//! not see answers NotFound.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use giao_authz::{Permission, Principal, principal};
use giao_proto::{
    common::{self, PageResponse},
    messagestore::{
        self as pb, AddNoteRequest, AddTagsRequest, AppendInboundBatchRequest,
        AppendInboundBatchResponse, AppendInboundRequest, AppendInboundResponse, EditNoteRequest,
        ExportChunk, ExportHistoryRequest, GetCarePipelineRequest, GetContactRequest,
        GetConversationRequest, GetHistoryRequest, GetHistoryResponse, ListContactsRequest,
        ListContactsResponse, ListConversationsRequest, ListConversationsResponse,
        ListNotesRequest, ListNotesResponse, ListTagsRequest, ListTagsResponse,
        MergeContactsRequest, RecordOutboundRequest, RecordOutboundResponse, RemoveTagsRequest,
        SearchRequest, SearchResponse, SetCarePipelineRequest, SetConversationOwnerRequest,
        SetConversationOwnerResponse, SetConversationStatusRequest, TagCount, UpdateContactRequest,
        UpdateDeliveryRequest, UpdateDeliveryResponse,
        export_history_request::Selector as ExportSelector,
        message_store_service_server::MessageStoreService,
    },
};
use prost_types::Timestamp;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::{
        self, ContactChange, ContactFilter, ConversationFilter, ConversationRecord, DeliveryChange,
        HistoryOrder, HistoryQuery, MAX_BATCH, MAX_NOTE_CHARS, MAX_TEXT_CHARS, MessageRef, NewNote,
        NewOutbound, NoteRecord, ReactionRecord, SearchHit, SearchPaging, SearchQuery,
        StoredMessage,
        contact::{self, ContactRecord},
        cursor::Position,
        visibility,
    },
    error::Error,
    ingest::Ingestor,
    store::{self, OwnerSet, Store},
};

#[derive(Clone)]
pub struct Api {
    store: Arc<dyn Store>,
    ingestor: Ingestor,
    attachments: crate::attachments::Attachments,
}

impl Api {
    pub fn new(
        store: Arc<dyn Store>,
        ingestor: Ingestor,
        attachments: crate::attachments::Attachments,
    ) -> Self {
        Self {
            store,
            ingestor,
            attachments,
        }
    }

    /// Someone other than the owner (a supervisor, an admin, an auditor) opened a
    /// conversation: recorded in the audit chain, at most once an hour per reader and
    /// conversation (the bus drops the repeats by event id). Best effort: a bus outage is
    /// logged and does not block reading.
    async fn audit_opened(&self, caller: &Principal, conversation: &ConversationRecord) {
        let hour = chrono::Utc::now().format("%Y%m%d%H");
        let outcome = self
            .ingestor
            .audit(
                &caller.tenant_id,
                format!(
                    "conversation-opened-by-{}-{}-{hour}",
                    caller.user_id, conversation.id
                ),
                &caller.user_id,
                "conversation.opened_by_non_owner",
                &conversation.id.to_string(),
                serde_json::json!({
                    "role": caller.role.as_str(),
                    "owner_user_id": conversation.owner_user_id,
                }),
            )
            .await;
        if let Err(error) = outcome {
            tracing::warn!(%error, "cannot record a non-owner read in the audit log");
        }
    }

    async fn visible_conversation(
        &self,
        principal: &Principal,
        field: &str,
        raw_id: &str,
    ) -> Result<ConversationRecord, Error> {
        let id = parse_id(field, raw_id)?;
        let not_found = || Error::NotFound {
            field: field.to_string(),
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

    async fn visible_contact(
        &self,
        principal: &Principal,
        field: &str,
        raw_id: &str,
    ) -> Result<ContactRecord, Error> {
        let id = parse_id(field, raw_id)?;
        let not_found = || Error::NotFound {
            field: field.to_string(),
            id: raw_id.to_string(),
        };
        let contact = self
            .store
            .contact(&principal.tenant_id, id)
            .await?
            .ok_or_else(not_found)?;
        let (owner, teams) = visibility::scope(principal);
        if !self
            .store
            .contact_visible(&principal.tenant_id, id, owner.as_deref(), teams.as_deref())
            .await?
        {
            return Err(not_found());
        }
        Ok(contact)
    }

    async fn care_stages(&self, tenant_id: &str) -> Result<pb::CarePipeline, Error> {
        Ok(match self.store.pipeline(tenant_id).await? {
            Some(json) => store::pipeline_from_json(&json),
            None => contact::default_pipeline(),
        })
    }

    /// Applies a change after checking the caller may see and write the contact.
    async fn change_contact(
        &self,
        caller: &Principal,
        raw_id: &str,
        change: ContactChange,
    ) -> Result<ContactRecord, Error> {
        let contact = self.visible_contact(caller, "contact_id", raw_id).await?;
        if let Some(status) = &change.care_status {
            let pipeline = self.care_stages(&caller.tenant_id).await?;
            if !pipeline.stages.iter().any(|stage| &stage.key == status) {
                return Err(Error::InvalidArgument(format!(
                    "invalid care_status \"{status}\": not a stage of this tenant's pipeline"
                )));
            }
        }
        let (before, after) = self
            .store
            .update_contact(&caller.tenant_id, contact.id, &change, Utc::now())
            .await?
            .ok_or_else(|| Error::NotFound {
                field: "contact_id".into(),
                id: raw_id.to_string(),
            })?;
        self.ingestor.contact_changed(&before, &after).await?;
        Ok(after)
    }
}

type DataStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<pb::AttachmentData, Status>> + Send + 'static>,
>;

/// The stream type of server-streaming RPCs.
type ChunkStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<ExportChunk, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl MessageStoreService for Api {
    #[tracing::instrument(skip_all)]
    async fn upload_attachment(
        &self,
        request: Request<tonic::Streaming<pb::UploadAttachmentRequest>>,
    ) -> Result<Response<common::Attachment>, Status> {
        let caller = principal(&request)?;
        if !caller.has(Permission::MESSAGES_INGEST) {
            caller.require(Permission::MESSAGES_WRITE)?;
        }
        let mut stream = request.into_inner();
        let info = match stream.message().await? {
            Some(pb::UploadAttachmentRequest {
                part: Some(pb::upload_attachment_request::Part::Info(info)),
            }) => info,
            _ => {
                return Err(Error::InvalidArgument(
                    "missing info: the first message must describe the attachment".into(),
                )
                .into());
            }
        };
        for (field, value, limit) in [
            ("info.name", &info.name, 255),
            ("info.mime_type", &info.mime_type, 127),
            ("info.source_url", &info.source_url, 2048),
        ] {
            if value.len() > limit {
                return Err(Error::InvalidArgument(format!(
                    "invalid {field}: at most {limit} bytes"
                ))
                .into());
            }
        }
        let max = self.attachments.max_bytes();
        let mut chunks = Vec::new();
        let mut total = 0u64;
        while let Some(message) = stream.message().await? {
            match message.part {
                Some(pb::upload_attachment_request::Part::Data(data)) => {
                    total += data.len() as u64;
                    if total > max {
                        return Err(Error::InvalidArgument(format!(
                            "invalid data: attachment larger than {max} bytes"
                        ))
                        .into());
                    }
                    chunks.push(bytes::Bytes::from(data));
                }
                _ => return Err(Error::InvalidArgument("invalid info: sent twice".into()).into()),
            }
        }
        if total == 0 {
            return Err(Error::InvalidArgument(
                "missing data: an attachment has at least one byte".into(),
            )
            .into());
        }
        let stored = self
            .attachments
            .put(
                &caller.tenant_id,
                &info.name,
                &info.mime_type,
                &info.source_url,
                chunks,
            )
            .await?;
        Ok(Response::new(stored))
    }

    #[tracing::instrument(skip_all)]
    async fn get_attachment(
        &self,
        request: Request<pb::GetAttachmentRequest>,
    ) -> Result<Response<DataStream>, Status> {
        use futures::StreamExt;
        let caller = principal(&request)?;
        caller.require(Permission::MESSAGES_READ)?;
        let key = request.into_inner().storage_key;
        let not_found = || Error::NotFound {
            field: "storage_key".into(),
            id: key.clone(),
        };
        if key.is_empty() {
            return Err(Error::InvalidArgument("missing storage_key: required".into()).into());
        }
        if !crate::attachments::belongs_to(&caller.tenant_id, &key) {
            return Err(not_found().into());
        }
        // Readable by whoever can see a message that carries it.
        let mut visible = false;
        for message_id in self
            .store
            .attachment_messages(&caller.tenant_id, &key)
            .await?
        {
            let Some(message) = self
                .store
                .find_message(&caller.tenant_id, &MessageRef::Id(message_id))
                .await?
            else {
                continue;
            };
            if let Some(conversation) = self
                .store
                .conversation(&caller.tenant_id, message.conversation_id)
                .await?
                && visibility::can_see(&caller, &conversation)
            {
                visible = true;
                break;
            }
        }
        if !visible {
            return Err(not_found().into());
        }
        let stream = self.attachments.get(&key).await?;
        Ok(Response::new(Box::pin(stream.map(|chunk| {
            chunk
                .map(|data| pb::AttachmentData {
                    data: data.to_vec(),
                })
                .map_err(Status::from)
        }))))
    }

    #[tracing::instrument(skip_all)]
    async fn export_history(
        &self,
        request: Request<ExportHistoryRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::EXPORT)?;
        let request = request.into_inner();
        let selector = match request.selector {
            Some(ExportSelector::ContactId(raw)) => crate::export::Selector::Contact(
                self.visible_contact(&caller, "contact_id", &raw).await?.id,
            ),
            Some(ExportSelector::OwnerUserId(owner)) if !owner.is_empty() => {
                crate::export::Selector::Owner(owner)
            }
            Some(ExportSelector::ChannelAccountId(account)) if !account.is_empty() => {
                crate::export::Selector::ChannelAccount(account)
            }
            Some(ExportSelector::Tenant(true)) => {
                if caller.role != giao_authz::Role::Admin {
                    return Err(Status::permission_denied(
                        "exporting the whole tenant is for admins",
                    ));
                }
                crate::export::Selector::Tenant
            }
            _ => {
                return Err(Error::InvalidArgument(
                    "missing selector: one of contact_id, owner_user_id, channel_account_id or tenant".into(),
                )
                .into());
            }
        };
        let range = match request.range {
            None => None,
            Some(range) => {
                let start = range
                    .start
                    .and_then(|at| DateTime::from_timestamp(at.seconds, at.nanos.max(0) as u32))
                    .ok_or_else(|| {
                        Error::InvalidArgument("missing range.start: required with a range".into())
                    })?;
                let end = range
                    .end
                    .and_then(|at| DateTime::from_timestamp(at.seconds, at.nanos.max(0) as u32))
                    .ok_or_else(|| {
                        Error::InvalidArgument("missing range.end: required with a range".into())
                    })?;
                if end <= start {
                    return Err(Error::InvalidArgument(
                        "invalid range: end must be after start".into(),
                    )
                    .into());
                }
                Some(crate::export::Range { start, end })
            }
        };
        let purpose: String = request.purpose.chars().take(200).collect();
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        tokio::spawn(crate::export::run(
            self.store.clone(),
            self.ingestor.clone(),
            caller,
            selector,
            range,
            purpose,
            sender,
        ));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

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
        let results = self
            .ingestor
            .store_batch(&validated)
            .await?
            .into_iter()
            .map(append_response)
            .collect();
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
        let conversation_id = parse_id("conversation_id", &request.conversation_id)?;
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
        // The page is read while the conversation is checked, one wait instead of two: the
        // read is bound to the caller's tenant, and its rows are dropped unread when the
        // conversation is not visible (NotFound, exactly as before).
        let (conversation, messages) = tokio::join!(
            self.visible_conversation(&caller, "conversation_id", &request.conversation_id),
            self.store
                .history(&caller.tenant_id, conversation_id, &query)
        );
        let conversation = conversation?;
        let messages = messages?;
        // A non-owner's first page is audited while reactions, edits and quotes are read:
        // both finish before the answer, so the record is as durable as before, and the wait
        // for its acknowledgement overlaps the reads instead of adding to them.
        let audit = async {
            if page.cursor.is_empty()
                && conversation.owner_user_id.as_deref() != Some(&caller.user_id)
            {
                self.audit_opened(&caller, &conversation).await;
            }
        };
        let ids: Vec<Uuid> = messages.iter().map(|m| m.id).collect();
        // Every quote of the page in one lookup.
        let mut quotes: Vec<(String, String)> = messages
            .iter()
            .filter_map(|message| {
                let external_id = message.quote_external_id.as_ref()?;
                Some((message.channel_account_id.clone(), external_id.clone()))
            })
            .collect();
        quotes.sort();
        quotes.dedup();
        let annotations = async {
            tokio::try_join!(
                self.store.reactions(&caller.tenant_id, &ids),
                self.store.message_versions(&caller.tenant_id, &ids),
                self.store.quoted_messages(&caller.tenant_id, &quotes)
            )
        };
        let ((), annotations) = tokio::join!(audit, annotations);
        let (reactions, versions, quoted) = annotations?;
        let next_cursor = next_cursor(&messages, query.limit, |m| Position {
            at: m.sent_at,
            id: m.id,
        });
        Ok(Response::new(GetHistoryResponse {
            messages: messages
                .into_iter()
                .map(|message| {
                    let id = message.id;
                    let mut proto = with_reactions(message, &reactions);
                    proto.versions = versions
                        .iter()
                        .filter(|(message_id, ..)| *message_id == id)
                        .map(|(_, content, replaced_at)| pb::MessageVersion {
                            content: <common::MessageContent as prost::Message>::decode(
                                content.as_slice(),
                            )
                            .ok(),
                            replaced_at: Some(timestamp(*replaced_at)),
                        })
                        .collect();
                    if let Some((.., quote_id)) = quoted.iter().find(|(account, external_id, _)| {
                        !proto.quote_external_id.is_empty()
                            && *account == proto.channel_account_id
                            && *external_id == proto.quote_external_id
                    }) {
                        proto.quote_message_id = quote_id.to_string();
                    }
                    proto
                })
                .collect(),
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
            tag: non_empty(request.tag),
            care_status: non_empty(request.care_status),
            lead_source: non_empty(request.lead_source),
            waiting_for_reply: request.waiting_for_reply,
            unassigned: request.unassigned,
            updated_since: request
                .updated_since
                .map(|at| {
                    DateTime::from_timestamp(at.seconds, at.nanos.max(0) as u32).ok_or_else(|| {
                        Error::InvalidArgument("invalid updated_since: out of range".into())
                    })
                })
                .transpose()?,
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
    #[tracing::instrument(skip_all)]
    async fn record_outbound(
        &self,
        request: Request<RecordOutboundRequest>,
    ) -> Result<Response<RecordOutboundResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::MESSAGES_WRITE)?;
        let request = request.into_inner();
        let key = request.idempotency_key.trim().to_string();
        if key.is_empty() {
            return Err(Error::InvalidArgument("missing idempotency_key: required".into()).into());
        }
        if key.len() > 128 {
            return Err(Error::InvalidArgument(
                "invalid idempotency_key: at most 128 bytes".into(),
            )
            .into());
        }
        let content = request
            .content
            .ok_or_else(|| Error::InvalidArgument("missing content: required".into()))?;
        let chars = content.text.chars().count();
        if chars > MAX_TEXT_CHARS {
            return Err(Error::InvalidArgument(format!(
                "invalid content.text: {chars} characters, at most {MAX_TEXT_CHARS}"
            ))
            .into());
        }
        let mut content = content;
        if content.r#type == common::ContentType::Unspecified as i32 {
            content.r#type = common::ContentType::Text as i32;
        }
        if content.r#type == common::ContentType::Text as i32 && content.text.trim().is_empty() {
            return Err(Error::InvalidArgument(
                "missing content.text: required for a text message".into(),
            )
            .into());
        }
        // Agents reply only in their own conversations; anything else is NotFound.
        let conversation = self
            .visible_conversation(&caller, "conversation_id", &request.conversation_id)
            .await?;
        let quote_external_id = match request.quote_message_id.as_str() {
            "" => None,
            raw => {
                let quoted = self
                    .store
                    .find_message(
                        &caller.tenant_id,
                        &MessageRef::Id(parse_id("quote_message_id", raw)?),
                    )
                    .await?
                    .filter(|message| message.conversation_id == conversation.id)
                    .ok_or_else(|| Error::NotFound {
                        field: "quote_message_id".into(),
                        id: raw.to_string(),
                    })?;
                quoted.external_message_id
            }
        };
        let outbound = NewOutbound {
            tenant_id: caller.tenant_id.clone(),
            conversation_id: conversation.id,
            channel_account_id: conversation.channel_account_id.clone(),
            sender_user_id: caller.user_id.clone(),
            content,
            quote_external_id,
            idempotency_key: key,
        };
        let (message, created) = self
            .ingestor
            .record_outbound(&outbound, &conversation)
            .await?;
        Ok(Response::new(RecordOutboundResponse {
            message: Some(message_to_proto(message)),
            created,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_delivery(
        &self,
        request: Request<UpdateDeliveryRequest>,
    ) -> Result<Response<UpdateDeliveryResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::MESSAGES_INGEST)?;
        let request = request.into_inner();
        let reference = if !request.message_id.is_empty() {
            MessageRef::Id(parse_id("message_id", &request.message_id)?)
        } else if !request.channel_account_id.is_empty() && !request.external_message_id.is_empty()
        {
            MessageRef::External {
                channel_account_id: request.channel_account_id.clone(),
                external_message_id: request.external_message_id.clone(),
            }
        } else {
            return Err(Error::InvalidArgument(
                "missing message_id: required (or channel_account_id with external_message_id)"
                    .into(),
            )
            .into());
        };
        match common::DeliveryStatus::try_from(request.status) {
            Ok(common::DeliveryStatus::Unspecified) | Err(_) => {
                return Err(Error::InvalidArgument(format!(
                    "invalid status: {} is not a delivery status",
                    request.status
                ))
                .into());
            }
            Ok(_) => {}
        }
        let change = DeliveryChange {
            status: request.status,
            failure_reason: Some(request.failure_reason).filter(|reason| !reason.is_empty()),
            external_message_id: Some(request.external_message_id.clone())
                .filter(|id| !id.is_empty() && !request.message_id.is_empty()),
        };
        let message = self
            .ingestor
            .apply_delivery(&caller.tenant_id, &reference, &change)
            .await?
            .ok_or_else(|| {
                if request.message_id.is_empty() {
                    Error::NotFound {
                        field: "external_message_id".into(),
                        id: request.external_message_id.clone(),
                    }
                } else {
                    Error::NotFound {
                        field: "message_id".into(),
                        id: request.message_id.clone(),
                    }
                }
            })?;
        Ok(Response::new(UpdateDeliveryResponse {
            message: Some(message_to_proto(message)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn set_conversation_owner(
        &self,
        request: Request<SetConversationOwnerRequest>,
    ) -> Result<Response<SetConversationOwnerResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::ASSIGNMENT_MANAGE)?;
        let request = request.into_inner();
        if request.conversation_ids.is_empty() {
            return Err(
                Error::InvalidArgument("missing conversation_ids: at least one".into()).into(),
            );
        }
        if request.conversation_ids.len() > MAX_BATCH {
            return Err(Error::InvalidArgument(format!(
                "invalid conversation_ids: at most {MAX_BATCH} at once"
            ))
            .into());
        }
        let ids = request
            .conversation_ids
            .iter()
            .enumerate()
            .map(|(index, raw)| parse_id(&format!("conversation_ids[{index}]"), raw))
            .collect::<Result<Vec<_>, _>>()?;
        let owner = Some(request.owner_user_id.as_str()).filter(|id| !id.is_empty());
        let team = Some(request.team_id.as_str()).filter(|id| !id.is_empty());
        // The customers follow their conversations when asked (a handover). Unknown (or
        // other tenants') ids change nothing and are reported, never half-applied.
        // An id named twice is one conversation (and counted once).
        let mut distinct = ids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let (updated, contacts_updated) = match self
            .store
            .set_owner_checked(
                &caller.tenant_id,
                &distinct,
                owner,
                team,
                request.with_contacts,
            )
            .await?
        {
            OwnerSet::Updated {
                conversations,
                contacts,
            } => (conversations, contacts),
            OwnerSet::Unknown(unknown) => {
                let index = ids
                    .iter()
                    .position(|id| unknown.contains(id))
                    .unwrap_or_default();
                return Err(Error::NotFound {
                    field: format!("conversation_ids[{index}]"),
                    id: request.conversation_ids[index].clone(),
                }
                .into());
            }
        };
        Ok(Response::new(SetConversationOwnerResponse {
            updated: u32::try_from(updated).unwrap_or(u32::MAX),
            contacts_updated: u32::try_from(contacts_updated).unwrap_or(u32::MAX),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn set_conversation_status(
        &self,
        request: Request<SetConversationStatusRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::MESSAGES_WRITE)?;
        let request = request.into_inner();
        let status = pb::ConversationStatus::try_from(request.status)
            .ok()
            .filter(|status| *status != pb::ConversationStatus::Unspecified)
            .ok_or_else(|| {
                Error::InvalidArgument("invalid status: open, pending or closed".into())
            })?;
        if request.outcome.chars().count() > 200 {
            return Err(
                Error::InvalidArgument("invalid outcome: at most 200 characters".into()).into(),
            );
        }
        // Whoever may write in a conversation may close it: its owner, their supervisor, an
        // admin; other conversations answer NotFound.
        let conversation = self
            .visible_conversation(&caller, "conversation_id", &request.conversation_id)
            .await?;
        self.ingestor
            .set_status(
                &conversation,
                status as i32,
                &caller.user_id,
                &request.outcome,
            )
            .await?;
        let updated = self
            .store
            .conversation(&caller.tenant_id, conversation.id)
            .await?
            .ok_or_else(|| Error::NotFound {
                field: "conversation_id".into(),
                id: request.conversation_id.clone(),
            })?;
        Ok(Response::new(conversation_to_proto(updated)))
    }

    #[tracing::instrument(skip_all)]
    async fn get_contact(
        &self,
        request: Request<GetContactRequest>,
    ) -> Result<Response<pb::Contact>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::CONTACTS_READ)?;
        let contact = self
            .visible_contact(&caller, "contact_id", &request.get_ref().contact_id)
            .await?;
        Ok(Response::new(contact_to_proto(contact)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_contacts(
        &self,
        request: Request<ListContactsRequest>,
    ) -> Result<Response<ListContactsResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::CONTACTS_READ)?;
        let request = request.into_inner();
        let page = request.page.unwrap_or_default();
        let (visible_owner, visible_teams) = visibility::scope(&caller);
        let filter = ContactFilter {
            tag: non_empty(request.tag),
            care_status: non_empty(request.care_status),
            lead_source: non_empty(request.lead_source),
            owner_user_id: non_empty(request.owner_user_id),
            visible_owner,
            visible_teams,
            after: parse_cursor(&page.cursor)?,
            limit: domain::page_size(page.page_size),
        };
        let contacts = self.store.list_contacts(&caller.tenant_id, &filter).await?;
        let next_cursor = next_cursor(&contacts, filter.limit, |c| Position {
            at: c.updated_at,
            id: c.id,
        });
        Ok(Response::new(ListContactsResponse {
            contacts: contacts.into_iter().map(contact_to_proto).collect(),
            page: Some(PageResponse { next_cursor }),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_contact(
        &self,
        request: Request<UpdateContactRequest>,
    ) -> Result<Response<pb::Contact>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::CONTACTS_WRITE)?;
        let request = request.into_inner();
        if request.update_mask.is_empty() {
            return Err(Error::InvalidArgument(
                "missing update_mask: name the fields to change".into(),
            )
            .into());
        }
        let mut change = ContactChange::default();
        for field in &request.update_mask {
            match field.as_str() {
                "display_name" => {
                    let name = request.display_name.trim().to_string();
                    let chars = name.chars().count();
                    if chars > contact::MAX_NAME_CHARS {
                        return Err(Error::InvalidArgument(format!(
                            "invalid display_name: {chars} characters, at most {}",
                            contact::MAX_NAME_CHARS
                        ))
                        .into());
                    }
                    change.display_name = Some(name);
                }
                "phones" => {
                    change.phones = Some(
                        contact::phones("phones", &request.phones)
                            .map_err(Error::InvalidArgument)?,
                    );
                }
                "care_status" => {
                    change.care_status = Some(
                        contact::label("care_status", &request.care_status)
                            .map_err(Error::InvalidArgument)?,
                    );
                }
                "lead_source" => {
                    change.lead_source = Some(if request.lead_source.trim().is_empty() {
                        String::new()
                    } else {
                        contact::label("lead_source", &request.lead_source)
                            .map_err(Error::InvalidArgument)?
                    });
                }
                "custom_fields" => {
                    change.custom_fields = Some(
                        contact::custom_fields(&request.custom_fields)
                            .map_err(Error::InvalidArgument)?,
                    );
                }
                other => {
                    return Err(Error::InvalidArgument(format!(
                        "invalid update_mask: unknown field \"{other}\""
                    ))
                    .into());
                }
            }
        }
        let contact = self
            .change_contact(&caller, &request.contact_id, change)
            .await?;
        Ok(Response::new(contact_to_proto(contact)))
    }

    #[tracing::instrument(skip_all)]
    async fn add_tags(
        &self,
        request: Request<AddTagsRequest>,
    ) -> Result<Response<pb::Contact>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::CONTACTS_WRITE)?;
        let request = request.into_inner();
        let change = ContactChange {
            add_tags: tags(&request.tags)?,
            ..Default::default()
        };
        let contact = self
            .change_contact(&caller, &request.contact_id, change)
            .await?;
        if contact.tags.len() > contact::MAX_TAGS {
            return Err(Error::InvalidArgument(format!(
                "invalid tags: at most {} per contact",
                contact::MAX_TAGS
            ))
            .into());
        }
        Ok(Response::new(contact_to_proto(contact)))
    }

    #[tracing::instrument(skip_all)]
    async fn remove_tags(
        &self,
        request: Request<RemoveTagsRequest>,
    ) -> Result<Response<pb::Contact>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::CONTACTS_WRITE)?;
        let request = request.into_inner();
        let change = ContactChange {
            remove_tags: tags(&request.tags)?,
            ..Default::default()
        };
        let contact = self
            .change_contact(&caller, &request.contact_id, change)
            .await?;
        Ok(Response::new(contact_to_proto(contact)))
    }

    #[tracing::instrument(skip_all)]
    async fn add_note(
        &self,
        request: Request<AddNoteRequest>,
    ) -> Result<Response<pb::Note>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::CONTACTS_WRITE)?;
        let request = request.into_inner();
        let text = note_text(&request.text)?;
        let contact = self
            .visible_contact(&caller, "contact_id", &request.contact_id)
            .await?;
        let conversation_id = match request.conversation_id.as_str() {
            "" => None,
            raw => {
                let conversation = self
                    .visible_conversation(&caller, "conversation_id", raw)
                    .await?;
                if conversation.contact_id != Some(contact.id) {
                    return Err(Error::InvalidArgument(
                        "invalid conversation_id: not a conversation of this contact".into(),
                    )
                    .into());
                }
                Some(conversation.id)
            }
        };
        let key = Some(request.idempotency_key.trim().to_string()).filter(|key| !key.is_empty());
        if key.as_ref().is_some_and(|key| key.len() > 128) {
            return Err(Error::InvalidArgument(
                "invalid idempotency_key: at most 128 bytes".into(),
            )
            .into());
        }
        let (note, _created) = self
            .store
            .add_note(
                &NewNote {
                    tenant_id: caller.tenant_id.clone(),
                    contact_id: contact.id,
                    conversation_id,
                    author_user_id: caller.user_id.clone(),
                    text,
                    idempotency_key: key,
                },
                Utc::now(),
            )
            .await?;
        Ok(Response::new(note_to_proto(note)))
    }

    #[tracing::instrument(skip_all)]
    async fn edit_note(
        &self,
        request: Request<EditNoteRequest>,
    ) -> Result<Response<pb::Note>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::CONTACTS_WRITE)?;
        let request = request.into_inner();
        let text = note_text(&request.text)?;
        let id = parse_id("note_id", &request.note_id)?;
        let not_found = || Error::NotFound {
            field: "note_id".into(),
            id: request.note_id.clone(),
        };
        let note = self
            .store
            .note(&caller.tenant_id, id)
            .await?
            .ok_or_else(not_found)?;
        self.visible_contact(&caller, "note_id", &note.contact_id.to_string())
            .await
            .map_err(|_| not_found())?;
        // Agents edit their own notes; supervisors and admins may correct anyone's.
        if caller.role == giao_authz::Role::Agent && note.author_user_id != caller.user_id {
            return Err(Status::permission_denied(
                "only the author edits an agent's note",
            ));
        }
        let note = self
            .store
            .edit_note(&caller.tenant_id, id, &text, &caller.user_id, Utc::now())
            .await?
            .ok_or_else(not_found)?;
        Ok(Response::new(note_to_proto(note)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_notes(
        &self,
        request: Request<ListNotesRequest>,
    ) -> Result<Response<ListNotesResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::CONTACTS_READ)?;
        let request = request.into_inner();
        let contact = self
            .visible_contact(&caller, "contact_id", &request.contact_id)
            .await?;
        let page = request.page.unwrap_or_default();
        let limit = domain::page_size(page.page_size);
        let notes = self
            .store
            .list_notes(
                &caller.tenant_id,
                contact.id,
                parse_cursor(&page.cursor)?,
                limit,
            )
            .await?;
        let next_cursor = next_cursor(&notes, limit, |note| Position {
            at: note.created_at,
            id: note.id,
        });
        Ok(Response::new(ListNotesResponse {
            notes: notes.into_iter().map(note_to_proto).collect(),
            page: Some(PageResponse { next_cursor }),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn merge_contacts(
        &self,
        request: Request<MergeContactsRequest>,
    ) -> Result<Response<pb::Contact>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::CONTACTS_WRITE)?;
        let request = request.into_inner();
        if request.target_contact_id == request.source_contact_id {
            return Err(Error::InvalidArgument(
                "invalid source_contact_id: the same contact as target_contact_id".into(),
            )
            .into());
        }
        let target = self
            .visible_contact(&caller, "target_contact_id", &request.target_contact_id)
            .await?;
        let source = self
            .visible_contact(&caller, "source_contact_id", &request.source_contact_id)
            .await?;
        for (field, contact) in [
            ("target_contact_id", &target),
            ("source_contact_id", &source),
        ] {
            if contact.merged_into.is_some() {
                return Err(Error::InvalidArgument(format!(
                    "invalid {field}: {} was already merged into another contact",
                    contact.customer_code
                ))
                .into());
            }
        }
        self.store
            .merge_contacts(
                &caller.tenant_id,
                target.id,
                source.id,
                &caller.user_id,
                Utc::now(),
            )
            .await?;
        let merged = self
            .store
            .contact(&caller.tenant_id, target.id)
            .await?
            .ok_or_else(|| Error::Inconsistent("merged contact vanished".into()))?;
        self.ingestor.contact_merged(&source, &merged).await?;
        Ok(Response::new(contact_to_proto(merged)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_tags(
        &self,
        request: Request<ListTagsRequest>,
    ) -> Result<Response<ListTagsResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::CONTACTS_READ)?;
        let tags = self.store.tag_counts(&caller.tenant_id).await?;
        Ok(Response::new(ListTagsResponse {
            tags: tags
                .into_iter()
                .map(|(tag, contacts)| TagCount {
                    tag,
                    contacts: u64::try_from(contacts).unwrap_or_default(),
                })
                .collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_care_pipeline(
        &self,
        request: Request<GetCarePipelineRequest>,
    ) -> Result<Response<pb::CarePipeline>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::CONTACTS_READ)?;
        Ok(Response::new(self.care_stages(&caller.tenant_id).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn set_care_pipeline(
        &self,
        request: Request<SetCarePipelineRequest>,
    ) -> Result<Response<pb::CarePipeline>, Status> {
        let caller = principal(&request)?;
        // The pipeline shapes every agent's work: an administrator's decision.
        caller.require(Permission::USERS_MANAGE)?;
        let pipeline = request
            .into_inner()
            .pipeline
            .ok_or_else(|| Error::InvalidArgument("missing pipeline: required".into()))?;
        contact::validate_pipeline(&pipeline).map_err(Error::InvalidArgument)?;
        self.store
            .set_pipeline(&caller.tenant_id, &store::pipeline_to_json(&pipeline))
            .await?;
        Ok(Response::new(self.care_stages(&caller.tenant_id).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::MESSAGES_READ)?;
        let request = request.into_inner();
        let folded = domain::text::fold(&request.query);
        let chars = folded.chars().count();
        if chars == 0 {
            return Err(Error::InvalidArgument("missing query: required".into()).into());
        }
        if chars > 200 {
            return Err(Error::InvalidArgument(format!(
                "invalid query: {chars} characters, at most 200"
            ))
            .into());
        }
        let scope = pb::SearchScope::try_from(request.scope).map_err(|_| {
            Error::InvalidArgument(format!("invalid scope: unknown value {}", request.scope))
        })?;
        let page = request.page.unwrap_or_default();
        let (visible_owner, visible_teams) = visibility::scope(&caller);
        let conversation_id = match request.conversation_id.as_str() {
            "" => None,
            raw => Some(
                self.visible_conversation(&caller, "conversation_id", raw)
                    .await?
                    .id,
            ),
        };
        let contact_id = match request.contact_id.as_str() {
            "" => None,
            raw => Some(self.visible_contact(&caller, "contact_id", raw).await?.id),
        };
        let query = SearchQuery {
            phone: domain::phone::normalize(&request.query).ok(),
            messages: matches!(scope, pb::SearchScope::All | pb::SearchScope::Messages),
            // Within a conversation or a contact, the contact itself is no hit.
            contacts: matches!(scope, pb::SearchScope::All | pb::SearchScope::Contacts)
                && conversation_id.is_none()
                && contact_id.is_none(),
            notes: matches!(scope, pb::SearchScope::All | pb::SearchScope::Notes)
                && conversation_id.is_none(),
            folded,
            conversation_id,
            contact_id,
            visible_owner,
            visible_teams,
            // A scoped search pages its own kind; an all-kinds search pages messages and
            // shows the first page of contacts and notes with the first page of messages.
            paging: match scope {
                pb::SearchScope::Contacts => SearchPaging::Contacts,
                pb::SearchScope::Notes => SearchPaging::Notes,
                pb::SearchScope::All | pb::SearchScope::Messages => SearchPaging::Messages,
            },
            after: parse_cursor(&page.cursor)?,
            limit: domain::page_size(page.page_size),
        };
        let hits = self.store.search(&caller.tenant_id, &query).await?;
        let paged: Vec<Position> = hits
            .iter()
            .filter_map(|hit| match (hit, query.paging) {
                (SearchHit::Message(m), SearchPaging::Messages) => Some(Position {
                    at: m.sent_at,
                    id: m.id,
                }),
                (SearchHit::Contact(c), SearchPaging::Contacts) => Some(Position {
                    at: c.updated_at,
                    id: c.id,
                }),
                (SearchHit::Note(n), SearchPaging::Notes) => Some(Position {
                    at: n.created_at,
                    id: n.id,
                }),
                _ => None,
            })
            .collect();
        let next_cursor = next_cursor(&paged, query.limit, |position| *position);
        let hits = hits
            .into_iter()
            .map(|hit| match hit {
                SearchHit::Message(message) => pb::SearchHit {
                    snippet: domain::text::snippet(&message.text, &query.folded, 60),
                    conversation_id: message.conversation_id.to_string(),
                    hit: Some(pb::search_hit::Hit::Message(message_to_proto(message))),
                },
                SearchHit::Contact(contact) => pb::SearchHit {
                    snippet: domain::text::snippet(&contact.display_name, &query.folded, 60),
                    conversation_id: String::new(),
                    hit: Some(pb::search_hit::Hit::Contact(contact_to_proto(contact))),
                },
                SearchHit::Note(note) => pb::SearchHit {
                    snippet: domain::text::snippet(&note.text, &query.folded, 60),
                    conversation_id: note
                        .conversation_id
                        .map(|id| id.to_string())
                        .unwrap_or_default(),
                    hit: Some(pb::search_hit::Hit::Note(note_to_proto(note))),
                },
            })
            .collect();
        Ok(Response::new(SearchResponse {
            hits,
            page: Some(PageResponse { next_cursor }),
        }))
    }
}

fn with_reactions(message: StoredMessage, reactions: &[ReactionRecord]) -> pb::Message {
    let id = message.id;
    let mut proto = message_to_proto(message);
    proto.reactions = reactions
        .iter()
        .filter(|reaction| reaction.message_id == id)
        .map(|reaction| pb::Reaction {
            reactor_external_id: reaction.reactor_external_id.clone(),
            reaction: reaction.reaction.clone(),
            at: Some(timestamp(reaction.at)),
        })
        .collect();
    proto
}

fn note_text(text: &str) -> Result<String, Error> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(Error::InvalidArgument("missing text: required".into()));
    }
    let chars = trimmed.chars().count();
    if chars > MAX_NOTE_CHARS {
        return Err(Error::InvalidArgument(format!(
            "invalid text: {chars} characters, at most {MAX_NOTE_CHARS}"
        )));
    }
    Ok(trimmed.to_string())
}

fn tags(raw: &[String]) -> Result<Vec<String>, Error> {
    if raw.is_empty() {
        return Err(Error::InvalidArgument("missing tags: at least one".into()));
    }
    if raw.len() > contact::MAX_TAGS {
        return Err(Error::InvalidArgument(format!(
            "invalid tags: at most {}",
            contact::MAX_TAGS
        )));
    }
    raw.iter()
        .enumerate()
        .map(|(index, tag)| {
            contact::label(&format!("tags[{index}]"), tag).map_err(Error::InvalidArgument)
        })
        .collect()
}

pub(crate) fn contact_to_proto(contact: ContactRecord) -> pb::Contact {
    pb::Contact {
        contact_id: contact.id.to_string(),
        customer_code: contact.customer_code,
        display_name: contact.display_name,
        phones: contact.phones,
        identities: contact
            .identities
            .into_iter()
            .map(|identity| pb::ChannelIdentity {
                channel_account_id: identity.channel_account_id,
                external_user_id: identity.external_user_id,
                display_name: identity.display_name,
                avatar_url: identity.avatar_url,
            })
            .collect(),
        tags: contact.tags,
        care_status: contact.care_status,
        lead_source: contact.lead_source,
        custom_fields: contact.custom_fields.into_iter().collect(),
        created_at: Some(timestamp(contact.created_at)),
        updated_at: Some(timestamp(contact.updated_at)),
        owner_user_id: contact.owner_user_id.unwrap_or_default(),
        merged_contact_ids: contact
            .merged_contact_ids
            .iter()
            .map(Uuid::to_string)
            .collect(),
    }
}

pub(crate) fn note_to_proto(note: NoteRecord) -> pb::Note {
    pb::Note {
        note_id: note.id.to_string(),
        contact_id: note.contact_id.to_string(),
        conversation_id: note
            .conversation_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        author_user_id: note.author_user_id,
        text: note.text,
        created_at: Some(timestamp(note.created_at)),
        updated_at: Some(timestamp(note.updated_at)),
        versions: note
            .versions
            .into_iter()
            .map(|version| pb::NoteVersion {
                text: version.text,
                author_user_id: version.author_user_id,
                replaced_at: Some(timestamp(version.replaced_at)),
            })
            .collect(),
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
        recalled: message.recalled_at.is_some(),
        recalled_at: message.recalled_at.map(timestamp),
        recalled_by: message.recalled_by.unwrap_or_default(),
        failure_reason: message.failure_reason.unwrap_or_default(),
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
        contact_id: conversation
            .contact_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
    }
}
