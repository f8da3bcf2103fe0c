//! The client against the simulator: real HTTP and websocket servers on loopback port 0,
//! real signing, encryption and framing on both sides.

use std::time::Duration;

use zalo_personal::{
    client::{
        Client, ClientError, Credentials, Endpoints, Listener, ListenerConfig, ListenerEvent,
        QrConfig, QrEvent, ResumePoint, Session, SkippedFrames, StopReason, new_client_id,
    },
    events::{Content, Event, ThreadKind},
    sim::{Corruption, Sender, SimAccount, SimConfig, Simulator, Thread},
};

const OWNER: &str = "100000001";
const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) giao-test";
const WAIT: Duration = Duration::from_secs(10);

fn sim_config() -> SimConfig {
    SimConfig {
        long_poll: Duration::from_millis(200),
        ping_interval: Duration::from_millis(200),
        retry_delays: vec![Duration::from_millis(50), Duration::from_millis(100)],
        ..SimConfig::default()
    }
}

async fn simulator() -> (Simulator, Client) {
    simulator_with(sim_config()).await
}

async fn simulator_with(config: SimConfig) -> (Simulator, Client) {
    let sim = Simulator::start(
        config,
        "127.0.0.1:0".parse().expect("address"),
        std::future::pending(),
    )
    .await
    .expect("simulator starts");
    sim.add_account(SimAccount::new(OWNER, "Chủ shop"));
    let client = Client::new(Endpoints::all_at(&sim.base_url()));
    (sim, client)
}

async fn logged_in() -> (Simulator, Client, Credentials, Session) {
    logged_in_with(sim_config()).await
}

async fn logged_in_with(config: SimConfig) -> (Simulator, Client, Credentials, Session) {
    let (sim, client) = simulator_with(config).await;
    let credentials = sim.issue_credentials(OWNER, USER_AGENT);
    let session = client.login(&credentials).await.expect("cookie login");
    (sim, client, credentials, session)
}

fn listener_config() -> ListenerConfig {
    ListenerConfig {
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        ..ListenerConfig::default()
    }
}

/// The next listener event matching `wanted`, skipping others; panics after `WAIT`.
async fn next_matching(
    listener: &mut Listener,
    wanted: impl Fn(&ListenerEvent) -> bool,
) -> ListenerEvent {
    let found = tokio::time::timeout(WAIT, async {
        loop {
            let event = listener.recv().await.expect("listener still running");
            if wanted(&event) {
                return event;
            }
        }
    })
    .await;
    found.expect("the expected listener event within the wait")
}

/// Events until `count` messages arrived (panics after `WAIT`), then whatever else arrives
/// within `settle`: repeats would show up there.
async fn messages_then_settle(
    listener: &mut Listener,
    count: usize,
    settle: Duration,
) -> Vec<ListenerEvent> {
    let mut events = Vec::new();
    tokio::time::timeout(WAIT, async {
        while message_ids(&events).len() < count {
            events.push(listener.recv().await.expect("listener still running"));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{count} messages within the wait, got {events:?}"));
    events.extend(drain(listener, settle).await);
    events
}

/// Every event arriving within `window`.
async fn drain(listener: &mut Listener, window: Duration) -> Vec<ListenerEvent> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, listener.recv()).await {
        events.push(event);
    }
    events
}

async fn connected(session: &Session) -> Listener {
    let mut listener = session.listen(listener_config());
    next_matching(&mut listener, |event| {
        matches!(event, ListenerEvent::Connected { .. })
    })
    .await;
    listener
}

fn message_ids(events: &[ListenerEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match event {
            ListenerEvent::Event(Event::Message(message)) => Some(message.msg_id.clone()),
            _ => None,
        })
        .collect()
}

async fn next_qr(events: &mut tokio::sync::mpsc::Receiver<QrEvent>) -> QrEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("a QR event within the wait")
        .expect("the QR flow still running")
}

