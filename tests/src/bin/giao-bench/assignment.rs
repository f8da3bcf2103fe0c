//! `assignment/postgres`: Assign latency (the synchronous ownership path: read the
//! conversation in message-store, set its owner, record history, publish), and OffboardStaff
//! of one agent owning `GIAO_BENCH_OFFBOARD_CONVERSATIONS` (default 100,000) conversations,
//! on PostgreSQL + JetStream with the real auth service.
//!
//! `assignment_routing/<backend>`: routing throughput — `GIAO_BENCH_ROUTED_CONVERSATIONS`
//! (default 5,000) new conversations arriving in batches of 500, each routed from its
//! ConversationOpened (contact read, decision under the tenant lock, owner set in
//! message-store, history, event) to one of 20 online agents by least open; timed from the
//! first batch until none is left unassigned.

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
                channel_account_id: "oa-bench".into(),
                external_message_id: format!("m-{n}"),
                external_thread_id: format!("c-{n}"),
                customer: Some(ChannelUser {
                    external_user_id: format!("c-{n}"),
                    display_name: format!("Khách {n}"),
                    ..Default::default()
                }),
                content: Some(MessageContent {
                    r#type: ContentType::Text as i32,
                    text: format!("cho em hỏi giá sản phẩm {n}"),
                    ..Default::default()
                }),
                ..Default::default()
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
    if calls > 1 {
        println!(
            "assignment: OffboardStaff answered on call {calls} (earlier calls hit the request timeout and were resumed)"
        );
    }
    println!(
        "assignment/postgres: Assign p50 {a50:.2} ms p99 {a99:.2} ms; OffboardStaff of {total} conversations took {:.2}s ({} moved, goal 10s; its export step alone {export_seconds:.2}s)",
        offboard.as_secs_f64(),
        report.conversations_moved
    );
    println!(
        "{{\"scenario\":\"assignment/postgres\",\"assign_p50_ms\":{a50:.3},\"assign_p99_ms\":{a99:.3},\
         \"offboard_conversations\":{total},\"offboard_moved\":{},\"offboard_seconds\":{:.3},\"export_seconds\":{export_seconds:.3},\"settle_seconds\":{settle_seconds:.3}}}",
        report.conversations_moved,
        offboard.as_secs_f64()
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
    let assignment = giao_tests::start_assignment(config).await;
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
            .map(|n| InboundMessage {
                channel_account_id: "oa-bench".into(),
                external_message_id: format!("r-{n}"),
                external_thread_id: format!("r-{n}"),
                customer: Some(ChannelUser {
                    external_user_id: format!("r-{n}"),
                    display_name: format!("Khách {n}"),
                    ..Default::default()
                }),
                content: Some(MessageContent {
                    r#type: ContentType::Text as i32,
                    text: format!("cho em hỏi giá {n}"),
                    ..Default::default()
                }),
                ..Default::default()
            })
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
    println!(
        "{{\"scenario\":\"assignment_routing/{label}\",\"conversations\":{total},\"agents\":{AGENTS},\"stored_seconds\":{:.3},\"routed_seconds\":{:.3},\"routed_per_second\":{rate:.1}}}",
        stored.as_secs_f64(),
        routed.as_secs_f64()
    );
    assignment.stop().await?;
    store.stop().await?;
    auth.stop().await?;
    backend.drop_databases().await;
    Ok(())
}
