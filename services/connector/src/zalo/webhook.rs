//! The Zalo OA webhook: `POST /webhooks/zalo-oa/{tenant_id}/{channel_account_id}`.
//!
//! Zalo retries a webhook that is not answered 200 within 2 s and disables it after five
//! failures, so the handler verifies, publishes to the durable bus and answers; nothing slow
//! happens before the answer. Event ids are derived from the account and Zalo's message id,
//! so a retry (`num_retry`) publishes the same id and the bus drops the duplicate.

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, State},
    http::{HeaderMap, StatusCode},
    routing::post,
};
use chrono::Utc;
use giao_bus::envelope::EventPublisher;
use giao_proto::{
    common::{
        self, Attachment, BusinessCard, ChannelKind, ChannelUser, ContentType, DeliveryStatus,
        Link, Location, MessageContent,
    },
    events::{self, envelope::Payload},
};
use prometheus_client::metrics::{counter::Counter, family::Family};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{credentials::Sealer, store::AccountStore, zalo::OaCredentials};

/// Webhooks not turned into events, by reason: refused (`unsigned`, `forged`, `malformed`,
/// `unknown_account`) or accepted but kept raw because fields were missing (`incomplete`).
pub type Rejected = Family<Vec<(String, String)>, Counter>;

#[derive(Clone)]
pub struct WebhookState {
    pub accounts: AccountStore,
    pub sealer: Sealer,
    pub publisher: EventPublisher,
    pub rejected: Rejected,
    pub raw: crate::zalo::RawEvents,
    /// Fetches new customers' profiles.
    pub oa: crate::zalo::outbound::OaRuntime,
}

pub fn router(state: WebhookState, max_body_bytes: usize) -> Router {
    Router::new()
        .route(
            "/webhooks/zalo-oa/{tenant_id}/{channel_account_id}",
            post(receive),
        )
        // Over the limit, the body extractor answers 413 without reading the rest.
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(Arc::new(state))
}

/// `mac=<hex>` as Zalo signs: SHA-256(app_id ‖ body ‖ timestamp ‖ oa_secret_key), plain hash.
pub fn signature(app_id: &str, body: &[u8], timestamp: &str, oa_secret_key: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(app_id.as_bytes());
    hash.update(body);
    hash.update(timestamp.as_bytes());
    hash.update(oa_secret_key.as_bytes());
    format!("mac={}", hex::encode(hash.finalize()))
}

/// Equal in time independent of where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn count(state: &WebhookState, reason: &str) {
    state
        .rejected
        .get_or_create(&vec![("reason".to_string(), reason.to_string())])
        .inc();
}

fn reject(state: &WebhookState, reason: &str, status: StatusCode) -> StatusCode {
    count(state, reason);
    status
}