fn qr_config(expiry: Duration) -> QrConfig {
    QrConfig {
        user_agent: USER_AGENT.into(),
        expiry,
        poll_timeout: Duration::from_secs(5),
        ..QrConfig::default()
    }
}

#[tokio::test]
async fn qr_login_scanned_and_confirmed_gives_credentials_that_log_in() {
    let (sim, client) = simulator().await;
    let mut events = client.login_qr(qr_config(WAIT));
    let QrEvent::QrReady {
        image_png_base64,
        code,
    } = next_qr(&mut events).await
    else {
        panic!("first event is the QR");
    };
    assert!(
        image_png_base64.starts_with("iVBOR"),
        "a PNG without the data: prefix"
    );
    assert_eq!(sim.last_qr_code().as_deref(), Some(code.as_str()));
    // Let the client sit in a few long polls (error_code 8) before the phone acts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sim.scan_qr(&code, OWNER));
    assert_eq!(
        next_qr(&mut events).await,
        QrEvent::Scanned {
            display_name: "Chủ shop".into(),
            avatar: SimAccount::new(OWNER, "").avatar,
        }
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sim.confirm_qr(&code));
    let QrEvent::Confirmed(credentials) = next_qr(&mut events).await else {
        panic!("confirmed");
    };
    assert_eq!(credentials.user_agent, USER_AGENT);
    assert!(
        credentials
            .cookies
            .iter()
            .any(|cookie| cookie.name == "zpw_sek")
    );
    let session = client
        .login(&credentials)
        .await
        .expect("the new cookies log in");
    assert_eq!(session.uid, OWNER);
}

#[tokio::test]
async fn qr_login_declined_on_the_phone() {
    let (sim, client) = simulator().await;
    let mut events = client.login_qr(qr_config(WAIT));
    let QrEvent::QrReady { code, .. } = next_qr(&mut events).await else {
        panic!("first event is the QR");
    };
    assert!(sim.scan_qr(&code, OWNER));
    assert!(matches!(
        next_qr(&mut events).await,
        QrEvent::Scanned { .. }
    ));
    assert!(sim.decline_qr(&code));
    assert_eq!(next_qr(&mut events).await, QrEvent::Declined);
}

#[tokio::test]
async fn qr_login_expires_when_nobody_scans() {
    let (_sim, client) = simulator().await;
    let mut events = client.login_qr(qr_config(Duration::from_millis(700)));
    assert!(matches!(
        next_qr(&mut events).await,
        QrEvent::QrReady { .. }
    ));
    assert_eq!(next_qr(&mut events).await, QrEvent::Expired);
}

#[tokio::test]
async fn cookie_login_reads_the_session_and_socket_settings() {
    let (sim, _client, _credentials, session) = logged_in().await;
    assert_eq!(session.uid, OWNER);
    assert_eq!(session.services.chat, vec![sim.base_url()]);
    assert_eq!(session.services.group, vec![sim.base_url()]);
    assert_eq!(session.ws_urls.len(), 1);
    assert_eq!(session.socket.ping_interval, Duration::from_millis(200));
    assert!(session.socket.close_and_retry_codes.contains(&1006));
    assert_eq!(session.socket.retries[&1006].max, 10);
}

