//! assignment behaviour a user sees, on both backends: assigning, transferring with a note
//! and bulk reassignment move the owner in message-store before the call returns (the
//! previous owner loses access at once, the new one sees the full history), and every move
//! is in the ownership history with who, when and why.

use giao_proto::events::envelope::Payload;
use giao_proto::{
    assignment::{
        AssignRequest, BulkReassignRequest, GetOwnershipHistoryRequest, TransferRequest,
        assignment_service_client::AssignmentServiceClient,
    },
    common::{ChannelUser, ContentType, MessageContent},
    messagestore::{
        AppendInboundRequest, GetHistoryRequest, InboundMessage, RecordOutboundRequest,
        message_store_service_client::MessageStoreServiceClient,
    },
};
use giao_tests::{
    Authed, Backend, BackendKind, Running, as_user, assignment_config, message_store_client,
    message_store_config, start_assignment, start_message_store,
};
use tonic::Code;

const TENANT: &str = "acme";

struct Suite {
    _backend: Backend,
    store: Running,
    assignment: Running,
}

async fn start(kind: BackendKind) -> Suite {
    let mut backend = Backend::new(kind).await;
    let store = start_message_store(message_store_config(&mut backend).await).await;
    let assignment =
        start_assignment(assignment_config(&mut backend, &store.endpoint()).await).await;
    Suite {
        _backend: backend,
        store,
        assignment,
    }
}

impl Suite {
    async fn assignment_as(
        &self,
        tenant: &str,
        user: &str,
        role: &str,
    ) -> AssignmentServiceClient<Authed> {
        AssignmentServiceClient::with_interceptor(
            self.assignment.channel().await,
            as_user(tenant, user, role),
        )
    }

    async fn store_as(&self, user: &str, role: &str) -> MessageStoreServiceClient<Authed> {
        MessageStoreServiceClient::with_interceptor(
            self.store.channel().await,
            as_user(TENANT, user, role),
        )
    }

    /// A new conversation from customer `customer`, as captured by the connector.
    async fn conversation(&self, customer: &str) -> String {
        let mut admin = message_store_client(&self.store, TENANT, "admin").await;
        admin
            .append_inbound(inbound_from(customer))
            .await
            .expect("appends")
            .into_inner()
            .message
            .expect("message")
            .conversation_id
    }
}

