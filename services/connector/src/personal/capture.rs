//! Listener events → giao events. Pure, so every shape is unit-tested. Event ids are
//! deterministic (account + Zalo's msgId, the OA webhook's scheme), so a message delivered
//! twice (a gap fill after a reconnect, a new listener on another replica) dedupes on the bus
//! and in message-store.

use giao_proto::{
    common::{self, Attachment, ChannelKind, ChannelUser, ContentType, DeliveryStatus},
    events::{self, envelope::Payload},
};
use serde_json::Value;
use zalo_personal::events::{Content, Event, Message, ThreadKind};

use crate::zalo::webhook::received_id;

/// What one listener event becomes.
#[derive(Debug)]
pub enum Captured {
    /// Bus events with their deterministic ids.
    Events(Vec<(String, Payload)>),
    /// Something giao does not model: kept raw under this name.
    Raw(String, Value),
    /// Nothing to keep (the cipher key, an undecodable item already logged).
    Nothing,
}

fn timestamp(millis: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn thread_kind(kind: ThreadKind) -> i32 {
    match kind {
        ThreadKind::Direct => common::ThreadKind::Direct as i32,
        ThreadKind::Group => common::ThreadKind::Group as i32,
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        _ => String::new(),
    }
}

/// Maps one listener event of the account `account_id`, whose Zalo uid is `owner_uid`.
pub fn map_event(account_id: &str, owner_uid: &str, event: &Event) -> Captured {
    let who = |uid: &str, from_self: bool| {
        if from_self {
            owner_uid.to_string()
        } else {
            uid.to_string()
        }
    };
    match event {
        Event::Message(message) => Captured::Events(vec![(
            received_id(account_id, &message.msg_id),
            Payload::MessageReceived(received(account_id, owner_uid, message)),
        )]),
        Event::Recall(recall) => {
            if recall.recalled_msg_id.is_empty() {
                return Captured::Raw("personal_recall_without_id".into(), recall.raw.clone());
            }
            Captured::Events(vec![(
                format!("recalled-{account_id}-{}", recall.recalled_msg_id),
                Payload::MessageRecalled(events::MessageRecalled {
                    channel_account_id: account_id.to_string(),
                    external_message_id: recall.recalled_msg_id.clone(),
                    recalled_by_external_id: who(&recall.uid_from, recall.from_self),
                    recalled_at: Some(timestamp(recall.ts_ms)),
                    message_id: String::new(),
                }),
            )])
        }
        Event::Reaction(reaction) => {
            let reactor = who(&reaction.uid_from, reaction.from_self);
            Captured::Events(
                reaction
                    .target_msg_ids
                    .iter()
                    .map(|target| {
                        (
                            format!(
                                "zalo-personal-react-{account_id}-{target}-{reactor}-{}",
                                reaction.icon
                            ),
                            Payload::ReactionAdded(events::ReactionAdded {
                                channel_account_id: account_id.to_string(),
                                external_message_id: target.clone(),
                                reactor_external_id: reactor.clone(),
                                reaction: reaction.icon.clone(),
                                at: Some(timestamp(reaction.ts_ms)),
                            }),
                        )
                    })
                    .collect(),
            )
        }
        Event::Delivered(receipt) | Event::Seen(receipt) => {
            let status = if matches!(event, Event::Seen(_)) {
                DeliveryStatus::Seen
            } else {
                DeliveryStatus::Delivered
            };
            Captured::Events(vec![(
                format!(
                    "zalo-personal-{}-{account_id}-{}",
                    status.as_str_name(),
                    receipt.msg_id
                ),
                Payload::DeliveryUpdated(events::DeliveryUpdated {
                    channel_account_id: account_id.to_string(),
                    external_message_id: receipt.msg_id.clone(),
                    status: status as i32,
                    ..Default::default()
                }),
            )])
        }
        Event::Control { act_type, raw, .. } => {
            Captured::Raw(format!("personal_control_{act_type}"), raw.clone())
        }
        // Kept raw under the names they had as plain control notices.
        Event::Friend(friend) => Captured::Raw("personal_control_fr".into(), friend.raw.clone()),
        Event::Group(group) => Captured::Raw("personal_control_group".into(), group.raw.clone()),
        Event::Unknown { cmd, payload, .. } => {
            Captured::Raw(format!("personal_cmd_{cmd}"), payload.clone())
        }
        // Logged by the listener path (never the content); nothing usable to keep.
        Event::Invalid { .. } | Event::CipherKey(_) | Event::DuplicateSession => Captured::Nothing,
    }
}

/// A message in the common shape. Messages the owner typed on the phone (`from_self`) are
/// outbound, sent by the account owner; in a direct thread the customer is the other side.
pub fn received(account_id: &str, owner_uid: &str, message: &Message) -> events::MessageReceived {
    let customer = match (message.thread_kind, message.from_self) {
        (_, false) => Some(ChannelUser {
            external_user_id: message.uid_from.clone(),
            display_name: message.display_name.clone().unwrap_or_default(),
            ..Default::default()
        }),
        (ThreadKind::Direct, true) => Some(ChannelUser {
            external_user_id: message.thread_id.clone(),
            ..Default::default()
        }),
        // The owner wrote in a group: no one customer.
        (ThreadKind::Group, true) => None,
    };
    let (direction, sender_kind, sender) = if message.from_self {
        (
            common::Direction::Outbound,
            common::SenderKind::AccountOwner,
            owner_uid.to_string(),
        )
    } else {
        (
            common::Direction::Inbound,
            common::SenderKind::Customer,
            message.uid_from.clone(),
        )
    };
    events::MessageReceived {
        channel_account_id: account_id.to_string(),
        channel_kind: ChannelKind::ZaloPersonal as i32,
        external_message_id: message.msg_id.clone(),
        external_thread_id: message.thread_id.clone(),
        thread_kind: thread_kind(message.thread_kind),
        customer,
        direction: direction as i32,
        sender_kind: sender_kind as i32,
        sender_external_id: sender,
        content: Some(content(message)),
        quote_external_id: message
            .quote
            .as_ref()
            .map(|quote| text(&quote["globalMsgId"]))
            .unwrap_or_default(),
        sent_at: Some(timestamp(message.ts_ms)),
        channel_event: format!("personal_{}", message.msg_type),
        group_name: String::new(),
    }
}

/// Text as text; the attachment kinds the web client names by `msgType` with their URL;
/// anything else kept raw (`raw_json`) as an unknown type, so nothing is dropped.
fn content(message: &Message) -> common::MessageContent {
    let object = match &message.content {
        Content::Text(body) => {
            return common::MessageContent {
                r#type: ContentType::Text as i32,
                text: body.clone(),
                ..Default::default()
            };
        }
        Content::Object(object) => object,
    };
    let kind = match message.msg_type.as_str() {
        "chat.photo" => ContentType::Image,
        "chat.gif" => ContentType::Gif,
        "chat.sticker" => ContentType::Sticker,
        "chat.voice" => ContentType::Audio,
        "chat.video.msg" => ContentType::Video,
        "share.file" => ContentType::File,
        "chat.recommended" | "chat.link" => ContentType::Link,
        "chat.location.new" => ContentType::Location,
        _ => ContentType::Unknown,
    };
    let url = text(&object["href"]);
    let attachments = if url.is_empty() {
        Vec::new()
    } else {
        vec![Attachment {
            url,
            thumbnail_url: text(&object["thumb"]),
            name: text(&object["title"]),
            description: text(&object["description"]),
            ..Default::default()
        }]
    };
    common::MessageContent {
        r#type: kind as i32,
        text: text(&object["title"]),
        attachments,
        sticker_id: if kind == ContentType::Sticker {
            text(&object["id"])
        } else {
            String::new()
        },
        raw_json: object.to_string(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use zalo_personal::events::{Reaction, Recall, Receipt};

    use super::*;

    fn message(from_self: bool, kind: ThreadKind) -> Message {
        Message {
            thread_kind: kind,
            // A direct thread is the customer's, whoever wrote.
            thread_id: if kind == ThreadKind::Group {
                "g-1".into()
            } else {
                "cust-1".into()
            },
            msg_id: "7001".into(),
            cli_msg_id: "c1".into(),
            msg_type: "webchat".into(),
            uid_from: if from_self {
                "0".into()
            } else {
                "cust-1".into()
            },
            from_self,
            id_to: if from_self {
                "cust-1".into()
            } else {
                "owner".into()
            },
            display_name: Some("Lan".into()),
            ts_ms: 1_732_300_000_123,
            content: Content::Text("Chào shop".into()),
            quote: Some(json!({"globalMsgId": "6999"})),
            raw: json!({}),
        }
    }

    fn only(captured: Captured) -> (String, Payload) {
        match captured {
            Captured::Events(mut events) if events.len() == 1 => events.remove(0),
            other => panic!("one event expected, got {other:?}"),
        }
    }

    #[test]
    fn inbound_and_phone_typed_messages_have_directions_and_dedupe_ids() {
        let (id, payload) = only(map_event(
            "acc-1",
            "owner",
            &Event::Message(Box::new(message(false, ThreadKind::Direct))),
        ));
        assert_eq!(id, "received-acc-1-7001");
        let Payload::MessageReceived(inbound) = payload else {
            panic!("a message")
        };
        assert_eq!(inbound.direction, common::Direction::Inbound as i32);
        assert_eq!(inbound.external_thread_id, "cust-1");
        assert_eq!(inbound.customer.expect("customer").display_name, "Lan");
        assert_eq!(inbound.quote_external_id, "6999");
        assert_eq!(inbound.sent_at.expect("time").nanos, 123_000_000);

        let (_, payload) = only(map_event(
            "acc-1",
            "owner",
            &Event::Message(Box::new(message(true, ThreadKind::Direct))),
        ));
        let Payload::MessageReceived(typed) = payload else {
            panic!("a message")
        };
        assert_eq!(typed.direction, common::Direction::Outbound as i32);
        assert_eq!(typed.sender_kind, common::SenderKind::AccountOwner as i32);
        assert_eq!(typed.sender_external_id, "owner");
        assert_eq!(typed.external_thread_id, "cust-1");
        assert_eq!(typed.customer.expect("customer").external_user_id, "cust-1");

        let (_, payload) = only(map_event(
            "acc-1",
            "owner",
            &Event::Message(Box::new(message(false, ThreadKind::Group))),
        ));
        let Payload::MessageReceived(group) = payload else {
            panic!("a message")
        };
        assert_eq!(group.thread_kind, common::ThreadKind::Group as i32);
        assert_eq!(group.external_thread_id, "g-1");
        assert_eq!(group.sender_external_id, "cust-1");
    }

    #[test]
    fn photos_keep_their_url_and_unknown_kinds_stay_raw() {
        let mut photo = message(false, ThreadKind::Direct);
        photo.msg_type = "chat.photo".into();
        photo.content =
            Content::Object(json!({"href": "https://f/1.jpg", "thumb": "https://f/t.jpg"}));
        let content = received("a", "o", &photo).content.expect("content");
        assert_eq!(content.r#type, ContentType::Image as i32);
        assert_eq!(content.attachments[0].url, "https://f/1.jpg");
        let mut odd = message(false, ThreadKind::Direct);
        odd.msg_type = "chat.todo".into();
        odd.content = Content::Object(json!({"x": 1}));
        let content = received("a", "o", &odd).content.expect("content");
        assert_eq!(content.r#type, ContentType::Unknown as i32);
        assert!(content.raw_json.contains("\"x\""));
    }

    #[test]
    fn recalls_reactions_and_receipts() {
        let recall = Event::Recall(Box::new(Recall {
            thread_kind: ThreadKind::Direct,
            thread_id: "cust-1".into(),
            msg_id: "7005".into(),
            uid_from: "cust-1".into(),
            from_self: false,
            id_to: "owner".into(),
            ts_ms: 1_000,
            recalled_msg_id: "7001".into(),
            recalled_cli_msg_id: "c1".into(),
            raw: json!({}),
        }));
        let (id, payload) = only(map_event("acc-1", "owner", &recall));
        assert_eq!(id, "recalled-acc-1-7001");
        let Payload::MessageRecalled(recalled) = payload else {
            panic!("a recall")
        };
        assert_eq!(recalled.external_message_id, "7001");
        assert_eq!(recalled.recalled_by_external_id, "cust-1");

        let reaction = Event::Reaction(Box::new(Reaction {
            thread_kind: ThreadKind::Direct,
            thread_id: "cust-1".into(),
            msg_id: "7006".into(),
            uid_from: "0".into(),
            from_self: true,
            id_to: "cust-1".into(),
            ts_ms: 1_000,
            icon: "/-heart".into(),
            target_msg_ids: vec!["7001".into()],
            raw: json!({}),
        }));
        let (_, payload) = only(map_event("acc-1", "owner", &reaction));
        let Payload::ReactionAdded(added) = payload else {
            panic!("a reaction")
        };
        assert_eq!(added.reactor_external_id, "owner");

        let seen = Event::Seen(Box::new(Receipt {
            thread_kind: ThreadKind::Direct,
            thread_id: Some("cust-1".into()),
            msg_id: "7002".into(),
            uids: vec![],
            raw: json!({}),
        }));
        let (id, payload) = only(map_event("acc-1", "owner", &seen));
        assert_eq!(id, "zalo-personal-DELIVERY_STATUS_SEEN-acc-1-7002");
        let Payload::DeliveryUpdated(update) = payload else {
            panic!("a delivery update")
        };
        assert_eq!(update.status, DeliveryStatus::Seen as i32);
        assert!(matches!(
            map_event(
                "acc-1",
                "owner",
                &Event::Unknown {
                    cmd: 999,
                    sub_cmd: 0,
                    payload: json!({})
                }
            ),
            Captured::Raw(name, _) if name == "personal_cmd_999"
        ));
    }
}
