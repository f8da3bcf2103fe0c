//! The connector's `zalo_personal` adapter against the personal-protocol simulator (real
//! HTTP and websocket servers on loopback, real signing, encryption and framing): QR login
//! through the RPCs, capture into message-store, recalls, kicks, expired cookies, outbound
//! pacing, images, files and stickers outbound, echoes of giao's own sends, no message lost
//! while no listener runs, and one listener per account when replicas race.

use std::time::Duration;

use futures::StreamExt;
use giao_proto::{
    common::{ChannelKind, ContentType, DeliveryStatus, Direction, MessageContent, PageRequest},
    connector::{
        AccountStatusRequest, CreateAccountRequest, GetAccountRequest, QrLoginEvent, QrLoginState,
        StartQrLoginRequest, WatchQrLoginRequest,
    },
    events::AccountStatus,
    messagestore::{GetHistoryRequest, ListConversationsRequest, Message, RecordOutboundRequest},
};
use giao_tests::{
    Backend, BackendKind, Running, connector_client, connector_config, message_store_client,
    message_store_config, on_both_backends, start_connector, start_message_store,
};
use zalo_personal::{
    client::Credentials,
    sim::{Sender, SimAccount, SimConfig, Simulator},
};

const TENANT: &str = "acme";
const OWNER: &str = "100000001";
const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) giao-test";
const WAIT: Duration = Duration::from_secs(20);

async fn simulator() -> Simulator {
    let config = SimConfig {
        long_poll: Duration::from_millis(200),
        ping_interval: Duration::from_secs(1),
        retry_delays: vec![Duration::from_millis(50), Duration::from_millis(100)],
        ..SimConfig::default()
    };
    let sim = Simulator::start(
        config,
        "127.0.0.1:0".parse().expect("address"),
        std::future::pending(),
    )
    .await
    .expect("simulator starts");
    sim.add_account(SimAccount::new(OWNER, "Chủ shop"));
    sim
}

/// A connector pointed at `sim`, with short leases and ticks so tests move quickly.
fn personal_config(mut config: giao_connector::Config, sim: &Simulator) -> giao_connector::Config {
    let base = sim.base_url();
    config.zalo_personal.id_base_url = base.clone();
    config.zalo_personal.wpa_base_url = base.clone();
    config.zalo_personal.jr_base_url = base;
    config.zalo_personal.user_agent = USER_AGENT.into();
    config.zalo_personal.request_timeout_ms = 5_000;
    config.zalo_personal.supervise_ms = 50;
    config.zalo_personal.outbound_poll_ms = 100;
    config.zalo_personal.reconnect_initial_ms = 50;
    config.zalo_personal.reconnect_max_ms = 200;
    config.zalo_personal.restart_after_ms = 300;
    config.zalo_personal.rate_limit_pause_ms = 300;
    config.sessions.tick_ms = 200;
    config.sessions.lease_ms = 1_000;
    config.outbound_ack_wait_secs = 3;
    config
}

async fn create_personal(connector: &Running, sim: &Simulator, uid: &str, name: &str) -> String {
    let credentials = sim.issue_credentials(uid, USER_AGENT);
    connector_client(connector, TENANT, "admin")
        .await
        .create_account(CreateAccountRequest {
            kind: ChannelKind::ZaloPersonal as i32,
            display_name: name.into(),
            credentials_json: serde_json::to_string(&credentials).expect("json"),
            ..Default::default()
        })
        .await
        .expect("creates the account")
        .into_inner()
        .channel_account_id
}

async fn status(connector: &Running, account: &str) -> (i32, String) {
    let status = connector_client(connector, TENANT, "admin")
        .await
        .account_status(AccountStatusRequest {
            channel_account_id: account.into(),
        })
        .await
        .expect("status")
        .into_inner();
    (status.status, status.reason)
}

