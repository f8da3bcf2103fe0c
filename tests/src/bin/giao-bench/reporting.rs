//! `reporting/postgres`: AgentScorecard over 90 days of `GIAO_BENCH_REPORTING_MESSAGES`
//! (default 1,000,000) messages, beside the same figures (first-response p50/p90, messages in
//! and out, conversations handled) computed by one SQL aggregate over the raw messages in the
//! same run; then event → report freshness: a `MessageStored` published on JetStream until the
//! scorecard served over gRPC shows it.
//!
//! The 90 days are loaded through the service's batch fold (`Store::apply_batch`: the
//! consumer's fold, written set-based, four writers partitioned by conversation) rather than
//! one bus event at a time, so that the load takes minutes instead of an hour; freshness goes
//! through the bus and the consumer, one event per transaction.

use std::time::{Duration, Instant};

use giao_bus::{OutgoingMessage, envelope::event_type};
use giao_proto::{
    common::{ContentType, Direction, SenderKind, TimeRange},
    events::{self, Envelope, envelope::Payload},
    reporting::{
        AgentScorecardRequest, ReportScope, reporting_service_client::ReportingServiceClient,
    },
};
use giao_tests::{Backend, BackendKind, as_user};
use prost::Message;
use prost::bytes::Bytes;
use sqlx::Connection;

use crate::percentile;

const TENANT: &str = "bench";
const AGENTS: u64 = 20;
const MESSAGES_PER_CONVERSATION: u64 = 10;
const SCORECARD_CALLS: usize = 200;
const SQL_CALLS: usize = 10;
const FRESHNESS_SAMPLES: usize = 200;
/// Events per batch fold of the loader.
const BATCH: usize = 2_000;
const DAY: i64 = 86_400_000_000;

/// A small deterministic generator: the same data every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        // The top 53 bits: enough for microsecond offsets across 90 days.
        (self.0 >> 11) % below.max(1)
    }
}

struct Raw {
    conversation: String,
    owner: String,
    direction: i16,
    sender_kind: i16,
    sent_at: i64,
}

fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

fn envelope(id: String, payload: Payload, at: i64) -> Envelope {
    Envelope {
        event_id: id,
        tenant_id: TENANT.into(),
        occurred_at: Some(timestamp(at)),
        producer: "bench".into(),
        payload: Some(payload),
        ..Default::default()
    }
}

fn stored(raw: &Raw, index: u64, team: &str, account: &str, lead: &str) -> Payload {
    Payload::MessageStored(events::MessageStored {
        message_id: format!("m-{index}"),
        conversation_id: raw.conversation.clone(),
        channel_account_id: account.into(),
        direction: i32::from(raw.direction),
        sender_kind: i32::from(raw.sender_kind),
        sender_user_id: if raw.direction == Direction::Outbound as i16 {
            raw.owner.clone()
        } else {
            String::new()
        },
        sent_at: Some(timestamp(raw.sent_at)),
        owner_user_id: raw.owner.clone(),
        team_id: team.into(),
        lead_source: lead.into(),
        content_type: ContentType::Text as i32,
        ..Default::default()
    })
}

