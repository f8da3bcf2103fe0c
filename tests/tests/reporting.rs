//! reporting behaviour a user sees, on both backends: real events published on the bus, the
//! real reporting service consuming them, figures read back over gRPC.
//!
//! One hand-built day (Monday 5 January 2026, Asia/Ho_Chi_Minh, team "north"):
//! - conv-1 (ann): a burst of three customer messages from 09:00, an automatic reply at
//!   09:03, ann's reply at 09:05 (first response 5 min; she mentions a personal phone
//!   number), the customer again at 09:10 and ann at 09:12 (response 2 min); the contact
//!   converts at 15:00;
//! - conv-2: the customer writes at 10:00 to ann, who transfers to bob at 10:04; bob
//!   answers at 10:07 (bob's first response 3 min; ann handed over a waiting customer);
//! - conv-3 (ann): the customer writes at 11:00 and nobody answers (unanswered and a long
//!   silence at the cut-off); its lead source comes from its contact;
//! - conv-4 (bob): the customer writes at 17:20, the SLA is breached at 17:50, bob answers
//!   on Tuesday at 08:10 (14 h 50 min on the clock, 20 min of business hours);
//! - the account oa-1 is disconnected from 12:00 to 12:30.

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use giao_bus::{EventBus, OutgoingMessage, envelope::event_type};
use giao_proto::{
    common::{ContentType, Direction, PageRequest, SenderKind, TimeRange},
    events::{self, AccountStatus, Envelope, envelope::Payload},
    reporting::{
        AccountActivityRequest, AgentScorecard, AgentScorecardRequest, DrillDownRequest,
        ExportReportRequest, GetReportSettingsRequest, LeadSourceFunnelRequest, ReportScope,
        SetReportSettingsRequest, SlaComplianceRequest, TeamDashboardRequest,
        reporting_service_client::ReportingServiceClient,
    },
};
use giao_tests::{Authed, Backend, BackendKind, Running, as_user, on_both_backends};
use prost::Message;
use tonic::Code;

const TENANT: &str = "acme";
const PROBE_TENANT: &str = "probe";
const MINUTE: i64 = 60_000_000;

/// Microseconds of a local time in Ho Chi Minh City (UTC+7, no daylight saving) on the
/// `day`th of January 2026.
fn local(day: u32, hour: u32, minute: u32) -> i64 {
    chrono::FixedOffset::east_opt(7 * 3600)
        .expect("offset")
        .with_ymd_and_hms(2026, 1, day, hour, minute, 0)
        .single()
        .expect("valid time")
        .with_timezone(&Utc)
        .timestamp_micros()
}

fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

/// Monday 00:00 to Wednesday 00:00, local.
fn two_days() -> ReportScope {
    scope(local(5, 0, 0), local(7, 0, 0), "")
}

fn scope(start: i64, end: i64, zone: &str) -> ReportScope {
    ReportScope {
        range: Some(TimeRange {
            start: Some(timestamp(start)),
            end: Some(timestamp(end)),
        }),
        time_zone: zone.into(),
        business_hours_only: false,
    }
}

struct Suite {
    backend: Backend,
    config: giao_reporting::Config,
    reporting: Running,
    bus: Arc<dyn EventBus>,
    probes: u64,
}

fn reporting_config(
    database: giao_storage::DatabaseConfig,
    bus: giao_bus::BusConfig,
) -> giao_reporting::Config {
    giao_reporting::Config {
        grpc: giao_tests::ephemeral_grpc(),
        metrics: giao_tests::no_metrics(),
        database,
        bus,
        auth: giao_tests::dev_auth(),
        health_interval_ms: 200,
        consumer_ack_wait_secs: 3,
        ..Default::default()
    }
}

impl Suite {
    async fn start(kind: BackendKind) -> Self {
        let mut backend = Backend::new(kind).await;
        let config = reporting_config(backend.database().await, backend.bus.clone());
        let reporting = giao_tests::start_reporting(config.clone()).await;
        let bus = giao_bus::connect(&backend.bus).await.expect("bus");
        Self {
            backend,
            config,
            reporting,
            bus,
            probes: 0,
        }
    }

    async fn client(&self, tenant: &str, user: &str, role: &str) -> ReportingServiceClient<Authed> {
        ReportingServiceClient::with_interceptor(
            self.reporting.channel().await,
            as_user(tenant, user, role),
        )
    }

    /// Publishes an envelope as a producer would, with `at` as its time; `msg_id` is the
    /// bus's dedupe id (normally the event id).
    async fn publish_with(
        &self,
        tenant: &str,
        event_id: &str,
        msg_id: &str,
        at: i64,
        payload: Payload,
    ) {
        let subject = format!("events.{}.{tenant}", event_type(&payload));
        let envelope = envelope(tenant, event_id, at, payload);
        self.bus
            .publish(OutgoingMessage {
                subject,
                msg_id: msg_id.into(),
                headers: Default::default(),
                payload: Bytes::from(envelope.encode_to_vec()),
            })
            .await
            .expect("published");
    }

    async fn publish(&self, event_id: &str, at: i64, payload: Payload) {
        self.publish_with(TENANT, event_id, event_id, at, payload)
            .await;
    }

    /// Waits until every event published so far is folded in: the consumer reads the
    /// stream in order, so a probe event published last is applied last.
    async fn settle(&mut self) {
        self.probes += 1;
        let id = format!("probe-{}", self.probes);
        let at = local(5, 0, 30);
        self.publish_with(
            PROBE_TENANT,
            &id,
            &id,
            at,
            stored(
                &id,
                "probe-conv",
                "probe-user",
                "",
                Direction::Inbound,
                SenderKind::Customer,
                "",
                at,
                "",
            ),
        )
        .await;
        let client = self.client(PROBE_TENANT, "u-admin", "admin").await;
        let expected = self.probes;
        giao_testkit::wait_until(Duration::from_secs(30), "the probe event", || {
            let mut client = client.clone();
            async move {
                client
                    .agent_scorecard(AgentScorecardRequest {
                        scope: Some(two_days()),
                        user_id: "probe-user".into(),
                    })
                    .await
                    .map(|reply| {
                        reply.into_inner().scorecard.unwrap_or_default().messages_in >= expected
                    })
                    .unwrap_or(false)
            }
        })
        .await;
    }

    async fn scorecard(&self, user: &str, business_hours_only: bool) -> AgentScorecard {
        let mut scope = two_days();
        scope.business_hours_only = business_hours_only;
        self.scorecard_in(scope, user).await
    }

    async fn scorecard_in(&self, scope: ReportScope, user: &str) -> AgentScorecard {
        self.client(TENANT, "u-admin", "admin")
            .await
            .agent_scorecard(AgentScorecardRequest {
                scope: Some(scope),
                user_id: user.into(),
            })
            .await
            .expect("scorecard")
            .into_inner()
            .scorecard
            .expect("scorecard")
    }

    async fn drill(&self, metric: &str, dimensions: &[(&str, &str)]) -> Vec<String> {
        self.drill_in(two_days(), metric, dimensions).await
    }

    async fn drill_in(
        &self,
        scope: ReportScope,
        metric: &str,
        dimensions: &[(&str, &str)],
    ) -> Vec<String> {
        let mut client = self.client(TENANT, "u-admin", "admin").await;
        let mut ids = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = client
                .drill_down(DrillDownRequest {
                    scope: Some(scope.clone()),
                    report: "agent_scorecard".into(),
                    metric: metric.into(),
                    dimensions: dimensions
                        .iter()
                        .map(|(key, value)| (key.to_string(), value.to_string()))
                        .collect::<HashMap<_, _>>(),
                    page: Some(PageRequest {
                        page_size: 1,
                        cursor: cursor.clone(),
                    }),
                })
                .await
                .expect("drill-down")
                .into_inner();
            ids.extend(page.conversation_ids);
            cursor = page.page.unwrap_or_default().next_cursor;
            if cursor.is_empty() {
                return ids;
            }
        }
    }

    /// The hand-built day described at the top of this file.
    async fn publish_day(&self) {
        for (id, at, payload) in day() {
            self.publish(id, at, payload).await;
        }
    }
}

/// A customer's question on `conv` of `owner` in team north.
fn customer_wrote(id: &str, conv: &str, owner: &str, at: i64) -> Payload {
    stored(
        id,
        conv,
        owner,
        "north",
        Direction::Inbound,
        SenderKind::Customer,
        "",
        at,
        "cho em hỏi giá",
    )
}

/// The hand-built day described at the top of this file, as (event id, time, payload).
fn day() -> Vec<(&'static str, i64, Payload)> {
    let customer = customer_wrote;
    let reply = |id: &str, conv: &str, owner: &str, sender: &str, at: i64, text: &str| {
        stored(
            id,
            conv,
            owner,
            "north",
            Direction::Outbound,
            SenderKind::Staff,
            sender,
            at,
            text,
        )
    };
    vec![
        ("c1-open", local(5, 9, 0), opened("conv-1", local(5, 9, 0))),
        (
            "c1-m1",
            local(5, 9, 0),
            customer("c1-m1", "conv-1", "ann", local(5, 9, 0)),
        ),
        (
            "c1-m2",
            local(5, 9, 1),
            customer("c1-m2", "conv-1", "ann", local(5, 9, 1)),
        ),
        (
            "c1-m3",
            local(5, 9, 2),
            customer("c1-m3", "conv-1", "ann", local(5, 9, 2)),
        ),
        (
            "c1-bot",
            local(5, 9, 3),
            stored(
                "c1-bot",
                "conv-1",
                "ann",
                "north",
                Direction::Outbound,
                SenderKind::Automation,
                "",
                local(5, 9, 3),
                "Cảm ơn, nhân viên sẽ trả lời ngay",
            ),
        ),
        (
            "c1-r1",
            local(5, 9, 5),
            reply(
                "c1-r1",
                "conv-1",
                "ann",
                "ann",
                local(5, 9, 5),
                "Dạ chị gọi em qua số 0912 345 678 nhé",
            ),
        ),
        (
            "c1-m4",
            local(5, 9, 10),
            customer("c1-m4", "conv-1", "ann", local(5, 9, 10)),
        ),
        (
            "c1-r2",
            local(5, 9, 12),
            reply(
                "c1-r2",
                "conv-1",
                "ann",
                "ann",
                local(5, 9, 12),
                "Dạ vâng ạ",
            ),
        ),
        (
            "c2-m1",
            local(5, 10, 0),
            customer("c2-m1", "conv-2", "ann", local(5, 10, 0)),
        ),
        (
            "c2-transfer",
            local(5, 10, 4),
            assigned("conv-2", "bob", "ann"),
        ),
        (
            "c2-r1",
            local(5, 10, 7),
            reply(
                "c2-r1",
                "conv-2",
                "bob",
                "bob",
                local(5, 10, 7),
                "Em là Bình, em hỗ trợ chị ạ",
            ),
        ),
        // conv-3's messages carry no lead source: it comes from its contact.
        (
            "contact-k3",
            local(5, 10, 59),
            contact("k-3", true, "", "", "walk_in"),
        ),
        (
            "c3-m1",
            local(5, 11, 0),
            customer("c3-m1", "conv-3", "ann", local(5, 11, 0)),
        ),
        (
            "oa-down",
            local(5, 12, 0),
            account("oa-1", AccountStatus::Disconnected, local(5, 12, 0)),
        ),
        (
            "oa-up",
            local(5, 12, 30),
            account("oa-1", AccountStatus::Connected, local(5, 12, 30)),
        ),
        (
            "contact-created",
            local(5, 9, 0),
            contact("k-1", true, "", "", "facebook_ads"),
        ),
        (
            "contact-won",
            local(5, 15, 0),
            contact("k-1", false, "won", "quoted", "facebook_ads"),
        ),
        (
            "c4-m1",
            local(5, 17, 20),
            customer("c4-m1", "conv-4", "bob", local(5, 17, 20)),
        ),
        (
            "c4-breach",
            local(5, 17, 50),
            breached("conv-4", "bob", local(5, 17, 50)),
        ),
        (
            "c4-r1",
            local(6, 8, 10),
            reply(
                "c4-r1",
                "conv-4",
                "bob",
                "bob",
                local(6, 8, 10),
                "Dạ em chào chị",
            ),
        ),
    ]
}

