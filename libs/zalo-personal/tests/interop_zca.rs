//! Interop with the reference client: zca-js itself (scripts/zca-vectors/interop.mjs, run with
//! `node`) logs into our simulator, receives the messages we inject and sends text to a user
//! and a group. zca-js keeps Zalo's hostnames; its fetch polyfill and websocket agent send
//! everything to the simulator, which serves https/wss with the test certificate and hands
//! out Zalo-like service hosts (`AdvertisedHosts::zalo_like`).
//!
//! Needs Node and the script's node_modules: `make tools` installs them. A missing piece
//! fails the test: it must not pass by not running.

use std::{
    io::{BufRead, BufReader, Read},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tokio::sync::mpsc;
use zalo_personal::sim::{
    AdvertisedHosts, MediaKind, Sender, SentKind, SimAccount, SimConfig, Simulator, Thread,
};

const OWNER: &str = "100000001";
const CUSTOMER: &str = "200000002";
const GROUP: &str = "300000003";
const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) giao-interop";
/// The account our own client uses next to zca-js's.
const SECOND: &str = "100000009";
const WAIT: Duration = Duration::from_secs(60);

fn tls_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tls")
        .join(name)
}

fn script_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/zca-vectors")
}

/// Node and zca-js must be there: say how to get them instead of skipping.
fn check_prerequisites() {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|output| output.status.success()),
        "`node` is not on PATH ({node:?}): install Node.js, then run `make tools`"
    );
    let installed = script_dir().join("node_modules/zca-js/package.json");
    assert!(
        installed.exists(),
        "{} is missing: run `make tools` (npm ci in scripts/zca-vectors)",
        installed.display()
    );
}

async fn simulator() -> Simulator {
    let read = |name: &str| std::fs::read(tls_file(name)).expect("test certificate");
    let config = SimConfig {
        long_poll: Duration::from_millis(300),
        ..SimConfig::default()
    };
    let sim = Simulator::start_tls(
        config,
        "127.0.0.1:0".parse().expect("address"),
        std::future::pending(),
        &read("localhost.pem"),
        &read("localhost.key"),
    )
    .await
    .expect("simulator starts");
    sim.add_account(SimAccount::new(OWNER, "Chủ shop"));
    sim.advertise_hosts(Some(AdvertisedHosts::zalo_like()));
    sim
}

/// The running script: its JSON lines arrive on `lines`; stderr is kept for failures.
struct Script {
    child: Child,
    lines: mpsc::UnboundedReceiver<Value>,
    stderr: std::thread::JoinHandle<String>,
}

impl Drop for Script {
    fn drop(&mut self) {
        // A failed assertion must not leave node running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_script(sim: &Simulator, env: &[(&str, String)]) -> Script {
    check_prerequisites();
    let mut command = Command::new("node");
    command
        .arg("interop.mjs")
        .current_dir(script_dir())
        .env("ZCA_SIM_URL", sim.base_url())
        .env("NODE_EXTRA_CA_CERTS", tls_file("ca.pem"))
        .env("ZCA_USER_AGENT", USER_AGENT)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("node starts");
    let stdout = child.stdout.take().expect("stdout piped");
    let mut stderr = child.stderr.take().expect("stderr piped");
    let (sender, lines) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let value = serde_json::from_str(&line)
                .unwrap_or_else(|_| serde_json::json!({"event": "stray", "line": line}));
            if sender.send(value).is_err() {
                break;
            }
        }
    });
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    Script {
        child,
        lines,
        stderr,
    }
}

impl Script {
    /// The next line; panics (with the script's stderr) on an error line, on exit or after
    /// `WAIT`.
    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(WAIT, self.lines.recv()).await;
        match line {
            Ok(Some(line)) if line["event"] != "error" => line,
            other => {
                let _ = self.child.kill();
                let stderr = std::mem::replace(&mut self.stderr, std::thread::spawn(String::new));
                let stderr = stderr.join().unwrap_or_default();
                panic!("zca-js did not go on: {other:?}\nstderr:\n{stderr}");
            }
        }
    }

    async fn expect(&mut self, event: &str) -> Value {
        let line = self.next().await;
        assert_eq!(line["event"], event, "unexpected line from zca-js: {line}");
        line
    }

    /// Lines until `done`, then the exit status.
    async fn rest(&mut self) -> Vec<Value> {
        let mut lines = Vec::new();
        loop {
            let line = self.next().await;
            if line["event"] == "done" {
                break;
            }
            lines.push(line);
        }
        let status = self.child.wait().expect("node exits");
        assert!(status.success(), "node exited with {status}");
        lines
    }
}

