//! Friend and group notices from the simulator reach a listener as typed events.

use std::time::Duration;

use serde_json::json;
use zalo_personal::{
    client::{Client, Endpoints, Listener, ListenerConfig, ListenerEvent},
    events::{Event, FriendEvent, FriendKind, GroupEvent, GroupKind, GroupMember},
    sim::{Sender, SimAccount, SimConfig, Simulator, social::SimGroup},
};

const OWNER: &str = "100000001";
const OWNER_NAME: &str = "Chủ shop";
const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) giao-test";
const WAIT: Duration = Duration::from_secs(10);

async fn listening() -> (Simulator, Listener) {
    let sim = Simulator::start(
        SimConfig::default(),
        "127.0.0.1:0".parse().expect("address"),
        std::future::pending(),
    )
    .await
    .expect("simulator starts");
    sim.add_account(SimAccount::new(OWNER, OWNER_NAME));
    let client = Client::new(Endpoints::all_at(&sim.base_url()));
    let credentials = sim.issue_credentials(OWNER, USER_AGENT);
    let session = client.login(&credentials).await.expect("cookie login");
    let mut listener = session.listen(ListenerConfig::default());
    tokio::time::timeout(WAIT, async {
        while !matches!(
            listener.recv().await.expect("listener running"),
            ListenerEvent::Connected { .. }
        ) {}
    })
    .await
    .expect("connected within the wait");
    (sim, listener)
}

