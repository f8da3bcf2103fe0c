//! The bus contract, run against NATS JetStream and the embedded bus alike. Each test owns a
//! unique stream and prefix (NATS) or file (embedded).

use std::{collections::HashSet, sync::Arc, time::Duration};

use bytes::Bytes;
use futures::StreamExt;
use giao_bus::{
    BusConfig, BusKind, ConsumerSpec, Delivery, EventBus, HandlerOutcome, Headers, OutgoingMessage,
};
use tokio_util::sync::CancellationToken;

struct Fixture {
    bus: Arc<dyn EventBus>,
    config: BusConfig,
    _dir: tempfile::TempDir,
}

fn unique() -> String {
    format!("t{:x}", rand_u64())
}

fn rand_u64() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    nanos ^ (u64::from(std::process::id()) << 32)
}

async fn fixture(kind: BusKind) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = unique();
    let config = BusConfig {
        kind,
        url: std::env::var("GIAO_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
        stream: name.to_uppercase(),
        prefix: name,
        embedded_path: dir.path().join("bus.db").display().to_string(),
        ..Default::default()
    };
    let bus = giao_bus::connect(&config).await.unwrap_or_else(|error| {
        panic!("the {kind:?} bus must be reachable for this test: {error}")
    });
    Fixture {
        bus,
        config,
        _dir: dir,
    }
}

fn message(subject: &str, id: &str, body: &str) -> OutgoingMessage {
    let mut headers = Headers::new();
    headers.insert("traceparent".into(), format!("trace-of-{id}"));
    OutgoingMessage {
        subject: subject.into(),
        msg_id: id.into(),
        headers,
        payload: Bytes::from(body.to_string()),
    }
}

fn spec(name: &str, filter: &str, ack_wait: Duration) -> ConsumerSpec {
    ConsumerSpec {
        durable_name: name.into(),
        filter_subjects: vec![filter.into()],
        ack_wait,
        max_deliver: None,
        inactive_threshold: None,
    }
}

async fn next(stream: &mut giao_bus::DeliveryStream) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a delivery within 10s")
        .expect("stream open")
        .expect("delivery")
}

async fn nothing_within(stream: &mut giao_bus::DeliveryStream, wait: Duration) -> bool {
    tokio::time::timeout(wait, stream.next()).await.is_err()
}

async fn delivers_in_order_with_headers(kind: BusKind) {
    let f = fixture(kind).await;
    for index in 0..3 {
        let ack = f
            .bus
            .publish(message(
                "events.a.acme",
                &format!("m{index}"),
                &format!("body {index}"),
            ))
            .await
            .expect("published");
        assert!(!ack.duplicate);
    }
    let mut stream = f
        .bus
        .subscribe(spec("c1", "events.>", Duration::from_secs(5)))
        .await
        .expect("subscribed");
    for index in 0..3 {
        let delivery = next(&mut stream).await;
        assert_eq!(delivery.subject, "events.a.acme");
        assert_eq!(delivery.msg_id, format!("m{index}"));
        assert_eq!(delivery.payload, Bytes::from(format!("body {index}")));
        assert_eq!(
            delivery.headers.get("traceparent"),
            Some(&format!("trace-of-m{index}"))
        );
        assert_eq!(delivery.delivered_count, 1);
        delivery.ack().await.expect("acked");
    }
}

async fn same_id_is_stored_once(kind: BusKind) {
    let f = fixture(kind).await;
    let first = f
        .bus
        .publish(message("events.a.acme", "dup", "one"))
        .await
        .expect("first");
    let second = f
        .bus
        .publish(message("events.a.acme", "dup", "two"))
        .await
        .expect("second");
    assert!(!first.duplicate);
    assert!(second.duplicate);
    f.bus
        .publish(message("events.a.acme", "after", "x"))
        .await
        .expect("after");
    let mut stream = f
        .bus
        .subscribe(spec("c1", "events.>", Duration::from_secs(5)))
        .await
        .expect("subscribed");
    let delivery = next(&mut stream).await;
    assert_eq!(delivery.payload, Bytes::from("one"));
    delivery.ack().await.expect("acked");
    assert_eq!(next(&mut stream).await.msg_id, "after");
}

