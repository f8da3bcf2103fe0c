//! The `simulator` channel kind: scripted customers chatting with simulator accounts, for
//! demos (`giao dev`), tests and load tests. What it captures goes through exactly the path
//! a Zalo message takes: a `MessageReceived` event published with a dedupe id before
//! anything else happens.

use std::time::Duration;

use chrono::Utc;
use giao_bus::envelope::EventPublisher;
use giao_proto::{
    common::{self, ChannelKind, ChannelUser, MessageContent},
    events::{self, envelope::Payload},
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::{
    error::Error,
    store::{AccountRecord, AccountStore},
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulatorConfig {
    /// Feed demo conversations into `demo_tenant`.
    pub demo: bool,
    pub demo_tenant: String,
    /// Pause between two demo messages.
    pub demo_interval_ms: u64,
    /// Stop after this many demo messages (0 = never).
    pub demo_messages: u64,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            demo: false,
            demo_tenant: "demo".into(),
            demo_interval_ms: 3_000,
            demo_messages: 0,
        }
    }
}

/// The demo account every `giao dev` starts with.
pub const DEMO_ACCOUNT: &str = "sim-demo";

#[derive(Debug, Clone)]
pub struct Simulator {
    accounts: AccountStore,
    publisher: EventPublisher,
}

/// What a simulated inbound message produced.
#[derive(Debug, Clone)]
pub struct Simulated {
    pub external_message_id: String,
    pub event_id: String,
}

impl Simulator {
    pub fn new(accounts: AccountStore, publisher: EventPublisher) -> Self {
        Self {
            accounts,
            publisher,
        }
    }

    /// A customer of a simulator account sends `content`.
    pub async fn inbound(
        &self,
        tenant_id: &str,
        channel_account_id: &str,
        customer: ChannelUser,
        content: MessageContent,
        external_message_id: Option<String>,
    ) -> Result<Simulated, Error> {
        let account = self
            .accounts
            .get(tenant_id, channel_account_id)
            .await?
            .filter(|account| account.kind == ChannelKind::Simulator as i32 && !account.disabled)
            .ok_or_else(|| Error::NotFound {
                what: "simulator account",
                id: channel_account_id.to_string(),
            })?;
        let external_message_id =
            external_message_id.unwrap_or_else(|| format!("sim-{}", uuid::Uuid::now_v7()));
        // Deterministic: a retried call publishes the same event id, which the bus dedupes.
        let event_id = format!("received-{}-{}", account.id, external_message_id);
        let now = Utc::now();
        let thread = customer.external_user_id.clone();
        self.publisher
            .publish(
                tenant_id,
                event_id.clone(),
                Payload::MessageReceived(events::MessageReceived {
                    channel_account_id: account.id.clone(),
                    channel_kind: ChannelKind::Simulator as i32,
                    external_message_id: external_message_id.clone(),
                    external_thread_id: thread,
                    thread_kind: common::ThreadKind::Direct as i32,
                    sender_external_id: customer.external_user_id.clone(),
                    customer: Some(customer),
                    direction: common::Direction::Inbound as i32,
                    sender_kind: common::SenderKind::Customer as i32,
                    content: Some(content),
                    sent_at: Some(prost_types::Timestamp {
                        seconds: now.timestamp(),
                        nanos: now.timestamp_subsec_nanos() as i32,
                    }),
                    channel_event: "simulator_text".into(),
                    ..Default::default()
                }),
            )
            .await?;
        Ok(Simulated {
            external_message_id,
            event_id,
        })
    }

    /// The scripted customer `customer_id` answers a reply, with `external_message_id`
    /// (the same id publishes the same event, which the bus dedupes).
    pub async fn answer(
        &self,
        tenant_id: &str,
        channel_account_id: &str,
        customer_id: &str,
        external_message_id: String,
    ) -> Result<Simulated, Error> {
        let name = CUSTOMERS
            .iter()
            .find(|(id, _)| *id == customer_id)
            .map(|(_, name)| *name)
            .unwrap_or_default();
        // The same reply always gets the same answer.
        let pick = external_message_id.bytes().fold(0usize, |acc, byte| {
            acc.wrapping_mul(31).wrapping_add(byte.into())
        });
        let customer = ChannelUser {
            external_user_id: customer_id.to_string(),
            display_name: name.to_string(),
            ..Default::default()
        };
        let content = MessageContent {
            r#type: common::ContentType::Text as i32,
            text: ANSWERS[pick % ANSWERS.len()].into(),
            ..Default::default()
        };
        self.inbound(
            tenant_id,
            channel_account_id,
            customer,
            content,
            Some(external_message_id),
        )
        .await
    }

    /// Ensures the demo account exists in `tenant_id`.
    pub async fn ensure_demo_account(&self, tenant_id: &str) -> Result<AccountRecord, Error> {
        Ok(self
            .accounts
            .ensure(&AccountRecord {
                id: DEMO_ACCOUNT.into(),
                tenant_id: tenant_id.into(),
                kind: ChannelKind::Simulator as i32,
                display_name: "Demo shop (simulator)".into(),
                status: events::AccountStatus::Connected as i32,
            })
            .await?)
    }
}

/// Scripted customers and what they say, in the order they say it.
const CUSTOMERS: &[(&str, &str)] = &[
    ("cust-lan", "Nguyễn Thị Lan"),
    ("cust-minh", "Trần Văn Minh"),
    ("cust-hoa", "Lê Thị Hoa"),
];

const LINES: &[&str] = &[
    "Chào shop, mình muốn hỏi giá sản phẩm này ạ",
    "Shop còn hàng size M không?",
    "Giao hàng về Đà Nẵng mất mấy ngày vậy shop?",
    "Mình chuyển khoản rồi nhé, shop kiểm tra giúp",
    "Cảm ơn shop nhiều!",
];

/// What a scripted customer says when a reply asks something.
const ANSWERS: &[&str] = &[
    "Dạ vâng, shop tư vấn giúp mình nhé",
    "Mình lấy size M, màu xanh ạ",
    "Có ạ, mình cần giao trước thứ Bảy",
];

/// Feeds demo conversations until `stop` (or `config.demo_messages` messages).
pub async fn feed_demo(
    simulator: Simulator,
    config: SimulatorConfig,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    simulator.ensure_demo_account(&config.demo_tenant).await?;
    let interval = Duration::from_millis(config.demo_interval_ms.max(10));
    let mut sent = 0u64;
    loop {
        if config.demo_messages > 0 && sent >= config.demo_messages {
            return Ok(());
        }
        let (id, name) = CUSTOMERS[(sent as usize) % CUSTOMERS.len()];
        let line = LINES[(sent as usize / CUSTOMERS.len()) % LINES.len()];
        let customer = ChannelUser {
            external_user_id: id.into(),
            display_name: name.into(),
            ..Default::default()
        };
        let content = MessageContent {
            r#type: common::ContentType::Text as i32,
            text: line.into(),
            ..Default::default()
        };
        if let Err(error) = simulator
            .inbound(&config.demo_tenant, DEMO_ACCOUNT, customer, content, None)
            .await
        {
            tracing::warn!(%error, "demo message not sent, retrying later");
        } else {
            sent += 1;
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
