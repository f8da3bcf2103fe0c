//! `store_million/postgres`: the message store holding a million messages on PostgreSQL, each
//! figure beside a baseline measured in the same run on the same machine:
//! - ingest through AppendInboundBatch (batches of 500, several in flight, every message
//!   stored, deduped and announced on JetStream) vs a raw `COPY` of the same message rows into
//!   the same schema in a second database;
//! - GetHistory(50) over gRPC vs the bare indexed SELECT of the same page;
//! - Search (customer names, places, products, order codes; diacritics-free queries) p95;
//! - beside the ingest rate, the CPU time per batch of each process taking part ([`cpu`]).
//!
//! The corpus is generated deterministically from each message's index, so every run stores
//! the same rows. `GIAO_BENCH_MESSAGES` scales it down for a quick look.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use giao_proto::{
    common::{
        ChannelUser, ContentType, DeliveryStatus, Direction, MessageContent, PageRequest,
        SenderKind,
    },
    messagestore::{AppendInboundBatchRequest, GetHistoryRequest, InboundMessage, SearchRequest},
};
use giao_tests::{
    Backend, BackendKind, message_store_client, message_store_config, start_message_store,
};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::{cpu, percentile};

const TENANT: &str = "bench";
const BATCH: usize = 500;
const IN_FLIGHT: usize = 8;
const ACCOUNTS: u64 = 5;
const HISTORY_CALLS: usize = 2_000;
const SEARCH_CALLS: usize = 400;
/// The goals the issue set: AppendInboundBatch at least half of COPY's rows/s, GetHistory(50)
/// p99 within 10 ms, Search p95 within 100 ms.
const GOAL_APPEND_VS_COPY: f64 = 0.5;
const GOAL_HISTORY_P99_MS: f64 = 10.0;
const GOAL_SEARCH_P95_MS: f64 = 100.0;

const OPENERS: &[&str] = &[
    "Chào shop",
    "Cho mình hỏi",
    "Shop ơi",
    "Dạ em chào anh chị",
    "Mình muốn đặt",
    "Còn hàng không ạ",
    "Giá bao nhiêu vậy",
    "Cảm ơn shop nhiều",
    "Khách hàng phản hồi về",
    "Em gửi lại thông tin",
];
const PRODUCTS: &[&str] = &[
    "áo sơ mi trắng",
    "quần jean xanh",
    "giày thể thao",
    "túi xách da",
    "đồng hồ nam",
    "điện thoại cũ",
    "tai nghe không dây",
    "nồi chiên không dầu",
    "máy lọc nước",
    "sữa rửa mặt",
    "kem chống nắng",
    "bàn phím cơ",
    "nệm cao su",
    "quạt điều hòa",
    "bình giữ nhiệt",
    "váy đầm dự tiệc",
    "sách tiếng Anh",
    "xe đạp trẻ em",
    "máy xay sinh tố",
    "đèn học chống cận",
];
const PLACES: &[&str] = &[
    "Hà Nội",
    "Đà Nẵng",
    "Thành phố Hồ Chí Minh",
    "Cần Thơ",
    "Hải Phòng",
    "Nha Trang",
    "Huế",
    "Vũng Tàu",
    "Quy Nhơn",
    "Buôn Ma Thuột",
];
const FAMILY: &[&str] = &[
    "Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng",
];
const MIDDLE: &[&str] = &["Văn", "Thị", "Minh", "Ngọc", "Đức", "Thanh", "Quốc", "Hữu"];
const GIVEN: &[&str] = &[
    "An", "Bình", "Châu", "Dũng", "Giang", "Hà", "Hải", "Hạnh", "Khánh", "Lan", "Linh", "Long",
    "Mai", "Nam", "Nga", "Phúc", "Quân", "Sơn", "Tâm", "Thảo", "Trang", "Tuấn", "Vy", "Yến",
];

