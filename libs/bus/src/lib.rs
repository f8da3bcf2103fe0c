//! The event bus: domain events and commands between services, durable and at-least-once.
//!
//! One trait, [`EventBus`], two implementations held to one contract test suite
//! (tests/contract.rs): NATS JetStream in production ([`nats`]) and a durable in-process bus
//! on SQLite for `giao dev` ([`embedded`]). Publishing resolves only once the message is
//! durable; a message id published twice within the dedupe window is stored once; durable
//! consumers are shared by replicas and redeliver whatever was not acked in time.
//!
//! Layout:
//! - this file: the trait, messages, config, [`connect`] and the consumer loop [`run_consumer`];
//! - [`envelope`]: publishing and decoding `giao.events.v1.Envelope` with trace context;
//! - [`subject`]: NATS-style subject matching, shared by the embedded bus.

pub mod embedded;
pub mod envelope;
pub mod nats;
pub mod subject;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use bytes::Bytes;
use futures::{StreamExt, future::BoxFuture, stream::BoxStream};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// Message headers (trace context, content type). Transport headers are not exposed.
pub type Headers = BTreeMap<String, String>;

/// A message to publish. `subject` is relative (e.g. `events.message_received.acme`); each bus
/// prepends its configured prefix, so tests isolate themselves with a unique prefix.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    pub subject: String,
    /// The dedupe id: the same id within the dedupe window is stored once.
    pub msg_id: String,
    pub headers: Headers,
    pub payload: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishAck {
    pub sequence: u64,
    pub duplicate: bool,
}

/// A durable consumer. Replicas using the same `durable_name` share its messages.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub durable_name: String,
    /// Relative subjects with `*` (one token) and `>` (the rest) wildcards.
    pub filter_subjects: Vec<String>,
    /// Unacked deliveries come back after this long.
    pub ack_wait: Duration,
    /// Deliveries before a message is given up on; `None` retries forever.
    pub max_deliver: Option<u32>,
    /// For a consumer of one replica's own (e.g. every replica following session
    /// revocations): the bus deletes it after this long without a subscriber. `None` keeps
    /// a shared durable consumer forever. The embedded bus, one process, keeps them all.
    pub inactive_threshold: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot reach {what} at {url}: {cause}")]
    Connect {
        what: &'static str,
        url: String,
        cause: String,
    },
    #[error("invalid bus configuration: {0}")]
    Config(String),
    #[error("publish failed: {0}")]
    Publish(String),
    #[error("subscribe failed: {0}")]
    Subscribe(String),
    #[error("acknowledgement failed: {0}")]
    Ack(String),
    #[error("bus unavailable: {0}")]
    Unavailable(String),
}

/// How a delivery is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Handled: never redeliver.
    Ack,
    /// Redeliver, after the delay when given.
    Nak(Option<Duration>),
    /// Poison: never redeliver, not handled.
    Term,
}

/// Implemented by each bus for its deliveries.
pub trait Acker: Send + Sync {
    fn settle(self: Box<Self>, how: Settle) -> BoxFuture<'static, Result<(), BusError>>;
}

/// One delivery of a message to a consumer.
pub struct Delivery {
    /// Relative subject (prefix removed).
    pub subject: String,
    pub msg_id: String,
    pub headers: Headers,
    pub payload: Bytes,
    /// 1 on first delivery.
    pub delivered_count: u32,
    acker: Box<dyn Acker>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("subject", &self.subject)
            .field("msg_id", &self.msg_id)
            .field("delivered_count", &self.delivered_count)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    pub fn new(
        subject: String,
        msg_id: String,
        headers: Headers,
        payload: Bytes,
        delivered_count: u32,
        acker: Box<dyn Acker>,
    ) -> Self {
        Self {
            subject,
            msg_id,
            headers,
            payload,
            delivered_count,
            acker,
        }
    }

    pub async fn ack(self) -> Result<(), BusError> {
        self.acker.settle(Settle::Ack).await
    }

    pub async fn nak(self, delay: Option<Duration>) -> Result<(), BusError> {
        self.acker.settle(Settle::Nak(delay)).await
    }

    pub async fn term(self) -> Result<(), BusError> {
        self.acker.settle(Settle::Term).await
    }
}

pub type DeliveryStream = BoxStream<'static, Result<Delivery, BusError>>;

pub trait EventBus: Send + Sync + 'static {
    /// Resolves once the message is durable.
    fn publish(&self, message: OutgoingMessage) -> BoxFuture<'_, Result<PublishAck, BusError>>;
    /// Creates or binds the durable consumer and streams its deliveries (pulled on demand).
    fn subscribe(&self, spec: ConsumerSpec) -> BoxFuture<'_, Result<DeliveryStream, BusError>>;
    /// A cheap round trip for the health watcher.
    fn check(&self) -> BoxFuture<'_, Result<(), BusError>>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    Nats,
    #[default]
    Embedded,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    pub kind: BusKind,
    /// NATS server url(s), comma-separated.
    pub url: String,
    /// JetStream stream holding every giao subject.
    pub stream: String,
    /// First token of every subject.
    pub prefix: String,
    /// File of the embedded bus; `:memory:` keeps it in memory (tests only).
    pub embedded_path: String,
    pub duplicate_window_secs: u64,
    /// How long messages are kept, so a service that was down can catch up.
    pub max_age_days: u64,
    pub connect_timeout_secs: u64,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            kind: BusKind::Embedded,
            url: "nats://127.0.0.1:4222".into(),
            stream: "GIAO".into(),
            prefix: "giao".into(),
            embedded_path: "data/bus.db".into(),
            duplicate_window_secs: 600,
            max_age_days: 7,
            connect_timeout_secs: 5,
        }
    }
}

