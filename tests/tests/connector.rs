//! The connector on real components: channel accounts (tenant isolation, sealed credentials,
//! idempotent create, status), the Zalo OA webhook into message-store, outbound text, images
//! and files through the OA simulator (over http and https), rate limits, profiles, and
//! session leases across replicas (in one process and across killed processes).

use std::time::Duration;

use giao_proto::{
    common::{ChannelKind, ContentType, Direction, PageRequest},
    connector::{
        AccountStatusRequest, CreateAccountRequest, DisableAccountRequest, GetAccountRequest,
        ListAccountsRequest, UpdateAccountRequest,
    },
    events::AccountStatus,
    messagestore::{GetHistoryRequest, ListConversationsRequest, Message},
};
use giao_storage::Database;
use giao_tests::{
    Backend, BackendKind, Running, connector_client, connector_config, http_request,
    message_store_client, message_store_config, start_connector_with_http, start_message_store,
};
use serde_json::json;

const TENANT: &str = "acme";
const APP_ID: &str = "app-123";
const APP_SECRET: &str = "app-secret-do-not-leak";
const OA_SECRET: &str = "oa-secret-key-do-not-leak";

fn oa_credentials() -> String {
    json!({"app_id": APP_ID, "app_secret": APP_SECRET, "oa_secret_key": OA_SECRET,
           "oa_id": "oa-777", "refresh_token": "refresh-token-do-not-leak"})
    .to_string()
}

async fn create_oa(connector: &Running, tenant: &str, key: &str) -> String {
    connector_client(connector, tenant, "admin")
        .await
        .create_account(CreateAccountRequest {
            kind: ChannelKind::ZaloOa as i32,
            display_name: "Shop OA".into(),
            credentials_json: oa_credentials(),
            idempotency_key: key.into(),
            ..Default::default()
        })
        .await
        .expect("creates the OA account")
        .into_inner()
        .channel_account_id
}

async fn accounts(backend: BackendKind) {
    let mut backend = Backend::new(backend).await;
    let config = connector_config(&mut backend).await;
    let database_config = config.database.clone();
    let connector = start_connector_with_http(config).await;
    let mut admin = connector_client(&connector, TENANT, "admin").await;

    // Bad input names the field.
    let error = admin
        .create_account(CreateAccountRequest {
            kind: ChannelKind::Simulator as i32,
            ..Default::default()
        })
        .await
        .expect_err("no name");
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert!(
        error.message().contains("display_name"),
        "{}",
        error.message()
    );
    let error = admin
        .create_account(CreateAccountRequest {
            kind: ChannelKind::ZaloOa as i32,
            display_name: "OA".into(),
            credentials_json: json!({"app_id": "a", "app_secret": "s"}).to_string(),
            ..Default::default()
        })
        .await
        .expect_err("no OA secret key");
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert!(
        error.message().contains("oa_secret_key"),
        "{}",
        error.message()
    );
    let error = admin
        .create_account(CreateAccountRequest {
            kind: 0,
            display_name: "x".into(),
            ..Default::default()
        })
        .await
        .expect_err("no kind");
    assert!(error.message().contains("kind"), "{}", error.message());

    // Idempotent create: the same key returns the same account.
    let first = create_oa(&connector, TENANT, "create-1").await;
    let again = create_oa(&connector, TENANT, "create-1").await;
    assert_eq!(first, again);
    let other = create_oa(&connector, TENANT, "create-2").await;
    assert_ne!(first, other);

    let account = admin
        .get_account(GetAccountRequest {
            channel_account_id: first.clone(),
        })
        .await
        .expect("reads the account")
        .into_inner();
    assert_eq!(account.kind, ChannelKind::ZaloOa as i32);
    assert_eq!(account.external_id, "oa-777");
    assert_eq!(account.status, AccountStatus::Connected as i32);

    // Another tenant sees nothing of it.
    let mut stranger = connector_client(&connector, "globex", "admin").await;
    let error = stranger
        .get_account(GetAccountRequest {
            channel_account_id: first.clone(),
        })
        .await
        .expect_err("other tenant");
    assert_eq!(error.code(), tonic::Code::NotFound);
    let error = stranger
        .disable_account(DisableAccountRequest {
            channel_account_id: first.clone(),
            reason: String::new(),
        })
        .await
        .expect_err("other tenant");
    assert_eq!(error.code(), tonic::Code::NotFound);
    let listed = stranger
        .list_accounts(ListAccountsRequest::default())
        .await
        .expect("lists")
        .into_inner()
        .accounts;
    assert!(listed.is_empty(), "{listed:?}");

    // Paging over the tenant's accounts.
    let page = admin
        .list_accounts(ListAccountsRequest {
            page: Some(PageRequest {
                page_size: 1,
                cursor: String::new(),
            }),
            kind: ChannelKind::ZaloOa as i32,
            ..Default::default()
        })
        .await
        .expect("lists")
        .into_inner();
    assert_eq!(page.accounts.len(), 1);
    let cursor = page.page.expect("page").next_cursor;
    assert!(!cursor.is_empty());
    let rest = admin
        .list_accounts(ListAccountsRequest {
            page: Some(PageRequest {
                page_size: 10,
                cursor,
            }),
            kind: ChannelKind::ZaloOa as i32,
            ..Default::default()
        })
        .await
        .expect("lists")
        .into_inner();
    assert_eq!(rest.accounts.len(), 1);
    assert_ne!(
        rest.accounts[0].channel_account_id,
        page.accounts[0].channel_account_id
    );

    // Update: pacing and name; unknown mask fields are refused by name.
    let updated = admin
        .update_account(UpdateAccountRequest {
            channel_account_id: first.clone(),
            update_mask: vec!["display_name".into(), "send_rate_per_minute".into()],
            display_name: "Shop OA (HCM)".into(),
            send_rate_per_minute: 30,
            ..Default::default()
        })
        .await
        .expect("updates")
        .into_inner();
    assert_eq!(updated.display_name, "Shop OA (HCM)");
    assert_eq!(updated.send_rate_per_minute, 30);
    let error = admin
        .update_account(UpdateAccountRequest {
            channel_account_id: first.clone(),
            update_mask: vec!["status".into()],
            ..Default::default()
        })
        .await
        .expect_err("unknown field");
    assert!(error.message().contains("status"), "{}", error.message());

    // Supervisors read but do not manage.
    let mut supervisor = connector_client(&connector, TENANT, "supervisor").await;
    let error = supervisor
        .disable_account(DisableAccountRequest {
            channel_account_id: first.clone(),
            reason: String::new(),
        })
        .await
        .expect_err("supervisors cannot disable");
    assert_eq!(error.code(), tonic::Code::PermissionDenied);

    // Disable: the status machine ends in disabled, with the reason and time.
    let disabled = admin
        .disable_account(DisableAccountRequest {
            channel_account_id: first.clone(),
            reason: "OA handed back".into(),
        })
        .await
        .expect("disables")
        .into_inner();
    assert!(disabled.disabled);
    assert_eq!(disabled.status, AccountStatus::Disabled as i32);
    let status = supervisor
        .account_status(AccountStatusRequest {
            channel_account_id: first.clone(),
        })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.status, AccountStatus::Disabled as i32);
    assert_eq!(status.reason, "OA handed back");
    assert!(status.since.is_some());

    // Each transition was published as AccountStatusChanged: created connected, then disabled.
    let bus = giao_bus::connect(&backend.bus).await.expect("bus");
    let mut stream = giao_tests::subscribe_events(
        bus.as_ref(),
        "test-account-status",
        "account_status_changed",
    )
    .await;
    let mut transitions = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while transitions.len() < 2 && tokio::time::Instant::now() < deadline {
        use futures::StreamExt;
        let Ok(Some(Ok(delivery))) =
            tokio::time::timeout(Duration::from_millis(500), stream.next()).await
        else {
            continue;
        };
        let (envelope, _) = giao_bus::envelope::decode(&delivery).expect("decodes");
        if let Some(giao_proto::events::envelope::Payload::AccountStatusChanged(change)) =
            envelope.payload
            && change.channel_account_id == first
        {
            assert_eq!(envelope.tenant_id, TENANT);
            transitions.push((change.previous_status, change.status, change.reason));
        }
        delivery.ack().await.expect("acks");
    }
    assert_eq!(
        transitions,
        vec![
            (0, AccountStatus::Connected as i32, String::new()),
            (
                AccountStatus::Connected as i32,
                AccountStatus::Disabled as i32,
                "OA handed back".to_string()
            ),
        ]
    );

    // Credentials are sealed at rest: no secret appears in the stored row.
    let database = Database::connect(&database_config).await.expect("connects");
    let store = giao_connector::store::AccountStore::new(database);
    let sealed = store
        .credentials(TENANT, &first)
        .await
        .expect("reads")
        .expect("has credentials");
    let stored = String::from_utf8_lossy(&sealed.sealed);
    for secret in [APP_SECRET, OA_SECRET, "refresh-token-do-not-leak"] {
        assert!(!stored.contains(secret), "{secret} stored in clear");
    }
    assert!(!sealed.key_id.is_empty());

    connector.stop().await.expect("connector stops");
}

/// A signed Zalo webhook request, as Zalo sends it.
fn signed(body: &str) -> (String, String) {
    let event: serde_json::Value = serde_json::from_str(body).expect("json");
    let timestamp = event["timestamp"].as_str().unwrap_or_default().to_string();
    (
        giao_connector::zalo::webhook::signature(APP_ID, body.as_bytes(), &timestamp, OA_SECRET),
        timestamp,
    )
}

async fn post_webhook(
    connector: &Running,
    account: &str,
    body: &str,
    mac: Option<&str>,
    retry: Option<&str>,
) -> u16 {
    let addr = connector.metrics_addr.expect("HTTP listener");
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(mac) = mac {
        headers.push(("X-ZEvent-Signature", mac));
    }
    if let Some(retry) = retry {
        headers.push(("num_retry", retry));
    }
    http_request(
        addr,
        "POST",
        &format!("/webhooks/zalo-oa/{TENANT}/{account}"),
        &headers,
        body.as_bytes(),
    )
    .await
    .0
}

/// Posts `body` signed as Zalo signs it; returns the HTTP status.
async fn post_signed(connector: &Running, account: &str, body: &str, retry: Option<&str>) -> u16 {
    let (mac, _) = signed(body);
    post_webhook(connector, account, body, Some(&mac), retry).await
}

async fn all_messages(store: &Running) -> Vec<Message> {
    let mut client = message_store_client(store, TENANT, "admin").await;
    let conversations = client
        .list_conversations(ListConversationsRequest::default())
        .await
        .expect("lists conversations")
        .into_inner()
        .conversations;
    let mut messages = Vec::new();
    for conversation in conversations {
        let page = client
            .get_history(GetHistoryRequest {
                conversation_id: conversation.conversation_id.clone(),
                page: Some(PageRequest {
                    page_size: 100,
                    cursor: String::new(),
                }),
                direction: 1,
            })
            .await
            .expect("reads history")
            .into_inner();
        messages.extend(page.messages);
    }
    messages
}

fn event(name: &str, msg_id: &str, message: serde_json::Value) -> String {
    let mut message = message;
    message["msg_id"] = json!(msg_id);
    let (sender, recipient) = if name.starts_with("oa_send_") {
        (
            json!({"id": "oa-777", "admin_id": "admin-1"}),
            json!({"id": "zu-1"}),
        )
    } else {
        (json!({"id": "zu-1"}), json!({"id": "oa-777"}))
    };
    json!({"app_id": APP_ID, "sender": sender, "user_id_by_app": "uba-1",
           "recipient": recipient, "event_name": name, "message": message,
           "timestamp": "1732300000000"})
    .to_string()
}