/// splitmix64: a fast, well-mixed hash so each message is a pure function of its index.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn pick<'a>(items: &[&'a str], seed: u64) -> &'a str {
    items[(seed % items.len() as u64) as usize]
}

struct Corpus {
    messages: usize,
    conversations: u64,
    start: DateTime<Utc>,
    step_micros: i64,
}

struct Row {
    account: String,
    thread: String,
    customer_name: String,
    external_id: String,
    text: String,
    sent_at: DateTime<Utc>,
    conversation: u64,
}

impl Corpus {
    fn new(messages: usize, now: DateTime<Utc>) -> Self {
        // About 50 messages per conversation, sent over the last 20 days.
        let span = chrono::Duration::days(20);
        Self {
            messages,
            conversations: (messages as u64 / 50).max(1),
            start: now - span,
            step_micros: span.num_microseconds().unwrap_or(1) / messages.max(1) as i64,
        }
    }

    fn row(&self, index: usize) -> Row {
        let seed = mix(index as u64);
        let conversation = seed % self.conversations;
        let who = mix(conversation ^ 0xC0FFEE);
        let text = format!(
            "{} {} size {} giao {}, mã đơn DH{:06}",
            pick(OPENERS, seed >> 8),
            pick(PRODUCTS, seed >> 16),
            30 + (seed >> 24) % 15,
            pick(PLACES, seed >> 32),
            mix(seed) % 1_000_000,
        );
        Row {
            account: format!("oa-{}", conversation % ACCOUNTS),
            thread: format!("cust-{conversation}"),
            customer_name: format!(
                "{} {} {}",
                pick(FAMILY, who),
                pick(MIDDLE, who >> 8),
                pick(GIVEN, who >> 16)
            ),
            external_id: format!("m-{index}"),
            text,
            sent_at: self.start + chrono::Duration::microseconds(self.step_micros * index as i64),
            conversation,
        }
    }

    fn inbound(&self, index: usize) -> InboundMessage {
        let row = self.row(index);
        InboundMessage {
            channel_account_id: row.account,
            external_message_id: row.external_id,
            external_thread_id: row.thread.clone(),
            customer: Some(ChannelUser {
                external_user_id: row.thread.clone(),
                display_name: row.customer_name,
                ..Default::default()
            }),
            direction: Direction::Inbound as i32,
            sender_kind: SenderKind::Customer as i32,
            sender_external_id: row.thread,
            content: Some(content(&row.text)),
            sent_at: Some(prost_types::Timestamp {
                seconds: row.sent_at.timestamp(),
                nanos: row.sent_at.timestamp_subsec_nanos() as i32,
            }),
            ..Default::default()
        }
    }
}

fn content(text: &str) -> MessageContent {
    MessageContent {
        r#type: ContentType::Text as i32,
        text: text.into(),
        ..Default::default()
    }
}

fn csv_field(out: &mut String, value: &str) {
    out.push('"');
    out.push_str(&value.replace('"', "\"\""));
    out.push('"');
}