pub async fn run() -> anyhow::Result<()> {
    let total: u64 = std::env::var("GIAO_BENCH_REPORTING_MESSAGES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1_000_000);
    let mut backend = Backend::new(BackendKind::Postgres).await;
    let config = giao_reporting::Config {
        grpc: giao_tests::ephemeral_grpc(),
        metrics: giao_tests::no_metrics(),
        database: backend.database().await,
        bus: backend.bus.clone(),
        auth: giao_tests::dev_auth(),
        ..Default::default()
    };
    let raw_database = backend.database().await;
    let reporting = giao_tests::start_reporting(config.clone()).await;
    let settings = std::sync::Arc::new(config.settings().map_err(anyhow::Error::msg)?);
    let store =
        giao_reporting::store::Store::new(giao_storage::Database::connect(&config.database).await?);

    // Ninety days of conversations ending now: bursts of customer messages, staff replies
    // after ten seconds to two hours, the odd automatic reply.
    let now = chrono::Utc::now().timestamp_micros();
    let start = now - 90 * DAY;
    let mut random = Lcg(42);
    let conversations = total / MESSAGES_PER_CONVERSATION;
    let mut raws: Vec<Raw> = Vec::with_capacity(total as usize);
    for conversation in 0..conversations {
        let owner = format!("agent-{:02}", conversation % AGENTS);
        let mut at = start + random.next((89 * DAY) as u64) as i64;
        for step in 0..MESSAGES_PER_CONVERSATION {
            let customer = step % 2 == 0;
            let (direction, sender_kind) = if customer {
                (Direction::Inbound, SenderKind::Customer)
            } else if random.next(10) == 0 {
                (Direction::Outbound, SenderKind::Automation)
            } else {
                (Direction::Outbound, SenderKind::Staff)
            };
            raws.push(Raw {
                conversation: format!("conv-{conversation:07}"),
                owner: owner.clone(),
                direction: direction as i16,
                sender_kind: sender_kind as i16,
                sent_at: at,
            });
            at += 10_000_000 + random.next(7_200_000_000) as i64;
        }
    }

    // The raw messages, for the one-query baseline.
    let mut raw = sqlx::PgConnection::connect(&raw_database.url).await?;
    sqlx::query(
        "CREATE TABLE messages (conversation_id TEXT NOT NULL, owner_user_id TEXT NOT NULL, \
         direction SMALLINT NOT NULL, sender_kind SMALLINT NOT NULL, sent_at BIGINT NOT NULL)",
    )
    .execute(&mut raw)
    .await?;
    for chunk in raws.chunks(20_000) {
        sqlx::query(
            "INSERT INTO messages SELECT * FROM UNNEST($1::text[], $2::text[], $3::smallint[], \
             $4::smallint[], $5::bigint[])",
        )
        .bind(
            chunk
                .iter()
                .map(|r| r.conversation.clone())
                .collect::<Vec<_>>(),
        )
        .bind(chunk.iter().map(|r| r.owner.clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|r| r.direction).collect::<Vec<_>>())
        .bind(chunk.iter().map(|r| r.sender_kind).collect::<Vec<_>>())
        .bind(chunk.iter().map(|r| r.sent_at).collect::<Vec<_>>())
        .execute(&mut raw)
        .await?;
    }
    sqlx::query("CREATE INDEX ON messages (owner_user_id, sent_at)")
        .execute(&mut raw)
        .await?;
    sqlx::query("CREATE INDEX ON messages (conversation_id, sent_at)")
        .execute(&mut raw)
        .await?;
    sqlx::raw_sql("VACUUM ANALYZE messages")
        .execute(&mut raw)
        .await?;

    // The aggregates, through the consumer's fold, conversations split over four writers.
    let loading = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    let raws = std::sync::Arc::new(raws);
    for writer in 0..4u64 {
        let raws = raws.clone();
        let store = store.clone();
        let settings = settings.clone();
        writers.spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            for (index, raw) in raws.iter().enumerate() {
                let conversation = index as u64 / MESSAGES_PER_CONVERSATION;
                if conversation % 4 != writer {
                    continue;
                }
                let team = format!("team-{}", conversation % AGENTS % 4);
                let account = format!("oa-{}", conversation / AGENTS % 5);
                let lead = ["facebook_ads", "zalo_oa", "referral", "walk_in"]
                    [(conversation / (AGENTS * 5) % 4) as usize];
                let payload = stored(raw, index as u64, &team, &account, lead);
                batch.push(envelope(format!("bench-{index}"), payload, raw.sent_at));
                if batch.len() == BATCH {
                    store.apply_batch(&batch, &settings.apply).await?;
                    batch.clear();
                }
            }
            store.apply_batch(&batch, &settings.apply).await?;
            anyhow::Ok(())
        });
    }
    while let Some(joined) = writers.join_next().await {
        joined??;
    }
    let load_seconds = loading.elapsed().as_secs_f64();
    // Both sides get the housekeeping autovacuum would do: statistics and visibility maps.
    let mut aggregates = sqlx::PgConnection::connect(&config.database.url).await?;
    sqlx::raw_sql("VACUUM ANALYZE")
        .execute(&mut aggregates)
        .await?;
    drop(aggregates);

    // AgentScorecard over the 90 days, over gRPC.
    let scope = ReportScope {
        range: Some(TimeRange {
            start: Some(timestamp(start)),
            end: Some(timestamp(now + 3_600_000_000)),
        }),
        ..Default::default()
    };
    let mut client = ReportingServiceClient::with_interceptor(
        reporting.channel().await,
        as_user(TENANT, "u-admin", "admin"),
    );
    let mut latencies = Vec::with_capacity(SCORECARD_CALLS);
    let mut card = None;
    for call in 0..SCORECARD_CALLS {
        let begun = Instant::now();
        let reply = client
            .agent_scorecard(AgentScorecardRequest {
                scope: Some(scope.clone()),
                user_id: format!("agent-{:02}", call as u64 % AGENTS),
            })
            .await?
            .into_inner();
        latencies.push(begun.elapsed());
        if call == 3 {
            card = reply.scorecard;
        }
    }
    latencies.sort();
    let card = card.unwrap_or_default();

    // The same figures for agent-03 in one SQL aggregate over the raw messages.
    let mut sql_latencies = Vec::with_capacity(SQL_CALLS);
    let mut baseline = (0i64, 0i64, 0i64, 0i64, 0i64);
    for _ in 0..SQL_CALLS {
        let begun = Instant::now();
        baseline = sqlx::query_as(
            "WITH mine AS (SELECT * FROM messages WHERE owner_user_id = $1 AND sent_at >= $2 AND sent_at < $3), \
             firsts AS (SELECT conversation_id, MIN(sent_at) AS first_in FROM mine WHERE direction = 1 GROUP BY conversation_id), \
             answers AS (SELECT f.conversation_id, \
                 (SELECT MIN(m.sent_at) FROM messages m WHERE m.conversation_id = f.conversation_id \
                  AND m.direction = 2 AND m.sender_kind IN (2, 3) AND m.sent_at > f.first_in) - f.first_in AS frt \
                 FROM firsts f) \
             SELECT CAST(percentile_disc(0.5) WITHIN GROUP (ORDER BY frt) AS BIGINT), \
                    CAST(percentile_disc(0.9) WITHIN GROUP (ORDER BY frt) AS BIGINT), \
                    (SELECT COUNT(*) FROM mine WHERE direction = 1), \
                    (SELECT COUNT(*) FROM mine WHERE direction = 2), \
                    (SELECT COUNT(DISTINCT conversation_id) FROM mine WHERE direction = 2 AND sender_kind IN (2, 3)) \
             FROM answers WHERE frt IS NOT NULL",
        )
        .bind("agent-03")
        .bind(start)
        .bind(now + 3_600_000_000)
        .fetch_one(&mut raw)
        .await?;
        sql_latencies.push(begun.elapsed());
    }
    sql_latencies.sort();
    let seconds = |value: &Option<prost_types::Duration>| {
        value
            .as_ref()
            .map(|value| value.seconds as f64 + f64::from(value.nanos) / 1e9)
            .unwrap_or_default()
    };
    let agree = (seconds(&card.first_response_p50) - baseline.0 as f64 / 1e6).abs()
        <= 0.02 * baseline.0 as f64 / 1e6
        && card.messages_in as i64 == baseline.2
        && card.messages_out as i64 == baseline.3
        && card.conversations_handled as i64 == baseline.4;

    // Freshness: a message published on the bus until the scorecard shows it.
    let bus = giao_bus::connect(&backend.bus).await?;
    let mut fresh_client = ReportingServiceClient::with_interceptor(
        reporting.channel().await,
        as_user(TENANT, "u-admin", "admin"),
    );
    let mut freshness = Vec::with_capacity(FRESHNESS_SAMPLES);
    for sample in 0..FRESHNESS_SAMPLES {
        let at = chrono::Utc::now().timestamp_micros();
        let raw = Raw {
            conversation: format!("fresh-{sample}"),
            owner: "fresh-agent".into(),
            direction: Direction::Inbound as i16,
            sender_kind: SenderKind::Customer as i16,
            sent_at: at,
        };
        let payload = stored(&raw, sample as u64, "team-0", "oa-0", "walk_in");
        let subject = format!("events.{}.{TENANT}", event_type(&payload));
        let id = format!("fresh-{sample}");
        let begun = Instant::now();
        bus.publish(OutgoingMessage {
            subject,
            msg_id: id.clone(),
            headers: Default::default(),
            payload: Bytes::from(envelope(id, payload, at).encode_to_vec()),
        })
        .await?;
        loop {
            let seen = fresh_client
                .agent_scorecard(AgentScorecardRequest {
                    scope: Some(scope.clone()),
                    user_id: "fresh-agent".into(),
                })
                .await
                .map(|reply| reply.into_inner().scorecard.unwrap_or_default().messages_in)
                .unwrap_or(0);
            if seen > sample as u64 {
                break;
            }
            anyhow::ensure!(
                begun.elapsed() < Duration::from_secs(60),
                "event never reached the report"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        freshness.push(begun.elapsed());
    }
    freshness.sort();

    let (p50, p95) = (percentile(&latencies, 0.50), percentile(&latencies, 0.95));
    let (sql_p50, sql_p95) = (
        percentile(&sql_latencies, 0.50),
        percentile(&sql_latencies, 0.95),
    );
    let (fresh_p50, fresh_p99) = (percentile(&freshness, 0.50), percentile(&freshness, 0.99));
    println!(
        "reporting/postgres: {total} messages over 90 days ({conversations} conversations, {AGENTS} agents) folded in {load_seconds:.1}s; \
         AgentScorecard(90 days) p50 {p50:.2} ms, p95 {p95:.2} ms; one SQL aggregate over the raw messages p50 {sql_p50:.1} ms, p95 {sql_p95:.1} ms; \
         figures agree: {agree} (FRT p50 {:.1}s vs {:.1}s, in {} vs {}, out {} vs {}, handled {} vs {}); event → report p50 {fresh_p50:.1} ms, p99 {fresh_p99:.1} ms",
        seconds(&card.first_response_p50),
        baseline.0 as f64 / 1e6,
        card.messages_in,
        baseline.2,
        card.messages_out,
        baseline.3,
        card.conversations_handled,
        baseline.4,
    );
    println!(
        "{{\"scenario\":\"reporting/postgres\",\"messages\":{total},\"load_seconds\":{load_seconds:.1},\"agent_scorecard_90d_p50_ms\":{p50:.3},\"agent_scorecard_90d_p95_ms\":{p95:.3},\"raw_sql_p50_ms\":{sql_p50:.3},\"raw_sql_p95_ms\":{sql_p95:.3},\"figures_agree\":{agree},\"freshness_p50_ms\":{fresh_p50:.3},\"freshness_p99_ms\":{fresh_p99:.3}}}"
    );
    drop(raw);
    reporting.stop().await?;
    // GIAO_BENCH_KEEP=1 keeps the filled databases for a closer look (EXPLAIN and the like).
    if std::env::var("GIAO_BENCH_KEEP").is_err() {
        backend.drop_databases().await;
    } else {
        println!(
            "kept: aggregates {}, raw messages {}",
            config.database.url, raw_database.url
        );
    }
    Ok(())
}