async fn webhook_inbound(backend: BackendKind) {
    let mut backend = Backend::new(backend).await;
    let store = start_message_store(message_store_config(&mut backend).await).await;
    let mut config = connector_config(&mut backend).await;
    config.webhook.max_body_bytes = 4096;
    let database_config = config.database.clone();
    let connector = start_connector_with_http(config).await;
    let account = create_oa(&connector, TENANT, "").await;

    let events = [
        event("user_send_text", "m-text", json!({"text": "Chào shop"})),
        event(
            "user_send_image",
            "m-image",
            json!({"text": "", "attachments": [{"type": "image", "payload": {"url": "http://img/1.jpg", "thumbnail": "http://img/1t.jpg"}}]}),
        ),
        event(
            "user_send_file",
            "m-file",
            json!({"attachments": [{"type": "file", "payload": {"url": "http://f/a.pdf", "name": "a.pdf", "size": "1200", "checksum": "c", "type": "pdf"}}]}),
        ),
        event(
            "user_send_sticker",
            "m-sticker",
            json!({"attachments": [{"type": "sticker", "payload": {"url": "http://s/1.png", "id": "st-1"}}]}),
        ),
        event(
            "user_send_location",
            "m-location",
            json!({"attachments": [{"type": "location", "payload": {"coordinates": {"latitude": "10.77", "longitude": "106.70"}}}]}),
        ),
        event(
            "user_send_link",
            "m-link",
            json!({"attachments": [{"type": "link", "payload": {"url": "http://l", "description": "d", "thumbnail": "http://t"}}]}),
        ),
        event(
            "user_send_audio",
            "m-audio",
            json!({"attachments": [{"type": "audio", "payload": {"url": "http://a/1.aac"}}]}),
        ),
        event(
            "user_send_video",
            "m-video",
            json!({"attachments": [{"type": "video", "payload": {"url": "http://v/1.mp4", "thumbnail": "http://v/t.jpg"}}]}),
        ),
        event(
            "user_send_business_card",
            "m-card",
            json!({"attachments": [{"type": "business_card", "payload": {"title": "Anh Ba", "thumbnail": "http://c"}}]}),
        ),
        event("oa_send_text", "m-oa", json!({"text": "Dạ shop chào bạn"})),
    ];
    for body in &events {
        let (mac, _) = signed(body);
        assert_eq!(
            post_webhook(&connector, &account, body, Some(&mac), None).await,
            200,
            "{body}"
        );
    }
    // Zalo's retry of the first event (num_retry) is accepted and not stored twice.
    let (mac, _) = signed(&events[0]);
    assert_eq!(
        post_webhook(&connector, &account, &events[0], Some(&mac), Some("1")).await,
        200
    );

    // Bad input: refused with the right status, counted, and harmless to the next request.
    let (mac, _) = signed(&events[0]);
    assert_eq!(
        post_webhook(&connector, &account, &events[0], None, None).await,
        401
    );
    let forged = events[0].replace("Chào shop", "Chuyển tiền cho tôi");
    assert_eq!(
        post_webhook(&connector, &account, &forged, Some(&mac), None).await,
        401
    );
    let bad_json = "{\"event_name\": \"user_send_text\", ";
    let (bad_mac, _) = (
        giao_connector::zalo::webhook::signature(APP_ID, bad_json.as_bytes(), "", OA_SECRET),
        (),
    );
    assert_eq!(
        post_webhook(&connector, &account, bad_json, Some(&bad_mac), None).await,
        400
    );
    let huge = "x".repeat(64 * 1024);
    assert_eq!(
        post_webhook(&connector, &account, &huge, Some(&mac), None).await,
        413
    );
    // An event giao does not model is accepted and kept raw.
    let unknown = json!({"app_id": APP_ID, "event_name": "user_submit_info",
                          "sender": {"id": "zu-1"}, "info": {"phone": "0900"},
                          "timestamp": "1732300000001"})
    .to_string();
    let (mac, _) = signed(&unknown);
    assert_eq!(
        post_webhook(&connector, &account, &unknown, Some(&mac), None).await,
        200
    );
    // Zalo's retry of it (same body, num_retry) is answered 200 and not kept a second time.
    assert_eq!(
        post_signed(&connector, &account, &unknown, Some("1")).await,
        200
    );
    // A known event without the fields giao needs, correctly signed: answered 200 (a 4xx
    // would make Zalo retry it and then disable the webhook), kept raw and counted.
    let incomplete = json!({"app_id": APP_ID, "event_name": "user_send_text",
                             "sender": {"id": "zu-1"}, "message": {"text": "no id"},
                             "timestamp": "1732300000005"})
    .to_string();
    assert_eq!(
        post_signed(&connector, &account, &incomplete, None).await,
        200
    );
    // Valid JSON under a signature that was never Zalo's: refused and counted as forged.
    let made_up = format!("mac={}", "0".repeat(64));
    assert_eq!(
        post_webhook(&connector, &account, &incomplete, Some(&made_up), None).await,
        401
    );
    // Seen, reaction, follow: accepted after all the bad ones.
    for body in [
        json!({"app_id": APP_ID, "event_name": "user_seen_message", "sender": {"id": "zu-1"},
               "recipient": {"id": "oa-777"}, "message": {"msg_ids": ["m-oa"]}, "timestamp": "1732300000002"}),
        json!({"app_id": APP_ID, "event_name": "user_reacted_message", "sender": {"id": "zu-1"},
               "recipient": {"id": "oa-777"}, "message": {"msg_id": "m-oa", "react_icon": "/-heart"}, "timestamp": "1732300000003"}),
        json!({"app_id": APP_ID, "event_name": "follow", "oa_id": "oa-777", "follower": {"id": "zu-2"},
               "source": "qr_code", "timestamp": "1732300000004"}),
    ] {
        let body = body.to_string();
        let (mac, _) = signed(&body);
        assert_eq!(
            post_webhook(&connector, &account, &body, Some(&mac), None).await,
            200,
            "{body}"
        );
    }

    // Every message reached message-store exactly once, normalised.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let messages = loop {
        let messages = all_messages(&store).await;
        if messages.len() >= events.len() || tokio::time::Instant::now() > deadline {
            break messages;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let messages_again = all_messages(&store).await;
    assert_eq!(messages.len(), events.len(), "{messages:#?}");
    assert_eq!(messages_again.len(), events.len());
    let by_id = |id: &str| {
        messages
            .iter()
            .find(|message| message.external_message_id == id)
            .unwrap_or_else(|| panic!("{id} stored"))
    };
    let text = by_id("m-text");
    assert_eq!(text.content.as_ref().expect("content").text, "Chào shop");
    let image = by_id("m-image").content.clone().expect("content");
    assert_eq!(image.r#type, ContentType::Image as i32);
    assert_eq!(image.attachments[0].url, "http://img/1.jpg");
    let location = by_id("m-location").content.clone().expect("content");
    assert!((location.location.expect("location").latitude - 10.77).abs() < 1e-9);
    assert_eq!(
        by_id("m-sticker")
            .content
            .clone()
            .expect("content")
            .sticker_id,
        "st-1"
    );
    let oa = by_id("m-oa");
    assert_eq!(oa.direction, Direction::Outbound as i32);

    // The refusals were counted by reason.
    let (status, metrics) = http_request(
        connector.metrics_addr.expect("HTTP listener"),
        "GET",
        "/metrics",
        &[],
        b"",
    )
    .await;
    assert_eq!(status, 200);
    for (reason, count) in [
        ("unsigned", 1),
        ("forged", 2),
        ("malformed", 1),
        ("incomplete", 1),
    ] {
        let line = format!("connector_webhook_rejected_total{{reason=\"{reason}\"}} {count}");
        assert!(metrics.contains(&line), "{line} missing in\n{metrics}");
    }

    let database = Database::connect(&database_config).await.expect("connects");
    let raw = giao_connector::zalo::RawEvents::new(database)
        .names(TENANT, &account)
        .await
        .expect("reads raw events");
    assert_eq!(
        raw,
        vec!["user_submit_info".to_string(), "user_send_text".to_string()]
    );

    connector.stop().await.expect("connector stops");
    store.stop().await.expect("message-store stops");
}

/// Three replicas share 30 accounts; one dies without releasing; its accounts move within
/// the lease time and no account is ever held by two replicas under one fencing token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sessions_move_when_a_replica_dies() {
    use std::collections::{BTreeMap, BTreeSet};

    let mut backend = Backend::new(BackendKind::Postgres).await;
    let base = connector_config(&mut backend).await;
    let replica = |name: &str, release: bool| {
        let mut config = base.clone();
        config.sessions.replica_id = name.into();
        config.sessions.lease_ms = 1_500;
        config.sessions.tick_ms = 200;
        config.sessions.release_on_stop = release;
        config
    };
    let r1 = start_connector_with_http(replica("r1", true)).await;
    let mut admin = connector_client(&r1, TENANT, "admin").await;
    for n in 0..30 {
        admin
            .create_account(CreateAccountRequest {
                kind: ChannelKind::Simulator as i32,
                display_name: format!("shop {n}"),
                idempotency_key: format!("shop-{n}"),
                ..Default::default()
            })
            .await
            .expect("creates");
    }
    let r2 = start_connector_with_http(replica("r2", true)).await;
    let r3 = start_connector_with_http(replica("r3", false)).await;

    // Watches the holders: per account, tokens never go back and one token has one owner.
    let watching = tokio_util::sync::CancellationToken::new();
    let watcher = {
        let mut client = connector_client(&r1, TENANT, "admin").await;
        let stop = watching.clone();
        tokio::spawn(async move {
            let mut seen: BTreeMap<String, (u64, String)> = BTreeMap::new();
            let mut changes = 0usize;
            loop {
                // One last look after the stop is asked for, so a move the main loop has
                // already seen cannot fall between two polls.
                let last = stop.is_cancelled();
                let sessions = client
                    .list_sessions(giao_proto::connector::ListSessionsRequest::default())
                    .await
                    .expect("lists sessions")
                    .into_inner()
                    .sessions;
                for session in sessions {
                    let entry = seen
                        .entry(session.channel_account_id.clone())
                        .or_insert((session.fencing_token, session.owner_replica.clone()));
                    assert!(
                        session.fencing_token >= entry.0,
                        "token went back for {}",
                        session.channel_account_id
                    );
                    if session.fencing_token == entry.0 {
                        assert_eq!(session.owner_replica, entry.1, "two holders of one token");
                    } else {
                        changes += 1;
                    }
                    *entry = (session.fencing_token, session.owner_replica);
                }
                if last {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            changes
        })
    };

    let holders = |sessions: &[giao_proto::connector::Session]| {
        let mut count: BTreeMap<String, usize> = BTreeMap::new();
        for session in sessions {
            *count.entry(session.owner_replica.clone()).or_default() += 1;
        }
        count
    };
    let list =
        |mut client: giao_proto::connector::connector_service_client::ConnectorServiceClient<
            giao_tests::Authed,
        >| async move {
            client
                .list_sessions(giao_proto::connector::ListSessionsRequest::default())
                .await
                .expect("lists sessions")
                .into_inner()
                .sessions
        };

    // Rebalanced: every account held, ten per replica.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let sessions = list(admin.clone()).await;
        let count = holders(&sessions);
        if sessions.len() == 30 && count.values().all(|n| *n == 10) && count.len() == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not rebalanced: {count:?} of {}",
            sessions.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before: BTreeSet<String> = list(admin.clone())
        .await
        .into_iter()
        .filter(|session| session.owner_replica == "r3")
        .map(|session| session.channel_account_id)
        .collect();
    assert_eq!(before.len(), 10);

    // r3 dies without giving its leases back.
    let died = tokio::time::Instant::now();
    r3.stop().await.expect("r3 stops");
    loop {
        let sessions = list(admin.clone()).await;
        let count = holders(&sessions);
        if sessions.len() == 30 && !count.contains_key("r3") && count.values().all(|n| *n == 15) {
            break;
        }
        assert!(
            died.elapsed() < Duration::from_millis(1_500 + 2_500),
            "r3's accounts did not move within the lease time: {count:?} of {}",
            sessions.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let moved_after = died.elapsed();
    watching.cancel();
    let changes = watcher.await.expect("watcher saw no double holder");
    assert!(changes >= 10, "the watcher saw {changes} holder changes");

    // The acquisition log agrees: per account, tokens 1, 2, 3... each with one owner.
    let database = Database::connect(&base.database).await.expect("connects");
    let history = giao_connector::store::LeaseStore::new(database)
        .history()
        .await
        .expect("reads history");
    let mut per_account: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (_, account, _, token, _) in history {
        per_account.entry(account).or_default().push(token);
    }
    assert_eq!(per_account.len(), 30);
    for (account, tokens) in &per_account {
        let expected: Vec<i64> = (1..=tokens.len() as i64).collect();
        assert_eq!(tokens, &expected, "{account}");
    }
    for account in &before {
        assert!(per_account[account].len() >= 2, "{account} never moved");
    }
    println!("r3's 10 accounts moved in {moved_after:?}");

    // A graceful stop gives every lease back at once: none is left to expire.
    r2.stop().await.expect("r2 stops");
    let sessions = list(admin.clone()).await;
    assert!(
        sessions.iter().all(|session| session.owner_replica != "r2"),
        "r2 still holds leases after stopping: {:?}",
        holders(&sessions)
    );
    r1.stop().await.expect("r1 stops");
}

/// The environment variable carrying a replica process's connector config (JSON).
const REPLICA_CONFIG_ENV: &str = "GIAO_TEST_CONNECTOR_REPLICA";

/// Not a test: the body of a connector replica process that
/// `postgres_replica_processes_share_accounts` starts by running this test binary again. It
/// serves the connector from the config in its environment until it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "entry point of the replica processes of postgres_replica_processes_share_accounts"]
async fn connector_replica_process() {
    let config = std::env::var(REPLICA_CONFIG_ENV).expect("started by the process test");
    let config: giao_connector::Config = serde_json::from_str(&config).expect("valid config");
    giao_connector::serve(config, tokio_util::sync::CancellationToken::new())
        .await
        .expect("the replica serves");
}

/// The issue's scenario with real processes: three connector processes share 30 accounts
/// over PostgreSQL and NATS; one is killed with SIGKILL (no goodbye, its leases still in
/// the table); its accounts are taken over within the lease time, and no account is ever
/// held by two processes under one fencing token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replica_processes_share_accounts() {
    use std::collections::{BTreeMap, BTreeSet};

    let mut backend = Backend::new(BackendKind::Postgres).await;
    let base = connector_config(&mut backend).await;
    // This one only answers the RPCs (accounts, ListSessions); it holds no sessions.
    let mut rpc_only = base.clone();
    rpc_only.sessions.enabled = false;
    let rpc = start_connector_with_http(rpc_only).await;
    let mut admin = connector_client(&rpc, TENANT, "admin").await;
    for n in 0..30 {
        admin
            .create_account(CreateAccountRequest {
                kind: ChannelKind::Simulator as i32,
                display_name: format!("shop {n}"),
                idempotency_key: format!("shop-{n}"),
                ..Default::default()
            })
            .await
            .expect("creates");
    }
    let lease_ms = 1_500;
    let spawn = |name: &str| {
        let mut config = base.clone();
        config.sessions.replica_id = name.into();
        config.sessions.lease_ms = lease_ms;
        config.sessions.tick_ms = 200;
        let config = serde_json::to_string(&config).expect("config serialises");
        std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "connector_replica_process",
                "--ignored",
                "--nocapture",
            ])
            .env(REPLICA_CONFIG_ENV, config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map(ReplicaProcess)
            .expect("starts a replica process")
    };
    let r1 = spawn("p1");
    let r2 = spawn("p2");
    let mut r3 = spawn("p3");

    let list =
        |mut client: giao_proto::connector::connector_service_client::ConnectorServiceClient<
            giao_tests::Authed,
        >| async move {
            client
                .list_sessions(giao_proto::connector::ListSessionsRequest::default())
                .await
                .expect("lists sessions")
                .into_inner()
                .sessions
        };
    let holders = |sessions: &[giao_proto::connector::Session]| {
        let mut count: BTreeMap<String, usize> = BTreeMap::new();
        for session in sessions {
            *count.entry(session.owner_replica.clone()).or_default() += 1;
        }
        count
    };

    // Watches the holders: per account, tokens never go back and one token has one owner.
    let watching = tokio_util::sync::CancellationToken::new();
    let watcher = {
        let client = admin.clone();
        let stop = watching.clone();
        tokio::spawn(async move {
            let mut seen: BTreeMap<String, (u64, String)> = BTreeMap::new();
            let mut changes = 0usize;
            loop {
                let last = stop.is_cancelled();
                for session in list(client.clone()).await {
                    let entry = seen
                        .entry(session.channel_account_id.clone())
                        .or_insert((session.fencing_token, session.owner_replica.clone()));
                    assert!(session.fencing_token >= entry.0, "token went back");
                    if session.fencing_token == entry.0 {
                        assert_eq!(session.owner_replica, entry.1, "two holders of one token");
                    } else {
                        changes += 1;
                    }
                    *entry = (session.fencing_token, session.owner_replica);
                }
                if last {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            changes
        })
    };

    // The three processes start, find each other and hold ten accounts each.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let sessions = list(admin.clone()).await;
        let count = holders(&sessions);
        if sessions.len() == 30 && count.len() == 3 && count.values().all(|n| *n == 10) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not rebalanced: {count:?} of {}: {sessions:?}",
            sessions.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before: BTreeSet<String> = list(admin.clone())
        .await
        .into_iter()
        .filter(|session| session.owner_replica == "p3")
        .map(|session| session.channel_account_id)
        .collect();
    assert_eq!(before.len(), 10);

    // SIGKILL: the process cannot release anything.
    let killed = tokio::time::Instant::now();
    let status = r3.kill();
    assert!(!status.success(), "p3 was killed: {status:?}");
    loop {
        let sessions = list(admin.clone()).await;
        let count = holders(&sessions);
        if sessions.len() == 30 && !count.contains_key("p3") && count.values().all(|n| *n == 15) {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_millis(lease_ms + 2_500),
            "p3's accounts did not move within the lease time: {count:?} of {}",
            sessions.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let moved_after = killed.elapsed();
    watching.cancel();
    let changes = watcher.await.expect("the watcher saw no double holder");
    assert!(changes >= 10, "the watcher saw {changes} holder changes");

    // The acquisition log agrees: per account, tokens 1, 2, 3... each with one owner.
    let database = Database::connect(&base.database).await.expect("connects");
    let history = giao_connector::store::LeaseStore::new(database)
        .history()
        .await
        .expect("reads history");
    let mut per_account: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
    for (_, account, owner, token, _) in history {
        per_account.entry(account).or_default().push((token, owner));
    }
    assert_eq!(per_account.len(), 30);
    for (account, acquisitions) in &per_account {
        let tokens: Vec<i64> = acquisitions.iter().map(|(token, _)| *token).collect();
        let expected: Vec<i64> = (1..=tokens.len() as i64).collect();
        assert_eq!(tokens, expected, "{account}");
    }
    for account in &before {
        let owners: Vec<&str> = per_account[account]
            .iter()
            .map(|(_, owner)| owner.as_str())
            .collect();
        assert!(
            owners.len() >= 2 && owners.last() != Some(&"p3"),
            "{account}: {owners:?}"
        );
    }
    println!("the killed process's 10 accounts moved in {moved_after:?}");

    drop((r1, r2));
    rpc.stop().await.expect("stops");
}

/// A replica process, killed with SIGKILL when dropped (also when the test fails).
struct ReplicaProcess(std::process::Child);

impl ReplicaProcess {
    fn kill(&mut self) -> std::process::ExitStatus {
        // Child::kill is SIGKILL on Unix: no shutdown code runs.
        let _ = self.0.kill();
        self.0.wait().expect("the process ends")
    }
}

impl Drop for ReplicaProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.kill();
        }
    }
}

/// Waits up to `wait` for one delivery on `deliveries`, acks it, and returns it when it is a
/// DeliveryUpdated of `account`.
async fn account_delivery_update(
    deliveries: &mut giao_bus::DeliveryStream,
    account: &str,
    wait: Duration,
) -> Option<giao_proto::events::DeliveryUpdated> {
    use futures::StreamExt;
    use giao_proto::events::envelope::Payload;
    let Ok(Some(Ok(delivery))) = tokio::time::timeout(wait, deliveries.next()).await else {
        return None;
    };
    let (envelope, _) = giao_bus::envelope::decode(&delivery).expect("decodes");
    delivery.ack().await.expect("acks");
    match envelope.payload {
        Some(Payload::DeliveryUpdated(update)) if update.channel_account_id == account => {
            Some(update)
        }
        _ => None,
    }
}

/// Connects an OA through the simulator's OAuth v4 flow (PKCE); returns the account id.
async fn connect_oa(connector: &Running, sim: &giao_connector::zalo::sim::OaSimulator) -> String {
    use giao_proto::connector::{BeginOaConnectRequest, CompleteOaConnectRequest};
    let mut admin = connector_client(connector, TENANT, "admin").await;
    let begun = admin
        .begin_oa_connect(BeginOaConnectRequest {
            display_name: "Shop OA".into(),
            team_id: String::new(),
            redirect_uri: "https://giao.example/oa/callback".into(),
        })
        .await
        .expect("begins the connect")
        .into_inner();
    assert!(
        begun.authorize_url.contains("code_challenge="),
        "{}",
        begun.authorize_url
    );
    assert!(!begun.authorize_url.contains("code_verifier"));
    // The admin's browser follows the authorize URL; the simulator approves and redirects.
    let http = giao_connector::zalo::http::HttpClient::new(Duration::from_secs(5));
    let answer = http
        .request(http::Method::GET, &begun.authorize_url, &[], Vec::new())
        .await
        .expect("authorize answers");
    assert_eq!(answer.status, 302);
    let location = answer.headers["location"]
        .to_str()
        .expect("location")
        .to_string();
    assert!(
        location.starts_with("https://giao.example/oa/callback?"),
        "{location}"
    );
    let query: std::collections::HashMap<String, String> = location
        .split_once('?')
        .expect("query")
        .1
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(query["state"], begun.state);
    let account = admin
        .complete_oa_connect(CompleteOaConnectRequest {
            code: query["code"].clone(),
            state: query["state"].clone(),
            oa_id: query["oa_id"].clone(),
        })
        .await
        .expect("completes the connect")
        .into_inner();
    assert_eq!(account.status, AccountStatus::Connected as i32);
    assert_eq!(account.external_id, sim.config().oa_id);
    // The state is single use.
    let error = admin
        .complete_oa_connect(CompleteOaConnectRequest {
            code: query["code"].clone(),
            state: query["state"].clone(),
            oa_id: query["oa_id"].clone(),
        })
        .await
        .expect_err("state reused");
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert!(error.message().contains("state"), "{}", error.message());
    account.channel_account_id
}

fn oa_connector_config(
    mut config: giao_connector::Config,
    sim: &giao_connector::zalo::sim::OaSimulator,
) -> giao_connector::Config {
    config.zalo_oa.oauth_base_url = sim.base_url();
    config.zalo_oa.api_base_url = sim.base_url();
    config.zalo_oa.app_id = sim.config().app_id.clone();
    config.zalo_oa.app_secret = sim.config().app_secret.clone();
    config.zalo_oa.oa_secret_key = sim.config().oa_secret_key.clone();
    config.outbound_ack_wait_secs = 3;
    config.zalo_oa.request_timeout_ms = 1_500;
    // Zalo's window is a minute; after a -32 tests wait one second.
    config.zalo_oa.rate_limit_pause_ms = 1_000;
    config
}

/// Waits until `check` holds for the message `message_id`.
async fn wait_for_message(
    store: &Running,
    message_id: &str,
    what: &str,
    check: impl Fn(&Message) -> bool,
) -> Message {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let messages = all_messages(store).await;
        if let Some(message) = messages.iter().find(|m| m.message_id == message_id)
            && check(message)
        {
            return message.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {:?}",
            messages.iter().find(|m| m.message_id == message_id)
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

async fn oa_connect_reply_and_refresh(backend: BackendKind) {
    use giao_connector::zalo::sim::{OaSimulator, SimConfig};
    use giao_proto::common::DeliveryStatus;

    let mut backend = Backend::new(backend).await;
    let stop_sim = tokio_util::sync::CancellationToken::new();
    let sim = OaSimulator::start(
        SimConfig::default(),
        "127.0.0.1:0".parse().expect("addr"),
        stop_sim.clone(),
    )
    .await
    .expect("simulator starts");
    let store = start_message_store(message_store_config(&mut backend).await).await;
    let config = oa_connector_config(connector_config(&mut backend).await, &sim);
    let connector = start_connector_with_http(config.clone()).await;
    let account = connect_oa(&connector, &sim).await;
    let webhook = |connector: &Running| {
        format!(
            "http://{}/webhooks/zalo-oa/{TENANT}/{account}",
            connector.metrics_addr.expect("HTTP listener")
        )
    };

    // A customer writes; the conversation appears in message-store.
    let hello = sim.user_event(
        "user_send_text",
        "zu-42",
        json!({"msg_id": "in-1", "text": "Shop ơi"}),
    );
    assert_eq!(
        sim.push(&webhook(&connector), &hello, 0)
            .await
            .expect("push"),
        200
    );
    let conversation_id = first_conversation(&store).await;

    // A staff reply goes out through the OA API, comes back sent, then seen.
    let recorded = record_reply(&store, &conversation_id, "r-1", "Dạ shop đây ạ").await;
    let sent = wait_for_message(&store, &recorded.message_id, "reply sent", |m| {
        m.delivery_status == DeliveryStatus::Sent as i32 && !m.external_message_id.is_empty()
    })
    .await;
    let delivered = sim.sent();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0].user_id, "zu-42");
    assert_eq!(delivered[0].message["text"], "Dạ shop đây ạ");
    assert_eq!(delivered[0].message_id, sent.external_message_id);
    let seen = sim.user_event(
        "user_seen_message",
        "zu-42",
        json!({"msg_ids": [sent.external_message_id]}),
    );
    assert_eq!(
        sim.push(&webhook(&connector), &seen, 0)
            .await
            .expect("push"),
        200
    );
    wait_for_message(&store, &recorded.message_id, "reply seen", |m| {
        m.delivery_status == DeliveryStatus::Seen as i32
    })
    .await;

    // The same request delivered again (e.g. a replica died before acking): not sent twice.
    let bus = giao_bus::connect(&backend.bus).await.expect("bus");
    giao_bus::envelope::EventPublisher::new(bus, "test")
        .publish(
            TENANT,
            format!("outbound-requested-again-{}", recorded.message_id),
            giao_proto::events::envelope::Payload::OutboundRequested(
                giao_proto::events::OutboundRequested {
                    message_id: recorded.message_id.clone(),
                    conversation_id: conversation_id.clone(),
                    channel_account_id: account.clone(),
                    external_thread_id: "zu-42".into(),
                    content: recorded.content.clone(),
                    ..Default::default()
                },
            ),
        )
        .await
        .expect("publishes the duplicate");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(sim.sent().len(), 1, "sent twice: {:?}", sim.sent());

    // Outside the 7-day window: failed with a clear reason, sent once, never retried.
    sim.fail_next(&[-230]);
    let late = record_reply(&store, &conversation_id, "r-2", "Còn đó không ạ?").await;
    let failed = wait_for_message(&store, &late.message_id, "window failure", |m| {
        m.delivery_status == DeliveryStatus::Failed as i32
    })
    .await;
    assert!(
        failed.failure_reason.contains("7-day"),
        "{}",
        failed.failure_reason
    );
    // A rate limit is retried and then goes out.
    sim.fail_next(&[-32]);
    let paced = record_reply(&store, &conversation_id, "r-3", "Shop gửi bạn bảng giá").await;
    wait_for_message(&store, &paced.message_id, "sent after a rate limit", |m| {
        m.delivery_status == DeliveryStatus::Sent as i32
    })
    .await;
    assert_eq!(sim.sent().len(), 2);

    // The access token expires: refreshed (single-use refresh token rotated), message sent.
    sim.expire_access_tokens();
    let after_expiry =
        record_reply(&store, &conversation_id, "r-4", "Bạn cần thêm gì không?").await;
    wait_for_message(
        &store,
        &after_expiry.message_id,
        "sent after a refresh",
        |m| m.delivery_status == DeliveryStatus::Sent as i32,
    )
    .await;
    assert_eq!(sim.refreshes(), 1);

    // Restart the connector, expire again: the refresh uses the rotated token it persisted
    // (the first one is spent at Zalo), so sending still works.
    connector.stop().await.expect("connector stops");
    let connector = start_connector_with_http(config).await;
    sim.expire_access_tokens();
    let after_restart = record_reply(&store, &conversation_id, "r-5", "Cảm ơn bạn!").await;
    wait_for_message(
        &store,
        &after_restart.message_id,
        "sent after restart",
        |m| m.delivery_status == DeliveryStatus::Sent as i32,
    )
    .await;
    assert_eq!(sim.refreshes(), 2);
    assert_eq!(sim.sent().len(), 4);
    let status = connector_client(&connector, TENANT, "admin")
        .await
        .account_status(AccountStatusRequest {
            channel_account_id: account.clone(),
        })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.status, AccountStatus::Connected as i32);

    // Zalo is too slow to answer: the outcome is unknown, so the message is reported failed
    // and never sent a second time.
    sim.set_delay(Duration::from_secs(3));
    let slow = record_reply(&store, &conversation_id, "r-6", "Shop gửi lại nhé").await;
    let failed = wait_for_message(&store, &slow.message_id, "unknown outcome", |m| {
        m.delivery_status == DeliveryStatus::Failed as i32
    })
    .await;
    assert!(
        failed.failure_reason.contains("unknown"),
        "{}",
        failed.failure_reason
    );
    sim.set_delay(Duration::ZERO);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(sim.sent().len(), 4, "the slow message was sent again");

    connector.stop().await.expect("connector stops");
    store.stop().await.expect("message-store stops");
    stop_sim.cancel();
}

/// The simulator keeps Zalo's protocol: PKCE is checked, codes and refresh tokens are single
/// use, `expires_in` is a string, errors are `{"error":<negative>}`, and the control
/// endpoints of the binary set faults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oa_simulator_protocol() {
    use giao_connector::zalo::{
        client::{CallError, OaClient, ZaloOaConfig},
        http::{HttpClient, Method},
        sim::{OaSimulator, SimConfig},
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let sim = OaSimulator::start(
        SimConfig::default(),
        "127.0.0.1:0".parse().expect("addr"),
        stop.clone(),
    )
    .await
    .expect("starts");
    let config = ZaloOaConfig {
        oauth_base_url: sim.base_url(),
        api_base_url: sim.base_url(),
        ..Default::default()
    };
    let client = OaClient::new(&config);
    let app = sim.config().clone();
    let http = HttpClient::new(Duration::from_secs(5));
    let authorize = |challenge: &str| {
        client.authorize_url(&app.app_id, "https://giao.example/cb", "s1", challenge)
    };
    let code_of = |location: &str| {
        location
            .split(['?', '&'])
            .find_map(|pair| pair.strip_prefix("code="))
            .expect("code")
            .to_string()
    };
    // A verifier that does not match the challenge is refused, and the code is then spent.
    let answer = http
        .request(
            Method::GET,
            &authorize("not-the-challenge"),
            &[],
            Vec::new(),
        )
        .await
        .expect("authorize");
    let code = code_of(answer.headers["location"].to_str().expect("location"));
    let refused = client
        .exchange_code(&app.app_id, &app.app_secret, &code, "verifier")
        .await;
    assert!(
        matches!(refused, Err(CallError::Zalo { code, .. }) if code < 0),
        "{refused:?}"
    );
    let spent = client
        .exchange_code(&app.app_id, &app.app_secret, &code, "verifier")
        .await;
    assert!(matches!(spent, Err(CallError::Zalo { .. })));

    // Refresh tokens are single use; each refresh returns a new one.
    let (_, refresh) = sim.issue_tokens();
    let first = client
        .refresh(&app.app_id, &app.app_secret, &refresh)
        .await
        .expect("refreshes");
    assert_eq!(first.expires_in, 90_000);
    assert_ne!(first.refresh_token, refresh);
    assert!(
        client
            .refresh(&app.app_id, &app.app_secret, &refresh)
            .await
            .is_err(),
        "reused refresh token"
    );
    assert!(
        client
            .refresh(&app.app_id, "wrong-secret", &first.refresh_token)
            .await
            .is_err()
    );

    // Faults through the binary's control endpoint, then a clean send.
    let faults = http
        .request(
            Method::POST,
            &format!("{}/sim/faults", sim.base_url()),
            &[("content-type", "application/json")],
            json!({"next_errors": [-217]}).to_string().into_bytes(),
        )
        .await
        .expect("sets faults");
    assert_eq!(faults.status, 204);
    let blocked = client
        .send_cs(&first.access_token, "zu-1", json!({"text": "hi"}))
        .await;
    assert!(
        matches!(blocked, Err(CallError::Zalo { code: -217, .. })),
        "{blocked:?}"
    );
    let answer = client
        .send_cs(&first.access_token, "zu-1", json!({"text": "hi"}))
        .await
        .expect("sends");
    let id = answer.value;
    // Every answer carries Zalo's rate-limit headers.
    let rate = answer.rate.expect("rate-limit headers");
    assert_eq!(rate.limit, 4000);
    assert!(rate.remain < rate.limit);
    let sent = http
        .request(
            Method::GET,
            &format!("{}/sim/sent", sim.base_url()),
            &[],
            Vec::new(),
        )
        .await
        .expect("lists sent");
    let sent: serde_json::Value = serde_json::from_slice(&sent.body).expect("json");
    assert_eq!(sent["sent"].as_array().map(Vec::len), Some(1));
    assert_eq!(sent["sent"][0]["message_id"], id.as_str());
    let invalid = client
        .send_cs("not-a-token", "zu-1", json!({"text": "hi"}))
        .await;
    assert!(
        matches!(invalid, Err(CallError::Zalo { code: -216, .. })),
        "{invalid:?}"
    );

    // The rate-limit knob of the control endpoint: one request per window, then -32.
    let faults = http
        .request(
            Method::POST,
            &format!("{}/sim/faults", sim.base_url()),
            &[("content-type", "application/json")],
            json!({"rate_per_minute": 1, "rate_window_ms": 60_000})
                .to_string()
                .into_bytes(),
        )
        .await
        .expect("sets faults");
    assert_eq!(faults.status, 204);
    let last = client
        .send_cs(&first.access_token, "zu-1", json!({"text": "hi"}))
        .await
        .expect("the window's one request");
    assert_eq!(last.rate.map(|rate| rate.remain), Some(0));
    let over = client
        .send_cs(&first.access_token, "zu-1", json!({"text": "hi"}))
        .await;
    assert!(
        matches!(over, Err(CallError::Zalo { code: -32, .. })),
        "{over:?}"
    );
    assert_eq!(sim.rate_limited(), 1);
    stop.cancel();
}

/// A 1×1 PNG, as a staff member would attach.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4,
    0x89, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0xF8, 0xCF, 0xC0, 0xF0,
    0x1F, 0x00, 0x05, 0x00, 0x01, 0xFF, 0x89, 0x99, 0x3D, 0x1D, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
];

/// Uploads `data` to message-store as a staff member would before sending it.
async fn store_attachment(
    store: &Running,
    name: &str,
    mime_type: &str,
    data: &[u8],
) -> giao_proto::common::Attachment {
    use giao_proto::messagestore::{
        AttachmentInfo, UploadAttachmentRequest, upload_attachment_request::Part,
    };
    let parts = vec![
        Part::Info(AttachmentInfo {
            name: name.into(),
            mime_type: mime_type.into(),
            source_url: String::new(),
        }),
        Part::Data(data.to_vec()),
    ];
    message_store_client(store, TENANT, "admin")
        .await
        .upload_attachment(futures::stream::iter(
            parts
                .into_iter()
                .map(|part| UploadAttachmentRequest { part: Some(part) })
                .collect::<Vec<_>>(),
        ))
        .await
        .expect("uploads to message-store")
        .into_inner()
}

/// Outbound images and files (uploaded to Zalo, then sent with the attachment id or token),
/// customers' profiles on their contacts, follows with their source, Zalo's rate-limit
/// headers honoured, and SendMessage pointing to the recorded path.
async fn oa_media_profiles_and_rate_limits(backend: BackendKind) {
    use futures::StreamExt;
    use giao_connector::zalo::sim::{OaSimulator, SimConfig, SimProfile};
    use giao_proto::{
        common::{DeliveryStatus, MessageContent},
        connector::SendMessageRequest,
        events::envelope::Payload,
        messagestore::{GetContactRequest, RecordOutboundRequest},
    };

    let mut backend = Backend::new(backend).await;
    let stop_sim = tokio_util::sync::CancellationToken::new();
    let sim = OaSimulator::start(
        SimConfig::default(),
        "127.0.0.1:0".parse().expect("addr"),
        stop_sim.clone(),
    )
    .await
    .expect("simulator starts");
    let store_config = message_store_config(&mut backend).await;
    let attachments_dir = store_config.attachments_dir.clone();
    let store = start_message_store(store_config).await;
    let mut config = oa_connector_config(connector_config(&mut backend).await, &sim);
    config.attachments_dir = attachments_dir;
    config.zalo_oa.rate_limit_pause_ms = 2_000;
    // Pacing per account would hide Zalo's own limit in this test.
    config.zalo_oa.default_send_rate_per_minute = 6_000;
    let connector = start_connector_with_http(config).await;
    let account = connect_oa(&connector, &sim).await;
    let webhook = format!(
        "http://{}/webhooks/zalo-oa/{TENANT}/{account}",
        connector.metrics_addr.expect("HTTP listener")
    );
    let bus = giao_bus::connect(&backend.bus).await.expect("bus");
    let mut follows =
        giao_tests::subscribe_events(bus.as_ref(), "test-follows", "follow_changed").await;

    // A new customer writes: their contact carries their Zalo name, fetched once.
    sim.set_profile(
        "zu-7",
        SimProfile {
            display_name: "Nguyễn Thị Lan".into(),
            avatar: "https://zalo.example/avatar/zu-7.jpg".into(),
            is_follower: true,
        },
    );
    for (id, text) in [("in-7a", "Chào shop"), ("in-7b", "Còn áo size M không?")] {
        let event = sim.user_event(
            "user_send_text",
            "zu-7",
            json!({"msg_id": id, "text": text}),
        );
        assert_eq!(sim.push(&webhook, &event, 0).await.expect("push"), 200);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let conversation = loop {
        let conversations = message_store_client(&store, TENANT, "admin")
            .await
            .list_conversations(ListConversationsRequest::default())
            .await
            .expect("lists")
            .into_inner()
            .conversations;
        if let Some(conversation) = conversations.into_iter().next() {
            break conversation;
        }
        assert!(tokio::time::Instant::now() < deadline, "no conversation");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let contact = message_store_client(&store, TENANT, "admin")
        .await
        .get_contact(GetContactRequest {
            contact_id: conversation.contact_id.clone(),
        })
        .await
        .expect("contact")
        .into_inner();
    assert_eq!(contact.display_name, "Nguyễn Thị Lan");
    assert_eq!(sim.profile_requests(), 1, "the profile is fetched once");

    // A follow from the OA's QR code: published with the source and the follower's name.
    sim.set_profile(
        "zu-8",
        SimProfile {
            display_name: "Trần Văn Minh".into(),
            avatar: String::new(),
            is_follower: true,
        },
    );
    let follow = sim.follow_event(true, "zu-8", "oa_qr");
    assert_eq!(sim.push(&webhook, &follow, 0).await.expect("push"), 200);
    let unfollow = sim.follow_event(false, "zu-8", "");
    assert_eq!(sim.push(&webhook, &unfollow, 0).await.expect("push"), 200);
    let mut changes = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while changes.len() < 2 && tokio::time::Instant::now() < deadline {
        let Ok(Some(Ok(delivery))) =
            tokio::time::timeout(Duration::from_millis(500), follows.next()).await
        else {
            continue;
        };
        let (envelope, _) = giao_bus::envelope::decode(&delivery).expect("decodes");
        if let Some(Payload::FollowChanged(change)) = envelope.payload {
            let user = change.user.unwrap_or_default();
            changes.push((
                change.following,
                change.source,
                user.external_user_id,
                user.display_name,
            ));
        }
        delivery.ack().await.expect("acks");
    }
    assert_eq!(
        changes,
        vec![
            (
                true,
                "oa_qr".to_string(),
                "zu-8".to_string(),
                "Trần Văn Minh".to_string()
            ),
            (
                false,
                String::new(),
                "zu-8".to_string(),
                "Trần Văn Minh".to_string()
            ),
        ]
    );

    // An image and a file recorded in message-store reach the customer: uploaded to Zalo,
    // then sent with the attachment id / token Zalo answered, and come back as sent.
    let mut staff = message_store_client(&store, TENANT, "admin").await;
    let send = |key: &str,
                kind: ContentType,
                text: &str,
                attachment: Option<giao_proto::common::Attachment>| {
        RecordOutboundRequest {
            conversation_id: conversation.conversation_id.clone(),
            content: Some(MessageContent {
                r#type: kind as i32,
                text: text.into(),
                attachments: attachment.into_iter().collect(),
                ..Default::default()
            }),
            quote_message_id: String::new(),
            idempotency_key: key.into(),
        }
    };
    let photo = store_attachment(&store, "ao-mau", "image/png", PNG).await;
    let recorded = staff
        .record_outbound(send(
            "img-1",
            ContentType::Image,
            "Mẫu áo bạn hỏi",
            Some(photo.clone()),
        ))
        .await
        .expect("records the image")
        .into_inner()
        .message
        .expect("message");
    let sent = wait_for_message(&store, &recorded.message_id, "image sent", |m| {
        m.delivery_status == DeliveryStatus::Sent as i32
    })
    .await;
    let uploads = sim.uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].data, PNG, "the stored bytes were uploaded");
    assert_eq!(uploads[0].name, "ao-mau.png");
    let delivered = sim.sent();
    let image = delivered.last().expect("sent");
    assert_eq!(image.message_id, sent.external_message_id);
    assert_eq!(image.user_id, "zu-7");
    assert_eq!(image.message["text"], "Mẫu áo bạn hỏi");
    assert_eq!(
        image.message["attachment"]["payload"]["elements"][0]["attachment_id"],
        uploads[0].id.as_str()
    );

    let pdf = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n";
    let quote = store_attachment(&store, "Báo giá tháng 11.pdf", "application/pdf", pdf).await;
    let recorded = staff
        .record_outbound(send("file-1", ContentType::File, "", Some(quote)))
        .await
        .expect("records the file")
        .into_inner()
        .message
        .expect("message");
    wait_for_message(&store, &recorded.message_id, "file sent", |m| {
        m.delivery_status == DeliveryStatus::Sent as i32
    })
    .await;
    let uploads = sim.uploads();
    assert_eq!(uploads.len(), 2);
    assert_eq!(uploads[1].data, pdf);
    assert_eq!(uploads[1].name, "Báo giá tháng 11.pdf");
    let file = sim.sent().last().cloned().expect("sent");
    assert_eq!(file.message["attachment"]["type"], "file");
    assert_eq!(
        file.message["attachment"]["payload"]["token"],
        uploads[1].id.as_str()
    );

    // The upload expired before the send (-100): uploaded again and sent once.
    sim.expire_uploads(1);
    let sent_before = sim.sent().len();
    let recorded = staff
        .record_outbound(send("img-2", ContentType::Image, "", Some(photo)))
        .await
        .expect("records")
        .into_inner()
        .message
        .expect("message");
    wait_for_message(&store, &recorded.message_id, "sent after re-upload", |m| {
        m.delivery_status == DeliveryStatus::Sent as i32
    })
    .await;
    assert_eq!(sim.uploads().len(), 3, "uploaded again");
    assert_eq!(sim.sent().len(), sent_before + 1);

    // What Zalo cannot take fails at once, with the reason, and nothing is uploaded.
    let gif = store_attachment(&store, "vui.gif", "image/gif", b"GIF89a\x01\x00\x01\x00").await;
    let recorded = staff
        .record_outbound(send("img-3", ContentType::Image, "", Some(gif)))
        .await
        .expect("records")
        .into_inner()
        .message
        .expect("message");
    let failed = wait_for_message(&store, &recorded.message_id, "gif refused", |m| {
        m.delivery_status == DeliveryStatus::Failed as i32
    })
    .await;
    assert!(
        failed.failure_reason.contains("JPG or PNG"),
        "{}",
        failed.failure_reason
    );
    assert_eq!(sim.uploads().len(), 3);

    // Zalo allows 3 requests per window: the connector stops at "X-RateLimit-Remain: 0",
    // shows the account as rate limited, and resumes after the window without a -32.
    sim.set_rate_window(3, Duration::from_secs(2));
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            staff
                .record_outbound(send(
                    &format!("burst-{n}"),
                    ContentType::Text,
                    &format!("Tin {n}"),
                    None,
                ))
                .await
                .expect("records")
                .into_inner()
                .message
                .expect("message")
                .message_id,
        );
    }
    let mut connector_admin = connector_client(&connector, TENANT, "admin").await;
    let mut statuses = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = connector_admin
            .account_status(AccountStatusRequest {
                channel_account_id: account.clone(),
            })
            .await
            .expect("status")
            .into_inner();
        if statuses.last().map(|(s, _)| *s) != Some(status.status) {
            statuses.push((status.status, status.reason));
        }
        let messages = all_messages(&store).await;
        let sent = ids
            .iter()
            .filter(|id| {
                messages.iter().any(|m| {
                    &m.message_id == *id && m.delivery_status == DeliveryStatus::Sent as i32
                })
            })
            .count();
        if sent == ids.len() && status.status == AccountStatus::Connected as i32 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sent} of 5 sent; statuses {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let limited = statuses
        .iter()
        .find(|(status, _)| *status == AccountStatus::RateLimited as i32)
        .unwrap_or_else(|| panic!("never shown rate limited: {statuses:?}"));
    assert!(limited.1.contains("rate limit"), "{}", limited.1);
    assert_eq!(
        sim.rate_limited(),
        0,
        "the connector sent past Zalo's limit"
    );

    // SendMessage would bypass the record: it points to RecordOutbound instead.
    let refused = connector_admin
        .send_message(SendMessageRequest {
            channel_account_id: account.clone(),
            external_thread_id: "zu-7".into(),
            content: Some(MessageContent {
                r#type: ContentType::Text as i32,
                text: "xin chào".into(),
                ..Default::default()
            }),
            idempotency_key: "direct-1".into(),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("RecordOutbound"),
        "{}",
        refused.message()
    );
    let denied = connector_client(&connector, TENANT, "auditor")
        .await
        .send_message(SendMessageRequest::default())
        .await
        .expect_err("auditors may not send");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);

    connector.stop().await.expect("connector stops");
    store.stop().await.expect("message-store stops");
    stop_sim.cancel();
}

