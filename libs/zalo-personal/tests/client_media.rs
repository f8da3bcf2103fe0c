//! Images, files and stickers to users and groups, against the simulator: chunked uploads,
//! the file URL arriving on the websocket, the sends naming what was uploaded.

use std::time::Duration;

use zalo_personal::{
    client::{
        Client, ClientError, Endpoints, FileUpload, Image, Listener, ListenerConfig, ListenerEvent,
        Session, Sticker,
    },
    events::{Event, ThreadKind},
    sim::{MediaKind, SentKind, SimAccount, SimConfig, Simulator, Thread},
};

const OWNER: &str = "100000001";
const CUSTOMER: &str = "200000002";
const GROUP: &str = "300000003";
const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) giao-media-test";
const WAIT: Duration = Duration::from_secs(10);
/// Small chunks, so every upload below takes several requests.
const CHUNK: usize = 1000;

async fn simulator() -> Simulator {
    let sim = Simulator::start(
        SimConfig::default(),
        "127.0.0.1:0".parse().expect("address"),
        std::future::pending(),
    )
    .await
    .expect("simulator starts");
    sim.add_account(SimAccount::new(OWNER, "Chủ shop"));
    sim.set_upload_chunk_size(CHUNK);
    sim
}

async fn session(sim: &Simulator, timeout: Duration) -> Session {
    let client = Client::with_timeout(Endpoints::all_at(&sim.base_url()), timeout);
    let credentials = sim.issue_credentials(OWNER, USER_AGENT);
    client.login(&credentials).await.expect("cookie login")
}

async fn connected(session: &Session) -> Listener {
    let mut listener = session.listen(ListenerConfig::default());
    tokio::time::timeout(WAIT, async {
        loop {
            match listener.recv().await.expect("listener running") {
                ListenerEvent::Connected { .. } => break,
                _ => continue,
            }
        }
    })
    .await
    .expect("connected within the wait");
    listener
}

/// Bytes that differ from chunk to chunk, so a reordering would show.
fn bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn images_are_uploaded_in_chunks_and_sent_to_users_and_groups() {
    let sim = simulator().await;
    let session = session(&sim, WAIT).await;
    assert_eq!(session.share_file_settings().chunk_size, CHUNK);
    let photo = Image {
        file_name: "ao-size-m.jpg".into(),
        bytes: bytes(2500),
        width: 800,
        height: 600,
    };
    let to_user = session
        .send_image(ThreadKind::Direct, CUSTOMER, &photo, "Mẫu áo size M")
        .await
        .expect("image to a user");
    let small = Image {
        file_name: "bang-gia.png".into(),
        bytes: bytes(300),
        width: 20,
        height: 10,
    };
    let to_group = session
        .send_image(ThreadKind::Group, GROUP, &small, "")
        .await
        .expect("image to a group");

    let uploads = sim.uploads(OWNER);
    assert_eq!(uploads.len(), 2, "{uploads:?}");
    assert_eq!(uploads[0].kind, MediaKind::Image);
    assert_eq!(uploads[0].thread, Thread::User);
    assert_eq!(uploads[0].to, CUSTOMER);
    assert_eq!(uploads[0].file_name, "ao-size-m.jpg");
    assert_eq!(uploads[0].chunks, 3);
    assert_eq!(uploads[0].bytes, photo.bytes);
    assert_eq!(uploads[1].thread, Thread::Group);
    assert_eq!(uploads[1].chunks, 1);
    assert_eq!(uploads[1].bytes, small.bytes);

    let sent = sim.sent(OWNER);
    assert_eq!(sent.len(), 2);
    let user = &sent[0];
    assert_eq!(user.kind(), SentKind::Image);
    assert_eq!((user.thread, user.to.as_str()), (Thread::User, CUSTOMER));
    assert_eq!(user.msg_id, to_user);
    assert_eq!(user.text, "Mẫu áo size M");
    assert_eq!(user.params["photoId"], uploads[0].id.as_str());
    assert_eq!(user.params["width"], 800);
    assert_eq!(user.params["height"], 600);
    assert_eq!(user.params["hdSize"], "2500");
    assert_eq!(user.params["normalUrl"], uploads[0].url.as_str());
    let group = &sent[1];
    assert_eq!(group.kind(), SentKind::Image);
    assert_eq!((group.thread, group.to.as_str()), (Thread::Group, GROUP));
    assert_eq!(group.msg_id, to_group);
    // Groups name the full-size URL `oriUrl`.
    assert_eq!(group.params["oriUrl"], uploads[1].url.as_str());
    assert!(group.params.get("normalUrl").is_none());
}

