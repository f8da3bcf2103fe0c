//! NATS JetStream: one stream holding every `<prefix>.>` subject on file storage, publish
//! dedupe through `Nats-Msg-Id`, durable pull consumers with explicit acks shared by replicas.

use std::time::Duration;

use async_nats::jetstream::{
    self, AckKind,
    consumer::{AckPolicy, pull},
    message::PublishMessage,
    stream::{self, StorageType},
};
use futures::{StreamExt, future::BoxFuture};

use crate::{
    Acker, BusConfig, BusError, ConsumerSpec, Delivery, DeliveryStream, EventBus, Headers,
    OutgoingMessage, PublishAck, Settle,
};

/// The JetStream header carrying the dedupe id.
const MSG_ID_HEADER: &str = "Nats-Msg-Id";

pub struct NatsBus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    stream: stream::Stream,
    prefix: String,
    url: String,
}

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus").field("url", &self.url).finish()
    }
}

impl NatsBus {
    pub async fn connect(config: &BusConfig) -> Result<Self, BusError> {
        let connect_error = |cause: String| BusError::Connect {
            what: "NATS",
            url: config.url.clone(),
            cause,
        };
        let timeout = Duration::from_secs(config.connect_timeout_secs.max(1));
        let options = async_nats::ConnectOptions::new()
            .connection_timeout(timeout)
            .name("giao");
        let client = tokio::time::timeout(timeout, options.connect(config.url.as_str()))
            .await
            .map_err(|_| connect_error(format!("no answer within {}s", timeout.as_secs())))?
            .map_err(|error| connect_error(error.to_string()))?;
        let jetstream = jetstream::new(client.clone());
        let stream = jetstream
            .get_or_create_stream(stream::Config {
                name: config.stream.clone(),
                subjects: vec![format!("{}.>", config.prefix)],
                storage: StorageType::File,
                duplicate_window: Duration::from_secs(config.duplicate_window_secs),
                max_age: Duration::from_secs(config.max_age_days.max(1) * 24 * 3600),
                ..Default::default()
            })
            .await
            .map_err(|error| {
                connect_error(format!("JetStream stream {}: {error}", config.stream))
            })?;
        Ok(Self {
            client,
            jetstream,
            stream,
            prefix: config.prefix.clone(),
            url: config.url.clone(),
        })
    }

    /// Deletes the stream (tests clean up after themselves with this).
    pub async fn delete_stream(&self) -> Result<(), BusError> {
        let name = self.stream.cached_info().config.name.clone();
        self.jetstream
            .delete_stream(&name)
            .await
            .map(|_| ())
            .map_err(|error| BusError::Unavailable(error.to_string()))
    }

    fn absolute(&self, subject: &str) -> String {
        format!("{}.{subject}", self.prefix)
    }
}

impl EventBus for NatsBus {
    fn publish(&self, message: OutgoingMessage) -> BoxFuture<'_, Result<PublishAck, BusError>> {
        Box::pin(async move {
            let mut headers = async_nats::HeaderMap::new();
            for (key, value) in &message.headers {
                headers.insert(key.as_str(), value.as_str());
            }
            let publish = PublishMessage::build()
                .payload(message.payload)
                .headers(headers)
                .message_id(message.msg_id.as_str());
            let ack = self
                .jetstream
                .send_publish(self.absolute(&message.subject), publish)
                .await
                .map_err(|error| BusError::Publish(error.to_string()))?
                .await
                .map_err(|error| BusError::Publish(error.to_string()))?;
            Ok(PublishAck {
                sequence: ack.sequence,
                duplicate: ack.duplicate,
            })
        })
    }

    fn subscribe(&self, spec: ConsumerSpec) -> BoxFuture<'_, Result<DeliveryStream, BusError>> {
        Box::pin(async move {
            let mut filters: Vec<String> = spec
                .filter_subjects
                .iter()
                .map(|subject| self.absolute(subject))
                .collect();
            // One filter goes in `filter_subject`, which NATS 2.9 understands too; several
            // need NATS 2.10 or later.
            let (filter_subject, filter_subjects) = if filters.len() == 1 {
                (filters.pop().unwrap_or_default(), Vec::new())
            } else {
                (String::new(), filters)
            };
            let config = pull::Config {
                durable_name: Some(spec.durable_name.clone()),
                filter_subject,
                filter_subjects,
                ack_policy: AckPolicy::Explicit,
                ack_wait: spec.ack_wait,
                max_deliver: spec.max_deliver.map(i64::from).unwrap_or(-1),
                inactive_threshold: spec.inactive_threshold.unwrap_or_default(),
                ..Default::default()
            };
            let consumer = self
                .stream
                .get_or_create_consumer(&spec.durable_name, config)
                .await
                .map_err(|error| BusError::Subscribe(error.to_string()))?;
            // Small batches: whatever is pulled is in flight with its ack timer running, so a
            // replica should not hoard messages another replica could handle.
            let messages = consumer
                .stream()
                .max_messages_per_batch(16)
                .messages()
                .await
                .map_err(|error| BusError::Subscribe(error.to_string()))?;
            let prefix = format!("{}.", self.prefix);
            let deliveries = messages.map(move |next| {
                let message = next.map_err(|error| BusError::Unavailable(error.to_string()))?;
                Ok(to_delivery(&prefix, message))
            });
            Ok(deliveries.boxed())
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            if self.client.connection_state() != async_nats::connection::State::Connected {
                return Err(BusError::Unavailable(format!(
                    "not connected to {}",
                    self.url
                )));
            }
            tokio::time::timeout(Duration::from_secs(2), self.client.flush())
                .await
                .map_err(|_| BusError::Unavailable("NATS did not answer within 2s".into()))?
                .map_err(|error| BusError::Unavailable(error.to_string()))
        })
    }
}

fn to_delivery(prefix: &str, message: jetstream::Message) -> Delivery {
    let subject = message
        .subject
        .as_str()
        .strip_prefix(prefix)
        .unwrap_or(message.subject.as_str())
        .to_string();
    let mut headers = Headers::new();
    let mut msg_id = String::new();
    if let Some(map) = &message.headers {
        for (name, values) in map.iter() {
            let Some(value) = values.first() else {
                continue;
            };
            let name: &str = name.as_ref();
            if name == MSG_ID_HEADER {
                msg_id = value.as_str().to_string();
            } else if !name.starts_with("Nats-") {
                headers.insert(name.to_string(), value.as_str().to_string());
            }
        }
    }
    let delivered_count = message
        .info()
        .map(|info| u32::try_from(info.delivered).unwrap_or(u32::MAX))
        .unwrap_or(1);
    let payload = message.payload.clone();
    Delivery::new(
        subject,
        msg_id,
        headers,
        payload,
        delivered_count,
        Box::new(NatsAcker(message)),
    )
}

struct NatsAcker(jetstream::Message);

impl Acker for NatsAcker {
    fn settle(self: Box<Self>, how: Settle) -> BoxFuture<'static, Result<(), BusError>> {
        Box::pin(async move {
            let kind = match how {
                Settle::Ack => AckKind::Ack,
                Settle::Nak(delay) => AckKind::Nak(delay),
                Settle::Term => AckKind::Term,
            };
            // Double ack waits for the server's confirmation, so an ack is never silently lost.
            let result = if how == Settle::Ack {
                self.0.double_ack().await
            } else {
                self.0.ack_with(kind).await
            };
            result.map_err(|error| BusError::Ack(error.to_string()))
        })
    }
}