/// The same rows, written straight into a fresh message-store schema with `COPY`.
async fn copy_baseline(corpus: &Corpus, now: DateTime<Utc>) -> anyhow::Result<Duration> {
    let database = giao_testkit::fresh_postgres().await;
    let config = giao_storage::DatabaseConfig {
        url: database.url.clone(),
        ..Default::default()
    };
    let db = giao_storage::Database::connect(&config).await?;
    db.migrate(&giao_message_store::MIGRATIONS).await?;
    let mut connection = PgConnection::connect(&database.url).await?;
    // The partition the service creates ahead of time (earlier months land in the default
    // partition in both runs).
    let month = now.format("%Y_%m");
    let from = now.format("%Y-%m-01");
    let next = (now + chrono::Months::new(1)).format("%Y-%m-01");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE messages_{month} PARTITION OF messages FOR VALUES FROM ('{from}') TO ('{next}')"
    )))
    .execute(&mut connection)
    .await?;
    // Rows are rendered before the clock starts, as the gRPC requests are: both sides measure
    // storing, not generating.
    let delivered = (DeliveryStatus::Delivered as i32).to_string();
    let mut chunks = Vec::new();
    let mut chunk = String::with_capacity(1 << 20);
    for index in 0..corpus.messages {
        let row = corpus.row(index);
        let bytes = prost::Message::encode_to_vec(&content(&row.text));
        chunk.push_str(&Uuid::now_v7().to_string());
        chunk.push_str(",bench,");
        chunk.push_str(&Uuid::from_u128(u128::from(row.conversation) + 1).to_string());
        chunk.push(',');
        csv_field(&mut chunk, &row.account);
        chunk.push(',');
        csv_field(&mut chunk, &row.external_id);
        chunk.push_str(",1,1,");
        csv_field(&mut chunk, &row.thread);
        chunk.push_str(",1,");
        csv_field(&mut chunk, &row.text);
        chunk.push_str(",\\x");
        chunk.push_str(&hex(&bytes));
        chunk.push(',');
        chunk.push_str(&delivered);
        chunk.push(',');
        chunk.push_str(&row.sent_at.to_rfc3339());
        chunk.push(',');
        chunk.push_str(&now.to_rfc3339());
        chunk.push(',');
        csv_field(
            &mut chunk,
            &giao_message_store::domain::text::fold(&row.text),
        );
        chunk.push('\n');
        if chunk.len() > (1 << 20) - 4096 {
            chunks.push(std::mem::replace(
                &mut chunk,
                String::with_capacity(1 << 20),
            ));
        }
    }
    chunks.push(chunk);
    let started = Instant::now();
    let mut copy = connection
        .copy_in_raw(
            "COPY messages (id, tenant_id, conversation_id, channel_account_id, external_message_id, direction, \
             sender_kind, sender_external_id, content_type, text, content, delivery_status, sent_at, stored_at, \
             folded_text) FROM STDIN (FORMAT csv)",
        )
        .await?;
    for chunk in &chunks {
        copy.send(chunk.as_bytes()).await?;
    }
    let copied = copy.finish().await?;
    let elapsed = started.elapsed();
    anyhow::ensure!(
        copied as usize == corpus.messages,
        "COPY stored {copied} rows"
    );
    drop(connection);
    drop(db);
    giao_testkit::drop_postgres(&database).await;
    Ok(elapsed)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