#[tokio::test]
async fn cookies_bound_to_another_user_agent_need_a_login() {
    let (sim, client) = simulator().await;
    let mut credentials = sim.issue_credentials(OWNER, USER_AGENT);
    credentials.user_agent = "another browser".into();
    let error = client.login(&credentials).await.expect_err("refused");
    assert!(
        matches!(error, ClientError::NeedsLogin { code: 102, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn text_to_a_user_and_a_group_reaches_the_simulator() {
    let (sim, _client, credentials, session) = logged_in().await;
    let to_user = session
        .send_text("200", "Xin chào anh")
        .await
        .expect("sent");
    let to_group = session
        .send_group_text("g-300", "Chào cả nhà")
        .await
        .expect("sent");
    let sent = sim.sent(OWNER);
    assert_eq!(sent.len(), 2);
    assert_eq!(
        (sent[0].thread, sent[0].to.as_str(), sent[0].text.as_str()),
        (Thread::User, "200", "Xin chào anh")
    );
    assert_eq!(sent[0].msg_id, to_user);
    assert_eq!(sent[0].params["imei"], credentials.imei.as_str());
    assert_eq!(
        (sent[1].thread, sent[1].to.as_str(), sent[1].text.as_str()),
        (Thread::Group, "g-300", "Chào cả nhà")
    );
    assert_eq!(sent[1].msg_id, to_group);
    let info = session.user_info(OWNER).await.expect("profile");
    assert_eq!(info.display_name, "Chủ shop");
}

/// Profiles answer for the account and for the customers the simulator knows; a message
/// from a sender without a name carries none, which the caller looks up.
#[tokio::test]
async fn user_info_names_known_users_and_unnamed_messages_carry_no_name() {
    let (sim, _client, _credentials, session) = logged_in().await;
    sim.add_user(SimAccount::new("200", "Trần Văn Khách"));
    let info = session.user_info("200").await.expect("a known customer");
    assert_eq!(
        (info.uid.as_str(), info.display_name.as_str()),
        ("200", "Trần Văn Khách")
    );
    assert_eq!(info.avatar, SimAccount::new("200", "").avatar);
    let error = session
        .user_info("404")
        .await
        .expect_err("nobody has uid 404");
    assert!(error.to_string().contains("404"), "{error}");

    let mut listener = connected(&session).await;
    let unnamed = sim
        .inject_dm(OWNER, &Sender::new("200", ""), "không có tên")
        .expect("account");
    let events = messages_then_settle(&mut listener, 1, Duration::ZERO).await;
    let message = events
        .iter()
        .find_map(|event| match event {
            ListenerEvent::Event(Event::Message(message)) if message.msg_id == unnamed => {
                Some(message)
            }
            _ => None,
        })
        .expect("the message");
    assert_eq!(message.display_name, None);
}

/// A send with a clientId the caller chose carries it, and the echo Zalo may push before
/// the send is answered names it as `cliMsgId`.
#[tokio::test]
async fn a_chosen_client_id_is_sent_and_names_the_echo() {
    let (sim, _client, _credentials, session) = logged_in().await;
    let mut listener = connected(&session).await;
    sim.echo_sends(OWNER, Some(Duration::from_millis(200)));
    let client_id = new_client_id();
    let msg_id = session
        .send_text_with_id("200", "Dạ shop nghe", client_id)
        .await
        .expect("sent");
    let sent = sim.sent(OWNER);
    assert_eq!(sent[0].client_id, client_id.to_string());
    assert!(sent[0].received_at_ms > 0);
    let echo = next_matching(&mut listener, |event| {
        matches!(event, ListenerEvent::Event(Event::Message(_)))
    })
    .await;
    let ListenerEvent::Event(Event::Message(message)) = echo else {
        panic!("a message: {echo:?}");
    };
    assert!(message.from_self);
    assert_eq!(message.cli_msg_id, client_id.to_string());
    assert_eq!(message.msg_id, msg_id);
    assert!(new_client_id() > client_id);
}

#[tokio::test]
async fn session_key_timeout_and_cookie_expiry_ask_for_a_login() {
    let (sim, client, credentials, session) = logged_in().await;
    sim.expire_session_keys(OWNER);
    let error = session.send_text("200", "hi").await.expect_err("refused");
    assert!(matches!(error, ClientError::SessionKeyExpired), "{error:?}");
    assert!(error.needs_login());
    // A new cookie login brings a new key.
    let session = client
        .login(&credentials)
        .await
        .expect("cookies still good");
    session.send_text("200", "hi").await.expect("sent again");
    sim.expire_cookies(OWNER);
    let error = client
        .login(&credentials)
        .await
        .expect_err("cookies expired");
    assert!(
        matches!(error, ClientError::NeedsLogin { code: 102, .. }),
        "{error:?}"
    );
    let error = session.send_text("200", "hi").await.expect_err("refused");
    assert!(error.needs_login(), "{error:?}");
    let mut listener = session.listen(listener_config());
    let stopped = next_matching(&mut listener, |event| {
        matches!(event, ListenerEvent::Stopped(_))
    })
    .await;
    assert!(
        matches!(stopped, ListenerEvent::Stopped(StopReason::NeedsLogin(_))),
        "{stopped:?}"
    );
}

#[tokio::test]
async fn rate_limit_codes_map_to_typed_errors() {
    let (sim, _client, _credentials, session) = logged_in().await;
    sim.fail_next(OWNER, &[-69, 221, -5]);
    let retry = session.send_text("200", "a").await.expect_err("limited");
    assert!(matches!(retry, ClientError::RetryLimit), "{retry:?}");
    let request = session.send_text("200", "b").await.expect_err("limited");
    assert!(matches!(request, ClientError::RequestLimit), "{request:?}");
    assert!(retry.is_rate_limit() && request.is_rate_limit());
    let other = session.send_text("200", "c").await.expect_err("refused");
    assert_eq!(other.code(), Some(-5));
    session.send_text("200", "d").await.expect("then it works");
    assert_eq!(sim.sent(OWNER).len(), 1);
}

#[tokio::test]
async fn inbound_direct_self_sent_group_recall_reaction_and_receipts_arrive() {
    let (sim, _client, _credentials, session) = logged_in().await;
    let mut listener = connected(&session).await;
    let customer = Sender::new("200", "Khách A");
    let dm = sim
        .inject_dm(OWNER, &customer, "Còn hàng không?")
        .expect("account");
    let mine = sim.inject_self_dm(OWNER, "200", "Còn ạ").expect("account");
    let in_group = sim
        .inject_group_message(OWNER, "g-300", &customer, "Hello nhóm")
        .expect("account");
    let recall = sim.inject_recall(OWNER, &customer, &dm).expect("account");
    sim.inject_reaction(OWNER, &customer, &mine, "/-heart")
        .expect("account");
    sim.inject_seen(OWNER, "200", &mine).expect("account");
    sim.inject_delivered(OWNER, "200", &mine).expect("account");

    let event = |event: ListenerEvent| match event {
        ListenerEvent::Event(event) => event,
        other => panic!("an event, got {other:?}"),
    };
    let is_event = |event: &ListenerEvent| matches!(event, ListenerEvent::Event(_));
    let Event::Message(first) = event(next_matching(&mut listener, is_event).await) else {
        panic!("the customer's message");
    };
    assert_eq!(first.msg_id, dm);
    assert_eq!(first.thread_kind, ThreadKind::Direct);
    assert!(!first.from_self);
    assert_eq!(first.content, Content::Text("Còn hàng không?".into()));
    let Event::Message(second) = event(next_matching(&mut listener, is_event).await) else {
        panic!("the owner's message from the phone");
    };
    assert_eq!(second.msg_id, mine);
    assert!(second.from_self, "uidFrom 0 is the account itself");
    let Event::Message(third) = event(next_matching(&mut listener, is_event).await) else {
        panic!("the group message");
    };
    assert_eq!(
        (third.msg_id.as_str(), third.thread_kind),
        (in_group.as_str(), ThreadKind::Group)
    );
    let Event::Recall(undo) = event(next_matching(&mut listener, is_event).await) else {
        panic!("the recall");
    };
    assert_eq!(
        (undo.msg_id.as_str(), undo.recalled_msg_id.as_str()),
        (recall.as_str(), dm.as_str())
    );
    let Event::Reaction(reaction) = event(next_matching(&mut listener, is_event).await) else {
        panic!("the reaction");
    };
    assert_eq!(reaction.target_msg_ids, vec![mine.clone()]);
    assert!(matches!(
        event(next_matching(&mut listener, is_event).await),
        Event::Seen(_)
    ));
    assert!(matches!(
        event(next_matching(&mut listener, is_event).await),
        Event::Delivered(_)
    ));
    // The client keeps the socket alive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sim.pings(OWNER) >= 1, "pings every ping_interval");
}

#[tokio::test]
async fn a_message_sent_while_the_socket_is_down_arrives_once_after_reconnect() {
    let (sim, _client, _credentials, session) = logged_in().await;
    let mut listener = connected(&session).await;
    let customer = Sender::new("200", "Khách A");
    let before = sim.inject_dm(OWNER, &customer, "trước").expect("account");
    let seen = messages_then_settle(&mut listener, 1, Duration::from_millis(100)).await;
    assert_eq!(message_ids(&seen), vec![before.clone()]);

    sim.refuse_sockets(OWNER, true);
    sim.drop_connections(OWNER);
    let closed = next_matching(&mut listener, |event| {
        matches!(event, ListenerEvent::Reconnecting { .. })
    })
    .await;
    assert!(
        matches!(closed, ListenerEvent::Reconnecting { code: 1006, .. }),
        "{closed:?}"
    );
    let during = sim
        .inject_dm(OWNER, &customer, "trong lúc mất kết nối")
        .expect("account");
    let group_during = sim
        .inject_group_message(OWNER, "g-300", &customer, "nhóm lúc mất kết nối")
        .expect("account");
    assert_eq!(sim.connections(OWNER), 0, "nothing was pushed live");
    sim.refuse_sockets(OWNER, false);
    next_matching(&mut listener, |event| {
        matches!(event, ListenerEvent::Connected { reconnect: true })
    })
    .await;
    let after = messages_then_settle(&mut listener, 2, Duration::from_millis(300)).await;
    assert_eq!(message_ids(&after), vec![during, group_during], "{after:?}");
    let requests = sim.gap_requests(OWNER);
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0]["lastId"], before.as_str());
}

/// A listener started from a resume point (what an earlier listener delivered) asks for the
/// messages after it on its first connection: those sent while no listener ran arrive once,
/// the ones delivered before do not come again. A group thread nothing was seen in replays
/// from the resume time.
#[tokio::test]
async fn a_listener_resumes_after_the_last_delivered_messages() {
    let (sim, _client, _credentials, session) = logged_in().await;
    let customer = Sender::new("200", "Khách A");
    let mut first = connected(&session).await;
    let before = sim.inject_dm(OWNER, &customer, "trước").expect("account");
    let seen = messages_then_settle(&mut first, 1, Duration::from_millis(100)).await;
    assert_eq!(message_ids(&seen), vec![before.clone()]);
    first.stop();
    drop(first);
    let deadline = tokio::time::Instant::now() + WAIT;
    while sim.connections(OWNER) > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the socket closes");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let since_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let during = sim
        .inject_dm(OWNER, &customer, "không ai nghe")
        .expect("account");
    let group_during = sim
        .inject_group_message(OWNER, "g-300", &customer, "nhóm, không ai nghe")
        .expect("account");

    let mut second = session.listen_from(
        listener_config(),
        ResumePoint {
            direct: Some(before.clone()),
            group: None,
            since_ms: Some(since_ms),
        },
    );
    next_matching(&mut second, |event| {
        matches!(event, ListenerEvent::Connected { reconnect: false })
    })
    .await;
    let after = messages_then_settle(&mut second, 2, Duration::from_millis(300)).await;
    assert_eq!(message_ids(&after), vec![during, group_during], "{after:?}");
    let requests = sim.gap_requests(OWNER);
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0]["lastId"], before.as_str());
    assert!(requests[1]["lastId"].is_null());
}

