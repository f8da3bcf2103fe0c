//! The event consumer: every domain event of every tenant, in stream order, folded into the
//! aggregates. A delivery is acked only after its transaction (which records the event id)
//! committed; a redelivery finds the id and changes nothing.
//!
//! One filter (`events.>`) rather than one consumer per event type: the response clock
//! needs a conversation's messages, assignments and closes in the order they happened.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use giao_bus::{ConsumerSpec, Delivery, EventBus, HandlerOutcome, envelope};
use giao_proto::events::Envelope;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    error::Error,
    store::{ApplySettings, Store, is_relevant},
};

/// Durable consumer name shared by every reporting replica.
pub const CONSUMER: &str = "reporting-aggregates";

fn spec(durable_name: &str, ack_wait: Duration, inactive: Option<Duration>) -> ConsumerSpec {
    ConsumerSpec {
        durable_name: durable_name.into(),
        filter_subjects: vec!["events.>".into()],
        ack_wait,
        max_deliver: None,
        inactive_threshold: inactive,
    }
}

/// Handles one decoded delivery: its outcome, and how many events it carried that change
/// the aggregates (a `MessagesStored` batch carries one per entry, folded in one
/// transaction; an entry applied before, alone or in another batch, changes nothing).
pub async fn handle(
    store: &Store,
    settings: &ApplySettings,
    decoded: Result<(Envelope, tracing::Span), prost::DecodeError>,
) -> (HandlerOutcome, usize) {
    let (envelope, span) = match decoded {
        Ok(decoded) => decoded,
        Err(error) => {
            return (
                HandlerOutcome::Poison(format!("undecodable event: {error}")),
                0,
            );
        }
    };
    let events: Vec<Envelope> = envelope::events_of(envelope)
        .into_iter()
        .filter(|event| event.payload.as_ref().is_some_and(is_relevant))
        .collect();
    if events
        .iter()
        .any(|event| event.event_id.is_empty() || event.tenant_id.is_empty())
    {
        return (
            HandlerOutcome::Poison("event without id or tenant".into()),
            0,
        );
    }
    let applied = match events.as_slice() {
        [] => return (HandlerOutcome::Done, 0),
        [event] => store
            .apply(event, settings)
            .instrument(span)
            .await
            .map(drop),
        many => store
            .apply_batch(many, settings)
            .instrument(span)
            .await
            .map(drop),
    };
    match applied {
        Ok(()) => (HandlerOutcome::Done, events.len()),
        Err(error @ Error::Database(_)) => (HandlerOutcome::Retry(error.to_string()), 0),
        Err(error) => (HandlerOutcome::Poison(error.to_string()), 0),
    }
}

/// Consumes until `shutdown`.
pub async fn consume(
    bus: Arc<dyn EventBus>,
    store: Store,
    settings: Arc<ApplySettings>,
    ack_wait: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    giao_bus::run_consumer(
        bus,
        spec(CONSUMER, ack_wait, None),
        shutdown,
        move |delivery: &Delivery| {
            let store = store.clone();
            let settings = settings.clone();
            let decoded = envelope::decode(delivery);
            async move { handle(&store, &settings, decoded).await.0 }
        },
    )
    .await?;
    Ok(())
}

/// Replays the whole bus stream into `store` through a fresh consumer and returns once no
/// event has arrived for `idle`: the number of events folded (each entry of a batch counts).
pub async fn rebuild(
    bus: Arc<dyn EventBus>,
    store: Store,
    settings: Arc<ApplySettings>,
    idle: Duration,
) -> anyhow::Result<u64> {
    let name = format!("reporting-rebuild-{}", unique_suffix());
    let applied = Arc::new(AtomicU64::new(0));
    let last = Arc::new(std::sync::Mutex::new(tokio::time::Instant::now()));
    let stop = CancellationToken::new();
    let watcher = {
        let last = last.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let quiet = last.lock().map(|at| at.elapsed() >= idle).unwrap_or(true);
                if quiet {
                    stop.cancel();
                    return;
                }
            }
        })
    };
    let counter = applied.clone();
    giao_bus::run_consumer(
        bus,
        // The bus forgets a rebuild's consumer a minute after it is done.
        spec(
            &name,
            Duration::from_secs(30),
            Some(Duration::from_secs(60)),
        ),
        stop,
        move |delivery: &Delivery| {
            let store = store.clone();
            let settings = settings.clone();
            let counter = counter.clone();
            let last = last.clone();
            let decoded = envelope::decode(delivery);
            async move {
                let (outcome, events) = handle(&store, &settings, decoded).await;
                counter.fetch_add(events as u64, Ordering::Relaxed);
                if let Ok(mut at) = last.lock() {
                    *at = tokio::time::Instant::now();
                }
                outcome
            }
        },
    )
    .await?;
    watcher.abort();
    Ok(applied.load(Ordering::Relaxed))
}

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    format!("{nanos:x}")
}