/// The OA client speaks https as Zalo's hosts require: the certificate is verified against
/// the trusted roots (a simulator certificate from a test CA, given as an extra root), and a
/// server it does not trust is refused before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oa_client_over_https() {
    use giao_connector::zalo::{
        client::{CallError, OaClient, UploadKind, ZaloOaConfig},
        http::HttpError,
        sim::{OaSimulator, SimConfig, SimProfile},
    };
    let testdata = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../services/connector/testdata"
    );
    let read = |name: &str| std::fs::read(format!("{testdata}/{name}")).expect("test certificate");
    let stop = tokio_util::sync::CancellationToken::new();
    let sim = OaSimulator::start_tls(
        SimConfig::default(),
        "127.0.0.1:0".parse().expect("addr"),
        stop.clone(),
        &read("zalo-sim-localhost.pem"),
        &read("zalo-sim-localhost.key"),
    )
    .await
    .expect("starts with TLS");
    assert!(sim.base_url().starts_with("https://"), "{}", sim.base_url());
    let config = ZaloOaConfig {
        oauth_base_url: sim.base_url(),
        api_base_url: sim.base_url(),
        extra_root_certs_pem: format!("{testdata}/zalo-sim-ca.pem"),
        request_timeout_ms: 5_000,
        ..Default::default()
    };
    let client = OaClient::new(&config);
    let app = sim.config().clone();
    let (_, refresh) = sim.issue_tokens();
    let tokens = client
        .refresh(&app.app_id, &app.app_secret, &refresh)
        .await
        .expect("refreshes over https");
    let uploaded = client
        .upload(
            &tokens.access_token,
            UploadKind::Image,
            "a.png",
            "image/png",
            PNG,
        )
        .await
        .expect("uploads over https");
    let sent = client
        .send_cs(
            &tokens.access_token,
            "zu-1",
            json!({"attachment": {"type": "template", "payload": {"template_type": "media",
                "elements": [{"media_type": "image", "attachment_id": uploaded.value}]}}}),
        )
        .await
        .expect("sends over https");
    assert_eq!(sim.sent()[0].message_id, sent.value);
    assert_eq!(sim.uploads()[0].data, PNG);
    sim.set_profile(
        "zu-1",
        SimProfile {
            display_name: "Lê Hoa".into(),
            avatar: String::new(),
            is_follower: false,
        },
    );
    let profile = client
        .user_detail(&tokens.access_token, "zu-1")
        .await
        .expect("profile over https");
    assert_eq!(profile.value.display_name, "Lê Hoa");
    assert!(!profile.value.is_follower);

    // Without the test CA the simulator's certificate is not trusted: refused at the
    // handshake, reported as "could not connect" (nothing was sent, safe to retry).
    let untrusting = OaClient::new(&ZaloOaConfig {
        extra_root_certs_pem: String::new(),
        ..config.clone()
    });
    let refused = untrusting
        .send_cs(&tokens.access_token, "zu-1", json!({"text": "hi"}))
        .await;
    assert!(
        matches!(&refused, Err(CallError::Http(HttpError::Connect(reason))) if reason.contains("TLS")),
        "{refused:?}"
    );
    assert_eq!(sim.sent().len(), 1);
    // A PEM file that is not one is a configuration error, not a silent fallback.
    let bad = ZaloOaConfig {
        extra_root_certs_pem: format!("{testdata}/zalo-sim-localhost.key"),
        ..Default::default()
    };
    assert!(bad.extra_roots().is_err());
    stop.cancel();
}