pub async fn run() -> anyhow::Result<()> {
    let messages: usize = std::env::var("GIAO_BENCH_MESSAGES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1_000_000);
    let now = Utc::now();
    let corpus = Arc::new(Corpus::new(messages, now));

    let copy_time = copy_baseline(&corpus, now).await?;
    let copy_rate = messages as f64 / copy_time.as_secs_f64();
    println!(
        "store_million: COPY baseline {messages} rows in {:.1}s ({copy_rate:.0} rows/s)",
        copy_time.as_secs_f64()
    );

    let mut backend = Backend::new(BackendKind::Postgres).await;
    let mut config = message_store_config(&mut backend).await;
    config.database.max_connections = 16;
    let store = start_message_store(config.clone()).await;
    let requests: Vec<AppendInboundBatchRequest> = (0..messages.div_ceil(BATCH))
        .map(|batch| AppendInboundBatchRequest {
            messages: (batch * BATCH..((batch + 1) * BATCH).min(messages))
                .map(|index| corpus.inbound(index))
                .collect(),
        })
        .collect();
    let queue = Arc::new(std::sync::Mutex::new(requests.into_iter()));
    let cpu_before = cpu::Snapshot::take();
    let started = Instant::now();
    let mut workers = Vec::new();
    // Concurrent batches; GIAO_BENCH_IN_FLIGHT=1 measures one batch's uncontended cost.
    let in_flight: usize = std::env::var("GIAO_BENCH_IN_FLIGHT")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(IN_FLIGHT);
    for _ in 0..in_flight {
        let mut client = message_store_client(&store, TENANT, "admin").await;
        let queue = queue.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let next = queue.lock().expect("queue").next();
                let Some(request) = next else {
                    return anyhow::Ok(());
                };
                let results = client
                    .append_inbound_batch(request)
                    .await?
                    .into_inner()
                    .results;
                anyhow::ensure!(
                    results.iter().all(|result| result.created),
                    "a message was not new"
                );
            }
        }));
    }
    for worker in workers {
        worker.await??;
    }
    let ingest_time = started.elapsed();
    let cpu_after = cpu::Snapshot::take();
    let ingest_rate = messages as f64 / ingest_time.as_secs_f64();
    println!(
        "store_million: AppendInboundBatch {messages} messages in {:.1}s ({ingest_rate:.0}/s, {:.0}% of COPY)",
        ingest_time.as_secs_f64(),
        100.0 * ingest_rate / copy_rate
    );
    // CPU per batch by process: on a machine whose cores are all busy, this is what sets the
    // ingest rate (ADR 0010).
    let mut cpu_json = String::new();
    if let (Some(before), Some(after)) = (&cpu_before, &cpu_after) {
        let batches = messages.div_ceil(BATCH) as f64;
        let parts = before.until(after);
        let shown: Vec<String> = parts
            .iter()
            .map(|(part, seconds)| format!("{part} {:.1}", 1000.0 * seconds / batches))
            .collect();
        println!(
            "store_million: CPU ms per batch of {BATCH} during the ingest: {} ({:.2} cores busy)",
            shown.join(", "),
            before.busy_until(after) / ingest_time.as_secs_f64()
        );
        for (part, seconds) in &parts {
            cpu_json.push_str(&format!(
                ",\"cpu_ms_per_batch_{}\":{:.1}",
                part.replace('-', "_"),
                1000.0 * seconds / batches
            ));
        }
    }

    let mut pool_connection = PgConnection::connect(&config.database.url).await?;
    sqlx::query("ANALYZE").execute(&mut pool_connection).await?;
    // The reads are measured on a store at rest, as a book that grew over months is: the
    // ingest leaves a gigabyte of dirty pages behind, and the checkpoint that writes them
    // out would otherwise run in the middle of the read phase, timing the disk instead of
    // the reads (both the service's and the bare SELECT's).
    sqlx::query("CHECKPOINT")
        .execute(&mut pool_connection)
        .await?;
    let conversation_ids: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM conversations WHERE tenant_id = $1 ORDER BY id")
            .bind(TENANT)
            .fetch_all(&mut pool_connection)
            .await?;
    anyhow::ensure!(!conversation_ids.is_empty(), "no conversations stored");

    let mut client = message_store_client(&store, TENANT, "admin").await;
    let mut grpc = Vec::with_capacity(HISTORY_CALLS);
    let mut bare = Vec::with_capacity(HISTORY_CALLS);
    for call in 0..HISTORY_CALLS {
        let id = conversation_ids[(mix(call as u64) % conversation_ids.len() as u64) as usize];
        let begun = Instant::now();
        let page = client
            .get_history(GetHistoryRequest {
                conversation_id: id.to_string(),
                page: Some(PageRequest {
                    page_size: 50,
                    cursor: String::new(),
                }),
                direction: 0,
            })
            .await?
            .into_inner();
        grpc.push(begun.elapsed());
        anyhow::ensure!(!page.messages.is_empty(), "empty history");
        let begun = Instant::now();
        let rows = sqlx::query(
            "SELECT id, tenant_id, conversation_id, channel_account_id, external_message_id, direction, sender_kind, \
             sender_user_id, sender_external_id, content_type, text, content, quote_external_id, delivery_status, \
             sent_at, stored_at, recalled_at, recalled_by, failure_reason \
             FROM messages WHERE tenant_id = $1 AND conversation_id = $2 ORDER BY sent_at DESC, id DESC LIMIT 50",
        )
        .bind(TENANT)
        .bind(id)
        .fetch_all(&mut pool_connection)
        .await?;
        bare.push(begun.elapsed());
        anyhow::ensure!(
            rows.len() == page.messages.len(),
            "baseline read another page"
        );
    }
    grpc.sort();
    bare.sort();
    let (h50, h99) = (percentile(&grpc, 0.50), percentile(&grpc, 0.99));
    let (b50, b99) = (percentile(&bare, 0.50), percentile(&bare, 0.99));
    println!(
        "store_million: GetHistory(50) p50 {h50:.2} ms p99 {h99:.2} ms; bare SELECT p50 {b50:.2} ms p99 {b99:.2} ms"
    );

    let queries: Vec<String> = (0..SEARCH_CALLS)
        .map(|call| {
            let seed = mix(call as u64 ^ 0xBEEF);
            match call % 4 {
                // An order code that exists.
                0 => {
                    let text = corpus.row((seed % messages as u64) as usize).text;
                    text.rsplit(' ').next().unwrap_or_default().to_string()
                }
                1 => giao_message_store::domain::text::fold(pick(PRODUCTS, seed)),
                2 => giao_message_store::domain::text::fold(pick(PLACES, seed)),
                _ => {
                    let who = mix((seed % corpus.conversations) ^ 0xC0FFEE);
                    giao_message_store::domain::text::fold(&format!(
                        "{} {} {}",
                        pick(FAMILY, who),
                        pick(MIDDLE, who >> 8),
                        pick(GIVEN, who >> 16)
                    ))
                }
            }
        })
        .collect();
    let mut searches = Vec::with_capacity(SEARCH_CALLS);
    let mut empty = 0;
    for query in &queries {
        let begun = Instant::now();
        let hits = client
            .search(SearchRequest {
                query: query.clone(),
                page: Some(PageRequest {
                    page_size: 20,
                    cursor: String::new(),
                }),
                ..Default::default()
            })
            .await?
            .into_inner()
            .hits;
        searches.push(begun.elapsed());
        if hits.is_empty() {
            empty += 1;
        }
    }
    searches.sort();
    let (s50, s95) = (percentile(&searches, 0.50), percentile(&searches, 0.95));
    println!(
        "store_million: Search p50 {s50:.2} ms p95 {s95:.2} ms ({empty} of {SEARCH_CALLS} found nothing)"
    );
    // The goals, judged on the same run's figures.
    let append_vs_copy = ingest_rate / copy_rate;
    let append_goal_met = append_vs_copy >= GOAL_APPEND_VS_COPY;
    let history_goal_met = h99 <= GOAL_HISTORY_P99_MS;
    let search_goal_met = s95 <= GOAL_SEARCH_P95_MS;
    println!(
        "{{\"scenario\":\"store_million/postgres\",\"messages\":{messages},\"copy_rows_per_second\":{copy_rate:.0},\
         \"append_batch_per_second\":{ingest_rate:.0},\"append_vs_copy\":{append_vs_copy:.3},\"get_history_50_p50_ms\":{h50:.3},\
         \"get_history_50_p99_ms\":{h99:.3},\"bare_select_p50_ms\":{b50:.3},\"bare_select_p99_ms\":{b99:.3},\
         \"search_p50_ms\":{s50:.3},\"search_p95_ms\":{s95:.3},\"goal_append_half_of_copy_met\":{append_goal_met},\
         \"goal_get_history_p99_10ms_met\":{history_goal_met},\"goal_search_p95_100ms_met\":{search_goal_met}{cpu_json}}}"
    );
    store.stop().await?;
    drop(pool_connection);
    // GIAO_BENCH_KEEP=1 keeps the filled database (and the stream) for a closer look
    // (EXPLAIN and the like).
    if std::env::var("GIAO_BENCH_KEEP").is_err() {
        backend.drop_databases().await;
    } else {
        println!("store_million: kept database {}", config.database.url);
    }
    Ok(())
}
