//! `assignment/postgres`: Assign latency (the synchronous ownership path: read the
//! conversation in message-store, set its owner, record history, publish), and OffboardStaff
//! of one agent owning `GIAO_BENCH_OFFBOARD_CONVERSATIONS` (default 100,000) conversations,
//! on PostgreSQL + JetStream with the real auth service. The run fails unless the report
//! moved every conversation, and says whether the handover met its 10 s goal (judged for
//! books of 100,000 or more).
//!
//! `assignment_routing/<backend>`: routing throughput — `GIAO_BENCH_ROUTED_CONVERSATIONS`
//! (default 5,000) new conversations arriving in batches of 500, each routed from its
//! ConversationOpened (contact read, decision under the tenant lock, owner set in
//! message-store, history, event) to one of 20 online agents by least open; timed from the
//! first batch until none is left unassigned. Then the latency of one routing decision:
//! the service stops consuming, and `GIAO_BENCH_ROUTING_DECISIONS` (default 500) further
//! new conversations are routed one at a time by the service's own router against the same
//! databases, message-store and bus, each call timed from its ConversationOpened to the
//! owner set in message-store, the history written and ConversationAssigned published.

use std::time::{Duration, Instant};

use giao_proto::{
    assignment::{
        AssignRequest, OffboardStaffRequest, assignment_service_client::AssignmentServiceClient,
        offboard_staff_request::Successor,
    },
    assignment::{
        Availability, RoutingPolicy, RoutingStrategy, SetAvailabilityRequest,
        SetRoutingPolicyRequest, SyncRosterRequest,
    },
    auth::{CreateApiKeyRequest, CreateUserRequest, LoginRequest},
    common::{ChannelUser, ContentType, MessageContent, Role},
    messagestore::{
        AppendInboundBatchRequest, ExportHistoryRequest, InboundMessage, ListConversationsRequest,
        SetConversationOwnerRequest, export_history_request::Selector,
        message_store_service_client::MessageStoreServiceClient,
    },
};
use giao_tests::{Backend, BackendKind, TraceInterceptor};
use sqlx::Connection;

use crate::percentile;

const PASSWORD: &str = "a long enough password";
const ASSIGN_CALLS: usize = 300;
/// The goal for handing over a book of 100,000 conversations.
const OFFBOARD_GOAL: Duration = Duration::from_secs(10);
const OFFBOARD_GOAL_CONVERSATIONS: usize = 100_000;

