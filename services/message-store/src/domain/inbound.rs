//! Validation of a captured channel message. Every rejection names the field.

use chrono::{DateTime, Utc};
use giao_proto::{common, messagestore::InboundMessage};

use super::{MAX_ID_BYTES, MAX_TEXT_CHARS};

/// A validated inbound (or phone-typed) message, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewInbound {
    pub tenant_id: String,
    pub channel_account_id: String,
    pub channel_kind: i32,
    pub external_message_id: String,
    pub external_thread_id: String,
    pub thread_kind: i32,
    pub customer: common::ChannelUser,
    pub direction: i32,
    pub sender_kind: i32,
    pub sender_external_id: String,
    pub content: common::MessageContent,
    pub quote_external_id: Option<String>,
    pub sent_at: DateTime<Utc>,
    pub group_name: String,
}

impl NewInbound {
    /// The channel user whose contact this message belongs to: the customer who wrote it,
    /// or, for what the account owner typed in a direct thread, the customer the thread is
    /// with. Messages the owner typed in a group belong to no contact.
    pub fn contact_key(&self) -> Option<String> {
        let direct = self.thread_kind != common::ThreadKind::Group as i32;
        let from_customer = self.sender_kind == common::SenderKind::Customer as i32;
        if !direct && !from_customer {
            return None;
        }
        [
            Some(self.customer.external_user_id.as_str()),
            from_customer.then_some(self.sender_external_id.as_str()),
            direct.then_some(self.external_thread_id.as_str()),
        ]
        .into_iter()
        .flatten()
        .find(|id| !id.is_empty())
        .map(str::to_string)
    }

    /// A short text for conversation lists.
    pub fn preview(&self) -> String {
        let text: String = self.content.text.chars().take(120).collect();
        if !text.is_empty() {
            return text;
        }
        let label = common::ContentType::try_from(self.content.r#type)
            .map(|kind| {
                kind.as_str_name()
                    .trim_start_matches("CONTENT_TYPE_")
                    .to_lowercase()
            })
            .unwrap_or_else(|_| "message".into());
        format!("[{label}]")
    }
}

/// Validates `message`, prefixing field names with `prefix` (e.g. `message.` or
/// `messages[3].`), and fills defaults a channel may omit.
pub fn validate(
    tenant_id: &str,
    message: InboundMessage,
    prefix: &str,
    now: DateTime<Utc>,
) -> Result<NewInbound, String> {
    let field = |name: &str| format!("{prefix}{name}");
    let channel_account_id = required_id(&field("channel_account_id"), message.channel_account_id)?;
    let external_message_id =
        required_id(&field("external_message_id"), message.external_message_id)?;
    let external_thread_id = required_id(&field("external_thread_id"), message.external_thread_id)?;
    let mut content = message
        .content
        .ok_or_else(|| format!("missing {}: required", field("content")))?;
    let text_chars = content.text.chars().count();
    if text_chars > MAX_TEXT_CHARS {
        return Err(format!(
            "invalid {}: {text_chars} characters, at most {MAX_TEXT_CHARS}",
            field("content.text")
        ));
    }
    if common::ContentType::try_from(content.r#type).is_err() {
        return Err(format!(
            "invalid {}: unknown content type {}",
            field("content.type"),
            content.r#type
        ));
    }
    if content.r#type == common::ContentType::Unspecified as i32 {
        content.r#type = if content.text.is_empty() {
            common::ContentType::Unknown as i32
        } else {
            common::ContentType::Text as i32
        };
    }
    let direction = match common::Direction::try_from(message.direction) {
        Ok(common::Direction::Unspecified) => common::Direction::Inbound as i32,
        Ok(direction) => direction as i32,
        Err(_) => return Err(format!("invalid {}: unknown direction", field("direction"))),
    };
    let sender_kind = match common::SenderKind::try_from(message.sender_kind) {
        Ok(common::SenderKind::Unspecified) if direction == common::Direction::Inbound as i32 => {
            common::SenderKind::Customer as i32
        }
        Ok(common::SenderKind::Unspecified) => common::SenderKind::AccountOwner as i32,
        Ok(kind) => kind as i32,
        Err(_) => {
            return Err(format!(
                "invalid {}: unknown sender kind",
                field("sender_kind")
            ));
        }
    };
    let thread_kind = match common::ThreadKind::try_from(message.thread_kind) {
        Ok(common::ThreadKind::Unspecified) => common::ThreadKind::Direct as i32,
        Ok(kind) => kind as i32,
        Err(_) => {
            return Err(format!(
                "invalid {}: unknown thread kind",
                field("thread_kind")
            ));
        }
    };
    let sent_at = match message.sent_at {
        Some(timestamp) => {
            DateTime::from_timestamp(timestamp.seconds, timestamp.nanos.max(0) as u32)
                .ok_or_else(|| format!("invalid {}: out of range", field("sent_at")))?
        }
        None => now,
    };
    let customer = message.customer.unwrap_or_default();
    for (name, value) in [
        ("customer.external_user_id", &customer.external_user_id),
        ("customer.display_name", &customer.display_name),
        ("sender_external_id", &message.sender_external_id),
        ("quote_external_id", &message.quote_external_id),
        ("group_name", &message.group_name),
    ] {
        if value.len() > MAX_ID_BYTES {
            return Err(format!(
                "invalid {}: {} bytes, at most {MAX_ID_BYTES}",
                field(name),
                value.len()
            ));
        }
    }
    Ok(NewInbound {
        tenant_id: tenant_id.to_string(),
        channel_account_id,
        channel_kind: message.channel_kind,
        external_message_id,
        external_thread_id,
        thread_kind,
        customer,
        direction,
        sender_kind,
        sender_external_id: message.sender_external_id,
        content,
        quote_external_id: Some(message.quote_external_id).filter(|id| !id.is_empty()),
        sent_at,
        group_name: message.group_name,
    })
}