/// The next `count` protocol events (friend, group, control, message), in order.
async fn events(listener: &mut Listener, count: usize) -> Vec<Event> {
    let mut events = Vec::new();
    tokio::time::timeout(WAIT, async {
        while events.len() < count {
            if let ListenerEvent::Event(event) = listener.recv().await.expect("listener running") {
                events.push(event);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{count} events within the wait, got {events:?}"));
    events
}

fn friend(event: &Event) -> &FriendEvent {
    match event {
        Event::Friend(friend) => friend,
        other => panic!("a friend event, got {other:?}"),
    }
}

fn group(event: &Event) -> &GroupEvent {
    match event {
        Event::Group(group) => group,
        other => panic!("a group event, got {other:?}"),
    }
}

fn member(uid: &str, name: &str) -> GroupMember {
    GroupMember {
        uid: uid.into(),
        display_name: Some(name.into()),
    }
}

#[tokio::test]
async fn friend_notices_arrive_typed() {
    let (sim, mut listener) = listening().await;
    let customer = Sender::new("200", "Khách A");
    sim.inject_friend_request(OWNER, &customer, "Cho em hỏi giá")
        .expect("account");
    sim.inject_friend_added(OWNER, "200").expect("account");
    sim.inject_blocked(OWNER, "300", true).expect("account");
    sim.inject_blocked(OWNER, "300", false).expect("account");
    sim.inject_friend_removed(OWNER, "200").expect("account");
    // An act nobody models stays a raw control notice.
    sim.inject_friend_notice(OWNER, "pin_create", json!({"conversationId": "200"}))
        .expect("account");
    let events = events(&mut listener, 7).await;

    // Zalo's older duplicate of the request stays raw; the v2 notice is the typed one.
    assert!(
        matches!(&events[0], Event::Control { act_type, act, .. } if act_type == "fr" && act == "req"),
        "{:?}",
        events[0]
    );
    let request = friend(&events[1]);
    assert_eq!(request.kind, FriendKind::Request);
    assert_eq!(request.from_uid.as_deref(), Some("200"));
    assert_eq!(request.to_uid.as_deref(), Some(OWNER));
    assert_eq!(request.message.as_deref(), Some("Cho em hỏi giá"));
    assert_eq!(request.peer(OWNER), Some("200"));
    assert!(!request.from_self(OWNER));

    let kinds: Vec<(FriendKind, Option<&str>)> = events[2..6]
        .iter()
        .map(|e| (friend(e).kind, friend(e).peer(OWNER)))
        .collect();
    assert_eq!(
        kinds,
        [
            (FriendKind::Added, Some("200")),
            (FriendKind::Blocked, Some("300")),
            (FriendKind::Unblocked, Some("300")),
            (FriendKind::Removed, Some("200")),
        ]
    );
    assert!(
        friend(&events[3]).from_self(OWNER),
        "a block is the account's own"
    );
    assert_eq!(friend(&events[2]).raw["content"]["data"], "200");
    assert!(
        matches!(&events[6], Event::Control { act, .. } if act == "pin_create"),
        "{:?}",
        events[6]
    );
}

#[tokio::test]
async fn group_notices_arrive_typed() {
    let (sim, mut listener) = listening().await;
    let mut shop = SimGroup::new("g-500", "Khách sỉ", "400");
    let hoa = Sender::new("401", "Hoa");
    let vy = Sender::new("402", "Vy");
    sim.inject_added_to_group(OWNER, &shop, "400", std::slice::from_ref(&hoa))
        .expect("account");
    sim.inject_group_join(OWNER, &shop, OWNER, std::slice::from_ref(&vy))
        .expect("account");
    sim.inject_group_leave(OWNER, &shop, &hoa).expect("account");
    sim.inject_group_remove(OWNER, &shop, "400", std::slice::from_ref(&vy))
        .expect("account");
    shop.name = "Khách sỉ miền Nam".into();
    sim.inject_group_renamed(OWNER, &shop, "400")
        .expect("account");
    sim.inject_group_settings(OWNER, &shop, OWNER, json!({"blockName": 1, "joinAppr": 1}))
        .expect("account");
    sim.inject_group_join_request(OWNER, "g-500", &["403", "404"])
        .expect("account");
    sim.inject_group_notice(OWNER, "new_pin_topic", &shop, "400", &[], json!({}))
        .expect("account");
    // The session goes on: a message after the notices still arrives.
    let msg_id = sim
        .inject_dm(OWNER, &Sender::new("200", "Khách A"), "Còn hàng không?")
        .expect("account");
    let events = events(&mut listener, 9).await;

    let added = group(&events[0]);
    assert_eq!(added.kind, GroupKind::Join);
    assert_eq!(added.group_id, "g-500");
    assert_eq!(added.group_name.as_deref(), Some("Khách sỉ"));
    assert_eq!(added.actor_id.as_deref(), Some("400"));
    assert_eq!(added.creator_id.as_deref(), Some("400"));
    assert_eq!(
        added.members,
        [member(OWNER, OWNER_NAME), member("401", "Hoa")]
    );
    assert!(added.involves(OWNER), "the account is in the new group");
    assert!(added.ts_ms.is_some_and(|ts| ts > 1_700_000_000_000));

    let joined = group(&events[1]);
    assert_eq!(
        (joined.kind, joined.members.as_slice()),
        (GroupKind::Join, &[member("402", "Vy")][..])
    );
    assert!(joined.involves(OWNER), "the account added her");

    let left = group(&events[2]);
    assert_eq!(left.kind, GroupKind::Leave);
    assert_eq!(left.actor_id.as_deref(), Some("401"));
    assert_eq!(left.members, [member("401", "Hoa")]);
    assert!(!left.involves(OWNER));

    let removed = group(&events[3]);
    assert_eq!(removed.kind, GroupKind::RemoveMember);
    assert_eq!(removed.members, [member("402", "Vy")]);

    let renamed = group(&events[4]);
    assert_eq!(renamed.kind, GroupKind::Update);
    assert_eq!(renamed.group_name.as_deref(), Some("Khách sỉ miền Nam"));

    let settings = group(&events[5]);
    assert_eq!(settings.kind, GroupKind::UpdateSetting);
    let data: serde_json::Value = serde_json::from_str(
        settings.raw["content"]["data"]
            .as_str()
            .expect("data as JSON text"),
    )
    .expect("JSON");
    assert_eq!(data["groupSetting"]["joinAppr"], 1);

    let requests = group(&events[6]);
    assert_eq!(requests.kind, GroupKind::JoinRequest);
    assert_eq!(requests.group_id, "g-500");
    let uids: Vec<&str> = requests.members.iter().map(|m| m.uid.as_str()).collect();
    assert_eq!(uids, ["403", "404"]);
    assert!(requests.members.iter().all(|m| m.display_name.is_none()));
    assert_eq!(requests.actor_id, None);

    assert!(
        matches!(&events[7], Event::Control { act_type, act, .. } if act_type == "group" && act == "new_pin_topic"),
        "{:?}",
        events[7]
    );
    assert!(
        matches!(&events[8], Event::Message(message) if message.msg_id == msg_id),
        "{:?}",
        events[8]
    );
}