/// The first message of customer `customer` on the bench's account, in its own thread.
fn first_message(customer: &str) -> InboundMessage {
    InboundMessage {
        channel_account_id: "oa-bench".into(),
        external_message_id: customer.into(),
        external_thread_id: customer.into(),
        customer: Some(ChannelUser {
            external_user_id: customer.into(),
            display_name: format!("Khách {customer}"),
            ..Default::default()
        }),
        content: Some(MessageContent {
            r#type: ContentType::Text as i32,
            text: format!("cho em hỏi giá ({customer})"),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn login(auth: &giao_tests::Running, email: &str) -> anyhow::Result<String> {
    Ok(giao_tests::auth_client(auth, None)
        .await
        .login(LoginRequest {
            tenant: "bench".into(),
            login: email.into(),
            password: PASSWORD.into(),
        })
        .await?
        .into_inner()
        .access_token)
}

pub async fn run() -> anyhow::Result<()> {
    let total: usize = std::env::var("GIAO_BENCH_OFFBOARD_CONVERSATIONS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(100_000);
    let mut backend = Backend::new(BackendKind::Postgres).await;
    let auth_config = giao_tests::auth_config(&mut backend).await;
    giao_auth::admin::create_tenant(
        &auth_config,
        "bench",
        "bench",
        "admin@bench.vn",
        Some(PASSWORD.into()),
    )
    .await?;
    let auth = giao_tests::start_auth(auth_config).await;
    let verify = giao_authz::AuthConfig {
        endpoint: auth.endpoint(),
        dev_tokens: false,
        api_key_cache_secs: 60,
    };
    let mut store_config = giao_tests::message_store_config(&mut backend).await;
    store_config.auth = verify.clone();
    let store_database = store_config.database.url.clone();
    let store = giao_tests::start_message_store(store_config).await;
    let mut config = giao_tests::assignment_config(&mut backend, &store.endpoint()).await;
    config.auth = verify;
    config.auth_service.endpoint = auth.endpoint();
    config.message_store.timeout_ms = 600_000;
    let assignment_database = config.database.url.clone();
    let assignment = giao_tests::start_assignment(config).await;

    let admin = login(&auth, "admin@bench.vn").await?;
    let bearer = || TraceInterceptor::with_bearer(&admin);
    let mut users = giao_tests::auth_client(&auth, Some(&admin)).await;
    let mut ids = Vec::new();
    for name in ["leaver", "successor"] {
        ids.push(
            users
                .create_user(CreateUserRequest {
                    email: format!("{name}@bench.vn"),
                    display_name: name.into(),
                    role: Role::Agent as i32,
                    initial_password: PASSWORD.into(),
                    ..Default::default()
                })
                .await?
                .into_inner()
                .user_id,
        );
    }
    let (leaver, successor) = (ids[0].clone(), ids[1].clone());
    let mut messages =
        MessageStoreServiceClient::with_interceptor(store.channel().await, bearer()?);
    let mut owners =
        AssignmentServiceClient::with_interceptor(assignment.channel().await, bearer()?);

    // Seed: `total` conversations owned by the leaver (set directly in message-store).
    let seeding = Instant::now();
    let mut conversations = Vec::with_capacity(total);
    for start in (0..total).step_by(500) {
        let batch = (start..(start + 500).min(total))
            .map(|n| InboundMessage {
                external_message_id: format!("m-{n}"),
                ..first_message(&format!("c-{n}"))
            })
            .collect();
        let stored: Vec<String> = messages
            .append_inbound_batch(AppendInboundBatchRequest { messages: batch })
            .await?
            .into_inner()
            .results
            .into_iter()
            .filter_map(|result| result.message)
            .map(|message| message.conversation_id)
            .collect();
        messages
            .set_conversation_owner(SetConversationOwnerRequest {
                conversation_ids: stored.clone(),
                owner_user_id: leaver.clone(),
                ..Default::default()
            })
            .await?;
        conversations.extend(stored);
    }
    println!(
        "assignment: seeded {total} conversations owned by one agent in {:.1}s",
        seeding.elapsed().as_secs_f64()
    );

    // The handover is measured on a settled system: first the assignment service digests the
    // seed's events (one SLA clock per waiting conversation), which is timed on its own.
    let settling = Instant::now();
    let mut clocks_db = sqlx::PgConnection::connect(&assignment_database).await?;
    loop {
        let clocks: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM sla_clocks WHERE tenant_id = 'bench'")
                .fetch_one(&mut clocks_db)
                .await?;
        if clocks as usize >= conversations.len() {
            break;
        }
        anyhow::ensure!(
            settling.elapsed() < Duration::from_secs(600),
            "assignment consumed only {clocks} of the seed's events in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let settle_seconds = settling.elapsed().as_secs_f64();
    // A real book of this size grew over months, and autovacuum has vacuumed and analyzed
    // its tables many times; seeded in seconds, they are not yet, and autovacuum would do it
    // in the middle of the handover being measured.
    for url in [&store_database, &assignment_database] {
        sqlx::query("VACUUM ANALYZE")
            .execute(&mut sqlx::PgConnection::connect(url).await?)
            .await?;
    }
    println!(
        "assignment: its consumers caught up with the seed's {total} MessageStored events {settle_seconds:.1}s after seeding ended"
    );

    // Assign latency: back and forth between the two agents over the first conversations.
    let mut latencies = Vec::with_capacity(ASSIGN_CALLS);
    for call in 0..ASSIGN_CALLS {
        let owner = if call % 2 == 0 { &successor } else { &leaver };
        let begun = Instant::now();
        owners
            .assign(AssignRequest {
                conversation_id: conversations[call % 10].clone(),
                owner_user_id: owner.clone(),
                reason: "bench".into(),
            })
            .await?;
        latencies.push(begun.elapsed());
    }
    latencies.sort();
    let (a50, a99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
    // The leaver owns the whole book again before the handover (not timed).
    for conversation in &conversations[..10] {
        owners
            .assign(AssignRequest {
                conversation_id: conversation.clone(),
                owner_user_id: leaver.clone(),
                reason: "bench".into(),
            })
            .await?;
    }

    // The handover's first step on its own: the export of the leaver's book.
    let begun = Instant::now();
    let mut export = messages
        .export_history(ExportHistoryRequest {
            selector: Some(Selector::OwnerUserId(leaver.clone())),
            purpose: "bench".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    while export.message().await?.is_some() {}
    let export_seconds = begun.elapsed().as_secs_f64();

    // A handover longer than the server's request timeout is cut off and resumed by calling
    // again, as a client would; the figure is the time until one call answers the report.
    let begun = Instant::now();
    let mut calls = 0;
    let report = loop {
        calls += 1;
        let answer = owners
            .offboard_staff(OffboardStaffRequest {
                user_id: leaver.clone(),
                successor: Some(Successor::SuccessorUserId(successor.clone())),
                idempotency_key: String::new(),
            })
            .await;
        match answer {
            Ok(report) => break report.into_inner(),
            Err(status)
                if calls < 10
                    && matches!(
                        status.code(),
                        tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
                    ) => {}
            Err(status) => return Err(status.into()),
        }
    };
    let offboard: Duration = begun.elapsed();
    anyhow::ensure!(
        report.conversations_moved == total as u64,
        "OffboardStaff moved {} of {total} conversations",
        report.conversations_moved
    );
    // The goal is for a book of 100,000; a smaller run says nothing about it.
    let goal_met = (total >= OFFBOARD_GOAL_CONVERSATIONS).then_some(offboard <= OFFBOARD_GOAL);
    if calls > 1 {
        println!(
            "assignment: OffboardStaff answered on call {calls} (earlier calls hit the request timeout and were resumed)"
        );
    }
    println!(
        "assignment/postgres: Assign p50 {a50:.2} ms p99 {a99:.2} ms; OffboardStaff of {total} conversations took {:.2}s ({} moved, goal {}s {}; its export step alone {export_seconds:.2}s)",
        offboard.as_secs_f64(),
        report.conversations_moved,
        OFFBOARD_GOAL.as_secs(),
        match goal_met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not judged below 100,000",
        }
    );
    println!(
        "{{\"scenario\":\"assignment/postgres\",\"assign_p50_ms\":{a50:.3},\"assign_p99_ms\":{a99:.3},\
         \"offboard_conversations\":{total},\"offboard_moved\":{},\"offboard_seconds\":{:.3},\
         \"offboard_goal_seconds\":{},\"offboard_goal_met\":{},\"export_seconds\":{export_seconds:.3},\"settle_seconds\":{settle_seconds:.3}}}",
        report.conversations_moved,
        offboard.as_secs_f64(),
        OFFBOARD_GOAL.as_secs(),
        goal_met.map_or("null".to_string(), |met| met.to_string())
    );
    assignment.stop().await?;
    store.stop().await?;
    auth.stop().await?;
    backend.drop_databases().await;
    Ok(())
}

const AGENTS: usize = 20;

/// Routing throughput on `kind` (see the module docs).
pub async fn routing(kind: BackendKind, label: &str) -> anyhow::Result<()> {
    let total: usize = std::env::var("GIAO_BENCH_ROUTED_CONVERSATIONS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(5_000);
    let mut backend = Backend::new(kind).await;
    let auth_config = giao_tests::auth_config(&mut backend).await;
    giao_auth::admin::create_tenant(
        &auth_config,
        "bench",
        "bench",
        "admin@bench.vn",
        Some(PASSWORD.into()),
    )
    .await?;
    let auth = giao_tests::start_auth(auth_config).await;
    let admin = login(&auth, "admin@bench.vn").await?;
    let mut users = giao_tests::auth_client(&auth, Some(&admin)).await;
    let key = users
        .create_api_key(CreateApiKeyRequest {
            name: "routing".into(),
            // messages.write only so that the bench can put the agents online for them.
            scopes: [
                "messages.read",
                "messages.write",
                "contacts.read",
                "assignment.manage",
                "users.manage",
            ]
            .map(String::from)
            .to_vec(),
        })
        .await?
        .into_inner()
        .secret;
    let mut agents = Vec::with_capacity(AGENTS);
    for n in 0..AGENTS {
        agents.push(
            users
                .create_user(CreateUserRequest {
                    email: format!("agent{n}@bench.vn"),
                    display_name: format!("agent {n}"),
                    role: Role::Agent as i32,
                    initial_password: PASSWORD.into(),
                    team_ids: vec!["sales".into()],
                    ..Default::default()
                })
                .await?
                .into_inner()
                .user_id,
        );
    }
    let verify = giao_authz::AuthConfig {
        endpoint: auth.endpoint(),
        dev_tokens: false,
        api_key_cache_secs: 60,
    };
    let mut store_config = giao_tests::message_store_config(&mut backend).await;
    store_config.auth = verify.clone();
    let store = giao_tests::start_message_store(store_config).await;
    let mut config = giao_tests::assignment_config(&mut backend, &store.endpoint()).await;
    config.auth = verify;
    config.auth_service.endpoint = auth.endpoint();
    config
        .routing
        .tenant_api_keys
        .insert("bench".into(), key.clone());
    let assignment = giao_tests::start_assignment(config.clone()).await;
    let bearer = || TraceInterceptor::with_bearer(&admin);
    let mut owners =
        AssignmentServiceClient::with_interceptor(assignment.channel().await, bearer()?);
    owners.sync_roster(SyncRosterRequest {}).await?;
    owners
        .set_routing_policy(SetRoutingPolicyRequest {
            policy: Some(RoutingPolicy {
                team_id: "sales".into(),
                strategy: RoutingStrategy::LeastOpen as i32,
                ..Default::default()
            }),
        })
        .await?;
    // Agents go online with the service key on their behalf (a manager's act).
    let mut service = AssignmentServiceClient::with_interceptor(
        assignment.channel().await,
        TraceInterceptor::with_bearer(&key)?,
    );
    for agent in &agents {
        service
            .set_availability(SetAvailabilityRequest {
                user_id: agent.clone(),
                availability: Availability::Online as i32,
            })
            .await?;
    }
    let mut messages =
        MessageStoreServiceClient::with_interceptor(store.channel().await, bearer()?);
    let begun = Instant::now();
    for start in (0..total).step_by(500) {
        let batch = (start..(start + 500).min(total))
            .map(|n| first_message(&format!("r-{n}")))
            .collect();
        messages
            .append_inbound_batch(AppendInboundBatchRequest { messages: batch })
            .await?;
    }
    let stored = begun.elapsed();
    loop {
        let waiting = messages
            .list_conversations(ListConversationsRequest {
                unassigned: true,
                page: Some(giao_proto::common::PageRequest {
                    page_size: 1,
                    cursor: String::new(),
                }),
                ..Default::default()
            })
            .await?
            .into_inner()
            .conversations;
        if waiting.is_empty() {
            break;
        }
        anyhow::ensure!(
            begun.elapsed() < Duration::from_secs(1_800),
            "routing did not finish in 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let routed = begun.elapsed();
    let rate = total as f64 / routed.as_secs_f64();
    println!(
        "assignment_routing/{label}: {total} new conversations stored in {:.2}s and all routed to {AGENTS} agents after {:.2}s: {rate:.0} conversations/s",
        stored.as_secs_f64(),
        routed.as_secs_f64()
    );

    // One decision at a time, with the service no longer consuming ConversationOpened.
    assignment.stop().await?;
    let decisions: usize = std::env::var("GIAO_BENCH_ROUTING_DECISIONS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(500);
    let router = giao_assignment::router::Router::new(
        giao_storage::Database::connect(&config.database).await?,
        giao_bus::envelope::EventPublisher::new(
            giao_bus::connect(&config.bus).await?,
            "assignment",
        ),
        Some(giao_platform::grpc::channel(
            &store.endpoint(),
            Duration::from_secs(10),
        )?),
        Some(giao_platform::grpc::channel(
            &auth.endpoint(),
            Duration::from_secs(10),
        )?),
        giao_assignment::router::RouterSettings {
            tenant_api_keys: [("bench".to_string(), key.clone())].into(),
            api_key: None,
            drain_interval: Duration::from_secs(3_600),
            roster_sync_interval: Duration::from_secs(3_600),
            ack_wait: Duration::from_secs(30),
            parallelism: 1,
        },
    );
    let mut latencies = Vec::with_capacity(decisions);
    for n in 0..decisions {
        let message = messages
            .append_inbound(giao_proto::messagestore::AppendInboundRequest {
                message: Some(first_message(&format!("d-{n}"))),
            })
            .await?
            .into_inner()
            .message
            .ok_or_else(|| anyhow::anyhow!("no message stored"))?;
        let opened = giao_proto::events::ConversationOpened {
            conversation_id: message.conversation_id.clone(),
            channel_account_id: "oa-bench".into(),
            opened_at: message.sent_at,
            ..Default::default()
        };
        let begun = Instant::now();
        router.conversation_opened("bench", &opened).await?;
        latencies.push(begun.elapsed());
        let owner = messages
            .get_conversation(giao_proto::messagestore::GetConversationRequest {
                conversation_id: message.conversation_id,
            })
            .await?
            .into_inner()
            .owner_user_id;
        anyhow::ensure!(
            agents.contains(&owner),
            "decision {n} left the conversation with {owner:?}"
        );
    }
    latencies.sort();
    let (d50, d99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
    println!(
        "assignment_routing/{label}: one routing decision (new conversation to owner set, history and event) p50 {d50:.2} ms p99 {d99:.2} ms over {decisions}"
    );
    println!(
        "{{\"scenario\":\"assignment_routing/{label}\",\"conversations\":{total},\"agents\":{AGENTS},\"stored_seconds\":{:.3},\"routed_seconds\":{:.3},\"routed_per_second\":{rate:.1},\
         \"decisions\":{decisions},\"decision_p50_ms\":{d50:.3},\"decision_p99_ms\":{d99:.3}}}",
        stored.as_secs_f64(),
        routed.as_secs_f64()
    );
    store.stop().await?;
    auth.stop().await?;
    backend.drop_databases().await;
    Ok(())
}