async fn unacked_nakked_and_termed(kind: BusKind) {
    let f = fixture(kind).await;
    f.bus
        .publish(message("events.a.acme", "m1", "x"))
        .await
        .expect("published");
    let mut stream = f
        .bus
        .subscribe(spec("c1", "events.>", Duration::from_secs(1)))
        .await
        .expect("subscribed");
    let first = next(&mut stream).await;
    assert_eq!(first.delivered_count, 1);
    drop(first); // neither acked nor nakked: back after ack_wait
    let second = next(&mut stream).await;
    assert_eq!(second.msg_id, "m1");
    assert_eq!(second.delivered_count, 2);
    second
        .nak(Some(Duration::from_millis(200)))
        .await
        .expect("nak");
    let third = next(&mut stream).await;
    assert_eq!(third.delivered_count, 3);
    third.term().await.expect("term");
    assert!(
        nothing_within(&mut stream, Duration::from_secs(2)).await,
        "termed message came back"
    );
}

async fn acked_messages_stay_acked_across_resubscribe(kind: BusKind) {
    let f = fixture(kind).await;
    for index in 0..4 {
        f.bus
            .publish(message("events.a.acme", &format!("m{index}"), "x"))
            .await
            .expect("published");
    }
    {
        let mut stream = f
            .bus
            .subscribe(spec("c1", "events.>", Duration::from_secs(1)))
            .await
            .expect("subscribed");
        for _ in 0..2 {
            next(&mut stream).await.ack().await.expect("acked");
        }
    }
    // A new process: a new connection to the same stream or file.
    let bus = giao_bus::connect(&f.config).await.expect("reconnects");
    let mut stream = bus
        .subscribe(spec("c1", "events.>", Duration::from_secs(1)))
        .await
        .expect("subscribed again");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let delivery = next(&mut stream).await;
        seen.push(delivery.msg_id.clone());
        delivery.ack().await.expect("acked");
    }
    seen.sort();
    assert_eq!(seen, vec!["m2".to_string(), "m3".to_string()]);
    assert!(nothing_within(&mut stream, Duration::from_millis(1500)).await);
}

async fn replicas_share_a_durable_consumer(kind: BusKind) {
    let f = fixture(kind).await;
    const TOTAL: usize = 60;
    for index in 0..TOTAL {
        f.bus
            .publish(message("events.a.acme", &format!("m{index}"), "x"))
            .await
            .expect("published");
    }
    let handled = Arc::new(std::sync::Mutex::new(Vec::<(usize, String)>::new()));
    let mut replicas = Vec::new();
    for replica in 0..2 {
        let bus = giao_bus::connect(&f.config)
            .await
            .expect("replica connects");
        let handled = handled.clone();
        replicas.push(tokio::spawn(async move {
            let mut stream = bus
                .subscribe(spec("shared", "events.>", Duration::from_secs(5)))
                .await
                .expect("subscribed");
            while let Ok(Some(Ok(delivery))) =
                tokio::time::timeout(Duration::from_secs(2), stream.next()).await
            {
                handled
                    .lock()
                    .expect("lock")
                    .push((replica, delivery.msg_id.clone()));
                // Slow handlers, so both replicas get work.
                tokio::time::sleep(Duration::from_millis(5)).await;
                delivery.ack().await.expect("acked");
            }
        }));
    }
    for replica in replicas {
        replica.await.expect("replica ends");
    }
    let handled = handled.lock().expect("lock").clone();
    let ids: HashSet<_> = handled.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(ids.len(), TOTAL, "every message handled");
    assert_eq!(handled.len(), TOTAL, "no message handled twice");
    let replicas: HashSet<_> = handled.iter().map(|(replica, _)| *replica).collect();
    assert_eq!(replicas.len(), 2, "both replicas got work");
}