/// The tenant's first conversation, once message-store has one.
async fn first_conversation(store: &Running) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let conversations = message_store_client(store, TENANT, "admin")
            .await
            .list_conversations(ListConversationsRequest::default())
            .await
            .expect("lists")
            .into_inner()
            .conversations;
        if let Some(conversation) = conversations.first() {
            return conversation.conversation_id.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no conversation");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A staff member's text reply, recorded through message-store as the UI records it.
async fn record_reply(store: &Running, conversation_id: &str, key: &str, text: &str) -> Message {
    use giao_proto::{common::MessageContent, messagestore::RecordOutboundRequest};
    message_store_client(store, TENANT, "admin")
        .await
        .record_outbound(RecordOutboundRequest {
            conversation_id: conversation_id.to_string(),
            content: Some(MessageContent {
                r#type: ContentType::Text as i32,
                text: text.into(),
                ..Default::default()
            }),
            quote_message_id: String::new(),
            idempotency_key: key.into(),
        })
        .await
        .expect("records the reply")
        .into_inner()
        .message
        .expect("message")
}

async fn start_oa_sim() -> (
    giao_connector::zalo::sim::OaSimulator,
    tokio_util::sync::CancellationToken,
) {
    let stop = tokio_util::sync::CancellationToken::new();
    let sim = giao_connector::zalo::sim::OaSimulator::start(
        giao_connector::zalo::sim::SimConfig::default(),
        "127.0.0.1:0".parse().expect("addr"),
        stop.clone(),
    )
    .await
    .expect("simulator starts");
    (sim, stop)
}

async fn account_status(connector: &Running, account: &str) -> i32 {
    connector_client(connector, TENANT, "admin")
        .await
        .account_status(AccountStatusRequest {
            channel_account_id: account.to_string(),
        })
        .await
        .expect("status")
        .into_inner()
        .status
}

/// Every replica asks for a refreshed token at once.
async fn race_refreshes(
    replicas: &[giao_connector::zalo::outbound::OaRuntime],
    account: &str,
) -> Vec<Result<String, giao_connector::zalo::outbound::OaError>> {
    let racers: Vec<_> = replicas
        .iter()
        .cloned()
        .map(|replica| {
            let account = account.to_string();
            tokio::spawn(async move { replica.access_token(TENANT, &account, true).await })
        })
        .collect();
    let mut results = Vec::new();
    for racer in racers {
        results.push(racer.await.expect("joins"));
    }
    results
}

/// `count` OA runtimes, each with its own connections, as separate processes have.
async fn oa_replicas(
    config: &giao_connector::Config,
    backend: &Backend,
    count: usize,
) -> Vec<giao_connector::zalo::outbound::OaRuntime> {
    use giao_connector::{
        credentials::Sealer, store::AccountStore, zalo::media::Objects, zalo::outbound::OaRuntime,
    };
    let bus = giao_bus::connect(&backend.bus).await.expect("bus");
    let mut replicas = Vec::new();
    for _ in 0..count {
        let database = Database::connect(&config.database).await.expect("connects");
        replicas.push(OaRuntime::new(
            AccountStore::new(database),
            Sealer::from_config(&config.credentials).expect("keys"),
            config.zalo_oa.clone(),
            giao_bus::envelope::EventPublisher::new(bus.clone(), "connector"),
            Objects::local(&backend.files.path().display().to_string()),
        ));
    }
    replicas
}

/// A claim held by a replica gone silent keeps the others from presenting the refresh token,
/// and they give up for now within about a request timeout (the message is retried) rather
/// than wait the claim out; a refresh that goes through leaves the account connected. Only
/// a refused refresh token needs a new connect: a rate limit or a system error answered by
/// the token endpoint is retried with the same token.
async fn oa_refresh_claims_and_refusals(backend: BackendKind) {
    use giao_connector::{
        store::AccountStore,
        zalo::{client::CallError, outbound::OaError},
    };

    let mut backend = Backend::new(backend).await;
    let (sim, stop_sim) = start_oa_sim().await;
    let config = oa_connector_config(connector_config(&mut backend).await, &sim);
    let connector = start_connector_with_http(config.clone()).await;
    let account = connect_oa(&connector, &sim).await;
    let replica = oa_replicas(&config, &backend, 1).await.remove(0);
    let accounts = AccountStore::new(Database::connect(&config.database).await.expect("connects"));

    let (_, version) = accounts
        .versioned_credentials(TENANT, &account)
        .await
        .expect("reads")
        .expect("credentials");
    assert!(
        accounts
            .claim_refresh(
                TENANT,
                &account,
                version,
                "silent",
                Duration::from_secs(300)
            )
            .await
            .expect("claims")
    );
    let asked = tokio::time::Instant::now();
    let busy = replica.access_token(TENANT, &account, true).await;
    assert!(matches!(busy, Err(OaError::RefreshBusy)), "{busy:?}");
    // The request timeout is 1.5 s here; the claim would hold for minutes.
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "waited {:?}",
        asked.elapsed()
    );
    assert_eq!(sim.refresh_attempts(), 0);

    // The claim ends. A replica that had presented a spent token put the account in
    // needs_login meanwhile; the refresh that goes through shows it connected.
    accounts
        .release_refresh(TENANT, &account, "silent")
        .await
        .expect("releases");
    accounts
        .set_status(
            TENANT,
            &account,
            AccountStatus::NeedsLogin as i32,
            "the OA must be connected again",
            false,
        )
        .await
        .expect("status");
    replica
        .access_token(TENANT, &account, true)
        .await
        .expect("refreshes");
    assert_eq!(
        account_status(&connector, &account).await,
        AccountStatus::Connected as i32
    );
    assert_eq!((sim.refresh_attempts(), sim.refreshes()), (1, 1));

    // Zalo's rate limit, a system error: the refresh fails now and works on the next try.
    for code in [-32, -1] {
        sim.fail_next_refreshes(&[code]);
        let failed = replica.access_token(TENANT, &account, true).await;
        assert!(
            matches!(&failed, Err(OaError::Call(CallError::Zalo { code: answered, .. })) if *answered == code),
            "{failed:?}"
        );
        assert_eq!(
            account_status(&connector, &account).await,
            AccountStatus::Connected as i32,
            "{code}"
        );
        replica
            .access_token(TENANT, &account, true)
            .await
            .expect("refreshes on the next try");
    }
    assert_eq!((sim.refresh_attempts(), sim.refreshes()), (5, 3));

    // A refresh token Zalo refuses (the simulator answers -14014) is written off.
    sim.revoke_refresh_tokens();
    let refused = replica.access_token(TENANT, &account, true).await;
    assert!(
        matches!(refused, Err(OaError::NoCredentials)),
        "{refused:?}"
    );
    assert_eq!(
        account_status(&connector, &account).await,
        AccountStatus::NeedsLogin as i32
    );

    connector.stop().await.expect("connector stops");
    stop_sim.cancel();
}