#[allow(clippy::too_many_arguments)]
fn stored(
    id: &str,
    conversation: &str,
    owner: &str,
    team: &str,
    direction: Direction,
    sender: SenderKind,
    sender_user: &str,
    at: i64,
    text: &str,
) -> Payload {
    Payload::MessageStored(events::MessageStored {
        message_id: id.into(),
        conversation_id: conversation.into(),
        // conv-1 belongs to contact k-1 (the one that converts).
        contact_id: match conversation {
            "conv-1" => "k-1".into(),
            "conv-3" => "k-3".into(),
            _ => String::new(),
        },
        channel_account_id: "oa-1".into(),
        direction: direction as i32,
        sender_kind: sender as i32,
        sender_user_id: sender_user.into(),
        sent_at: Some(timestamp(at)),
        owner_user_id: owner.into(),
        team_id: team.into(),
        lead_source: if conversation == "conv-1" {
            "facebook_ads".into()
        } else {
            String::new()
        },
        content_type: ContentType::Text as i32,
        text: text.into(),
    })
}

fn opened(conversation: &str, at: i64) -> Payload {
    Payload::ConversationOpened(events::ConversationOpened {
        conversation_id: conversation.into(),
        channel_account_id: "oa-1".into(),
        opened_at: Some(timestamp(at)),
        ..Default::default()
    })
}

fn assigned(conversation: &str, owner: &str, previous: &str) -> Payload {
    Payload::ConversationAssigned(events::ConversationAssigned {
        conversation_id: conversation.into(),
        owner_user_id: owner.into(),
        previous_owner_user_id: previous.into(),
        team_id: "north".into(),
        reason: "transfer".into(),
        actor: "sue".into(),
    })
}

fn breached(conversation: &str, owner: &str, at: i64) -> Payload {
    Payload::SlaBreached(events::SlaBreached {
        conversation_id: conversation.into(),
        owner_user_id: owner.into(),
        team_id: "north".into(),
        // Assignment names a policy by its channel account.
        policy_id: "oa-1".into(),
        kind: "first_response".into(),
        breached_at: Some(timestamp(at)),
        ..Default::default()
    })
}

fn account(id: &str, status: AccountStatus, at: i64) -> Payload {
    Payload::AccountStatusChanged(events::AccountStatusChanged {
        channel_account_id: id.into(),
        status: status as i32,
        at: Some(timestamp(at)),
        ..Default::default()
    })
}

fn contact(id: &str, created: bool, status: &str, previous: &str, lead_source: &str) -> Payload {
    Payload::ContactUpdated(events::ContactUpdated {
        contact_id: id.into(),
        created,
        care_status: status.into(),
        previous_care_status: previous.into(),
        lead_source: lead_source.into(),
        changed_fields: if status.is_empty() {
            vec![]
        } else {
            vec!["care_status".into()]
        },
        ..Default::default()
    })
}

fn seconds(value: &Option<prost_types::Duration>) -> f64 {
    let value = value.as_ref().expect("a duration");
    value.seconds as f64 + value.nanos as f64 / 1e9
}

/// Within the 2% the histogram promises.
fn assert_near(value: &Option<prost_types::Duration>, expected_minutes: f64, what: &str) {
    let got = seconds(value);
    let expected = expected_minutes * 60.0;
    assert!(
        (got - expected).abs() <= expected * 0.02,
        "{what}: {got}s, expected about {expected}s"
    );
}

async fn each_definition_on_a_hand_built_day(kind: BackendKind) {
    let mut suite = Suite::start(kind).await;
    suite.publish_day().await;
    suite.settle().await;

    let ann = suite.scorecard("ann", false).await;
    // A burst starts the clock at its first message, the automatic reply does not stop it.
    assert_near(&ann.first_response_p50, 5.0, "ann's first response");
    assert_eq!(ann.first_responses, 1);
    // Responses: 5 min and 2 min (nearest rank: p50 is the smaller, p90 the larger).
    assert_eq!(ann.responses, 2);
    assert_near(&ann.response_p50, 2.0, "ann's response p50");
    assert_near(&ann.response_p90, 5.0, "ann's response p90");
    // Customer messages while ann owned: 4 on conv-1, 1 on conv-2, 1 on conv-3.
    assert_eq!(ann.messages_in, 6);
    // Her two replies and the automatic one on her conversation.
    assert_eq!(ann.messages_out, 3);
    assert_eq!(ann.conversations_handled, 1);
    assert_eq!(ann.unanswered, 1, "conv-3 waits at the cut-off");
    assert_eq!(ann.long_silences, 1);
    assert_eq!(ann.transferred_waiting, 1, "conv-2 went to bob unanswered");
    assert_eq!((ann.sla_met, ann.sla_breached), (2, 0));
    assert!((ann.sla_met_ratio - 1.0).abs() < 1e-9);
    assert_eq!(ann.conversions, 1, "contact k-1 won on conv-1");
    assert_eq!(
        ann.flagged_messages, 1,
        "a personal phone number in a reply"
    );

    let bob = suite.scorecard("bob", false).await;
    // The transfer split the clock: bob's share of conv-2 started at 10:04.
    assert_near(&bob.first_response_p50, 3.0, "bob's first response p50");
    assert_near(
        &bob.first_response_p90,
        14.0 * 60.0 + 50.0,
        "bob's first response p90",
    );
    assert_eq!(bob.conversations_handled, 2);
    assert_eq!(bob.unanswered, 0);
    assert_eq!((bob.sla_met, bob.sla_breached), (1, 1));
    assert!((bob.sla_met_ratio - 0.5).abs() < 1e-9);
    // Business hours (Mon–Sat 08:00–17:30): conv-4 waited 10 + 10 minutes of them.
    let bob_business = suite.scorecard("bob", true).await;
    assert_near(
        &bob_business.first_response_p50,
        3.0,
        "bob's business-hours p50",
    );
    assert_near(
        &bob_business.first_response_p90,
        20.0,
        "bob's business-hours p90",
    );
    // Every wait of bob's was a first one, so the business-hours response times agree;
    // counts do not change with the clock.
    assert_near(
        &bob_business.response_p50,
        3.0,
        "bob's business-hours response p50",
    );
    assert_near(
        &bob_business.response_p90,
        20.0,
        "bob's business-hours response p90",
    );
    assert_eq!(bob_business.responses, bob.responses);
    assert_near(&bob.response_p90, 14.0 * 60.0 + 50.0, "bob's response p90");

    // Drill-down ids are the conversations behind each figure.
    assert_eq!(
        suite.drill("unanswered", &[("user_id", "ann")]).await,
        vec!["conv-3"]
    );
    let handled = suite.drill("handled", &[("user_id", "bob")]).await;
    assert_eq!(handled, vec!["conv-2", "conv-4"]);
    assert_eq!(handled.len() as u64, bob.conversations_handled);
    assert_eq!(
        suite.drill("sla_breached", &[("user_id", "bob")]).await,
        vec!["conv-4"]
    );
    assert_eq!(
        suite.drill("first_response", &[("team_id", "north")]).await,
        vec!["conv-1", "conv-2", "conv-4"]
    );
    assert_eq!(suite.drill("flagged", &[]).await, vec!["conv-1"]);
    assert_eq!(
        suite.drill("conversions", &[("user_id", "ann")]).await,
        vec!["conv-1"]
    );
    // Conversation counts list exactly their conversations; event counts the conversations
    // the events happened in (ann's two responses and SLA met were both on conv-1).
    let long = suite.drill("long_silences", &[("user_id", "ann")]).await;
    assert_eq!(long, vec!["conv-3"]);
    assert_eq!(long.len() as u64, ann.long_silences);
    assert_eq!(
        suite.drill("response", &[("user_id", "ann")]).await,
        vec!["conv-1"]
    );
    let responses = suite.drill("response", &[("user_id", "bob")]).await;
    assert_eq!(responses, vec!["conv-2", "conv-4"]);
    assert_eq!(responses.len() as u64, bob.responses);
    assert_eq!(
        suite.drill("sla_met", &[("user_id", "ann")]).await,
        vec!["conv-1"]
    );
    let met = suite.drill("sla_met", &[("user_id", "bob")]).await;
    assert_eq!(met, vec!["conv-2"]);
    assert_eq!(met.len() as u64, bob.sla_met);
    let assigned = suite.drill("assigned", &[("user_id", "bob")]).await;
    assert_eq!(assigned, vec!["conv-2"]);
    assert_eq!(assigned.len() as u64, bob.conversations_assigned);
    assert_eq!(
        suite
            .drill("transferred_waiting", &[("user_id", "ann")])
            .await,
        vec!["conv-2"]
    );
    // Opened before anyone owned it: the opening is nobody's, and closed has none yet.
    assert_eq!(suite.drill("opened", &[]).await, vec!["conv-1"]);
    assert!(suite.drill("closed", &[]).await.is_empty());

    let mut admin = suite.client(TENANT, "u-admin", "admin").await;
    let dashboard = admin
        .team_dashboard(TeamDashboardRequest {
            scope: Some(two_days()),
            team_id: "north".into(),
        })
        .await
        .expect("dashboard")
        .into_inner();
    let agents: Vec<&str> = dashboard
        .agents
        .iter()
        .map(|card| card.user_id.as_str())
        .collect();
    assert_eq!(agents, vec!["ann", "bob"]);
    let total = dashboard.team_total.expect("total");
    assert_eq!(total.messages_in, 7);
    assert_eq!(total.conversations_handled, 3);
    assert_eq!(total.unanswered, 1);

    let activity = admin
        .account_activity(AccountActivityRequest {
            scope: Some(two_days()),
            channel_account_id: "oa-1".into(),
        })
        .await
        .expect("account activity")
        .into_inner();
    assert_eq!(activity.messages_in, 7);
    assert_eq!(activity.messages_out, 5);
    assert_eq!(activity.conversations_opened, 1);
    assert_eq!(
        activity.time_disconnected.expect("duration").seconds,
        30 * 60
    );
    assert_eq!(
        suite
            .drill("opened", &[("channel_account_id", "oa-1")])
            .await
            .len() as u64,
        activity.conversations_opened
    );

    // New contacts by lead source: k-1 (facebook_ads) and k-3 (walk_in) were created.
    let hourly = export(
        &suite,
        ExportReportRequest {
            scope: Some(two_days()),
            ..Default::default()
        },
    )
    .await;
    let column = |name: &str| hourly[0].iter().position(|h| h == name).expect(name);
    let mut created: Vec<(String, String)> = hourly[1..]
        .iter()
        .filter(|row| row[column("new_contacts")] != "0")
        .map(|row| {
            (
                row[column("lead_source")].clone(),
                row[column("new_contacts")].clone(),
            )
        })
        .collect();
    created.sort();
    assert_eq!(
        created,
        vec![
            ("facebook_ads".to_string(), "1".to_string()),
            ("walk_in".to_string(), "1".to_string())
        ]
    );

    let sla = admin
        .sla_compliance(SlaComplianceRequest {
            scope: Some(two_days()),
            team_id: "north".into(),
        })
        .await
        .expect("sla")
        .into_inner()
        .rows;
    let sla: Vec<(String, String, u64, u64)> = sla
        .into_iter()
        .map(|row| (row.user_id, row.policy_id, row.met, row.breached))
        .collect();
    assert_eq!(
        sla,
        vec![
            ("ann".into(), "oa-1".into(), 2, 0),
            ("bob".into(), "oa-1".into(), 1, 1)
        ]
    );

    let funnel = admin
        .lead_source_funnel(LeadSourceFunnelRequest {
            scope: Some(two_days()),
        })
        .await
        .expect("funnel")
        .into_inner()
        .rows;
    let funnel: Vec<(String, String, u64)> = funnel
        .into_iter()
        .map(|row| (row.lead_source, row.care_stage, row.contacts))
        .collect();
    assert_eq!(
        funnel,
        vec![
            ("facebook_ads".into(), "won".into(), 1),
            ("walk_in".into(), String::new(), 1)
        ]
    );
    assert_eq!(
        suite
            .drill("unanswered", &[("lead_source", "walk_in")])
            .await,
        vec!["conv-3"]
    );

    // A range that ends before conv-3's customer wrote sees nothing unanswered for ann.
    let morning = admin
        .agent_scorecard(AgentScorecardRequest {
            scope: Some(scope(local(5, 0, 0), local(5, 10, 30), "")),
            user_id: "ann".into(),
        })
        .await
        .expect("morning")
        .into_inner()
        .scorecard
        .expect("scorecard");
    assert_eq!(morning.unanswered, 0);
    assert_eq!(morning.messages_in, 5);
}