async fn filters_select_subjects(kind: BusKind) {
    let f = fixture(kind).await;
    f.bus
        .publish(message("events.contact_updated.acme", "other", "x"))
        .await
        .expect("published");
    f.bus
        .publish(message("events.message_received.acme", "wanted", "x"))
        .await
        .expect("published");
    let mut stream = f
        .bus
        .subscribe(spec(
            "c1",
            "events.message_received.>",
            Duration::from_secs(5),
        ))
        .await
        .expect("subscribed");
    let delivery = next(&mut stream).await;
    assert_eq!(delivery.msg_id, "wanted");
    delivery.ack().await.expect("acked");
    assert!(nothing_within(&mut stream, Duration::from_millis(800)).await);
}

async fn run_consumer_retries_and_stops_cleanly(kind: BusKind) {
    let f = fixture(kind).await;
    for index in 0..5 {
        f.bus
            .publish(message("events.a.acme", &format!("m{index}"), "x"))
            .await
            .expect("published");
    }
    let attempts = Arc::new(std::sync::Mutex::new(Vec::<(String, u32)>::new()));
    let shutdown = CancellationToken::new();
    let runner = tokio::spawn({
        let bus = f.bus.clone();
        let attempts = attempts.clone();
        let shutdown = shutdown.clone();
        async move {
            giao_bus::run_consumer(
                bus,
                spec("runner", "events.>", Duration::from_secs(5)),
                shutdown,
                move |delivery: &Delivery| {
                    let attempts = attempts.clone();
                    let id = delivery.msg_id.clone();
                    let count = delivery.delivered_count;
                    async move {
                        attempts.lock().expect("lock").push((id.clone(), count));
                        if id == "m1" && count == 1 {
                            HandlerOutcome::Retry("first try fails".into())
                        } else if id == "m3" {
                            HandlerOutcome::Poison("cannot ever work".into())
                        } else {
                            HandlerOutcome::Done
                        }
                    }
                },
            )
            .await
        }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let done = {
            let attempts = attempts.lock().expect("lock");
            attempts.iter().any(|(id, count)| id == "m1" && *count == 2)
                && attempts.iter().filter(|(id, _)| id != "m1").count() >= 4
        };
        if done {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "consumer stalled: {:?}",
            attempts.lock().expect("lock")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    runner.await.expect("joins").expect("returns cleanly");
    let attempts = attempts.lock().expect("lock").clone();
    assert_eq!(
        attempts.iter().filter(|(id, _)| id == "m3").count(),
        1,
        "poison not retried"
    );

    // Everything was settled: a fresh subscriber on the same durable sees nothing.
    let mut stream = f
        .bus
        .subscribe(spec("runner", "events.>", Duration::from_secs(5)))
        .await
        .expect("subscribed");
    assert!(nothing_within(&mut stream, Duration::from_millis(1500)).await);
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(giao_bus::BusKind::Nats).await;
                }
            )*
        }
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(giao_bus::BusKind::Embedded).await;
                }
            )*
        }
    };
}

contract!(
    delivers_in_order_with_headers,
    same_id_is_stored_once,
    unacked_nakked_and_termed,
    acked_messages_stay_acked_across_resubscribe,
    replicas_share_a_durable_consumer,
    filters_select_subjects,
    run_consumer_retries_and_stops_cleanly,
);

#[tokio::test]
async fn unreachable_nats_fails_fast_naming_the_url() {
    let started = std::time::Instant::now();
    let result = giao_bus::connect(&BusConfig {
        kind: BusKind::Nats,
        url: "nats://127.0.0.1:1".into(),
        connect_timeout_secs: 2,
        ..Default::default()
    })
    .await;
    let Err(error) = result else {
        panic!("nothing listens on port 1");
    };
    assert!(
        error
            .to_string()
            .starts_with("cannot reach NATS at nats://127.0.0.1:1"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn invalid_prefix_is_rejected_naming_the_key() {
    let result = giao_bus::connect(&BusConfig {
        prefix: "bad.prefix".into(),
        ..Default::default()
    })
    .await;
    let Err(error) = result else {
        panic!("a dotted prefix is two tokens");
    };
    assert!(error.to_string().contains("bus.prefix"), "{error}");
}