#[tokio::test]
async fn files_wait_for_file_done_on_the_websocket_then_are_sent() {
    let sim = simulator().await;
    let session = session(&sim, WAIT).await;
    let mut listener = connected(&session).await;
    let invoice = FileUpload {
        file_name: "hoa-don.pdf".into(),
        bytes: bytes(2200),
    };
    let to_user = session
        .send_file(ThreadKind::Direct, CUSTOMER, &invoice)
        .await
        .expect("file to a user");
    let price_list = FileUpload {
        file_name: "bang-gia.xlsx".into(),
        bytes: bytes(999),
    };
    let to_group = session
        .send_file(ThreadKind::Group, GROUP, &price_list)
        .await
        .expect("file to a group");

    let uploads = sim.uploads(OWNER);
    assert_eq!(uploads.len(), 2);
    assert_eq!(uploads[0].kind, MediaKind::File);
    assert_eq!(uploads[0].chunks, 3);
    assert_eq!(uploads[0].bytes, invoice.bytes);
    assert_eq!(uploads[1].chunks, 1);

    // The simulator checked fileUrl, name and md5 against the upload before recording.
    let sent = sim.sent(OWNER);
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].kind(), SentKind::File);
    assert_eq!(
        (sent[0].thread, sent[0].to.as_str()),
        (Thread::User, CUSTOMER)
    );
    assert_eq!(sent[0].msg_id, to_user);
    assert_eq!(sent[0].text, "hoa-don.pdf");
    assert_eq!(sent[0].params["fileUrl"], uploads[0].url.as_str());
    assert_eq!(sent[0].params["extention"], "pdf");
    assert_eq!(sent[0].params["totalSize"], 2200);
    assert_eq!(
        (sent[1].thread, sent[1].to.as_str()),
        (Thread::Group, GROUP)
    );
    assert_eq!(sent[1].msg_id, to_group);
    assert_eq!(sent[1].params["extention"], "xlsx");

    // The notices are events too, for whoever listens.
    let mut notices = 0;
    while notices < 2 {
        let event = tokio::time::timeout(WAIT, listener.recv())
            .await
            .expect("file_done events")
            .expect("listener running");
        if let ListenerEvent::Event(Event::Control { act_type, .. }) = event {
            assert_eq!(act_type, "file_done");
            notices += 1;
        }
    }
}

#[tokio::test]
async fn a_file_upload_without_a_listener_fails_and_a_forwarded_notice_completes_it() {
    let sim = simulator().await;
    let sender = session(&sim, Duration::from_millis(800)).await;
    let file = FileUpload {
        file_name: "catalogue.pdf".into(),
        bytes: bytes(1500),
    };
    let error = sender
        .send_file(ThreadKind::Direct, CUSTOMER, &file)
        .await
        .expect_err("nobody hears the file_done notice");
    assert!(
        matches!(&error, ClientError::Unexpected(message) if message.contains("listener")),
        "{error:?}"
    );
    assert!(sim.sent(OWNER).is_empty());

    // A listener of another session of the account forwards its notices to the sender.
    let listening = session(&sim, WAIT).await;
    let mut listener = connected(&listening).await;
    let forward_to = sender.clone();
    let forwarder = tokio::spawn(async move {
        while let Some(event) = listener.recv().await {
            if let ListenerEvent::Event(Event::Control { act_type, raw, .. }) = event
                && act_type == "file_done"
            {
                let content = &raw["content"];
                forward_to.file_uploaded(
                    &content["fileId"].to_string(),
                    content["data"]["url"].as_str().unwrap_or_default(),
                );
            }
        }
    });
    let msg_id = sender
        .send_file(ThreadKind::Direct, CUSTOMER, &file)
        .await
        .expect("sent once the notice was forwarded");
    let sent = sim.sent(OWNER);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].msg_id, msg_id);
    forwarder.abort();
}

#[tokio::test]
async fn stickers_go_to_users_and_groups() {
    let sim = simulator().await;
    let session = session(&sim, WAIT).await;
    let sticker = Sticker {
        id: 46_351,
        category_id: 0,
        kind: 7,
    };
    let to_user = session
        .send_sticker(ThreadKind::Direct, CUSTOMER, &sticker)
        .await
        .expect("sticker to a user");
    let to_group = session
        .send_sticker(ThreadKind::Group, GROUP, &sticker)
        .await
        .expect("sticker to a group");
    let sent = sim.sent(OWNER);
    assert_eq!(sent.len(), 2);
    for (message, (thread, to, msg_id)) in sent.iter().zip([
        (Thread::User, CUSTOMER, &to_user),
        (Thread::Group, GROUP, &to_group),
    ]) {
        assert_eq!(message.kind(), SentKind::Sticker);
        assert_eq!((message.thread, message.to.as_str()), (thread, to));
        assert_eq!(&message.msg_id, msg_id);
        assert_eq!(message.params["stickerId"], 46_351);
        assert_eq!(message.params["cateId"], 0);
        assert_eq!(message.params["type"], 7);
        assert_eq!(message.params["zsource"], 101);
    }
    assert!(sim.uploads(OWNER).is_empty());
}

#[tokio::test]
async fn media_calls_report_rate_limits_and_expired_keys_like_text() {
    let sim = simulator().await;
    let session = session(&sim, WAIT).await;
    let sticker = Sticker {
        id: 1,
        category_id: 2,
        kind: 7,
    };
    sim.fail_next(OWNER, &[-69]);
    let error = session
        .send_sticker(ThreadKind::Direct, CUSTOMER, &sticker)
        .await
        .expect_err("rate limited");
    assert!(error.is_rate_limit(), "{error:?}");

    sim.expire_session_keys(OWNER);
    let photo = Image {
        file_name: "a.jpg".into(),
        bytes: bytes(10),
        width: 1,
        height: 1,
    };
    let error = session
        .send_image(ThreadKind::Group, GROUP, &photo, "")
        .await
        .expect_err("key expired");
    assert!(matches!(error, ClientError::SessionKeyExpired), "{error:?}");
    assert!(sim.sent(OWNER).is_empty());
    assert!(sim.uploads(OWNER).is_empty());
}