async fn export(suite: &Suite, request: ExportReportRequest) -> Vec<Vec<String>> {
    let mut stream = suite
        .client(TENANT, "u-admin", "admin")
        .await
        .export_report(request)
        .await
        .expect("export")
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await.expect("chunk") {
        bytes.extend(chunk.csv);
    }
    String::from_utf8(bytes)
        .expect("utf-8")
        .lines()
        .map(|line| line.split(',').map(str::to_string).collect())
        .collect()
}

async fn exports_csv_per_agent_and_per_conversation(kind: BackendKind) {
    let mut suite = Suite::start(kind).await;
    suite.publish_day().await;
    suite.settle().await;

    let agents = export(
        &suite,
        ExportReportRequest {
            scope: Some(two_days()),
            report: "agent_scorecard".into(),
            dimensions: [("team_id".to_string(), "north".to_string())].into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(agents[0][0], "user_id");
    let column = |name: &str| {
        agents[0]
            .iter()
            .position(|header| header == name)
            .expect(name)
    };
    let ann = agents
        .iter()
        .find(|row| row[0] == "ann")
        .expect("ann's row");
    assert_eq!(ann[column("conversations_handled")], "1");
    assert_eq!(ann[column("unanswered")], "1");
    let frt: f64 = ann[column("first_response_p50_seconds")]
        .parse()
        .expect("seconds");
    assert!((frt - 300.0).abs() <= 6.0, "{frt}");

    let conversations = export(
        &suite,
        ExportReportRequest {
            scope: Some(two_days()),
            per_conversation: true,
            ..Default::default()
        },
    )
    .await;
    let header = &conversations[0];
    let column = |name: &str| header.iter().position(|h| h == name).expect(name);
    let ids: Vec<&str> = conversations[1..]
        .iter()
        .map(|row| row[0].as_str())
        .collect();
    assert_eq!(ids, vec!["conv-1", "conv-2", "conv-3", "conv-4"]);
    // Per conversation the customer's whole wait counts, across the transfer.
    assert_eq!(
        conversations[2][column("first_response_seconds")],
        "420.000"
    );
    assert_eq!(
        conversations[1][column("opened_at")],
        "2026-01-05T09:00:00+07:00"
    );
    assert!(!conversations[3][column("waiting_since")].is_empty());

    let hourly = export(
        &suite,
        ExportReportRequest {
            scope: Some(scope(local(5, 9, 0), local(5, 10, 0), "UTC")),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(hourly[0][0], "hour");
    assert_eq!(
        hourly[1][0], "2026-01-05T02:00:00+00:00",
        "hours in the report's zone"
    );

    let transitions = export(
        &suite,
        ExportReportRequest {
            scope: Some(two_days()),
            report: "care_transitions".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        transitions[1..],
        [vec![
            "2026-01-05T15:00:00+07:00".to_string(),
            "facebook_ads".into(),
            "quoted".into(),
            "won".into(),
            "1".into()
        ]]
    );
    let refused = suite
        .client(TENANT, "ann", "agent")
        .await
        .export_report(ExportReportRequest {
            scope: Some(two_days()),
            report: "care_transitions".into(),
            ..Default::default()
        })
        .await
        .expect_err("tenant-wide report");
    assert_eq!(refused.code(), Code::PermissionDenied);

    let bad = suite
        .client(TENANT, "u-admin", "admin")
        .await
        .export_report(ExportReportRequest {
            scope: Some(two_days()),
            report: "everything".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown report");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("report"), "{}", bad.message());
}

async fn redelivered_events_count_once(kind: BackendKind) {
    let mut suite = Suite::start(kind).await;
    suite.publish_day().await;
    // The same events again under other bus ids, so the bus cannot drop them: only the
    // consumer's idempotency keeps the figures.
    for (id, at, conversation) in [
        ("c1-m1", local(5, 9, 0), "conv-1"),
        ("c3-m1", local(5, 11, 0), "conv-3"),
    ] {
        let payload = stored(
            id,
            conversation,
            "ann",
            "north",
            Direction::Inbound,
            SenderKind::Customer,
            "",
            at,
            "",
        );
        suite
            .publish_with(TENANT, id, &format!("{id}-again"), at, payload)
            .await;
    }
    suite
        .publish_with(
            TENANT,
            "c1-r1",
            "c1-r1-again",
            local(5, 9, 5),
            stored(
                "c1-r1",
                "conv-1",
                "ann",
                "north",
                Direction::Outbound,
                SenderKind::Staff,
                "ann",
                local(5, 9, 5),
                "",
            ),
        )
        .await;
    suite.settle().await;
    let ann = suite.scorecard("ann", false).await;
    assert_eq!(ann.messages_in, 6);
    assert_eq!(ann.messages_out, 3);
    assert_eq!(ann.responses, 2);
    assert_eq!(ann.first_responses, 1);
    assert_eq!(ann.unanswered, 1);
}

async fn visibility_and_bad_input(kind: BackendKind) {
    let mut suite = Suite::start(kind).await;
    suite.publish_day().await;
    suite.settle().await;
    let request = |user: &str| AgentScorecardRequest {
        scope: Some(two_days()),
        user_id: user.into(),
    };

    // Agents see their own figures only.
    let mut ann = suite.client(TENANT, "ann", "agent").await;
    let own = ann
        .agent_scorecard(request(""))
        .await
        .expect("own")
        .into_inner()
        .scorecard
        .expect("card");
    assert_eq!((own.user_id.as_str(), own.messages_in), ("ann", 6));
    let refused = ann
        .agent_scorecard(request("bob"))
        .await
        .expect_err("not hers");
    assert_eq!(refused.code(), Code::NotFound);
    let refused = ann
        .team_dashboard(TeamDashboardRequest {
            scope: Some(two_days()),
            team_id: "north".into(),
        })
        .await
        .expect_err("agents have no team dashboard");
    assert_eq!(refused.code(), Code::NotFound);
    let refused = ann
        .drill_down(DrillDownRequest {
            scope: Some(two_days()),
            metric: "handled".into(),
            dimensions: [("user_id".to_string(), "bob".to_string())].into(),
            ..Default::default()
        })
        .await
        .expect_err("not her figures");
    assert_eq!(refused.code(), Code::NotFound);
    // Without a user filter an agent's drill-down lists only her own conversations.
    let mine = ann
        .drill_down(DrillDownRequest {
            scope: Some(two_days()),
            metric: "messages_in".into(),
            ..Default::default()
        })
        .await
        .expect("own drill-down")
        .into_inner()
        .conversation_ids;
    assert_eq!(mine, vec!["conv-1", "conv-2", "conv-3"]);

    // Supervisors see their teams.
    let mut north = suite.client(TENANT, "sue", "supervisor.north").await;
    let bob = north
        .agent_scorecard(request("bob"))
        .await
        .expect("in her team")
        .into_inner()
        .scorecard
        .expect("card");
    assert_eq!(bob.conversations_handled, 2);
    let mut south = suite.client(TENANT, "sam", "supervisor.south").await;
    assert_eq!(
        south
            .agent_scorecard(request("bob"))
            .await
            .expect_err("other team")
            .code(),
        Code::NotFound
    );
    let refused = south
        .team_dashboard(TeamDashboardRequest {
            scope: Some(two_days()),
            team_id: "north".into(),
        })
        .await
        .expect_err("not his team");
    assert_eq!(refused.code(), Code::NotFound);

    // Another tenant's admin sees nothing of acme.
    let mut other = suite.client("globex", "u-admin", "admin").await;
    assert_eq!(
        other
            .agent_scorecard(request("ann"))
            .await
            .expect_err("other tenant")
            .code(),
        Code::NotFound
    );
    let refused = other
        .account_activity(AccountActivityRequest {
            scope: Some(two_days()),
            channel_account_id: "oa-1".into(),
        })
        .await
        .expect_err("other tenant's account");
    assert_eq!(refused.code(), Code::NotFound);

    // Bad input names the field.
    let mut admin = suite.client(TENANT, "u-admin", "admin").await;
    let invalid = |status: tonic::Status, field: &str| {
        assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
        assert!(
            status.message().contains(field),
            "{} should name {field}",
            status.message()
        );
    };
    let unknown = admin
        .agent_scorecard(request("zed"))
        .await
        .expect_err("unknown agent");
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(
        unknown.message().contains("user_id") && unknown.message().contains("zed"),
        "{}",
        unknown.message()
    );
    let inverted = AgentScorecardRequest {
        scope: Some(scope(local(6, 0, 0), local(5, 0, 0), "")),
        user_id: "ann".into(),
    };
    invalid(
        admin.agent_scorecard(inverted).await.expect_err("inverted"),
        "scope.range",
    );
    let long = AgentScorecardRequest {
        scope: Some(scope(
            local(5, 0, 0),
            local(5, 0, 0) + 401 * 24 * 60 * MINUTE,
            "",
        )),
        user_id: "ann".into(),
    };
    invalid(
        admin.agent_scorecard(long).await.expect_err("too long"),
        "scope.range",
    );
    let zone = AgentScorecardRequest {
        scope: Some(scope(local(5, 0, 0), local(6, 0, 0), "Asia/Saigon_Moon")),
        user_id: "ann".into(),
    };
    invalid(
        admin.agent_scorecard(zone).await.expect_err("bad zone"),
        "scope.time_zone",
    );
    invalid(
        admin
            .agent_scorecard(AgentScorecardRequest {
                scope: None,
                user_id: "ann".into(),
            })
            .await
            .expect_err("no scope"),
        "scope",
    );
    invalid(
        admin
            .drill_down(DrillDownRequest {
                scope: Some(two_days()),
                metric: "happiness".into(),
                ..Default::default()
            })
            .await
            .expect_err("unknown metric"),
        "metric",
    );
    invalid(
        admin
            .drill_down(DrillDownRequest {
                scope: Some(two_days()),
                metric: "handled".into(),
                dimensions: [("colour".to_string(), "blue".to_string())].into(),
                ..Default::default()
            })
            .await
            .expect_err("unknown dimension"),
        "dimensions",
    );
    invalid(
        admin
            .team_dashboard(TeamDashboardRequest {
                scope: Some(two_days()),
                team_id: String::new(),
            })
            .await
            .expect_err("no team"),
        "team_id",
    );
}

/// A long silence is measured from the customer's first unanswered message, whoever owns
/// the conversation now: a transfer starts the new owner's share of the wait, not a new
/// silence. Thursday 8 January, cut-off at noon, long silences over 60 minutes.
async fn long_silences_count_from_the_customers_first_message(kind: BackendKind) {
    let mut suite = Suite::start(kind).await;
    // (event id, local time on the 8th, payload)
    let customer = |id: &'static str, conversation: &str, owner: &str, (hour, minute)| {
        let at = local(8, hour, minute);
        (id, at, customer_wrote(id, conversation, owner, at))
    };
    let transfer = |id: &'static str, conversation: &str, to: &str, from: &str, (hour, minute)| {
        (id, local(8, hour, minute), assigned(conversation, to, from))
    };
    let events = [
        // conv-5: the customer waits from 09:00; ann hands over to bob at 11:55.
        customer("c5-m1", "conv-5", "ann", (9, 0)),
        transfer("c5-transfer", "conv-5", "bob", "ann", (11, 55)),
        // conv-8: from 10:30, through carl (10:45) to dan (11:58).
        customer("c8-m1", "conv-8", "ann", (10, 30)),
        transfer("c8-transfer-1", "conv-8", "carl", "ann", (10, 45)),
        transfer("c8-transfer-2", "conv-8", "dan", "carl", (11, 58)),
        // conv-6: a short wait from 11:30, moved from carl to dan at 11:40.
        customer("c6-m1", "conv-6", "carl", (11, 30)),
        transfer("c6-transfer", "conv-6", "dan", "carl", (11, 40)),
        // conv-9: closed unanswered, so nobody's silence.
        customer("c9-m1", "conv-9", "bob", (9, 30)),
        (
            "c9-close",
            local(8, 10, 0),
            Payload::ConversationClosed(events::ConversationClosed {
                conversation_id: "conv-9".into(),
                closed_by: "bob".into(),
                outcome: "spam".into(),
            }),
        ),
    ];
    for (id, at, payload) in events {
        suite.publish(id, at, payload).await;
    }
    suite.settle().await;
    let morning = || scope(local(8, 0, 0), local(8, 12, 0), "");

    let bob = suite.scorecard_in(morning(), "bob").await;
    assert_eq!(
        (bob.unanswered, bob.long_silences),
        (1, 1),
        "conv-5: three hours"
    );
    assert_eq!(
        suite
            .drill_in(morning(), "long_silences", &[("user_id", "bob")])
            .await,
        vec!["conv-5"]
    );
    let dan = suite.scorecard_in(morning(), "dan").await;
    assert_eq!(
        (dan.unanswered, dan.long_silences),
        (2, 1),
        "conv-8 waited 90 minutes over two transfers, conv-6 only 30"
    );
    assert_eq!(
        suite
            .drill_in(morning(), "unanswered", &[("user_id", "dan")])
            .await,
        vec!["conv-6", "conv-8"]
    );
    assert_eq!(
        suite
            .drill_in(morning(), "long_silences", &[("user_id", "dan")])
            .await,
        vec!["conv-8"]
    );
    // Those who handed over no longer have the customer waiting on them.
    let ann = suite.scorecard_in(morning(), "ann").await;
    assert_eq!(
        (ann.unanswered, ann.long_silences, ann.transferred_waiting),
        (0, 0, 2)
    );
    let carl = suite.scorecard_in(morning(), "carl").await;
    assert_eq!(
        (
            carl.unanswered,
            carl.long_silences,
            carl.transferred_waiting
        ),
        (0, 0, 2)
    );
    // At 11:50 conv-8 is carl's and has waited 80 minutes; conv-6 is dan's since 11:40.
    let earlier = || scope(local(8, 0, 0), local(8, 11, 50), "");
    let carl = suite.scorecard_in(earlier(), "carl").await;
    assert_eq!((carl.unanswered, carl.long_silences), (1, 1));
    let dan = suite.scorecard_in(earlier(), "dan").await;
    assert_eq!((dan.unanswered, dan.long_silences), (1, 0));

    let closed = suite
        .drill_in(morning(), "closed", &[("user_id", "bob")])
        .await;
    assert_eq!(closed, vec!["conv-9"]);
    let hourly = export(
        &suite,
        ExportReportRequest {
            scope: Some(morning()),
            dimensions: [("user_id".to_string(), "bob".to_string())].into(),
            ..Default::default()
        },
    )
    .await;
    let column = hourly[0]
        .iter()
        .position(|h| h == "conversations_closed")
        .expect("closed column");
    let total: u64 = hourly[1..]
        .iter()
        .map(|row| row[column].parse::<u64>().expect("count"))
        .sum();
    assert_eq!(total, closed.len() as u64);
}

/// Account activity and the funnel follow who may see what: an agent or supervisor sees an
/// account only through figures of their own (or their teams'), and the funnel only through
/// conversations they may see; auditors see the whole tenant like admins.
async fn account_activity_and_funnel_follow_visibility(kind: BackendKind) {
    let mut suite = Suite::start(kind).await;
    suite.publish_day().await;
    // An account nobody wrote on, only seen going down.
    suite
        .publish(
            "oa-9-down",
            local(5, 13, 0),
            account("oa-9", AccountStatus::Disconnected, local(5, 13, 0)),
        )
        .await;
    suite.settle().await;
    let activity = |account: &str| AccountActivityRequest {
        scope: Some(two_days()),
        channel_account_id: account.into(),
    };

    let mut ann = suite.client(TENANT, "ann", "agent").await;
    let hers = ann
        .account_activity(activity("oa-1"))
        .await
        .expect("an account she works on")
        .into_inner();
    // Her own traffic on it (see the hand-built day); the outage is the account's.
    assert_eq!((hers.messages_in, hers.messages_out), (6, 3));
    assert_eq!(hers.time_disconnected.expect("duration").seconds, 30 * 60);
    for (user, role, account) in [
        ("ann", "agent", "oa-9"),
        ("zed", "agent", "oa-1"),
        ("sam", "supervisor.south", "oa-1"),
        ("sue", "supervisor.north", "oa-9"),
    ] {
        let refused = suite
            .client(TENANT, user, role)
            .await
            .account_activity(activity(account))
            .await
            .expect_err("an account they have no figures on");
        assert_eq!(refused.code(), Code::NotFound, "{user} on {account}");
    }
    let team = suite
        .client(TENANT, "sue", "supervisor.north")
        .await
        .account_activity(activity("oa-1"))
        .await
        .expect("her team's account")
        .into_inner();
    assert_eq!(team.messages_in, 7);
    let whole = suite
        .client(TENANT, "u-admin", "admin")
        .await
        .account_activity(activity("oa-9"))
        .await
        .expect("admins see every account")
        .into_inner();
    assert_eq!(whole.messages_in, 0);
    assert!(whole.time_disconnected.expect("duration").seconds > 24 * 3600);

    let funnel = |user: &'static str, role: &'static str| {
        let suite = &suite;
        async move {
            let rows = suite
                .client(TENANT, user, role)
                .await
                .lead_source_funnel(LeadSourceFunnelRequest {
                    scope: Some(two_days()),
                })
                .await
                .expect("funnel")
                .into_inner()
                .rows;
            rows.into_iter()
                .map(|row| (row.lead_source, row.care_stage, row.contacts))
                .collect::<Vec<(String, String, u64)>>()
        }
    };
    let everything: Vec<(String, String, u64)> = vec![
        ("facebook_ads".into(), "won".into(), 1),
        ("walk_in".into(), String::new(), 1),
    ];
    assert_eq!(funnel("u-auditor", "auditor").await, everything);
    // Both contacts are on ann's conversations, in team north.
    assert_eq!(funnel("ann", "agent").await, everything);
    assert_eq!(funnel("sue", "supervisor.north").await, everything);
    assert!(funnel("bob", "agent").await.is_empty());
    assert!(funnel("sam", "supervisor.south").await.is_empty());
}

/// Each tenant's business hours and reports are in its own time zone: the same wait, at the
/// same instants, is a working-day wait in Ho Chi Minh City and mostly a night in Paris.
async fn each_tenant_keeps_its_own_time_zone(kind: BackendKind) {
    const PARIS: &str = "globex";
    let mut suite = Suite::start(kind).await;
    let mut paris_admin = suite.client(PARIS, "u-admin", "admin").await;
    let set = |zone: &str| SetReportSettingsRequest {
        time_zone: zone.into(),
    };
    let settings = paris_admin
        .set_report_settings(set("Europe/Paris"))
        .await
        .expect("set")
        .into_inner();
    assert_eq!(settings.time_zone, "Europe/Paris");
    // Refused: a zone that is not one, and anyone but an admin.
    let bad = paris_admin
        .set_report_settings(set("Europe/Atlantis"))
        .await
        .expect_err("not a zone");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("time_zone"), "{}", bad.message());
    let refused = suite
        .client(PARIS, "sue", "supervisor.north")
        .await
        .set_report_settings(set("UTC"))
        .await
        .expect_err("admins only");
    assert_eq!(refused.code(), Code::PermissionDenied);
    async fn zone_of(suite: &Suite, tenant: &str) -> String {
        suite
            .client(tenant, "ann", "agent")
            .await
            .get_report_settings(GetReportSettingsRequest {})
            .await
            .expect("get")
            .into_inner()
            .time_zone
    }
    assert_eq!(zone_of(&suite, PARIS).await, "Europe/Paris");
    assert_eq!(
        zone_of(&suite, TENANT).await,
        "Asia/Ho_Chi_Minh",
        "the service's"
    );

    // Monday 5 January: the customer writes at 01:00 UTC and ann answers at 08:30 UTC.
    let utc = |hour: u32, minute: u32| {
        Utc.with_ymd_and_hms(2026, 1, 5, hour, minute, 0)
            .single()
            .expect("time")
            .timestamp_micros()
    };
    for tenant in [TENANT, PARIS] {
        for (id, direction, sender, sender_user, at) in [
            (
                "m1",
                Direction::Inbound,
                SenderKind::Customer,
                "",
                utc(1, 0),
            ),
            (
                "r1",
                Direction::Outbound,
                SenderKind::Staff,
                "ann",
                utc(8, 30),
            ),
        ] {
            let id = format!("{tenant}-{id}");
            let payload = stored(
                &id,
                "conv-z",
                "ann",
                "north",
                direction,
                sender,
                sender_user,
                at,
                "alo",
            );
            suite.publish_with(tenant, &id, &id, at, payload).await;
        }
    }
    suite.settle().await;
    let day = || {
        let mut scope = scope(utc(0, 0), utc(0, 0) + 24 * 60 * MINUTE, "");
        scope.business_hours_only = true;
        scope
    };
    let business = |tenant: &'static str| {
        let suite = &suite;
        async move {
            suite
                .client(tenant, "u-admin", "admin")
                .await
                .agent_scorecard(AgentScorecardRequest {
                    scope: Some(day()),
                    user_id: "ann".into(),
                })
                .await
                .expect("scorecard")
                .into_inner()
                .scorecard
                .expect("scorecard")
        }
    };
    // 08:00–15:30 in Ho Chi Minh City, all of it open; 02:00–09:30 in Paris, open from 08:00.
    assert_near(&business(TENANT).await.first_response_p50, 450.0, "acme");
    assert_near(&business(PARIS).await.first_response_p50, 90.0, "globex");

    // Exports label hours in the tenant's zone unless the scope names one.
    let first_hour = |tenant: &'static str| {
        let suite = &suite;
        async move {
            let mut stream = suite
                .client(tenant, "u-admin", "admin")
                .await
                .export_report(ExportReportRequest {
                    scope: Some(scope(utc(0, 0), utc(0, 0) + 24 * 60 * MINUTE, "")),
                    ..Default::default()
                })
                .await
                .expect("export")
                .into_inner();
            let mut csv = Vec::new();
            while let Some(chunk) = stream.message().await.expect("chunk") {
                csv.extend(chunk.csv);
            }
            let csv = String::from_utf8(csv).expect("utf-8");
            csv.lines()
                .nth(1)
                .expect("a row")
                .split(',')
                .next()
                .expect("hour")
                .to_string()
        }
    };
    assert_eq!(first_hour(TENANT).await, "2026-01-05T08:00:00+07:00");
    assert_eq!(first_hour(PARIS).await, "2026-01-05T02:00:00+01:00");

    // An empty zone goes back to the service's.
    paris_admin
        .set_report_settings(set(""))
        .await
        .expect("reset");
    assert_eq!(zone_of(&suite, PARIS).await, "Asia/Ho_Chi_Minh");
}

async fn rebuild_from_the_bus_gives_identical_aggregates(kind: BackendKind) {
    let mut suite = Suite::start(kind).await;
    suite.publish_day().await;
    suite.settle().await;

    let live = giao_reporting::store::Store::new(
        giao_storage::Database::connect(&suite.config.database)
            .await
            .expect("live database"),
    );
    let fresh_config = suite.backend.database().await;
    let fresh_database = giao_storage::Database::connect(&fresh_config)
        .await
        .expect("fresh database");
    fresh_database
        .migrate(&giao_reporting::MIGRATIONS)
        .await
        .expect("migrated");
    let fresh = giao_reporting::store::Store::new(fresh_database);
    let settings = suite.config.settings().expect("settings");
    let applied = giao_reporting::consumer::rebuild(
        suite.bus.clone(),
        fresh.clone(),
        Arc::new(settings.apply),
        Duration::from_secs(2),
    )
    .await
    .expect("rebuilt");
    assert!(applied >= 20, "{applied} events replayed");
    let (before, after) = (
        live.snapshot().await.expect("live"),
        fresh.snapshot().await.expect("fresh"),
    );
    assert!(before.len() > 50, "{} aggregate rows", before.len());
    assert!(
        before
            .iter()
            .any(|line| line.starts_with("conversations|acme|conv-2|")),
        "the clocks are part of the snapshot"
    );
    assert_eq!(before, after);
    // So the per-conversation export reads the same from either.
    let rows = |store: giao_reporting::store::Store| async move {
        let filter = giao_reporting::store::RowFilter::new(giao_reporting::domain::Visibility::All);
        let rows = store
            .conversation_rows(TENANT, local(5, 0, 0), local(7, 0, 0), &filter)
            .await
            .expect("conversations");
        format!("{rows:?}")
    };
    let live_rows = rows(live).await;
    assert!(live_rows.contains("conv-4"), "{live_rows}");
    assert_eq!(live_rows, rows(fresh).await);
}

/// The real path: captured messages and a staff reply through the message store, their
/// `MessageStored` events on the bus, the figures in reporting.
async fn message_store_traffic_reaches_the_scorecard(kind: BackendKind) {
    use giao_proto::{
        common::{ChannelUser, MessageContent},
        messagestore::{
            AppendInboundRequest, InboundMessage, RecordOutboundRequest,
            SetConversationOwnerRequest, message_store_service_client::MessageStoreServiceClient,
        },
    };
    let mut backend = Backend::new(kind).await;
    let store =
        giao_tests::start_message_store(giao_tests::message_store_config(&mut backend).await).await;
    let reporting = giao_tests::start_reporting(reporting_config(
        backend.database().await,
        backend.bus.clone(),
    ))
    .await;
    let mut admin = giao_tests::message_store_client(&store, TENANT, "admin").await;
    let inbound = |id: &str| AppendInboundRequest {
        message: Some(InboundMessage {
            channel_account_id: "oa-1".into(),
            external_message_id: id.into(),
            external_thread_id: "cust-1".into(),
            customer: Some(ChannelUser {
                external_user_id: "cust-1".into(),
                display_name: "Chị Lan".into(),
                ..Default::default()
            }),
            content: Some(MessageContent {
                r#type: ContentType::Text as i32,
                text: "Cho chị hỏi giá".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let conversation_id = admin
        .append_inbound(inbound("m-1"))
        .await
        .expect("captured")
        .into_inner()
        .message
        .expect("message")
        .conversation_id;
    admin
        .set_conversation_owner(SetConversationOwnerRequest {
            conversation_ids: vec![conversation_id.clone()],
            owner_user_id: "ann".into(),
            team_id: "north".into(),
            reason: "test".into(),
            ..Default::default()
        })
        .await
        .expect("owner set");
    MessageStoreServiceClient::with_interceptor(
        store.channel().await,
        as_user(TENANT, "ann", "agent"),
    )
    .record_outbound(RecordOutboundRequest {
        conversation_id: conversation_id.clone(),
        content: Some(MessageContent {
            r#type: ContentType::Text as i32,
            text: "Dạ em gửi chị bảng giá ạ".into(),
            ..Default::default()
        }),
        idempotency_key: "reply-1".into(),
        ..Default::default()
    })
    .await
    .expect("ann replies");
    admin
        .append_inbound(inbound("m-2"))
        .await
        .expect("captured again");

    let now = Utc::now().timestamp_micros();
    let request = AgentScorecardRequest {
        scope: Some(scope(now - 60 * MINUTE, now + 60 * MINUTE, "")),
        user_id: String::new(),
    };
    let client = ReportingServiceClient::with_interceptor(
        reporting.channel().await,
        as_user(TENANT, "ann", "agent"),
    );
    giao_testkit::wait_until(Duration::from_secs(30), "ann's figures", || {
        let mut client = client.clone();
        let request = request.clone();
        async move {
            client
                .agent_scorecard(request)
                .await
                .map(|reply| {
                    let card = reply.into_inner().scorecard.unwrap_or_default();
                    card.messages_in == 1 && card.responses == 1
                })
                .unwrap_or(false)
        }
    })
    .await;
    let card = client
        .clone()
        .agent_scorecard(request)
        .await
        .expect("scorecard")
        .into_inner()
        .scorecard
        .expect("card");
    assert_eq!(card.first_responses, 1);
    assert_eq!(card.conversations_handled, 1);
    assert_eq!(card.messages_out, 1);
    assert_eq!(card.unanswered, 1, "the customer wrote again");
    let waiting = client
        .clone()
        .drill_down(DrillDownRequest {
            scope: Some(scope(now - 60 * MINUTE, now + 60 * MINUTE, "")),
            metric: "unanswered".into(),
            ..Default::default()
        })
        .await
        .expect("drill-down")
        .into_inner()
        .conversation_ids;
    assert_eq!(waiting, vec![conversation_id]);
}

/// `MessagesStored` batches on the bus fold exactly like their entries applied one by one,
/// and entries that come again change nothing: one announced alone, and batches retried
/// under another bus id and split another way. The day's runs of MessageStored (up to
/// three at a time) travel as batches, in stream order with the other events.
async fn stored_batches_fold_like_single_events(kind: BackendKind) {
    use giao_bus::envelope::message_stored_event_id;
    let mut suite = Suite::start(kind).await;
    // The day's events under the ids message-store gives them.
    let events: Vec<(String, i64, Payload)> = day()
        .into_iter()
        .map(|(id, at, payload)| match &payload {
            Payload::MessageStored(stored) => {
                (message_stored_event_id(&stored.message_id), at, payload)
            }
            _ => (id.to_string(), at, payload),
        })
        .collect();
    let mut sent: Vec<events::MessagesStored> = Vec::new();
    let mut run = events::MessagesStored::default();
    for (index, (id, at, payload)) in events.iter().enumerate() {
        if let Payload::MessageStored(stored) = payload {
            run.messages.push(stored.clone());
        }
        let next_is_stored = matches!(
            events.get(index + 1),
            Some((_, _, Payload::MessageStored(_)))
        );
        if !run.messages.is_empty() && (run.messages.len() == 3 || !next_is_stored) {
            let batch = std::mem::take(&mut run);
            let id = format!("batch-{}", sent.len());
            suite
                .publish(&id, *at, Payload::MessagesStored(batch.clone()))
                .await;
            sent.push(batch);
        }
        if !matches!(payload, Payload::MessageStored(_)) {
            suite.publish(id, *at, payload.clone()).await;
        }
    }
    assert!(sent.len() >= 3, "{} batches", sent.len());
    // Everything again: the first two batches as one, then one entry on its own.
    let again = events::MessagesStored {
        messages: sent[..2]
            .iter()
            .flat_map(|batch| batch.messages.clone())
            .collect(),
    };
    let at = local(5, 23, 0);
    suite
        .publish("batch-0-1-retried", at, Payload::MessagesStored(again))
        .await;
    let entry = sent[2].messages[0].clone();
    suite
        .publish(
            &message_stored_event_id(&entry.message_id),
            at,
            Payload::MessageStored(entry),
        )
        .await;
    suite.settle().await;

    let settings = suite.config.settings().expect("settings");
    let database = giao_storage::Database::connect(&suite.backend.database().await)
        .await
        .expect("fresh database");
    database
        .migrate(&giao_reporting::MIGRATIONS)
        .await
        .expect("migrated");
    let one_by_one = giao_reporting::store::Store::new(database);
    for (id, at, payload) in events {
        one_by_one
            .apply(&envelope(TENANT, &id, at, payload), &settings.apply)
            .await
            .expect("applied");
    }
    let live = giao_reporting::store::Store::new(
        giao_storage::Database::connect(&suite.config.database)
            .await
            .expect("live database"),
    );
    let tenant_rows = |lines: Vec<String>| -> Vec<String> {
        lines
            .into_iter()
            .filter(|line| line.split('|').nth(1) == Some(TENANT))
            .collect()
    };
    let expected = tenant_rows(one_by_one.snapshot().await.expect("snapshot"));
    assert!(expected.len() > 50, "{} aggregate rows", expected.len());
    assert_eq!(
        tenant_rows(live.snapshot().await.expect("snapshot")),
        expected
    );
}

/// The batch fold (bulk loads, catch-up) gives exactly the rows of applying the same events
/// one by one, and a second pass changes nothing.
async fn batch_fold_matches_one_by_one(kind: BackendKind) {
    let mut backend = Backend::new(kind).await;
    let config = reporting_config(backend.database().await, backend.bus.clone());
    let settings = config.settings().expect("settings");
    let store = |database: giao_storage::DatabaseConfig| async move {
        let database = giao_storage::Database::connect(&database)
            .await
            .expect("database");
        database
            .migrate(&giao_reporting::MIGRATIONS)
            .await
            .expect("migrated");
        giao_reporting::store::Store::new(database)
    };
    let one_by_one = store(config.database.clone()).await;
    let batched = store(backend.database().await).await;
    let envelopes: Vec<Envelope> = day()
        .into_iter()
        .map(|(id, at, payload)| envelope(TENANT, id, at, payload))
        .collect();
    for envelope in &envelopes {
        assert!(
            one_by_one
                .apply(envelope, &settings.apply)
                .await
                .expect("applied")
        );
    }
    // Split in two batches so that the second continues clocks the first left open.
    let (first, second) = envelopes.split_at(9);
    let applied = batched
        .apply_batch(first, &settings.apply)
        .await
        .expect("first batch")
        + batched
            .apply_batch(second, &settings.apply)
            .await
            .expect("second batch");
    assert_eq!(applied as usize, envelopes.len());
    let expected = one_by_one.snapshot().await.expect("snapshot");
    assert!(expected.len() > 50);
    assert_eq!(batched.snapshot().await.expect("snapshot"), expected);
    assert_eq!(
        batched
            .apply_batch(&envelopes, &settings.apply)
            .await
            .expect("again"),
        0
    );
    assert_eq!(batched.snapshot().await.expect("snapshot"), expected);
    // Ids older than the retention are forgotten (the bus can no longer redeliver them).
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(one_by_one.forget_processed(30).await.expect("kept"), 0);
    let forgotten = one_by_one.forget_processed(0).await.expect("forgotten");
    assert_eq!(forgotten as usize, envelopes.len());
}

/// SlaCompliance has one row per agent and SLA policy; assignment keys policies by channel
/// account, and a breach on a conversation reporting has not seen yet counts under the
/// policy it names.
async fn sla_compliance_splits_by_policy(kind: BackendKind) {
    let mut suite = Suite::start(kind).await;
    let at = local(5, 9, 0);
    let on = |account: &str, payload: Payload| match payload {
        Payload::MessageStored(mut message) => {
            message.channel_account_id = account.into();
            Payload::MessageStored(message)
        }
        other => other,
    };
    // ann answers on oa-1 in time and on oa-2 late; oa-3 breaches on a conversation only
    // assignment knows about.
    for (conversation, account, breach) in [("p-1", "oa-1", false), ("p-2", "oa-2", true)] {
        let customer = stored(
            &format!("{conversation}-in"),
            conversation,
            "ann",
            "north",
            Direction::Inbound,
            SenderKind::Customer,
            "",
            at,
            "",
        );
        suite
            .publish(&format!("{conversation}-in"), at, on(account, customer))
            .await;
        if breach {
            let mut late = breached(conversation, "ann", at + 20 * MINUTE);
            if let Payload::SlaBreached(event) = &mut late {
                event.policy_id = account.into();
            }
            suite
                .publish(&format!("{conversation}-breach"), at + 20 * MINUTE, late)
                .await;
        }
        let reply = stored(
            &format!("{conversation}-out"),
            conversation,
            "ann",
            "north",
            Direction::Outbound,
            SenderKind::Staff,
            "ann",
            at + 30 * MINUTE,
            "",
        );
        suite
            .publish(
                &format!("{conversation}-out"),
                at + 30 * MINUTE,
                on(account, reply),
            )
            .await;
    }
    let mut unseen = breached("p-3", "ann", at + 40 * MINUTE);
    if let Payload::SlaBreached(event) = &mut unseen {
        event.policy_id = "oa-3".into();
    }
    suite.publish("p-3-breach", at + 40 * MINUTE, unseen).await;
    suite.settle().await;

    let rows = suite
        .client(TENANT, "sue", "supervisor.north")
        .await
        .sla_compliance(SlaComplianceRequest {
            scope: Some(two_days()),
            team_id: "north".into(),
        })
        .await
        .expect("sla")
        .into_inner()
        .rows;
    let rows: Vec<(String, String, u64, u64)> = rows
        .into_iter()
        .map(|row| (row.user_id, row.policy_id, row.met, row.breached))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("ann".into(), "oa-1".into(), 1, 0),
            ("ann".into(), "oa-2".into(), 0, 1),
            ("ann".into(), "oa-3".into(), 0, 1),
        ]
    );
    // The scorecard's SLA figures are the sum over policies.
    let ann = suite.scorecard("ann", false).await;
    assert_eq!((ann.sla_met, ann.sla_breached), (1, 2));
}

/// The config of a reporting replica on a fresh, migrated database of `backend`, and a store
/// on it.
async fn migrated_store(
    backend: &mut Backend,
) -> (giao_reporting::Config, giao_reporting::store::Store) {
    let config = reporting_config(backend.database().await, backend.bus.clone());
    let database = giao_storage::Database::connect(&config.database)
        .await
        .expect("database");
    database
        .migrate(&giao_reporting::MIGRATIONS)
        .await
        .expect("migrated");
    (config, giao_reporting::store::Store::new(database))
}

/// A second store on its own pool, as a second replica has.
async fn second_replica(config: &giao_reporting::Config) -> giao_reporting::store::Store {
    giao_reporting::store::Store::new(
        giao_storage::Database::connect(&config.database)
            .await
            .expect("second pool"),
    )
}

/// An event of `tenant`, as the bus hands it to a replica.
fn envelope(tenant: &str, id: &str, at: i64, payload: Payload) -> Envelope {
    Envelope {
        event_id: id.into(),
        tenant_id: tenant.into(),
        occurred_at: Some(timestamp(at)),
        producer: "test".into(),
        payload: Some(payload),
        ..Default::default()
    }
}

/// Runs one raw statement (to put rows in a state the service never writes).
async fn execute(database: &giao_storage::Database, statement: &str) {
    let statement = sqlx::AssertSqlSafe(statement.to_string());
    match database {
        giao_storage::Database::Postgres(pool) => {
            sqlx::query(statement).execute(pool).await.map(|_| ())
        }
        giao_storage::Database::Sqlite(pool) => {
            sqlx::query(statement).execute(pool).await.map(|_| ())
        }
    }
    .expect("statement runs");
}

/// Two replicas folding the first events of a brand-new conversation at the same moment:
/// neither event may be lost (the second waits for the first's row instead of starting
/// from an empty clock and overwriting it).
async fn concurrent_first_events_of_a_new_conversation_are_both_kept(kind: BackendKind) {
    let mut backend = Backend::new(kind).await;
    let (config, first) = migrated_store(&mut backend).await;
    let settings = config.settings().expect("settings");
    // Two stores on separate pools, as two replicas would have.
    let second = second_replica(&config).await;
    let event = |id: String, conversation: &str, at: i64| Envelope {
        event_id: id.clone(),
        tenant_id: TENANT.into(),
        occurred_at: Some(timestamp(at)),
        producer: "test".into(),
        payload: Some(stored(
            &id,
            conversation,
            "ann",
            "north",
            Direction::Inbound,
            SenderKind::Customer,
            "",
            at,
            "",
        )),
        ..Default::default()
    };
    let at = local(5, 9, 0);
    let conversations: Vec<String> = (0..20).map(|index| format!("race-{index:02}")).collect();
    for conversation in &conversations {
        let (a, b) = (
            event(format!("{conversation}-a"), conversation, at),
            event(format!("{conversation}-b"), conversation, at + MINUTE),
        );
        let (left, right) = tokio::join!(
            first.apply(&a, &settings.apply),
            second.apply(&b, &settings.apply)
        );
        assert!(left.expect("first replica") && right.expect("second replica"));
    }
    let rows = first
        .conversation_rows(
            TENANT,
            local(5, 0, 0),
            local(6, 0, 0),
            &giao_reporting::store::RowFilter::new(giao_reporting::domain::Visibility::All),
        )
        .await
        .expect("rows");
    let counted: Vec<(String, i64)> = rows
        .iter()
        .map(|row| (row.conversation_id.clone(), row.messages_in))
        .collect();
    let expected: Vec<(String, i64)> = conversations.iter().map(|id| (id.clone(), 2)).collect();
    assert_eq!(counted, expected);
    // One wait each, from whichever message was folded first.
    let waits = first
        .snapshot()
        .await
        .expect("snapshot")
        .into_iter()
        .filter(|line| line.starts_with("waits|"))
        .count();
    assert_eq!(waits, conversations.len());

    // The same for an account whose first two status changes race: one outage, not two.
    let status = |id: &str, status: AccountStatus, at: i64| {
        envelope(TENANT, id, at, account("oa-9", status, at))
    };
    let (down, login) = (
        status("oa-9-down", AccountStatus::Disconnected, at),
        status("oa-9-login", AccountStatus::NeedsLogin, at + MINUTE),
    );
    let (left, right) = tokio::join!(
        first.apply(&down, &settings.apply),
        second.apply(&login, &settings.apply)
    );
    assert!(left.expect("first replica") && right.expect("second replica"));
    assert!(
        first
            .apply(
                &status("oa-9-up", AccountStatus::Connected, at + 30 * MINUTE),
                &settings.apply
            )
            .await
            .expect("connected")
    );
    let disconnected = first
        .disconnected_micros(TENANT, "oa-9", local(5, 0, 0), local(6, 0, 0))
        .await
        .expect("outages");
    // From whichever change was folded first to the reconnection.
    assert!(
        disconnected == 30 * MINUTE || disconnected == 29 * MINUTE,
        "{disconnected}"
    );
}

/// Two replicas folding opposite transfers at the same moment (ann's customer to bob while
/// bob's goes to ann) touch the same aggregate rows; they must take them in the same order,
/// or PostgreSQL aborts one of them as a deadlock.
async fn opposite_transfers_folded_at_once_both_land(kind: BackendKind) {
    let mut backend = Backend::new(kind).await;
    let (config, first) = migrated_store(&mut backend).await;
    let settings = config.settings().expect("settings");
    let second = second_replica(&config).await;
    let event = |id: String, at: i64, payload: Payload| envelope(TENANT, &id, at, payload);
    let at = local(5, 9, 0);
    const PAIRS: usize = 25;
    for index in 0..PAIRS {
        for (conversation, owner) in [
            (format!("x-ann-{index:02}"), "ann"),
            (format!("x-bob-{index:02}"), "bob"),
        ] {
            let id = format!("{conversation}-in");
            let customer = customer_wrote(&id, &conversation, owner, at);
            assert!(
                first
                    .apply(&event(id, at, customer), &settings.apply)
                    .await
                    .expect("customer wrote")
            );
        }
    }
    // Each pair moves both customers while they wait, in the same hour and day rows.
    for index in 0..PAIRS {
        let (to_bob, to_ann) = (format!("x-ann-{index:02}"), format!("x-bob-{index:02}"));
        let moved = at + 10 * MINUTE;
        let (a, b) = (
            event(
                format!("{to_bob}-moved"),
                moved,
                assigned(&to_bob, "bob", "ann"),
            ),
            event(
                format!("{to_ann}-moved"),
                moved,
                assigned(&to_ann, "ann", "bob"),
            ),
        );
        let (left, right) = tokio::join!(
            first.apply(&a, &settings.apply),
            second.apply(&b, &settings.apply)
        );
        left.expect("first replica's transfer");
        right.expect("second replica's transfer");
    }
    let counts = first
        .snapshot()
        .await
        .expect("snapshot")
        .into_iter()
        .filter(|line| line.starts_with("waits|") && line.contains("|transferred|"))
        .count();
    assert_eq!(counts, 2 * PAIRS, "every transfer ended its owner's wait");
}

/// Migration 0005 gives an open share opened by a transfer its customer's whole wait (kept
/// on the conversation); a closed share, whose customer's wait is gone, keeps its own start.
async fn customer_since_of_existing_waits_is_backfilled(kind: BackendKind) {
    let mut backend = Backend::new(kind).await;
    let database = giao_storage::Database::connect(&backend.database().await)
        .await
        .expect("database");
    let at = local(5, 9, 0);
    let statements = [
        // c-1: the customer wrote at 9:00, transferred at 9:10 and still waits.
        format!(
            "INSERT INTO conversations (tenant_id, conversation_id, customer_waiting_since) VALUES ('{TENANT}', 'c-1', {at})"
        ),
        format!(
            "INSERT INTO waits VALUES ('{TENANT}', 'c-1', {at}, 'ann', 'north', 'oa-1', '', 1, {}, 'transferred')",
            at + 10 * MINUTE
        ),
        format!(
            "INSERT INTO waits VALUES ('{TENANT}', 'c-1', {}, 'bob', 'north', 'oa-1', '', 1, NULL, '')",
            at + 10 * MINUTE
        ),
        // c-2: answered; its closed share cannot know more.
        format!(
            "INSERT INTO conversations (tenant_id, conversation_id) VALUES ('{TENANT}', 'c-2')"
        ),
        format!(
            "INSERT INTO waits VALUES ('{TENANT}', 'c-2', {}, 'bob', 'north', 'oa-1', '', 1, {}, 'answered')",
            at + 20 * MINUTE,
            at + 30 * MINUTE
        ),
        // c-3: the same conversation id in another tenant waits since later.
        format!(
            "INSERT INTO conversations (tenant_id, conversation_id, customer_waiting_since) VALUES ('other', 'c-1', {})",
            at + 40 * MINUTE
        ),
        format!(
            "INSERT INTO waits VALUES ('other', 'c-1', {}, 'cam', 'south', 'oa-2', '', 1, NULL, '')",
            at + 40 * MINUTE
        ),
    ];
    match &database {
        giao_storage::Database::Postgres(pool) => {
            giao_reporting::MIGRATIONS.postgres.run_to(4, pool).await
        }
        giao_storage::Database::Sqlite(pool) => {
            giao_reporting::MIGRATIONS.sqlite.run_to(4, pool).await
        }
    }
    .expect("migrated to 0004");
    for statement in &statements {
        execute(&database, statement).await;
    }
    database
        .migrate(&giao_reporting::MIGRATIONS)
        .await
        .expect("migrated");
    let store = giao_reporting::store::Store::new(database);
    let waits: Vec<String> = store
        .snapshot()
        .await
        .expect("snapshot")
        .into_iter()
        .filter(|line| line.starts_with("waits|"))
        .map(|line| {
            let fields: Vec<&str> = line.split('|').collect();
            // tenant, conversation, started at, owner, customer since
            format!(
                "{} {} {} {} {}",
                fields[1],
                fields[2],
                fields[3],
                fields[4],
                fields[fields.len() - 1]
            )
        })
        .collect();
    let mut expected = vec![
        format!("{TENANT} c-1 {at} ann {at}"),
        format!("{TENANT} c-1 {} bob {at}", at + 10 * MINUTE),
        format!("{TENANT} c-2 {0} bob {0}", at + 20 * MINUTE),
        format!("other c-1 {0} cam {0}", at + 40 * MINUTE),
    ];
    expected.sort();
    let mut waits = waits;
    waits.sort();
    assert_eq!(waits, expected);
}

/// `giao-reporting rollup` repairs daily roll-ups that fell behind the hourly tables (a
/// replica older than the roll-ups folding during a rolling upgrade).
async fn rollup_makes_the_daily_figures_those_of_the_hours(kind: BackendKind) {
    let mut backend = Backend::new(kind).await;
    let (config, store) = migrated_store(&mut backend).await;
    let settings = config.settings().expect("settings");
    for (id, at, payload) in day() {
        let envelope = envelope(TENANT, id, at, payload);
        assert!(
            store
                .apply(&envelope, &settings.apply)
                .await
                .expect("applied")
        );
    }
    let expected = store.snapshot().await.expect("snapshot");
    assert!(expected.iter().any(|line| line.starts_with("daily|")));
    // Days missing, counted short and counted twice.
    for statement in [
        "DELETE FROM daily_facts",
        "DELETE FROM daily WHERE user_id = 'ann'",
        "UPDATE daily SET messages_in = messages_in + 3",
        "UPDATE daily_hist SET count = count * 2",
    ] {
        execute(store.database(), statement).await;
    }
    assert_ne!(store.snapshot().await.expect("snapshot"), expected);
    giao_reporting::rollup(config.clone(), tokio_util::sync::CancellationToken::new())
        .await
        .expect("rolled up");
    assert_eq!(store.snapshot().await.expect("snapshot"), expected);
}

/// `rebuild --from message-store`: conversations, histories and contacts read through
/// message-store's API give exactly the rows the live consumer built from the same traffic
/// (traffic without ownership changes, SLA breaches or account events: those only the bus
/// knows).
async fn rebuild_from_message_store_gives_identical_aggregates(kind: BackendKind) {
    use giao_proto::{
        common::{ChannelUser, MessageContent},
        messagestore::{
            AppendInboundRequest, ConversationStatus, InboundMessage, RecordOutboundRequest,
            SetConversationStatusRequest,
        },
    };
    let mut backend = Backend::new(kind).await;
    let message_store =
        giao_tests::start_message_store(giao_tests::message_store_config(&mut backend).await).await;
    let config = reporting_config(backend.database().await, backend.bus.clone());
    let _reporting = giao_tests::start_reporting(config.clone()).await;
    let mut admin = giao_tests::message_store_client(&message_store, TENANT, "admin").await;
    let captured =
        |id: &str, customer: &str, direction: Direction, sender: SenderKind| AppendInboundRequest {
            message: Some(InboundMessage {
                channel_account_id: "oa-1".into(),
                external_message_id: id.into(),
                external_thread_id: customer.into(),
                customer: Some(ChannelUser {
                    external_user_id: customer.into(),
                    display_name: customer.into(),
                    ..Default::default()
                }),
                direction: direction as i32,
                sender_kind: sender as i32,
                content: Some(MessageContent {
                    r#type: ContentType::Text as i32,
                    text: format!("message {id}"),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
    // cust-1: a burst, the owner answers from the phone, the customer writes again, staff
    // answer through giao with a personal number (flagged), and the conversation is closed.
    let mut first = String::new();
    for (id, direction, sender) in [
        ("m-1", Direction::Inbound, SenderKind::Customer),
        ("m-2", Direction::Inbound, SenderKind::Customer),
        ("m-3", Direction::Outbound, SenderKind::AccountOwner),
        ("m-4", Direction::Inbound, SenderKind::Customer),
    ] {
        first = admin
            .append_inbound(captured(id, "cust-1", direction, sender))
            .await
            .expect("captured")
            .into_inner()
            .message
            .expect("message")
            .conversation_id;
    }
    admin
        .record_outbound(RecordOutboundRequest {
            conversation_id: first.clone(),
            content: Some(MessageContent {
                r#type: ContentType::Text as i32,
                text: "Dạ chị gọi em số 0912 345 678 nhé".into(),
                ..Default::default()
            }),
            idempotency_key: "reply-1".into(),
            ..Default::default()
        })
        .await
        .expect("staff reply");
    // cust-2 writes and waits.
    let second = admin
        .append_inbound(captured(
            "m-5",
            "cust-2",
            Direction::Inbound,
            SenderKind::Customer,
        ))
        .await
        .expect("captured")
        .into_inner()
        .message
        .expect("message")
        .conversation_id;
    admin
        .set_conversation_status(SetConversationStatusRequest {
            conversation_id: first.clone(),
            status: ConversationStatus::Closed as i32,
            ..Default::default()
        })
        .await
        .expect("closed");

    // The live consumer has folded everything once the close (published last) is in.
    let live_database = giao_storage::Database::connect(&config.database)
        .await
        .expect("live database");
    let live = giao_reporting::store::Store::new(live_database);
    giao_testkit::wait_until(Duration::from_secs(30), "the live fold", || {
        let live = live.clone();
        async move {
            live.snapshot()
                .await
                .map(|lines| {
                    lines
                        .iter()
                        .any(|line| line.starts_with("facts|acme|closed|"))
                })
                .unwrap_or(false)
        }
    })
    .await;

    let fresh_database = giao_storage::Database::connect(&backend.database().await)
        .await
        .expect("fresh database");
    fresh_database
        .migrate(&giao_reporting::MIGRATIONS)
        .await
        .expect("migrated");
    let fresh = giao_reporting::store::Store::new(fresh_database);
    let settings = config.settings().expect("settings");
    let link = giao_reporting::history::MessageStoreLink {
        endpoint: message_store.endpoint(),
        // Any credential with messages.read and contacts.read over the whole tenant.
        tenant_api_keys: [(TENANT.to_string(), "dev.acme.u-auditor.auditor".to_string())].into(),
        timeout_ms: 10_000,
    };
    let applied = giao_reporting::history::rebuild(&link, &fresh, &settings.apply)
        .await
        .expect("rebuilt");
    // Two contacts, two openings, six messages, one close.
    assert_eq!(applied, 11);

    // Contacts are compared by id and lead source: rebuilt, a contact is created when
    // message-store stored it and in its current care status ("new"); live, when its event
    // was published, without a status until the first change.
    // A conversation's clock is compared without its close time, which message-store
    // does not keep (rebuilt, a close happens at the last activity).
    let comparable = |lines: Vec<String>| -> Vec<String> {
        lines
            .into_iter()
            .map(|line| {
                if let Some(rest) = line.strip_prefix("contacts|") {
                    let fields: Vec<&str> = rest.split('|').collect();
                    format!("contacts|{}", fields[..3].join("|"))
                } else if let Some(rest) = line.strip_prefix("conversations|") {
                    let mut fields: Vec<&str> = rest.split('|').collect();
                    if fields[8] != "-" {
                        fields[8] = "closed";
                    }
                    format!("conversations|{}", fields.join("|"))
                } else {
                    line
                }
            })
            .collect()
    };
    let rebuilt = fresh.snapshot().await.expect("rebuilt");
    assert_eq!(
        rebuilt
            .iter()
            .filter(|line| line.starts_with("contacts|") && line.contains("||new|"))
            .count(),
        2,
        "{rebuilt:#?}"
    );
    let before = comparable(live.snapshot().await.expect("live"));
    let after = comparable(rebuilt);
    assert!(
        before
            .iter()
            .any(|line| line.starts_with("facts|acme|flagged|")),
        "{before:#?}"
    );
    assert!(
        before
            .iter()
            .any(|line| line.starts_with(&format!("waits|acme|{second}|"))
                && line.contains("|-||")),
        "{before:#?}"
    );
    assert_eq!(before, after);

    // Running it again folds nothing twice.
    assert_eq!(
        giao_reporting::history::rebuild(&link, &fresh, &settings.apply)
            .await
            .expect("again"),
        0
    );
    assert_eq!(comparable(fresh.snapshot().await.expect("again")), after);
    // The events carry the ids message-store published them under: on the live database
    // only the close (whose time message-store does not keep) is new.
    assert_eq!(
        giao_reporting::history::rebuild(&link, &live, &settings.apply)
            .await
            .expect("over the live fold"),
        1
    );
}

/// Care-quality patterns are the tenant's own when it has a list: acme's staff may share the
/// shop's hotline wording but not "my own number"; globex keeps the default patterns.
async fn care_quality_patterns_are_per_tenant(kind: BackendKind) {
    let mut backend = Backend::new(kind).await;
    let mut config = reporting_config(backend.database().await, backend.bus.clone());
    config
        .care_quality
        .tenants
        .insert(TENANT.into(), vec![r"(?i)số riêng của em".into()]);
    let settings = config.settings().expect("settings");
    let database = giao_storage::Database::connect(&config.database)
        .await
        .expect("database");
    database
        .migrate(&giao_reporting::MIGRATIONS)
        .await
        .expect("migrated");
    let store = giao_reporting::store::Store::new(database);
    let at = local(5, 9, 0);
    let reply = |tenant: &str, id: &str, sender: SenderKind, text: &str| Envelope {
        event_id: format!("{tenant}-{id}"),
        tenant_id: tenant.into(),
        occurred_at: Some(timestamp(at)),
        producer: "test".into(),
        payload: Some(stored(
            id,
            id,
            "ann",
            "north",
            Direction::Outbound,
            sender,
            if sender == SenderKind::Staff {
                "ann"
            } else {
                ""
            },
            at,
            text,
        )),
        ..Default::default()
    };
    for envelope in [
        // acme: the hotline is fine, a personal number announced as such is not.
        reply(
            TENANT,
            "q-1",
            SenderKind::Staff,
            "Hotline shop: 0912 345 678",
        ),
        reply(
            TENANT,
            "q-2",
            SenderKind::Staff,
            "Chị gọi số riêng của em nhé",
        ),
        // The account owner typing on the phone is a human too.
        reply(
            TENANT,
            "q-3",
            SenderKind::AccountOwner,
            "số riêng của em đây",
        ),
        // Automation is never flagged.
        reply(TENANT, "q-4", SenderKind::Automation, "số riêng của em"),
        // globex: the default patterns (a phone number, a bank account, another channel).
        reply(
            "globex",
            "q-5",
            SenderKind::Staff,
            "Hotline shop: 0912 345 678",
        ),
        reply(
            "globex",
            "q-6",
            SenderKind::Staff,
            "chuyển khoản stk 0123456789",
        ),
        reply("globex", "q-7", SenderKind::Staff, "add t.me/shop giúp em"),
        reply(
            "globex",
            "q-8",
            SenderKind::Staff,
            "Dạ đơn KH000123 giao ngày 12/3",
        ),
    ] {
        assert!(
            store
                .apply(&envelope, &settings.apply)
                .await
                .expect("applied")
        );
    }
    let flagged: Vec<String> = store
        .snapshot()
        .await
        .expect("snapshot")
        .into_iter()
        .filter(|line| line.starts_with("facts|") && line.contains("|flagged|"))
        .map(|line| {
            let fields: Vec<&str> = line.split('|').collect();
            format!("{}/{}/{}", fields[1], fields[5], fields[3])
        })
        .collect();
    assert_eq!(
        flagged,
        vec![
            "acme/q-2/ann",
            "acme/q-3/ann",
            "globex/q-5/ann",
            "globex/q-6/ann",
            "globex/q-7/ann"
        ]
    );
}

on_both_backends!(
    batch_fold_matches_one_by_one,
    stored_batches_fold_like_single_events,
    message_store_traffic_reaches_the_scorecard,
    each_definition_on_a_hand_built_day,
    exports_csv_per_agent_and_per_conversation,
    redelivered_events_count_once,
    visibility_and_bad_input,
    rebuild_from_the_bus_gives_identical_aggregates,
    rebuild_from_message_store_gives_identical_aggregates,
    sla_compliance_splits_by_policy,
    concurrent_first_events_of_a_new_conversation_are_both_kept,
    care_quality_patterns_are_per_tenant,
    long_silences_count_from_the_customers_first_message,
    account_activity_and_funnel_follow_visibility,
    each_tenant_keeps_its_own_time_zone,
    opposite_transfers_folded_at_once_both_land,
    rollup_makes_the_daily_figures_those_of_the_hours,
    customer_since_of_existing_waits_is_backfilled,
);