/// A customer's text on `thread` of oa-1.
fn customer_text(customer: &str, thread: &str, id: &str, text: &str) -> InboundMessage {
    InboundMessage {
        channel_account_id: "oa-1".into(),
        external_message_id: id.into(),
        external_thread_id: thread.into(),
        customer: Some(ChannelUser {
            external_user_id: customer.into(),
            display_name: format!("Khách {customer}"),
            ..Default::default()
        }),
        content: Some(MessageContent {
            r#type: ContentType::Text as i32,
            text: text.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn inbound_from(customer: &str) -> AppendInboundRequest {
    AppendInboundRequest {
        message: Some(customer_text(
            customer,
            customer,
            &format!("m-{customer}"),
            &format!("xin chào từ {customer}"),
        )),
    }
}

async fn history_texts(
    client: &mut MessageStoreServiceClient<Authed>,
    conversation_id: &str,
) -> Result<Vec<String>, tonic::Status> {
    Ok(client
        .get_history(GetHistoryRequest {
            conversation_id: conversation_id.into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .messages
        .into_iter()
        .map(|message| message.content.unwrap_or_default().text)
        .collect())
}

async fn reply(
    client: &mut MessageStoreServiceClient<Authed>,
    conversation_id: &str,
    key: &str,
) -> Result<(), tonic::Status> {
    client
        .record_outbound(RecordOutboundRequest {
            conversation_id: conversation_id.into(),
            content: Some(MessageContent {
                r#type: ContentType::Text as i32,
                text: "dạ em chào anh".into(),
                ..Default::default()
            }),
            idempotency_key: key.into(),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

async fn transfer_moves_access_at_once_and_is_in_the_history(kind: BackendKind) {
    let suite = start(kind).await;
    let conversation = suite.conversation("c1").await;
    let mut supervisor = suite.assignment_as(TENANT, "u-sup", "admin").await;
    let mut alice = suite.store_as("u-alice", "agent").await;
    let mut bob = suite.store_as("u-bob", "agent").await;

    // Before assignment no agent sees it.
    let hidden = history_texts(&mut alice, &conversation)
        .await
        .expect_err("refused");
    assert_eq!(hidden.code(), Code::NotFound);

    let assigned = supervisor
        .assign(AssignRequest {
            conversation_id: conversation.clone(),
            owner_user_id: "u-alice".into(),
            reason: "vip customer".into(),
        })
        .await
        .expect("assigns")
        .into_inner();
    assert_eq!(assigned.owner_user_id, "u-alice");
    assert_eq!(assigned.previous_owner_user_id, "");
    assert_eq!(
        history_texts(&mut alice, &conversation)
            .await
            .expect("alice reads"),
        vec!["xin chào từ c1".to_string()]
    );
    reply(&mut alice, &conversation, "r-1")
        .await
        .expect("alice replies");

    let transferred = supervisor
        .transfer(TransferRequest {
            conversation_id: conversation.clone(),
            to_user_id: "u-bob".into(),
            note: "alice is on leave".into(),
        })
        .await
        .expect("transfers")
        .into_inner();
    assert_eq!(transferred.previous_owner_user_id, "u-alice");

    // The previous owner can neither read nor reply the moment Transfer returns.
    let gone = history_texts(&mut alice, &conversation)
        .await
        .expect_err("refused");
    assert_eq!(gone.code(), Code::NotFound);
    assert!(reply(&mut alice, &conversation, "r-2").await.is_err());
    // The new owner sees the full history, including alice's reply.
    let seen = history_texts(&mut bob, &conversation)
        .await
        .expect("bob reads");
    assert_eq!(seen.len(), 2, "full history: {seen:?}");

    let history = supervisor
        .get_ownership_history(GetOwnershipHistoryRequest {
            conversation_id: conversation.clone(),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner()
        .changes;
    let summary: Vec<_> = history
        .iter()
        .map(|change| {
            (
                change.owner_user_id.as_str(),
                change.previous_owner_user_id.as_str(),
                change.actor.as_str(),
                change.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("u-alice", "", "u-sup", "vip customer"),
            ("u-bob", "u-alice", "u-sup", "alice is on leave"),
        ]
    );
    assert!(history.iter().all(|change| change.at.is_some()));

    // Bob, the owner, may read the history; alice no longer may.
    let mut bob_assignment = suite.assignment_as(TENANT, "u-bob", "agent").await;
    assert_eq!(
        bob_assignment
            .get_ownership_history(GetOwnershipHistoryRequest {
                conversation_id: conversation.clone(),
                ..Default::default()
            })
            .await
            .expect("owner reads history")
            .into_inner()
            .changes
            .len(),
        2
    );
    let mut alice_assignment = suite.assignment_as(TENANT, "u-alice", "agent").await;
    let denied = alice_assignment
        .get_ownership_history(GetOwnershipHistoryRequest {
            conversation_id: conversation.clone(),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(denied.code(), Code::NotFound);
}

async fn bad_ownership_requests_are_refused_and_move_nothing(kind: BackendKind) {
    let suite = start(kind).await;
    let conversation = suite.conversation("c1").await;
    let mut supervisor = suite.assignment_as(TENANT, "u-sup", "admin").await;

    let missing_note = supervisor
        .transfer(TransferRequest {
            conversation_id: conversation.clone(),
            to_user_id: "u-bob".into(),
            note: " ".into(),
        })
        .await
        .expect_err("refused");
    assert_eq!(missing_note.code(), Code::InvalidArgument);
    assert!(missing_note.message().contains("note"), "{missing_note:?}");

    let missing_owner = supervisor
        .assign(AssignRequest {
            conversation_id: conversation.clone(),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(missing_owner.code(), Code::InvalidArgument);
    assert!(missing_owner.message().contains("owner_user_id"));

    // Another tenant's admin cannot tell the conversation exists.
    let mut stranger = suite.assignment_as("globex", "u-x", "admin").await;
    let foreign = stranger
        .assign(AssignRequest {
            conversation_id: conversation.clone(),
            owner_user_id: "u-x".into(),
            reason: String::new(),
        })
        .await
        .expect_err("refused");
    assert_eq!(foreign.code(), Code::NotFound);

    // An agent may not assign.
    let mut agent = suite.assignment_as(TENANT, "u-alice", "agent").await;
    let refused = agent
        .assign(AssignRequest {
            conversation_id: conversation.clone(),
            owner_user_id: "u-alice".into(),
            reason: String::new(),
        })
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::PermissionDenied);

    // A bulk move with one unknown id moves none of them.
    let other = suite.conversation("c2").await;
    let partial = supervisor
        .bulk_reassign(BulkReassignRequest {
            conversation_ids: vec![other.clone(), "0190f0a0-0000-7000-8000-000000000000".into()],
            to_user_id: "u-bob".into(),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(partial.code(), Code::NotFound);
    let mut bob = suite.store_as("u-bob", "agent").await;
    assert_eq!(
        history_texts(&mut bob, &other)
            .await
            .expect_err("refused")
            .code(),
        Code::NotFound
    );
    let history = supervisor
        .get_ownership_history(GetOwnershipHistoryRequest {
            conversation_id: conversation.clone(),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner();
    assert!(history.changes.is_empty(), "nothing moved: {history:?}");
}

async fn bulk_reassign_moves_all_once_with_history(kind: BackendKind) {
    let suite = start(kind).await;
    let mut ids = Vec::new();
    for customer in ["c1", "c2", "c3"] {
        ids.push(suite.conversation(customer).await);
    }
    let mut supervisor = suite.assignment_as(TENANT, "u-sup", "admin").await;
    let request = BulkReassignRequest {
        conversation_ids: ids.clone(),
        to_user_id: "u-carol".into(),
        reason: "rebalance".into(),
        idempotency_key: "k-1".into(),
    };
    let moved = supervisor
        .bulk_reassign(request.clone())
        .await
        .expect("moves")
        .into_inner()
        .moved;
    assert_eq!(moved, 3);
    // A retry changes nothing.
    let again = supervisor
        .bulk_reassign(request)
        .await
        .expect("retry")
        .into_inner()
        .moved;
    assert_eq!(again, 0);
    let mut carol = suite.store_as("u-carol", "agent").await;
    for id in &ids {
        assert_eq!(history_texts(&mut carol, id).await.expect("reads").len(), 1);
        let changes = supervisor
            .get_ownership_history(GetOwnershipHistoryRequest {
                conversation_id: id.clone(),
                ..Default::default()
            })
            .await
            .expect("history")
            .into_inner()
            .changes;
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].owner_user_id, "u-carol");
        assert_eq!(changes[0].reason, "rebalance");
    }
}

async fn agents_set_their_own_availability(kind: BackendKind) {
    use giao_proto::assignment::{Availability, SetAvailabilityRequest};
    let suite = start(kind).await;
    let mut agent = suite.assignment_as(TENANT, "u-alice", "agent").await;
    let set = agent
        .set_availability(SetAvailabilityRequest {
            user_id: String::new(),
            availability: Availability::Away as i32,
        })
        .await
        .expect("sets own")
        .into_inner();
    assert_eq!(set.availability, Availability::Away as i32);
    let others = agent
        .set_availability(SetAvailabilityRequest {
            user_id: "u-bob".into(),
            availability: Availability::Offline as i32,
        })
        .await
        .expect_err("refused");
    assert_eq!(others.code(), Code::PermissionDenied);
    let unspecified = agent
        .set_availability(SetAvailabilityRequest {
            user_id: String::new(),
            availability: 0,
        })
        .await
        .expect_err("refused");
    assert_eq!(unspecified.code(), Code::InvalidArgument);
    assert!(unspecified.message().contains("availability"));
    let mut supervisor = suite.assignment_as(TENANT, "u-sup", "supervisor").await;
    supervisor
        .set_availability(SetAvailabilityRequest {
            user_id: "u-bob".into(),
            availability: Availability::Offline as i32,
        })
        .await
        .expect("a supervisor sets an agent's");
}

giao_tests::on_both_backends!(
    transfer_moves_access_at_once_and_is_in_the_history,
    bad_ownership_requests_are_refused_and_move_nothing,
    bulk_reassign_moves_all_once_with_history,
    agents_set_their_own_availability,
    round_robin_least_open_and_rules_route_new_conversations,
    a_returning_customer_goes_back_to_their_owner,
    the_queue_hands_out_oldest_first_as_capacity_frees,
    routing_settings_are_validated_and_listed,
    an_sla_breach_fires_once_with_two_scheduler_replicas,
    two_schedulers_never_claim_the_same_clock,
    unattended_lists_longest_wait_first_within_visibility,
    reminders_fall_due_and_follow_ups_remind_the_owner,
    a_shift_change_follows_the_tenants_policy,
    a_disconnected_account_with_open_work_alerts_its_supervisors,
    an_unanswered_customer_goes_to_another_agent_once,
    a_leavers_work_is_shared_across_their_team,
    overlapping_shifts_of_one_person_are_refused,
    bad_sla_policies_are_refused_and_store_nothing,
    sla_clocks_count_business_hours_only,
    two_scheduler_replicas_fire_each_timer_once,
    timers_fire_when_their_log_cannot_be_written,
    every_move_publishes_conversation_assigned,
    a_returning_customer_skips_an_owner_off_shift_or_gone,
    customers_captured_in_a_batch_start_their_clocks,
);

use routing::{
    a_disconnected_account_with_open_work_alerts_its_supervisors,
    a_leavers_work_is_shared_across_their_team, a_returning_customer_goes_back_to_their_owner,
    a_returning_customer_skips_an_owner_off_shift_or_gone,
    a_shift_change_follows_the_tenants_policy,
    an_sla_breach_fires_once_with_two_scheduler_replicas,
    an_unanswered_customer_goes_to_another_agent_once,
    bad_sla_policies_are_refused_and_store_nothing,
    customers_captured_in_a_batch_start_their_clocks, every_move_publishes_conversation_assigned,
    overlapping_shifts_of_one_person_are_refused,
    reminders_fall_due_and_follow_ups_remind_the_owner,
    round_robin_least_open_and_rules_route_new_conversations,
    routing_settings_are_validated_and_listed, sla_clocks_count_business_hours_only,
    the_queue_hands_out_oldest_first_as_capacity_frees,
    timers_fire_when_their_log_cannot_be_written, two_scheduler_replicas_fire_each_timer_once,
    two_schedulers_never_claim_the_same_clock,
    unattended_lists_longest_wait_first_within_visibility,
};

pub(crate) type Seen = std::sync::Arc<std::sync::Mutex<Vec<giao_proto::events::envelope::Payload>>>;

/// Every event of `event_type` on this test's bus, as it arrives.
pub(crate) fn collect(bus: &giao_bus::BusConfig, event_type: &'static str) -> Seen {
    let seen: Seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let collected = seen.clone();
    let bus = bus.clone();
    tokio::spawn(async move {
        let bus = giao_bus::connect(&bus).await.expect("bus");
        let spec = giao_bus::ConsumerSpec {
            durable_name: format!("test-{event_type}"),
            filter_subjects: vec![giao_bus::envelope::subject_filter(event_type)],
            ack_wait: std::time::Duration::from_secs(5),
            max_deliver: None,
            inactive_threshold: None,
        };
        let _ = giao_bus::run_consumer(
            bus,
            spec,
            tokio_util::sync::CancellationToken::new(),
            move |delivery: &giao_bus::Delivery| {
                let collected = collected.clone();
                let decoded = giao_bus::envelope::decode(delivery);
                async move {
                    if let Ok((envelope, _)) = decoded
                        && let Some(payload) = envelope.payload
                    {
                        collected.lock().expect("lock").push(payload);
                    }
                    giao_bus::HandlerOutcome::Done
                }
            },
        )
        .await;
    });
    seen
}

/// Polls `check` until it yields a value, failing after 30 seconds with `what`.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Sets a shift on account `oa-1` as `client`.
async fn put_shift(
    client: &mut AssignmentServiceClient<Authed>,
    shift_id: &str,
    user_id: &str,
    weekdays: &[u32],
    hours: (&str, &str),
) -> Result<(), tonic::Status> {
    client
        .set_shift(giao_proto::assignment::SetShiftRequest {
            shift: Some(giao_proto::assignment::Shift {
                shift_id: shift_id.into(),
                user_id: user_id.into(),
                channel_account_ids: vec!["oa-1".into()],
                weekdays: weekdays.to_vec(),
                starts_at: hours.0.into(),
                ends_at: hours.1.into(),
            }),
        })
        .await
        .map(|_| ())
}

/// A call-back about `conversation_id` two days from now, set by `client`'s user.
async fn call_back(client: &mut AssignmentServiceClient<Authed>, conversation_id: &str) {
    let later = chrono::Utc::now() + chrono::Duration::days(2);
    client
        .create_reminder(giao_proto::assignment::CreateReminderRequest {
            reminder: Some(giao_proto::assignment::Reminder {
                conversation_id: conversation_id.into(),
                text: "gọi lại thứ sáu".into(),
                due_at: Some(prost_types::Timestamp {
                    seconds: later.timestamp(),
                    nanos: 0,
                }),
                ..Default::default()
            }),
            idempotency_key: String::new(),
        })
        .await
        .expect("reminder set");
}

/// Publishes `marker` and waits until `seen` (collected from the marker's event type) holds
/// it: a consumer handles one stream in order, so everything published before is in `seen`
/// too, and what is absent was not published.
async fn caught_up(bus: &giao_bus::BusConfig, seen: &Seen, marker: Payload) {
    let publisher =
        giao_bus::envelope::EventPublisher::new(giao_bus::connect(bus).await.expect("bus"), "test");
    publisher
        .publish(
            TENANT,
            format!("marker-{}", uuid::Uuid::now_v7()),
            marker.clone(),
        )
        .await
        .expect("marker published");
    giao_testkit::wait_until(
        std::time::Duration::from_secs(30),
        "the collector reaches the marker",
        || {
            let found = seen.lock().expect("lock").contains(&marker);
            async move { found }
        },
    )
    .await;
}

/// The ConversationAssigned events in `seen`.
fn assignments(seen: &Seen) -> Vec<giao_proto::events::ConversationAssigned> {
    seen.lock()
        .expect("lock")
        .iter()
        .filter_map(|payload| match payload {
            Payload::ConversationAssigned(assigned) => Some(assigned.clone()),
            _ => None,
        })
        .collect()
}

/// OffboardStaff against the real auth service, real signed tokens and real logins.
mod offboarding {
    use giao_proto::{
        assignment::{
            AssignRequest, OffboardStaffRequest, OffboardStaffResponse,
            assignment_service_client::AssignmentServiceClient, offboard_staff_request::Successor,
        },
        auth::{CreateUserRequest, LoginRequest},
        messagestore::message_store_service_client::MessageStoreServiceClient,
    };
    use giao_tests::{Authed, Backend, BackendKind, Running, TraceInterceptor};
    use tonic::Code;

    use super::{call_back, history_texts, put_shift, reply};

    const PASSWORD: &str = "a long enough password";

    struct Company {
        backend: Backend,
        auth: Running,
        store: Running,
        assignment: Running,
        assignment_config: giao_assignment::Config,
        admin_user_id: String,
    }

    impl Company {
        async fn start() -> Self {
            let mut backend = Backend::new(BackendKind::Postgres).await;
            let auth_config = giao_tests::auth_config(&mut backend).await;
            let mut admin_user_id = String::new();
            for tenant in ["acme", "globex"] {
                let created = giao_auth::admin::create_tenant(
                    &auth_config,
                    tenant,
                    tenant,
                    &format!("admin@{tenant}.vn"),
                    Some(PASSWORD.into()),
                )
                .await
                .expect("tenant created");
                if tenant == "acme" {
                    admin_user_id = created.user.id;
                }
            }
            let auth = giao_tests::start_auth(auth_config).await;
            let verify = giao_authz::AuthConfig {
                endpoint: auth.endpoint(),
                dev_tokens: false,
                api_key_cache_secs: 1,
            };
            let mut store_config = giao_tests::message_store_config(&mut backend).await;
            store_config.auth = verify.clone();
            let store = giao_tests::start_message_store(store_config).await;
            let mut config = giao_tests::assignment_config(&mut backend, &store.endpoint()).await;
            config.auth = verify;
            config.auth_service.endpoint = auth.endpoint();
            let assignment = giao_tests::start_assignment(config.clone()).await;
            Self {
                backend,
                auth,
                store,
                assignment,
                assignment_config: config,
                admin_user_id,
            }
        }

        async fn login(&self, tenant: &str, login: &str) -> String {
            giao_tests::auth_client(&self.auth, None)
                .await
                .login(LoginRequest {
                    tenant: tenant.into(),
                    login: login.into(),
                    password: PASSWORD.into(),
                })
                .await
                .expect("logs in")
                .into_inner()
                .access_token
        }

        /// Creates an agent in `tenant` and returns its user id.
        async fn agent(&self, tenant: &str, name: &str) -> String {
            let admin = self.login(tenant, &format!("admin@{tenant}.vn")).await;
            giao_tests::auth_client(&self.auth, Some(&admin))
                .await
                .create_user(CreateUserRequest {
                    email: format!("{name}@{tenant}.vn"),
                    display_name: name.into(),
                    role: giao_proto::common::Role::Agent as i32,
                    initial_password: PASSWORD.into(),
                    ..Default::default()
                })
                .await
                .expect("user created")
                .into_inner()
                .user_id
        }

        async fn store_with(&self, token: &str) -> MessageStoreServiceClient<Authed> {
            MessageStoreServiceClient::with_interceptor(
                self.store.channel().await,
                TraceInterceptor::with_bearer(token).expect("bearer"),
            )
        }

        async fn assignment_with(&self, token: &str) -> AssignmentServiceClient<Authed> {
            AssignmentServiceClient::with_interceptor(
                self.assignment.channel().await,
                TraceInterceptor::with_bearer(token).expect("bearer"),
            )
        }
    }

    /// Counts what a paged listing returns: `list` answers one page's size and next cursor.
    async fn counted<F, Fut>(mut list: F) -> usize
    where
        F: FnMut(giao_proto::common::PageRequest) -> Fut,
        Fut: std::future::Future<Output = (usize, String)>,
    {
        let mut count = 0;
        let mut cursor = String::new();
        loop {
            let (size, next) = list(giao_proto::common::PageRequest {
                page_size: 500,
                cursor,
            })
            .await;
            count += size;
            if next.is_empty() {
                return count;
            }
            cursor = next;
        }
    }

    fn offboard(user_id: &str, successor: &str) -> OffboardStaffRequest {
        OffboardStaffRequest {
            user_id: user_id.into(),
            successor: Some(Successor::SuccessorUserId(successor.into())),
            idempotency_key: String::new(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn offboarding_hands_everything_over_and_ends_the_leavers_access() {
        let company = Company::start().await;
        let leaver = company.agent("acme", "lan").await;
        let successor = company.agent("acme", "minh").await;
        let stranger = company.agent("globex", "kim").await;
        let admin_token = company.login("acme", "admin@acme.vn").await;
        let mut admin_store = company.store_with(&admin_token).await;
        let mut admin = company.assignment_with(&admin_token).await;
        let assigned = super::collect(&company.backend.bus, "conversation_assigned");
        let offboarded = super::collect(&company.backend.bus, "staff_offboarded");

        let mut conversations = Vec::new();
        for customer in ["c1", "c2", "c3"] {
            let id = admin_store
                .append_inbound(super::inbound_from(customer))
                .await
                .expect("appends")
                .into_inner()
                .message
                .expect("message")
                .conversation_id;
            admin
                .assign(AssignRequest {
                    conversation_id: id.clone(),
                    owner_user_id: leaver.clone(),
                    reason: "new lead".into(),
                })
                .await
                .expect("assigns");
            conversations.push(id);
        }
        let leaver_token = company.login("acme", "lan@acme.vn").await;
        let mut leaver_store = company.store_with(&leaver_token).await;
        reply(&mut leaver_store, &conversations[0], "before")
            .await
            .expect("the leaver works normally before");
        // A call-back the leaver set and the leaver's shifts are handed over too, but the
        // successor already works late mornings: the leaver's mornings would make them work
        // two shifts at once and stay with the leaver; the evenings are free.
        call_back(
            &mut company.assignment_with(&leaver_token).await,
            &conversations[1],
        )
        .await;
        for (shift_id, user_id, hours) in [
            ("lan-mornings", &leaver, ("08:00", "12:00")),
            ("lan-evenings", &leaver, ("18:00", "22:00")),
            ("minh-late-mornings", &successor, ("09:00", "11:00")),
        ] {
            put_shift(&mut admin, shift_id, user_id, &[1, 2, 3, 4, 5], hours)
                .await
                .expect("shift set");
        }

        // Bad input: clear errors naming the field, and nothing moves.
        let unknown = admin
            .offboard_staff(offboard("0190f0a0-0000-7000-8000-000000000000", &successor))
            .await
            .expect_err("refused");
        assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
        assert!(unknown.message().contains("user_id"), "{unknown:?}");
        let unknown_successor = admin
            .offboard_staff(offboard(&leaver, "0190f0a0-0000-7000-8000-000000000000"))
            .await
            .expect_err("refused");
        assert_eq!(unknown_successor.code(), Code::NotFound);
        assert!(unknown_successor.message().contains("successor_user_id"));
        let foreign = admin
            .offboard_staff(offboard(&leaver, &stranger))
            .await
            .expect_err("refused");
        assert_eq!(foreign.code(), Code::NotFound);
        assert!(foreign.message().contains("successor_user_id"));
        let yourself = admin
            .offboard_staff(offboard(&company.admin_user_id, &successor))
            .await
            .expect_err("refused");
        assert_eq!(yourself.code(), Code::InvalidArgument);
        assert!(yourself.message().contains("user_id"));
        let missing = admin
            .offboard_staff(OffboardStaffRequest {
                user_id: leaver.clone(),
                ..Default::default()
            })
            .await
            .expect_err("refused");
        assert_eq!(missing.code(), Code::InvalidArgument);
        assert!(missing.message().contains("successor"));
        assert_eq!(
            history_texts(&mut leaver_store, &conversations[1])
                .await
                .expect("nothing moved after bad input")
                .len(),
            1
        );

        let report: OffboardStaffResponse = admin
            .offboard_staff(offboard(&leaver, &successor))
            .await
            .expect("offboards")
            .into_inner();
        assert_eq!(report.conversations_moved, 3);
        // Three customers moved with their conversations: message-store names the
        // successor as their owner.
        assert_eq!(report.contacts_moved, 3);
        let customers = |owner: String| {
            let mut store = admin_store.clone();
            async move {
                store
                    .list_contacts(giao_proto::messagestore::ListContactsRequest {
                        owner_user_id: owner,
                        ..Default::default()
                    })
                    .await
                    .expect("lists contacts")
                    .into_inner()
                    .contacts
                    .len()
            }
        };
        assert_eq!(customers(successor.clone()).await, 3);
        assert_eq!(customers(leaver.clone()).await, 0);
        assert_eq!(
            (
                report.reminders_moved,
                report.shifts_moved,
                report.shifts_kept
            ),
            (1, 1, 1)
        );
        assert!(!report.export_id.is_empty());
        assert_eq!(report.export_sha256.len(), 64);

        // The leaver's real token can neither list, read nor reply, and nothing they tried
        // to send was stored.
        let refused = |status: tonic::Status| {
            assert!(
                matches!(
                    status.code(),
                    Code::NotFound | Code::Unauthenticated | Code::PermissionDenied
                ),
                "{status:?}"
            );
        };
        match leaver_store
            .list_conversations(giao_proto::messagestore::ListConversationsRequest::default())
            .await
        {
            Ok(listed) => assert!(listed.into_inner().conversations.is_empty()),
            Err(status) => refused(status),
        }
        for id in &conversations {
            refused(
                history_texts(&mut leaver_store, id)
                    .await
                    .expect_err("history refused"),
            );
            refused(
                leaver_store
                    .get_conversation(giao_proto::messagestore::GetConversationRequest {
                        conversation_id: id.clone(),
                    })
                    .await
                    .expect_err("conversation refused"),
            );
            refused(
                reply(&mut leaver_store, id, "after")
                    .await
                    .expect_err("reply refused"),
            );
        }
        let mut stored = Vec::new();
        for id in &conversations {
            stored.push(
                history_texts(&mut admin_store, id)
                    .await
                    .expect("admin reads")
                    .len(),
            );
        }
        assert_eq!(stored, [2, 1, 1], "no reply of the leaver was stored");
        // The leaver cannot log in again either.
        let relogin = giao_tests::auth_client(&company.auth, None)
            .await
            .login(LoginRequest {
                tenant: "acme".into(),
                login: "lan@acme.vn".into(),
                password: PASSWORD.into(),
            })
            .await;
        assert!(relogin.is_err());

        // The successor sees every conversation with its full history.
        let successor_token = company.login("acme", "minh@acme.vn").await;
        let mut successor_store = company.store_with(&successor_token).await;
        let mut listed: Vec<String> = successor_store
            .list_conversations(giao_proto::messagestore::ListConversationsRequest::default())
            .await
            .expect("successor lists")
            .into_inner()
            .conversations
            .into_iter()
            .map(|conversation| conversation.conversation_id)
            .collect();
        listed.sort();
        let mut expected = conversations.clone();
        expected.sort();
        assert_eq!(listed, expected);
        let first = history_texts(&mut successor_store, &conversations[0])
            .await
            .expect("successor reads");
        assert_eq!(first.len(), 2, "inbound and the leaver's reply: {first:?}");
        for id in &conversations[1..] {
            assert_eq!(
                history_texts(&mut successor_store, id)
                    .await
                    .expect("successor reads")
                    .len(),
                1
            );
        }

        let successor_assignment = company.assignment_with(&successor_token).await;
        let reminders = successor_assignment
            .clone()
            .list_reminders(giao_proto::assignment::ListRemindersRequest::default())
            .await
            .expect("lists")
            .into_inner()
            .reminders;
        assert_eq!(reminders.len(), 1);
        assert_eq!(reminders[0].text, "gọi lại thứ sáu");
        let shifts = successor_assignment
            .clone()
            .list_shifts(giao_proto::assignment::ListShiftsRequest::default())
            .await
            .expect("lists")
            .into_inner()
            .shifts;
        let mut shift_ids: Vec<String> = shifts.into_iter().map(|shift| shift.shift_id).collect();
        shift_ids.sort();
        assert_eq!(shift_ids, ["lan-evenings", "minh-late-mornings"]);
        let kept = admin
            .list_shifts(giao_proto::assignment::ListShiftsRequest {
                user_id: leaver.clone(),
                page: None,
            })
            .await
            .expect("lists")
            .into_inner()
            .shifts;
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].shift_id, "lan-mornings", "left to be re-planned");

        // The handover is in the tenant's audit chain, and its events are out.
        let auditor = giao_tests::auth_client(&company.auth, Some(&admin_token)).await;
        let audited = || {
            let mut auditor = auditor.clone();
            async move {
                auditor
                    .list_audit(giao_proto::auth::ListAuditRequest {
                        action: "staff.handover".into(),
                        ..Default::default()
                    })
                    .await
                    .expect("audit listed")
                    .into_inner()
                    .records
                    .len()
            }
        };
        giao_testkit::wait_until(
            std::time::Duration::from_secs(10),
            "the handover is audited",
            || async { audited().await == 1 },
        )
        .await;
        let handed_over = |seen: &super::Seen| {
            super::assignments(seen)
                .into_iter()
                .filter(|event| event.previous_owner_user_id == leaver)
                .count()
        };
        let staff_offboarded = |seen: &super::Seen| {
            seen.lock()
                .expect("lock")
                .iter()
                .filter(|payload| {
                    matches!(payload, super::Payload::StaffOffboarded(event) if event.user_id == leaver)
                })
                .count()
        };
        giao_testkit::wait_until(
            std::time::Duration::from_secs(10),
            "the handover's events are out",
            || {
                let done = handed_over(&assigned) == 3 && staff_offboarded(&offboarded) == 1;
                async move { done }
            },
        )
        .await;
        let (state_store, state_admin) = (admin_store.clone(), admin.clone());
        let state = || {
            let mut store = state_store.clone();
            let mut admin = state_admin.clone();
            let conversations = conversations.clone();
            async move {
                let mut state = Vec::new();
                for id in conversations {
                    let owner = store
                        .get_conversation(giao_proto::messagestore::GetConversationRequest {
                            conversation_id: id.clone(),
                        })
                        .await
                        .expect("conversation")
                        .into_inner()
                        .owner_user_id;
                    let history = admin
                        .get_ownership_history(giao_proto::assignment::GetOwnershipHistoryRequest {
                            conversation_id: id.clone(),
                            page: None,
                        })
                        .await
                        .expect("history")
                        .into_inner()
                        .changes
                        .len();
                    state.push((id, owner, history));
                }
                state
            }
        };
        let before = state().await;
        assert!(
            before
                .iter()
                .all(|(_, owner, history)| owner == &successor && *history == 2)
        );

        // Calling again changes nothing and returns the same report: the same owners and
        // history, no new event, no new audit record.
        let again = admin
            .offboard_staff(offboard(&leaver, &successor))
            .await
            .expect("second call")
            .into_inner();
        assert_eq!(again, report);
        assert_eq!(state().await, before);
        super::caught_up(
            &company.backend.bus,
            &assigned,
            super::Payload::ConversationAssigned(giao_proto::events::ConversationAssigned {
                conversation_id: "marker".into(),
                ..Default::default()
            }),
        )
        .await;
        super::caught_up(
            &company.backend.bus,
            &offboarded,
            super::Payload::StaffOffboarded(giao_proto::events::StaffOffboarded {
                user_id: "marker".into(),
                ..Default::default()
            }),
        )
        .await;
        assert_eq!(handed_over(&assigned), 3);
        assert_eq!(staff_offboarded(&offboarded), 1);
        assert_eq!(audited().await, 1);
    }

    /// Starts a second assignment replica on its own runtime, so that dropping the runtime
    /// kills it mid-work like a crashed process.
    fn crashable_replica(
        config: giao_assignment::Config,
    ) -> (tokio::runtime::Runtime, std::net::SocketAddr) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (sender, receiver) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let service = giao_assignment::bind(config).await.expect("binds");
            sender.send(service.grpc_addr()).expect("address sent");
            service
                .run(tokio_util::sync::CancellationToken::new())
                .await
        });
        let addr = receiver.recv().expect("replica address");
        (runtime, addr)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_handover_killed_half_way_is_completed_by_calling_again() {
        const TOTAL: usize = 4_000;
        let company = Company::start().await;
        let leaver = company.agent("acme", "lan").await;
        let successor = company.agent("acme", "minh").await;
        let admin_token = company.login("acme", "admin@acme.vn").await;
        let mut admin_store = company.store_with(&admin_token).await;
        let mut admin = company.assignment_with(&admin_token).await;
        let mut conversations = Vec::new();
        for chunk in (0..TOTAL).collect::<Vec<_>>().chunks(500) {
            let results = admin_store
                .append_inbound_batch(giao_proto::messagestore::AppendInboundBatchRequest {
                    messages: chunk
                        .iter()
                        .filter_map(|n| super::inbound_from(&format!("c{n}")).message)
                        .collect(),
                })
                .await
                .expect("appends")
                .into_inner()
                .results;
            let ids: Vec<String> = results
                .into_iter()
                .filter_map(|result| result.message)
                .map(|message| message.conversation_id)
                .collect();
            admin
                .bulk_reassign(giao_proto::assignment::BulkReassignRequest {
                    conversation_ids: ids.clone(),
                    to_user_id: leaver.clone(),
                    reason: "new leads".into(),
                    idempotency_key: String::new(),
                })
                .await
                .expect("assigns");
            conversations.extend(ids);
        }
        assert_eq!(conversations.len(), TOTAL);
        // The leaver's call-back and shift must be completed by the second call too.
        let leaver_token = company.login("acme", "lan@acme.vn").await;
        call_back(
            &mut company.assignment_with(&leaver_token).await,
            &conversations[7],
        )
        .await;
        put_shift(
            &mut admin,
            "lan-weekends",
            &leaver,
            &[6, 7],
            ("09:00", "18:00"),
        )
        .await
        .expect("shift set");

        let owned_by = |user: String, token: String| {
            let store = company.store.endpoint();
            async move {
                let channel = tonic::transport::Channel::from_shared(store)
                    .expect("endpoint")
                    .connect()
                    .await
                    .expect("connects");
                let client = MessageStoreServiceClient::with_interceptor(
                    channel,
                    TraceInterceptor::with_bearer(&token).expect("bearer"),
                );
                counted(|page| {
                    let mut client = client.clone();
                    let user = user.clone();
                    async move {
                        let listed = client
                            .list_conversations(
                                giao_proto::messagestore::ListConversationsRequest {
                                    owner_user_id: user,
                                    page: Some(page),
                                    ..Default::default()
                                },
                            )
                            .await
                            .expect("lists")
                            .into_inner();
                        (
                            listed.conversations.len(),
                            listed.page.unwrap_or_default().next_cursor,
                        )
                    }
                })
                .await
            }
        };

        // A replica starts the handover and dies once part of it is done.
        let (runtime, addr) = crashable_replica(company.assignment_config.clone());
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connects");
        let mut doomed = AssignmentServiceClient::with_interceptor(
            channel,
            TraceInterceptor::with_bearer(&admin_token).expect("bearer"),
        );
        // The probe is one ready client asking for a single row, so the replica dies within
        // a round trip of the first moved page rather than after a full count.
        let mut probe = admin_store.clone();
        let request = offboard(&leaver, &successor);
        let call = tokio::spawn(async move { doomed.offboard_staff(request).await });
        for _ in 0..2_000 {
            let first = probe
                .list_conversations(giao_proto::messagestore::ListConversationsRequest {
                    owner_user_id: successor.clone(),
                    page: Some(giao_proto::common::PageRequest {
                        page_size: 1,
                        cursor: String::new(),
                    }),
                    ..Default::default()
                })
                .await
                .expect("lists")
                .into_inner();
            if !first.conversations.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        runtime.shutdown_background();
        let _ = call.await;
        let moved_before_crash = owned_by(successor.clone(), admin_token.clone()).await;
        assert!(
            moved_before_crash > 0 && moved_before_crash < TOTAL,
            "the replica died half-way: {moved_before_crash} of {TOTAL} moved"
        );
        let left = owned_by(leaver.clone(), admin_token.clone()).await;
        assert!(left > 0, "some conversations were still the leaver's");

        // Calling again (on the surviving replica) completes it.
        let report = admin
            .offboard_staff(offboard(&leaver, &successor))
            .await
            .expect("resumes")
            .into_inner();
        assert_eq!(report.conversations_moved, TOTAL as u64);
        assert_eq!(report.contacts_moved, TOTAL as u64, "one customer each");
        assert_eq!((report.reminders_moved, report.shifts_moved), (1, 1));
        assert!(!report.export_id.is_empty());
        assert_eq!(owned_by(leaver.clone(), admin_token.clone()).await, 0);
        assert_eq!(
            owned_by(successor.clone(), admin_token.clone()).await,
            TOTAL
        );
        // Every customer is the successor's in message-store.
        let customers = counted(|page| {
            let mut store = admin_store.clone();
            let successor = successor.clone();
            async move {
                let listed = store
                    .list_contacts(giao_proto::messagestore::ListContactsRequest {
                        owner_user_id: successor,
                        page: Some(page),
                        ..Default::default()
                    })
                    .await
                    .expect("lists contacts")
                    .into_inner();
                (
                    listed.contacts.len(),
                    listed.page.unwrap_or_default().next_cursor,
                )
            }
        })
        .await;
        assert_eq!(customers, TOTAL);
        let reminders = admin
            .list_reminders(giao_proto::assignment::ListRemindersRequest {
                user_id: successor.clone(),
                ..Default::default()
            })
            .await
            .expect("lists")
            .into_inner()
            .reminders;
        assert_eq!(reminders.len(), 1);
        assert_eq!(reminders[0].conversation_id, conversations[7]);
        let shifts = admin
            .list_shifts(giao_proto::assignment::ListShiftsRequest {
                user_id: successor.clone(),
                page: None,
            })
            .await
            .expect("lists")
            .into_inner()
            .shifts;
        assert_eq!(shifts.len(), 1);
        assert_eq!(shifts[0].shift_id, "lan-weekends");
        let again = admin
            .offboard_staff(offboard(&leaver, &successor))
            .await
            .expect("third call")
            .into_inner();
        assert_eq!(again, report);
    }
}

/// Routing of new conversations against the real auth service (roster, service key),
/// message-store (ConversationOpened, ownership) and assignment, on both backends.
mod routing {
    use std::time::Duration;

    use super::{Seen, assignments, collect, customer_text, eventually, put_shift};

    use giao_proto::{
        assignment::{
            AssignRequest, Availability, CreateReminderRequest, FollowUpRule, ListRemindersRequest,
            ListRoutingPoliciesRequest, ListUnattendedRequest, OffboardStaffRequest, Reminder,
            RoutingPolicy, RoutingRule, RoutingStrategy, SetAvailabilityRequest,
            SetCapacityRequest, SetFollowUpRuleRequest, SetRoutingPolicyRequest, SetShiftRequest,
            SetSlaPolicyRequest, Shift, ShiftChange, SlaPolicy, SlaState, SyncRosterRequest,
            UnattendedConversation, assignment_service_client::AssignmentServiceClient,
            offboard_staff_request::Successor,
        },
        auth::{
            CreateApiKeyRequest, CreateUserRequest, LoginRequest, SetUserStatusRequest, UserStatus,
        },
        common::{ChannelUser, ContentType, MessageContent},
        messagestore::{
            AddTagsRequest, AppendInboundRequest, ConversationStatus, GetConversationRequest,
            InboundMessage, ListConversationsRequest, SetConversationStatusRequest,
            UpdateContactRequest, message_store_service_client::MessageStoreServiceClient,
        },
    };
    use giao_tests::{Authed, Backend, BackendKind, Running, TraceInterceptor};
    use tonic::Code;

    const PASSWORD: &str = "a long enough password";
    /// What the floor's customers ask.
    const QUESTION: &str = "cho em hỏi giá";
    const TENANT: &str = "acme";

    /// auth (roster, the service key), message-store and assignment routing with that key.
    struct Floor {
        backend: Backend,
        auth: Running,
        store: Running,
        assignment: Running,
        config: giao_assignment::Config,
        admin_token: String,
    }

    fn dev(user: &str, role: &str) -> String {
        format!("dev.{TENANT}.{user}.{role}")
    }

    impl Floor {
        async fn start(kind: BackendKind) -> Self {
            let mut backend = Backend::new(kind).await;
            let auth_config = giao_tests::auth_config(&mut backend).await;
            giao_auth::admin::create_tenant(
                &auth_config,
                TENANT,
                TENANT,
                "admin@acme.vn",
                Some(PASSWORD.into()),
            )
            .await
            .expect("tenant created");
            let auth = giao_tests::start_auth(auth_config).await;
            let admin_token = giao_tests::auth_client(&auth, None)
                .await
                .login(LoginRequest {
                    tenant: TENANT.into(),
                    login: "admin@acme.vn".into(),
                    password: PASSWORD.into(),
                })
                .await
                .expect("logs in")
                .into_inner()
                .access_token;
            let key = giao_tests::auth_client(&auth, Some(&admin_token))
                .await
                .create_api_key(CreateApiKeyRequest {
                    name: "assignment routing".into(),
                    scopes: [
                        "messages.read",
                        "contacts.read",
                        "assignment.manage",
                        "users.manage",
                    ]
                    .map(String::from)
                    .to_vec(),
                })
                .await
                .expect("key created")
                .into_inner()
                .secret;
            // People use developer tokens naming their real user ids; the service key is
            // verified by auth.
            let verify = giao_authz::AuthConfig {
                endpoint: auth.endpoint(),
                dev_tokens: true,
                api_key_cache_secs: 30,
            };
            let mut store_config = giao_tests::message_store_config(&mut backend).await;
            store_config.auth = verify.clone();
            let store = giao_tests::start_message_store(store_config).await;
            let mut config = giao_tests::assignment_config(&mut backend, &store.endpoint()).await;
            config.auth = verify;
            config.auth_service.endpoint = auth.endpoint();
            config.routing.tenant_api_keys.insert(TENANT.into(), key);
            config.routing.drain_interval_ms = 200;
            config.sla.tick_ms = 100;
            let assignment = giao_tests::start_assignment(config.clone()).await;
            Self {
                backend,
                auth,
                store,
                assignment,
                config,
                admin_token,
            }
        }

        /// Creates a user in auth and returns their id.
        async fn user(&self, name: &str, role: giao_proto::common::Role, teams: &[&str]) -> String {
            giao_tests::auth_client(&self.auth, Some(&self.admin_token))
                .await
                .create_user(CreateUserRequest {
                    email: format!("{name}@acme.vn"),
                    display_name: name.into(),
                    role: role as i32,
                    initial_password: PASSWORD.into(),
                    team_ids: teams.iter().map(|team| team.to_string()).collect(),
                    ..Default::default()
                })
                .await
                .expect("user created")
                .into_inner()
                .user_id
        }

        /// An agent of `teams`, mirrored and online; ids come back sorted by creation.
        async fn online_agent(&self, name: &str, teams: &[&str]) -> String {
            let id = self
                .user(name, giao_proto::common::Role::Agent, teams)
                .await;
            self.assignment_as(&dev(&id, "agent"))
                .await
                .set_availability(SetAvailabilityRequest {
                    user_id: String::new(),
                    availability: Availability::Online as i32,
                })
                .await
                .expect("goes online");
            id
        }

        async fn assignment_as(&self, token: &str) -> AssignmentServiceClient<Authed> {
            AssignmentServiceClient::with_interceptor(
                self.assignment.channel().await,
                TraceInterceptor::with_bearer(token).expect("bearer"),
            )
        }

        async fn admin(&self) -> AssignmentServiceClient<Authed> {
            self.assignment_as(&dev("u-admin", "admin")).await
        }

        async fn store_admin(&self) -> MessageStoreServiceClient<Authed> {
            MessageStoreServiceClient::with_interceptor(
                self.store.channel().await,
                TraceInterceptor::with_bearer(&dev("u-admin", "admin")).expect("bearer"),
            )
        }

        async fn sync(&self) {
            self.admin()
                .await
                .sync_roster(SyncRosterRequest {})
                .await
                .expect("roster mirrored");
        }

        async fn policy(&self, policy: RoutingPolicy) {
            self.admin()
                .await
                .set_routing_policy(SetRoutingPolicyRequest {
                    policy: Some(policy),
                })
                .await
                .expect("policy set");
        }

        /// A customer message on `thread`; returns (conversation id, contact id).
        async fn message(&self, customer: &str, thread: &str) -> (String, String) {
            let mut store = self.store_admin().await;
            let message = store
                .append_inbound(AppendInboundRequest {
                    message: Some(customer_text(
                        customer,
                        thread,
                        &format!("m-{thread}"),
                        QUESTION,
                    )),
                })
                .await
                .expect("appends")
                .into_inner()
                .message
                .expect("message");
            let conversation = store
                .get_conversation(GetConversationRequest {
                    conversation_id: message.conversation_id.clone(),
                })
                .await
                .expect("conversation")
                .into_inner();
            (message.conversation_id, conversation.contact_id)
        }

        async fn owner(&self, conversation_id: &str) -> String {
            self.store_admin()
                .await
                .get_conversation(GetConversationRequest {
                    conversation_id: conversation_id.into(),
                })
                .await
                .expect("conversation")
                .into_inner()
                .owner_user_id
        }

        /// The owner routing gives the conversation, waiting for it.
        async fn routed(&self, conversation_id: &str) -> String {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let owner = self.owner(conversation_id).await;
                if !owner.is_empty() {
                    return owner;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "conversation {conversation_id} was never routed"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        /// A new customer's conversation, once routed: its owner.
        async fn next(&self, customer: &str) -> String {
            let (conversation, _) = self.message(customer, customer).await;
            self.routed(&conversation).await
        }

        async fn unassigned(&self) -> Vec<String> {
            let mut ids: Vec<String> = self
                .store_admin()
                .await
                .list_conversations(ListConversationsRequest {
                    unassigned: true,
                    ..Default::default()
                })
                .await
                .expect("lists")
                .into_inner()
                .conversations
                .into_iter()
                .map(|conversation| conversation.conversation_id)
                .collect();
            ids.sort();
            ids
        }
    }

    fn policy(strategy: RoutingStrategy, team: &str) -> RoutingPolicy {
        RoutingPolicy {
            team_id: team.into(),
            strategy: strategy as i32,
            ..Default::default()
        }
    }

    pub(super) async fn round_robin_least_open_and_rules_route_new_conversations(
        kind: BackendKind,
    ) {
        let floor = Floor::start(kind).await;
        let mut sales = [
            floor.online_agent("an", &["sales"]).await,
            floor.online_agent("binh", &["sales"]).await,
        ];
        sales.sort();
        let (low, high) = (sales[0].clone(), sales[1].clone());
        let vip = floor.online_agent("vy", &["vip"]).await;
        // Not online: never handed anything.
        let offline = floor
            .user("dung", giao_proto::common::Role::Agent, &["sales"])
            .await;
        floor.sync().await;
        floor
            .policy(policy(RoutingStrategy::RoundRobin, "sales"))
            .await;

        // Round robin over the sales team, in turn and wrapping.
        assert_eq!(floor.next("c1").await, low);
        assert_eq!(floor.next("c2").await, high);
        assert_eq!(floor.next("c3").await, low);
        // The team's supervisors see what routing gave out: the team is set too.
        let (fourth, _) = floor.message("c4", "c4").await;
        assert_eq!(floor.routed(&fourth).await, high);
        let conversation = floor
            .store_admin()
            .await
            .get_conversation(GetConversationRequest {
                conversation_id: fourth.clone(),
            })
            .await
            .expect("conversation")
            .into_inner();
        assert_eq!(conversation.team_id, "sales");

        // Least open: after giving `low` two more by hand, `high` takes the next ones
        // until they are level.
        let mut admin = floor.admin().await;
        for customer in ["h1", "h2"] {
            let (conversation, _) = floor.message(customer, customer).await;
            floor.routed(&conversation).await;
            admin
                .assign(AssignRequest {
                    conversation_id: conversation,
                    owner_user_id: low.clone(),
                    reason: "knows them".into(),
                })
                .await
                .expect("assigned");
        }
        // low: c1, c3, h1, h2 = 4 open; high: c2, c4 = 2 open.
        floor
            .policy(policy(RoutingStrategy::LeastOpen, "sales"))
            .await;
        assert_eq!(floor.next("l1").await, high);
        assert_eq!(floor.next("l2").await, high);
        assert_eq!(floor.next("l3").await, low, "level at 4: the lowest id");

        // Rules: a tagged or lead-sourced returning customer goes to the rule's team or
        // agent.
        let mut rules_policy = policy(RoutingStrategy::LeastOpen, "sales");
        rules_policy.rules = vec![
            RoutingRule {
                tag: "vip".into(),
                team_id: "vip".into(),
                ..Default::default()
            },
            RoutingRule {
                lead_source: "tiktok".into(),
                user_id: high.clone(),
                ..Default::default()
            },
        ];
        floor.policy(rules_policy).await;
        let mut store = floor.store_admin().await;
        let (_, vip_contact) = floor.message("r1", "r1-first").await;
        store
            .add_tags(AddTagsRequest {
                contact_id: vip_contact,
                tags: vec!["vip".into()],
            })
            .await
            .expect("tagged");
        let (again, _) = floor.message("r1", "r1-second").await;
        assert_eq!(floor.routed(&again).await, vip);
        let (_, tiktok_contact) = floor.message("r2", "r2-first").await;
        store
            .update_contact(UpdateContactRequest {
                contact_id: tiktok_contact,
                update_mask: vec!["lead_source".into()],
                lead_source: "tiktok".into(),
                ..Default::default()
            })
            .await
            .expect("lead source set");
        let (again, _) = floor.message("r2", "r2-second").await;
        assert_eq!(floor.routed(&again).await, high);

        // A suspended agent leaves the roster at once (UserDeactivated), before any sync.
        floor
            .policy(policy(RoutingStrategy::RoundRobin, "sales"))
            .await;
        giao_tests::auth_client(&floor.auth, Some(&floor.admin_token))
            .await
            .set_user_status(SetUserStatusRequest {
                user_id: low.clone(),
                status: UserStatus::Suspended as i32,
                reason: "on leave".into(),
            })
            .await
            .expect("suspended");
        let mut owners = Vec::new();
        for customer in ["s1", "s2", "s3"] {
            owners.push(floor.next(customer).await);
        }
        // The first may have been decided before the event arrived; after that only `high`.
        assert!(owners[1..].iter().all(|owner| *owner == high), "{owners:?}");
        assert!(!owners.contains(&offline) && !owners.contains(&vip));
    }

    /// Two online agents of `sales` (ids in order) under round robin with sticky owner.
    async fn sticky_floor(kind: BackendKind) -> (Floor, String, String) {
        let floor = Floor::start(kind).await;
        let mut agents = [
            floor.online_agent("an", &["sales"]).await,
            floor.online_agent("binh", &["sales"]).await,
        ];
        agents.sort();
        floor.sync().await;
        let mut sticky = policy(RoutingStrategy::RoundRobin, "sales");
        sticky.sticky_owner = true;
        floor.policy(sticky).await;
        let [low, high] = agents;
        (floor, low, high)
    }

    pub(super) async fn a_returning_customer_goes_back_to_their_owner(kind: BackendKind) {
        let (floor, low, high) = sticky_floor(kind).await;

        let (first, _) = floor.message("k1", "k1-a").await;
        assert_eq!(floor.routed(&first).await, low);
        // Round robin would now pick `high`; the customer goes back to `low`.
        let (second, _) = floor.message("k1", "k1-b").await;
        assert_eq!(floor.routed(&second).await, low);
        assert_eq!(floor.next("k2").await, high, "others still take turns");

        // An owner who is away does not get them back.
        floor
            .assignment_as(&dev(&low, "agent"))
            .await
            .set_availability(SetAvailabilityRequest {
                user_id: String::new(),
                availability: Availability::Away as i32,
            })
            .await
            .expect("away");
        let (third, _) = floor.message("k1", "k1-c").await;
        assert_eq!(floor.routed(&third).await, high);
    }

    pub(super) async fn a_returning_customer_skips_an_owner_off_shift_or_gone(kind: BackendKind) {
        let (floor, low, high) = sticky_floor(kind).await;
        let (first, _) = floor.message("k1", "k1-a").await;
        assert_eq!(floor.routed(&first).await, low);
        assert_eq!(
            floor.next("k0").await,
            high,
            "round robin turns to `low` next"
        );

        // Their owner's shift on this account is later today: the customer goes to whoever
        // is on shift now, although sticky owner and round robin both name `low`.
        shift(&floor, "low-later", &low, false).await;
        shift(&floor, "high-now", &high, true).await;
        let (second, _) = floor.message("k1", "k1-b").await;
        assert_eq!(floor.routed(&second).await, high);

        // Both on shift, and the sticky owner of k2 leaves the company: someone else.
        let (third, _) = floor.message("k2", "k2-a").await;
        assert_eq!(floor.routed(&third).await, high, "the only one on shift");
        shift(&floor, "low-later", &low, true).await;
        assert_eq!(
            floor.next("k3").await,
            low,
            "round robin turns to `high` next"
        );
        giao_tests::auth_client(&floor.auth, Some(&floor.admin_token))
            .await
            .set_user_status(SetUserStatusRequest {
                user_id: high.clone(),
                status: UserStatus::Suspended as i32,
                reason: "left".into(),
            })
            .await
            .expect("suspended");
        floor.sync().await;
        let (fourth, _) = floor.message("k2", "k2-b").await;
        assert_eq!(
            floor.routed(&fourth).await,
            low,
            "sticky owner and round robin both named `high`, who is gone"
        );
    }

    pub(super) async fn the_queue_hands_out_oldest_first_as_capacity_frees(kind: BackendKind) {
        let floor = Floor::start(kind).await;
        let agent = floor.online_agent("an", &["sales"]).await;
        floor.sync().await;
        let mut one_each = policy(RoutingStrategy::LeastOpen, "sales");
        one_each.max_open_per_agent = 1;
        floor.policy(one_each).await;

        let (first, _) = floor.message("q1", "q1").await;
        assert_eq!(floor.routed(&first).await, agent);
        let (second, _) = floor.message("q2", "q2").await;
        let (third, _) = floor.message("q3", "q3").await;
        // Nobody has room: both wait unassigned.
        tokio::time::sleep(Duration::from_millis(800)).await;
        let mut waiting = vec![second.clone(), third.clone()];
        waiting.sort();
        assert_eq!(floor.unassigned().await, waiting);

        // Handing the first to someone else frees the agent: the oldest waiting comes next.
        floor
            .admin()
            .await
            .assign(AssignRequest {
                conversation_id: first.clone(),
                owner_user_id: "u-boss".into(),
                reason: "escalated".into(),
            })
            .await
            .expect("assigned");
        assert_eq!(floor.routed(&second).await, agent);
        assert_eq!(floor.unassigned().await, vec![third.clone()]);

        // Closing a conversation frees its owner too.
        floor
            .store_admin()
            .await
            .set_conversation_status(SetConversationStatusRequest {
                conversation_id: second.clone(),
                status: ConversationStatus::Closed as i32,
                outcome: "won".into(),
            })
            .await
            .expect("closed");
        assert_eq!(floor.routed(&third).await, agent);
        assert!(floor.unassigned().await.is_empty());

        // More capacity for this agent: the next one waiting is handed out too.
        let (fourth, _) = floor.message("q4", "q4").await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(floor.unassigned().await, vec![fourth.clone()]);
        floor
            .admin()
            .await
            .set_capacity(SetCapacityRequest {
                user_id: agent.clone(),
                max_open: 2,
            })
            .await
            .expect("capacity set");
        assert_eq!(floor.routed(&fourth).await, agent);
        assert!(floor.unassigned().await.is_empty());
    }

    pub(super) async fn routing_settings_are_validated_and_listed(kind: BackendKind) {
        let floor = Floor::start(kind).await;
        let mut admin = floor.admin().await;
        let refused = |policy: RoutingPolicy| {
            let mut admin = admin.clone();
            async move {
                admin
                    .set_routing_policy(SetRoutingPolicyRequest {
                        policy: Some(policy),
                    })
                    .await
                    .expect_err("refused")
            }
        };
        let status = refused(RoutingPolicy::default()).await;
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("policy.strategy"), "{status:?}");
        let mut no_target = policy(RoutingStrategy::RoundRobin, "sales");
        no_target.rules = vec![RoutingRule {
            tag: "vip".into(),
            ..Default::default()
        }];
        let status = refused(no_target).await;
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("policy.rules[0]"), "{status:?}");
        let status = admin
            .set_capacity(SetCapacityRequest {
                user_id: String::new(),
                max_open: 3,
            })
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("user_id"));

        // A supervisor routes only to their own teams.
        let mut supervisor = floor
            .assignment_as(&format!("dev.{TENANT}.u-sup.supervisor.sales"))
            .await;
        let status = supervisor
            .set_routing_policy(SetRoutingPolicyRequest {
                policy: Some(policy(RoutingStrategy::RoundRobin, "vip")),
            })
            .await
            .expect_err("not their team");
        assert_eq!(status.code(), Code::PermissionDenied);
        supervisor
            .set_routing_policy(SetRoutingPolicyRequest {
                policy: Some(RoutingPolicy {
                    channel_account_id: "oa-2".into(),
                    ..policy(RoutingStrategy::LeastOpen, "sales")
                }),
            })
            .await
            .expect("their team");
        admin
            .set_routing_policy(SetRoutingPolicyRequest {
                policy: Some(policy(RoutingStrategy::RoundRobin, "")),
            })
            .await
            .expect("an admin routes to everyone");

        // Listed one per page, the tenant default first; another tenant sees none.
        let first = admin
            .list_routing_policies(ListRoutingPoliciesRequest {
                page: Some(giao_proto::common::PageRequest {
                    page_size: 1,
                    cursor: String::new(),
                }),
            })
            .await
            .expect("lists")
            .into_inner();
        assert_eq!(first.policies.len(), 1);
        assert_eq!(first.policies[0].channel_account_id, "");
        let cursor = first.page.expect("page").next_cursor;
        let second = admin
            .list_routing_policies(ListRoutingPoliciesRequest {
                page: Some(giao_proto::common::PageRequest {
                    page_size: 1,
                    cursor,
                }),
            })
            .await
            .expect("lists")
            .into_inner();
        assert_eq!(second.policies[0].channel_account_id, "oa-2");
        assert_eq!(
            second.policies[0].strategy,
            RoutingStrategy::LeastOpen as i32
        );
        assert!(second.page.expect("page").next_cursor.is_empty());
        let other = floor
            .assignment_as("dev.globex.u-admin.admin")
            .await
            .list_routing_policies(ListRoutingPoliciesRequest::default())
            .await
            .expect("lists")
            .into_inner();
        assert!(other.policies.is_empty());
    }

    fn breaches(seen: &Seen) -> Vec<giao_proto::events::SlaBreached> {
        seen.lock()
            .expect("lock")
            .iter()
            .filter_map(|payload| match payload {
                giao_proto::events::envelope::Payload::SlaBreached(breach) => Some(breach.clone()),
                _ => None,
            })
            .collect()
    }

    fn reminders_due(seen: &Seen) -> Vec<giao_proto::events::ReminderDue> {
        seen.lock()
            .expect("lock")
            .iter()
            .filter_map(|payload| match payload {
                giao_proto::events::envelope::Payload::ReminderDue(due) => Some(due.clone()),
                _ => None,
            })
            .collect()
    }

    async fn sla(floor: &Floor, policy: SlaPolicy) {
        floor
            .admin()
            .await
            .set_sla_policy(SetSlaPolicyRequest {
                policy: Some(policy),
            })
            .await
            .expect("sla policy set");
    }

    pub(super) async fn an_sla_breach_fires_once_with_two_scheduler_replicas(kind: BackendKind) {
        let floor = Floor::start(kind).await;
        let agent = floor.online_agent("an", &["sales"]).await;
        let supervisor = floor
            .user("sang", giao_proto::common::Role::Supervisor, &["sales"])
            .await;
        floor.sync().await;
        floor
            .policy(policy(RoutingStrategy::RoundRobin, "sales"))
            .await;
        sla(
            &floor,
            SlaPolicy {
                first_response_secs: 1,
                next_response_secs: 600,
                ..Default::default()
            },
        )
        .await;
        // A second replica on the same database and bus: both schedulers run. (On SQLite
        // the second one shares the single writer, as `giao dev` never would, which only
        // makes the race harder.)
        let second = giao_tests::start_assignment(floor.config.clone()).await;
        let seen = collect(&floor.backend.bus, "sla_breached");

        let (conversation, _) = floor.message("w1", "w1").await;
        assert_eq!(floor.routed(&conversation).await, agent);
        eventually("the breach fires", || {
            let fired = !breaches(&seen).is_empty();
            async move { fired.then_some(()) }
        })
        .await;
        let seen = breaches(&seen);
        assert_eq!(seen.len(), 1, "{seen:?}");
        let breach = &seen[0];
        assert_eq!(breach.conversation_id, conversation);
        assert_eq!(breach.kind, "first_response");
        assert_eq!(breach.owner_user_id, agent);
        assert_eq!(breach.team_id, "sales");
        assert_eq!(
            breach.escalated_to_user_id, supervisor,
            "escalated to the team's supervisor"
        );
        // The breach is recorded just after it is published.
        eventually("the breach is recorded", || async {
            let unattended = floor
                .admin()
                .await
                .list_unattended(ListUnattendedRequest::default())
                .await
                .expect("lists")
                .into_inner()
                .conversations;
            assert_eq!(unattended.len(), 1);
            (unattended[0].sla_state == SlaState::Breached as i32).then_some(())
        })
        .await;
        // Recorded as breached, the clock is claimable no more: one fire of both replicas
        // is final (the bus would hide a second publish under the same id; this would not).
        let database = giao_storage::Database::connect(&floor.config.database)
            .await
            .expect("database");
        let fires = giao_assignment::store::fires(&database, TENANT)
            .await
            .expect("fires");
        assert_eq!(fires.len(), 1, "{fires:?}");
        second.stop().await.expect("second replica stops");
    }

    /// Starts the clock of conversation `conv-<n>`: a customer waiting since `past + n`,
    /// due a microsecond later.
    async fn due_clock(database: &giao_storage::Database, n: i64, past: i64) {
        giao_assignment::store::sla::customer_wrote(
            database,
            TENANT,
            &format!("conv-{n:03}"),
            "oa-1",
            "u-an",
            "sales",
            past + n,
            Some(past + n + 1),
            None,
            None,
        )
        .await
        .expect("clock started");
    }

    pub(super) async fn two_schedulers_never_claim_the_same_clock(kind: BackendKind) {
        let mut backend = Backend::new(kind).await;
        let database = giao_storage::Database::connect(&backend.database().await)
            .await
            .expect("database");
        database
            .migrate(&giao_assignment::MIGRATIONS)
            .await
            .expect("migrated");
        let past = chrono::Utc::now().timestamp_micros() - 60_000_000;
        for n in 0..300 {
            due_clock(&database, n, past).await;
        }
        let claim = |replica: &'static str| {
            let database = database.clone();
            async move {
                let mut claimed = Vec::new();
                for _ in 0..20 {
                    let now = chrono::Utc::now().timestamp_micros();
                    let batch = giao_assignment::store::sla::claim_due(
                        &database,
                        replica,
                        now,
                        now + 60_000_000,
                        7,
                    )
                    .await
                    .expect("claims");
                    claimed.extend(batch.into_iter().map(|clock| clock.conversation_id));
                }
                claimed
            }
        };
        let (first, second) = tokio::join!(claim("replica-a"), claim("replica-b"));
        let mut all: Vec<String> = first.iter().chain(second.iter()).cloned().collect();
        let total = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), total, "a clock was claimed twice");
        assert_eq!(total, 280, "every pass claimed a full batch");
        assert!(!first.is_empty() && !second.is_empty());
        // The oldest due first.
        assert!(all.contains(&"conv-000".to_string()));
        let leftover = giao_assignment::store::sla::claim_due(
            &database,
            "replica-c",
            chrono::Utc::now().timestamp_micros(),
            chrono::Utc::now().timestamp_micros() + 60_000_000,
            100,
        )
        .await
        .expect("claims");
        assert_eq!(leftover.len(), 20, "claimed rows stay leased");
    }

    /// Messages captured in a batch reach the clocks as single appends do: every customer
    /// who wrote is waiting, due by the policy, and one the owner answered on the phone in
    /// the same batch is not.
    pub(super) async fn customers_captured_in_a_batch_start_their_clocks(kind: BackendKind) {
        use giao_proto::common::{Direction, SenderKind};
        let floor = Floor::start(kind).await;
        sla(
            &floor,
            SlaPolicy {
                first_response_secs: 3_600,
                ..Default::default()
            },
        )
        .await;
        let now = chrono::Utc::now().timestamp();
        let message = |customer: &str, id: &str, ago_secs: i64, owner_typed: bool| {
            let (direction, sender_kind) = if owner_typed {
                (Direction::Outbound, SenderKind::AccountOwner)
            } else {
                (Direction::Inbound, SenderKind::Customer)
            };
            InboundMessage {
                sent_at: Some(prost_types::Timestamp {
                    seconds: now - ago_secs,
                    nanos: 0,
                }),
                direction: direction as i32,
                sender_kind: sender_kind as i32,
                ..customer_text(customer, customer, id, QUESTION)
            }
        };
        let results = floor
            .store_admin()
            .await
            .append_inbound_batch(giao_proto::messagestore::AppendInboundBatchRequest {
                messages: vec![
                    message("u1", "b1", 300, false),
                    message("u2", "b2", 240, false),
                    message("u1", "b3", 180, true),
                    message("u3", "b4", 120, false),
                ],
            })
            .await
            .expect("batch stored")
            .into_inner()
            .results;
        let conversation = |index: usize| {
            results[index]
                .message
                .as_ref()
                .expect("message")
                .conversation_id
                .clone()
        };
        let expected = vec![conversation(1), conversation(3)];
        let listed = eventually("the batch's customers are waiting", || {
            let floor = &floor;
            let expected = expected.clone();
            async move {
                let listed = floor
                    .admin()
                    .await
                    .list_unattended(ListUnattendedRequest::default())
                    .await
                    .expect("lists")
                    .into_inner()
                    .conversations;
                let ids: Vec<String> = listed.iter().map(|c| c.conversation_id.clone()).collect();
                (ids == expected).then_some(listed)
            }
        })
        .await;
        for (entry, ago) in listed.iter().zip([240, 120]) {
            let waiting = entry.waiting_since.expect("waiting since");
            assert_eq!(waiting.seconds, now - ago, "{entry:?}");
            assert_eq!(
                entry.sla_due_at.expect("due").seconds - waiting.seconds,
                3_600
            );
            assert_eq!(entry.sla_state, SlaState::Ok as i32);
        }
    }

    pub(super) async fn unattended_lists_longest_wait_first_within_visibility(kind: BackendKind) {
        let floor = Floor::start(kind).await;
        let mut agents = [
            floor.online_agent("an", &["sales"]).await,
            floor.online_agent("binh", &["sales"]).await,
        ];
        agents.sort();
        let (low, high) = (agents[0].clone(), agents[1].clone());
        floor.sync().await;
        floor
            .policy(policy(RoutingStrategy::RoundRobin, "sales"))
            .await;
        sla(
            &floor,
            SlaPolicy {
                first_response_secs: 3_600,
                ..Default::default()
            },
        )
        .await;
        let mut conversations = Vec::new();
        for customer in ["u1", "u2", "u3"] {
            let (conversation, _) = floor.message(customer, customer).await;
            floor.routed(&conversation).await;
            conversations.push(conversation);
        }
        let list = |token: String, team: &'static str| {
            let floor = &floor;
            async move {
                floor
                    .assignment_as(&token)
                    .await
                    .list_unattended(ListUnattendedRequest {
                        team_id: team.into(),
                        ..Default::default()
                    })
                    .await
                    .expect("lists")
                    .into_inner()
                    .conversations
            }
        };
        let ids = |listed: Vec<UnattendedConversation>| -> Vec<String> {
            listed.into_iter().map(|c| c.conversation_id).collect()
        };
        let admin = dev("u-admin", "admin");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let listed = list(admin.clone(), "").await;
            if listed.len() == 3 && listed.iter().all(|c| !c.owner_user_id.is_empty()) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{listed:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let listed = list(admin.clone(), "").await;
        assert!(listed.iter().all(|c| c.sla_state == SlaState::Ok as i32));
        let first = &listed[0];
        let waiting = first.waiting_since.expect("waiting since");
        let due = first.sla_due_at.expect("due");
        assert_eq!(due.seconds - waiting.seconds, 3_600);
        assert_eq!(ids(listed), conversations, "longest wait first");
        assert_eq!(
            ids(list(dev(&low, "agent"), "").await),
            vec![conversations[0].clone(), conversations[2].clone()]
        );
        assert_eq!(
            ids(list(dev(&high, "agent"), "").await),
            vec![conversations[1].clone()]
        );
        assert_eq!(
            ids(list(format!("dev.{TENANT}.u-sup.supervisor.sales"), "").await),
            conversations
        );
        assert!(
            list(format!("dev.{TENANT}.u-sup2.supervisor.support"), "")
                .await
                .is_empty()
        );
        assert!(list(admin.clone(), "support").await.is_empty());
        assert!(list("dev.globex.u-admin.admin".into(), "").await.is_empty());

        // Answering takes the conversation off the list.
        let mut owner_store = MessageStoreServiceClient::with_interceptor(
            floor.store.channel().await,
            TraceInterceptor::with_bearer(&dev(&low, "agent")).expect("bearer"),
        );
        super::reply(&mut owner_store, &conversations[0], "answer-u1")
            .await
            .expect("replied");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while list(admin.clone(), "").await.len() != 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the reply never counted"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Paged one at a time, in the same order.
        let mut client = floor.assignment_as(&admin).await;
        let mut cursor = String::new();
        let mut paged = Vec::new();
        loop {
            let page = client
                .list_unattended(ListUnattendedRequest {
                    page: Some(giao_proto::common::PageRequest {
                        page_size: 1,
                        cursor: cursor.clone(),
                    }),
                    ..Default::default()
                })
                .await
                .expect("lists")
                .into_inner();
            paged.extend(ids(page.conversations));
            cursor = page.page.expect("page").next_cursor;
            if cursor.is_empty() {
                break;
            }
        }
        assert_eq!(paged, conversations[1..].to_vec());
    }

    pub(super) async fn reminders_fall_due_and_follow_ups_remind_the_owner(kind: BackendKind) {
        let floor = Floor::start(kind).await;
        let agent = floor.online_agent("an", &["sales"]).await;
        let other = floor
            .user("binh", giao_proto::common::Role::Agent, &["sales"])
            .await;
        floor.sync().await;
        floor
            .policy(policy(RoutingStrategy::RoundRobin, "sales"))
            .await;
        let seen = collect(&floor.backend.bus, "reminder_due");
        let (first, first_contact) = floor.message("f1", "f1").await;
        assert_eq!(floor.routed(&first).await, agent);

        // "Call back in a second", set by the owner, once per idempotency key.
        let mut mine = floor.assignment_as(&dev(&agent, "agent")).await;
        let soon = chrono::Utc::now() + chrono::Duration::seconds(1);
        let create = CreateReminderRequest {
            reminder: Some(Reminder {
                conversation_id: first.clone(),
                text: "gọi lại cho khách".into(),
                due_at: Some(prost_types::Timestamp {
                    seconds: soon.timestamp(),
                    nanos: 0,
                }),
                ..Default::default()
            }),
            idempotency_key: "call-back-1".into(),
        };
        let reminder = mine
            .create_reminder(create.clone())
            .await
            .expect("created")
            .into_inner();
        assert_eq!(reminder.user_id, agent);
        assert_eq!(reminder.contact_id, first_contact);
        let again = mine
            .create_reminder(create.clone())
            .await
            .expect("retried")
            .into_inner();
        assert_eq!(again.reminder_id, reminder.reminder_id);
        let refused = floor
            .assignment_as(&dev(&other, "agent"))
            .await
            .create_reminder(create)
            .await
            .expect_err("not their conversation");
        assert_eq!(refused.code(), Code::NotFound);

        // Follow-up rules: quoted and quiet for a second; interested and quiet for an hour.
        let mut admin = floor.admin().await;
        for (rule_id, care_status, quiet_secs) in [
            ("quoted-1s", "quoted", 1),
            ("interested-1h", "interested", 3_600),
        ] {
            admin
                .set_follow_up_rule(SetFollowUpRuleRequest {
                    rule: Some(FollowUpRule {
                        rule_id: rule_id.into(),
                        care_status: care_status.into(),
                        quiet_secs,
                        text: format!("{care_status}: nhắn lại khách"),
                    }),
                })
                .await
                .expect("rule set");
        }
        let mut store = floor.store_admin().await;
        let care = |contact: String, status: &'static str| UpdateContactRequest {
            contact_id: contact,
            update_mask: vec!["care_status".into()],
            care_status: status.into(),
            ..Default::default()
        };
        store
            .update_contact(care(first_contact.clone(), "quoted"))
            .await
            .expect("quoted");
        let (second, second_contact) = floor.message("f2", "f2").await;
        assert_eq!(floor.routed(&second).await, agent);
        store
            .update_contact(care(second_contact.clone(), "interested"))
            .await
            .expect("interested");

        // Both the owner's own reminder and the quoted follow-up fall due, to the owner.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let due = reminders_due(&seen);
            let manual = due.iter().any(|d| d.reminder_id == reminder.reminder_id);
            let follow_up = due
                .iter()
                .any(|d| d.conversation_id == first && d.text == "quoted: nhắn lại khách");
            if manual && follow_up {
                assert!(due.iter().all(|d| d.user_id == agent), "{due:?}");
                assert!(due.iter().all(|d| d.conversation_id != second), "{due:?}");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{due:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let pending = |mine: AssignmentServiceClient<Authed>| {
            let second = second.clone();
            async move {
                let mut mine = mine;
                mine.list_reminders(ListRemindersRequest::default())
                    .await
                    .expect("lists")
                    .into_inner()
                    .reminders
                    .into_iter()
                    .find(|r| r.conversation_id == second && !r.done)
            }
        };
        let listed = mine
            .list_reminders(ListRemindersRequest::default())
            .await
            .expect("lists")
            .into_inner()
            .reminders;
        assert!(
            listed
                .iter()
                .any(|r| r.reminder_id == reminder.reminder_id && r.done)
        );
        let waiting = pending(mine.clone())
            .await
            .expect("the interested follow-up waits");
        assert_eq!(waiting.source, "follow_up:interested-1h");
        let first_due = waiting.due_at.expect("due").seconds;

        // Writing to the customer starts the quiet hour again.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let mut owner_store = MessageStoreServiceClient::with_interceptor(
            floor.store.channel().await,
            TraceInterceptor::with_bearer(&dev(&agent, "agent")).expect("bearer"),
        );
        super::reply(&mut owner_store, &second, "answer-f2")
            .await
            .expect("replied");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let due = pending(mine.clone()).await.expect("still pending");
            if due.due_at.expect("due").seconds > first_due {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the reply never pushed it"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Won: the follow-up no longer applies.
        store
            .update_contact(care(second_contact, "won"))
            .await
            .expect("won");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while pending(mine.clone()).await.is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the follow-up stayed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `HH:MM` in Ho Chi Minh City (UTC+7 all year), `hours` from now.
    fn local_time(hours: i64) -> String {
        (chrono::Utc::now() + chrono::Duration::hours(hours + 7))
            .format("%H:%M")
            .to_string()
    }

    async fn shift(floor: &Floor, shift_id: &str, user_id: &str, on_now: bool) {
        let (starts_at, ends_at) = if on_now {
            (local_time(-1), local_time(1))
        } else {
            (local_time(3), local_time(4))
        };
        floor
            .admin()
            .await
            .set_shift(SetShiftRequest {
                shift: Some(Shift {
                    shift_id: shift_id.into(),
                    user_id: user_id.into(),
                    channel_account_ids: vec!["oa-1".into()],
                    weekdays: (1..=7).collect(),
                    starts_at,
                    ends_at,
                }),
            })
            .await
            .expect("shift set");
    }

    pub(super) async fn a_shift_change_follows_the_tenants_policy(kind: BackendKind) {
        let floor = Floor::start(kind).await;
        let morning = floor.online_agent("an", &["sales"]).await;
        let evening = floor.online_agent("binh", &["sales"]).await;
        floor.sync().await;
        let mut moving = policy(RoutingStrategy::RoundRobin, "sales");
        moving.channel_account_id = "oa-1".into();
        moving.on_shift_change = ShiftChange::MoveToIncoming as i32;
        floor.policy(moving.clone()).await;
        shift(&floor, "morning", &morning, true).await;
        shift(&floor, "evening", &evening, false).await;

        // Only whoever is on shift takes the account's new conversations.
        let mut open = Vec::new();
        for customer in ["m1", "m2"] {
            let (conversation, _) = floor.message(customer, customer).await;
            assert_eq!(floor.routed(&conversation).await, morning);
            open.push(conversation);
        }
        // Let the scheduler see who is on shift before it changes.
        tokio::time::sleep(Duration::from_millis(600)).await;

        // The evening shift comes in: the morning's open conversations move to it.
        shift(&floor, "morning", &morning, false).await;
        shift(&floor, "evening", &evening, true).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        for conversation in &open {
            while floor.owner(conversation).await != evening {
                assert!(tokio::time::Instant::now() < deadline, "never moved");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let history = floor
            .admin()
            .await
            .get_ownership_history(giao_proto::assignment::GetOwnershipHistoryRequest {
                conversation_id: open[0].clone(),
                page: None,
            })
            .await
            .expect("history")
            .into_inner()
            .changes;
        let last = history.last().expect("a change");
        assert_eq!(
            (
                last.previous_owner_user_id.as_str(),
                last.owner_user_id.as_str(),
                last.actor.as_str(),
                last.reason.as_str()
            ),
            (
                morning.as_str(),
                evening.as_str(),
                "routing",
                "routing: shift change"
            )
        );
        assert_eq!(floor.next("e1").await, evening);

        // With "stay with their owner", the next change moves nothing.
        let mut staying = moving;
        staying.on_shift_change = ShiftChange::StayWithOwner as i32;
        floor.policy(staying).await;
        shift(&floor, "evening", &evening, false).await;
        shift(&floor, "morning", &morning, true).await;
        assert_eq!(floor.next("m3").await, morning, "the morning shift is back");
        tokio::time::sleep(Duration::from_millis(600)).await;
        for conversation in &open {
            assert_eq!(floor.owner(conversation).await, evening);
        }
        let listed = floor
            .assignment_as(&dev(&morning, "agent"))
            .await
            .list_shifts(giao_proto::assignment::ListShiftsRequest::default())
            .await
            .expect("lists")
            .into_inner()
            .shifts;
        assert_eq!(listed.len(), 1, "an agent sees their own shifts");
        assert_eq!(listed[0].shift_id, "morning");
    }

    pub(super) async fn a_disconnected_account_with_open_work_alerts_its_supervisors(
        kind: BackendKind,
    ) {
        let floor = Floor::start(kind).await;
        let agent = floor.online_agent("an", &["sales"]).await;
        let supervisor = floor
            .user("sang", giao_proto::common::Role::Supervisor, &["sales"])
            .await;
        let elsewhere = floor
            .user("son", giao_proto::common::Role::Supervisor, &["support"])
            .await;
        let admin = floor
            .user("anh", giao_proto::common::Role::Admin, &[])
            .await;
        floor.sync().await;
        floor
            .policy(policy(RoutingStrategy::RoundRobin, "sales"))
            .await;
        let seen = collect(&floor.backend.bus, "reminder_due");
        let (conversation, _) = floor.message("d1", "d1").await;
        assert_eq!(floor.routed(&conversation).await, agent);

        // The connector reports the account lost, an idle account lost and rate limited
        // (nobody waits: no alert), and an idle account kicked (someone must log it in).
        use giao_proto::events::AccountStatus;
        let bus = giao_bus::connect(&floor.backend.bus).await.expect("bus");
        let connector = giao_bus::envelope::EventPublisher::new(bus, "connector");
        for (event_id, account, status) in [
            ("status-oa-1", "oa-1", AccountStatus::Disconnected),
            ("status-oa-9", "oa-9", AccountStatus::Disconnected),
            ("status-oa-8", "oa-8", AccountStatus::RateLimited),
            ("status-zp-7", "zp-7", AccountStatus::Kicked),
        ] {
            connector
                .publish(
                    TENANT,
                    event_id.into(),
                    giao_proto::events::envelope::Payload::AccountStatusChanged(
                        giao_proto::events::AccountStatusChanged {
                            channel_account_id: account.into(),
                            status: status as i32,
                            previous_status: AccountStatus::Connected as i32,
                            reason: "websocket closed".into(),
                            at: None,
                        },
                    ),
                )
                .await
                .expect("published");
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while reminders_due(&seen).len() < 3 {
            assert!(tokio::time::Instant::now() < deadline, "no alert");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (kicked, alerts): (Vec<_>, Vec<_>) = reminders_due(&seen)
            .into_iter()
            .partition(|alert| alert.text.contains("zp-7"));
        // The kicked idle account alerts the tenant's admins (no team has work on it): the
        // one who created the tenant and the one added here.
        assert_eq!(kicked.len(), 2, "{kicked:?}");
        assert!(kicked.iter().any(|alert| alert.user_id == admin));
        assert!(
            kicked
                .iter()
                .all(|alert| alert.user_id != supervisor && alert.text.contains("đăng nhập lại"))
        );
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].user_id, supervisor);
        assert!(alerts[0].text.contains("oa-1") && alerts[0].text.contains("1 hội thoại"));
        assert_ne!(alerts[0].user_id, elsewhere);
        let listed = floor
            .assignment_as(&format!("dev.{TENANT}.{supervisor}.supervisor.sales"))
            .await
            .list_reminders(ListRemindersRequest::default())
            .await
            .expect("lists")
            .into_inner()
            .reminders;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].source, "alert:account_status");
        assert!(listed[0].done);
    }

    pub(super) async fn an_unanswered_customer_goes_to_another_agent_once(kind: BackendKind) {
        let floor = Floor::start(kind).await;
        let mut agents = [
            floor.online_agent("an", &["sales"]).await,
            floor.online_agent("binh", &["sales"]).await,
        ];
        agents.sort();
        let (low, high) = (agents[0].clone(), agents[1].clone());
        floor.sync().await;
        floor
            .policy(policy(RoutingStrategy::RoundRobin, "sales"))
            .await;
        sla(
            &floor,
            SlaPolicy {
                first_response_secs: 3_600,
                reassign_after_secs: 1,
                ..Default::default()
            },
        )
        .await;
        let (answered, _) = floor.message("n1", "n1").await;
        assert_eq!(floor.routed(&answered).await, low);
        let mut low_store = MessageStoreServiceClient::with_interceptor(
            floor.store.channel().await,
            TraceInterceptor::with_bearer(&dev(&low, "agent")).expect("bearer"),
        );
        super::reply(&mut low_store, &answered, "answer-n1")
            .await
            .expect("replied");
        let (ignored, _) = floor.message("n2", "n2").await;
        assert_eq!(floor.routed(&ignored).await, high);

        // Nobody answers n2 within a second: it goes to the other agent, once.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while floor.owner(&ignored).await != low {
            assert!(tokio::time::Instant::now() < deadline, "never re-assigned");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(floor.owner(&ignored).await, low, "moved only once");
        assert_eq!(floor.owner(&answered).await, low, "the answered one stays");
        let history = floor
            .admin()
            .await
            .get_ownership_history(giao_proto::assignment::GetOwnershipHistoryRequest {
                conversation_id: ignored.clone(),
                page: None,
            })
            .await
            .expect("history")
            .into_inner()
            .changes;
        assert_eq!(history.len(), 2, "{history:?}");
        assert_eq!(history[1].previous_owner_user_id, high);
        assert_eq!(history[1].reason, "routing: no reply in time");
        // The customer is still waiting, now on the new owner's list.
        let waiting = floor
            .assignment_as(&dev(&low, "agent"))
            .await
            .list_unattended(ListUnattendedRequest::default())
            .await
            .expect("lists")
            .into_inner()
            .conversations;
        assert_eq!(waiting.len(), 1);
        assert_eq!(waiting[0].conversation_id, ignored);
    }

    /// Conversations owned by `user_id`, as an admin sees them.
    async fn owned(floor: &Floor, user_id: &str) -> Vec<String> {
        floor
            .store_admin()
            .await
            .list_conversations(ListConversationsRequest {
                owner_user_id: user_id.into(),
                ..Default::default()
            })
            .await
            .expect("lists")
            .into_inner()
            .conversations
            .into_iter()
            .map(|conversation| conversation.conversation_id)
            .collect()
    }

    /// Customers owned by `user_id` in message-store.
    async fn customers_of(floor: &Floor, user_id: &str) -> usize {
        floor
            .store_admin()
            .await
            .list_contacts(giao_proto::messagestore::ListContactsRequest {
                owner_user_id: user_id.into(),
                ..Default::default()
            })
            .await
            .expect("lists")
            .into_inner()
            .contacts
            .len()
    }

    fn across_team(user_id: &str) -> OffboardStaffRequest {
        OffboardStaffRequest {
            user_id: user_id.into(),
            successor: Some(Successor::RedistributeAcrossTeam(true)),
            idempotency_key: String::new(),
        }
    }

    pub(super) async fn a_leavers_work_is_shared_across_their_team(kind: BackendKind) {
        use giao_proto::common::Role;
        let floor = Floor::start(kind).await;
        let leaver = floor.online_agent("lan", &["sales"]).await;
        let mut team = vec![
            floor.online_agent("an", &["sales"]).await,
            floor.user("binh", Role::Agent, &["sales", "support"]).await,
        ];
        let supervisor = floor.user("sang", Role::Supervisor, &["sales"]).await;
        team.push(supervisor.clone());
        let outsider = floor.user("kim", Role::Agent, &["support"]).await;
        let loner = floor.user("tu", Role::Agent, &["solo"]).await;
        let teamless = floor.user("vy", Role::Agent, &[]).await;
        floor.sync().await;
        // binh is already busy and at capacity: the others take what they can first.
        floor
            .admin()
            .await
            .set_capacity(SetCapacityRequest {
                user_id: team[1].clone(),
                max_open: 1,
            })
            .await
            .expect("capacity set");

        // Six conversations of five customers (c1 wrote on two threads), all the leaver's.
        let mut conversations = Vec::new();
        for (customer, thread) in [
            ("c1", "t1"),
            ("c1", "t1b"),
            ("c2", "t2"),
            ("c3", "t3"),
            ("c4", "t4"),
            ("c5", "t5"),
        ] {
            let (conversation, contact) = floor.message(customer, thread).await;
            floor
                .admin()
                .await
                .assign(AssignRequest {
                    conversation_id: conversation.clone(),
                    owner_user_id: leaver.clone(),
                    reason: "new lead".into(),
                })
                .await
                .expect("assigns");
            conversations.push((conversation, contact));
        }
        let mut leaver_assignment = floor.assignment_as(&dev(&leaver, "agent")).await;
        let later = chrono::Utc::now() + chrono::Duration::days(2);
        for (key, conversation_id) in [
            ("about-c3", conversations[3].0.clone()),
            ("free", String::new()),
        ] {
            leaver_assignment
                .create_reminder(CreateReminderRequest {
                    reminder: Some(Reminder {
                        conversation_id,
                        text: format!("gọi lại {key}"),
                        due_at: Some(prost_types::Timestamp {
                            seconds: later.timestamp(),
                            nanos: 0,
                        }),
                        ..Default::default()
                    }),
                    idempotency_key: key.into(),
                })
                .await
                .expect("reminder set");
        }
        // The leaver's shift is on another account, so that oa-1 stays unrestricted.
        floor
            .admin()
            .await
            .set_shift(SetShiftRequest {
                shift: Some(Shift {
                    shift_id: "lan-evenings".into(),
                    user_id: leaver.clone(),
                    channel_account_ids: vec!["oa-2".into()],
                    weekdays: vec![1, 2, 3, 4, 5],
                    starts_at: "18:00".into(),
                    ends_at: "22:00".into(),
                }),
            })
            .await
            .expect("shift set");

        // Bad input: clear errors naming the field, and nothing moves.
        let mut admin = floor.assignment_as(&floor.admin_token).await;
        let no_team = admin
            .offboard_staff(across_team(&teamless))
            .await
            .expect_err("refused");
        assert_eq!(no_team.code(), Code::FailedPrecondition, "{no_team:?}");
        assert!(
            no_team.message().contains("redistribute_across_team"),
            "{no_team:?}"
        );
        let alone = admin
            .offboard_staff(across_team(&loner))
            .await
            .expect_err("refused");
        assert_eq!(alone.code(), Code::FailedPrecondition, "{alone:?}");
        assert!(
            alone.message().contains("redistribute_across_team"),
            "{alone:?}"
        );
        let unset = admin
            .offboard_staff(OffboardStaffRequest {
                user_id: leaver.clone(),
                successor: Some(Successor::RedistributeAcrossTeam(false)),
                idempotency_key: String::new(),
            })
            .await
            .expect_err("refused");
        assert_eq!(unset.code(), Code::InvalidArgument);
        assert!(unset.message().contains("successor"));
        for user in [&loner, &teamless] {
            let status = giao_tests::auth_client(&floor.auth, Some(&floor.admin_token))
                .await
                .get_user(giao_proto::auth::GetUserRequest {
                    user_id: user.clone(),
                })
                .await
                .expect("user")
                .into_inner()
                .status;
            assert_eq!(status, UserStatus::Active as i32, "nobody was offboarded");
        }
        assert_eq!(owned(&floor, &leaver).await.len(), 6, "nothing moved");

        let report = admin
            .offboard_staff(across_team(&leaver))
            .await
            .expect("offboards")
            .into_inner();
        assert_eq!(report.conversations_moved, 6);
        assert_eq!(report.contacts_moved, 5);
        assert_eq!((report.reminders_moved, report.shifts_moved), (2, 1));
        assert!(!report.export_id.is_empty());

        // Every conversation is with an active teammate; a customer stays with one person.
        assert!(owned(&floor, &leaver).await.is_empty());
        let mut owners = Vec::new();
        for (conversation, _) in &conversations {
            let owner = floor.owner(conversation).await;
            assert!(team.contains(&owner), "{owner} is not in the leaver's team");
            owners.push(owner);
        }
        assert_eq!(owners[0], owners[1], "c1's two conversations stay together");
        let mut counts: Vec<usize> = Vec::new();
        for member in &team {
            counts.push(owned(&floor, member).await.len());
        }
        assert_eq!(counts.iter().sum::<usize>(), 6);
        assert!(counts.iter().all(|count| *count >= 1), "spread: {counts:?}");
        assert_eq!(counts[1], 1, "binh only up to capacity: {counts:?}");
        assert!(owned(&floor, &outsider).await.is_empty());
        // The customers moved with their conversations.
        let mut customers = 0;
        for member in &team {
            customers += customers_of(&floor, member).await;
        }
        assert_eq!(customers, 5);
        assert_eq!(customers_of(&floor, &leaver).await, 0);
        // The reminder about c3 is with c3's new owner; the free one and the shift with the
        // team's supervisor.
        let reminders_of = |user: String| {
            let floor = &floor;
            async move {
                floor
                    .assignment_as(&floor.admin_token)
                    .await
                    .list_reminders(ListRemindersRequest {
                        user_id: user,
                        ..Default::default()
                    })
                    .await
                    .expect("lists")
                    .into_inner()
                    .reminders
                    .into_iter()
                    .map(|reminder| reminder.text)
                    .collect::<Vec<_>>()
            }
        };
        assert!(
            reminders_of(owners[3].clone())
                .await
                .contains(&"gọi lại about-c3".to_string())
        );
        assert!(
            reminders_of(supervisor.clone())
                .await
                .contains(&"gọi lại free".to_string())
        );
        assert!(reminders_of(leaver.clone()).await.is_empty());
        let shifts = admin
            .list_shifts(giao_proto::assignment::ListShiftsRequest {
                user_id: supervisor.clone(),
                page: None,
            })
            .await
            .expect("lists")
            .into_inner()
            .shifts;
        assert_eq!(shifts.len(), 1);

        // Calling again changes nothing; a successor for the same leaver is refused.
        let again = admin
            .offboard_staff(across_team(&leaver))
            .await
            .expect("second call")
            .into_inner();
        assert_eq!(again, report);
        for ((conversation, _), owner) in conversations.iter().zip(&owners) {
            assert_eq!(&floor.owner(conversation).await, owner);
        }
        let switched = admin
            .offboard_staff(OffboardStaffRequest {
                user_id: leaver.clone(),
                successor: Some(Successor::SuccessorUserId(team[0].clone())),
                idempotency_key: String::new(),
            })
            .await
            .expect_err("refused");
        assert_eq!(switched.code(), Code::FailedPrecondition);
        assert!(
            switched.message().contains("successor_user_id"),
            "{switched:?}"
        );

        // Nothing is routed to the leaver any more, though they were online with no work.
        floor
            .policy(policy(RoutingStrategy::LeastOpen, "sales"))
            .await;
        let owner = floor.next("c9").await;
        assert_eq!(owner, team[0], "routed to the only online teammate");
    }

    /// Sets a shift as the admin and returns the refusal, if any.
    async fn try_shift(
        floor: &Floor,
        shift_id: &str,
        user_id: &str,
        weekdays: &[u32],
        starts_at: &str,
        ends_at: &str,
    ) -> Result<(), tonic::Status> {
        put_shift(
            &mut floor.admin().await,
            shift_id,
            user_id,
            weekdays,
            (starts_at, ends_at),
        )
        .await
    }

    pub(super) async fn overlapping_shifts_of_one_person_are_refused(kind: BackendKind) {
        let floor = Floor::start(kind).await;
        let weekdays = [1, 2, 3, 4, 5];
        try_shift(&floor, "day", "u-an", &weekdays, "08:00", "17:00")
            .await
            .expect("a day shift");
        try_shift(&floor, "friday-night", "u-an", &[5], "22:00", "06:00")
            .await
            .expect("a night shift after the day one");
        try_shift(&floor, "evening", "u-an", &[1], "17:00", "22:00")
            .await
            .expect("back to back is no overlap");
        for (shift_id, days, starts_at, ends_at, conflict) in [
            ("late", &[3][..], "16:00", "20:00", "day"),
            // Past midnight: Friday's night shift runs into Saturday morning.
            ("saturday-early", &[6][..], "05:00", "09:00", "friday-night"),
            // Sunday night runs into Monday's day shift.
            ("sunday-night", &[7][..], "23:00", "08:30", "day"),
            ("all-day-monday", &[1][..], "00:00", "00:00", "day"),
        ] {
            let status = try_shift(&floor, shift_id, "u-an", days, starts_at, ends_at)
                .await
                .expect_err("overlap refused");
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            assert!(
                status.message().contains("shift.starts_at")
                    && status.message().contains(&format!("\"{conflict}\"")),
                "{shift_id}: {status:?}"
            );
        }
        // Moving the day shift so that it would overlap the evening is refused too; moving
        // it within itself is not an overlap.
        let status = try_shift(&floor, "day", "u-an", &weekdays, "08:00", "18:00")
            .await
            .expect_err("overlaps the evening");
        assert!(status.message().contains("\"evening\""), "{status:?}");
        try_shift(&floor, "day", "u-an", &weekdays, "09:00", "17:00")
            .await
            .expect("a shift does not overlap itself");
        // Someone else may work at the same time.
        try_shift(&floor, "late", "u-binh", &[3], "16:00", "20:00")
            .await
            .expect("another person");

        let floor = &floor;
        let listed = |user: &'static str| async move {
            let mut listed: Vec<(String, String, String)> = floor
                .admin()
                .await
                .list_shifts(giao_proto::assignment::ListShiftsRequest {
                    user_id: user.into(),
                    page: None,
                })
                .await
                .expect("lists")
                .into_inner()
                .shifts
                .into_iter()
                .map(|shift| (shift.shift_id, shift.starts_at, shift.ends_at))
                .collect();
            listed.sort();
            listed
        };
        let hm = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(
            listed("u-an").await,
            [
                hm("day", "09:00", "17:00"),
                hm("evening", "17:00", "22:00"),
                hm("friday-night", "22:00", "06:00"),
            ],
            "nothing refused was stored"
        );
        assert_eq!(listed("u-binh").await, [hm("late", "16:00", "20:00")]);
    }

    pub(super) async fn bad_sla_policies_are_refused_and_store_nothing(kind: BackendKind) {
        let floor = Floor::start(kind).await;
        let good = SlaPolicy {
            first_response_secs: 600,
            next_response_secs: 1_800,
            business_hours: Some(giao_proto::assignment::BusinessHours {
                weekdays: vec![1, 2, 3, 4, 5],
                opens_at: "08:00".into(),
                closes_at: "17:00".into(),
            }),
            holidays: vec!["2027-02-06".into()],
            ..Default::default()
        };
        let hours = |opens_at: &str, closes_at: &str, weekdays: Vec<u32>| {
            Some(giao_proto::assignment::BusinessHours {
                weekdays,
                opens_at: opens_at.into(),
                closes_at: closes_at.into(),
            })
        };
        let cases: Vec<(SlaPolicy, &str, &str)> = vec![
            (
                SlaPolicy {
                    time_zone: "Mars/Olympus".into(),
                    ..good.clone()
                },
                "policy.time_zone",
                "IANA",
            ),
            (
                SlaPolicy {
                    business_hours: hours("17:00", "08:00", vec![1]),
                    ..good.clone()
                },
                "policy.business_hours.closes_at",
                "after opens_at",
            ),
            (
                SlaPolicy {
                    business_hours: hours("09:00", "09:00", vec![1]),
                    ..good.clone()
                },
                "policy.business_hours.closes_at",
                "after opens_at",
            ),
            (
                SlaPolicy {
                    business_hours: hours("8h", "17:00", vec![1]),
                    ..good.clone()
                },
                "policy.business_hours.opens_at",
                "HH:MM",
            ),
            (
                SlaPolicy {
                    business_hours: hours("08:00", "17:00", vec![0, 8]),
                    ..good.clone()
                },
                "policy.business_hours.weekdays",
                "1 (Monday) to 7 (Sunday)",
            ),
            (
                SlaPolicy {
                    holidays: vec!["2027-01-01".into(), "2027-02-30".into()],
                    ..good.clone()
                },
                "policy.holidays[1]",
                "YYYY-MM-DD",
            ),
            (
                SlaPolicy {
                    holidays: vec!["Tết".into()],
                    ..good.clone()
                },
                "policy.holidays[0]",
                "YYYY-MM-DD",
            ),
            (
                SlaPolicy {
                    first_response_secs: 30 * 24 * 3_600 + 1,
                    ..good.clone()
                },
                "policy.first_response_secs",
                "0 (no target) to 2592000",
            ),
            (
                SlaPolicy {
                    next_response_secs: u32::MAX,
                    ..good.clone()
                },
                "policy.next_response_secs",
                "0 (no target) to 2592000",
            ),
            (
                SlaPolicy {
                    reassign_after_secs: 40 * 24 * 3_600,
                    ..good.clone()
                },
                "policy.reassign_after_secs",
                "0 (never) to 2592000",
            ),
            (
                SlaPolicy {
                    first_response_secs: 0,
                    next_response_secs: 0,
                    reassign_after_secs: 0,
                    ..good.clone()
                },
                "policy.first_response_secs",
                "",
            ),
        ];
        let mut admin = floor.admin().await;
        for (policy, field, range) in cases {
            let status = admin
                .set_sla_policy(SetSlaPolicyRequest {
                    policy: Some(policy.clone()),
                })
                .await
                .expect_err("refused");
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{policy:?}: {status:?}"
            );
            assert!(
                status.message().contains(field) && status.message().contains(range),
                "{field}: {status:?}"
            );
        }
        let database = giao_storage::Database::connect(&floor.config.database)
            .await
            .expect("database");
        assert_eq!(
            giao_assignment::store::sla::policy_for(&database, TENANT, "oa-1")
                .await
                .expect("reads"),
            None,
            "nothing stored"
        );
        admin
            .set_sla_policy(SetSlaPolicyRequest { policy: Some(good) })
            .await
            .expect("the good one is set");
        let stored = giao_assignment::store::sla::policy_for(&database, TENANT, "oa-1")
            .await
            .expect("reads")
            .expect("stored");
        assert_eq!(
            (stored.first_response_secs, stored.holidays.as_str()),
            (600, "2027-02-06")
        );
    }

    /// A message captured on `account` with its own send time: a customer's, or one the
    /// account owner typed on the phone.
    async fn captured(
        floor: &Floor,
        account: &str,
        external_id: &str,
        from_customer: bool,
        sent_at: chrono::DateTime<chrono::Utc>,
    ) -> giao_proto::messagestore::Message {
        let (direction, sender_kind) = if from_customer {
            (
                giao_proto::common::Direction::Inbound,
                giao_proto::common::SenderKind::Customer,
            )
        } else {
            (
                giao_proto::common::Direction::Outbound,
                giao_proto::common::SenderKind::AccountOwner,
            )
        };
        floor
            .store_admin()
            .await
            .append_inbound(AppendInboundRequest {
                message: Some(InboundMessage {
                    channel_account_id: account.into(),
                    external_message_id: external_id.into(),
                    external_thread_id: format!("thread-{account}"),
                    customer: Some(ChannelUser {
                        external_user_id: format!("customer-{account}"),
                        display_name: "Khách".into(),
                        ..Default::default()
                    }),
                    direction: direction as i32,
                    sender_kind: sender_kind as i32,
                    content: Some(MessageContent {
                        r#type: ContentType::Text as i32,
                        text: external_id.into(),
                        ..Default::default()
                    }),
                    sent_at: Some(prost_types::Timestamp {
                        seconds: sent_at.timestamp(),
                        nanos: 0,
                    }),
                    ..Default::default()
                }),
            })
            .await
            .expect("appends")
            .into_inner()
            .message
            .expect("message")
    }

    /// Local Ho Chi Minh City time (UTC+7 all year) as UTC.
    fn hcm(date: chrono::NaiveDate, time: &str) -> chrono::DateTime<chrono::Utc> {
        let local = date.and_time(chrono::NaiveTime::parse_from_str(time, "%H:%M").expect("time"));
        (local - chrono::Duration::hours(7)).and_utc()
    }

    fn utc_of(at: Option<&prost_types::Timestamp>) -> chrono::DateTime<chrono::Utc> {
        let at = at.expect("timestamp");
        chrono::DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).unwrap_or(0))
            .expect("in range")
    }

    /// The breaches of `kind` seen so far, waiting for at least one.
    async fn breach_of(seen: &Seen, kind: &str) -> giao_proto::events::SlaBreached {
        eventually(&format!("a {kind} breach fires"), || {
            let found = breaches(seen).into_iter().find(|b| b.kind == kind);
            async move { found }
        })
        .await
    }

    pub(super) async fn sla_clocks_count_business_hours_only(kind: BackendKind) {
        let floor = Floor::start(kind).await;
        floor.sync().await;
        let seen = collect(&floor.backend.bus, "sla_breached");
        // The shop opens 08:00-17:00 every day; one day is a holiday. Nobody supervises
        // unrouted conversations, so breaches go to the policy's fallback.
        let day = (chrono::Utc::now() + chrono::Duration::hours(7)).date_naive()
            - chrono::Duration::days(10);
        let holiday = day + chrono::Duration::days(1);
        let every_day = |weekdays: Vec<u32>| {
            Some(giao_proto::assignment::BusinessHours {
                weekdays,
                opens_at: "08:00".into(),
                closes_at: "17:00".into(),
            })
        };
        sla(
            &floor,
            SlaPolicy {
                channel_account_id: "oa-1".into(),
                first_response_secs: 3_600,
                next_response_secs: 1_800,
                business_hours: every_day((1..=7).collect()),
                holidays: vec![holiday.format("%Y-%m-%d").to_string()],
                escalate_to_user_id: "u-duty".into(),
                ..Default::default()
            },
        )
        .await;

        // A customer writes at 20:00, after closing; the next day is a holiday. The hour
        // runs from opening the day after: due 09:00 then, not 21:00 the same evening.
        let first = captured(&floor, "oa-1", "q1", true, hcm(day, "20:00")).await;
        let breach = breach_of(&seen, "first_response").await;
        assert_eq!(breach.conversation_id, first.conversation_id);
        assert_eq!(
            utc_of(breach.due_at.as_ref()),
            hcm(day + chrono::Duration::days(2), "09:00")
        );
        assert_eq!(breach.escalated_to_user_id, "u-duty", "the fallback");
        assert!(utc_of(breach.breached_at.as_ref()) >= utc_of(breach.due_at.as_ref()));

        // The owner answers from the phone at 10:00, and the customer writes again at
        // 16:45: 15 minutes before closing, the other 15 the next morning.
        let answered = day + chrono::Duration::days(2);
        captured(&floor, "oa-1", "a1", false, hcm(answered, "10:00")).await;
        captured(&floor, "oa-1", "q2", true, hcm(answered, "16:45")).await;
        let next = breach_of(&seen, "next_response").await;
        assert_eq!(next.conversation_id, first.conversation_id);
        assert_eq!(
            utc_of(next.due_at.as_ref()),
            hcm(answered + chrono::Duration::days(1), "08:15")
        );
        assert_eq!(next.escalated_to_user_id, "u-duty");

        // Now, on an account open only tomorrow: the clock has not started, so the wait
        // is not breached although its target is a minute.
        let now = chrono::Utc::now();
        let tomorrow = (now + chrono::Duration::hours(7)).date_naive() + chrono::Duration::days(1);
        sla(
            &floor,
            SlaPolicy {
                channel_account_id: "oa-2".into(),
                first_response_secs: 60,
                business_hours: every_day(vec![
                    chrono::Datelike::weekday(&tomorrow).number_from_monday(),
                ]),
                ..Default::default()
            },
        )
        .await;
        let waiting = captured(&floor, "oa-2", "q3", true, now).await;
        let entry = eventually("the customer is waiting", || async {
            floor
                .admin()
                .await
                .list_unattended(ListUnattendedRequest::default())
                .await
                .expect("lists")
                .into_inner()
                .conversations
                .into_iter()
                .find(|entry| entry.conversation_id == waiting.conversation_id)
        })
        .await;
        assert_eq!(
            utc_of(entry.sla_due_at.as_ref()),
            hcm(tomorrow, "08:01"),
            "a minute after opening"
        );
        assert_ne!(entry.sla_state, SlaState::Breached as i32);
    }

    /// Runs one phase of a test with a deadline, so that a stall fails naming the phase.
    async fn within<T>(phase: &str, secs: u64, work: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(std::time::Duration::from_secs(secs), work)
            .await
            .unwrap_or_else(|_| panic!("{phase}: not done within {secs}s"))
    }

    /// Makes `count` clocks and reminders of `u-an` due a minute ago.
    async fn due_timers(database: &giao_storage::Database, count: usize) -> i64 {
        let past = chrono::Utc::now().timestamp_micros() - 60_000_000;
        for n in 0..count {
            let offset = i64::try_from(n).expect("small");
            due_clock(database, offset, past).await;
            giao_assignment::store::reminders::create(
                database,
                TENANT,
                &giao_assignment::store::reminders::NewReminder {
                    reminder_id: format!("reminder-{n:03}"),
                    user_id: "u-an".into(),
                    conversation_id: format!("conv-{n:03}"),
                    contact_id: String::new(),
                    text: "gọi lại".into(),
                    due_at_us: past + offset,
                    source: "manual".into(),
                    quiet_secs: 0,
                    created_by: "u-an".into(),
                    idempotency_key: String::new(),
                },
            )
            .await
            .expect("reminder created");
        }
        past
    }

    /// Waits until `count` clocks are recorded breached and `count` reminders fired.
    async fn all_timers_fired(database: &giao_storage::Database, count: usize) {
        eventually("every clock and reminder fired", || async {
            let clocks = giao_assignment::store::sla::unattended(
                database,
                TENANT,
                &giao_assignment::store::sla::Scope::Tenant,
                "",
                None,
                1_000,
            )
            .await
            .expect("clocks");
            let reminders =
                giao_assignment::store::reminders::list(database, TENANT, "u-an", None, 1_000)
                    .await
                    .expect("reminders");
            let breached = clocks.iter().filter(|clock| clock.breached_at_us.is_some());
            let fired = reminders
                .iter()
                .filter(|reminder| reminder.fired_at_us.is_some());
            (breached.count() == count && fired.count() == count).then_some(())
        })
        .await;
    }

    pub(super) async fn two_scheduler_replicas_fire_each_timer_once(kind: BackendKind) {
        // More than one claim batch, so both replicas usually take part; which one fires
        // what is up to their timing, so only the outcome is asserted.
        const TIMERS: usize = 150;
        let floor = within("starting the first replica", 60, Floor::start(kind)).await;
        let second = within(
            "starting the second replica",
            30,
            giao_tests::start_assignment(floor.config.clone()),
        )
        .await;
        let database = within(
            "connecting",
            10,
            giao_storage::Database::connect(&floor.config.database),
        )
        .await
        .expect("database");
        // Both replicas' schedulers are running; many clocks and reminders fall due at once.
        let past = within("making timers due", 60, due_timers(&database, TIMERS)).await;
        // Done when every clock is recorded breached and every reminder fired: nothing is
        // claimable after that, so the fire counts are final.
        within("firing", 45, all_timers_fired(&database, TIMERS)).await;
        let fires = within(
            "reading the fire log",
            10,
            giao_assignment::store::fires(&database, TENANT),
        )
        .await
        .expect("fires");
        let mut per_timer = std::collections::BTreeMap::<&str, usize>::new();
        for (event_id, _) in &fires {
            *per_timer.entry(event_id.as_str()).or_default() += 1;
        }
        let twice: Vec<_> = per_timer.iter().filter(|(_, count)| **count > 1).collect();
        assert!(twice.is_empty(), "fired more than once: {twice:?}");
        let breaches = per_timer
            .keys()
            .filter(|id| id.starts_with("sla-breached-"))
            .count();
        let reminders = per_timer
            .keys()
            .filter(|id| id.starts_with("reminder-due-"))
            .count();
        assert_eq!((breaches, reminders), (TIMERS, TIMERS));
        // The log forgets what is older than the cut-off only.
        let prune = |before_us: i64| giao_assignment::store::prune_fires(&database, before_us);
        assert_eq!(within("pruning", 10, prune(past)).await.expect("prunes"), 0);
        let now = chrono::Utc::now().timestamp_micros() + 1;
        assert_eq!(
            within("pruning", 10, prune(now)).await.expect("prunes"),
            fires.len() as u64
        );
        within("stopping the second replica", 40, second.stop())
            .await
            .expect("second replica stops");
    }

    pub(super) async fn timers_fire_when_their_log_cannot_be_written(kind: BackendKind) {
        let floor = within("starting", 60, Floor::start(kind)).await;
        let database = giao_storage::Database::connect(&floor.config.database)
            .await
            .expect("database");
        // A replica retrying its own publish keeps one row; another replica adds its own.
        let record = |replica: &'static str| {
            giao_assignment::store::record_fire(&database, TENANT, "sla-breached-x", replica)
        };
        for replica in ["replica-a", "replica-a", "replica-b"] {
            record(replica).await.expect("recorded");
        }
        let fires = giao_assignment::store::fires(&database, TENANT)
            .await
            .expect("fires");
        let replicas: Vec<&str> = fires.iter().map(|(_, replica)| replica.as_str()).collect();
        assert_eq!(replicas, ["replica-a", "replica-b"]);
        // The log is for diagnosis: without it, every due timer still fires at once rather
        // than after the lease (30 s, longer than the wait below).
        let drop = "DROP TABLE timer_fires";
        let dropped = match &database {
            giao_storage::Database::Postgres(pool) => {
                sqlx::query(drop).execute(pool).await.map(|_| ())
            }
            giao_storage::Database::Sqlite(pool) => {
                sqlx::query(drop).execute(pool).await.map(|_| ())
            }
        };
        dropped.expect("log dropped");
        within("making timers due", 30, due_timers(&database, 5)).await;
        within("firing", 25, all_timers_fired(&database, 5)).await;
    }

    pub(super) async fn every_move_publishes_conversation_assigned(kind: BackendKind) {
        let floor = Floor::start(kind).await;
        let mut agents = [
            floor.online_agent("an", &["sales"]).await,
            floor.online_agent("binh", &["sales"]).await,
        ];
        agents.sort();
        floor.sync().await;
        floor
            .policy(policy(RoutingStrategy::LeastOpen, "sales"))
            .await;
        let seen = collect(&floor.backend.bus, "conversation_assigned");
        let event = |conversation: String, owner: String, previous: String| {
            let seen = seen.clone();
            async move {
                let what =
                    format!("ConversationAssigned of {conversation} from {previous:?} to {owner}");
                eventually(&what, || {
                    let found = assignments(&seen).into_iter().find(|event| {
                        event.conversation_id == conversation
                            && event.owner_user_id == owner
                            && event.previous_owner_user_id == previous
                    });
                    async move { found }
                })
                .await
            }
        };

        // Routing.
        let (first, _) = floor.message("e1", "e1").await;
        let routed_to = floor.routed(&first).await;
        let routed = event(first.clone(), routed_to.clone(), String::new()).await;
        assert_eq!(
            (routed.actor.as_str(), routed.team_id.as_str()),
            ("routing", "sales")
        );
        let other = agents
            .iter()
            .find(|agent| **agent != routed_to)
            .expect("two agents")
            .clone();

        // Assign, Transfer with its note, BulkReassign.
        let mut admin = floor.admin().await;
        admin
            .assign(AssignRequest {
                conversation_id: first.clone(),
                owner_user_id: other.clone(),
                reason: "khách quen".into(),
            })
            .await
            .expect("assigns");
        let assigned = event(first.clone(), other.clone(), routed_to.clone()).await;
        assert_eq!(
            (assigned.actor.as_str(), assigned.reason.as_str()),
            ("u-admin", "khách quen")
        );
        admin
            .transfer(giao_proto::assignment::TransferRequest {
                conversation_id: first.clone(),
                to_user_id: routed_to.clone(),
                note: "anh ấy đã báo giá".into(),
            })
            .await
            .expect("transfers");
        let transferred = event(first.clone(), routed_to.clone(), other.clone()).await;
        assert_eq!(transferred.reason, "anh ấy đã báo giá");
        let (second, _) = floor.message("e2", "e2").await;
        let second_owner = floor.routed(&second).await;
        // Not online, so routing never chose them.
        let chi = floor
            .user("chi", giao_proto::common::Role::Agent, &["sales"])
            .await;
        floor.sync().await;
        admin
            .bulk_reassign(giao_proto::assignment::BulkReassignRequest {
                conversation_ids: vec![first.clone(), second.clone()],
                to_user_id: chi.clone(),
                reason: "chia lại".into(),
                idempotency_key: String::new(),
            })
            .await
            .expect("bulk reassigns");
        for (conversation, previous) in [(first, routed_to), (second, second_owner)] {
            let moved = event(conversation, chi.clone(), previous).await;
            assert_eq!(moved.reason, "chia lại");
        }
    }
}
