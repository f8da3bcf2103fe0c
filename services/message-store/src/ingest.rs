//! Ingestion: storing captured messages idempotently and announcing them on the bus.
//!
//! The bus consumer acks a `MessageReceived` only after the message is committed and its
//! follow-up events are published; any failure before that leaves it unacked, so it comes
//! back and is stored exactly once (the store dedupes on channel account + external id, and
//! follow-up events carry deterministic ids that the bus dedupes).

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use giao_bus::{
    ConsumerSpec, Delivery, EventBus, HandlerOutcome,
    envelope::{self, EventPublisher},
};
use giao_proto::{
    common::DeliveryStatus,
    events::{self, envelope::Payload},
    messagestore::InboundMessage,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    api::timestamp,
    domain::{
        AppendOutcome, ConversationRecord, DeliveryChange, MessageRef, NewOutbound, StoredMessage,
        contact::ContactRecord,
        delivery,
        inbound::{self, NewInbound},
    },
    error::Error,
    store::Store,
};

/// Durable consumer name shared by every message-store replica.
pub const INBOUND_CONSUMER: &str = "message-store-inbound";

#[derive(Clone)]
pub struct Ingestor {
    store: Arc<dyn Store>,
    publisher: EventPublisher,
}

impl Ingestor {
    pub fn new(store: Arc<dyn Store>, publisher: EventPublisher) -> Self {
        Self { store, publisher }
    }

    /// Stores one message and publishes MessageStored (and ConversationOpened for a new
    /// conversation). Safe to call again with the same message.
    pub async fn store(&self, message: &NewInbound) -> Result<AppendOutcome, Error> {
        let outcome = self.store.append_inbound(message, Utc::now()).await?;
        self.link_attachments(&message.tenant_id, outcome.message.id, &message.content)
            .await?;
        self.announce_opened(message, &outcome).await?;
        self.announce_stored(message, &outcome).await?;
        Ok(outcome)
    }

    /// Stores a batch in one transaction, then announces it: first every conversation and
    /// contact it opened, published concurrently, then its messages as `MessagesStored`
    /// batches (the bus dedupes on the deterministic event ids, so a retried batch announces
    /// nothing twice, and consumers dedupe each entry on its own id).
    pub async fn store_batch(&self, messages: &[NewInbound]) -> Result<Vec<AppendOutcome>, Error> {
        // A whole batch (at most MAX_BATCH) in flight at once; JetStream pipelines the acks.
        const IN_FLIGHT: usize = crate::domain::MAX_BATCH;
        let outcomes = self
            .store
            .append_inbound_batch(messages, Utc::now())
            .await?;
        for (message, outcome) in messages.iter().zip(&outcomes) {
            self.link_attachments(&message.tenant_id, outcome.message.id, &message.content)
                .await?;
        }
        let pairs: Vec<(&NewInbound, &AppendOutcome)> = messages.iter().zip(&outcomes).collect();
        for chunk in pairs.chunks(IN_FLIGHT) {
            let opened: Vec<_> = chunk
                .iter()
                .map(|&(message, outcome)| self.announce_opened(message, outcome))
                .collect();
            futures::future::try_join_all(opened).await?;
        }
        // One after the other: the parts of a split batch reach the stream in batch order.
        for (tenant_id, event_id, batch) in stored_batches(&pairs, MAX_BATCH_EVENT_BYTES) {
            self.publisher
                .publish(tenant_id, event_id, Payload::MessagesStored(batch))
                .await?;
        }
        Ok(outcomes)
    }

    /// ConversationOpened and ContactUpdated(created) for what this message opened.
    async fn announce_opened(
        &self,
        message: &NewInbound,
        outcome: &AppendOutcome,
    ) -> Result<(), Error> {
        // A redelivery after a crash between commit and publish must still announce the
        // conversation; the first message of a conversation was stored in the same instant.
        let opened = outcome.conversation_created
            || (!outcome.created && outcome.conversation.created_at == outcome.message.stored_at);
        if opened {
            let conversation = &outcome.conversation;
            self.publisher
                .publish(
                    &message.tenant_id,
                    format!("conversation-opened-{}", conversation.id),
                    Payload::ConversationOpened(events::ConversationOpened {
                        conversation_id: conversation.id.to_string(),
                        channel_account_id: conversation.channel_account_id.clone(),
                        contact_id: conversation
                            .contact_id
                            .or(outcome.contact_id)
                            .map(|id| id.to_string())
                            .unwrap_or_default(),
                        thread_kind: conversation.thread_kind,
                        opened_at: Some(timestamp(conversation.created_at)),
                        ..Default::default()
                    }),
                )
                .await?;
        }
        if let Some(contact_id) = outcome.contact_id
            && (outcome.contact_created
                || (!outcome.created
                    && outcome.conversation.created_at == outcome.message.stored_at))
        {
            self.publisher
                .publish(
                    &message.tenant_id,
                    format!("contact-created-{contact_id}"),
                    Payload::ContactUpdated(events::ContactUpdated {
                        contact_id: contact_id.to_string(),
                        created: true,
                        ..Default::default()
                    }),
                )
                .await?;
        }
        Ok(())
    }