impl BusConfig {
    fn validate(&self) -> Result<(), BusError> {
        if !subject::is_valid_token(&self.prefix) {
            return Err(BusError::Config(format!(
                "invalid bus.prefix \"{}\": one subject token of letters, digits, - or _",
                self.prefix
            )));
        }
        if self.duplicate_window_secs == 0 {
            return Err(BusError::Config(
                "bus.duplicate_window_secs must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Connects the configured bus; an unreachable NATS fails within the connect timeout with a
/// message naming the url.
pub async fn connect(config: &BusConfig) -> Result<Arc<dyn EventBus>, BusError> {
    config.validate()?;
    match config.kind {
        BusKind::Nats => Ok(Arc::new(nats::NatsBus::connect(config).await?)),
        BusKind::Embedded => Ok(Arc::new(embedded::EmbeddedBus::open(config).await?)),
    }
}

/// A health probe for [`giao_platform::health::watch`].
pub fn probe(bus: &Arc<dyn EventBus>) -> giao_platform::health::Probe {
    let bus = bus.clone();
    giao_platform::health::Probe::new("bus", move || {
        let bus = bus.clone();
        async move { bus.check().await.map_err(|error| error.to_string()) }
    })
}

/// What a handler made of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerOutcome {
    /// Handled (or already handled before): ack.
    Done,
    /// A transient failure: redeliver later with backoff.
    Retry(String),
    /// Can never succeed: logged and terminated so it does not block the stream.
    Poison(String),
}

/// The consumer loop every service uses. Acks only after the handler returns `Done`; naks
/// with exponential backoff on `Retry`; terminates `Poison`. On `shutdown` it stops pulling,
/// lets the in-flight handler finish and settle, and returns. When the bus is lost it keeps
/// resubscribing with backoff until it comes back. Handlers must be idempotent.
pub async fn run_consumer<F, Fut>(
    bus: Arc<dyn EventBus>,
    spec: ConsumerSpec,
    shutdown: CancellationToken,
    handler: F,
) -> Result<(), BusError>
where
    F: Fn(&Delivery) -> Fut + Send + Sync,
    Fut: std::future::Future<Output = HandlerOutcome> + Send,
{
    let mut backoff = Duration::from_millis(100);
    'subscribe: loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let mut stream = match bus.subscribe(spec.clone()).await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(consumer = %spec.durable_name, %error, "cannot subscribe, retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => {
                    release_prefetched(&mut stream, &spec.durable_name).await;
                    return Ok(());
                }
                next = stream.next() => next,
            };
            let delivery = match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(error)) => {
                    tracing::warn!(consumer = %spec.durable_name, %error, "delivery stream failed, resubscribing");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue 'subscribe;
                }
                None => continue 'subscribe,
            };
            backoff = Duration::from_millis(100);
            // Not raced with shutdown: an in-flight message is finished and settled.
            let outcome = handler(&delivery).await;
            let msg_id = delivery.msg_id.clone();
            let settled = match outcome {
                HandlerOutcome::Done => delivery.ack().await,
                HandlerOutcome::Retry(reason) => {
                    let delay = retry_delay(delivery.delivered_count);
                    tracing::warn!(consumer = %spec.durable_name, %msg_id, attempt = delivery.delivered_count, %reason, "handler failed, will retry");
                    delivery.nak(Some(delay)).await
                }
                HandlerOutcome::Poison(reason) => {
                    tracing::error!(consumer = %spec.durable_name, %msg_id, %reason, "message cannot be handled, dropped from this consumer");
                    delivery.term().await
                }
            };
            if let Err(error) = settled {
                // The message will be redelivered after ack_wait; the handler is idempotent.
                tracing::warn!(consumer = %spec.durable_name, %msg_id, %error, "cannot settle delivery");
            }
        }
    }
}

/// Hands back deliveries already pulled but not handled, so another replica (or this one
/// after a restart) gets them now rather than after `ack_wait`.
async fn release_prefetched(stream: &mut DeliveryStream, consumer: &str) {
    // Bounded: a bus that keeps handing out backlog must not keep a stopping service busy.
    let mut seen = std::collections::HashSet::new();
    let mut released = 0u32;
    while seen.len() < 256
        && let Ok(Some(Ok(delivery))) =
            tokio::time::timeout(Duration::from_millis(20), stream.next()).await
    {
        if !seen.insert(delivery.msg_id.clone()) {
            let _ = delivery.nak(None).await;
            break;
        }
        if delivery.nak(None).await.is_ok() {
            released += 1;
        }
    }
    if released > 0 {
        tracing::debug!(
            consumer,
            released,
            "released prefetched deliveries on shutdown"
        );
    }
}

/// 200 ms doubling per attempt, at most 30 s.
fn retry_delay(delivered_count: u32) -> Duration {
    let exponent = delivered_count.saturating_sub(1).min(8);
    Duration::from_millis(200 * (1u64 << exponent)).min(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_backoff_grows_and_caps() {
        assert_eq!(retry_delay(1), Duration::from_millis(200));
        assert_eq!(retry_delay(2), Duration::from_millis(400));
        assert_eq!(retry_delay(50), Duration::from_secs(30));
    }
}