/// Inbound traffic zca-js must see, then its sends must reach the simulator.
/// `history`: the script was told to ask for both histories (ZCA_REQUEST_OLD).
async fn receive_and_send(sim: &Simulator, script: &mut Script, history: bool) {
    let customer = Sender::new(CUSTOMER, "Khách Lan");
    let dm = sim
        .inject_dm(OWNER, &customer, "Shop ơi, còn áo size M không?")
        .expect("dm");
    let typed = sim
        .inject_self_dm(OWNER, CUSTOMER, "Dạ còn ạ")
        .expect("phone-typed dm");
    let group = sim
        .inject_group_message(OWNER, GROUP, &customer, "Cho mình hỏi giá sỉ")
        .expect("group message");
    let recall = sim.inject_recall(OWNER, &customer, &dm).expect("recall");

    // zca-js decodes frames asynchronously: take the four in any order.
    let mut received = Vec::new();
    for _ in 0..4 {
        received.push(script.next().await);
    }
    let by_id = |id: &str| {
        received
            .iter()
            .find(|line| line["event"] == "message" && line["msgId"] == id)
            .unwrap_or_else(|| panic!("zca-js did not receive {id}: {received:?}"))
            .clone()
    };

    let line = by_id(&dm);
    assert_eq!(line["threadType"], "user");
    assert_eq!(line["threadId"], CUSTOMER);
    assert_eq!(line["isSelf"], false);
    assert_eq!(line["uidFrom"], CUSTOMER);
    assert_eq!(line["idTo"], OWNER);
    assert_eq!(line["dName"], "Khách Lan");
    assert_eq!(line["msgType"], "webchat");
    assert_eq!(line["content"], "Shop ơi, còn áo size M không?");

    // Typed on the phone: uidFrom "0", which zca-js reports as its own and rewrites to the
    // account's uid, the thread being the customer.
    let line = by_id(&typed);
    assert_eq!(line["threadType"], "user");
    assert_eq!(line["isSelf"], true);
    assert_eq!(line["threadId"], CUSTOMER);
    assert_eq!(line["uidFrom"], OWNER);
    assert_eq!(line["content"], "Dạ còn ạ");

    let line = by_id(&group);
    assert_eq!(line["threadType"], "group");
    assert_eq!(line["threadId"], GROUP);
    assert_eq!(line["uidFrom"], CUSTOMER);
    assert_eq!(line["content"], "Cho mình hỏi giá sỉ");

    let undo = received
        .iter()
        .find(|line| line["event"] == "undo")
        .unwrap_or_else(|| panic!("zca-js reported no recall: {received:?}"));
    assert_eq!(undo["msgId"], recall);
    assert_eq!(undo["isGroup"], false);
    assert_eq!(undo["threadId"], CUSTOMER);
    assert_eq!(undo["content"]["globalMsgId"], dm);
    assert_eq!(undo["content"]["deleteMsg"], 1);

    let mut sent_lines = script.rest().await;
    // With ZCA_REQUEST_OLD, zca-js asked for both histories (510/511) and parsed the answers.
    let old: Vec<Value> = sent_lines
        .iter()
        .filter(|line| line["event"] == "old_messages")
        .cloned()
        .collect();
    sent_lines.retain(|line| line["event"] != "old_messages");
    assert_eq!(!old.is_empty(), history, "history answers: {old:?}");
    if history {
        let ids = |thread: &str| -> Vec<String> {
            old.iter()
                .find(|line| line["thread"] == thread)
                .and_then(|line| line["msgIds"].as_array())
                .map(|ids| {
                    ids.iter()
                        .filter_map(|id| id.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(ids("user"), [dm.clone(), typed.clone(), recall.clone()]);
        assert_eq!(ids("group"), std::slice::from_ref(&group));
        let requests = sim.gap_requests(OWNER);
        assert_eq!(requests.len(), 2, "{requests:?}");
        assert!(requests.iter().all(|request| request["lastId"].is_null()));
    }
    let sent = sim.sent(OWNER);
    assert_eq!(sent.len(), 2, "the simulator recorded {sent:?}");
    for (line, (thread, to)) in sent_lines
        .iter()
        .zip([("user", CUSTOMER), ("group", GROUP)])
    {
        assert_eq!(line["event"], "sent", "{line}");
        assert_eq!(line["thread"], thread);
        let recorded = sent
            .iter()
            .find(|message| message.msg_id == line["msgId"])
            .unwrap_or_else(|| panic!("no recorded send for {line}: {sent:?}"));
        assert_eq!(recorded.to, to);
        let kind = if thread == "user" {
            Thread::User
        } else {
            Thread::Group
        };
        assert_eq!(recorded.thread, kind);
    }
    let to_user = sent
        .iter()
        .find(|message| message.thread == Thread::User)
        .expect("a send to the user");
    assert_eq!(to_user.text, "Chào anh, shop đã nhận đơn.");
    // zca-js's own parameters, decrypted by the simulator with the session key.
    assert!(to_user.params["imei"].is_string(), "{:?}", to_user.params);
    let to_group = sent
        .iter()
        .find(|message| message.thread == Thread::Group)
        .expect("a send to the group");
    assert_eq!(to_group.text, "Chào cả nhóm!");
    assert_eq!(to_group.params["visibility"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zca_js_logs_in_with_cookies_receives_and_sends() {
    let sim = simulator().await;
    let credentials = sim.issue_credentials(OWNER, USER_AGENT);
    let mut script = run_script(
        &sim,
        &[
            ("ZCA_LOGIN", "cookie".into()),
            (
                "ZCA_COOKIES",
                serde_json::to_string(&credentials.cookies).expect("cookies"),
            ),
            ("ZCA_IMEI", credentials.imei.clone()),
            ("ZCA_EXPECT", "4".into()),
            ("ZCA_REQUEST_OLD", "1".into()),
            ("ZCA_SEND_USER", CUSTOMER.into()),
            ("ZCA_SEND_GROUP", GROUP.into()),
        ],
    );
    let logged_in = script.expect("logged_in").await;
    assert_eq!(logged_in["uid"], OWNER);
    script.expect("ready").await;
    assert_eq!(sim.connections(OWNER), 1);
    receive_and_send(&sim, &mut script, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zca_js_logs_in_by_qr_receives_and_sends() {
    let sim = simulator().await;
    let mut script = run_script(
        &sim,
        &[
            ("ZCA_LOGIN", "qr".into()),
            ("ZCA_EXPECT", "4".into()),
            ("ZCA_SEND_USER", CUSTOMER.into()),
            ("ZCA_SEND_GROUP", GROUP.into()),
        ],
    );
    let qr = script.expect("qr").await;
    let code = qr["code"].as_str().expect("QR code").to_string();
    assert_eq!(sim.last_qr_code().as_deref(), Some(code.as_str()));
    // The phone scans, then confirms.
    assert!(sim.scan_qr(&code, OWNER));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(sim.confirm_qr(&code));
    let logged_in = script.expect("logged_in").await;
    assert_eq!(logged_in["uid"], OWNER);
    script.expect("ready").await;
    receive_and_send(&sim, &mut script, false).await;
}

/// The script's media bytes: `i % 251`.
fn media_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zca_js_sends_images_files_and_stickers_through_the_simulator() {
    let sim = simulator().await;
    // Small chunks: zca-js uploads them concurrently, so they arrive in any order.
    sim.set_upload_chunk_size(1000);
    let credentials = sim.issue_credentials(OWNER, USER_AGENT);
    let mut script = run_script(
        &sim,
        &[
            ("ZCA_LOGIN", "cookie".into()),
            (
                "ZCA_COOKIES",
                serde_json::to_string(&credentials.cookies).expect("cookies"),
            ),
            ("ZCA_IMEI", credentials.imei.clone()),
            ("ZCA_SEND_USER", CUSTOMER.into()),
            ("ZCA_SEND_GROUP", GROUP.into()),
            ("ZCA_SEND_MEDIA", "1".into()),
        ],
    );
    script.expect("logged_in").await;
    script.expect("ready").await;
    let lines = script.rest().await;
    let sent = sim.sent(OWNER);
    assert_eq!(lines.len(), 8, "{lines:?}");
    assert_eq!(sent.len(), 8, "{sent:?}");
    for line in &lines {
        let recorded = sent
            .iter()
            .find(|message| message.msg_id == line["msgId"])
            .unwrap_or_else(|| panic!("no recorded send for {line}: {sent:?}"));
        let (thread, to) = if line["thread"] == "user" {
            (Thread::User, CUSTOMER)
        } else {
            (Thread::Group, GROUP)
        };
        assert_eq!(
            (recorded.thread, recorded.to.as_str()),
            (thread, to),
            "{line}"
        );
        let kind = match line["kind"].as_str() {
            Some("text") => SentKind::Text,
            Some("image") => SentKind::Image,
            Some("file") => SentKind::File,
            Some("sticker") => SentKind::Sticker,
            other => panic!("unknown kind {other:?}"),
        };
        assert_eq!(recorded.kind(), kind, "{line}");
        match kind {
            SentKind::Image => {
                assert_eq!(recorded.text, "Mẫu áo size M");
                assert_eq!(recorded.params["width"], 800);
                assert_eq!(recorded.params["height"], 600);
            }
            // The simulator accepted it only with the upload's URL, name and md5.
            SentKind::File => assert_eq!(recorded.text, "hoa-don.pdf"),
            SentKind::Sticker => {
                assert_eq!(recorded.params["stickerId"], 46_351);
                assert_eq!(recorded.params["cateId"], 0);
                assert_eq!(recorded.params["type"], 7);
            }
            SentKind::Text => {}
        }
    }
    let uploads = sim.uploads(OWNER);
    assert_eq!(uploads.len(), 4, "{uploads:?}");
    for upload in &uploads {
        let (name, len, chunks) = match upload.kind {
            MediaKind::Image => ("ao-size-m.jpg", 2500, 3),
            MediaKind::File => ("hoa-don.pdf", 2200, 3),
        };
        assert_eq!(upload.file_name, name);
        assert_eq!(upload.chunks, chunks);
        assert_eq!(
            upload.bytes,
            media_bytes(len),
            "{name} reassembled in order"
        );
    }

    // Our client sends the same kinds; its parameters must have the names and JSON types
    // zca-js gave them.
    sim.advertise_hosts(None);
    let ours = our_media_sends(&sim).await;
    let shape = |params: &serde_json::Value| -> Vec<(String, &'static str)> {
        let mut fields: Vec<(String, &'static str)> = params
            .as_object()
            .expect("params object")
            .iter()
            .map(|(name, value)| (name.clone(), json_type(value)))
            .collect();
        fields.sort();
        fields
    };
    let our_uploads = sim.uploads(SECOND);
    for reference in &uploads {
        let mine = our_uploads
            .iter()
            .find(|upload| upload.thread == reference.thread && upload.kind == reference.kind)
            .unwrap_or_else(|| panic!("our client uploaded no {:?}", reference.kind));
        assert_eq!(mine.chunks, reference.chunks);
        assert_eq!(
            shape(&mine.params),
            shape(&reference.params),
            "{:?} upload for a {:?}: ours vs zca-js",
            reference.kind,
            reference.thread
        );
    }
    for reference in &sent {
        let mine = ours
            .iter()
            .find(|message| {
                message.thread == reference.thread && message.kind() == reference.kind()
            })
            .unwrap_or_else(|| panic!("our client sent no {:?}", reference.kind()));
        assert_eq!(
            shape(&mine.params),
            shape(&reference.params),
            "{:?} to a {:?}: ours vs zca-js",
            reference.kind(),
            reference.thread
        );
    }
}

fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// Text, image, file and sticker to the user and the group with our client, as a second
/// account of the simulator (`SECOND`); what the simulator recorded.
async fn our_media_sends(sim: &Simulator) -> Vec<zalo_personal::sim::SentMessage> {
    use zalo_personal::{
        client::{Client, Endpoints, FileUpload, Image, ListenerConfig, ListenerEvent, Sticker},
        events::ThreadKind,
    };
    sim.add_account(SimAccount::new(SECOND, "Shop 2"));
    let read = std::fs::read(tls_file("ca.pem")).expect("test CA");
    let client = Client::new(Endpoints::all_at(&sim.base_url()))
        .trusting(&read)
        .expect("CA");
    let session = client
        .login(&sim.issue_credentials(SECOND, USER_AGENT))
        .await
        .expect("our login");
    let mut listener = session.listen(ListenerConfig::default());
    while !matches!(
        tokio::time::timeout(WAIT, listener.recv()).await,
        Ok(Some(ListenerEvent::Connected { .. }))
    ) {}
    let image = Image {
        file_name: "ao-size-m.jpg".into(),
        bytes: media_bytes(2500),
        width: 800,
        height: 600,
    };
    let file = FileUpload {
        file_name: "hoa-don.pdf".into(),
        bytes: media_bytes(2200),
    };
    let sticker = Sticker {
        id: 46_351,
        category_id: 0,
        kind: 7,
    };
    for (thread, to) in [(ThreadKind::Direct, CUSTOMER), (ThreadKind::Group, GROUP)] {
        match thread {
            ThreadKind::Direct => session.send_text(to, "Chào anh").await,
            ThreadKind::Group => session.send_group_text(to, "Chào cả nhóm").await,
        }
        .expect("text");
        session
            .send_image(thread, to, &image, "Mẫu áo size M")
            .await
            .expect("image");
        session.send_file(thread, to, &file).await.expect("file");
        session
            .send_sticker(thread, to, &sticker)
            .await
            .expect("sticker");
    }
    sim.sent(SECOND)
}

/// zca-js reads the simulator's friend and group notices as its own `friend_event` and
/// `group_event`, with the ids, names and sides our events give (tests/social_events.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zca_js_receives_friend_and_group_notices() {
    use zalo_personal::sim::social::SimGroup;

    let sim = simulator().await;
    let credentials = sim.issue_credentials(OWNER, USER_AGENT);
    let mut script = run_script(
        &sim,
        &[
            ("ZCA_LOGIN", "cookie".into()),
            (
                "ZCA_COOKIES",
                serde_json::to_string(&credentials.cookies).expect("cookies"),
            ),
            ("ZCA_IMEI", credentials.imei.clone()),
            ("ZCA_EXPECT", "7".into()),
        ],
    );
    script.expect("logged_in").await;
    script.expect("ready").await;

    let customer = Sender::new(CUSTOMER, "Khách Lan");
    let hoa = Sender::new("200000004", "Hoa");
    let mut group = SimGroup::new(GROUP, "Khách sỉ", "200000005");
    // The request goes out as "req" and "req_v2": zca-js reports the second only.
    sim.inject_friend_request(OWNER, &customer, "Cho em kết bạn")
        .expect("request");
    sim.inject_friend_added(OWNER, CUSTOMER).expect("added");
    sim.inject_blocked(OWNER, "200000006", true)
        .expect("blocked");
    sim.inject_added_to_group(OWNER, &group, "200000005", std::slice::from_ref(&hoa))
        .expect("added to group");
    sim.inject_group_leave(OWNER, &group, &hoa).expect("leave");
    group.name = "Khách sỉ miền Nam".into();
    sim.inject_group_renamed(OWNER, &group, OWNER)
        .expect("renamed");
    sim.inject_group_join_request(OWNER, GROUP, &["200000007"])
        .expect("join request");

    let mut received = Vec::new();
    for _ in 0..7 {
        received.push(script.next().await);
    }
    let rest = script.rest().await;
    assert!(rest.is_empty(), "nothing else from zca-js: {rest:?}");
    let find = |event: &str, kind: &str| {
        received
            .iter()
            .find(|line| line["event"] == event && line["type"] == kind)
            .unwrap_or_else(|| panic!("zca-js reported no {event} {kind}: {received:?}"))
            .clone()
    };

    let request = find("friend_event", "REQUEST");
    assert_eq!(request["data"]["fromUid"], CUSTOMER);
    assert_eq!(request["data"]["toUid"], OWNER);
    assert_eq!(request["data"]["message"], "Cho em kết bạn");
    assert_eq!(request["isSelf"], false);
    let added = find("friend_event", "ADD");
    assert_eq!(
        (&added["threadId"], &added["data"]),
        (&CUSTOMER.into(), &CUSTOMER.into())
    );
    let blocked = find("friend_event", "BLOCK");
    assert_eq!(blocked["threadId"], "200000006");
    assert_eq!(blocked["isSelf"], true);

    let joined = find("group_event", "join");
    assert_eq!(joined["threadId"], GROUP);
    assert_eq!(joined["isSelf"], true, "the account is among the members");
    assert_eq!(joined["groupName"], "Khách sỉ");
    assert_eq!(joined["sourceId"], "200000005");
    assert_eq!(joined["memberIds"], serde_json::json!([OWNER, "200000004"]));
    assert_eq!(
        joined["memberNames"],
        serde_json::json!(["Chủ shop", "Hoa"])
    );
    let left = find("group_event", "leave");
    assert_eq!(left["isSelf"], false);
    assert_eq!(left["memberIds"], serde_json::json!(["200000004"]));
    let renamed = find("group_event", "update");
    assert_eq!(renamed["groupName"], "Khách sỉ miền Nam");
    assert_eq!(renamed["isSelf"], true, "renamed by the account");
    let requested = find("group_event", "join_request");
    assert_eq!(requested["threadId"], GROUP);
    assert_eq!(requested["memberIds"], serde_json::json!(["200000007"]));
}
