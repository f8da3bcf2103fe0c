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
        // A batch of MessageStored travels on their subject, so every consumer of
        // message_stored receives batches with no new filter (several filters on one
        // consumer need NATS 2.10, and a durable consumer keeps the filter it was made with).
        Payload::MessagesStored(_) => "message_stored",
    }
}

/// The event id of a stored message's `MessageStored`, whether it travels alone or as an
/// entry of a `MessagesStored` batch: consumers dedupe on it either way.
pub fn message_stored_event_id(message_id: &str) -> String {
    format!("message-stored-{message_id}")
}

/// The events an envelope carries, in order: the envelope itself, or for a `MessagesStored`
/// batch one `MessageStored` envelope per entry, with the entry's own event id and the
/// batch's tenant, time, trace context and producer. A consumer handles what this returns
/// exactly as it handles single events, so a batch and the same messages published one by
/// one change its state alike.
pub fn events_of(mut envelope: Envelope) -> Vec<Envelope> {
    match envelope.payload.take() {
        Some(Payload::MessagesStored(batch)) => batch
            .messages
            .into_iter()
            .map(|stored| Envelope {
                event_id: message_stored_event_id(&stored.message_id),
                payload: Some(Payload::MessageStored(stored)),
                ..envelope.clone()
            })
            .collect(),
        payload => {
            envelope.payload = payload;
            vec![envelope]
        }
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

#[cfg(test)]
mod tests {
    use giao_proto::events::{MessageStored, MessagesStored};

    use super::*;

    fn stored(id: &str) -> MessageStored {
        MessageStored {
            message_id: id.into(),
            conversation_id: format!("conv-{id}"),
            text: format!("text of {id}"),
            ..Default::default()
        }
    }

    fn envelope(event_id: &str, payload: Payload) -> Envelope {
        Envelope {
            event_id: event_id.into(),
            tenant_id: "acme".into(),
            occurred_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            tracestate: "giao=1".into(),
            producer: "message-store".into(),
            payload: Some(payload),
        }
    }

    #[test]
    fn a_batch_yields_each_entry_as_the_single_event_it_stands_for() {
        let batch = envelope(
            "messages-stored-abc",
            Payload::MessagesStored(MessagesStored {
                messages: vec![stored("m1"), stored("m2"), stored("m3")],
            }),
        );
        assert_eq!(
            event_type(batch.payload.as_ref().expect("payload")),
            "message_stored",
            "a batch travels where its entries would"
        );
        let events = events_of(batch.clone());
        let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "message-stored-m1",
                "message-stored-m2",
                "message-stored-m3"
            ]
        );
        for (event, id) in events.iter().zip(["m1", "m2", "m3"]) {
            assert_eq!(
                event,
                &Envelope {
                    event_id: message_stored_event_id(id),
                    payload: Some(Payload::MessageStored(stored(id))),
                    ..batch.clone()
                }
            );
        }
    }

    #[test]
    fn any_other_event_is_itself() {
        let single = envelope("message-stored-m1", Payload::MessageStored(stored("m1")));
        assert_eq!(events_of(single.clone()), vec![single]);
        let empty = envelope(
            "messages-stored-none",
            Payload::MessagesStored(MessagesStored::default()),
        );
        assert!(
            events_of(empty).is_empty(),
            "an empty batch carries nothing"
        );
        let bare = Envelope::default();
        assert_eq!(events_of(bare.clone()), vec![bare]);
    }
}