async fn wait_status(connector: &Running, account: &str, wanted: AccountStatus) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (now, reason) = status(connector, account).await;
        if now == wanted as i32 {
            return reason;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "account {account} never {wanted:?}: {now} ({reason})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_until(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Unix ms by this machine's clock, which the simulator's stamps also use.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// Waits for the AccountStatusChanged the connector published when `account` became
/// `status` (what assignment turns into alerts), from the start of the bus's history.
async fn status_published(
    backend: &Backend,
    account: &str,
    status: AccountStatus,
) -> giao_proto::events::AccountStatusChanged {
    let bus = giao_bus::connect(&backend.bus).await.expect("bus");
    let mut stream = giao_tests::subscribe_events(
        bus.as_ref(),
        &format!("test-personal-status-{}", uuid::Uuid::new_v4().simple()),
        "account_status_changed",
    )
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    while tokio::time::Instant::now() < deadline {
        let Ok(Some(Ok(delivery))) =
            tokio::time::timeout(Duration::from_millis(500), stream.next()).await
        else {
            continue;
        };
        let (envelope, _) = giao_bus::envelope::decode(&delivery).expect("decodes");
        delivery.ack().await.expect("acks");
        if let Some(giao_proto::events::envelope::Payload::AccountStatusChanged(change)) =
            envelope.payload
        {
            if change.channel_account_id == account && change.status == status as i32 {
                return change;
            }
            seen.push(change);
        }
    }
    panic!("no AccountStatusChanged to {status:?} for {account}: {seen:#?}")
}

/// The values a personal session is made of: every cookie value, the imei and the user
/// agent the cookies are bound to.
fn session_secrets(credentials: &Credentials) -> Vec<String> {
    let mut secrets: Vec<String> = credentials
        .cookies
        .iter()
        .map(|cookie| cookie.value.clone())
        .collect();
    secrets.push(credentials.imei.clone());
    secrets.push(credentials.user_agent.clone());
    secrets
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// The account's credentials are stored sealed: opened with the connector's key they hold
/// `expected` (so the search below looks for what really was stored), and none of
/// the session's values appears in clear in the sealed row, nor (SQLite) anywhere in the
/// database's files.
async fn assert_sealed_at_rest(
    config: &giao_connector::Config,
    account: &str,
    expected: &Credentials,
) {
    let db = giao_storage::Database::connect(&config.database)
        .await
        .expect("db");
    let sealed = giao_connector::store::AccountStore::new(db)
        .credentials(TENANT, account)
        .await
        .expect("reads")
        .expect("stored");
    let opened = giao_connector::credentials::Sealer::from_config(&config.credentials)
        .expect("the connector's keys")
        .open(TENANT, account, &sealed.key_id, &sealed.sealed)
        .expect("opens with the connector's key");
    let stored: Credentials = serde_json::from_slice(&opened).expect("a personal session");
    // A QR login keeps the cookies set along the way too (the login page's session).
    for cookie in &expected.cookies {
        assert!(stored.cookies.contains(cookie), "{} stored", cookie.name);
    }
    assert_eq!(stored.imei, expected.imei, "the imei stored");
    assert_eq!(
        stored.user_agent, expected.user_agent,
        "the user agent stored"
    );
    let secrets = session_secrets(&stored);
    assert!(secrets.len() >= 4, "two cookies, imei and user agent");
    for secret in &secrets {
        assert!(secret.len() >= 16, "a value long enough to search for");
        assert!(
            contains(&opened, secret),
            "opened credentials hold {secret}"
        );
        assert!(
            !contains(&sealed.sealed, secret),
            "in clear in the sealed row"
        );
    }
    if let Some(path) = config.database.url.strip_prefix("sqlite://") {
        let file = std::path::Path::new(path.split('?').next().unwrap_or(path));
        let name = file
            .file_name()
            .expect("a file name")
            .to_string_lossy()
            .to_string();
        let mut read = 0;
        for entry in std::fs::read_dir(file.parent().expect("a directory")).expect("lists") {
            let entry = entry.expect("entry");
            // The database, its write-ahead log and shared memory.
            if !entry.file_name().to_string_lossy().starts_with(&name) {
                continue;
            }
            let bytes = std::fs::read(entry.path()).expect("reads the database file");
            read += bytes.len();
            for secret in &secrets {
                assert!(
                    !contains(&bytes, secret),
                    "{secret} in clear in {}",
                    entry.path().display()
                );
            }
        }
        assert!(read > 0, "the database files were read");
    }
}

/// A test's world: SQLite, the simulator, message-store and a connector (its config
/// adjusted by `adjust`) with one personal account of OWNER connected and listening.
struct Listening {
    backend: Backend,
    sim: Simulator,
    config: giao_connector::Config,
    store: Running,
    connector: Running,
    account: String,
}

async fn listening(adjust: impl FnOnce(&mut giao_connector::Config)) -> Listening {
    let mut backend = Backend::new(BackendKind::Sqlite).await;
    let sim = simulator().await;
    let store = start_message_store(message_store_config(&mut backend).await).await;
    let mut config = personal_config(connector_config(&mut backend).await, &sim);
    adjust(&mut config);
    let connector = start_connector(config.clone()).await;
    let account = create_personal(&connector, &sim, OWNER, "Shop Lan").await;
    wait_status(&connector, &account, AccountStatus::Connected).await;
    wait_until("listening", || sim.connections(OWNER) == 1).await;
    Listening {
        backend,
        sim,
        config,
        store,
        connector,
        account,
    }
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
        messages.extend(
            client
                .get_history(GetHistoryRequest {
                    conversation_id: conversation.conversation_id.clone(),
                    page: Some(PageRequest {
                        page_size: 200,
                        cursor: String::new(),
                    }),
                    direction: 1,
                })
                .await
                .expect("reads history")
                .into_inner()
                .messages,
        );
    }
    messages
}

/// Waits until the message with Zalo id `external_id` is stored and `check` holds.
async fn wait_message(
    store: &Running,
    external_id: &str,
    what: &str,
    check: impl Fn(&Message) -> bool,
) -> Message {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let messages = all_messages(store).await;
        if let Some(found) = messages
            .iter()
            .find(|m| m.external_message_id == external_id && check(m))
        {
            return found.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {messages:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An inbound DM, a message the owner typed on the phone and a group message reach
/// message-store with the right directions; a recall keeps the original, flagged; a seen
/// receipt updates the owner's message.
async fn capture(backend: BackendKind) {
    let mut backend = Backend::new(backend).await;
    let sim = simulator().await;
    let store = start_message_store(message_store_config(&mut backend).await).await;
    let connector =
        start_connector(personal_config(connector_config(&mut backend).await, &sim)).await;
    let account = create_personal(&connector, &sim, OWNER, "Shop Lan").await;
    wait_status(&connector, &account, AccountStatus::Connected).await;
    wait_until("the listener is connected", || sim.connections(OWNER) == 1).await;

    let lan = Sender::new("cust-lan", "Nguyễn Thị Lan");
    let inbound = sim
        .inject_dm(OWNER, &lan, "Shop ơi còn hàng không?")
        .expect("dm");
    let typed = sim
        .inject_self_dm(OWNER, "cust-lan", "Dạ còn ạ")
        .expect("phone-typed message");
    let group = sim
        .inject_group_message(OWNER, "g-1", &lan, "Cả nhóm hỏi giá")
        .expect("group message");

    let received = wait_message(&store, &inbound, "inbound DM stored", |_| true).await;
    assert_eq!(received.direction, Direction::Inbound as i32);
    assert_eq!(
        received.content.as_ref().expect("content").text,
        "Shop ơi còn hàng không?"
    );
    let from_phone = wait_message(&store, &typed, "phone-typed message stored", |_| true).await;
    assert_eq!(from_phone.direction, Direction::Outbound as i32);
    assert_eq!(from_phone.conversation_id, received.conversation_id);
    let in_group = wait_message(&store, &group, "group message stored", |_| true).await;
    assert_ne!(in_group.conversation_id, received.conversation_id);

    // The customer recalls: the original stays, marked recalled.
    sim.inject_recall(OWNER, &lan, &inbound).expect("recall");
    let recalled = wait_message(&store, &inbound, "recall applied", |m| m.recalled).await;
    assert_eq!(
        recalled.content.as_ref().expect("content kept").text,
        "Shop ơi còn hàng không?"
    );
    assert_eq!(recalled.recalled_by, "cust-lan");

    // The customer saw the owner's message.
    sim.inject_seen(OWNER, "cust-lan", &typed).expect("seen");
    wait_message(&store, &typed, "seen applied", |m| {
        m.delivery_status == DeliveryStatus::Seen as i32
    })
    .await;

    // A message arriving while the socket is down (1006, reconnect refused for a while) is
    // not lost: the listener's gap fill brings it after the reconnect.
    let connects = sim.ws_connects(OWNER);
    sim.refuse_sockets(OWNER, true);
    sim.drop_connections(OWNER);
    wait_until("the socket is down", || sim.connections(OWNER) == 0).await;
    let (reason_down, missed) = (
        wait_status(&connector, &account, AccountStatus::Disconnected).await,
        sim.inject_dm(OWNER, &lan, "Nhắn lúc mất kết nối")
            .expect("dm while down"),
    );
    assert!(reason_down.contains("reconnecting"), "{reason_down}");
    sim.refuse_sockets(OWNER, false);
    wait_until("reconnected", || sim.ws_connects(OWNER) > connects).await;
    wait_message(&store, &missed, "the message sent while down", |_| true).await;
    wait_status(&connector, &account, AccountStatus::Connected).await;
    // Each message once, although the gap fill replays what the listener may have seen.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(all_messages(&store).await.len(), 4);

    // Disabling the account stops its listener at once.
    connector_client(&connector, TENANT, "admin")
        .await
        .disable_account(giao_proto::connector::DisableAccountRequest {
            channel_account_id: account.clone(),
            reason: "phone handed back".into(),
        })
        .await
        .expect("disables");
    wait_until("the listener stopped", || sim.connections(OWNER) == 0).await;
    let connects = sim.ws_connects(OWNER);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        sim.ws_connects(OWNER),
        connects,
        "a disabled account reconnected"
    );

    connector.stop().await.expect("connector stops");
    store.stop().await.expect("message-store stops");
}

on_both_backends!(capture, no_listener_gap, create_account_seals_credentials);

async fn next_state(stream: &mut tonic::Streaming<QrLoginEvent>) -> QrLoginEvent {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a QR state within the wait")
        .expect("the stream goes on")
        .expect("a state, not an error")
}

/// StartQrLogin gives the image; WatchQrLogin reports scanned then confirmed; the account
/// is created connected with sealed credentials and its listener starts. A declined login
/// fails with the reason; bad input names the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qr_login_through_the_rpcs() {
    let mut backend = Backend::new(BackendKind::Sqlite).await;
    let sim = simulator().await;
    let config = personal_config(connector_config(&mut backend).await, &sim);
    let stored_config = config.clone();
    let connector = start_connector(config).await;
    let mut admin = connector_client(&connector, TENANT, "admin").await;

    let error = admin
        .start_qr_login(StartQrLoginRequest::default())
        .await
        .expect_err("no name");
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert!(
        error.message().contains("display_name"),
        "{}",
        error.message()
    );
    let error = admin
        .watch_qr_login(WatchQrLoginRequest {
            login_id: "qr-unknown".into(),
        })
        .await
        .expect_err("unknown login");
    assert_eq!(error.code(), tonic::Code::NotFound);
    // An agent may not start a login.
    let error = connector_client(&connector, TENANT, "agent")
        .await
        .start_qr_login(StartQrLoginRequest {
            display_name: "Shop".into(),
            ..Default::default()
        })
        .await
        .expect_err("agents cannot");
    assert_eq!(error.code(), tonic::Code::PermissionDenied);

    let started = admin
        .start_qr_login(StartQrLoginRequest {
            display_name: "Shop Minh".into(),
            team_id: "team-1".into(),
            ..Default::default()
        })
        .await
        .expect("starts")
        .into_inner();
    assert!(started.qr_png.starts_with(b"\x89PNG"), "a PNG");
    assert!(!started.qr_png_base64.is_empty());
    assert!(started.expires_at.is_some());
    let mut states = admin
        .watch_qr_login(WatchQrLoginRequest {
            login_id: started.login_id.clone(),
        })
        .await
        .expect("watches")
        .into_inner();
    assert_eq!(
        next_state(&mut states).await.state,
        QrLoginState::WaitingScan as i32
    );
    // Another tenant does not see the login.
    let error = connector_client(&connector, "other", "admin")
        .await
        .watch_qr_login(WatchQrLoginRequest {
            login_id: started.login_id.clone(),
        })
        .await
        .expect_err("another tenant's login");
    assert_eq!(error.code(), tonic::Code::NotFound);

    let code = sim.last_qr_code().expect("a QR was generated");
    assert!(sim.scan_qr(&code, OWNER));
    let scanned = next_state(&mut states).await;
    assert_eq!(scanned.state, QrLoginState::Scanned as i32);
    assert_eq!(scanned.detail, "Chủ shop");
    assert!(sim.confirm_qr(&code));
    let confirmed = next_state(&mut states).await;
    assert_eq!(
        confirmed.state,
        QrLoginState::Confirmed as i32,
        "{confirmed:?}"
    );
    assert!(
        tokio::time::timeout(WAIT, states.next())
            .await
            .expect("the stream ends")
            .is_none()
    );
    let account = admin
        .get_account(GetAccountRequest {
            channel_account_id: confirmed.channel_account_id.clone(),
        })
        .await
        .expect("the account exists")
        .into_inner();
    assert_eq!(account.kind, ChannelKind::ZaloPersonal as i32);
    assert_eq!(account.external_id, OWNER);
    assert_eq!(account.display_name, "Shop Minh");
    assert_eq!(account.team_id, "team-1");
    wait_status(
        &connector,
        &account.channel_account_id,
        AccountStatus::Connected,
    )
    .await;
    wait_until("the new account listens", || sim.connections(OWNER) == 1).await;

    // The credentials are sealed: what the QR login granted (the cookies checksession
    // set, the imei the connector's cookie login presented, the user agent) is stored,
    // and never in clear.
    let granted = sim.granted_cookies(OWNER);
    assert_eq!(granted.len(), 1, "one QR login so far");
    let logins = sim.logins(OWNER);
    let login = logins
        .first()
        .expect("the connector logged in with the cookies");
    assert_eq!(login.user_agent, USER_AGENT);
    let from_qr = Credentials {
        imei: login.imei.clone(),
        cookies: granted[0].clone(),
        user_agent: USER_AGENT.into(),
        language: String::new(),
    };
    assert_sealed_at_rest(&stored_config, &account.channel_account_id, &from_qr).await;

    // The same phone logs in again: the same account, not a second one.
    let again = admin
        .start_qr_login(StartQrLoginRequest {
            display_name: "Shop Minh (again)".into(),
            ..Default::default()
        })
        .await
        .expect("starts")
        .into_inner();
    let mut states = admin
        .watch_qr_login(WatchQrLoginRequest {
            login_id: again.login_id,
        })
        .await
        .expect("watches")
        .into_inner();
    next_state(&mut states).await;
    let code = sim.last_qr_code().expect("a second QR");
    assert!(sim.scan_qr(&code, OWNER));
    assert_eq!(
        next_state(&mut states).await.state,
        QrLoginState::Scanned as i32
    );
    assert!(sim.confirm_qr(&code));
    let confirmed_again = next_state(&mut states).await;
    assert_eq!(
        confirmed_again.channel_account_id,
        account.channel_account_id
    );

    // Declined on the phone: failed, with the reason.
    let declined = admin
        .start_qr_login(StartQrLoginRequest {
            display_name: "Shop Hoa".into(),
            ..Default::default()
        })
        .await
        .expect("starts")
        .into_inner();
    let mut states = admin
        .watch_qr_login(WatchQrLoginRequest {
            login_id: declined.login_id,
        })
        .await
        .expect("watches")
        .into_inner();
    next_state(&mut states).await;
    let code = sim.last_qr_code().expect("a third QR");
    assert!(sim.scan_qr(&code, OWNER));
    next_state(&mut states).await;
    assert!(sim.decline_qr(&code));
    let failed = next_state(&mut states).await;
    assert_eq!(failed.state, QrLoginState::Failed as i32);
    assert!(failed.detail.contains("declined"), "{}", failed.detail);
    connector.stop().await.expect("connector stops");

    // Nobody scans in time: expired.
    let mut config = personal_config(connector_config(&mut backend).await, &sim);
    config.zalo_personal.qr_expiry_secs = 1;
    let connector = start_connector(config).await;
    let mut admin = connector_client(&connector, TENANT, "admin").await;
    let unscanned = admin
        .start_qr_login(StartQrLoginRequest {
            display_name: "Shop Tư".into(),
            ..Default::default()
        })
        .await
        .expect("starts")
        .into_inner();
    let mut states = admin
        .watch_qr_login(WatchQrLoginRequest {
            login_id: unscanned.login_id,
        })
        .await
        .expect("watches")
        .into_inner();
    next_state(&mut states).await;
    assert_eq!(
        next_state(&mut states).await.state,
        QrLoginState::Expired as i32
    );
    connector.stop().await.expect("connector stops");
}

/// A kick (close 3000) sets kicked, publishes the status change assignment alerts on, and
/// the listener does not reconnect; expired cookies end in needs_login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kick_and_expired_cookies_become_statuses() {
    let mut backend = Backend::new(BackendKind::Sqlite).await;
    let sim = simulator().await;
    sim.add_account(SimAccount::new("100000002", "Shop hai"));
    let connector =
        start_connector(personal_config(connector_config(&mut backend).await, &sim)).await;
    let kicked = create_personal(&connector, &sim, OWNER, "Shop một").await;
    let expiring = create_personal(&connector, &sim, "100000002", "Shop hai").await;
    wait_status(&connector, &kicked, AccountStatus::Connected).await;
    wait_status(&connector, &expiring, AccountStatus::Connected).await;
    wait_until("both listen", || {
        sim.connections(OWNER) == 1 && sim.connections("100000002") == 1
    })
    .await;

    sim.close_sockets(OWNER, 3000);
    let reason = wait_status(&connector, &kicked, AccountStatus::Kicked).await;
    assert!(reason.contains("another"), "{reason}");
    let connects = sim.ws_connects(OWNER);
    // Several supervisor ticks and restart delays later: no fight for the session.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sim.ws_connects(OWNER), connects, "reconnected after a kick");
    assert_eq!(sim.connections(OWNER), 0);
    assert_eq!(
        status(&connector, &kicked).await.0,
        AccountStatus::Kicked as i32
    );

    // The alert: AccountStatusChanged connected → kicked on the bus.
    let change = status_published(&backend, &kicked, AccountStatus::Kicked).await;
    assert_eq!(change.previous_status, AccountStatus::Connected as i32);

    // The duplicate-session frame (the account opened in another tab) is a kick too.
    sim.add_account(SimAccount::new("100000003", "Shop ba"));
    let duplicated = create_personal(&connector, &sim, "100000003", "Shop ba").await;
    wait_status(&connector, &duplicated, AccountStatus::Connected).await;
    wait_until("listening", || sim.connections("100000003") == 1).await;
    sim.send_duplicate_session("100000003");
    wait_status(&connector, &duplicated, AccountStatus::Kicked).await;
    let connects = sim.ws_connects("100000003");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sim.ws_connects("100000003"), connects);

    // Cookies expire: the reconnect is refused and the account needs a QR login.
    sim.expire_cookies("100000002");
    sim.drop_connections("100000002");
    let reason = wait_status(&connector, &expiring, AccountStatus::NeedsLogin).await;
    assert!(reason.contains("QR"), "{reason}");
    let connects = sim.ws_connects("100000002");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sim.ws_connects("100000002"), connects);
    // Published for the alert too, with the reason a person needs.
    let change = status_published(&backend, &expiring, AccountStatus::NeedsLogin).await;
    assert_eq!(change.previous_status, AccountStatus::Disconnected as i32);
    assert!(change.reason.contains("QR"), "{}", change.reason);

    connector.stop().await.expect("connector stops");
}

