//! `make bench`: end-to-end figures on real components, one JSON line per scenario.
//!
//! Scenarios:
//! - `inbound_path/<backend>`: N captured messages published on the bus → stored by the
//!   message store; rate from first publish to last stored, then GetHistory(50) latency.
//! - `store_million/postgres`: see [`million`].
//! - `connector`: signed webhooks accepted durably, outbound sending, idle sessions per
//!   replica; see [`connector`].
//! - `assignment`, `assignment_routing`: Assign latency, OffboardStaff, routing throughput;
//!   see [`assignment`].
//! - `reporting`: AgentScorecard over 90 days beside one SQL aggregate, event → report
//!   freshness; see [`reporting`].
//!
//! `giao-bench [scenario…]` runs the named scenarios; all of them by default (`make bench`).
//! Sizes scale down with `GIAO_BENCH_*` variables named in each scenario's module.

mod assignment;
mod connector;
mod cpu;
mod million;
mod reporting;

// The same allocator as the `giao` binary, so the figures are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use giao_bus::envelope::EventPublisher;
use giao_proto::{
    common::{ContentType, MessageContent, PageRequest},
    events::{self, envelope::Payload},
    messagestore::{GetHistoryRequest, ListConversationsRequest},
};
use giao_tests::{
    Backend, BackendKind, message_store_client, message_store_config, start_message_store,
};

const MESSAGES: usize = 5_000;
const CONVERSATIONS: usize = 50;
const HISTORY_CALLS: usize = 300;

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

async fn inbound_path(kind: BackendKind, label: &str) -> anyhow::Result<()> {
    let mut backend = Backend::new(kind).await;
    let store = start_message_store(message_store_config(&mut backend).await).await;
    let bus = giao_bus::connect(&backend.bus).await?;
    let publisher = EventPublisher::new(bus, "bench");

    let started = Instant::now();
    for index in 0..MESSAGES {
        publisher
            .publish(
                "bench",
                format!("bench-{index}"),
                Payload::MessageReceived(events::MessageReceived {
                    channel_account_id: "acc-bench".into(),
                    external_message_id: format!("m-{index}"),
                    external_thread_id: format!("cust-{}", index % CONVERSATIONS),
                    content: Some(MessageContent {
                        r#type: ContentType::Text as i32,
                        text: format!("Khách hàng hỏi giá sản phẩm số {index}"),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            )
            .await?;
    }
    let published = started.elapsed();

    let mut client = message_store_client(&store, "bench", "admin").await;
    let conversations = loop {
        let listed = client
            .list_conversations(ListConversationsRequest {
                page: Some(PageRequest {
                    page_size: 500,
                    cursor: String::new(),
                }),
                ..Default::default()
            })
            .await?
            .into_inner()
            .conversations;
        let stored: u64 = listed.iter().map(|c| u64::from(c.unread_count)).sum();
        if stored as usize >= MESSAGES {
            break listed;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "ingest did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ingest = started.elapsed();

    let mut latencies = Vec::with_capacity(HISTORY_CALLS);
    for call in 0..HISTORY_CALLS {
        let conversation = &conversations[call % conversations.len()];
        let begun = Instant::now();
        let page = client
            .get_history(GetHistoryRequest {
                conversation_id: conversation.conversation_id.clone(),
                page: Some(PageRequest {
                    page_size: 50,
                    cursor: String::new(),
                }),
                direction: 0,
            })
            .await?
            .into_inner();
        latencies.push(begun.elapsed());
        anyhow::ensure!(!page.messages.is_empty(), "empty history");
    }
    latencies.sort();
    let rate = MESSAGES as f64 / ingest.as_secs_f64();
    let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
    println!(
        "inbound_path/{label}: {MESSAGES} messages stored in {:.2}s ({rate:.0}/s, publishing took {:.2}s); GetHistory(50) p50 {p50:.2} ms, p99 {p99:.2} ms",
        ingest.as_secs_f64(),
        published.as_secs_f64()
    );
    println!(
        "{{\"scenario\":\"inbound_path/{label}\",\"messages\":{MESSAGES},\"ingest_seconds\":{:.3},\"ingest_per_second\":{rate:.1},\"get_history_50_p50_ms\":{p50:.3},\"get_history_50_p99_ms\":{p99:.3}}}",
        ingest.as_secs_f64()
    );
    store.stop().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Services' warnings and errors show up beside the figures.
    giao_testkit::init_test_tracing();
    let chosen: Vec<String> = std::env::args().skip(1).collect();
    // Not a scenario: the connector replica process the idle-session figure measures.
    if chosen.first().map(String::as_str) == Some("connector-replica") {
        return connector::replica().await;
    }
    let wanted = |name: &str| chosen.is_empty() || chosen.iter().any(|c| c == name);
    if wanted("inbound_path") {
        inbound_path(BackendKind::Sqlite, "sqlite_embedded").await?;
        inbound_path(BackendKind::Postgres, "postgres_jetstream").await?;
    }
    if wanted("store_million") {
        million::run().await?;
    }
    if wanted("connector") {
        connector::run().await?;
    }
    if wanted("assignment") {
        assignment::run().await?;
    }
    if wanted("assignment_routing") {
        assignment::routing(BackendKind::Postgres, "postgres_jetstream").await?;
        assignment::routing(BackendKind::Sqlite, "sqlite_embedded").await?;
    }
    if wanted("reporting") {
        reporting::run().await?;
    }
    Ok(())
}