/// Two replicas need a fresh OA token at the same moment (the session holder's refresher
/// and another replica's send): Zalo sees the single-use refresh token once, both replicas
/// end up with the same working token, and the account stays connected.
async fn oa_refresh_race_between_replicas(backend: BackendKind) {
    use giao_connector::zalo::{client::OaClient, outbound::OaError};

    let mut backend = Backend::new(backend).await;
    let (sim, stop_sim) = start_oa_sim().await;
    let config = oa_connector_config(connector_config(&mut backend).await, &sim);
    let connector = start_connector_with_http(config.clone()).await;
    let account = connect_oa(&connector, &sim).await;

    let replicas = oa_replicas(&config, &backend, 2).await;
    // Zalo takes its time answering, so each replica asks while the other's call is open.
    sim.set_token_delay(Duration::from_millis(400));
    let tokens: Vec<String> = race_refreshes(&replicas, &account)
        .await
        .into_iter()
        .map(|token| token.expect("each replica gets a token"))
        .collect();
    assert_eq!(
        sim.refresh_attempts(),
        1,
        "the single-use refresh token was presented more than once"
    );
    assert_eq!(sim.refreshes(), 1);
    assert_eq!(tokens[0], tokens[1]);
    OaClient::new(&config.zalo_oa)
        .send_cs(&tokens[0], "zu-1", json!({"text": "Chào bạn"}))
        .await
        .expect("the refreshed token is accepted by Zalo");
    assert_eq!(
        account_status(&connector, &account).await,
        AccountStatus::Connected as i32
    );

    // The rotated refresh token was stored: the next refresh, from the other replica, works.
    sim.set_token_delay(Duration::ZERO);
    let again = replicas[1]
        .access_token(TENANT, &account, true)
        .await
        .expect("refreshes again");
    assert_ne!(again, tokens[0]);
    assert_eq!((sim.refresh_attempts(), sim.refreshes()), (2, 2));
    assert_eq!(
        account_status(&connector, &account).await,
        AccountStatus::Connected as i32
    );

    // The OA's admin withdrew the permission: the racing refreshes are refused once, both
    // replicas learn it, and nobody presents the spent token again until a new connect.
    sim.revoke_refresh_tokens();
    sim.set_token_delay(Duration::from_millis(400));
    for refused in race_refreshes(&replicas, &account).await {
        assert!(
            matches!(refused, Err(OaError::NoCredentials)),
            "{refused:?}"
        );
    }
    assert!(matches!(
        replicas[0].access_token(TENANT, &account, true).await,
        Err(OaError::NoCredentials)
    ));
    assert_eq!(sim.refresh_attempts(), 3);
    assert_eq!(
        account_status(&connector, &account).await,
        AccountStatus::NeedsLogin as i32
    );
    sim.set_token_delay(Duration::ZERO);
    assert_eq!(connect_oa(&connector, &sim).await, account);
    let connected = replicas[0]
        .access_token(TENANT, &account, true)
        .await
        .expect("refreshes after the new connect");
    OaClient::new(&config.zalo_oa)
        .send_cs(&connected, "zu-1", json!({"text": "Chào bạn"}))
        .await
        .expect("the new token is accepted by Zalo");
    assert_eq!((sim.refresh_attempts(), sim.refreshes()), (4, 3));

    connector.stop().await.expect("connector stops");
    stop_sim.cancel();
}