/// A burst of replies goes out no faster than the bucket allows (burst 5, then one per
/// interval), computed from the send times the simulator received; a redelivered request is
/// not sent twice; a rate limit shows rate_limited and the message still goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_pacing_holds_under_a_burst() {
    const BURST: usize = 5;
    const INTERVAL_MS: i64 = 300;
    const COUNT: usize = 12;
    let mut backend = Backend::new(BackendKind::Sqlite).await;
    let sim = simulator().await;
    let store = start_message_store(message_store_config(&mut backend).await).await;
    let mut config = personal_config(connector_config(&mut backend).await, &sim);
    config.zalo_personal.send_burst = BURST as u32;
    config.zalo_personal.send_interval_ms = INTERVAL_MS as u64;
    let connector = start_connector(config).await;
    let account = create_personal(&connector, &sim, OWNER, "Shop Lan").await;
    wait_status(&connector, &account, AccountStatus::Connected).await;
    wait_until("listening", || sim.connections(OWNER) == 1).await;
    let lan = Sender::new("cust-lan", "Nguyễn Thị Lan");
    let inbound = sim.inject_dm(OWNER, &lan, "Cho mình bảng giá").expect("dm");
    let conversation_id = wait_message(&store, &inbound, "inbound stored", |_| true)
        .await
        .conversation_id;

    let mut staff = message_store_client(&store, TENANT, "admin").await;
    let reply = |i: usize| RecordOutboundRequest {
        conversation_id: conversation_id.clone(),
        content: Some(MessageContent {
            r#type: ContentType::Text as i32,
            text: format!("Dạ mẫu số {i}"),
            ..Default::default()
        }),
        quote_message_id: String::new(),
        idempotency_key: format!("burst-{i}"),
    };
    let mut recorded = Vec::new();
    for i in 0..COUNT {
        recorded.push(
            staff
                .record_outbound(reply(i))
                .await
                .expect("records")
                .into_inner()
                .message
                .expect("message"),
        );
    }
    wait_until("all sent", || sim.sent(OWNER).len() >= COUNT).await;
    let sent = sim.sent(OWNER);
    assert_eq!(sent.len(), COUNT, "{sent:?}");
    // When the simulator received each send: a bucket of BURST refilled every INTERVAL
    // allows at most BURST + (span / INTERVAL) sends in any span.
    let times: Vec<i64> = sent.iter().map(|message| message.received_at_ms).collect();
    for i in 0..times.len() {
        for j in i + 1..times.len() {
            let between = (j - i) as i64;
            if between > BURST as i64 {
                let least = (between - BURST as i64) * INTERVAL_MS;
                // Slack for the moments between taking a token and the request arriving (a
                // database update on a loaded machine); without pacing the whole burst would
                // arrive within a few milliseconds.
                assert!(
                    times[j] - times[i] >= least - 150,
                    "sends {i}..{j} {} ms apart, the bucket allows no less than {least} ms: {times:?}",
                    times[j] - times[i]
                );
            }
        }
    }
    let first = &recorded[0];
    let stored = wait_message(&store, &sent[0].msg_id, "delivery recorded", |m| {
        m.delivery_status == DeliveryStatus::Sent as i32
    })
    .await;
    assert_eq!(stored.direction, Direction::Outbound as i32);

    // The same request delivered again: not sent twice.
    let bus = giao_bus::connect(&backend.bus).await.expect("bus");
    giao_bus::envelope::EventPublisher::new(bus, "test")
        .publish(
            TENANT,
            format!("outbound-requested-again-{}", first.message_id),
            giao_proto::events::envelope::Payload::OutboundRequested(
                giao_proto::events::OutboundRequested {
                    message_id: first.message_id.clone(),
                    conversation_id: conversation_id.clone(),
                    channel_account_id: account.clone(),
                    external_thread_id: "cust-lan".into(),
                    content: first.content.clone(),
                    ..Default::default()
                },
            ),
        )
        .await
        .expect("publishes the duplicate");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(sim.sent(OWNER).len(), COUNT, "sent twice");

    // The session key times out (102): the sender logs in again with the cookies and sends.
    sim.expire_session_keys(OWNER);
    staff
        .record_outbound(reply(COUNT + 10))
        .await
        .expect("records");
    wait_until("sent after a new session key", || {
        sim.sent(OWNER).len() == COUNT + 1
    })
    .await;
    assert_eq!(
        status(&connector, &account).await.0,
        AccountStatus::Connected as i32
    );

    assert_eq!(sim.sent(OWNER)[COUNT].text, "Dạ mẫu số 22");

    // Zalo's rate limit: rate_limited (published for the alert), then the refused message
    // goes out after the pause, once.
    sim.fail_next(OWNER, &[-69]);
    let limited = staff
        .record_outbound(reply(COUNT))
        .await
        .expect("records")
        .into_inner()
        .message
        .expect("message");
    wait_status(&connector, &account, AccountStatus::RateLimited).await;
    let change = status_published(&backend, &account, AccountStatus::RateLimited).await;
    assert!(change.reason.contains("-69"), "{}", change.reason);
    assert_eq!(change.previous_status, AccountStatus::Connected as i32);
    wait_until("the refused message sent after the pause", || {
        sim.sent(OWNER).len() == COUNT + 2
    })
    .await;
    let sent = sim.sent(OWNER);
    let retried: Vec<_> = sent
        .iter()
        .filter(|message| message.text == format!("Dạ mẫu số {COUNT}"))
        .collect();
    assert_eq!(retried.len(), 1, "sent once after the limit: {sent:?}");
    let stored = wait_message(&store, &retried[0].msg_id, "retried send recorded", |m| {
        m.delivery_status == DeliveryStatus::Sent as i32
    })
    .await;
    assert_eq!(stored.message_id, limited.message_id);
    wait_status(&connector, &account, AccountStatus::Connected).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sim.sent(OWNER).len(), COUNT + 2, "nothing sent twice");

    connector.stop().await.expect("connector stops");
    store.stop().await.expect("message-store stops");
}

