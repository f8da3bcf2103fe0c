//! Domain events on the bus: one `giao.events.v1.Envelope` per message, on the subject
//! `events.<event_type>.<tenant_id>`, with the producer's W3C trace context both in the
//! envelope and in the message headers, so a consumer's span continues the producer's trace.

use std::sync::Arc;

use bytes::Bytes;
use giao_platform::telemetry;
use giao_proto::events::{Envelope, envelope::Payload};
use prost::Message;

use crate::{BusError, Delivery, EventBus, Headers, OutgoingMessage, PublishAck, subject};

/// The snake_case event type of a payload, as used in subjects.
pub fn event_type(payload: &Payload) -> &'static str {
    match payload {
        Payload::MessageReceived(_) => "message_received",
        Payload::MessageSent(_) => "message_sent",
        Payload::DeliveryUpdated(_) => "delivery_updated",
        Payload::MessageRecalled(_) => "message_recalled",
        Payload::ConversationOpened(_) => "conversation_opened",
        Payload::ConversationAssigned(_) => "conversation_assigned",
        Payload::ConversationClosed(_) => "conversation_closed",
        Payload::ContactUpdated(_) => "contact_updated",
        Payload::ReminderDue(_) => "reminder_due",
        Payload::SlaBreached(_) => "sla_breached",
        Payload::StaffOffboarded(_) => "staff_offboarded",
        Payload::UserDeactivated(_) => "user_deactivated",
        Payload::AccountStatusChanged(_) => "account_status_changed",
        Payload::MessageStored(_) => "message_stored",
        Payload::OutboundRequested(_) => "outbound_requested",
        Payload::FollowChanged(_) => "follow_changed",
        Payload::ReactionAdded(_) => "reaction_added",
        Payload::MessageEdited(_) => "message_edited",
        Payload::AuditRequested(_) => "audit_requested",
    }
}

/// The consumer filter for one event type across every tenant.
pub fn subject_filter(event_type: &str) -> String {
    format!("events.{event_type}.>")
}

/// Publishes envelopes for one producing service.
#[derive(Clone)]
pub struct EventPublisher {
    bus: Arc<dyn EventBus>,
    producer: &'static str,
}

impl std::fmt::Debug for EventPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventPublisher")
            .field("producer", &self.producer)
            .finish()
    }
}

impl EventPublisher {
    pub fn new(bus: Arc<dyn EventBus>, producer: &'static str) -> Self {
        Self { bus, producer }
    }

    /// Publishes `payload` for `tenant_id`. `event_id` must be deterministic for retried work
    /// (e.g. derived from the stored row) so that a retry is deduplicated by the bus.
    pub async fn publish(
        &self,
        tenant_id: &str,
        event_id: String,
        payload: Payload,
    ) -> Result<PublishAck, BusError> {
        if !subject::is_valid_token(tenant_id) {
            return Err(BusError::Publish(format!(
                "invalid tenant_id \"{tenant_id}\" for a subject: letters, digits, - or _"
            )));
        }
        let event_type = event_type(&payload);
        let mut headers = Headers::new();
        telemetry::inject_into_map(&mut headers);
        let now = chrono::Utc::now();
        let envelope = Envelope {
            event_id: event_id.clone(),
            tenant_id: tenant_id.to_string(),
            occurred_at: Some(prost_types::Timestamp {
                seconds: now.timestamp(),
                nanos: now.timestamp_subsec_nanos() as i32,
            }),
            traceparent: headers.get("traceparent").cloned().unwrap_or_default(),
            tracestate: headers.get("tracestate").cloned().unwrap_or_default(),
            producer: self.producer.to_string(),
            payload: Some(payload),
        };
        headers.insert("content-type".into(), "application/protobuf".into());
        headers.insert("giao-event-type".into(), event_type.into());
        self.bus
            .publish(OutgoingMessage {
                subject: format!("events.{event_type}.{tenant_id}"),
                msg_id: event_id,
                headers,
                payload: Bytes::from(envelope.encode_to_vec()),
            })
            .await
    }
}

/// Decodes a delivery into its envelope and a span for handling it, parented on the
/// producer's trace.
pub fn decode(delivery: &Delivery) -> Result<(Envelope, tracing::Span), prost::DecodeError> {
    let envelope = Envelope::decode(delivery.payload.as_ref())?;
    let event_type = envelope
        .payload
        .as_ref()
        .map(event_type)
        .unwrap_or("unknown");
    let span = tracing::info_span!(
        "consume",
        otel.name = %format!("consume {event_type}"),
        otel.kind = "consumer",
        event_id = %envelope.event_id,
        tenant_id = %envelope.tenant_id,
        attempt = delivery.delivered_count,
    );
    let mut carrier = delivery.headers.clone();
    if !carrier.contains_key("traceparent") && !envelope.traceparent.is_empty() {
        carrier.insert("traceparent".into(), envelope.traceparent.clone());
    }
    telemetry::set_remote_parent(&span, telemetry::extract_from_map(&carrier));
    Ok((envelope, span))
}