#[tokio::test]
async fn periodic_abnormal_closes_lose_and_repeat_nothing() {
    let (sim, _client, _credentials, session) = logged_in().await;
    sim.drop_every(OWNER, Some(Duration::from_millis(250)));
    let mut listener = connected(&session).await;
    let customer = Sender::new("200", "Khách A");
    let mut injected = Vec::new();
    for n in 0..12 {
        injected.push(
            sim.inject_dm(OWNER, &customer, &format!("tin {n}"))
                .expect("account"),
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    sim.drop_every(OWNER, None);
    // Let a last reconnect and its gap fill happen.
    tokio::time::sleep(Duration::from_millis(500)).await;
    sim.drop_connections(OWNER);
    let events =
        messages_then_settle(&mut listener, injected.len(), Duration::from_millis(500)).await;
    assert_eq!(
        message_ids(&events),
        injected,
        "every message exactly once, in order"
    );
    assert!(sim.ws_connects(OWNER) >= 3, "it reconnected");
}

#[tokio::test]
async fn a_kick_stops_the_listener_without_reconnecting() {
    for code in [3000, 3003] {
        let (sim, _client, _credentials, session) = logged_in().await;
        let mut listener = connected(&session).await;
        sim.close_sockets(OWNER, code);
        let stopped = next_matching(&mut listener, |event| {
            matches!(event, ListenerEvent::Stopped(_))
        })
        .await;
        assert!(
            matches!(stopped, ListenerEvent::Stopped(StopReason::Kicked { code: got }) if got == code),
            "{stopped:?}"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(sim.ws_connects(OWNER), 1, "no reconnect after {code}");
    }
}

#[tokio::test]
async fn a_duplicate_session_frame_is_a_kick() {
    let (sim, _client, _credentials, session) = logged_in().await;
    let mut listener = connected(&session).await;
    sim.send_duplicate_session(OWNER);
    let stopped = next_matching(&mut listener, |event| {
        matches!(event, ListenerEvent::Stopped(_))
    })
    .await;
    assert!(
        matches!(
            stopped,
            ListenerEvent::Stopped(StopReason::Kicked { code: 3000 })
        ),
        "{stopped:?}"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(sim.ws_connects(OWNER), 1);
}

/// Each kind of spoiled frame is skipped and counted under its reason; the message after it
/// still arrives on the same socket.
#[tokio::test]
async fn corrupted_frames_are_skipped_counted_and_the_session_goes_on() {
    let (sim, _client, _credentials, session) = logged_in().await;
    let mut listener = connected(&session).await;
    let customer = Sender::new("200", "Khách A");
    let mut expected = SkippedFrames::default();
    type Count = fn(&mut SkippedFrames);
    let cases: [(Corruption, Count); 4] = [
        (Corruption::TruncatedHeader, |skipped| {
            skipped.undecodable += 1
        }),
        (Corruption::Garbage, |skipped| skipped.undecodable += 1),
        (Corruption::WrongKey, |skipped| skipped.unreadable += 1),
        (Corruption::UnknownCommand, |skipped| {
            skipped.unknown_command += 1
        }),
    ];
    for (corruption, counted) in cases {
        sim.send_corrupted(OWNER, corruption);
        let dm = sim
            .inject_dm(
                OWNER,
                &customer,
                &format!("vẫn nhận được sau {corruption:?}"),
            )
            .expect("account");
        // The frames travel in order: once the message is here, the spoiled frame was read.
        let events = messages_then_settle(&mut listener, 1, Duration::from_millis(100)).await;
        assert_eq!(message_ids(&events), vec![dm], "{corruption:?}");
        assert!(
            events
                .iter()
                .all(|event| matches!(event, ListenerEvent::Event(_))),
            "no reconnect, no stop after {corruption:?}: {events:?}"
        );
        counted(&mut expected);
        assert_eq!(listener.skipped_frames(), expected, "{corruption:?}");
    }
    assert_eq!(sim.ws_connects(OWNER), 1);
}

/// Unix ms by this machine's clock, which the simulator's stamps also use.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// The listener's last event and then the end of its channel: nothing can reconnect after.
async fn stopped(listener: &mut Listener) -> StopReason {
    let ListenerEvent::Stopped(reason) =
        next_matching(listener, |event| matches!(event, ListenerEvent::Stopped(_))).await
    else {
        unreachable!("matched a stop")
    };
    let after = tokio::time::timeout(WAIT, listener.recv())
        .await
        .expect("the listener ends after its stop");
    assert!(after.is_none(), "an event after the stop: {after:?}");
    reason
}

/// A close code the server lists as retryable is reconnected; one it does not list ends
/// the listener with `Closed` and no further handshake.
#[tokio::test]
async fn only_the_close_codes_the_server_lists_are_retried() {
    let (sim, _client, _credentials, session) = logged_in().await;
    assert!(sim.config().close_and_retry_codes.contains(&1000));
    let mut listener = connected(&session).await;
    sim.close_sockets(OWNER, 1000);
    let event = next_matching(&mut listener, |event| {
        matches!(event, ListenerEvent::Reconnecting { .. })
    })
    .await;
    assert!(
        matches!(event, ListenerEvent::Reconnecting { code: 1000, .. }),
        "{event:?}"
    );
    next_matching(&mut listener, |event| {
        matches!(event, ListenerEvent::Connected { reconnect: true })
    })
    .await;
    assert_eq!(sim.ws_connects(OWNER), 2);

    assert!(!sim.config().close_and_retry_codes.contains(&4001));
    sim.close_sockets(OWNER, 4001);
    assert_eq!(
        stopped(&mut listener).await,
        StopReason::Closed { code: 4001 }
    );
    assert_eq!(sim.ws_connects(OWNER), 2, "reconnected after 4001");
    assert_eq!(sim.ws_attempts(OWNER).len(), 2);
}

/// With the socket refused, the listener tries the server's `max` times after the drop
/// (not its own larger default) and stops with `RetriesExhausted`.
#[tokio::test]
async fn retries_stop_at_the_servers_maximum() {
    let (sim, _client, _credentials, session) = logged_in_with(SimConfig {
        retry_delays: vec![Duration::from_millis(30)],
        retry_max: 3,
        ..sim_config()
    })
    .await;
    let mut listener = session.listen(ListenerConfig {
        max_attempts: 50,
        ..listener_config()
    });
    next_matching(&mut listener, |event| {
        matches!(event, ListenerEvent::Connected { .. })
    })
    .await;
    sim.refuse_sockets(OWNER, true);
    sim.drop_connections(OWNER);
    let mut reconnecting = 0;
    let reason = loop {
        match tokio::time::timeout(WAIT, listener.recv())
            .await
            .expect("an event within the wait")
            .expect("the listener reports its stop")
        {
            ListenerEvent::Reconnecting { code: 1006, .. } => reconnecting += 1,
            ListenerEvent::Stopped(reason) => break reason,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(reason, StopReason::RetriesExhausted { code: 1006 });
    assert_eq!(reconnecting, 3);
    // The first handshake, then the three refused attempts.
    assert_eq!(sim.ws_attempts(OWNER).len(), 4);
    assert!(listener.recv().await.is_none());
}

/// The delays between attempts are the server's `times` for the close code (the last one
/// repeated), not the listener's own backoff, which is set far longer here.
#[tokio::test]
async fn reconnects_wait_the_servers_delays() {
    const FIRST: i64 = 300;
    const THEN: i64 = 700;
    // The listener's own backoff: any gap this long means the server's delays were ignored.
    const OWN_BACKOFF: i64 = 4_000;
    let (sim, _client, _credentials, session) = logged_in_with(SimConfig {
        retry_delays: vec![
            Duration::from_millis(FIRST as u64),
            Duration::from_millis(THEN as u64),
        ],
        ..sim_config()
    })
    .await;
    let mut listener = session.listen(ListenerConfig {
        backoff_initial: Duration::from_millis(OWN_BACKOFF as u64),
        backoff_max: Duration::from_millis(OWN_BACKOFF as u64),
        ..listener_config()
    });
    next_matching(&mut listener, |event| {
        matches!(event, ListenerEvent::Connected { .. })
    })
    .await;
    sim.refuse_sockets(OWNER, true);
    let dropped_at = now_ms();
    sim.drop_connections(OWNER);
    let mut announced = Vec::new();
    while announced.len() < 3 {
        if let ListenerEvent::Reconnecting { retry_in, .. } =
            next_matching(&mut listener, |event| {
                matches!(event, ListenerEvent::Reconnecting { .. })
            })
            .await
        {
            announced.push(retry_in.as_millis() as i64);
        }
    }
    assert_eq!(announced, vec![FIRST, THEN, THEN]);
    let deadline = tokio::time::Instant::now() + WAIT;
    while sim.ws_attempts(OWNER).len() < 4 {
        assert!(tokio::time::Instant::now() < deadline, "three attempts");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let attempts = sim.ws_attempts(OWNER);
    let gaps = [
        attempts[1] - dropped_at,
        attempts[2] - attempts[1],
        attempts[3] - attempts[2],
    ];
    // Never sooner than the delay; later only by the time a refused handshake takes (a
    // loaded machine), well short of the listener's own backoff.
    for (gap, delay) in gaps.iter().zip([FIRST, THEN, THEN]) {
        assert!(
            *gap >= delay - 5 && *gap < delay + 1_500,
            "gap {gap} ms for a delay of {delay} ms: {gaps:?}"
        );
    }
    sim.refuse_sockets(OWNER, false);
    next_matching(&mut listener, |event| {
        matches!(event, ListenerEvent::Connected { reconnect: true })
    })
    .await;
}

#[tokio::test]
async fn stop_closes_the_socket() {
    let (sim, _client, _credentials, session) = logged_in().await;
    let mut listener = connected(&session).await;
    listener.stop();
    let stopped = next_matching(&mut listener, |event| {
        matches!(event, ListenerEvent::Stopped(_))
    })
    .await;
    assert!(matches!(
        stopped,
        ListenerEvent::Stopped(StopReason::Requested)
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sim.connections(OWNER), 0);
}

#[tokio::test]
async fn keep_alive_reaches_the_server_and_fails_like_any_call() {
    let (sim, _client, _credentials, session) = logged_in().await;
    session.keep_alive().await.expect("kept alive");
    assert_eq!(sim.keep_alives(OWNER), 1);
    sim.expire_session_keys(OWNER);
    let error = session.keep_alive().await.expect_err("refused");
    assert!(error.needs_login(), "{error:?}");
}

#[tokio::test]
async fn a_socket_that_never_sends_its_key_is_replaced() {
    // A plain TCP server that accepts the websocket handshake and then stays silent.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = silent.local_addr().expect("address");
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if let Ok(socket) = tokio_tungstenite::accept_async(stream).await {
                held.push(socket);
            }
        }
    });
    let (_sim, _client, _credentials, mut session) = logged_in().await;
    session.ws_urls = vec![format!("ws://{addr}/")];
    let mut listener = session.listen(ListenerConfig {
        key_timeout: Duration::from_millis(200),
        ..listener_config()
    });
    let event = next_matching(&mut listener, |event| {
        matches!(event, ListenerEvent::Reconnecting { .. })
    })
    .await;
    assert!(matches!(
        event,
        ListenerEvent::Reconnecting { code: 1006, .. }
    ));
    next_matching(&mut listener, |event| {
        matches!(event, ListenerEvent::Reconnecting { .. })
    })
    .await;
    assert!(accepted.load(std::sync::atomic::Ordering::SeqCst) >= 2);
}