/// Two replicas on one database race for one account: the simulator never sees two sockets
/// for it at once; when the holder stops, the other takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_replicas_never_run_two_listeners() {
    let mut backend = Backend::new(BackendKind::Postgres).await;
    let sim = simulator().await;
    let config = personal_config(connector_config(&mut backend).await, &sim);
    let mut config_a = config.clone();
    config_a.sessions.replica_id = "replica-a".into();
    let mut config_b = config;
    config_b.sessions.replica_id = "replica-b".into();
    // Both replicas start together and race for the account.
    let (a, b) = tokio::join!(start_connector(config_a), start_connector(config_b));
    let account = create_personal(&a, &sim, OWNER, "Shop Lan").await;
    wait_status(&a, &account, AccountStatus::Connected).await;
    wait_until("one listener", || sim.connections(OWNER) == 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let connects = sim.ws_connects(OWNER);
    let owner = status_owner(&a, &account).await;
    let (holder, other) = match owner.as_str() {
        "replica-a" => (a, b),
        "replica-b" => (b, a),
        unknown => panic!("unexpected session owner {unknown:?}"),
    };
    holder.stop().await.expect("the holder stops");
    wait_until("the other replica listens", || {
        sim.ws_connects(OWNER) > connects && sim.connections(OWNER) == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        sim.max_connections(OWNER),
        1,
        "two sockets at once for one account"
    );
    let new_owner = status_owner(&other, &account).await;
    assert_ne!(new_owner, owner);
    other.stop().await.expect("stops");
}

async fn status_owner(connector: &Running, account: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let owner = connector_client(connector, TENANT, "admin")
            .await
            .account_status(AccountStatusRequest {
                channel_account_id: account.into(),
            })
            .await
            .expect("status")
            .into_inner()
            .session_owner;
        if !owner.is_empty() || tokio::time::Instant::now() > deadline {
            return owner;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Messages sent while an account has no listener (its replica stopped, the lease not yet
/// taken by another) are captured exactly once by the next listener, which resumes after
/// the last msgIds the first one captured.
async fn no_listener_gap(backend: BackendKind) {
    let mut backend = Backend::new(backend).await;
    let sim = simulator().await;
    let store = start_message_store(message_store_config(&mut backend).await).await;
    let config = personal_config(connector_config(&mut backend).await, &sim);
    let mut config_a = config.clone();
    config_a.sessions.replica_id = "replica-a".into();
    let mut config_b = config;
    config_b.sessions.replica_id = "replica-b".into();
    let first = start_connector(config_a).await;
    let account = create_personal(&first, &sim, OWNER, "Shop Lan").await;
    wait_status(&first, &account, AccountStatus::Connected).await;
    wait_until("listening", || sim.connections(OWNER) == 1).await;
    let lan = Sender::new("cust-lan", "Nguyễn Thị Lan");
    let before = sim.inject_dm(OWNER, &lan, "Trước khi tắt").expect("dm");
    let group_before = sim
        .inject_group_message(OWNER, "g-1", &lan, "Nhóm trước khi tắt")
        .expect("group message");
    wait_message(&store, &before, "captured by the first listener", |_| true).await;
    wait_message(&store, &group_before, "group captured first", |_| true).await;

    // The only replica stops: nobody listens while these arrive.
    first.stop().await.expect("the first replica stops");
    wait_until("no listener", || sim.connections(OWNER) == 0).await;
    let missed = [
        sim.inject_dm(OWNER, &lan, "Nhắn khi không ai nghe")
            .expect("dm"),
        sim.inject_self_dm(OWNER, "cust-lan", "Gõ trên điện thoại")
            .expect("phone-typed"),
        sim.inject_group_message(OWNER, "g-1", &lan, "Nhóm khi không ai nghe")
            .expect("group message"),
    ];

    let second = start_connector(config_b).await;
    for msg_id in &missed {
        wait_message(&store, msg_id, "captured by the next listener", |_| true).await;
    }
    // It asked from where the first left off, not for everything or nothing.
    let last_ids: Vec<String> = sim
        .gap_requests(OWNER)
        .iter()
        .filter_map(|request| request["lastId"].as_str().map(str::to_string))
        .collect();
    assert!(last_ids.contains(&before), "{last_ids:?}");
    assert!(last_ids.contains(&group_before), "{last_ids:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let messages = all_messages(&store).await;
    assert_eq!(messages.len(), 5, "{messages:#?}");
    for msg_id in missed.iter().chain([&before, &group_before]) {
        assert_eq!(
            messages
                .iter()
                .filter(|m| &m.external_message_id == msg_id)
                .count(),
            1,
            "{msg_id} once"
        );
    }

    second.stop().await.expect("stops");
    store.stop().await.expect("message-store stops");
}

/// Zalo echoes a message giao sent on the account's socket before the send call returns
/// its msgId: recognised by its clientId, it is not captured a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echo_before_the_send_answer_is_not_captured_twice() {
    let Listening {
        backend: _backend,
        sim,
        store,
        connector,
        ..
    } = listening(|_| {}).await;
    let lan = Sender::new("cust-lan", "Nguyễn Thị Lan");
    let inbound = sim.inject_dm(OWNER, &lan, "Cho mình hỏi").expect("dm");
    let conversation_id = wait_message(&store, &inbound, "inbound stored", |_| true)
        .await
        .conversation_id;

    sim.echo_sends(OWNER, Some(Duration::from_millis(300)));
    message_store_client(&store, TENANT, "admin")
        .await
        .record_outbound(RecordOutboundRequest {
            conversation_id,
            content: Some(MessageContent {
                r#type: ContentType::Text as i32,
                text: "Dạ shop nghe ạ".into(),
                ..Default::default()
            }),
            quote_message_id: String::new(),
            idempotency_key: "echoed".into(),
        })
        .await
        .expect("records");
    wait_until("sent", || sim.sent(OWNER).len() == 1).await;
    let sent = sim.sent(OWNER).remove(0);
    wait_message(&store, &sent.msg_id, "delivery recorded", |m| {
        m.delivery_status == DeliveryStatus::Sent as i32
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let messages = all_messages(&store).await;
    assert_eq!(messages.len(), 2, "{messages:#?}");

    connector.stop().await.expect("connector stops");
    store.stop().await.expect("message-store stops");
}

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

/// An image, a file and a sticker recorded in message-store go out from a personal account:
/// the image and the file are uploaded in chunks with the exact stored bytes (the file's
/// upload confirmed on the listener's socket), and all three come back as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_files_and_stickers_go_out_with_their_bytes() {
    use zalo_personal::sim::{MediaKind, SentKind};
    let mut backend = Backend::new(BackendKind::Sqlite).await;
    let sim = simulator().await;
    // Several chunks per upload.
    sim.set_upload_chunk_size(4 * 1024);
    let store_config = message_store_config(&mut backend).await;
    let attachments_dir = store_config.attachments_dir.clone();
    let store = start_message_store(store_config).await;
    let mut config = personal_config(connector_config(&mut backend).await, &sim);
    config.attachments_dir = attachments_dir;
    let connector = start_connector(config).await;
    let account = create_personal(&connector, &sim, OWNER, "Shop Lan").await;
    wait_status(&connector, &account, AccountStatus::Connected).await;
    wait_until("listening", || sim.connections(OWNER) == 1).await;
    let lan = Sender::new("cust-lan", "Nguyễn Thị Lan");
    let inbound = sim.inject_dm(OWNER, &lan, "Gửi mình ảnh mẫu").expect("dm");
    let conversation_id = wait_message(&store, &inbound, "inbound stored", |_| true)
        .await
        .conversation_id;

    // A PNG of 40 × 30 (its header is what the frame size is read from) and a PDF.
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13];
    png.extend_from_slice(b"IHDR");
    png.extend_from_slice(&40u32.to_be_bytes());
    png.extend_from_slice(&30u32.to_be_bytes());
    png.extend((0..10_000u32).map(|i| (i * 7 % 251) as u8));
    let pdf: Vec<u8> = b"%PDF-1.4\n"
        .iter()
        .copied()
        .chain((0..20_000u32).map(|i| (i * 13 % 253) as u8))
        .collect();
    let photo = store_attachment(&store, "ao-mau", "image/png", &png).await;
    let price_list = store_attachment(&store, "bang-gia.pdf", "application/pdf", &pdf).await;

    let mut staff = message_store_client(&store, TENANT, "admin").await;
    let send = |key: &str, content: MessageContent| RecordOutboundRequest {
        conversation_id: conversation_id.clone(),
        content: Some(content),
        quote_message_id: String::new(),
        idempotency_key: key.into(),
    };
    let mut recorded = Vec::new();
    for (key, content) in [
        (
            "img",
            MessageContent {
                r#type: ContentType::Image as i32,
                text: "Mẫu áo bạn hỏi".into(),
                attachments: vec![photo],
                ..Default::default()
            },
        ),
        (
            "file",
            MessageContent {
                r#type: ContentType::File as i32,
                attachments: vec![price_list],
                ..Default::default()
            },
        ),
        (
            "sticker",
            MessageContent {
                r#type: ContentType::Sticker as i32,
                sticker_id: "23339".into(),
                raw_json: r#"{"id":23339,"catId":10425,"type":7}"#.into(),
                ..Default::default()
            },
        ),
    ] {
        recorded.push(
            staff
                .record_outbound(send(key, content))
                .await
                .expect("records")
                .into_inner()
                .message
                .expect("message"),
        );
    }
    wait_until("all three sent", || sim.sent(OWNER).len() == 3).await;
    let sent = sim.sent(OWNER);
    let kinds: Vec<SentKind> = sent.iter().map(|message| message.kind()).collect();
    assert_eq!(
        kinds,
        vec![SentKind::Image, SentKind::File, SentKind::Sticker]
    );
    assert!(sent.iter().all(|message| message.to == "cust-lan"));
    let uploads = sim.uploads(OWNER);
    let image = uploads
        .iter()
        .find(|upload| upload.kind == MediaKind::Image)
        .expect("the image was uploaded");
    assert_eq!(image.bytes, png, "the stored image's bytes");
    assert_eq!(image.file_name, "ao-mau.png");
    assert!(image.chunks > 1, "in chunks");
    assert_eq!(sent[0].text, "Mẫu áo bạn hỏi");
    assert_eq!(sent[0].params["width"], 40);
    assert_eq!(sent[0].params["height"], 30);
    let file = uploads
        .iter()
        .find(|upload| upload.kind == MediaKind::File)
        .expect("the file was uploaded");
    assert_eq!(file.bytes, pdf, "the stored file's bytes");
    assert_eq!(file.file_name, "bang-gia.pdf");
    assert_eq!(sent[2].params["cateId"], 10425);
    for (message, zalo) in recorded.iter().zip(&sent) {
        let stored = wait_message(&store, &zalo.msg_id, "delivery recorded", |m| {
            m.delivery_status == DeliveryStatus::Sent as i32
        })
        .await;
        assert_eq!(stored.message_id, message.message_id);
    }

    connector.stop().await.expect("connector stops");
    store.stop().await.expect("message-store stops");
}

/// Credentials given to CreateAccount for a personal account are stored sealed: opened
/// they are the ones given, and none of their values is in clear at rest.
async fn create_account_seals_credentials(backend: BackendKind) {
    let mut backend = Backend::new(backend).await;
    let sim = simulator().await;
    let config = personal_config(connector_config(&mut backend).await, &sim);
    let connector = start_connector(config.clone()).await;
    let credentials = sim.issue_credentials(OWNER, USER_AGENT);
    let account = connector_client(&connector, TENANT, "admin")
        .await
        .create_account(CreateAccountRequest {
            kind: ChannelKind::ZaloPersonal as i32,
            display_name: "Shop Lan".into(),
            credentials_json: serde_json::to_string(&credentials).expect("json"),
            ..Default::default()
        })
        .await
        .expect("creates the account")
        .into_inner()
        .channel_account_id;
    // The stored credentials work: the account logs in with them and listens.
    wait_status(&connector, &account, AccountStatus::Connected).await;
    assert_eq!(
        sim.logins(OWNER).first().map(|login| login.imei.clone()),
        Some(credentials.imei.clone())
    );
    assert_sealed_at_rest(&config, &account, &credentials).await;
    connector.stop().await.expect("connector stops");
}

/// During a rolling deploy a replica meets a session another replica sealed under a key it
/// does not know yet: the account shows disconnected and why, never needs_login, and
/// listens again once the replica knows the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_unknown_to_this_replica_is_waited_out() {
    use giao_connector::{
        credentials::{Sealer, reseal_account},
        store::SealStore,
    };
    // Base64 of 32 bytes each.
    let key = |id: &str| {
        let value = match id {
            "a" => "Z2lhby10ZXN0LWtleS1hLTMyLWJ5dGVzLWxvbmchISE=",
            _ => "Z2lhby10ZXN0LWtleS1iLTMyLWJ5dGVzLWxvbmchISE=",
        };
        (id.to_string(), value.to_string())
    };
    let mut backend = Backend::new(BackendKind::Sqlite).await;
    let sim = simulator().await;
    let mut config = personal_config(connector_config(&mut backend).await, &sim);
    config.credentials = giao_connector::CredentialsConfig {
        key_id: "a".into(),
        keys: [key("a")].into_iter().collect(),
        retired_key_ids: Vec::new(),
    };
    let connector = start_connector(config.clone()).await;
    let account = create_personal(&connector, &sim, OWNER, "Shop Lan").await;
    wait_status(&connector, &account, AccountStatus::Connected).await;
    connector.stop().await.expect("connector stops");

    // A replica already on key b (current) re-sealed the session.
    let database = giao_storage::Database::connect(&config.database)
        .await
        .expect("connects");
    let mut newer = config.credentials.clone();
    newer.keys.extend([key("b")]);
    newer.key_id = "b".into();
    let newer = Sealer::from_config(&newer).expect("keys");
    let resealed = reseal_account(&SealStore::new(database), &newer, TENANT, &account).await;
    assert!(matches!(resealed.expect("written"), Some(Ok(true))));

    let connector = start_connector(config.clone()).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (now, reason) = status(&connector, &account).await;
        if reason.contains("unknown to this replica") {
            assert_eq!(now, AccountStatus::Disconnected as i32, "{reason}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{now}: {reason}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    connector.stop().await.expect("connector stops");

    // The replica now knows key b (still sealing with a): the account listens again.
    config.credentials.keys.extend([key("b")]);
    let connector = start_connector(config).await;
    wait_status(&connector, &account, AccountStatus::Connected).await;
    connector.stop().await.expect("connector stops");
}

/// A listener that ended by itself (Zalo closed with a code it does not list as
/// retryable, or the server's retries ran out) leaves the account disconnected and starts
/// again after `restart_after_ms`, not at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_listener_starts_again_after_restart_after_ms() {
    const RESTART_AFTER_MS: i64 = 1_500;
    let Listening {
        backend: _backend,
        sim,
        store,
        connector,
        account,
        ..
    } = listening(|config| config.zalo_personal.restart_after_ms = RESTART_AFTER_MS as u64).await;
    assert_eq!(sim.ws_attempts(OWNER).len(), 1);

    assert!(!sim.config().close_and_retry_codes.contains(&4001));
    let closed_at = now_ms();
    sim.close_sockets(OWNER, 4001);
    let reason = wait_status(&connector, &account, AccountStatus::Disconnected).await;
    assert!(reason.contains("4001"), "{reason}");
    wait_until("a new listener", || sim.ws_attempts(OWNER).len() == 2).await;
    let gap = sim.ws_attempts(OWNER)[1] - closed_at;
    // Not the listener's own reconnect (50 ms here): the supervisor's restart delay, give
    // or take its ticks on a loaded machine.
    assert!(
        (RESTART_AFTER_MS..RESTART_AFTER_MS + 3_000).contains(&gap),
        "restarted {gap} ms after the close"
    );
    wait_status(&connector, &account, AccountStatus::Connected).await;
    wait_until("listening again", || sim.connections(OWNER) == 1).await;

    // The socket is refused until the server's retries for 1006 run out; the account is
    // disconnected meanwhile. Once they have, sockets are accepted again: a listener still
    // retrying would connect within the server's delay (100 ms), a new one only after the
    // restart delay.
    let before = sim.ws_attempts(OWNER).len();
    let retries = sim.config().retry_max as usize;
    sim.refuse_sockets(OWNER, true);
    sim.drop_connections(OWNER);
    wait_until("the server's maximum of attempts", || {
        sim.ws_attempts(OWNER).len() == before + retries
    })
    .await;
    // Still disconnected, and the reason now says the listener gave up rather than the
    // "reconnecting" of its first attempt.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (now, reason) = status(&connector, &account).await;
        assert_eq!(now, AccountStatus::Disconnected as i32, "{reason}");
        if reason.contains("cannot reconnect") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reason stays {reason:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let attempts = sim.ws_attempts(OWNER);
    let gave_up_at = attempts[attempts.len() - 1];
    sim.refuse_sockets(OWNER, false);
    wait_until("a new listener", || {
        sim.ws_attempts(OWNER).len() == before + retries + 1
    })
    .await;
    let gap = sim.ws_attempts(OWNER)[before + retries] - gave_up_at;
    assert!(
        (RESTART_AFTER_MS..RESTART_AFTER_MS + 3_000).contains(&gap),
        "restarted {gap} ms after the last attempt"
    );
    wait_status(&connector, &account, AccountStatus::Connected).await;
    connector.stop().await.expect("connector stops");
    store.stop().await.expect("message-store stops");
}

/// The adapter calls keep-alive every `keepalive_secs` while the socket is up; a session
/// key that timed out (102) is renewed with the cookies without a reconnect; cookies that
/// expired are found by the keep-alive alone and the account needs a QR login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_renews_the_session_and_finds_expired_cookies() {
    let Listening {
        backend,
        sim,
        store,
        connector,
        account,
        ..
    } = listening(|config| config.zalo_personal.keepalive_secs = 1).await;
    wait_until("periodic keep-alives", || sim.keep_alives(OWNER) >= 2).await;
    let connects = sim.ws_connects(OWNER);

    // The session key times out: the next keep-alive is refused (102), a cookie login
    // gives a new key, and the keep-alives after it succeed.
    let logins = sim.logins(OWNER).len();
    sim.expire_session_keys(OWNER);
    wait_until("a cookie login after the refused keep-alive", || {
        sim.logins(OWNER).len() > logins
    })
    .await;
    let kept = sim.keep_alives(OWNER);
    wait_until("keep-alives with the new key", || {
        sim.keep_alives(OWNER) > kept
    })
    .await;
    assert_eq!(
        status(&connector, &account).await.0,
        AccountStatus::Connected as i32
    );
    assert_eq!(sim.ws_connects(OWNER), connects, "no reconnect needed");

    // The cookies expire while the socket stays up: only the keep-alive can notice.
    sim.expire_cookies(OWNER);
    let reason = wait_status(&connector, &account, AccountStatus::NeedsLogin).await;
    assert!(reason.contains("QR"), "{reason}");
    wait_until("the listener stopped", || sim.connections(OWNER) == 0).await;
    assert_eq!(sim.ws_connects(OWNER), connects, "no reconnect attempt");
    let change = status_published(&backend, &account, AccountStatus::NeedsLogin).await;
    assert_eq!(change.previous_status, AccountStatus::Connected as i32);
    connector.stop().await.expect("connector stops");
    store.stop().await.expect("message-store stops");
}

/// The raw events kept for `account`: (name, body), oldest first.
async fn raw_events(config: &giao_connector::Config, account: &str) -> Vec<(String, String)> {
    let giao_storage::Database::Sqlite(pool) = giao_storage::Database::connect(&config.database)
        .await
        .expect("db")
    else {
        panic!("a SQLite test")
    };
    let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT event_name, body FROM raw_channel_events \
         WHERE tenant_id = ?1 AND channel_account_id = ?2 ORDER BY seq",
    )
    .bind(TENANT)
    .bind(account)
    .fetch_all(&pool)
    .await
    .expect("reads raw events");
    rows.into_iter()
        .map(|(name, body)| (name, String::from_utf8(body).expect("text bodies")))
        .collect()
}

/// Friend and group notices are kept raw, each with its whole control item; a reaction
/// reaches the message it is on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_are_kept_raw_and_reactions_reach_their_message() {
    use zalo_personal::sim::social::SimGroup;
    let Listening {
        backend: _backend,
        sim,
        config,
        store,
        connector,
        account,
    } = listening(|_| {}).await;

    let lan = Sender::new("cust-lan", "Nguyễn Thị Lan");
    sim.inject_friend_request(OWNER, &lan, "Cho mình kết bạn nhé")
        .expect("friend request");
    sim.inject_friend_added(OWNER, "cust-lan")
        .expect("friend added");
    let group = SimGroup::new("g-90", "Khách sỉ Hà Nội", "cust-lan");
    sim.inject_added_to_group(OWNER, &group, "cust-lan", std::slice::from_ref(&lan))
        .expect("added to a group");
    sim.inject_group_renamed(OWNER, &group, "cust-lan")
        .expect("group renamed");

    // The request comes twice ("req" and "req_v2"): both kept.
    let deadline = tokio::time::Instant::now() + WAIT;
    let raw = loop {
        let raw = raw_events(&config, &account).await;
        if raw.len() >= 5 || tokio::time::Instant::now() > deadline {
            break raw;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let kept = |name: &str, parts: &[&str]| {
        raw.iter().any(|(kept_name, body)| {
            kept_name == name && parts.iter().all(|part| body.contains(part))
        })
    };
    for (name, parts) in [
        (
            "personal_control_fr",
            &["\"req\"", "cust-lan", "Cho mình kết bạn nhé"][..],
        ),
        (
            "personal_control_fr",
            &["req_v2", "cust-lan", "Cho mình kết bạn nhé"][..],
        ),
        ("personal_control_fr", &["\"add\"", "cust-lan"][..]),
        (
            "personal_control_group",
            &["\"join\"", "g-90", "Khách sỉ Hà Nội", OWNER][..],
        ),
        ("personal_control_group", &["\"update\"", "g-90"][..]),
    ] {
        assert!(kept(name, parts), "no {name} with {parts:?} in {raw:#?}");
    }
    assert_eq!(raw.len(), 5, "{raw:#?}");
    assert!(
        all_messages(&store).await.is_empty(),
        "notices are not messages"
    );

    let inbound = sim.inject_dm(OWNER, &lan, "Áo này đẹp quá").expect("dm");
    wait_message(&store, &inbound, "inbound stored", |_| true).await;
    sim.inject_reaction(OWNER, &lan, &inbound, "/-heart")
        .expect("reaction");
    let reacted = wait_message(&store, &inbound, "the reaction on its message", |m| {
        !m.reactions.is_empty()
    })
    .await;
    assert_eq!(reacted.reactions.len(), 1, "{:?}", reacted.reactions);
    assert_eq!(reacted.reactions[0].reactor_external_id, "cust-lan");
    assert_eq!(reacted.reactions[0].reaction, "/-heart");

    connector.stop().await.expect("connector stops");
    store.stop().await.expect("message-store stops");
}

/// The display name of the contact whose conversation holds `message`.
async fn contact_name(store: &Running, message: &Message) -> String {
    use giao_proto::messagestore::{GetContactRequest, GetConversationRequest};
    let mut client = message_store_client(store, TENANT, "admin").await;
    let conversation = client
        .get_conversation(GetConversationRequest {
            conversation_id: message.conversation_id.clone(),
        })
        .await
        .expect("conversation")
        .into_inner();
    client
        .get_contact(GetContactRequest {
            contact_id: conversation.contact_id,
        })
        .await
        .expect("contact")
        .into_inner()
        .display_name
}

/// A customer's message without a name (no dName) gets the name from their profile, so a
/// new customer's contact is named; a sender with no profile is still captured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nameless_senders_name_comes_from_their_profile() {
    let Listening {
        backend: _backend,
        sim,
        store,
        connector,
        ..
    } = listening(|_| {}).await;

    sim.add_user(SimAccount::new("cust-moi", "Phạm Thị Mới"));
    let unnamed = sim
        .inject_dm(OWNER, &Sender::new("cust-moi", ""), "Shop ơi")
        .expect("dm");
    let nobody = sim
        .inject_dm(OWNER, &Sender::new("cust-ghost", ""), "Alo")
        .expect("dm");
    let message = wait_message(&store, &unnamed, "the nameless message", |_| true).await;
    assert_eq!(contact_name(&store, &message).await, "Phạm Thị Mới");
    let message = wait_message(&store, &nobody, "a sender without profile", |_| true).await;
    assert_eq!(contact_name(&store, &message).await, "");

    connector.stop().await.expect("connector stops");
    store.stop().await.expect("message-store stops");
}