    async fn announce_stored(
        &self,
        message: &NewInbound,
        outcome: &AppendOutcome,
    ) -> Result<(), Error> {
        self.publisher
            .publish(
                &message.tenant_id,
                envelope::message_stored_event_id(&outcome.message.id.to_string()),
                Payload::MessageStored(stored_event(outcome)),
            )
            .await?;
        Ok(())
    }
}

/// Entries of one `MessagesStored` bus message stay under this many encoded bytes: NATS
/// refuses a message over its `max_payload` (1 MiB unless configured), and 500 texts at the
/// size limit would come to several MiB, so such a batch is split.
const MAX_BATCH_EVENT_BYTES: usize = 512 * 1024;

/// What a single append announces about one stored message.
fn stored_event(outcome: &AppendOutcome) -> events::MessageStored {
    let stored = &outcome.message;
    events::MessageStored {
        message_id: stored.id.to_string(),
        conversation_id: stored.conversation_id.to_string(),
        contact_id: outcome
            .contact_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        channel_account_id: stored.channel_account_id.clone(),
        direction: stored.direction,
        sender_kind: stored.sender_kind,
        sender_user_id: stored.sender_user_id.clone().unwrap_or_default(),
        sent_at: Some(timestamp(stored.sent_at)),
        owner_user_id: outcome
            .conversation
            .owner_user_id
            .clone()
            .unwrap_or_default(),
        team_id: outcome.conversation.team_id.clone().unwrap_or_default(),
        content_type: stored.content_type,
        text: stored.text.clone(),
        ..Default::default()
    }
}