fn required_id(field: &str, value: String) -> Result<String, String> {
    if value.trim().is_empty() {
        return Err(format!("missing {field}: required"));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(format!(
            "invalid {field}: {} bytes, at most {MAX_ID_BYTES}",
            value.len()
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> InboundMessage {
        InboundMessage {
            channel_account_id: "acc-1".into(),
            external_message_id: "m-1".into(),
            external_thread_id: "u-1".into(),
            content: Some(common::MessageContent {
                text: "Chào shop".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn fills_channel_defaults() {
        let now = Utc::now();
        let inbound = validate("t", sample(), "message.", now).expect("valid");
        assert_eq!(inbound.content.r#type, common::ContentType::Text as i32);
        assert_eq!(inbound.direction, common::Direction::Inbound as i32);
        assert_eq!(inbound.sender_kind, common::SenderKind::Customer as i32);
        assert_eq!(inbound.thread_kind, common::ThreadKind::Direct as i32);
        assert_eq!(inbound.sent_at, now);
        assert_eq!(inbound.preview(), "Chào shop");
    }

    #[test]
    fn rejections_name_the_field() {
        let mut missing = sample();
        missing.external_message_id.clear();
        let error = validate("t", missing, "message.", Utc::now()).expect_err("invalid");
        assert_eq!(error, "missing message.external_message_id: required");

        let mut long = sample();
        long.content = Some(common::MessageContent {
            text: "a".repeat(MAX_TEXT_CHARS + 1),
            ..Default::default()
        });
        let error = validate("t", long, "messages[2].", Utc::now()).expect_err("invalid");
        assert!(
            error.starts_with("invalid messages[2].content.text"),
            "{error}"
        );

        let mut no_content = sample();
        no_content.content = None;
        let error = validate("t", no_content, "message.", Utc::now()).expect_err("invalid");
        assert_eq!(error, "missing message.content: required");
    }

    #[test]
    fn phone_typed_messages_are_the_account_owner() {
        let mut typed = sample();
        typed.direction = common::Direction::Outbound as i32;
        let inbound = validate("t", typed, "", Utc::now()).expect("valid");
        assert_eq!(inbound.sender_kind, common::SenderKind::AccountOwner as i32);
    }
}