/// Replies on a `simulator` account (as in `giao dev`) come back sent, and a reply that
/// asks something gets the scripted customer's answer.
async fn simulator_channel_replies(backend: BackendKind) {
    use giao_proto::{
        common::{ChannelUser, DeliveryStatus, MessageContent},
        connector::SimulateInboundRequest,
    };

    let mut backend = Backend::new(backend).await;
    let store = start_message_store(message_store_config(&mut backend).await).await;
    let connector = start_connector_with_http(connector_config(&mut backend).await).await;
    let mut admin = connector_client(&connector, TENANT, "admin").await;
    let account = admin
        .create_account(CreateAccountRequest {
            kind: ChannelKind::Simulator as i32,
            display_name: "Demo shop".into(),
            ..Default::default()
        })
        .await
        .expect("creates the simulator account")
        .into_inner()
        .channel_account_id;
    admin
        .simulate_inbound(SimulateInboundRequest {
            channel_account_id: account.clone(),
            customer: Some(ChannelUser {
                external_user_id: "cust-lan".into(),
                display_name: "Nguyễn Thị Lan".into(),
                ..Default::default()
            }),
            content: Some(MessageContent {
                r#type: ContentType::Text as i32,
                text: "Shop còn size M không?".into(),
                ..Default::default()
            }),
            external_message_id: String::new(),
        })
        .await
        .expect("the customer writes");
    let conversation = first_conversation(&store).await;

    let plain = record_reply(&store, &conversation, "s-1", "Dạ còn ạ.").await;
    let sent = wait_for_message(&store, &plain.message_id, "reply sent", |m| {
        m.delivery_status == DeliveryStatus::Sent as i32
    })
    .await;
    assert!(
        sent.external_message_id.starts_with("sim-out-"),
        "{}",
        sent.external_message_id
    );

    let question = record_reply(&store, &conversation, "s-2", "Bạn muốn màu nào ạ?").await;
    wait_for_message(&store, &question.message_id, "question sent", |m| {
        m.delivery_status == DeliveryStatus::Sent as i32
    })
    .await;
    let answer_id = format!("sim-answer-{}", question.message_id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let messages = loop {
        let messages = all_messages(&store).await;
        if messages.iter().any(|m| m.external_message_id == answer_id) {
            break messages;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no answer: {messages:#?}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    };
    let answer = messages
        .iter()
        .find(|m| m.external_message_id == answer_id)
        .expect("answer");
    assert_eq!(answer.direction, Direction::Inbound as i32);
    assert_eq!(answer.conversation_id, conversation);
    assert!(!answer.content.as_ref().expect("content").text.is_empty());
    // The plain reply asked nothing: no answer to it.
    let answers = messages
        .iter()
        .filter(|m| m.external_message_id.starts_with("sim-answer-"))
        .count();
    assert_eq!(answers, 1, "{messages:#?}");

    connector.stop().await.expect("connector stops");
    store.stop().await.expect("message-store stops");
}

const KEY_A: &str = "Z2lhby10ZXN0LWtleS1hLTMyLWJ5dGVzLWxvbmchISE=";
const KEY_B: &str = "Z2lhby10ZXN0LWtleS1iLTMyLWJ5dGVzLWxvbmchISE=";

fn keys(current: &str, keys: &[(&str, &str)]) -> giao_connector::CredentialsConfig {
    giao_connector::CredentialsConfig {
        key_id: current.into(),
        keys: keys
            .iter()
            .map(|(id, key)| (id.to_string(), key.to_string()))
            .collect(),
        retired_key_ids: Vec::new(),
    }
}

fn retiring(
    mut config: giao_connector::CredentialsConfig,
    retired: &str,
) -> giao_connector::CredentialsConfig {
    config.retired_key_ids = vec![retired.into()];
    config
}

/// Every account answers a signed webhook, which needs its sealed OA secret key opened.
async fn webhooks_accepted(connector: &Running, accounts: &[String], round: &str) {
    for account in accounts {
        let body = event(
            "user_send_text",
            &format!("{round}-{account}"),
            json!({"text": "Chào shop"}),
        );
        assert_eq!(
            post_signed(connector, account, &body, None).await,
            200,
            "{round}: {account}"
        );
    }
}

/// Key rotation: accounts sealed under key A keep working when B becomes current; their rows
/// stay under A (replicas not yet on B can still open them) until A is listed as retired,
/// then move to B in the background, and A can be removed.
async fn credential_keys_rotate(backend: BackendKind) {
    let mut backend = Backend::new(backend).await;
    let mut config = connector_config(&mut backend).await;
    config.credentials = keys("a", &[("a", KEY_A)]);
    let connector = start_connector_with_http(config.clone()).await;
    let mut accounts = Vec::new();
    for key in ["rot-1", "rot-2", "rot-3"] {
        accounts.push(create_oa(&connector, TENANT, key).await);
    }
    webhooks_accepted(&connector, &accounts, "under-a").await;
    connector.stop().await.expect("connector stops");

    let store = giao_connector::store::AccountStore::new(
        Database::connect(&config.database).await.expect("connects"),
    );
    let sealed = |store: giao_connector::store::AccountStore, accounts: Vec<String>| async move {
        let mut rows = Vec::new();
        for account in &accounts {
            rows.push(
                store
                    .credentials(TENANT, account)
                    .await
                    .expect("reads")
                    .expect("sealed credentials"),
            );
        }
        rows
    };
    let before = sealed(store.clone(), accounts.clone()).await;
    assert!(before.iter().all(|row| row.key_id == "a"));

    // B is current, A still configured but not retired: the accounts work, and nothing is
    // re-sealed (a replica still on A alone must keep opening them).
    config.credentials = keys("b", &[("a", KEY_A), ("b", KEY_B)]);
    let connector = start_connector_with_http(config.clone()).await;
    webhooks_accepted(&connector, &accounts, "b-current").await;
    let seals = giao_connector::store::SealStore::new(
        Database::connect(&config.database).await.expect("connects"),
    );
    let sealer =
        giao_connector::credentials::Sealer::from_config(&config.credentials).expect("keys");
    assert_eq!(
        giao_connector::credentials::reseal_stale(&seals, &sealer, 200)
            .await
            .expect("re-seal pass"),
        giao_connector::credentials::Resealed::default()
    );
    let unmoved = sealed(store.clone(), accounts.clone()).await;
    assert!(unmoved.iter().all(|row| row.key_id == "a"));
    connector.stop().await.expect("connector stops");

    // A retired: the rows move to B.
    config.credentials = retiring(keys("b", &[("a", KEY_A), ("b", KEY_B)]), "a");
    let connector = start_connector_with_http(config.clone()).await;
    webhooks_accepted(&connector, &accounts, "rotating").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let after = loop {
        let rows = sealed(store.clone(), accounts.clone()).await;
        if rows.iter().all(|row| row.key_id == "b") {
            break rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not re-sealed: {:?}",
            rows.iter().map(|row| &row.key_id).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (old, new) in before.iter().zip(&after) {
        assert_ne!(old.sealed, new.sealed);
    }
    connector.stop().await.expect("connector stops");

    // A removed: nothing needs it any more.
    config.credentials = keys("b", &[("b", KEY_B)]);
    let connector = start_connector_with_http(config).await;
    webhooks_accepted(&connector, &accounts, "after-a").await;
    // A restart re-seals nothing: the rows are as they were.
    assert_eq!(
        sealed(store, accounts.clone())
            .await
            .iter()
            .map(|row| row.sealed.clone())
            .collect::<Vec<_>>(),
        after
            .iter()
            .map(|row| row.sealed.clone())
            .collect::<Vec<_>>()
    );
    connector.stop().await.expect("connector stops");
}

/// The customer writes to the OA through a signed webhook; returns the conversation.
async fn customer_writes(
    connector: &Running,
    sim: &giao_connector::zalo::sim::OaSimulator,
    store: &Running,
    account: &str,
    user: &str,
    msg_id: &str,
) -> String {
    let webhook = format!(
        "http://{}/webhooks/zalo-oa/{TENANT}/{account}",
        connector.metrics_addr.expect("HTTP listener")
    );
    let hello = sim.user_event(
        "user_send_text",
        user,
        json!({"msg_id": msg_id, "text": "Shop ơi"}),
    );
    assert_eq!(sim.push(&webhook, &hello, 0).await.expect("push"), 200);
    first_conversation(store).await
}

/// During a rolling deploy a replica that does not know the new key yet meets a row another
/// replica sealed under it: the message is retried (never refused as "not connected") and the
/// account stays connected; once the replica knows the key, replies go out.
async fn old_replica_retries_rows_under_a_new_key(backend: BackendKind) {
    use giao_connector::{
        credentials::{Sealer, reseal_account},
        store::SealStore,
    };
    use giao_proto::common::DeliveryStatus;

    let mut backend = Backend::new(backend).await;
    let (sim, stop_sim) = start_oa_sim().await;
    let store = start_message_store(message_store_config(&mut backend).await).await;
    let mut config = oa_connector_config(connector_config(&mut backend).await, &sim);
    config.credentials = keys("a", &[("a", KEY_A)]);
    config.outbound_max_deliver = 2;
    let connector = start_connector_with_http(config.clone()).await;
    let account = connect_oa(&connector, &sim).await;
    let conversation = customer_writes(&connector, &sim, &store, &account, "zu-7", "in-rot").await;

    // A replica already on B (current) re-seals the account's row under B.
    let database = Database::connect(&config.database).await.expect("connects");
    let newer = Sealer::from_config(&keys("b", &[("a", KEY_A), ("b", KEY_B)])).expect("keys");
    let resealed = reseal_account(&SealStore::new(database), &newer, TENANT, &account).await;
    assert!(matches!(resealed.expect("written"), Some(Ok(true))));

    // This replica knows A only: every delivery is retried, none refuses the message.
    let attempts = sim.send_attempts();
    let reply = record_reply(&store, &conversation, "rot-1", "Dạ shop chào bạn").await;
    let settled = wait_for_message(&store, &reply.message_id, "retries ran out", |m| {
        m.delivery_status == DeliveryStatus::Failed as i32
    })
    .await;
    assert!(
        settled.failure_reason.contains("not sent after 2 attempts")
            && settled.failure_reason.contains("unknown to this replica"),
        "{}",
        settled.failure_reason
    );
    assert_eq!(sim.send_attempts(), attempts);
    assert_eq!(
        account_status(&connector, &account).await,
        AccountStatus::Connected as i32
    );
    connector.stop().await.expect("connector stops");

    // Step one of the rotation reaches this replica (B known, A still current): it sends.
    config.credentials = keys("a", &[("a", KEY_A), ("b", KEY_B)]);
    let connector = start_connector_with_http(config).await;
    let reply = record_reply(&store, &conversation, "rot-2", "Shop gửi bạn").await;
    wait_for_message(&store, &reply.message_id, "sent", |m| {
        m.delivery_status == DeliveryStatus::Sent as i32
    })
    .await;
    assert_eq!(
        account_status(&connector, &account).await,
        AccountStatus::Connected as i32
    );

    connector.stop().await.expect("connector stops");
    store.stop().await.expect("message-store stops");
    stop_sim.cancel();
}

/// Through the simulator, end to end: HTTP 5xx is retried and sent once; Zalo's permanent
/// refusals fail at once with the sender's reason; -223/-224 put the account in
/// needs_login, and connecting the same OA again revives that account (no duplicate);
/// a request whose retries run out ends failed, never pending.
async fn oa_errors_and_reconnect(backend: BackendKind) {
    use giao_proto::common::DeliveryStatus;

    let mut backend = Backend::new(backend).await;
    let (sim, stop_sim) = start_oa_sim().await;
    let store = start_message_store(message_store_config(&mut backend).await).await;
    let mut config = oa_connector_config(connector_config(&mut backend).await, &sim);
    config.outbound_max_deliver = 3;
    let connector = start_connector_with_http(config).await;
    let account = connect_oa(&connector, &sim).await;
    let conversation = customer_writes(&connector, &sim, &store, &account, "zu-42", "in-1").await;
    let is = |status: DeliveryStatus| move |m: &Message| m.delivery_status == status as i32;

    // Zalo answers HTTP 500 twice: retried, then sent exactly once.
    sim.fail_http(2);
    let reply = record_reply(&store, &conversation, "e-1", "Dạ shop chào bạn").await;
    wait_for_message(
        &store,
        &reply.message_id,
        "sent after 5xx",
        is(DeliveryStatus::Sent),
    )
    .await;
    assert_eq!(sim.send_attempts(), 3);
    assert_eq!(sim.sent().len(), 1);

    // Permanent refusals: failed at once with what the sender needs to know, tried once.
    // Not authorised (permission, tier) also puts the account in needs_login; the same OA
    // connected again then keeps its account, connected, and sends.
    for (round, code, words, needs_login) in [
        ("e-2", -217, "blocked", false),
        ("e-3", -213, "does not follow", false),
        ("e-4", -223, "not authorised", true),
        ("e-5", -224, "not authorised", true),
    ] {
        let attempts = sim.send_attempts();
        sim.fail_next(&[code]);
        let reply = record_reply(&store, &conversation, round, "Shop gửi bạn ưu đãi").await;
        let failed = wait_for_message(
            &store,
            &reply.message_id,
            "refused",
            is(DeliveryStatus::Failed),
        )
        .await;
        assert!(
            failed.failure_reason.contains(words),
            "{code}: {}",
            failed.failure_reason
        );
        assert_eq!(sim.send_attempts(), attempts + 1, "{code} was retried");
        let status = account_status(&connector, &account).await;
        if !needs_login {
            assert_eq!(status, AccountStatus::Connected as i32, "{code}");
            continue;
        }
        assert_eq!(status, AccountStatus::NeedsLogin as i32, "{code}");
        assert_eq!(connect_oa(&connector, &sim).await, account);
        assert_eq!(
            account_status(&connector, &account).await,
            AccountStatus::Connected as i32
        );
        let key = format!("{round}-after");
        let reply = record_reply(&store, &conversation, &key, "Shop đã kết nối lại").await;
        wait_for_message(&store, &reply.message_id, "sent", is(DeliveryStatus::Sent)).await;
    }
    let listed = connector_client(&connector, TENANT, "admin")
        .await
        .list_accounts(ListAccountsRequest {
            kind: ChannelKind::ZaloOa as i32,
            ..Default::default()
        })
        .await
        .expect("lists")
        .into_inner()
        .accounts;
    assert_eq!(listed.len(), 1, "{listed:?}");
    // The conversation did not split: the replies after reconnecting are in the first one.
    let conversations = message_store_client(&store, TENANT, "admin")
        .await
        .list_conversations(ListConversationsRequest::default())
        .await
        .expect("lists")
        .into_inner()
        .conversations;
    assert_eq!(conversations.len(), 1);

    // Zalo stays down through every delivery: failed with why, never pending, never sent.
    let sent = sim.sent().len();
    sim.fail_http(1_000);
    let reply = record_reply(&store, &conversation, "e-6", "Shop gửi lại sau nhé").await;
    let failed = wait_for_message(
        &store,
        &reply.message_id,
        "given up",
        is(DeliveryStatus::Failed),
    )
    .await;
    assert!(
        failed.failure_reason.contains("not sent after 3 attempts")
            && failed.failure_reason.contains("HTTP 500"),
        "{}",
        failed.failure_reason
    );
    sim.fail_http(0);
    assert_eq!(sim.sent().len(), sent);

    // None of the refused messages went out later.
    let texts: Vec<String> = sim
        .sent()
        .iter()
        .map(|m| m.message["text"].as_str().unwrap_or_default().to_string())
        .collect();
    for refused in ["Shop gửi bạn ưu đãi", "Shop gửi lại sau nhé"] {
        assert!(
            !texts.iter().any(|text| text == refused),
            "{refused} sent: {texts:?}"
        );
    }

    connector.stop().await.expect("connector stops");
    store.stop().await.expect("message-store stops");
    stop_sim.cancel();
}

/// Two connector replicas share one database and bus, and either may pull any of an OA's
/// replies: the account's send rate (30 a minute, bursts of 3) holds for both together,
/// as Zalo sees the sends, and every reply goes out exactly once.
async fn oa_pacing_holds_across_replicas(backend: BackendKind) {
    use giao_proto::{
        common::{DeliveryStatus, MessageContent},
        events::{OutboundRequested, envelope::Payload},
    };

    const REPLIES: usize = 8;
    const BURST: usize = 3;
    const INTERVAL: Duration = Duration::from_secs(2);

    let mut backend = Backend::new(backend).await;
    let (sim, stop_sim) = start_oa_sim().await;
    let mut base = oa_connector_config(connector_config(&mut backend).await, &sim);
    base.zalo_oa.default_send_rate_per_minute = 30;
    // Waits in place of up to 3 s; a slot further out is retried through the bus.
    base.outbound_ack_wait_secs = 6;
    let replica = |name: &str| {
        let mut config = base.clone();
        config.sessions.replica_id = name.into();
        config
    };
    let r1 = start_connector_with_http(replica("r1")).await;
    let r2 = start_connector_with_http(replica("r2")).await;
    let account = connect_oa(&r1, &sim).await;

    let bus = giao_bus::connect(&backend.bus).await.expect("bus");
    let mut deliveries =
        giao_tests::subscribe_events(bus.as_ref(), "test-pacing-deliveries", "delivery_updated")
            .await;
    let publisher = giao_bus::envelope::EventPublisher::new(bus.clone(), "test");
    let texts: Vec<String> = (0..REPLIES).map(|n| format!("Tin nhắn số {n}")).collect();
    for (n, text) in texts.iter().enumerate() {
        publisher
            .publish(
                TENANT,
                format!("outbound-requested-pace-{n}"),
                Payload::OutboundRequested(OutboundRequested {
                    message_id: format!("pace-{n}"),
                    conversation_id: "conv-pace".into(),
                    channel_account_id: account.clone(),
                    external_thread_id: "zu-pace".into(),
                    content: Some(MessageContent {
                        r#type: ContentType::Text as i32,
                        text: text.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            )
            .await
            .expect("publishes the reply");
    }

    // Every reply is reported sent (none failed on the way).
    let mut sent = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while sent.len() < REPLIES {
        assert!(
            tokio::time::Instant::now() < deadline,
            "sent so far: {sent:?}"
        );
        if let Some(update) =
            account_delivery_update(&mut deliveries, &account, Duration::from_millis(500)).await
        {
            assert_eq!(
                update.status,
                DeliveryStatus::Sent as i32,
                "{}: {}",
                update.message_id,
                update.failure_reason
            );
            sent.insert(update.message_id);
        }
    }

    // Zalo got each reply once.
    let received = sim.sent();
    let mut got: Vec<String> = received
        .iter()
        .map(|m| m.message["text"].as_str().unwrap_or_default().to_string())
        .collect();
    got.sort();
    let mut expected = texts.clone();
    expected.sort();
    assert_eq!(got, expected);

    // However the replicas shared the replies, no stretch of time saw more than the burst
    // plus one reply per interval. The tolerance (half an interval) absorbs how long each
    // call took after its slot; two replicas pacing on their own would send twice the burst
    // at once.
    let mut at: Vec<std::time::Instant> = received.iter().map(|m| m.at).collect();
    at.sort();
    let tolerance = INTERVAL / 2;
    for first in 0..at.len() {
        for last in first..at.len() {
            let span = at[last] - at[first] + tolerance;
            let allowed = BURST + (span.as_micros() / INTERVAL.as_micros()) as usize;
            assert!(
                last - first < allowed,
                "{} replies within {:?}, at most {allowed} allowed: {at:?}",
                last - first + 1,
                at[last] - at[first]
            );
        }
    }

    r1.stop().await.expect("r1 stops");
    r2.stop().await.expect("r2 stops");
    stop_sim.cancel();
}

/// A delivery that finds its message `sending` tells a live send from a dead one by the age
/// of the claim: a fresh claim belongs to another delivery still waiting for Zalo (this one
/// came because the ack wait ran out under it), which settles the message itself; a stale
/// claim's holder died mid-call, so the message is reported failed and never sent twice.
async fn oa_sending_claims_by_age(backend: BackendKind) {
    use giao_connector::zalo::outbound::Ledger;
    use giao_proto::{
        common::{DeliveryStatus, MessageContent},
        events::{OutboundRequested, envelope::Payload},
    };

    let mut backend = Backend::new(backend).await;
    let (sim, stop_sim) = start_oa_sim().await;
    let config = oa_connector_config(connector_config(&mut backend).await, &sim);
    let connector = start_connector_with_http(config.clone()).await;
    let account = connect_oa(&connector, &sim).await;

    let bus = giao_bus::connect(&backend.bus).await.expect("bus");
    let mut deliveries =
        giao_tests::subscribe_events(bus.as_ref(), "test-claim-deliveries", "delivery_updated")
            .await;
    let publisher = giao_bus::envelope::EventPublisher::new(bus.clone(), "test");
    let database = Database::connect(&config.database).await.expect("connects");
    let ledger = Ledger::new(database.clone(), publisher.clone());
    let request = |id: &str| OutboundRequested {
        message_id: id.into(),
        conversation_id: "conv-claim".into(),
        channel_account_id: account.clone(),
        external_thread_id: "zu-claim".into(),
        content: Some(MessageContent {
            r#type: ContentType::Text as i32,
            text: format!("Tin nhắn {id}"),
            ..Default::default()
        }),
        ..Default::default()
    };
    // Both claimed as a replica does just before its call; the dead holder's a minute ago.
    for id in ["claim-live", "claim-dead"] {
        ledger
            .record(TENANT, &request(id), None)
            .await
            .expect("recorded");
        assert!(ledger.claim_sending(TENANT, id).await.expect("claims"));
    }
    let aged = "UPDATE outbound_messages SET updated_at = updated_at - 60000000 \
                WHERE message_id = 'claim-dead'";
    match &database {
        Database::Postgres(pool) => sqlx::query(aged).execute(pool).await.map(|_| ()),
        Database::Sqlite(pool) => sqlx::query(aged).execute(pool).await.map(|_| ()),
    }
    .expect("ages the claim");
    for id in ["claim-live", "claim-dead"] {
        publisher
            .publish(
                TENANT,
                format!("outbound-requested-{id}"),
                Payload::OutboundRequested(request(id)),
            )
            .await
            .expect("publishes the reply");
    }

    // Outcomes as the sender's side sees them, until `done` holds.
    #[derive(Debug)]
    struct Settled {
        id: String,
        status: i32,
        reason: String,
        external_id: String,
    }
    let mut outcomes: Vec<Settled> = Vec::new();
    let mut watch = async |outcomes: &mut Vec<Settled>,
                           done: &dyn Fn(&[Settled]) -> bool,
                           within: Duration| {
        let deadline = tokio::time::Instant::now() + within;
        while !done(outcomes) && tokio::time::Instant::now() < deadline {
            if let Some(update) =
                account_delivery_update(&mut deliveries, &account, Duration::from_millis(200)).await
            {
                outcomes.push(Settled {
                    id: update.message_id,
                    status: update.status,
                    reason: update.failure_reason,
                    external_id: update.external_message_id,
                });
            }
        }
    };
    let dead_failed = |outcomes: &[Settled]| outcomes.iter().any(|o| o.id == "claim-dead");
    watch(&mut outcomes, &dead_failed, Duration::from_secs(30)).await;
    let dead: Vec<_> = outcomes.iter().filter(|o| o.id == "claim-dead").collect();
    assert_eq!(dead.len(), 1, "{outcomes:?}");
    assert_eq!(
        dead[0].status,
        DeliveryStatus::Failed as i32,
        "{outcomes:?}"
    );
    assert!(
        dead[0].reason.contains("outcome is unknown"),
        "{outcomes:?}"
    );

    // The live claim is left alone through several redeliveries...
    let never = |_: &[Settled]| false;
    watch(&mut outcomes, &never, Duration::from_secs(3)).await;
    assert!(
        !outcomes.iter().any(|o| o.id == "claim-live"),
        "a live send was settled by another delivery: {outcomes:?}"
    );
    // ...until its holder records Zalo's answer; the next delivery reports that.
    ledger
        .finish(TENANT, "claim-live", "sent", "zalo-claim-1", "", "")
        .await
        .expect("settles");
    let live_settled = |outcomes: &[Settled]| outcomes.iter().any(|o| o.id == "claim-live");
    watch(&mut outcomes, &live_settled, Duration::from_secs(30)).await;
    let live: Vec<_> = outcomes.iter().filter(|o| o.id == "claim-live").collect();
    assert_eq!(live.len(), 1, "{outcomes:?}");
    assert_eq!(live[0].status, DeliveryStatus::Sent as i32, "{outcomes:?}");
    assert_eq!(live[0].external_id, "zalo-claim-1");
    // Neither went to Zalo from this replica.
    assert!(sim.sent().is_empty(), "{:?}", sim.sent().len());

    connector.stop().await.expect("connector stops");
    stop_sim.cancel();
}

giao_tests::on_both_backends!(
    accounts,
    webhook_inbound,
    oa_connect_reply_and_refresh,
    oa_media_profiles_and_rate_limits,
    oa_refresh_race_between_replicas,
    oa_refresh_claims_and_refusals,
    simulator_channel_replies,
    credential_keys_rotate,
    old_replica_retries_rows_under_a_new_key,
    oa_errors_and_reconnect,
    oa_pacing_holds_across_replicas,
    oa_sending_claims_by_age
);