/// A stored batch's `MessagesStored` events: per tenant, in the batch's order, each message
/// once (a repeat inside the batch answers with the same stored message), split so no event's
/// entries pass `max_bytes`. Each event's id is a digest of its message ids, so a retried
/// batch publishes the same ids and the bus stores them once.
fn stored_batches<'a>(
    pairs: &[(&'a NewInbound, &AppendOutcome)],
    max_bytes: usize,
) -> Vec<(&'a str, String, events::MessagesStored)> {
    use prost::Message as _;
    use sha2::Digest as _;

    let mut seen = std::collections::HashSet::new();
    let mut per_tenant: Vec<(&str, Vec<events::MessageStored>)> = Vec::new();
    for &(message, outcome) in pairs {
        if !seen.insert((message.tenant_id.as_str(), outcome.message.id)) {
            continue;
        }
        let entry = stored_event(outcome);
        match per_tenant
            .iter_mut()
            .find(|(tenant, _)| *tenant == message.tenant_id)
        {
            Some((_, entries)) => entries.push(entry),
            None => per_tenant.push((&message.tenant_id, vec![entry])),
        }
    }
    let mut batches = Vec::new();
    for (tenant, entries) in per_tenant {
        let mut current: Vec<events::MessageStored> = Vec::new();
        let mut bytes = 0;
        let mut close = |current: Vec<events::MessageStored>| {
            let mut digest = sha2::Sha256::new();
            for entry in &current {
                digest.update(entry.message_id.as_bytes());
                digest.update(b"\n");
            }
            let digest = hex::encode(digest.finalize());
            batches.push((
                tenant,
                format!("messages-stored-{}", &digest[..32]),
                events::MessagesStored { messages: current },
            ));
        };
        for entry in entries {
            // The repeated field's tag and length prefix come on top of the entry itself.
            let size = entry.encoded_len() + 8;
            if !current.is_empty() && bytes + size > max_bytes {
                close(std::mem::take(&mut current));
                bytes = 0;
            }
            bytes += size;
            current.push(entry);
        }
        if !current.is_empty() {
            close(current);
        }
    }
    batches
}

impl Ingestor {
    /// A channel user followed (or unfollowed) the account: the follower becomes a contact
    /// even before writing, and the follow source becomes the contact's lead source unless it
    /// already has one (the first touch is kept). Safe to apply twice.
    pub async fn apply_follow(
        &self,
        tenant_id: &str,
        follow: &events::FollowChanged,
    ) -> Result<(), Error> {
        let Some(user) = follow.user.clone() else {
            return Ok(());
        };
        let at = time_of(follow.at);
        let probe = NewInbound {
            tenant_id: tenant_id.to_string(),
            channel_account_id: follow.channel_account_id.clone(),
            channel_kind: 0,
            external_message_id: String::new(),
            external_thread_id: user.external_user_id.clone(),
            thread_kind: giao_proto::common::ThreadKind::Direct as i32,
            sender_kind: giao_proto::common::SenderKind::Customer as i32,
            sender_external_id: user.external_user_id.clone(),
            direction: giao_proto::common::Direction::Inbound as i32,
            customer: user,
            content: Default::default(),
            quote_external_id: None,
            sent_at: at,
            group_name: String::new(),
        };
        let (contact_id, created) = self.store.ensure_contact(&probe, Utc::now()).await?;
        if created {
            self.publisher
                .publish(
                    tenant_id,
                    format!("contact-created-{contact_id}"),
                    Payload::ContactUpdated(events::ContactUpdated {
                        contact_id: contact_id.to_string(),
                        created: true,
                        ..Default::default()
                    }),
                )
                .await?;
        }
        if !follow.following || follow.source.is_empty() {
            return Ok(());
        }
        let Some(contact) = self.store.contact(tenant_id, contact_id).await? else {
            return Ok(());
        };
        if !contact.lead_source.is_empty() {
            return Ok(());
        }
        let change = crate::domain::ContactChange {
            lead_source: Some(follow.source.clone()),
            ..Default::default()
        };
        if let Some((before, after)) = self
            .store
            .update_contact(tenant_id, contact_id, &change, Utc::now())
            .await?
        {
            self.contact_changed(&before, &after).await?;
        }
        Ok(())
    }

    /// Sets a conversation's status and, when it ends closed, announces ConversationClosed
    /// under an id derived from when it closed: a retried call re-announces (the bus drops
    /// the repeat) and a later close after a reopen is a new event.
    pub async fn set_status(
        &self,
        conversation: &ConversationRecord,
        status: i32,
        closed_by: &str,
        outcome: &str,
    ) -> Result<(), Error> {
        let changed_at = self
            .store
            .set_status(&conversation.tenant_id, conversation.id, status, Utc::now())
            .await?
            .ok_or_else(|| Error::NotFound {
                field: "conversation_id".into(),
                id: conversation.id.to_string(),
            })?;
        if status == giao_proto::messagestore::ConversationStatus::Closed as i32 {
            self.publisher
                .publish(
                    &conversation.tenant_id,
                    format!(
                        "conversation-closed-{}-{}",
                        conversation.id,
                        changed_at.timestamp_micros()
                    ),
                    Payload::ConversationClosed(events::ConversationClosed {
                        conversation_id: conversation.id.to_string(),
                        closed_by: closed_by.to_string(),
                        outcome: outcome.to_string(),
                    }),
                )
                .await?;
        }
        Ok(())
    }

    /// Asks for a record in the tenant's audit chain (the auth service appends it once per
    /// `event_id`).
    pub async fn audit(
        &self,
        tenant_id: &str,
        event_id: String,
        actor: &str,
        action: &str,
        target: &str,
        details: serde_json::Value,
    ) -> Result<(), Error> {
        self.publisher
            .publish(
                tenant_id,
                event_id,
                Payload::AuditRequested(events::AuditRequested {
                    actor: actor.to_string(),
                    action: action.to_string(),
                    target: target.to_string(),
                    details_json: details.to_string(),
                    at: Some(timestamp(Utc::now())),
                }),
            )
            .await?;
        Ok(())
    }

    /// Remembers which stored attachments a message refers to, so that whoever can see the
    /// message can read them. Keys of other tenants are never linked.
    async fn link_attachments(
        &self,
        tenant_id: &str,
        message_id: uuid::Uuid,
        content: &giao_proto::common::MessageContent,
    ) -> Result<(), Error> {
        let keys: Vec<String> = content
            .attachments
            .iter()
            .map(|attachment| attachment.storage_key.clone())
            .filter(|key| crate::attachments::belongs_to(tenant_id, key))
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        self.store
            .link_attachments(tenant_id, message_id, &keys)
            .await
    }

    /// Records a pending outbound message and asks the connector to send it. Retries with the
    /// same idempotency key return the first message and re-announce it under the same event
    /// id, which the bus drops.
    pub async fn record_outbound(
        &self,
        message: &NewOutbound,
        conversation: &ConversationRecord,
    ) -> Result<(StoredMessage, bool), Error> {
        let (stored, created) = self.store.record_outbound(message, Utc::now()).await?;
        self.link_attachments(&message.tenant_id, stored.id, &message.content)
            .await?;
        self.publisher
            .publish(
                &message.tenant_id,
                format!("outbound-requested-{}", stored.id),
                Payload::OutboundRequested(events::OutboundRequested {
                    message_id: stored.id.to_string(),
                    conversation_id: conversation.id.to_string(),
                    channel_account_id: conversation.channel_account_id.clone(),
                    external_thread_id: conversation.external_thread_id.clone(),
                    thread_kind: conversation.thread_kind,
                    content: Some(message.content.clone()),
                    quote_external_id: message.quote_external_id.clone().unwrap_or_default(),
                    sender_user_id: message.sender_user_id.clone(),
                    sender_kind: stored.sender_kind,
                }),
            )
            .await?;
        self.publisher
            .publish(
                &message.tenant_id,
                format!("message-stored-{}", stored.id),
                Payload::MessageStored(events::MessageStored {
                    message_id: stored.id.to_string(),
                    conversation_id: conversation.id.to_string(),
                    contact_id: conversation
                        .contact_id
                        .map(|id| id.to_string())
                        .unwrap_or_default(),
                    channel_account_id: conversation.channel_account_id.clone(),
                    direction: stored.direction,
                    sender_kind: stored.sender_kind,
                    sender_user_id: message.sender_user_id.clone(),
                    sent_at: Some(timestamp(stored.sent_at)),
                    owner_user_id: conversation.owner_user_id.clone().unwrap_or_default(),
                    team_id: conversation.team_id.clone().unwrap_or_default(),
                    content_type: stored.content_type,
                    text: stored.text.clone(),
                    ..Default::default()
                }),
            )
            .await?;
        Ok((stored, created))
    }

    /// Applies a delivery report if it moves the message forward; returns the message as it
    /// now stands, or `None` when the message is unknown.
    pub async fn apply_delivery(
        &self,
        tenant_id: &str,
        reference: &MessageRef,
        change: &DeliveryChange,
    ) -> Result<Option<StoredMessage>, Error> {
        let next = DeliveryStatus::try_from(change.status).unwrap_or(DeliveryStatus::Unspecified);
        // Concurrent reports race on the expected status; a few rounds settle them.
        for _ in 0..5 {
            let Some(current) = self.store.find_message(tenant_id, reference).await? else {
                return Ok(None);
            };
            let from = DeliveryStatus::try_from(current.delivery_status)
                .unwrap_or(DeliveryStatus::Unspecified);
            if !delivery::may_move(from, next) {
                return Ok(Some(current));
            }
            if self
                .store
                .update_delivery(tenant_id, current.id, current.delivery_status, change)
                .await?
            {
                return self
                    .store
                    .find_message(tenant_id, &MessageRef::Id(current.id))
                    .await;
            }
        }
        Err(Error::Inconsistent(
            "delivery status kept changing under an update".into(),
        ))
    }

    /// Flags a message recalled on the channel, keeping its content, then announces the
    /// stored recall; returns whether the message is known.
    ///
    /// The announcement is a MessageRecalled from this service carrying the giao message id
    /// and the recall as stored (the first report wins), so reporting and the console learn
    /// of it without matching channel ids. Its event id is derived from the message, so a
    /// repeated report or a redelivery is deduplicated by the bus; this service's own
    /// recall consumer recognises it by its producer and leaves it alone.
    pub async fn apply_recall(
        &self,
        tenant_id: &str,
        reference: &MessageRef,
        recalled_by: &str,
        at: chrono::DateTime<Utc>,
    ) -> Result<bool, Error> {
        let Some(message) = self.store.find_message(tenant_id, reference).await? else {
            return Ok(false);
        };
        self.store
            .mark_recalled(tenant_id, message.id, recalled_by, at)
            .await?;
        let stored = self
            .store
            .find_message(tenant_id, &MessageRef::Id(message.id))
            .await?
            .ok_or_else(|| Error::Inconsistent("recalled message vanished".into()))?;
        self.publisher
            .publish(
                tenant_id,
                format!("message-recalled-{}", stored.id),
                Payload::MessageRecalled(events::MessageRecalled {
                    channel_account_id: stored.channel_account_id.clone(),
                    external_message_id: stored.external_message_id.clone().unwrap_or_default(),
                    recalled_by_external_id: stored.recalled_by.clone().unwrap_or_default(),
                    recalled_at: Some(timestamp(stored.recalled_at.unwrap_or(at))),
                    message_id: stored.id.to_string(),
                }),
            )
            .await?;
        Ok(true)
    }

    /// Records the latest reaction of a person to a message; false when the message is unknown.
    pub async fn apply_reaction(
        &self,
        tenant_id: &str,
        reference: &MessageRef,
        reactor_external_id: String,
        reaction: String,
        at: chrono::DateTime<Utc>,
    ) -> Result<bool, Error> {
        let Some(message) = self.store.find_message(tenant_id, reference).await? else {
            return Ok(false);
        };
        self.store
            .add_reaction(
                tenant_id,
                &crate::domain::ReactionRecord {
                    message_id: message.id,
                    reactor_external_id,
                    reaction,
                    at,
                },
            )
            .await?;
        Ok(true)
    }

    /// Applies an edit reported by the channel, keeping the earlier version; false when the
    /// message is unknown.
    pub async fn apply_edit(
        &self,
        tenant_id: &str,
        reference: &MessageRef,
        content: &giao_proto::common::MessageContent,
        at: chrono::DateTime<Utc>,
    ) -> Result<bool, Error> {
        let Some(message) = self.store.find_message(tenant_id, reference).await? else {
            return Ok(false);
        };
        self.store
            .edit_message(tenant_id, message.id, content, at)
            .await?;
        Ok(true)
    }

    /// Announces that `source` now lives on as `target`.
    pub async fn contact_merged(
        &self,
        source: &ContactRecord,
        target: &ContactRecord,
    ) -> Result<(), Error> {
        self.publisher
            .publish(
                &target.tenant_id,
                format!("contact-merged-{}", source.id),
                Payload::ContactUpdated(events::ContactUpdated {
                    contact_id: source.id.to_string(),
                    customer_code: source.customer_code.clone(),
                    changed_fields: vec!["merged_into".into()],
                    merged_into_contact_id: target.id.to_string(),
                    ..Default::default()
                }),
            )
            .await?;
        Ok(())
    }

    /// Announces a contact change: which fields changed and the care-status transition.
    pub async fn contact_changed(
        &self,
        before: &ContactRecord,
        after: &ContactRecord,
    ) -> Result<(), Error> {
        let mut changed = Vec::new();
        if before.display_name != after.display_name {
            changed.push("display_name");
        }
        if before.phones != after.phones {
            changed.push("phones");
        }
        if before.care_status != after.care_status {
            changed.push("care_status");
        }
        if before.lead_source != after.lead_source {
            changed.push("lead_source");
        }
        if before.custom_fields != after.custom_fields {
            changed.push("custom_fields");
        }
        if before.tags != after.tags {
            changed.push("tags");
        }
        if changed.is_empty() {
            return Ok(());
        }
        self.publisher
            .publish(
                &after.tenant_id,
                format!("contact-updated-{}", uuid::Uuid::now_v7()),
                Payload::ContactUpdated(events::ContactUpdated {
                    contact_id: after.id.to_string(),
                    customer_code: after.customer_code.clone(),
                    changed_fields: changed.into_iter().map(str::to_string).collect(),
                    care_status: after.care_status.clone(),
                    previous_care_status: before.care_status.clone(),
                    lead_source: after.lead_source.clone(),
                    tags: after.tags.clone(),
                    ..Default::default()
                }),
            )
            .await?;
        Ok(())
    }
}

/// Consumes `MessageReceived` from every tenant until `shutdown`.
pub async fn consume(
    bus: Arc<dyn EventBus>,
    ingestor: Ingestor,
    ack_wait: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let spec = ConsumerSpec {
        durable_name: INBOUND_CONSUMER.into(),
        filter_subjects: vec![envelope::subject_filter("message_received")],
        ack_wait,
        max_deliver: None,
        inactive_threshold: None,
    };
    giao_bus::run_consumer(bus, spec, shutdown, move |delivery: &Delivery| {
        let ingestor = ingestor.clone();
        let decoded = envelope::decode(delivery);
        async move {
            let (envelope, span) = match decoded {
                Ok(decoded) => decoded,
                Err(error) => return HandlerOutcome::Poison(format!("undecodable event: {error}")),
            };
            handle(&ingestor, envelope).instrument(span).await
        }
    })
    .await?;
    Ok(())
}

/// Consumes delivery reports and recalls from the connector until `shutdown`.
pub async fn consume_updates(
    bus: Arc<dyn EventBus>,
    ingestor: Ingestor,
    ack_wait: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // One durable consumer per event type: a single filter works on every NATS version.
    let consumer = |name: &str, event_type: &str| ConsumerSpec {
        durable_name: name.into(),
        filter_subjects: vec![envelope::subject_filter(event_type)],
        ack_wait,
        // A report about a message that never arrives is given up after about ten minutes.
        max_deliver: Some(20),
        inactive_threshold: None,
    };
    let handler = |ingestor: Ingestor| {
        move |delivery: &Delivery| {
            let ingestor = ingestor.clone();
            let decoded = envelope::decode(delivery);
            async move {
                let (envelope, span) = match decoded {
                    Ok(decoded) => decoded,
                    Err(error) => {
                        return HandlerOutcome::Poison(format!("undecodable event: {error}"));
                    }
                };
                handle_update(&ingestor, envelope).instrument(span).await
            }
        }
    };
    let deliveries = giao_bus::run_consumer(
        bus.clone(),
        consumer("message-store-delivery", "delivery_updated"),
        shutdown.clone(),
        handler(ingestor.clone()),
    );
    let recalls = giao_bus::run_consumer(
        bus.clone(),
        consumer("message-store-recall", "message_recalled"),
        shutdown.clone(),
        handler(ingestor.clone()),
    );
    let reactions = giao_bus::run_consumer(
        bus.clone(),
        consumer("message-store-reactions", "reaction_added"),
        shutdown.clone(),
        handler(ingestor.clone()),
    );
    let edits = giao_bus::run_consumer(
        bus.clone(),
        consumer("message-store-edits", "message_edited"),
        shutdown.clone(),
        handler(ingestor.clone()),
    );
    let follows = giao_bus::run_consumer(
        bus,
        consumer("message-store-follows", "follow_changed"),
        shutdown,
        handler(ingestor),
    );
    let (deliveries, recalls, reactions, edits, follows) =
        tokio::join!(deliveries, recalls, reactions, edits, follows);
    deliveries?;
    recalls?;
    reactions?;
    edits?;
    follows?;
    Ok(())
}

fn message_ref(
    message_id: &str,
    channel_account_id: String,
    external_message_id: String,
) -> Option<MessageRef> {
    if let Ok(id) = uuid::Uuid::parse_str(message_id) {
        return Some(MessageRef::Id(id));
    }
    (!channel_account_id.is_empty() && !external_message_id.is_empty()).then_some(
        MessageRef::External {
            channel_account_id,
            external_message_id,
        },
    )
}

fn time_of(timestamp: Option<prost_types::Timestamp>) -> chrono::DateTime<Utc> {
    timestamp
        .and_then(|at| chrono::DateTime::from_timestamp(at.seconds, at.nanos.max(0) as u32))
        .unwrap_or_else(Utc::now)
}

async fn handle_update(ingestor: &Ingestor, envelope: events::Envelope) -> HandlerOutcome {
    // Recalls this service announced after storing them share the subject of the channel's
    // reports; applying them again would only announce them again.
    if envelope.producer == crate::SERVICE {
        return HandlerOutcome::Done;
    }
    let tenant_id = envelope.tenant_id;
    let outcome = match envelope.payload {
        Some(Payload::DeliveryUpdated(report)) => {
            let Some(reference) = message_ref(
                &report.message_id,
                report.channel_account_id.clone(),
                report.external_message_id.clone(),
            ) else {
                return HandlerOutcome::Poison("delivery report names no message".into());
            };
            let change = DeliveryChange {
                status: report.status,
                failure_reason: Some(report.failure_reason).filter(|reason| !reason.is_empty()),
                external_message_id: Some(report.external_message_id).filter(|id| !id.is_empty()),
            };
            ingestor
                .apply_delivery(&tenant_id, &reference, &change)
                .await
                .map(|message| message.is_some())
        }
        Some(Payload::MessageRecalled(recall)) => {
            let Some(reference) = message_ref(
                &recall.message_id,
                recall.channel_account_id,
                recall.external_message_id,
            ) else {
                return HandlerOutcome::Poison("recall names no message".into());
            };
            ingestor
                .apply_recall(
                    &tenant_id,
                    &reference,
                    &recall.recalled_by_external_id,
                    time_of(recall.recalled_at),
                )
                .await
        }
        Some(Payload::ReactionAdded(reaction)) => {
            let reference = MessageRef::External {
                channel_account_id: reaction.channel_account_id,
                external_message_id: reaction.external_message_id,
            };
            ingestor
                .apply_reaction(
                    &tenant_id,
                    &reference,
                    reaction.reactor_external_id,
                    reaction.reaction,
                    time_of(reaction.at),
                )
                .await
        }
        Some(Payload::FollowChanged(follow)) => {
            let Some(user) = follow.user.as_ref() else {
                return HandlerOutcome::Poison("follow without a user".into());
            };
            if user.external_user_id.is_empty()
                || user.external_user_id.len() > crate::domain::MAX_ID_BYTES
            {
                return HandlerOutcome::Poison("follow with an invalid user id".into());
            }
            if follow.source.len() > crate::domain::MAX_ID_BYTES {
                return HandlerOutcome::Poison("follow source over the size limit".into());
            }
            ingestor
                .apply_follow(&tenant_id, &follow)
                .await
                .map(|()| true)
        }
        Some(Payload::MessageEdited(edit)) => {
            let Some(content) = edit.content else {
                return HandlerOutcome::Poison("edit without content".into());
            };
            if content.text.chars().count() > crate::domain::MAX_TEXT_CHARS {
                return HandlerOutcome::Poison("edited text over the size limit".into());
            }
            let reference = MessageRef::External {
                channel_account_id: edit.channel_account_id,
                external_message_id: edit.external_message_id,
            };
            ingestor
                .apply_edit(&tenant_id, &reference, &content, time_of(edit.edited_at))
                .await
        }
        _ => {
            return HandlerOutcome::Poison(
                "not a delivery report, recall, reaction, edit or follow".into(),
            );
        }
    };
    match outcome {
        Ok(true) => HandlerOutcome::Done,
        // The message may not be stored yet (the report overtook it): try again shortly.
        Ok(false) => HandlerOutcome::Retry("message not stored yet".into()),
        Err(error) => HandlerOutcome::Retry(error.to_string()),
    }
}

async fn handle(ingestor: &Ingestor, envelope: events::Envelope) -> HandlerOutcome {
    let Some(Payload::MessageReceived(received)) = envelope.payload else {
        return HandlerOutcome::Poison("not a message_received event".into());
    };
    let message = InboundMessage {
        channel_account_id: received.channel_account_id,
        channel_kind: received.channel_kind,
        external_message_id: received.external_message_id,
        external_thread_id: received.external_thread_id,
        thread_kind: received.thread_kind,
        customer: received.customer,
        direction: received.direction,
        sender_kind: received.sender_kind,
        sender_external_id: received.sender_external_id,
        content: received.content,
        quote_external_id: received.quote_external_id,
        sent_at: received.sent_at,
        group_name: received.group_name,
    };
    let inbound = match inbound::validate(
        &envelope.tenant_id,
        message,
        "message_received.",
        Utc::now(),
    ) {
        Ok(inbound) => inbound,
        // Kept on the stream for inspection; retrying cannot fix it.
        Err(reason) => return HandlerOutcome::Poison(reason),
    };
    match ingestor.store(&inbound).await {
        Ok(outcome) => {
            tracing::debug!(
                message_id = %outcome.message.id,
                created = outcome.created,
                "inbound message stored"
            );
            HandlerOutcome::Done
        }
        Err(error) => HandlerOutcome::Retry(error.to_string()),
    }
}