async fn receive(
    State(state): State<Arc<WebhookState>>,
    Path((tenant_id, account_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let Some(mac) = headers
        .get("x-zevent-signature")
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
    else {
        return reject(&state, "unsigned", StatusCode::UNAUTHORIZED);
    };
    match state.accounts.get(&tenant_id, &account_id).await {
        Ok(Some(account)) if account.kind == ChannelKind::ZaloOa as i32 && !account.disabled => {}
        Ok(_) => return reject(&state, "unknown_account", StatusCode::NOT_FOUND),
        Err(error) => {
            tracing::warn!(%error, "webhook: cannot read the account");
            return StatusCode::SERVICE_UNAVAILABLE;
        }
    };
    let credentials = match state.accounts.credentials(&tenant_id, &account_id).await {
        Ok(Some(sealed)) => {
            match state
                .sealer
                .open(&tenant_id, &account_id, &sealed.key_id, &sealed.sealed)
                .ok()
                .and_then(|plain| serde_json::from_slice::<OaCredentials>(&plain).ok())
            {
                Some(credentials) => credentials,
                None => {
                    tracing::error!(account = %account_id, "webhook: account credentials unreadable");
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
            }
        }
        Ok(None) => return reject(&state, "unknown_account", StatusCode::NOT_FOUND),
        Err(error) => {
            tracing::warn!(%error, "webhook: cannot read the credentials");
            return StatusCode::SERVICE_UNAVAILABLE;
        }
    };
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return reject(&state, "malformed", StatusCode::BAD_REQUEST);
    };
    let timestamp = match &event["timestamp"] {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        _ => headers
            .get("x-zevent-timestamp")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string(),
    };
    let expected = signature(
        &credentials.app_id,
        &body,
        &timestamp,
        &credentials.oa_secret_key,
    );
    if !constant_time_eq(expected.as_bytes(), mac.as_bytes()) {
        return reject(&state, "forged", StatusCode::UNAUTHORIZED);
    }
    let published = match map_event(&account_id, &event) {
        Mapped::Events(mut events) => {
            // The contact a new customer creates gets their Zalo name, not just an id.
            for (_, payload) in &mut events {
                if let Some(user) = channel_user(payload)
                    && user.display_name.is_empty()
                    && let Some(profile) = state
                        .oa
                        .profile(&tenant_id, &account_id, &user.external_user_id)
                        .await
                {
                    user.display_name = profile.display_name;
                    user.avatar_url = profile.avatar_url;
                }
            }
            let mut result = Ok(());
            for (event_id, payload) in events {
                if let Err(error) = state.publisher.publish(&tenant_id, event_id, payload).await {
                    result = Err(error.to_string());
                    break;
                }
            }
            result
        }
        Mapped::Raw(name) => state
            .raw
            .keep(&tenant_id, &account_id, &name, &body)
            .await
            .map_err(|error| error.to_string()),
        // Signed by Zalo but missing what giao needs: a 4xx would only make Zalo retry the
        // same body and then disable the webhook, so it is kept raw for a look and counted.
        Mapped::Malformed => {
            let name = event["event_name"].as_str().unwrap_or_default();
            tracing::warn!(account = %account_id, event = %name, "webhook: incomplete event kept raw");
            count(&state, "incomplete");
            state
                .raw
                .keep(&tenant_id, &account_id, name, &body)
                .await
                .map_err(|error| error.to_string())
        }
    };
    match published {
        Ok(()) => StatusCode::OK,
        Err(error) => {
            // Not durable: Zalo retries, and the dedupe ids make the retry safe.
            tracing::warn!(%error, "webhook: event not published, Zalo will retry");
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

/// The customer an event is about, when it names one.
fn channel_user(payload: &mut Payload) -> Option<&mut ChannelUser> {
    match payload {
        Payload::MessageReceived(received) => received.customer.as_mut(),
        Payload::FollowChanged(changed) => changed.user.as_mut(),
        _ => None,
    }
    .filter(|user| !user.external_user_id.is_empty())
}

/// What a webhook event becomes.
#[derive(Debug)]
pub enum Mapped {
    /// Bus events with their deterministic ids.
    Events(Vec<(String, Payload)>),
    /// An event name giao does not model: kept raw for later.
    Raw(String),
    /// A known event without the fields it needs.
    Malformed,
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        _ => String::new(),
    }
}

fn timestamp(event: &Value) -> prost_types::Timestamp {
    let millis = text(&event["timestamp"])
        .parse::<i64>()
        .unwrap_or_else(|_| Utc::now().timestamp_millis());
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// Maps one Zalo webhook event onto giao's events. Pure, so every shape is unit-tested.
pub fn map_event(account_id: &str, event: &Value) -> Mapped {
    let name = text(&event["event_name"]);
    let at = timestamp(event);
    let sender = text(&event["sender"]["id"]);
    let recipient = text(&event["recipient"]["id"]);
    let message = &event["message"];
    if let Some(kind) = name.strip_prefix("user_send_") {
        let msg_id = text(&message["msg_id"]);
        if msg_id.is_empty() || sender.is_empty() {
            return Mapped::Malformed;
        }
        let received = events::MessageReceived {
            channel_account_id: account_id.to_string(),
            channel_kind: ChannelKind::ZaloOa as i32,
            external_message_id: msg_id.clone(),
            external_thread_id: sender.clone(),
            thread_kind: common::ThreadKind::Direct as i32,
            customer: Some(ChannelUser {
                external_user_id: sender.clone(),
                ..Default::default()
            }),
            direction: common::Direction::Inbound as i32,
            sender_kind: common::SenderKind::Customer as i32,
            sender_external_id: sender,
            content: Some(content(kind, message)),
            sent_at: Some(at),
            channel_event: name.clone(),
            quote_external_id: text(&message["quote_msg_id"]),
            ..Default::default()
        };
        return Mapped::Events(vec![(
            received_id(account_id, &msg_id),
            Payload::MessageReceived(received),
        )]);
    }
    if let Some(kind) = name.strip_prefix("oa_send_") {
        // Sent by the OA from elsewhere (e.g. Zalo's own OA tool): the customer is the
        // recipient, the sender an OA admin when Zalo says which.
        let msg_id = text(&message["msg_id"]);
        if msg_id.is_empty() || recipient.is_empty() {
            return Mapped::Malformed;
        }
        let admin = text(&event["sender"]["admin_id"]);
        let received = events::MessageReceived {
            channel_account_id: account_id.to_string(),
            channel_kind: ChannelKind::ZaloOa as i32,
            external_message_id: msg_id.clone(),
            external_thread_id: recipient.clone(),
            thread_kind: common::ThreadKind::Direct as i32,
            customer: Some(ChannelUser {
                external_user_id: recipient,
                ..Default::default()
            }),
            direction: common::Direction::Outbound as i32,
            sender_kind: common::SenderKind::AccountOwner as i32,
            sender_external_id: if admin.is_empty() { sender } else { admin },
            content: Some(content(kind, message)),
            sent_at: Some(at),
            channel_event: name.clone(),
            ..Default::default()
        };
        return Mapped::Events(vec![(
            received_id(account_id, &msg_id),
            Payload::MessageReceived(received),
        )]);
    }
    match name.as_str() {
        "user_seen_message" | "user_received_message" => {
            let status = if name == "user_seen_message" {
                DeliveryStatus::Seen
            } else {
                DeliveryStatus::Delivered
            };
            let ids: Vec<String> = match &message["msg_ids"] {
                Value::Array(ids) => ids.iter().map(text).filter(|id| !id.is_empty()).collect(),
                _ => Vec::new(),
            };
            if ids.is_empty() {
                return Mapped::Malformed;
            }
            Mapped::Events(
                ids.into_iter()
                    .map(|id| {
                        (
                            format!("zalo-oa-{}-{account_id}-{id}", status.as_str_name()),
                            Payload::DeliveryUpdated(events::DeliveryUpdated {
                                channel_account_id: account_id.to_string(),
                                external_message_id: id,
                                status: status as i32,
                                at: Some(at),
                                ..Default::default()
                            }),
                        )
                    })
                    .collect(),
            )
        }
        "user_reacted_message" => {
            let msg_id = text(&message["msg_id"]);
            let icon = text(&message["react_icon"]);
            if msg_id.is_empty() {
                return Mapped::Malformed;
            }
            Mapped::Events(vec![(
                format!("zalo-oa-react-{account_id}-{msg_id}-{sender}-{icon}"),
                Payload::ReactionAdded(events::ReactionAdded {
                    channel_account_id: account_id.to_string(),
                    external_message_id: msg_id,
                    reactor_external_id: sender,
                    reaction: icon,
                    at: Some(at),
                }),
            )])
        }
        "follow" | "unfollow" => {
            let follower = text(&event["follower"]["id"]);
            if follower.is_empty() {
                return Mapped::Malformed;
            }
            Mapped::Events(vec![(
                format!(
                    "zalo-oa-{name}-{account_id}-{follower}-{}",
                    text(&event["timestamp"])
                ),
                Payload::FollowChanged(events::FollowChanged {
                    channel_account_id: account_id.to_string(),
                    user: Some(ChannelUser {
                        external_user_id: follower,
                        ..Default::default()
                    }),
                    following: name == "follow",
                    source: text(&event["source"]),
                    at: Some(at),
                }),
            )])
        }
        _ => Mapped::Raw(name),
    }
}

/// The dedupe id of a captured message: the account and Zalo's message id.
pub fn received_id(account_id: &str, msg_id: &str) -> String {
    format!("received-{account_id}-{msg_id}")
}

/// Normalises Zalo message content (`kind` is the event name's suffix, e.g. "image").
fn content(kind: &str, message: &Value) -> MessageContent {
    let body = text(&message["text"]);
    let first = &message["attachments"][0];
    let payload = &first["payload"];
    let attachments = |message: &Value| -> Vec<Attachment> {
        match &message["attachments"] {
            Value::Array(items) => items
                .iter()
                .map(|item| {
                    let p = &item["payload"];
                    Attachment {
                        url: text(&p["url"]),
                        thumbnail_url: text(&p["thumbnail"]),
                        name: text(&p["name"]),
                        size_bytes: text(&p["size"]).parse().unwrap_or(0),
                        checksum: text(&p["checksum"]),
                        mime_type: text(&p["type"]),
                        description: text(&p["description"]),
                        ..Default::default()
                    }
                })
                .collect(),
            _ => Vec::new(),
        }
    };
    let mut content = MessageContent {
        text: body,
        ..Default::default()
    };
    let content_type = match kind {
        "text" => ContentType::Text,
        "image" => {
            content.attachments = attachments(message);
            ContentType::Image
        }
        "gif" => {
            content.attachments = attachments(message);
            ContentType::Gif
        }
        "file" => {
            content.attachments = attachments(message);
            ContentType::File
        }
        "audio" => {
            content.attachments = attachments(message);
            ContentType::Audio
        }
        "video" => {
            content.attachments = attachments(message);
            ContentType::Video
        }
        "sticker" => {
            content.sticker_id = text(&payload["id"]);
            content.attachments = attachments(message);
            ContentType::Sticker
        }
        "link" => {
            content.link = Some(Link {
                url: text(&payload["url"]),
                description: text(&payload["description"]),
                thumbnail_url: text(&payload["thumbnail"]),
                title: text(&payload["title"]),
            });
            ContentType::Link
        }
        "location" => {
            let coordinates = &payload["coordinates"];
            let number = |value: &Value| {
                value
                    .as_f64()
                    .or_else(|| text(value).parse().ok())
                    .unwrap_or(0.0)
            };
            content.location = Some(Location {
                latitude: number(&coordinates["latitude"]),
                longitude: number(&coordinates["longitude"]),
                address: String::new(),
            });
            ContentType::Location
        }
        "business_card" => {
            content.business_card = Some(BusinessCard {
                display_name: text(&payload["title"]),
                avatar_url: text(&payload["thumbnail"]),
                ..Default::default()
            });
            ContentType::BusinessCard
        }
        _ => ContentType::Unknown,
    };
    content.r#type = content_type as i32;
    // Whatever was not modelled stays available.
    if content_type == ContentType::Unknown
        || matches!(content_type, ContentType::BusinessCard | ContentType::Link)
    {
        content.raw_json = message.to_string();
    }
    content
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn signature_is_plain_sha256_of_the_documented_concatenation() {
        let mac = signature("app", b"{}", "123", "secret");
        let mut hash = Sha256::new();
        hash.update(b"app{}123secret");
        assert_eq!(mac, format!("mac={}", hex::encode(hash.finalize())));
        assert!(constant_time_eq(mac.as_bytes(), mac.as_bytes()));
        assert!(!constant_time_eq(mac.as_bytes(), b"mac=00"));
    }

    #[test]
    fn maps_each_event_type() {
        let image = json!({"event_name":"user_send_image","sender":{"id":"u1"},"recipient":{"id":"oa"},
            "message":{"msg_id":"m1","text":"xem","attachments":[{"type":"image","payload":{"url":"http://x/i.jpg","thumbnail":"http://x/t.jpg"}}]},
            "timestamp":"1700000000123"});
        let Mapped::Events(events) = map_event("acc", &image) else {
            panic!("image maps")
        };
        assert_eq!(events[0].0, "received-acc-m1");
        let Payload::MessageReceived(received) = &events[0].1 else {
            panic!("a message")
        };
        let content = received.content.as_ref().expect("content");
        assert_eq!(content.r#type, ContentType::Image as i32);
        assert_eq!(content.attachments[0].url, "http://x/i.jpg");
        assert_eq!(received.sent_at.expect("at").nanos, 123_000_000);

        let oa = json!({"event_name":"oa_send_text","sender":{"id":"oa","admin_id":"ad1"},"recipient":{"id":"u1"},
            "message":{"msg_id":"m2","text":"hi"},"timestamp":"1"});
        let Mapped::Events(events) = map_event("acc", &oa) else {
            panic!("oa maps")
        };
        let Payload::MessageReceived(received) = &events[0].1 else {
            panic!("a message")
        };
        assert_eq!(received.direction, common::Direction::Outbound as i32);
        assert_eq!(received.external_thread_id, "u1");
        assert_eq!(received.sender_external_id, "ad1");

        let seen = json!({"event_name":"user_seen_message","sender":{"id":"u1"},"message":{"msg_ids":["a","b"]},"timestamp":"1"});
        let Mapped::Events(events) = map_event("acc", &seen) else {
            panic!("seen maps")
        };
        assert_eq!(events.len(), 2);

        let follow = json!({"event_name":"follow","oa_id":"oa","follower":{"id":"u9"},"source":"qr_code","timestamp":"5"});
        let Mapped::Events(events) = map_event("acc", &follow) else {
            panic!("follow maps")
        };
        let Payload::FollowChanged(changed) = &events[0].1 else {
            panic!("follow")
        };
        assert!(changed.following);
        assert_eq!(changed.source, "qr_code");

        assert!(matches!(
            map_event("acc", &json!({"event_name":"user_withdraw"})),
            Mapped::Raw(name) if name == "user_withdraw"
        ));
        assert!(matches!(
            map_event("acc", &json!({"event_name":"user_send_text","message":{}})),
            Mapped::Malformed
        ));
    }
}
